"""What each speed device of jaxfit/kernels.py buys, measured side by side in one process.

    python results/kernels/measure.py [--rounds 3] [--only NAME] [--out results/kernels/measure.json]

For each device, a workload's compiled chunk is built twice -- as jaxfit runs it, and with the
device replaced by the plain formulation it stands for (the replacement is patched in only while
the chunk is traced) -- and the two are timed in alternating blocks, `--rounds` times, after a
warm-up call each. Workloads as the benchmark's: sumsq with dropout (20 models, the faithful
count, Adam + StepLR, one 900-step epoch per call), stepfit narrow + SGD and wide + CyclicLR (100
models, 1,000 steps per call, validation on the grid every step through the closed-form filter).
Prints a markdown table of model-steps/s (median over rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import statistics
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfit import config, experiment, kernels, plan, sweep
from jaxfit.experiments import stepfit


def sumsq_config(*overrides: str) -> config.Config:
    return config.load("sumsq", ["train.epochs=50", "sweep.n_seeds=10", "task.eval_train=false", "execution.chunk_epochs=1", *overrides])


def stepfit_config(group: str) -> config.Config:
    raw = config.to_dict(config.load("stepfit", ["train.steps=1000000", "sweep.n_seeds=100", "execution.chunk_epochs=1000"]))
    raw["groups"] = {group: raw["groups"][group]}
    raw["train"].pop("stop_at")  # every model trains every step, as in the benchmark
    return config.from_dict(raw, "measure")


@contextlib.contextmanager
def patched(target: object, name: str, value: object) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


def threefry_bits(key: jax.Array, shape: tuple[int, ...], offset: int = 0) -> jax.Array:
    """What counter_bits replaces: threefry bits, one key per dropout site (folded from the offset)."""
    return jax.random.bits(jax.random.fold_in(key, offset), shape, jnp.uint32)


def plain_mask(x: jax.Array, kept: jax.Array, keep: float) -> jax.Array:
    """What apply_mask's custom VJP replaces: autodiff of the select."""
    return jnp.where(kept, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


# The DELETED device (jaxfit/kernels.py until the seventh session), kept here to re-measure it.
@jax.custom_vjp
def outer_product(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    """lhs [..., 1] x rhs [1, N] as a broadcast multiply. Its gradients are written as the dots
    they are: autodiff of the multiply gives reduce(broadcast(lhs) * cotangent), which XLA on CPU
    materialises at [models, batch, hidden] before reducing (~1.8x for 1->1->1 nets)."""
    return lhs * rhs[0]


def _outer_product_forward(lhs: jax.Array, rhs: jax.Array) -> tuple[jax.Array, tuple]:
    return lhs * rhs[0], (lhs, rhs)


def _outer_product_backward(residuals: tuple, cotangent: jax.Array) -> tuple[jax.Array, jax.Array]:
    lhs, rhs = residuals
    rows = tuple(range(lhs.ndim - 1))
    d_rhs = jax.lax.dot_general(lhs, cotangent, ((rows, rows), ((), ())))  # [1, N]
    d_lhs = jax.lax.dot_general(cotangent, rhs, (((cotangent.ndim - 1,), (1,)), ((), ())))  # [..., 1]
    return d_lhs, d_rhs


outer_product.defvjp(_outer_product_forward, _outer_product_backward)


def fused_dense_product(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None, preferred_element_type=None) -> jax.Array:
    """nn.Dense's contraction (inputs [..., K] x kernel [K, N]). With K = 1 (a first layer
    of one input) it is `outer_product`, which XLA fuses with the activation around it; as a dot with an
    inner size of 1 it wrote every [models, batch, hidden] intermediate to memory. Larger K (a
    64-input layer) stays a dot: a multiply-and-sum measured slower there."""
    (contract_lhs, contract_rhs), batch = dimension_numbers
    assert contract_lhs == (lhs.ndim - 1,) and contract_rhs == (0,) and batch == ((), ()), dimension_numbers
    if lhs.shape[-1] == 1:
        return outer_product(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type)


def with_outer_product() -> contextlib.AbstractContextManager:
    """stepfit's nn.Dense layers computed with the deleted fused_dense_product."""
    fused = types.SimpleNamespace(Dense=functools.partial(nn.Dense, dot_general=fused_dense_product))
    return patched(stepfit, "nn", fused)


def plain_sum(values: jax.Array) -> jax.Array:
    """What fixed_order_sum replaces: XLA's reduction (its order may depend on the model count)."""
    return jnp.sum(values, axis=-1)


# name: (workload config, what the plain formulation needs: a context manager, or a config)
DEVICES: dict[str, tuple[Callable[[], config.Config], Callable[[], contextlib.AbstractContextManager | config.Config]]] = {
    "SharedScalarSubnet vs nn.vmap(Subnet) (sumsq)": (sumsq_config, lambda: sumsq_config("model.fast=false")),
    "counter-hash dropout vs threefry (sumsq)": (sumsq_config, lambda: patched(kernels, "counter_bits", threefry_bits)),
    "apply_mask VJP vs autodiff (sumsq)": (sumsq_config, lambda: patched(kernels, "apply_mask", plain_mask)),
    "fixed_order_sum vs jnp.sum (sumsq)": (sumsq_config, lambda: patched(experiment, "fixed_order_sum", plain_sum)),
    "deleted fused_dense_product vs nn.Dense (stepfit narrow)": (lambda: stepfit_config("narrow"), with_outer_product),
    "deleted fused_dense_product vs nn.Dense (stepfit wide)": (lambda: stepfit_config("wide"), with_outer_product),
    "fixed_order_sum vs jnp.sum (stepfit narrow)": (
        lambda: stepfit_config("narrow"),
        lambda: patched(experiment, "fixed_order_sum", plain_sum),
    ),
}


class Timed:
    """A compiled chunk and its state, called on consecutive intervals."""

    def __init__(self, cfg: config.Config, context: contextlib.AbstractContextManager):
        with context:
            self.prepared = sweep.prepare(cfg)
        p = self.prepared
        self.states = p.init_fn(p.coords, p.given, p.data)
        self.per_chunk = max(1, (cfg.execution.chunk_epochs or 1) // cfg.train.eval_every)
        self.steps = self.per_chunk * cfg.steps_per_epoch * cfg.train.eval_every
        self.n_models = plan.count_models(cfg)
        self.interval = 0
        self.call()  # warm-up

    def call(self) -> None:
        p = self.prepared
        self.states = p.chunk_fn(self.states, p.coords, p.data, jnp.int32(self.interval))
        self.interval += self.per_chunk
        jax.block_until_ready(self.states)

    def rate(self, seconds: float) -> float:
        """Model-steps/s over calls for about `seconds`."""
        start, calls = time.perf_counter(), 0
        while calls == 0 or time.perf_counter() - start < seconds:
            self.call()
            calls += 1
        return self.n_models * self.steps * calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per block")
    parser.add_argument("--only", default="", help="measure the devices whose name contains this")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "measure.json")
    args = parser.parse_args()
    rows = []
    print("| device (workload) | with it | plain | with / plain |\n|---|---|---|---|", flush=True)
    for name, (make_cfg, plain) in DEVICES.items():
        if args.only not in name:
            continue
        alternative = plain()
        if name.startswith("deleted"):  # the device is what is patched in; jaxfit runs the plain form
            fast, slow = Timed(make_cfg(), alternative), Timed(make_cfg(), contextlib.nullcontext())
        else:
            fast = Timed(make_cfg(), contextlib.nullcontext())
            slow = (
                Timed(alternative, contextlib.nullcontext()) if isinstance(alternative, config.Config) else Timed(make_cfg(), alternative)
            )
        rates: dict[str, list[float]] = {"with": [], "plain": []}
        for _ in range(args.rounds):
            rates["with"].append(fast.rate(args.seconds))
            rates["plain"].append(slow.rate(args.seconds))
        with_it, without = statistics.median(rates["with"]), statistics.median(rates["plain"])
        rows.append({"device": name, "with": rates["with"], "plain": rates["plain"], "ratio": with_it / without})
        print(f"| {name} | {with_it:,.0f} | {without:,.0f} | {with_it / without:.2f} |", flush=True)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "rounds": args.rounds,
        "seconds_per_block": args.seconds,
    }
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
