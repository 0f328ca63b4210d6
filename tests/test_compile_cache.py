"""The persistent compilation cache, through real processes as a user meets it: a second run
reads its programs back, changed code compiles anew, `JAXFIT_COMPILE_CACHE=off` turns it off,
the default folder is the user cache folder, and two runs at once share one folder safely."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STEPFIT
from tests.test_long_runs import assert_same_files

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def start(out: Path, env: dict[str, str | None], *args: str) -> subprocess.Popen:
    """`python -m jaxfit.run` (the small stepfit run unless `args` say otherwise) into `out`;
    `env`: variables set (None: removed)."""
    environment = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    command = [sys.executable, "-m", "jaxfit.run", *(args or STEPFIT), "--out", str(out)]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, out: Path) -> dict:
    """The run's cache hits, misses and folder, once it has ended well."""
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return json.loads((out / "summary.json").read_text())["run"]["compile_cache"]


def run_with(out: Path, env: dict[str, str | None], *args: str) -> dict:
    return finish(start(out, env, *args), out)


def test_a_second_run_reads_its_programs_from_the_cache(tmp_path):
    env = {"JAXFIT_COMPILE_CACHE": str(tmp_path / "cache")}
    first, second = run_with(tmp_path / "a", env), run_with(tmp_path / "b", env)
    assert first["misses"] > 0 and first["hits"] == 0 and first["folder"] == str(tmp_path / "cache")
    assert second["hits"] == first["misses"] and second["misses"] == 0
    assert_same_files(tmp_path / "a", tmp_path / "b")


def test_changed_code_is_compiled_anew(tmp_path):
    for name in ("spirals.py", "spirals.toml"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    args = ["--config", str(tmp_path / "spirals.toml"), "--set", "train.steps=50", "--set", "sweep.n_seeds=2", "--quiet"]
    env = {"JAXFIT_COMPILE_CACHE": str(tmp_path / "cache")}
    first = run_with(tmp_path / "a", env, *args)
    assert run_with(tmp_path / "b", env, *args)["misses"] == 0
    code = (tmp_path / "spirals.py").read_text()
    assert "jnp.tanh(nn.Dense(self.width)(x))" in code
    (tmp_path / "spirals.py").write_text(code.replace("jnp.tanh(nn.Dense(self.width)(x))", "jnp.tanh(2.0 * nn.Dense(self.width)(x))"))
    changed = run_with(tmp_path / "c", env, *args)
    assert first["misses"] > 0 and changed["misses"] > 0


def test_off_turns_it_off_and_the_default_is_the_user_cache_folder(tmp_path):
    off = run_with(tmp_path / "a", {"JAXFIT_COMPILE_CACHE": "off", "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert off == {"hits": 0, "misses": 0, "folder": "off"} and not (tmp_path / "xdg" / "jaxfit").exists()
    default = run_with(tmp_path / "b", {"JAXFIT_COMPILE_CACHE": None, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert default["folder"] == str(tmp_path / "xdg" / "jaxfit" / "jax") and default["misses"] > 0
    assert any((tmp_path / "xdg" / "jaxfit" / "jax").iterdir())


def test_two_runs_at_once_share_one_folder(tmp_path):
    env = {"JAXFIT_COMPILE_CACHE": str(tmp_path / "cache")}
    procs = [start(tmp_path / name, env) for name in ("a", "b")]
    for proc, name in zip(procs, ("a", "b")):
        finish(proc, tmp_path / name)
    assert_same_files(tmp_path / "a", tmp_path / "b")
    third = run_with(tmp_path / "c", env)
    assert third["hits"] > 0 and third["misses"] == 0
    assert_same_files(tmp_path / "a", tmp_path / "c")
