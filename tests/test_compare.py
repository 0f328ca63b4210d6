"""`python -m jaxfit.report DIR [DIR ...]`: one table and one set of curves across runs."""

from __future__ import annotations

import shutil

import pytest

from jaxfit import report, run
from tests.conftest import SUMSQ


@pytest.mark.slow
def test_several_runs_make_one_table_and_one_figure(tmp_path, stepfit_run, capsys):
    """Cells keyed by run, group, init and swept values; success rates with Wilson intervals
    where a run has a threshold; runs of the same folder name told apart by their parents; the
    run folders untouched."""
    twin = tmp_path / "other" / stepfit_run.name
    shutil.copytree(stepfit_run, twin)
    assert run.main([*SUMSQ, "--set", "optim.lr=[0.001,0.01]", "--out", str(tmp_path / "sumsq")]) == 0
    before = {p: p.read_bytes() for p in stepfit_run.iterdir() if p.is_file()}
    assert report.main([str(stepfit_run), str(twin), str(tmp_path / "sumsq"), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "compare_curves.png").stat().st_size > 0
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 2 + 2 + 4  # stepfit: narrow, wide (twice); sumsq: {manual, he} x 2 learning rates
    assert {row.split(" | ")[0][2:] for row in rows} == {f"{stepfit_run.parent.name}/stepfit", "other/stepfit", "sumsq"}
    models = [m for m in __import__("json").loads((stepfit_run / "summary.json").read_text())["models"] if m["group"] == "wide"]
    reached = sum(m["reached"] for m in models)
    low, high = report.wilson_interval(reached, len(models))
    assert f"| wide | torch_default | {len(models)} | {reached}/{len(models)} [{low:.2f}, {high:.2f}] |" in table
    assert table.splitlines()[2].startswith("**Different experiments** -- stepfit (monitor val_loss)")  # stepfit and sumsq
    assert "optim.lr" in table.splitlines()[4] and "| 0.01 |" in table  # the swept value is a column
    assert before == {p: p.read_bytes() for p in stepfit_run.iterdir() if p.is_file()}
    assert report.main([str(stepfit_run), str(twin), "--out", str(stepfit_run)]) == 2  # never into a run
    assert report.main([str(stepfit_run), str(tmp_path)]) == 2  # not a run
    assert "not a finished jaxfit run" in capsys.readouterr().err
