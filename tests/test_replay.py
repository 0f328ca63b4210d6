"""`python -m jaxfit.replay`: one model of a run trained alone equals its numbers in the run, bit
for bit (summary entry, params.npz and history.npz rows); `sweep.models` picks models by index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxfit import config, plan, replay, runfiles, sweep
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
@pytest.mark.parametrize("inside", [".", "sub", "sub/deeper", "../run/sub"])
def test_an_out_inside_the_replayed_run_is_one_line_and_writes_nothing(tmp_path, capsys, inside):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(config.to_toml(small("stepfit")))
    assert replay.main([str(run_dir), "--model", "0", "--out", str(run_dir / inside)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "inside the run being replayed" in err, err
    assert [p.name for p in run_dir.iterdir()] == ["config.toml"]


@pytest.mark.bad_input
def test_a_non_empty_out_is_one_line_naming_no_flag_replay_lacks(tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    out.mkdir()
    (run_dir / "config.toml").write_text(config.to_toml(small("stepfit")))
    (out / "notes.txt").write_text("mine")
    assert replay.main([str(run_dir), "--model", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not empty" in err and "--overwrite" not in err and "--resume" not in err, err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


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


@pytest.mark.slow
def test_every_step_keeps_each_step_and_changes_no_number(tmp_path):
    """`--every-step` on a model that stops early: the same summary entry (stop step, steps,
    losses), parameters and history as in its run; steps.npz holds a finite loss, learning rate
    and gradient norm for each step it took, NaN after, and the history's train loss of each
    logged interval is the mean of its steps' losses."""
    from jaxfit import run

    stopping = ["train.steps=2000", "sweep.n_seeds=2", "train.stop_at=0.07", "execution.chunk_epochs=10", "train.eval_every=10"]
    source = tmp_path / "run"
    assert run.main(["--config", "stepfit", *[a for o in stopping for a in ("--set", o)], "--out", str(source), "--quiet"]) == 0
    original = models(source)
    index = next(i for i, e in enumerate(original) if e["reached"] and e["stop_step"] > 0)
    out = tmp_path / "alone"
    assert replay.main([str(source), "--model", str(index), "--out", str(out), "--every-step", "--quiet"]) == 0
    alone = models(out)
    assert alone[0] == original[index]
    expected, got = rows(source, index, original), rows(out, 0, alone)
    for name in expected:
        np.testing.assert_array_equal(expected[name], got[name], err_msg=name)
    steps, taken = np.load(out / "steps.npz"), alone[0]["steps"]
    assert steps["train_loss"].shape == (1, 2000) and np.array_equal(steps["step"], np.arange(2000))
    for name in ("train_loss", "lr", "grad_norm"):
        assert np.all(np.isfinite(steps[name][0, :taken])) and np.all(np.isnan(steps[name][0, taken:])), name
    assert np.all(steps["grad_norm"][0, :taken] > 0)
    history = runfiles.load_history(out / "history.npz")
    for column, end in enumerate(history["step"]):
        if end <= taken:
            mean = np.mean(steps["train_loss"][0, end - 10 : end], dtype=np.float64)
            np.testing.assert_allclose(history["train_loss"][0, column], mean, rtol=1e-5)


COMMITTED = Path(__file__).resolve().parent.parent / "results" / "stepfit" / "faithful"


@pytest.mark.slow
def test_a_committed_runs_model_replays_bit_for_bit(tmp_path):
    """The committed faithful stepfit run (20 models, 1,000,001 steps): the model that stops
    first, trained alone, equals its entry and rows there."""
    original = models(COMMITTED)
    index = min((i for i, e in enumerate(original) if e["stop_step"] is not None), key=lambda i: original[i]["stop_step"])
    out = tmp_path / "alone"
    assert replay.main([str(COMMITTED), "--model", str(index), "--out", str(out), "--quiet"]) == 0
    alone = models(out)
    assert len(alone) == 1 and alone[0] == original[index]
    expected, got = rows(COMMITTED, index, original), rows(out, 0, alone)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        np.testing.assert_array_equal(expected[name], got[name], err_msg=name)


def test_a_replay_counts_one_model_active_not_its_padding(monkeypatch):
    """A model alone runs beside a padding copy (plan.padded); progress counts the model only."""
    counts = []
    monkeypatch.setattr(sweep.Progress, "update", lambda self, done, previous, active, diverged: counts.append(active))
    sweep.run(small("stepfit", "sweep.models=[0]", "train.steps=50"), quiet=True)
    assert counts and max(counts) == 1
