"""jaxfit used as a careless or hostile user would: bad values, foreign and shared folders,
edited configs, damaged checkpoints, diverging models. Each test goes through the CLI
(`run.main`, or a real process where the OS must take part) and checks the promise: nothing
lost, nothing silently wrong, one line and exit code 2 instead of a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxfit import outputs, report, run, rundir, sweep
from tests.conftest import STEPFIT, SUMSQ
from tests.test_long_runs import assert_same_files


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


# ----------------------------------------------------------------------------- values


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "override, names",
    [
        ("seed=18446744073709551616", "'seed'"),  # beyond 64 bits
        ("seed=-1", "'seed'"),
        ("task.step_at=nan", "'task.step_at'"),
        ("task.step_at=inf", "'task.step_at'"),
        ("task.scale=1e300", "'task.scale'"),
        ("train.stop_at=inf", "'train.stop_at'"),
        ("train.stop_at=nan", "'train.stop_at'"),
        ("optim.lr=inf", ".optim.lr'"),
        ("optim.lr=[0.1, nan]", ".optim.lr'"),
        ("optim.lr=1e39", ".optim.lr'"),  # finite in float64, infinite in float32
        ("schedule.max_lr=0.3", "groups.narrow.schedule.max_lr"),  # the narrow group's schedule is constant
        ("groups.nrrow.optim.lr=0.2", "no group 'nrrow'"),
        ("groups.extra={}", "no group 'extra'"),
        ("model=1", "'model'"),
        ("optim=[1, 2]", "'optim'"),
        ("groups.wide.model=3", "'groups.wide.model'"),
        ("train.steps=4294967296", "'train.steps'"),
        ("name='a/b'", "'name'"),
        ("name='..'", "'name'"),
    ],
)
def test_values_without_meaning_are_refused_in_one_line(tmp_path, capsys, override, names):
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--set", override, "--out", str(out)]) == 2
    one_line_error(capsys, names)
    assert not out.exists()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "override, names",
    [
        ("task.low=-inf", "'task.low'"),
        ("task.high=1e7", "'task.high'"),
        ("task.n_inputs=3000000000", "'task.n_inputs'"),
    ],
)
def test_sumsq_values_without_meaning_are_refused(tmp_path, capsys, override, names):
    assert run.main([*SUMSQ, "--set", override, "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, names)


@pytest.mark.bad_input
def test_the_schedule_message_says_why_and_how(capsys):
    assert run.main(["--config", "stepfit", "--set", "schedule.max_lr=0.3", "--print-config"]) == 2
    one_line_error(capsys, "'constant'", "groups.NAME.schedule.max_lr")


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize(
    "override, what",
    [
        ("sweep.n_seeds=1000000000", "models"),  # 2e9 models: refused before they are listed
        ("train.batch_size=1000000000", "GiB"),  # a batch of 1e9: refused from the compiled step's size
    ],
)
def test_runs_that_cannot_fit_in_memory_are_refused_with_the_estimate(tmp_path, capsys, override, what):
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--set", override, "--out", str(out)]) == 2
    one_line_error(capsys, "needs about", what, "available")
    assert not out.exists()


@pytest.mark.bad_input
def test_config_files_of_any_suffix_and_folders(tmp_path, capsys):
    json_named = tmp_path / "mine.json"
    json_named.write_text(Path("configs/stepfit.toml").read_text())
    assert run.main(["--config", str(json_named), "--print-config"]) == 0
    capsys.readouterr()
    not_toml = tmp_path / "real.json"
    not_toml.write_text('{"name": "x"}')
    assert run.main(["--config", str(not_toml), "--print-config"]) == 2
    one_line_error(capsys, "not valid TOML")
    assert run.main(["--config", str(tmp_path), "--print-config"]) == 2
    one_line_error(capsys, "is a folder")
    odd = tmp_path / "my run (2).toml"
    odd.write_text(Path("configs/stepfit.toml").read_text().replace('name = "stepfit"\n', "", 1))
    assert run.main(["--config", str(odd), "--print-config"]) == 0
    assert 'name = "my_run__2_"' in capsys.readouterr().out  # a name usable as a folder name


# ----------------------------------------------------------------------------- folders


@pytest.mark.bad_input
def test_output_folders_that_cannot_be_made_are_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    assert run.main([*STEPFIT, "--out", str(a_file / "run")]) == 2
    one_line_error(capsys, "is a file")
    assert run.main([*STEPFIT, "--out", str(a_file)]) == 2
    one_line_error(capsys, "is a file")
    assert a_file.read_text() == "mine"


@pytest.mark.slow
@pytest.mark.fault
def test_overwrite_keeps_the_earlier_run_until_the_new_one_has_finished(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    before = files_of(out)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_run", full_disk)  # the new run fails as it writes its files
    assert run.main([*STEPFIT, "--set", "sweep.n_seeds=2", "--out", str(out), "--overwrite"]) == 2
    one_line_error(capsys, "No space left on device")
    assert {k: v for k, v in files_of(out).items() if not k.startswith(rundir.STAGING)} == before
    monkeypatch.undo()

    # the staged run finishes with --resume and replaces the earlier run's files, and only those
    assert run.main(["--resume", str(out), "--quiet"]) == 0
    assert run.main([*STEPFIT, "--set", "sweep.n_seeds=2", "--out", str(tmp_path / "fresh")]) == 0
    assert_same_files(out, tmp_path / "fresh")
    assert (out / "notes.txt").read_text() == "mine" and not (out / rundir.STAGING).exists()


@pytest.mark.slow
@pytest.mark.fault
def test_overwrite_interrupted_during_compilation_keeps_the_earlier_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--out", str(out)]) == 0
    before = files_of(out)
    prepare = sweep.prepare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as an uncaught Ctrl-C would, anywhere before training

    monkeypatch.setattr(sweep, "prepare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.main([*STEPFIT, "--set", "sweep.n_seeds=2", "--out", str(out), "--overwrite"])
    assert files_of(out) == before
    monkeypatch.setattr(sweep, "prepare", prepare)
    assert run.main([*STEPFIT, "--set", "sweep.n_seeds=2", "--out", str(out), "--overwrite"]) == 0


@pytest.mark.bad_input
def test_overwrite_never_touches_a_folder_that_is_not_a_jaxfit_run(tmp_path, capsys):
    foreign = tmp_path / "mine"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "checkpoints" / "thesis.tex").write_text("years of work")
    for name in ("summary.json", "config.toml", "history.npz"):
        (foreign / name).write_text("mine too")
    before = files_of(foreign)
    assert run.main([*STEPFIT, "--out", str(foreign), "--overwrite"]) == 2
    one_line_error(capsys, "not a jaxfit run folder")
    assert files_of(foreign) == before


HOLD = """
import sys
from pathlib import Path
from jaxfit import rundir
with rundir.owned(Path(sys.argv[1])):
    print("holding", flush=True)
    sys.stdin.read()
