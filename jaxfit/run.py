"""The command line: `python -m jaxfit.run --config NAME [--set key=value ...] [--out DIR]`,
`python -m jaxfit.run --resume DIR` to continue a stopped run, and `python -m jaxfit.run
--extend DIR --set sweep.n_seeds=N` to give a finished run more seeds (jaxfit.extend).

Every bad input (config name, key, type, range, output folder, a run too large for memory) ends
with one line on stderr naming what is wrong and what is allowed, exit code 2, before anything
is written. A run holds its folder's lock, writes `config.toml` and checkpoints as it goes, and
its files at the end (`rundir.py`: --overwrite trains aside and replaces only at the end). Ctrl-C,
SIGTERM or SIGHUP stop at the end of a chunk with a checkpoint (exit 130 / 143 / 129). A run that
cannot write (a full disk) stops in one line, exit 2, keeping what it wrote. A resumed run must
be the same program: the config it started with, and the same experiment code and jaxfit version.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from jaxfit import checkpoints, distributed, extend, outputs, plan, report, rundir, runs, sweep, trackers
from jaxfit import config as config_lib
from jaxfit.experiment import ExperimentError, code_of
from jaxfit.signals import StopRequest


class UsageError(Exception):
    """A bad command line; one line, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python -m jaxfit.run", description="Train every model of an experiment config in one jit-compiled call.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a built-in config name (an unknown one lists them) or a path to a .toml file")
    source.add_argument("--resume", type=Path, metavar="DIR", help="continue the stopped run in DIR from its latest checkpoint")
    source.add_argument(
        "--extend",
        type=Path,
        metavar="DIR",
        help="train more seeds for the finished run in DIR (--set sweep.n_seeds=N): its models stay as they are, bit for bit",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config value, e.g. train.epochs=2, sweep.n_seeds=3, groups.wide.optim.lr=[0.05,0.1] (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<config name>-<date-time>/); must be new or empty")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the earlier run in --out once the new one has finished (only that run's files)"
    )
    parser.add_argument(
        "--allow-code-change",
        action="store_true",
        help="with --resume or --extend: go on although the experiment's code or jaxfit's version changed since the run started "
        "(its models then come from two programs)",
    )
    parser.add_argument(
        "--log",
        action="append",
        default=[],
        choices=("tensorboard", "wandb"),
        help="also write live curves to TensorBoard (DIR/tensorboard/) or Weights & Biases, after every chunk (repeatable; "
        "adds to the config's [logging] to)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    parser.add_argument(
        "--distributed",
        metavar="HOST:PORT,N,I",
        type=distributed_spec,
        help="one of N processes (process I) training one run together under jax.distributed, "
        "HOST:PORT being process 0's coordinator; 'auto': JAX detects them (SLURM, Open MPI, ...)",
    )
    parser.add_argument(
        "--join-timeout",
        type=float,
        metavar="SECONDS",
        help=f"with --distributed: how long to wait for every process to join (default {distributed.JOIN_TIMEOUT_S:g})",
    )
    parser.add_argument("--stop-after-chunks", type=int, metavar="N", help=argparse.SUPPRESS)  # testing resume
    return parser.parse_args(argv)


def distributed_spec(text: str) -> tuple[str | None, int | None, int | None]:
    """--distributed HOST:PORT,N,I as (coordinator, processes, process id); 'auto' as Nones (JAX detects them)."""
    if text == "auto":
        return None, None, None
    parts = text.split(",")
    if len(parts) != 3 or ":" not in parts[0] or not parts[1].isdigit() or not parts[2].isdigit() or not 0 <= int(parts[2]) < int(parts[1]):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT,N,I (N processes, this one I, 0 <= I < N) or 'auto'")
    return parts[0], int(parts[1]), int(parts[2])


