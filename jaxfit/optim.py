"""Optimisers and learning-rate schedules with PyTorch's semantics.

Every number of an optimiser or schedule (lr, betas, gamma, base_lr, max_lr, ...) is read from
`hp`, a dict of per-model scalars, so any of them can be a vmapped sweep axis. Names, modes,
step sizes and when a scheduler steps are static: they define a group.

PyTorch semantics matched here (tests/test_optim.py checks the formulas; the torch parity
tests check them against torch itself):
- StepLR: lr = base * gamma ** (count // step_size); Lightning steps it once per epoch, so
  count = step // steps_per_epoch with interval = "epoch".
- CyclicLR: torch's get_lr, with the position in the cycle computed in integers so that
  float32 stays within 1e-6 of torch's float64 over a million steps.
- SGD: p -= lr * buf, buf = momentum * buf + g (buf = g at the first step) = optax.trace.
- Adam: optax.scale_by_adam is torch's update (eps outside the sqrt, bias-corrected moments).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from jaxfit.config import SGD, Adam, Constant, Cyclic, Group, StepDecay


def hyperparameters(group: Group) -> dict[str, float | tuple[float, ...]]:
    """The numeric (sweepable) fields of a group's optimiser and schedule, as 'optim.lr' etc."""
    out = {}
    for table in ("optim", "schedule"):
        part = getattr(group, table)
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if isinstance(value, float) or (isinstance(value, tuple) and value and isinstance(value[0], float)):
                out[f"{table}.{f.name}"] = value
    return out


def per_model(numbers: dict[str, float]) -> dict[str, float]:
    """One model's numbers, plus what is best computed in float64 on the host: log(gamma), so
    gamma ** count stays within 1e-6 of torch's float64 after a million steps (gamma rounded
    to float32 and raised to the count would not)."""
    if "schedule.gamma" in numbers:
        numbers = {**numbers, "schedule.log_gamma": math.log(numbers["schedule.gamma"])}
    return numbers


def learning_rate(schedule: Constant | StepDecay | Cyclic, hp: dict, step: jax.Array, steps_per_epoch: int) -> jax.Array:
    """The learning rate used by the optimiser step number `step` (0-based)."""
    if isinstance(schedule, Constant):
        return hp["optim.lr"]
    count = step // steps_per_epoch if schedule.interval == "epoch" else step
    if isinstance(schedule, StepDecay):
        return hp["optim.lr"] * jnp.exp(hp["schedule.log_gamma"] * (count // schedule.step_size).astype(jnp.float32))
    up, down = schedule.step_size_up, schedule.step_size_down
    cycle = 1 + count // (up + down)
    position = count % (up + down)  # torch's x = position / (up + down)
    # torch: x / step_ratio going up, (x - 1) / (step_ratio - 1) going down; the same ratios
    # of integers, each a single float32 division here (no cancellation near the bottom).
    scale = jnp.where(position <= up, position / up, (up + down - position) / down).astype(jnp.float32)
    height = (hp["schedule.max_lr"] - hp["schedule.base_lr"]) * scale
    if schedule.mode == "triangular2":
        height = height * jnp.exp2(1.0 - cycle.astype(jnp.float32))
    elif schedule.mode == "exp_range":
        height = height * jnp.exp(hp["schedule.log_gamma"] * count.astype(jnp.float32))
    return hp["schedule.base_lr"] + height


def direction(optim: SGD | Adam, hp: dict) -> optax.GradientTransformation:
    """The update direction before scaling by -lr (which the schedule supplies per step)."""
    if isinstance(optim, Adam):
        return optax.scale_by_adam(b1=hp["optim.b1"], b2=hp["optim.b2"], eps=hp["optim.eps"])
    if optim.momentum == 0.0:
        return optax.identity()
    return optax.trace(decay=hp["optim.momentum"])
