"""The Python API (jaxfit/runs.py, jaxfit.run.train): `jaxfit.train` trains and opens a run,
`jaxfit.open` reads one; its tables are the run's files as pandas DataFrames, and reading
imports no jax."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxfit
from jaxfit.runfiles import RunFileError, load_history, read_summary

ROOT = Path(__file__).resolve().parent.parent
# 2 init schemes x 2 learning rates x 3 seeds of the spirals example: 4 cells, 4 comparisons
SPIRALS = ["sweep.n_seeds=3", "train.steps=50", "optim.lr=[0.001, 0.002]", "train.stop_at=0.6"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> jaxfit.Run:
    return jaxfit.train(ROOT / "examples" / "spirals.toml", SPIRALS, out=tmp_path_factory.mktemp("api") / "run")  # a list, or each


@pytest.mark.slow
def test_a_trained_run_opens_as_tables_of_its_files(trained):
    summary, history = read_summary(trained.path), load_history(trained.path / "history.npz")
    models = trained.models
    assert isinstance(models, pd.DataFrame) and len(models) == len(summary["models"]) == 12
    for row, entry in zip(models.to_dict("records"), summary["models"]):
        assert row.keys() == entry.keys() and all(pd.isna(row[k]) if v is None else row[k] == v for k, v in entry.items())
    assert str(models.stop_step.dtype) == "Int64"
    assert {"group", "seed", "init", "optim.lr", "val_loss_final", "reached"} <= set(models.columns)
    curves = trained.history("val_loss")
    assert list(curves.columns) == ["model", *trained.coordinates, "step", "metric", "value"] and set(curves.metric) == {"val_loss"}
    for i in (0, 5):
        mine = curves[curves.model == i]
        logged = history["val_loss"][i]
        np.testing.assert_array_equal(mine.value, np.concatenate([[history["val_loss_init"][i]], logged[np.isfinite(logged)]]))
        assert mine.step.iloc[0] == 0 and (mine.seed == summary["models"][i]["seed"]).all()
    assert {"train_loss", "val_loss", "lr"} <= set(trained.history().metric)
    with pytest.raises(KeyError, match="metric 'nonesuch': this run logged"):
        trained.history("nonesuch")
    comparisons = summary["analysis"]["comparisons"]
    assert len(trained.comparisons) == len(comparisons) == 4
    assert trained.comparisons.success_holm_p.tolist() == [c["success"]["holm_p"] for c in comparisons]
    assert trained.comparisons.final_low.tolist() == [c["final"]["low"] for c in comparisons]
    assert set(trained.factors.factor) == {"init", "optim.lr"} and {"success_p", "success_low", "final_difference"} <= set(trained.factors)
    assert trained.cells.n.tolist() == [3] * 4 and "seeds_for_5pt" in trained.cells
    assert {"loss_curves", "cells", "performance_profile", "reached_by_step"} <= set(trained.figures)
    assert trained.markdown == (trained.path / "summary.md").read_text()


@pytest.mark.slow
def test_opening_a_run_reads_the_same_and_imports_no_jax(trained):
    again = jaxfit.open(trained.path)
    pd.testing.assert_frame_equal(again.models, trained.models)
    code = f"import sys, jaxfit; r = jaxfit.open({str(trained.path)!r}); r.history(); r.comparisons; r.factors; print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.bad_input
def test_a_bad_config_or_a_failed_run_is_an_exception_of_one_line(tmp_path, capsys):
    with pytest.raises(jaxfit.ConfigError, match="train.steps"):
        jaxfit.train("stepfit", "train.steps=0", out=tmp_path / "a")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(jaxfit.TrainingFailed, match="^--out .*folder is not empty") as failed:
        jaxfit.train("stepfit", "train.steps=10", out=taken)
    assert "\n" not in str(failed.value) and not capsys.readouterr().err  # one line, in the exception only
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    with pytest.raises(RunFileError, match="not a finished jaxfit run"):
        jaxfit.open(tmp_path)
    with pytest.raises(jaxfit.RunFileError, match="no such folder"):
        jaxfit.open(tmp_path / "nowhere")
