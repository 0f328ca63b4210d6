"""Learning-rate schedules against PyTorch's formulas, written out here in float64 Python as
torch's lr_scheduler.py computes them (StepLR's recursion, CyclicLR.get_lr), and against torch
itself where it is installed."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit import optim


def numbers(**values):
    """Per-model numbers as the trainer gets them (float32, with the host-side extras)."""
    return {k: jnp.float32(v) for k, v in optim.per_model(values).items()}
from jaxfit.config import Constant, Cyclic, StepDecay

jitted_lr = jax.jit(jax.vmap(optim.learning_rate, in_axes=(None, None, 0, None)), static_argnums=(0, 3))


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
    assert float(optim.learning_rate(Constant(), numbers(**{"optim.lr": 0.1}), jnp.int32(12345), 1)) == pytest.approx(0.1)


def test_against_torch_itself():
    torch = pytest.importorskip("torch", reason="pip install torch==2.13.0 (CPU) to also check against torch itself")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900,
                                              mode="triangular2", cycle_momentum=False)
    expected = []
    for _ in range(5000):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    schedule = Cyclic(base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode="triangular2")
    hp = numbers(**{"schedule.base_lr": 0.001, "schedule.max_lr": 0.5})
    np.testing.assert_allclose(np.asarray(jitted_lr(schedule, hp, jnp.arange(5000, dtype=jnp.int32), 1)), expected, rtol=1e-6)
