"""An experiment author's mistakes, named in one line before anything trains (jaxfit/checks.py):
examples/spirals.py with one mistake each, run through the CLI; each is one line naming the
experiment class, the method, what it returned and what is expected; exit 2; nothing written."""

from __future__ import annotations

import pytest

from jaxfit import run
from tests.test_hardening import one_line_error
from tests.test_hostile import SMALL, experiment

BATCH = '            return data["train"][0][index], data["train"][1][index]'
MODULE = "    def module(self, model):"
SAMPLER = "sampler(model table 'tanh_net', 64)(data, key, step)"


def before_module(method: str) -> tuple[str, str]:
    return MODULE, f"{method}\n\n{MODULE}"


def own_evaluate(body: str) -> tuple[str, str]:
    """An evaluate of the experiment's own that returns `body`."""
    return before_module(f"    def evaluate(self, module, params, data):\n        return {body}")


MISTAKES = [
    ("data_object", [('return {"train": spirals(', 'return object() or {"train": spirals(')], "data() returned object"),
    (
        "data_no_eval_sets",
        [('"eval": {"val": spirals(self.n_val, self.noise, 1)}', '"val": spirals(self.n_val, self.noise, 1)')],
        'expected a dict with an "eval" entry',
    ),
    ("data_strings", [('return {"train": spirals(', 'return {"name": "spirals", "train": spirals(')], "data() returned str"),
    ("input_shape_int", [("        return (2,)", "        return 2")], "input_shape() returned int"),
    (
        "steps_per_epoch_zero",
        [before_module("    def steps_per_epoch(self, batch_size):\n        return 0")],
        "steps_per_epoch(64) returned 0",
    ),
    ("sampler_not_a_function", [("        return sample\n", "        return 3\n")], "expected a function (data, key, step) -> (x, y)"),
    ("batch_one_array", [(BATCH, '            return data["train"][0][index]')], "expected a tuple (x, y) of two arrays"),
    (
        "batch_x_shape",
        [(BATCH, '            return data["train"][0][index][:, :1], data["train"][1][index]')],
        "returned x of shape (64, 1)",
    ),
    ("batch_y_length", [(BATCH, '            return data["train"][0][index], data["train"][1][index][:3]')], "as many targets as inputs"),
    ("batch_raises", [(BATCH, '            raise IndexError("no sample 7")')], f"{SAMPLER} raised IndexError: no sample 7"),
    (
        "module_not_flax",
        [("        return Net(model.width)", "        return model.width")],
        "expected a flax.linen.Module or a flax.nnx.Module",
    ),
    (
        "module_without_train",
        [("    def __call__(self, x, train: bool):", "    def __call__(self, x):")],
        "whose __call__ takes no `train`",
    ),
    (
        "init_params_shapes",
        [before_module("    def init_params(self, model, shapes, scheme, key):\n        return {'Dense_0': shapes['Dense_0']}")],
        "parameters of other names or shapes",
    ),
    (
        "loss_per_sample",
        [
            (
                "optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()",
                "optax.softmax_cross_entropy_with_integer_labels(logits, label)",
            )
        ],
        "loss(pred, y) returned",
    ),
    ("evaluate_list", [own_evaluate("[jnp.float32(0)]")], "expected a dict of metrics"),
    ("evaluate_vector", [own_evaluate('{"val_accuracy": jnp.zeros(3)}')], "one float number (a scalar) per metric"),
    ("evaluate_int", [own_evaluate('{"val_accuracy": jnp.int32(1)}')], "one float number (a scalar) per metric"),
    ("evaluate_no_monitor", [own_evaluate('{"val_loss": jnp.float32(0)}')], "the monitored metric 'val_accuracy' among them"),
    (
        "metrics_no_monitor",
        [('"accuracy": (jnp.argmax', '"acc": (jnp.argmax')],
        "metrics(pred, y), averaged over each eval set, returned the metrics",
    ),
    (
        "y_broadcasts_in_mse",
        [
            ("    def loss(", "    def loss_("),
            ("    def metrics(", "    def metrics_("),
            ('monitor, goal = "val_accuracy", "max"', 'monitor, goal = "val_loss", "min"'),
        ],
        "returned y of shape (64,) for the module's output of shape (64, 2); expected y shaped as the output",
    ),
    (
        "eval_y_shape",
        [
            ("    def loss(", "    def loss_("),
            ("    def metrics(", "    def metrics_("),
            ('monitor, goal = "val_accuracy", "max"', 'monitor, goal = "val_loss", "min"'),
            (BATCH, '            return data["train"][0][index], jax.nn.one_hot(data["train"][1][index], 2)'),
        ],
        """data() returned ["eval"]['val'] with y of shape""",
    ),
    (
        "eval_set_not_x_y",
        [('"eval": {"val": spirals(self.n_val, self.noise, 1)}', '"eval": {"val": spirals(self.n_val, self.noise, 1)[0]}')],
        """data() returned ["eval"]['val'] = an array of shape (2000, 2)""",
    ),
]


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize("name, edits, says", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_an_authors_mistake_is_one_line_before_anything_trains(tmp_path, capsys, name, edits, says):
    out = tmp_path / "run"
    assert run.main(["--config", str(experiment(tmp_path, name, *edits)), *SMALL, "--out", str(out)]) == 2
    one_line_error(capsys, "experiment Spirals", says)
    assert not out.exists()


@pytest.mark.bad_input
def test_an_import_error_in_the_experiments_file_shows_its_traceback_then_one_line(tmp_path, capsys):
    path = experiment(tmp_path, "broken_import", ("import optax\n", "import optax\nimport no_such_package_anywhere\n"))
    assert run.main(["--config", str(path), *SMALL, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: config key 'experiment'") and "No module named 'no_such_package_anywhere'" in err[-1]
    assert any("broken_import.py" in line for line in err[:-1]) and "import no_such_package_anywhere" in "\n".join(err[:-1])
    assert not any("jaxfit/" in line for line in err[:-1])  # the author's frames only
    assert not (tmp_path / "run").exists()
