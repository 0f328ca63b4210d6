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
from dataclasses import dataclass
from typing import Any

import numpy as np

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


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs split as a fair coin would split them."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


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


def signed_rank(differences: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences (zeros dropped, as scipy's
    default 'wilcox'): (W+, p). Exact for up to 50 differences without ties; otherwise the normal
    approximation with the tie correction."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    n = len(d)
    if n == 0:
        return 0.0, 1.0
    magnitudes = np.abs(d)
    ranks = _ranks(magnitudes)
    w_plus = float(np.sum(ranks[d > 0]))
    ties = len(np.unique(magnitudes)) < n
    if n <= 50 and not ties:
        counts = np.zeros(n * (n + 1) // 2 + 1)  # counts[w]: sign patterns with W+ = w
        counts[0] = 1
        for k in range(1, n + 1):
            counts[k:] = counts[k:] + counts[:-k].copy()
        w = int(round(w_plus))
        low = counts[: min(w, n * (n + 1) // 2 - w) + 1].sum() / 2.0**n
        return w_plus, float(min(1.0, 2 * low))
    mean = n * (n + 1) / 4
    _, tie_counts = np.unique(magnitudes, return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - np.sum(tie_counts**3 - tie_counts) / 48
    z = (w_plus - mean) / math.sqrt(variance) if variance > 0 else 0.0
    return w_plus, float(math.erfc(abs(z) / math.sqrt(2)))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def rank_biserial(differences: np.ndarray) -> float:
    """The matched-pairs rank-biserial correlation of paired differences, in [-1, 1]: the share of
    the rank sum on the positive side minus that on the negative side."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if len(d) == 0:
        return 0.0
    ranks = _ranks(np.abs(d))
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


def compare_cells(models: list[dict], a: Cell, b: Cell, monitor: str, has_threshold: bool, cap: int) -> dict:
    """Cell a against cell b over the seed indices they share (see the module docstring)."""
    seeds_a = {models[i]["seed"]: i for i in a.index}
    seeds_b = {models[i]["seed"]: i for i in b.index}
    shared = sorted(set(seeds_a) & set(seeds_b))
    pa = [models[seeds_a[s]] for s in shared]
    pb = [models[seeds_b[s]] for s in shared]
    out: dict[str, Any] = {"pairs": len(shared)}
    final_key = f"{monitor}_final"
    finals = np.array([_value(y, final_key) - _value(x, final_key) for x, y in zip(pa, pb)])
    finite = finals[np.isfinite(finals)]
    out["final"] = {
        "median_difference": float(np.median(finite)) if len(finite) else None,
        "p": signed_rank(finite)[1],
        "effect": rank_biserial(finite),
        "pairs": int(len(finite)),
    }
    notes = []
    if len(finite) < FEW_PAIRS:
        notes.append(f"{len(finite)} pairs with both final values: too few for the signed-rank test to reach p < 0.05")
    if has_threshold:
        ra = np.array([bool(x.get("reached")) for x in pa])
        rb = np.array([bool(y.get("reached")) for y in pb])
        only_a, only_b = int(np.sum(ra & ~rb)), int(np.sum(rb & ~ra))
        out["success"] = {
            "a": int(ra.sum()),
            "b": int(rb.sum()),
            "only_a": only_a,
            "only_b": only_b,
            "p": mcnemar(only_a, only_b),
            "difference": (int(rb.sum()) - int(ra.sum())) / max(len(shared), 1),
        }
        steps_a = np.where(ra, [_value(x, "steps") for x in pa], cap)
        steps_b = np.where(rb, [_value(y, "steps") for y in pb], cap)
        either = ra | rb
        d = (steps_b - steps_a)[either]
        out["steps"] = {
            "median_difference": float(np.median(d)) if len(d) else None,
            "p": signed_rank(d)[1],
            "effect": rank_biserial(d),
            "pairs": int(either.sum()),
        }
        if only_a + only_b < FEW_DISCORDANT:
            notes.append(f"{only_a + only_b} discordant seeds: too few for McNemar to reach p < 0.05")
    out["notes"] = notes
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
    """Each coordinate's verdict, pooled over the strata of each pair of its values, ranked by the
    change in success it makes (without a threshold: by the effect on the final metric)."""
    pooled: dict[tuple, dict] = {}
    for c in comparisons_:
        key = (c["factor"], str(c["a"]), str(c["b"]))
        p = pooled.setdefault(
            key,
            {
                "factor": c["factor"],
                "a": c["a"],
                "b": c["b"],
                "strata": 0,
                "pairs": 0,
                "finals": [],
                "only_a": 0,
                "only_b": 0,
                "success_a": 0,
                "success_b": 0,
            },
        )
        p["strata"] += 1
        p["pairs"] += c["pairs"]
        p["finals"].append(c["final"]["effect"] * c["final"]["pairs"])
        if has_threshold:
            for k in ("only_a", "only_b"):
                p[k] += c["success"][k]
            p["success_a"] += c["success"]["a"]
            p["success_b"] += c["success"]["b"]
    rows = []
    for p in pooled.values():
        row = {k: p[k] for k in ("factor", "a", "b", "strata", "pairs")}
        final_pairs = sum(
            c["final"]["pairs"] for c in comparisons_ if (c["factor"], str(c["a"]), str(c["b"])) == (p["factor"], str(p["a"]), str(p["b"]))
        )
        row["final_effect"] = sum(p["finals"]) / final_pairs if final_pairs else 0.0
        if has_threshold:
            row.update(
                success_a=p["success_a"],
                success_b=p["success_b"],
                only_a=p["only_a"],
                only_b=p["only_b"],
                p=mcnemar(p["only_a"], p["only_b"]),
                difference=(p["success_b"] - p["success_a"]) / max(p["pairs"], 1),
            )
        rows.append(row)
    size = (lambda r: abs(r["difference"])) if has_threshold else (lambda r: abs(r["final_effect"]))
    return sorted(rows, key=size, reverse=True)


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
    return {
        "cells": [
            {
                "name": c.name,
                "coords": dict(c.coords),
                "n": len(c.index),
                "outcomes": {k: sum(kind[i] == k for i in c.index) for k in order},
            }
            for c in cells
        ],
        "outcome_classes": order,
        "comparisons": comps,
        "factors": pooled,
    }
