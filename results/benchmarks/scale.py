"""Issue 19's CPU targets, each measurement in a fresh process (its peak RSS its own), variants
alternated so that the machine's drift hits them alike:

    PYTHONPATH=. python results/benchmarks/scale.py early_stop|faithful_window|sumsq [--reps N] [--out FILE]

- early_stop: `--config stepfit_ablation --set sweep.n_seeds=500 --set train.steps=30000` (1,000
  models, hundreds cross 0.005) against the same with `train.stop_at=1e-12` (nobody stops).
- faithful_window: `--config stepfit` (10 seeds per group) over steps 380,000-650,000, where its
  wide models cross 0.005, against the same with the threshold unreachable; the rate is taken
  from the chunks ending inside the window.
- sumsq: `python -m jaxfit.bench`'s sumsq workload (dropout, Adam + StepLR, eval chunk 2,000)
  at 10 models (two epochs) and 1,000 models (one epoch): model-steps/s and peak RSS.
- sumsq_memory: the faithful `--config sumsq` (train-set evaluation on) with 500 seeds x {manual,
  he} = 1,000 models for one epoch: peak RSS.

Prints one JSON line per measurement and writes them all to FILE (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SUMSQ_BENCH = ["task.eval_train=false", "model.init=manual", "execution.chunk_epochs=1"]
VARIANTS = {
    "early_stop": {
        "stop": ("stepfit_ablation", ["sweep.n_seeds=500", "train.steps=30000"], None),
        "no_stop": ("stepfit_ablation", ["sweep.n_seeds=500", "train.steps=30000", "train.stop_at=1e-12"], None),
    },
    "faithful_window": {
        "stop": ("stepfit", ["train.steps=650000"], (380_000, 650_000)),
        "no_stop": ("stepfit", ["train.steps=650000", "train.stop_at=1e-12"], (380_000, 650_000)),
    },
    "sumsq": {  # python -m jaxfit.bench's sumsq workload: manual init, no train-set evaluation
        "10_models": ("sumsq", [*SUMSQ_BENCH, "sweep.n_seeds=10", "train.epochs=2"], None),
        "1000_models": ("sumsq", [*SUMSQ_BENCH, "sweep.n_seeds=1000", "train.epochs=1"], None),
    },
    "sumsq_memory": {  # the faithful config, 1,000 models, one epoch
        "1000_models": ("sumsq", ["sweep.n_seeds=500", "train.epochs=1"], None),
    },
}

CHILD = """
import json, sys, time
from jaxfit import config, sweep, trainer
name, overrides, window = json.loads(sys.argv[1])
cfg = config.load(name, overrides)
ends = []
result = sweep.run(cfg, quiet=True, on_chunk=lambda states, interval: ends.append(
    (time.perf_counter(), int(trainer.interval_end_steps(cfg, [interval - 1])[0]))))
out = {"timing": result.timing, "n_models": sum(g.n_models for g in result.groups)}
if window:
    inside = [(t, s) for t, s in ends if window[0] <= s <= window[1]]
    (t0, s0), (t1, s1) = inside[0], inside[-1]
    out["window_steps"] = [s0, s1]
    out["window_model_steps_per_s"] = out["n_models"] * (s1 - s0) / (t1 - t0)
print(json.dumps(out))
"""


def measure(name: str, overrides: list[str], window: tuple[int, int] | None) -> dict:
    """One run in a fresh process: its timing, rate (over the window if given) and peak RSS."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps([name, overrides, window])], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{name} {overrides}: exit status {status}")
    return {**json.loads(out.splitlines()[-1]), "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=sorted(VARIANTS))
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for rep in range(args.reps):
        for variant, (name, overrides, window) in VARIANTS[args.which].items():
            start = time.perf_counter()
            row = {
                "which": args.which,
                "variant": variant,
                "rep": rep,
                "config": name,
                "overrides": overrides,
                **measure(name, overrides, window),
                "wall_s": time.perf_counter() - start,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
