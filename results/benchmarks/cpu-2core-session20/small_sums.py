"""Measurement device (issue 35, session 20), not part of jaxfit: every sum of one model that
XLA:CPU could hand to YNNPACK in one block and not in another is made big enough that it goes to
YNNPACK in every block of 2 or more models (zeros appended along its first summed axis until one
model's operand holds 2,048 elements); bigger sums and dots are left alone. With the routing
DOT,REDUCE this made a model's numbers independent of its block (tests/test_invariance.py
passes) at sumsq's base speed; README.md has the figures. Built on ../cpu-2core-session19/
fixed_order.py's jaxpr interpreter; used as `fixed_order(fn)` around the per-model functions
train.py vmaps (train_interval, init_one, evaluate_one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core

YNN_MIN_DIM = 8  # XLA:CPU leaves a dot to its own emitters when every size is below this (xla/backends/cpu/ynn_support.cc)


YNN_MIN_ELEMENTS = 4096  # XLA:CPU hands an operation this large (the whole block's) to YNNPACK
MIN_BLOCK = 2  # the fewest models a block runs (plan.padded)


def ynn_sum(values: jax.Array, axes: Sequence[int]) -> jax.Array:
    """The sum over `axes`, with zeros appended along the first until a block of MIN_BLOCK
    models reaches YNN_MIN_ELEMENTS: XLA:CPU then hands it to YNNPACK whatever the block."""
    axes = tuple(axes)
    if not axes or MIN_BLOCK * values.size >= YNN_MIN_ELEMENTS:
        return jnp.sum(values, axis=axes)
    other = values.size // values.shape[axes[0]]
    pad = [(0, 0)] * values.ndim
    pad[axes[0]] = (0, -(-YNN_MIN_ELEMENTS // (MIN_BLOCK * other)) - values.shape[axes[0]])
    return jnp.sum(jnp.pad(values, pad), axis=axes)


def is_small_dot(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any) -> bool:
    """A dot with terms to sum (contraction > 1) that YNNPACK would not run: one side a vector
    (m or n = 1) or every size below YNN_MIN_DIM."""
    (lc, rc), (lb, rb) = dimension_numbers
    m = math.prod(d for i, d in enumerate(lhs.shape) if i not in (*lc, *lb))
    n = math.prod(d for i, d in enumerate(rhs.shape) if i not in (*rc, *rb))
    k = math.prod(lhs.shape[i] for i in lc)
    return k > 1 and (m == 1 or n == 1 or max(m, n, k) < YNN_MIN_DIM)


def dot_as_sum(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, dtype: Any) -> jax.Array:
    """dot_general(lhs, rhs) as a broadcast product and `summed` over the contraction: result
    axes (batch, lhs free, rhs free), as dot_general orders them."""
    (lc, rc), (lb, rb) = dimension_numbers
    lf = [i for i in range(lhs.ndim) if i not in (*lc, *lb)]
    rf = [i for i in range(rhs.ndim) if i not in (*rc, *rb)]
    left = jnp.transpose(lhs, [*lb, *lf, *lc]).astype(dtype)
    right = jnp.transpose(rhs, [*rb, *rf, *rc]).astype(dtype)
    nb, nc = len(lb), len(lc)
    left = jnp.expand_dims(left, tuple(range(nb + len(lf), nb + len(lf) + len(rf))))
    right = jnp.expand_dims(right, tuple(range(nb, nb + len(lf))))
    product = left * right
    return ynn_sum(product, tuple(range(product.ndim - nc, product.ndim)))


def _rewrite(eqn: Any, invals: list[Any]) -> list[Any] | None:
    """The equation's outputs with a small sum made YNNPACK's in every block, or None to bind it."""
    if eqn.primitive is lax.reduce_sum_p and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating):
        return [ynn_sum(invals[0], eqn.params["axes"])]
    if eqn.primitive is lax.dot_general_p and jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
        lhs, rhs = invals
        (lc, _), _ = eqn.params["dimension_numbers"]
        terms = lhs.size * rhs.size // max(math.prod(lhs.shape[i] for i in lc), 1)
        if is_small_dot(lhs, rhs, eqn.params["dimension_numbers"]) and MIN_BLOCK * terms < YNN_MIN_ELEMENTS:
            return [dot_as_sum(lhs, rhs, eqn.params["dimension_numbers"], eqn.outvars[0].aval.dtype)]
    return None


def _evaluate(jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

    def read(var: Any) -> Any:
        return var.val if isinstance(var, core.Literal) else env[var]

    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outvals = _rewrite(eqn, invals)
        if outvals is None:
            params = {name: _rewrite_param(value) for name, value in eqn.params.items()}
            with eqn.ctx.manager:
                result = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
            outvals = result if eqn.primitive.multiple_results else [result]
        env.update(zip(eqn.outvars, outvals))
    return [read(v) for v in jaxpr.outvars]


def _rewrite_closed(closed: core.ClosedJaxpr) -> core.ClosedJaxpr:
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *a: _evaluate(closed.jaxpr, closed.consts, a))(*avals)


def _rewrite_param(value: Any) -> Any:
    """Nested jaxprs (a scan's body, a while's cond and body, a jit's) rewritten; a cond's branches too."""
    if isinstance(value, core.ClosedJaxpr):
        return _rewrite_closed(value)
    if isinstance(value, tuple) and value and all(isinstance(v, core.ClosedJaxpr) for v in value):
        return tuple(_rewrite_closed(v) for v in value)
    return value


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def fixed_order(fn: Callable) -> Callable:
    """`fn` (one model's function, to be vmapped) with its sums in an order fixed by its shapes."""

    @wraps(fn)
    def rewritten(*args: Any) -> Any:
        leaves, tree = jax.tree.flatten(args)
        arrays = [leaf for leaf in leaves if _is_array(leaf)]

        def on_arrays(*values: Any) -> Any:
            it = iter(values)
            return fn(*jax.tree.unflatten(tree, [next(it) if _is_array(leaf) else leaf for leaf in leaves]))

        closed, shapes = jax.make_jaxpr(on_arrays, return_shape=True)(*arrays)
        return jax.tree.unflatten(jax.tree.structure(shapes), _evaluate(closed.jaxpr, closed.consts, arrays))

    return rewritten
