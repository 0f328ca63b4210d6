"""Training as a pure function of one model's coordinates (the PureJaxRL pattern).

`make_train(cfg, group)` returns `init` and `run_chunk` for a block of a group's models: each
model's steps and bookkeeping are per-model functions `jax.vmap`ped over the block; its
evaluation is decided for the block, so that only the models whose value matters are evaluated
directly (`evaluate_where_needed`). `sweep.py` splits each group into blocks and jits every
group of a run into one call. Nothing here touches files or the host.

Time: steps (one optimiser update each) make epochs (the task says how many: a pass over a
shuffled training set, or one step on a fresh batch), and epochs make intervals of
`train.eval_every` epochs. One interval = train its epochs, then evaluate in eval mode, check
the stop threshold, keep the best parameters, write the history. A model is *active* until it
reaches `train.stop_at` or diverges (a non-finite loss or parameter: that update is dropped
and the model frozen); an inactive model's state no longer changes.

Randomness: a model's keys fold in the run seed and its seed index only, so models that differ
in init scheme or a swept number see the same batches and dropout masks, and a model's numbers
do not depend on which models run beside it. Per-step keys fold in the global step, so a chunk
boundary never changes a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.extend.core import ClosedJaxpr, Jaxpr

from jaxfit import optim
from jaxfit.config import Config, Group
from jaxfit.experiment import Task, module_of, template, uses_epoch_order
from jaxfit.kernels import scan
from jaxfit.own_sums import own_order

DATA_STREAM, DROPOUT_STREAM, INIT_STREAM = 0, 1, 2
CANDIDATES = (2, 8)  # buffer sizes: models evaluated directly after an interval without evaluating the whole block


class RunData(NamedTuple):
    """What every model of a run reads: the task's fixed arrays, and optionally given batches
    (x [steps, batch, *input_shape], y [steps, batch, ...]) that replace the task's own."""

    task: Any
    batches: tuple[np.ndarray, np.ndarray] | None = None


def with_batches(task: Task, data: RunData, x: np.ndarray, y: np.ndarray, n_steps: int, batch_size: int) -> RunData:
    """Train on given batches instead of the task's own: step t uses (x[t], y[t]), for every
    model (e.g. the batch order of a PyTorch run)."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    shape = (batch_size, *task.input_shape())
    if x.ndim < 2 or x.shape[0] < n_steps or x.shape[1:] != shape or y.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"batches: x {x.shape}, y {y.shape}; need x [>= {n_steps}, {', '.join(map(str, shape))}] and y [..., {batch_size}, ...]"
        )
    return data._replace(batches=(x, y))


def metric_names(evals: dict) -> tuple[str, ...]:
    """Every metric a model logs: its train-mode loss, the task's eval metrics, its learning rate."""
    return ("train_loss", *evals, "lr")


class Coords(NamedTuple):
    """Where a model sits in its group: seed index, init scheme index, swept numbers."""

    seed_index: Any  # int32 [models]: numpy on the host, a jax.Array once placed
    init_index: Any  # int32 [models]
    hp: dict[str, Any]  # float32 [models], keyed 'optim.lr', 'schedule.max_lr', ...


@struct.dataclass
class ModelState:
    params: Any
    opt_state: Any
    first_params: Any  # after the first interval (the seed's "after epoch 1" plots)
    best_params: Any  # lowest validation loss after an interval (the seed's ModelCheckpoint)
    best_val: jax.Array
    best_step: jax.Array
    initial: dict[str, jax.Array]  # the task's eval metrics before training (the seeds' lossInit)
    active: jax.Array  # bool: still training
    steps_done: jax.Array  # updates applied
    stop_step: jax.Array  # steps done when the monitored metric first reached train.stop_at; -1 if never
    diverged_step: jax.Array  # step whose update was non-finite; -1 if never
    final: dict[str, jax.Array]  # metric_names of the last interval the model trained in
    history: dict[str, jax.Array]  # metric_names at the logged intervals, [n_logged + 1] (last slot: scratch)
    per_step: dict[str, jax.Array]  # STEP_METRICS at every step, [total_steps] (train.every_step); else empty


