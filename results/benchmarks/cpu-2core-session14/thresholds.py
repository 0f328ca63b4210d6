"""Measurement (issue 35): the block sizes at which each group's XLA:CPU routing can change.

    python thresholds.py

XLA on a CPU hands a fusion of 4,096 elements or more to YNNPACK (eltwise and reduce; the logs
here show dots do not matter), so an operation of s elements per model changes its routing -- and
may round differently -- where a block reaches ceil(4096 / s) models. This traces one chunk of each
group of the small stepfit and sumsq configs for blocks of 8 and 16 models, takes every
floating-point operation's elements per model from the difference, and prints the thresholds
below 4,096: between two consecutive ones, every block size rounds alike (thresholds.log: the wide
stepfit group rounds alike at 2-5, at 6-40, differently from 5 to 6 and from 40 to 41).
"""

import math
from functools import partial

import jax
import jax.numpy as jnp

from jaxfit import config, experiment, plan, trainer

SMALL = 4096


def per_model_sizes(cfg: config.Config, group: plan.GroupModels) -> set[int]:
    s = trainer.make_setup(cfg, group.group)
    data = trainer.RunData(experiment.run_data(cfg.task, cfg.train.eval_batch_size))

    def sizes(n: int) -> list[int]:
        block = jax.tree.map(lambda a: jnp.zeros((n, *a.shape[1:]), a.dtype), group.coords)
        states = jax.eval_shape(partial(trainer.init_block, s), block, data)
        return [
            int(v.aval.size)
            for eqn in trainer.equations(partial(trainer.run_chunk, s), states, block, data, jnp.int32(0))
            for v in eqn.outvars
            if hasattr(v.aval, "dtype") and jnp.issubdtype(v.aval.dtype, jnp.floating)
        ]

    eight, sixteen = sizes(8), sizes(16)
    return {(b - a) // 8 for a, b in zip(eight, sixteen) if b > a}


for name, overrides in (("stepfit", ["train.steps=300"]), ("sumsq", ["task.n_samples=1100", "task.n_train=1000", "train.epochs=3"])):
    cfg = config.load(name, [*overrides, "sweep.n_seeds=8"])
    for group in plan.expand(cfg):
        small = sorted(s for s in per_model_sizes(cfg, group) if 0 < s < SMALL)
        thresholds = sorted({math.ceil(SMALL / s) for s in small})
        print(f"{name} {group.group.name}: per-model sizes below {SMALL}: {small}")
        print(f"  blocks round alike between consecutive thresholds: {thresholds}")
