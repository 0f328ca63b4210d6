"""Long-run machinery: chunks, checkpoint and resume, Ctrl-C, early exit, divergence,
atomic files, and the models axis sharded over several devices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxfit import report, run, sweep
from tests.conftest import STEPFIT, SUMSQ, run_small
from tests.test_train import assert_same_model, model_arrays


def run_files(out: Path) -> dict[str, np.ndarray]:
    """Every array a run wrote, and its models' summary entries."""
    arrays = {f"history.npz:{k}": v for k, v in report.load_history(out / "history.npz").items()}
    with np.load(out / "params.npz") as f:
        arrays.update({f"params.npz:{k}": f[k] for k in f.files})
    arrays["models"] = json.loads((out / "summary.json").read_text())["models"]
    return arrays


def assert_same_files(a: Path, b: Path) -> None:
    first, second = run_files(a), run_files(b)
    assert first.keys() == second.keys()
    for key in first:
        if key == "models":
            assert first[key] == second[key]
        else:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.mark.slow
def test_result_is_the_same_whatever_the_chunk_size(tmp_path):
    assert run.main([*SUMSQ, "--set", "execution.chunk_epochs=1", "--out", str(tmp_path / "a")]) == 0
    assert run.main([*SUMSQ, "--set", "execution.chunk_epochs=2", "--out", str(tmp_path / "b")]) == 0
    assert_same_files(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
@pytest.mark.fault
def test_stop_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, stepfit_run):
    args = [*STEPFIT, "--set", "execution.chunk_epochs=20", "--set", "execution.checkpoint_every=2"]
    assert run.main([*args, "--out", str(tmp_path / "parts"), "--stop-after-chunks", "5"]) == 0
    assert not (tmp_path / "parts" / "summary.json").exists()
    assert run.main(["--resume", str(tmp_path / "parts"), "--stop-after-chunks", "4", "--quiet"]) == 0
    assert run.main(["--resume", str(tmp_path / "parts"), "--quiet"]) == 0
    assert_same_files(stepfit_run, tmp_path / "parts")
    assert len(list((tmp_path / "parts" / "checkpoints").iterdir())) <= 2  # keep_checkpoints


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch, capsys, signum, code, stepfit_run):
    """Ctrl-C (SIGINT) or SIGTERM, sent to this process by the OS after the third chunk, and
    sent again while the run is stopping: one checkpoint, exit 128 + signal, an exact resume."""
    calls = {"n": 0}
    update = sweep.Progress.update

    def signalling(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signum)
            os.kill(os.getpid(), signum)  # a second one while the first is being handled
        return update(self, *args)

    args = [*STEPFIT, "--set", "execution.chunk_epochs=20"]
    handler = signal.getsignal(signum)
    monkeypatch.setattr(sweep.Progress, "update", signalling)
    assert run.main([*args, "--out", str(tmp_path / "cut")]) == code
    err = capsys.readouterr().err
    assert "--resume" in err and "already stopping" in err and "Traceback" not in err
    assert signal.getsignal(signum) is handler and calls["n"] == 3  # the handler in place before is back
    monkeypatch.setattr(sweep.Progress, "update", update)
    assert run.main(["--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    assert_same_files(stepfit_run, tmp_path / "cut")


@pytest.mark.slow
@pytest.mark.fault
def test_a_signal_during_compilation_writes_nothing(tmp_path, monkeypatch, capsys):
    prepare = sweep.prepare

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(sweep, "prepare", signalled)
    assert run.main([*STEPFIT, "--out", str(tmp_path / "cut")]) == 130
    assert not (tmp_path / "cut").exists() and "Traceback" not in capsys.readouterr().err
    monkeypatch.setattr(sweep, "prepare", prepare)
    assert run.main([*STEPFIT, "--out", str(tmp_path / "cut")]) == 0


@pytest.mark.slow
@pytest.mark.bad_input
def test_resume_and_overwrite_need_the_right_folders(tmp_path, capsys):
    assert run.main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.toml and checkpoints/" in capsys.readouterr().err
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert run.main([*STEPFIT, "--out", str(out)]) == 2
    assert run.main([*STEPFIT, "--set", "sweep.n_seeds=2", "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert len(json.loads((out / "summary.json").read_text())["models"]) == 4


@pytest.mark.slow
def test_the_run_ends_early_once_every_model_has_stopped(tmp_path):
    out = tmp_path / "early"
    assert run.main([*STEPFIT, "--set", "train.steps=100000", "--set", "train.stop_at=0.95", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert all(m["reached"] for m in summary["models"])
    assert summary["run"]["steps_run"] < 100_000 and summary["run"]["steps"] == 100_000


@pytest.mark.slow
def test_a_diverging_model_is_frozen_and_leaves_the_others_unchanged():
    swept = run_small("stepfit", "groups.narrow.optim.lr=[0.1, 10000.0]")
    plain = run_small("stepfit")
    narrow = swept.states[0]
    labels = swept.groups[0].labels
    for i, label in enumerate(labels):
        if label["optim.lr"] == 10000.0:
            assert narrow.diverged_step[i] >= 0 and not narrow.active[i]
            params = np.concatenate([np.ravel(np.asarray(v)[i]) for v in (narrow.params["fc1"]["kernel"], narrow.params["fc2"]["kernel"])])
            assert np.all(np.isfinite(params))  # frozen before the non-finite update
    assert sum(narrow.diverged_step >= 0) >= 1
    for seed in range(3):
        assert_same_model(model_arrays(swept, "narrow", {"seed": seed, "optim.lr": 0.1}), model_arrays(plain, "narrow", {"seed": seed}))
        assert_same_model(model_arrays(swept, "wide", {"seed": seed}), model_arrays(plain, "wide", {"seed": seed}))


@pytest.mark.fault
def test_atomic_write_never_leaves_half_a_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old, complete")

    def crash(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        report.atomic_write(target, crash)
    assert target.read_text() == "old, complete" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.slow
def test_four_devices_give_the_same_numbers_as_one(tmp_path):
    """The models axis sharded over 4 (forced CPU) devices, 3 seeds padded to 8 models."""
    base = [sys.executable, "-m", "jaxfit.run", *STEPFIT]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    subprocess.run([*base, "--out", str(tmp_path / "four")], env=env, check=True, capture_output=True)
    subprocess.run([*base, "--out", str(tmp_path / "one")], check=True, capture_output=True)
    assert json.loads((tmp_path / "four" / "summary.json").read_text())["run"]["n_devices"] == 4
    assert_same_files(tmp_path / "one", tmp_path / "four")
