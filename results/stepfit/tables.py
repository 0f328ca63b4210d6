"""Every number and figure of results/stepfit/REPORT.md, recomputed from the committed runs.

    python results/stepfit/tables.py

Runs read (each a `python -m jaxfit.run` folder beside this file):
  faithful, faithful_100_seeds, seeds_500   the seed's two groups with 10, 100 and 500 seeds
  ablation                                  narrow + CyclicLR and wide + constant SGD, 100 seeds
  factorial                                 {grid, fresh} x {narrow, wide} x {constant, cyclic}, 100 seeds
  basin                                     10,000 narrow nets, 50,001 steps (the map)
Prints the report's tables (markdown) and draws plateau.png and basin.png.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxfit import config, report  # noqa: E402

ROOT = Path(__file__).resolve().parent
x = np.linspace(0.0, 1000.0, 5001, dtype=np.float32) / np.float32(1000.0)
target = np.where(x * np.float32(1000) > 100, 1.0, 0.0)
LINE = np.polyfit(x, target, 1)
LINE_MSE = float(np.mean((np.polyval(LINE, x) - target) ** 2))  # the best straight line: the 0.0658 plateau
CONSTANT_MSE = float(np.var(target))  # the best constant
DEAD_MSE = float(np.mean(target**2))  # output 0 everywhere on the data
OUTCOMES = ("reached 0.005", "line plateau", "constant plateau", "dead (output 0)", "other")
COLOURS = ("C2", "C3", "C1", "k", "C0")
TOLERANCE = 0.001  # |loss - plateau| below this counts as on that plateau


def leaky(z):
    return np.where(z > 0, z, 0.001 * z)


def outcome(loss: np.ndarray, reached: np.ndarray) -> np.ndarray:
    """Each model's outcome as an index into OUTCOMES."""
    kind = np.full(loss.shape, 4)
    for index, level in ((3, DEAD_MSE), (2, CONSTANT_MSE), (1, LINE_MSE)):
        kind = np.where(np.abs(loss - level) < TOLERANCE, index, kind)
    return np.where(reached, 0, kind)


def load(folder: str, group: str) -> dict:
    """One group of a run: its summary entries, outcome per model, first and last parameters."""
    summary = report.read_summary(ROOT / folder)
    models = [m for m in summary["models"] if m["group"] == group]
    reached = np.array([m["reached"] for m in models])
    loss = np.array([m["loss_final"] for m in models])
    with np.load(ROOT / folder / "params.npz") as arrays:
        last = report.load_params(arrays, group, "last")
    seeds = np.array([m["seed"] for m in models])
    first = initial(folder, group, seeds)
    loss_init = np.array([np.mean((function(first, i) - target) ** 2) for i in range(len(models))])
    assert np.allclose(loss_init, [m["loss_init"] for m in models], rtol=1e-5, atol=1e-7)  # they are the run's initial weights
    return {
        "models": models,
        "seed": seeds,
        "reached": reached,
        "loss": loss,
        "steps": np.array([m["steps"] for m in models]),
        "outcome": outcome(loss, reached),
        "first": first,
        "last": unpack(last),
        "run": summary["run"],
    }


def initial(folder: str, group: str, seeds: np.ndarray) -> dict:
    """The initial weights of a run's models (params.npz keeps them after the first step): drawn
    again as the engine drew them, from the run seed and each model's seed index."""
    import jax

    from jaxfit import trainer
    from jaxfit.experiment import template

    cfg = config.load(str(ROOT / folder / "config.toml"))
    model = next(g.model for g in cfg.groups if g.name == group)
    shapes = template(cfg.task.module(model), cfg.task.input_shape())
    draw = jax.jit(jax.vmap(lambda seed: trainer.init_params(cfg.task, model, shapes, 0, trainer.model_keys(cfg.seed, seed)[2])))
    return unpack(jax.tree.map(np.asarray, draw(seeds)))


