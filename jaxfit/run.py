"""The command line: `python -m jaxfit.run --config NAME [--set key=value ...] [--out DIR]`.

Every bad input (config name, key, type, range, output folder) ends with one line on stderr
naming what is wrong and what is allowed, exit code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from jaxfit import config as config_lib


class UsageError(Exception):
    """A bad command line; one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m jaxfit.run", description="Train every model of an experiment config in one jit-compiled call.")
    parser.add_argument("--config", required=True, help="a name under configs/ (sumsq, stepfit, ...) or a path to a .toml file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config value, e.g. train.epochs=2, sweep.n_seeds=3, groups.wide.optim.lr=[0.05,0.1] (repeatable)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<config name>-<date-time>/); must be new or empty")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def output_dir(requested: Path | None, name: str) -> Path:
    """The folder to write into: new, or an existing empty folder."""
    out = requested or Path("runs") / f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out}: folder is not empty; give a new or empty folder")
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        cfg = config_lib.load(args.config, args.overrides)
        if args.print_config:
            print(config_lib.to_toml(cfg), end="")
            return 0
        out = output_dir(args.out, cfg.name)
    except (UsageError, config_lib.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from jaxfit import report, sweep  # jax is imported only once the input is known to be good

    out.mkdir(parents=True, exist_ok=True)
    result = sweep.run(cfg, quiet=args.quiet)
    print(report.write_run(out, cfg, result))
    print(f"wrote {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
