"""PNG plots of a finished run, drawn from its files (config, summary.json, history.npz,
params.npz) so they can be redrawn without training."""
from __future__ import annotations

import warnings
from pathlib import Path

import jax
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxfit import models, report, tasks  # noqa: E402
from jaxfit.config import Config, SumsqTask  # noqa: E402


def _sets(summary: dict) -> dict[str, np.ndarray]:
    """Model indices of each set of models that differ only in seed, keyed by a label."""
    columns = [c for c in report.coordinate_columns(summary["models"]) if c != "seed"]
    return {
        " ".join(str(v) if c in ("group", "init") else f"{c}={v}" for c, v in zip(columns, key)): np.asarray(index)
        for key, index in report.model_sets(summary["models"]).items()
    }


def _save(fig, out: Path, name: str) -> None:
    fig.tight_layout()
    report.atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)


def _band(ax, x, values, label, color, ls="-"):
    """Median over seeds with a min-max band."""
    with warnings.catch_warnings():  # a point where every model has stopped is all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        ax.plot(x, np.nanmedian(values, 0), color=color, label=label, ls=ls)
        ax.fill_between(x, np.nanmin(values, 0), np.nanmax(values, 0), color=color, alpha=0.2, lw=0)


MAX_CURVES = 200  # one line per model up to this many per panel; beyond, an even spread of them


def _spread(index, limit: int):
    """At most `limit` of the models in `index`, evenly spread over it (all of them if fewer)."""
    index = np.asarray(index)
    return index if len(index) <= limit else index[np.linspace(0, len(index) - 1, limit).astype(int)]


def _params_of(tree: dict, index: int) -> dict:
    return jax.tree.map(lambda a: a[index], tree)


def _group_index(summary: dict, index: int) -> tuple[str, int]:
    """(group name, position within the group) of model `index`."""
    group = summary["models"][index]["group"]
    return group, sum(1 for m in summary["models"][:index] if m["group"] == group)


