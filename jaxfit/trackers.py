"""Live trackers: TensorBoard and Weights & Biases, written from the host after every compiled
chunk (never from inside jit), so a running jaxfit shows up where researchers already look.

What is written:
- every newly logged point of every model (train loss, each eval metric, learning rate), at the
  training step it belongs to, and per set of models that differ only in seed the median and
  the 10 % / 90 % quantiles across seeds;
- at the start the resolved config and each model's coordinates (group, init, seed, swept
  values); at the end the summary table and the run's plots.

Layout. TensorBoard (`DIR/tensorboard/`): one TensorBoard run per model,
`GROUP/INIT[/KEY=VALUE...]/seed_N`, and per seed set `.../~median`, `~p10`, `~p90`; the tags are
the metric names. TensorBoard overlays runs that share a tag, so each metric is ONE chart with a
curve per model (at 1,000 models a per-model tag would make 1,000 charts of one curve), and the
run filter (a regex such as `wide/.*/seed_` or `~median`) picks groups, inits, swept values or
seeds; the HParams tab lists every model with its coordinates and final metrics. `~run` holds
the config, the summary table and the plots.
Weights & Biases: one W&B run per group, all of one jaxfit run in one W&B group (the run
folder's name), the group's resolved config as the W&B config. Keys `METRIC/SET/seed_N` and
`METRIC/SET/median|p10|p90` (SET: init and swept values), so a panel per metric section holds
the group's seeds and bands, and W&B overlays the groups' runs on the same key. One run per
model would overlay seeds natively, but a W&B run costs ~0.3 s to open and ~1 ms per log call
on a 2-core CPU: at 1,000 models that is minutes, more than the 5 % this may cost.

Resuming continues the same TensorBoard runs and W&B runs (ids in `DIR/trackers.json`) without
duplicate points: points up to the last step already written are skipped (their values are the
same bits, since a resumed run retraces its steps exactly), and TensorBoard purges anything a
killed process wrote after that record. Only process 0 writes (under jax.distributed).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from jaxfit import config as config_lib

NAMES = ("tensorboard", "wandb")
EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}  # name: (module, pip extra)
BANDS = {"median": 50, "p10": 10, "p90": 90}


class MissingExtra(Exception):
    """A tracker's package is not installed; the message names the extra (one line)."""


def require(names: tuple[str, ...]) -> None:
    """Fail early, naming the extra to install, when a tracker's package is missing."""
    for name in names:
        module, extra = EXTRAS[name]
        try:
            __import__(module)
        except ImportError:
            raise MissingExtra(f"--log {name} needs the {module} package: pip install \"jaxfit[{extra}]\"") from None


def set_path(label: dict) -> str:
    """GROUP/INIT[/KEY=VALUE...]: the models that differ only in seed."""
    swept = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in label.items() if k not in ("group", "seed", "init")]
    return "/".join([label["group"], label["init"], *swept])


def model_path(label: dict) -> str:
    return f"{set_path(label)}/seed_{label['seed']}"


