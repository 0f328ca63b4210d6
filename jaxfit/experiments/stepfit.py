"""stepfit (../shared/seeds/stepfit_forum_answer.txt): fit a step with 1->1->1 and 1->8->1
LeakyReLU nets on a fresh random batch every step, validating on a 5001-point grid every step
and stopping at a validation loss of 0.005; narrow nets stall near 0.0658, most wide ones escape.

Here: the task table (fresh U[0, 1) batches, the linspace validation grid), the 1->k->1 model
table and its Flax module, the closed-form validation loss that lets most steps skip the
5001-point evaluation, and the plots (every model's validation loss, final-loss histogram,
fitted functions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.ticker
import numpy as np

from jaxfit import analysis, plots, report
from jaxfit.config import Config, bounded
from jaxfit.experiment import EvalSet, Params, Task, make_eval_set, register
from jaxfit.kernels import step_uniform

# ----------------------------------------------------------------------------- config tables


@dataclass(frozen=True)
class MLP:
    """Dense(1->width) -> act -> Dense(width->1) [-> act]."""

    name: Literal["mlp"] = "mlp"
    width: int = bounded(8, gt=0)
    activation: Literal["relu", "leaky_relu"] = "relu"
    negative_slope: float = bounded(0.01, ge=0)
    output_activation: bool = False
    init: tuple[Literal["he", "torch_default"], ...] = ("torch_default",)
    # What the group trains on: "fresh", a new U[0, 1) batch of train.batch_size every step (K.
    # Frank's "train with rand()", answer line 9; torch.rand(100, 1) in his script), or "grid",
    # the whole validation grid every step, full-batch (the original poster's "single batch of
    # samples - your original linspace() inputs", answer line 4; the grid of script line 90).
    train_on: Literal["fresh", "grid"] = "fresh"

    @property
    def slope(self) -> float:
        """The activation's slope for inputs <= 0: 0 for ReLU."""
        return 0.0 if self.activation == "relu" else self.negative_slope

    def act(self, x: jax.Array) -> jax.Array:
        """ReLU, or LeakyReLU written as torch's: slope * x wherever x <= 0 (gradient too)."""
        if self.activation == "relu":
            return jax.nn.relu(x)
        return jnp.where(x > 0, x, self.negative_slope * x)


