"""Planning a run: every group's models (seeds x init schemes x swept numbers) and their
coordinates, the device mesh they are sharded over, how many run at once (blocks sized to a
CPU's caches or a device's memory), and whether the run fits in memory at all."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfit import optim, train
from jaxfit.config import Config, Group


@dataclass(frozen=True)
class GroupModels:
    """A group and its models: one label dict per model, and their vmapped coordinates."""

    group: Group
    labels: list[dict[str, Any]]
    coords: train.Coords

    @property
    def n_models(self) -> int:
        return len(self.labels)


def padded(per_model: Any, n_devices: int = 1) -> Any:
    """Per-model arrays (coordinates, parameters) padded by repeating the last model to a
    multiple of the device count, with at least 2 models per device: XLA compiles a vmapped
    axis of size 1 differently, so a model alone would not give the numbers it gives beside
    others. The padding models are dropped after the run."""
    n = len(jax.tree.leaves(per_model)[0])
    target = max(2 * n_devices, -(-n // n_devices) * n_devices)
    return jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], target - n, axis=0)]), per_model)


def expand(cfg: Config) -> list[GroupModels]:
    """Every group's models, in the order init scheme x swept numbers x seed (seed fastest)."""
    out = []
    for group in cfg.groups:
        numbers = optim.hyperparameters(group)
        swept = {k: v for k, v in numbers.items() if isinstance(v, tuple)}
        labels, seed_index, init_index = [], [], []
        hp: dict[str, list[float]] = {}
        for init_i, init in enumerate(group.model.init):
            for values in itertools.product(*swept.values()):
                chosen = dict(zip(swept, values))
                for seed in range(cfg.sweep.n_seeds):
                    labels.append({"group": group.name, "seed": seed, "init": init, **chosen})
                    seed_index.append(seed)
                    init_index.append(init_i)
                    for k, v in optim.per_model(numbers | chosen).items():
                        hp.setdefault(k, []).append(v)
        coords = train.Coords(
            np.asarray(seed_index, np.int32),
            np.asarray(init_index, np.int32),
            {k: np.asarray(v, np.float32) for k, v in hp.items()},
        )
        out.append(GroupModels(group, labels, coords))
    return out


class TooLarge(Exception):
    """The run would not fit in memory; the message gives the estimate (one line)."""


def mesh() -> tuple[NamedSharding, NamedSharding, int]:
    """A 1-D mesh over every visible device (all hosts' under jax.distributed): the models
    axis is sharded across it, the data replicated."""
    mesh = Mesh(np.asarray(jax.devices()), ("models",))
    return NamedSharding(mesh, P("models")), NamedSharding(mesh, P()), mesh.size


def fetch(tree: Any) -> Any:
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def count_models(cfg: Config) -> int:
    """How many models the config trains (before any padding), without listing them."""
    total = 0
    for group in cfg.groups:
        swept = [v for v in optim.hyperparameters(group).values() if isinstance(v, tuple)]
        total += cfg.sweep.n_seeds * len(group.model.init) * math.prod(len(v) for v in swept)
    return total


HOST_BYTES_PER_MODEL = 4096  # labels, coordinates and the summary entry of one model on the host
SMALLER = "run fewer models (sweep.n_seeds, swept values) or smaller sizes (model.width, train.batch_size, train.eval_batch_size)"


