"""Compare two run folders bit for bit: every history.npz and params.npz array and every number of
every summary.json model entry that both have (timings aside), and list the keys only one has.

    python results/engine_split/compare_runs.py BEFORE_DIR AFTER_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def compare(before: Path, after: Path) -> list[str]:
    problems, notes = [], []
    for name in ("history.npz", "params.npz"):
        with np.load(before / name) as a, np.load(after / name) as b:
            for key in sorted(set(a) | set(b)):
                if key not in b or key not in a:
                    notes.append(f"{name}: {key} only {'before' if key in a else 'after'}")
                elif a[key].shape != b[key].shape or a[key].tobytes() != b[key].tobytes():
                    problems.append(f"{name}: {key} differs")
    ma = json.loads((before / "summary.json").read_text())["models"]
    mb = json.loads((after / "summary.json").read_text())["models"]
    if len(ma) != len(mb):
        problems.append(f"summary.json: {len(ma)} vs {len(mb)} models")
    for i, (x, y) in enumerate(zip(ma, mb)):
        for key in sorted(set(x) | set(y)):
            if key in x and key in y:
                if x[key] != y[key]:
                    problems.append(f"summary.json model {i}: {key} {x[key]!r} -> {y[key]!r}")
            elif i == 0:
                notes.append(f"summary.json: {key} only {'before' if key in x else 'after'}")
    for line in notes:
        print("  note:", line)
    return problems


if __name__ == "__main__":
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    bad = []
    for folder in sorted(p.name for p in before.iterdir() if (p / "summary.json").is_file()):
        print(folder)
        problems = compare(before / folder, after / folder)
        print("  identical" if not problems else "\n".join("  " + p for p in problems[:20]))
        bad += problems
    sys.exit(1 if bad else 0)
