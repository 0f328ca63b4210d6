"""PNG plots of a finished run, drawn from its files (config, summary.json, history.npz,
params.npz) so they can be redrawn without training: the common loss curves, and the helpers an
experiment's own plots use (sets of models that differ only in seed, one model's parameters)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # figures drawn straight to PNG: no pyplot, no backend switched

from jaxfit import analysis, rundir
from jaxfit.runfiles import RunView

COLUMNS = 4  # panels a row
MAX_PANELS = 64  # per-cell figures draw at most this many cells; cells.png summarises every cell


def sets(summary: dict) -> dict[str, np.ndarray]:
    """Model indices of each set of models that differ only in seed, keyed by a label."""
    columns = [c for c in analysis.coordinate_columns(summary["models"]) if c != "seed"]
    return {
        " ".join(str(v) if c in ("group", "init") else f"{c}={v}" for c, v in zip(columns, key)): np.asarray(index)
        for key, index in analysis.model_sets(summary["models"]).items()
    }


def panels(n: int, width: float = 4.2, height: float = 3.2, title: str = "") -> tuple[Any, list[Any]]:
    """A figure of min(n, MAX_PANELS) panels wrapped at COLUMNS a row (unused ones hidden), all
    on the same x and y axes so that cells compare by eye, and its axes in reading order; the
    title says when cells beyond MAX_PANELS are left out."""
    shown = min(n, MAX_PANELS)
    columns = min(shown, COLUMNS)
    rows = -(-shown // columns)
    fig = Figure(figsize=(width * columns, height * rows + (0.4 if title else 0)))
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    flat = list(axes.ravel())
    for ax in flat[shown:]:
        ax.set_visible(False)
    if n > shown:
        title = f"{title}{'; ' if title else ''}the first {shown} of {n} cells (every cell: cells.png)"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, flat[:shown]


def save(fig, out: Path, name: str) -> None:
    title_space = 0.45 / fig.get_figheight() if fig._suptitle is not None else 0.0  # a suptitle above the panels
    fig.tight_layout(rect=(0, 0, 1, 1 - title_space))
    rundir.atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)


def held(values: np.ndarray) -> np.ndarray:
    """[models, points] with each model's last value carried past the point where it stopped
    (history.npz has NaN there), so a median over seeds does not move when models stop."""
    index = np.where(np.isfinite(values), np.arange(values.shape[1]), 0)
    return np.take_along_axis(values, np.maximum.accumulate(index, axis=1), axis=1)


def spread_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a band draws: median, min and max over the models of `values` [models, points],
    each stopped model held at its last value (`held`)."""
    values = held(values)
    with warnings.catch_warnings():  # a point no model has reached yet is all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


def band(ax, x, values, label, color, ls="-"):
    """Median over seeds with a min-max band, a stopped model held at its last value."""
    median, low, high = spread_band(values)
    ax.plot(x, median, color=color, label=label, ls=ls)
    ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)


def lines(ax, x, values, label, color, ls="-"):
    """Each model's own curve, thin, ending where it stopped (a dot there), under the median of
    the models held at their last values."""
    for row in values:
        ax.plot(x, row, color=color, ls=ls, lw=0.6, alpha=0.45)
        last = np.flatnonzero(np.isfinite(row))
        if len(last) and last[-1] < len(row) - 1:
            ax.plot(x[last[-1]], row[last[-1]], ".", color=color, ms=3, alpha=0.7)
    ax.plot(x, spread_band(values)[0], color=color, label=label, ls=ls, lw=1.6)


MAX_LINES = 20  # at most this many seeds a cell: each model's curve, not a band


MAX_CURVES = 200  # one line per model up to this many per panel; beyond, an even spread of them


def spread(index, limit: int):
    """At most `limit` of the models in `index`, evenly spread over it (all of them if fewer)."""
    index = np.asarray(index)
    return index if len(index) <= limit else index[np.linspace(0, len(index) - 1, limit).astype(int)]


def params_of(tree: dict, index: int) -> dict:
    """Model `index`'s parameters from a tree of [models, ...] arrays (as load_params gives)."""
    return {k: params_of(v, index) if isinstance(v, dict) else v[index] for k, v in tree.items()}


