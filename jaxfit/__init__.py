"""jaxfit: train many tiny neural networks at once -- every seed, init scheme and swept
hyperparameter of an ablation in one jit-compiled JAX call.

The engine, imports flowing one way (tests/test_house.py): fields (config field helpers),
experiment (the interface an experiment implements, and the registry), optim (PyTorch-exact
optimisers and schedules), config (TOML -> dataclasses, validation), inits and kernels (init
schemes, speed devices), trainer (the pure per-model trainer), plan (models, blocks, memory),
checkpoints, sweep (jit and the host loop), analysis (the paired statistics), runfiles, plots and
report (a run's files, tables and figures, without jax), runs (a run as pandas tables:
jaxfit.open, jaxfit.train), extend (more seeds for a finished run), outputs (a run's files from its
trained models), trackers, distributed, run (the CLI). The experiments: jaxfit/experiments/
(built in), examples/ (from outside). docs/index.md has a glossary of a run's units.

What an experiment written outside the package needs is importable from here; the names that
need jax are imported on first use (PEP 562, as SPEC 1 lazy loading does), so that
`python -m jaxfit.report DIR` reads a run's files without importing jax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jaxfit._version import __version__
from jaxfit.fields import ConfigError, bounded, fail

if TYPE_CHECKING:
    from jaxfit.config import load
    from jaxfit.experiment import EvalSet, Task, mean_over, mse, register
    from jaxfit.run import TrainingFailed, train
    from jaxfit.runfiles import RunFileError
    from jaxfit.runs import Run, open

_LAZY = {
    "load": "jaxfit.config",
    **{name: "jaxfit.experiment" for name in ("EvalSet", "Task", "mean_over", "mse", "register")},
    **{name: "jaxfit.runs" for name in ("Run", "open")},
    "RunFileError": "jaxfit.runfiles",
    **{name: "jaxfit.run" for name in ("TrainingFailed", "train")},
}

__all__ = [
    "__version__",
    "ConfigError",
    "EvalSet",
    "Run",
    "RunFileError",
    "Task",
    "TrainingFailed",
    "bounded",
    "fail",
    "load",
    "mean_over",
    "mse",
    "open",
    "register",
    "train",
]


def __getattr__(name: str) -> Any:
    """`jaxfit.Task`, `from jaxfit import load`, ...: the module that holds it, imported now."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxfit' has no attribute {name!r}")
