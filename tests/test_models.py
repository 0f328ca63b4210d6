"""Model shapes, the seed's manual init, and train vs eval mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit import config, inits, kernels, trainer
from jaxfit.experiment import template
from jaxfit.experiments import sumsq

SEED_FC1_W = [0.1, -0.1, 0.5, -0.5, 0.6, -0.6, 1.5, -1.5, 3.9, -3.9, 2.0, -2.0, 5.0, 1.0]
SEED_FC1_B = [0, 0, -0.05, -0.05, -0.24, -0.24, -1.35, -1.35, -8.58, -8.58, -7.8, -7.8, -27.5, -7.1]


def seed_subnet(x):
    """The seed's hand-made g(x) = fc2(relu(fc1 x)), written out in numpy float64."""
    hidden = np.maximum(np.outer(x, SEED_FC1_W) + np.asarray(SEED_FC1_B), 0)
    return hidden.sum(axis=1) + 0.01


def sumsq_params(cfg, init="manual", key=0):
    group = cfg.groups[0]
    module = cfg.task.module(group.model)
    index = group.model.init.index(init)
    return module, trainer.init_params(
        cfg.task, group.model, template(module, cfg.task.input_shape()), jnp.int32(index), jax.random.key(key)
    )


@pytest.mark.slow
def test_shapes():
    cfg = config.load("sumsq")
    module, params = sumsq_params(cfg)
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {
        "subnet": {"fc1": {"kernel": (1, 14), "bias": (14,)}, "fc2": {"kernel": (14, 1), "bias": (1,)}},
        "fc3": {"kernel": (64, 1), "bias": (1,)},
    }
    assert module.apply({"params": params}, jnp.zeros((5, 64)), train=False).shape == (5, 1)
    stepfit = config.load("stepfit")
    for group, width in zip(stepfit.groups, (1, 8)):
        module = stepfit.task.module(group.model)
        p = trainer.init_params(stepfit.task, group.model, template(module, stepfit.task.input_shape()), jnp.int32(0), jax.random.key(0))
        assert p["fc1"]["kernel"].shape == (1, width) and p["fc2"]["kernel"].shape == (width, 1)
        assert module.apply({"params": p}, jnp.zeros((7, 1)), train=False).shape == (7, 1)


def test_manual_init_is_the_seeds_14_relu_function():
    cfg = config.load("sumsq")
    module, params = sumsq_params(cfg)
    x = np.linspace(-5, 8, 1001).astype(np.float32)
    g = np.asarray(sumsq.subnet_function(cfg.groups[0].model, params, jnp.asarray(x)))
    np.testing.assert_allclose(g, seed_subnet(x.astype(np.float64)), rtol=1e-5, atol=1e-4)
    inputs = np.random.default_rng(0).uniform(-5, 8, (50, 64)).astype(np.float32)
    expected = seed_subnet(inputs.ravel().astype(np.float64)).reshape(50, 64).sum(1) - 0.01
    out = np.asarray(module.apply({"params": params}, inputs, train=False))[:, 0]
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # and it is "near optimal": close to sum(x^2)
    assert np.abs(out - (inputs.astype(np.float64) ** 2).sum(1)).max() / (inputs**2).sum(1).mean() < 0.05


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    cfg = config.load("sumsq")
    module, params = sumsq_params(cfg)
    x = jnp.asarray(np.random.default_rng(1).uniform(-5, 8, (32, 64)).astype(np.float32))
    eval_a = module.apply({"params": params}, x, train=False)
    eval_b = module.apply({"params": params}, x, train=False, rngs={"dropout": jax.random.key(9)})
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = module.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = module.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})
    train_a2 = module.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(train_a, train_b) and not np.allclose(train_a, eval_a)
    np.testing.assert_array_equal(train_a, train_a2)


def test_dropout_masks_differ_across_the_64_shared_subnets():
    """The 64 copies of the subnet must not share one mask. With dropout only on the hidden
    layer and identical inputs, the 64 subnet outputs would all be equal if the masks were
    shared (and they are, in eval mode)."""
    cfg = config.load("sumsq", ["model.dropout_inputs=0", "model.dropout_outputs=0", "model.dropout_hidden=0.5"])
    module, params = sumsq_params(cfg)
    x = jnp.full((1, 64), 7.0)

    def subnet_outputs(train):  # the gradient of the output w.r.t. fc3's kernel = the 64 subnet outputs
        grads = jax.grad(lambda p: module.apply({"params": p}, x, train=train, rngs={"dropout": jax.random.key(3)}).sum())(params)
        return np.round(np.asarray(grads["fc3"]["kernel"]), 4)

    assert len(np.unique(subnet_outputs(False))) == 1
    assert len(np.unique(subnet_outputs(True))) > 5


