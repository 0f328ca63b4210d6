"""Learning-rate schedules against PyTorch's formulas, written out here in float64 Python as
torch's lr_scheduler.py computes them (StepLR's recursion, CyclicLR.get_lr), and against torch
itself where it is installed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxfit import config, optim, sweep
from jaxfit.config import bounded
from jaxfit.optim import Constant, Cyclic, StepDecay


def numbers(**values):
    """Per-model numbers as the trainer gets them (float32, with the host-side extras)."""
    return {k: jnp.float32(v) for k, v in optim.per_model(values).items()}


def jitted_lr(schedule, hp, steps, steps_per_epoch):
    """The table's optax Schedule at every step, jitted and vmapped."""
    return jax.jit(jax.vmap(schedule.lr_schedule(hp, steps_per_epoch)))(steps)


def torch_step_lr(lr, step_size, gamma, n):
    """StepLR.get_lr: multiply by gamma whenever last_epoch is a non-zero multiple of step_size."""
    out = []
    for epoch in range(n):
        if epoch and epoch % step_size == 0:
            lr = lr * gamma
        out.append(lr)
    return out


def torch_cyclic_lr(base_lr, max_lr, up, down, mode, gamma, n):
    """CyclicLR.get_lr, line by line."""
    total = float(up) + float(down)
    ratio = up / total
    scale_fn = {"triangular": lambda c: 1.0, "triangular2": lambda c: 1 / (2.0 ** (c - 1)), "exp_range": lambda i: gamma**i}[mode]
    out = []
    for i in range(n):
        cycle = math.floor(1 + i / total)
        x = 1.0 + i / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (max_lr - base_lr) * scale
        out.append(base_lr + height * scale_fn(cycle if mode != "exp_range" else i))
    return out


def test_step_lr_stepped_per_epoch():
    schedule = StepDecay(step_size=20, gamma=0.9, interval="epoch")
    hp = numbers(**{"optim.lr": 1e-4, "schedule.gamma": 0.9})
    steps = jnp.arange(600 * 900, dtype=jnp.int32)
    ours = np.asarray(jitted_lr(schedule, hp, steps, 900))
    expected = np.repeat(torch_step_lr(1e-4, 20, 0.9, 600), 900)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    assert ours[900 * 20 - 1] == pytest.approx(1e-4) and ours[900 * 20] == pytest.approx(0.9e-4)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_lr_formula(mode):
    schedule = Cyclic(base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode=mode, gamma=0.9995)
    hp = numbers(**{"schedule.base_lr": 0.001, "schedule.max_lr": 0.5, "schedule.gamma": 0.9995})
    n = 5 * 1000 + 17
    ours = np.asarray(jitted_lr(schedule, hp, jnp.arange(n, dtype=jnp.int32), 1))
    np.testing.assert_allclose(ours, torch_cyclic_lr(0.001, 0.5, 100, 900, mode, 0.9995, n), rtol=1e-6)


def test_cyclic_stays_exact_a_million_steps_in():
    schedule = Cyclic(base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode="triangular")
    hp = numbers(**{"schedule.base_lr": 0.001, "schedule.max_lr": 0.5})
    steps = np.arange(999_000, 1_000_001)
    ours = np.asarray(jitted_lr(schedule, hp, jnp.asarray(steps, jnp.int32), 1))
    expected = torch_cyclic_lr(0.001, 0.5, 100, 900, "triangular", 1.0, 1_000_001)[999_000:]
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_constant():
    assert float(Constant().lr_schedule(numbers(**{"optim.lr": 0.1}), 1)(jnp.int32(12345))) == pytest.approx(0.1)


def test_against_torch_itself():
    torch = pytest.importorskip("torch", reason="pip install torch==2.13.0 (CPU) to also check against torch itself")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode="triangular2", cycle_momentum=False
    )
    expected = []
    for _ in range(5000):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    schedule = Cyclic(base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode="triangular2")
    hp = numbers(**{"schedule.base_lr": 0.001, "schedule.max_lr": 0.5})
    np.testing.assert_allclose(np.asarray(jitted_lr(schedule, hp, jnp.arange(5000, dtype=jnp.int32), 1)), expected, rtol=1e-6)


@pytest.fixture
def lion():
    """An optimiser jaxfit does not ship, registered from Python as a user would (and removed after)."""

    @optim.register
    @dataclass(frozen=True)
    class Lion:
        name: Literal["lion"] = "lion"
        lr: optim.Sweep = bounded(1e-4, gt=0)
        b1: optim.Sweep = bounded(0.9, ge=0, lt=1)

        def direction(self, hp):
            return optax.scale_by_lion(b1=hp["optim.b1"])

    yield Lion
    del optim.OPTIMISERS["lion"]


@pytest.mark.slow
def test_any_optax_optimiser_can_be_registered_and_swept(lion):
    cfg = config.load(
        "stepfit", ['optim={name="lion", lr=[0.001, 0.003]}', 'schedule={name="constant"}', "train.steps=300", "sweep.n_seeds=2"]
    )
    assert isinstance(cfg.groups[0].optim, lion) and cfg.groups[0].optim.lr == (0.001, 0.003)
    result = sweep.run(cfg, quiet=True)
    for state in result.states:
        final, start = np.asarray(state.final["val_loss"]), np.asarray(state.initial["val_loss"])
        assert np.all(np.isfinite(final)) and np.all(final != start)
        np.testing.assert_allclose(np.asarray(state.final["lr"]), [0.001, 0.001, 0.003, 0.003], rtol=1e-6)
        assert not np.array_equal(final[:2], final[2:])  # the two rates train differently


def test_optimiser_names_are_the_registered_ones(lion):
    with pytest.raises(config.ConfigError, match="'sgd', 'adam', 'adamw', 'rmsprop', 'lion'"):
        config.load("stepfit", ["optim.name=lamb"])


def test_the_schedules_are_optax_schedules():
    """step_lr and cyclic_lr drive any optax optimiser: optax.sgd with them applies torch's
    StepLR (stepped every 3 counts, as per epoch) and CyclicLR learning rates, step by step."""
    for schedule, expected in (
        (optim.step_lr(0.1, step_size=2, gamma=0.9, steps_per_epoch=3), np.repeat(torch_step_lr(0.1, 2, 0.9, 100), 3)),
        (optim.cyclic_lr(0.001, 0.5, 100, 900, "triangular2"), torch_cyclic_lr(0.001, 0.5, 100, 900, "triangular2", 1.0, 300)),
    ):
        tx = optax.sgd(learning_rate=schedule)
        state, applied = tx.init(jnp.zeros(())), []
        for _ in range(300):
            update, state = tx.update(jnp.float32(1.0), state)
            applied.append(-float(update))  # a unit gradient: the update is -lr
        np.testing.assert_allclose(applied, expected[:300], rtol=1e-6)