@register
@dataclass(frozen=True)
class StepfitTask(Task):
    """Fit a step; a fresh U[0, 1) batch every step; validation on a fixed linspace grid.

    Arithmetic as in the seed: target(x) = where(x*scale > step_at, scale, 0) / scale.
    """

    name: Literal["stepfit"] = "stepfit"
    scale: float = bounded(1000.0, gt=0, le=1e12)
    step_at: float = bounded(100.0, ge=-1e12, le=1e12)
    n_val: int = bounded(5001, gt=1)

    models = (MLP,)

    def input_shape(self) -> tuple[int, ...]:
        return (1,)

    def host_bytes(self) -> int:
        return self.n_val * 24

    def target(self, x):
        """fGoal(x * 1000) / 1000 with fGoal = where(x > 100, 1000, 0), in the seed's arithmetic."""
        xp = jnp if isinstance(x, jax.Array) else np
        scale = np.float32(self.scale)
        return (xp.where(x * scale > np.float32(self.step_at), scale, np.float32(0)) / scale).astype(np.float32)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """The seed's validation grid linspace(0, scale, n_val) / scale ([n_val, 1]) and its targets."""
        x = (np.linspace(0.0, self.scale, self.n_val, dtype=np.float32) / np.float32(self.scale))[:, None]
        return x, self.target(x)

    def data(self) -> dict:
        """The grid, as an eval set ("val") and as the one batch of `train_on = "grid"`."""
        return {"grid": self.grid(), "eval": {"val": self.grid()}}

    def sampler(self, model: MLP, batch_size: int) -> Callable[[dict, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
        """torch.rand(batch, 1): a fresh U[0, 1) batch every step; or the whole grid (`model.train_on`)."""
        if model.train_on == "grid":
            return lambda data, key, step: data["grid"]

        def fresh(data: dict, key: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
            x = step_uniform(key, step, (batch_size, 1))
            return x, self.target(x)

        return fresh

    def module(self, model: MLP) -> nn.Module:
        return TwoLayerNet(model)

    def val_bound(self, model: MLP, eval_chunk: int) -> Callable[[Params], tuple[jax.Array, jax.Array]] | None:
        """The validation MSE in closed form (see `bound`), where the grid allows it."""
        grid = grid_of(make_eval_set(*self.grid(), eval_chunk))
        return None if grid is None else lambda params: bound(params, model, grid)

    def full_batch_loss(self, model: MLP) -> Callable[[Params], jax.Array] | None:
        """Training on the grid: its MSE in closed form (`bound`), ~2H + 4 pieces instead of
        n_val points; the same function of the parameters, so the same gradient up to rounding."""
        grid = grid_of(make_eval_set(*self.grid(), self.n_val)) if model.train_on == "grid" else None
        return None if grid is None else lambda params: bound(params, model, grid)[0]

    def plots(self, out: Path, cfg: Config, summary: dict, history: dict, params: Any) -> None:
        draw(out, cfg, summary, history, params)


class TwoLayerNet(nn.Module):
    """The model: Dense(1->width) -> act -> Dense(width->1) [-> act]."""

    config: MLP

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = self.config.act
        y = nn.Dense(1, name="fc2")(act(nn.Dense(self.config.width, name="fc1")(x)))
        return act(y) if self.config.output_activation else y


def from_torch(state_dict: Mapping[str, Any]) -> Params:
    """Flax parameters from the seed module's PyTorch state_dict (linear1, linear2 or fc1, fc2;
    values as anything np.asarray takes): weight [out, in] -> kernel [in, out]."""
    values = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    first, second = ("linear1", "linear2") if "linear1.weight" in values else ("fc1", "fc2")
    return {
        name: {"kernel": jnp.asarray(values[f"{layer}.weight"].T), "bias": jnp.asarray(values[f"{layer}.bias"])}
        for name, layer in (("fc1", first), ("fc2", second))
    }


# ----------------------------------------------------------------------------- closed-form validation
# A 1 -> H -> 1 net with (leaky) ReLU activations is piecewise linear in its one input: it has a
# kink where each hidden unit's pre-activation crosses zero and, with an output activation, where
# the output's pre-activation does. The validation grid is uniform (linspace) and the target a
# step, so between consecutive breakpoints the residual is linear in the grid index i,
# r(i) = A (i - c) + E around the piece's centre c, and the piece's squared error is exactly
#
#     sum_i r(i)^2 = A^2 n (n^2 - 1) / 12 + n E^2        (n points; sum_i (i - c) = 0)
#
# -- a sum of positive terms, so float32 keeps it accurate. About 2H + 4 pieces replace 5001 points
# (the arithmetic of each validation falls ~100x).
#
# Its rounding differs from the direct sum, so the engine uses it as a filter (`Task.val_bound`): `bound` also
# returns an error margin (a bound on |closed form - direct| from the parameters' magnitudes), and
# a validation whose value could decide a stop, or that is logged or final, is computed directly;
# stop steps, histories and final losses are the direct computation's bits. The best parameters
# are ranked by the closed form (the same loss, rounded differently), which is what lets most
# steps skip the direct evaluation.

EPSILON = float(np.finfo(np.float32).eps) / 2  # unit roundoff


class Grid(NamedTuple):
    """A uniform grid x_i = start + i * spacing, i < n, with target low before index `step`, high from it."""

    start: float
    spacing: float
    n: int
    step: int
    low: float
    high: float


def grid_of(eval_set: EvalSet) -> Grid | None:
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
    negative_slope = model.slope
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
    largest = jnp.abs(b2) + jnp.sum(
        jnp.abs(w2) * (jnp.abs(w1) * max(abs(grid.start), abs(grid.start + grid.spacing * (n - 1))) + jnp.abs(b1))
    )
    output_error = 8 * (w1.shape[0] + 4) * EPSILON * (largest + 1)
    margin = 2 * (2 * jnp.sqrt(loss) * output_error + output_error**2 + 64 * EPSILON * loss)
    return loss, margin


# ----------------------------------------------------------------------------- plots


def draw(out: Path, cfg: Config, summary: dict, history: dict, params: Any) -> None:
    """Every model's validation loss; the final-loss histogram with its clusters; the fitted
    functions of a few models (the loss curves are the engine's)."""
    sets = plots.sets(summary)
    models_ = summary["models"]
    stop_at = cfg.train.stop_at
    groups = {g.name: g for g in cfg.groups}

    # validation loss of every model, log-log, one panel per set
    fig, axes = plots.panels(len(sets), 4.4, 3.4)
    steps = np.concatenate([[1], history["step"]])  # step 0 (lossInit) drawn at 1 on a log axis
    for ax, (label, index) in zip(axes, sets.items()):
        shown = plots.spread(index, plots.MAX_CURVES)
        for i in shown:
            values = np.concatenate([[history["val_loss_init"][i]], history["val_loss"][i]])
            (line,) = ax.plot(steps, values, lw=0.8, alpha=0.7)
            if models_[i]["reached"]:
                ax.plot(max(models_[i]["steps"], 1), models_[i]["val_loss_final"], "o", ms=3, color=line.get_color())
        if stop_at is not None:
            ax.axhline(stop_at, color="k", ls="--", lw=0.8)
        shown_note = "" if len(shown) == len(index) else f" ({len(shown)} shown)"
        ax.set(xscale="log", yscale="log", xlabel="step", title=f"{label}: {len(index)} models{shown_note}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (eval mode, 5001-point grid)")
    plots.save(fig, out, "val_loss.png")

    # histogram of final losses, one panel per set
    finals = np.asarray([m["val_loss_final"] for m in models_], float)  # None (diverged) -> NaN, not drawn
    finite = finals[np.isfinite(finals) & (finals > 0)]
    low, high = (max(finite.min(), 1e-6), max(finite.max(), 1e-6)) if finite.size else (1e-3, 1.0)
    bins = np.geomspace(low / 1.2, high * 1.2, 40)
    fig, axes = plots.panels(len(sets), 4.4, 3.0)
    for ax, (label, index) in zip(axes, sets.items()):
        ax.hist(finals[index][np.isfinite(finals[index])], bins=bins)
        for centre, count in analysis.clusters(list(finals[index])):
            ax.annotate(f"{centre:.4g} ×{count}", (centre, count), fontsize=7, ha="center", va="bottom")
        ax.set(xscale="log", xlabel="final validation loss", ylabel="models", title=label)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    plots.save(fig, out, "final_loss_hist.png")

    # fitted functions of a few models (up to 2 that reached the threshold, 2 that did not)
    task = cfg.task
    assert isinstance(task, StepfitTask)
    fig, axes = plots.panels(len(sets), 4.4, 3.3)
    x = np.linspace(0, 1, 2001, dtype=np.float32)[:, None]
    for ax, (label, index) in zip(axes, sets.items()):
        ax.plot(x[:, 0], task.target(x)[:, 0], "k--", lw=1, label="target")
        chosen = [i for i in index if models_[i]["reached"]][:2] + [i for i in index if not models_[i]["reached"]][:2]
        for i in chosen:
            group, position = plots.group_index(summary, i)
            module = cfg.task.module(groups[group].model)
            p = plots.params_of(report.load_params(params, group, "last"), position)
            y = np.asarray(module.apply({"params": p}, x, train=False))[:, 0]
            ax.plot(x[:, 0], y, lw=1.2, label=f"seed {models_[i]['seed']}: loss {report.fmt(models_[i]['val_loss_final'])}")
        ax.set(xlabel="x", title=f"{label}: fitted functions")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    plots.save(fig, out, "fitted.png")
