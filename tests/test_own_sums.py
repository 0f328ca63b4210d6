"""own_sums: one model's sums and dots in an order fixed by its own shapes, whatever the block --
checked on the sizes where XLA:CPU's routing changes with the block (4,096 elements of the whole
block), and against the plain formulation it replaces."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit import own_sums, plan

BLOCKS = (2, 3, 5, 6, 41, 100)  # a block holds 2 models or more (plan.padded); 5 and 6 straddle 4,096 / 800


def one_model(x: jax.Array, w: jax.Array) -> dict[str, jax.Array]:
    """Sums of every kind a small net's step has: over a batch, over a batch keeping a width,
    over everything, a vector-vector dot (XLA strength-reduces it to a reduction), a
    matrix-vector one and a matrix-matrix one with an operand every model shares (which vmap
    alone would fold into one dot over the block)."""
    h = jnp.tanh(x[:, None] * w[None, :])  # [batch, width]
    return {
        "batch": jnp.sum(jnp.sin(x)),
        "batch_kept_width": jnp.sum(h, axis=0),
        "all": jnp.sum(h * h),
        "vector_dot": jnp.dot(x, jnp.cos(x)),
        "matrix_vector": h.T @ x,
        "shared_matrix": jnp.outer(w, jnp.cos(w)) @ h.T,
        "big": jnp.sum(jnp.tile(h, (4, 1))),  # 3,200 elements: YNNPACK's in every block
    }


def in_block(fn, xs: np.ndarray, w: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """fn vmapped over the first n models, compiled as the engine compiles it."""
    compiled = jax.jit(jax.vmap(fn, (0, None))).lower(xs[:n], w).compile(plan.compiler_options(jax.devices()[0]))
    return jax.tree.map(np.asarray, compiled(xs[:n], w))


@pytest.mark.parametrize("batch", [100, 700])
def test_a_model_sums_the_same_bits_in_every_block(batch):
    rng = np.random.default_rng(batch)
    xs, w = rng.standard_normal((max(BLOCKS), batch)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    alone = in_block(own_sums.own_order(one_model), xs, w, 2)
    for n in BLOCKS:
        block = in_block(own_sums.own_order(one_model), xs, w, n)
        for name, value in alone.items():
            np.testing.assert_array_equal(block[name][:2], value, err_msg=f"{name}, block of {n}")


def test_own_order_computes_the_plain_function():
    rng = np.random.default_rng(0)
    xs, w = rng.standard_normal((7, 300)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    plain, own = in_block(one_model, xs, w, 7), in_block(own_sums.own_order(one_model), xs, w, 7)
    for name in plain:
        np.testing.assert_allclose(own[name], plain[name], rtol=2e-6, atol=1e-4, err_msg=name)


def test_a_small_sum_stays_in_xla_s_own_code_and_a_big_one_in_ynnpack():
    """The rewrite's premise, on the optimized program: a block's small sum is no YNNPACK fusion
    even where the block's operand passes 4,096 elements; a big one (2,048 per model) is one."""
    for size, ynn in ((100, False), (1000, False), (2048, True)):
        fn = own_sums.own_order(lambda x: jnp.sum(jnp.sin(x)))
        text = jax.jit(jax.vmap(fn)).lower(jnp.ones((100, size))).compile(plan.compiler_options(jax.devices()[0])).as_text()
        assert ("__ynn_fusion" in text) == ynn, size


def test_a_chunked_sum_differentiates_and_batches_as_a_sum():
    x = jnp.linspace(-1.0, 1.0, 120).reshape(3, 40)
    summed = lambda v: own_sums.own_order(lambda y: jnp.sum(jnp.sin(y) * y))(v)  # noqa: E731
    np.testing.assert_allclose(jax.grad(summed)(x[0]), jnp.cos(x[0]) * x[0] + jnp.sin(x[0]), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(summed)(x), jnp.sum(jnp.sin(x) * x, axis=1), rtol=1e-6)


def test_an_own_dot_differentiates_and_batches_as_a_dot():
    """Under vmap in one or two levels, an operand shared or not, and under grad."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 5, 4)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    dot = own_sums.own_order(lambda x, y: x @ y)
    np.testing.assert_allclose(jax.vmap(jax.vmap(dot, (0, None)), (0, None))(a, b), a @ b, rtol=1e-5)
    c = a[0].transpose(0, 2, 1)  # [3, 4, 5]
    np.testing.assert_allclose(jax.vmap(dot, (None, 0))(b.T, c), b.T @ c, rtol=1e-5)
    grads = jax.grad(lambda x, y: jnp.sum(jnp.sin(dot(x, y))), (0, 1))(a[0, 0], b)
    expected = jax.grad(lambda x, y: jnp.sum(jnp.sin(x @ y)), (0, 1))(a[0, 0], b)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5)