def test_step_uniform_is_uniform_and_independent_across_elements_steps_and_keys():
    """kernels.step_uniform (a fresh batch's draws): 10^6 numbers in [0, 1) on a 2^-24 grid,
    uniform (chi-square over 1,000 bins below the 0.1 % point), uncorrelated between neighbours,
    between consecutive steps and between two keys (|r| < 4 / sqrt(n)); a step's draws are a
    function of (key, step) alone."""
    draw = jax.jit(lambda key, step: kernels.step_uniform(key, step, (1000, 1000)))
    a, b, c = (np.asarray(draw(jax.random.key(k), jnp.int32(step))).ravel() for k, step in ((0, 7), (0, 8), (1, 7)))
    n = a.size
    assert a.min() >= 0 and a.max() < 1 and np.all(a * 2**24 == np.round(a * 2**24))
    counts = np.bincount((a * 1000).astype(int), minlength=1000)
    assert np.sum((counts - n / 1000) ** 2 / (n / 1000)) < 1143  # chi-square, 999 degrees of freedom, 0.1 % point
    for x, y in ((a[1:], a[:-1]), (a, b), (a, c)):
        assert abs(np.corrcoef(x, y)[0, 1]) < 4 / np.sqrt(n)
    np.testing.assert_array_equal(np.asarray(draw(jax.random.key(0), jnp.int32(7))).ravel(), a)
    assert not np.array_equal(np.asarray(kernels.step_uniform(jax.random.key(0), jnp.int32(2**20 + 7), (1000,))), a[:1000])


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("with_mask", [True, False])
def test_subnet_matches_autodiff_of_the_layers_it_replaces(activation, with_mask):
    """kernels.subnet_apply (hidden units on a leading axis, a hand-written backward pass) gives
    the value and gradients of Dense(1->14) -> act -> dropout -> Dense(14->1) written plainly
    and differentiated by JAX, for the same mask."""
    cfg = config.load("sumsq", [f"model.activation={activation}", "model.negative_slope=0.1"])
    model = cfg.groups[0].model
    params = inits.he(template(cfg.task.module(model), cfg.task.input_shape()), jax.random.key(0))["subnet"]
    params["fc1"]["bias"] = jax.random.normal(jax.random.key(1), (14,))  # units switching on and off inside the range
    x = jax.random.uniform(jax.random.key(2), (30, 64), minval=-5, maxval=8)
    kept = kernels.dropout_mask(jax.random.key(3), (14, 30, 64), 0.2) if with_mask else None
    keep = 0.8 if with_mask else 1.0
    weight = jax.random.normal(jax.random.key(4), (30, 64))
    slope = model.slope
    act = lambda v: jnp.where(v > 0, v, slope * v)  # noqa: E731 -- ReLU for slope 0

    def plain(params, x):
        hidden = act(x[..., None] * params["fc1"]["kernel"][0] + params["fc1"]["bias"])  # [30, 64, 14]
        if kept is not None:
            hidden = jnp.where(jnp.moveaxis(kept, 0, -1), hidden / keep, 0.0)
        return hidden @ params["fc2"]["kernel"][:, 0] + params["fc2"]["bias"][0]

    def ours(params, x):
        return kernels.subnet_apply(x, kept, params, model.slope, keep)

    value, pullback = jax.vjp(ours, params, x)
    expected_value, expected_pullback = jax.vjp(plain, params, x)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-5 * np.abs(expected_value).max())
    for ours_leaf, expected_leaf in zip(jax.tree.leaves(pullback(weight)), jax.tree.leaves(expected_pullback(weight))):
        np.testing.assert_allclose(ours_leaf, expected_leaf, rtol=1e-4, atol=1e-4 * np.abs(expected_leaf).max())


def test_keys_depend_on_seed_index_only():
    a = trainer.model_keys(350, jnp.int32(3))
    b = trainer.model_keys(350, jnp.int32(3))
    c = trainer.model_keys(350, jnp.int32(4))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(jax.random.key_data(x), jax.random.key_data(y))
        assert not np.array_equal(jax.random.key_data(x), jax.random.key_data(z))


