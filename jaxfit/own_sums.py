"""Sums in an order fixed by one model's shapes, whatever the block it runs in (issue 35).

XLA on a CPU hands a reduction to YNNPACK when the whole block's operand holds 4,096 elements or
more (`IsInstructionPreferredByYnn`, xla/backends/cpu/ynn_support.cc), and YNNPACK sums in
another order than XLA's own code: left alone, a model's last bits would depend on how many
models share its block. `own_order(fn)` rewrites the jaxpr of one model's function (the one
trainer.py vmaps) so that no reduction can change sides with the block:

- a sum of 2,048 elements or more per model is left alone: in a block of 2 or more models (the
  fewest a block runs, `plan.padded`) it is YNNPACK's every time;
- a smaller sum becomes `chunked_sum`, which XLA sees as sums over slices of the block, each
  under 4,096 elements, so it stays in XLA's own (fused) code every time;
- a dot of two vectors, which XLA strength-reduces to a reduction (routed as above), is written
  as their product and such a sum;
- any other dot that sums (over more than one element) becomes `own_dot`, which a vmap batches over the block, broadcasting an operand
  the models share (the evaluation points). Left to vmap, a shared operand folds the models into
  a free axis of one dot ([2000, 2] @ [2, 16 x models] for examples/spirals' first layer),
  whose tiling, and with it a model's sums, follows the block's size (other bits in blocks of
  3, 8 or 60 models than of 2 or 30); a dot batched over the block sums each model's part the
  same way whatever the block (results/benchmarks/cpu-2core-session23/dots.py).

The routing that goes with it, dots and reductions to YNNPACK and nothing else, is
`plan.CPU_OPTIONS`; tests/test_invariance.py checks the property.
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
from jax.interpreters import ad, batching, mlir

YNN_MIN_ELEMENTS = 4096  # XLA:CPU hands an operation this large (the whole block's) to YNNPACK
MIN_BLOCK = 2  # the fewest models a block runs (plan.padded)

chunked_sum_p = core.Primitive("chunked_sum")


def _chunked_sum(values: jax.Array, *, axes: tuple[int, ...], own: int) -> jax.Array:
    """The sum over `axes` of one model's trailing `own` axes, taken over slices of the leading
    (block) axes small enough that XLA:CPU keeps each in its own code."""
    lead = values.ndim - own
    rows, per_row = math.prod(values.shape[:lead]), math.prod(values.shape[lead:])
    flat = values.reshape((rows, *values.shape[lead:]))
    step = max(1, (YNN_MIN_ELEMENTS - 1) // per_row)
    summed = tuple(a + 1 for a in axes)
    parts = [jnp.sum(flat[i : i + step], axis=summed) for i in range(0, rows, step)]
    out = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    return out.reshape(values.shape[:lead] + out.shape[1:])


def _chunked_sum_shape(values: Any, *, axes: tuple[int, ...], own: int) -> Any:
    lead = values.ndim - own
    kept = [d for i, d in enumerate(values.shape) if i < lead or i - lead not in axes]
    return jax.core.ShapedArray(tuple(kept), values.dtype)


def _chunked_sum_batched(args: Sequence[Any], dims: Sequence[Any], *, axes: tuple[int, ...], own: int) -> Any:
    (values,), (dim,) = args, dims
    return chunked_sum_p.bind(jnp.moveaxis(values, dim, 0), axes=axes, own=own), 0


def _chunked_sum_transpose(cotangent: Any, values: Any, *, axes: tuple[int, ...], own: int) -> list[Any]:
    lead = values.aval.ndim - own
    kept = [i for i in range(values.aval.ndim) if i < lead or i - lead not in axes]
    return [lax.broadcast_in_dim(cotangent, values.aval.shape, kept)]


chunked_sum_p.def_impl(_chunked_sum)
chunked_sum_p.def_abstract_eval(_chunked_sum_shape)
mlir.register_lowering(chunked_sum_p, mlir.lower_fun(_chunked_sum, multiple_results=False))
batching.primitive_batchers[chunked_sum_p] = _chunked_sum_batched
ad.deflinear2(chunked_sum_p, _chunked_sum_transpose)


def own_order_sum(values: jax.Array, axes: Sequence[int]) -> jax.Array:
    """One model's sum over `axes`, in the same order in every block (module docstring)."""
    axes = tuple(axes)
    if not axes or MIN_BLOCK * values.size >= YNN_MIN_ELEMENTS:
        return jnp.sum(values, axis=axes)
    return chunked_sum_p.bind(values, axes=axes, own=values.ndim)


