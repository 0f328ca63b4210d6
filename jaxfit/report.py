"""What a run leaves in its folder, and the tables drawn from it.

Files (each written atomically: temp file + rename):
- `config.toml`: the resolved config; loads back to the same run.
- `summary.json`: {"run": {...}, "models": [...], "analysis": {...}} (analysis.py), one entry per model, in the order of the
  first axis of every `history.npz` array; past 1,000 models "models" is "models.json.gz", the
  file that holds them (`read_summary` reads either). Model keys (METRIC: the task's eval metrics, e.g.
  val_loss, and train_eval_loss where an experiment evaluates its training set; MONITOR: the one that
  stopping and "best" look at, val_loss unless the experiment says otherwise):
    group, seed, init, <swept key: value>...   where the model sits
    METRIC_init                                 eval-mode metric before training (the seeds' lossInit)
    train_loss_final, METRIC_final, lr_final    of the last interval trained (mean train-mode loss;
                                                eval-mode metrics at its end; its learning rate)
    loss_init, loss_final                       the seeds' names for val_loss_init/_final, where there is one
    MONITOR_best, best_step, best_epoch         best monitored value after an interval, and when
    steps                                       updates applied (the stop step, or the cap)
    reached, stop_step                          MONITOR reached train.stop_at, and at which step
    diverged, diverged_step                     a non-finite loss or parameter froze the model
- `history.npz` (compressed; read it with `load_history`): `step`, `epoch` [n_logged] (steps /
  epochs done at each logged point); `train_loss`, METRIC..., `lr` [models, n_logged];
  `METRIC_init` [models]. NaN where a model had stopped. A metric that is the same for every
  model of a seed set (a schedule's `lr`) is stored once per set, as `NAME@set` [sets, n_logged]
  with `set_index` [models]; `load_history` expands it (NaN where `train_loss` is).
- `params.npz`: "<group>/<last|best|first>/<layer>/<kernel|bias>" [models of the group, ...]
  (Flax layout, kernel = PyTorch weight transposed); `first` is after the first interval.
- `summary.md` (the printed table) and the PNG plots (the experiment's `plots`).

`python -m jaxfit.report DIR` redraws summary.md and the plots from these files alone;
`python -m jaxfit.report DIR1 DIR2 ... [--out CMP]` compares runs in one table and one figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from jaxfit import analysis, plots, rundir, sweep, train
from jaxfit import config as config_lib
from jaxfit.analysis import clusters, coordinate_columns, model_sets, set_indices, wilson_interval  # noqa: F401 -- report.clusters etc. for callers
from jaxfit.rundir import atomic_write  # noqa: F401 -- also report.atomic_write, for callers that write a run's files


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
    import flax
    import jax
    import optax

    device = jax.devices()[0]
    return {
        "name": cfg.name,
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
        "platform": device.platform,
        "device": getattr(device, "device_kind", str(device)),
        "n_devices": jax.device_count(),
        "n_models": sum(g.n_models for g in result.groups),
        "steps": train.total_steps(cfg),
        "steps_per_epoch": cfg.steps_per_epoch,
        **{k: _number(v) for k, v in result.timing.items()},
    }


def history_arrays(cfg: config_lib.Config, result: sweep.Result) -> dict[str, np.ndarray]:
    steps = train.interval_end_steps(cfg, result.logged)
    arrays = {"step": steps, "epoch": steps / cfg.steps_per_epoch}
    for name in result.states[0].history:
        arrays[name] = np.concatenate([np.asarray(s.history[name])[:, :-1] for s in result.states])
    for name in result.states[0].initial:
        arrays[f"{name}_init"] = np.concatenate([np.asarray(s.initial[name]) for s in result.states])
    return arrays


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


def read_summary(folder: Path) -> dict:
    """summary.json with its model entries, wherever they are kept."""
    summary = json.loads((folder / "summary.json").read_text())
    if isinstance(summary, dict) and summary.get("models") == MODELS_FILE:
        summary["models"] = json.loads(gzip.decompress((folder / MODELS_FILE).read_bytes()))
    return summary


def params_arrays(result: sweep.Result) -> dict[str, np.ndarray]:
    out = {}
    for group, state in zip(result.groups, result.states):
        for kind in ("last", "best", "first"):
            tree = {"last": state.params, "best": state.best_params, "first": state.first_params}[kind]
            for path, value in traverse_util.flatten_dict(tree).items():
                out["/".join((group.group.name, kind, *path))] = np.asarray(value)
    return out


def load_params(arrays: Any, group: str, kind: str) -> dict:
    """The parameter tree of every model of `group` ([models, ...] leaves) from params.npz."""
    prefix = f"{group}/{kind}/"
    flat = {tuple(k[len(prefix) :].split("/")): np.asarray(arrays[k]) for k in arrays.keys() if k.startswith(prefix)}
    return traverse_util.unflatten_dict(flat)


def write_run(out: Path | str, cfg: config_lib.Config, result: sweep.Result) -> str:
    """Write every file of a run into `out`; return the summary table."""
    out = Path(out)
    models = model_entries(cfg, result)
    summary = {"run": run_info(cfg, result), "models": models, "analysis": analyse(cfg, models)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.toml", lambda f: f.write(config_lib.to_toml(cfg)))
    write_summary(out, summary)
    history = pack_history(history_arrays(cfg, result), set_indices(models))
    atomic_write(out / "history.npz", lambda f: np.savez_compressed(f, **history), binary=True)  # type: ignore[arg-type]  # numpy's stub
    atomic_write(out / "params.npz", lambda f: np.savez_compressed(f, **params_arrays(result)), binary=True)  # type: ignore[arg-type]
    return redraw(out)


class RunFileError(Exception):
    """A run folder whose files cannot be read as a finished jaxfit run (one line, exit 2)."""


RUN_FILES = ("config.toml", "summary.json", "history.npz", "params.npz")


def read_run(folder: Path) -> tuple[config_lib.Config, dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A finished run's config, summary, history and parameters, every file read whole and
    checked; RunFileError names the first file that is missing, damaged or not a run's."""
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise RunFileError(f"{folder}: not a finished jaxfit run (no {', '.join(missing)})")

    def damaged(name: str, error: BaseException) -> RunFileError:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        return RunFileError(f"{folder / name}: damaged or not a jaxfit run's ({type(error).__name__}: {first})")

    try:
        cfg = config_lib.load(str(folder / "config.toml"))
    except Exception as error:  # noqa: BLE001 -- a ConfigError, an experiment that no longer imports
        raise damaged("config.toml", error) from None
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except Exception as error:  # noqa: BLE001 -- not JSON
        raise damaged("summary.json", error) from None
    if isinstance(summary, dict) and summary.get("models") == MODELS_FILE:
        try:
            summary["models"] = read_summary(folder)["models"]
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


