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

`python -m jaxfit.report DIR` redraws summary.md and the engine's figures from these files alone
(no jax is imported; the experiment's own figures: `outputs.redraw`);
`python -m jaxfit.report DIR1 DIR2 ... [--out CMP]` compares runs in one table and one figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxfit import analysis, plots, rundir
from jaxfit.analysis import clusters, coordinate_columns, model_sets, set_indices, wilson_interval  # noqa: F401 -- report.clusters etc.
from jaxfit.rundir import atomic_write  # noqa: F401 -- also report.atomic_write, for callers that write a run's files
from jaxfit.runfiles import (  # noqa: F401 -- the readers, also as report.load_history etc.
    INLINE_MODELS,
    MODELS_FILE,
    RunFileError,
    RunView,
    load_history,
    load_params,
    pack_history,
    read_files,
    read_summary,
    write_summary,
)


def analyse(view: RunView, models: list[dict]) -> dict:
    """The run's paired analysis (analysis.analyse) from what its files say and its entries."""
    return analysis.analyse(models, view.groups, view.monitor, view.stop_at, view.steps)


def redraw(out: Path) -> str:
    """summary.md and the engine's figures (loss curves, cells, reached by step) from the files
    of a finished run alone, all read and checked first; the analysis is computed again (runs
    written before it existed get it too). The experiment's own figures: outputs.redraw."""
    cfg, summary, history, _ = read_files(out)
    return redraw_from(out, cfg, summary, history)


def redraw_from(out: Path, cfg: dict, summary: dict, history: dict) -> str:
    """`redraw` from the run's files already read (`read_files`: config.toml's dict, the
    summary, the history); `summary` gets the fresh analysis."""
    view = RunView.of(cfg, summary["run"], summary["models"])
    fresh = analyse(view, summary["models"])
    changed = summary.get("analysis") != fresh
    summary["analysis"] = fresh
    text = summary_markdown(view, summary)  # before anything is written: a summary that is not a run's fails here
    if changed:
        write_summary(out, summary)
    atomic_write(out / "summary.md", lambda f: f.write(text))
    plots.draw_engine(out, view, summary, history)
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
    monitored metric's final values among the models that did not reach the threshold, medians."""
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
            rest = [m[f"{monitor}_final"] for m in members if not m["reached"]]
            row[f"final {monitor} of the rest"] = ", ".join(f"{c:.4g} ×{k}" for c, k in clusters(rest)) or "-"
        for metric in metrics:
            values = [m[metric] for m in members if isinstance(m[metric], int | float) and not isinstance(m[metric], bool)]
            if values:
                row[f"median {metric}"] = float(np.median(values))
        rows.append(row)
    return rows


def summary_markdown(view: RunView, summary: dict) -> str:
    """Per-set table (success rates with Wilson 95% intervals where there is a stop threshold)
    and the per-model table."""
    models, run = summary["models"], summary["run"]
    coords = coordinate_columns(models)
    stop_at, monitor = view.stop_at, view.monitor
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
        f"{run['model_steps_per_s']:,.0f} model-steps/s\n{compaction_line(run)}{extension_line(run)}"
    )
    rows = set_rows(models, medians, stop_at, monitor)
    title = "## Per group (models that differ only in seed)"
    if stop_at is not None:
        sign = ">=" if view.goal == "max" else "<="
        title += f"\n\nreached: {monitor} {sign} {stop_at:g}, with a Wilson 95% interval; steps: median [range] of those that reached it; "
        title += f"final {monitor} of the rest: clusters (within 5 %) of the final values of the models that did not"
    per_model = "## Every model\n\n" + (
        markdown_table(models, coords + metrics)
        if len(models) <= MAX_MODEL_ROWS
        else f"{len(models):,} models: every model's numbers are in summary.json."
    )
    answer = analysis_markdown(summary.get("analysis") or analyse(view, models), stop_at is not None, monitor)
    return "\n".join([header, title, "", markdown_table(rows, list(rows[0])), "", *answer, per_model, ""])


def compaction_line(run: dict) -> str:
    """What compaction did (runs that record it): where the models still training ran alone, at
    what compile cost, or why it did not pay; and the rate counting only their own steps."""
    record = run.get("compaction")
    if not record:
        return ""
    own = f"; {run['own_model_steps_per_s']:,.0f} model-steps/s counting each model's own steps" if "own_model_steps_per_s" in run else ""
    if record["switches"]:
        moves = ", ".join(f"{s['group']} → {s['models']} models at step {s['step']:,}" for s in record["switches"])
        line = f"compaction: {moves} (compile {record['compile_s']:.1f} s)"
    elif record["declined"]:
        d = record["declined"]
        line = f"compaction: not worth it (at step {d['step']:,} a {d['compile_s']:.1f} s compile would save {d['saving_s']:.1f} s)"
    else:
        line = "compaction: " + ("every model trained to the end" if record["mode"] != "never" else "off")
    return f"\n{line}{own}\n"