"""


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize("ending", ["exits", "is killed"])
def test_a_run_folder_has_one_writer_and_a_dead_one_leaves_no_lock(tmp_path, capsys, ending):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert run.main([*STEPFIT, "--out", str(out)]) == 2
        one_line_error(capsys, "another jaxfit process", f"pid {holder.pid}")
    finally:
        holder.kill() if ending == "is killed" else holder.stdin.close()
        holder.wait()
    assert run.main([*STEPFIT, "--out", str(out)]) == 0


# ----------------------------------------------------------------------------- resume


@pytest.mark.slow
@pytest.mark.bad_input
def test_resume_refuses_an_edited_config_but_takes_new_execution_settings(tmp_path, capsys, stepfit_run):
    args = [*STEPFIT, "--set", "execution.chunk_epochs=20"]
    cut = tmp_path / "cut"
    assert run.main([*args, "--out", str(cut), "--stop-after-chunks", "4"]) == 0
    original = (cut / "config.toml").read_text()
    (cut / "config.toml").write_text(original.replace("lr = 0.1", "lr = 0.2"))
    capsys.readouterr()
    assert run.main(["--resume", str(cut)]) == 2
    one_line_error(capsys, "optim.lr: 0.1 -> 0.2")
    (cut / "config.toml").write_text(original)
    assert run.main(["--resume", str(cut), "--set", "optim.lr=0.2"]) == 2
    one_line_error(capsys, "only execution.* may change")
    # execution settings change nothing: a new chunk size in the file and on the command line
    (cut / "config.toml").write_text(original.replace("chunk_epochs = 20", "chunk_epochs = 7"))
    assert run.main(["--resume", str(cut), "--stop-after-chunks", "3", "--quiet"]) == 0
    assert run.main(["--resume", str(cut), "--set", "execution.chunk_epochs=45", "--quiet"]) == 0
    assert_same_files(stepfit_run, cut)
    summary = json.loads((cut / "summary.json").read_text())
    assert all(m["steps"] <= 300 for m in summary["models"]) and summary["run"]["steps_run"] == 300


def _newest_checkpoint(out: Path) -> Path:
    return max((p for p in (out / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _flip_a_bit(step: Path) -> None:
    data = max((p for p in (step / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))


def _truncate(step: Path) -> None:
    data = max((p for p in (step / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _drop_manifest(step: Path) -> None:
    for manifest in (step / "state").rglob("manifest.ocdbt"):
        manifest.unlink()


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize("damage", [_flip_a_bit, _truncate, _drop_manifest])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, damage, stepfit_run):
    args = [*STEPFIT, "--set", "execution.chunk_epochs=20", "--set", "execution.checkpoint_every=1"]
    cut = tmp_path / "cut"
    assert run.main([*args, "--out", str(cut), "--stop-after-chunks", "5"]) == 0
    newest = _newest_checkpoint(cut)
    damage(newest)
    capsys.readouterr()
    assert run.main(["--resume", str(cut), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {newest.name} is damaged" in err and "Traceback" not in err
    assert_same_files(stepfit_run, cut)


@pytest.mark.slow
@pytest.mark.fault
def test_no_intact_checkpoint_is_one_line(tmp_path, capsys):
    cut = tmp_path / "cut"
    assert run.main([*STEPFIT, "--set", "execution.chunk_epochs=20", "--out", str(cut), "--stop-after-chunks", "2"]) == 0
    for step in (cut / "checkpoints").iterdir():
        _flip_a_bit(step)
    capsys.readouterr()
    assert run.main(["--resume", str(cut), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no intact checkpoint")
    for step in list((cut / "checkpoints").iterdir()):
        subprocess.run(["rm", "-r", str(step)], check=True)
    assert run.main(["--resume", str(cut), "--quiet"]) == 2
    one_line_error(capsys, "no intact checkpoint")


# ----------------------------------------------------------------------------- reports


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        [*STEPFIT, "--set", "groups.narrow.optim.lr=[0.1, 10000.0]"],  # some models diverge
        [*STEPFIT, "--set", "train.stop_at=10"],  # every model stops at step 0, never trained
        [*SUMSQ, "--set", "optim.lr=[1e-4, 1e30]"],  # sumsq models diverge
        [*SUMSQ, "--set", "sweep.n_seeds=1", "--set", "model.init=he", "--set", "optim.lr=1e30"],  # all of them
    ],
)
def test_reports_handle_diverged_and_never_trained_models(tmp_path, capsys, args):
    out = tmp_path / "run"
    assert run.main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert "## Every model" in printed and (out / "summary.md").read_text().strip() in printed
    assert any(m["diverged"] or m["steps"] == 0 for m in summary["models"])
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 3
    for png in out.glob("*.png"):
        png.unlink()
    assert report.main([str(out)]) == 0  # the engine's figures, from the files alone
    assert {"cells.png", "loss_curves.png"} <= {p.name for p in out.glob("*.png")} < set(pngs)
    assert outputs.redraw(out) == (out / "summary.md").read_text()  # and the experiment's own
    assert sorted(p.name for p in out.glob("*.png")) == pngs
    if any(m["diverged"] for m in summary["models"]):
        assert "diverged_step" in printed and np.isnan(report.load_history(out / "history.npz")["val_loss"]).any()


@pytest.mark.bad_input
def test_report_of_a_folder_that_is_not_a_finished_run_is_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "nothing")]) == 2
    one_line_error(capsys, "not a finished jaxfit run")
    for name in ("config.toml", "summary.json", "history.npz", "params.npz"):
        (tmp_path / name).write_text("garbage")
    assert report.main([str(tmp_path)]) == 2
    one_line_error(capsys, "damaged or not a jaxfit run")
