"""Measurement device (issue 35, session 19), not part of jaxfit: sums in an order fixed by one
model's own shapes. A re-implementation, with other rules, of ../cpu-2core-session14/
fixed_sums_and_dots.py; kept as written because it is what speed2.log measured (README.md).

`fixed_order(fn)` rewrites a per-model function before it is vmapped: every floating-point
`reduce_sum` becomes pairwise elementwise adds (`kernels.fixed_order_sum`), and so does every
`dot_general` that YNNPACK would not run (a matrix-vector product, or all sizes under 8). Dots
YNNPACK runs keep their own order. It was written on the guess that XLA's own dot emitters summed
a `[5001, 8] @ [8, 1]` dot differently in two programs; that guess was wrong (the difference
was FMAs: README.md). The rewrite is a jaxpr interpreter (JAX's "Writing custom Jaxpr
interpreters") that enters nested jaxprs: scans, while loops, conds, jits.
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

from jaxfit.kernels import fixed_order_sum

YNN_MIN_DIM = 8  # XLA:CPU leaves a dot to its own emitters when every size is below this (xla/backends/cpu/ynn_support.cc)


def summed(values: jax.Array, axes: Sequence[int]) -> jax.Array:
    """Sum over `axes` as pairwise elementwise adds over their elements in row-major order."""
    keep = [a for a in range(values.ndim) if a not in axes]
    moved = jnp.transpose(values, [*keep, *axes])
    return fixed_order_sum(moved.reshape(*moved.shape[: len(keep)], -1))


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
    return summed(product, tuple(range(product.ndim - nc, product.ndim)))


def _rewrite(eqn: Any, invals: list[Any]) -> list[Any] | None:
    """The equation's outputs in fixed order, or None to bind it as it is."""
    if eqn.primitive is lax.reduce_sum_p and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating):
        return [summed(invals[0], eqn.params["axes"])]
    if eqn.primitive is lax.dot_general_p and jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
        lhs, rhs = invals
        if is_small_dot(lhs, rhs, eqn.params["dimension_numbers"]):
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