def extension_line(run: dict) -> str:
    """The extensions a run had (`python -m jaxfit.run --extend`): seeds before and after, and
    what the new models took (counted in the times above)."""
    parts = [
        f"{e['seeds'][0]} → {e['seeds'][1]} seeds ({e['n_models']} new models, compile {e['compile_s']:.1f} s, run {e['run_s']:.1f} s)"
        for e in run.get("extended", [])
    ]
    return f"\nextended: {'; '.join(parts)}\n" if parts else ""


MAX_MODEL_ROWS = 1000  # summary.md's table of every model, up to this many models
MAX_COMPARISON_ROWS = 60  # summary.md lists this many paired comparisons (summary.json has all)


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-300 else "< 1e-300"


def _holm(entry: dict) -> str:
    """An entry's Holm-adjusted p (`analysis.adjust`); "-" for a test without a finite p."""
    return _p(entry["holm_p"]) if "holm_p" in entry else "-"


def _families(result: dict, has_threshold: bool) -> str:
    """Which tests each Holm p is adjusted over, and the factors that stay below 0.05 after it."""
    counts = {kind: sum(kind in c for c in result["comparisons"]) for kind in ("success", "steps", "final")}
    names = {"success": "McNemar", "steps": "steps", "final": "final"}
    text = "Holm p: adjusted over the run's family of tests of that kind (" + ", ".join(
        f"{n} {names[k]} tests" for k, n in counts.items() if n
    )
    factors = result["factors"]  # analysis_markdown calls this only for a run that has some
    text += f"; the {len(factors)} pooled factors' tests, a family per kind)."
    tests = {"success": [(f, f) for f in factors]} if has_threshold else {}
    tests["the final metric"] = [(f, f["final"]) for f in factors]
    for what, entries in tests.items():
        kept = [f"{f['factor']} ({f['a']} vs {f['b']})" for f, test in entries if test.get("holm_p", 1.0) < 0.05]
        text += f" Changing {what} at 0.05 after adjustment: {', '.join(kept) if kept else 'no factor'}."
    return text


def _percent(entry: dict) -> str:
    """A success difference and its interval, in points: '+27.5% [+12.0, +41.3]'."""
    return f"{entry['difference']:+.1%} [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}]"


def _shift(entry: dict) -> str:
    """A Hodges-Lehmann difference and its interval ('-' bounds: too few pairs for one)."""
    return f"{fmt(entry['difference'])} [{fmt(entry['low'])}, {fmt(entry['high'])}]"


def _seeds(entry: dict) -> str:
    """'~60' seeds per cell; '-' where decided, 'no estimate' where nothing was seen to differ,
    '> 100,000' past the search."""
    if "seeds_needed" not in entry:
        return "-"
    n = entry["seeds_needed"]
    if n is None:
        return "no estimate"
    return f"> {analysis.MAX_SEEDS:,}" if n > analysis.MAX_SEEDS else f"~{n:,}"


