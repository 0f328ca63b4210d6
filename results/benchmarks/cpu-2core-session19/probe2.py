"""python probe2.py STEPS K1 K2: spirals lr [0.01] on K1 devices vs three rates on K2, first differing leaves."""

import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfit import config, plan, sweep
from tests.test_invariance import own_leaves

if "recip" in sys.argv:
    exec(open("adam_recip.py").read())
steps, k1, k2 = sys.argv[1:4]


def forced(k):
    def m(step_bytes):
        mesh = Mesh(np.asarray(jax.devices()[: int(k)]), ("models",))
        return NamedSharding(mesh, P("models")), NamedSharding(mesh, P()), mesh.size

    return m


res = []
for lr, k in (("[0.01]", k1), ("[0.003, 0.01, 0.03]", k2)):
    plan.mesh = forced(k)
    res.append(
        own_leaves(
            sweep.run(
                config.load("/work/main/examples/spirals.toml", [f"train.steps={steps}", "sweep.n_seeds=3", f"optim.lr={lr}"]), quiet=True
            )
        )
    )
bad = []
for label in sorted(res[0].keys() & res[1].keys()):
    for leaf, v in res[0][label].items():
        if not np.array_equal(v, res[1][label][leaf], equal_nan=True):
            bad.append((label, leaf))
print("shared", len(res[0].keys() & res[1].keys()), "bad", len(bad))
for b in bad[:8]:
    print(b)
