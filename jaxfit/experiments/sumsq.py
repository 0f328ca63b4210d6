"""sumsq (../shared/seeds/sumsq_forum_question.txt): y = sum of squares of 64 IID U(-5, 8) inputs,
learned by one subnet Linear(1->14) -> ReLU -> Linear(14->1) shared by all inputs, then
Linear(64->1), with dropout at three places; a hand-made "near-optimal" init against He.

Here: the task table (a fixed dataset split in two, reshuffled every epoch), the model table and
its Flax modules, the seed's hand-set init, eval-mode MSE on validation (and the training set),
and the plots (predictions against truth, the learned per-input function).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import plots, report
from jaxfit.config import Config, bounded, fail
from jaxfit.experiment import Params, Task, register
from jaxfit.kernels import SharedScalarSubnet, dropout, dropout_mask, dropout_scale

# ----------------------------------------------------------------------------- config tables


@dataclass(frozen=True)
class ManualValues:
    """Hand-set parameters for the shared-subnet model, in PyTorch's layout (fc3_weight may be
    one number for all inputs)."""

    fc1_weight: tuple[float, ...]
    fc1_bias: tuple[float, ...]
    fc2_weight: tuple[float, ...]
    fc2_bias: float
    fc3_weight: float | tuple[float, ...]
    fc3_bias: float


@dataclass(frozen=True)
class SharedSubnet:
    """Dense(1->width) -> act -> Dense(width->1) shared by every input, then Dense(n_inputs->1)."""

    name: Literal["shared_subnet"] = "shared_subnet"
    width: int = bounded(14, gt=0)
    activation: Literal["relu", "leaky_relu"] = "relu"
    negative_slope: float = bounded(0.01, ge=0)
    dropout_inputs: float = bounded(0.0, ge=0, lt=1)
    dropout_hidden: float = bounded(0.0, ge=0, lt=1)
    dropout_outputs: float = bounded(0.0, ge=0, lt=1)
    init: tuple[Literal["manual", "he", "torch_default"], ...] = ("torch_default",)
    manual: ManualValues | None = None
    fast: bool = True  # run the subnets as kernels.SharedScalarSubnet: the same function, rounded differently

    @property
    def slope(self) -> float:
        """The activation's slope for inputs <= 0: 0 for ReLU."""
        return 0.0 if self.activation == "relu" else self.negative_slope


