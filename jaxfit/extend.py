"""More seeds for a finished run: `python -m jaxfit.run --extend RUN_DIR --set sweep.n_seeds=N`.

A model draws its weights and batches from the run seed and its seed index alone, and its numbers
do not depend on the models beside it, so the run with N seeds is the run with fewer plus the
new seeds' models trained by themselves. The extension trains only those (`sweep.models`) in the
run's staging folder, as `--overwrite` does: the run stays whole until the extension has
finished, and an interrupted one continues with `--resume RUN_DIR`. Then the run's files are
written again in the N-seed run's model order (summary, history, params, steps, figures: as if
it had been run with N seeds from the start) and moved in.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import jax
import numpy as np

from jaxfit import config as config_lib
from jaxfit import outputs, plan, rundir, sweep
from jaxfit.analysis import set_indices
from jaxfit.rundir import atomic_write
from jaxfit.runfiles import pack_history, read_files, write_summary


class ExtendError(Exception):
    """An extension that cannot be made as asked (one line, exit 2)."""


def configs(run_dir: Path, overrides: list[str]) -> tuple[config_lib.Config, int]:
    """The config that trains only the new seeds' models of `run_dir` (sweep.n_seeds=N given in
    `overrides`, with execution.* settings if any), and the run's seed count now."""
    marker = rundir.read_marker(run_dir)
    if marker is None or not (run_dir / "config.toml").is_file():
        raise ExtendError(f"--extend {run_dir}: not a jaxfit run folder")
    if not marker.get("finished"):
        raise ExtendError(f"--extend {run_dir}: the run has not finished; finish it first with --resume {run_dir}")
    if rundir.resume_dir(run_dir) != run_dir:
        raise ExtendError(f"--extend {run_dir}: a run or extension is in progress there; continue it with --resume {run_dir}")
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    other = [o for o, k in zip(overrides, keys) if k != "sweep.n_seeds" and not k.startswith("execution.")]
    if other:
        raise ExtendError(f"--extend: --set {other[0]}: an extension keeps the run's config but sweep.n_seeds (and execution.*)")
    old = config_lib.load(str(run_dir / "config.toml"))
    if "sweep.n_seeds" not in keys:
        raise ExtendError(f"--extend {run_dir}: give the new seed count, --set sweep.n_seeds=N (the run has {old.sweep.n_seeds})")
    if old.sweep.models:
        raise ExtendError(f"--extend {run_dir}: the run trains chosen models (sweep.models); extend the run they come from")
    full = config_lib.load(str(run_dir / "config.toml"), overrides)
    if full.sweep.n_seeds <= old.sweep.n_seeds:
        raise ExtendError(
            f"--set sweep.n_seeds={full.sweep.n_seeds}: {run_dir} has {old.sweep.n_seeds} seeds; an extension adds seeds (give more)"
        )
    n_models = sum(config_lib.group_sizes(full))
    try:  # before the models are listed: a count too large for memory is refused here, in one line
        plan.check_fits(f"{n_models:,} models", n_models * plan.HOST_BYTES_PER_MODEL, plan.available_memory(jax.devices("cpu")[0]))
    except plan.TooLarge as error:
        raise ExtendError(f"--set sweep.n_seeds={full.sweep.n_seeds}: {error}") from None
    labels = [label for group in plan.expand(full) for label in group.labels]
    new = tuple(i for i, label in enumerate(labels) if label["seed"] >= old.sweep.n_seeds)
    quiet = config_lib.Logging(())  # no live trackers: they would see the new seeds only
    return dataclasses.replace(full, sweep=dataclasses.replace(full.sweep, models=new), logging=quiet), old.sweep.n_seeds


def seeds(run_dir: Path) -> int:
    """The seed count of the finished run in `run_dir`, as its marker records its config."""
    marker = rundir.read_marker(run_dir)
    assert marker is not None  # `configs` checked it
    return int(marker["config"]["sweep"]["n_seeds"])


def whole(cfg: config_lib.Config) -> config_lib.Config:
    """The N-seed run an extension's config (`configs`) completes: every model of the sweep."""
    return dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, models=()))


def _interleave(old: np.ndarray, new: np.ndarray, is_old: np.ndarray) -> np.ndarray:
    """[models, ...] arrays of the old and the new models, each in the places `is_old` gives."""
    out = np.empty((len(is_old), *old.shape[1:]), old.dtype)
    out[is_old], out[~is_old] = old, new
    return out


