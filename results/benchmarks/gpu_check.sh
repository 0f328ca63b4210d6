#!/usr/bin/env bash
# The GPU checks of the hardening work (issue 14), in one short call of a lent GPU machine:
#     bash results/benchmarks/gpu_check.sh OUT_DIR
# 1. Ctrl-C during a GPU chunk (where the fifth session's engine lost the checkpoint: the chunk
#    call is asynchronous and donates its input): a 4,000-model stepfit run is sent SIGINT while
#    it trains, must exit 130 with a checkpoint, and, resumed, must equal an uninterrupted run bit
#    for bit (on this GPU).
# 2. A run too large for the GPU's memory is refused in one line with the estimate.
# 3. The neighbour-independence tests on this GPU (known to fail for sumsq: BENCHMARKS.md).
set -u
out=$(realpath -m "${1:-runs/gpu_check}")
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt"; }
run=(python3 -m jaxfit.run --config stepfit --set sweep.n_seeds=2000 --set train.steps=60000 --set execution.chunk_epochs=2000 --quiet)

log "device: $(nvidia-smi --query-gpu=name --format=csv,noheader)"
"${run[@]}" --out /tmp/chk/whole >>"$out/log.txt" 2>&1
log "uninterrupted: exit $?"
"${run[@]}" --out /tmp/chk/cut >>"$out/log.txt" 2>&1 &
pid=$!
until [ -d /tmp/chk/cut/checkpoints ] || ! kill -0 $pid 2>/dev/null; do sleep 0.2; done  # training has begun
sleep 2
kill -INT $pid
wait $pid
log "interrupted: exit $? (130 expected); checkpoints: $(ls /tmp/chk/cut/checkpoints 2>&1 | tr '\n' ' ')"
python3 -m jaxfit.run --resume /tmp/chk/cut --quiet >>"$out/log.txt" 2>&1
log "resumed: exit $?"
python3 - <<'EOF' 2>&1 | tee -a "$out/log.txt"
import json
import numpy as np
a, b = "/tmp/chk/whole", "/tmp/chk/cut"
same = json.load(open(f"{a}/summary.json"))["models"] == json.load(open(f"{b}/summary.json"))["models"]
for name in ("history.npz", "params.npz"):
    with np.load(f"{a}/{name}") as x, np.load(f"{b}/{name}") as y:
        same &= x.files == y.files and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x.files)
print("resumed run equals the uninterrupted one bit for bit:", same)
EOF
python3 -m jaxfit.run --config stepfit --set sweep.n_seeds=1000 --set train.batch_size=50000000 --out /tmp/chk/huge 2>&1 | tail -1 | tee -a "$out/log.txt"
log "too large: exit ${PIPESTATUS[0]} (2 expected); folder made: $([ -e /tmp/chk/huge ] && echo yes || echo no)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k neighbours 2>&1 | tail -15 >>"$out/log.txt"
log "done"
