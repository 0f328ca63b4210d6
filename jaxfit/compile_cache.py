"""JAX's persistent compilation cache, on by default: a program compiled once (a config's chunk,
its init, a compaction size) is read back from disk by the next run, a `--resume` or a
notebook's rerun instead of compiled again.

Where: `$JAXFIT_COMPILE_CACHE` if set (`off` turns the cache off), else the user cache folder
(`$XDG_CACHE_HOME/jaxfit/jax`, by default `~/.cache/jaxfit/jax`). A cache folder the user gave
JAX itself (`JAX_COMPILATION_CACHE_DIR`, `jax.config`) is left as it is. Concurrent runs share
the folder safely: it has a size limit, which makes JAX take a file lock around every read and
write (a reader never sees half a file) and evict the least recently used entries. A folder
that cannot be written (read-only, not a folder, a full disk, then or later) turns the cache off
for the run with one line on stderr, instead of JAX's warning for every program. Host code.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

ENV = "JAXFIT_COMPILE_CACHE"
MAX_BYTES = 1 << 30  # least recently used entries go past this (a chunk program is 0.1-2 MB)
_counts = {"hits": 0, "misses": 0}
_chosen: list[Path | None] = []  # the folder this process uses, once chosen


def folder() -> Path | None:
    """The cache folder this process should use; None when `$JAXFIT_COMPILE_CACHE` is `off`."""
    setting = os.environ.get(ENV)
    if setting is not None:
        return None if setting.strip().lower() in ("off", "0", "false", "no", "") else Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxfit" / "jax"


def enable() -> Path | None:
    """Switch the cache on and count its hits and misses; the folder in use, or None. Decided
    once per process, at its first run (JAX reads its cache settings once per process)."""
    if not _chosen:
        jax.monitoring.register_event_listener(_count)
        _chosen.append(_choose())
        _quiet_failures()
    return _chosen[0]


def _choose() -> Path | None:
    theirs = getattr(jax.config, "jax_compilation_cache_dir")  # noqa: B009 -- a flag jax.config sets at run time (mypy cannot see it)
    if theirs:  # the user chose JAX's cache folder
        return Path(theirs)
    path = folder()
    if path is None:
        return None
    why = unwritable(path)
    if why:
        off(f"{path} cannot be written ({why})")
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small programs too: they add up
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path


def unwritable(path: Path) -> str | None:
    """Why `path` cannot hold the cache (it is made if missing and a file is written and removed
    in it), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jaxfit-probe-"):
            pass
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    return None


def off(why: str) -> None:
    """Turn the cache off for the rest of this process, saying why in one line on stderr."""
    if _chosen:
        _chosen[0] = None
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    print(f"jaxfit: the compile cache is off for this run: {why}; set ${ENV} to a writable folder, or to off", file=sys.stderr)


FAILURES = ("Error writing persistent compilation cache entry", "Error reading persistent compilation cache entry")


def _quiet_failures() -> None:
    """JAX warns once per program when its cache folder fails (a disk that fills mid-run): the
    first such warning turns the cache off in one line instead, the rest of the warnings pass."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        text = str(message)
        if not text.startswith(FAILURES):
            shown(message, category, *args, **kwargs)  # type: ignore[arg-type]  # warnings.showwarning's own arguments
        elif _chosen and _chosen[0] is not None:
            off(f"{_chosen[0]} failed ({text.split(': ', 1)[-1][:200]})")

    warnings.showwarning = show


def counts() -> dict[str, int]:
    """Persistent-cache hits and misses of this process so far."""
    return dict(_counts)


def _count(event: str, **_: object) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _counts["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        _counts["misses"] += 1
