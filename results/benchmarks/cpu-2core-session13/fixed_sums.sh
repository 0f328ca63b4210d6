#!/bin/bash
# Side by side on the 2-core CPU: the engine's step as it is against its sums rewritten in a fixed
# order (fixed_sums.py), then the neighbour tests under each rewrite (the strict xfail across the
# YNNPACK size passes -- "XPASS(strict)" -- where the rewrite makes a model independent of its block).
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.." && . .venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
for round in 1 2; do
  for spec in '{"implementation":"jaxfit","workload":"sumsq","n_models":100,"steps":1800}' '{"implementation":"jaxfit","workload":"stepfit_wide","n_models":100,"steps":20000}' '{"implementation":"jaxfit","workload":"stepfit_narrow","n_models":100,"steps":20000}' '{"implementation":"jaxfit","workload":"stepfit_narrow","n_models":1000,"steps":5000}'; do
    for side in plain pairwise pairwise_small sequential_small; do
      if [ $side = plain ]; then run=(python -m jaxfit.bench); else run=(python "$here/fixed_sums.py" $side -m jaxfit.bench); fi
      r=$("${run[@]}" --one "$spec" 2>/dev/null | grep '^{' | tail -1)
      echo "$round $side $spec $r"
    done
  done
done
for side in pairwise_small sequential_small; do
  echo "neighbour tests, $side: $(python "$here/fixed_sums.py" $side -m pytest -q -p no:cacheprovider tests/test_train.py -k neighbours 2>&1 | tail -1)"
done
echo "neighbour tests, plain: $(python -m pytest -q -p no:cacheprovider tests/test_train.py -k neighbours 2>&1 | tail -1)"
