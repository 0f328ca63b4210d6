"""What an experiment's methods return, checked before anything trains or is written: each is
called (or traced with `jax.eval_shape`: nothing is computed) once per model table, and a wrong
value is one line naming the experiment class, the method, what it returned and what is
expected (`ExperimentError`; the CLI exits 2). An exception raised inside an experiment's own
method is named the same way, with the file and line of the experiment's code it came from.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import inits
from jaxfit.experiment import (
    EvalSet,
    ExperimentError,
    NNXModule,
    Task,
    chunked,
    data_per_model,
    model_schemes,
    module_of,
    template,
    uses_epoch_order,
)


def _short(value: Any) -> str:
    """A returned value in a few words: its type, and its shape where it has one."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:6]}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {str(value)[:60]!r}"


def _where(error: BaseException) -> str:
    """The innermost frame of the error's traceback outside jax, flax and jaxfit's engine."""
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not any(part in f.filename for part in ("/jax/", "/jaxlib/", "/flax/", "/optax/", "/chex/", "jaxfit/checks.py"))
    ]
    return f" ({frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""


class Checker:
    """Calls an experiment's methods and names the first mistake."""

    def __init__(self, task: Task):
        self.task, self.name = task, type(task).__name__

    def fail(self, method: str, returned: str, expected: str) -> ExperimentError:
        return ExperimentError(f"experiment {self.name}: {method} returned {returned}; expected {expected}")

    def call(self, method: str, fn: Callable, *args: Any) -> Any:
        """fn(*args), an exception in the experiment's code named in one line."""
        try:
            return fn(*args)
        except ExperimentError:
            raise
        except inits.UnknownLayer as error:  # a built-in scheme on a module it has no rule for: the author's choice, named
            raise ExperimentError(f"experiment {self.name}: {method}: {error}") from None
        except Exception as error:  # noqa: BLE001 -- the experiment's own code
            first = (str(error).strip().splitlines() or [""])[0][:200]
            raise ExperimentError(f"experiment {self.name}: {method} raised {type(error).__name__}: {first}{_where(error)}") from None

    def traced(self, method: str, fn: Callable, *args: Any) -> Any:
        """The shapes `fn(*args)` returns, traced (nothing computed)."""
        return self.call(method, lambda: jax.eval_shape(fn, *args))


def check_returns(
    task: Task, models: list[Any], batch_size: int, eval_chunk: int, seed: int = 0, groups: list[list[str]] | None = None
) -> list[Any]:
    """Call every method the engine will call, for each model table, and check what it returns;
    the data each table trains on, as the engine passes it into jit (`data()` made once and
    shared, or `data(model)` made for each table), in the order of `models`. `groups`: the
    groups of each table, named in a mistake of its data."""
    c = Checker(task)
    shape = c.call("input_shape()", task.input_shape)
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise c.fail("input_shape()", _short(shape), "a tuple of positive ints, one sample's shape, e.g. (2,)")
    steps = c.call(f"steps_per_epoch({batch_size})", task.steps_per_epoch, batch_size)
    if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 1:
        raise c.fail(f"steps_per_epoch({batch_size})", _short(steps), "an int >= 1")
    key, step = jax.random.key(seed), jnp.int32(0)
    shared = None if data_per_model(task) else _checked_data(c, task, "data()", task.data, shape, eval_chunk)
    out = []
    for k, model in enumerate(models):
        of = f" of group{'s' * (len(groups[k]) > 1)} {', '.join(map(repr, groups[k]))}" if groups else ""
        made = f"data(model table {model.name!r}{of})"
        per_table = partial(task.data, model)  # type: ignore[call-arg]  # data(self, model), as data_per_model found
        data = shared if shared is not None else _checked_data(c, task, made, per_table, shape, eval_chunk)
        _check_model(c, task, model, shape, data, key, step, batch_size)
        out.append(data)
    return out


