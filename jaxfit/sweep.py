"""From a config to trained models: expand every group into its models (seeds x init schemes x
swept numbers), jit one function that runs a chunk of every group (each vmapped over its
models), and drive it from the host chunk by chunk (progress, early exit when every model has
stopped).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from jaxfit import checks, optim, train
from jaxfit.config import Config, Group
from jaxfit.signals import StopRequest


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


OnChunk = Callable[[list[train.ModelState], int], None]


@dataclass
class Result:
    """What a run produced, on the host (numpy), per group; and how long it took. `finished`
    is False when the run was stopped early on purpose (`stop_after_chunks`) or interrupted;
    its state is then in the last checkpoint."""

    groups: list[GroupModels]
    states: list[train.ModelState]
    logged: np.ndarray  # the logged intervals
    timing: dict[str, float] = field(default_factory=dict)
    finished: bool = True


class Progress:
    """A tqdm bar on a terminal; elsewhere (CI, logs, nohup) a plain line every 30 s."""

    def __init__(self, total_steps: int, n_models: int, quiet: bool, done: int = 0):
        self.total, self.n_models, self.quiet, self.first = total_steps, n_models, quiet, done
        self.start = self.last_line = time.perf_counter()
        self.bar = (
            tqdm(total=total_steps, initial=done, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
            if not quiet and sys.stderr.isatty()
            else None
        )

    def update(self, done: int, previous: int, active: int, diverged: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(active=active, diverged=diverged, refresh=False)
            self.bar.update(done - previous)
            return
        now = time.perf_counter()
        if self.quiet or (now - self.last_line < 30 and done < self.total):
            return
        self.last_line = now
        rate = (done - self.first) / max(now - self.start, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        print(
            f"step {done:,}/{self.total:,} ({100 * done / self.total:.0f}%), {rate * self.n_models:,.0f} model-steps/s, "
            f"{active} active, {diverged} diverged, ETA {eta / 60:.1f} min",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Interrupted(Exception):
    """The run was stopped by a signal (Ctrl-C, SIGTERM); the last completed chunk is in the
    checkpoint. `signum` is the signal's number (exit code 128 + signum)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class TooLarge(Exception):
    """The run would not fit in memory; the message gives the estimate (one line)."""


def _mesh() -> tuple[NamedSharding, NamedSharding, int]:
    """A 1-D mesh over every visible device (all hosts' under jax.distributed): the models
    axis is sharded across it, the data replicated."""
    mesh = Mesh(np.asarray(jax.devices()), ("models",))
    return NamedSharding(mesh, P("models")), NamedSharding(mesh, P()), mesh.size


def _fetch(tree: Any) -> Any:
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


def _check_fits(what: str, needed: float, available: int | None) -> None:
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


@dataclass
class Prepared:
    """A run ready to train: its models, data and the compiled init and chunk functions."""

    cfg: Config
    groups: list[GroupModels]
    coords: list[train.Coords]
    data: Any
    given: list[Any]
    init_fn: Any
    chunk_fn: Any
    compile_s: float


