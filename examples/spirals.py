"""Two spirals: small tanh nets tell two interleaved spirals apart. An experiment written outside
jaxfit against its public interface only: its own data, model and init, a classification loss
(cross-entropy), and validation accuracy as the metric that stopping and "best" look at.

    python -m jaxfit.run --config examples/spirals.toml
"""

from dataclasses import dataclass
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfit import Task, bounded, register


def spirals(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points x [n, 2] with labels [n]: two arms of 1.5 turns, the second the first turned by pi."""
    rng = np.random.default_rng(seed)
    angle, label = np.sqrt(rng.uniform(0.01, 1, n)) * 3 * np.pi, rng.integers(0, 2, n)
    x = angle[:, None] / (3 * np.pi) * np.stack([np.cos(angle + np.pi * label), np.sin(angle + np.pi * label)], 1)
    return (x + noise * rng.normal(size=x.shape)).astype(np.float32), label.astype(np.int32)


@dataclass(frozen=True)
class TanhNet:  # the [model] table
    name: Literal["tanh_net"] = "tanh_net"
    width: int = bounded(16, gt=0)
    init: tuple[Literal["torch_default", "he"], ...] = ("torch_default",)


class Net(nn.Module):  # 2 -> width -> width -> 2 logits, tanh
    width: int

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(2)(jnp.tanh(nn.Dense(self.width)(jnp.tanh(nn.Dense(self.width)(x)))))


@register
@dataclass(frozen=True)
class Spirals(Task):  # the [task] table, and what it trains
    name: Literal["spirals"] = "spirals"
    noise: float = bounded(0.05, ge=0)
    n_train: int = bounded(2000, gt=0)
    n_val: int = bounded(2000, gt=0)
    models = (TanhNet,)
    monitor, goal = "val_accuracy", "max"  # a model stops once val_accuracy >= train.stop_at

    def input_shape(self):
        return (2,)

    def data(self):  # fixed arrays; eval sets as plain (x, y)
        return {"train": spirals(self.n_train, self.noise, 0), "eval": {"val": spirals(self.n_val, self.noise, 1)}}

    def sampler(self, model, batch_size):  # a random minibatch each step
        def sample(data, key, step):
            index = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, self.n_train)
            return data["train"][0][index], data["train"][1][index]

        return sample

    def module(self, model):
        return Net(model.width)

    def loss(self, logits, label):  # a batch's training loss
        return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()

    def metrics(self, logits, label):  # per sample, averaged over each eval set: val_loss, val_accuracy
        return {
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, label),
            "accuracy": (jnp.argmax(logits, -1) == label).astype(jnp.float32),
        }
