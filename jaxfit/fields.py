"""What every config table is built from: a field with numeric limits, the sweep-axis type, and
the one-line error a bad value gets. A leaf module: config.py, optim.py and experiments use it."""

from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A bad config value; the message is one line naming key, value and what is allowed.
    `detail` (printed before it) may hold the experiment author's own traceback."""

    detail = ""


def bounded(default: Any = dataclasses.MISSING, **limits: float) -> Any:
    """A dataclass field with numeric limits (gt, ge, lt, le) checked on load, e.g.
    `width: int = bounded(8, gt=0)`."""
    return dataclasses.field(default=default, metadata=limits)


# A float, or a list of floats that becomes a sweep axis (one model per value, vmapped).
Sweep = float | tuple[float, ...]


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    """The one-line error for config key `key` = `value`; `allowed` says what is allowed."""
    return ConfigError(f"config key '{key}' = {value!r}: {allowed}")
