"""Experiment configuration: TOML files -> frozen dataclasses, `--set` overrides, validation.

A config file has run-wide tables (`task`, `train`, `sweep`), default tables for every group
(`model`, `optim`, `schedule`) and optional `[groups.NAME]` tables that override those defaults
for one group (a group is everything that shares one compiled shape). `task.name` picks the
experiment (a registered `experiment.Task`), whose dataclasses define the `task` and `model`
tables; a top-level `experiment` key imports one from outside the package first. Without `[groups]` the
run has one group, `main`. The resolved config (what `--print-config` prints and what a run
saves as `config.toml`) spells every group out in full and loads back to the same `Config`.

Every mistake a user can make is raised here as `ConfigError`, one line naming the key, the
value and what is allowed; the CLI turns it into exit code 2 before anything is written.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import re
import tomllib
import traceback
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tomli_w

from jaxfit import optim as optim_tables
from jaxfit.experiment import ExperimentError, Task, check_experiment, import_experiment, registry
from jaxfit.fields import ConfigError, Sweep, bounded, fail

__all__ = ["Config", "ConfigError", "Group", "Sweep", "bounded", "fail", "load"]  # the field helpers live in fields.py

# The built-in configs: package data in an installed package, configs/ in a checkout.
CONFIG_DIR = next(
    (d for d in (Path(__file__).resolve().parent / "configs", Path(__file__).resolve().parent.parent / "configs") if d.is_dir()),
    Path(__file__).resolve().parent / "configs",
)
DEFAULT_TABLES = ("model", "optim", "schedule")
FLOAT32_MAX = 3.4028234663852886e38
INT32_MAX = 2**31 - 1
SEED_MAX = 2**63 - 1  # jax.random.key takes a signed 64-bit seed
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a config or group name is also a folder name
NAME_RULE = "1-100 letters, digits, '.', '_' or '-', not starting with '.', '_' or '-'"


# ----------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Train:
    """How long and how: give `epochs` or `steps` (the task says how many steps make an epoch)."""

    epochs: int | None = bounded(None, gt=0)
    steps: int | None = bounded(None, gt=0)
    batch_size: int = bounded(100, gt=0)
    eval_every: int = bounded(1, gt=0)  # epochs between validations
    stop_at: float | None = bounded(None)  # a model stops once its monitored metric reaches this (val_loss <= it by default)
    eval_batch_size: int = bounded(10000, gt=0)  # eval sets are evaluated in chunks of this many samples
    history_points: int = bounded(200, gt=1)  # past 1,000 intervals: log-spaced steps kept in history.npz
    every_step: bool = False  # also keep every step's train loss, learning rate and gradient norm (steps.npz); changes no number


@dataclass(frozen=True)
class Execution:
    """How a run is driven from the host; none of it changes a result."""

    chunk_epochs: int | None = bounded(None, gt=0)  # epochs per compiled chunk; default ~1/100 of the run
    checkpoint_every: int = bounded(10, gt=0)  # chunks between checkpoints (one is also written at the end)
    keep_checkpoints: int = bounded(2, gt=0)


@dataclass(frozen=True)
class Logging:
    """Live trackers (jaxfit/trackers.py), written after every compiled chunk; none of it changes a result."""

    to: tuple[Literal["tensorboard", "wandb"], ...] = ()


@dataclass(frozen=True)
class SweepAxes:
    """Seeds: model k of a group uses seed index k % n_seeds; every key derives from it.
    `models`: train only these of the sweep's models (their indices in summary.json's models
    list, as `python -m jaxfit.replay` does); empty: all of them."""

    n_seeds: int = bounded(1, gt=0)
    models: tuple[int, ...] = ()


@dataclass(frozen=True)
class Group:
    name: str
    model: Any  # one of the task's `models` tables
    optim: Any  # one of optim.OPTIMISERS
    schedule: Any  # one of optim.SCHEDULES


@dataclass(frozen=True)
class Config:
    name: str
    seed: int
    task: Task  # the experiment: its [task] table, and what it trains
    train: Train
    sweep: SweepAxes
    groups: tuple[Group, ...]
    execution: Execution = Execution()
    experiment: str | None = None  # what was imported to register the task (a .py file's absolute path, or a module)
    logging: Logging = Logging()

    @property
    def steps_per_epoch(self) -> int:
        return self.task.steps_per_epoch(self.train.batch_size)

    @property
    def n_epochs(self) -> int:
        if self.train.epochs is not None:
            return self.train.epochs
        assert self.train.steps is not None  # epochs or steps: checked when the config is built
        return -(-self.train.steps // self.steps_per_epoch)

    @property
    def n_intervals(self) -> int:
        """Validations during training (one after every `eval_every` epochs, the last may be short)."""
        return -(-self.n_epochs // self.train.eval_every)


# ----------------------------------------------------------------------------- building


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_NO_MATCH = object()


def _union(hint: Any) -> tuple:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _scalar(option: Any, value: Any, key: str, limits: dict) -> Any:
    """`value` as one scalar type, checked against the field's limits, or _NO_MATCH."""
    if typing.get_origin(option) is Literal:
        return value if value in typing.get_args(option) else _NO_MATCH
    if isinstance(option, type) and dataclasses.is_dataclass(option):
        return _build(option, value, key) if isinstance(value, dict) else _NO_MATCH
    if option in (bool, str):
        return value if type(value) is option else _NO_MATCH
    if option is int:
        if not (isinstance(value, int) and not isinstance(value, bool)):
            return _NO_MATCH
        if value > INT32_MAX:  # counts and sizes are int32 inside jit
            raise fail(key, value, f"must be <= {INT32_MAX}")
    if option is float:
        if not _is_number(value):
            return _NO_MATCH
        value = float(value)
        if not abs(value) <= FLOAT32_MAX:  # also false for NaN
            raise fail(key, value, f"must be a finite number of magnitude <= {FLOAT32_MAX:.4g} (models compute in float32)")
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    checks = {"gt": lambda b: value > b, "ge": lambda b: value >= b, "lt": lambda b: value < b, "le": lambda b: value <= b}
    if not all(checks[name](bound) for name, bound in limits.items()):
        raise fail(key, value, "must be " + " and ".join(f"{symbols[n]} {b:g}" for n, b in limits.items()))
    return value


