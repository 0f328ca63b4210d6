"""From a config to trained models: expand every group into its models (seeds x init schemes x
swept numbers), jit one function that runs a chunk of every group (each vmapped over its
models), and drive it from the host chunk by chunk (progress, early exit when every model has
stopped).
"""
from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxfit import optim, tasks, train
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


def padded(coords: Any, multiple: int = 1) -> Any:
    """Per-model arrays (coordinates, parameters) padded (repeating the last model) to at least 2 models and a multiple of
    `multiple`: XLA compiles a vmapped axis of size 1 differently (a model alone would not give
    the numbers it gives beside others); the padding models are dropped after the run."""
    n = len(jax.tree.leaves(coords)[0])
    target = max(2, -(-n // multiple) * multiple)
    return jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], target - n, axis=0)]), coords)


def expand(cfg: Config) -> list[GroupModels]:
    """Every group's models, in the order init scheme x swept numbers x seed (seed fastest)."""
    out = []
    for group in cfg.groups:
        numbers = optim.hyperparameters(group)
        swept = {k: v for k, v in numbers.items() if isinstance(v, tuple)}
        labels, seed_index, init_index, hp = [], [], [], {}
        for init_i, init in enumerate(group.model.init):
            for values in itertools.product(*swept.values()):
                chosen = dict(zip(swept, values))
                for seed in range(cfg.sweep.n_seeds):
                    labels.append({"group": group.name, "seed": seed, "init": init, **chosen})
                    seed_index.append(seed)
                    init_index.append(init_i)
                    for k, v in optim.per_model({**numbers, **chosen}).items():
                        hp.setdefault(k, []).append(v)
        coords = train.Coords(
            np.asarray(seed_index, np.int32),
            np.asarray(init_index, np.int32),
            {k: np.asarray(v, np.float32) for k, v in hp.items()},
        )
        out.append(GroupModels(group, labels, coords))
    return out


@dataclass
class Result:
    """What a run produced, on the host (numpy), per group; and how long it took."""

    groups: list[GroupModels]
    states: list[train.ModelState]
    logged: np.ndarray  # the logged intervals
    timing: dict[str, float] = field(default_factory=dict)


def _progress(total: int, quiet: bool):
    if quiet:
        return None
    interactive = sys.stderr.isatty()
    return tqdm(total=total, unit="step", unit_scale=True, dynamic_ncols=True, disable=False,
                mininterval=0.5 if interactive else 30.0, file=sys.stderr)


def run(cfg: Config, quiet: bool = False, initial_params: dict[str, Any] | None = None,
        batches: tuple[np.ndarray, np.ndarray] | None = None) -> Result:
    """Train every model of `cfg`: one jitted init, one jitted chunk function for all groups.

    initial_params: {group name: parameter tree whose leaves have a leading [n_models] axis},
      replacing the init scheme of those groups (Flax layout; `models.from_torch` converts a
      PyTorch state_dict). batches: (x [steps, batch, inputs], y [steps, batch, 1]) used at
      every step by every model instead of the task's own sampling."""
    groups = expand(cfg)
    data = tasks.make_data(cfg.task, cfg.train.eval_batch_size)
    if batches is not None:
        data = tasks.with_batches(data, *batches, train.total_steps(cfg), cfg.train.batch_size)
    trainers = [train.make_train(cfg, g.group) for g in groups]
    coords = [padded(g.coords) for g in groups]
    given = []
    for g in groups:
        tree = (initial_params or {}).get(g.group.name)
        if tree is not None:
            tree = jax.tree.map(lambda a: np.asarray(a, np.float32), tree)
            sizes = {leaf.shape[0] for leaf in jax.tree.leaves(tree)}
            if sizes != {g.n_models}:
                raise ValueError(f"initial_params[{g.group.name!r}]: leading axis {sizes}, the group has {g.n_models} models")
            tree = padded(tree)
        given.append(tree)

    def init_all(coords, data, given):
        return [jax.vmap(init, in_axes=(0, None, 0))(c, data, p) for (init, _), c, p in zip(trainers, coords, given)]

    def chunk_all(states, coords, data, first_interval):
        return [
            jax.vmap(run_chunk, in_axes=(0, 0, None, None))(s, c, data, first_interval)
            for (_, run_chunk), s, c in zip(trainers, states, coords)
        ]

    start = time.perf_counter()
    states = jax.jit(init_all)(coords, data, given)
    chunk_fn = jax.jit(chunk_all, donate_argnums=0).lower(states, coords, data, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - start

    n_intervals, per_chunk = cfg.n_intervals, train.chunk_intervals(cfg)
    steps_per_interval = cfg.steps_per_epoch * cfg.train.eval_every
    n_steps = train.total_steps(cfg)
    bar = _progress(n_steps, quiet)
    start = time.perf_counter()
    steps_run = 0
    for first in range(0, n_intervals, per_chunk):
        states = chunk_fn(states, coords, data, jnp.int32(first))
        done = min((first + per_chunk) * steps_per_interval, n_steps)
        active = sum(int(np.sum(s.active)) for s in states)
        if bar is not None:
            diverged = sum(int(np.sum(s.diverged_step >= 0)) for s in states)
            bar.set_postfix(active=active, diverged=diverged, refresh=False)
            bar.update(done - steps_run)
        steps_run = done
        if active == 0:
            break
    states = [jax.tree.map(lambda a: a[: g.n_models], s) for g, s in zip(groups, jax.device_get(states))]
    run_s = time.perf_counter() - start
    if bar is not None:
        bar.close()
    n_models = sum(g.n_models for g in groups)
    timing = {"compile_s": compile_s, "run_s": run_s, "steps_run": steps_run,
              "model_steps_per_s": n_models * steps_run / max(run_s, 1e-9)}
    return Result(groups, states, train.logged_intervals(cfg), timing)