def test_dropout_keeps_1_minus_p_scales_and_draws_independently():
    """jaxfit's dropout on 10^6 ones: keep fraction within 4 sigma of 1-p, kept values exactly
    1/(1-p), no correlation between neighbours, between two keys, or between two counter ranges
    of one key (sumsq's three sites); identity in the model's eval mode."""
    p, n = 0.2, 1_000_000
    ones = jnp.ones((1000, 1000), jnp.float32)
    a, b, c = (np.asarray(kernels.dropout(ones, jax.random.key(k), p, offset)) for k, offset in ((0, 0), (1, 0), (0, n)))
    kept = a != 0
    assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)
    assert np.all(a[kept] == np.float32(1 / (1 - p)))
    for x, y in ((kept[:, 1:], kept[:, :-1]), (kept[1:], kept[:-1]), (kept, b != 0), (kept, c != 0)):
        assert abs(np.corrcoef(x.ravel(), y.ravel())[0, 1]) < 4 / np.sqrt(n)
    # eval mode: the model with dropout is the model without
    with_dropout, without = (
        config.load("sumsq", overrides) for overrides in ([], [f"model.dropout_{site}=0" for site in ("inputs", "hidden", "outputs")])
    )
    module, params = sumsq_params(with_dropout)
    x = jnp.asarray(np.random.default_rng(2).uniform(-5, 8, (16, 64)).astype(np.float32))
    plain = without.task.module(without.groups[0].model)
    np.testing.assert_array_equal(module.apply({"params": params}, x, train=False), plain.apply({"params": params}, x, train=False))
    # the gradient (with the mask kept from the forward pass) is the mask's, scaled
    grad = jax.grad(lambda x: jnp.sum(kernels.dropout(x, jax.random.key(0), p)))(ones)
    np.testing.assert_array_equal(np.asarray(grad), a)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "dropout-on"])
def test_the_fast_subnets_are_the_nn_vmap_definition(activation, train_mode):
    """The model's definition maps one input's Subnet over the 64 inputs with nn.vmap; its fast
    execution (kernels.SharedScalarSubnet, the default) has the same parameter tree and gives the
    same outputs and the same gradient for every parameter and input, without dropout and with
    it (the same masks: they are drawn outside the subnets and passed in)."""
    overrides = [f"model.activation={activation}", "model.negative_slope=0.1"]
    fast, plain = (config.load("sumsq", [*overrides, f"model.fast={flag}"]) for flag in ("true", "false"))
    modules = [cfg.task.module(cfg.groups[0].model) for cfg in (fast, plain)]
    shapes = [template(m, (64,)) for m in modules]
    assert jax.tree.map(lambda a: a.shape, shapes[0]) == jax.tree.map(lambda a: a.shape, shapes[1])
    params = trainer.init_params(fast.task, fast.groups[0].model, shapes[0], jnp.int32(1), jax.random.key(0))  # he
    params["subnet"]["fc1"]["bias"] = jax.random.normal(jax.random.key(1), (14,))  # units switching inside the range
    x = jax.random.uniform(jax.random.key(2), (40, 64), minval=-5, maxval=8)
    weight = jax.random.normal(jax.random.key(3), (40, 1))

    def loss(module):
        return lambda p, x: jnp.sum(weight * module.apply({"params": p}, x, train=train_mode, rngs={"dropout": jax.random.key(4)}))

    (value, grads), (expected_value, expected_grads) = (jax.value_and_grad(loss(m), argnums=(0, 1))(params, x) for m in modules)
    scale = float(jnp.abs(expected_value)) + 1.0
    np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-5 * scale)
    for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(jnp.abs(theirs).max()))


def test_epoch_order_is_a_fresh_permutation_every_epoch():
    task = config.load("sumsq").task
    data = task.data()
    key = jax.random.key(5)
    first, again, second = (np.asarray(task.epoch_order(data, key, jnp.int32(e))) for e in (0, 0, 1))
    np.testing.assert_array_equal(np.sort(first), np.arange(90_000))
    np.testing.assert_array_equal(first, again)
    assert np.mean(first == second) < 0.001 and abs(np.corrcoef(first, np.arange(90_000))[0, 1]) < 0.02


def test_epoch_order_is_uniform_over_permutations():
    """All 24 orders of 4 samples, equally often over 24,000 epochs (chi-square, 23 degrees of
    freedom, p = 0.001 bound 49.7): no order favoured, e.g. by ties kept in index order."""
    data = {"train": (np.zeros((4, 64), np.float32), np.zeros((4, 1), np.float32))}
    task = config.load("sumsq").task
    orders = jax.jit(jax.vmap(lambda e: task.epoch_order(data, jax.random.key(0), e)))(jnp.arange(24_000))
    codes = np.asarray(orders) @ np.array([64, 16, 4, 1])
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 24 and np.sum((counts - 1000.0) ** 2 / 1000.0) < 49.7


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 7, 100, 128])
def test_fixed_order_sum_is_the_sum_in_an_order_fixed_by_the_shape(n):
    """The sum of jnp.sum to rounding; and each row's bits are the same whether it is summed alone
    or among 1,000 rows (XLA's own reduction may associate differently with the row count)."""
    values = jax.random.normal(jax.random.key(n), (1000, n))
    np.testing.assert_allclose(kernels.fixed_order_sum(values), jnp.sum(values, axis=-1), rtol=1e-5, atol=1e-5)
    together = np.asarray(jax.jit(kernels.fixed_order_sum)(values))
    alone = np.asarray([jax.jit(kernels.fixed_order_sum)(values[i : i + 1])[0] for i in (0, 500, 999)])
    np.testing.assert_array_equal(alone, together[[0, 500, 999]])