def prepare(cfg: Config, initial_params: dict[str, Any] | None = None, batches: tuple[np.ndarray, np.ndarray] | None = None) -> Prepared:
    """Everything before training: models, data, and one compiled init and chunk function for
    all groups (the models axis sharded over every device). Refuses (TooLarge) a run whose
    models, data or compiled step would not fit in memory, before allocating it."""
    start = time.perf_counter()
    device = jax.devices()[0]
    n_models = count_models(cfg)
    _check_fits(f"{n_models:,} models", n_models * HOST_BYTES_PER_MODEL + cfg.task.host_bytes(), available_memory(jax.devices("cpu")[0]))
    groups = expand(cfg)
    per_model, replicated, n_devices = _mesh()
    models = list({repr(g.model): g.model for g in cfg.groups}.values())
    data = train.RunData(checks.check_returns(cfg.task, models, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.seed))
    if batches is not None:
        data = train.with_batches(cfg.task, data, *batches, train.total_steps(cfg), cfg.train.batch_size)
    trainers = [train.make_train(cfg, g.group) for g in groups]
    coords = [padded(g.coords, n_devices) for g in groups]
    given = [_given_params(g, (initial_params or {}).get(g.group.name), n_devices) for g in groups]
    blocks = [models_per_block(*trainer.footprint(c, data), len(c.seed_index) // n_devices, device) for trainer, c in zip(trainers, coords)]
    coords, given = jax.device_put((coords, given), per_model)
    data = jax.device_put(data, replicated)

    def init_all(coords, given, data):
        return [
            in_blocks(lambda m, d: t.init(m[0], d, m[1]), block, (c, p), data) for t, block, c, p in zip(trainers, blocks, coords, given)
        ]

    def chunk_all(states, coords, data, first_interval):
        return [
            in_blocks(lambda m, d, k: t.run_chunk(*m, d, k), block, (s, c), data, first_interval)
            for t, block, s, c in zip(trainers, blocks, states, coords)
        ]

    # each device runs its own share of the models (in its blocks); the data is replicated
    init_all = jax.shard_map(
        init_all, mesh=per_model.mesh, in_specs=(P("models"), P("models"), P()), out_specs=P("models"), check_vma=False
    )
    chunk_all = jax.shard_map(
        chunk_all, mesh=per_model.mesh, in_specs=(P("models"), P("models"), P(), P()), out_specs=P("models"), check_vma=False
    )
    try:
        init_fn = jax.jit(init_all, out_shardings=per_model).lower(coords, given, data).compile()
        states = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=per_model), jax.eval_shape(init_all, coords, given, data)
        )
        chunk_fn = jax.jit(chunk_all, donate_argnums=0, out_shardings=per_model).lower(states, coords, data, jnp.int32(0)).compile()
    except jax.errors.JaxRuntimeError as error:  # XLA's GPU autotuner allocates while compiling
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        raise TooLarge(
            f"training {n_models:,} models does not fit on {device.device_kind}: XLA ran out of its "
            f"{(available_memory(device) or 0) / 2**30:,.1f} GiB while compiling the step; {SMALLER}"
        ) from None
    memory = chunk_fn.memory_analysis()
    needed = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes if memory else 0
    _check_fits(f"training {n_models:,} models ({device.device_kind})", needed, available_memory(device))
    return Prepared(cfg, groups, coords, data, given, init_fn, chunk_fn, time.perf_counter() - start)


def run(
    cfg: Config,
    quiet: bool = False,
    initial_params: dict[str, Any] | None = None,
    batches: tuple[np.ndarray, np.ndarray] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    stop_after_chunks: int | None = None,
    on_chunk: OnChunk | None = None,
) -> Result:
    """Train every model of `cfg` (see `prepare` and `train_prepared`).

    initial_params: {group name: parameter tree whose leaves have a leading [n_models] axis},
      replacing the init scheme of those groups (Flax layout; an experiment's `from_torch` converts a
      PyTorch state_dict). batches: (x [steps, batch, *input_shape], y [steps, batch, ...]) used at
      every step by every model instead of the task's own sampling."""
    with StopRequest() as stop:
        return train_prepared(prepare(cfg, initial_params, batches), quiet, checkpoint_dir, resume, stop_after_chunks, stop, on_chunk)