class Trackers:
    """The trackers of one run folder. Use: `on_chunk` after every compiled chunk (sweep.run
    calls it), `finish(out)` once the run's files are written; or as a context manager."""

    def __init__(self, cfg: config_lib.Config, out: Path | str, resume: bool = False, name: str | None = None):
        import jax

        from jaxfit import sweep, train

        require(cfg.logging.to)
        self.cfg, self.out = cfg, Path(out)
        self.name = name or self.out.name  # the run folder's name (not a staging folder's): W&B's group
        self.groups = sweep.expand(cfg)
        self.logged_steps = train.interval_end_steps(cfg, train.logged_intervals(cfg))
        self.logged_intervals = train.logged_intervals(cfg)
        self.writes = jax.process_index() == 0
        self.record = self.out / "trackers.json"
        state = json.loads(self.record.read_text()) if resume and self.record.exists() else {}
        self.written = int(state.get("written_through", 0))  # last step already sent to the trackers
        self.ids = state.get("wandb", {})
        self.sinks: list[Any] = []
        if self.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            if "tensorboard" in cfg.logging.to:
                self.sinks.append(TensorBoard(self, resume))
            if "wandb" in cfg.logging.to:
                self.sinks.append(Wandb(self, resume))
            self._save()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _save(self) -> None:
        from jaxfit import report

        text = json.dumps({"written_through": self.written, "wandb": self.ids}, indent=1)
        report.atomic_write(self.record, lambda f: f.write(text))

    def on_chunk(self, states: list[Any], intervals_done: int) -> None:
        """Send the points logged since the last call (host side; histories are fetched once)."""
        from jaxfit import sweep

        new = np.flatnonzero((self.logged_intervals < intervals_done) & (self.logged_steps > self.written))
        if len(new) == 0:
            return
        lo, hi = int(new[0]), int(new[-1]) + 1
        histories = sweep._fetch([{k: v[:, lo:hi] for k, v in s.history.items()} for s in states])
        if not self.writes:
            return
        steps = self.logged_steps[lo:hi]
        for group, history in zip(self.groups, histories):
            history = {k: np.asarray(v[: group.n_models]) for k, v in history.items()}
            bands = {path: {name: _bands(values[index]) for name, values in history.items()}
                     for path, index in _sets(group.labels).items()}
            for sink in self.sinks:
                sink.points(group, steps, history, bands)
        for sink in self.sinks:
            sink.flush()
        self.written = int(steps[-1])
        self._save()

    def finish(self, out: Path | str) -> None:
        """The summary table and the plots of the finished run in `out`; then close."""
        if self.writes:
            out = Path(out)
            summary = json.loads((out / "summary.json").read_text())
            text = (out / "summary.md").read_text()
            images = sorted(out.glob("*.png"))
            for sink in self.sinks:
                sink.finish(summary, text, images)
        self.close()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def _sets(labels: list[dict]) -> dict[str, np.ndarray]:
    """Indices of the models of each seed set, keyed by set_path."""
    sets: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        sets.setdefault(set_path(label), []).append(i)
    return {k: np.asarray(v) for k, v in sets.items()}


def _bands(values: np.ndarray) -> dict[str, np.ndarray]:
    """Median and 10/90 % quantiles across models ([models, steps] -> [steps]), NaN where no model has a value."""
    finite = np.isfinite(values).any(axis=0)
    safe = np.where(finite[None], values, 0.0)
    return {name: np.where(finite, np.nanpercentile(safe, q, axis=0), np.nan) for name, q in BANDS.items()}