def analyse(cfg: config_lib.Config, models: list[dict]) -> dict:
    """The run's paired analysis (analysis.analyse) from its config and summary entries."""
    groups = config_lib.to_dict(cfg)["groups"]
    return analysis.analyse(models, groups, cfg.task.monitor, cfg.train.stop_at, train.total_steps(cfg))


def redraw(out: Path) -> str:
    """summary.md and plots from the files of a finished run (all read and checked first); the
    analysis is computed again (runs written before it existed get it too)."""
    cfg, summary, history, params = read_run(out)
    fresh = analyse(cfg, summary["models"])
    changed = summary.get("analysis") != fresh
    summary["analysis"] = fresh
    text = summary_markdown(cfg, summary)  # before anything is written: a summary that is not a run's fails here
    if changed:
        write_summary(out, summary)
    atomic_write(out / "summary.md", lambda f: f.write(text))
    plots.draw_all(out, cfg, summary, history, params)
    return text


# ----------------------------------------------------------------------------- tables


def fmt(value: Any) -> str:
    """A table cell: '-' for a missing number (a diverged or never-trained model), 4 digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def set_rows(models: list[dict], metrics: list[str], stop_at: float | None, monitor: str) -> list[dict]:
    """One row per set of models differing only in seed: success rate, steps, clusters of the
    monitored metric's final values, medians."""
    columns = [c for c in coordinate_columns(models) if c != "seed"]
    rows = []
    for key, index in model_sets(models).items():
        members = [models[i] for i in index]
        row = dict(zip(columns, key), n=len(members))
        if stop_at is not None:
            reached = [m for m in members if m["reached"]]
            low, high = wilson_interval(len(reached), len(members))
            row["reached"] = f"{len(reached)}/{len(members)} [{low:.2f}, {high:.2f}]"
            steps = [m["steps"] for m in reached]
            row["steps to threshold"] = f"{np.median(steps):,.0f} [{min(steps):,}–{max(steps):,}]" if steps else "-"
            row[f"final {monitor} clusters"] = ", ".join(f"{c:.4g} ×{k}" for c, k in clusters([m[f"{monitor}_final"] for m in members]))
        for metric in metrics:
            values = [m[metric] for m in members if isinstance(m[metric], int | float) and not isinstance(m[metric], bool)]
            if values:
                row[f"median {metric}"] = float(np.median(values))
        rows.append(row)
    return rows


