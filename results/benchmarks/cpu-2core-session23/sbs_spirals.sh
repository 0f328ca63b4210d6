#!/bin/bash
# Side by side, alternating: sbs_spirals.sh STEPS ROUNDS DIR... -- examples/spirals.toml's 60 models,
# nothing stopping (stop_at=2.0), compile cache off; one JSON line per run and checkout.
cd /work/main && . .venv/bin/activate
export JAXFIT_COMPILE_CACHE=off
st=$1; r=$2; shift 2
for i in $(seq "$r"); do for d in "$@"; do
  out=$(cd "$d" && PYTHONPATH=$d python -c "
import json
from jaxfit import config, sweep
cfg = config.load('$d/examples/spirals.toml', ['train.steps=$st', 'train.stop_at=2.0'])
t = sweep.run(cfg, quiet=True).timing
print(json.dumps({k: t[k] for k in ('model_steps_per_s', 'compile_s', 'steps_run')}))" 2>/dev/null | tail -1)
  echo "spirals 60 $d $out"
done; done
