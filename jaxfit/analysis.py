"""The statistics that answer a run, for every experiment: cells, paired comparisons, factors,
outcome classes and the fraction reached by step t. Plain numpy on a run's summary entries (no
jax), so `python -m jaxfit.report` computes them from a run's files alone.

- A **cell** is the set of models that differ only in seed: one group, one init scheme, one value
  of each swept number. Its **coordinates** are the init scheme, the swept numbers, and the
  group's own settings where groups differ (a table whose `name` differs is one coordinate, named
  after the table, e.g. `schedule: constant | cyclic`; otherwise each differing key, e.g.
  `model.width: 1 | 8`); `group` itself where groups differ in nothing else.
- Two cells whose coordinates differ in exactly one are **paired** on the seed indices they share:
  every model of a run draws its initial weights and batches from the run seed and its seed index
  (not its group or position), so the same seed index in both cells is the same draw.
- Per comparison: success by exact McNemar (the discordant seeds), the final monitored metric and
  the steps to the threshold by a paired Wilcoxon signed-rank test. A model that never reached the
  threshold counts as taking every step of the run (its steps are censored there), and a pair
  counts for the steps only if one of the two reached it.
- A coordinate's **verdict** pools its comparisons over every combination of the others held
  fixed (the strata); the factors table ranks coordinates by the change in success they make
  (without a threshold: by the rank-biserial effect on the final metric).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

FEW_DISCORDANT = 6  # fewer discordant seeds than this cannot reach p < 0.05 (exact McNemar: 2 / 2^5 = 0.0625)
FEW_PAIRS = 6  # fewer pairs than this cannot reach p < 0.05 in an exact signed-rank test (2 / 2^5)
CLASS_TOLERANCE = 0.05  # final values within 5 % (relative) of their sorted neighbour are one outcome class
MAX_CLASSES = 6  # named classes; the rest are "other"


# ----------------------------------------------------------------------------- tests


# ----------------------------------------------------------------------------- sets of models


def coordinate_columns(models: list[dict]) -> list[str]:
    """group, seed, init and the swept keys (those whose values differ)."""
    fixed = ["group", "seed", "init"]
    keys = dict.fromkeys(k for m in models for k in m)  # a value swept in one group only is a column too
    swept = [k for k in keys if "." in k and len({m.get(k) for m in models}) > 1]
    return fixed + swept


def set_indices(models: list[dict]) -> np.ndarray:
    """Each model's seed set (`model_sets`) as an index 0..sets-1."""
    index = np.zeros(len(models), np.int32)
    for k, members in enumerate(model_sets(models).values()):
        index[members] = k
    return index


def model_sets(models: list[dict]) -> dict[tuple, list[int]]:
    """Indices of the models that differ only in seed, keyed by their other coordinates."""
    columns = [c for c in coordinate_columns(models) if c != "seed"]
    sets: dict[tuple, list[int]] = {}
    for i, m in enumerate(models):
        sets.setdefault(tuple(m.get(c) for c in columns), []).append(i)
    return sets


def clusters(values: list[float], tolerance: float = 0.05) -> list[tuple[float, int]]:
    """Group values that lie within `tolerance` (relative) of their sorted neighbour; return
    (median, count) of each group, most populous first."""
    values = sorted(v for v in values if v is not None and v > 0)
    groups: list[list[float]] = []
    for v in values:
        if groups and v <= groups[-1][-1] * (1 + tolerance):
            groups[-1].append(v)
        else:
            groups.append([v])
    return sorted(((float(np.median(g)), len(g)) for g in groups), key=lambda c: -c[1])


# ----------------------------------------------------------------------------- tests


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy.stats.binomtest)."""
    if n == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs split as a fair coin would split them
    (scipy.stats.binomtest)."""
    n = only_a + only_b
    return 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)