def _merged(old: dict[str, np.ndarray], new: dict[str, np.ndarray], is_old: np.ndarray, shared: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Two runs' arrays of one file merged: `shared` ones (steps) must agree and are kept once."""
    if set(old) != set(new):
        raise ExtendError(f"the new models' arrays ({sorted(new)}) are not the run's ({sorted(old)})")
    out = {}
    for name, values in old.items():
        if name in shared:
            if not np.array_equal(values, new[name]):
                raise ExtendError(f"the new models logged {name} at other points than the run's")
            out[name] = values
        else:
            out[name] = _interleave(values, new[name], is_old)
    return out


def write(work: Path, run_dir: Path, cfg: config_lib.Config, n_old: int, result: sweep.Result) -> str:
    """Write into `work` the files of the N-seed run: `run_dir`'s models and the new ones
    (`result`, trained with `cfg` from `configs`) in the whole sweep's order; return the table."""
    full = dataclasses.replace(
        whole(cfg), logging=config_lib.load(str(run_dir / "config.toml")).logging
    )  # the run's trackers stay configured
    _, summary, history, params = read_files(run_dir)
    groups = plan.expand(full)
    is_old = np.array([label["seed"] < n_old for group in groups for label in group.labels])
    if is_old.sum() != len(summary["models"]):
        raise ExtendError(f"{run_dir}: {len(summary['models'])} models, not the {is_old.sum()} of its config's {n_old} seeds")
    old_models, new_models = iter(summary["models"]), iter(outputs.model_entries(cfg, result))
    entries = [next(old_models) if mine else next(new_models) for mine in is_old]
    merged_history = _merged(history, outputs.history_arrays(cfg, result), is_old, ("step", "epoch"))
    new_params = outputs.params_arrays(result)
    merged_params = {}
    for group in groups:
        mine = np.array([label["seed"] < n_old for label in group.labels])
        keys = [k for k in params if k.split("/", 1)[0] == group.group.name]
        merged_params.update(_merged({k: params[k] for k in keys}, {k: new_params[k] for k in keys}, mine, ()))
    run_info = _run_info(summary["run"], outputs.run_info(cfg, result), len(entries), n_old, full.sweep.n_seeds)
    atomic_write(work / "config.toml", lambda f: f.write(config_lib.to_toml(full)))
    write_summary(work, {"run": run_info, "models": entries})
    packed = pack_history(merged_history, set_indices(entries))
    atomic_write(work / "history.npz", lambda f: np.savez_compressed(f, **packed), binary=True)  # type: ignore[arg-type]  # numpy's stub
    atomic_write(work / "params.npz", lambda f: np.savez_compressed(f, **merged_params), binary=True)  # type: ignore[arg-type]
    if result.states[0].per_step:
        with np.load(run_dir / "steps.npz") as old_steps:
            steps = _merged({k: old_steps[k] for k in old_steps.files}, outputs.step_arrays(result), is_old, ("step",))
        atomic_write(work / "steps.npz", lambda f: np.savez_compressed(f, **steps), binary=True)  # type: ignore[arg-type]
    text = outputs.redraw(work)
    _carry_over(run_dir, work)
    return text


def _carry_over(run_dir: Path, work: Path) -> None:
    """The run's other files (a tracker's logs, its record) into the extended run as they are,
    so that moving it in keeps them; its checkpoints are not kept (the extension's hold only the
    new seeds, the run's only the old: neither is the N-seed run's state)."""
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    marker = rundir.read_marker(run_dir) or {}
    for name in marker.get("files", []):
        source, target = run_dir / name, work / name
        if name == "checkpoints" or target.exists() or not source.exists():
            continue
        shutil.copytree(source, target) if source.is_dir() else shutil.copy2(source, target)


def _run_info(old: dict, new: dict, n_models: int, n_old: int, n_seeds: int) -> dict:
    """summary.json's "run" of the extended run: the first run's, its times and rates counting
    the extension's too, and the extension recorded under "extended"."""
    run_s = old["run_s"] + new["run_s"]
    own = old.get("own_model_steps_per_s", 0.0) * old["run_s"] + new.get("own_model_steps_per_s", 0.0) * new["run_s"]
    done = {k: new[k] for k in ("platform", "device", "n_devices", "compile_s", "run_s", "n_models", "jax_version")}
    info = {
        **old,
        "n_models": n_models,
        "compile_s": old["compile_s"] + new["compile_s"],
        "run_s": run_s,
        "steps_run": max(old["steps_run"], new["steps_run"]),
        "model_steps_per_s": n_models * max(old["steps_run"], new["steps_run"]) / max(run_s, 1e-9),
        "extended": [*old.get("extended", []), {"seeds": [n_old, n_seeds], **done}],
    }
    if "own_model_steps_per_s" in old:
        info["own_model_steps_per_s"] = own / max(run_s, 1e-9)
    return info
