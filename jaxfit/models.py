"""Flax modules of the two experiments, and the init schemes that set their parameters.

Parameters follow Flax's layout (Dense kernel is [in, out], PyTorch's weight transposed).
Init schemes are functions of a parameter template and a key, so a group can hold models of
several schemes on one vmapped axis.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxfit import tasks
from jaxfit.config import MLP, SharedSubnet, SumsqTask

Params = dict


def fixed_order_sum(values: jax.Array) -> jax.Array:
    """Sum over the last axis by pairwise halving (zero-padded to a power of two): elementwise
    adds in an order fixed by the shape alone. XLA's own reductions may associate differently
    with the number of vmapped models, and a model's numbers must not depend on its neighbours;
    elementwise adds also fuse with what produces them."""
    n = values.shape[-1]
    width = 1 << max(n - 1, 0).bit_length()
    values = jnp.pad(values, [(0, 0)] * (values.ndim - 1) + [(0, width - n)])
    while values.shape[-1] > 1:
        half = values.shape[-1] // 2
        values = values[..., :half] + values[..., half:]
    return values[..., 0]


@jax.custom_vjp
def outer_product(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    """lhs [..., 1] x rhs [1, N] as a broadcast multiply. Its gradients are written as the dots
    they are: autodiff of the multiply gives reduce(broadcast(lhs) * cotangent), which XLA on CPU
    materialises at [models, batch, hidden] before reducing (~1.8x for stepfit's narrow nets)."""
    return lhs * rhs[0]


def _outer_product_forward(lhs: jax.Array, rhs: jax.Array) -> tuple[jax.Array, tuple]:
    return lhs * rhs[0], (lhs, rhs)


def _outer_product_backward(residuals: tuple, cotangent: jax.Array) -> tuple[jax.Array, jax.Array]:
    lhs, rhs = residuals
    rows = tuple(range(lhs.ndim - 1))
    d_rhs = jax.lax.dot_general(lhs, cotangent, ((rows, rows), ((), ())))  # [1, N]
    d_lhs = jax.lax.dot_general(cotangent, rhs, (((cotangent.ndim - 1,), (1,)), ((), ())))  # [..., 1]
    return d_lhs, d_rhs


outer_product.defvjp(_outer_product_forward, _outer_product_backward)


def fused_dense_product(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None, preferred_element_type=None) -> jax.Array:
    """nn.Dense's contraction (inputs [..., K] x kernel [K, N]). With K = 1 (stepfit's first
    layer) it is `outer_product`, which XLA fuses with the activation around it; as a dot with an
    inner size of 1 it wrote every [models, batch, hidden] intermediate to memory. Larger K (sumsq's
    fc3) stays a dot: a multiply-and-sum measured slower there."""
    (contract_lhs, contract_rhs), batch = dimension_numbers
    assert contract_lhs == (lhs.ndim - 1,) and contract_rhs == (0,) and batch == ((), ()), dimension_numbers
    if lhs.shape[-1] == 1:
        return outer_product(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type)


def Dense(features: int, name: str) -> nn.Dense:  # noqa: N802 (a Flax module, named like one)
    return nn.Dense(features, name=name, dot_general=fused_dense_product)


def counter_bits(key: jax.Array, shape: tuple[int, ...], offset: int = 0) -> jax.Array:
    """Uniform uint32 bits for every element of `shape`: murmur3's 32-bit finaliser applied
    twice to (counter, key), a counter-based generator about ten times cheaper than threefry on
    CPU (dropout draws ~100k numbers per sumsq step). Elements are counters offset, offset + 1,
    ...: draws from one key on disjoint counter ranges are independent. Keys come from Flax's
    rng streams (threefry), so streams stay independent across steps and models."""

    def mix(h):
        h = h ^ (h >> 16)
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> 13)
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> 16)

    words = jax.random.key_data(key).astype(jnp.uint32).reshape(-1)
    index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape) + np.uint32(offset)
    return mix(mix(index * np.uint32(0x9E3779B9) + words[0]) ^ words[1])


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def apply_mask(x: jax.Array, kept: jax.Array, keep: float) -> jax.Array:
    """where(kept, x / keep, 0), differentiated with the mask kept from the forward pass: left
    to itself XLA recomputes the mask's hash in the backward pass (measured ~10 % slower for
    sumsq than storing the bool mask)."""
    return jnp.where(kept, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


def _apply_mask_forward(x: jax.Array, kept: jax.Array, keep: float) -> tuple[jax.Array, jax.Array]:
    kept = jax.lax.optimization_barrier(kept)  # one mask, in memory, for both passes
    return apply_mask(x, kept, keep), kept


def _apply_mask_backward(keep: float, kept: jax.Array, cotangent: jax.Array) -> tuple[jax.Array, None]:
    return apply_mask(cotangent, kept, keep), None


apply_mask.defvjp(_apply_mask_forward, _apply_mask_backward)


def dropout_mask(key: jax.Array, shape: tuple[int, ...], rate: float, offset: int = 0) -> jax.Array:
    """True where an element is kept: each independently with probability 1 - rate, as
    counter_bits < round((1 - rate) * 2^32)."""
    threshold = np.uint32(min(round((1.0 - rate) * 2.0**32), 2**32 - 1))
    return counter_bits(key, shape, offset) < threshold


def dropout(x: jax.Array, key: jax.Array, rate: float, offset: int = 0) -> jax.Array:
    """torch.nn.Dropout in training mode: each element kept independently with probability
    1 - rate (`dropout_mask`, counters from `offset`) and scaled by 1 / (1 - rate), else zero."""
    return x if rate == 0.0 else apply_mask(x, dropout_mask(key, x.shape, rate, offset), 1.0 - rate)


def slope(model: SharedSubnet | MLP) -> float:
    """The activation's slope for inputs <= 0: 0 for ReLU."""
    return 0.0 if model.activation == "relu" else model.negative_slope


def activation(model: SharedSubnet | MLP) -> Callable[[jax.Array], jax.Array]:
    """ReLU, or LeakyReLU written as torch's: slope * x wherever x <= 0 (gradient too)."""
    if model.activation == "relu":
        return jax.nn.relu
    slope = model.negative_slope
    return lambda x: jnp.where(x > 0, x, slope * x)


def sum_leading(values: jax.Array) -> jax.Array:
    """Sum over the first axis, left to right, as adds of whole slices: elementwise, in an
    order fixed by the shape, and fused by XLA with whatever produces `values`."""
    total = values[0]
    for index in range(1, values.shape[0]):
        total = total + values[index]
    return total


def _per_unit(values: jax.Array, x: jax.Array) -> jax.Array:
    """[width] -> [width, 1, ..., 1], to broadcast against [width, *x.shape]."""
    return values[(slice(None),) + (None,) * x.ndim]


def _activation_gate(values: jax.Array, positive: jax.Array, kept: jax.Array | None, slope: float) -> jax.Array:
    """values * act'(pre) * kept, as selects: act'(pre) is 1 where pre > 0, else `slope`."""
    zero = jnp.zeros((), values.dtype)
    gated = jnp.where(positive, values, zero if slope == 0.0 else jnp.asarray(slope, values.dtype) * values)
    return gated if kept is None else jnp.where(kept, gated, zero)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def subnet_apply(x: jax.Array, kept: jax.Array | None, params: Params, slope: float, keep: float) -> jax.Array:
    """fc2(dropout(act(fc1(x)))) for a scalar input at every position of x: the sumsq subnet,
    with act = ReLU (slope 0) or LeakyReLU, `kept` the hidden dropout mask [width, *x.shape]
    (None: no dropout) and `keep` = 1 - p.

    Written out rather than as Dense layers for XLA on CPU: with the hidden units on the
    leading axis, the sum over them is adds of whole slices that fuse with fc1, the activation
    and the mask; the backward pass keeps only boolean masks and needs two reductions over
    positions, as act is piecewise linear (act(pre) = act'(pre) * pre gives fc2's kernel
    gradient from the sums for fc1's). As Dense layers on a trailing [..., width] axis, fc2,
    its gradients and fc1's gradients were each a pass over a [models, batch, inputs, width]
    tensor: 1.7x slower for a sumsq step on CPU."""
    return _subnet_forward(x, kept, params, slope, keep)[0]


def _subnet_forward(x, kept, params, slope, keep):
    fc1, fc2 = params["fc1"], params["fc2"]
    pre = _per_unit(fc1["kernel"][0], x) * x[None] + _per_unit(fc1["bias"], x)
    positive = pre > 0
    if slope == 0.0 and kept is not None:  # one mask: kept and positive
        positive, kept = positive & kept, None
    hidden = _activation_gate(pre / jnp.asarray(keep, x.dtype), positive, kept, slope)
    out = sum_leading(_per_unit(fc2["kernel"][:, 0], x) * hidden) + fc2["bias"][0]
    return out, (x, positive, kept, params)


def _subnet_backward(slope, keep, residuals, cotangent):
    x, positive, kept, params = residuals
    fc1, fc2 = params["fc1"], params["fc2"]
    positions = tuple(range(1, x.ndim + 1))
    # sums over positions of cotangent * x * act'(pre) * kept / keep, and of cotangent * act'(pre) * kept / keep
    u = jnp.sum(_activation_gate((cotangent * x)[None], positive, kept, slope), axis=positions) / keep
    v = jnp.sum(_activation_gate(cotangent[None], positive, kept, slope), axis=positions) / keep
    w1, b1, w2 = fc1["kernel"][0], fc1["bias"], fc2["kernel"][:, 0]
    d_params = {
        "fc1": {"kernel": (w2 * u)[None, :], "bias": w2 * v},
        "fc2": {"kernel": (w1 * u + b1 * v)[:, None], "bias": jnp.sum(cotangent).reshape(1)},
    }
    d_x = cotangent * sum_leading(_activation_gate(_per_unit(w2 * w1 / keep, x), positive, kept, slope))
    return d_x, None, d_params


subnet_apply.defvjp(_subnet_forward, _subnet_backward)


class Subnet(nn.Module):
    """g(x) = fc2(dropout(act(fc1(x)))), fc1 = Dense(1->width), fc2 = Dense(width->1), applied
    to every element of x [...] with the same parameters; `kept` [width, *x.shape] is the
    hidden units' dropout mask (None: no dropout) and `keep` = 1 - p."""

    width: int
    negative_slope: float  # 0 for ReLU

    @nn.compact
    def __call__(self, x: jax.Array, kept: jax.Array | None = None, keep: float = 1.0) -> jax.Array:
        params = {"fc1": DenseParams(1, self.width, name="fc1")(), "fc2": DenseParams(self.width, 1, name="fc2")()}
        return subnet_apply(x, kept, params, self.negative_slope, keep if kept is not None else 1.0)


class DenseParams(nn.Module):
    """The parameters of a Dense(in_features -> features) layer, under nn.Dense's names."""

    in_features: int
    features: int

    @nn.compact
    def __call__(self) -> dict:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features), jnp.float32)
        return {"kernel": kernel, "bias": self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)}


