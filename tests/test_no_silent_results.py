"""Inputs that used to give a silently wrong answer, fourth round: a value no model of its group
reads, copies of one model counted as seeds, data that cannot be computed with, a compile cache
that cannot be written, built-in init schemes on layers they had no rule for, and a comparison of
runs of different experiments. Each goes through the CLI as a user meets it: one line naming the
key or the array and what is allowed, exit 2, nothing written (or, for the cache, the run goes on
with one line saying the cache is off)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from jaxfit import config, inits, optim, report, run
from jaxfit.experiment import template
from jaxfit.fields import Sweep, bounded
from tests.conftest import STEPFIT, SUMSQ
from tests.test_hardening import one_line_error
from tests.test_hostile import SMALL, experiment


@pytest.fixture
def half_read():
    """An optimiser of one's own whose `unused` number its direction never reads (removed after)."""

    @optim.register
    @dataclass(frozen=True)
    class HalfRead:
        name: Literal["half_read"] = "half_read"
        lr: Sweep = bounded(0.1, gt=0)
        decay: Sweep = bounded(0.9, ge=0, lt=1)
        unused: Sweep = bounded(1.0, gt=0)

        def direction(self, hp: dict) -> optax.GradientTransformation:
            return optax.trace(decay=hp["optim.decay"])

    yield HalfRead
    del optim.OPTIMISERS["half_read"]


def refused(capsys, tmp_path, argv: list[str], *says: str) -> None:
    out = tmp_path / "run"
    assert run.main([*argv, "--out", str(out)]) == 2
    one_line_error(capsys, *says)
    assert not out.exists()


# ----------------------------------------------------------------------------- values no model reads

