"""Training behaviour on small configs: learning happens, models are independent of their
neighbours, init schemes are paired, and a run leaves the files its contract promises."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit import config, experiment, plan, report, run, sweep, trainer
from tests.conftest import run_small


def model_arrays(result, group_name, label):
    """Every per-model array of the model with `label` in group `group_name`."""
    for group, state in zip(result.groups, result.states):
        if group.group.name == group_name:
            index = [i for i, own in enumerate(group.labels) if all(own[k] == v for k, v in label.items())]
            assert len(index) == 1, (label, group.labels)
            return {
                k: np.asarray(v)[index[0]]
                for k, v in {
                    **state.history,
                    **state.final,
                    "val_init": state.initial["val_loss"],
                    "steps": state.steps_done,
                    "kernel": state.params["fc3"]["kernel"] if "fc3" in state.params else state.params["fc2"]["kernel"],
                }.items()
            }
    raise AssertionError(group_name)


@pytest.mark.slow
def test_loss_goes_down_without_dropout():
    result = run_small(
        "sumsq",
        "model.dropout_inputs=0",
        "model.dropout_hidden=0",
        "model.dropout_outputs=0",
        "model.init=torch_default",
        "optim.lr=0.01",
        "train.epochs=20",
    )
    state = result.states[0]
    val = np.asarray(state.history["val_loss"])[:, :-1]
    assert np.all(val[:, -1] < 0.2 * np.asarray(state.initial["val_loss"])), (val[:, -1], state.initial)
    assert np.all(np.asarray(state.history["train_loss"])[:, 19] < np.asarray(state.history["train_loss"])[:, 0])


def assert_same_model(a: dict, b: dict) -> None:
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
def test_a_model_does_not_depend_on_its_neighbours(sumsq_result):
    """Model (seed 0, he) run alone == the same model among 2 seeds x {manual, he} == among
    5 seeds x {manual, he}: every logged number and the final parameters, bit for bit."""
    alone = run_small("sumsq", "model.init=he", "sweep.n_seeds=1")
    more = run_small("sumsq", "sweep.n_seeds=5")
    label = {"seed": 0, "init": "he"}
    reference = model_arrays(sumsq_result, "main", label)
    assert_same_model(reference, model_arrays(alone, "main", label))
    assert_same_model(reference, model_arrays(more, "main", label))


@pytest.mark.slow
def test_a_stepfit_model_does_not_depend_on_its_neighbours():
    alone, more = run_small("stepfit", "sweep.n_seeds=1"), run_small("stepfit", "sweep.n_seeds=4")
    for group in ("narrow", "wide"):
        assert_same_model(model_arrays(alone, group, {"seed": 0}), model_arrays(more, group, {"seed": 0}))


@pytest.mark.slow
def test_init_schemes_are_paired_on_the_same_batches_and_masks(sumsq_result):
    """Models differing only in init scheme share data order and dropout masks: swapping the
    scheme order (so each scheme gets the other's index) changes nothing, and a he model's
    numbers are the same whether or not a manual model runs beside it (previous test). Seeds
    do differ: different seeds give different results from the same manual init."""
    swapped = run_small("sumsq", 'model.init=["he", "manual"]')
    for init in ("manual", "he"):
        for seed in (0, 1):
            a = model_arrays(sumsq_result, "main", {"seed": seed, "init": init})
            b = model_arrays(swapped, "main", {"seed": seed, "init": init})
            np.testing.assert_array_equal(a["val_loss"], b["val_loss"])
    seed0 = model_arrays(sumsq_result, "main", {"seed": 0, "init": "manual"})
    seed1 = model_arrays(sumsq_result, "main", {"seed": 1, "init": "manual"})
    assert seed0["val_init"] == seed1["val_init"] and not np.array_equal(seed0["val_loss"], seed1["val_loss"])


def test_chunk_size_does_not_change_results(sumsq_result):
    other = run_small("sumsq", "execution.chunk_epochs=2")
    for a, b in zip(sumsq_result.states, other.states):
        for name in a.history:
            np.testing.assert_array_equal(a.history[name], b.history[name])


def test_a_run_writes_its_contract(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        run.main(
            [
                "--config",
                "sumsq",
                "--set",
                "task.n_samples=1100",
                "--set",
                "task.n_train=1000",
                "--set",
                "train.epochs=2",
                "--set",
                "sweep.n_seeds=2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {
        "config.toml",
        "summary.json",
        "summary.md",
        "history.npz",
        "params.npz",
        "loss_curves.png",
        "pred_vs_true.png",
        "subnet.png",
    } <= names
    summary = json.loads((out / "summary.json").read_text())
    assert {"jax_version", "device", "n_devices", "compile_s", "run_s", "model_steps_per_s"} <= set(summary["run"])
    models = summary["models"]
    assert [(m["seed"], m["init"]) for m in models] == [(0, "manual"), (1, "manual"), (0, "he"), (1, "he")]
    for m in models:
        assert {
            "group",
            "seed",
            "init",
            "train_loss_final",
            "val_loss_final",
            "val_loss_best",
            "best_epoch",
            "loss_init",
            "loss_final",
            "steps",
            "reached",
        } <= set(m)
        assert m["steps"] == 20 and m["best_epoch"] in (1, 2)
    history = report.load_history(out / "history.npz")
    for name in ("train_loss", "val_loss", "train_eval_loss", "lr"):
        assert history[name].shape == (4, 2)
    np.testing.assert_allclose(history["lr"], 1e-4)
    np.testing.assert_allclose(history["val_loss"][:, -1], [m["val_loss_final"] for m in models], rtol=1e-6)
    assert list(history["epoch"]) == [1, 2]
    assert (out / "summary.md").read_text() in printed
    with np.load(out / "params.npz") as params:
        assert params["main/last/subnet/fc1/kernel"].shape == (4, 1, 14)
        np.testing.assert_allclose(params["main/first/fc3/kernel"][0, :, 0], 1.0, atol=0.05)  # manual after 1 epoch


def all_states_equal(a, b) -> None:
    for x, y in zip(a.states, b.states):
        chex.assert_trees_all_equal(x, y)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sumsq", "stepfit"])
def test_models_run_in_blocks_without_changing_a_number(monkeypatch, name):
    """A group's models run in blocks (`plan.models_per_block`): blocks of 2 -- 5 models per
    group, so 3 blocks and a padding model -- give every state leaf of every model bit for bit
    as one block of all of them."""
    overrides = ["sweep.n_seeds=5", *(["model.init=he"] if name == "sumsq" else [])]
    whole = run_small(name, *overrides)
    monkeypatch.setattr(plan, "CPU_CACHE_BYTES", 1)
    assert plan.models_per_block(10**6, 1, 5, jax.devices("cpu")[0]) == 2
    all_states_equal(whole, run_small(name, *overrides))


class FakeAccelerator:
    platform = "gpu"

    def memory_stats(self) -> dict:
        return {"bytes_limit": 80 << 30}


def test_blocks_are_as_large_as_the_caches_or_the_memory_allow():
    cpu = jax.devices("cpu")[0]
    assert plan.models_per_block(512, 32768, 1000, cpu) == 1000  # stepfit: all at once
    sumsq = plan.models_per_block(358_400, 7_168_000, 1000, cpu)  # sumsq: [14, 100, 64] floats a step
    assert sumsq == 11 and 1000 % sumsq < sumsq and -(-1000 // sumsq) * sumsq - 1000 < -(-1000 // sumsq)  # balanced
    # an 80 GiB accelerator: no cache limit; 5 GiB of evaluation arrays hold 748 sumsq models or 33,548 wide stepfit models
    assert plan.models_per_block(358_400, 7_168_000, 1000, FakeAccelerator()) == 500
    assert plan.models_per_block(3200, 160_032, 20_000, FakeAccelerator()) == 20_000
    assert plan.models_per_block(10**12, 10**12, 3, cpu) == 2  # never fewer than 2 (see plan.padded)


@pytest.mark.slow
def test_memory_does_not_grow_with_the_models_beyond_a_block(monkeypatch):
    """sumsq with the faithful eval chunk of 2,000 samples: the compiled chunk's working memory
    for 400 models is that of one block (without blocks, 10x the 20 models' on two devices)."""

    def temp_bytes(n_seeds: int) -> int:
        cfg = config.load("sumsq", ["task.n_samples=5000", "task.n_train=3000", "train.epochs=1", f"sweep.n_seeds={n_seeds}"])
        return sweep.prepare(cfg).program(0, None).memory_analysis().temp_size_in_bytes

    few, many = temp_bytes(10), temp_bytes(200)
    monkeypatch.setattr(plan, "CPU_CACHE_BYTES", 1 << 40)
    assert temp_bytes(200) > 5 * few  # what blocks prevent
    assert many < 2 * few


def test_the_trainers_parts_are_functions_of_their_setup():
    """make_train's parts are module-level functions of a Setup: the history slot of an interval
    (the scratch column past the logged ones), the stop test in either direction, and a step
    that a non-finite update freezes instead of applying."""
    cfg = config.load("stepfit", ["train.steps=3000", "sweep.n_seeds=1"])
    s = trainer.make_setup(cfg, cfg.groups[0])
    logged = np.asarray(s.logged)
    assert [int(trainer.log_slot(s, jnp.int32(i))) for i in logged[:3]] == [0, 1, 2]
    unlogged = next(i for i in range(3000) if i not in set(logged.tolist()))
    assert int(trainer.log_slot(s, jnp.int32(unlogged))) == s.n_logged
    assert bool(trainer.reaches(s, jnp.float32(0.004))) and not bool(trainer.reaches(s, jnp.float32(0.006)))
    coords = jax.tree.map(lambda a: a[0], plan.expand(cfg)[0].coords)
    state = trainer.init_one(s, coords, trainer.RunData(experiment.run_data(cfg.task, s.group.model, cfg.train.eval_batch_size)))
    x = jnp.full((cfg.train.batch_size, 1), jnp.nan)
    after = trainer.train_step(s, trainer.Trained.start(state), jnp.int32(0), x, x, coords)
    assert not bool(after.active) and int(after.diverged_step) == 0 and int(after.steps_done) == 0
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(state.params)))
