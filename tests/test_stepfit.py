"""stepfit: early stopping per model, several groups of different shapes in one call, sweeps
as model axes, and the report's statistics."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import tomli_w

from jaxfit import config, report, run, sweep, trainer
from tests.conftest import small
from tests.test_train import assert_same_model, model_arrays


@pytest.fixture(scope="module")
def stopped():
    """300 steps with a loose threshold, so that some models stop early and some do not."""
    return sweep.run(small("stepfit", "train.stop_at=0.07", "sweep.n_seeds=6"), quiet=True)


@pytest.mark.slow
def test_early_stopping_freezes_exactly_the_models_that_hit_the_threshold(stopped):
    reached_any = not_reached_any = False
    for group, state in zip(stopped.groups, stopped.states):
        history = np.asarray(state.history["val_loss"])[:, :-1]
        for i in range(group.n_models):
            stop = int(state.stop_step[i])
            if stop >= 0:
                reached_any = True
                assert int(state.steps_done[i]) == stop and state.final["val_loss"][i] <= 0.07
                # the logged val loss is above the threshold before the stop, NaN (frozen) after it
                steps = np.arange(1, history.shape[1] + 1)
                assert np.all(history[i][steps < stop] > 0.07) and np.all(np.isnan(history[i][steps > stop]))
            else:
                not_reached_any = True
                assert int(state.steps_done[i]) == 300 and np.all(np.asarray(state.history["val_loss"])[i, :-1] > 0.07)
    assert reached_any and not_reached_any  # the fixture exercises both cases


@pytest.mark.slow
def test_a_stopped_model_keeps_the_parameters_of_its_stop_step(stopped):
    """Re-train without a threshold for exactly a stopped model's stop step: same parameters."""
    group_index, model = next((g, i) for g, s in enumerate(stopped.states) for i in range(len(s.stop_step)) if s.stop_step[i] > 0)
    state = stopped.states[group_index]
    again = sweep.run(small("stepfit", f"train.steps={int(state.stop_step[model])}", "sweep.n_seeds=6"), quiet=True)
    redo = again.states[group_index]
    for layer in ("fc1", "fc2"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(np.asarray(state.params[layer][leaf])[model], np.asarray(redo.params[layer][leaf])[model])


def write_one_group(tmp_path, name):
    """The small stepfit config with only group `name`, as a file."""
    raw = config.to_dict(small("stepfit"))
    raw["groups"] = {name: raw["groups"][name]}
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


@pytest.mark.slow
def test_groups_of_different_shapes_in_one_call_equal_each_group_alone(tmp_path):
    together = sweep.run(small("stepfit"), quiet=True)
    for name in ("narrow", "wide"):
        alone = sweep.run(config.load(str(write_one_group(tmp_path, name))), quiet=True)
        for seed in range(3):
            assert_same_model(model_arrays(together, name, {"seed": seed}), model_arrays(alone, name, {"seed": seed}))


@pytest.mark.slow
def test_a_list_is_a_vmapped_sweep_axis():
    cfg = small("stepfit", "groups.narrow.optim.lr=[0.05, 0.1, 0.2]", "sweep.n_seeds=2")
    result = sweep.run(cfg, quiet=True)
    narrow = result.groups[0]
    assert [(label["optim.lr"], label["seed"]) for label in narrow.labels] == [(0.05, 0), (0.05, 1), (0.1, 0), (0.1, 1), (0.2, 0), (0.2, 1)]
    np.testing.assert_allclose(np.asarray(result.states[0].final["lr"]), [0.05, 0.05, 0.1, 0.1, 0.2, 0.2])
    # lr 0.1 models equal the unswept run's models: a swept number does not touch keys or batches
    plain = sweep.run(small("stepfit", "sweep.n_seeds=2"), quiet=True)
    for seed in range(2):
        assert_same_model(model_arrays(result, "narrow", {"seed": seed, "optim.lr": 0.1}), model_arrays(plain, "narrow", {"seed": seed}))


@pytest.mark.slow
def test_ablation_config_runs_its_groups_in_one_call(tmp_path, capsys):
    out = tmp_path / "abl"
    assert (
        run.main(["--config", "stepfit_ablation", "--set", "train.steps=200", "--set", "sweep.n_seeds=2", "--out", str(out), "--quiet"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [m["group"] for m in summary["models"]] == [g for g in ("narrow_cyclic", "wide_constant") for _ in range(2)]
    for m in summary["models"]:
        assert {"loss_init", "loss_final", "steps", "reached"} <= set(m) and m["steps"] == 200
    assert {"val_loss.png", "final_loss_hist.png", "fitted.png"} <= {p.name for p in out.iterdir()}
    text = (out / "summary.md").read_text()
    assert "0/2 [0.00, 0.66]" in text  # Wilson interval of 0 successes in 2
    assert report.load_history(out / "history.npz")["val_loss"].shape == (4, 200)
    groups = tomllib.loads((out / "config.toml").read_text())["groups"]
    assert groups["narrow_cyclic"]["schedule"]["mode"] == "triangular2" and groups["narrow_cyclic"]["model"]["width"] == 1
    assert groups["wide_constant"]["schedule"]["name"] == "constant" and groups["wide_constant"]["model"]["width"] == 8


def test_long_runs_log_the_seeds_steps_and_store_nothing_per_step():
    cfg = config.load("stepfit")
    steps = set(trainer.interval_end_steps(cfg, trainer.logged_intervals(cfg)).tolist())
    seed_steps = set(trainer.doprint_steps(1_000_000)) - {0}
    assert seed_steps <= steps and 1_000_001 in steps and len(steps) < 300
    assert trainer.doprint_steps(1_000_000)[:12] == [0, 1, 2, 5, 10, 30, 100, 300, 1000, 3000, 10000, 30000]
    assert trainer.doprint_steps(1_000_000)[-3:] == [800000, 900000, 1000000]


@pytest.mark.parametrize("points", [2, 40, 200, 1000])
def test_history_points_sets_how_many_log_spaced_steps_a_long_run_keeps(points):
    """Past 1,000 intervals a run keeps the seed's print steps, `points` log-spaced steps and the
    last; a coarser grid keeps fewer, a finer one more, and at most one column per interval."""
    cfg = config.load("stepfit", [f"train.history_points={points}"])
    steps = trainer.interval_end_steps(cfg, trainer.logged_intervals(cfg))
    wanted = (
        set(trainer.doprint_steps(1_000_000)[1:])
        | set(np.unique(np.geomspace(1, 1_000_001, points).astype(np.int64)).tolist())
        | {1_000_001}
    )
    assert set(steps.tolist()) == wanted and len(steps) == len(set(steps.tolist()))
    short = config.load("stepfit", [f"train.history_points={points}", "train.steps=1000"])
    assert len(trainer.logged_intervals(short)) == 1000  # up to 1,000 intervals: every one, whatever the setting


def test_wilson_interval_and_clusters():
    low, high = report.wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)  # the textbook values for 8/10
    assert report.wilson_interval(0, 10)[0] == 0.0 and report.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert report.clusters([0.0658, 0.0659, 0.0050, 0.0662, 0.0049, 0.9]) == [(0.0659, 3), (pytest.approx(0.00495), 2), (0.9, 1)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ['groups.narrow.optim={name="adam", lr=0.01}', 'groups.wide.optim={name="adam"}'],  # wide's CyclicLR sets its rate
        ["optim.momentum=0.9", "groups.narrow.optim.lr=0.01", "model.activation=relu"],
        ['schedule={name="step", step_size=100, gamma=0.5, interval="step"}'],
    ],
    ids=["adam", "sgd-momentum-relu", "step-decay"],
)
def test_other_optimisers_activations_and_schedules_come_from_config(overrides):
    """The engine is not tied to the seed's choices: each of these trains (finite losses that move)."""
    result = sweep.run(small("stepfit", *overrides), quiet=True)
    for state in result.states:
        final, start = np.asarray(state.final["val_loss"]), np.asarray(state.initial["val_loss"])
        assert np.all(np.isfinite(final)) and np.any(np.abs(final - start) > 1e-3)
    if "interval" in overrides[0]:
        np.testing.assert_allclose(np.asarray(result.states[0].final["lr"]), 0.1 * 0.5**2)  # steps 200..299


@pytest.mark.slow
def test_the_factorials_seed_cells_are_the_seeds_groups_and_the_grid_cells_train_on_the_grid():
    """configs/stepfit_factorial.toml crosses data x width x schedule. Its two fresh-batch cells
    that are the seed's setup give the seed config's numbers bit for bit (same run seed, same seed
    indices); the grid cells train full-batch on the 5001-point grid (their logged train loss IS
    the grid's loss before the step: at step 1 it equals the validation loss before training)."""
    factorial = sweep.run(config.load("stepfit_factorial", ["train.steps=300", "sweep.n_seeds=2"]), quiet=True)
    seed = sweep.run(config.load("stepfit", ["train.steps=300", "sweep.n_seeds=2"]), quiet=True)
    cells = {g.group.name: s for g, s in zip(factorial.groups, factorial.states)}
    for cell, group in (("narrow_fresh_constant", 0), ("wide_fresh_cyclic", 1)):
        for name in ("train_loss", "val_loss"):
            np.testing.assert_array_equal(np.asarray(cells[cell].history[name]), np.asarray(seed.states[group].history[name]))
    for cell in ("narrow_grid_constant", "wide_grid_cyclic"):
        state = cells[cell]
        np.testing.assert_allclose(np.asarray(state.history["train_loss"])[:, 0], np.asarray(state.initial["val_loss"]), rtol=1e-6)
    assert not np.array_equal(
        np.asarray(cells["narrow_grid_constant"].history["val_loss"]), np.asarray(cells["narrow_fresh_constant"].history["val_loss"])
    )