UNREAD = [
    # the seed's wide group: CyclicLR sets the rate itself, and gamma only scales exp_range
    (STEPFIT, ["optim.lr=[0.1,0.2]"], "'groups.wide.optim.lr' = [0.1, 0.2]"),
    (STEPFIT, ["optim.lr=0.2"], "'groups.wide.optim.lr' = 0.2"),
    (STEPFIT, ["groups.wide.schedule.gamma=0.5"], "'groups.wide.schedule.gamma' = 0.5"),
    (STEPFIT, ["groups.wide.schedule.gamma=[0.5, 0.9]"], "'groups.wide.schedule.gamma'"),
    # another optimiser under the cyclic schedule
    (SUMSQ, ['schedule={name="cyclic"}', "optim.lr=[1e-4, 1e-3]"], "'groups.main.optim.lr'"),
    (SUMSQ, ['schedule={name="cyclic", mode="triangular2", gamma=0.99}'], "'groups.main.schedule.gamma' = 0.99"),
    # SGD without momentum under a constant rate, from a group table
    (STEPFIT, ["groups.wide.schedule.mode='exp_range'", "optim.lr=0.3"], "'groups.wide.optim.lr'"),
    # an optimiser of one's own
    (STEPFIT, ['optim={name="half_read", unused=[1.0, 2.0]}', 'groups.wide.schedule={name="constant"}'], "'groups.narrow.optim.unused'"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("base, overrides, says", UNREAD, ids=[" ".join(c[1]) for c in UNREAD])
def test_a_value_no_model_of_its_group_reads_is_refused(tmp_path, capsys, half_read, base, overrides, says):
    refused(capsys, tmp_path, [*base, *(a for o in overrides for a in ("--set", o))], says, "cannot change any model", "never read it")


@pytest.mark.parametrize(
    "overrides, group, key",
    [
        (["groups.narrow.optim.lr=[0.05, 0.1]"], 0, "optim.lr"),  # a constant rate is optim.lr
        (["groups.wide.schedule.mode='exp_range'", "groups.wide.schedule.gamma=[0.999, 0.9995]"], 1, "schedule.gamma"),
        (["optim.momentum=[0.0, 0.9]"], 1, "optim.momentum"),  # SGD's momentum, under any rate
        (['optim={name="half_read", decay=[0.5, 0.9]}', 'groups.wide.schedule={name="constant"}'], 1, "optim.decay"),
    ],
)
def test_values_a_group_reads_are_taken(half_read, overrides, group, key):
    cfg = config.load("stepfit", overrides)
    assert key in optim.hyperparameters(cfg.groups[group]) and key not in optim.unread(cfg.groups[group], cfg.steps_per_epoch)


# ----------------------------------------------------------------------------- copies counted as seeds

COPIES = [
    (STEPFIT, ["groups.narrow.optim.lr=[0.1, 0.1]"], "'groups.narrow.optim.lr' = [0.1, 0.1]", "0.1 is given twice"),
    (STEPFIT, ["groups.narrow.optim.lr=[0.1, 0.10000000001]"], "'groups.narrow.optim.lr'", "are one float32"),
    (STEPFIT, ["groups.wide.schedule.max_lr=[0.5, 0.3, 0.5]"], "'groups.wide.schedule.max_lr'", "0.5 is given twice"),
    (SUMSQ, ["optim.b1=[0.9, 0.9]"], "'groups.main.optim.b1'", "given twice"),
    (SUMSQ, ["schedule.gamma=[0.9, 0.8, 0.9]"], "'groups.main.schedule.gamma'", "given twice"),
    (SUMSQ, ["model.init=['he', 'he']"], "'groups.main.model.init'", "at most once"),
    # two groups with a cell in common: the whole group, or one swept value
    (STEPFIT, ["groups.wide.model.width=1", 'groups.wide.schedule={name="constant"}'], "'groups.wide'", "same as those of group 'narrow'"),
    (
        STEPFIT,
        [
            "groups.narrow.optim.lr=[0.1, 0.2]",
            "groups.wide.model.width=1",
            'groups.wide.schedule={name="constant"}',
            "groups.wide.optim.lr=[0.2, 0.3]",
        ],
        "'groups.wide' = \"init 'torch_default', optim.lr=0.2\"",
        "same as those of group 'narrow'",
    ),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("base, overrides, key, says", COPIES, ids=[" ".join(c[1]) for c in COPIES])
def test_copies_of_a_model_are_not_counted_as_seeds(tmp_path, capsys, base, overrides, key, says):
    refused(capsys, tmp_path, [*base, *(a for o in overrides for a in ("--set", o))], key, says)


def test_groups_that_differ_in_anything_they_read_are_not_copies():
    cfg = config.load("stepfit", ["groups.wide.model.width=1", 'groups.wide.schedule={name="constant"}', "groups.wide.optim.lr=0.2"])
    assert [g.optim.lr for g in cfg.groups] == [0.1, 0.2]


# ----------------------------------------------------------------------------- data the models cannot compute with

TRAIN = 'return {"train": spirals(self.n_train, self.noise, 0), "eval": {"val": spirals(self.n_val, self.noise, 1)}}'


def data_edit(train: str = "x, y", val: str = "vx, vy", extra: str = "") -> tuple[str, str]:
    """spirals' data() with its arrays edited by `extra` (names x, y, vx, vy) before they are returned."""
    lines = [
        "x, y = spirals(self.n_train, self.noise, 0)",
        "vx, vy = spirals(self.n_val, self.noise, 1)",
        *([extra] if extra else []),
        f'return {{"train": ({train}), "eval": {{"val": ({val})}}}}',
    ]
    return TRAIN, "\n        ".join(lines)


DATA = [
    (
        "nan_in_train",
        data_edit(extra="x[17, 1] = np.nan"),
        "at ['train'][0]",
        "1 value non-finite in float32, the first nan at index (17, 1)",
    ),
    (
        "inf_in_eval_targets",
        data_edit(extra="vy = vy.astype(np.float32); vy[3] = np.inf"),
        "at ['eval']['val'][1]",
        "the first inf at index (3,)",
    ),
    ("nan_in_a_second_eval_set", data_edit(val='vx, vy), "test": (vx * np.nan, vy'), "at ['eval']['test'][0]", "4,000 values non-finite"),
    ("float32_overflow", data_edit(extra="x = x.astype(np.float64); x[5, 0] = 1e39"), "at ['train'][0]", "the first 1e+39 at index (5, 0)"),
    ("int_beyond_int32", data_edit(extra="y = y.astype(np.int64); y[0] = 2**40"), "at ['train'][1]", "beyond int32"),
    ("strings", data_edit(extra="y = y.astype(str)"), "at ['train'][1]", "(bool, integer or float)"),
    (
        "eval_lengths_differ",
        data_edit(val="vx, vy[:-1]"),
        "['eval']['val'] with x of shape (2000, 2) and y of shape (1999,)",
        "len(y) == len(x)",
    ),
    ("empty_eval_set", data_edit(val="vx[:0], vy[:0]"), "['eval']['val'] with no samples", "at least one sample"),
    ("eval_inputs_of_another_shape", data_edit(val="vx[:, :1], vy"), "['eval']['val'] with x of shape (2000, 1)", "input_shape() = (2,)"),
]


@pytest.mark.slow
@pytest.mark.bad_input
@pytest.mark.parametrize("name, edit, where, says", DATA, ids=[c[0] for c in DATA])
def test_data_that_cannot_be_computed_with_is_named_before_anything_trains(tmp_path, capsys, name, edit, where, says):
    refused(
        capsys, tmp_path, ["--config", str(experiment(tmp_path, name, edit)), *SMALL], "experiment Spirals: data() returned", where, says
    )


# ----------------------------------------------------------------------------- the compile cache

FULL_DISK = """
import errno, sys
from jax._src import compilation_cache
def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
compilation_cache.put_executable_and_time = full  # every write JAX makes to its cache fails, as on a full disk
from jaxfit import run
sys.exit(run.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["not_a_folder", "full_disk"])
def test_an_unusable_compile_cache_is_one_line_and_the_run_goes_on(tmp_path, where):
    (tmp_path / "file").write_text("not a folder")
    cache = tmp_path / "file" / "cache" if where == "not_a_folder" else tmp_path / "cache"
    code = ["-m", "jaxfit.run"] if where == "not_a_folder" else ["-c", FULL_DISK]
    env = {**os.environ, "JAXFIT_COMPILE_CACHE": str(cache), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, *code, *STEPFIT, "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    says = "cannot be written (NotADirectoryError" if where == "not_a_folder" else "failed (OSError: [Errno 28] No space left on device)"
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"jaxfit: the compile cache is off for this run: {cache} {says}"), (
        done.stderr
    )
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["run"]["compile_cache"]["folder"] == "off"


# ----------------------------------------------------------------------------- built-in init schemes


class Layers(nn.Module):
    bias: bool = True
    norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dense(5, use_bias=self.bias)(x)
        return nn.Dense(1)(nn.LayerNorm()(h) if self.norm else h)


@pytest.mark.parametrize("scheme", sorted(inits.SCHEMES))
def test_a_dense_layer_without_bias_is_drawn_as_torch_draws_linear_bias_false(scheme):
    key = jax.random.key(3)
    with_bias = inits.SCHEMES[scheme](template(Layers(), (4,)), key)
    without = inits.SCHEMES[scheme](template(Layers(bias=False), (4,)), key)
    assert jax.tree.structure(without) == jax.tree.structure(template(Layers(bias=False), (4,)))
    assert "bias" not in without["Dense_0"]
    # the kernel is the same draw as with a bias (torch's nn.Linear draws its weight the same way
    # whatever `bias` is), and the other layer is untouched
    np.testing.assert_array_equal(without["Dense_0"]["kernel"], with_bias["Dense_0"]["kernel"])
    np.testing.assert_array_equal(without["Dense_1"]["kernel"], with_bias["Dense_1"]["kernel"])
    if scheme == "torch_default":
        import torch

        bound = 1 / np.sqrt(4)
        weight = torch.nn.Linear(4, 5, bias=False).weight.detach().numpy()
        assert np.abs(weight).max() <= bound and np.abs(np.asarray(without["Dense_0"]["kernel"])).max() <= bound


def test_a_layer_a_scheme_has_no_rule_for_is_named():
    with pytest.raises(inits.UnknownLayer, match=r"init scheme 'he' draws Dense layers .* LayerNorm_0 \(bias \[5\], scale \[5\]\)"):
        inits.he(template(Layers(norm=True), (4,)), jax.random.key(0))


@pytest.mark.slow
def test_built_in_schemes_on_layers_without_bias_train_and_other_layers_are_one_line(tmp_path, capsys):
    no_bias = ("nn.Dense(2)(jnp.tanh(", "nn.Dense(2, use_bias=False)(jnp.tanh(")
    assert run.main(["--config", str(experiment(tmp_path, "no_bias", no_bias)), *SMALL, "--out", str(tmp_path / "a")]) == 0
    params = np.load(tmp_path / "a" / "params.npz")
    layers = {k.split("/")[2]: k.split("/")[3] for k in params.files if k.startswith("main/last/") and k.endswith("bias")}
    assert sorted(layers) == ["Dense_1", "Dense_2"]  # Dense_0, made first, is the output layer: no bias
    capsys.readouterr()
    norm = ("nn.Dense(2)(jnp.tanh(", "nn.Dense(2)(nn.LayerNorm()(")
    refused(
        capsys, tmp_path, ["--config", str(experiment(tmp_path, "layer_norm", norm)), *SMALL], "init scheme 'torch_default'", "LayerNorm_0"
    )


# ----------------------------------------------------------------------------- a comparison of different experiments


def test_a_comparison_of_different_experiments_says_so_above_its_table():
    results = Path(__file__).resolve().parents[1] / "results"
    text, _ = report.compare([results / "stepfit" / "faithful", results / "spirals" / "sweep_8_cells"])
    lines = text.splitlines()
    assert lines[2].startswith("**Different experiments** -- stepfit (monitor val_loss): faithful; spirals (monitor val_accuracy)")
    assert lines[4].startswith("| run |")
    same, _ = report.compare([results / "stepfit" / "faithful", results / "stepfit" / "ablation"])
    assert same.splitlines()[2].startswith("| run |")
