#!/bin/bash
# Side by side: the session's starting commit ("$BEFORE") against HEAD, jaxfit only, alternating fresh processes.
# BEFORE: a worktree of the session's starting commit (git worktree add /tmp/w/before b04708c); AFTER: this checkout.
BEFORE=${BEFORE:-/tmp/w/before}; AFTER=${AFTER:-$(cd "$(dirname "$0")/../../.." && pwd)}
. "$AFTER/.venv/bin/activate"
cd /tmp; export JAXFIT_COMPILE_CACHE=off
for round in 1 2; do
  for spec in '{"implementation":"jaxfit","workload":"sumsq","n_models":10,"steps":1800}' '{"implementation":"jaxfit","workload":"sumsq","n_models":100,"steps":1800}' '{"implementation":"jaxfit","workload":"stepfit_wide","n_models":100,"steps":20000}' '{"implementation":"jaxfit","workload":"stepfit_narrow","n_models":100,"steps":20000}'; do
    for side in before after; do
      if [ $side = before ]; then PP="$BEFORE"; else PP="$AFTER"; fi
      r=$(PYTHONPATH=$PP python -m jaxfit.bench --one "$spec" 2>/dev/null | grep '^{' | tail -1)
      echo "$round $side $spec $r"
    done
  done
done
