"""Running a run: jit each group's chunk (vmapped over its models, in the blocks plan.py chose;
one program per group, so that compaction recompiles only the group it shrinks -- as fast as
one program for all groups, measured), and drive them from the host chunk by chunk (progress,
compaction of the models still training, checkpoints through checkpoints.py, stop requests,
early exit once every model has stopped). `run(cfg)` is the whole of it; `prepare` and
`train_prepared` are its two halves."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from jaxfit import checkpoints as checkpoints_lib
from jaxfit import checks, compile_cache, plan, trainer
from jaxfit.config import Config, ConfigError
from jaxfit.signals import StopRequest

OnChunk = Callable[[list[trainer.ModelState], int], None]


@dataclass
class Result:
    """What a run produced, on the host (numpy), per group; and how long it took. `finished`
    is False when the run was stopped early on purpose (`stop_after_chunks`) or interrupted;
    its state is then in the last checkpoint."""

    groups: list[plan.GroupModels]
    states: list[trainer.ModelState]
    logged: np.ndarray  # the logged intervals
    timing: dict[str, Any] = field(default_factory=dict)
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
    """A run ready to train: its models, data, the compiled init, and every group's chunk
    programs: the one that runs all its models (compiled here) and those of compaction."""

    cfg: Config
    groups: list[plan.GroupModels]
    coords: list[trainer.Coords]
    data: list[trainer.RunData]  # each group's (groups of one model table share theirs)
    given: list[Any]
    init_fn: Any
    program: Callable[[int, int | None], Any]  # (group, models per device or None for all) -> its compiled chunk
    trainers: list[trainer.Trainer]
    footprints: list[tuple[int, int]]  # Trainer.footprint of each group
    per_model: Any  # the models axis' sharding over the run's devices (plan.mesh)
    per_device: list[int]  # each group's models on one device (padded)
    compile_s: float
    chunk_compile_s: float  # of the chunk programs of every model alone


def prepare(cfg: Config, initial_params: dict[str, Any] | None = None, batches: tuple[np.ndarray, np.ndarray] | None = None) -> Prepared:
    """Everything before training: models, data, a compiled init for all groups and a compiled
    chunk for each (the models axis sharded over every device). Refuses (plan.TooLarge) a run
    whose models, data or compiled step would not fit in memory, before allocating it."""
    start = time.perf_counter()
    compile_cache.enable()
    device = jax.devices()[0]
    n_models = plan.count_models(cfg)
    per_step = 2 * 4 * len(trainer.STEP_METRICS) * trainer.total_steps(cfg) if cfg.train.every_step else 0  # on the device and fetched
    plan.check_fits(
        f"{n_models:,} models" + (" with train.every_step" if per_step else ""),
        n_models * (plan.HOST_BYTES_PER_MODEL + per_step) + cfg.task.host_bytes(),
        plan.available_memory(jax.devices("cpu")[0]),
    )
    groups = plan.expand(cfg)
    tables = {repr(g.model): g.model for g in cfg.groups}
    users = [[g.name for g in cfg.groups if repr(g.model) == key] for key in tables]
    made = checks.check_returns(cfg.task, list(tables.values()), cfg.train.batch_size, cfg.train.eval_batch_size, cfg.seed, users)
    unique = list({id(d): d for d in made}.values())  # data() once for every table, or data(model) for each
    data = [trainer.RunData(d) for d in unique]
    if batches is not None:
        data = [trainer.with_batches(cfg.task, d, *batches, trainer.total_steps(cfg), cfg.train.batch_size) for d in data]
    of_table = dict(zip(tables, (next(i for i, u in enumerate(unique) if u is d) for d in made)))
    data_index = [of_table[repr(g.group.model)] for g in groups]  # each group's data
    trainers = [trainer.make_train(cfg, g.group) for g in groups]
    footprints = [trainer.footprint(plan.padded(g.coords), data[i]) for trainer, g, i in zip(trainers, groups, data_index)]
    per_model, replicated, n_devices = plan.mesh(sum(f[0] * g.n_models for f, g in zip(footprints, groups)))
    coords = [plan.padded(g.coords, n_devices) for g in groups]
    given = [_given_params(g, (initial_params or {}).get(g.group.name), n_devices) for g in groups]
    per_device = [len(c.seed_index) // n_devices for c in coords]
    coords, given = jax.device_put((coords, given), per_model)
    placed = jax.device_put(data, replicated)  # each table's data on the devices once, however many groups share it
    data = [placed[i] for i in data_index]

    def init_all(coords, given, data):
        return [
            plan.in_blocks(lambda m, d: t.init(m[0], d, m[1]), plan.models_per_block(*f, n, device), (c, p), d)
            for t, f, n, c, p, d in zip(trainers, footprints, per_device, coords, given, data)
        ]

    def chunk(group: int, size: int | None, state, coords, data, first_interval, pick):
        """A group's chunk: all its models (in blocks), or the picked ones (compaction)."""
        run = lambda m, d, k: trainers[group].run_chunk(*m, d, k)  # noqa: E731
        if size is None:
            return plan.in_blocks(
                run, plan.models_per_block(*footprints[group], per_device[group], device), (state, coords), data, first_interval
            )
        return plan.on_picked(run, plan.models_per_block(*footprints[group], size, device), pick, (state, coords), data, first_interval)

    try:
        options = plan.compiler_options(device)
        init_fn = plan.EachDevice(init_all, per_model, (coords, given, data), options)
        states = init_fn.out_info
        programs: dict[tuple[int, int | None], Any] = {}

        def program(group: int, size: int | None) -> Any:
            if (group, size) not in programs:
                pick = None if size is None else jax.ShapeDtypeStruct((size * n_devices,), jnp.int32, sharding=per_model)
                args = (states[group], coords[group], data[group], jnp.int32(0), pick)
                programs[group, size] = plan.EachDevice(partial(chunk, group, size), per_model, args, options, donate=True)
            return programs[group, size]

        chunk_start = time.perf_counter()
        whole = [program(g, None) for g in range(len(groups))]
        chunk_compile_s = time.perf_counter() - chunk_start
    except jax.errors.JaxRuntimeError as error:  # XLA's GPU autotuner allocates while compiling
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        raise plan.TooLarge(
            f"training {n_models:,} models does not fit on {device.device_kind}: XLA ran out of its "
            f"{(plan.available_memory(device) or 0) / 2**30:,.1f} GiB while compiling the step; {plan.SMALLER}"
        ) from None
    memory = [m for m in (p.memory_analysis() for p in whole) if m is not None]
    needed = sum(m.argument_size_in_bytes + m.output_size_in_bytes for m in memory) + max((m.temp_size_in_bytes for m in memory), default=0)
    plan.check_fits(f"training {n_models:,} models ({device.device_kind})", needed, plan.available_memory(device))
    elapsed = time.perf_counter() - start
    return Prepared(
        cfg, groups, coords, data, given, init_fn, program, trainers, footprints, per_model, per_device, elapsed, chunk_compile_s
    )


