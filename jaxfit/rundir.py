"""A run's folder: which process owns it, which files are the run's, and how `--overwrite`
replaces an earlier run without losing it first. Host code only.

- `.jaxfit-run.json` (the marker) says that a folder holds a jaxfit run: the config and code the
  run was started with (what `--resume` must match), whether it finished, and the files it wrote.
- `.jaxfit.lock` is held (flock) by the one process writing the folder; the operating system
  releases it when that process ends, however it ends, so a killed run leaves no stale lock.
- `--overwrite` trains the new run in `DIR/.jaxfit-staging/` and moves it into DIR only once it
  has finished; then the earlier run's files (those its marker lists) are replaced, and nothing
  else in the folder is touched. An interrupted `--overwrite` run stays in the staging folder,
  where `--resume DIR` continues it; the earlier run stays whole until then. A crash while the
  finished run moves in is completed by the next command that uses the folder (`settle`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

MARKER, LOCK, STAGING = ".jaxfit-run.json", ".jaxfit.lock", ".jaxfit-staging"
OWN = {MARKER, LOCK, STAGING}  # bookkeeping, not run files


class FolderError(Exception):
    """A run folder that cannot be used as asked (one line, exit 2)."""


def atomic_write(path: Path, write: Callable[[IO], object], binary: bool = False) -> None:
    """Write via a temp file in the same folder and rename, so no reader sees half a file."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb" if binary else "w") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_marker(folder: Path) -> dict | None:
    """The marker of a jaxfit run folder, or None if `folder` is not one."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("jaxfit_run") == 1 else None


def write_marker(folder: Path, config: dict, finished: bool, code: dict | None = None, extends: int | None = None) -> None:
    """Mark `folder` as a run started with `config` by `code` (experiment.code_of: what a resume
    must match); a finished run also lists its files. `extends`: the seeds of the run that this
    one (in its staging folder, unfinished) adds seeds to (jaxfit.extend)."""
    files = sorted(p.name for p in folder.iterdir() if p.name not in OWN and not p.name.startswith(".")) if finished else []
    marker = {"jaxfit_run": 1, "finished": finished, "files": files, "config": config} | ({"code": code} if code else {})
    marker |= {"extends": extends} if extends is not None else {}
    atomic_write(folder / MARKER, lambda f: json.dump(marker, f, indent=1))


def is_empty(folder: Path) -> bool:
    """No files but possibly a lock left by an earlier process that wrote nothing else."""
    return not folder.exists() or all(p.name == LOCK for p in folder.iterdir())


def check_usable(out: Path, overwrite: bool) -> None:
    """Refuse, before anything is computed or written, a folder that cannot take a new run."""
    try:
        _check_usable(out, overwrite)
    except OSError as error:  # a name too long for the filesystem, a folder we may not look into
        raise FolderError(f"--out {out}: cannot be used ({error.strerror or error})") from None


def _check_usable(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FolderError(f"--out {out}: is a file; give a new or empty folder")
    if out.is_dir() and not is_empty(out):
        if not overwrite:
            raise FolderError(f"--out {out}: folder is not empty; give a new or empty folder, --overwrite, or --resume {out}")
        if read_marker(out) is None:
            raise FolderError(f"--out {out}: not a jaxfit run folder (no {MARKER}); --overwrite replaces only an earlier run's files")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FolderError(f"--out {out}: {existing} is a file, so the folder cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FolderError(f"--out {out}: {existing} is not writable")
    name_max = os.pathconf(existing, "PC_NAME_MAX")
    too_long = [part for part in out.resolve().relative_to(existing.resolve()).parts if len(os.fsencode(part)) > name_max]
    if too_long:
        raise FolderError(f"--out {out}: the name {too_long[0][:40]!r}... is longer than this filesystem allows ({name_max} bytes)")


@contextlib.contextmanager
def owned(out: Path) -> Iterator[None]:
    """Create `out` if needed and hold its lock for the duration; another process holding it
    is refused in one line."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK, "a+")  # noqa: SIM115 -- held open while the folder is ours
    except OSError as error:
        raise FolderError(f"--out {out}: cannot be created or written ({error.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise FolderError(
            f"--out {out}: another jaxfit process{f' (pid {holder})' if holder else ''} is writing this folder; "
            "wait for it to end or choose another folder"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        finish_promotion(out)
        yield
    finally:
        handle.close()


def workdir(out: Path) -> Path:
    """Where a new run in `out` writes: `out` itself, or the staging folder when `out` holds an
    earlier run (which stays as it is until the new one has finished)."""
    if read_marker(out) is None:
        return out
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # an earlier, abandoned --overwrite run of ours
    staging.mkdir()
    return staging


def resume_dir(out: Path) -> Path:
    """The run in progress in `out`: an interrupted --overwrite run in its staging folder, else
    `out`'s own run."""
    staging = out / STAGING
    marker = read_marker(staging)
    return staging if marker is not None and not marker["finished"] and (staging / "checkpoints").is_dir() else out


JOURNAL = ".jaxfit-promotion.json"  # in the staging folder: the earlier run's files, kept while they are replaced


def promote(out: Path, staging: Path) -> None:
    """Move a finished run from `staging` into `out`, replacing the earlier run's files. Each step
    can be repeated after a crash at any point (`settle` repeats them): the earlier run's file list
    is journalled in the staging folder first, then `out`'s marker goes (from here `out` does not
    claim to hold a whole run), the new files replace the old ones (each an atomic rename; those
    already moved are skipped), the old files the new run does not have are removed, and the
    staged marker moves last."""
    journal = staging / JOURNAL
    if not journal.is_file():
        old = read_marker(out) or {"files": []}
        atomic_write(journal, lambda f: json.dump({"files": old.get("files", [])}, f))
    old_files = json.loads(journal.read_text())["files"]
    new = read_marker(staging)
    assert new is not None  # a finished run is staged with its marker
    (out / MARKER).unlink(missing_ok=True)
    for name in new["files"]:
        if not (staging / name).exists():  # moved before a crash
            continue
        target = out / name
        if (staging / name).is_dir():
            shutil.rmtree(target, ignore_errors=True)
        (staging / name).replace(target)
    for name in set(old_files) - set(new["files"]) - OWN:
        target = out / Path(name).name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    (staging / MARKER).replace(out / MARKER)
    shutil.rmtree(staging, ignore_errors=True)


def finish_promotion(out: Path) -> None:
    """Under the folder's lock: complete a promotion that a crash cut short (a finished run still
    in the staging folder), or remove what one left behind (a staging folder without a marker
    holds nothing to resume: its run had not started, or its marker has moved already)."""
    staging = out / STAGING
    marker = read_marker(staging)
    if marker is not None and marker.get("finished"):
        promote(out, staging)
    elif marker is None and staging.is_dir():
        shutil.rmtree(staging)


def settle(out: Path) -> None:
    """Before any command reads `out`: complete what a crash during a promotion left, holding the
    folder's lock (a folder another process holds, or one that cannot be written, is left as it
    is: its owner completes it)."""
    staging = out / STAGING
    try:
        marker = read_marker(staging)
        if not staging.is_dir() or (marker is not None and not marker.get("finished")):
            return
        with owned(out):
            pass  # owned() completes the promotion under the lock
    except (FolderError, OSError):  # not ours to settle now, or not a folder at all: the command says why
        pass
