"""Speed devices: written-out computations that XLA runs faster than the plain formulation of
the same thing, each tested against the plain formulation it replaces (tests/test_models.py,
tests/test_torch_parity.py) and kept while it measurably pays (results/kernels/measure.py
measures each side by side; the figures, and the devices deleted once they stopped paying, are in
results/BENCHMARKS.md):

- SharedScalarSubnet (subnet_apply) for nn.vmap of a shared one-input subnet.
- counter_bits (a murmur3 counter hash) for threefry bits in dropout masks, and step_uniform
  for threefry's uniform draws of a step's fresh batch.
- apply_mask's custom VJP (the forward pass's mask kept) for autodiff of the select.
- fixed_order_sum for XLA's reductions: kept for what it guarantees, not for speed (it is a few
  per cent slower): a model's numbers do not depend on how many models run beside it.
- scan: a length-1 scan as a plain call (one-step epochs and intervals).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.inits import Params


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


def _mix(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _hashed_counters(words: jax.Array, shape: tuple[int, ...], offset: int) -> jax.Array:
    index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape) + np.uint32(offset)
    return _mix(_mix(index * np.uint32(0x9E3779B9) + words[0]) ^ words[1])


def counter_bits(key: jax.Array, shape: tuple[int, ...], offset: int = 0) -> jax.Array:
    """Uniform uint32 bits for every element of `shape`: murmur3's 32-bit finaliser applied
    twice to (counter, key), a counter-based generator about ten times cheaper than threefry on
    CPU (dropout in the shared-subnet model draws ~100k numbers per step). Elements are counters offset, offset + 1,
    ...: draws from one key on disjoint counter ranges are independent. Keys come from Flax's
    rng streams (threefry), so streams stay independent across steps and models."""
    return _hashed_counters(jax.random.key_data(key).astype(jnp.uint32).reshape(-1), shape, offset)


def step_uniform(key: jax.Array, step: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """U[0, 1) float32 for every element of `shape` at global step `step`, with torch.rand's
    24 bits: `counter_bits` of the key with the step mixed into its second word (a bijection of
    the step, so no two steps of a run draw alike) -- in place of `jax.random.uniform` of
    `fold_in(key, step)`, whose threefry rounds were ~40 % of a ten-model step of a tiny net
    (issue 28's profile). Integer arithmetic only: the same bits on every backend."""
    words = jax.random.key_data(key).astype(jnp.uint32).reshape(-1)
    words = words.at[1].set(words[1] ^ _mix(jnp.asarray(step).astype(jnp.uint32) * np.uint32(0x2545F491) + np.uint32(0x6A09E667)))
    return (_hashed_counters(words, shape, 0) >> 8).astype(jnp.float32) * np.float32(2.0**-24)


def dropout_scale(keep: float, dtype: Any = jnp.float32) -> jax.Array:
    """torch's dropout scale 1 / (1 - p), rounded to `dtype` once and multiplied in (as torch
    does: `noise.div_(1 - p)`, then `input * noise`): a product, not a division per element."""
    return jnp.asarray(1.0 / keep, dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def apply_mask(x: jax.Array, kept: jax.Array, keep: float) -> jax.Array:
    """where(kept, x * (1 / keep), 0), differentiated with the mask kept from the forward pass: left
    to itself XLA recomputes the mask's hash in the backward pass (measured ~10 % slower for
    the shared-subnet model than storing the bool mask)."""
    return jnp.where(kept, x * dropout_scale(keep, x.dtype), jnp.zeros_like(x))


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
    hidden = _activation_gate(pre * dropout_scale(keep, x.dtype), positive, kept, slope)
    out = sum_leading(_per_unit(fc2["kernel"][:, 0], x) * hidden) + fc2["bias"][0]
    return out, (x, positive, kept, params)


def _subnet_backward(slope, keep, residuals, cotangent):
    x, positive, kept, params = residuals
    fc1, fc2 = params["fc1"], params["fc2"]
    # sums over positions of cotangent * x * act'(pre) * kept / keep, and of cotangent * act'(pre) * kept / keep
    # (in a model's own order under own_sums.own_order, as every sum of the step)
    positions = tuple(range(1, x.ndim + 1))
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


class DenseParams(nn.Module):
    """The parameters of a Dense(in_features -> features) layer, under nn.Dense's names."""

    in_features: int
    features: int

    @nn.compact
    def __call__(self) -> dict:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features), jnp.float32)
        return {"kernel": kernel, "bias": self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)}


class SharedScalarSubnet(nn.Module):
    """`nn.vmap` of a Dense(1->width) -> act -> dropout -> Dense(width->1) subnet over every
    element of x [...], parameters shared, written out as `subnet_apply`: the same parameter
    tree (fc1, fc2 as nn.Dense names them) and the same function, rounded differently. `kept`
    [width, *x.shape] is the hidden units' dropout mask (None: no dropout), `keep` = 1 - p."""

    width: int
    negative_slope: float  # 0 for ReLU

    @nn.compact
    def __call__(self, x: jax.Array, kept: jax.Array | None = None, keep: float = 1.0) -> jax.Array:
        params = {"fc1": DenseParams(1, self.width, name="fc1")(), "fc2": DenseParams(self.width, 1, name="fc2")()}
        return subnet_apply(x, kept, params, self.negative_slope, keep if kept is not None else 1.0)