def summary_markdown(cfg: config_lib.Config, summary: dict) -> str:
    """Per-set table (success rates with Wilson 95% intervals where there is a stop threshold)
    and the per-model table."""
    models, run = summary["models"], summary["run"]
    coords = coordinate_columns(models)
    stop_at, monitor = cfg.train.stop_at, cfg.task.monitor
    evals = [k[: -len("_final")] for k in models[0] if k.endswith("_final") and k not in ("train_loss_final", "lr_final", "loss_final")]
    if stop_at is not None:
        metrics = [f"{monitor}_init", f"{monitor}_final", "steps", "reached", "train_loss_final", "lr_final"]
        medians = [f"{monitor}_final"]
    else:
        metrics = [f"{monitor}_init", "train_loss_final", *(f"{m}_final" for m in evals), f"{monitor}_best", "best_epoch", "steps"]
        medians = [m for m in metrics if m not in ("steps", "best_epoch")]
    metrics = [m for m in metrics if any(x.get(m) is not None for x in models)]
    if any(x["diverged"] for x in models):
        metrics += ["diverged", "diverged_step"]
    header = (
        f"# {run['name']}: {run['n_models']} models, up to {run['steps']:,} steps each "
        f"({run['steps_per_epoch']} per epoch)\n\n"
        f"{run['device']} ({run['platform']}, {run['n_devices']} device(s)); jax {run['jax_version']}; "
        f"compile {run['compile_s']:.1f} s, run {run['run_s']:.1f} s for {run['steps_run']:,} steps, "
        f"{run['model_steps_per_s']:,.0f} model-steps/s\n"
    )
    rows = set_rows(models, medians, stop_at, monitor)
    title = "## Per group (models that differ only in seed)"
    if stop_at is not None:
        sign = ">=" if cfg.task.goal == "max" else "<="
        title += f"\n\nreached: {monitor} {sign} {stop_at:g}, with a Wilson 95% interval; steps: median [range] of those that reached it"
    per_model = "## Every model\n\n" + (
        markdown_table(models, coords + metrics)
        if len(models) <= MAX_MODEL_ROWS
        else f"{len(models):,} models: every model's numbers are in summary.json."
    )
    answer = analysis_markdown(summary.get("analysis") or analyse(cfg, models), stop_at is not None, monitor)
    return "\n".join([header, title, "", markdown_table(rows, list(rows[0])), "", *answer, per_model, ""])


MAX_MODEL_ROWS = 1000  # summary.md's table of every model, up to this many models
MAX_COMPARISON_ROWS = 60  # summary.md lists this many paired comparisons (summary.json has all)


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-300 else "< 1e-300"


