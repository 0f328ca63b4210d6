"""jaxfit: train many tiny neural networks at once -- every seed, init scheme and swept
hyperparameter of an ablation in one jit-compiled JAX call.

The engine (one concern per module): config (TOML -> dataclasses, validation), experiment (the
interface an experiment implements, and the registry), train (the pure per-model trainer),
optim (PyTorch-exact optimisers and schedules), inits (PyTorch's init schemes), kernels (speed
devices), sweep (models axis, jit, chunks, checkpoints), report and plots (a run's files), run
(the CLI). The experiments: jaxfit/experiments/ (built in), examples/ (from outside).

What an experiment written outside the package needs is importable from here.
"""

from jaxfit._version import __version__
from jaxfit.config import ConfigError, bounded, fail, load  # noqa: E402
from jaxfit.experiment import EvalSet, Task, make_eval_set, mean_over, mse, register  # noqa: E402

__all__ = ["__version__", "ConfigError", "EvalSet", "Task", "bounded", "fail", "load", "make_eval_set", "mean_over", "mse", "register"]