def doprint_steps(last: int) -> list[int]:
    """The steps a forum seed prints (its doPrint): 0, 1, 2, 5, 10, 30, 100, 300, ...,
    30000, 100000, then every 100000."""
    steps = [0, 1, 2, 5, 10]
    power = 10
    while power <= last:
        multiples = (1, 3) if power < 100_000 else range(1, 10)
        steps += [m * power for m in multiples]
        power *= 10
    return sorted(s for s in set(steps) if s <= last)


def logged_intervals(cfg: Config) -> np.ndarray:
    """Intervals whose metrics go into the history: all of them for runs of up to 1000
    intervals (e.g. every epoch of 600); else those ending at one of the seed's doPrint steps or on
    a log-spaced grid of `train.history_points` steps, and the last one. Nothing is stored per step."""
    n = cfg.n_intervals
    if n <= 1000:
        return np.arange(n)
    steps_per_interval = cfg.steps_per_epoch * cfg.train.eval_every
    total = total_steps(cfg)
    wanted = set(doprint_steps(total)) | set(np.unique(np.geomspace(1, total, cfg.train.history_points).astype(np.int64)).tolist())
    ends = np.minimum((np.arange(n) + 1) * steps_per_interval, total)
    return np.flatnonzero(np.isin(ends, sorted(wanted)) | (np.arange(n) == n - 1))


def total_steps(cfg: Config) -> int:
    return cfg.train.steps if cfg.train.steps is not None else cfg.n_epochs * cfg.steps_per_epoch


def interval_end_steps(cfg: Config, intervals: np.ndarray) -> np.ndarray:
    """Steps done at the end of each given interval (the x axis of the history)."""
    return np.minimum((np.asarray(intervals) + 1) * cfg.steps_per_epoch * cfg.train.eval_every, total_steps(cfg))


def model_keys(seed: int, seed_index: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(data, dropout, init) keys of a model: functions of the run seed and seed index only."""
    key = jax.random.fold_in(jax.random.key(seed), seed_index)
    data, dropout, init = (jax.random.fold_in(key, stream) for stream in (DATA_STREAM, DROPOUT_STREAM, INIT_STREAM))
    return data, dropout, init


def _where(condition: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


STEP_METRICS = ("train_loss", "lr", "grad_norm")  # what train.every_step keeps of each step


def make_step(cfg: Config, group: Group, with_step_metrics: bool = False) -> Callable:
    """One optimiser update of one model: `step(params, opt_state, x, y, step, coords) ->
    (new_params, new_opt_state, loss)`, loss being the task's train-mode loss before the
    update; the optimiser is the group's optax chain (`optim.chain`) with the schedule's
    learning rate at `step`. The trainer scans exactly this; the torch parity tests call it step
    by step. `with_step_metrics`: a fourth result, the step's STEP_METRICS (train.every_step)."""
    task = cfg.task
    module = module_of(task, group.model)
    steps_per_epoch = cfg.steps_per_epoch
    closed_form = task.full_batch_loss(group.model)

    def step_fn(params, opt_state, x, y, step, coords: Coords):
        _, dropout_key, _ = model_keys(cfg.seed, coords.seed_index)

        def loss_fn(params):
            if closed_form is not None:  # the fixed batch's loss, without touching its points
                return closed_form(params)
            pred = module.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.fold_in(dropout_key, step)})
            return task.loss(pred, y)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        lr = optim.learning_rate(group, coords.hp, step, steps_per_epoch)
        updates, opt_state = optim.chain(group, coords.hp, lr).update(grads, opt_state, params)
        if with_step_metrics:
            metrics = dict(zip(STEP_METRICS, (loss, lr, optax.tree.norm(grads))))
            return optax.apply_updates(params, updates), opt_state, loss, metrics
        return optax.apply_updates(params, updates), opt_state, loss

    return step_fn


def init_params(task: Task, model: Any, shapes: Any, init_index: jax.Array, key: jax.Array) -> Any:
    """Parameters for scheme `model.init[init_index]` (a traced index: all of the group's
    schemes are drawn and one is selected, so a vmapped group can mix schemes)."""
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    candidates = [task.init_params(model, zeros, scheme, key) for scheme in model.init]
    if len(candidates) == 1:
        return candidates[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves)[init_index], *candidates)


