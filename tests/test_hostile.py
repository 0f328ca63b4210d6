"""jaxfit used as a hostile user would, third round: experiment files that say wrong things, code
changed under a resumed run, processes that never join, trackers that die, a crash at every point
of --overwrite's promotion, a disk that fills inside orbax, damaged run files. Each case goes
through the CLI (`run.main`, `report.main`) or real processes, and checks the promise: one line
and exit 2 instead of a traceback or a hang, nothing silently wrong, nothing already written lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxfit import outputs, report, run, rundir, trackers
from tests.conftest import STEPFIT
from tests.test_hardening import files_of, one_line_error
from tests.test_long_runs import assert_same_files

ROOT = Path(__file__).resolve().parent.parent
SPIRALS_CODE = (ROOT / "examples" / "spirals.py").read_text()
SPIRALS_CONFIG = (ROOT / "examples" / "spirals.toml").read_text()
SMALL = ["--set", "sweep.n_seeds=2", "--set", "train.steps=100", "--set", "optim.lr=0.01", "--quiet"]


def experiment(folder: Path, name: str, *edits: tuple[str, str], config_edits: tuple[tuple[str, str], ...] = ()) -> Path:
    """examples/spirals as an experiment file of its own in `folder`, registered as task `name`
    (each test's own name: one process registers them all), with text edits applied; its config."""
    code = SPIRALS_CODE.replace('Literal["spirals"] = "spirals"', f'Literal["{name}"] = "{name}"')
    for old, new in edits:
        assert old in code, old
        code = code.replace(old, new)
    config = SPIRALS_CONFIG.replace('name = "spirals"', f'name = "{name}"').replace('"spirals.py"', f'"{name}.py"')
    for old, new in config_edits:
        assert old in config, old
        config = config.replace(old, new)
    (folder / f"{name}.py").write_text(code)
    (folder / f"{name}.toml").write_text(config)
    return folder / f"{name}.toml"


# ----------------------------------------------------------------------------- an experiment's class settings

CLASS_MISTAKES = [
    ("goal_word", [('monitor, goal = "val_accuracy", "max"', 'monitor, goal = "val_accuracy", "maximum"')], "goal = 'maximum'"),
    ("goal_none", [('monitor, goal = "val_accuracy", "max"', 'monitor, goal = "val_accuracy", None')], "goal = None"),
    ("monitor_empty", [('monitor, goal = "val_accuracy", "max"', 'monitor, goal = "", "max"')], "monitor = ''"),
    ("monitor_number", [('monitor, goal = "val_accuracy", "max"', 'monitor, goal = 3, "max"')], "monitor = 3"),
    ("no_models", [("models = (TanhNet,)", "models = ()")], "models = ()"),
    ("model_not_table", [("models = (TanhNet,)", "models = (Net,)")], "model table 'Net'"),
    ("model_no_init", [('    init: tuple[Literal["torch_default", "he"], ...] = ("torch_default",)\n', "")], "model table 'TanhNet'"),
    ("init_untyped", [('init: tuple[Literal["torch_default", "he"], ...]', "init: tuple[str, ...]")], "TanhNet.init must be typed"),
    ("init_no_code", [('Literal["torch_default", "he"]', 'Literal["torch_default", "xavier"]')], "allows init 'xavier', but no code"),
    ("two_tables_one_name", [("models = (TanhNet,)", "models = (TanhNet, TanhNet)")], "two model tables are named 'tanh_net'"),
    ("no_sampler", [("    def sampler(", "    def sampler_(")], "defines no sampler(model, batch_size)"),
    ("no_module", [("    def module(", "    def module_(")], "defines no module()"),
]


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize("name, edits, says", CLASS_MISTAKES, ids=[c[0] for c in CLASS_MISTAKES])
def test_an_experiments_class_settings_are_checked_when_it_is_loaded(tmp_path, capsys, name, edits, says):
    out = tmp_path / "run"
    assert run.main(["--config", str(experiment(tmp_path, name, *edits)), *SMALL, "--out", str(out)]) == 2
    one_line_error(capsys, "experiment Spirals", f"task.name = '{name}'", says)
    assert not out.exists()


@pytest.mark.bad_input
def test_an_init_scheme_whose_own_code_fails_is_named_before_anything_trains(tmp_path, capsys):
    """An experiment's own init_params that has no code for a scheme its table allows."""
    own_init = (
        "    def module(self, model):",
        "    def init_params(self, model, shapes, scheme, key):\n"
        "        return {'orthogonal': lambda: shapes}[scheme]()\n\n    def module(self, model):",
    )
    path = experiment(
        tmp_path,
        "own_init",
        own_init,
        ('Literal["torch_default", "he"]', 'Literal["orthogonal", "he"]'),
        config_edits=(('init = ["torch_default", "he"]', 'init = ["orthogonal"]'),),
    )
    out = tmp_path / "run"
    assert run.main(["--config", str(path), *SMALL, "--out", str(out)]) == 2
    one_line_error(capsys, "experiment Spirals: init_params(model table 'tanh_net', ..., 'he', key) raised KeyError: 'he' (own_init.py:")
    assert not out.exists()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "spec, says",
    [
        ("exp.txt", "'exp.txt' is not a .py file or a module name"),
        ("sub/exp", "is not a .py file or a module name"),
        ("nothing.py", "imported, but it registers no experiment"),
        ("no_such_module_anywhere", "No module named 'no_such_module_anywhere'"),
    ],
)
def test_an_experiment_key_that_names_no_experiment_says_why(tmp_path, capsys, spec, says):
    (tmp_path / "exp.txt").write_text(SPIRALS_CODE)
    (tmp_path / "nothing.py").write_text("import jaxfit  # registers nothing\n")
    config = tmp_path / "run.toml"
    config.write_text(SPIRALS_CONFIG.replace('experiment = "spirals.py"', f'experiment = "{spec}"'))
    assert run.main(["--config", str(config), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "'experiment'", says)
    assert not (tmp_path / "run").exists()


def test_a_config_with_a_byte_order_mark_loads(tmp_path, capsys):
    path = experiment(tmp_path, "with_bom")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert run.main(["--config", str(path), "--print-config"]) == 0
    assert 'name = "with_bom"' in capsys.readouterr().out


COMMAND_LINES = [
    (["--join-timeout", "5"], "--join-timeout goes with --distributed"),
    (["--join-timeout", "inf", "--distributed", "localhost:1234,2,0"], "--join-timeout inf"),
    (["--allow-code-change"], "--allow-code-change goes with --resume"),
    (["--stop-after-chunks", "0"], "--stop-after-chunks 0"),
    (["--set", "experiment=3"], "'experiment' = 3"),
    (["--set", "experiment=''"], "'experiment' = ''"),
    (["--set", "task.name=spirals_not_registered"], "'task.name' = 'spirals_not_registered'"),
    (["--set", "train.stop_at=[0.1, 0.2]"], "'train.stop_at'"),
    (["--set", "logging.to=['wandb', 'mlflow']"], "'logging.to'"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("extra, says", COMMAND_LINES, ids=[" ".join(c[0]) for c in COMMAND_LINES])
def test_command_lines_without_meaning_are_one_line(tmp_path, capsys, extra, says):
    out = tmp_path / "run"
    assert run.main([*STEPFIT, *extra, "--out", str(out)]) == 2
    one_line_error(capsys, says)
    assert not out.exists()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "content, says",
    [(b"", "'task.name'"), (b'name = "x"\n\xff\xfe', "cannot be read"), (b"[train]\nsteps = 10\n[train]\n", "not valid TOML")],
)
def test_config_files_that_are_empty_or_not_text_are_one_line(tmp_path, capsys, content, says):
    path = tmp_path / "mine.toml"
    path.write_bytes(content)
    assert run.main(["--config", str(path), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, says)


@pytest.mark.bad_input
def test_resume_of_a_file_or_with_out_is_one_line(tmp_path, capsys, stepfit_run):
    (tmp_path / "file").write_text("mine")
    for argv, says in (
        (["--resume", str(tmp_path / "file")], "no config.toml and checkpoints/"),
        (["--resume", str(stepfit_run), "--out", str(tmp_path / "x")], "no --out or --overwrite"),
        (["--resume", str(stepfit_run), "--overwrite"], "no --out or --overwrite"),
    ):
        assert run.main(argv) == 2
        one_line_error(capsys, says)
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- resuming another program


@pytest.mark.slow
@pytest.mark.fault
def test_resume_refuses_changed_experiment_code_unless_insisted(tmp_path, capsys):
    path = experiment(tmp_path, "edited")
    out = tmp_path / "run"
    assert (
        run.main(["--config", str(path), *SMALL, "--set", "execution.chunk_epochs=25", "--out", str(out), "--stop-after-chunks", "2"]) == 0
    )
    code = tmp_path / "edited.py"
    code.write_text(code.read_text().replace("spirals(self.n_train, self.noise, 0)", "spirals(self.n_train, self.noise, 7)"))
    capsys.readouterr()
    assert run.main(["--resume", str(out), "--quiet"]) == 2
    one_line_error(capsys, "not the program the run started with", "edited.py changed", "--allow-code-change")
    assert not (out / "summary.json").exists()
    assert run.main(["--resume", str(out), "--quiet", "--allow-code-change"]) == 0
    assert (out / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.fault
def test_resume_refuses_another_jaxfit_version(tmp_path, capsys, monkeypatch):
    from jaxfit import _version

    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--set", "execution.chunk_epochs=50", "--out", str(out), "--stop-after-chunks", "1"]) == 0
    monkeypatch.setattr(_version, "__version__", "99.0")
    capsys.readouterr()
    assert run.main(["--resume", str(out)]) == 2
    one_line_error(capsys, "jaxfit 0.1.0 -> 99.0")
    assert run.main(["--allow-code-change", *STEPFIT, "--out", str(tmp_path / "new")]) == 2
    one_line_error(capsys, "--allow-code-change goes with --resume")


# ----------------------------------------------------------------------------- processes that never join


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(port: int, n: int, index: int, timeout: float, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jaxfit.run",
            *STEPFIT,
            "--out",
            str(tmp_path / "run"),
            "--distributed",
            f"localhost:{port},{n},{index}",
            "--join-timeout",
            str(timeout),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XLA_FLAGS": ""},
    )


def ended(proc: subprocess.Popen) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.strip().splitlines()


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize("who", ["a peer that never starts", "an unreachable coordinator"])
def test_a_process_alone_says_whom_it_waits_for_and_ends_in_one_line(tmp_path, who):
    index = 0 if who == "a peer that never starts" else 1
    code, lines = ended(launch(free_port(), 2, index, 4, tmp_path))
    assert code == 2 and lines[-1].startswith("error: --distributed:") and "Traceback" not in "\n".join(lines), lines
    assert any("waiting" in line for line in lines[:-1]), lines  # it said what it waited for while it waited
    assert ("did not join" if index == 0 else "could not reach process 0") in lines[-1] and "--join-timeout" in lines[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.fault
def test_two_processes_claiming_one_index_end_in_one_line(tmp_path):
    port = free_port()
    procs = [launch(port, 3, i, 60, tmp_path) for i in (1, 1, 0)]
    results = [ended(p) for p in procs]
    assert all(code == 2 for code, _ in results), results
    for _, lines in results:
        assert "two processes claim index 1" in lines[-1] and "Traceback" not in "\n".join(lines), lines


@pytest.mark.bad_input
@pytest.mark.parametrize("value", ["0", "-5", "nan", "soon"])
def test_a_join_timeout_without_meaning_is_refused(capsys, value):
    assert run.main([*STEPFIT, "--distributed", "localhost:1234,2,0", "--join-timeout", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--join-timeout" in err, err


# ----------------------------------------------------------------------------- signals


@pytest.mark.slow
@pytest.mark.fault
def test_sighup_is_a_stop_request_like_sigterm(tmp_path, stepfit_run):
    """A closed terminal: the run stops after a chunk with a checkpoint (a real process), and
    resumes exactly."""
    out = tmp_path / "cut"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from jaxfit import run, sweep
        update = sweep.Progress.update
        def hung_up(self, done, *args):
            if done >= 100:
                os.kill(os.getpid(), signal.SIGHUP)
            return update(self, done, *args)
        sweep.Progress.update = hung_up
        sys.exit(run.main({[*STEPFIT, "--set", "execution.chunk_epochs=20", "--out", str(out)]!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 128 + signal.SIGHUP, done.stderr[-2000:]
    assert "SIGHUP: stopping" in done.stderr and "--resume" in done.stderr and not (out / "summary.json").exists()
    assert run.main(["--resume", str(out), "--quiet"]) == 0
    assert_same_files(stepfit_run, out)


@pytest.mark.slow
@pytest.mark.fault
def test_a_signal_while_the_files_are_written_says_so_and_the_run_is_complete(tmp_path, capsys, monkeypatch, stepfit_run):
    write_run = outputs.write_run

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return write_run(*args, **kwargs)

    monkeypatch.setattr(outputs, "write_run", interrupted)
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "training has finished; writing the run's files" in err and "it is complete" in err and "stopping at the end" not in err
    assert rundir.read_marker(out)["finished"]
    assert_same_files(stepfit_run, out)


# ----------------------------------------------------------------------------- trackers never cost a result


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


@pytest.mark.slow
@pytest.mark.fault
def test_a_tracker_that_fails_mid_run_is_dropped_and_resume_picks_it_up(tmp_path, capsys, monkeypatch, stepfit_run, offline):
    pytest.importorskip("tensorboardX")
    from tests.test_trackers import check_tensorboard

    flush, calls = trackers.EventFile.flush, []

    def full_disk(self):
        calls.append(1)
        if len(calls) > 20:  # a few flushes succeed, then the folder is full
            raise OSError(28, "No space left on device")
        return flush(self)

    monkeypatch.setattr(trackers, "FLUSH_SECONDS", 0.0)
    monkeypatch.setattr(trackers.EventFile, "flush", full_disk)
    out = tmp_path / "run"
    args = [*STEPFIT, "--set", "execution.chunk_epochs=20", "--log", "tensorboard", "--log", "wandb", "--out", str(out)]
    assert run.main(args) == 0
    err = capsys.readouterr().err
    assert err.count("--log tensorboard: failed to flush (OSError") == 1 and "dropped, training goes on" in err
    assert_same_files(stepfit_run, out)  # the result is whole and unchanged
    record = json.loads((out / "trackers.json").read_text())["written_through"]
    assert 0 < record["tensorboard"] < 300 and record["wandb"] == 300
    monkeypatch.setattr(trackers.EventFile, "flush", flush)
    assert run.main(["--resume", str(out), "--quiet"]) == 0  # the config's [logging] reopens it where its record ends
    assert json.loads((out / "trackers.json").read_text())["written_through"] == {"tensorboard": 300, "wandb": 300}
    check_tensorboard(out)
    assert_same_files(stepfit_run, out)


@pytest.mark.slow
@pytest.mark.fault
def test_a_tracker_failing_at_the_end_leaves_a_finished_run(tmp_path, capsys, monkeypatch, offline):
    def unreachable(*args):
        raise ConnectionError("W&B is unreachable")

    monkeypatch.setattr(trackers.Wandb, "finish", unreachable)
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--log", "wandb", "--out", str(out)]) == 0
    assert "--log wandb: failed to write the summary (ConnectionError" in capsys.readouterr().err
    assert rundir.read_marker(out)["finished"] and (out / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_wandb_process_costs_nothing(tmp_path):
    """W&B's service process killed (SIGKILL) during a real run: one line, training goes on, the run
    is whole; `--resume` of the finished run sends the points W&B missed."""
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from jaxfit import run, trackers
        on_chunk, calls = trackers.Trackers.on_chunk, []
        def parent(pid):
            return int(Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()[1])
        def ours(pid):
            while pid > 1:
                pid = parent(pid)
                if pid == os.getpid():
                    return True
            return False
        def kill_wandb_after_two(self, *args):
            on_chunk(self, *args)
            calls.append(1)
            if len(calls) == 2:
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        if b"wandb-core" in Path(f"/proc/{{pid}}/cmdline").read_bytes() and ours(int(pid)):
                            os.kill(int(pid), signal.SIGKILL)
                            print("killed", pid, file=sys.stderr)
                    except (OSError, IndexError, ValueError):
                        continue
        trackers.Trackers.on_chunk = kill_wandb_after_two
        sys.exit(run.main({[*STEPFIT, "--set", "execution.chunk_epochs=20", "--log", "wandb", "--out", str(out)]!r}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # no service of this process's to attach to
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "killed" in done.stderr and "--log wandb: failed" in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert rundir.read_marker(out)["finished"] and json.loads((out / "trackers.json").read_text())["written_through"]["wandb"] < 300
    again = subprocess.run(
        [sys.executable, "-m", "jaxfit.run", "--resume", str(out), "--quiet"], capture_output=True, text=True, timeout=300, env=env
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "trackers.json").read_text())["written_through"]["wandb"] == 300


@pytest.mark.bad_input
def test_wandb_online_without_credentials_is_refused_before_the_folder_is_made(tmp_path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env |= {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "config"), "WANDB_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "jaxfit.run", *STEPFIT, "--log", "wandb", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert "no credentials" in done.stderr and "WANDB_MODE=offline" in done.stderr
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- a crash at every point of --overwrite's promotion


class Killed(BaseException):
    """SIGKILL at a point of the promotion: nothing after it happens."""


def crashing_at(monkeypatch, point: int) -> list[int]:
    """From now on, the file operation number `point` (0: the first) and everything after it do
    not happen: a rename, a file's or a folder's removal (shutil.rmtree's too) raises Killed."""
    done = [0]

    def guarded(original):
        def operation(*args, **kwargs):
            if done[0] >= point:
                raise Killed
            done[0] += 1
            return original(*args, **kwargs)

        return operation

    for name in ("replace", "rename", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, guarded(getattr(os, name)))
    return done


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Path, Path]:
    """A run folder holding an earlier run (3 seeds, a note of the user's) and a finished
    --overwrite run (2 seeds) staged beside it, killed just before its promotion; and the
    folder that promotion gives when nothing interrupts it."""
    base = tmp_path_factory.mktemp("promotion")
    out = base / "staged"
    assert run.main([*STEPFIT, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    promote = rundir.promote

    def killed(*args):
        raise Killed

    rundir.promote = killed
    try:
        with pytest.raises(Killed):
            run.main([*STEPFIT, "--set", "sweep.n_seeds=2", "--set", "train.stop_at=0.06", "--out", str(out), "--overwrite"])
    finally:
        rundir.promote = promote
    assert rundir.read_marker(out / rundir.STAGING)["finished"]
    whole = base / "whole"
    shutil.copytree(out, whole)
    rundir.promote(whole, whole / rundir.STAGING)
    return out, whole


def tree(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in files_of(folder).items() if not k.endswith(rundir.LOCK)}


def crashed_at(staged: tuple[Path, Path], point: int, into: Path, monkeypatch) -> bool:
    """A copy of the staged folder whose promotion was killed at `point`; False if the promotion
    has fewer points (it completed)."""
    shutil.copytree(staged[0], into)
    with monkeypatch.context() as patch:
        crashing_at(patch, point)
        try:
            rundir.promote(into, into / rundir.STAGING)
        except Killed:
            return True
    return False


@pytest.mark.slow
@pytest.mark.fault
def test_every_crash_point_of_the_promotion_is_completed_by_the_next_command(tmp_path, monkeypatch, staged):
    point = 0
    while crashed_at(staged, point, tmp_path / str(point), monkeypatch):
        folder = tmp_path / str(point)
        assert (folder / rundir.STAGING).is_dir() or rundir.read_marker(folder) is not None
        rundir.settle(folder)  # what every command does first
        assert tree(folder) == tree(staged[1]), f"killed before file operation {point}"
        point += 1
    assert point >= 10  # journal, marker, each file, the old files, the marker: every point was tried


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize("point", [1, 5, -1])  # after the journal; amid the files; before the last step
@pytest.mark.parametrize("command", ["overwrite", "resume", "report"])
def test_the_next_command_after_a_crashed_promotion_completes_it(tmp_path, monkeypatch, capsys, staged, point, command):
    n_points = 0
    while crashed_at(staged, n_points, tmp_path / f"count{n_points}", monkeypatch):
        n_points += 1
    folder = tmp_path / "run"
    assert crashed_at(staged, point % n_points, folder, monkeypatch)
    if command == "overwrite":
        assert run.main([*STEPFIT, "--set", "sweep.n_seeds=2", "--set", "train.stop_at=0.06", "--out", str(folder), "--overwrite"]) == 0
    elif command == "resume":
        assert run.main(["--resume", str(folder), "--quiet"]) == 0
    else:
        assert report.main([str(folder)]) == 0
    assert "damaged" not in capsys.readouterr().err
    assert_same_files(staged[1], folder)
    assert (folder / "notes.txt").read_text() == "mine" and not (folder / rundir.STAGING).exists()


# ----------------------------------------------------------------------------- a full disk, long names


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
from jaxfit import run
sys.exit(run.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.fault
def test_a_disk_that_fills_inside_orbax_is_one_line_and_loses_nothing(tmp_path, stepfit_run):
    out = tmp_path / "run"
    assert run.main([*STEPFIT, "--set", "execution.chunk_epochs=50", "--out", str(out), "--stop-after-chunks", "2"]) == 0
    before = files_of(out / "checkpoints")
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "--resume", str(out), "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: writing in"), done.stderr[-3000:]
    assert "checkpoint" in lines[0] and f"--resume {out}" in lines[0]
    assert {k: v for k, v in files_of(out / "checkpoints").items() if "orbax-checkpoint-tmp" not in k} == before
    assert run.main(["--resume", str(out), "--quiet"]) == 0
    assert_same_files(stepfit_run, out)


def test_after_a_failed_write_only_orbaxs_thread_failures_are_dropped(monkeypatch):
    """A notebook's own thread that fails after a failed checkpoint write is still reported
    (through the hook that was there before); an orbax thread's late failure is not."""
    import threading

    from jaxfit import checkpoints

    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(str(args.exc_value)))
    checkpoints._quiet_after_failed_write()
    orbax: dict = {}  # a function whose frames come from an orbax file, as orbax's threads' do
    exec(compile("def fail(message):\n    raise ValueError(message)", "/site-packages/orbax/checkpoint/fake.py", "exec"), orbax)

    def mine(message: str) -> None:
        raise ValueError(message)

    for target, message in ((mine, "mine"), (orbax["fail"], "orbax's")):
        thread = threading.Thread(target=target, args=(message,))
        thread.start()
        thread.join()
    assert seen == ["mine"]


@pytest.mark.bad_input
@pytest.mark.parametrize("where", ["name", "nested"])
def test_an_out_name_too_long_for_the_filesystem_is_one_line(tmp_path, capsys, where):
    long = "y" * 300
    out = tmp_path / long if where == "name" else tmp_path / long / "run"
    assert run.main([*STEPFIT, "--out", str(out)]) == 2
    one_line_error(capsys, "--out")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- report on files that are not a run's


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _models_file_cut_short(out: Path) -> None:
    """The run's model entries kept as a large run keeps them (models.json.gz), that file cut short."""
    report.write_summary(out, report.read_summary(out) | {"models": report.read_summary(out)["models"] * 300})
    _truncate(out / report.MODELS_FILE)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "damage, names",
    [
        (lambda out: _truncate(out / "history.npz"), "history.npz"),
        (lambda out: _truncate(out / "params.npz"), "params.npz"),
        (_models_file_cut_short, "models.json.gz"),
        (lambda out: (out / "summary.json").write_text('{"run": {}, "models": "models.json.gz"}'), "models.json.gz"),
        (lambda out: (out / "summary.json").write_text("[1, 2]"), "summary.json"),
        (lambda out: (out / "summary.json").write_text('{"models": []}'), "summary.json"),
        (lambda out: (out / "summary.json").write_text("{not json"), "summary.json"),
        (lambda out: (out / "config.toml").write_text("name = 3"), "config.toml"),
        (lambda out: (out / "history.npz").write_bytes(b"PK\x03\x04 not really"), "history.npz"),
    ],
)
def test_report_on_damaged_run_files_is_one_line_and_writes_nothing(tmp_path, capsys, stepfit_run, damage, names):
    out = tmp_path / "run"
    shutil.copytree(stepfit_run, out)
    damage(out)
    before = files_of(out)
    assert report.main([str(out)]) == 2
    one_line_error(capsys, names)
    assert files_of(out) == before
    assert report.main([str(stepfit_run), str(out), "--out", str(tmp_path / "cmp")]) == 2
    one_line_error(capsys, names)


def test_a_run_named_twice_is_compared_once(tmp_path, capsys, stepfit_run):
    assert report.main([str(stepfit_run), str(stepfit_run) + "/", "--out", str(tmp_path / "cmp")]) == 0
    captured = capsys.readouterr()
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "named more than once" in captured.err
    assert table.count("| narrow |") == 1 and "# 1 run compared" in table