class SharedSubnetSum(nn.Module):
    """sumsq's model: one Subnet applied to each of the n_inputs inputs (parameters shared,
    dropout masks independent), then Dense(n_inputs->1). Dropout where the seed has it: on the
    raw inputs, on the hidden layer, on the subnet outputs.

    The subnet is mapped over the inputs by broadcasting (its parameters act on every element
    of [batch, n_inputs], one dropout mask over all [width, batch, n_inputs] hidden units),
    which is what `nn.vmap` over the inputs computes; measured side by side, nn.vmap was 15-20 %
    slower for sumsq on CPU (a threefry key split per input, a [n_inputs, batch] layout for the
    backward pass). The three dropout masks come from one key on disjoint counter ranges: a
    threefry key per site cost ~10 % of a sumsq step on CPU (0.28 vs 0.13 ms per step)."""

    config: SharedSubnet
    n_inputs: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # [batch, n_inputs] -> [batch, 1]
        cfg = self.config
        rates = (cfg.dropout_inputs, cfg.dropout_hidden, cfg.dropout_outputs)
        key = self.make_rng("dropout") if train and any(rates) else None
        hidden_shape = (cfg.width, *x.shape)
        offsets = (0, x.size, x.size + int(np.prod(hidden_shape)))  # the three sites' counters

        def drop(values, site):
            return values if key is None else dropout(values, key, rates[site], offsets[site])

        hidden_kept = None if key is None or rates[1] == 0.0 else dropout_mask(key, hidden_shape, rates[1], offsets[1])
        g = Subnet(cfg.width, slope(cfg), name="subnet")(drop(x, 0), hidden_kept, 1.0 - rates[1])
        return Dense(1, name="fc3")(drop(g, 2))


