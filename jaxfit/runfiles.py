"""A run folder's files, read and written without jax (so `python -m jaxfit.report DIR` starts
in a second): summary.json (and models.json.gz past 1,000 models), history.npz, params.npz, and
`RunView`, what the tables and the engine's figures need of a run. report.py documents the files."""

from __future__ import annotations

import gzip
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxfit.rundir import atomic_write

PER_SET = "@set"  # history.npz: a metric stored once per seed set


def pack_history(arrays: dict[str, np.ndarray], set_index: np.ndarray) -> dict[str, np.ndarray]:
    """history.npz's arrays with each [models, points] metric that is the same for every model of
    a seed set (where the model had not stopped, i.e. where train_loss is finite) stored once per
    set, only where expanding it gives back the same bits."""
    out, active = dict(arrays), np.isfinite(arrays["train_loss"])
    for name, values in arrays.items():
        if name == "train_loss" or values.ndim != 2:
            continue
        per_set = np.full((int(set_index.max()) + 1, values.shape[1]), np.nan, values.dtype)
        for s in range(per_set.shape[0]):  # each point's value from any model of the set that logged it
            rows = values[set_index == s]
            finite = np.isfinite(rows)
            first = np.argmax(finite, axis=0)
            per_set[s] = np.where(finite.any(axis=0), rows[first, np.arange(rows.shape[1])], np.nan)
        if np.array_equal(np.where(active, per_set[set_index], np.nan), values, equal_nan=True):
            del out[name]
            out[name + PER_SET] = per_set
            out["set_index"] = set_index.astype(np.int32)
    return out


def load_history(path: Path | str) -> dict[str, np.ndarray]:
    """Every array of a history.npz, per-set metrics expanded to [models, points] (files written
    before they were packed read the same)."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    set_index = arrays.pop("set_index", None)
    for name in [k for k in arrays if k.endswith(PER_SET)]:
        per_set = arrays.pop(name)
        arrays[name[: -len(PER_SET)]] = np.where(np.isfinite(arrays["train_loss"]), per_set[set_index], np.nan).astype(per_set.dtype)
    return arrays


MODELS_FILE = "models.json.gz"  # a run of over INLINE_MODELS models keeps its model entries here
INLINE_MODELS = 1000


def write_json(path: Path, data: dict) -> None:
    """JSON, indented for a reader."""
    atomic_write(path, lambda f: json.dump(data, f, indent=1))


def write_summary(out: Path, summary: dict) -> None:
    """summary.json; past INLINE_MODELS models its entries go to models.json.gz (compact, gzip:
    10,000 models in ~0.6 MB instead of 4 MB of text) and summary.json names that file."""
    models = summary["models"]
    if len(models) <= INLINE_MODELS:
        write_json(out / "summary.json", summary)
        return
    text = json.dumps(models, separators=(",", ":")).encode()
    atomic_write(out / MODELS_FILE, lambda f: f.write(gzip.compress(text, mtime=0)), binary=True)
    write_json(out / "summary.json", {**summary, "models": MODELS_FILE})


def _models_file(folder: Path) -> list[dict]:
    return json.loads(gzip.decompress((folder / MODELS_FILE).read_bytes()))


def read_summary(folder: Path) -> dict:
    """summary.json with its model entries, wherever they are kept."""
    summary = json.loads((folder / "summary.json").read_text())
    if isinstance(summary, dict) and summary.get("models") == MODELS_FILE:
        summary["models"] = _models_file(folder)
    return summary


def load_params(arrays: Any, group: str, kind: str) -> dict:
    """The parameter tree of every model of `group` ([models, ...] leaves) from params.npz."""
    prefix = f"{group}/{kind}/"
    flat = {tuple(k[len(prefix) :].split("/")): np.asarray(arrays[k]) for k in arrays.keys() if k.startswith(prefix)}
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


class RunFileError(Exception):
    """A run folder whose files cannot be read as a finished jaxfit run (one line, exit 2)."""


def damaged_file(path: Path, error: BaseException) -> RunFileError:
    """The one-line error for a run file that is damaged or not a run's, with the error's first line."""
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return RunFileError(f"{path}: damaged or not a jaxfit run's ({type(error).__name__}: {first})")


RUN_FILES = ("config.toml", "summary.json", "history.npz", "params.npz")


def read_files(folder: Path) -> tuple[dict, dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A finished run's config (as written: a plain dict), summary, history and parameters,
    every file read whole and checked; RunFileError names the first file that is missing,
    damaged or not a run's. Nothing of the experiment is imported (no jax)."""
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise RunFileError(f"{folder}: not a finished jaxfit run (no {', '.join(missing)})")

    def damaged(name: str, error: BaseException) -> RunFileError:
        return damaged_file(folder / name, error)

    try:
        cfg = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8-sig"))
        if not isinstance(cfg.get("name"), str) or not isinstance(cfg.get("train"), dict) or not isinstance(cfg.get("groups"), dict):
            raise ValueError("expected a run's resolved config (name, train, groups)")
    except Exception as error:  # noqa: BLE001 -- not TOML, not a run's config
        raise damaged("config.toml", error) from None
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except Exception as error:  # noqa: BLE001 -- not JSON
        raise damaged("summary.json", error) from None
    if isinstance(summary, dict) and summary.get("models") == MODELS_FILE:
        try:
            summary["models"] = _models_file(folder)
        except Exception as error:  # noqa: BLE001 -- missing, cut short, not gzip or not JSON
            raise damaged(MODELS_FILE, error) from None
    try:
        models = summary["models"]
        if not isinstance(summary["run"], dict) or not models or not all(isinstance(m, dict) and "group" in m for m in models):
            raise ValueError("expected {'run': {...}, 'models': [{'group': ...}, ...]}")
    except Exception as error:  # noqa: BLE001 -- not a summary
        raise damaged("summary.json", error) from None
    arrays = {}
    for name in ("history.npz", "params.npz"):
        try:
            if name == "history.npz":
                arrays[name] = load_history(folder / name)  # every array read now: a truncated file fails here
            else:
                with np.load(folder / name) as npz:
                    arrays[name] = {k: npz[k] for k in npz.files}
        except Exception as error:  # noqa: BLE001 -- truncated (BadZipFile, EOFError), not an npz (ValueError)
            raise damaged(name, error) from None
    history = arrays["history.npz"]
    wrong = [k for k, v in history.items() if v.ndim == 2 and v.shape[0] != len(models)]
    if "step" not in history or wrong:
        raise damaged("history.npz", ValueError(f"no 'step' array, or arrays of another run ({', '.join(wrong[:3])})"))
    return cfg, summary, history, arrays["params.npz"]


@dataclass(frozen=True)
class RunView:
    """What the tables and the engine's figures need of a finished run, from its files alone."""

    name: str
    groups: dict[str, dict]  # every group's tables, as config.toml holds them
    monitor: str  # the metric stopping and "best" look at
    goal: str  # "min" or "max"
    stop_at: float | None
    steps: int  # the run's total steps
    steps_per_epoch: int

    @classmethod
    def of(cls, cfg: dict, run: dict, models: list[dict]) -> RunView:
        """From config.toml's dict and summary.json's run info (runs written before monitor and
        goal were recorded: the monitor from the entries' `MONITOR_best` key, the goal "min")."""
        best = [k[: -len("_best")] for k in models[0] if k.endswith("_best")] if models else []
        return cls(
            cfg["name"],
            cfg["groups"],
            run.get("monitor") or (best[0] if best else "val_loss"),
            run.get("goal", "min"),
            cfg["train"].get("stop_at"),
            int(run["steps"]),
            int(run["steps_per_epoch"]),
        )