@register
@dataclass(frozen=True)
class SumsqTask(Task):
    """y = sum of squares of `n_inputs` IID U(low, high) inputs; a fixed dataset split in two."""

    name: Literal["sumsq"] = "sumsq"
    n_inputs: int = bounded(64, gt=0)
    low: float = bounded(-5.0, ge=-1e6, le=1e6)  # |x| <= 1e6 keeps sum(x^2) finite in float32
    high: float = bounded(8.0, ge=-1e6, le=1e6)
    n_samples: int = bounded(100_000, gt=1)
    n_train: int = bounded(90_000, gt=0)
    data_seed: int = bounded(0, ge=0)
    eval_train: bool = True  # also log eval-mode MSE on the whole training set each interval

    models = (SharedSubnet,)

    def check(self, cfg: Config) -> None:
        batch_size = cfg.train.batch_size
        if self.n_train >= self.n_samples:
            raise fail("task.n_train", self.n_train, f"must be < task.n_samples = {self.n_samples}")
        if self.n_train % batch_size:
            raise fail("train.batch_size", batch_size, f"must divide task.n_train = {self.n_train} (every batch is full)")
        if not self.low < self.high:
            raise fail("task.low", self.low, f"must be < task.high = {self.high}")
        for group in cfg.groups:
            model, where = group.model, f"groups.{group.name}.model"
            if "manual" not in model.init:
                continue
            values = model.manual
            if values is None:
                raise fail(f"{where}.manual", None, "init 'manual' needs a [model.manual] table of values")
            for key in ("fc1_weight", "fc1_bias", "fc2_weight"):
                if len(getattr(values, key)) != model.width:
                    raise fail(f"{where}.manual.{key}", list(getattr(values, key)), f"needs {model.width} values (model.width)")
            if isinstance(values.fc3_weight, tuple) and len(values.fc3_weight) != self.n_inputs:
                raise fail(
                    f"{where}.manual.fc3_weight", list(values.fc3_weight), f"needs {self.n_inputs} values (task.n_inputs) or one number"
                )

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.n_train // batch_size

    def host_bytes(self) -> int:
        return self.n_samples * self.n_inputs * (8 + 4 + 4)  # the float64 draw, its float32 copy, the eval sets

    def input_shape(self) -> tuple[int, ...]:
        return (self.n_inputs,)

    # ------------------------------------------------------------------------- data

    def dataset(self) -> tuple[np.ndarray, np.ndarray]:
        """The seed's gen_data: X ~ U(low, high) in float64 (numpy), y = sum(X**2); then float32,
        as the seed's x.float() and y.float()."""
        rng = np.random.default_rng(self.data_seed)
        x = rng.uniform(self.low, self.high, (self.n_samples, self.n_inputs))
        y = np.sum(x**2, axis=1, keepdims=True)
        return x.astype(np.float32), y.astype(np.float32)

    def data(self) -> dict:
        """The training set, and the eval sets: "val" (the seed's val_loss) and, if asked,
        "train_eval" (the whole training set in eval mode)."""
        x, y = self.dataset()
        n = self.n_train
        eval_sets = {"val": (x[n:], y[n:])}
        if self.eval_train:
            eval_sets["train_eval"] = (x[:n], y[:n])
        return {"train": (x[:n], y[:n]), "eval": eval_sets}

    def epoch_order(self, data: dict, key: jax.Array, epoch: jax.Array) -> jax.Array:
        """DataLoader(shuffle=True): a fresh permutation of the training set every epoch, by
        sorting the indices on random keys of at least 3 * log2(n) bits (jax.random.permutation's
        criterion; 60 bits for n = 90,000, ties broken by index). Each round sorts one uint32 array,
        random bits above the index, which XLA's CPU sort does ~7x faster than a sort with a
        separate key and payload: 4 rounds took 0.20 s for 20 models where one sort of two uint32
        keys and the indices took 0.49 s (then ~25 % of an epoch)."""
        n = data["train"][0].shape[0]
        index_bits = max(n - 1, 1).bit_length()
        rounds = math.ceil(3 * math.log2(n) / (32 - index_bits))
        index = jnp.arange(n, dtype=jnp.uint32)
        order = index.astype(jnp.int32)
        for bits in jax.random.bits(jax.random.fold_in(key, epoch), (rounds, n), jnp.uint32):
            # sorted by (these bits, the earlier rounds' order): lexicographic over all rounds' bits
            packed = (bits >> index_bits << index_bits) | index
            order = order[(jnp.sort(packed) & np.uint32((1 << index_bits) - 1)).astype(jnp.int32)]
        return order

    def sampler(
        self, model: SharedSubnet, batch_size: int
    ) -> Callable[[dict, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
        """DataLoader(batch_size, shuffle=True): the epoch's permutation (`epoch_order`), batch after batch."""
        per_epoch = self.steps_per_epoch(batch_size)

        def next_batch(data: dict, key: jax.Array, step: jax.Array, order: jax.Array) -> tuple[jax.Array, jax.Array]:
            index = jax.lax.dynamic_slice_in_dim(order, step % per_epoch * batch_size, batch_size)
            return data["train"][0][index], data["train"][1][index]

        return next_batch

    # ------------------------------------------------------------------------- model

    def module(self, model: SharedSubnet) -> nn.Module:
        return SharedSubnetSum(model, self.n_inputs)

    def init_params(self, model: SharedSubnet, shapes: Params, scheme: str, key: jax.Array) -> Params:
        return manual(model, self.n_inputs) if scheme == "manual" else super().init_params(model, shapes, scheme, key)

    def plots(self, out: Path, cfg: Config, summary: dict, history: dict, params: Any) -> None:
        draw(out, cfg, summary, history, params)


# ----------------------------------------------------------------------------- Flax modules


class Subnet(nn.Module):
    """ONE input's subnet, g(x) = fc2(dropout(act(fc1(x)))), fc1 = Dense(1->width), fc2 =
    Dense(width->1), for x [batch]; `kept` [width, batch] is its hidden units' dropout mask
    (None: no dropout) and `keep` = 1 - p."""

    width: int
    negative_slope: float  # 0 for ReLU

    @nn.compact
    def __call__(self, x: jax.Array, kept: jax.Array | None = None, keep: float = 1.0) -> jax.Array:
        pre = nn.Dense(self.width, name="fc1")(x[:, None])
        hidden = jax.nn.relu(pre) if self.negative_slope == 0.0 else jnp.where(pre > 0, pre, self.negative_slope * pre)
        if kept is not None:
            hidden = jnp.where(kept.T, hidden * dropout_scale(keep), 0.0)
        return nn.Dense(1, name="fc2")(hidden)[:, 0]


# The subnet shared by every input: one set of parameters (variable_axes None), mapped over the
# inputs axis of x [batch, n_inputs] and of the mask [width, batch, n_inputs] (each input its own).
SharedSubnets = nn.vmap(Subnet, in_axes=(1, 2, None), out_axes=1, variable_axes={"params": None}, split_rngs={"params": False})


class SharedSubnetSum(nn.Module):
    """The model: the Subnet applied to each of the n_inputs inputs (parameters shared, dropout
    masks independent), then Dense(n_inputs->1). Dropout where the seed has it: on the raw
    inputs, on the hidden layer, on the subnet outputs.

    With `config.fast` (the default) the shared subnets run as `kernels.SharedScalarSubnet`, the
    same function of the same parameters written out for XLA (tested equal to `SharedSubnets`,
    value and gradients, with and without dropout; its speed is in results/BENCHMARKS.md). The
    three dropout masks come from one key on disjoint counter ranges (`kernels.dropout_mask`)
    and go into the subnets as inputs, so neither form splits a key per input."""

    config: SharedSubnet
    n_inputs: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # [batch, n_inputs] -> [batch, 1]
        cfg = self.config
        rates = (cfg.dropout_inputs, cfg.dropout_hidden, cfg.dropout_outputs)
        key = self.make_rng("dropout") if train and any(rates) else None
        hidden_shape = (cfg.width, *x.shape)
        offsets = (0, x.size, x.size + int(np.prod(hidden_shape)))  # the three sites' counters

        def drop(values, site):
            return values if key is None else dropout(values, key, rates[site], offsets[site])

        hidden_kept = None if key is None or rates[1] == 0.0 else dropout_mask(key, hidden_shape, rates[1], offsets[1])
        subnets = SharedScalarSubnet if cfg.fast else SharedSubnets
        g = subnets(cfg.width, cfg.slope, name="subnet")(drop(x, 0), hidden_kept, 1.0 - rates[1])
        return nn.Dense(1, name="fc3")(drop(g, 2))


def subnet_function(model: SharedSubnet, params: Params, x: Any) -> Any:
    """The learned per-input function g(x) of a model, eval mode; x of shape [n]."""
    return Subnet(model.width, model.slope).apply({"params": params["subnet"]}, jnp.asarray(x))


def manual(model: SharedSubnet, n_inputs: int) -> Params:
    """The seed's hand-set values (PyTorch weight [out, in] -> Flax kernel [in, out])."""
    values = model.manual
    assert values is not None  # init "manual" needs it: SharedSubnet.check says so at load
    fc3 = np.broadcast_to(np.asarray(values.fc3_weight, np.float32), (n_inputs,))
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))  # noqa: E731
    return {
        "subnet": {
            "fc1": {"kernel": f32(values.fc1_weight)[None, :], "bias": f32(values.fc1_bias)},
            "fc2": {"kernel": f32(values.fc2_weight)[:, None], "bias": f32([values.fc2_bias])},
        },
        "fc3": {"kernel": f32(fc3)[:, None], "bias": f32([values.fc3_bias])},
    }


