#!/bin/bash
# Measurement (issue 35): base (XLA:CPU default routing) vs "dot" (YNNPACK keeps dots only) vs "none" (no YNNPACK
# fusions), the engine of ad555ec in each, two rounds alternating; the CPU shared with a helper's small runs.
. /work/main/.venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
one() { # name flags workload models steps
  r=$(cd /tmp/base && env $2 PYTHONPATH=/tmp/base python -c "
import json,sys; from jaxfit import bench
print(json.dumps(bench.bench_jaxfit('$3', $4, $5)))" 2>/dev/null | tail -1)
  echo "$1 $3 $4 $r"
}
for round in 1 2; do
 for w in "stepfit_narrow 10 20000" "stepfit_wide 10 20000" "stepfit_wide 100 20000" "stepfit_narrow 1000 3000" "sumsq 10 1800" "sumsq 100 900"; do
  set -- $w
  one base "X=1" $1 $2 $3
  one dot "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot" $1 $2 $3
  one none "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=" $1 $2 $3
 done
done
