"""Init schemes any experiment can name in `model.init`: functions of a parameter tree (for its
shapes) and a key, drawing every Dense layer (a subtree with a 2-D `kernel` and, unless
`use_bias=False`, a `bias`) the way PyTorch's initialisers draw nn.Linear (bias=True or False);
any other parameter is named in one line. An experiment adds its own schemes (e.g. hand-set values) in its
`Task.init_params`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Params = dict  # a Flax parameter tree: nested dicts of arrays (one definition, used package-wide)


class UnknownLayer(ValueError):
    """A parameter that a built-in init scheme has no rule for (one line naming it)."""


def _dense_layers(params: Params, scheme: str) -> list[tuple]:
    """Paths of the Dense layers (a 2-D `kernel`, with or without a `bias` of its outputs), in a
    fixed order; any other parameter is named in one line (UnknownLayer)."""
    flat = traverse_util.flatten_dict(params)
    layers: dict[tuple, dict[str, tuple]] = {}
    for path, leaf in flat.items():
        layers.setdefault(path[:-1], {})[path[-1]] = tuple(leaf.shape)
    for layer, shapes in sorted(layers.items()):
        kernel, bias = shapes.get("kernel"), shapes.get("bias")
        if not (set(shapes) <= {"kernel", "bias"} and kernel is not None and len(kernel) == 2 and bias in (None, kernel[1:])):
            held = ", ".join(f"{name} {list(shape)}" for name, shape in sorted(shapes.items()))
            raise UnknownLayer(
                f"init scheme {scheme!r} draws Dense layers (a 2-D kernel, with or without a bias); the parameters at "
                f"{'/'.join(map(str, layer)) or 'the top level'} ({held}) are not one: "
                "give them an init of the experiment's own (its init_params)"
            )
    return sorted(layers)


def _draw(params: Params, key: jax.Array, draw_layer: Callable, scheme: str) -> Params:
    """Each Dense layer drawn by `draw_layer(kernel_key, bias_key, kernel_shape, fan_in)` ->
    (kernel, bias); a layer without a bias keeps none."""
    flat = traverse_util.flatten_dict(params)
    out = {}
    for index, layer in enumerate(_dense_layers(params, scheme)):
        kernel = flat[layer + ("kernel",)]
        kernel_key, bias_key = jax.random.split(jax.random.fold_in(key, index))
        out[layer + ("kernel",)], bias = draw_layer(kernel_key, bias_key, kernel.shape, kernel.shape[0])
        if layer + ("bias",) in flat:
            out[layer + ("bias",)] = bias
    return traverse_util.unflatten_dict(out)


def torch_default(params: Params, key: jax.Array) -> Params:
    """nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) for the weight, which is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias."""

    def layer(kernel_key, bias_key, kernel_shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return (
            jax.random.uniform(kernel_key, kernel_shape, jnp.float32, -bound, bound),
            jax.random.uniform(bias_key, kernel_shape[1:], jnp.float32, -bound, bound),
        )

    return _draw(params, key, layer, "torch_default")


def he(params: Params, key: jax.Array) -> Params:
    """kaiming_normal_(mode='fan_in', nonlinearity='relu'): N(0, 2/fan_in); biases zero."""

    def layer(kernel_key, bias_key, kernel_shape, fan_in):
        std = np.sqrt(2.0 / fan_in)
        return std * jax.random.normal(kernel_key, kernel_shape, jnp.float32), jnp.zeros(kernel_shape[1:], jnp.float32)

    return _draw(params, key, layer, "he")


SCHEMES: dict[str, Callable[[Params, jax.Array], Params]] = {"torch_default": torch_default, "he": he}
