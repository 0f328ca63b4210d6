"""Small configs for fast tests: the real configs with sizes cut down by `--set` overrides."""
from __future__ import annotations

import pytest

from jaxfit import config, sweep

# 1,100 samples, 1,000 for training: 10 steps per epoch instead of 900.
SMALL_SUMSQ = ["task.n_samples=1100", "task.n_train=1000", "train.epochs=3", "sweep.n_seeds=2"]
SMALL_STEPFIT = ["train.steps=300", "sweep.n_seeds=3"]


def small(name: str, *overrides: str) -> config.Config:
    base = SMALL_SUMSQ if name.startswith("sumsq") else SMALL_STEPFIT
    return config.load(name, [*base, *overrides])


def run_small(name: str, *overrides: str) -> sweep.Result:
    return sweep.run(small(name, *overrides), quiet=True)


@pytest.fixture(scope="session")
def sumsq_result() -> sweep.Result:
    """The small sumsq run (2 seeds x {manual, he}), shared by several tests."""
    return run_small("sumsq")