def group_index(summary: dict, index: int) -> tuple[str, int]:
    """(group name, position within the group) of model `index`."""
    group = summary["models"][index]["group"]
    return group, sum(1 for m in summary["models"][:index] if m["group"] == group)


def loss_curves(out: Path, summary: dict, history: dict) -> None:
    """loss_curves.png: the logged train-mode loss and every eval-mode `*_loss` metric (from its
    value before training, drawn at step 1), one panel per set, over steps on a log axis; every
    panel on the same axes. Up to MAX_LINES seeds a set: each model's curve and their median;
    more: median and min-max band. A model that stopped counts at its last value."""
    cells = sets(summary)
    fig, axes = panels(len(cells), 4.6, 3.5)
    x = np.maximum(history["step"], 1)
    evals = [k for k in history if k.endswith("_loss") and k != "train_loss"]
    for ax, (label, index) in zip(axes, cells.items()):
        draw = lines if len(index) <= MAX_LINES else band
        draw(ax, x, history["train_loss"][index], "train_loss (train mode, as logged)", "C0")
        for colour, name in enumerate(evals, start=1):
            xs, values = x, history[name][index]
            if f"{name}_init" in history:
                xs, values = np.concatenate([[1], x]), np.concatenate([history[f"{name}_init"][index, None], values], axis=1)
            if np.isfinite(values).any():
                draw(ax, xs, values, f"{name} (eval mode)", f"C{colour}", ls="-" if name.startswith("val") else "--")
        ax.set(xscale="log", yscale="log")
        how = "each seed and their median" if draw is lines else "median and min-max"
        ax.set_title(f"{label}\n{how} over {len(index)} seeds (a stopped model at its last value)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[-min(len(axes), COLUMNS) :]:
        ax.set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    save(fig, out, "loss_curves.png")


def profile(finals: np.ndarray, taus: np.ndarray, goal: str = "min") -> np.ndarray:
    """The performance profile of a cell's final values: per tau, the fraction of its models
    whose final value is <= tau (goal "max": >= tau); a model without one (diverged) never is."""
    finals = np.sort(np.where(np.isfinite(finals), finals, np.inf if goal == "min" else -np.inf))
    if goal == "min":
        return np.searchsorted(finals, taus, side="right") / max(len(finals), 1)
    return (len(finals) - np.searchsorted(finals, taus, side="left")) / max(len(finals), 1)


def performance_profile(out: Path, view: RunView, summary: dict) -> None:
    """performance_profile.png: per cell, the fraction of its models whose final monitored metric
    is at least as good as tau, over tau (rliable's performance profile); the threshold dashed."""
    models, cells = summary["models"], sets(summary)
    monitor = view.monitor
    finals = np.asarray([m.get(f"{monitor}_final") if m.get(f"{monitor}_final") is not None else np.nan for m in models], float)
    finite = finals[np.isfinite(finals)]
    if not finite.size:
        return
    logarithmic = finite.min() > 0 and finite.max() / finite.min() > 100
    low, high = finite.min(), finite.max()
    taus = np.geomspace(low, high, 500) if logarithmic else np.linspace(low, high, 500) if high > low else np.array([low])
    taus = np.unique(np.concatenate([taus, finite]))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for colour, (label, index) in enumerate(cells.items()):
        shares = profile(finals[index], taus, view.goal)
        ax.step(taus, shares, where="post", color=f"C{colour % 10}", lw=1.2, label=f"{label} ({len(index)})")
    if view.stop_at is not None:
        ax.axvline(view.stop_at, color="0.4", ls="--", lw=0.8, label=f"train.stop_at {view.stop_at:g}")
    sign = "<=" if view.goal == "min" else ">="
    ax.set(xscale="log" if logarithmic else "linear", ylim=(-0.02, 1.02), xlabel="τ", ylabel=f"fraction with final {monitor} {sign} τ")
    ax.set_title(f"performance profile: final {monitor} per cell", fontsize=9)
    ax.grid(alpha=0.3)
    if len(cells) <= 16:
        ax.legend(fontsize=6)
    save(fig, out, "performance_profile.png")


def reached_by_step(out: Path, view: RunView, summary: dict) -> None:
    """reached_by_step.png: per cell, the fraction of its models that have reached train.stop_at
    by step t, with a Wilson 95 % band; the other cells' curves faint behind it."""
    models, cells = summary["models"], sets(summary)
    total = max(summary["run"]["steps"], 1)
    steps = np.unique(np.geomspace(1, total, 400).astype(int))
    curves = {label: analysis.reached_by(models, analysis.Cell((), tuple(int(i) for i in index)), steps) for label, index in cells.items()}
    fig, axes = panels(
        len(cells),
        4.2,
        3.0,
        title=f"fraction of models with {view.monitor} {'>=' if view.goal == 'max' else '<='} {view.stop_at:g} "
        f"by step t, with its Wilson 95 % band" + ("; grey: the other cells" if 1 < len(cells) <= 16 else ""),
    )
    for ax, (label, (share, low, high)) in zip(axes, curves.items()):
        for other, (other_share, _, _) in curves.items():
            if other != label and len(curves) <= 16:
                ax.step(steps, other_share, where="post", color="0.8", lw=0.7)
        ax.fill_between(steps, low, high, step="post", color="C0", alpha=0.25, lw=0)
        ax.step(steps, share, where="post", color="C0", lw=1.5)
        ax.set_title(f"{label}: {share[-1]:.0%} of {len(cells[label])}", fontsize=8)
        ax.set(xscale="log", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    for ax in axes[-min(len(axes), COLUMNS) :]:
        ax.set_xlabel("step")
    for ax in axes[::COLUMNS]:
        ax.set_ylabel("reached")
    save(fig, out, "reached_by_step.png")


def cells_summary(out: Path, view: RunView, summary: dict) -> None:
    """cells.png: every cell in one figure, one row each: success with its Wilson 95 % interval
    (with a threshold) and the final monitored metric's median and 25-75 % over seeds."""
    models, cells = summary["models"], sets(summary)
    monitor, threshold = view.monitor, view.stop_at is not None
    labels = list(cells)
    y = np.arange(len(labels))[::-1]
    fig = Figure(figsize=(11 if threshold else 6.5, 1.2 + 0.22 * len(labels)))
    grid = fig.subplots(1, 2 if threshold else 1, squeeze=False, sharey=True)
    axes = list(grid[0])
    finals = np.asarray([m.get(f"{monitor}_final") if m.get(f"{monitor}_final") is not None else np.nan for m in models], float)
    if threshold:
        ax = axes.pop(0)
        for row, label in zip(y, labels):
            index = cells[label]
            k = sum(bool(models[i]["reached"]) for i in index)
            low, high = analysis.wilson_interval(k, len(index))
            ax.plot([low, high], [row, row], color="C0", lw=2, alpha=0.5)
            ax.plot(k / len(index), row, "o", color="C0", ms=4)
        ax.set(xlim=(-0.02, 1.02), xlabel=f"reached {view.stop_at:g} (Wilson 95 %)")
        ax.grid(alpha=0.3)
    ax = axes[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell whose every model diverged
        for row, label in zip(y, labels):
            values = finals[cells[label]]
            ax.plot(np.nanpercentile(values, [25, 75]), [row, row], color="C1", lw=2, alpha=0.5)
            ax.plot(np.nanmedian(values), row, "o", color="C1", ms=4)
    positive = finals[np.isfinite(finals)]
    if positive.size and positive.min() > 0 and positive.max() / positive.min() > 100:
        ax.set_xscale("log")
    ax.set_xlabel(f"final {monitor}: median, 25-75 %")
    ax.grid(alpha=0.3)
    fig.axes[0].set_yticks(y, labels, fontsize=7 if len(labels) <= 64 else 5)
    fig.axes[0].set_ylim(-0.7, len(labels) - 0.3)
    save(fig, out, "cells.png")


def draw_engine(out: Path, view: RunView, summary: dict, history: dict) -> None:
    """The engine's figures of a run, all over steps: the loss curves, every cell at a glance
    (cells.png), the performance profile and, with a threshold, the fraction reached by step t
    (reached_by_step.png)."""
    loss_curves(out, summary, history)
    cells_summary(out, view, summary)
    performance_profile(out, view, summary)
    if view.stop_at is not None:
        reached_by_step(out, view, summary)
