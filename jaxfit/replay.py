"""Replay one model of a run alone:

    python -m jaxfit.replay RUN_DIR --model I [--out DIR] [--every-step] [--quiet]

trains model I (its index in RUN_DIR/summary.json's models list, 0-based) of a finished or
interrupted run by itself, from the run's own config.toml, into a run folder of one model
(default: runs/<name>-model-I-<date-time>/). A model's numbers do not depend on the models
beside it, so its summary entry, params.npz and history.npz rows equal the original's bit for
bit: this is how to look closely at the one seed that got stuck. `--every-step` also writes
steps.npz: every step's train-mode loss, learning rate and gradient norm (`train.every_step`),
the trajectory unchanged. It is `jaxfit.run` with `--set sweep.models=[I]`; a replay of a
replay names the same model."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from jaxfit import config as config_lib
from jaxfit import run, rundir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = run.Parser(prog="python -m jaxfit.replay", description="Train one model of a run alone.")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run's folder (finished or interrupted)")
    parser.add_argument("--model", type=int, required=True, metavar="I", help="the model's index in summary.json's models list")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<name>-model-I-<date-time>/); must be new or empty")
    parser.add_argument("--every-step", action="store_true", help="also write every step's train loss, lr and gradient norm (steps.npz)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def command(args: argparse.Namespace) -> list[str]:
    """The `jaxfit.run` arguments that train model `args.model` of `args.run_dir` alone."""
    work = rundir.resume_dir(args.run_dir)
    saved = work / "config.toml"
    if not saved.is_file():
        raise run.UsageError(f"{args.run_dir}: no config.toml there; give a run's folder")
    cfg = config_lib.load(str(saved))
    picked = cfg.sweep.models or tuple(range(sum(config_lib.group_sizes(cfg))))
    if not 0 <= args.model < len(picked):
        raise run.UsageError(f"--model {args.model}: {args.run_dir} has {len(picked)} models, 0 to {len(picked) - 1}")
    if args.out is not None and args.out.resolve().is_relative_to(args.run_dir.resolve()):
        raise run.UsageError(f"--out {args.out}: inside the run being replayed ({args.run_dir}); give a folder outside it")
    if args.out is not None and args.out.is_dir() and not rundir.is_empty(args.out):
        raise run.UsageError(f"--out {args.out}: folder is not empty; give a new or empty folder")
    out = args.out or Path("runs") / f"{cfg.name}-model-{args.model}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    argv = ["--config", str(saved), "--set", f"sweep.models=[{picked[args.model]}]", "--out", str(out)]
    return argv + (["--set", "train.every_step=true"] if args.every_step else []) + (["--quiet"] if args.quiet else [])


def main(argv: list[str] | None = None) -> int:
    try:
        argv = command(parse_args(argv))
    except (run.UsageError, config_lib.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run.main(argv)


if __name__ == "__main__":
    sys.exit(main())