def _coerce(hint: Any, value: Any, key: str, limits: dict) -> Any:
    """Check `value` against a field's type hint and limits; return it in canonical form
    (lists become tuples; one value where a list is allowed becomes a 1-tuple only for
    list-only fields such as model.init)."""
    options = [o for o in _union(hint) if o is not type(None)]
    sequences = [o for o in options if typing.get_origin(o) is tuple]
    scalars = [o for o in options if typing.get_origin(o) is not tuple]
    if isinstance(value, list):
        if not sequences:
            raise fail(key, value, "a list is allowed only on sweep axes (numbers of optim and schedule, model.init)")
        if not value:
            raise fail(key, value, "an empty list has no models; give at least one value")
        item = typing.get_args(sequences[0])[0]
        return tuple(_coerce(item, v, key, limits) for v in value)
    for option in scalars:
        result = _scalar(option, value, key, limits)
        if result is not _NO_MATCH:
            return result
    if sequences:
        return (_coerce(typing.get_args(sequences[0])[0], value, key, limits),)
    raise fail(key, value, f"expected {_describe(hint)}")


def _describe(hint: Any) -> str:
    """A type hint in words, for error messages."""
    words = []
    for option in _union(hint):
        if option is type(None):
            continue
        if typing.get_origin(option) is Literal:
            words.append("one of " + ", ".join(repr(a) for a in typing.get_args(option)))
        elif typing.get_origin(option) is tuple:
            words.append(f"a list of {_describe(typing.get_args(option)[0])}")
        elif dataclasses.is_dataclass(option):
            words.append("a table")
        else:
            words.append({int: "an integer", float: "a number", bool: "true or false", str: "a string"}[option])
    return " or ".join(words)


