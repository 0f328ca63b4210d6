import time

import jax
import jax.numpy as jnp


def work(x):
    def body(c, _):
        return jnp.sin(c) * 1.0001 + 0.5, None

    return jax.lax.scan(body, x, None, length=300)[0]


x = jnp.ones((2, 200000))
one = jax.jit(lambda x: work(x[0]))
two = jax.jit(lambda x: (work(x[0]), work(x[1] + 1)))
twoc = lambda x: (
    jax.jit(lambda x: (work(x[0]), work(x[1] + 1)))
    .lower(x)
    .compile(compiler_options={"xla_cpu_enable_concurrency_optimized_scheduler": True})(x)
)
seq = jax.jit(lambda x: jax.lax.map(work, x))
for name, f in (("one", one), ("two", two), ("twoc", twoc)):
    jax.block_until_ready(f(x))
    t = time.perf_counter()
    for _ in range(3):
        jax.block_until_ready(f(x))
    print(name, (time.perf_counter() - t) / 3)
