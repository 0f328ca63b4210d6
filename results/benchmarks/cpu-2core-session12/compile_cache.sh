#!/bin/bash
# first vs second compile, fresh cache folder, and the whole command's wall time
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
export JAXFIT_COMPILE_CACHE=/tmp/w/cb_cache; rm -rf $JAXFIT_COMPILE_CACHE /tmp/w/cb
for spec in "sumsq_readme|--config sumsq --set train.epochs=5 --set sweep.n_seeds=3" "stepfit|--config stepfit --set train.steps=20000" "spirals|--config examples/spirals.toml"; do
  name=${spec%%|*}; args=${spec#*|}
  for round in first second; do
    s=$(date +%s.%N)
    python -m jaxfit.run $args --out /tmp/w/cb/${name}_$round --quiet > /dev/null 2>&1
    e=$(date +%s.%N)
    python -c "
import json; r=json.load(open('/tmp/w/cb/${name}_$round/summary.json'))['run']
print('$name', '$round', 'compile_s %.2f' % r['compile_s'], 'run_s %.2f' % r['run_s'], 'wall_s %.2f' % ($e-$s), r['compile_cache'])"
  done
done
