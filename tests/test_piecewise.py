"""stepfit's closed-form validation loss: within its stated margin of the direct 5001-point
computation, and a run that uses it as a filter reports exactly the direct run's numbers."""

from __future__ import annotations

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit import config, sweep, trainer
from jaxfit.experiment import make_eval_set, mse, template
from jaxfit.experiments import stepfit
from jaxfit.experiments.stepfit import MLP
from tests.conftest import small


@pytest.mark.slow
@pytest.mark.parametrize(
    "width, activation, output_activation", [(1, "leaky_relu", True), (8, "leaky_relu", True), (8, "relu", False), (3, "relu", True)]
)
def test_closed_form_is_within_its_margin_of_the_direct_loss(width, activation, output_activation):
    cfg = config.load("stepfit")
    model = MLP(width=width, activation=activation, negative_slope=0.001, output_activation=output_activation)
    eval_set = make_eval_set(*cfg.task.grid(), cfg.train.eval_batch_size)
    grid = stepfit.grid_of(eval_set)
    assert grid is not None and grid.n == 5001 and grid.step == 501  # 0.1 * 1000 rounds to 100: not above the step
    module = cfg.task.module(model)
    shapes = template(module, cfg.task.input_shape())

    def both(key, scale):
        leaves, treedef = jax.tree.flatten(shapes)
        keys = jax.random.split(key, len(leaves))
        params = jax.tree.unflatten(treedef, [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])
        return mse(module, params, eval_set), *stepfit.bound(params, model, grid)

    for scale in (0.3, 3.0, 300.0):
        direct, closed, margin = map(np.asarray, jax.jit(jax.vmap(lambda k: both(k, scale)))(jax.random.split(jax.random.key(width), 2000)))
        assert np.all(np.abs(direct - closed) <= margin), scale
        assert np.median(margin / direct) < 1e-2  # tight enough to skip most evaluations


def test_closed_form_applies_where_the_grid_is_uniform_with_a_step_target():
    cfg, sumsq = config.load("stepfit"), config.load("sumsq")
    assert cfg.task.val_bound(cfg.groups[0].model, 10000) is not None
    assert sumsq.task.val_bound(sumsq.groups[0].model, 2000) is None  # the default: no closed form
    eval_set = make_eval_set(*cfg.task.grid(), 10000)
    assert stepfit.grid_of(eval_set._replace(x=eval_set.x**2)) is None  # not uniform
    assert stepfit.grid_of(eval_set._replace(y=eval_set.x)) is None  # not a step


def with_margin(monkeypatch, extra) -> None:
    """stepfit.bound with `extra(params)` added to its margin (a huge one makes a model's direct value needed)."""
    bound = stepfit.bound

    def widened(params, *args):
        loss, margin = bound(params, *args)
        return loss, margin + extra(params)

    monkeypatch.setattr(stepfit, "bound", widened)


@pytest.mark.slow
@pytest.mark.parametrize("candidates", [trainer.CANDIDATES, (2, 3)])
def test_a_run_with_the_shortcut_reports_the_direct_runs_numbers(monkeypatch, candidates):
    """3000 steps (beyond 1000 intervals, so most steps are not logged and the shortcut skips
    them) with a threshold some models cross: stop steps, histories, final losses and parameters
    are the same bits as with every validation computed directly (a huge margin) -- with the
    closed form deciding which models are evaluated, and with a changing third of the models
    made to need their direct value at every interval (Binomial(16, 1/3) of each group: buffers
    of 2 and 3 or 8 and the whole-group fallback each serve hundreds of intervals). (The best
    parameters are ranked by the closed form either way: the same loss, rounded differently.)"""
    monkeypatch.setattr(trainer, "CANDIDATES", candidates)
    cfg = small("stepfit", "train.steps=3000", "train.stop_at=0.07", "sweep.n_seeds=16")
    fast = sweep.run(cfg, quiet=True)
    with_margin(monkeypatch, lambda params: jnp.where(jnp.abs(params["fc2"]["bias"][0] * 1e4) % 3 < 1, 1e30, 0.0))
    some = sweep.run(cfg, quiet=True)
    with_margin(monkeypatch, lambda params: 1e30)  # every validation direct, in the same program
    direct = sweep.run(cfg, quiet=True)
    stops = np.concatenate([np.asarray(s.stop_step) for s in direct.states])
    assert np.any(stops > 0) and np.any(stops < 0)  # both cases exercised
    for run in (fast, some):
        for a, b in zip(run.states, direct.states):
            for field in ("stop_step", "steps_done", "initial", "final", "params", "diverged_step", "best_val", "best_step"):
                chex.assert_trees_all_equal(getattr(a, field), getattr(b, field))
            for name in a.history:  # the last column is scratch (written by unlogged intervals)
                np.testing.assert_array_equal(np.asarray(a.history[name])[:, :-1], np.asarray(b.history[name])[:, :-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "width, activation, output_activation", [(1, "leaky_relu", True), (8, "leaky_relu", True), (8, "relu", False), (3, "relu", True)]
)
def test_training_on_the_grid_uses_the_grids_gradient_in_closed_form(width, activation, output_activation):
    """`full_batch_loss` (the speed device behind model.train_on = "grid") has the gradient of the
    plain formulation it replaces -- the mean squared error of the net on all 5001 grid points --
    up to float32 rounding, for parameters from torch's init range to far outside it; and only
    grid training uses it."""
    cfg = config.load("stepfit")
    model = MLP(width=width, activation=activation, negative_slope=0.001, output_activation=output_activation, train_on="grid")
    assert cfg.task.full_batch_loss(MLP(train_on="fresh")) is None
    closed = cfg.task.full_batch_loss(model)
    module = cfg.task.module(model)
    x, y = map(jax.numpy.asarray, cfg.task.grid())
    leaves, treedef = jax.tree.flatten(template(module, cfg.task.input_shape()))

    def gradients(key, scale):
        keys = jax.random.split(key, len(leaves))
        params = jax.tree.unflatten(
            treedef, [scale * jax.random.uniform(k, leaf.shape, minval=-1, maxval=1) for k, leaf in zip(keys, leaves)]
        )
        direct = jax.grad(lambda p: jax.numpy.mean((module.apply({"params": p}, x, train=True) - y) ** 2))(params)
        return jax.flatten_util.ravel_pytree(direct)[0], jax.flatten_util.ravel_pytree(jax.grad(closed)(params))[0]

    for scale in (0.3, 1.0, 30.0):
        direct, fast = map(np.asarray, jax.jit(jax.vmap(lambda k: gradients(k, scale)))(jax.random.split(jax.random.key(width), 2000)))
        relative = np.abs(fast - direct) / np.maximum(np.abs(direct).max(axis=1, keepdims=True), 1e-30)  # 0/0: a dead relu net
        assert np.all(np.isfinite(fast)) and relative.max() < 1e-3 and np.quantile(relative, 0.99) < 1e-5, scale
