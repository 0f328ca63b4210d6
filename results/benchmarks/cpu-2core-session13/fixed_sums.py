"""Measurement device (issues 28 and 29), not part of jaxfit: a model's sums in an order fixed by
its own shapes, whatever its block's size, and what that costs.

    python fixed_sums.py MODE -m MODULE ARGS...   # run `python -m MODULE ARGS` with the rewrite on
    python fixed_sums.py MODE -m pytest tests/test_train.py -k neighbours

MODE: `pairwise`, `pairwise_barrier` or `sequential` (the order written), each optionally `_small` (only sums of
fewer than 4,096 elements per model: the ones XLA:CPU sums itself for a few models and hands to
YNNPACK for many), `onesdot` (a dot with a ones vector), or `identity` (the interpreter, nothing rewritten). The rewrite wraps each group's
optimiser step (`jaxfit.train.make_step`): every `reduce_sum` it computes -- the loss's, and the
ones autodiff writes (a bias's gradient sums over the batch) -- is replaced, through a jaxpr
interpreter (JAX's "Writing custom Jaxpr interpreters"), nested scans, conds and jits included.
The engine's evaluation sums already use `kernels.fixed_order_sum`.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Sequence
from functools import partial, wraps
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

SMALL = 4096  # XLA:CPU's YNNPACK size (xla/backends/cpu/ynn_support.cc)


def sequential_sum(values: jax.Array, axes: Sequence[int]) -> jax.Array:
    """Sum over `axes`, last axis first, each left to right as adds of slices."""
    for axis in sorted(axes, reverse=True):
        total = lax.index_in_dim(values, 0, axis, keepdims=False)
        for i in range(1, values.shape[axis]):
            total = total + lax.index_in_dim(values, i, axis, keepdims=False)
        values = total
    return values


def pairwise_sum(values: jax.Array, axes: Sequence[int], barrier: bool = False) -> jax.Array:
    """Sum over `axes`, last axis first, each by halving (zero-padded to a power of two). With
    `barrier`, every level is materialised (an optimisation barrier between levels), so that XLA
    vectorises each level's adds instead of fusing the whole tree into one loop over the outputs."""
    for axis in sorted(axes, reverse=True):
        n = values.shape[axis]
        width = 1 << max(n - 1, 0).bit_length()
        if width != n:
            pad = [(0, 0)] * values.ndim
            pad[axis] = (0, width - n)
            values = jnp.pad(values, pad)
        while values.shape[axis] > 1:
            half = values.shape[axis] // 2
            values = lax.slice_in_dim(values, 0, half, axis=axis) + lax.slice_in_dim(values, half, 2 * half, axis=axis)
            values = lax.optimization_barrier(values) if barrier else values
        values = lax.squeeze(values, (axis,))
    return values


def onesdot_sum(values: jax.Array, axes: Sequence[int]) -> jax.Array:
    """Sum over `axes` as a dot with ones."""
    ones = jnp.ones([values.shape[a] for a in axes], values.dtype)
    return lax.dot_general(values, ones, ((tuple(axes), tuple(range(len(axes)))), ((), ())), precision=lax.Precision.HIGHEST)


def fixed_sums(fn: Callable, mode: str) -> Callable:
    """`fn` with every floating-point `reduce_sum` it computes written as `mode` says."""
    orders = {
        "pairwise": pairwise_sum,
        "pairwise_barrier": partial(pairwise_sum, barrier=True),
        "sequential": sequential_sum,
        "onesdot": onesdot_sum,
        "identity": pairwise_sum,  # the interpreter alone, nothing rewritten (limit 0): what re-tracing costs
    }
    order = orders[mode.removesuffix("_small")]
    limit = 0 if mode == "identity" else SMALL if mode.endswith("_small") else float("inf")  # rewrite sums of fewer elements

    def evaluate(jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        env: dict[Any, Any] = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
        read = lambda var: var.val if isinstance(var, core.Literal) else env[var]  # noqa: E731
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            aval = eqn.invars[0].aval if eqn.invars else None
            if eqn.primitive is lax.reduce_sum_p and jnp.issubdtype(aval.dtype, jnp.floating) and aval.size < limit:
                outvals = [order(invals[0], eqn.params["axes"])]
            else:
                params = {name: rewrite_param(value) for name, value in eqn.params.items()}
                with eqn.ctx.manager:
                    result = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
                outvals = result if eqn.primitive.multiple_results else [result]
            env.update(zip(eqn.outvars, outvals))
        return [read(v) for v in jaxpr.outvars]

    def rewrite_closed(closed: core.ClosedJaxpr) -> core.ClosedJaxpr:
        avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
        return jax.make_jaxpr(lambda *a: evaluate(closed.jaxpr, closed.consts, a))(*avals)

    def rewrite_param(value: Any) -> Any:
        if isinstance(value, core.ClosedJaxpr):
            return rewrite_closed(value)
        if isinstance(value, tuple) and value and all(isinstance(v, core.ClosedJaxpr) for v in value):
            return tuple(rewrite_closed(v) for v in value)  # cond's branches
        return value

    @wraps(fn)
    def rewritten(*args: Any) -> Any:
        closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        return jax.tree.unflatten(jax.tree.structure(shapes), evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args)))

    return rewritten


def patch(mode: str) -> None:
    """Every group's optimiser step built from now on has its sums rewritten."""
    from jaxfit import trainer

    plain = trainer.make_step
    trainer.make_step = lambda cfg, group: fixed_sums(plain(cfg, group), mode)


if __name__ == "__main__":
    mode, flag, module, *rest = sys.argv[1:]
    assert flag == "-m", __doc__
    patch(mode)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
