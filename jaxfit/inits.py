"""Init schemes any experiment can name in `model.init`: functions of a parameter tree (for its
shapes) and a key, drawing every Dense layer (a subtree with `kernel` and `bias`) the way
PyTorch's initialisers do. An experiment adds its own schemes (e.g. hand-set values) in its
`Task.init_params`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Params = dict  # a Flax parameter tree: nested dicts of arrays (one definition, used package-wide)


def _dense_layers(params: Params) -> list[tuple]:
    """Paths of the Dense layers (those with a kernel), in a fixed order."""
    flat = traverse_util.flatten_dict(params)
    return sorted({path[:-1] for path in flat if path[-1] == "kernel"})


def _draw(params: Params, key: jax.Array, draw_layer: Callable) -> Params:
    flat = traverse_util.flatten_dict(params)
    out = {}
    for index, layer in enumerate(_dense_layers(params)):
        kernel = flat[layer + ("kernel",)]
        bias = flat[layer + ("bias",)]
        kernel_key, bias_key = jax.random.split(jax.random.fold_in(key, index))
        out[layer + ("kernel",)], out[layer + ("bias",)] = draw_layer(kernel_key, bias_key, kernel.shape, bias.shape, kernel.shape[0])
    return traverse_util.unflatten_dict(out)


def torch_default(params: Params, key: jax.Array) -> Params:
    """nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) for the weight, which is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias."""

    def layer(kernel_key, bias_key, kernel_shape, bias_shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return (
            jax.random.uniform(kernel_key, kernel_shape, jnp.float32, -bound, bound),
            jax.random.uniform(bias_key, bias_shape, jnp.float32, -bound, bound),
        )

    return _draw(params, key, layer)


def he(params: Params, key: jax.Array) -> Params:
    """kaiming_normal_(mode='fan_in', nonlinearity='relu'): N(0, 2/fan_in); biases zero."""

    def layer(kernel_key, bias_key, kernel_shape, bias_shape, fan_in):
        std = np.sqrt(2.0 / fan_in)
        return std * jax.random.normal(kernel_key, kernel_shape, jnp.float32), jnp.zeros(bias_shape, jnp.float32)

    return _draw(params, key, layer)


SCHEMES: dict[str, Callable[[Params, jax.Array], Params]] = {"torch_default": torch_default, "he": he}
