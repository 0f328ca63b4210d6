# Dumps the compiled chunk (optimised HLO) of a small sumsq and stepfit config, to compare two
# versions of the engine instruction for instruction: python results/benchmarks/compiled_chunk.py NAME
# (writes /tmp/hlo_NAME_sumsq.txt and /tmp/hlo_NAME_stepfit.txt).
import hashlib
import sys

from jaxfit import config, sweep

which = sys.argv[1]
for name, ov in (("sumsq", ["sweep.n_seeds=5", "train.epochs=2", "task.eval_train=false", "model.init=manual", "execution.chunk_epochs=1"]),
                 ("stepfit", ["sweep.n_seeds=5", "train.steps=20000"])):
    cfg = config.load(name, ov)
    text = sweep.prepare(cfg).chunk_fn.as_text()
    open(f"/tmp/hlo_{which}_{name}.txt", "w").write(text)
    print(which, name, hashlib.sha256(text.encode()).hexdigest()[:16], len(text))
