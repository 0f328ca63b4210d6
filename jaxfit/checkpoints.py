"""The run's checkpoints: orbax's CheckpointManager over the whole training state, with a
checksum so that a damaged checkpoint is detected (and the one before it used) rather than
trained on; orbax's failures reported in one line instead of its threads' tracebacks."""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import warnings
from pathlib import Path
from traceback import walk_tb
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxfit import trainer
from jaxfit.config import Config
from jaxfit.plan import fetch


class CheckpointError(Exception):
    """No intact checkpoint to resume from (one line)."""


def state_checksum(states: Any) -> str:
    """sha256 of every leaf's bytes, in tree order: what a checkpoint must restore to exactly."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(fetch(states)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _quiet_closed_loop_noise() -> None:
    """A failed orbax write or restore leaves tensorstore callbacks aimed at a closed asyncio
    loop, which Python reports as tracebacks (through sys.excepthook from tensorstore's threads,
    or as 'Exception ignored') long after the failure was handled. Drop exactly those reports;
    every other exception still goes to the usual hooks."""
    if getattr(sys.unraisablehook, "jaxfit_filter", False):
        return
    unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

    def unraisable(report: Any) -> None:
        if not _closed_loop(report.exc_value):
            unraisable_hook(report)

    def excepthook(kind: type, value: BaseException, traceback: Any) -> None:
        if not _closed_loop(value):
            except_hook(kind, value, traceback)

    unraisable.jaxfit_filter = True  # type: ignore[attr-defined]  # marks our hook (installed once)
    sys.unraisablehook, sys.excepthook = unraisable, excepthook


def _unretrieved(record: logging.LogRecord) -> bool:
    """False for asyncio's 'exception was never retrieved' reports (a failed write's futures)."""
    return "exception was never retrieved" not in str(record.msg)


def _from_orbax(traceback: Any) -> bool:
    """Whether a traceback passes through orbax or tensorstore (a checkpoint thread's failure)."""
    return any(part in frame.f_code.co_filename for frame, _ in walk_tb(traceback) for part in ("orbax", "tensorstore"))


def _quiet_after_failed_write() -> None:
    """After a failed write the run stops with one line; orbax's threads may still finish
    failing later (their error logs, their tracebacks, their abandoned coroutines and futures),
    so from here on those reports are dropped: the absl filter held during the write stays, and
    a thread's exception is passed on to the previous hook unless it comes from orbax."""
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    logging.getLogger("asyncio").addFilter(_unretrieved)
    if getattr(threading.excepthook, "jaxfit_filter", False):
        return
    previous = threading.excepthook

    def excepthook(args: Any) -> None:
        if not _from_orbax(args.exc_traceback):
            previous(args)

    excepthook.jaxfit_filter = True  # type: ignore[attr-defined]  # installed once
    threading.excepthook = excepthook


class _HeldLogs(logging.Filter):
    """Holds orbax's error records while a checkpoint is written; `release` logs them after all
    (the write succeeded), else they are dropped: the failure is reported in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True

    def release(self) -> None:
        for record in self.records:
            logging.getLogger(record.name).handle(record)


class Checkpoints:
    """The run's orbax CheckpointManager: the whole state (a pytree) and a little JSON with the
    progress and the state's checksum, so a damaged checkpoint is detected, not trained on."""

    def __init__(self, directory: Path, cfg: Config):
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.execution.keep_checkpoints, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(directory).resolve(), options=options)
        self.per_chunk = trainer.chunk_intervals(cfg)  # for checkpoints of earlier versions, which counted chunks

    def save(self, step: int, states: Any, meta: dict) -> None:
        if step in self.manager.all_steps():  # the state at a given interval is always the same
            return
        meta = {**meta, "checksum": state_checksum(states)}
        held = _HeldLogs()  # a failed write is logged by orbax's threads with tracebacks: reported below in one line instead
        logging.getLogger("absl").addFilter(held)
        _quiet_closed_loop_noise()
        try:
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(states), meta=ocp.args.JsonSave(meta)), force=True)
        except Exception as error:  # noqa: BLE001 -- orbax reports a full disk as a ValueError (tensorstore's RESOURCE_EXHAUSTED)
            _quiet_after_failed_write()
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise OSError(f"checkpoint {step} could not be written ({type(error).__name__}: {first})") from None
        except BaseException:  # Ctrl-C during the write: its logs are the user's again
            logging.getLogger("absl").removeFilter(held)
            raise
        logging.getLogger("absl").removeFilter(held)
        held.release()

    def restore(self, like: Any) -> tuple[Any, dict]:
        """The newest intact checkpoint; a damaged one is reported in one line and the one
        before it tried. CheckpointError if none is intact."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        steps = sorted(self.manager.all_steps(), reverse=True)
        for tried, step in enumerate(steps):
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
                )
                checksum = state_checksum(restored.state)
                if restored.meta.get("checksum", checksum) != checksum:  # checkpoints of earlier versions have none
                    raise ValueError("its data does not match its checksum")
            except Exception as error:  # noqa: BLE001 -- any damage: fall back to the previous checkpoint
                _quiet_closed_loop_noise()
                reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"
                print(f"checkpoint {step} is damaged ({reason}); trying the one before", file=sys.stderr, flush=True)
                continue
            for damaged in steps[:tried]:  # superseded: the run writes these steps again
                self.manager.delete(damaged)
            if tried:
                print(f"resuming from checkpoint {step}", file=sys.stderr, flush=True)
            meta = dict(restored.meta)
            meta.setdefault("next_interval", meta.get("next_chunk", 0) * self.per_chunk)
            return restored.state, meta
        raise CheckpointError(f"no intact checkpoint in {self.manager.directory}" + (f" (tried {len(steps)})" if steps else ""))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
