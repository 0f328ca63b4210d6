"""Speed devices: written-out computations that XLA runs faster than the plain formulation of
the same thing. Each is tested against the plain formulation it replaces (tests/test_models.py);
the model definitions (experiments/) use them behind ordinary Flax modules. Measurements are in
results/BENCHMARKS.md.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    materialises at [models, batch, hidden] before reducing (~1.8x for 1->1->1 nets)."""
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
    """nn.Dense's contraction (inputs [..., K] x kernel [K, N]). With K = 1 (a first layer
    of one input) it is `outer_product`, which XLA fuses with the activation around it; as a dot with an
    inner size of 1 it wrote every [models, batch, hidden] intermediate to memory. Larger K (a
    64-input layer) stays a dot: a multiply-and-sum measured slower there."""
    (contract_lhs, contract_rhs), batch = dimension_numbers
    assert contract_lhs == (lhs.ndim - 1,) and contract_rhs == (0,) and batch == ((), ()), dimension_numbers
    if lhs.shape[-1] == 1:
        return outer_product(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type)


def Dense(features: int, name: str) -> nn.Dense:  # noqa: N802 (a Flax module, named like one)
    """nn.Dense (same parameters, same numbers) whose contraction is `fused_dense_product`."""
    return nn.Dense(features, name=name, dot_general=fused_dense_product)


def counter_bits(key: jax.Array, shape: tuple[int, ...], offset: int = 0) -> jax.Array:
    """Uniform uint32 bits for every element of `shape`: murmur3's 32-bit finaliser applied
    twice to (counter, key), a counter-based generator about ten times cheaper than threefry on
    CPU (dropout in the shared-subnet model draws ~100k numbers per step). Elements are counters offset, offset + 1,
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
    the shared-subnet model than storing the bool mask)."""
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
    """fc2(dropout(act(fc1(x)))) for a scalar input at every position of x: a shared subnet,
    with act = ReLU (slope 0) or LeakyReLU, `kept` the hidden dropout mask [width, *x.shape]
    (None: no dropout) and `keep` = 1 - p.

    Written out rather than as Dense layers for XLA on CPU: with the hidden units on the
    leading axis, the sum over them is adds of whole slices that fuse with fc1, the activation
    and the mask; the backward pass keeps only boolean masks and needs two reductions over
    positions, as act is piecewise linear (act(pre) = act'(pre) * pre gives fc2's kernel
    gradient from the sums for fc1's). As Dense layers on a trailing [..., width] axis, fc2,
    its gradients and fc1's gradients were each a pass over a [models, batch, inputs, width]
    tensor: 1.7x slower for a step of the 64-input shared-subnet model on CPU."""
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


def scan(body: Callable, carry: Any, xs: Any) -> Any:
    """lax.scan over xs, returning the carry; a length-1 scan is a plain call (an epoch or an
    interval of one step is common, and a while loop per step costs time on CPU)."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        return body(carry, jax.tree.map(lambda x: x[0], xs))[0]
    return jax.lax.scan(body, carry, xs)[0]
