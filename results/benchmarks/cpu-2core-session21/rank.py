import sys

import jax
import jax.numpy as jnp
import numpy as np

opts = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
mode = sys.argv[1]
K = int(sys.argv[2]) if len(sys.argv) > 2 else 100


def one(x):
    y = jnp.sin(x) * 1.7
    if mode == "rank":
        y = y.reshape(y.shape + (1,) * 8)
    if mode == "r2":
        y = jnp.pad(y, (0, 256 - y.shape[0])).reshape((2,) * 8)
    return jnp.sum(y)


rng = np.random.default_rng(0)
X = rng.standard_normal((200, K)).astype(np.float32)
outs = {}
for M in (2, 3, 40, 41, 100, 200):
    f = jax.jit(jax.vmap(one)).lower(X[:M]).compile(opts)
    outs[M] = np.asarray(f(X[:M]))
    txt = f.as_text()
    if M in (2, 100):
        print(M, "ynn" in txt.lower(), txt.count("fusion"))
for M in outs:
    print(M, np.array_equal(outs[M][:2], outs[2]), np.abs(outs[M][:2] - outs[2]).max())