def batch_at(
    task: Task, model: Any, data: RunData, order: Any, key: jax.Array, step: jax.Array, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """The (x, y) a model of table `model` trains on at global step `step`: the given batches,
    or the task's sampler's (bound once per table, train.batch_size samples)."""
    if data.batches is not None:
        return data.batches[0][step], data.batches[1][step]
    sample = task.sampler(model, batch_size)
    x, y = sample(data.task, key, step, order) if uses_epoch_order(task) else sample(data.task, key, step)
    chex.assert_shape(x, (None, *task.input_shape()))  # checked while tracing: an experiment's mistake, named
    chex.assert_equal_shape_prefix([x, y], 1)
    return x, y


class Trained(NamedTuple):
    """One model after an interval's optimiser steps, before its evaluation."""

    params: Any
    opt_state: Any
    active: jax.Array
    steps_done: jax.Array
    diverged_step: jax.Array
    loss_sum: jax.Array  # of the train-mode losses of the steps applied
    per_step: dict[str, jax.Array]  # ModelState.per_step

    @classmethod
    def start(cls, state: ModelState) -> Trained:
        """An interval's starting point: the model as its state holds it, no loss summed yet."""
        return cls(state.params, state.opt_state, state.active, state.steps_done, state.diverged_step, jnp.float32(0), state.per_step)


class Trainer(NamedTuple):
    """What `make_train` builds for a group: `init(coords, data, given_params)` and
    `run_chunk(states, coords, data, first_interval)` for a block of its models, and
    `footprint(coords, data)`: the bytes of the largest array one model holds in an optimiser
    step and in an evaluation (from the traced programs; nothing runs; `plan.models_per_block`)."""

    init: Callable
    run_chunk: Callable
    footprint: Callable[[Coords, RunData], tuple[int, int]]


class Setup(NamedTuple):
    """What every function of a group's training shares, fixed when it is built (nothing traced)."""

    cfg: Config
    group: Group
    task: Task
    module: Any  # the group's Flax module (an NNX one wrapped as linen)
    step_fn: Callable  # make_step's optimiser update
    shapes: Any  # the parameter tree's shapes
    logged: jax.Array  # the logged intervals, int32
    bound: Callable | None  # the task's closed-form filter of the monitored metric, if it has one
    evaluate_one: Callable  # `evaluate` of one model, jitted: traced once however many programs use it

    @property
    def n_logged(self) -> int:
        return int(self.logged.shape[0])

    @property
    def maximise(self) -> bool:
        return self.task.goal == "max"


def make_setup(cfg: Config, group: Group) -> Setup:
    """The fixed parts of a group's training."""
    task = cfg.task
    module = module_of(task, group.model)
    setup = Setup(
        cfg,
        group,
        task,
        module,
        make_step(cfg, group, with_step_metrics=cfg.train.every_step),
        template(module, task.input_shape()),
        jnp.asarray(logged_intervals(cfg), jnp.int32),
        task.val_bound(group.model, cfg.train.eval_batch_size),
        evaluate,
    )
    return setup._replace(evaluate_one=jax.jit(partial(evaluate, setup)))


def equations(fn: Callable, *args: Any) -> Iterator[Any]:
    """Every equation of `fn(*args)`'s jaxpr, nested ones too, in program order."""

    def walk(jaxpr: Jaxpr) -> Iterator[Any]:
        for eqn in jaxpr.eqns:
            yield eqn
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else (param,):
                    if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                        yield from walk(sub.jaxpr if isinstance(sub, ClosedJaxpr) else sub)

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def _size(var: Any) -> int:
    return int(getattr(var.aval, "size", 0))


def largest_array_bytes(fn: Callable, *args: Any) -> int:
    """The largest array that `fn(*args)` computes, in bytes, from its jaxpr (nested ones too)."""
    return max((_size(v) * v.aval.dtype.itemsize for eqn in equations(fn, *args) for v in eqn.outvars if _size(v)), default=0)


def evaluate(s: Setup, params: Any, data: RunData) -> dict[str, jax.Array]:
    """One model's eval-mode metrics (scalars), the monitored one among them."""
    evals = s.task.evaluate(s.module, params, data.task)
    chex.assert_rank(list(evals.values()), 0)  # one number per metric
    monitor = s.task.monitor
    assert monitor in evals, f"{type(s.task).__name__}.evaluate gives {sorted(evals)}; its monitor {monitor!r} is not among them"
    return evals


def reaches(s: Setup, value: jax.Array) -> jax.Array:
    """The monitored metric is at the stop threshold."""
    stop_at = s.cfg.train.stop_at
    if stop_at is None:
        return jnp.bool_(False)
    return value >= stop_at if s.maximise else value <= stop_at


def init_one(s: Setup, coords: Coords, data: RunData, given_params: Any = None) -> ModelState:
    """One model's state before training; `given_params` (if any) replace the init scheme."""
    _, _, init_key = model_keys(s.cfg.seed, coords.seed_index)
    params = given_params if given_params is not None else init_params(s.task, s.group.model, s.shapes, coords.init_index, init_key)
    lr0 = optim.learning_rate(s.group, coords.hp, jnp.int32(0), s.cfg.steps_per_epoch)
    opt_state = optim.chain(s.group, coords.hp, lr0).init(params)
    initial = s.evaluate_one(params, data)
    reached = reaches(s, initial[s.task.monitor])
    return ModelState(
        params=params,
        opt_state=opt_state,
        first_params=params,
        best_params=params,
        best_val=jnp.float32(-jnp.inf if s.maximise else jnp.inf),
        best_step=jnp.int32(-1),
        initial=initial,
        active=~reached,
        steps_done=jnp.int32(0),
        stop_step=jnp.where(reached, 0, -1).astype(jnp.int32),
        diverged_step=jnp.int32(-1),
        final={"train_loss": jnp.float32(jnp.nan), **initial, "lr": lr0},
        history={name: jnp.full(s.n_logged + 1, jnp.nan, jnp.float32) for name in metric_names(initial)},
        per_step={name: jnp.full(total_steps(s.cfg), jnp.nan, jnp.float32) for name in STEP_METRICS} if s.cfg.train.every_step else {},
    )


def train_step(s: Setup, carry: Trained, step: jax.Array, x: jax.Array, y: jax.Array, coords: Coords) -> Trained:
    """One model's optimiser step on batch (x, y) at global step `step` (none for a frozen
    model, or past the last step; a non-finite result freezes the model without applying it)."""
    new_params, new_opt_state, loss, *metrics = s.step_fn(carry.params, carry.opt_state, x, y, step, coords)
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(new_params)]))
    live = carry.active & (step < total_steps(s.cfg))
    update = live & finite
    params, opt_state = _where(update, (new_params, new_opt_state), (carry.params, carry.opt_state))
    return Trained(
        params,
        opt_state,
        carry.active & (finite | ~live),
        carry.steps_done + update,
        jnp.where(live & ~finite, step, carry.diverged_step),
        carry.loss_sum + jnp.where(update, loss, 0.0),
        {name: carry.per_step[name].at[step].set(jnp.where(update, value, jnp.nan), mode="drop") for name, value in metrics[0].items()}
        if metrics
        else carry.per_step,
    )


