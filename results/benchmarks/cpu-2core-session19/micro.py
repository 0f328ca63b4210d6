"""time value_and_grad of the sumsq model, vmapped over 10 models, under a YNN option."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import config, train

opt = sys.argv[1]
cfg = config.load("sumsq", ["sweep.n_seeds=10", "model.init=manual"])
group = cfg.groups[0]
module = train.module_of(cfg.task, group.model)
x = jnp.asarray(np.random.default_rng(0).uniform(-5, 8, (10, 100, 64)), jnp.float32)
y = jnp.sum(x**2, -1, keepdims=True)
params = jax.vmap(lambda k: module.init({"params": k, "dropout": k}, x[0], train=False)["params"])(jax.random.split(jax.random.key(0), 10))


def loss(p, x, y, k):
    pred = module.apply({"params": p}, x, train=True, rngs={"dropout": k})
    return jnp.mean((pred - y) ** 2)


def steps(p, x, y):
    def body(p, i):
        value, g = jax.vmap(jax.value_and_grad(loss), (0, 0, 0, None))(p, x, y, jax.random.fold_in(jax.random.key(1), i))
        return jax.tree.map(lambda a, b: a - 1e-6 * b, p, g), value

    return jax.lax.scan(body, p, jnp.arange(200))


opts = {} if opt == "default" else {"xla_cpu_experimental_ynn_fusion_type": opt}
c = jax.jit(steps).lower(params, x, y).compile(compiler_options=opts)
jax.block_until_ready(c(params, x, y))
best = 1e9
for _ in range(5):
    t = time.perf_counter()
    jax.block_until_ready(c(params, x, y))
    best = min(best, time.perf_counter() - t)
print(opt, f"{2000 / best:.0f} model-steps/s")