def _build(cls: type, raw: Any, path: str) -> Any:
    """Make dataclass `cls` from a TOML table, checking every key, type and limit."""
    if not isinstance(raw, dict):
        raise fail(path, raw, "expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            kind = f" of {path.rsplit('.', 1)[-1]} {raw['name']!r}" if "name" in fields and "name" in raw else ""
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if path.startswith("groups.") and kind and not close:
                table = path.split(".", 2)[2]
                hint = (
                    f"; this group's {table} is {raw['name']!r}, and a --set {table}.{key} reaches every group: "
                    f"set it per group with --set groups.NAME.{table}.{key}=..."
                )
            raise fail(f"{path}.{key}", raw[key], f"unknown key{kind}; allowed here: {', '.join(fields)}{hint}")
    values = {}
    for name, value in raw.items():
        if value == [] and fields[name].default == ():  # a list that may be empty (logging.to): nothing
            values[name] = ()
            continue
        values[name] = _coerce(hints[name], value, f"{path}.{name}", dict(fields[name].metadata))
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in values]
    if missing:
        raise fail(f"{path}.{missing[0]}", None, "missing; this key is required")
    return cls(**values)


def _build_kind(kinds: tuple[Any, ...], raw: Any, path: str, whose: str = "") -> Any:
    """Build a task/model/optim/schedule table, choosing its dataclass from `kinds` by `name`."""
    by_name = {cls.__dataclass_fields__["name"].default: cls for cls in kinds}
    if not isinstance(raw, dict):
        raise fail(path, raw, "expected a table")
    name = raw.get("name")
    if name not in by_name:
        raise fail(f"{path}.name", name, f"must be one of {', '.join(repr(k) for k in by_name)}{whose}")
    return _build(by_name[name], raw, path)


def _merge(defaults: dict, override: dict) -> dict:
    """A group's table over the default one; a different `name` replaces the table whole."""
    if "name" in override and override["name"] != defaults.get("name"):
        return copy.deepcopy(override)
    merged = copy.deepcopy(defaults)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_run(cfg: Config, given: frozenset[str] = frozenset()) -> None:
    """Checks that need more than one key (the engine's, then the experiment's own)."""
    train = cfg.train
    steps = cfg.task.steps_per_epoch(train.batch_size)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ExperimentError(
            f"experiment {type(cfg.task).__name__}: steps_per_epoch({train.batch_size}) returned {steps!r}; expected an int >= 1"
        )
    if (train.epochs is None) == (train.steps is None):
        raise fail("train.epochs", train.epochs, f"give exactly one of train.epochs and train.steps (train.steps = {train.steps!r})")
    if train.steps is not None and train.steps % cfg.steps_per_epoch:
        raise fail("train.steps", train.steps, f"must be a whole number of epochs ({cfg.steps_per_epoch} steps each); or set train.epochs")
    if not cfg.groups:
        raise fail("groups", {}, "at least one group is needed")
    for group in cfg.groups:
        if len(set(group.model.init)) != len(group.model.init):
            raise fail(f"groups.{group.name}.model.init", list(group.model.init), "each init scheme at most once")
        if hasattr(group.optim, "check"):
            group.optim.check(f"groups.{group.name}.optim")
        _check_numbers(group, cfg.steps_per_epoch, given)
    _check_copies(cfg.groups)
    _check_models(cfg)
    cfg.task.check(cfg)


def group_sizes(cfg: Config) -> list[int]:
    """How many models each group of the whole sweep has (seeds x init schemes x swept values),
    `sweep.models` aside."""
    sizes = []
    for group in cfg.groups:
        swept = [v for v in optim_tables.hyperparameters(group).values() if isinstance(v, tuple)]
        sizes.append(cfg.sweep.n_seeds * len(group.model.init) * int(np.prod([len(v) for v in swept])))
    return sizes


def _check_models(cfg: Config) -> None:
    """`sweep.models`: indices of the whole sweep's models, each at most once."""
    picked, total = cfg.sweep.models, sum(group_sizes(cfg))
    bad = [i for i in picked if not 0 <= i < total]
    if bad:
        raise fail("sweep.models", list(picked), f"{bad[0]} is not a model of this sweep: its {total} models are 0 to {total - 1}")
    if len(set(picked)) != len(picked):
        raise fail("sweep.models", list(picked), "each model at most once")


