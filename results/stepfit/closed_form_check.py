"""Does validating in closed form change any stop step? Rerun a committed stepfit run with every
validation computed directly on the grid, and compare.

    python results/stepfit/closed_form_check.py [RUN_DIR]    (default: faithful_100_seeds)

Checked on faithful_100_seeds (200 models, 1,000,001 steps) and ablation_1000_30k (1,000 models,
30,000 steps, where hundreds cross the threshold and the direct evaluations go through the
candidate buffers of `trainer.evaluate_where_needed`); each RUN_DIR/closed_form_check.json is the record.

jaxfit validates stepfit's nets through `stepfit.bound` (closed-form MSE and a rounding margin)
and evaluates directly only where a value could matter (see jaxfit/experiments/stepfit.py). This reruns the
config of RUN_DIR in the same program with the margin made huge, so that every validation is the
direct one, and compares every model's stop step, divergence, final and best losses, logged
history and saved parameters with RUN_DIR's files, bit for bit. Writes RUN_DIR/closed_form_check.json; exits 1 on any
difference.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxfit import config, outputs, report, sweep
from jaxfit.experiments import stepfit

ROOT = Path(__file__).resolve().parent
COMPARED = ("stop_step", "reached", "diverged_step", "val_loss_final", "val_loss_best", "best_step", "train_loss_final")


def direct_everywhere() -> None:
    """Make the margin huge: every model could stop at every step, so every validation is direct."""
    bound = stepfit.bound

    def huge_margin(*args):
        loss, margin = bound(*args)
        return loss, margin + 1e30

    stepfit.bound = huge_margin


def main(run_dir: Path) -> int:
    cfg = config.load(str(run_dir / "config.toml"))
    committed = json.loads((run_dir / "summary.json").read_text())["models"]
    committed_history = report.load_history(run_dir / "history.npz")
    direct_everywhere()
    start = time.perf_counter()
    result = sweep.run(cfg, quiet=True)
    seconds = time.perf_counter() - start
    with_direct = outputs.model_entries(cfg, result)
    direct_history = outputs.history_arrays(cfg, result)
    committed_params = np.load(run_dir / "params.npz")
    direct_params = outputs.params_arrays(result)

    differing = [
        {"model": i, "key": key, "closed_form": a[key], "direct": b[key]}
        for i, (a, b) in enumerate(zip(committed, with_direct))
        for key in COMPARED
        if a[key] != b[key]
    ]
    arrays = {f"history/{name}": (committed_history[name], direct_history[name]) for name in committed_history}
    arrays |= {f"params/{name}": (committed_params[name], direct_params[name]) for name in committed_params.files}
    differing_arrays = [name for name, (a, b) in arrays.items() if not np.array_equal(a, b, equal_nan=True)]
    check = {
        "run": run_dir.name,
        "n_models": len(committed),
        "models_reaching_threshold": sum(m["reached"] for m in committed),
        "compared": list(COMPARED),
        "arrays_compared": sorted(arrays),
        "differences": differing,
        "differing_arrays": differing_arrays,
        "direct_run_seconds": round(seconds, 1),
    }
    report.atomic_write(run_dir / "closed_form_check.json", lambda f: f.write(json.dumps(check, indent=1) + "\n"))
    same = not differing and not differing_arrays
    print(
        f"{len(committed)} models, {check['models_reaching_threshold']} reached the threshold: "
        + ("every stop step, loss, history and parameter identical" if same else f"{len(differing)} values and {differing_arrays} differ")
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "faithful_100_seeds"))
