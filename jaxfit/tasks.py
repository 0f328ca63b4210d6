"""Data for each task: the fixed arrays (built once on the host) and, inside jit, the batch a
model trains on at a given step.

Every model of a run sees the same fixed arrays. Batch order depends only on a model's data key
(derived from its seed index), so models that differ only in init scheme or a swept
hyperparameter train on the same batches.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit.config import StepfitTask, SumsqTask


class EvalSet(NamedTuple):
    """Inputs and targets padded to whole chunks of `chunk`; `weight` is 0 on the padding."""

    x: np.ndarray  # [n_chunks, chunk, n_inputs]
    y: np.ndarray  # [n_chunks, chunk, 1]
    weight: np.ndarray  # [n_chunks, chunk]


def make_eval_set(x: np.ndarray, y: np.ndarray, chunk: int) -> EvalSet:
    chunk = min(chunk, len(x))
    n_chunks = -(-len(x) // chunk)
    pad = n_chunks * chunk - len(x)
    weight = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    return EvalSet(x.reshape(n_chunks, chunk, *x.shape[1:]), y.reshape(n_chunks, chunk, 1), weight.reshape(n_chunks, chunk))


# ----------------------------------------------------------------------------- sumsq


def sumsq_dataset(task: SumsqTask) -> tuple[np.ndarray, np.ndarray]:
    """The seed's gen_data: X ~ U(low, high) in float64 (numpy), y = sum(X**2); then float32,
    as the seed's x.float() and y.float()."""
    rng = np.random.default_rng(task.data_seed)
    x = rng.uniform(task.low, task.high, (task.n_samples, task.n_inputs))
    y = np.sum(x**2, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32)


class SumsqData(NamedTuple):
    train_x: np.ndarray  # [n_train, n_inputs]
    train_y: np.ndarray  # [n_train, 1]
    eval_sets: dict[str, EvalSet]  # "val" (the seed's val_loss) and, if asked, "train"
    batches: tuple[np.ndarray, np.ndarray] | None = None  # given (x, y) per step, see with_batches


def sumsq_data(task: SumsqTask, eval_chunk: int) -> SumsqData:
    x, y = sumsq_dataset(task)
    n = task.n_train
    eval_sets = {"val": make_eval_set(x[n:], y[n:], eval_chunk)}
    if task.eval_train:
        eval_sets["train"] = make_eval_set(x[:n], y[:n], eval_chunk)
    return SumsqData(x[:n], y[:n], eval_sets)


def sumsq_epoch_order(data: SumsqData, key: jax.Array, epoch: jax.Array) -> jax.Array:
    """DataLoader(shuffle=True): a fresh permutation of the training set every epoch, by
    sorting the indices on random keys of at least 3 * log2(n) bits (jax.random.permutation's
    criterion; 60 bits for n = 90,000, ties broken by index). Each round sorts one uint32 array,
    random bits above the index, which XLA's CPU sort does ~7x faster than a sort with a
    separate key and payload: 4 rounds took 0.20 s for 20 models where one sort of two uint32
    keys and the indices took 0.49 s (then ~25 % of a sumsq epoch)."""
    n = data.train_x.shape[0]
    index_bits = max(n - 1, 1).bit_length()
    rounds = math.ceil(3 * math.log2(n) / (32 - index_bits))
    index = jnp.arange(n, dtype=jnp.uint32)
    order = index.astype(jnp.int32)
    for bits in jax.random.bits(jax.random.fold_in(key, epoch), (rounds, n), jnp.uint32):
        # sorted by (these bits, the earlier rounds' order): lexicographic over all rounds' bits
        packed = (bits >> index_bits << index_bits) | index
        order = order[(jnp.sort(packed) & np.uint32((1 << index_bits) - 1)).astype(jnp.int32)]
    return order


