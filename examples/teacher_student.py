"""Teacher-student: small tanh students learn fixed random teacher nets, a teacher of its own
size per group (4, 8 or 12 hidden units) in one run, so the paired analysis compares the
teachers seed by seed. The data depend on the model table: `data(model)` is called once per
table and gives that teacher's weights and its eval set.

    python -m jaxfit.run --config examples/teacher_student.toml
"""

from dataclasses import dataclass
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import Task, bounded, register


@dataclass(frozen=True)
class Student:  # the [model] table: the student, and the teacher it learns
    name: Literal["student"] = "student"
    width: int = bounded(8, gt=0)
    teacher: int = bounded(4, gt=0)  # the teacher's hidden units
    init: tuple[Literal["torch_default", "he"], ...] = ("torch_default",)


def teach(x, w1, w2):
    """A teacher's outputs: a tanh layer of its hidden units, then a sum weighted by w2."""
    return jnp.tanh(x @ w1) @ w2


class Net(nn.Module):  # dim -> width -> 1, tanh
    width: int

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(1)(jnp.tanh(nn.Dense(self.width)(x)))


@register
@dataclass(frozen=True)
class TeacherStudent(Task):  # the [task] table, and what it trains
    name: Literal["teacher_student"] = "teacher_student"
    dim: int = bounded(8, gt=0)
    n_val: int = bounded(2000, gt=0)
    models = (Student,)

    def input_shape(self):
        return (self.dim,)

    def data(self, model):  # per model table: its teacher (drawn from its size) and eval set
        rng = np.random.default_rng(model.teacher)
        w1 = (rng.normal(size=(self.dim, model.teacher)) * 2 / np.sqrt(self.dim)).astype(np.float32)
        w2 = (rng.normal(size=(model.teacher, 1)) / np.sqrt(model.teacher)).astype(np.float32)
        x = rng.normal(size=(self.n_val, self.dim)).astype(np.float32)
        return {"teacher": (w1, w2), "eval": {"val": (x, np.asarray(teach(x, w1, w2)))}}

    def sampler(self, model, batch_size):  # fresh inputs each step, labelled by the teacher
        def sample(data, key, step):
            x = jax.random.normal(jax.random.fold_in(key, step), (batch_size, self.dim))
            return x, teach(x, *data["teacher"])

        return sample

    def module(self, model):
        return Net(model.width)