def _check_numbers(group: Group, steps_per_epoch: int, given: frozenset[str]) -> None:
    """Every sweep axis of a group without repeated values (as float32, what models compute in: a
    repeat trains copies that the statistics would count as seeds), and no value the group cannot
    read: swept (its cells would be identical models), or set for it on the command line (it
    would do nothing). A single value a file gives is taken: a config's [optim] table serves
    groups of several schedules, and a run's own config.toml spells every value out."""
    numbers = optim_tables.hyperparameters(group)
    for key, value in numbers.items():
        if isinstance(value, tuple):
            rounded = [float(np.float32(v)) for v in value]
            twice = next(((value[rounded.index(r)], value[i]) for i, r in enumerate(rounded) if r in rounded[:i]), None)
            if twice is not None:
                same = f"{twice[0]!r} is given twice" if twice[0] == twice[1] else f"{twice[0]!r} and {twice[1]!r} are one float32"
                raise fail(
                    f"groups.{group.name}.{key}",
                    list(value),
                    f"{same} (models compute in float32): each value of a sweep axis at most once, or its models' copies would be "
                    "counted as seeds",
                )
    unread = optim_tables.unread(group, steps_per_epoch)
    read = ", ".join(k for k in numbers if k not in unread) or "none of them"
    for key in unread:
        table, name = key.split(".")
        value = getattr(getattr(group, table), name)
        default = next(f.default for f in dataclasses.fields(getattr(group, table)) if f.name == name)
        if isinstance(value, tuple) or ({key, f"groups.{group.name}.{key}"} & given and value != default):
            what = "sweep" if isinstance(value, tuple) else "set"
            raise fail(
                f"groups.{group.name}.{key}",
                list(value) if isinstance(value, tuple) else value,
                f"cannot change any model of group {group.name!r}: its optim {group.optim.name!r} and schedule "
                f"{group.schedule.name!r} never read it (they read {read}); {what} it only for the groups that read it "
                f"(--set groups.NAME.{key}=...), or leave it out",
            )


def _cells(group: Group) -> list[tuple[str, str]]:
    """A group's cells (init scheme x swept numbers), each as the text of its resolved tables
    with numbers rounded to float32: two equal texts train the same models."""

    def text(table: Any, chosen: dict) -> str:
        values = {f.name: chosen.get(f.name, getattr(table, f.name)) for f in dataclasses.fields(table)}
        return repr({k: float(np.float32(v)) if isinstance(v, float) else v for k, v in values.items()})

    swept = {k: v for k, v in optim_tables.hyperparameters(group).items() if isinstance(v, tuple)}
    out = []
    for init in group.model.init:
        for values in itertools.product(*swept.values()):
            chosen = dict(zip(swept, values))
            tables = [
                text(dataclasses.replace(group.model, init=(init,)), {}),
                *(
                    text(getattr(group, t), {k.split(".")[1]: v for k, v in chosen.items() if k.startswith(t + ".")})
                    for t in ("optim", "schedule")
                ),
            ]
            label = ", ".join([f"init {init!r}", *(f"{k}={v:g}" for k, v in chosen.items())])
            out.append((" | ".join(tables), label))
    return out


def _check_copies(groups: Sequence[Group]) -> None:
    """No two groups with a cell in common: their models would be copies counted as distinct."""
    seen: dict[str, str] = {}
    for group in groups:
        for text, label in _cells(group):
            if text in seen and seen[text] != group.name:
                raise fail(
                    f"groups.{group.name}",
                    label,
                    f"these models are the same as those of group {seen[text]!r} (same model, optim and schedule): copies would be counted "
                    "as distinct models; give each group settings of its own, or drop one",
                )
            seen[text] = group.name


