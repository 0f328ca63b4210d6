#!/bin/bash
# Side by side, alternating: sbs.sh WORKLOAD N_MODELS STEPS ROUNDS DIR... (each DIR a checkout; its own
# XLA_FLAGS after an @, e.g. /tmp/base@--xla_force_host_platform_device_count=2). Compile cache off.
cd /work/main && . .venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
w=$1; n=$2; st=$3; r=$4; shift 4
for i in $(seq "$r"); do for v in "$@"; do
  d=${v%%@*}; f=""; [[ $v == *@* ]] && f=${v#*@}
  out=$(cd "$d" && XLA_FLAGS="$f" PYTHONPATH=$d python -c "import json; from jaxfit import bench; print(json.dumps(bench.bench_jaxfit('$w', $n, $st)))" 2>/dev/null | tail -1)
  echo "$w $n $v $out"
done; done
