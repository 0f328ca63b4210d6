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

A tracker never costs a result: one that fails (its process killed, its service unreachable, its
folder full or read-only) is dropped with one line and training goes on; `--resume DIR` (with the
same `--log`, or the config's `[logging]`) picks it up where its record ends. One that cannot
start at all (W&B online without credentials) is refused before the run folder is made.

Points are flushed to disk at most every FLUSH_SECONDS (and at the end), then recorded in
`DIR/trackers.json`. Resuming continues the same TensorBoard runs and W&B runs (ids in that file)
without duplicate points: points up to the last step recorded there are skipped (their values are the
same bits, since a resumed run retraces its steps exactly), and TensorBoard purges anything a
killed process wrote after that record. Only process 0 writes (under jax.distributed).
"""

from __future__ import annotations

import json
import netrc
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from jaxfit import analysis, plan, report, trainer
from jaxfit import config as config_lib

NAMES = ("tensorboard", "wandb")
EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}  # name: (module, pip extra)
BANDS = {"median": 50, "p10": 10, "p90": 90}
FLUSH_SECONDS = 10.0  # at most one flush per this many seconds (and at the end): a flush of 1,000 event files costs ~0.2 s


class MissingExtra(Exception):
    """A tracker's package is not installed; the message names the extra (one line)."""


def require(names: tuple[str, ...]) -> None:
    """Fail early, before any folder is made: a tracker's package is missing (naming the extra to
    install), or W&B would log online without credentials."""
    for name in names:
        module, extra = EXTRAS[name]
        try:
            __import__(module)
        except ImportError:
            raise MissingExtra(f'--log {name} needs the {module} package: pip install "jaxfit[{extra}]"') from None
    if "wandb" in names and not _wandb_can_log():
        raise MissingExtra(
            "--log wandb: W&B is online but has no credentials (no WANDB_API_KEY, no netrc entry): run `wandb login`, "
            "or log offline with WANDB_MODE=offline"
        )


def _wandb_can_log() -> bool:
    """Whether W&B is offline or disabled, or online with an API key (environment, settings or netrc)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        import wandb

        settings = wandb.setup().settings  # reads W&B's settings files (`wandb offline` is written there)
        if settings.mode in ("offline", "disabled", "dryrun") or settings.api_key or getattr(settings, "identity_token_file", None):
            return True
        host = urlparse(settings.base_url).hostname
    except Exception:  # noqa: BLE001 -- another W&B version: let W&B decide when the run starts
        return True
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        return bool(host and netrc.netrc(path).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False


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

        require(cfg.logging.to)
        self.cfg, self.out = cfg, Path(out)
        self.name = name or self.out.name  # the run folder's name (not a staging folder's): W&B's group
        self.groups = plan.expand(cfg)
        self.logged_intervals = trainer.logged_intervals(cfg)
        self.logged_steps = trainer.interval_end_steps(cfg, self.logged_intervals)
        self.writes = jax.process_index() == 0
        self.record = self.out / "trackers.json"
        state = json.loads(self.record.read_text()) if resume and self.record.exists() else {}
        self.ids = state.get("wandb", {})
        # each tracker's last step on disk (a dropped tracker's too: a resume continues from it)
        self.written = {**state.get("written_through", {}), **{n: int(state.get("written_through", {}).get(n, 0)) for n in cfg.logging.to}}
        self.sent = min((self.written[n] for n in cfg.logging.to), default=0)  # every process reads the record: the same fetches
        self.sinks: dict[str, Any] = {}
        if self.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            for name in cfg.logging.to:  # a resumed run skips what each sink holds
                self._guard(
                    name,
                    "start",
                    lambda: self.sinks.__setitem__(
                        name, (TensorBoard if name == "tensorboard" else Wandb)(self, self.written[name], resume)
                    ),
                )
            self._save()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _guard(self, name: str, what: str, action: Any) -> None:
        """Run one tracker's action; a tracker that fails is dropped (one line), never the run."""
        try:
            action()
        except Exception as error:  # noqa: BLE001 -- whatever a tracker raises, training goes on without it
            self._drop(name, what, error)

    def _drop(self, name: str, what: str, error: Exception) -> None:
        sink = self.sinks.pop(name, None)
        first = (str(error).strip().splitlines() or [""])[0][:200]
        print(
            f"--log {name}: failed to {what} ({type(error).__name__}: {first}); dropped, training goes on; it holds the points up to "
            f"step {self.written.get(name, 0):,}, and --resume picks it up from there",
            file=sys.stderr,
            flush=True,
        )
        if sink is not None:
            try:
                sink.abandon()
            except Exception:  # noqa: BLE001 -- it is failing already
                pass

    def _save(self) -> None:
        text = json.dumps({"written_through": self.written, "wandb": self.ids}, indent=1)
        try:
            report.atomic_write(self.record, lambda f: f.write(text))
        except OSError as error:  # the run folder is full or read-only (the checkpoint will say so): the trackers go
            for name in list(self.sinks):
                self._drop(name, "record its progress in trackers.json", error)

    def on_chunk(self, states: list[Any], intervals_done: int) -> None:
        """Send the points logged since the last call (host side; histories are fetched once).
        W&B streams them at once; TensorBoard's files are flushed at most every FLUSH_SECONDS."""
        new = np.flatnonzero((self.logged_intervals < intervals_done) & (self.logged_steps > self.sent))
        if len(new) == 0:
            return
        lo, hi = int(new[0]), int(new[-1]) + 1
        histories = plan.fetch([{k: v[:, lo:hi] for k, v in s.history.items()} for s in states])  # a collective
        steps = self.logged_steps[lo:hi]
        self.sent = int(steps[-1])
        if not self.writes or not self.sinks:
            return
        for group, history in zip(self.groups, histories):
            history = {k: np.asarray(v[: group.n_models]) for k, v in history.items()}
            bands = {path: {name: _bands(values[index]) for name, values in history.items()} for path, index in _sets(group.labels).items()}
            for name, sink in list(self.sinks.items()):
                fresh = steps > sink.written
                if fresh.any():
                    self._guard(
                        name,
                        "write",
                        lambda sink=sink, fresh=fresh: sink.points(
                            group,
                            steps[fresh],
                            {k: v[:, fresh] for k, v in history.items()},
                            {path: {m: {b: v[fresh] for b, v in band.items()} for m, band in per.items()} for path, per in bands.items()},
                        ),
                    )
        self.flush(force=False)

    def flush(self, force: bool = True) -> None:
        """Put what was sent on disk (TensorBoard: at most every FLUSH_SECONDS unless forced),
        then record it in trackers.json."""
        changed = False
        for name, sink in list(self.sinks.items()):
            if self.sent > sink.written and (force or sink.streams or time.monotonic() - sink.flushed_at >= FLUSH_SECONDS):
                self._guard(name, "flush", sink.flush)
                if name in self.sinks:
                    sink.written, sink.flushed_at, changed = self.sent, time.monotonic(), True
                    self.written[name] = self.sent
        if changed:
            self._save()

    def finish(self, out: Path | str) -> None:
        """The summary table and the plots of the finished run in `out`; then close. A tracker
        that fails here is dropped like any other: the run is finished all the same."""
        self.flush()
        if self.writes and self.sinks:
            out = Path(out)
            summary = report.read_summary(out)
            text = (out / "summary.md").read_text()
            images = sorted(out.glob("*.png"))
            for name, sink in list(self.sinks.items()):
                self._guard(name, "write the summary", lambda sink=sink: sink.finish(summary, text, images))
        self.close()

    def close(self) -> None:
        self.flush()
        for name, sink in list(self.sinks.items()):
            self._guard(name, "close", sink.close)
        self.sinks = {}


def _sets(labels: list[dict]) -> dict[str, np.ndarray]:
    """Indices of the models of each seed set (analysis.model_sets), keyed by set_path."""
    return {set_path(labels[index[0]]): np.asarray(index) for index in analysis.model_sets(labels).values()}


def _bands(values: np.ndarray) -> dict[str, np.ndarray]:
    """Median and 10/90 % quantiles across models ([models, steps] -> [steps]), NaN where no model has a value."""
    finite = np.isfinite(values).any(axis=0)
    safe = np.where(finite[None], values, 0.0)
    return {name: np.where(finite, np.nanpercentile(safe, q, axis=0), np.nan) for name, q in BANDS.items()}


class EventFile:
    """One TensorBoard run's event file, written synchronously by tensorboardX's EventsWriter:
    one event per logged step holding every metric (tensorboardX's threaded SummaryWriter costs
    ~50-140 us per point, minutes at 1,000 models)."""

    def __init__(self, folder: Path, purge_step: int | None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        folder.mkdir(parents=True, exist_ok=True)
        self.writer = EventsWriter(str(folder / "events"), f".{time.time_ns()}")  # later files sort after earlier ones
        if purge_step is not None:  # TensorBoard hides what earlier files hold from this step on
            self.writer.write_event(Event(step=purge_step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START)))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])
        self.writer.write_event(Event(step=step, wall_time=time.time(), summary=summary))

    def summary(self, proto: Any, step: int = 0) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self.writer.write_event(Event(step=step, wall_time=time.time(), summary=proto))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TensorBoard:
    """Event files under DIR/tensorboard/ (tensorboardX, no TensorFlow needed)."""

    streams = False  # buffered: flushed every FLUSH_SECONDS

    def __init__(self, trackers: Trackers, written: int, resume: bool):
        from tensorboardX import SummaryWriter

        self.written, self.flushed_at = written, time.monotonic()
        root = trackers.out / "tensorboard"
        purge = written + 1 if resume else None  # hide what a killed process wrote after the record
        self.models = {g.group.name: [EventFile(root / model_path(label), purge) for label in g.labels] for g in trackers.groups}
        self.bands = {
            path: {name: EventFile(root / path / f"~{name}", purge) for name in BANDS} for g in trackers.groups for path in _sets(g.labels)
        }
        self.run = SummaryWriter(str(root / "~run"), purge_step=purge, flush_secs=3600)  # text and images: a few events
        self.groups = trackers.groups
        if not resume:
            self.run.add_text("config", "```toml\n" + config_lib.to_toml(trackers.cfg) + "\n```", 0)

    def points(self, group: Any, steps: np.ndarray, history: dict, bands: dict) -> None:
        for i, events in enumerate(self.models[group.group.name]):
            for k, step in enumerate(steps):
                values = {name: float(v[i, k]) for name, v in history.items() if np.isfinite(v[i, k])}
                if values:
                    events.scalars(int(step), values)
        for path, per_metric in bands.items():
            for band_name in BANDS:
                for k, step in enumerate(steps):
                    values = {name: float(band[band_name][k]) for name, band in per_metric.items() if np.isfinite(band[band_name][k])}
                    if values:
                        self.bands[path][band_name].scalars(int(step), values)

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
            for label, entry, events in zip(g.labels, entries, self.models[g.group.name]):
                finals = {
                    f"final/{k}": float(v)
                    for k, v in entry.items()
                    if (k.endswith("_final") or k in ("steps", "stop_step")) and isinstance(v, (int, float)) and not isinstance(v, bool)
                }
                finals["final/reached"] = float(bool(entry.get("reached")))
                for proto in hparams(dict(label), finals):
                    events.summary(proto)
                events.scalars(0, finals)

    def close(self) -> None:
        for w in self._all():
            w.close()

    def abandon(self) -> None:
        """Close what can be closed after a failure."""
        for w in self._all():
            try:
                w.close()
            except Exception:  # noqa: BLE001 -- a full or read-only folder
                pass

    def _all(self) -> list[Any]:
        return [w for ws in self.models.values() for w in ws] + [w for b in self.bands.values() for w in b.values()] + [self.run]