def available_memory(device: jax.Device) -> int | None:
    """Bytes a run may use on `device`: the accelerator's limit, or the host's available memory."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(what: str, needed: float, available: int | None) -> None:
    if available is not None and needed > available:
        raise TooLarge(f"{what} needs about {needed / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB available; {SMALLER}")


CPU_CACHE_BYTES = 4 << 20  # on a CPU, a block's largest training array stays within this (caches; BENCHMARKS.md)
MEMORY_SHARE = 16  # a block's largest evaluation array takes at most 1/16 of the device's memory


def models_per_block(training_bytes: int, evaluation_bytes: int, n_models: int, device: jax.Device) -> int:
    """How many of a group's models (`n_models` on this device) run at once, from the largest
    array one model holds while training and while evaluating (`Trainer.footprint`): all of
    them, unless a block's training arrays would outgrow a CPU's caches or its evaluation a
    1/MEMORY_SHARE of the device's memory. At least 2 (see `padded`). A model's numbers do not
    depend on it."""
    block = n_models
    if device.platform == "cpu":
        block = min(block, CPU_CACHE_BYTES // max(training_bytes, 1))
    memory = available_memory(device)
    if memory is not None:
        block = min(block, memory // MEMORY_SHARE // max(evaluation_bytes, 1))
    block = max(2, min(block, n_models))
    return -(-n_models // -(-n_models // block))  # the same count in equal blocks, the fewest padding models


def in_blocks(fn: Callable, block: int, per_model: Any, *shared: Any) -> Any:
    """fn(per_model_block, *shared) for consecutive blocks of `block` models, one block after
    another (lax.map), concatenated: the arrays of `per_model` and of the result have a leading
    models axis. Models beyond a whole number of blocks are padded by repeating the last model
    and dropped from the result."""
    n = jax.tree.leaves(per_model)[0].shape[0]
    if block >= n:
        return fn(per_model, *shared)
    n_blocks = -(-n // block)

    def split(a: jax.Array) -> jax.Array:
        return jnp.concatenate([a, jnp.repeat(a[-1:], n_blocks * block - n, axis=0)]).reshape(n_blocks, block, *a.shape[1:])

    out = jax.lax.map(lambda blocks: fn(blocks, *shared), jax.tree.map(split, per_model))
    return jax.tree.map(lambda a: a.reshape(n_blocks * block, *a.shape[2:])[:n], out)


YNN_MIN_ELEMENTS = 4096  # XLA on a CPU hands an operation this large to YNNPACK (xla/backends/cpu/ynn_support.cc)


def same_sums(block: int, other: int, sums: list[tuple[int, int]]) -> bool:
    """Whether blocks of `block` and `other` models round every sum alike on a CPU. XLA sums an
    array of at least YNN_MIN_ELEMENTS elements through YNNPACK and a smaller one itself, in
    another order (the last bits differ), so a model's sums depend on its block's size where a
    sum crosses that size between the two. `sums`: (elements per model, elements shared) of each
    sum (`Trainer.sums`). Every other operation was measured to give the same bits both ways."""
    return all((block * e + c >= YNN_MIN_ELEMENTS) == (other * e + c >= YNN_MIN_ELEMENTS) for e, c in sums)


def bucket(active: int, per_device: int) -> int:
    """How many models per device a chunk runs for `active` still-training models of a device
    holding `per_device` (compaction): the smallest of 2, 3 and m * 2**k (m = 4..7) that holds
    them -- sizes at most 25 % apart, so that a run compiles a handful of programs, not one per
    count -- or `per_device` (all of them) when that is no larger; 0 when none is active."""
    if active == 0:
        return 0
    size = 2
    while size < active:
        size = size + 1 if size < 4 else size + 2 ** (size.bit_length() - 3)  # 4 5 6 7 8 10 12 14 16 20 ...
    return min(size, per_device)


def on_picked(fn: Callable, block: int, pick: jax.Array, per_model: Any, *shared: Any) -> Any:
    """`in_blocks(fn, block, per_model[pick], *shared)` written back into rows `pick` of
    `per_model`'s first element (a model state, returned whole): only the picked models run.
    Indices past the end are padding: they run a copy of the last model, and are dropped."""
    n = jax.tree.leaves(per_model)[0].shape[0]
    picked = jax.tree.map(lambda a: a[jnp.minimum(pick, n - 1)], per_model)
    new = in_blocks(fn, block, picked, *shared)
    return jax.tree.map(lambda a, v: a.at[pick].set(v, mode="drop"), per_model[0], new)