COMPACT_ENV = "JAXFIT_COMPACT"  # auto (default), always, never: for tests and benchmarks; results do not depend on it


def compact_mode() -> str:
    """`$JAXFIT_COMPACT`, checked: a bad value is a one-line ConfigError."""
    mode = os.environ.get(COMPACT_ENV, "auto")
    if mode not in ("auto", "always", "never"):
        raise ConfigError(f"${COMPACT_ENV}={mode!r}: expected auto, always or never")
    return mode


class Compaction:
    """Which models each group's next chunk runs. After each chunk the host counts a group's
    models still training on each device; its next chunk runs only those (`plan.on_picked`), in
    the smallest bucket that holds them (`plan.bucket`), when the seconds that saves over the
    chunks left (a chunk's time taken as proportional to its models) exceed a compile's (the
    last one measured; a size compiled before is free). Stopped models keep their state where it
    is, so checkpoints, trackers and files see every model; a model's numbers do not depend on
    the models beside it (`plan.compiler_options`), so no bit changes. On a CPU only: elsewhere
    a model's bits may depend on its block (not measured on a GPU yet). `record()` says what it
    did, for the run's files."""

    def __init__(self, prepared: Prepared, mode: str):
        self.prepared, self.mode = prepared, mode if jax.devices()[0].platform == "cpu" else "never"
        n_groups = len(prepared.groups)
        self.sizes: list[int | None] = [None] * n_groups  # per group: models per device its chunk runs; None: all
        self.chunk_s: list[float] = [0.0] * n_groups  # the last chunk's seconds, per group
        self.compiled: set[tuple[int, int | None]] = {(g, None) for g in range(n_groups)}
        self.compile_estimate = prepared.chunk_compile_s / max(n_groups, 1)
        self.switches: list[dict[str, Any]] = []
        self.declined: dict[str, Any] | None = None

    def choose(self, group: int, active: np.ndarray, chunks_left: int, step: int) -> None:
        """The group's size for its next chunk, compiling a program where it pays."""
        n, current, name = self.prepared.per_device[group], self.sizes[group], self.prepared.groups[group].group.name
        if self.mode == "never":
            return
        most = int(active.reshape(-1, n).sum(axis=1).max())
        models = lambda size: n if size is None or size == n else size  # noqa: E731
        saving = lambda size: self.chunk_s[group] * (1 - models(size) / models(current)) * chunks_left  # noqa: E731
        smallest = plan.bucket(most, n)
        wanted = None if smallest == n else smallest
        if wanted == current:
            return
        known = wanted == 0 or (group, wanted) in self.compiled
        if not (known or self.mode == "always" or saving(wanted) > self.compile_estimate):
            self.declined = {"step": step, "group": name, "saving_s": saving(wanted), "compile_s": self.compile_estimate}
            return
        start = time.perf_counter()
        if wanted != 0:
            self.prepared.program(group, wanted)
        took = time.perf_counter() - start
        if not known:
            self.compiled.add((group, wanted))
            self.compile_estimate = took
        self.sizes[group] = wanted
        n_devices = len(active) // n
        self.switches.append({"step": step, "group": name, "models": models(wanted) * n_devices, "compile_s": took if not known else 0.0})

    def run(self, states: list[Any], active: list[np.ndarray], interval: int, chunks_left: int, step: int) -> list[Any]:
        """Every group's next chunk, on the models it chose (states of the others unchanged)."""
        coords, data = self.prepared.coords, self.prepared.data
        out = []
        for group, (state, a) in enumerate(zip(states, active)):
            self.choose(group, a, chunks_left, step)
            size = self.sizes[group]
            start = time.perf_counter()
            if size == 0:
                out.append(state)
                continue
            program = self.prepared.program(group, size)
            out.append(jax.block_until_ready(program(state, coords[group], data[group], jnp.int32(interval), self.pick(group, a))))
            self.chunk_s[group] = time.perf_counter() - start
        return out

    def pick(self, group: int, active: np.ndarray) -> Any:
        """The rows a compacted chunk runs: per device, its active models' indices, padded with
        an index past the end; None when the group runs whole."""
        size, n = self.sizes[group], self.prepared.per_device[group]
        if size is None:
            return None
        rows = [np.flatnonzero(device) for device in active.reshape(-1, n)]
        return jax.device_put(
            np.concatenate([np.pad(r, (0, size - len(r)), constant_values=n) for r in rows]).astype(np.int32), self.prepared.per_model
        )

    def record(self) -> dict[str, Any]:
        """What compaction did: each switch of a group to a size (from which step, the models its
        chunk then runs, compile seconds), and the last time it declined because a compile would
        cost more than it saves."""
        return {
            "mode": self.mode,
            "switches": self.switches,
            "compile_s": sum(p["compile_s"] for p in self.switches),
            "declined": self.declined,
        }


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

    n_intervals, per_chunk = cfg.n_intervals, trainer.chunk_intervals(cfg)
    steps_per_interval = cfg.steps_per_epoch * cfg.train.eval_every
    n_steps = trainer.total_steps(cfg)
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

    def count(masks: list[np.ndarray]) -> int:
        """The models a per-model mask marks, not plan.padded's copies."""
        return sum(int(m[: g.n_models].sum()) for m, g in zip(masks, groups))

    compaction = Compaction(prepared, compact_mode())
    active = plan.fetch([s.active for s in states])
    try:
        if signum := stopping():
            raise interrupted(signum)
        while interval < n_intervals:
            states = compaction.run(states, active, interval, -(-(n_intervals - interval) // per_chunk), steps_run)
            interval, chunks_run = min(interval + per_chunk, n_intervals), chunks_run + 1
            done = min(interval * steps_per_interval, n_steps)
            active, diverged = plan.fetch(([s.active for s in states], [s.diverged_step >= 0 for s in states]))
            progress.update(done, steps_run, count(active), count(diverged))
            steps_run = done
            if on_chunk is not None:
                on_chunk(states, interval)
            last = interval == n_intervals or not any(a.any() for a in active)
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
    own_steps = sum(int(np.sum(s.steps_done, dtype=np.int64)) for s in states)
    timing = {
        "n_devices": prepared.per_model.mesh.size,
        "compile_s": compile_s,
        "run_s": run_s,
        "steps_run": steps_run,
        "model_steps_per_s": n_models * steps_run / max(run_s, 1e-9),
        "own_model_steps_per_s": own_steps / max(run_s, 1e-9),  # the steps models took before they stopped
        "compaction": compaction.record(),
        "compile_cache": {**compile_cache.counts(), "folder": str(compile_cache.enable() or "off")},
    }
    return Result(groups, states, trainer.logged_intervals(cfg), timing, finished)


def _given_params(group: plan.GroupModels, tree: Any, n_devices: int) -> Any:
    """A group's given initial parameters, checked against its model count and padded; or None."""
    if tree is None:
        return None
    tree = jax.tree.map(lambda a: np.asarray(a, np.float32), tree)
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(tree)}
    if sizes != {group.n_models}:
        raise ValueError(f"initial_params[{group.group.name!r}]: leading axis {sizes}, the group has {group.n_models} models")
    return plan.padded(tree, n_devices)
