"""The experiment interface: what an experiment tells the engine, and the registry of experiments.

An experiment is a `Task` subclass, registered with `@register`: a frozen dataclass whose fields
are its `[task]` config table (its `name` field's default is the experiment's name, what a
config's `task.name` picks) and whose methods say what it trains. It must give

    models                      the model tables it accepts (dataclasses with `name` and
                                `init: tuple[Literal[scheme, ...], ...]`)
    input_shape()               one sample's input shape
    data() or data(model)       its fixed arrays (host numpy, any pytree); a dict whose "eval"
                                entry maps each eval set's name to plain (x, y) arrays. With a
                                `model` argument, called once per model table: each group
                                then has data of its own (e.g. a teacher per group)
    sampler(model, batch_size)  bound once per model table: (data, key, step) -> (x, y), the
                                batch a model trains on at a step (traced inside jit)
    module(model)               the Flax module of a model table, linen or NNX, called as
                                module(x, train=...)

and may override the defaults: `loss` (MSE of a batch), `metrics` (per sample, averaged over
each eval set as `SET_NAME`; default `loss`, the squared error, so `val_loss` is MSE),
`monitor`/`goal` (`val_loss`, lower is better: what `train.stop_at` and the best parameters
look at), `init_params` (PyTorch's init schemes), `steps_per_epoch` (1), `epoch_order` (what
every step of an epoch shares, e.g. a shuffle; the sampler's function then takes it as a fourth
argument), `check` (cross-key checks), `evaluate` (a whole evaluation of one's own),
`val_bound`/`full_batch_loss` (closed forms), `plots` (the common loss curves), `host_bytes`.

What a class declares is checked when it is chosen (`check_experiment`), what its methods return
before anything trains (checks.py); each mistake is one line naming the class. The engine never
names an experiment: it calls these methods. Built-in experiments live in `jaxfit/experiments/`;
one from outside the package is imported by the config's top-level `experiment` key (a .py file
beside the config, which may import modules beside it, or an importable module name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import _version, inits
from jaxfit.inits import Params
from jaxfit.kernels import fixed_order_sum, scan

if TYPE_CHECKING:
    import flax.linen as nn

    from jaxfit.config import Config


class ExperimentError(ValueError):
    """An experiment that cannot run as written (its class settings, its file): one line naming
    the experiment class, what it says and what is expected; the CLI exits 2 before writing."""


class EvalSet(NamedTuple):
    """Inputs and targets padded to whole chunks of `chunk`; `weight` is 0 on the padding."""

    x: Any  # [n_chunks, chunk, *input_shape]: host numpy, or a jax.Array once on a device
    y: Any  # [n_chunks, chunk, *target_shape]
    weight: Any  # [n_chunks, chunk]


def make_eval_set(x: np.ndarray, y: np.ndarray, chunk: int) -> EvalSet:
    """An eval set of samples x [n, ...], y [n, ...], evaluated `chunk` samples at a time."""
    chunk = min(chunk, len(x))
    n_chunks = -(-len(x) // chunk)
    pad = n_chunks * chunk - len(x)
    weight = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    return EvalSet(x.reshape(n_chunks, chunk, *x.shape[1:]), y.reshape(n_chunks, chunk, *y.shape[1:]), weight.reshape(n_chunks, chunk))


def mean_over(eval_set: EvalSet, per_sample: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """The mean of `per_sample(x, y)` ([chunk] values) over an eval set, one chunk at a time, in
    an order fixed by the shapes (a model's numbers never depend on its neighbours)."""

    def chunk(total, xs):
        x, y, weight = xs
        return total + fixed_order_sum(weight * per_sample(x, y)), None

    total = scan(chunk, jnp.float32(0), (eval_set.x, eval_set.y, eval_set.weight))
    return total / fixed_order_sum(eval_set.weight.reshape(-1))  # a count: exact in float32


def means_over(eval_set: EvalSet, per_sample: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]) -> dict[str, jax.Array]:
    """`mean_over` for each of several per-sample metrics (one pass over the chunks each: XLA
    keeps each pass's arithmetic as a single metric's, so a metric's bits do not depend on which
    others are computed beside it)."""
    names = jax.eval_shape(per_sample, eval_set.x[0], eval_set.y[0])

    def one(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
        return lambda x, y: per_sample(x, y)[name]

    return {k: mean_over(eval_set, one(k)) for k in names}


def uses_epoch_order(task: Any) -> bool:
    """Whether an experiment shares something between the steps of an epoch (`epoch_order`): its
    sampler's function then takes it as a fourth argument."""
    return type(task).epoch_order is not Task.epoch_order


def data_per_model(task: Any) -> bool:
    """Whether an experiment's `data` takes the model table (data per group) or nothing."""
    return len(inspect.signature(type(task).data).parameters) > 1


def run_data(task: Any, model: Any, eval_chunk: int) -> Any:
    """The fixed arrays a model of table `model` trains on, as the engine passes them into
    jit: `data(model)` (or `data()`) `chunked`."""
    return chunked(task.data(model) if data_per_model(task) else task.data(), eval_chunk)


def chunked(data: Any, eval_chunk: int) -> Any:
    """`data()` as the engine passes it into jit: each eval set of its "eval" entry cut into
    chunks of `eval_chunk` samples (`make_eval_set`); anything else as it is."""
    if (
        isinstance(data, dict)
        and isinstance(data.get("eval"), dict)
        and all(isinstance(v, tuple) and len(v) == 2 for v in data["eval"].values())
    ):
        data = {**data, "eval": {name: make_eval_set(np.asarray(x), np.asarray(y), eval_chunk) for name, (x, y) in data["eval"].items()}}
    return data


def mse(module: Any, params: Params, eval_set: EvalSet) -> jax.Array:
    """Eval-mode mean squared error over an eval set (targets [chunk, outputs])."""
    return mean_over(eval_set, lambda x, y: fixed_order_sum((module.apply({"params": params}, x, train=False) - y) ** 2))


class NNXModule:
    """A Flax NNX module where the engine calls a linen one (`init`, `apply`), by Flax's split and
    merge: the module is split once into its graph, its parameters (`nnx.Param`, as a plain
    dict: what is trained, vmapped and saved) and the rest (e.g. a Dropout's RNG state); `apply`
    merges a fresh copy inside the trace, reseeds every RNG stream with the step's dropout key,
    and calls it as `module(x, train=...)`."""

    def __init__(self, module: Any):
        from flax import nnx

        self.module = module
        parts: Any = nnx.split(module, nnx.Param, ...)
        self.graph, self.params, self.rest = parts
        keys = jax.tree.leaves(self.rest, is_leaf=lambda v: isinstance(v, nnx.RngKey))
        self.streams = sorted({v.tag for v in keys if isinstance(v, nnx.RngKey)})

    def init(self, key: jax.Array, x: jax.Array, train: bool = False) -> dict:
        from flax import nnx

        return {"params": nnx.to_pure_dict(self.params)}

    def apply(self, variables: dict, x: jax.Array, train: bool, rngs: dict | None = None) -> jax.Array:
        from flax import nnx

        params = jax.tree.map(lambda a: a, self.params)  # new Variables, made inside the current trace
        nnx.replace_by_pure_dict(params, variables["params"])
        module = nnx.merge(self.graph, params, jax.tree.map(lambda a: a, self.rest))
        if rngs and self.streams:
            keys: dict[str, Any] = {stream: rngs.get("dropout") for stream in self.streams}
            nnx.reseed(module, **keys)
        return module(x, train=train)

    @property
    def call_signature(self) -> inspect.Signature:
        return inspect.signature(type(self.module).__call__)


def module_of(task: Task, model: Any) -> Any:
    """`task.module(model)` as the engine calls it: a linen module as it is, an NNX module
    wrapped (`NNXModule`)."""
    module = task.module(model)
    from flax import nnx

    return NNXModule(module) if isinstance(module, nnx.Module) else module


def template(module: nn.Module, input_shape: tuple[int, ...]) -> Params:
    """A parameter tree of the right shapes (values are overwritten by an init scheme)."""
    x = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))["params"]