class TwoLayerNet(nn.Module):
    """stepfit's model: Dense(1->width) -> act -> Dense(width->1) [-> act]."""

    config: MLP

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = activation(self.config)
        y = Dense(1, name="fc2")(act(Dense(self.config.width, name="fc1")(x)))
        return act(y) if self.config.output_activation else y


def build(model: SharedSubnet | MLP, task) -> nn.Module:
    if isinstance(model, SharedSubnet):
        return SharedSubnetSum(model, task.n_inputs)
    return TwoLayerNet(model)


def template(module: nn.Module, task) -> Params:
    """A parameter tree of the right shapes (values are overwritten by an init scheme)."""
    x = jnp.zeros((1, tasks.n_inputs(task)), jnp.float32)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))["params"]


def subnet_function(model: SharedSubnet, params: Params, x: jax.Array) -> jax.Array:
    """The learned per-input function g(x) of a sumsq model, eval mode; x of shape [n]."""
    return Subnet(model.width, slope(model)).apply({"params": params["subnet"]}, x)


def from_torch(model: SharedSubnet | MLP, state_dict: Mapping[str, Any]) -> Params:
    """Flax parameters from a PyTorch state_dict of the seeds' modules (values as anything
    np.asarray takes, e.g. `{k: v.numpy() for k, v in m.state_dict().items()}`): weight
    [out, in] -> kernel [in, out]. Layer names: fc1, fc2, fc3 (sumsq); linear1, linear2 or
    fc1, fc2 (stepfit). jaxfit itself never imports torch."""
    values = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}

    def dense(name: str) -> dict:
        return {"kernel": jnp.asarray(values[f"{name}.weight"].T), "bias": jnp.asarray(values[f"{name}.bias"])}

    if isinstance(model, SharedSubnet):
        return {"subnet": {"fc1": dense("fc1"), "fc2": dense("fc2")}, "fc3": dense("fc3")}
    first, second = ("linear1", "linear2") if "linear1.weight" in values else ("fc1", "fc2")
    return {"fc1": dense(first), "fc2": dense(second)}


