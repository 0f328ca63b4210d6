"""jaxfit against a PyTorch reference of the seeds (jaxfit/experiments/torch_reference.py), float32, CPU.

Skipped, with the install command as the reason, where torch is missing; CI installs it.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch missing: pip install torch==2.13.0 (the CPU build) for the parity tests")
from scipy import stats  # noqa: E402

from jaxfit import config, kernels, optim, plan, sweep, trainer  # noqa: E402
from jaxfit.experiment import template  # noqa: E402
from jaxfit.experiments import stepfit as stepfit_experiment  # noqa: E402
from jaxfit.experiments import sumsq as sumsq_experiment  # noqa: E402
from jaxfit.experiments import torch_reference as ref  # noqa: E402

torch.set_num_threads(1)


def coords_of(cfg, group_index=0, model=0) -> trainer.Coords:
    c = plan.expand(cfg)[group_index].coords
    return trainer.Coords(
        jnp.int32(c.seed_index[model]), jnp.int32(c.init_index[model]), {k: jnp.float32(v[model]) for k, v in c.hp.items()}
    )


def jax_trajectory(cfg, group_index, params, x, y):
    """jaxfit's own optimiser step (trainer.make_step), scanned over the given batches."""
    group = cfg.groups[group_index]
    step_fn = trainer.make_step(cfg, group)
    coords = coords_of(cfg, group_index)

    @jax.jit
    def go(params, x, y):
        def body(carry, inputs):
            params, opt_state = carry
            xs, ys, t = inputs
            params, opt_state, loss = step_fn(params, opt_state, xs, ys, t, coords)
            return (params, opt_state), loss

        opt_state = optim.chain(group, coords.hp, 0.0).init(params)  # the state does not depend on the lr
        (params, _), losses = jax.lax.scan(body, (params, opt_state), (x, y, jnp.arange(len(x), dtype=jnp.int32)))
        return params, losses

    return go(params, x, y)


def flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(params)])


# ----------------------------------------------------------------------------- 1. schedules


def torch_lrs(make_scheduler, n_steps: int, steps_per_epoch: int = 1) -> np.ndarray:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-4)
    sched = make_scheduler(opt)
    lrs = []
    for step in range(n_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if (step + 1) % steps_per_epoch == 0:
            sched.step()
    return np.asarray(lrs)


def jax_lrs(group, n_steps: int, steps_per_epoch: int) -> np.ndarray:
    hp = {k: jnp.float32(v) for k, v in optim.per_model(optim.hyperparameters(group)).items()}
    steps = jnp.arange(n_steps, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(group.schedule.lr_schedule(hp, steps_per_epoch)))(steps))