def _import_experiment(spec: Any, base: Path) -> str:
    """Import the module the config's top-level `experiment` key names (see experiment.py)."""
    if not isinstance(spec, str) or not spec:
        raise fail("experiment", spec, "expected a .py file (relative to the config) or a module name that registers the experiment")
    try:
        return import_experiment(spec, base)
    except ExperimentError:
        raise
    except Exception as error:  # noqa: BLE001 -- any failure of the user's module is reported in one line
        message = (str(error).strip().splitlines() or [""])[0][:300]
        problem = fail("experiment", spec, f"cannot be imported ({type(error).__name__}: {message})")
        problem.detail = authors_traceback(error)
        raise problem from None


def authors_traceback(error: BaseException) -> str:
    """The part of an error's traceback in an experiment's own code (not importlib's, not jaxfit's)."""
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if "importlib" not in f.filename and "/jaxfit/" not in f.filename.replace("\\", "/") and not f.filename.startswith("<")
    ]
    if not frames:
        return ""
    return "Traceback (the experiment's code):\n" + "".join(traceback.format_list(frames)) + f"{type(error).__name__}: {error}\n"


def from_dict(raw: dict, name: str, base: Path | None = None, given: frozenset[str] = frozenset()) -> Config:
    """Build and validate a `Config` from a parsed TOML document; `base` is the folder that a
    relative `experiment` file is found in (the config file's); `given`: the keys a command line
    set (`given_keys`), which must each change some model of every group they reach."""
    raw = copy.deepcopy(raw)
    known = {"name", "seed", "experiment", "task", "train", "sweep", "execution", "logging", "groups", *DEFAULT_TABLES}
    for key in raw:
        if key not in known:
            raise fail(key, raw[key], f"unknown key; allowed at top level: {', '.join(sorted(known))}")
    run_name = raw.get("name", name)
    if not isinstance(run_name, str) or not NAME_PATTERN.fullmatch(run_name):
        raise fail("name", run_name, f"expected {NAME_RULE} (it names the output folder)")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise fail("seed", seed, f"expected an integer from 0 to {SEED_MAX} (2^63 - 1)")
    experiment = _import_experiment(raw["experiment"], base or Path.cwd()) if "experiment" in raw else None
    task = _build_kind(tuple(registry().values()), raw.get("task", {}), "task")
    check_experiment(type(task))
    train = _build(Train, raw.get("train", {}), "train")
    sweep = _build(SweepAxes, raw.get("sweep", {}), "sweep")
    group_tables = raw.get("groups", {"main": {}})
    if not isinstance(group_tables, dict):
        raise fail("groups", group_tables, "expected a table of [groups.NAME] tables")
    defaults = {t: raw.get(t, {}) for t in DEFAULT_TABLES}
    for table, value in defaults.items():
        if not isinstance(value, dict):
            raise fail(table, value, "expected a table")
    groups = []
    for group_name, table in group_tables.items():
        path = f"groups.{group_name}"
        if not isinstance(table, dict):
            raise fail(path, table, "expected a table")
        if not NAME_PATTERN.fullmatch(str(group_name)):
            raise fail(path, table, f"a group name is {NAME_RULE}")
        for key in table:
            if key not in DEFAULT_TABLES:
                raise fail(f"{path}.{key}", table[key], f"unknown key; allowed here: {', '.join(DEFAULT_TABLES)}")
            if not isinstance(table[key], dict):
                raise fail(f"{path}.{key}", table[key], "expected a table")
        model = _build_kind(
            task.models, _merge(defaults["model"], table.get("model", {})), f"{path}.model", f" (the models of task {task.name!r})"
        )
        optim = _build_kind(tuple(optim_tables.OPTIMISERS.values()), _merge(defaults["optim"], table.get("optim", {})), f"{path}.optim")
        schedule = _build_kind(
            optim_tables.SCHEDULES, _merge(defaults["schedule"] or {"name": "constant"}, table.get("schedule", {})), f"{path}.schedule"
        )
        groups.append(Group(group_name, model, optim, schedule))
    execution = _build(Execution, raw.get("execution", {}), "execution")
    logging = _build(Logging, raw.get("logging", {}), "logging")
    cfg = Config(run_name, seed, task, train, sweep, tuple(groups), execution, experiment, logging)
    _check_run(cfg, given)
    return cfg