def epoch_order(s: Setup, data_key: jax.Array, data: RunData, epoch: jax.Array) -> Any:
    """The task's order of the training set for an epoch (None with given batches)."""
    return s.task.epoch_order(data.task, data_key, epoch) if data.batches is None else None


def batch_and_step(
    s: Setup, carry: Trained, step_in_epoch: jax.Array, epoch: jax.Array, order: Any, data_key: jax.Array, coords: Coords, data: RunData
) -> Trained:
    """The batch of a step of an epoch, and the optimiser step on it."""
    step = epoch * s.cfg.steps_per_epoch + step_in_epoch
    x, y = batch_at(s.task, s.group.model, data, order, data_key, step, s.cfg.train.batch_size)
    return train_step(s, carry, step, x, y, coords)


def train_interval(s: Setup, state: ModelState, interval: jax.Array, coords: Coords, data: RunData) -> Trained:
    """One model's optimiser steps of an interval."""
    data_key, _, _ = model_keys(s.cfg.seed, coords.seed_index)

    def train_epoch(carry: Trained, epoch: jax.Array) -> tuple[Trained, None]:
        order = epoch_order(s, data_key, data, epoch)
        step = lambda c, i: (batch_and_step(s, c, i, epoch, order, data_key, coords, data), None)  # noqa: E731
        return scan(step, carry, jnp.arange(s.cfg.steps_per_epoch, dtype=jnp.int32)), None

    epochs = interval * s.cfg.train.eval_every + jnp.arange(s.cfg.train.eval_every, dtype=jnp.int32)
    return scan(train_epoch, Trained.start(state), epochs)