class TensorBoard:
    """Event files under DIR/tensorboard/ (tensorboardX writers, no TensorFlow needed)."""

    def __init__(self, trackers: Trackers, resume: bool):
        from tensorboardX import SummaryWriter

        root = trackers.out / "tensorboard"
        purge = trackers.written + 1 if resume else None  # hide what a killed process wrote after the record

        def writer(path: str) -> Any:
            return SummaryWriter(str(root / path), purge_step=purge, max_queue=100_000, flush_secs=3600)  # flushed after every chunk

        self.models = {g.group.name: [writer(model_path(label)) for label in g.labels] for g in trackers.groups}
        self.bands = {path: {name: writer(f"{path}/~{name}") for name in BANDS} for g in trackers.groups for path in _sets(g.labels)}
        self.run = writer("~run")
        self.groups = trackers.groups
        if not resume:
            self.run.add_text("config", "```toml\n" + config_lib.to_toml(trackers.cfg) + "\n```", 0)

    def points(self, group: Any, steps: np.ndarray, history: dict, bands: dict) -> None:
        for i, w in enumerate(self.models[group.group.name]):
            for name, values in history.items():
                for step, value in zip(steps, values[i]):
                    if np.isfinite(value):
                        w.add_scalar(name, float(value), int(step))
        for path, per_metric in bands.items():
            for name, band in per_metric.items():
                for band_name, values in band.items():
                    for step, value in zip(steps, values):
                        if np.isfinite(value):
                            self.bands[path][band_name].add_scalar(name, float(value), int(step))

    def flush(self) -> None:
        for w in self._all():
            w.flush()

    def finish(self, summary: dict, text: str, images: list[Path]) -> None:
        """Summary and plots in ~run; each model's coordinates and final numbers for the HParams tab."""
        import matplotlib.pyplot as plt
        from tensorboardX.summary import hparams

        self.run.add_text("summary", text, 0)
        for image in images:
            self.run.add_image(image.stem, plt.imread(image)[..., :3], 0, dataformats="HWC")
        for g in self.groups:
            entries = [m for m in summary["models"] if m["group"] == g.group.name]  # in the order of g.labels
            for label, entry, w in zip(g.labels, entries, self.models[g.group.name]):
                finals = {f"final/{k}": float(v) for k, v in entry.items()
                          if (k.endswith("_final") or k in ("steps", "stop_step")) and isinstance(v, (int, float)) and not isinstance(v, bool)}
                finals["final/reached"] = float(bool(entry.get("reached")))
                for summary_proto in hparams(dict(label), finals):
                    w.file_writer.add_summary(summary_proto)
                for tag, value in finals.items():
                    w.add_scalar(tag, value, 0)

    def close(self) -> None:
        for w in self._all():
            w.close()

    def _all(self) -> list[Any]:
        return [w for ws in self.models.values() for w in ws] + [w for b in self.bands.values() for w in b.values()] + [self.run]


class Wandb:
    """One W&B run per group (see the module docstring); offline with WANDB_MODE=offline."""

    def __init__(self, trackers: Trackers, resume: bool):
        import wandb

        cfg, whole = trackers.cfg, config_lib.to_dict(trackers.cfg)
        self.runs = {}
        for g in trackers.groups:
            name = g.group.name
            run_id = trackers.ids.get(name) or f"{name}-{uuid.uuid4().hex[:8]}"
            trackers.ids[name] = run_id
            group_config = {k: v for k, v in whole.items() if k != "groups"} | {"group": name, **whole["groups"][name],
                                                                                  "n_models": g.n_models}
            self.runs[name] = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "jaxfit"), group=trackers.name, name=name, job_type=cfg.name,
                id=run_id, resume="allow", config=group_config, dir=str(trackers.out), reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", save_code=False, disable_git=True,
                                        x_disable_stats=True, x_disable_machine_info=True))

    def points(self, group: Any, steps: np.ndarray, history: dict, bands: dict) -> None:
        run = self.runs[group.group.name]
        for k, step in enumerate(steps):
            row = {}
            for i, label in enumerate(group.labels):
                where = model_path(label)[len(label["group"]) + 1:]
                for name, values in history.items():
                    if np.isfinite(values[i, k]):
                        row[f"{name}/{where}"] = float(values[i, k])
            for path, per_metric in bands.items():
                where = path.split("/", 1)[1]
                for name, band in per_metric.items():
                    for band_name, values in band.items():
                        if np.isfinite(values[k]):
                            row[f"{name}/{where}/{band_name}"] = float(values[k])
            if row:
                run.log(row, step=int(step))

    def flush(self) -> None:
        pass  # W&B streams on its own

    def finish(self, summary: dict, text: str, images: list[Path]) -> None:
        import wandb

        for name, run in self.runs.items():
            models = [m for m in summary["models"] if m["group"] == name]
            columns = list(models[0])
            table = wandb.Table(columns=columns, data=[[_plain(m[c]) for c in columns] for m in models])
            run.log({"summary": table, **{f"plots/{image.stem}": wandb.Image(str(image)) for image in images}})
            run.summary.update({"reached": sum(bool(m.get("reached")) for m in models), "n_models": len(models)})

    def close(self) -> None:
        for run in self.runs.values():
            run.finish()
        self.runs = {}


def _plain(value: Any) -> Any:
    """A summary value as W&B tables take it (None stays None)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