@dataclass(frozen=True)
class Task:
    """Base of every experiment; see the module docstring. Subclasses are frozen dataclasses
    whose fields (with `config.bounded` limits) are the `[task]` table."""

    models: ClassVar[tuple[type, ...]] = ()
    monitor: ClassVar[str] = "val_loss"  # the metric of `evaluate` that stopping and "best" look at
    goal: ClassVar[str] = "min"  # "min": lower is better (stop when <= train.stop_at); "max": higher

    def check(self, cfg: Config) -> None:
        """Checks that need more than one key; raise `config.fail(key, value, allowed)`."""

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimiser steps in one epoch (an epoch is what `train.epochs` and `eval_every` count)."""
        return 1

    def host_bytes(self) -> int:
        """Host memory the fixed arrays take while they are made (checked before a run starts)."""
        return 0

    def input_shape(self) -> tuple[int, ...]:
        raise NotImplementedError(f"{type(self).__name__}.input_shape")

    def data(self) -> Any:
        """The fixed arrays of a run (host numpy), any pytree: a dict whose "eval" entry maps
        each eval set's name to its plain arrays `(x, y)`, which the engine cuts into chunks of
        train.eval_batch_size samples. Define it as `data(self, model)` for data that depend on
        the model table: it is then called once per table, and each group trains and is
        evaluated on its own (a teacher per group, an eval set per input size)."""
        raise NotImplementedError(f"{type(self).__name__}.data")

    def sampler(self, model: Any, batch_size: int) -> Callable[..., tuple[jax.Array, jax.Array]]:
        """The function `(data, key, step) -> (x [batch_size, *input_shape], y)` that a model of
        table `model` trains on at global step `step` (traced inside jit; `key` is the model's data
        key, drawn from its seed index alone: models of one seed index see the same batches).
        Bound once per model table, as optax binds a transformation's hyperparameters."""
        raise NotImplementedError(f"{type(self).__name__}.sampler")

    def metrics(self, pred: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        """Eval-mode metrics per sample ([chunk] each); the engine averages each over every eval
        set S of data()["eval"] as `S_NAME`. Default: `loss`, the squared error summed over
        outputs (so `val_loss` is MSE on eval set "val")."""
        return {"loss": fixed_order_sum(((pred - y) ** 2).reshape(pred.shape[0], -1))}

    def epoch_order(self, data: Any, key: jax.Array, epoch: jax.Array) -> Any:
        """Optional: what every step of an epoch shares (e.g. a permutation of the training set),
        computed once an epoch; the sampler's function then takes it as a fourth argument,
        `(data, key, step, order)`."""
        return None

    def module(self, model: Any) -> nn.Module:
        """The Flax module of a model table; called as `apply({'params': p}, x, train=...)` with
        rngs {'dropout': key} in training."""
        raise NotImplementedError(f"{type(self).__name__}.module")

    def init_params(self, model: Any, shapes: Params, scheme: str, key: jax.Array) -> Params:
        """Parameters of init scheme `scheme` (one of `model.init`); `shapes` is a zero tree."""
        return inits.SCHEMES[scheme](shapes, key)

    def loss(self, pred: jax.Array, y: jax.Array) -> jax.Array:
        """The training loss of a batch: MSE (torch's nn.MSELoss, mean over every element)."""
        return fixed_order_sum(((pred - y) ** 2).reshape(-1)) / y.size

    def full_batch_loss(self, model: Any) -> Callable[[Params], jax.Array] | None:
        """Optional speed device for full-batch training: params -> the training loss of the one
        fixed batch a model of table `model` trains on every step, in closed form (its gradient is
        the batch's gradient). None (the default): the loss is computed from the batch."""
        return None

    def evaluate(self, module: Any, params: Params, data: Any) -> dict[str, jax.Array]:
        """Eval-mode metrics (scalars) after every interval: each of `metrics` averaged over
        every eval set (`val_loss`, `val_accuracy`, ...)."""
        return {
            f"{name}_{metric}": value
            for name, eval_set in data["eval"].items()
            for metric, value in means_over(
                eval_set, lambda x, y: self.metrics(module.apply({"params": params}, x, train=False), y)
            ).items()
        }

    def val_bound(self, model: Any, eval_chunk: int) -> Callable[[Params], tuple[jax.Array, jax.Array]] | None:
        """Optional fast filter: params -> (monitored metric in closed form, margin) with
        |closed form - evaluate's value| <= margin. The engine then evaluates directly only where
        the value could decide a stop or is logged, and ranks best parameters by the closed form."""
        return None

    def plots(self, out: Path, cfg: Config, summary: dict, history: dict, params: Any) -> None:
        """The experiment's own PNG figures of a finished run, into `out`, from its files (see
        report.py; jaxfit.plots has helpers); the engine draws the common ones (loss curves,
        every cell, the fraction reached by step) beside them. Default: none."""


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: file an experiment under its `name` field's default. Registering the
    same class again (a module imported twice, a notebook cell run again) replaces it."""
    name: str = cls.__dataclass_fields__["name"].default  # type: ignore[assignment]  # a str default (checked at load)
    previous = _REGISTRY.get(name)
    if previous is not None and (previous.__module__, previous.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"experiment {name!r} is already registered by {previous.__module__}.{previous.__qualname__}")
    _REGISTRY[name] = cls
    return cls


GOALS = ("min", "max")
REQUIRED = ("input_shape", "data", "sampler", "module")  # what every experiment must define


def model_schemes(table: type) -> tuple[str, ...]:
    """The init schemes a model table allows (the Literal values of its `init` field)."""
    hint = typing.get_type_hints(table).get("init")
    item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple and typing.get_args(hint) else None
    return typing.get_args(item) if typing.get_origin(item) is Literal else ()


def check_experiment(cls: type[Task]) -> None:
    """The settings an experiment class declares, checked when it is chosen: `goal`, `monitor`,
    its model tables (dataclasses with a `name` default and an `init` field listing its schemes),
    the schemes an init-less `init_params` has code for, and the methods it must define.
    Raises ExperimentError (one line) on the first mistake."""
    where = f"experiment {cls.__name__} (task.name = {cls.__dataclass_fields__['name'].default!r})"
    if not isinstance(cls.goal, str) or cls.goal not in GOALS:
        raise ExperimentError(f"{where}: goal = {cls.goal!r}: must be 'min' (lower is better) or 'max' (higher is better)")
    if not isinstance(cls.monitor, str) or not cls.monitor:
        raise ExperimentError(f"{where}: monitor = {cls.monitor!r}: must name one of evaluate's metrics, e.g. 'val_loss'")
    missing = [m for m in REQUIRED if getattr(cls, m) is getattr(Task, m)]
    if missing:
        what = {"sampler": "sampler(model, batch_size), which returns the (data, key, step) -> (x, y) a model trains on"}
        raise ExperimentError(
            f"{where}: defines no {what.get(missing[0], missing[0] + '()')}; an experiment must define {', '.join(REQUIRED)}"
        )
    if not isinstance(cls.models, tuple | list) or not cls.models:
        raise ExperimentError(
            f"{where}: models = {cls.models!r}: must be a tuple of at least one model table "
            "(a frozen dataclass with `name` and `init` fields)"
        )
    names = []
    for table in cls.models:
        fields = {f.name: f for f in dataclasses.fields(table)} if dataclasses.is_dataclass(table) and isinstance(table, type) else {}
        if not isinstance(fields.get("name") and fields["name"].default, str) or "init" not in fields:
            raise ExperimentError(
                f"{where}: model table {getattr(table, '__name__', table)!r} must be a dataclass with a `name` "
                "field (its default names the table) and an `init` field (a tuple of Literal init schemes)"
            )
        schemes = model_schemes(table)
        if not schemes:
            raise ExperimentError(
                f"{where}: model table {table.__name__}.init must be typed tuple[Literal['scheme', ...], ...] (the init schemes it allows)"
            )
        if cls.init_params is Task.init_params:  # the default knows PyTorch's schemes only
            unknown = [s for s in schemes if s not in inits.SCHEMES]
            if unknown:
                raise ExperimentError(
                    f"{where}: model table {table.__name__} allows init {unknown[0]!r}, but no code provides it: "
                    f"the known schemes are {', '.join(inits.SCHEMES)}; or define {cls.__name__}.init_params"
                )
        names.append(fields["name"].default)
    if len(set(names)) != len(names):
        raise ExperimentError(f"{where}: two model tables are named {max(names, key=names.count)!r}; each needs its own name")


def code_of(cls: type) -> dict:
    """What ran: jaxfit's version and the sha256 of the source file that defines experiment
    `cls` (a resumed run must match it)."""
    try:
        path = Path(inspect.getsourcefile(cls) or "")
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except (OSError, TypeError):  # defined where no file holds it (an interactive session)
        path, digest = None, None
    return {"jaxfit": _version.__version__, "experiment_file": str(path) if path else None, "experiment_sha256": digest}


ENTRY_POINTS = "jaxfit.experiments"  # installed experiments name their module here (pyproject.toml)
_LOADED: set[str] = set()


def registry() -> dict[str, type[Task]]:
    """Every registered experiment by name: those registered so far (an `experiment` file, a
    notebook cell) and every installed one, found through the `jaxfit.experiments` entry-point
    group (jaxfit's own two among them; the convention pytest plugins use) and imported once."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINTS):
        if point.value in _LOADED:
            continue
        _LOADED.add(point.value)
        try:
            point.load()
        except Exception as error:  # noqa: BLE001 -- a broken installed package, named in one line
            raise ExperimentError(
                f"installed experiment {point.name!r} ({point.value}) does not import: {type(error).__name__}: {error}"
            ) from None
    return dict(sorted(_REGISTRY.items()))  # by name: the same order whatever was imported first


def import_experiment(spec: str, base: Path) -> str:
    """Import what registers an outside experiment: a .py file (relative to `base`, the config's
    folder) or a module name. Returns what a resolved config keeps: the file's absolute path,
    or the module name. Raises ImportError (one line) if it cannot, and ExperimentError if what
    it imported registers no experiment."""
    before, given = dict(_REGISTRY), spec
    if not spec.endswith(".py"):
        if "/" in spec or "\\" in spec or (base / spec).is_file() or Path(spec).suffix.lower() in (".txt", ".toml", ".ipynb", ".pyc"):
            raise ImportError(f"{spec!r} is not a .py file or a module name: an experiment file's name ends in .py")
        module = importlib.import_module(spec)
    else:
        path = (base / spec).resolve()
        if not path.is_file():
            raise ImportError(f"no such file: {path}")
        module = _import_file(path)
        spec = str(path)
    if _REGISTRY == before and not _registers(module):
        raise ExperimentError(
            f"config key 'experiment' = {given!r}: imported, but it registers no experiment; decorate its Task subclass "
            "with @jaxfit.register"
        )
    return spec


def _registers(module: Any) -> bool:
    """Whether a module (or one it imported from) registered an experiment."""
    registered = set(_REGISTRY.values())
    return any(cls.__module__ == module.__name__ or cls.__module__.startswith(module.__name__ + ".") for cls in registered) or any(
        isinstance(v, type) and v in registered for v in vars(module).values()
    )


def _import_file(path: Path) -> Any:
    """Import a .py file once (a file already imported, e.g. by `import my_experiment` in a notebook,
    is not imported again); its module."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(str(module.__file__)).resolve() == path:
            return module
    name = path.stem if path.stem not in sys.modules else f"jaxfit_experiment_{abs(hash(str(path)))}"
    loader = importlib.util.spec_from_file_location(name, path)
    assert loader is not None and loader.loader is not None  # a .py file's path (checked by the caller)
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))  # a module beside the file imports as it would from there
    try:
        loader.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module
