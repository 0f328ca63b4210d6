"""A model's numbers are its own: every state leaf of a model is the same bit for bit whatever
ran beside it -- runs of 1 to 100 models (across the size where XLA:CPU would hand a fusion to
YNNPACK, `plan.compiler_options`), other swept values, another experiment's sizes. Compaction,
resume and two processes are tested against the same property in tests/test_compaction.py."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from jaxfit import config, plan, sweep
from tests.conftest import run_small

ROOT = Path(__file__).resolve().parents[1]


def own_leaves(result: sweep.Result) -> dict[tuple, dict[str, np.ndarray]]:
    """Every state leaf of every model, keyed by its label (group, seed, init, swept values);
    the history's scratch column aside (it holds what the last unlogged interval computed and is
    never written out)."""
    out = {}
    for group, state in zip(result.groups, result.states):
        leaves = jax.tree_util.tree_flatten_with_path(state)[0]
        for i, label in enumerate(group.labels):
            arrays = {}
            for path, leaf in leaves:
                name, value = jax.tree_util.keystr(path), np.asarray(leaf)[i]
                arrays[name] = value[:-1] if "history" in name else value
            out[tuple(sorted(label.items()))] = arrays
    return out


def assert_shared_models_equal(a: sweep.Result, b: sweep.Result) -> int:
    """Every model both runs trained has the same leaves in both; returns how many they share."""
    first, second = own_leaves(a), own_leaves(b)
    shared = first.keys() & second.keys()
    assert shared
    for label in shared:
        for leaf, value in first[label].items():
            np.testing.assert_array_equal(value, second[label][leaf], err_msg=f"{label} {leaf}")
    return len(shared)


@pytest.mark.slow
def test_a_stepfit_model_is_the_same_among_1_3_8_41_and_100_models():
    """Blocks of 2 (one model, padded), 3, 8, 41 and 100: XLA's default routing would round the
    wide models' [models, 100, 8] sums differently below and above 4,096 elements."""
    runs = {n: run_small("stepfit", f"sweep.n_seeds={n}") for n in (1, 3, 8, 41, 100)}
    for n in (3, 8, 41, 100):
        assert assert_shared_models_equal(runs[1], runs[n]) == 2  # seed 0 of each group
    assert assert_shared_models_equal(runs[8], runs[100]) == 16


@pytest.mark.slow
def test_a_sumsq_model_is_the_same_among_2_and_12_seeds():
    assert assert_shared_models_equal(run_small("sumsq"), run_small("sumsq", "sweep.n_seeds=12")) == 4


@pytest.mark.slow
def test_a_spirals_model_is_the_same_beside_other_learning_rates():
    spirals = str(ROOT / "examples" / "spirals.toml")
    runs = [
        sweep.run(config.load(spirals, ["train.steps=100", "sweep.n_seeds=3", f"optim.lr={lr}"]), quiet=True)
        for lr in ("[0.01]", "[0.003, 0.01, 0.03]")
    ]
    assert assert_shared_models_equal(*runs) == 3 * len(config.load(spirals).groups[0].model.init)


@pytest.mark.slow
@pytest.mark.parametrize("one_device", [True, False], ids=["one device", "every device"])
def test_a_spirals_model_is_the_same_among_1_3_8_and_60_models(monkeypatch, one_device):
    """spirals' first layer over the shared evaluation points, left to vmap, is one dot over the
    block ([2000, 2] @ [2, 16 x models]) whose sums follow the block's size (3, 8 and 60 models,
    not 2 or 30); on one device and sharded over every device (own_sums.own_dot)."""
    monkeypatch.setattr(plan, "OWN_CPU_DEVICES", one_device)
    monkeypatch.setattr(plan, "CPU_BYTES_PER_DEVICE", 2**40)
    spirals = str(ROOT / "examples" / "spirals.toml")
    few = ["model.init=['he']", "optim.lr=[0.01]"]
    runs = {
        n: sweep.run(config.load(spirals, ["train.steps=50", f"sweep.n_seeds={n}", *(few if n < 10 else [])]), quiet=True)
        for n in (1, 3, 8, 10)
    }
    assert {n: sum(g.n_models for g in r.groups) for n, r in runs.items()} == {1: 1, 3: 3, 8: 8, 10: 60}
    for n in (3, 8, 10):
        assert assert_shared_models_equal(runs[1], runs[n]) == 1
    assert assert_shared_models_equal(runs[8], runs[10]) == 8


def test_a_run_takes_a_core_per_16_kib_of_step(monkeypatch):
    """On the cores of plan.use_every_core a run of tiny models keeps to one device and a larger
    one shards over all of them (which is why the runs above differ in device count)."""
    monkeypatch.setattr(plan, "OWN_CPU_DEVICES", True)
    assert plan.mesh(plan.CPU_BYTES_PER_DEVICE - 1)[2] == 1
    assert plan.mesh(100 * plan.CPU_BYTES_PER_DEVICE)[2] == jax.device_count()
    monkeypatch.setattr(plan, "OWN_CPU_DEVICES", False)  # the user chose a count: every device
    assert plan.mesh(1)[2] == jax.device_count()
