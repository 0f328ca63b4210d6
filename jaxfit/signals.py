"""Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal, a dropped ssh) as a request to stop at the next safe point, not an exception
at a random one. Host code only; imports nothing heavy, so the CLI installs it first."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopRequest:
    """SIGINT, SIGTERM and SIGHUP turned into a request that the training loop honours between
    chunks: a signal never lands inside a compiled call (whose input buffers are donated) or a
    file write, so the checkpoint always holds a whole chunk. Repeated signals are acknowledged
    once more and otherwise ignored (SIGKILL still ends the process; resume from the last
    checkpoint). Once training has finished (`finishing`), a signal lets the run's files be
    written whole and says so: the run is complete, and the process exits 0 with them."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.requested: int | None = None  # the first signal's number
        self.finishing = False  # training is over; only the run's files remain to be written
        self._repeated = False
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any = None) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = signum
            message = (
                "training has finished; writing the run's files (seconds), then exiting"
                if self.finishing
                else "stopping at the end of the current chunk, after a checkpoint ..."
            )
            print(f"{name}: {message}", file=sys.stderr, flush=True)
        elif not self._repeated:
            self._repeated = True
            what = "the run's files are" if self.finishing else "the checkpoint is"
            print(f"{name}: already stopping; {what} being written", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