def log_slot(s: Setup, interval: jax.Array) -> jax.Array:
    """The interval's column of the history; the scratch column n_logged if it is not logged."""
    slot = jnp.searchsorted(s.logged, interval, method="compare_all")  # a fused compare, not a while loop
    return jnp.where((slot < s.n_logged) & (s.logged[jnp.minimum(slot, s.n_logged - 1)] == interval), slot, s.n_logged)


def just_diverged(state: ModelState, trained: Trained) -> jax.Array:
    return (trained.diverged_step >= 0) & (state.diverged_step < 0)


def ranked(s: Setup, state: ModelState, trained: Trained) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """One model's closed-form monitored metric, whether its direct value is needed (it could
    decide a stop, or the model just diverged), and the estimate recorded where it is not."""
    assert s.bound is not None  # only for a task with a closed form
    ranking, margin = s.bound(trained.params)
    could_stop = reaches(s, ranking + margin if s.maximise else ranking - margin)
    needed = just_diverged(state, trained) | (trained.active & could_stop)
    return ranking, needed, {name: ranking if name == s.task.monitor else jnp.float32(jnp.nan) for name in state.initial}


def evaluate_where_needed(s: Setup, states: ModelState, trained: Trained, slot: jax.Array, data: RunData) -> tuple[dict, jax.Array]:
    """The block's metrics after an interval, and each model's ranking value (what "best"
    compares). Without a closed form: every model evaluated directly. With one: only where a
    value is logged or needed -- none; a few, gathered into the smallest CANDIDATES buffer
    that holds them; or every model when more need it -- and the closed form elsewhere.
    Hundreds of models crossing the threshold thus cost a few models' evaluations per
    interval, not the whole block's. A model's direct value is the same bits in every case
    (tests/test_piecewise.py)."""
    evaluate_all = lambda: jax.vmap(own_order(s.evaluate_one), (0, None))(trained.params, data)  # noqa: E731
    if s.bound is None:
        evals = evaluate_all()
        return evals, evals[s.task.monitor]
    ranking, needed, estimate = jax.vmap(partial(ranked, s))(states, trained)
    n_models = needed.shape[0]
    needed = needed | (slot < s.n_logged)

    def evaluate_few(slots: int) -> dict[str, jax.Array]:
        index = jnp.nonzero(needed, size=slots, fill_value=n_models)[0]  # the fill's n_models is dropped below
        params = jax.tree.map(lambda p: p[jnp.minimum(index, n_models - 1)], trained.params)
        values = jax.vmap(own_order(s.evaluate_one), (0, None))(params, data)
        return jax.tree.map(lambda e, v: e.at[index].set(v, mode="drop"), estimate, values)

    buffers = sorted({min(slots, n_models) for slots in CANDIDATES})
    branches: list[Callable[[], Any]] = [lambda: estimate, *[partial(evaluate_few, slots) for slots in buffers], evaluate_all]
    count = jnp.sum(needed)
    branch = sum((count > size).astype(jnp.int32) for size in [0, *buffers])  # the smallest that holds them all
    return jax.lax.switch(branch, branches), ranking


