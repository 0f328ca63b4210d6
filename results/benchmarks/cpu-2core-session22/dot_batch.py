"""python dot_batch.py: is a model's matrix-matrix dot the same whatever the block? (issue 35)

spirals' forward (2000 points through Dense(16) -> tanh -> Dense(16) -> tanh -> Dense(2)) for
model 0 in blocks of 2, 3, 8, 30 and 60 models, under `own_sums.own_order` and the engine's
compiler options: prints, per block, whether model 0's logits equal those of the block of 2.
Found by a new-user test (a spirals model replayed alone differed from its run in val_loss by
one ulp); in the twenty-second session: equal at 2 and 30, differing by 1.5e-7 at 3, 8 and 60
(YNNPACK's batched dot, K = 16). A plain reduce and the cross-entropy's sums are invariant.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import plan
from jaxfit.own_sums import own_order

options = plan.compiler_options(jax.devices()[0])
rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((2000, 2)).astype(np.float32))
w1 = rng.standard_normal((60, 2, 16)).astype(np.float32)
w2 = rng.standard_normal((60, 16, 16)).astype(np.float32) / 4
w3 = rng.standard_normal((60, 16, 2)).astype(np.float32) / 4


def forward(a, b, c, points):
    return jnp.tanh(jnp.tanh(points @ a) @ b) @ c


block = jax.vmap(own_order(forward), (0, 0, 0, None))
outs = {}
for n in (2, 3, 8, 30, 60):
    compiled = jax.jit(block).lower(w1[:n], w2[:n], w3[:n], x).compile(options)
    outs[n] = np.asarray(compiled(w1[:n], w2[:n], w3[:n], x))[0]
for n, out in outs.items():
    print(n, "models: equal to 2" if np.array_equal(out, outs[2]) else f"models: differs by {np.abs(out - outs[2]).max():.2g}")