def sumsq_batch(data: SumsqData, order: jax.Array, key: jax.Array, step: jax.Array, step_in_epoch: jax.Array, batch_size: int):
    index = jax.lax.dynamic_slice_in_dim(order, step_in_epoch * batch_size, batch_size)
    return data.train_x[index], data.train_y[index]


# ----------------------------------------------------------------------------- stepfit


def step_target(task: StepfitTask, x):
    """fGoal(x * 1000) / 1000 with fGoal = where(x > 100, 1000, 0), in the seed's arithmetic."""
    xp = jnp if isinstance(x, jax.Array) else np
    scale = np.float32(task.scale)
    return (xp.where(x * scale > np.float32(task.step_at), scale, np.float32(0)) / scale).astype(np.float32)


class StepfitData(NamedTuple):
    eval_sets: dict[str, EvalSet]  # "val": the seed's linspace grid
    batches: tuple[np.ndarray, np.ndarray] | None = None  # given (x, y) per step, see with_batches


def stepfit_data(task: StepfitTask, eval_chunk: int) -> StepfitData:
    x = (np.linspace(0.0, task.scale, task.n_val, dtype=np.float32) / np.float32(task.scale))[:, None]
    return StepfitData({"val": make_eval_set(x, step_target(task, x), eval_chunk)})


def stepfit_batch(task: StepfitTask, key: jax.Array, step: jax.Array, batch_size: int):
    """torch.rand(batch, 1): a fresh U[0, 1) batch every step."""
    x = jax.random.uniform(jax.random.fold_in(key, step), (batch_size, 1), jnp.float32)
    return x, step_target(task, x)


# ----------------------------------------------------------------------------- dispatch


def make_data(task: SumsqTask | StepfitTask, eval_chunk: int) -> SumsqData | StepfitData:
    """The fixed arrays of a run (host numpy); passed into the jitted trainer as arguments."""
    if isinstance(task, SumsqTask):
        return sumsq_data(task, eval_chunk)
    return stepfit_data(task, eval_chunk)


def host_bytes(task: SumsqTask | StepfitTask) -> int:
    """Host memory the task's fixed arrays take while they are made (sumsq: the float64 draw,
    its float32 copy and the eval sets' padded copies)."""
    if isinstance(task, SumsqTask):
        return task.n_samples * task.n_inputs * (8 + 4 + 4)
    return task.n_val * 16


def n_inputs(task: SumsqTask | StepfitTask) -> int:
    """Inputs per sample: sumsq's n_inputs, stepfit's one x."""
    return task.n_inputs if isinstance(task, SumsqTask) else 1


def with_batches(task, data, x: np.ndarray, y: np.ndarray, n_steps: int, batch_size: int):
    """Train on given batches instead of the task's own: step t uses (x[t], y[t]), for every
    model (e.g. the batch order of a PyTorch run). x: [steps, batch, inputs], y: [steps, batch, 1]."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    width = n_inputs(task)
    if x.ndim != 3 or x.shape[0] < n_steps or x.shape[1:] != (batch_size, width) or y.shape != (*x.shape[:2], 1):
        raise ValueError(f"batches: x {x.shape}, y {y.shape}; need x [>= {n_steps}, {batch_size}, {width}] and y [..., {batch_size}, 1]")
    return data._replace(batches=(x, y))


def epoch_order(task, data, key: jax.Array, epoch: jax.Array):
    """What a whole epoch shares (sumsq: its permutation); None where batches are fresh or given."""
    return sumsq_epoch_order(data, key, epoch) if isinstance(task, SumsqTask) and data.batches is None else None


def train_batch(task, data, order, key: jax.Array, step: jax.Array, step_in_epoch: jax.Array, batch_size: int):
    """The (x, y) a model trains on at global step `step`."""
    if data.batches is not None:
        return data.batches[0][step], data.batches[1][step]
    if isinstance(task, SumsqTask):
        return sumsq_batch(data, order, key, step, step_in_epoch, batch_size)
    return stepfit_batch(task, key, step, batch_size)
