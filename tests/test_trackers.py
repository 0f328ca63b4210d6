"""Live trackers (--log tensorboard / wandb): what they hold is read back and compared with the
run's own files; logging changes no number; a resumed run continues the same tracker runs
without duplicate points; a missing extra is a one-line error."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxfit import config, outputs, plan, report, run, sweep, trackers
from tests.conftest import STEPFIT
from tests.test_long_runs import assert_same_files

pytest.importorskip("tensorboardX", reason="pip install -e '.[test]' (tensorboardX, wandb, tensorboard)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

SWEPT = [*STEPFIT, "--set", "groups.narrow.optim.lr=[0.05,0.1]"]  # a swept value: tags must name it


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


def scalars(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag of one TensorBoard run: (steps, values), as TensorBoard reads them."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    events.Reload()
    return {
        tag: (np.array([e.step for e in events.Scalars(tag)]), np.array([e.value for e in events.Scalars(tag)], np.float32))
        for tag in events.Tags()["scalars"]
    }


def wandb_records(out: Path, run_id: str) -> list:
    """Every record W&B wrote offline for one run id (all its .wandb files: a resumed run adds one),
    read from W&B's record log (LevelDB log format: a 7-byte file header, 32 KiB blocks,
    records of crc32 / length / type chunks)."""
    records = []
    for path in sorted(out.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")):
        data, offset, pending = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while offset + 7 <= len(data):
            if 32768 - offset % 32768 < 7:  # block trailer
                offset += 32768 - offset % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
            pending += data[offset + 7 : offset + 7 + length]
            offset += 7 + length
            if kind in (1, 4):  # a full record, or the last chunk of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                records.append(record)
                pending = b""
            elif kind == 0:
                break
    return records


def wandb_history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def models_of(out: Path) -> list[dict]:
    return json.loads((out / "summary.json").read_text())["models"]


def check_tensorboard(out: Path) -> None:
    """Each model's TensorBoard run holds exactly its history.npz points (finite ones, at their
    steps, each once); each seed set's bands are the quantiles across its seeds."""
    cfg = config.load(str(out / "config.toml"))
    history = report.load_history(out / "history.npz")
    steps, arrays = history["step"], {k: v for k, v in history.items() if v.ndim == 2}
    labels = [label for g in plan.expand(cfg) for label in g.labels]
    assert len(labels) == arrays["val_loss"].shape[0]
    for i, label in enumerate(labels):
        logged = scalars(out / "tensorboard" / trackers.model_path(label))
        for name, values in arrays.items():
            finite = np.isfinite(values[i])
            got_steps, got = logged[name]
            np.testing.assert_array_equal(got_steps, steps[finite], err_msg=f"{label} {name}")
            np.testing.assert_array_equal(got, values[i][finite], err_msg=f"{label} {name}")
    for path, index in trackers._sets(labels).items():
        median = scalars(out / "tensorboard" / path / "~median")["val_loss"]
        expected = np.nanmedian(arrays["val_loss"][index], axis=0)
        np.testing.assert_allclose(median[1], expected[np.isfinite(expected)], rtol=1e-6)


@pytest.mark.slow
def test_tensorboard_holds_every_point_of_every_model(tmp_path):
    out = tmp_path / "run"
    assert run.main([*SWEPT, "--log", "tensorboard", "--out", str(out)]) == 0
    check_tensorboard(out)
    paths = {p.relative_to(out / "tensorboard").as_posix() for p in (out / "tensorboard").rglob("events.out.tfevents.*")}
    assert "narrow/torch_default/optim.lr=0.05/seed_2" in {str(Path(p).parent) for p in paths}  # swept value, init, seed in the name
    run_events = EventAccumulator(str(out / "tensorboard" / "~run"), size_guidance={"tensors": 0, "images": 0})
    run_events.Reload()
    assert {"config/text_summary", "summary/text_summary"} <= set(run_events.Tags()["tensors"])
    assert {"val_loss", "loss_curves", "fitted"} <= set(run_events.Tags()["images"])  # the run's plots
    final = scalars(out / "tensorboard" / "wide/torch_default/seed_1")
    entry = [m for m in models_of(out) if m["group"] == "wide" and m["seed"] == 1][0]
    assert final["final/val_loss_final"][1][0] == np.float32(entry["val_loss_final"])


@pytest.mark.slow
def test_logging_changes_no_number(tmp_path, stepfit_run):
    assert run.main([*STEPFIT, "--log", "tensorboard", "--log", "wandb", "--out", str(tmp_path / "logged")]) == 0
    assert_same_files(stepfit_run, tmp_path / "logged")


