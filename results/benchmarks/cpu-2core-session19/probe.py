"""python probe.py N1 N2 [mesh1 mesh2]: stepfit small with N1 and N2 seeds, forcing plan.mesh sizes."""

import sys

import numpy as np

from jaxfit import plan
from tests.conftest import run_small
from tests.test_invariance import own_leaves

n1, n2 = int(sys.argv[1]), int(sys.argv[2])
name = sys.argv[5] if len(sys.argv) > 5 else "stepfit"
orig = plan.mesh


def forced(k):
    def m(step_bytes):
        import jax
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh = Mesh(np.asarray(jax.devices()[:k]), ("models",))
        return NamedSharding(mesh, P("models")), NamedSharding(mesh, P()), mesh.size

    return m


res = []
for n, k in ((n1, int(sys.argv[3])), (n2, int(sys.argv[4]))):
    plan.mesh = forced(k)

    extra = sys.argv[6:] if k == int(sys.argv[3]) and len(sys.argv) > 6 else []
    res.append(own_leaves(run_small(name, f"sweep.n_seeds={n}", *extra)))
bad = 0
for label in res[0].keys() & res[1].keys():
    for leaf, v in res[0][label].items():
        if not np.array_equal(v, res[1][label][leaf]):
            bad += 1
            print("DIFF", label, leaf, np.max(np.abs(v - res[1][label][leaf])))
print("shared", len(res[0].keys() & res[1].keys()), "bad leaves", bad)
