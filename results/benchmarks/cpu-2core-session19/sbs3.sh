#!/bin/bash
# variants: base | dot | dot2 (2 forced cpu devices) | base2
cd /work/main && . .venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
w=$1; n=$2; st=$3; r=$4; shift 4
for i in $(seq $r); do for v in "$@"; do
  case $v in
    base) d=/tmp/base; f="";; base2) d=/tmp/base; f="--xla_force_host_platform_device_count=2";;
    dot) d=/work/main; f="";; dot2) d=/work/main; f="--xla_force_host_platform_device_count=2";;
    *) d=${v%%@*}; f=${v#*@};;
  esac
  out=$(cd $d && XLA_FLAGS="$f" PYTHONPATH=$d python -c "import json; from jaxfit import bench; print(json.dumps(bench.bench_jaxfit('$w', $n, $st)))" 2>/dev/null | tail -1)
  echo "$w $n $v $out"
done; done
