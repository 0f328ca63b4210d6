"""A run from Python, as pandas tables: `jaxfit.open(path)` reads a finished run's folder;
`jaxfit.train(config, *overrides, out=None)` (jaxfit.run.train) trains one as `python -m
jaxfit.run` does (its folder, lock, checkpoints and files) and opens it.

    run = jaxfit.train("my_config.toml", "sweep.n_seeds=20", "train.steps=3000", out="runs/mine")
    run.models                  # one row per model: its coordinates and summary numbers
    run.history("val_loss")     # long format: model, coordinates, step, metric, value
    run.comparisons, run.factors, run.cells   # the paired analysis of summary.md
    run.figures["loss_curves"]  # the PNGs' paths

Reading a run imports no jax (only `train` does).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from jaxfit import analysis, report
from jaxfit.runfiles import RunFileError, RunView, read_files


class Run:
    """A finished run's folder, read once: its config (as written), summary and tables (the
    paired analysis computed afresh, as `python -m jaxfit.report` does)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunFileError(f"{self.path}: no such folder")
        self.config, self.summary, self._history, _ = read_files(self.path)
        view = RunView.of(self.config, self.summary["run"], self.summary["models"])
        self.summary["analysis"] = report.analyse(view, self.summary["models"])  # as this version computes it

    def __repr__(self) -> str:
        run = self.summary["run"]
        return f"Run({str(self.path)!r}: {run['name']}, {run['n_models']} models, up to {run['steps']:,} steps)"

    @cached_property
    def models(self) -> pd.DataFrame:
        """One row per model, in summary.json's order: group, seed, init, swept values, numbers
        (pandas' nullable types: a step a model never reached is <NA>, not a float NaN)."""
        return pd.DataFrame(self.summary["models"]).convert_dtypes()

    @property
    def coordinates(self) -> list[str]:
        """The columns of `models` that say where a model sits (group, seed, init, swept keys)."""
        return analysis.coordinate_columns(self.summary["models"])

    def history(self, metric: str | None = None) -> pd.DataFrame:
        """The logged curves in long format, one row per model, metric and logged step: `model`
        (its row in `models`), its coordinates, `step`, `metric`, `value`. A metric's value
        before training is its row at step 0; a model that stopped has no rows after it.
        `metric`: one of them (e.g. "val_loss"); None: all."""
        names = [k for k, v in self._history.items() if v.ndim == 2]
        if metric is not None and metric not in names:
            raise KeyError(f"metric {metric!r}: this run logged {', '.join(names)}")
        frames = []
        for name in [metric] if metric else names:
            values, steps = self._history[name], self._history["step"]
            if f"{name}_init" in self._history:
                values, steps = np.concatenate([self._history[f"{name}_init"][:, None], values], 1), np.concatenate([[0], steps])
            model, point = np.nonzero(np.isfinite(values))
            frames.append(pd.DataFrame({"model": model, "step": steps[point], "metric": name, "value": values[model, point]}))
        long = pd.concat(frames, ignore_index=True)
        where = self.models[self.coordinates].iloc[long["model"]].reset_index(drop=True)
        return pd.concat([long[["model"]], where, long[["step", "metric", "value"]]], axis=1)

    @cached_property
    def comparisons(self) -> pd.DataFrame:
        """Every paired comparison (summary.md's "Each comparison", all of them): factor, a, b,
        held (the coordinates held fixed), pairs, then `success_*`, `steps_*` and `final_*`
        (p, holm_p, difference, low, high, seeds_needed, ...) and notes."""
        rows = []
        for c in self.summary["analysis"]["comparisons"]:
            row = {k: c[k] for k in ("factor", "a", "b", "pairs")}
            row["held"] = ", ".join(f"{k}={v}" for k, v in c["held"].items())
            for kind in ("success", "steps", "final"):
                row.update({f"{kind}_{k}": v for k, v in c.get(kind, {}).items()})
            rows.append(row | {"notes": "; ".join(c["notes"])})
        return pd.DataFrame(rows)

    @cached_property
    def factors(self) -> pd.DataFrame:
        """Each coordinate pooled over the others (summary.md's factors table): factor, a, b,
        strata, pairs, `success_*` (counts, p, holm_p, difference, low, high, seeds_needed),
        `steps_*` and `final_*` (Hodges-Lehmann difference and interval, p, effect)."""
        rows = []
        for f in self.summary["analysis"]["factors"]:
            row = {k: f[k] for k in ("factor", "a", "b", "strata", "pairs")}
            for key, value in f.items():
                if isinstance(value, dict):
                    row.update({f"{key}_{k}": v for k, v in value.items()})
                elif key not in row:
                    row[key if key.startswith("success_") else f"success_{key}"] = value
            rows.append(row)
        return pd.DataFrame(rows)

    @cached_property
    def cells(self) -> pd.DataFrame:
        """One row per cell (models that differ only in seed): name, coordinates, n, the count of
        each outcome class, and (with a threshold) the seeds for a +-5 point success interval."""
        rows = []
        for c in self.summary["analysis"]["cells"]:
            rows.append({"cell": c["name"], **c["coords"], "n": c["n"], **c["outcomes"], **{k: c[k] for k in c if k == "seeds_for_5pt"}})
        return pd.DataFrame(rows)

    @property
    def figures(self) -> dict[str, Path]:
        """The run's PNG figures by name (file name without .png)."""
        return {p.stem: p for p in sorted(self.path.glob("*.png"))}

    @property
    def markdown(self) -> str:
        """summary.md, the tables as printed."""
        return (self.path / "summary.md").read_text()


def open(path: Path | str) -> Run:  # noqa: A001 -- jaxfit.open, as the card names it
    """A finished run's folder; `jaxfit.RunFileError` (one line) if it is not one."""
    return Run(path)


__all__ = ["Run", "open"]
