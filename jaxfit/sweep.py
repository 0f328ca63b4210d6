"""Running a run: jit one function that runs a chunk of every group (each vmapped over its
models, in the blocks plan.py chose), and drive it from the host chunk by chunk (progress,
checkpoints through checkpoints.py, stop requests, early exit once every model has stopped).
`run(cfg)` is the whole of it; `prepare` and `train_prepared` are its two halves."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from jaxfit import checkpoints as checkpoints_lib
from jaxfit import checks, plan, train
from jaxfit.config import Config
from jaxfit.signals import StopRequest

OnChunk = Callable[[list[train.ModelState], int], None]


@dataclass
class Result:
    """What a run produced, on the host (numpy), per group; and how long it took. `finished`
    is False when the run was stopped early on purpose (`stop_after_chunks`) or interrupted;
    its state is then in the last checkpoint."""

    groups: list[plan.GroupModels]
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


@dataclass
class Prepared:
    """A run ready to train: its models, data and the compiled init and chunk functions."""

    cfg: Config
    groups: list[plan.GroupModels]
    coords: list[train.Coords]
    data: Any
    given: list[Any]
    init_fn: Any
    chunk_fn: Any
    compile_s: float


def prepare(cfg: Config, initial_params: dict[str, Any] | None = None, batches: tuple[np.ndarray, np.ndarray] | None = None) -> Prepared:
    """Everything before training: models, data, and one compiled init and chunk function for
    all groups (the models axis sharded over every device). Refuses (plan.TooLarge) a run whose
    models, data or compiled step would not fit in memory, before allocating it."""
    start = time.perf_counter()
    device = jax.devices()[0]
    n_models = plan.count_models(cfg)
    plan.check_fits(
        f"{n_models:,} models", n_models * plan.HOST_BYTES_PER_MODEL + cfg.task.host_bytes(), plan.available_memory(jax.devices("cpu")[0])
    )
    groups = plan.expand(cfg)
    per_model, replicated, n_devices = plan.mesh()
    models = list({repr(g.model): g.model for g in cfg.groups}.values())
    data = train.RunData(checks.check_returns(cfg.task, models, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.seed))
    if batches is not None:
        data = train.with_batches(cfg.task, data, *batches, train.total_steps(cfg), cfg.train.batch_size)
    trainers = [train.make_train(cfg, g.group) for g in groups]
    coords = [plan.padded(g.coords, n_devices) for g in groups]
    given = [_given_params(g, (initial_params or {}).get(g.group.name), n_devices) for g in groups]
    blocks = [
        plan.models_per_block(*trainer.footprint(c, data), len(c.seed_index) // n_devices, device) for trainer, c in zip(trainers, coords)
    ]
    coords, given = jax.device_put((coords, given), per_model)
    data = jax.device_put(data, replicated)

    def init_all(coords, given, data):
        return [
            plan.in_blocks(lambda m, d: t.init(m[0], d, m[1]), block, (c, p), data)
            for t, block, c, p in zip(trainers, blocks, coords, given)
        ]

    def chunk_all(states, coords, data, first_interval):
        return [
            plan.in_blocks(lambda m, d, k: t.run_chunk(*m, d, k), block, (s, c), data, first_interval)
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
        raise plan.TooLarge(
            f"training {n_models:,} models does not fit on {device.device_kind}: XLA ran out of its "
            f"{(plan.available_memory(device) or 0) / 2**30:,.1f} GiB while compiling the step; {plan.SMALLER}"
        ) from None
    memory = chunk_fn.memory_analysis()
    needed = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes if memory else 0
    plan.check_fits(f"training {n_models:,} models ({device.device_kind})", needed, plan.available_memory(device))
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
    checkpoints = checkpoints_lib.Checkpoints(checkpoint_dir, cfg) if checkpoint_dir is not None else None
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
    states = [jax.tree.map(lambda a: a[: g.n_models], s) for g, s in zip(groups, plan.fetch(states))]
    run_s += time.perf_counter() - start
    n_models = sum(g.n_models for g in groups)
    timing = {"compile_s": compile_s, "run_s": run_s, "steps_run": steps_run, "model_steps_per_s": n_models * steps_run / max(run_s, 1e-9)}
    return Result(groups, states, train.logged_intervals(cfg), timing, finished)


def _given_params(group: plan.GroupModels, tree: Any, n_devices: int) -> Any:
    """A group's given initial parameters, checked against its model count and padded; or None."""
    if tree is None:
        return None
    tree = jax.tree.map(lambda a: np.asarray(a, np.float32), tree)
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(tree)}
    if sizes != {group.n_models}:
        raise ValueError(f"initial_params[{group.group.name!r}]: leading axis {sizes}, the group has {group.n_models} models")
    return plan.padded(tree, n_devices)
