"""Planning a run: every group's models (seeds x init schemes x swept numbers) and their
coordinates, the device mesh they are sharded over, how many run at once (blocks sized to a
CPU's caches or a device's memory), and whether the run fits in memory at all."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxfit import config, optim, trainer
from jaxfit.config import Config, Group


@dataclass(frozen=True)
class GroupModels:
    """A group and its models: one label dict per model, and their vmapped coordinates."""

    group: Group
    labels: list[dict[str, Any]]
    coords: trainer.Coords

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
    """Every group's models, in the order init scheme x swept numbers x seed (seed fastest);
    only those `sweep.models` names (by their index in the whole sweep) when it names any, and
    then only the groups holding one."""
    out, start = [], 0
    picked = set(cfg.sweep.models)
    for group in cfg.groups:
        numbers = optim.hyperparameters(group)
        swept = {k: v for k, v in numbers.items() if isinstance(v, tuple)}
        labels, seed_index, init_index = [], [], []
        hp: dict[str, list[float]] = {}
        index = start
        for init_i, init in enumerate(group.model.init):
            for values in itertools.product(*swept.values()):
                chosen = dict(zip(swept, values))
                for seed in range(cfg.sweep.n_seeds):
                    index += 1
                    if picked and index - 1 not in picked:
                        continue
                    labels.append({"group": group.name, "seed": seed, "init": init, **chosen})
                    seed_index.append(seed)
                    init_index.append(init_i)
                    for k, v in optim.per_model(numbers | chosen).items():
                        hp.setdefault(k, []).append(v)
        start = index
        if not labels:
            continue
        coords = trainer.Coords(
            np.asarray(seed_index, np.int32),
            np.asarray(init_index, np.int32),
            {k: np.asarray(v, np.float32) for k, v in hp.items()},
        )
        out.append(GroupModels(group, labels, coords))
    return out


class TooLarge(Exception):
    """The run would not fit in memory; the message gives the estimate (one line)."""


OWN_CPU_DEVICES = False  # whether use_every_core chose the CPU device count (the user did not)
CPU_BYTES_PER_DEVICE = 16 * 2**10  # a core per this much of a step's arrays (Trainer.footprint x models): results/BENCHMARKS.md


def use_every_core() -> None:
    """On a CPU (called when this module is imported, before jax starts its devices): one jax
    device per core, so that a run can spread its models over the cores (`mesh`, `EachDevice`):
    XLA runs each device's program on a thread of its own. The count is left as it is where the
    user chose one (XLA_FLAGS' --xla_force_host_platform_device_count, JAX_NUM_CPU_DEVICES) or
    jax has started."""
    global OWN_CPU_DEVICES
    chosen = jax.config.jax_num_cpu_devices  # type: ignore[attr-defined]  # a flag jax defines at run time
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or chosen >= 0:
        return
    try:
        jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        OWN_CPU_DEVICES = True
    except RuntimeError:  # jax has started: its devices stay
        pass


use_every_core()


def mesh(step_bytes: int) -> tuple[NamedSharding, NamedSharding, int]:
    """A 1-D mesh over the devices a run uses (all hosts' under jax.distributed): the models
    axis is sharded across it, the data replicated. `step_bytes` is the run's optimiser-step
    footprint (every model's largest array): on the CPU cores of `use_every_core` a run takes a
    core per CPU_BYTES_PER_DEVICE of it, as a core's thread costs more than it gives to models
    that small; every device the user asked for otherwise."""
    devices = jax.devices()
    if OWN_CPU_DEVICES and devices[0].platform == "cpu" and jax.process_count() == 1:
        devices = devices[: max(1, min(len(devices), step_bytes // CPU_BYTES_PER_DEVICE))]
    mesh = Mesh(np.asarray(devices), ("models",))
    return NamedSharding(mesh, P("models")), NamedSharding(mesh, P()), mesh.size


def _on(leaf: Any, device: jax.Device) -> Any:
    """`leaf`'s part on `device`: its models there if it is split over the models axis, all of
    it if replicated (as an abstract value too); a number elsewhere, copied there."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return leaf
    shape = sharding.shard_shape(leaf.shape)
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=jax.sharding.SingleDeviceSharding(device))
    here = [s.data for s in leaf.addressable_shards if s.device == device]
    return here[0] if here else jax.device_put(leaf, device)  # a number on another device


class EachDevice:
    """`fn` compiled as a one-device program for each of this process's devices of the models
    axis' sharding `per_model`, and run on every device's share of the models (the devices run
    at once: jax dispatches asynchronously), the results put back together sharded as the
    models were. Not one SPMD program: XLA compiles a partitioned program otherwise than a
    one-device one and with it otherwise for each share's size (a division by a per-model scalar
    becomes a reciprocal's product in one and not the other, its multiply-adds fuse otherwise),
    so a model's last bits would depend on the device count and its neighbours; a one-device
    program gives a model the same bits whatever the block's size (tests/test_invariance.py)."""

    def __init__(self, fn: Callable, per_model: NamedSharding, args: tuple, options: dict[str, Any], donate: bool = False):
        self.per_model = per_model
        self.devices = [d for d in per_model.mesh.devices.flat if d.process_index == jax.process_index()]
        jitted = jax.jit(fn, donate_argnums=0 if donate else ())
        lowered = [jitted.lower(*jax.tree.map(lambda a, d=d: _on(a, d), args)) for d in self.devices]
        with ThreadPoolExecutor(len(lowered)) as pool:  # XLA compiles outside the GIL: the devices' programs at once
            self.programs = list(pool.map(lambda program: program.compile(compiler_options=options), lowered))

    def __call__(self, *args: Any) -> Any:
        parts = [jax.tree.map(lambda a, d=d: _on(a, d), args) for d in self.devices]  # all, before a donation deletes one
        outs = [program(*part) for program, part in zip(self.programs, parts)]
        n = self.per_model.mesh.size
        return jax.tree.map(
            lambda *parts: jax.make_array_from_single_device_arrays((parts[0].shape[0] * n, *parts[0].shape[1:]), self.per_model, parts),
            *outs,
        )

    def memory_analysis(self) -> Any:
        return self.programs[0].memory_analysis()

    @property
    def out_info(self) -> Any:
        """The results' shapes and types (the whole models axis), sharded like the models."""
        n = self.per_model.mesh.size
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct((s.shape[0] * n, *s.shape[1:]), s.dtype, sharding=self.per_model), self.programs[0].out_info
        )


def fetch(tree: Any) -> Any:
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def count_models(cfg: Config) -> int:
    """How many models the config trains (before any padding), without listing them."""
    return len(cfg.sweep.models) or sum(config.group_sizes(cfg))


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


CPU_OPTIONS: dict[str, str | bool] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def compiler_options(device: jax.Device) -> dict[str, str | bool]:
    """XLA options for every program a run compiles: on a CPU, YNNPACK runs dots (each on its
    own) and reductions, never elementwise fusions. XLA:CPU hands a reduction to YNNPACK when the
    whole block's operand holds 4,096 elements or more, and YNNPACK sums otherwise than XLA's own
    code; `own_sums.own_order` (applied to every per-model function trainer.py vmaps) keeps each
    reduction on one side whatever the block, so a model's numbers are its own (tested:
    tests/test_invariance.py, tests/test_compaction.py). An elementwise fusion in YNNPACK would
    round a model's tanh or exp by the block's size, hence not in the list. Per program, so a
    user's own jax code keeps XLA's defaults; the speed is in results/BENCHMARKS.md."""
    return dict(CPU_OPTIONS) if device.platform == "cpu" else {}


def bucket(active: int, per_device: int) -> int:
    """How many models per device a chunk runs for `active` still-training models of a device
    holding `per_device` (compaction): the smallest of 2, 3 and m * 2**k (m = 4..7) that holds
    them -- sizes at most 25 % apart, so that a run compiles a handful of programs, not one per
    count -- or `per_device` (all of them) when that is no larger; 0 when none is active. A
    model's numbers do not depend on the size (`compiler_options`)."""
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
