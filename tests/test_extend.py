"""`python -m jaxfit.run --extend RUN_DIR --set sweep.n_seeds=N`: a finished run given more seeds
is the run that had N seeds from the start, bit for bit in every file's numbers (its own models
untouched), through an interruption and `--resume` too; bad requests are one line, exit 2, and
leave the run as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jaxfit import run
from jaxfit.runfiles import read_summary
from tests.test_long_runs import assert_same_files

# stepfit's two widths; models stop (val_loss <= 0.07) at different steps; chunks of 50 steps
BASE = ["--set", "train.steps=400", "--set", "train.stop_at=0.07", "--set", "execution.chunk_epochs=50", "--quiet"]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("three") / "run"
    assert run.main(["--config", "stepfit", *BASE, "--set", "sweep.n_seeds=3", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("five") / "run"
    assert run.main(["--config", "stepfit", *BASE, "--set", "sweep.n_seeds=5", "--out", str(out)]) == 0
    return out


def extended(three: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(three, folder)
    return folder


@pytest.mark.slow
def test_an_extended_run_is_the_run_with_more_seeds_from_the_start(three, five, tmp_path):
    folder = extended(three, tmp_path)
    assert run.main(["--extend", str(folder), "--set", "sweep.n_seeds=5", "--quiet"]) == 0
    assert_same_files(folder, five)  # summary entries, history and params: every bit
    assert (folder / "config.toml").read_text() == (five / "config.toml").read_text()
    summary, fresh = read_summary(folder), read_summary(five)
    assert summary["analysis"] == fresh["analysis"] and summary["run"]["n_models"] == 10
    assert summary["run"]["extended"][0]["seeds"] == [3, 5] and summary["run"]["extended"][0]["n_models"] == 4
    text = (folder / "summary.md").read_text()
    assert text.startswith("# stepfit: 10 models") and "extended: 3 → 5 seeds (4 new models" in text
    assert {"loss_curves.png", "performance_profile.png", "val_loss.png"} <= {p.name for p in folder.glob("*.png")}
    assert not (folder / ".jaxfit-staging").exists() and not (folder / "checkpoints").exists()  # neither part's state is the run's
    assert run.main(["--extend", str(folder), "--set", "sweep.n_seeds=6", "--quiet"]) == 0  # and again
    assert len(read_summary(folder)["models"]) == 12 and [e["seeds"] for e in read_summary(folder)["run"]["extended"]] == [[3, 5], [5, 6]]


@pytest.mark.slow
def test_an_extension_keeps_the_runs_other_files_and_says_why_it_cannot_resume(three, tmp_path, capsys):
    """A tracker's logs (a file the run's marker lists) are carried over as they were; the
    finished run has no checkpoints to resume, and says so in one line."""
    folder = extended(three, tmp_path)
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events.out").write_bytes(b"logged")
    marker = json.loads((folder / ".jaxfit-run.json").read_text())
    marker["files"].append("tensorboard")
    (folder / ".jaxfit-run.json").write_text(json.dumps(marker))
    assert run.main(["--extend", str(folder), "--set", "sweep.n_seeds=4", "--quiet"]) == 0
    assert (folder / "tensorboard" / "events.out").read_bytes() == b"logged"
    assert "tensorboard" in json.loads((folder / ".jaxfit-run.json").read_text())["files"]
    capsys.readouterr()
    assert run.main(["--resume", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the run has finished and keeps no checkpoints" in err, err


@pytest.mark.slow
def test_an_interrupted_extension_resumes_and_the_run_stays_whole_meanwhile(three, five, tmp_path, capsys):
    folder = extended(three, tmp_path)
    before = files(folder)
    assert run.main(["--extend", str(folder), "--set", "sweep.n_seeds=5", "--quiet", "--stop-after-chunks", "2"]) == 0
    assert files(folder) == before and (folder / ".jaxfit-staging" / "checkpoints").is_dir()  # the run as it was, the extension aside
    assert run.main(["--extend", str(folder), "--set", "sweep.n_seeds=6"]) == 2  # one extension at a time
    assert "in progress there; continue it with --resume" in capsys.readouterr().err
    assert run.main(["--resume", str(folder), "--quiet"]) == 0
    assert_same_files(folder, five)
    assert (folder / "config.toml").read_text() == (five / "config.toml").read_text()


@pytest.mark.bad_input
@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "give the new seed count, --set sweep.n_seeds=N (the run has 3)"),
        (["--set", "sweep.n_seeds=3"], "has 3 seeds; an extension adds seeds"),
        (["--set", "sweep.n_seeds=5", "--set", "optim.lr=0.2"], "--set optim.lr=0.2: an extension keeps the run's config"),
        (["--set", "sweep.n_seeds=0"], "sweep.n_seeds"),
        (["--set", "sweep.n_seeds=5", "--out", "ELSEWHERE"], "no --out"),
        (["--set", "sweep.n_seeds=5", "--log", "tensorboard"], "without live trackers"),
        (["--set", "sweep.n_seeds=100000000"], "--set sweep.n_seeds=100000000: "),  # refused before 10^8 models are listed
    ],
)
def test_a_bad_extension_is_one_line_and_leaves_the_run_as_it_was(three, tmp_path, capsys, args, words):
    folder = extended(three, tmp_path)
    before = files(folder)
    args = [str(tmp_path / "elsewhere") if a == "ELSEWHERE" else a for a in args]
    assert run.main(["--extend", str(folder), *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err, err
    assert files(folder) == before and not (folder / ".jaxfit-staging").exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.bad_input
@pytest.mark.slow
def test_an_extension_by_another_program_is_refused(three, tmp_path, capsys):
    """New seeds from another jaxfit version (or experiment file) would not be the run's models."""
    folder = extended(three, tmp_path)
    marker = json.loads((folder / ".jaxfit-run.json").read_text())
    marker["code"]["jaxfit"] = "0.0.1"
    (folder / ".jaxfit-run.json").write_text(json.dumps(marker))
    before = files(folder)
    assert run.main(["--extend", str(folder), "--set", "sweep.n_seeds=5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not the program the run started with (jaxfit 0.0.1 ->" in err and "--extend" in err, err
    assert files(folder) == before and not (folder / ".jaxfit-staging").exists()


@pytest.mark.bad_input
def test_extending_what_is_not_a_finished_run_is_one_line(tmp_path, capsys):
    assert run.main(["--extend", str(tmp_path), "--set", "sweep.n_seeds=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a jaxfit run folder" in err, err