def paired_difference_interval(both: int, only_a: int, only_b: int, neither: int, confidence: float = 0.95) -> tuple[float, float]:
    """95 % interval of the paired success difference B - A (Newcombe 1998, method 10: the two
    Wilson intervals combined with the correlation of the pairs). scipy has none for paired
    proportions; tests/test_analysis.py checks it against a published example."""
    n = both + only_a + only_b + neither
    if n == 0:
        return (-1.0, 1.0)
    pb, pa = (both + only_b) / n, (both + only_a) / n
    (lb, ub), (la, ua) = wilson_interval(both + only_b, n, confidence), wilson_interval(both + only_a, n, confidence)
    margins = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    cross = both * neither - only_a * only_b
    phi = 0.0 if margins == 0 or 0 <= cross <= n / 2 else (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    low = (pb - pa) - math.sqrt(max((pb - lb) ** 2 + (ua - pa) ** 2 - 2 * phi * (pb - lb) * (ua - pa), 0.0))
    high = (pb - pa) + math.sqrt(max((pa - la) ** 2 + (ub - pb) ** 2 - 2 * phi * (pa - la) * (ub - pb), 0.0))
    return (max(-1.0, low), min(1.0, high))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values: the i-th smallest becomes the
    largest of (m - j) p_(j) over j <= i, capped at 1, so that rejecting where it is below
    alpha keeps the family-wise error at alpha (Holm 1979)."""
    out, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(np.argsort(p_values, kind="stable")):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        out[i] = running
    return out


def adjust(entries: list[dict]) -> None:
    """Each entry's `holm_p`: its `p` adjusted over the family of all of them (those with a p)."""
    family = [e for e in entries if math.isfinite(e["p"])]
    for entry, adjusted in zip(family, holm([e["p"] for e in family])):
        entry["holm_p"] = adjusted


def signed_rank(differences: np.ndarray) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of paired differences (zeros dropped):
    scipy.stats.wilcoxon's exact test for up to 50 differences without ties and its normal
    approximation (tie-corrected) beyond 50; with ties, up to 50, the exact permutation
    distribution of the tied ranks' sum (`_tied_signed_rank`): scipy's exact test assumes no
    ties, and its normal approximation is far too small with few pairs (5 equal differences:
    0.025 where no sign pattern can be rarer than 2 / 2^5)."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if len(d) == 0:
        return 1.0
    if len(d) > 50:
        return float(stats.wilcoxon(d, method="approx", correction=False).pvalue)
    if len(np.unique(np.abs(d))) == len(d):
        return float(stats.wilcoxon(d, method="exact").pvalue)
    return _tied_signed_rank(d)


def _tied_signed_rank(d: np.ndarray) -> float:
    """Exact two-sided signed-rank p with ties: every sign pattern equally likely, W+ the sum of
    the positive differences' mid-ranks (halves: counted in doubled ranks, integers)."""
    doubled = np.rint(2 * stats.rankdata(np.abs(d))).astype(np.int64)
    counts = _sign_pattern_counts(doubled)
    w = int(doubled[d > 0].sum())
    tail = min(counts[: w + 1].sum(), counts[w:].sum()) / counts.sum()
    return float(min(1.0, 2 * tail))


def _sign_pattern_counts(ranks: np.ndarray) -> np.ndarray:
    """counts[w]: how many of the 2^n sign patterns of n differences with these (integer) ranks
    give W+ = w, the sum of the ranks signed positive (the signed-rank null distribution)."""
    counts = np.zeros(int(ranks.sum()) + 1)
    counts[0] = 1
    for r in ranks:
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


def hodges_lehmann(differences: np.ndarray, confidence: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """The Hodges-Lehmann estimate of paired differences (the median of their Walsh averages)
    and its interval, the Walsh averages the signed-rank test leaves inside (Tukey's inversion:
    W+ of d - theta counts the Walsh averages above theta). Bounds are None where the pairs are
    too few for any interval at that confidence. scipy has neither; the tests invert
    scipy.stats.wilcoxon by brute force."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return None, None, None
    i, j = np.triu_indices(len(d))
    walsh = np.sort((d[i] + d[j]) / 2)
    c = _signed_rank_critical(len(d), 1 - confidence)
    if c < 0:
        return float(np.median(walsh)), None, None
    return float(np.median(walsh)), float(walsh[c]), float(walsh[len(walsh) - 1 - c])


def _signed_rank_critical(n: int, alpha: float) -> int:
    """The largest W+ that a two-sided signed-rank test of n differences rejects at alpha (-1
    if none): the exact null distribution up to 50, the normal approximation beyond."""
    total = n * (n + 1) // 2
    if n > 50:
        return int(math.floor(total / 2 - stats.norm.ppf(1 - alpha / 2) * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)))
    cdf = np.cumsum(_sign_pattern_counts(np.arange(1, n + 1))) / 2.0**n
    return int(np.searchsorted(cdf, alpha / 2, side="right")) - 1


def mcnemar_power(pairs: int, only_a_rate: float, only_b_rate: float, alpha: float) -> float:
    """Power of the exact McNemar test at `alpha` over `pairs` pairs whose discordance is as
    given: the number discordant is binomial, and given it the split is binomial."""
    discordant_rate = only_a_rate + only_b_rate
    if discordant_rate <= 0:
        return 0.0
    n_d = np.arange(pairs + 1)
    share_b = only_b_rate / discordant_rate
    # c[n]: the largest count on one side the exact test rejects at alpha (-1: none)
    c = stats.binom.ppf(alpha / 2, n_d, 0.5).astype(np.int64)
    c = np.where(stats.binom.cdf(c, n_d, 0.5) <= alpha / 2, c, c - 1)
    reject = np.where(c >= 0, stats.binom.cdf(c, n_d, share_b) + stats.binom.sf(n_d - c - 1, n_d, share_b), 0.0)
    return float(np.sum(stats.binom.pmf(n_d, pairs, discordant_rate) * reject))


MAX_SEEDS = 100_000  # seeds-needed estimates stop here ("> 100,000")


def seeds_for_mcnemar(pairs: int, only_a: int, only_b: int, alpha: float, power: float = 0.8) -> int | None:
    """The fewest seeds per cell at which the exact McNemar test at `alpha` has `power`, if the
    discordance seen in `pairs` pairs held; None where nothing was seen to differ (equal
    discordant counts), MAX_SEEDS + 1 past MAX_SEEDS."""
    if only_a == only_b or pairs == 0:
        return None
    rate_a, rate_b = only_a / pairs, only_b / pairs
    return _fewest(lambda n: mcnemar_power(n, rate_a, rate_b, alpha) >= power)


def seeds_for_signed_rank(differences: np.ndarray, alpha: float, power: float = 0.8) -> int | None:
    """Noether's (1987) seeds for a two-sided signed-rank test at `alpha` with `power`,
    (z_alpha/2 + z_power)^2 / (3 (p - 1/2)^2), from the
    observed chance that two pairs' mean difference is positive; None where it is one half."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return None
    i, j = np.triu_indices(len(d), k=1)
    sums = d[i] + d[j]
    positive = float(np.mean(sums > 0) + 0.5 * np.mean(sums == 0))
    if abs(positive - 0.5) < 1e-12:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return min(math.ceil(z * z / (3 * (positive - 0.5) ** 2)), MAX_SEEDS + 1)


def seeds_for_width(successes: int, n: int, half_width: float = 0.05, confidence: float = 0.95) -> int | None:
    """The fewest seeds at which a cell's Wilson interval, at the success rate it shows, is no
    wider than +- half_width."""
    if n == 0:
        return None
    rate = successes / n
    z = stats.norm.ppf(0.5 + confidence / 2)

    def narrow(m: int) -> bool:
        centre_spread = z / (1 + z * z / m) * math.sqrt(rate * (1 - rate) / m + z * z / (4 * m * m))
        return centre_spread <= half_width

    return _fewest(narrow)


def _fewest(enough: Callable[[int], bool]) -> int:
    """The smallest n >= 1 with enough(n), by doubling then bisection (enough taken as
    monotone); MAX_SEEDS + 1 where none up to MAX_SEEDS is."""
    high = 1
    while not enough(high):
        if high > MAX_SEEDS:
            return MAX_SEEDS + 1
        high *= 2
    low = high // 2  # not enough (0 when high is 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def rank_biserial(differences: np.ndarray) -> float:
    """The matched-pairs rank-biserial correlation of paired differences, in [-1, 1]: the share of
    the rank sum on the positive side minus that on the negative side."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if len(d) == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))  # ties given their mean rank
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


# ----------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """Models that differ only in seed: their coordinates, and their indices in the summary."""

    coords: tuple[tuple[str, Any], ...]
    index: tuple[int, ...]

    @property
    def name(self) -> str:
        return ", ".join(f"{v}" if k in ("group", "init") else f"{k}={v}" for k, v in self.coords) or "all models"


def group_coordinates(groups: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Each group's settings where groups differ: {group: {coordinate: value}}. `groups` maps a
    group name to its tables (model, optim, schedule, as in config.toml). A table whose `name`
    differs between groups is one coordinate (its name); otherwise each differing key is one;
    groups that differ in nothing else are told apart by `group`."""
    if len(groups) < 2:
        return {g: {} for g in groups}
    coords: dict[str, dict[str, Any]] = {g: {} for g in groups}
    tables = dict.fromkeys(t for tables in groups.values() for t in tables)
    for table in tables:
        names = {g: (tables_of.get(table) or {}).get("name") for g, tables_of in groups.items()}
        if len(set(map(str, names.values()))) > 1:
            for g in groups:
                coords[g][table] = names[g]
            continue
        keys = dict.fromkeys(k for t in groups.values() for k in (t.get(table) or {}) if k not in ("name", "init"))
        for key in keys:
            values = {g: (t.get(table) or {}).get(key) for g, t in groups.items()}
            if isinstance(next(iter(values.values())), list) or any(isinstance(v, list) for v in values.values()):
                continue  # a swept list: its values are model coordinates
            if len(set(map(repr, values.values()))) > 1:
                for g in groups:
                    coords[g][f"{table}.{key}"] = values[g]
    if len({tuple(sorted(c.items(), key=str)) for c in coords.values()}) < len(groups):
        for g in groups:
            coords[g] = {"group": g, **coords[g]}
    return coords


def model_coordinates(models: list[dict], groups: dict[str, dict]) -> list[dict[str, Any]]:
    """Each model's coordinates but its seed: its group's settings (`group_coordinates`), its
    init scheme where a run has several, and its swept numbers."""
    by_group = group_coordinates(groups)
    inits = {m["init"] for m in models}
    swept = [k for k in dict.fromkeys(k for m in models for k in m) if "." in k and len({m.get(k) for m in models}) > 1]
    out = []
    for m in models:
        coords = dict(by_group.get(m["group"], {"group": m["group"]})) if len(groups) > 1 else {}
        if len(inits) > 1:
            coords["init"] = m["init"]
        coords.update({k: m.get(k) for k in swept})
        out.append(coords)
    return out


def cells_of(models: list[dict], groups: dict[str, dict]) -> list[Cell]:
    """The run's cells, in the order their first model appears."""
    found: dict[tuple, list[int]] = {}
    for i, coords in enumerate(model_coordinates(models, groups)):
        found.setdefault(tuple(coords.items()), []).append(i)
    return [Cell(key, tuple(index)) for key, index in found.items()]


# ----------------------------------------------------------------------------- comparisons


def _value(entry: dict, key: str) -> float:
    value = entry.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def shift(differences: np.ndarray) -> dict:
    """Paired differences B - A summarised: the Hodges-Lehmann estimate with its 95 % interval,
    the signed-rank p, the rank-biserial effect and the number of pairs."""
    estimate, low, high = hodges_lehmann(differences)
    return {
        "difference": estimate,
        "low": low,
        "high": high,
        "p": signed_rank(differences),
        "effect": rank_biserial(differences),
        "pairs": int(len(differences)),
    }


def success_difference(both: int, only_a: int, only_b: int, neither: int) -> dict:
    """A paired 2x2 table of success: the counts, the exact McNemar p, and B - A with Newcombe's
    95 % interval."""
    n = both + only_a + only_b + neither
    low, high = paired_difference_interval(both, only_a, only_b, neither)
    return {
        "a": both + only_a,
        "b": both + only_b,
        "both": both,
        "only_a": only_a,
        "only_b": only_b,
        "neither": neither,
        "p": mcnemar(only_a, only_b),
        "difference": (only_b - only_a) / max(n, 1),
        "low": low,
        "high": high,
    }


def compare_cells(models: list[dict], a: Cell, b: Cell, monitor: str, has_threshold: bool, cap: int) -> dict:
    """Cell a against cell b over the seed indices they share (see the module docstring). The
    paired differences themselves are under "_differences" (for the pooled factors; `analyse`
    drops them)."""
    seeds_a = {models[i]["seed"]: i for i in a.index}
    seeds_b = {models[i]["seed"]: i for i in b.index}
    shared = sorted(set(seeds_a) & set(seeds_b))
    pa = [models[seeds_a[s]] for s in shared]
    pb = [models[seeds_b[s]] for s in shared]
    out: dict[str, Any] = {"pairs": len(shared)}
    final_key = f"{monitor}_final"
    finals = np.array([_value(y, final_key) - _value(x, final_key) for x, y in zip(pa, pb)])
    finite = finals[np.isfinite(finals)]
    out["final"] = shift(finite)
    differences = {"final": finite}
    notes = []
    if len(finite) < FEW_PAIRS:
        notes.append(f"{len(finite)} pairs with both final values: too few for the signed-rank test to reach p < 0.05")
    if has_threshold:
        ra = np.array([bool(x.get("reached")) for x in pa])
        rb = np.array([bool(y.get("reached")) for y in pb])
        out["success"] = success_difference(*(int(np.sum(m)) for m in (ra & rb, ra & ~rb, rb & ~ra, ~ra & ~rb)))
        steps_a = np.where(ra, [_value(x, "steps") for x in pa], cap)
        steps_b = np.where(rb, [_value(y, "steps") for y in pb], cap)
        differences["steps"] = (steps_b - steps_a)[ra | rb]
        out["steps"] = shift(differences["steps"])
        discordant = out["success"]["only_a"] + out["success"]["only_b"]
        if discordant < FEW_DISCORDANT:
            notes.append(f"{discordant} discordant seeds: too few for McNemar to reach p < 0.05")
    out["notes"] = notes
    out["_differences"] = differences
    return out


def comparisons(models: list[dict], groups: dict[str, dict], monitor: str, has_threshold: bool, cap: int) -> list[dict]:
    """Every pair of cells that differ in exactly one coordinate, with that coordinate's two
    values, the others held fixed, and `compare_cells`' numbers."""
    cells = cells_of(models, groups)
    out = []
    for a, b in itertools.combinations(cells, 2):
        da, db = dict(a.coords), dict(b.coords)
        differ = [k for k in da if da[k] != db.get(k)]
        if len(differ) != 1 or da.keys() != db.keys():
            continue
        factor = differ[0]
        held = {k: v for k, v in da.items() if k != factor}
        result = compare_cells(models, a, b, monitor, has_threshold, cap)
        if result["pairs"]:
            out.append({"factor": factor, "a": da[factor], "b": db[factor], "held": held, **result})
    return out


def factors(comparisons_: list[dict], has_threshold: bool) -> list[dict]:
    """Each coordinate's verdict, pooled over the strata of each pair of its values: the paired
    tables and differences of every stratum together, and the rank-biserial effect on the final
    metric averaged over strata by pairs. Ranked by the change in success (without a threshold:
    by the effect on the final metric)."""
    pooled: dict[tuple, list[dict]] = {}
    for c in comparisons_:
        pooled.setdefault((c["factor"], str(c["a"]), str(c["b"])), []).append(c)
    rows = []
    for strata in pooled.values():
        first = strata[0]
        row: dict[str, Any] = {"factor": first["factor"], "a": first["a"], "b": first["b"], "strata": len(strata)}
        row["pairs"] = sum(c["pairs"] for c in strata)
        for kind in ("final", "steps") if has_threshold else ("final",):
            row[kind] = shift(np.concatenate([c["_differences"][kind] for c in strata]))
        final_pairs = sum(c["final"]["pairs"] for c in strata)
        row["final"]["effect"] = sum(c["final"]["effect"] * c["final"]["pairs"] for c in strata) / final_pairs if final_pairs else 0.0
        if has_threshold:
            table = [sum(c["success"][k] for c in strata) for k in ("both", "only_a", "only_b", "neither")]
            counts = success_difference(*table)
            row.update(success_a=counts.pop("a"), success_b=counts.pop("b"), **counts)
        rows.append(row)
    size = (lambda r: abs(r["difference"])) if has_threshold else (lambda r: abs(r["final"]["effect"]))
    return sorted(rows, key=size, reverse=True)


def seeds_needed(result: dict, has_threshold: bool, alpha: float = 0.05, power: float = 0.8) -> None:
    """For each test not decided at `alpha` after Holm's adjustment, `seeds_needed`: seeds per
    cell that would decide it with `power` if what was seen held, at alpha / (the family's size),
    the level at which Holm decides it whatever the rest of the family. Comparisons: success by
    exact McNemar power, steps and final by Noether's formula; pooled factors: their McNemar, per
    cell (the pooled seeds over the strata)."""
    comps = result["comparisons"]
    for kind in ("success", "steps", "final") if has_threshold else ("final",):
        level = alpha / max(len(comps), 1)
        for c in comps:
            test = c[kind]
            if test.get("holm_p", test["p"]) < alpha:
                continue
            if kind == "success":
                test["seeds_needed"] = seeds_for_mcnemar(c["pairs"], test["only_a"], test["only_b"], level, power)
            else:
                test["seeds_needed"] = seeds_for_signed_rank(c["_differences"][kind], level, power)
    if has_threshold:
        level = alpha / max(len(result["factors"]), 1)
        for f in result["factors"]:
            if f.get("holm_p", f["p"]) >= alpha:
                total = seeds_for_mcnemar(f["pairs"], f["only_a"], f["only_b"], level, power)
                f["seeds_needed"] = None if total is None else math.ceil(total / f["strata"])


# ----------------------------------------------------------------------------- outcomes and time to threshold


def outcome_classes(models: list[dict], monitor: str, has_threshold: bool) -> tuple[list[str], list[str]]:
    """Each model's outcome class, and the classes in order: `reached` (with a threshold),
    `diverged`, then the run's clusters of final monitored values (named by their level, most
    populous first, at most MAX_CLASSES), then `other`."""
    finals = np.array([_value(m, f"{monitor}_final") for m in models])
    rest = [
        i for i, m in enumerate(models) if not m.get("diverged") and not (has_threshold and m.get("reached")) and np.isfinite(finals[i])
    ]
    levels: list[list[int]] = []
    for i in sorted(rest, key=lambda i: finals[i]):
        if levels and abs(finals[i] - finals[levels[-1][-1]]) <= CLASS_TOLERANCE * max(abs(finals[levels[-1][-1]]), 1e-12):
            levels[-1].append(i)
        else:
            levels.append([i])
    levels = sorted(levels, key=len, reverse=True)
    named = [lv for lv in levels[:MAX_CLASSES] if len(lv) > 1 or len(levels) <= MAX_CLASSES]
    kind = ["other"] * len(models)
    names = []
    for lv in named:
        name = f"≈{np.median(finals[lv]):.4g}"
        names.append(name)
        for i in lv:
            kind[i] = name
    for i, m in enumerate(models):
        if m.get("diverged"):
            kind[i] = "diverged"
        elif has_threshold and m.get("reached"):
            kind[i] = "reached"
    order = (["reached"] if has_threshold else []) + ["diverged"] * any(k == "diverged" for k in kind) + names
    order += ["other"] * any(k == "other" for k in kind)
    return kind, order


def reached_by(models: list[dict], cell: Cell, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step of `steps`: the share of the cell's models that have reached the threshold, and
    its Wilson 95 % band."""
    stops = np.array(
        [m["stop_step"] if m.get("reached") and m.get("stop_step") is not None else np.inf for m in (models[i] for i in cell.index)]
    )
    counts = np.searchsorted(np.sort(stops), steps, side="right")
    n = len(stops)
    bands = np.array([wilson_interval(int(k), n) for k in counts]).reshape(len(steps), 2)
    return counts / max(n, 1), bands[:, 0], bands[:, 1]


def _reached(models: list[dict], cell: Cell) -> int:
    return sum(bool(models[i].get("reached")) for i in cell.index)


def analyse(models: list[dict], groups: dict[str, dict], monitor: str, stop_at: float | None, cap: int) -> dict:
    """Everything above for one run, JSON-ready: cells with their outcome class counts, the
    comparisons and the factors."""
    has_threshold = stop_at is not None
    cells = cells_of(models, groups)
    kind, order = outcome_classes(models, monitor, has_threshold)
    comps = comparisons(models, groups, monitor, has_threshold, cap)
    for test in ("success", "steps", "final"):  # a family per kind of test
        adjust([c[test] for c in comps if test in c])
    pooled = factors(comps, has_threshold)
    if has_threshold:
        adjust(pooled)
        adjust([f["steps"] for f in pooled])
    adjust([f["final"] for f in pooled])
    result = {
        "cells": [
            {
                "name": c.name,
                "coords": dict(c.coords),
                "n": len(c.index),
                "outcomes": {k: sum(kind[i] == k for i in c.index) for k in order},
                **({"seeds_for_5pt": seeds_for_width(_reached(models, c), len(c.index))} if has_threshold else {}),
            }
            for c in cells
        ],
        "outcome_classes": order,
        "comparisons": comps,
        "factors": pooled,
    }
    seeds_needed(result, has_threshold)
    for c in comps:
        del c["_differences"]
    return result
