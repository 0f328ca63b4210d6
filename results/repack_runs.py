"""Rewrite committed run folders in the current file layout, losing no bit: history.npz and
params.npz compressed (a per-set metric such as a schedule's `lr` stored once per seed set),
summary.json with the run's paired analysis; then redraw summary.md and the plots.

    python results/repack_runs.py results/stepfit/basin [DIR ...]     (default: every committed run)

Every array read back through `report.load_history` / `np.load`, and every summary entry, is
checked equal to what the folder held before; the script stops at the first difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from jaxfit import outputs, report

ROOT = Path(__file__).resolve().parent


def arrays(folder: Path) -> dict[str, np.ndarray]:
    out = {f"history/{k}": v for k, v in report.load_history(folder / "history.npz").items()}
    with np.load(folder / "params.npz") as params:
        out.update({f"params/{k}": params[k] for k in params.files})
    return out


def repack(folder: Path) -> None:
    before, models = arrays(folder), report.read_summary(folder)["models"]
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    history = report.load_history(folder / "history.npz")
    history = report.pack_history(history, report.set_indices(models))
    report.atomic_write(folder / "history.npz", lambda f: np.savez_compressed(f, **history), binary=True)
    with np.load(folder / "params.npz") as params:
        kept = {k: params[k] for k in params.files}
    report.atomic_write(folder / "params.npz", lambda f: np.savez_compressed(f, **kept), binary=True)
    outputs.redraw(folder)  # the analysis into summary.json, then summary.md and the plots
    after = arrays(folder)
    assert before.keys() == after.keys(), folder
    for key in before:
        assert before[key].dtype == after[key].dtype and np.array_equal(before[key], after[key], equal_nan=True), (folder, key)
    assert report.read_summary(folder)["models"] == models, folder
    new_size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"{folder}: {size / 1e6:.1f} MB -> {new_size / 1e6:.1f} MB, every array and summary entry the same")


def main(folders: list[str]) -> None:
    for folder in [Path(f) for f in folders] or sorted(p.parent for p in ROOT.rglob("summary.json")):
        repack(folder.resolve())


if __name__ == "__main__":
    main(sys.argv[1:])