own_dot_p = core.Primitive("own_dot")


def _own_dot(lhs: jax.Array, rhs: jax.Array, **params: Any) -> jax.Array:
    """One model's dot, as `lax.dot_general` with the equation's own parameters."""
    return lax.dot_general_p.bind(lhs, rhs, **params)


def _own_dot_shape(lhs: Any, rhs: Any, **params: Any) -> Any:
    specs = (jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (lhs, rhs))
    out = jax.eval_shape(lambda a, b: _own_dot(a, b, **params), *specs)
    return jax.core.ShapedArray(out.shape, out.dtype)


def _own_dot_batched(args: Sequence[Any], dims: Sequence[Any], *, dimension_numbers: Any, **params: Any) -> Any:
    """A block of models' dots as one dot batched over the block, an operand the models share
    broadcast to each: left shared, XLA would fold the models into a free axis of one dot, whose
    tiling (and so a model's sums) follows the block's size."""
    size = next(a.shape[d] for a, d in zip(args, dims) if isinstance(d, int))
    lhs, rhs = (jnp.moveaxis(a, d, 0) if isinstance(d, int) else jnp.broadcast_to(a, (size, *a.shape)) for a, d in zip(args, dims))
    (lc, rc), (lb, rb) = dimension_numbers
    up = lambda axes: tuple(d + 1 for d in axes)  # noqa: E731
    numbers = ((up(lc), up(rc)), ((0, *up(lb)), (0, *up(rb))))
    return own_dot_p.bind(lhs, rhs, dimension_numbers=numbers, **params), 0


def _own_dot_jvp(primals: Sequence[Any], tangents: Sequence[Any], **params: Any) -> Any:
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    _, tangent = jax.jvp(lambda a, b: _own_dot(a, b, **params), tuple(primals), tuple(tangents))
    return own_dot_p.bind(*primals, **params), tangent


own_dot_p.def_impl(_own_dot)
own_dot_p.def_abstract_eval(_own_dot_shape)
mlir.register_lowering(own_dot_p, mlir.lower_fun(_own_dot, multiple_results=False))
batching.primitive_batchers[own_dot_p] = _own_dot_batched
ad.primitive_jvps[own_dot_p] = _own_dot_jvp


def _free_size(shape: Sequence[int], contracting: Sequence[int], batch: Sequence[int]) -> int:
    return math.prod(d for i, d in enumerate(shape) if i not in (*contracting, *batch))


def _vector_dot(eqn: Any, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    """A dot of two vectors (per batch element) as their product and `own_order_sum`."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval
    lf = [i for i in range(lhs.ndim) if i not in (*lc, *lb)]
    rf = [i for i in range(rhs.ndim) if i not in (*rc, *rb)]
    contraction = tuple(lhs.shape[i] for i in lc)
    left = jnp.transpose(lhs, [*lb, *lf, *lc]).reshape(out.shape + contraction)
    right = jnp.transpose(rhs, [*rb, *rf, *rc]).reshape(out.shape + contraction)
    product = left.astype(out.dtype) * right.astype(out.dtype)
    return own_order_sum(product, tuple(range(len(out.shape), product.ndim)))


def _rewrite(eqn: Any, invals: list[Any]) -> list[Any] | None:
    """The equation's outputs in an order fixed by one model's shapes, or None to bind it as it is."""
    if eqn.primitive is lax.reduce_sum_p and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating):
        return [own_order_sum(invals[0], eqn.params["axes"])]
    if eqn.primitive is lax.dot_general_p and jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
        lhs, rhs = invals
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        contraction, free = math.prod(lhs.shape[i] for i in lc), (_free_size(lhs.shape, lc, lb), _free_size(rhs.shape, rc, rb))
        if contraction > 1 and free == (1, 1):
            return [_vector_dot(eqn, lhs, rhs)]
        if contraction > 1:
            return [own_dot_p.bind(lhs, rhs, **eqn.params)]
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


def own_order(fn: Callable) -> Callable:
    """`fn` (one model's function, to be vmapped) with its sums in an order fixed by its own shapes (module docstring)."""

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
