"""The engine's figures draw what happened: a stopped model counts at its last value in every
band (no median rises because models left), up to 20 seeds a cell each model's own curve, every
panel on the same axes in steps, and the performance profile of every cell."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from jaxfit import plots, report, run
from jaxfit.runfiles import load_history, read_summary

# stepfit's two widths; the models stop (val_loss <= 0.07) at different steps
STOPPING = ["--config", "stepfit", "--set", "train.steps=2000", "--set", "train.stop_at=0.07", "--quiet"]


def test_a_band_does_not_rise_when_the_best_models_stop():
    """Two models fall to 0.01 and stop at points 3 and 4; two stay at 0.1. Over the models
    still training the median would jump from 0.055 to 0.1; held at their last values it does not."""
    good = [0.5, 0.1, 0.03, 0.01, np.nan, np.nan]
    values = np.array([good, [0.5, 0.1, 0.05, 0.02, 0.01, np.nan], [0.5] + [0.1] * 5, [0.5] + [0.1] * 5])
    median, low, high = plots.spread_band(values)
    assert np.all(np.diff(median) <= 0) and np.all(np.diff(low) <= 0) and np.all(np.diff(high) <= 0)
    np.testing.assert_allclose(median, [0.5, 0.1, 0.075, 0.06, 0.055, 0.055])
    with np.errstate(all="ignore"):
        assert np.nanmedian(values, 0)[-1] > median[-2]  # what the band over the models still training drew


def test_held_values_carry_a_stopped_models_last_value():
    values = np.array([[3.0, 2.0, np.nan, np.nan], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(plots.held(values), [[3, 2, 2, 2], [4, 3, 2, 1]])


@pytest.mark.parametrize("finals, goal", [([0.3, 0.01, np.nan, 0.3, 2.0], "min"), ([0.9, 0.5, np.nan, 0.99], "max")])
def test_the_performance_profile_counts_the_models_at_least_as_good_as_tau(finals, goal):
    finals = np.array(finals)
    taus = np.array([0.0, 0.01, 0.2, 0.3, 0.5, 0.95, 1.0, 5.0])
    better = (lambda v, t: v <= t) if goal == "min" else (lambda v, t: v >= t)
    expected = [sum(bool(np.isfinite(v) and better(v, t)) for v in finals) / len(finals) for t in taus]
    np.testing.assert_allclose(plots.profile(finals, taus, goal), expected)


def drawn(monkeypatch, tmp_path, seeds: int) -> tuple[dict, dict, dict]:
    """A stepfit run of `seeds` seeds a cell whose models stop at different steps, and the
    figures its report draws, captured before saving: {file name: figure}."""
    out = tmp_path / f"run{seeds}"
    assert run.main([*STOPPING, "--set", f"sweep.n_seeds={seeds}", "--out", str(out)]) == 0
    figures: dict = {}
    monkeypatch.setattr(plots, "save", lambda fig, _out, name: figures.__setitem__(name, fig))
    report.redraw(out)
    return figures, read_summary(out), load_history(out / "history.npz")


@pytest.mark.slow
def test_stopped_models_are_held_and_few_seeds_are_drawn_one_by_one(monkeypatch, tmp_path):
    figures, summary, history = drawn(monkeypatch, tmp_path, seeds=6)
    stops = {m["stop_step"] for m in summary["models"] if m["reached"]}
    assert len(stops) > 2 and not all(m["reached"] for m in summary["models"])  # models stop at different steps
    assert {"loss_curves.png", "cells.png", "performance_profile.png", "reached_by_step.png"} <= set(figures)
    axes = [ax for ax in figures["loss_curves.png"].axes if ax.get_visible()]
    assert len({ax.get_xlim() for ax in axes}) == 1 and len({ax.get_ylim() for ax in axes}) == 1  # shared axes
    assert all(ax.get_xscale() == "log" for ax in axes) and axes[0].get_xlabel() == "step"
    for ax in axes:  # 6 seeds: a thin line per model and metric, and no band
        assert not any(isinstance(c, PolyCollection) for c in ax.collections)
        assert sum(line.get_linewidth() < 1 for line in ax.get_lines() if line.get_linestyle() != "None") >= 6 * 2
    values = history["val_loss"]
    held = plots.held(values)
    for i in range(len(summary["models"])):  # every stopped model counts at its last value to the end
        last = np.flatnonzero(np.isfinite(values[i]))[-1]
        assert np.all(held[i, last:] == values[i, last]) and not np.isnan(held[i, last:]).any()
    median, low, high = plots.spread_band(values)
    assert np.isfinite(median).all() and np.all(low <= median) and np.all(median <= high)
    profile = figures["performance_profile.png"].axes[0]
    assert len([line for line in profile.get_lines() if line.get_linestyle() != "--"]) == 2  # one step curve per cell


@pytest.mark.slow
def test_many_seeds_are_drawn_as_a_band_of_every_model(monkeypatch, tmp_path):
    figures, _, _ = drawn(monkeypatch, tmp_path, seeds=21)
    axes = [ax for ax in figures["loss_curves.png"].axes if ax.get_visible()]
    assert all(any(isinstance(c, PolyCollection) for c in ax.collections) for ax in axes)
    assert all("median and min-max over 21 seeds" in ax.get_title() for ax in axes)