def test_step_lr_matches_torch_stepped_per_epoch():
    group = config.load("sumsq").groups[0]
    expected = torch_lrs(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.9), 60 * 900, 900)
    np.testing.assert_allclose(jax_lrs(group, 60 * 900, 900), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_lr_matches_torch_for_five_cycles(mode):
    gamma = ["groups.wide.schedule.gamma=0.9995"] if mode == "exp_range" else []  # only exp_range reads it (torch's too)
    group = config.load("stepfit", [f"groups.wide.schedule.mode={mode}", *gamma]).groups[1]
    expected = torch_lrs(
        lambda opt: torch.optim.lr_scheduler.CyclicLR(
            opt, base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode=mode, gamma=0.9995, cycle_momentum=False
        ),
        5500,
    )
    np.testing.assert_allclose(jax_lrs(group, 5500, 1), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- 2. forward


def test_same_parameters_give_the_same_outputs():
    sumsq, stepfit = config.load("sumsq"), config.load("stepfit")
    torch.manual_seed(0)
    x = np.random.default_rng(0).uniform(-5, 8, (256, 64)).astype(np.float32)
    for net in (ref.SumSq().manual_init(), ref.SumSq()):
        net.eval()
        expected = net(torch.as_tensor(x)).detach().numpy()
        module = sumsq.task.module(sumsq.groups[0].model)
        ours = np.asarray(module.apply({"params": sumsq_experiment.from_torch(ref.state_numpy(net))}, x, train=False))
        np.testing.assert_allclose(ours, expected, atol=1e-5 * np.abs(expected).max())
    grid = stepfit.task.grid()[0]
    for group, width in zip(stepfit.groups, (1, 8)):
        for seed in range(5):
            torch.manual_seed(seed)
            net = ref.StepModel(width)
            expected = net(torch.as_tensor(grid)).detach().numpy()
            module = stepfit.task.module(group.model)
            ours = np.asarray(module.apply({"params": stepfit_experiment.from_torch(ref.state_numpy(net))}, grid, train=False))
            np.testing.assert_allclose(ours, expected, atol=1e-5 * max(np.abs(expected).max(), 1e-3))


# ----------------------------------------------------------------------------- 3. trajectories


def sumsq_batches(n_steps: int, seed: int = 0):
    x, y = config.load("sumsq").task.dataset()
    order = np.random.default_rng(seed).permutation(90_000)
    index = np.concatenate([order, np.random.default_rng(seed + 1).permutation(90_000)])[: n_steps * 100]
    return x[index].reshape(n_steps, 100, 64), y[index].reshape(n_steps, 100, 1)


# Tolerances. Both sides compute in float32 with different summation orders (torch's mean and
# matmul kernels vs XLA's), so each step differs in the last bits and those differences are
# carried forward. Measured here (torch 2.13.0 CPU, jax 0.10.2): sumsq over 1800 Adam steps,
# losses within 2.0e-5 relative and parameters within 8.7e-9 of their largest value (while
# training moves them by 3.9e-4 of it); stepfit over 3000 steps, losses within 1.8e-7 (narrow)
# and 4.2e-5 (wide, cyclic) and parameters within 2.4e-7 / 1.1e-6. The tolerances sit 5-100x
# above those and far below what a semantic slip (an lr one step off, a missed scheduler step,
# Adam's eps inside the sqrt) produces.
SUMSQ_RTOL_LOSS, SUMSQ_RTOL_PARAMS = 2e-4, 1e-6
STEPFIT_ATOL_LOSS, STEPFIT_ATOL_PARAMS = 2e-4, 2e-5


@pytest.mark.slow
def test_sumsq_adam_step_lr_trajectory_matches_torch():
    """Manual init, dropout off, Adam 1e-4 and StepLR with step_size=1 epoch (so that the
    per-epoch stepping is exercised inside 2 epochs), 1800 steps."""
    overrides = [
        "model.dropout_inputs=0",
        "model.dropout_hidden=0",
        "model.dropout_outputs=0",
        "model.init=manual",
        "schedule.step_size=1",
        "schedule.gamma=0.5",
        "train.epochs=2",
        "sweep.n_seeds=1",
        "task.eval_train=false",
    ]
    cfg = config.load("sumsq", overrides)
    x, y = sumsq_batches(1800)
    net = ref.SumSq(p=0.0).manual_init()
    start = ref.state_numpy(net)
    torch_losses = ref.train_sumsq(net, x, y, steps_per_epoch=900, step_size=1, gamma=0.5)
    params = sumsq_experiment.from_torch(start)
    final, losses = jax_trajectory(cfg, 0, params, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(losses), torch_losses, rtol=SUMSQ_RTOL_LOSS)
    expected = flat(sumsq_experiment.from_torch(ref.state_numpy(net)))
    np.testing.assert_allclose(flat(final), expected, rtol=0, atol=SUMSQ_RTOL_PARAMS * np.abs(expected).max())
    # the whole engine, given the same start and batches, ends in the same place
    result = sweep.run(cfg, quiet=True, initial_params={"main": jax.tree.map(lambda a: a[None], params)}, batches=(x, y))
    np.testing.assert_allclose(
        flat(jax.tree.map(lambda a: a[0], result.states[0].params)), expected, rtol=0, atol=SUMSQ_RTOL_PARAMS * np.abs(expected).max()
    )
    epoch_means = np.asarray(torch_losses).reshape(2, 900).mean(1)
    np.testing.assert_allclose(np.asarray(result.states[0].history["train_loss"])[0, :2], epoch_means, rtol=SUMSQ_RTOL_LOSS)


@pytest.mark.slow
@pytest.mark.parametrize("group_index, cyclic", [(0, False), (1, True)], ids=["narrow-sgd", "wide-sgd-cyclic"])
def test_stepfit_trajectories_match_torch(group_index, cyclic):
    cfg = config.load("stepfit", ["train.steps=3000", "sweep.n_seeds=1"])
    group = cfg.groups[group_index]
    stepfit = cfg.task
    moved = 0
    for seed in range(4):
        torch.manual_seed(100 + seed)
        net = ref.StepModel(group.model.width)
        start = ref.state_numpy(net)
        x = torch.rand(3000, 100, 1).numpy()
        y = stepfit.target(x)
        torch_losses = ref.train_stepfit(net, x, y, cyclic)
        final, losses = jax_trajectory(cfg, group_index, stepfit_experiment.from_torch(start), jnp.asarray(x), jnp.asarray(y))
        np.testing.assert_allclose(np.asarray(losses), torch_losses, atol=STEPFIT_ATOL_LOSS)
        chex.assert_trees_all_close(final, stepfit_experiment.from_torch(ref.state_numpy(net)), rtol=0, atol=STEPFIT_ATOL_PARAMS)
        moved += abs(torch_losses[-1] - torch_losses[0]) > 0.05
    assert moved >= 1  # at least one seed actually learned, so the comparison is not of frozen nets


# Every optimiser jaxfit offers, as a config table for the wide stepfit net and as torch's own.
OPTIMISERS = {
    "sgd-momentum": ('{name="sgd", lr=0.05, momentum=0.9}', lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "sgd-nesterov-l2": (
        '{name="sgd", lr=0.05, momentum=0.9, nesterov=true, weight_decay=0.01}',
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "adam-l2": ('{name="adam", lr=0.01, weight_decay=0.01}', lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
    "adamw": ('{name="adamw", lr=0.01, weight_decay=0.1}', lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    "rmsprop": ('{name="rmsprop", lr=0.003}', lambda p: torch.optim.RMSprop(p, lr=0.003)),
    "rmsprop-momentum-l2": (
        '{name="rmsprop", lr=0.001, alpha=0.9, momentum=0.5, weight_decay=0.01}',
        lambda p: torch.optim.RMSprop(p, lr=0.001, alpha=0.9, momentum=0.5, weight_decay=0.01),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIMISERS)
def test_every_optimiser_follows_torch(name):
    """From the same start on the same batches, jaxfit's optax chain and torch's optimiser give
    the same loss at every one of 200 steps and end at the same parameters (2 seeds). (Longer,
    float32 rounding differences grow chaotically with some of these: RMSprop with momentum
    agrees to 1e-7 over 100 steps and drifts apart by step 300.)"""
    table, make = OPTIMISERS[name]
    cfg = config.load(
        "stepfit", ["train.steps=200", "sweep.n_seeds=1", f"groups.wide.optim={table}", 'groups.wide.schedule={name="constant"}']
    )
    for seed in range(2):
        torch.manual_seed(300 + seed)
        net = ref.StepModel(8)
        start = ref.state_numpy(net)
        x = torch.rand(200, 100, 1).numpy()
        y = cfg.task.target(x)
        torch_losses = ref.train_stepfit(net, x, y, cyclic=False, optimizer=make)
        final, losses = jax_trajectory(cfg, 1, stepfit_experiment.from_torch(start), jnp.asarray(x), jnp.asarray(y))
        np.testing.assert_allclose(np.asarray(losses), torch_losses, atol=STEPFIT_ATOL_LOSS)
        chex.assert_trees_all_close(final, stepfit_experiment.from_torch(ref.state_numpy(net)), rtol=0, atol=STEPFIT_ATOL_PARAMS)
        assert abs(torch_losses[-1] - torch_losses[0]) > 0.05  # it learned: not a comparison of frozen nets


@pytest.mark.slow
def test_training_on_the_grid_follows_torch_full_batch_descent():
    """model.train_on = "grid" (the original poster's data): the engine's own run, started from
    torch's init, follows torch training on the whole linspace(0, 1000, 5001) / 1000 grid every
    step -- the same loss at every one of 300 steps (to 3e-8) and the same final parameters -- for
    the narrow and the wide net, SGD 0.1. (With the seed's CyclicLR the wide net agrees to 1e-6
    until the rate nears its 0.5 peak, where full-batch descent turns unstable and rounding
    differences grow.)"""
    cfg = config.load("stepfit", ["train.steps=300", "sweep.n_seeds=1", "model.train_on=grid", 'schedule={name="constant"}'])
    grid = np.asarray(cfg.task.grid()[0])
    assert grid.shape == (5001, 1) and grid[-1, 0] == 1.0
    torch.manual_seed(7)
    nets = [ref.StepModel(group.model.width) for group in cfg.groups]
    initial = {
        group.name: jax.tree.map(lambda a: a[None], stepfit_experiment.from_torch(ref.state_numpy(net)))
        for group, net in zip(cfg.groups, nets)
    }
    result = sweep.run(cfg, quiet=True, initial_params=initial)
    x = np.repeat(grid[None], 300, axis=0)
    for group, net, state in zip(cfg.groups, nets, result.states):
        torch_losses = ref.train_stepfit(net, x, cfg.task.target(x), cyclic=group.schedule.name == "cyclic")
        assert int(state.steps_done[0]) == 300 and abs(torch_losses[-1] - torch_losses[0]) > 0.01  # trained, all the way
        np.testing.assert_allclose(np.asarray(state.history["train_loss"])[0, :300], torch_losses, atol=STEPFIT_ATOL_LOSS)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a: a[0], state.params),
            stepfit_experiment.from_torch(ref.state_numpy(net)),
            rtol=0,
            atol=STEPFIT_ATOL_PARAMS,
        )


# ----------------------------------------------------------------------------- 4. init


def jax_init_samples(model_cfg, task, scheme: str, n: int) -> dict:
    module = task.module(model_cfg)
    shapes = template(module, task.input_shape())
    index = jnp.int32(model_cfg.init.index(scheme))
    draw = jax.jit(jax.vmap(lambda k: trainer.init_params(task, model_cfg, shapes, index, k)))
    return jax.tree.map(np.asarray, draw(jax.random.split(jax.random.key(0), n)))


def torch_init_samples(make, scheme: str, n: int) -> dict:
    out = {}
    for seed in range(n):
        torch.manual_seed(seed)
        net = make()
        if scheme == "he":
            for layer in net.modules():
                if isinstance(layer, torch.nn.Linear):
                    torch.nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                    torch.nn.init.zeros_(layer.bias)
        for k, v in ref.state_numpy(net).items():
            out.setdefault(k, []).append(v.ravel())
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["torch_default", "he"])
def test_init_distributions_match_torch(scheme):
    """Per parameter tensor, a two-sample KS test of the pooled values over 2000 models; the
    same test must reject a bound or std 20% off, so it has the power to see a wrong fan
    (fan_out for fan_in is a factor sqrt(8) to 8 here) or a wrong gain (sqrt(2) or more)."""
    stepfit = config.load("stepfit", [f"model.init={scheme}"])
    sumsq = config.load("sumsq", [f"model.init={scheme}"])
    cases = [
        (stepfit.groups[1].model, stepfit.task, lambda: ref.StepModel(8), {"linear1": ("fc1",), "linear2": ("fc2",)}),
        (sumsq.groups[0].model, sumsq.task, ref.SumSq, {"fc1": ("subnet", "fc1"), "fc2": ("subnet", "fc2"), "fc3": ("fc3",)}),
    ]
    for model_cfg, task, make, names in cases:
        ours = jax_init_samples(model_cfg, task, scheme, 2000)
        theirs = torch_init_samples(make, scheme, 2000)
        for torch_name, path in names.items():
            layer = ours
            for part in path:
                layer = layer[part]
            for torch_leaf, leaf in (("weight", "kernel"), ("bias", "bias")):
                a, b = layer[leaf].ravel(), theirs[f"{torch_name}.{torch_leaf}"]
                if scheme == "he" and leaf == "bias":
                    assert not a.any() and not b.any()
                    continue
                assert stats.ks_2samp(a, b).pvalue > 1e-3, (torch_name, torch_leaf)
                assert stats.ks_2samp(a * 1.2, b).pvalue < 1e-3, (torch_name, torch_leaf)


# ----------------------------------------------------------------------------- 5. dropout


def test_dropout_semantics_match_torch():
    """Keep with probability 1-p, kept values scaled by 1/(1-p), independent per element --
    on both sides (jaxfit's counter-hash dropout, torch.nn.Dropout), checked on 10^6 elements;
    identity in eval mode (torch's here, jaxfit's model's in test_models); and two keys give
    independent masks."""
    p, n = 0.2, 1_000_000
    ones = np.ones((1000, 1000), np.float32)
    ours = np.asarray(kernels.dropout(jnp.asarray(ones), jax.random.key(0), p))
    layer = torch.nn.Dropout(p)
    theirs = layer(torch.as_tensor(ones)).numpy()
    for out in (ours, theirs):
        kept = out != 0
        assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)  # binomial, 4 sigma
        assert np.all(out[kept] == np.float32(1 / (1 - p)))
        k = kept.astype(np.float64)
        for a, b in ((k[:, 1:], k[:, :-1]), (k[1:], k[:-1])):  # neighbours are independent
            assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 4 / np.sqrt(n)
    layer.eval()
    np.testing.assert_array_equal(layer(torch.as_tensor(ones)).numpy(), ones)
    other_key = np.asarray(kernels.dropout(jnp.asarray(ones), jax.random.key(1), p)) != 0
    assert abs(np.corrcoef((ours != 0).ravel(), other_key.ravel())[0, 1]) < 4 / np.sqrt(n)  # keys give independent masks


# ----------------------------------------------------------------------------- 6. end to end, dropout on


@pytest.mark.slow
def test_sumsq_with_dropout_agrees_with_torch_within_seed_spread():
    """Manual init, dropout 0.2 everywhere, Adam 1e-4: 8 seeds x 3 epochs on each side, on a
    training set cut to 9,000 samples (90 steps per epoch) to keep torch's side short. The
    per-epoch mean train-mode loss and the eval-mode validation loss of the two frameworks
    agree within 4 standard errors of their difference."""
    n_seeds, epochs = 8, 3
    cfg = config.load(
        "sumsq",
        [
            "task.n_samples=19000",
            "task.n_train=9000",
            f"train.epochs={epochs}",
            f"sweep.n_seeds={n_seeds}",
            "model.init=manual",
            "task.eval_train=false",
        ],
    )
    result = sweep.run(cfg, quiet=True)
    jax_train = np.asarray(result.states[0].history["train_loss"])[:, :epochs]
    jax_val = np.asarray(result.states[0].history["val_loss"])[:, :epochs]
    x, y = cfg.task.dataset()
    torch_train, torch_val = [], []
    for seed in range(n_seeds):
        torch.manual_seed(seed)
        net = ref.SumSq().manual_init()
        order = np.concatenate([np.random.default_rng(seed * 100 + e).permutation(9000) for e in range(epochs)])
        losses = ref.train_sumsq(net, x[order].reshape(-1, 100, 64), y[order].reshape(-1, 100, 1), steps_per_epoch=90)
        torch_train.append(np.asarray(losses).reshape(epochs, 90).mean(1))
        torch_val.append(ref.mse(net, x[9000:], y[9000:]))
    for ours, theirs in ((jax_train, np.asarray(torch_train)), (jax_val[:, -1], np.asarray(torch_val))):
        difference = ours.mean(0) - theirs.mean(0)
        stderr = np.sqrt(ours.var(0, ddof=1) / n_seeds + theirs.var(0, ddof=1) / n_seeds)
        assert np.all(np.abs(difference) < 4 * stderr + 1e-3 * np.abs(theirs.mean(0))), (ours.mean(0), theirs.mean(0), stderr)


@pytest.mark.parametrize("width", [1, 8])
def test_the_benchmarks_hand_written_gradient_is_autograds(width):
    """python -m jaxfit.bench's torch_by_hand baseline: its hand-written stepfit gradient equals
    autograd's through torch_reference.StepModel, model by model."""
    from jaxfit import bench

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 100, generator=gen)
    y = (x > 0.1).float()
    nets = [ref.StepModel(width) for _ in range(3)]
    names = ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias")
    w1, b1, w2, b2 = (torch.stack([dict(n.named_parameters())[name].detach().reshape(-1) for n in nets]) for name in names)
    params = (w1, b1, w2, b2.reshape(3))
    loss, grads = bench.leaky_net_grads(torch, params, x, y)
    for i, net in enumerate(nets):
        expected = torch.nn.functional.mse_loss(net(x[i, :, None]), y[i, :, None])
        expected.backward()
        torch.testing.assert_close(loss[i], expected.detach().reshape(()))
        for grad, name in zip(grads, names):
            torch.testing.assert_close(grad[i].reshape(-1), dict(net.named_parameters())[name].grad.reshape(-1), rtol=1e-5, atol=1e-7)
