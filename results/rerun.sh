#!/bin/bash
# Re-run committed reference runs at the current engine (issue 35's re-baseline), one after
# another, each into /tmp/reruns/NAME, then copied over results/NAME without its checkpoints.
# Usage: bash results/rerun.sh NAME... (names below); logs in /tmp/reruns/NAME.log.
cd "$(dirname "$0")/.." && . .venv/bin/activate
declare -A ARGS=(
  [stepfit/faithful]="--config stepfit"
  [spirals/sweep_8_cells]="--config examples/spirals.toml --set optim.lr=[0.001,0.003,0.01,0.03]"
  [stepfit/ablation_1000_30k]="--config stepfit_ablation --set sweep.n_seeds=500 --set train.steps=30000"
  [stepfit/ablation]="--config stepfit_ablation"
  [sumsq/dropout_ablation]="--config sumsq_dropout_ablation"
  [sumsq/faithful]="--config sumsq"
  [stepfit/faithful_100_seeds]="--config stepfit --set sweep.n_seeds=100"
  [stepfit/basin]="--config stepfit_basin"
  [stepfit/factorial]="--config stepfit_factorial"
  [stepfit/seeds_500]="--config stepfit --set sweep.n_seeds=500"
)
for name in "$@"; do
  out=/tmp/reruns/$name; rm -rf "$out"; mkdir -p "$(dirname "$out")"
  # shellcheck disable=SC2086
  /usr/bin/time -v python -m jaxfit.run ${ARGS[$name]} --out "$out" > "/tmp/reruns/${name//\//_}.log" 2>&1 || { echo "$name FAILED"; continue; }
  rm -rf "results/$name" && cp -r "$out" "results/$name" && rm -rf "results/$name/checkpoints" "results/$name"/.jaxfit*
  echo "$name done $(date +%T)"
done
