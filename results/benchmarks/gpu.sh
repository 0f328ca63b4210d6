#!/usr/bin/env bash
# GPU figures (issue 19) in one call of a lent GPU machine, run from the repository root:
#     bash results/benchmarks/gpu.sh OUT_DIR [SECONDS] [runs|bench|all]
# The machine's own python3 (jax with CUDA, flax, optax, orbax, torch) runs the repository as it
# is; tomli-w, the one dependency missing there, is installed from wheels carried in .whl/ if
# present. In order, each with its own time limit, stopping before SECONDS (default 540) are spent
# (`runs` does 1-4, `bench` 1 and 5, `all` everything):
#   1. environment and a 2,000-step smoke run (stops the script if it fails);
#   2. the faithful sumsq run end to end (python -m jaxfit.run --config sumsq);
#   3. the faithful stepfit with 10,000 seeds per group (20,000 models, up to 1,000,001 steps);
#   4. the neighbour-independence tests on this device;
#   5. python -m jaxfit.bench at 10 / 100 / 1,000 / 10,000 models, PyTorch on the same GPU,
#      with whatever time is left.
# Everything lands in OUT_DIR: log.txt, bench.json, throughput.png, runs.tgz (the run folders
# without checkpoints and without the 20,000-model history/params).
set -u
out=$(realpath -m "${1:-runs/gpu}")
deadline=$(( $(date +%s) + ${2:-540} ))
part=${3:-all}
mkdir -p "$out" /tmp/gpu_runs
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt"; }
left() { echo $(( deadline - $(date +%s) )); }
timed() {  # timed NAME LIMIT CMD...: run CMD with a limit, log its wall time and exit code
    local name=$1 limit=$2; shift 2
    (( limit > $(left) )) && limit=$(left)
    if (( limit < 10 )); then log "$name: skipped, no time left"; return 1; fi
    log "$name: start (limit ${limit}s): $*"
    local t0=$(date +%s.%N)
    timeout --signal=INT --kill-after=20 "$limit" "$@" >>"$out/log.txt" 2>&1
    local rc=$?
    log "$name: exit $rc, wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
    return $rc
}

log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
python3 -c "import jax, flax, optax, orbax.checkpoint, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)" 2>&1 | tee -a "$out/log.txt"
git log -1 --format='commit %H %s' 2>/dev/null | tee -a "$out/log.txt"

[[ $part == bench ]] || timed smoke 120 python3 -m jaxfit.run --config stepfit --set train.steps=2000 --set sweep.n_seeds=2 --out /tmp/gpu_runs/smoke --quiet \
    || { log "smoke run failed: stopping"; exit 1; }

if [[ $part != bench ]]; then
timed sumsq_faithful 120 python3 -m jaxfit.run --config sumsq --out /tmp/gpu_runs/sumsq_faithful
timed stepfit_10000_seeds 150 python3 -m jaxfit.run --config stepfit --set sweep.n_seeds=10000 --out /tmp/gpu_runs/stepfit_10000_seeds
timed neighbour_tests 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_train.py -k neighbours

for run in /tmp/gpu_runs/*/; do python3 - "$run" <<'EOF' 2>&1 | tee -a "$out/log.txt"
import json, sys
try:
    r = json.load(open(sys.argv[1] + "summary.json"))["run"]
    print(sys.argv[1], {k: r[k] for k in ("device", "n_models", "steps_run", "compile_s", "run_s", "model_steps_per_s")})
except Exception as error:
    print(sys.argv[1], "no summary:", error)
EOF
done
tar czf "$out/runs.tgz" -C /tmp/gpu_runs --exclude=checkpoints --exclude='stepfit_10000_seeds/history.npz' \
    --exclude='stepfit_10000_seeds/params.npz' . 2>>"$out/log.txt"
fi

budget=$(( $(left) - 45 ))
if [[ $part != runs ]] && (( budget > 30 )); then
    timed bench $(( budget + 40 )) python3 -m jaxfit.bench --models 10,100,1000,10000 --scaling 10,100,1000,10000 \
        --threads 8 --timeout 120 --budget "$budget" --out "$out"
fi
log "done, $(left) s before the deadline"