def unpack(params: dict) -> dict:
    """w1, b1, w2 ([models, width]) and b2 ([models]) of a 1 -> width -> 1 net."""
    return {
        "w1": params["fc1"]["kernel"][:, 0, :],
        "b1": params["fc1"]["bias"],
        "w2": params["fc2"]["kernel"][:, :, 0],
        "b2": params["fc2"]["bias"][:, 0],
    }


def kinks(p: dict) -> np.ndarray:
    """Each hidden unit's kink -b1/w1 (where its pre-activation crosses zero)."""
    return -p["b1"] / np.where(p["w1"] != 0, p["w1"], np.nan)


def function(p: dict, i: int) -> np.ndarray:
    return leaky(leaky(x[:, None] * p["w1"][i] + p["b1"][i]) @ p["w2"][i] + p["b2"][i])


def rate(successes: int, n: int) -> str:
    low, high = report.wilson_interval(int(successes), int(n))
    return f"{successes}/{n} [{low:.2f}, {high:.2f}]"


def quantiles(steps: np.ndarray) -> str:
    return " / ".join(f"{q:,.0f}" for q in np.percentile(steps, [10, 50, 90])) if len(steps) else "-"


def wall(run: dict) -> str:
    return (
        f"{run['run_s'] / 60:,.1f} min run + {run['compile_s']:.0f} s compile, "
        f"{run['n_models']:,} models, {run['platform']} ({run['device']})"
    )


# ----------------------------------------------------------------------------- the seed's table


def seed_table() -> None:
    print(
        f"least-squares straight line: {LINE[1]:.4f} + {LINE[0]:.4f} x, MSE {LINE_MSE:.5f}; "
        f"best constant {np.mean(target):.4f}, MSE {CONSTANT_MSE:.5f}; output 0: MSE {DEAD_MSE:.5f}\n"
    )
    print("| group | jaxfit, 10 seeds (`faithful`) | 100 seeds (`faithful_100_seeds`) | 500 seeds (`seeds_500`) |")
    print("|---|---|---|---|")
    for group in ("narrow", "wide"):
        cells = []
        for folder in ("faithful", "faithful_100_seeds", "seeds_500"):
            c = load(folder, group)
            steps = c["steps"][c["reached"]]
            cells.append(
                f"{rate(c['reached'].sum(), len(c['reached']))}, median {np.median(steps):,.0f} steps, "
                f"{np.sum(c['outcome'] == 1)} on the line plateau"
            )
        print(f"| {group} | " + " | ".join(cells) + " |")
    print()


# ----------------------------------------------------------------------------- the factorial

FACTORS = {"data": ("grid", "fresh"), "width": ("narrow", "wide"), "schedule": ("constant", "cyclic")}
SEED_CELLS = {
    "narrow_fresh_constant": ("faithful_100_seeds", "narrow"),
    "wide_fresh_cyclic": ("faithful_100_seeds", "wide"),
    "narrow_fresh_cyclic": ("ablation", "narrow_cyclic"),
    "wide_fresh_constant": ("ablation", "wide_constant"),
}


def cell_name(data: str, width: str, schedule: str) -> str:
    return f"{width}_{data}_{schedule}"


