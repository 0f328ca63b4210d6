"""jaxfit: train many tiny neural networks at once -- every seed, init scheme and swept
hyperparameter of an ablation in one jit-compiled JAX call.

Modules, one concern each: config (TOML -> dataclasses, validation), tasks (data), models
(Flax modules, init schemes), optim (PyTorch-exact optimisers and schedules), train (the pure
per-model trainer), sweep (models axis, jit, host loop), report and plots (files of a run),
run (the CLI).
"""

__version__ = "0.1.0"
