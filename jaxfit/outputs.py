"""A run's files written from its trained models (`sweep.Result`), and a finished run read back
whole with its config: what `python -m jaxfit.run` and Python callers use. The tables and the
engine's figures come from report.py, which needs the files alone; the experiment's own
figures (`Task.plots`) are drawn here, where its module is imported."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import optax
from flax import traverse_util

from jaxfit import config as config_lib
from jaxfit import report, sweep, trainer
from jaxfit.analysis import set_indices
from jaxfit.rundir import atomic_write
from jaxfit.runfiles import damaged_file, pack_history, read_files, write_summary


def _number(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def model_entries(cfg: config_lib.Config, result: sweep.Result) -> list[dict]:
    """One summary entry per model: where it sits, then its numbers (see the module docstring)."""
    monitor = cfg.task.monitor
    entries = []
    for group, state in zip(result.groups, result.states):
        for i, label in enumerate(group.labels):
            initial = {f"{k}_init": _number(v[i]) for k, v in state.initial.items()}
            final = {f"{k}_final": _number(v[i]) for k, v in state.final.items()}
            best_step = int(state.best_step[i])
            entry = {**label, **initial, **final}
            if "val_loss" in state.initial:  # the seeds' names for it: lossInit, lossFinl
                entry.update(loss_init=entry["val_loss_init"], loss_final=entry["val_loss_final"])
            entry.update(
                {
                    f"{monitor}_best": _number(state.best_val[i]),
                    "best_step": best_step if best_step >= 0 else None,
                    "best_epoch": best_step // cfg.steps_per_epoch if best_step >= 0 else None,
                    "steps": int(state.steps_done[i]),
                    "reached": bool(state.stop_step[i] >= 0),
                    "stop_step": int(state.stop_step[i]) if state.stop_step[i] >= 0 else None,
                    "diverged": bool(state.diverged_step[i] >= 0),
                    "diverged_step": int(state.diverged_step[i]) if state.diverged_step[i] >= 0 else None,
                }
            )
            entries.append(entry)
    return entries


def run_info(cfg: config_lib.Config, result: sweep.Result) -> dict:
    """summary.json's "run": what ran where, how long, and what a reader of the files needs."""
    device = jax.devices()[0]
    return {
        "name": cfg.name,
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
        "platform": device.platform,
        "device": getattr(device, "device_kind", str(device)),
        "n_devices": result.timing["n_devices"],
        "n_models": sum(g.n_models for g in result.groups),
        "steps": trainer.total_steps(cfg),
        "steps_per_epoch": cfg.steps_per_epoch,
        "monitor": cfg.task.monitor,
        "goal": cfg.task.goal,
        **{k: _number(v) for k, v in result.timing.items()},
    }


def history_arrays(cfg: config_lib.Config, result: sweep.Result) -> dict[str, np.ndarray]:
    steps = trainer.interval_end_steps(cfg, result.logged)
    arrays = {"step": steps, "epoch": steps / cfg.steps_per_epoch}
    for name in result.states[0].history:
        arrays[name] = np.concatenate([np.asarray(s.history[name])[:, :-1] for s in result.states])
    for name in result.states[0].initial:
        arrays[f"{name}_init"] = np.concatenate([np.asarray(s.initial[name]) for s in result.states])
    return arrays


def params_arrays(result: sweep.Result) -> dict[str, np.ndarray]:
    out = {}
    for group, state in zip(result.groups, result.states):
        for kind in ("last", "best", "first"):
            tree = {"last": state.params, "best": state.best_params, "first": state.first_params}[kind]
            for path, value in traverse_util.flatten_dict(tree).items():
                out["/".join((group.group.name, kind, *path))] = np.asarray(value)
    return out


def step_arrays(result: sweep.Result) -> dict[str, np.ndarray]:
    """steps.npz (train.every_step): `step` [steps] and each of trainer.STEP_METRICS as
    [models, steps], models in summary.json's order; NaN where a model took no step."""
    names = result.states[0].per_step
    out = {name: np.concatenate([np.asarray(s.per_step[name]) for s in result.states]) for name in names}
    return {"step": np.arange(next(iter(out.values())).shape[1]), **out}


def write_run(out: Path | str, cfg: config_lib.Config, result: sweep.Result) -> str:
    """Write every file of a run into `out`; return the summary table."""
    out = Path(out)
    models = model_entries(cfg, result)
    summary = {"run": run_info(cfg, result), "models": models}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.toml", lambda f: f.write(config_lib.to_toml(cfg)))
    write_summary(out, summary)
    history = pack_history(history_arrays(cfg, result), set_indices(models))
    atomic_write(out / "history.npz", lambda f: np.savez_compressed(f, **history), binary=True)  # type: ignore[arg-type]  # numpy's stub
    atomic_write(out / "params.npz", lambda f: np.savez_compressed(f, **params_arrays(result)), binary=True)  # type: ignore[arg-type]
    if result.states[0].per_step:
        atomic_write(out / "steps.npz", lambda f: np.savez_compressed(f, **step_arrays(result)), binary=True)  # type: ignore[arg-type]
    return redraw(out)


def load_config(folder: Path) -> config_lib.Config:
    """A finished run's config.toml loaded (its experiment imported); RunFileError if it cannot be."""
    try:
        return config_lib.load(str(folder / "config.toml"))
    except Exception as error:  # noqa: BLE001 -- a ConfigError, an experiment that no longer imports
        raise damaged_file(folder / "config.toml", error) from None


def read_run(folder: Path) -> tuple[config_lib.Config, dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A finished run's config (loaded: its experiment imported), summary, history and
    parameters, every file read whole and checked (RunFileError names the first bad one)."""
    folder = Path(folder)
    _, summary, history, params = read_files(folder)
    return load_config(folder), summary, history, params


def redraw(out: Path) -> str:
    """summary.md and every figure of a finished run from its files, each read once: the tables
    and the engine's figures (report.redraw_from), then the experiment's own (`Task.plots`)."""
    out = Path(out)
    written, summary, history, params = read_files(out)
    cfg = load_config(out)  # before anything is drawn: an experiment that no longer loads changes nothing
    text = report.redraw_from(out, written, summary, history)
    cfg.task.plots(out, cfg, summary, history, params)
    return text
