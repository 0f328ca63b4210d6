"""Config loading, overrides, the resolved-config round trip, and every bad input the CLI
must refuse with one line and exit code 2, writing nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jaxfit import config, run
from jaxfit.config import ConfigError


def test_faithful_configs_load_with_the_seeds_numbers():
    sumsq = config.load("sumsq")
    group = sumsq.groups[0]
    assert (sumsq.n_epochs, sumsq.steps_per_epoch, sumsq.sweep.n_seeds) == (600, 900, 10)
    assert group.model.init == ("manual", "he")
    assert (group.model.dropout_inputs, group.model.dropout_hidden, group.model.dropout_outputs) == (0.2, 0.2, 0.2)
    assert (group.optim.name, group.optim.lr) == ("adam", 1e-4)
    assert (group.schedule.step_size, group.schedule.gamma, group.schedule.interval) == (20, 0.9, "epoch")
    stepfit = config.load("stepfit")
    narrow, wide = stepfit.groups
    assert (narrow.model.width, wide.model.width, stepfit.train.steps, stepfit.train.stop_at) == (1, 8, 1_000_001, 0.005)
    assert (wide.schedule.mode, wide.schedule.max_lr, wide.schedule.step_size_down) == ("triangular2", 0.5, 900)


def test_overrides_and_round_trip(tmp_path):
    cfg = config.load("sumsq", ["train.epochs=2", "sweep.n_seeds=3", "model.init=he", "optim.lr=[1e-4, 1e-3]"])
    assert (cfg.train.epochs, cfg.sweep.n_seeds, cfg.groups[0].model.init, cfg.groups[0].optim.lr) == (2, 3, ("he",), (1e-4, 1e-3))
    path = tmp_path / "resolved.toml"
    path.write_text(config.to_toml(cfg))
    assert config.load(str(path)) == cfg


def test_a_default_override_reaches_every_group_and_a_group_override_one():
    cfg = config.load("stepfit", ["optim.momentum=0.5", "groups.wide.optim.momentum=[0.8, 0.9]"])
    narrow, wide = cfg.groups
    assert narrow.optim.momentum == 0.5 and wide.optim.momentum == (0.8, 0.9)


BAD_INPUTS = [
    (["--config", "nosuch"], "'--config' = 'nosuch'", "known: "),
    (["--config", "sumsq", "--set", "train.epoch=2"], "'train.epoch'", "unknown key"),
    (["--config", "stepfit", "--set", "model.widht=3"], "'groups.narrow.model.widht' = 3", "did you mean 'width'?"),
    (["--config", "sumsq", "--set", "train.epochs=abc"], "'train.epochs' = 'abc'", "expected an integer"),
    (["--config", "sumsq", "--set", "train.epochs=-1"], "'train.epochs' = -1", "must be > 0"),
    (["--config", "sumsq", "--set", "train.epochs=2.5"], "'train.epochs' = 2.5", "expected an integer"),
    (["--config", "sumsq", "--set", "model.dropout_hidden=1.0"], "'groups.main.model.dropout_hidden' = 1.0", "must be >= 0 and < 1"),
    (["--config", "sumsq", "--set", "model.dropout_inputs=-0.1"], "dropout_inputs' = -0.1", "must be >= 0 and < 1"),
    (["--config", "sumsq", "--set", "model.init=xavier"], "'groups.main.model.init' = 'xavier'", "'manual', 'he', 'torch_default'"),
    (["--config", "sumsq", "--set", "model.init=[]"], "'groups.main.model.init' = []", "empty list"),
    (["--config", "sumsq", "--set", "train.epochs=[1, 2]"], "'train.epochs' = [1, 2]", "only on sweep axes"),
    (["--config", "sumsq", "--set", "sweep.n_seeds=0"], "'sweep.n_seeds' = 0", "must be > 0"),
    (["--config", "sumsq", "--set", "train.batch_size=7"], "'train.batch_size' = 7", "must divide task.n_train"),
    (["--config", "sumsq", "--set", "optim.name=lamb"], "'groups.main.optim.name' = 'lamb'", "'sgd', 'adam', 'adamw', 'rmsprop'"),
    (["--config", "stepfit", "--set", "optim.nesterov=true"], "'groups.narrow.optim.nesterov' = True", "needs optim.momentum > 0"),
    (["--config", "sumsq", "--set", "optim.momentum=0.9"], "'groups.main.optim.momentum' = 0.9", "unknown key of optim 'adam'"),
    (["--config", "sumsq", "--set", "schedule.name=cosine"], "'groups.main.schedule.name' = 'cosine'", "'constant', 'step', 'cyclic'"),
    (["--config", "stepfit", "--set", "train.stop_at=true"], "'train.stop_at' = True", "expected a number"),
    (["--config", "sumsq", "--set", "optim.lr=[]"], "'groups.main.optim.lr' = []", "empty list"),
    (["--config", "sumsq", "--set", "optim.lr=-1e-4"], "'groups.main.optim.lr' = -0.0001", "must be > 0"),
    (["--config", "sumsq", "--set", "train.steps=100"], "'train.epochs' = 600", "exactly one of"),
    (["--config", "sumsq", "--set", "task.n_train=200000"], "'task.n_train' = 200000", "must be < task.n_samples"),
    (["--config", "sumsq", "--set", "nonsense"], "'--set' = 'nonsense'", "key.sub=value"),
    (["--config", "missing/file.toml"], "'--config' = 'missing/file.toml'", "no such file"),
    (
        ["--config", "stepfit", "--set", "groups.wide.model.name=shared_subnet"],
        "'groups.wide.model.name' = 'shared_subnet'",
        "must be one of 'mlp' (the models of task 'stepfit')",
    ),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("argv, names, allowed", BAD_INPUTS, ids=[" ".join(a[1:]) for a, _, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, names, allowed, tmp_path, capsys):
    out = tmp_path / "out"
    assert run.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and names in err and allowed in err, err
    assert not out.exists()


@pytest.mark.bad_input
def test_not_toml_and_bad_out_dirs(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    assert run.main(["--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    assert run.main(["--config", "sumsq", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err and a_file.read_text() == "keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    assert run.main(["--config", "sumsq", "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in full.iterdir()] == ["x"]


@pytest.mark.bad_input
def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jaxfit.run", "--config", "sumsq", "--set", "train.epochs=-3"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: config key 'train.epochs' = -3: must be > 0"]
    assert not (tmp_path / "runs").exists()


def test_print_config_prints_the_resolved_config(capsys):
    assert run.main(["--config", "sumsq", "--set", "train.epochs=2", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert config.from_dict(__import__("tomllib").loads(text), "x") == config.load("sumsq", ["train.epochs=2"])


def test_config_error_is_a_value_error():
    with pytest.raises(ConfigError):
        config.load("sumsq", ["train.batch_size=0"])