def _checked_data(c: Checker, task: Task, made: str, make: Any, shape: tuple, eval_chunk: int) -> Any:
    """What `make` (data() or data(model)) returns, checked, with its eval sets in chunks."""
    given = c.call(made, make)
    _check_arrays(c, made, given)
    default_evaluate = type(task).evaluate is Task.evaluate
    if default_evaluate:
        _check_eval_sets(c, made, given, shape)
    data = chunked(given, eval_chunk)
    if default_evaluate:
        sets = data.get("eval") if isinstance(data, dict) else None
        if not isinstance(sets, dict) or not sets:
            raise c.fail(
                made,
                _short(data),
                'a dict with an "eval" entry {name: (x, y)} of plain arrays (the eval sets), '
                "which the default evaluate() reads; or define evaluate()",
            )
        for name, value in sets.items():
            if not isinstance(value, EvalSet):
                raise c.fail(
                    made,
                    f'["eval"][{name!r}] = {_short(value)}',
                    "each eval set as a tuple (x, y) of arrays, x [n, *input_shape()], y [n, ...]",
                )
    return data


NUMBERS = "a pytree (dict, tuple, NamedTuple) of numpy arrays and numbers"


def _check_arrays(c: Checker, made: str, data: Any) -> None:
    """Every leaf of the data a number or an array of numbers, finite as the models see it
    (float32; int32 in range): a NaN or inf among the samples would show as models diverging."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(data):
        where = f" at {jax.tree_util.keystr(path)}" if path else ""
        if not (isinstance(leaf, np.ndarray | jax.Array | np.number) or (isinstance(leaf, int | float) and not isinstance(leaf, bool))):
            raise c.fail(made, _short(leaf) + where, NUMBERS)
        array = np.asarray(leaf)
        if array.dtype.kind not in "biuf":
            raise c.fail(made, _short(array) + where, f"{NUMBERS} (bool, integer or float)")
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(array.astype(np.float32)) if array.dtype.kind == "f" else np.zeros(array.shape, bool)
        if array.dtype.kind in "iu" and array.size:
            bad = (array < np.iinfo(np.int32).min) | (array > np.iinfo(np.int32).max)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0]) if array.ndim else ()
            value, count = (array[first] if array.ndim else array).item(), int(bad.sum())
            kind = "beyond int32" if array.dtype.kind in "iu" else "non-finite in float32"
            raise c.fail(
                made,
                f"an array of shape {array.shape}{where} with {count:,} value{'s' if count > 1 else ''} {kind}, "
                f"the first {value!r} at index {first}",
                "finite numbers the models can compute with (float32, int32): a NaN or inf in the data would be reported as "
                "the models diverging",
            )


def _check_eval_sets(c: Checker, made: str, data: Any, shape: tuple) -> None:
    """The eval sets that the default evaluate() averages over: x [n, *input_shape] and y [n, ...], n >= 1."""
    sets = data.get("eval") if isinstance(data, dict) else None
    if not isinstance(sets, dict):
        return  # named below, with what the default evaluate() reads
    for name, value in sets.items():
        if not (isinstance(value, tuple) and len(value) == 2):
            continue  # named below, with what an eval set is
        x, y = (np.asarray(a) for a in value)
        entry = f"['eval'][{name!r}]"
        if x.ndim < 1 or tuple(x.shape[1:]) != shape:
            raise c.fail(
                made, f"{entry} with x of shape {x.shape}", f"x of shape [n, {', '.join(map(str, shape))}] (input_shape() = {shape})"
            )
        if y.ndim < 1 or len(y) != len(x):
            raise c.fail(
                made, f"{entry} with x of shape {x.shape} and y of shape {y.shape}", "as many targets as inputs (len(y) == len(x))"
            )
        if not len(x):
            raise c.fail(made, f"{entry} with no samples", "at least one sample in every eval set (its mean would be 0 / 0)")


def _check_model(c: Checker, task: Task, model: Any, shape: tuple, data: Any, key: jax.Array, step: jax.Array, batch_size: int) -> None:
    table = f"model table {model.name!r}"
    module = c.call(f"module({table})", module_of, task, model)
    if not isinstance(module, nn.Module | NNXModule):
        raise c.fail(f"module({table})", _short(module), "a flax.linen.Module or a flax.nnx.Module")
    signature = module.call_signature if isinstance(module, NNXModule) else inspect.signature(type(module).__call__)
    if "train" not in signature.parameters:
        raise c.fail(
            f"module({table})",
            f"{type(getattr(module, 'module', module)).__name__}, whose __call__ takes no `train`",
            "a module called as module(x, train=...) (train: dropout and the like on or off)",
        )
    shapes = c.call(f"module({table}).init", template, module, shape)
    structure = jax.tree.structure(shapes)
    for scheme in model_schemes(type(model)):
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        params = c.traced(
            f"init_params({table}, ..., {scheme!r}, key)", lambda k, scheme=scheme: task.init_params(model, zeros, scheme, k), key
        )
        if jax.tree.structure(params) != structure or any(  # type: ignore[operator]  # PyTreeDefs compare
            a.shape != b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(shapes))
        ):
            raise c.fail(
                f"init_params({table}, ..., {scheme!r}, key)",
                "parameters of other names or shapes",
                f"the module's own tree: {jax.tree.map(lambda s: tuple(s.shape), shapes)}",
            )
    sample = c.call(f"sampler({table}, {batch_size})", task.sampler, model, batch_size)
    if not callable(sample):
        raise c.fail(f"sampler({table}, {batch_size})", _short(sample), "a function (data, key, step) -> (x, y)")
    if uses_epoch_order(task):
        order = c.traced("epoch_order(data, key, epoch)", lambda d, k, e: task.epoch_order(d, k, e), data, key, step)
        method = f"sampler({table}, {batch_size})(data, key, step, order)"
        batch = c.traced(method, sample, data, key, step, order)
    else:
        method = f"sampler({table}, {batch_size})(data, key, step)"
        batch = c.traced(method, sample, data, key, step)
    if not isinstance(batch, tuple) or len(batch) != 2 or not all(hasattr(a, "shape") for a in batch):
        raise c.fail(method, _short(batch), "a tuple (x, y) of two arrays")
    x, y = batch
    if x.ndim < 1 or tuple(x.shape[1:]) != shape:
        raise c.fail(method, f"x of shape {tuple(x.shape)}", f"x of shape [batch, {', '.join(map(str, shape))}] (input_shape() = {shape})")
    if y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise c.fail(
            method, f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}", "as many targets as inputs (y.shape[0] == x.shape[0])"
        )
    variables = {"params": shapes}
    pred = c.traced(f"module({table})(x, train=True)", lambda v, x: module.apply(v, x, train=True, rngs={"dropout": key}), variables, x)
    if type(task).loss is Task.loss and pred.shape != y.shape:  # MSE would broadcast [b, 1] against [b] to [b, b], silently
        raise c.fail(
            method,
            f"y of shape {tuple(y.shape)} for the module's output of shape {tuple(pred.shape)}",
            "y shaped as the output (the default MSE loss compares them element by element; or define loss)",
        )
    loss = c.traced("loss(pred, y)", task.loss, pred, y)
    if not hasattr(loss, "shape") or loss.shape != () or not jnp.issubdtype(loss.dtype, jnp.floating):
        raise c.fail("loss(pred, y)", _short(loss), "one float number (a scalar), the batch's mean loss")
    own = type(task).evaluate is not Task.evaluate
    if not own and type(task).metrics is Task.metrics:
        for name, eval_set in data["eval"].items():
            out = c.traced(f"module({table})(x, train=False)", lambda v, x: module.apply(v, x, train=False), variables, eval_set.x[0])
            if out.shape != eval_set.y[0].shape:
                raise c.fail(
                    "data()",
                    f'["eval"][{name!r}] with y of shape {tuple(eval_set.y.shape[1:])} per chunk for outputs of shape {tuple(out.shape)}',
                    "y shaped as the module's output (the default metric compares them element by element; or define metrics)",
                )
    where = "evaluate(module, params, data)" if own else "metrics(pred, y), averaged over each eval set,"
    evals = c.traced(where, lambda p, d: task.evaluate(module, p, d), shapes, data)
    if not isinstance(evals, dict) or not evals:
        raise c.fail(where, _short(evals), "a dict of metrics, e.g. {'val_loss': ...}")
    for name, value in evals.items():
        if not isinstance(name, str) or not hasattr(value, "shape") or value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
            raise c.fail(where, f"{name!r}: {_short(value)}", "one float number (a scalar) per metric" + ("" if own else " and sample"))
    if task.monitor not in evals:
        raise c.fail(where, f"the metrics {sorted(evals)}", f"the monitored metric {task.monitor!r} among them (the class's `monitor`)")
