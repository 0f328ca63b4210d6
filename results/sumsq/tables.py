"""The numbers of results/sumsq/REPORT.md, recomputed from the committed run folders.

    python results/sumsq/tables.py [RUN_DIR ...]      (default: faithful and dropout_ablation)

For every (group, init) set of a run, medians over seeds of: the logged train-mode loss, the
eval-mode loss on the same training data, the validation loss; and, from the final parameters on
2,000 validation samples, the eval-mode predictions regressed on the true y (slope, intercept),
the same for the train-mode (dropout on) prediction averaged over 32 dropout draws, and the
learned per-input function h(x) = mean(w3) g(x) + b3/64 against x^2 (its fitted factor c in
h(x) ~ c x^2 + d). Prints markdown tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from jaxfit import config, report
from jaxfit.experiments import sumsq

ROOT = Path(__file__).resolve().parent


def per_model(run: Path) -> list[dict]:
    cfg = config.load(str(run / "config.toml"))
    summary = json.loads((run / "summary.json").read_text())
    arrays = np.load(run / "params.npz")
    x, y = cfg.task.dataset()
    pick = np.random.default_rng(1).choice(np.arange(cfg.task.n_train, cfg.task.n_samples), 2000, replace=False)
    x, y = x[pick], y[pick, 0]
    grid = np.linspace(cfg.task.low, cfg.task.high, 131, dtype=np.float32)
    groups = {g.name: g for g in cfg.groups}
    rows, position = [], {}
    for entry in summary["models"]:
        group = entry["group"]
        index = position[group] = position.get(group, -1) + 1
        model = groups[group].model
        module = cfg.task.module(model)
        params = jax.tree.map(lambda a: a[index], report.load_params(arrays, group, "last"))
        eval_pred = np.asarray(module.apply({"params": params}, x, train=False))[:, 0]
        keys = jax.random.split(jax.random.key(index), 32)
        train_pred = np.mean([np.asarray(module.apply({"params": params}, x, train=True, rngs={"dropout": k}))[:, 0] for k in keys], axis=0)
        g = np.asarray(sumsq.subnet_function(model, params, grid))
        w3, b3 = np.asarray(params["fc3"]["kernel"])[:, 0], float(np.asarray(params["fc3"]["bias"])[0])
        h = w3.mean() * g + b3 / cfg.task.n_inputs
        c, d = np.polyfit(grid**2, h, 1)
        rows.append(
            {
                "group": group,
                "init": entry["init"],
                "train loss (train mode, logged)": entry["train_loss_final"],
                "train-set loss (eval mode)": entry["train_eval_loss_final"],
                "val loss (eval mode)": entry["val_loss_final"],
                "eval-mode slope": np.polyfit(y, eval_pred, 1)[0],
                "train-mode mean slope": np.polyfit(y, train_pred, 1)[0],
                "h(x) = c x² + d: c": c,
                "d": d,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    sets: dict[tuple, list[dict]] = {}
    for row in rows:
        sets.setdefault((row["group"], row["init"]), []).append(row)
    columns = [k for k in rows[0] if k not in ("group", "init")]
    lines = ["| group | init | n | " + " | ".join(f"median {c}" for c in columns) + " |", "|---" * (3 + len(columns)) + "|"]
    for (group, init), members in sets.items():
        values = [np.median([m[c] for m in members]) for c in columns]
        lines.append(
            f"| {group} | {init} | {len(members)} | " + " | ".join(f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in values) + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    runs = [Path(a) for a in sys.argv[1:]] or [ROOT / "faithful", ROOT / "dropout_ablation"]
    for run in runs:
        print(f"## {run.name}\n\n{table(per_model(run))}\n")
