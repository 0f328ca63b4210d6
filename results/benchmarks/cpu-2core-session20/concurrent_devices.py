"""Whether two CPU devices run two one-device programs at once when jax dispatches them one
after the other (each program committed to its device): the time of both vs one."""

import os
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
import jax
import jax.numpy as jnp


def body(c, _):
    return jnp.tanh(c @ c.T @ c * 0.5 + 0.1), None


@jax.jit
def f(x):
    return jax.lax.scan(body, x, None, length=20000)[0]


devs = jax.devices()
x = [jax.device_put(jnp.ones((64, 64)) * 0.01, d) for d in devs]
for xi in x:
    f(xi).block_until_ready()
t = time.perf_counter()
f(x[0]).block_until_ready()
t1 = time.perf_counter() - t
t = time.perf_counter()
outs = [f(xi) for xi in x]
[o.block_until_ready() for o in outs]
t2 = time.perf_counter() - t
print(f"one device {t1:.3f}s, two devices dispatched {t2:.3f}s (concurrent if ~equal)")