def analysis_markdown(result: dict, has_threshold: bool, monitor: str) -> list[str]:
    """The factors, the paired comparisons and the outcome classes as markdown sections."""
    out = []
    classes = result["outcome_classes"]
    if result["cells"]:
        rows = []
        for c in result["cells"]:
            row = {"cell": c["name"], "n": c["n"], **{k: c["outcomes"].get(k, 0) for k in classes}}
            if "seeds_for_5pt" in c:
                row["seeds for ±5 pt"] = fmt(c["seeds_for_5pt"])
            rows.append(row)
        out += [
            "## Outcomes per cell",
            "",
            f"Outcome classes: {'reached the threshold, ' if has_threshold else ''}diverged, and the run's "
            f"clusters of final {monitor} (within 5 % of each other) among the rest, named by their level."
            + (" Seeds for ±5 pt: the seeds that would make the cell's Wilson 95 % success interval ±5 points." * has_threshold),
            "",
            markdown_table(rows, list(rows[0])),
            "",
        ]
    if not result["factors"]:
        return out
    primary = "the McNemar test" if has_threshold else f"the final {monitor} test"
    out += [
        "## What changes the outcome: paired comparisons",
        "",
        "Cells that differ in one coordinate, compared on the seeds they share (the same initial draw and batches). "
        + (
            "Success: exact McNemar on the discordant seeds (only A / only B reached the threshold); B − A with Newcombe's "
            "95 % interval for paired proportions. "
            if has_threshold
            else ""
        )
        + f"Final {monitor} and steps to the threshold: paired Wilcoxon signed-rank (a model that never reached it counts as "
        "taking every step); B − A is the Hodges–Lehmann estimate with the 95 % interval the signed-rank test gives. "
        "Effect: rank-biserial correlation of B − A, in [−1, 1]. "
        + _families(result, has_threshold)
        + f" Seeds needed: where {primary} is not decided at 0.05 after adjustment, the seeds per cell that would decide it "
        "with 80 % power at 0.05 / (the family's size) if what was seen held (McNemar: exact power; signed-rank: Noether's formula); "
        "'-': decided; 'no estimate': nothing seen to differ.",
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
                    "Holm p": _holm(f),
                    "B − A success": _percent(f),
                    "seeds needed": _seeds(f),
                }
            )
        row[f"final {monitor} B − A"] = _shift(f["final"])
        row["final Holm p"] = _holm(f["final"])
        row[f"final {monitor} effect"] = f"{f['final']['effect']:+.2f}"
        factor_rows.append(row)
    out += ["### Factors, pooled over the others (largest change first)", "", markdown_table(factor_rows, list(factor_rows[0])), ""]
    rows = []
    for c in result["comparisons"][:MAX_COMPARISON_ROWS]:
        row = {
            "coordinate": c["factor"],
            "A vs B": f"{c['a']} vs {c['b']}",
            "held fixed": ", ".join(f"{k}={v}" for k, v in c["held"].items()) or "-",
            "pairs": c["pairs"],
        }
        if has_threshold:
            s = c["success"]
            row.update(
                {
                    "success A / B": f"{s['a']} / {s['b']}",
                    "only A / B": f"{s['only_a']} / {s['only_b']}",
                    "McNemar p": _p(s["p"]),
                    "Holm p": _holm(s),
                    "B − A success": _percent(s),
                    "seeds needed": _seeds(s),
                    "steps B − A": _shift(c["steps"]),
                    "steps p": _p(c["steps"]["p"]),
                    "steps Holm p": _holm(c["steps"]),
                }
            )
        row.update(
            {
                f"final {monitor} B − A": _shift(c["final"]),
                "final p": _p(c["final"]["p"]),
                "final Holm p": _holm(c["final"]),
            }
        )
        if not has_threshold:
            row["seeds needed"] = _seeds(c["final"])
        row["note"] = "; ".join(c["notes"]) or ""
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
    rows, cells, tasks = [], [], {}
    names = _run_names(dirs)
    for name, folder in zip(names, dirs):
        cfg, summary, history, _ = read_files(folder)
        models = summary["models"]
        view = RunView.of(cfg, summary["run"], models)
        tasks[name] = (cfg["task"], view.monitor)
        monitor, coords = view.monitor, coordinate_columns(models)
        x, values = history["step"], history[monitor]
        for row, index in zip(set_rows(models, [f"{monitor}_final"], view.stop_at, monitor), model_sets(models).values()):
            rows.append({"run": name, **row})
            label = " ".join([name, *(str(v) for k, v in row.items() if k in coords)])
            cells.append({"label": label, "monitor": monitor, "step": x, "values": values[index]})
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = f"# {len(dirs)} run{'s' * (len(dirs) != 1)} compared\n\n" + "".join(f"{line}\n\n" for line in _different_tasks(tasks))
    return head + markdown_table(rows, columns) + "\n", cells


def _different_tasks(tasks: dict[str, tuple[dict, str]]) -> list[str]:
    """A line saying so when the runs compared are of different experiments (or of one experiment
    with different [task] tables): their rows then measure different things."""
    by_name: dict[str, list[str]] = {}
    for run, (task, monitor) in tasks.items():
        by_name.setdefault(f"{task['name']} (monitor {monitor})", []).append(run)
    if len(by_name) > 1:
        parts = "; ".join(f"{what}: {', '.join(runs)}" for what, runs in by_name.items())
        return [f"**Different experiments** -- {parts}. Their numbers measure different things; compare rows of one experiment only."]
    tables = {json.dumps(task, sort_keys=True) for task, _ in tasks.values()}
    if len(tables) > 1:
        keys = sorted({k for task, _ in tasks.values() for k in task if len({json.dumps(t.get(k)) for t, _ in tasks.values()}) > 1})
        return [f"**One experiment, different [task] tables** (they differ in {', '.join(f'task.{k}' for k in keys)}): different data."]
    return []


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


def draw_comparison(out: Path, cells: list[dict]) -> None:
    """compare_curves.png: each cell's monitored metric (a stopped model held at its last value),
    median and 25-75 % over its seeds, one panel per metric."""
    monitors = list(dict.fromkeys(c["monitor"] for c in cells))
    fig = plots.Figure(figsize=(7 * len(monitors), 4.5))
    axes = fig.subplots(1, len(monitors), squeeze=False)
    for ax, monitor in zip(axes[0], monitors):
        for colour, cell in enumerate(c for c in cells if c["monitor"] == monitor):
            values = plots.held(cell["values"])
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