def train_prepared(
    prepared: Prepared,
    quiet: bool = False,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    stop_after_chunks: int | None = None,
    stop: StopRequest | None = None,
    on_chunk: OnChunk | None = None,
) -> Result:
    """Drive the compiled chunks from the host: progress, checkpoints, early exit.

    checkpoint_dir: where orbax keeps the whole state every `execution.checkpoint_every`
      chunks, at the end, and when a signal stops the run; `resume` continues from its latest
      intact checkpoint, bit for bit as if never stopped (the chunk size may change in between).
    stop_after_chunks: stop (with a checkpoint) after that many chunks of this call -- a way to
      test resuming. stop: SIGINT/SIGTERM are honoured between chunks (checkpoint, then
      `Interrupted`); a signal that came during compilation stops before the first chunk.
    on_chunk(states, intervals_done): host code after every chunk, e.g. `trackers.Trackers.on_chunk`."""
    cfg, groups, coords, data = prepared.cfg, prepared.groups, prepared.coords, prepared.data
    start = time.perf_counter()
    states = prepared.init_fn(coords, prepared.given, data)
    checkpoints = Checkpoints(checkpoint_dir, cfg) if checkpoint_dir is not None else None
    first_interval, run_s, steps_run = 0, 0.0, 0
    if resume:
        assert checkpoints is not None  # a resume names its checkpoint folder
        states, meta = checkpoints.restore(states)
        first_interval, run_s, steps_run = meta["next_interval"], meta["run_s"], meta["steps_run"]
        if on_chunk is not None:  # what a tracker dropped or added since missed (even of a finished run)
            on_chunk(states, first_interval)
    compile_s = prepared.compile_s + time.perf_counter() - start

    n_intervals, per_chunk = cfg.n_intervals, train.chunk_intervals(cfg)
    steps_per_interval = cfg.steps_per_epoch * cfg.train.eval_every
    n_steps = train.total_steps(cfg)
    progress = Progress(n_steps, sum(g.n_models for g in groups), quiet or jax.process_index() > 0, steps_run)
    start = time.perf_counter()
    finished, interval, chunks_run = True, first_interval, 0

    def checkpoint() -> None:
        if checkpoints is not None:
            meta = {"next_interval": interval, "run_s": run_s + time.perf_counter() - start, "steps_run": steps_run}
            checkpoints.save(interval, jax.block_until_ready(states), meta)

    def stopping() -> int:
        """The signal that asks to stop (0: none), agreed by every process under jax.distributed,
        so that all of them stop after the same chunk (a checkpoint is a collective write)."""
        requested = (stop.requested or 0) if stop is not None else 0
        if jax.process_count() > 1:
            requested = int(np.max(multihost_utils.process_allgather(np.int32(requested))))
        return requested

    def interrupted(signum: int) -> Interrupted:
        checkpoint()
        name = signal.Signals(signum).name
        return Interrupted(f"{name}: stopped after {steps_run:,} of {n_steps:,} steps", signum)

    try:
        if signum := stopping():
            raise interrupted(signum)
        while interval < n_intervals:
            states = prepared.chunk_fn(states, coords, data, jnp.int32(interval))
            interval, chunks_run = min(interval + per_chunk, n_intervals), chunks_run + 1
            done = min(interval * steps_per_interval, n_steps)
            active = sum(int(np.sum(s.active)) for s in states)
            progress.update(done, steps_run, active, sum(int(np.sum(s.diverged_step >= 0)) for s in states))
            steps_run = done
            if on_chunk is not None:
                on_chunk(states, interval)
            last = interval == n_intervals or active == 0
            stop_now = stop_after_chunks is not None and chunks_run >= stop_after_chunks and not last
            if not last and (signum := stopping()):
                raise interrupted(signum)
            if last or stop_now or chunks_run % cfg.execution.checkpoint_every == 0:
                checkpoint()
            if last:
                break
            if stop_now:
                finished = False
                break
    finally:
        progress.close()
        if checkpoints is not None:
            checkpoints.close()
    states = [jax.tree.map(lambda a: a[: g.n_models], s) for g, s in zip(groups, _fetch(states))]
    run_s += time.perf_counter() - start
    n_models = sum(g.n_models for g in groups)
    timing = {"compile_s": compile_s, "run_s": run_s, "steps_run": steps_run, "model_steps_per_s": n_models * steps_run / max(run_s, 1e-9)}
    return Result(groups, states, train.logged_intervals(cfg), timing, finished)


def _given_params(group: GroupModels, tree: Any, n_devices: int) -> Any:
    """A group's given initial parameters, checked against its model count and padded; or None."""
    if tree is None:
        return None
    tree = jax.tree.map(lambda a: np.asarray(a, np.float32), tree)
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(tree)}
    if sizes != {group.n_models}:
        raise ValueError(f"initial_params[{group.group.name!r}]: leading axis {sizes}, the group has {group.n_models} models")
    return padded(tree, n_devices)


class CheckpointError(Exception):
    """No intact checkpoint to resume from (one line)."""