# ----------------------------------------------------------------------------- files and overrides


def find(name_or_path: str) -> Path:
    """A path to a TOML file (any suffix), or a config NAME: configs/NAME.toml under the working
    directory, else a built-in one (CONFIG_DIR)."""
    path = Path(name_or_path)
    if path.is_dir():
        raise fail("--config", name_or_path, "is a folder; give a config name or a TOML file (a run's own: DIR/config.toml)")
    if path.is_file():
        return path
    if path.suffix == ".toml" or len(path.parts) > 1:
        raise fail("--config", name_or_path, "no such file")
    for folder in (Path.cwd() / "configs", CONFIG_DIR):
        if (folder / f"{name_or_path}.toml").is_file():
            return folder / f"{name_or_path}.toml"
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    raise fail("--config", name_or_path, f"no such config; known: {', '.join(known)} (or a path to a TOML file)")


def parse_value(text: str) -> Any:
    """A `--set` value as TOML (numbers, true/false, [lists], "strings"); else a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides. A default table's key (`model.*`, `optim.*`,
    `schedule.*`) is set for every group too, so it wins over what a group said."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise fail("--set", item, "expected key.sub=value")
        parts = key.strip().split(".")
        value = parse_value(text.strip())
        if parts[0] == "groups" and len(parts) >= 2:
            known = list(raw["groups"]) if isinstance(raw.get("groups"), dict) else ["main"]
            if parts[1] not in known:
                raise fail(
                    key, text, f"no group {parts[1]!r} in this config; its groups: {', '.join(known)} (new groups go in the config file)"
                )
        targets = [raw]
        if parts[0] in DEFAULT_TABLES and isinstance(raw.get("groups"), dict):
            targets += [g for g in raw["groups"].values() if isinstance(g, dict)]
        for target in targets:
            table = target
            for part in parts[:-1]:
                table = table.setdefault(part, {})
                if not isinstance(table, dict):
                    raise fail(key, text, f"'{part}' is not a table")
            table[parts[-1]] = copy.deepcopy(value)
    return raw


def given_keys(overrides: Sequence[str]) -> frozenset[str]:
    """Every key that `--set` overrides name, a table's keys spelt out (`schedule={gamma=0.5}`
    gives `schedule.gamma`)."""

    def paths(key: str, value: Any) -> list[str]:
        return [p for k, v in value.items() for p in paths(f"{key}.{k}", v)] if isinstance(value, dict) else [key]

    keys = []
    for item in overrides:
        key, _, text = item.partition("=")
        keys += paths(key.strip(), parse_value(text.strip()))
    return frozenset(keys)


def load(name_or_path: str, overrides: Sequence[str] = ()) -> Config:
    """Find, parse, override and validate a config."""
    path = find(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark some editors write is no TOML error
    except tomllib.TOMLDecodeError as error:
        raise fail("--config", str(path), f"not valid TOML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise fail("--config", str(path), f"cannot be read ({error})") from None
    default_name = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip("._-") or "run"
    return from_dict(apply_overrides(raw, list(overrides)), default_name, path.parent, given_keys(overrides))


def to_dict(cfg: Config) -> dict:
    """The resolved config as a TOML-ready dict (every group in full, no None values)."""

    def clean(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value) if getattr(value, f.name) is not None}
        if isinstance(value, tuple):
            return [clean(v) for v in value]
        return value

    groups = {g.name: {t: clean(getattr(g, t)) for t in DEFAULT_TABLES} for g in cfg.groups}
    head = {"name": cfg.name, "seed": cfg.seed} | ({"experiment": cfg.experiment} if cfg.experiment else {})
    return {
        **head,
        "task": clean(cfg.task),
        "train": clean(cfg.train),
        "sweep": clean(cfg.sweep),
        "execution": clean(cfg.execution),
        "groups": groups,
    } | ({"logging": clean(cfg.logging)} if cfg.logging.to else {})


def to_toml(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))
