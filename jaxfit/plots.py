"""PNG plots of a finished run, drawn from its files (config, summary.json, history.npz,
params.npz) so they can be redrawn without training: the common loss curves, and the helpers an
experiment's own plots use (sets of models that differ only in seed, one model's parameters)."""
from __future__ import annotations

import warnings
from pathlib import Path

import jax
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxfit import report  # noqa: E402
from jaxfit.config import Config  # noqa: E402


def sets(summary: dict) -> dict[str, np.ndarray]:
    """Model indices of each set of models that differ only in seed, keyed by a label."""
    columns = [c for c in report.coordinate_columns(summary["models"]) if c != "seed"]
    return {
        " ".join(str(v) if c in ("group", "init") else f"{c}={v}" for c, v in zip(columns, key)): np.asarray(index)
        for key, index in report.model_sets(summary["models"]).items()
    }


def save(fig, out: Path, name: str) -> None:
    fig.tight_layout()
    report.atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    plt.close(fig)


def band(ax, x, values, label, color, ls="-"):
    """Median over seeds with a min-max band."""
    with warnings.catch_warnings():  # a point where every model has stopped is all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        ax.plot(x, np.nanmedian(values, 0), color=color, label=label, ls=ls)
        ax.fill_between(x, np.nanmin(values, 0), np.nanmax(values, 0), color=color, alpha=0.2, lw=0)


MAX_CURVES = 200  # one line per model up to this many per panel; beyond, an even spread of them


def spread(index, limit: int):
    """At most `limit` of the models in `index`, evenly spread over it (all of them if fewer)."""
    index = np.asarray(index)
    return index if len(index) <= limit else index[np.linspace(0, len(index) - 1, limit).astype(int)]


def params_of(tree: dict, index: int) -> dict:
    return jax.tree.map(lambda a: a[index], tree)


def group_index(summary: dict, index: int) -> tuple[str, int]:
    """(group name, position within the group) of model `index`."""
    group = summary["models"][index]["group"]
    return group, sum(1 for m in summary["models"][:index] if m["group"] == group)


def loss_curves(out: Path, summary: dict, history: dict, x_name: str, log_x: bool) -> None:
    """loss_curves.png: the logged train-mode loss and every eval-mode `*_loss` metric (from its
    value before training), median and min-max over seeds, one panel per set."""
    panels = sets(summary)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharey=True)
    x = history[x_name]
    evals = [k for k in history if k.endswith("_loss") and k != "train_loss"]
    for ax, (label, index) in zip(axes[0], panels.items()):
        band(ax, x, history["train_loss"][index], "train_loss (train mode, as logged)", "C0")
        for colour, name in enumerate(evals, start=1):
            xs, values = x, history[name][index]
            if f"{name}_init" in history:  # from before training: x = 0, or 1 on a log axis
                xs, values = np.concatenate([[1 if log_x else 0], x]), np.concatenate([history[f"{name}_init"][index, None], values], axis=1)
            if np.isfinite(values).any():
                band(ax, xs, values, f"{name} (eval mode)", f"C{colour}", ls="-" if name.startswith("val") else "--")
        ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        ax.set_title(f"{label}: median and min-max over {len(index)} seeds", fontsize=9)
        ax.set_xlabel(x_name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend(fontsize=8)
    save(fig, out, "loss_curves.png")


def draw_all(out: Path, cfg: Config, summary: dict, history: dict, params) -> None:
    """Every plot of a run: the experiment's own (`Task.plots`; the common loss curves by default)."""
    cfg.task.plots(out, cfg, summary, history, params)