def analysis_markdown(result: dict, has_threshold: bool, monitor: str) -> list[str]:
    """The factors, the paired comparisons and the outcome classes as markdown sections."""
    out = []
    classes = result["outcome_classes"]
    if result["cells"]:
        rows = [{"cell": c["name"], "n": c["n"], **{k: c["outcomes"].get(k, 0) for k in classes}} for c in result["cells"]]
        out += [
            "## Outcomes per cell",
            "",
            f"Outcome classes: {'reached the threshold, ' if has_threshold else ''}diverged, and the run's "
            f"clusters of final {monitor} (within 5 % of each other), named by their level.",
            "",
            markdown_table(rows, list(rows[0])),
            "",
        ]
    if not result["factors"]:
        return out
    out += [
        "## What changes the outcome: paired comparisons",
        "",
        "Cells that differ in one coordinate, compared on the seeds they share (the same initial draw and batches). "
        + ("Success: exact McNemar on the discordant seeds (only A / only B reached the threshold). " if has_threshold else "")
        + f"Final {monitor} and steps to the threshold: paired Wilcoxon signed-rank (a model that never reached it counts as "
        "taking every step). Effect: rank-biserial correlation of B − A, in [−1, 1].",
        "",
    ]
    factor_rows = []
    for f in result["factors"]:
        row = {"coordinate": f["factor"], "A vs B": f"{f['a']} vs {f['b']}", "strata": f["strata"], "pairs": f["pairs"]}
        if has_threshold:
            row.update(
                {
                    "success A": f["success_a"],
                    "success B": f["success_b"],
                    "only A": f["only_a"],
                    "only B": f["only_b"],
                    "McNemar p": _p(f["p"]),
                    "B − A success": f"{f['difference']:+.1%}",
                }
            )
        row[f"final {monitor} effect"] = f"{f['final_effect']:+.2f}"
        factor_rows.append(row)
    out += ["### Factors, pooled over the others (largest change first)", "", markdown_table(factor_rows, list(factor_rows[0])), ""]
    rows = []
    for c in result["comparisons"][:MAX_COMPARISON_ROWS]:
        row = {
            "coordinate": c["factor"],
            "A vs B": f"{c['a']} vs {c['b']}",
            "held fixed": ", ".join(f"{v}" for v in c["held"].values()) or "-",
            "pairs": c["pairs"],
        }
        if has_threshold:
            s = c["success"]
            row.update(
                {
                    "success A / B": f"{s['a']} / {s['b']}",
                    "only A / B": f"{s['only_a']} / {s['only_b']}",
                    "McNemar p": _p(s["p"]),
                    "steps B − A (median)": fmt(c["steps"]["median_difference"]),
                    "steps p": _p(c["steps"]["p"]),
                }
            )
        row.update(
            {
                f"final {monitor} B − A (median)": fmt(c["final"]["median_difference"]),
                "final p": _p(c["final"]["p"]),
                "note": "; ".join(c["notes"]) or "",
            }
        )
        rows.append(row)
    more = len(result["comparisons"]) - len(rows)
    out += ["### Each comparison", "", markdown_table(rows, list(rows[0])), ""]
    if more > 0:
        out += [f"({more} more in summary.json)", ""]
    return out


def compare(dirs: list[Path]) -> tuple[str, list[dict]]:
    """One table across finished runs: a row per run and set of models that differ only in seed
    (group, init, swept values), with success rates and Wilson intervals where the run has a
    threshold; and the cells' histories for `draw_comparison`."""
    rows, cells = [], []
    names = _run_names(dirs)
    for name, folder in zip(names, dirs):
        cfg, summary, history, _ = read_run(folder)
        models = summary["models"]
        monitor, coords = cfg.task.monitor, coordinate_columns(models)
        x, values = history["step"], history[monitor]
        for row, index in zip(set_rows(models, [f"{monitor}_final"], cfg.train.stop_at, monitor), model_sets(models).values()):
            rows.append({"run": name, **row})
            label = " ".join([name, *(str(v) for k, v in row.items() if k in coords)])
            cells.append({"label": label, "monitor": monitor, "step": x, "values": values[index]})
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return f"# {len(dirs)} run{'s' * (len(dirs) != 1)} compared\n\n" + markdown_table(rows, columns) + "\n", cells


