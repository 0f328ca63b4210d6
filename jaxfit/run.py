"""The command line: `python -m jaxfit.run --config NAME [--set key=value ...] [--out DIR]`,
and `python -m jaxfit.run --resume DIR` to continue a stopped run.

Every bad input (config name, key, type, range, output folder) ends with one line on stderr
naming what is wrong and what is allowed, exit code 2, before anything is written. A run writes
`DIR/config.toml` first and checkpoints under `DIR/checkpoints/` as it goes; Ctrl-C saves a
checkpoint and exits with 130.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path

from jaxfit import config as config_lib

RUN_FILES = ("config.toml", "summary.json", "summary.md", "history.npz", "params.npz")


class UsageError(Exception):
    """A bad command line; one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m jaxfit.run", description="Train every model of an experiment config in one jit-compiled call.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a name under configs/ (sumsq, stepfit, ...) or a path to a .toml file")
    source.add_argument("--resume", type=Path, metavar="DIR", help="continue the stopped run in DIR from its latest checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config value, e.g. train.epochs=2, sweep.n_seeds=3, groups.wide.optim.lr=[0.05,0.1] (repeatable)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<config name>-<date-time>/); must be new or empty")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out, replacing an earlier run's files")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    parser.add_argument("--stop-after-chunks", type=int, metavar="N", help=argparse.SUPPRESS)  # testing resume
    return parser.parse_args(argv)


def output_dir(requested: Path | None, name: str, overwrite: bool) -> Path:
    """The folder to write into: new, or empty, or (with --overwrite) holding an earlier run."""
    out = requested or Path("runs") / f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out}: folder is not empty; give a new or empty folder, --overwrite, or --resume {out}")
    return out


def resolve(args: argparse.Namespace) -> tuple[config_lib.Config, Path]:
    """The config and output folder the arguments ask for; raises on anything bad."""
    if args.resume is not None:
        if args.overrides or args.out or args.overwrite:
            raise UsageError("--resume DIR takes the run's own config.toml; no --set, --out or --overwrite")
        if not (args.resume / "config.toml").is_file() or not (args.resume / "checkpoints").is_dir():
            raise UsageError(f"--resume {args.resume}: no config.toml and checkpoints/ there to resume from")
        return config_lib.load(str(args.resume / "config.toml")), args.resume
    cfg = config_lib.load(args.config, args.overrides)
    if args.stop_after_chunks is not None and args.stop_after_chunks < 1:
        raise UsageError(f"--stop-after-chunks {args.stop_after_chunks}: must be >= 1")
    return cfg, output_dir(args.out, cfg.name, args.overwrite)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        cfg, out = resolve(args)
        if args.print_config:
            print(config_lib.to_toml(cfg), end="")
            return 0
    except (UsageError, config_lib.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from jaxfit import report, sweep  # jax is imported only once the input is known to be good

    if args.resume is None:
        out.mkdir(parents=True, exist_ok=True)
        if args.overwrite:  # only what a run writes, never anything else in the folder
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        report.atomic_write(out / "config.toml", lambda f: f.write(config_lib.to_toml(cfg)))
    try:
        result = sweep.run(cfg, quiet=args.quiet, checkpoint_dir=out / "checkpoints", resume=args.resume is not None,
                           stop_after_chunks=args.stop_after_chunks)
    except sweep.Interrupted as stop:
        print(f"{stop}; checkpoint saved. Continue with: python -m jaxfit.run --resume {out}", file=sys.stderr)
        return 130
    if not result.finished:
        print(f"stopped after {result.timing['steps_run']:,} steps as asked; continue with: python -m jaxfit.run --resume {out}",
              file=sys.stderr)
        return 0
    print(report.write_run(out, cfg, result))
    print(f"wrote {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