def loss_curves(out: Path, summary: dict, history: dict, x_name: str, log_x: bool) -> None:
    sets = _sets(summary)
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4), squeeze=False, sharey=True)
    x = history[x_name]
    for ax, (label, index) in zip(axes[0], sets.items()):
        _band(ax, x, history["train_loss"][index], "train loss (train mode, as logged)", "C0")
        # validation starts before training (x = 0, or 1 on a log axis)
        val = np.concatenate([history["val_loss_init"][index, None], history["val_loss"][index]], axis=1)
        _band(ax, np.concatenate([[1 if log_x else 0], x]), val, "val loss (eval mode)", "C1")
        if np.isfinite(history["train_eval_loss"][index]).any():
            _band(ax, x, history["train_eval_loss"][index], "train-set loss (eval mode)", "C2", ls="--")
        ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        ax.set_title(f"{label}: median and min-max over {len(index)} seeds", fontsize=9)
        ax.set_xlabel(x_name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MSE")
    axes[0][0].legend(fontsize=8)
    _save(fig, out, "loss_curves.png")


# ----------------------------------------------------------------------------- sumsq


def sumsq_plots(out: Path, cfg: Config, summary: dict, history: dict, params) -> None:
    loss_curves(out, summary, history, "epoch", log_x=False)
    task: SumsqTask = cfg.task
    x, y = tasks.sumsq_dataset(task)
    sample = np.random.default_rng(0).choice(task.n_train, min(2000, task.n_train), replace=False)
    x, y = x[sample], y[sample, 0]
    first_of_set = [index[0] for index in _sets(summary).values()]  # seed 0 of each set
    groups = {g.name: g for g in cfg.groups}

    fig, axes = plt.subplots(len(first_of_set), 2, figsize=(10, 4.2 * len(first_of_set)), squeeze=False)
    fig2, axes2 = plt.subplots(1, len(first_of_set), figsize=(5.5 * len(first_of_set), 4), squeeze=False)
    grid = np.linspace(task.low, task.high, 300, dtype=np.float32)
    for row, index in enumerate(first_of_set):
        entry = summary["models"][index]
        group, position = _group_index(summary, index)
        model = groups[group].model
        module = models.build(model, task)
        ax2 = axes2[0][row]
        ax2.plot(grid, grid**2, "k--", lw=1, label="x²")
        for col, (kind, when) in enumerate((("first", "after epoch 1"), ("last", f"after epoch {cfg.n_epochs}"))):
            p = _params_of(report.load_params(params, group, kind), position)
            pred = np.asarray(module.apply({"params": p}, x, train=False))[:, 0]
            ax = axes[row][col]
            ax.scatter(y, pred, s=3, alpha=0.4)
            lo, hi = float(y.min()), float(y.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=1)
            mse = float(np.mean((pred - y) ** 2))
            ax.set_title(f"{entry['group']} {entry['init']} seed {entry['seed']}, {when}: MSE {mse:.4g}", fontsize=9)
            ax.set_xlabel("true y (training data)")
            ax.set_ylabel("predicted y (eval mode)")
            # The effective per-input function: mean_i(w3_i) * g(x) + b3 / n_inputs.
            g = np.asarray(models.subnet_function(model, p, grid))
            w3, b3 = np.asarray(p["fc3"]["kernel"])[:, 0], float(np.asarray(p["fc3"]["bias"])[0])
            ax2.plot(grid, w3.mean() * g + b3 / task.n_inputs, label=f"{when}: mean(w3)·g(x) + b3/{task.n_inputs}")
        ax2.set_title(f"{entry['group']} {entry['init']} seed {entry['seed']}: learned per-input function", fontsize=9)
        ax2.set_xlabel("x")
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
    _save(fig, out, "pred_vs_true.png")
    _save(fig2, out, "subnet.png")


# ----------------------------------------------------------------------------- stepfit


def stepfit_plots(out: Path, cfg: Config, summary: dict, history: dict, params) -> None:
    loss_curves(out, summary, history, "step", log_x=True)
    sets = _sets(summary)
    models_ = summary["models"]
    stop_loss = cfg.train.stop_loss
    groups = {g.name: g for g in cfg.groups}

    # validation loss of every model, log-log, one panel per set
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False, sharey=True)
    steps = np.concatenate([[1], history["step"]])  # step 0 (lossInit) drawn at 1 on a log axis
    for ax, (label, index) in zip(axes[0], sets.items()):
        shown = _spread(index, MAX_CURVES)
        for i in shown:
            values = np.concatenate([[history["val_loss_init"][i]], history["val_loss"][i]])
            line, = ax.plot(steps, values, lw=0.8, alpha=0.7)
            if models_[i]["reached"]:
                ax.plot(max(models_[i]["steps"], 1), models_[i]["loss_final"], "o", ms=3, color=line.get_color())
        if stop_loss is not None:
            ax.axhline(stop_loss, color="k", ls="--", lw=0.8)
        shown_note = "" if len(shown) == len(index) else f" ({len(shown)} shown)"
        ax.set(xscale="log", yscale="log", xlabel="step", title=f"{label}: {len(index)} models{shown_note}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation loss (eval mode, 5001-point grid)")
    _save(fig, out, "val_loss.png")

    # histogram of final losses, one panel per set
    finals = np.asarray([m["loss_final"] for m in models_], float)  # None (diverged) -> NaN, not drawn
    finite = finals[np.isfinite(finals) & (finals > 0)]
    low, high = (max(finite.min(), 1e-6), max(finite.max(), 1e-6)) if finite.size else (1e-3, 1.0)
    bins = np.geomspace(low / 1.2, high * 1.2, 40)
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.5), squeeze=False, sharex=True)
    for ax, (label, index) in zip(axes[0], sets.items()):
        ax.hist(finals[index][np.isfinite(finals[index])], bins=bins)
        for centre, count in report.clusters(list(finals[index])):
            ax.annotate(f"{centre:.4g} ×{count}", (centre, count), fontsize=7, ha="center", va="bottom")
        ax.set(xscale="log", xlabel="final validation loss", ylabel="models", title=label)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _save(fig, out, "final_loss_hist.png")

    # fitted functions of a few models (up to 2 that reached the threshold, 2 that did not)
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), squeeze=False, sharey=True)
    x = np.linspace(0, 1, 2001, dtype=np.float32)[:, None]
    for ax, (label, index) in zip(axes[0], sets.items()):
        ax.plot(x[:, 0], tasks.step_target(cfg.task, x)[:, 0], "k--", lw=1, label="target")
        chosen = [i for i in index if models_[i]["reached"]][:2] + [i for i in index if not models_[i]["reached"]][:2]
        for i in chosen:
            group, position = _group_index(summary, i)
            module = models.build(groups[group].model, cfg.task)
            p = _params_of(report.load_params(params, group, "last"), position)
            y = np.asarray(module.apply({"params": p}, x, train=False))[:, 0]
            ax.plot(x[:, 0], y, lw=1.2, label=f"seed {models_[i]['seed']}: loss {report.fmt(models_[i]['loss_final'])}")
        ax.set(xlabel="x", title=f"{label}: fitted functions")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    _save(fig, out, "fitted.png")


def draw_all(out: Path, cfg: Config, summary: dict, history: dict, params) -> None:
    if isinstance(cfg.task, SumsqTask):
        sumsq_plots(out, cfg, summary, history, params)
    else:
        stepfit_plots(out, cfg, summary, history, params)
