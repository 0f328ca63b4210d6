import jax
import jax.numpy as jnp
import numpy as np

k = jax.random.split(jax.random.key(0), 3)
a, b, c = (np.asarray(jax.random.normal(kk, (80, 100))) for kk in k)
tests = {
    "fma": lambda a, b, c: a * b + c,
    "chain": lambda a, b, c: (a * b + c) * a - b / (c + 3.0),
    "tanh": lambda a, b, c: jnp.tanh(a),
    "exp": lambda a, b, c: jnp.exp(a),
    "logistic": lambda a, b, c: jax.nn.sigmoid(a),
    "sqrt": lambda a, b, c: jnp.sqrt(jnp.abs(a)),
    "rsqrt": lambda a, b, c: jax.lax.rsqrt(jnp.abs(a) + 1),
    "log": lambda a, b, c: jnp.log(jnp.abs(a) + 1),
    "pow": lambda a, b, c: jnp.abs(a) ** b,
    "sum": lambda a, b, c: (a * b).sum(1),
    "max": lambda a, b, c: (a * b).max(1),
    "cumsum": lambda a, b, c: jnp.cumsum(a, 1),
    "mean": lambda a, b, c: jnp.mean(a, 1),
}
for name, f in tests.items():
    small = np.asarray(jax.jit(f)(a[:40], b[:40], c[:40]))
    big = np.asarray(jax.jit(f)(a, b, c))[:40]
    print(f"{name:10s} same across the 4096 threshold: {np.array_equal(small, big)}")
