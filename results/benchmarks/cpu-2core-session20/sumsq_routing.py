"""python sumsq_routing.py N_SEEDS OPTION [--set-style overrides]: sumsq's rate (2 epochs, eval off)
with the engine's CPU compile option replaced: "-" keeps it (YNNPACK for dots only), "default"
drops it (XLA's routing), else a ynn fusion type list. Run from a checkout with the patch."""

import json
import sys

from jaxfit import config, plan, sweep

o = sys.argv[2]
if o == "default":
    plan.CPU_OPTIONS.clear()
elif o != "-":
    plan.CPU_OPTIONS["xla_cpu_experimental_ynn_fusion_type"] = o
cfg = config.load(
    "sumsq",
    [
        "train.epochs=2",
        "task.eval_train=false",
        "model.init=manual",
        f"sweep.n_seeds={sys.argv[1]}",
        "execution.chunk_epochs=1",
        *sys.argv[3:],
    ],
)
t = sweep.run(cfg, quiet=True).timing
print(o, t["n_devices"], json.dumps({"rate": round(t["model_steps_per_s"])}))