def join_processes(args: argparse.Namespace) -> bool:
    """Join the other processes when asked (distributed.join); True for the process that writes
    the run's files (0)."""
    timeout = distributed.JOIN_TIMEOUT_S if args.join_timeout is None else args.join_timeout
    if args.distributed is None:
        if args.join_timeout is not None:
            raise UsageError("--join-timeout goes with --distributed")
        return True
    if not 0 < timeout < 1e9:
        raise UsageError(f"--join-timeout {timeout:g}: must be a number of seconds > 0")
    try:
        coordinator, n_processes, process_id = args.distributed
        return distributed.join(coordinator, n_processes, process_id, timeout_s=timeout) == 0
    except distributed.JoinError as error:
        raise UsageError(f"--distributed: {error}") from None


def default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def started_config(cfg: config_lib.Config) -> dict:
    """What a resumed run must keep: the whole config but `execution` (chunks, checkpoints) and
    `logging` (trackers), which never change a result."""
    return {k: v for k, v in config_lib.to_dict(cfg).items() if k not in ("execution", "logging")}


def with_logging(cfg: config_lib.Config, names: list[Any]) -> config_lib.Config:
    """The config with the trackers of --log added to its [logging] table."""
    if not names:
        return cfg
    return dataclasses.replace(cfg, logging=config_lib.Logging(tuple(dict.fromkeys((*cfg.logging.to, *names)))))


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{path}.{k}" if path else k)]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def resolve(args: argparse.Namespace, primary: bool = True) -> tuple[config_lib.Config, Path, Path]:
    """The config, output folder and the folder the run writes in (the output folder, or its
    staging folder); raises on anything bad, before anything is written. Only the primary
    process (0) checks the output folder: the others never write it."""
    if args.stop_after_chunks is not None and args.stop_after_chunks < 1:
        raise UsageError(f"--stop-after-chunks {args.stop_after_chunks}: must be >= 1")
    if args.allow_code_change and args.resume is None and args.extend is None:
        raise UsageError("--allow-code-change goes with --resume DIR or --extend DIR")
    if args.resume is not None:
        if args.out or args.overwrite:
            raise UsageError("--resume DIR continues the run in DIR; no --out or --overwrite")
        if primary:
            rundir.settle(args.resume)  # a promotion a crash cut short is completed first
        work = rundir.resume_dir(args.resume)
        if not (work / "config.toml").is_file() or not (work / "checkpoints").is_dir():
            finished = (rundir.read_marker(work) or {}).get("finished") and (work / "config.toml").is_file()
            raise UsageError(
                f"--resume {args.resume}: the run has finished and keeps no checkpoints (an extended run's would hold only its "
                "new seeds); nothing to resume"
                if finished
                else f"--resume {args.resume}: no config.toml and checkpoints/ there to resume from"
            )
        not_execution = [o for o in args.overrides if not o.strip().startswith("execution.")]
        if not_execution:
            raise UsageError(f"--resume: --set {not_execution[0]}: a resumed run keeps its config; only execution.* may change")
        cfg = with_logging(config_lib.load(str(work / "config.toml"), args.overrides), args.log)
        marker = rundir.read_marker(work)
        if marker is not None and marker["config"] != started_config(cfg):
            changed = "; ".join(_differences(marker["config"], started_config(cfg))[:5])
            raise UsageError(
                f"--resume {args.resume}: config.toml is not the config the run was started with ({changed}); "
                "that would change results: undo the edit, or start a new run"
            )
        if marker is not None and not args.allow_code_change:
            check_same_code(args.resume, marker.get("code"), code_of(type(cfg.task)))
        return cfg, args.resume, work
    if args.extend is not None:
        if args.out or args.overwrite or args.distributed or args.log:
            raise UsageError(
                "--extend DIR adds seeds to the run in DIR, in one process and without live trackers (they would see the new "
                "seeds only); no --out, --overwrite, --distributed or --log"
            )
        rundir.settle(args.extend)
        cfg, _ = extend.configs(args.extend, args.overrides)
        if not args.allow_code_change:  # the new models must come from the program the old ones did
            check_same_code(args.extend, (rundir.read_marker(args.extend) or {}).get("code"), code_of(type(cfg.task)), "--extend")
        return cfg, args.extend, args.extend
    cfg = with_logging(config_lib.load(args.config, args.overrides), args.log)
    out = args.out or default_out(cfg.name)
    if primary:
        if args.out is not None:
            rundir.settle(out)  # a promotion a crash cut short is completed first
        rundir.check_usable(out, args.overwrite)
    elif args.out is None:
        raise UsageError("--distributed: give --out, the one folder every process uses")
    return cfg, out, out


