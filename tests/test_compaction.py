"""Compaction: once models stop, a group's chunks run only the models still training, in the
smallest bucket that holds them, and no bit changes --
every state leaf, whichever chunk the models stop in, through a resume and across processes."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxfit import config, plan, run, sweep
from tests.test_compile_cache import finish, start
from tests.test_distributed import together
from tests.test_long_runs import assert_same_files

# stepfit's two widths; the models stop (val_loss <= 0.07) in different chunks of 10 steps
STOPPING = ["train.steps=2000", "sweep.n_seeds=8", "train.stop_at=0.07", "execution.chunk_epochs=10"]
STOPPING_ARGS = ["--config", "stepfit", *[a for o in STOPPING for a in ("--set", o)], "--quiet"]


def run_with(monkeypatch, mode: str, overrides: list[str] = STOPPING) -> sweep.Result:
    monkeypatch.setenv(sweep.COMPACT_ENV, mode)
    return sweep.run(config.load("stepfit", overrides), quiet=True)


def assert_same_states(a: sweep.Result, b: sweep.Result) -> None:
    """Every state leaf equal, bit for bit (the history's scratch column aside: it holds what
    the last unlogged interval computed, and is never written out)."""
    for first, second in zip(a.states, b.states):
        for (path, x), (_, y) in zip(jax.tree_util.tree_flatten_with_path(first)[0], jax.tree_util.tree_flatten_with_path(second)[0]):
            x, y = np.asarray(x), np.asarray(y)
            if "history" in jax.tree_util.keystr(path):
                x, y = x[:, :-1], y[:, :-1]
            np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def uncompacted() -> sweep.Result:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_with(monkeypatch, "never")


def test_the_models_stop_in_different_chunks(uncompacted):
    stopped = [int(s) for state in uncompacted.states for s, a in zip(state.steps_done, state.active) if not a]
    assert len({s // 10 for s in stopped}) >= 4, stopped  # several chunks see models stop
    assert any(state.active.any() for state in uncompacted.states)  # and some train to the end


def test_compaction_changes_no_bit(monkeypatch, uncompacted):
    compacted = run_with(monkeypatch, "always")
    switches = compacted.timing["compaction"]["switches"]
    assert {s["group"] for s in switches} == {"narrow", "wide"} and all(s["models"] < 8 for s in switches), switches
    for switch in switches:  # each to the smallest bucket that holds the models still training then
        group = next(i for i, g in enumerate(uncompacted.groups) if g.group.name == switch["group"])
        state = uncompacted.states[group]
        training = int(np.sum(np.asarray(state.active) | (np.asarray(state.steps_done) > switch["step"])))
        assert switch["models"] == plan.bucket(training, 8), (switch, training)
    assert_same_states(uncompacted, compacted)
    assert compacted.timing["own_model_steps_per_s"] > 0


def test_buckets():
    assert [plan.bucket(n, 1000) for n in (0, 1, 2, 3, 4, 5, 9, 17, 33, 100, 129)] == [0, 2, 2, 3, 4, 5, 10, 20, 40, 112, 160]
    assert plan.bucket(90, 100) == 96 and plan.bucket(99, 100) == 100 and plan.bucket(3, 2) == 2
    sizes = {plan.bucket(n, 10**6) for n in range(1, 10**4)}
    assert len(sizes) <= 4 * 14 and all(b / a <= 1.25 for a, b in zip(sorted(sizes)[3:], sorted(sizes)[4:]))


def test_a_short_run_declines_to_compact_and_says_so(tmp_path):
    """Auto mode weighs a compile against what it saves. With the suite's shared cache another
    test may have compiled these programs already (a cache read of 0.3 s can pay), so this run
    has a process of its own with the cache off: every compile is a real one."""
    proc = start(tmp_path / "run", {"JAXFIT_COMPILE_CACHE": "off", sweep.COMPACT_ENV: None}, *STOPPING_ARGS)
    assert finish(proc, tmp_path / "run") == {"hits": 0, "misses": 0, "folder": "off"}
    record = json.loads((tmp_path / "run" / "summary.json").read_text())["run"]["compaction"]
    assert record["mode"] == "auto" and record["switches"] == []  # a 4 s compile would save less than a second
    assert record["declined"]["compile_s"] > record["declined"]["saving_s"] >= 0
    assert "compaction" in (tmp_path / "run" / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.fault
def test_compacted_run_resumed_in_the_middle_equals_the_plain_run(tmp_path, monkeypatch):
    monkeypatch.setenv(sweep.COMPACT_ENV, "never")
    assert run.main([*STOPPING_ARGS, "--out", str(tmp_path / "plain")]) == 0
    monkeypatch.setenv(sweep.COMPACT_ENV, "always")
    parts = tmp_path / "parts"
    assert run.main([*STOPPING_ARGS, "--set", "execution.checkpoint_every=3", "--out", str(parts), "--stop-after-chunks", "7"]) == 0
    assert not (parts / "summary.json").exists()
    assert run.main(["--resume", str(parts), "--quiet"]) == 0
    assert_same_files(tmp_path / "plain", parts)
    assert json.loads((parts / "summary.json").read_text())["run"]["compaction"]["switches"]


@pytest.mark.slow
@pytest.mark.fault
def test_two_processes_compacting_equal_two_processes_not_compacting(tmp_path):
    """Under jax.distributed each process compacts its own models (stopped and resumed on
    the way); the files equal those of the same two processes without compaction."""
    plain = together(*STOPPING_ARGS, "--out", str(tmp_path / "plain"), env={sweep.COMPACT_ENV: "never"})
    assert [p.returncode for p in plain] == [0, 0], [p.stderr[-2000:] for p in plain]
    env, two = {sweep.COMPACT_ENV: "always"}, tmp_path / "two"
    first = together(*STOPPING_ARGS, "--set", "execution.checkpoint_every=2", "--out", str(two), "--stop-after-chunks", "5", env=env)
    assert [p.returncode for p in first] == [0, 0], [p.stderr[-2000:] for p in first]
    second = together("--resume", str(two), "--quiet", env=env)
    assert [p.returncode for p in second] == [0, 0], [p.stderr[-2000:] for p in second]
    assert_same_files(tmp_path / "plain", two)
    assert json.loads((two / "summary.json").read_text())["run"]["compaction"]["switches"]


@pytest.mark.bad_input
def test_a_bad_compact_setting_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(sweep.COMPACT_ENV, "sometimes")
    assert run.main([*STOPPING_ARGS, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: $JAXFIT_COMPACT='sometimes': expected auto, always or never" and not (tmp_path / "run").exists()
