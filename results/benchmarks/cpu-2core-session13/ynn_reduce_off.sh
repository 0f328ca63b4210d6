#!/bin/bash
cd "$(dirname "$0")/../../.." && . .venv/bin/activate && cd /tmp; here=$OLDPWD
export JAXFIT_COMPILE_CACHE=off
for round in 1; do
  for spec in '{"implementation":"jaxfit","workload":"sumsq","n_models":10,"steps":1800}' '{"implementation":"jaxfit","workload":"sumsq","n_models":100,"steps":1800}' '{"implementation":"jaxfit","workload":"stepfit_wide","n_models":100,"steps":20000}' '{"implementation":"jaxfit","workload":"stepfit_narrow","n_models":100,"steps":20000}' '{"implementation":"jaxfit","workload":"stepfit_narrow","n_models":1000,"steps":5000}'; do
    for side in default noreduce; do
      if [ $side = default ]; then F=""; else F="--xla_cpu_experimental_ynn_fusion_type=dot,eltwise"; fi
      r=$(XLA_FLAGS="$F" PYTHONPATH=$here python -m jaxfit.bench --one "$spec" 2>/dev/null | grep '^{' | tail -1)
      echo "$round $side $spec $r"
    done
  done
done
