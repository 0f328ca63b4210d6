"""The statistics every run's report carries (jaxfit/analysis.py): the tests against scipy, the
cells and their pairing, the committed factorial's verdict reproduced by the engine, and the
figures at 2, 8 and 64 cells."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxfit import analysis, report, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("n, ties, seed", [(5, False, 0), (12, False, 1), (40, False, 2), (200, False, 4), (80, True, 5)])
def test_the_signed_rank_test_is_scipys(n, ties, seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(0.3, 1.0, n)
    if ties:
        d = np.round(d, 1)
    d = d[d != 0]
    method = "exact" if len(d) <= 50 and not ties else "approx"
    expected = scipy_stats.wilcoxon(d, method=method, correction=False).pvalue
    assert analysis.signed_rank(d) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "d",
    [
        [-25.0] * 5,
        [-25.0, -25, -50, -75, -100],
        [1.0, 1, 2, -2, 3, 3, 3, -1, 4],
        list(np.round(np.random.default_rng(3).normal(0.5, 1, 12), 0)),
    ],
)
def test_a_tied_signed_rank_test_is_the_exact_permutation_test(d):
    """Brute force: every one of the 2^n sign patterns, W+ of the mid-ranks (scipy's rankdata)."""
    import itertools

    d = np.array([x for x in d if x != 0])
    ranks = scipy_stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    sums = np.array([ranks[np.array(signs, bool)].sum() for signs in itertools.product([0, 1], repeat=len(d))])
    expected = min(1.0, 2 * min(np.mean(sums <= observed + 1e-9), np.mean(sums >= observed - 1e-9)))
    assert analysis.signed_rank(d) == pytest.approx(expected, rel=1e-12)
    assert analysis.signed_rank(np.array([-25.0] * 5)) == pytest.approx(0.0625)  # no pattern is rarer than 2 / 2^5


@pytest.mark.parametrize("only_a, only_b", [(0, 0), (1, 0), (3, 9), (8, 228), (14, 28), (50, 50)])
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_seeds(only_a, only_b):
    expected = 1.0 if only_a + only_b == 0 else scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert analysis.mcnemar(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_the_paired_success_interval_is_newcombes_published_one():
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables, ch. 8 (Cavo et al.
    2012): 59 both, 6 only first, 16 only second, 80 neither: -0.0621 (95% CI -0.1186 to -0.0046)."""
    low, high = analysis.paired_difference_interval(59, 16, 6, 80)  # B - A with B the first test
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    assert analysis.paired_difference_interval(59, 6, 16, 80) == pytest.approx((0.0046, 0.1186), abs=1e-4)  # A and B swapped
    low, high = analysis.paired_difference_interval(10, 0, 0, 0)  # nothing differs: an interval about 0, not a point
    assert low < 0 < high


@pytest.mark.parametrize("n, seed", [(6, 0), (9, 1), (15, 2), (24, 3)])
def test_the_hodges_lehmann_interval_is_the_signed_rank_tests_inversion(n, seed):
    """Brute force with scipy: a shift theta between two Walsh averages is inside the interval
    exactly when scipy's exact signed-rank test of d - theta does not reject at 0.05."""
    d = np.random.default_rng(seed).normal(0.5, 1.0, n)
    estimate, low, high = analysis.hodges_lehmann(d)
    walsh = np.sort([(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)])
    assert estimate == pytest.approx(np.median(walsh))
    between = (walsh[:-1] + walsh[1:]) / 2
    kept = [t for t in between if scipy_stats.wilcoxon(d - t, method="exact").pvalue > 0.05]
    assert low == pytest.approx(walsh[np.searchsorted(walsh, min(kept)) - 1])
    assert high == pytest.approx(walsh[np.searchsorted(walsh, max(kept))])
    assert analysis.hodges_lehmann(d[:5])[1:] == (None, None)  # 5 pairs: no 95% interval exists


def test_the_normal_hodges_lehmann_interval_covers_the_true_shift():
    """Past 50 pairs the interval comes from the normal approximation: over 400 samples of 80
    pairs it covers the true shift about 95% of the time."""
    rng = np.random.default_rng(7)
    covered = [low <= 0.3 <= high for _, low, high in (analysis.hodges_lehmann(rng.normal(0.3, 1, 80)) for _ in range(400))]
    assert 0.92 <= np.mean(covered) <= 0.98


@pytest.mark.parametrize("pairs, rate_a, rate_b, alpha", [(12, 0.1, 0.4, 0.05), (25, 0.05, 0.2, 0.01), (20, 0.3, 0.3, 0.05)])
def test_mcnemar_power_is_the_enumerated_chance_of_rejecting(pairs, rate_a, rate_b, alpha):
    """Every (only A, only B) outcome of the trinomial, tested with scipy's exact binomial test."""
    expected = 0.0
    for a in range(pairs + 1):
        for b in range(pairs + 1 - a):
            chance = scipy_stats.multinomial.pmf([a, b, pairs - a - b], pairs, [rate_a, rate_b, 1 - rate_a - rate_b])
            if a + b and scipy_stats.binomtest(a, a + b, 0.5).pvalue <= alpha:
                expected += chance
    assert analysis.mcnemar_power(pairs, rate_a, rate_b, alpha) == pytest.approx(expected, abs=1e-9)


def test_seeds_needed_reach_the_power_they_promise():
    n = analysis.seeds_for_mcnemar(40, 2, 8, 0.05)
    assert analysis.mcnemar_power(n, 2 / 40, 8 / 40, 0.05) >= 0.8 > analysis.mcnemar_power(n - 5, 2 / 40, 8 / 40, 0.05)
    assert analysis.seeds_for_mcnemar(40, 5, 5, 0.05) is None  # nothing seen to differ
    rng = np.random.default_rng(3)
    m = analysis.seeds_for_signed_rank(rng.normal(0.4, 1.0, 60), 0.05)
    rejected = [scipy_stats.wilcoxon(rng.normal(0.4, 1.0, m)).pvalue < 0.05 for _ in range(300)]
    assert 0.7 <= np.mean(rejected) <= 0.92  # Noether's estimate from a sample of 60: about 80 % power


@pytest.mark.parametrize("successes, n", [(20, 40), (40, 40), (3, 40), (1, 2)])
def test_seeds_for_five_points_narrow_the_wilson_interval_to_five_points(successes, n):
    m = analysis.seeds_for_width(successes, n)
    rate = successes / n
    width = [np.diff(scipy_stats.binomtest(round(rate * k), k).proportion_ci(method="wilson"))[0] for k in (m - 1, m)]
    assert width[1] <= 0.1 + 0.01 and (m == 1 or width[0] > 0.1 - 0.01)  # ±5 points (to the rounding of the count)


@pytest.mark.parametrize("seed", range(3))
def test_the_rank_biserial_effect_is_the_signed_rank_sums_difference(seed):
    """Kerby's simple difference formula with scipy's ranks: (W+ - W-) / (W+ + W-), ties given
    their mean rank, zeros dropped."""
    d = np.round(np.random.default_rng(seed).normal(0.2, 1, 30), 1)
    nonzero = d[d != 0]
    ranks = scipy_stats.rankdata(np.abs(nonzero))
    expected = (ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum()
    assert analysis.rank_biserial(d) == pytest.approx(expected)


def test_the_rank_biserial_effect_runs_from_minus_one_to_one():
    assert analysis.rank_biserial(np.array([1.0, 2.0, 3.0])) == 1.0
    assert analysis.rank_biserial(np.array([-1.0, -2.0])) == -1.0
    assert analysis.rank_biserial(np.array([1.0, -1.0])) == 0.0


def test_groups_are_told_apart_by_what_differs_between_them():
    groups = {
        "narrow_constant": {"model": {"name": "mlp", "width": 1, "init": ["he"]}, "schedule": {"name": "constant"}},
        "wide_cyclic": {"model": {"name": "mlp", "width": 8, "init": ["he"]}, "schedule": {"name": "cyclic", "max_lr": 0.5}},
        "twin": {"model": {"name": "mlp", "width": 8, "init": ["he"]}, "schedule": {"name": "cyclic", "max_lr": 0.5}},
    }
    coords = analysis.group_coordinates(groups)
    assert coords["narrow_constant"] == {"group": "narrow_constant", "model.width": 1, "schedule": "constant"}
    assert (
        coords["wide_cyclic"]["schedule"] == "cyclic" and "schedule.max_lr" not in coords["wide_cyclic"]
    )  # a whole table is one coordinate
    assert analysis.group_coordinates({"only": groups["twin"]}) == {"only": {}}


def synthetic(n_seeds: int = 40) -> tuple[list[dict], dict]:
    """Two groups (width 1, 8) x two learning rates: width decides success for most seeds, the
    learning rate for none; the same seed index is the same draw in every cell."""
    rng = np.random.default_rng(0)
    luck = rng.uniform(size=n_seeds)
    models = []
    for group, width in (("narrow", 1), ("wide", 8)):
        for lr in (0.1, 0.2):
            for seed in range(n_seeds):
                reached = bool(luck[seed] < (0.2 if width == 1 else 0.8))
                models.append(
                    {
                        "group": group,
                        "seed": seed,
                        "init": "he",
                        "optim.lr": lr,
                        "reached": reached,
                        "diverged": False,
                        "steps": int(1000 * (1 + luck[seed])) if reached else 5000,
                        "stop_step": int(1000 * (1 + luck[seed])) if reached else None,
                        "val_loss_final": 0.001 if reached else 0.0658 * (1 + 0.001 * luck[seed]),
                    }
                )
    groups = {
        "narrow": {"model": {"name": "mlp", "width": 1}, "optim": {"name": "sgd", "lr": [0.1, 0.2]}},
        "wide": {"model": {"name": "mlp", "width": 8}, "optim": {"name": "sgd", "lr": [0.1, 0.2]}},
    }
    return models, groups


def test_cells_pair_on_shared_seeds_and_the_factor_that_matters_comes_first():
    models, groups = synthetic()
    result = analysis.analyse(models, groups, "val_loss", 0.005, 5000)
    assert [c["n"] for c in result["cells"]] == [40] * 4 and len(result["comparisons"]) == 4  # 2 width pairs, 2 lr pairs
    width, lr = result["factors"]
    assert (width["factor"], width["a"], width["b"], width["strata"], width["pairs"]) == ("model.width", 1, 8, 2, 80)
    expected_only_b = 2 * sum(0.2 <= u < 0.8 for u in np.random.default_rng(0).uniform(size=40))
    assert (width["only_a"], width["only_b"]) == (0, expected_only_b) and width["p"] < 1e-6
    assert (lr["factor"], lr["only_a"], lr["only_b"], lr["p"]) == ("optim.lr", 0, 0, 1.0)
    stuck = [m["val_loss_final"] for m in models if not m["reached"]]
    assert result["outcome_classes"] == ["reached", f"≈{np.median(stuck):.4g}"]  # one plateau class, named by its level
    one = next(c for c in result["comparisons"] if c["factor"] == "model.width")
    assert one["notes"] == [] and one["steps"]["pairs"] == sum(
        m["reached"] for m in models if m["group"] == "wide" and m["optim.lr"] == 0.1
    )
    assert next(c for c in result["comparisons"] if c["factor"] == "optim.lr")["notes"] == [
        "0 discordant seeds: too few for McNemar to reach p < 0.05"
    ]


@pytest.mark.parametrize("seed", range(5))
def test_holm_rejects_what_the_step_down_procedure_rejects(seed):
    """Independent of analysis.holm: H_(i) is rejected at alpha iff p_(j) <= alpha / (m - j + 1)
    for every j <= i (1-based ranks); the adjusted p is below alpha exactly then."""
    rng = np.random.default_rng(seed)
    p = list(rng.uniform(0, 0.1, size=12) ** rng.uniform(1, 3, size=12)) + [0.5, 1.0]
    adjusted = analysis.holm(p)
    order = np.argsort(p)
    for alpha in (0.001, 0.01, 0.05, 0.1, 0.3):
        rejected, going = set(), True
        for j, i in enumerate(order):
            going = going and p[i] <= alpha / (len(p) - j)
            if going:
                rejected.add(int(i))
        assert {i for i, a in enumerate(adjusted) if a <= alpha} == rejected, alpha
    assert all(a >= q for a, q in zip(adjusted, p)) and max(adjusted) <= 1.0


def test_every_test_of_a_run_carries_its_holm_p_over_its_family():
    models, groups = synthetic()
    result = analysis.analyse(models, groups, "val_loss", 0.005, 5000)
    for kind in ("success", "steps", "final"):
        family = [c[kind] for c in result["comparisons"]]
        assert [e["holm_p"] for e in family] == analysis.holm([e["p"] for e in family])
    assert [f["holm_p"] for f in result["factors"]] == analysis.holm([f["p"] for f in result["factors"]])
    text = "\n".join(report.analysis_markdown(result, True, "val_loss"))
    assert text.count("| Holm p |") == 2 and "steps Holm p" in text and "final Holm p" in text
    assert "Changing success at 0.05 after adjustment: model.width (1 vs 8)." in text
    assert "Changing the final metric at 0.05 after adjustment: model.width (1 vs 8)." in text
    assert [f["final"]["holm_p"] for f in result["factors"]] == analysis.holm([f["final"]["p"] for f in result["factors"]])


def test_few_seeds_are_said_to_be_few():
    models, groups = synthetic(n_seeds=3)
    result = analysis.analyse(models, groups, "val_loss", 0.005, 5000)
    assert all(any("too few" in note for note in c["notes"]) for c in result["comparisons"])


def test_the_fraction_reached_by_step_counts_each_models_stop_step():
    models, _ = synthetic()
    cell = analysis.Cell((), tuple(range(40)))
    steps = np.array([0, 1000, 1500, 1999, 5000])
    share, low, high = analysis.reached_by(models, cell, steps)
    stops = np.array([m["stop_step"] if m["reached"] else np.inf for m in models[:40]])
    np.testing.assert_array_equal(share, [(stops <= t).mean() for t in steps])
    assert np.all(low <= share) and np.all(share <= high)


def test_the_engine_reproduces_the_factorials_committed_verdict():
    """results/stepfit/REPORT.md: width 229 vs 9 discordant seeds (p = 3e-56), fresh samples 28 vs 2,
    CyclicLR 13 vs 27 (p = 0.038), each over 400 pairs in 4 strata."""
    folder = ROOT / "results" / "stepfit" / "factorial"
    models = json.loads((folder / "summary.json").read_text())["models"]
    groups = tomllib.loads((folder / "config.toml").read_text())["groups"]
    factors = {f["factor"]: f for f in analysis.analyse(models, groups, "val_loss", 0.005, 1_000_001)["factors"]}
    assert {k: (f["only_a"], f["only_b"], f["pairs"], f["strata"]) for k, f in factors.items()} == {
        "model.width": (9, 229, 400, 4),
        "model.train_on": (28, 2, 400, 4),
        "schedule": (27, 13, 400, 4),
    }
    assert f"{factors['model.width']['p']:.1g}" == "3e-56" and f"{factors['schedule']['p']:.2g}" == "0.038"
    assert list(factors) == ["model.width", "model.train_on", "schedule"]  # largest change in success first


@pytest.mark.slow
@pytest.mark.parametrize("n_lr", [1, 4, 32])  # 2, 8 and 64 cells
def test_summary_and_figures_at_2_8_and_64_cells(tmp_path, capsys, n_lr):
    """A spirals sweep with 2 init schemes x n_lr learning rates: the report holds the paired
    analysis, and each figure wraps at 4 panels a row (at most 64 panels)."""
    import matplotlib.image

    lrs = ",".join(str(0.001 * (k + 1)) for k in range(n_lr))
    out = tmp_path / "run"
    args = [
        "--config",
        str(ROOT / "examples" / "spirals.toml"),
        "--set",
        "sweep.n_seeds=2",
        "--set",
        "train.steps=50",
        "--set",
        f"optim.lr=[{lrs}]",
        "--set",
        "train.stop_at=0.6",
        "--quiet",
        "--out",
        str(out),
    ]
    assert run.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    cells = summary["analysis"]["cells"]
    assert len(cells) == 2 * n_lr and {c["n"] for c in cells} == {2}
    text = (out / "summary.md").read_text()
    assert "## Outcomes per cell" in text and "### Factors, pooled over the others" in text and "Holm p" in text
    assert {f["factor"] for f in summary["analysis"]["factors"]} == ({"init", "optim.lr"} if n_lr > 1 else {"init"})
    for name in ("loss_curves.png", "reached_by_step.png", "cells.png"):
        height, width = matplotlib.image.imread(out / name).shape[:2]
        if name != "cells.png":
            columns = min(4, 2 * n_lr)
            rows = -(-min(2 * n_lr, 64) // 4)
            assert width <= 4.7 * columns * 110 + 10 and height <= 3.9 * rows * 110 + 60, (name, width, height)
    assert report.main([str(out)]) == 0  # the analysis is recomputed from the files: the same
    assert json.loads((out / "summary.json").read_text())["analysis"] == summary["analysis"]


# ----------------------------------------------------------------------------- run files sized for many models


def test_a_metric_the_same_across_a_seed_set_is_stored_once_and_read_back_whole(tmp_path):
    rng = np.random.default_rng(0)
    set_index = np.repeat(np.arange(3), 4)
    train_loss = rng.uniform(size=(12, 5)).astype(np.float32)
    train_loss[0, 3:] = np.nan  # model 0 stopped after 3 points
    lr = np.where(np.isfinite(train_loss), np.array([0.1, 0.2, 0.3], np.float32)[set_index, None], np.nan).astype(np.float32)
    val = rng.uniform(size=(12, 5)).astype(np.float32)
    arrays = {"step": np.arange(5), "train_loss": train_loss, "lr": lr, "val_loss": val}
    packed = report.pack_history(arrays, set_index)
    assert "lr" not in packed and packed["lr@set"].shape == (3, 5) and "val_loss" in packed  # val_loss differs per model
    np.savez_compressed(tmp_path / "history.npz", **packed)
    back = report.load_history(tmp_path / "history.npz")
    assert back.keys() == arrays.keys()
    for name, values in arrays.items():
        assert back[name].dtype == values.dtype and np.array_equal(back[name], values, equal_nan=True), name
    lr[5, 2] = 0.25  # one model of a set differs: stored whole
    assert "lr" in report.pack_history({**arrays, "lr": lr}, set_index)
    np.savez(tmp_path / "old.npz", **arrays)  # a folder written before packing reads the same
    assert all(np.array_equal(report.load_history(tmp_path / "old.npz")[k], v, equal_nan=True) for k, v in arrays.items())


@pytest.mark.slow
def test_a_runs_files_are_compressed_and_read_back_whole(tmp_path, stepfit_run):
    """A fresh run's history.npz and params.npz are compressed zip members."""
    import zipfile

    for name in ("history.npz", "params.npz"):
        with zipfile.ZipFile(stepfit_run / name) as z:
            assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}, name
    assert "lr@set" in np.load(stepfit_run / "history.npz").files and report.load_history(stepfit_run / "history.npz")["lr"].shape == (
        6,
        300,
    )


@pytest.mark.parametrize("n_models", [report.INLINE_MODELS, report.INLINE_MODELS + 1])
def test_the_model_entries_of_a_large_run_go_to_a_gzip_file_read_back_whole(tmp_path, n_models):
    rng = np.random.default_rng(1)
    models = [
        {"group": "g", "seed": i, "loss": float(np.float32(rng.uniform())), "stop_step": None if i % 3 else i, "reached": bool(i % 2)}
        for i in range(n_models)
    ]
    summary = {"run": {"name": "x"}, "models": models, "analysis": {"cells": []}}
    report.write_summary(tmp_path, summary)
    inline = n_models <= report.INLINE_MODELS
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / report.MODELS_FILE).exists() != inline
    assert on_disk["models"] == (models if inline else report.MODELS_FILE) and on_disk["run"] == summary["run"]
    assert report.read_summary(tmp_path) == summary
    report.write_summary(tmp_path, summary)  # written again: the same bytes (no timestamp in the gzip header)
    if not inline:
        first = (tmp_path / report.MODELS_FILE).read_bytes()
        report.write_summary(tmp_path, summary)
        assert (tmp_path / report.MODELS_FILE).read_bytes() == first