# ----------------------------------------------------------------------------- init schemes


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


def manual(model: SharedSubnet, task: SumsqTask) -> Params:
    """The seed's hand-set values (PyTorch weight [out, in] -> Flax kernel [in, out])."""
    values = model.manual
    fc3 = np.broadcast_to(np.asarray(values.fc3_weight, np.float32), (task.n_inputs,))
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))  # noqa: E731
    return {
        "subnet": {
            "fc1": {"kernel": f32(values.fc1_weight)[None, :], "bias": f32(values.fc1_bias)},
            "fc2": {"kernel": f32(values.fc2_weight)[:, None], "bias": f32([values.fc2_bias])},
        },
        "fc3": {"kernel": f32(fc3)[:, None], "bias": f32([values.fc3_bias])},
    }


def init_params(model: SharedSubnet | MLP, task, shapes: Params, init_index: jax.Array, key: jax.Array) -> Params:
    """Parameters for scheme `model.init[init_index]` (a traced index: all of the group's
    schemes are drawn and one is selected, so a vmapped group can mix schemes)."""
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    candidates = []
    for scheme in model.init:
        if scheme == "manual":
            candidates.append(manual(model, task))
        else:
            candidates.append({"torch_default": torch_default, "he": he}[scheme](zeros, key))
    if len(candidates) == 1:
        return candidates[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves)[init_index], *candidates)
