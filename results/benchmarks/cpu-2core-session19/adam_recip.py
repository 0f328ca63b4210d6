"""optax.scale_by_adam with the bias corrections multiplied in as reciprocals (no divide by a broadcast scalar)."""

import jax
import jax.numpy as jnp
import optax

from jaxfit import optim


def scale_by_adam_recip(b1, b2, eps):
    def init(params):
        z = jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=z, nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        mu = jax.tree.map(lambda g, t: (1 - b1) * g + b1 * t, updates, state.mu)
        nu = jax.tree.map(lambda g, t: (1 - b2) * (g * g) + b2 * t, updates, state.nu)
        count = optax.safe_increment(state.count)
        r1 = 1 / (1 - b1 ** count.astype(jnp.float32))
        r2 = 1 / (1 - b2 ** count.astype(jnp.float32))
        out = jax.tree.map(lambda m, v: (m * r1) / (jnp.sqrt(v * r2) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


optim.Adam.moments = lambda self, hp: scale_by_adam_recip(hp["optim.b1"], hp["optim.b2"], hp["optim.eps"])
