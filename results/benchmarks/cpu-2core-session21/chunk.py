import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core
from jax.interpreters import batching, mlir

opts = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
LIMIT = 4096
chunked_sum_p = core.Primitive("chunked_sum")


def _impl(x, *, axes, own):
    lead = x.ndim - own
    rows = math.prod(x.shape[:lead])
    per = math.prod(x.shape[lead:])
    flat = x.reshape((rows,) + x.shape[lead:])
    c = max(1, (LIMIT - 1) // per)
    parts = [jnp.sum(flat[i : i + c], axis=tuple(a + 1 for a in axes)) for i in range(0, rows, c)]
    out = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
    return out.reshape(x.shape[:lead] + out.shape[1:])


def _abstract(x, *, axes, own):
    lead = x.ndim - own
    keep = [d for i, d in enumerate(x.shape) if i < lead or (i - lead) not in axes]
    return jax.core.ShapedArray(tuple(keep), x.dtype)


chunked_sum_p.def_impl(_impl)
chunked_sum_p.def_abstract_eval(_abstract)
mlir.register_lowering(chunked_sum_p, mlir.lower_fun(_impl, multiple_results=False))


def _batch(args, dims, *, axes, own):
    (x,) = args
    (d,) = dims
    return chunked_sum_p.bind(jnp.moveaxis(x, d, 0), axes=axes, own=own), 0


batching.primitive_batchers[chunked_sum_p] = _batch
mode = sys.argv[1]
K = int(sys.argv[2])


def one(x):
    y = jnp.sin(x) * 1.7
    if mode == "chunk":
        return chunked_sum_p.bind(y, axes=(0,), own=1)
    return jnp.sum(y)


rng = np.random.default_rng(0)
X = rng.standard_normal((200, K)).astype(np.float32)
outs = {}
for M in (1, 2, 3, 40, 41, 100, 200):
    f = jax.jit(jax.vmap(one)).lower(X[:M]).compile(opts)
    outs[M] = np.asarray(f(X[:M]))
    txt = f.as_text()
    if M in (2, 100):
        print(M, "ynn" in txt.lower(), txt.count("reduce("))
for M in outs:
    print(M, np.array_equal(outs[M][:1], outs[1]), np.abs(outs[M][:1] - outs[1]).max())