def _run_names(dirs: list[Path]) -> list[str]:
    """Each run's folder name, with as many of its parents as it takes to tell it from the others."""
    parts = [d.resolve().parts for d in dirs]

    def name(i: int) -> str:
        for depth in range(1, len(parts[i]) + 1):
            mine = parts[i][-depth:]
            if all(other[-depth:] != mine for j, other in enumerate(parts) if j != i):
                return "/".join(mine)
        return str(dirs[i])

    return [name(i) for i in range(len(dirs))]


def held(values: np.ndarray) -> np.ndarray:
    """[models, points] with each model's last value carried past the point where it stopped
    (history.npz has NaN there), so a median over seeds does not jump when the best ones stop."""
    index = np.where(np.isfinite(values), np.arange(values.shape[1]), 0)
    return np.take_along_axis(values, np.maximum.accumulate(index, axis=1), axis=1)


def draw_comparison(out: Path, cells: list[dict]) -> None:
    """compare_curves.png: each cell's monitored metric (a stopped model held at its last value),
    median and 25-75 % over its seeds, one panel per metric."""
    monitors = list(dict.fromkeys(c["monitor"] for c in cells))
    fig = plots.Figure(figsize=(7 * len(monitors), 4.5))
    axes = fig.subplots(1, len(monitors), squeeze=False)
    for ax, monitor in zip(axes[0], monitors):
        for colour, cell in enumerate(c for c in cells if c["monitor"] == monitor):
            values = held(cell["values"])
            ax.plot(cell["step"], np.nanmedian(values, 0), color=f"C{colour % 10}", label=f"{cell['label']} ({len(values)})")
            ax.fill_between(cell["step"], *np.nanpercentile(values, [25, 75], axis=0), color=f"C{colour % 10}", alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log" if monitor.endswith("loss") else "linear")
        ax.set_xlabel("step")
        ax.set_ylabel(f"{monitor}, median and 25-75 % over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    plots.save(fig, out, "compare_curves.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxfit.report", description="Redraw summary.md and plots of a finished run; given several runs, compare them."
    )
    parser.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    parser.add_argument(
        "--out",
        type=Path,
        help="with several runs: where compare.md and compare_curves.png go "
        "(default runs/compare-<date-time>/; a run folder is never written)",
    )
    args = parser.parse_args(argv)
    dirs = list({d.resolve(): d for d in reversed(args.dirs)}.values())[::-1]  # a folder named twice is one run
    if len(dirs) < len(args.dirs):
        print(f"note: {len(args.dirs) - len(dirs)} folder(s) named more than once; each run is shown once", file=sys.stderr)
    try:
        for folder in dirs:
            rundir.settle(folder)  # a promotion a crash cut short is completed first
        if len(args.dirs) == 1 and args.out is None:
            text = redraw(dirs[0])
        else:
            out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
            if out.resolve() in {d.resolve() for d in dirs} or rundir.read_marker(out) is not None or (out / "summary.json").exists():
                print(f"error: --out {out}: a run folder; the comparison goes in a folder of its own", file=sys.stderr)
                return 2
            text, cells = compare(dirs)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write(out / "compare.md", lambda f: f.write(text))
            draw_comparison(out, cells)
            text += f"\nwrote {out}/compare.md and compare_curves.png\n"
    except RunFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError, IndexError) as error:  # files that read but do not hold what a run writes
        what = " ".join(map(str, dirs))
        print(
            f"error: {what}: the files cannot be read as a jaxfit run's ({type(error).__name__}: {error})".splitlines()[0][:400],
            file=sys.stderr,
        )
        return 2
    except OSError as error:  # the folder cannot be written (read-only, full)
        print(f"error: writing the report failed ({error.strerror or error}: {error.filename or ''})", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
