"""Stepfit's validation loss without evaluating the net on all 5001 grid points.

A 1 -> H -> 1 net with (leaky) ReLU activations is piecewise linear in its one input: it has a
kink where each hidden unit's pre-activation crosses zero and, with an output activation, where
the output's pre-activation does. The validation grid is uniform (linspace) and the target a
step, so between consecutive breakpoints the residual is linear in the grid index i,
r(i) = A (i - c) + E around the piece's centre c, and the piece's squared error is exactly

    sum_i r(i)^2 = A^2 n (n^2 - 1) / 12 + n E^2        (n points; sum_i (i - c) = 0)

-- a sum of positive terms, so float32 keeps it accurate. About 2H + 4 pieces replace 5001 points
(the arithmetic of each validation falls ~100x).

Its rounding differs from the direct sum, so `train.py` uses it as a filter: `bound` also
returns an error margin (a bound on |closed form - direct| from the parameters' magnitudes), and
a validation whose value could decide a stop, or that is logged or final, is computed directly;
stop steps, histories and final losses are the direct computation's bits. The best parameters
are ranked by the closed form (the same loss, rounded differently), which is what lets most
steps skip the direct evaluation.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import tasks
from jaxfit.config import MLP, StepfitTask

EPSILON = float(np.finfo(np.float32).eps) / 2  # unit roundoff


class Grid(NamedTuple):
    """A uniform grid x_i = start + i * spacing, i < n, with target low before index `step`, high from it."""

    start: float
    spacing: float
    n: int
    step: int
    low: float
    high: float


def grid_for(task, model, eval_chunk: int) -> Grid | None:
    """The validation grid of a stepfit MLP in closed form; None for other tasks and models."""
    if not isinstance(task, StepfitTask) or not isinstance(model, MLP):
        return None
    return grid_of(tasks.make_data(task, eval_chunk).eval_sets["val"])


def grid_of(eval_set: tasks.EvalSet) -> Grid | None:
    """An eval set as a uniform grid with a one-step target, or None if it is not one."""
    keep = eval_set.weight.reshape(-1) > 0
    x = np.asarray(eval_set.x, np.float64).reshape(-1)[keep]
    y = np.asarray(eval_set.y, np.float64).reshape(-1)[keep]
    n = len(x)
    if n < 3 or len(np.unique(y)) > 2:
        return None
    spacing = (x[-1] - x[0]) / (n - 1)
    if np.max(np.abs(x - (x[0] + spacing * np.arange(n)))) > 4 * EPSILON * np.max(np.abs(x)):
        return None
    step = int(np.argmax(y != y[0])) if np.any(y != y[0]) else n
    if np.any(y[step:] != y[-1]):
        return None
    return Grid(float(x[0]), float(spacing), n, step, float(y[0]), float(y[-1]))


def _slope(pre: jax.Array, negative_slope: float) -> jax.Array:
    return jnp.where(pre > 0, 1.0, negative_slope).astype(jnp.float32)


def bound(params, model: MLP, grid: Grid) -> tuple[jax.Array, jax.Array]:
    """(validation MSE by the closed form, margin): |closed form - direct MSE| <= margin."""
    negative_slope = model.negative_slope if model.activation == "leaky_relu" else 0.0
    w1, b1 = params["fc1"]["kernel"][0], params["fc1"]["bias"]  # [H]
    w2, b2 = params["fc2"]["kernel"][:, 0], params["fc2"]["bias"][0]  # [H], []
    n, start, spacing = grid.n, jnp.float32(grid.start), jnp.float32(grid.spacing)

    def index_boundary(pre_at_start, slope_per_index):
        """First grid index at or after the zero of a linear function of the index (n if none)."""
        root = jnp.where(slope_per_index != 0, -pre_at_start / jnp.where(slope_per_index != 0, slope_per_index, 1.0), jnp.inf)
        return jnp.clip(jnp.ceil(jnp.nan_to_num(root, nan=n, posinf=n, neginf=0.0)), 0, n)

    kinks = index_boundary(w1 * start + b1, w1 * spacing)
    edges = jnp.sort(jnp.concatenate([jnp.float32([0, grid.step, n]), kinks]))
    lo, hi = edges[:-1], edges[1:]  # [H + 2] pieces of constant hidden slopes and target

    def inner(lo, hi):
        """The output's pre-activation on [lo, hi): its value at index lo, its slope per index."""
        middle = start + spacing * (lo + hi - 1) / 2
        hidden_slope = _slope(w1 * middle + b1, negative_slope)
        per_index = jnp.sum(w2 * hidden_slope * w1) * spacing
        at_lo = b2 + jnp.sum(w2 * hidden_slope * (w1 * (start + spacing * lo) + b1))
        return at_lo, per_index

    at_lo, per_index = jax.vmap(inner)(lo, hi)
    if model.output_activation:  # split each piece where the output's pre-activation crosses zero
        cut = jnp.clip(lo + index_boundary(at_lo, per_index), lo, hi)
        at_cut = at_lo + per_index * (cut - lo)
        pieces = (jnp.concatenate([lo, cut]), jnp.concatenate([cut, hi]), jnp.concatenate([at_lo, at_cut]), jnp.tile(per_index, 2))
    else:
        pieces = (lo, hi, at_lo, per_index)

    def squared_error(lo, hi, at_lo, per_index):
        count = hi - lo
        centre_offset = (count - 1) / 2
        pre_centre = at_lo + per_index * centre_offset
        out_slope = _slope(pre_centre, negative_slope) if model.output_activation else 1.0
        target = jnp.where(lo >= grid.step, grid.high, grid.low)
        slope, residual = out_slope * per_index, out_slope * pre_centre - target
        return jnp.where(count > 0, slope**2 * count * (count**2 - 1) / 12 + count * residual**2, 0.0)

    loss = jnp.sum(jax.vmap(squared_error)(*pieces)) / n
    # Rounding of one output: at most a few ulps of the largest intermediate magnitude per term.
    largest = jnp.abs(b2) + jnp.sum(jnp.abs(w2) * (jnp.abs(w1) * max(abs(grid.start), abs(grid.start + grid.spacing * (n - 1))) + jnp.abs(b1)))
    output_error = 8 * (w1.shape[0] + 4) * EPSILON * (largest + 1)
    margin = 2 * (2 * jnp.sqrt(loss) * output_error + output_error**2 + 64 * EPSILON * loss)
    return loss, margin
