"""Small configs for fast tests: the real configs with sizes cut down by `--set` overrides."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# One compilation cache for the whole suite and the processes it starts (jaxfit's own, as users
# get it, but in the temporary folder rather than the user's): many tests compile the same small
# configs, and a cached executable is the same program, so the numbers are unchanged.
os.environ.setdefault("JAXFIT_COMPILE_CACHE", os.path.join(tempfile.gettempdir(), "jaxfit-test-compile-cache"))

import pytest  # noqa: E402

from jaxfit import config, sweep  # noqa: E402

# 1,100 samples, 1,000 for training: 10 steps per epoch instead of 900.
SMALL_SUMSQ = ["task.n_samples=1100", "task.n_train=1000", "train.epochs=3", "sweep.n_seeds=2"]
SMALL_STEPFIT = ["train.steps=300", "sweep.n_seeds=3"]
# ... as command lines
STEPFIT = ["--config", "stepfit", *[a for o in SMALL_STEPFIT for a in ("--set", o)], "--quiet"]
SUMSQ = ["--config", "sumsq", *[a for o in SMALL_SUMSQ for a in ("--set", o)], "--quiet"]


def small(name: str, *overrides: str) -> config.Config:
    base = SMALL_SUMSQ if name.startswith("sumsq") else SMALL_STEPFIT
    return config.load(name, [*base, *overrides])


def run_small(name: str, *overrides: str) -> sweep.Result:
    return sweep.run(small(name, *overrides), quiet=True)


@pytest.fixture(scope="session")
def sumsq_result() -> sweep.Result:
    """The small sumsq run (2 seeds x {manual, he}), shared by several tests."""
    return run_small("sumsq")


@pytest.fixture(scope="session")
def stepfit_run(tmp_path_factory) -> Path:
    """The small stepfit run through the CLI, uninterrupted: the reference that interrupted,
    resumed and re-chunked runs of the same config must equal bit for bit (execution settings
    never change a number, so one reference serves them all)."""
    from jaxfit import run

    out = tmp_path_factory.mktemp("reference") / "stepfit"
    assert run.main([*STEPFIT, "--out", str(out)]) == 0
    return out
