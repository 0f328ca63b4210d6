#!/bin/bash
# Issue 35, side by side: HEAD before the change (200d4cd, a worktree at /tmp/head) (XLA's default routing, threefry batches) vs the
# working tree of branch issue35-engine (YNNPACK kept to dots in every program, counter-based stepfit batches), each
# bench.bench_jaxfit in a fresh process, compile cache off, two rounds alternating.
. /work/main/.venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
one() { # name tree workload models steps
  r=$(cd $2 && PYTHONPATH=$2 python -c "
import json; from jaxfit import bench
print(json.dumps(bench.bench_jaxfit('$3', $4, $5)))" 2>/dev/null | tail -1)
  echo "$1 $3 $4 $r"
}
for round in 1 2; do
 for w in "stepfit_narrow 10 20000" "stepfit_narrow 100 20000" "stepfit_wide 100 20000" "stepfit_narrow 1000 3000" "sumsq 20 1800"; do
  set -- $w
  one before ${BEFORE:-/tmp/head} $1 $2 $3
  one after /work/main $1 $2 $3
 done
done