def check_same_code(folder: Path, started: dict | None, now: dict, flag: str = "--resume") -> None:
    """Refuse to resume (or extend) with other experiment code or another jaxfit version than the
    run started with (a run's models would mix two programs). Runs of versions that recorded none pass."""
    if not started:
        return
    changed = [f"{key} {started.get(key)} -> {now.get(key)}" for key in ("jaxfit",) if started.get(key) != now.get(key)]
    if started.get("experiment_sha256") != now.get("experiment_sha256"):
        changed.append(
            f"{now.get('experiment_file') or started.get('experiment_file')} changed "
            f"(sha256 {str(started.get('experiment_sha256'))[:12]} -> {str(now.get('experiment_sha256'))[:12]})"
        )
    if changed:
        raise UsageError(
            f"{flag} {folder}: not the program the run started with ({'; '.join(changed)}); its models would mix "
            f"two programs: restore the code, start a new run, or insist with {flag} {folder} --allow-code-change"
        )


def main(argv: list[str] | None = None) -> int:
    with StopRequest() as stop:  # from the start: a signal at any moment stops at the next safe point
        return _main(argv, stop)


def _main(argv: list[str] | None, stop: StopRequest) -> int:
    try:
        args = parse_args(argv)
        primary = join_processes(args) if not args.print_config else True
        cfg, out, work = resolve(args, primary)
        sweep.compact_mode()  # an environment variable of the tests' and benchmarks': checked before anything is written
        if args.print_config:
            print(config_lib.to_toml(cfg), end="")
            return 0
        trackers.require(cfg.logging.to)
    except (UsageError, config_lib.ConfigError, ExperimentError, rundir.FolderError, trackers.MissingExtra, extend.ExtendError) as error:
        print(f"{getattr(error, 'detail', '')}error: {error}", file=sys.stderr)
        return 2
    import jax  # imported only once the input is known to be good

    try:
        prepared = sweep.prepare(cfg)  # validates memory; nothing is written before this
        if stop.requested:
            print("stopped before anything was written", file=sys.stderr)
            return 128 + stop.requested
        with rundir.owned(out) if primary else contextlib.nullcontext():
            return _train(args, cfg, out, work, prepared, stop, primary)
    except (plan.TooLarge, checkpoints.CheckpointError, rundir.FolderError, ExperimentError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a folder made read-only meanwhile: what was written stays
        print(f"error: writing in {work} failed: {one_line(error)}; what was written before stays (--resume {out})", file=sys.stderr)
        return 2
    except jax.errors.JaxRuntimeError as error:  # e.g. out of device memory while running
        print(f"error: the run failed on the device: {one_line(error)}; its last checkpoint, if any, is under {work}", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    """An exception's first line, at most 300 characters."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _train(
    args: argparse.Namespace, cfg: config_lib.Config, out: Path, work: Path, prepared: Any, stop: StopRequest, primary: bool = True
) -> int:
    """Train in the owned folder: mark it, train, write the run's files, then (for --overwrite)
    move the finished run over the earlier one. Under jax.distributed every process trains its
    share of the models and writes its share of each checkpoint; only process 0 writes files."""
    import jax
    from jax.experimental import multihost_utils

    resume, code = args.resume is not None, code_of(type(cfg.task))
    extends = (rundir.read_marker(work) or {}).get("extends") if resume else extend.seeds(out) if args.extend else None
    if primary:
        if not resume:
            work = rundir.workdir(out)
        if not resume or args.overrides or args.log:  # a resumed run goes on with its changed execution.* and logging settings
            report.atomic_write(work / "config.toml", lambda f: f.write(config_lib.to_toml(cfg)))
        if not resume or args.allow_code_change:
            rundir.write_marker(work, started_config(cfg), finished=False, code=code, extends=extends)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("jaxfit: the run folder is ready")
        if not primary:  # the folder process 0 chose: a new run's staging folder, or out
            work = rundir.resume_dir(out) if resume else out / rundir.STAGING if rundir.read_marker(out / rundir.STAGING) else out
    with trackers.Trackers(cfg, work, resume, name=out.name) if cfg.logging.to else contextlib.nullcontext() as live:
        try:
            result = sweep.train_prepared(
                prepared,
                quiet=args.quiet,
                checkpoint_dir=work / "checkpoints",
                resume=resume,
                stop_after_chunks=args.stop_after_chunks,
                stop=stop,
                on_chunk=live.on_chunk if live else None,
            )
        except sweep.Interrupted as interrupted:
            print(f"{interrupted}; checkpoint saved. Continue with: python -m jaxfit.run --resume {out}", file=sys.stderr)
            return 128 + interrupted.signum
        if not result.finished:
            print(
                f"stopped after {result.timing['steps_run']:,} steps as asked; continue with: python -m jaxfit.run --resume {out}",
                file=sys.stderr,
            )
            return 0
        if not primary:
            return 0
        stop.finishing = True  # from here a signal waits for the files: the run is complete
        if extends is not None:  # the new seeds of the run in `out`: its files merged with theirs
            text = extend.write(work, out, cfg, extends, result)
            cfg = extend.whole(cfg)
        else:
            text = outputs.write_run(work, cfg, result)
        if live is not None:
            live.finish(work)
    rundir.write_marker(work, started_config(cfg), finished=True, code=code)
    if work != out:
        rundir.promote(out, work)
    print(text)
    print(f"wrote {out}/")
    if stop.requested:
        print(f"{signal.Signals(stop.requested).name} came as the run finished: it is complete, nothing to resume", file=sys.stderr)
    return 0


class TrainingFailed(Exception):
    """`train` did not finish a run; the message is the command line's one line saying why."""


class _Tee(io.StringIO):
    """Kept and passed on: stderr's lines, for the error `train` raises."""

    def __init__(self, stream: IO[str] | None):
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        if self.stream is not None:
            self.stream.write(text)
        return super().write(text)


def train(
    config: str | Path, *overrides: str | Sequence[str], out: Path | str | None = None, overwrite: bool = False, quiet: bool = True
) -> runs.Run:
    """Train a config (a built-in name or a .toml path) with `key=value` overrides (strings, or
    lists of them), as `python -m jaxfit.run --config CONFIG --set ... [--out OUT] [--overwrite]
    [--quiet]` does (default out: runs/<name>-<date-time>/), and open the finished run; its
    table is `Run.markdown`. A bad config raises ConfigError; any other failure TrainingFailed,
    with the command line's one line. quiet=False shows the progress lines."""
    sets = [o for group in overrides for o in ([group] if isinstance(group, str) else group)]
    cfg = config_lib.load(str(config), sets)  # a bad config raises here, as ConfigError
    out = out if out is not None else default_out(cfg.name)
    argv = ["--config", str(config), *(a for o in sets for a in ("--set", o)), "--out", str(out)]
    argv += ["--overwrite"] * overwrite + ["--quiet"] * quiet
    errors = _Tee(None if quiet else sys.stderr)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        code = main(argv)
    if code != 0:
        last = (errors.getvalue().strip().splitlines() or [f"python -m jaxfit.run exited with {code}"])[-1]
        raise TrainingFailed(last.removeprefix("error: "))
    return runs.Run(out)


if __name__ == "__main__":
    sys.exit(main())
