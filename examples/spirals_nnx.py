"""Two spirals with a Flax NNX module: examples/spirals.py's experiment (the same data, loss,
accuracy and init schemes), its network written as a `flax.nnx.Module` instead of a linen one.
jaxfit takes either: it splits an NNX module into its parameters and the rest (nnx.split) and
merges them again inside every step (nnx.merge), so the parameters train, vmap and save as a
linen module's do. Its parameters' names sort as the linen Net's layers do, so the two give
the same numbers.

    python -m jaxfit.run --config examples/spirals_nnx.toml
"""

from dataclasses import dataclass
from typing import Literal

import jax.numpy as jnp
from flax import nnx
from spirals import Spirals  # the experiment beside this file

from jaxfit import register


class Net(nnx.Module):  # 2 -> width -> width -> 2 logits, tanh
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.layer1, self.layer2, self.layer3 = (
            nnx.Linear(2, width, rngs=rngs),
            nnx.Linear(width, width, rngs=rngs),
            nnx.Linear(width, 2, rngs=rngs),
        )

    def __call__(self, x, train: bool):
        return self.layer3(jnp.tanh(self.layer2(jnp.tanh(self.layer1(x)))))


@register
@dataclass(frozen=True)
class SpiralsNNX(Spirals):
    name: Literal["spirals_nnx"] = "spirals_nnx"

    def module(self, model):
        return Net(model.width, nnx.Rngs(0))  # its own init is replaced by model.init's scheme
