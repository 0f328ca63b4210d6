"""`python -m jaxfit.replay`: one model of a run trained alone equals its numbers in the run, bit
for bit (summary entry, params.npz and history.npz rows); `sweep.models` picks models by index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxfit import config, plan, replay, runfiles
from tests.conftest import small


def models(folder: Path) -> list[dict]:
    return json.loads((folder / "summary.json").read_text())["models"]


def rows(folder: Path, index: int, entries: list[dict]) -> dict[str, np.ndarray]:
    """Model `index`'s row of every history.npz and params.npz array (params are stacked per group)."""
    group = entries[index]["group"]
    in_group = [i for i, e in enumerate(entries) if e["group"] == group].index(index)
    history, params = runfiles.load_history(folder / "history.npz"), np.load(folder / "params.npz")
    out = {f"history/{k}": v[index] for k, v in history.items() if v.ndim > 1 or k.endswith("_init")}
    return out | {f"params/{k}": params[k][in_group] for k in params.files if k.split("/")[0] == group}


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 5])
def test_a_replayed_model_equals_the_model_in_its_run(tmp_path, stepfit_run, index):
    out = tmp_path / "alone"
    assert replay.main([str(stepfit_run), "--model", str(index), "--out", str(out), "--quiet"]) == 0
    original, alone = models(stepfit_run), models(out)
    assert len(alone) == 1 and alone[0] == original[index]
    expected, got = rows(stepfit_run, index, original), rows(out, 0, alone)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        np.testing.assert_array_equal(expected[name], got[name], err_msg=name)
    again = tmp_path / "again"  # a replay of the replay names the same model
    assert replay.main([str(out), "--model", "0", "--out", str(again), "--quiet"]) == 0
    assert models(again) == alone


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("args", "words"),
    [(["--model", "6"], "--model 6: "), (["--model", "-1"], "--model -1: "), (["--model", "x"], "invalid int value")],
)
def test_a_bad_model_index_is_one_line(tmp_path, capsys, args, words):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(config.to_toml(small("stepfit")))  # 3 seeds x 2 groups
    assert replay.main([str(run_dir), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.bad_input
def test_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert replay.main([str(tmp_path), "--model", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no config.toml" in err


def test_sweep_models_picks_models_by_their_index_in_the_whole_sweep():
    whole = [label for g in plan.expand(small("stepfit")) for label in g.labels]
    picked = plan.expand(small("stepfit", "sweep.models=[5, 1]"))
    assert [label for g in picked for label in g.labels] == [whole[1], whole[5]]
    assert [g.group.name for g in plan.expand(small("stepfit", "sweep.models=[4]"))] == [whole[4]["group"]]
    assert plan.count_models(small("stepfit", "sweep.models=[4, 0]")) == 2


@pytest.mark.bad_input
@pytest.mark.parametrize(("value", "words"), [("[6]", "6 is not a model of this sweep"), ("[1, 1]", "at most once"), ("[-1]", "-1 is not")])
def test_bad_sweep_models_are_one_line(value, words):
    with pytest.raises(config.ConfigError, match=words) as error:
        small("stepfit", f"sweep.models={value}")
    assert "sweep.models" in str(error.value) and "\n" not in str(error.value)
