"""python dots.py: which of a block's dots give a model bits that depend on the block? (issue 35)

For blocks of 2, 3, 8, 30 and 60 models, under the engine's compiler options: (a) one model's
first spirals layer over shared points, `points @ w` vmapped (XLA folds the models into one
[2000, 2] @ [2, 16 x models] dot), plain and under `own_sums.own_order`; (b) a dot batched over
the block, [models, 2000, 16] @ [models, 16, 16]. Prints, per form and block, whether every
model's output equals what the same model gives in a block of 2. In the twenty-third session:
(a) plain differs at 3, 8 and 60; (a) under own_order and (b) equal everywhere.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import plan
from jaxfit.own_sums import own_order

options = plan.compiler_options(jax.devices()[0])
rng = np.random.default_rng(0)
points = jnp.asarray(rng.standard_normal((2000, 2)).astype(np.float32))
w1 = rng.standard_normal((60, 2, 16)).astype(np.float32)
h = rng.standard_normal((60, 2000, 16)).astype(np.float32)
w2 = rng.standard_normal((60, 16, 16)).astype(np.float32) / 4

forms = {
    "shared points, plain vmap": (jax.vmap(lambda w, x: x @ w, (0, None)), lambda n: (w1[:n], points)),
    "shared points, own_order": (jax.vmap(own_order(lambda w, x: x @ w), (0, None)), lambda n: (w1[:n], points)),
    "batched dot": (jax.vmap(lambda a, b: a @ b), lambda n: (h[:n], w2[:n])),
}
for name, (fn, args) in forms.items():
    outs = {n: np.asarray(jax.jit(fn).lower(*args(n)).compile(options)(*args(n))) for n in (2, 3, 8, 30, 60)}
    same = {n: all(np.array_equal(out[i], outs[2][i]) for i in range(2)) for n, out in outs.items()}
    print(f"{name}: " + ", ".join(f"{n} {'equal' if s else 'DIFFERS'}" for n, s in same.items()))
