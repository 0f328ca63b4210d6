#!/bin/bash
# Measurement (issue 35), run from /tmp/base (a worktree of ad555ec, the engine before this session) and /tmp/w35 (the same
# engine with fixed_sums_and_dots.py's rewrite at the step, evaluation and closed form); A: rewrite + YNNPACK dots only;
# B: YNNPACK dots only, nothing rewritten. Two rounds, alternating, on a CPU shared with other work.
. /work/main/.venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
one() { # name path env workload models steps
  r=$(cd $2 && env $3 PYTHONPATH=$2 python -c "
import json,sys; from jaxfit import bench
print(json.dumps(bench.bench_jaxfit('$4', $5, $6)))" 2>/dev/null | tail -1)
  echo "$1 $4 $5 $r"
}
for round in 1 2; do
 for w in "stepfit_narrow 10 20000" "stepfit_narrow 100 20000" "stepfit_wide 10 20000" "stepfit_wide 100 20000" "stepfit_narrow 1000 3000" "sumsq 10 1800"; do
  set -- $w
  one base /tmp/base "X=1" $1 $2 $3
  one A /tmp/w35 "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot" $1 $2 $3
  one B /tmp/w35 "NOSUMS=1 XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot" $1 $2 $3
 done
done
