"""Several processes, for real: two `python -m jaxfit.run --distributed` processes on this one
machine (CPU, a localhost coordinator, one CPU device each) train one run together -- stopped
and resumed on the way -- and its files equal the single-process run's bit for bit; only
process 0 writes them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import STEPFIT
from tests.test_long_runs import assert_same_files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def together(*args: str, env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """The same command in 2 processes (ids 1 and 0), waiting for both; `env`: added variables."""
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "", "JAX_NUM_CPU_DEVICES": "1", **(env or {})}  # one CPU device per process
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jaxfit.run", *args, "--distributed", f"localhost:{port},2,{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in (1, 0)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done[::-1]  # process 0 first


@pytest.mark.slow
@pytest.mark.fault
def test_two_processes_train_one_run_that_equals_the_single_process_run(tmp_path, stepfit_run):
    out = tmp_path / "two"
    chunks = ["--set", "execution.chunk_epochs=50", "--set", "execution.checkpoint_every=2"]
    first = together(*STEPFIT, *chunks, "--out", str(out), "--stop-after-chunks", "3")
    assert [p.returncode for p in first] == [0, 0], [p.stderr[-2000:] for p in first]
    assert not (out / "summary.json").exists() and (out / "checkpoints").is_dir()
    second = together("--resume", str(out), "--quiet")
    assert [p.returncode for p in second] == [0, 0], [p.stderr[-2000:] for p in second]
    assert_same_files(stepfit_run, out)
    assert "wrote" in second[0].stdout and "wrote" not in second[1].stdout  # process 1 trained its share and wrote nothing
    assert "# stepfit" not in second[1].stdout


@pytest.mark.bad_input
def test_a_bad_distributed_spec_is_one_line(capsys):
    from jaxfit import run

    for spec in ("localhost:1234,2,2", "localhost,2,0", "2"):
        assert run.main([*STEPFIT, "--distributed", spec]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "HOST:PORT,N,I" in err, err
