"""The experiment/engine split: the engine names no experiment; an experiment written outside the
package (examples/spirals.py: its own data, model, cross-entropy loss, accuracy monitored with
"higher is better") runs from the CLI and from Python; a built wheel works from any folder."""

from __future__ import annotations

import json
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxfit import config, outputs, report, run, sweep
from jaxfit.experiment import ExperimentError

ROOT = Path(__file__).resolve().parent.parent
SPIRALS = ROOT / "examples" / "spirals.toml"
SMALL_SPIRALS = ["sweep.n_seeds=2", "train.steps=600", "optim.lr=[0.01, 0.03]", "train.stop_at=0.9"]
# The engine: everything but the experiments' own modules and the benchmark of the built-in ones.
ENGINE = [
    "__init__",
    "_version",
    "analysis",
    "checkpoints",
    "checks",
    "compile_cache",
    "config",
    "distributed",
    "experiment",
    "extend",
    "fields",
    "inits",
    "kernels",
    "optim",
    "outputs",
    "own_sums",
    "plan",
    "plots",
    "replay",
    "report",
    "run",
    "rundir",
    "runfiles",
    "runs",
    "signals",
    "sweep",
    "trackers",
    "trainer",
]


def test_the_engine_names_no_experiment():
    """No experiment's name, table or type in the engine's modules; the list of modules is the
    package's, so a new engine module is checked too."""
    modules = {p.stem for p in (ROOT / "jaxfit").glob("*.py")}
    assert modules - {"bench"} == set(ENGINE), "a new module: add it to ENGINE (or say why it is not the engine)"
    names = set()
    for name, task in config.registry().items():
        names |= {name, task.__name__, *(m.__name__ for m in task.models), *(m.__dataclass_fields__["name"].default for m in task.models)}
    pattern = re.compile("|".join(rf"\b{re.escape(n)}\b" for n in sorted(names)), re.IGNORECASE)
    found = [
        f"{m}.py:{i}: {line.strip()}"
        for m in ENGINE
        for i, line in enumerate((ROOT / "jaxfit" / f"{m}.py").read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert names >= {"sumsq", "stepfit", "SharedSubnet", "MLP"} and not found, found


@pytest.mark.bad_input
def test_an_unknown_task_or_experiment_file_is_one_line(capsys, tmp_path):
    for overrides, expected in (
        (["task.name=nonesuch"], "'task.name' = 'nonesuch': must be one of 'stepfit', 'sumsq'"),
        (["experiment=nowhere.py"], "cannot be imported (ImportError: no such file"),
    ):
        sets = [a for o in overrides for a in ("--set", o)]
        assert run.main(["--config", "sumsq", *sets, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def check_spirals(summary: dict, history, stop_at: float) -> None:
    """Accuracy is the monitored metric, higher is better: a model stops at the first
    validation with accuracy >= stop_at, and its best value is the highest it logged."""
    models = summary["models"]
    assert {"val_loss_final", "val_accuracy_final", "val_accuracy_best", "train_loss_final"} <= set(models[0])
    reached = [m for m in models if m["reached"]]
    assert reached and all(m["val_accuracy_final"] >= stop_at and m["stop_step"] == m["steps"] for m in reached)
    assert any(m["steps"] < 600 for m in reached)  # stopped early
    assert all(m["val_accuracy_final"] < stop_at and m["steps"] == 600 for m in models if not m["reached"])
    accuracy = np.asarray(history["val_accuracy"])
    for i, m in enumerate(models):
        assert m["val_accuracy_best"] == pytest.approx(np.nanmax(accuracy[i]))
        assert 0.0 <= m["val_accuracy_init"] <= 1.0 and m["val_loss_final"] < m["val_loss_init"]


@pytest.mark.slow
def test_an_outside_experiment_runs_from_the_cli(tmp_path, capsys):
    out = tmp_path / "spirals"
    sets = [a for o in SMALL_SPIRALS for a in ("--set", o)]
    assert run.main(["--config", str(SPIRALS), *sets, "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_spirals(summary, report.load_history(out / "history.npz"), 0.9)
    assert "reached: val_accuracy >= 0.9" in (out / "summary.md").read_text() and (out / "loss_curves.png").is_file()
    saved = config.load(str(out / "config.toml"))  # the run's config finds the experiment's file again
    assert saved.experiment == str(SPIRALS.parent / "spirals.py") and saved.task.name == "spirals"


def test_an_outside_experiment_runs_from_python():
    sys.path.insert(0, str(SPIRALS.parent))
    try:
        import spirals  # noqa: F401 -- registers task "spirals", as a notebook would
    finally:
        sys.path.remove(str(SPIRALS.parent))
    raw = config.tomllib.loads(SPIRALS.read_text())
    del raw["experiment"]  # already imported
    cfg = config.from_dict(config.apply_overrides(raw, SMALL_SPIRALS), "spirals")
    result = sweep.run(cfg, quiet=True)
    summary = {"models": outputs.model_entries(cfg, result)}
    check_spirals(summary, outputs.history_arrays(cfg, result), 0.9)
    again = config.load(str(SPIRALS), SMALL_SPIRALS)  # the same module, not a second copy of it
    assert type(again.task) is type(cfg.task)


@pytest.mark.slow
def test_a_built_wheel_works_from_any_folder(tmp_path):
    """Build a wheel from the tracked sources, install it into a fresh virtual environment (its
    dependencies seen through this environment's site-packages, jaxfit only from the wheel), and
    from a folder outside the repository: print a built-in config, train a tiny built-in run and
    a tiny run of an experiment of the user's own (examples/spirals copied beside its config)."""
    source = tmp_path / "source"
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    for part in ("jaxfit", "configs"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        cwd=tmp_path,
    )
    wheel = next((tmp_path / "dist").glob("jaxfit-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    (purelib / "dependencies.pth").write_text("\n".join([*site.getsitepackages(), sysconfig.get_paths()["purelib"]]) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True
    )
    user = tmp_path / "elsewhere"
    user.mkdir()
    for name in ("spirals.py", "spirals.toml"):
        shutil.copy(SPIRALS.parent / name, user / name)

    def jaxfit(*args: str) -> str:
        done = subprocess.run([python, "-m", "jaxfit.run", *args], cwd=user, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = subprocess.run(
        [python, "-c", "import jaxfit, jaxfit.experiments.torch_reference as r; print(jaxfit.__file__, r.__file__)"],
        cwd=user,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(Path(w).is_relative_to(purelib) for w in where), where  # the benchmark's PyTorch side ships too
    assert 'name = "sumsq"' in jaxfit("--config", "sumsq", "--print-config")
    jaxfit("--config", "stepfit", "--set", "train.steps=50", "--set", "sweep.n_seeds=2", "--quiet", "--out", "stepfit")
    jaxfit("--config", "spirals.toml", *[a for o in SMALL_SPIRALS for a in ("--set", o)], "--quiet", "--out", "spirals")
    for run_dir, n_models in (("stepfit", 2 * 2), ("spirals", 2 * 2 * 2)):
        assert len(json.loads((user / run_dir / "summary.json").read_text())["models"]) == n_models
    assert sorted(p.name for p in user.iterdir() if p.name != "__pycache__") == ["spirals", "spirals.py", "spirals.toml", "stepfit"]


def test_the_readme_shows_the_example_as_it_is():
    """README's "Your own experiment" shows examples/spirals.py verbatim, docs/experiments.md
    shows it and its config, and the code is about 40 lines (imports and docstrings aside)."""
    readme, docs = (ROOT / "README.md").read_text(), (ROOT / "docs" / "experiments.md").read_text()
    code = (SPIRALS.parent / "spirals.py").read_text()
    body = code[code.index("from dataclasses") :]
    assert body in readme and body in docs and SPIRALS.read_text() in docs
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith(("import ", "from ", '"""', "#"))]
    assert len(lines) <= 45, len(lines)


@pytest.mark.bad_input
def test_an_experiments_shape_mistakes_are_named_while_compiling(monkeypatch):
    """What an experiment hands the engine is checked before anything trains (jaxfit/checks.py):
    a batch of the wrong shape and a metric that is not one number are named."""
    from jaxfit.experiments.stepfit import StepfitTask

    cfg = config.load("stepfit", ["train.steps=10", "sweep.n_seeds=1"])
    sampler = StepfitTask.sampler
    monkeypatch.setattr(StepfitTask, "sampler", lambda self, *args: lambda *a: tuple(v[:, None] for v in sampler(self, *args)(*a)))
    with pytest.raises(
        ExperimentError, match=r"StepfitTask: sampler\(model table 'mlp', 100\)\(data, key, step\) returned x of shape \(100, 1, 1\)"
    ):
        sweep.prepare(cfg)
    monkeypatch.undo()
    monkeypatch.setattr(StepfitTask, "evaluate", lambda self, module, params, data: {"val_loss": jnp.zeros(3)})
    with pytest.raises(ExperimentError, match="'val_loss': ArrayLike|one float number"):
        sweep.prepare(cfg)


SPIRALS_NNX = ROOT / "examples" / "spirals_nnx.toml"


@pytest.mark.slow
def test_an_nnx_experiment_runs_from_the_cli(tmp_path):
    """examples/spirals_nnx.py: the same experiment with its network as a flax.nnx.Module."""
    out = tmp_path / "spirals_nnx"
    sets = [a for o in SMALL_SPIRALS for a in ("--set", o)]
    assert run.main(["--config", str(SPIRALS_NNX), *sets, "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_spirals(summary, report.load_history(out / "history.npz"), 0.9)
    with np.load(out / "params.npz") as params:
        assert {k.split("/")[2] for k in params.files} == {"layer1", "layer2", "layer3"}  # the NNX module's own names


def test_an_nnx_module_is_the_same_function_split_and_merged():
    """NNXModule (nnx.split once, nnx.merge inside each trace) against calling the NNX module
    itself: the same outputs and gradients under jit and vmap; a Dropout's mask follows the
    step's key (the same key, the same mask) and is off in eval mode."""
    import jax
    from flax import nnx

    from jaxfit.experiment import NNXModule

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense, self.drop = nnx.Linear(3, 4, rngs=rngs), nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x, train: bool):
            return self.drop(self.dense(x), deterministic=not train)

    net = Net(nnx.Rngs(0))
    wrapped = NNXModule(net)
    params = wrapped.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(jax.jit(lambda p: wrapped.apply({"params": p}, x, train=False))(params), net(x, train=False))
    grad = jax.grad(lambda p: wrapped.apply({"params": p}, x, train=False).sum())(params)
    expected = nnx.grad(lambda m: m(x, train=False).sum())(net)
    np.testing.assert_array_equal(grad["dense"]["kernel"], expected.dense.kernel[...])
    mask = jax.jit(lambda p, k: wrapped.apply({"params": p}, x, train=True, rngs={"dropout": k}) != 0)
    key = jax.random.key(1)
    assert np.array_equal(mask(params, key), mask(params, key)) and not np.array_equal(mask(params, key), mask(params, jax.random.key(2)))
    batched = jax.vmap(lambda p, k: wrapped.apply({"params": p}, x, train=True, rngs={"dropout": k}))
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    assert batched(stacked, jax.random.split(key, 2)).shape == (2, 2, 4)


TEACHER_STUDENT = ROOT / "examples" / "teacher_student.toml"


@pytest.mark.slow
def test_data_per_model_table_gives_each_group_its_own_teacher(tmp_path):
    """examples/teacher_student.py: `data(model)` is called once per model table, each group
    trains and is evaluated on its own teacher, and one run compares the teachers seed by seed."""
    small = ["sweep.n_seeds=6", "train.steps=600", "train.stop_at=0.005"]
    cfg = config.load(str(TEACHER_STUDENT), small)
    prepared = sweep.prepare(cfg)
    teachers = [np.asarray(d.task["teacher"][0]) for d in prepared.data]
    assert [t.shape for t in teachers] == [(8, 4), (8, 8), (8, 12)]  # each group's own, in group order
    for d, g in zip(prepared.data, cfg.groups):
        np.testing.assert_array_equal(np.asarray(d.task["eval"]["val"].y).reshape(-1)[:5], cfg.task.data(g.model)["eval"]["val"][1][:5, 0])
    out = tmp_path / "ts"
    assert run.main(["--config", str(TEACHER_STUDENT), *[a for o in small for a in ("--set", o)], "--quiet", "--out", str(out)]) == 0
    analysis = json.loads((out / "summary.json").read_text())["analysis"]
    assert {c["factor"] for c in analysis["comparisons"]} == {"model.teacher"} and len(analysis["comparisons"]) == 3
    inits = {m["group"]: m["val_loss_init"] for m in json.loads((out / "summary.json").read_text())["models"] if m["seed"] == 0}
    assert len(set(inits.values())) == 3  # the same initial student, three teachers: three losses


@pytest.mark.slow
def test_data_without_a_model_is_made_once_for_every_group(monkeypatch):
    """data(): one call, one copy on the devices, whatever the number of groups."""
    from jaxfit.experiments.sumsq import SumsqTask

    calls = []
    made = SumsqTask.data
    monkeypatch.setattr(SumsqTask, "data", lambda self: calls.append(1) or made(self))
    cfg = config.load("sumsq_dropout_ablation", ["task.n_samples=1100", "task.n_train=1000", "train.epochs=1", "sweep.n_seeds=1"])
    prepared = sweep.prepare(cfg)
    assert len(cfg.groups) > 2 and len(calls) == 1
    assert all(d is prepared.data[0] for d in prepared.data)


@pytest.mark.bad_input
def test_a_per_table_data_mistake_names_the_table(tmp_path, capsys):
    """A mistake in what data(model) returns is one line naming the table it was made for."""
    code = (ROOT / "examples" / "teacher_student.py").read_text().replace('"teacher_student"', '"bad_teacher_student"')
    (tmp_path / "bad.py").write_text(code.replace('return {"teacher": (w1, w2), "eval"', 'return {"teacher": (w1, w2), "evals"'))
    toml = TEACHER_STUDENT.read_text().replace('"teacher_student.py"', '"bad.py"').replace('"teacher_student"', '"bad_teacher_student"')
    (tmp_path / "bad.toml").write_text(toml)
    assert run.main(["--config", str(tmp_path / "bad.toml"), "--quiet", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "data(model table 'student' of group 'teacher_4')" in err and '"eval" entry' in err, err
    assert not (tmp_path / "out").exists()
