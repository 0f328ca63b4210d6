"""Measurement device (issue 35), not part of jaxfit: every floating-point sum of fewer than SMALL
elements per model and every dot_general of at most DOT_LIMIT products per model written out in an
order fixed by the model's shapes (pairwise halving; a dot as products and such a sum), through a
jaxpr interpreter over a group's optimiser step, its evaluation and its closed form.

    python fixed_sums_and_dots.py -m MODULE ARGS...     # `python -m MODULE ARGS` with the rewrite on

Knobs (environment): SUMS_SMALL (default 4096; 0: no sum rewritten), DOT_LIMIT (default 65536;
0: no dot rewritten), DOT_MINK (default 2: dots contracting fewer elements are left; 1: all),
STEPONLY=1 (the optimiser step only), NOSUMS=1 (nothing rewritten). Used by invariance.log's
and rewrite_vs_routing.log's runs (there from a scratch copy of the engine calling `fixed_sums`
at the same three places).
"""

from __future__ import annotations

import math
import os
import runpy
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

SMALL = int(os.environ.get("SUMS_SMALL", 4096))  # XLA:CPU hands an operation this large to YNNPACK


def pairwise_sum(values: jax.Array, axes: Sequence[int]) -> jax.Array:
    """Sum over `axes`, last axis first, each by halving (zero-padded to a power of two): the
    order depends on the shape alone, and the adds fuse with what produces `values`."""
    for axis in sorted(axes, reverse=True):
        width = 1 << max(values.shape[axis] - 1, 0).bit_length()
        if width != values.shape[axis]:
            pad = [(0, 0)] * values.ndim
            pad[axis] = (0, width - values.shape[axis])
            values = jnp.pad(values, pad)
        while values.shape[axis] > 1:
            half = values.shape[axis] // 2
            values = lax.slice_in_dim(values, 0, half, axis=axis) + lax.slice_in_dim(values, half, 2 * half, axis=axis)
        values = lax.squeeze(values, (axis,))
    return values


DOT_LIMIT = int(os.environ.get("DOT_LIMIT", 1 << 16))  # products per model of a dot_general written out


def dot_as_sum(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, preferred_element_type: Any = None, **_: Any) -> jax.Array:
    """lax.dot_general as products summed over the contracted dimensions by `pairwise_sum`: the
    same result (batch, lhs free, rhs free dimensions), in an order fixed by the shapes."""
    (lc, rc), (lb, rb) = dimension_numbers
    dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    lf = [d for d in range(lhs.ndim) if d not in (*lc, *lb)]
    rf = [d for d in range(rhs.ndim) if d not in (*rc, *rb)]
    batch = [lhs.shape[d] for d in lb]
    left, right = [lhs.shape[d] for d in lf], [rhs.shape[d] for d in rf]
    k = math.prod(lhs.shape[d] for d in lc)
    a = lax.transpose(lhs.astype(dtype), (*lb, *lf, *lc)).reshape(*batch, *left, *[1] * len(right), k)
    b = lax.transpose(rhs.astype(dtype), (*rb, *rf, *rc)).reshape(*batch, *[1] * len(left), *right, k)
    return pairwise_sum(a * b, [len(batch) + len(left) + len(right)])


def _products(eqn: core.JaxprEqn) -> tuple[int, int]:
    """(contracted size, products) of a dot_general equation."""
    (lc, _), _ = eqn.params["dimension_numbers"]
    k = math.prod(eqn.invars[0].aval.shape[d] for d in lc)
    return k, k * eqn.outvars[0].aval.size


def _rewritten(eqn: core.JaxprEqn) -> bool:
    aval = eqn.invars[0].aval if eqn.invars else None
    if aval is None or not jnp.issubdtype(aval.dtype, jnp.floating):
        return False
    if eqn.primitive is lax.reduce_sum_p:
        return aval.size < SMALL
    if eqn.primitive is lax.dot_general_p:
        k, products = _products(eqn)
        return k >= int(os.environ.get("DOT_MINK", 2)) and products <= DOT_LIMIT
    return False


def _evaluate(jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

    def read(var: Any) -> Any:
        return var.val if isinstance(var, core.Literal) else env[var]

    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if _rewritten(eqn):
            order = dot_as_sum(*invals, **eqn.params) if eqn.primitive is lax.dot_general_p else pairwise_sum(invals[0], eqn.params["axes"])
            outvals = [order.astype(eqn.outvars[0].aval.dtype)]
        else:
            params = {name: _rewrite_param(value) for name, value in eqn.params.items()}
            with eqn.ctx.manager:
                result = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
            outvals = result if eqn.primitive.multiple_results else [result]
        env.update(zip(eqn.outvars, outvals))
    return [read(v) for v in jaxpr.outvars]


def _rewrite_closed(closed: core.ClosedJaxpr) -> core.ClosedJaxpr:
    if not any(_rewritten(e) or any(_has_jaxpr(p) for p in e.params.values()) for e in closed.jaxpr.eqns):
        return closed  # nothing to rewrite: the program as it was
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *a: _evaluate(closed.jaxpr, closed.consts, a))(*avals)


def _has_jaxpr(value: Any) -> bool:
    return isinstance(value, core.ClosedJaxpr) or (isinstance(value, tuple) and any(isinstance(v, core.ClosedJaxpr) for v in value))


def _rewrite_param(value: Any) -> Any:
    if isinstance(value, core.ClosedJaxpr):
        return _rewrite_closed(value)
    if isinstance(value, tuple) and value and all(isinstance(v, core.ClosedJaxpr) for v in value):
        return tuple(_rewrite_closed(v) for v in value)  # cond's branches
    return value


def fixed_sums(fn: Callable) -> Callable:
    """`fn` (a function of one model's arrays) with every floating-point sum of fewer than SMALL
    elements taken by pairwise halving (see the module docstring); the same function otherwise."""

    if os.environ.get("NOSUMS"):
        return fn

    @wraps(fn)
    def rewritten(*args: Any) -> Any:
        closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        out = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shapes), out)

    return rewritten


def patch() -> None:
    """Every group built from now on has its step (and, unless STEPONLY, its evaluation and closed form) rewritten."""
    from functools import partial

    from jaxfit import trainer

    plain_step, plain_setup = trainer.make_step, trainer.make_setup
    trainer.make_step = lambda cfg, group: fixed_sums(plain_step(cfg, group))

    def setup(cfg, group):
        s = plain_setup(cfg, group)
        if os.environ.get("STEPONLY"):
            return s
        bound = fixed_sums(s.bound) if s.bound is not None else None
        return s._replace(bound=bound, evaluate_one=jax.jit(fixed_sums(partial(trainer.evaluate, s))))

    trainer.make_setup = setup


if __name__ == "__main__":
    flag, module, *rest = sys.argv[1:]
    assert flag == "-m", __doc__
    patch()
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
