"""Measurement (issue 35): does a model's every state leaf depend on how many models ran beside it?

    python invariance_probe.py stepfit [N ...]   # train.steps=$STEPS (default 300), sweep.n_seeds = each N (default 1 3 8 41 100)
    python invariance_probe.py sumsq [N ...]     # the suite's small sumsq (3 epochs of 10 steps), default 2 12

Runs the config once per seed count and compares, for each group, every state leaf of the models
the runs share (the history's scratch column aside) with the first run's: "same" or "DIFF" with the
leaves that differ. Run it under XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=... to compare
XLA:CPU's routings, or through fixed_sums_and_dots.py for the rewrite.
"""

import os
import sys
import time

import jax
import numpy as np

from jaxfit import config, sweep


def leaves(result: sweep.Result, group: str) -> dict:
    out = {}
    for g, state in zip(result.groups, result.states):
        if g.group.name == group:
            for i, label in enumerate(g.labels):
                key = (label["seed"], label["init"])
                out[key] = {jax.tree_util.keystr(p): np.asarray(v)[i] for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    return out


def compare(name: str, base: list[str], sizes: list[int], groups: list[str]) -> None:
    runs = {}
    for n in sizes:
        start = time.perf_counter()
        runs[n] = sweep.run(config.load(name, [*base, f"sweep.n_seeds={n}"]), quiet=True)
        print(name, n, f"{time.perf_counter() - start:.1f}s", flush=True)
    for group in groups:
        ref = leaves(runs[sizes[0]], group)
        for n in sizes[1:]:
            other = leaves(runs[n], group)
            cut = lambda leaf, a: a[:-1] if "history" in leaf else a  # noqa: E731
            bad = [
                (k, leaf)
                for k in ref
                for leaf in ref[k]
                if not np.array_equal(cut(leaf, ref[k][leaf]), cut(leaf, other[k][leaf]), equal_nan=True)
            ]
            print(name, group, sizes[0], "vs", n, "DIFF" if bad else "same", bad[:3], flush=True)


if __name__ == "__main__":
    which, sizes = sys.argv[1], [int(a) for a in sys.argv[2:]]
    if which == "stepfit":
        compare("stepfit", [f"train.steps={os.environ.get('STEPS', '300')}"], sizes or [1, 3, 8, 41, 100], ["narrow", "wide"])
    else:
        compare("sumsq", ["task.n_samples=1100", "task.n_train=1000", "train.epochs=3"], sizes or [2, 12], ["main"])