def record(
    s: Setup,
    state: ModelState,
    trained: Trained,
    evals: dict[str, jax.Array],
    ranking: jax.Array,
    interval: jax.Array,
    slot: jax.Array,
    coords: Coords,
) -> ModelState:
    """One model's state after an interval: stop, best parameters, history, final numbers."""
    monitor, nan = s.task.monitor, jnp.float32(jnp.nan)
    moved = trained.steps_done > state.steps_done  # this interval moved the model
    diverged_now = just_diverged(state, trained)
    per_epoch = s.cfg.steps_per_epoch
    lr = optim.learning_rate(s.group, coords.hp, interval * s.cfg.train.eval_every * per_epoch, per_epoch)
    train_loss = trained.loss_sum / jnp.maximum(trained.steps_done - state.steps_done, 1)
    values = {"train_loss": train_loss, **evals, "lr": lr}
    reached = trained.active & reaches(s, evals[monitor])
    better = moved & ((ranking > state.best_val) if s.maximise else (ranking < state.best_val))
    history = {name: state.history[name].at[slot].set(jnp.where(moved, values[name], nan)) for name in values}
    final = _where(moved, values, state.final)
    return ModelState(
        params=trained.params,
        opt_state=trained.opt_state,
        first_params=_where(interval == 0, trained.params, state.first_params),
        best_params=_where(better, trained.params, state.best_params),
        best_val=jnp.where(better, ranking, state.best_val),
        best_step=jnp.where(better, trained.steps_done, state.best_step),
        initial=state.initial,
        active=trained.active & ~reached,
        steps_done=trained.steps_done,
        stop_step=jnp.where(reached, trained.steps_done, state.stop_step),
        diverged_step=trained.diverged_step,
        final={**final, monitor: jnp.where(diverged_now, evals[monitor], final[monitor])},
        history=history,
        per_step=trained.per_step,
    )


def run_interval(s: Setup, states: ModelState, interval: jax.Array, coords: Coords, data: RunData) -> ModelState:
    """A block's interval: every model's steps (vmapped), the evaluation where needed, the bookkeeping (vmapped)."""
    trained = jax.vmap(own_order(partial(train_interval, s)), (0, None, 0, None))(states, interval, coords, data)
    slot = log_slot(s, interval)
    evals, ranking = evaluate_where_needed(s, states, trained, slot, data)
    return jax.vmap(partial(record, s), (0, 0, 0, 0, None, None, 0))(states, trained, evals, ranking, interval, slot, coords)


def init_block(s: Setup, coords: Coords, data: RunData, given_params: Any = None) -> ModelState:
    """The block's states before training."""
    return jax.vmap(own_order(partial(init_one, s)), (0, None, 0))(coords, data, given_params)


def run_chunk(s: Setup, states: ModelState, coords: Coords, data: RunData, first_interval: jax.Array) -> ModelState:
    """`chunk_intervals(cfg)` intervals from `first_interval`; those past the end do nothing."""
    body = lambda states, k: (run_interval(s, states, k, coords, data), None)  # noqa: E731
    return scan(body, states, first_interval + jnp.arange(chunk_intervals(s.cfg), dtype=jnp.int32))


def footprint(s: Setup, coords: Coords, data: RunData) -> tuple[int, int]:
    """(largest array of one model's optimiser step, of its evaluation), in bytes."""
    one = jax.tree.map(lambda a: a[0], coords)
    state = jax.eval_shape(partial(init_one, s), one, data)
    data_key, _, _ = model_keys(s.cfg.seed, one.seed_index)
    order = jax.eval_shape(partial(epoch_order, s), data_key, data, jnp.int32(0))
    step = largest_array_bytes(
        lambda c, o, m, d: batch_and_step(s, c, jnp.int32(0), jnp.int32(0), o, data_key, m, d), Trained.start(state), order, one, data
    )
    return step, largest_array_bytes(s.evaluate_one, state.params, data)


def make_train(cfg: Config, group: Group) -> Trainer:
    """init, run_chunk and footprint for a block of `group`'s models (a leading models axis on
    every coordinate and state leaf); see the module docstring and the functions above."""
    s = make_setup(cfg, group)
    return Trainer(partial(init_block, s), partial(run_chunk, s), partial(footprint, s))


def chunk_intervals(cfg: Config) -> int:
    """Intervals per compiled chunk: `execution.chunk_epochs`, else about a hundredth of the run."""
    if cfg.execution.chunk_epochs is not None:
        return max(1, cfg.execution.chunk_epochs // cfg.train.eval_every)
    return max(1, -(-cfg.n_intervals // 100))
