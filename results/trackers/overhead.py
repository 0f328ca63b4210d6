"""What live logging costs: the faithful stepfit config at 1,000 models (500 seeds per group),
trained with no tracker, with TensorBoard, with W&B (offline) and with both, alternating in one
process on one compiled program, with the same numbers asserted.

    python results/trackers/overhead.py [--steps 30000] [--reps 2] [--warmup 1]

Over a window of 20,000 steps or more the trackers write as many points as over the full
1,000,001 steps (the history keeps ~200 log-spaced points; the run has 100 chunks either way)
in a fraction of the time, so the ratio here is an upper bound on the full run's and the extra
seconds (`extra_s`) are what the full run pays. Writes overhead.json beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxfit import config, outputs, sweep, trackers

ROOT = Path(__file__).resolve().parent
VARIANTS = {"none": (), "tensorboard": ("tensorboard",), "wandb": ("wandb",), "both": ("tensorboard", "wandb")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    base = config.load("stepfit", [f"train.steps={args.steps}", "sweep.n_seeds=500"])
    prepared = sweep.prepare(base)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    reference = None
    for rep in range(-args.warmup, args.reps):  # rounds < 0 warm up (first-run costs), not counted
        for name, to in VARIANTS.items():
            cfg = config.load("stepfit", [f"train.steps={args.steps}", "sweep.n_seeds=500", f"logging.to={json.dumps(list(to))}"])
            with tempfile.TemporaryDirectory() as folder:
                if to:  # the training loop with the trackers' per-chunk writes, plus their end (table, plots)
                    opened = time.perf_counter()
                    live = trackers.Trackers(cfg, folder)
                    opening = time.perf_counter() - opened
                    result = sweep.train_prepared(prepared, quiet=True, on_chunk=live.on_chunk)
                    outputs.write_run(folder, cfg, result)  # the run's own files: written with or without trackers
                    finished = time.perf_counter()
                    live.finish(folder)
                    elapsed = opening + result.timing["run_s"] + time.perf_counter() - finished
                else:
                    result = sweep.train_prepared(prepared, quiet=True)
                    elapsed = result.timing["run_s"]
            history = [np.asarray(s.history["val_loss"]) for s in result.states]
            if reference is None:
                reference = history
            assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(history, reference)), name  # logging changes no number
            if rep >= 0:
                times[name].append(elapsed)
            print(f"rep {rep} {name}: {elapsed:.1f} s", flush=True)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    out = {
        "command": f"python results/trackers/overhead.py --steps {args.steps} --reps {args.reps} --warmup {args.warmup}",
        "device": f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "models": 1000,
        "steps": args.steps,
        "seconds": times,
        "median_s": medians,
        "extra_s": {name: medians[name] - medians["none"] for name in VARIANTS if name != "none"},
        "overhead": {name: medians[name] / medians["none"] - 1 for name in VARIANTS if name != "none"},
    }
    (ROOT / "overhead.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out["overhead"], indent=1))


if __name__ == "__main__":
    main()