@pytest.mark.slow
def test_wandb_offline_run_per_group_holds_config_and_points(tmp_path):
    out = tmp_path / "run"
    assert run.main([*SWEPT, "--log", "wandb", "--out", str(out)]) == 0
    ids = json.loads((out / "trackers.json").read_text())["wandb"]
    assert set(ids) == {"narrow", "wide"}
    history = report.load_history(out / "history.npz")
    steps, val_loss = history["step"], history["val_loss"]
    labels = [label for g in plan.expand(config.load(str(out / "config.toml"))) for label in g.labels]
    for group, run_id in ids.items():
        records = wandb_records(out, run_id)
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert runs and runs[0].run_group == "run" and runs[0].display_name == group  # W&B group: the run folder
        config_keys = {item.key for item in runs[0].config.update}
        assert {"group", "model", "optim", "schedule", "train", "task"} <= config_keys
        rows = [row for row in wandb_history(records) if "_step" in row]
        by_step = {row["_step"]: row for row in rows}
        assert len(by_step) == len(rows)  # one row per step
        for i, label in enumerate(labels):
            if label["group"] != group:
                continue
            key = "val_loss/" + trackers.model_path(label).split("/", 1)[1]  # e.g. val_loss/torch_default/optim.lr=0.05/seed_2
            got = {s: row[key] for s, row in by_step.items() if key in row}
            expected = {int(s): float(v) for s, v in zip(steps, val_loss[i]) if np.isfinite(v)}
            assert got.keys() == expected.keys() and all(np.float32(got[s]) == np.float32(expected[s]) for s in got), key
        assert any(k.endswith("/median") for k in by_step[int(steps[0])])


class Killed(BaseException):
    """A process killed after a chunk, its last checkpoint older than its tracker points."""


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_and_resumed_run_continues_the_same_tracker_runs_without_duplicates(tmp_path, monkeypatch, stepfit_run):
    out = tmp_path / "run"
    args = [
        *STEPFIT,
        "--set",
        "execution.chunk_epochs=20",
        "--set",
        "execution.checkpoint_every=2",
        "--log",
        "tensorboard",
        "--log",
        "wandb",
    ]
    on_chunk, calls = trackers.Trackers.on_chunk, []

    def dies_after_five(self, states, intervals_done):
        on_chunk(self, states, intervals_done)
        calls.append(intervals_done)
        if len(calls) == 5:  # points through chunk 5 are out; the checkpoint holds chunk 4
            raise Killed

    monkeypatch.setattr(trackers, "FLUSH_SECONDS", 0.0)  # every chunk's points on disk before the next
    monkeypatch.setattr(trackers.Trackers, "on_chunk", dies_after_five)
    with pytest.raises(Killed):
        run.main([*args, "--out", str(out)])
    monkeypatch.setattr(trackers.Trackers, "on_chunk", on_chunk)
    ids = json.loads((out / "trackers.json").read_text())
    assert ids["written_through"] == {"tensorboard": 100, "wandb": 100} and max(int(p.name) for p in (out / "checkpoints").iterdir()) == 80
    assert run.main(["--resume", str(out), "--quiet"]) == 0
    assert_same_files(stepfit_run, out)
    check_tensorboard(out)  # every point once
    assert json.loads((out / "trackers.json").read_text())["wandb"] == ids["wandb"]  # the same W&B runs
    for run_id in ids["wandb"].values():
        rows = wandb_history(wandb_records(out, run_id))
        points = [(key, row["_step"]) for row in rows if "_step" in row for key in row if "/seed_" in key]
        assert len(points) == len(set(points)) and max(step for _, step in points) == 300


@pytest.mark.slow
def test_from_python(tmp_path):
    cfg = config.load("stepfit", ["train.steps=200", "sweep.n_seeds=2", 'logging.to=["tensorboard"]'])
    out = tmp_path / "notebook"
    with trackers.Trackers(cfg, out) as live:
        result = sweep.run(cfg, quiet=True, on_chunk=live.on_chunk)
        outputs.write_run(out, cfg, result)
        live.finish(out)
    check_tensorboard(out)


@pytest.mark.bad_input
def test_a_missing_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails as if not installed
    assert run.main([*STEPFIT, "--log", "wandb", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "jaxfit[wandb]"' in err
    assert not (tmp_path / "run").exists()  # before anything is written
    assert run.main([*STEPFIT, "--log", "mlflow", "--out", str(tmp_path / "run")]) == 2
    assert "invalid choice: 'mlflow'" in capsys.readouterr().err


def test_the_logging_table_takes_an_empty_list_and_refuses_unknown_trackers():
    assert config.load("stepfit", ["logging.to=[]"]).logging.to == ()
    assert config.load("stepfit", ['logging.to=["wandb", "tensorboard"]']).logging.to == ("wandb", "tensorboard")
    with pytest.raises(config.ConfigError, match="logging.to"):
        config.load("stepfit", ['logging.to=["mlflow"]'])