class Wandb:
    """One W&B run per group (see the module docstring); offline with WANDB_MODE=offline."""

    streams = True  # W&B sends each log call on its own: recorded after every chunk

    def __init__(self, trackers: Trackers, written: int, resume: bool):
        import wandb

        self.written, self.flushed_at = written, time.monotonic()
        cfg, whole = trackers.cfg, config_lib.to_dict(trackers.cfg)
        self.runs = {}
        for g in trackers.groups:
            name = g.group.name
            run_id = trackers.ids.get(name) or f"{name}-{uuid.uuid4().hex[:8]}"
            trackers.ids[name] = run_id
            group_config = {k: v for k, v in whole.items() if k != "groups"} | {
                "group": name,
                **whole["groups"][name],
                "n_models": g.n_models,
            }
            self.runs[name] = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "jaxfit"),
                group=trackers.name,
                name=name,
                job_type=cfg.name,
                id=run_id,
                resume="allow",
                config=group_config,
                dir=str(trackers.out),
                reinit="create_new",
                settings=wandb.Settings(
                    silent=True, console="off", save_code=False, disable_git=True, x_disable_stats=True, x_disable_machine_info=True
                ),
            )

    def points(self, group: Any, steps: np.ndarray, history: dict, bands: dict) -> None:
        run = self.runs[group.group.name]
        for k, step in enumerate(steps):
            row = {}
            for i, label in enumerate(group.labels):
                where = model_path(label)[len(label["group"]) + 1 :]
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

    def abandon(self) -> None:
        """After a failure: finish the runs; if W&B itself is gone (its service process killed),
        stop W&B in this process, so that its exit hook has nothing left to fail on."""
        import wandb

        runs, self.runs, gone = self.runs, {}, False
        for run in runs.values():
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001 -- its service is gone
                gone = True
        if gone:
            try:
                wandb.teardown(exit_code=1)
            except Exception:  # noqa: BLE001 -- nothing left to tear down
                pass


def _plain(value: Any) -> Any:
    """A summary value as W&B tables take it (None stays None)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
