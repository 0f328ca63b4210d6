"""Optimisers and learning-rate schedules: the `[optim]` and `[schedule]` tables, and the optax
chains they build, with PyTorch's semantics.

A group's optimiser is `chain(group, hp, lr)`: `optax.chain(direction,
optax.scale_by_learning_rate(lr))` with lr the schedule's value at the step, applied by the
trainer with `optax.apply_updates`.
An optimiser table's `direction(hp)` is its update before the learning rate (an optax
GradientTransformation); a schedule table's `lr_schedule(hp, steps_per_epoch)` is an optax
Schedule (count -> lr). Every number is read from `hp`, a dict of per-model scalars, so any
of them can be a vmapped sweep axis; names, flags and step sizes are static (they define a group).
`step_lr` and `cyclic_lr` are the schedules as plain optax Schedules, for any optax code.

PyTorch semantics matched here (tests/test_optim.py checks the formulas; the torch parity
tests check every optimiser and schedule against torch itself):
- StepLR: lr = base * gamma ** (count // step_size); Lightning steps it once per epoch, so
  count = step // steps_per_epoch with interval = "epoch". gamma ** n is exp(n log gamma) with
  log gamma from the host in float64 (float32 gamma raised to n drifts past 1e-6 of torch).
- CyclicLR: torch's get_lr, with the position in the cycle computed in integers so that
  float32 stays within 1e-6 of torch's float64 over a million steps.
- SGD: buf = momentum * buf + g (buf = g at the first step), p -= lr * buf; nesterov: p -= lr *
  (g + momentum * buf) -- optax.trace, exactly (torch's dampening is not offered: its default 0).
- weight_decay of SGD, Adam, RMSprop is torch's L2 term g + wd * p, added before anything else
  (optax.add_decayed_weights first in the chain).
- Adam: optax.scale_by_adam is torch's update (eps outside the sqrt, bias-corrected moments).
- AdamW: torch decays first, p *= 1 - lr * wd, then takes the Adam step; here the chain adds
  wd * p to the Adam direction and scales both by -lr: the same update, rounded differently.
- RMSprop: v = alpha v + (1 - alpha) g^2, p -= lr g / (sqrt(v) + eps) (eps outside the sqrt:
  optax's eps_in_sqrt=False; v starts at 0), then momentum as torch's buffer; not centered.

Any other optax optimiser: a table with a `direction(hp)` method, registered with `register`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from jax.extend import core as jax_core

from jaxfit.fields import Sweep, bounded, fail

# ----------------------------------------------------------------------------- schedules


def step_lr(lr: Any, step_size: int, gamma: float | None = None, *, steps_per_epoch: int = 1, log_gamma: Any = None) -> optax.Schedule:
    """torch's StepLR as an optax Schedule: lr * gamma ** (epoch // step_size), epoch = count //
    steps_per_epoch. `log_gamma` (a traced per-model number) replaces math.log(gamma)."""
    log_gamma = math.log(gamma) if log_gamma is None and gamma is not None else log_gamma  # one of the two is given

    def schedule(count: jax.Array) -> jax.Array:
        epoch = count // steps_per_epoch
        return lr * jnp.exp(log_gamma * (epoch // step_size).astype(jnp.float32))

    return schedule


def cyclic_lr(
    base_lr: Any,
    max_lr: Any,
    step_size_up: int,
    step_size_down: int,
    mode: str = "triangular",
    gamma: float = 1.0,
    *,
    steps_per_epoch: int = 1,
    log_gamma: Any = None,
) -> optax.Schedule:
    """torch's CyclicLR (cycle_momentum=False) as an optax Schedule, stepped every
    `steps_per_epoch` counts. `log_gamma` (traced) replaces math.log(gamma) (exp_range)."""
    log_gamma = math.log(gamma) if log_gamma is None and gamma is not None else log_gamma  # one of the two is given
    up, down = step_size_up, step_size_down

    def schedule(count: jax.Array) -> jax.Array:
        count = count // steps_per_epoch
        cycle = 1 + count // (up + down)
        position = count % (up + down)  # torch's x = position / (up + down)
        # torch: x / step_ratio going up, (x - 1) / (step_ratio - 1) going down; the same ratios
        # of integers, each a single float32 division here (no cancellation near the bottom).
        scale = jnp.where(position <= up, position / up, (up + down - position) / down).astype(jnp.float32)
        height = (max_lr - base_lr) * scale
        if mode == "triangular2":
            height = height * jnp.exp2(1.0 - cycle.astype(jnp.float32))
        elif mode == "exp_range":
            height = height * jnp.exp(log_gamma * count.astype(jnp.float32))
        return base_lr + height

    return schedule


# `interval` says when a scheduler steps: once per "epoch" (Lightning's default for StepLR) or
# once per optimiser "step" (the CyclicLR loop of a forum seed).


@dataclass(frozen=True)
class Constant:
    name: Literal["constant"] = "constant"

    def lr_schedule(self, hp: dict, steps_per_epoch: int) -> optax.Schedule:
        return lambda count: hp["optim.lr"]


@dataclass(frozen=True)
class StepDecay:
    """torch.optim.lr_scheduler.StepLR: lr = optim.lr * gamma ** (count // step_size)."""

    name: Literal["step"] = "step"
    step_size: int = bounded(20, gt=0)
    gamma: Sweep = bounded(0.9, gt=0)
    interval: Literal["epoch", "step"] = "epoch"

    def lr_schedule(self, hp: dict, steps_per_epoch: int) -> optax.Schedule:
        every = steps_per_epoch if self.interval == "epoch" else 1
        return step_lr(hp["optim.lr"], self.step_size, steps_per_epoch=every, log_gamma=hp["schedule.log_gamma"])


@dataclass(frozen=True)
class Cyclic:
    """torch.optim.lr_scheduler.CyclicLR (cycle_momentum=False); it sets the lr itself, so
    optim.lr is unused, as in torch."""

    name: Literal["cyclic"] = "cyclic"
    base_lr: Sweep = bounded(0.001, gt=0)
    max_lr: Sweep = bounded(0.1, gt=0)
    step_size_up: int = bounded(2000, gt=0)
    step_size_down: int = bounded(2000, gt=0)
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    gamma: Sweep = bounded(1.0, gt=0)
    interval: Literal["epoch", "step"] = "step"

    def lr_schedule(self, hp: dict, steps_per_epoch: int) -> optax.Schedule:
        every = steps_per_epoch if self.interval == "epoch" else 1
        log_gamma = hp["schedule.log_gamma"] if self.mode == "exp_range" else 0.0  # gamma only scales exp_range
        return cyclic_lr(
            hp["schedule.base_lr"],
            hp["schedule.max_lr"],
            self.step_size_up,
            self.step_size_down,
            self.mode,
            steps_per_epoch=every,
            log_gamma=log_gamma,
        )


SCHEDULES = (Constant, StepDecay, Cyclic)

# ----------------------------------------------------------------------------- optimisers

OPTIMISERS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make an optimiser table usable as `[optim] name = ...`. A table is a
    frozen dataclass with a `name` field (its default is the name), numeric fields typed `Sweep`
    (each can be a sweep axis; read them from hp as 'optim.FIELD'), and `direction(hp)`, the
    update before the learning rate, e.g. `optax.scale_by_lion(b1=hp["optim.b1"])`."""
    OPTIMISERS[cls.__dataclass_fields__["name"].default] = cls  # type: ignore[attr-defined]  # a dataclass
    return cls


def _with_weight_decay(hp: dict, *parts: optax.GradientTransformation) -> optax.GradientTransformation:
    """torch's L2 weight decay (g + wd * p) first, where there is one, then `parts`."""
    chain = ([optax.add_decayed_weights(hp["optim.weight_decay"])] if "optim.weight_decay" in hp else []) + list(parts)
    return optax.chain(*chain) if chain else optax.identity()


@register
@dataclass(frozen=True)
class SGD:
    """torch.optim.SGD (momentum, nesterov, weight_decay; dampening 0)."""

    name: Literal["sgd"] = "sgd"
    lr: Sweep = bounded(0.1, gt=0)
    momentum: Sweep = bounded(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: Sweep | None = bounded(None, ge=0)

    def check(self, where: str) -> None:
        if self.nesterov and self.momentum == 0.0:
            raise fail(f"{where}.nesterov", True, "needs optim.momentum > 0 (as torch.optim.SGD)")

    def direction(self, hp: dict) -> optax.GradientTransformation:
        momentum = [optax.trace(decay=hp["optim.momentum"], nesterov=self.nesterov)] if self.momentum != 0.0 else []
        return _with_weight_decay(hp, *momentum)


@register
@dataclass(frozen=True)
class Adam:
    """torch.optim.Adam (weight_decay as L2; no amsgrad)."""

    name: Literal["adam"] = "adam"
    lr: Sweep = bounded(1e-3, gt=0)
    b1: Sweep = bounded(0.9, ge=0, lt=1)
    b2: Sweep = bounded(0.999, ge=0, lt=1)
    eps: Sweep = bounded(1e-8, gt=0)
    weight_decay: Sweep | None = bounded(None, ge=0)

    def moments(self, hp: dict) -> optax.GradientTransformation:
        """The Adam update itself: bias-corrected moments, eps outside the sqrt."""
        return optax.scale_by_adam(b1=hp["optim.b1"], b2=hp["optim.b2"], eps=hp["optim.eps"])

    def direction(self, hp: dict) -> optax.GradientTransformation:
        return _with_weight_decay(hp, self.moments(hp))


@register
@dataclass(frozen=True)
class AdamW(Adam):
    """torch.optim.AdamW: Adam's numbers, decoupled weight decay (torch's default 0.01)."""

    name: Literal["adamw"] = "adamw"  # type: ignore[assignment]  # a table of its own, with Adam's fields
    weight_decay: Sweep = bounded(0.01, ge=0)

    def direction(self, hp: dict) -> optax.GradientTransformation:
        return optax.chain(self.moments(hp), optax.add_decayed_weights(hp["optim.weight_decay"]))


@register
@dataclass(frozen=True)
class RMSprop:
    """torch.optim.RMSprop (alpha, eps, momentum, weight_decay; not centered)."""

    name: Literal["rmsprop"] = "rmsprop"
    lr: Sweep = bounded(0.01, gt=0)
    alpha: Sweep = bounded(0.99, ge=0, lt=1)
    eps: Sweep = bounded(1e-8, gt=0)
    momentum: Sweep = bounded(0.0, ge=0, lt=1)
    weight_decay: Sweep | None = bounded(None, ge=0)

    def direction(self, hp: dict) -> optax.GradientTransformation:
        rms = optax.scale_by_rms(decay=hp["optim.alpha"], eps=hp["optim.eps"], initial_scale=0.0, eps_in_sqrt=False)
        momentum = [optax.trace(decay=hp["optim.momentum"])] if self.momentum != 0.0 else []
        return _with_weight_decay(hp, rms, *momentum)


# ----------------------------------------------------------------------------- per model


def chain(group: Any, hp: dict, lr: Any) -> optax.GradientTransformation:
    """The group's optimiser for one model at one step: its direction, then scaling by -lr, the
    schedule's value at this step (`learning_rate`). The trainer evaluates the schedule at the
    run's step number, which is the same for every model of the group, so its integer arithmetic
    (epochs, cycles) is done once per step, not once per model as a schedule reading a per-model
    count from the optimiser state would; the state is the same whatever lr is."""
    return optax.chain(group.optim.direction(hp), optax.scale_by_learning_rate(lr))


def learning_rate(group: Any, hp: dict, step: jax.Array, steps_per_epoch: int) -> jax.Array:
    """The learning rate of optimiser step number `step` (0-based), for logging."""
    return group.schedule.lr_schedule(hp, steps_per_epoch)(step)


def hyperparameters(group: Any) -> dict[str, float | tuple[float, ...]]:
    """The numeric (sweepable) fields of a group's optimiser and schedule, as 'optim.lr' etc."""
    out = {}
    for table in ("optim", "schedule"):
        part = getattr(group, table)
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if isinstance(value, float) or (isinstance(value, tuple) and value and isinstance(value[0], float)):
                out[f"{table}.{f.name}"] = value
    return out


DERIVED = {"schedule.log_gamma": "schedule.gamma"}  # a number per_model computes on the host -> the config key it comes from


def unread(group: Any, steps_per_epoch: int) -> list[str]:
    """The numeric fields of a group's optimiser and schedule (`hyperparameters`) that cannot change
    any of its models: neither the learning rate nor an update of its optax chain depends on them
    (e.g. optim.lr under a CyclicLR, which sets the rate itself). Traced, nothing computed; a field
    whose dependence cannot be traced counts as read."""
    numbers = per_model({k: v[0] if isinstance(v, tuple) else v for k, v in hyperparameters(group).items()})
    names = list(numbers)
    params = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}  # any tree: every optimiser here is elementwise

    def step(values: list[jax.Array], count: jax.Array) -> Any:
        hp = dict(zip(names, values))
        lr = learning_rate(group, hp, count, steps_per_epoch)
        tx = chain(group, hp, lr)
        updates, state = tx.update(params, tx.init(params), params)
        return lr, updates, state

    try:
        closed = jax.make_jaxpr(step)([jnp.float32(v) for v in numbers.values()], jnp.int32(0))
    except Exception:  # noqa: BLE001 -- an optimiser of one's own that needs other shapes: nothing refused
        return []
    used = _used_inputs(closed.jaxpr)
    read = {DERIVED.get(name, name) for name, use in zip(names, used) if use}
    return [key for key in hyperparameters(group) if key not in read]


def _used_inputs(jaxpr: Any) -> list[bool]:
    """Which inputs of a jaxpr its outputs depend on (an equation's outputs depend on all its inputs)."""
    used = {v for v in jaxpr.outvars if not isinstance(v, jax_core.Literal)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in used for v in eqn.outvars):
            used.update(v for v in eqn.invars if not isinstance(v, jax_core.Literal))
    return [v in used for v in jaxpr.invars[: len(jaxpr.invars) - 1]]  # the last input is the step count


def per_model(numbers: dict[str, Any]) -> dict[str, Any]:
    """One model's numbers, plus what is best computed in float64 on the host: log(gamma), so
    gamma ** count stays within 1e-6 of torch's float64 after a million steps (gamma rounded
    to float32 and raised to the count would not)."""
    if "schedule.gamma" in numbers:
        numbers = {**numbers, "schedule.log_gamma": math.log(numbers["schedule.gamma"])}
    return numbers