def state_checksum(states: Any) -> str:
    """sha256 of every leaf's bytes, in tree order: what a checkpoint must restore to exactly."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(_fetch(states)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _quiet_closed_loop_noise() -> None:
    """A failed orbax write or restore leaves tensorstore callbacks aimed at a closed asyncio
    loop, which Python reports as tracebacks (through sys.excepthook from tensorstore's threads,
    or as 'Exception ignored') long after the failure was handled. Drop exactly those reports;
    every other exception still goes to the usual hooks."""
    if getattr(sys.unraisablehook, "jaxfit_filter", False):
        return
    unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

    def unraisable(report: Any) -> None:
        if not _closed_loop(report.exc_value):
            unraisable_hook(report)

    def excepthook(kind: type, value: BaseException, traceback: Any) -> None:
        if not _closed_loop(value):
            except_hook(kind, value, traceback)

    unraisable.jaxfit_filter = True  # type: ignore[attr-defined]  # marks our hook (installed once)
    sys.unraisablehook, sys.excepthook = unraisable, excepthook


def _unretrieved(record: logging.LogRecord) -> bool:
    """False for asyncio's 'exception was never retrieved' reports (a failed write's futures)."""
    return "exception was never retrieved" not in str(record.msg)


class _HeldLogs(logging.Filter):
    """Holds orbax's error records while a checkpoint is written; `release` logs them after all
    (the write succeeded), else they are dropped: the failure is reported in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True

    def release(self) -> None:
        for record in self.records:
            logging.getLogger(record.name).handle(record)


class Checkpoints:
    """The run's orbax CheckpointManager: the whole state (a pytree) and a little JSON with the
    progress and the state's checksum, so a damaged checkpoint is detected, not trained on."""

    def __init__(self, directory: Path, cfg: Config):
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.execution.keep_checkpoints, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(directory).resolve(), options=options)
        self.per_chunk = train.chunk_intervals(cfg)  # for checkpoints of earlier versions, which counted chunks

    def save(self, step: int, states: Any, meta: dict) -> None:
        if step in self.manager.all_steps():  # the state at a given interval is always the same
            return
        meta = {**meta, "checksum": state_checksum(states)}
        held = _HeldLogs()  # a failed write is logged by orbax's threads with tracebacks: reported below in one line instead
        logging.getLogger("absl").addFilter(held)
        _quiet_closed_loop_noise()
        try:
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(states), meta=ocp.args.JsonSave(meta)), force=True)
        except Exception as error:  # noqa: BLE001 -- orbax reports a full disk as a ValueError (tensorstore's RESOURCE_EXHAUSTED)
            warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)  # orbax's abandoned writes
            logging.getLogger("asyncio").addFilter(_unretrieved)  # ... and their futures, reported when collected
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise OSError(f"checkpoint {step} could not be written ({type(error).__name__}: {first})") from None
        finally:
            logging.getLogger("absl").removeFilter(held)
        held.release()

    def restore(self, like: Any) -> tuple[Any, dict]:
        """The newest intact checkpoint; a damaged one is reported in one line and the one
        before it tried. CheckpointError if none is intact."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        steps = sorted(self.manager.all_steps(), reverse=True)
        for tried, step in enumerate(steps):
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
                )
                checksum = state_checksum(restored.state)
                if restored.meta.get("checksum", checksum) != checksum:  # checkpoints of earlier versions have none
                    raise ValueError("its data does not match its checksum")
            except Exception as error:  # noqa: BLE001 -- any damage: fall back to the previous checkpoint
                _quiet_closed_loop_noise()
                reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"
                print(f"checkpoint {step} is damaged ({reason}); trying the one before", file=sys.stderr, flush=True)
                continue
            for damaged in steps[:tried]:  # superseded: the run writes these steps again
                self.manager.delete(damaged)
            if tried:
                print(f"resuming from checkpoint {step}", file=sys.stderr, flush=True)
            meta = dict(restored.meta)
            meta.setdefault("next_interval", meta.get("next_chunk", 0) * self.per_chunk)
            return restored.state, meta
        raise CheckpointError(f"no intact checkpoint in {self.manager.directory}" + (f" (tried {len(steps)})" if steps else ""))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