def factorial() -> dict[str, dict]:
    cells = {cell_name(*levels): load("factorial", cell_name(*levels)) for levels in itertools.product(*FACTORS.values())}
    print(f"factorial: {wall(cells['narrow_grid_constant']['run'])}\n")
    print(
        "| cell (width, data, schedule) | reached 0.005 [Wilson 95%] | steps to threshold: 10% / median / 90% | "
        "line plateau | constant plateau | dead | other |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, c in cells.items():
        counts = [int(np.sum(c["outcome"] == k)) for k in range(1, 5)]
        print(
            f"| {name.replace('_', ', ')} | {rate(c['reached'].sum(), 100)} | {quantiles(c['steps'][c['reached']])} | "
            + " | ".join(map(str, counts))
            + " |"
        )
    print()
    same = []
    for name, (folder, group) in SEED_CELLS.items():
        old = load(folder, group)
        new = cells[name]
        stop_moved = np.abs(np.where(old["reached"], old["steps"], 0) - np.where(new["reached"], new["steps"], 0))
        same.append(
            f"{name}: outcome equal for {np.sum(old['reached'] == new['reached'])}/100 seeds, stop steps equal for "
            f"{np.sum(stop_moved == 0)}/100 (largest move {stop_moved.max():,})"
        )
    print("fresh cells against the earlier runs of the same seeds (`faithful_100_seeds`, `ablation`):\n- " + "\n- ".join(same) + "\n")
    return cells


COORDINATE = {"data": "model.train_on", "width": "model.width", "schedule": "schedule"}  # the engine's name of each factor
LEVEL = {"narrow": 1, "wide": 8}  # width levels as config values


def verdict() -> None:
    """Paired comparisons, from the engine's analysis of the factorial run (jaxfit/analysis.py):
    for each factor, the same seed index in the two cells that differ only in that factor (the
    other two held at each of their four combinations), then all 400 pairs pooled."""
    folder = ROOT / "factorial"
    summary = report.read_summary(folder)
    result = summary["analysis"]
    by_cells = {(c["factor"], tuple(sorted((k, str(v)) for k, v in c["held"].items()))): c for c in result["comparisons"]}
    pooled = {f["factor"]: f for f in result["factors"]}
    print("| factor: A vs B | held fixed | success A | success B | only A | only B | McNemar p |")
    print("|---|---|---|---|---|---|---|")
    for factor, (a, b) in FACTORS.items():
        others = [f for f in FACTORS if f != factor]
        for held in itertools.product(*(FACTORS[f] for f in others)):
            key = tuple(sorted((COORDINATE[f], str(LEVEL.get(level, level))) for f, level in zip(others, held)))
            c = by_cells[(COORDINATE[factor], key)]
            s = c["success"]
            swapped = str(c["a"]) != str(LEVEL.get(a, a))  # the engine's A is the cell it met first
            ra, rb, only_a, only_b = (s["b"], s["a"], s["only_b"], s["only_a"]) if swapped else (s["a"], s["b"], s["only_a"], s["only_b"])
            print(f"| {factor}: {a} vs {b} | {', '.join(held)} | {ra}/100 | {rb}/100 | {only_a} | {only_b} | {s['p']:.2g} |")
        f = pooled[COORDINATE[factor]]
        only_a, only_b = (f["only_b"], f["only_a"]) if str(f["a"]) != str(LEVEL.get(a, a)) else (f["only_a"], f["only_b"])
        print(f"| **{factor}: {a} vs {b}** | all {f['pairs']} pairs | | | {only_a} | {only_b} | {f['p']:.2g} |")
    print()


# ----------------------------------------------------------------------------- the basin map

QUADRANTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
KINK_BINS = ((-np.inf, 0.0), (0.0, 0.1), (0.1, 1.0), (1.0, np.inf))


def quadrant_name(s1: int, s2: int) -> str:
    return f"w1 {'<' if s1 < 0 else '>'} 0, w2 {'<' if s2 < 0 else '>'} 0"


def basin() -> dict:
    b = load("basin", "main") if (ROOT / "basin" / "summary.json").exists() else None
    if b is None:
        raise SystemExit("results/stepfit/basin is missing: python -m jaxfit.run --config stepfit_basin --out results/stepfit/basin")
    print(f"basin: {wall(b['run'])}, {b['run']['steps']:,} steps\n")
    first = b["first"]
    kink, s1, s2 = kinks(first)[:, 0], np.sign(first["w1"][:, 0]), np.sign(first["w2"][:, 0])
    print("Outcome at 50,001 steps by the initial signs and kink −b1/w1 (rows: quadrant and where the kink starts):\n")
    print("| initial w1, w2 | kink starts | nets | " + " | ".join(OUTCOMES) + " |")
    print("|---|---|---|" + "---|" * len(OUTCOMES))
    for q in QUADRANTS:
        for low, high in KINK_BINS:
            sel = (s1 == q[0]) & (s2 == q[1]) & (kink > low) & (kink <= high)
            counts = [f"{np.mean(b['outcome'][sel] == k):.0%}" for k in range(len(OUTCOMES))]
            print(f"| {quadrant_name(*q)} | ({low:g}, {high:g}] | {sel.sum()} | " + " | ".join(counts) + " |")
    last, done = b["last"], b["reached"]
    shape = (last["w1"][done, 0] < 0) & (last["w2"][done, 0] < 0)
    print(
        f"Of the {done.sum():,} nets that reached 0.005, {shape.sum():,} end with w1 < 0 and w2 < 0, "
        f"their kink at {np.median(kinks(last)[done, 0]):.3f} (median).\n"
    )
    cut_off_check(b)
    rule_check(b)
    return b


def predicted_escape(p: dict) -> np.ndarray:
    """The map's rule: the net starts as a rising ramp that flattens at its kink (w1 < 0, w2 < 0:
    the hidden unit is on left of the kink) with the kink right of the step at 0.1."""
    kink = kinks(p)[:, 0]
    return (p["w1"][:, 0] < 0) & (p["w2"][:, 0] < 0) & (kink > 0.1)


def cut_off_check(b: dict) -> None:
    """The basin's seed indices 0-499 are seeds_500's narrow nets (same inits, same batches):
    their class at the cut-off against their outcome at 1,000,001 steps."""
    long = load("seeds_500", "narrow")
    n = len(long["seed"])
    assert np.array_equal(b["seed"][:n], long["seed"])
    for key in ("w1", "b1", "w2", "b2"):
        assert np.array_equal(b["first"][key][:n], long["first"][key]), key  # the same initial weights
    both = b["reached"][:n] & long["reached"]
    print(
        f"Nets that reached 0.005 in both runs: {both.sum()}, "
        f"with the same stop step: {np.sum(b['steps'][:n][both] == long['steps'][both])} "
        "(both at one engine, where a net's trajectory does not depend on the run around it).\n"
    )
    at_cut = b["outcome"][:n]
    print(
        f"Cut-off check: seed indices 0-{n - 1} of the map are `seeds_500`'s narrow nets (same initial weights and batches), "
        "trained there to 1,000,001 steps. Rows: class at 50,001 steps; columns: outcome at 1,000,001 steps.\n"
    )
    print("| at 50,001 steps | nets | " + " | ".join(OUTCOMES) + " |")
    print("|---|---|" + "---|" * len(OUTCOMES))
    for k, name in enumerate(OUTCOMES):
        sel = at_cut == k
        if sel.any():
            print(
                f"| {name} | {sel.sum()} | " + " | ".join(str(int(np.sum(long["outcome"][sel] == j))) for j in range(len(OUTCOMES))) + " |"
            )
    late = long["reached"] & ~b["reached"][:n]
    print(
        f"\n{late.sum()} of {n} nets reach 0.005 after the cut-off "
        f"(stop steps {', '.join(f'{s:,}' for s in np.sort(long['steps'][late]))}); "
        f"their class at the cut-off: {', '.join(OUTCOMES[k] for k in np.unique(at_cut[late]))}.\n"
    )


def rule_check(b: dict) -> None:
    """The map's rule, scored on the map and checked on the runs it was not read from."""
    rows = [("map (basin, 10,000 nets, outcome at 50,001 steps)", b)]
    rows += [("faithful_100_seeds narrow (100 seeds, 1,000,001 steps)", load("faithful_100_seeds", "narrow"))]
    rows += [("factorial narrow, fresh, cyclic (100 seeds)", load("factorial", "narrow_fresh_cyclic"))]
    print("| nets | rule says escape: reached | rule says stuck: reached | accuracy |")
    print("|---|---|---|---|")
    for name, c in rows:
        rule = predicted_escape(c["first"])
        accuracy = np.mean(rule == c["reached"])
        print(
            f"| {name} | {rate(c['reached'][rule].sum(), rule.sum())} | {rate(c['reached'][~rule].sum(), (~rule).sum())} | {accuracy:.1%} |"
        )
    print()


def seed_inits() -> dict:
    """The seed script's own ten narrow inits: torch.manual_seed(2025), then Model() ten times
    (its line 121); None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from jaxfit.experiments import stepfit, torch_reference

    torch.manual_seed(2025)
    nets = [torch_reference.StepModel(1) for _ in range(10)]
    trees = [stepfit.from_torch(torch_reference.state_numpy(net)) for net in nets]
    p = {
        "w1": np.stack([np.asarray(t["fc1"]["kernel"])[0] for t in trees]),
        "b1": np.stack([np.asarray(t["fc1"]["bias"]) for t in trees]),
        "w2": np.stack([np.asarray(t["fc2"]["kernel"])[:, 0] for t in trees]),
        "b2": np.stack([np.asarray(t["fc2"]["bias"])[0] for t in trees]),
    }
    loss_init = [float(np.mean((function(p, i) - target) ** 2)) for i in range(10)]
    print(
        "The seed's ten narrow inits (torch.manual_seed(2025); the seed's log prints lossInit 0.1979, 0.7612, 0.9003, 0.9020, "
        "0.1526, 0.0940, 0.8540, 0.9013, 0.4250 for iMod 1-9): ours " + ", ".join(f"{v:.4f}" for v in loss_init)
    )
    rule = predicted_escape(p)
    print(
        f"the map's rule predicts {rule.sum()} of 10 escape (the seed: 0 of 10 reached 0.005); kinks "
        + ", ".join(f"{k:.2f}" for k in kinks(p)[:, 0])
    )
    return p


def neighbours_rate(b: dict, p: dict, k: int = 50) -> np.ndarray:
    """For each net of `p`: the share of its k nearest map nets (same signs of w1 and w2; distance
    in kink position and b2) that reached 0.005."""

    def coords(q):
        return np.stack([np.clip(kinks(q)[:, 0], -3, 4), q["b2"]], axis=1), np.sign(q["w1"][:, 0]) * 2 + np.sign(q["w2"][:, 0])

    where, quadrant = coords(b["first"])
    mine, my_quadrant = coords(p)
    rates = []
    for point, q in zip(mine, my_quadrant):
        same = np.flatnonzero(quadrant == q)
        nearest = same[np.argsort(np.sum((where[same] - point) ** 2, axis=1))[:k]]
        rates.append(np.mean(b["reached"][nearest]))
    return np.asarray(rates)


def draw_map(b: dict, seed: dict | None) -> None:
    first = b["first"]
    kink = np.clip(kinks(first)[:, 0], -3, 4)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True, sharey=True)
    for ax, q in zip(axes.ravel(), QUADRANTS):
        sel = (np.sign(first["w1"][:, 0]) == q[0]) & (np.sign(first["w2"][:, 0]) == q[1])
        for k, (name, colour) in enumerate(zip(OUTCOMES, COLOURS)):
            pick = sel & (b["outcome"] == k)
            ax.scatter(kink[pick], first["b2"][pick], s=3, c=colour, alpha=0.6, label=f"{name} ({pick.sum()})", rasterized=True)
        if seed is not None:
            mine = (np.sign(seed["w1"][:, 0]) == q[0]) & (np.sign(seed["w2"][:, 0]) == q[1])
            ax.scatter(
                np.clip(kinks(seed)[mine, 0], -3, 4),
                seed["b2"][mine],
                s=70,
                marker="*",
                facecolor="none",
                edgecolor="m",
                linewidth=1.3,
                label=f"the seed's torch inits ({mine.sum()})",
            )
        ax.axvspan(0, 1, color="0.9", zorder=-1)
        ax.axvline(0.1, color="0.5", lw=0.8, ls=":")
        ax.set_title(f"{quadrant_name(*q)}: {np.mean(b['reached'][sel]):.0%} reach 0.005 ({sel.sum()} nets)", fontsize=9)
        ax.legend(fontsize=6, loc="lower left", markerscale=2)
    for ax in axes[1]:
        ax.set_xlabel("initial kink −b1/w1 (clipped to [−3, 4]; grey: the data; dotted: the step)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("initial output bias b2")
    fig.suptitle(f"10,000 narrow nets (torch's default init), outcome at {b['run']['steps']:,} steps, fresh batches, SGD 0.1", fontsize=10)
    fig.tight_layout()
    fig.savefig(ROOT / "basin.png", dpi=110)
    plt.close(fig)
    print("wrote", ROOT / "basin.png\n")


# ----------------------------------------------------------------------------- the wide net


def wide_summary(cells: dict[str, dict]) -> None:
    """Success of the wide net against two one-number summaries of its initial units: how many
    kinks start inside the data, and how many units start as the narrow net's escaping shape."""
    runs = {
        "seeds_500 wide (fresh, cyclic, 500)": load("seeds_500", "wide"),
        "factorial wide, fresh, constant (100)": cells["wide_fresh_constant"],
        "factorial wide, grid, constant (100)": cells["wide_grid_constant"],
    }
    for summary_name, count in (
        ("units whose kink starts inside [0, 1]", lambda p: np.sum((kinks(p) > 0) & (kinks(p) < 1), axis=1)),
        (
            "units with w1 < 0, w2 < 0 and kink > 0.1 (the narrow net's escaping shape)",
            lambda p: np.sum((p["w1"] < 0) & (p["w2"] < 0) & (kinks(p) > 0.1), axis=1),
        ),
    ):
        print(f"Wide net: reached 0.005 by the number of {summary_name}:\n")
        print("| run | " + " | ".join(str(k) for k in range(6)) + "+ |")
        print("|---|" + "---|" * 6)
        for name, c in runs.items():
            n = count(c["first"])
            cols = [
                rate(c["reached"][np.minimum(n, 5) == k].sum(), np.sum(np.minimum(n, 5) == k)) if np.any(np.minimum(n, 5) == k) else "-"
                for k in range(6)
            ]
            print(f"| {name} | " + " | ".join(cols) + " |")
        print()


# ----------------------------------------------------------------------------- plateau figure


def draw_plateau() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (folder, group) in zip(axes, (("faithful_100_seeds", "narrow"), ("faithful_100_seeds", "wide"))):
        c = load(folder, group)
        ax.plot(x, target, "k-", lw=1, label="target step")
        ax.plot(x, np.polyval(LINE, x), "k--", lw=1, label=f"least-squares line (MSE {LINE_MSE:.4f})")
        i = int(np.flatnonzero(~c["reached"])[0])
        ax.plot(x, function(c["last"], i), "C3", lw=2, alpha=0.7, label=f"stuck seed {c['seed'][i]} (loss {c['loss'][i]:.4f})")
        i = int(np.flatnonzero(c["reached"])[0])
        ax.plot(x, function(c["last"], i), "C2", lw=1.5, label=f"seed {c['seed'][i]}, reached (loss {c['loss'][i]:.4f})")
        ax.set_title(f"{group} (`{folder}`)", fontsize=9)
        ax.set_xlabel("x")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ROOT / "plateau.png", dpi=110)
    plt.close(fig)


def main() -> None:
    seed_table()
    cells = factorial()
    verdict()
    b = basin()
    seed = seed_inits()
    if seed is not None:
        rates = neighbours_rate(b, seed)
        print(
            f"the map's escape rate among the 50 nearest map nets of each: {', '.join(f'{r:.0%}' for r in rates)}; "
            f"expected escapes {rates.sum():.1f} of 10 (probability of none: {np.prod(1 - rates):.2f})\n"
        )
    draw_map(b, seed)
    wide_summary(cells)
    draw_plateau()


if __name__ == "__main__":
    main()
