#!/bin/bash
# sbs.sh WORKLOAD N STEPS ROUNDS SPEC... ; SPEC = DIR[%ROUTING]
cd /work/main && . .venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
w=$1; n=$2; st=$3; r=$4; shift 4
for i in $(seq "$r"); do for v in "$@"; do
  d=${v%%%*}; unset JAXFIT_ROUTING; [[ $v == *%* ]] && export JAXFIT_ROUTING=${v#*%}
  out=$(cd "$d" && PYTHONPATH=$d python -c "import json; from jaxfit import bench; print(json.dumps(bench.bench_jaxfit('$w', $n, $st)))" 2>/dev/null | tail -1)
  echo "$w $n $v $out"
done; done