def from_torch(state_dict: Mapping[str, Any]) -> Params:
    """Flax parameters from the seed module's PyTorch state_dict (fc1, fc2, fc3; values as
    anything np.asarray takes): weight [out, in] -> kernel [in, out]."""
    values = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}

    def dense(name: str) -> dict:
        return {"kernel": jnp.asarray(values[f"{name}.weight"].T), "bias": jnp.asarray(values[f"{name}.bias"])}

    return {"subnet": {"fc1": dense("fc1"), "fc2": dense("fc2")}, "fc3": dense("fc3")}


# ----------------------------------------------------------------------------- plots


def draw(out: Path, cfg: Config, summary: dict, history: dict, params: Any) -> None:
    """Predictions against truth after epoch 1 and at the end; the learned per-input function
    mean(w3)·g(x) + b3/n_inputs against x² (seed 0 of each set; the loss curves are the engine's)."""
    task = cfg.task
    assert isinstance(task, SumsqTask)
    x, y = task.dataset()
    sample = np.random.default_rng(0).choice(task.n_train, min(2000, task.n_train), replace=False)
    x, y = x[sample], y[sample, 0]
    first_of_set = [index[0] for index in plots.sets(summary).values()]  # seed 0 of each set
    groups = {g.name: g for g in cfg.groups}

    paired = first_of_set[: plots.MAX_PANELS // 2]  # two panels a cell: after epoch 1 and at the end
    more = f"the first {len(paired)} of {len(first_of_set)} cells (every cell: cells.png)" if len(paired) < len(first_of_set) else ""
    fig, axes = plots.panels(2 * len(paired), 4.6, 4.0, title=more)
    fig2, axes2 = plots.panels(len(first_of_set), 4.6, 3.6)
    grid = np.linspace(task.low, task.high, 300, dtype=np.float32)
    for row, index in enumerate(first_of_set):
        entry = summary["models"][index]
        group, position = plots.group_index(summary, index)
        model = groups[group].model
        module = task.module(model)
        if row >= len(axes2):
            break
        ax2 = axes2[row]
        ax2.plot(grid, grid**2, "k--", lw=1, label="x²")
        for col, (kind, when) in enumerate((("first", "after epoch 1"), ("last", f"after epoch {cfg.n_epochs}"))):
            p = plots.params_of(report.load_params(params, group, kind), position)
            if row < len(paired):
                pred = np.asarray(module.apply({"params": p}, x, train=False))[:, 0]
                ax = axes[2 * row + col]
                ax.scatter(y, pred, s=3, alpha=0.4)
                lo, hi = float(y.min()), float(y.max())
                ax.plot([lo, hi], [lo, hi], "k--", lw=1)
                mse = float(np.mean((pred - y) ** 2))
                ax.set_title(f"{entry['group']} {entry['init']} seed {entry['seed']}, {when}: MSE {mse:.4g}", fontsize=8)
                ax.set_xlabel("true y (training data)")
                ax.set_ylabel("predicted y (eval mode)")
            # The effective per-input function: mean_i(w3_i) * g(x) + b3 / n_inputs.
            g = np.asarray(subnet_function(model, p, grid))
            w3, b3 = np.asarray(p["fc3"]["kernel"])[:, 0], float(np.asarray(p["fc3"]["bias"])[0])
            ax2.plot(grid, w3.mean() * g + b3 / task.n_inputs, label=f"{when}: mean(w3)·g(x) + b3/{task.n_inputs}")
        ax2.set_title(f"{entry['group']} {entry['init']} seed {entry['seed']}: learned per-input function", fontsize=8)
        ax2.set_xlabel("x")
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
    plots.save(fig, out, "pred_vs_true.png")
    plots.save(fig2, out, "subnet.png")
