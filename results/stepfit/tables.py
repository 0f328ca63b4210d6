"""The numbers and the figure of results/stepfit/REPORT.md, recomputed from the committed runs.

    python results/stepfit/tables.py

The 2 x 2 ablation {narrow, wide} x {constant SGD, CyclicLR}, 100 seeds per cell: two cells from
`faithful_100_seeds` (the seed's own groups: narrow = narrow + constant, wide = wide + cyclic),
two from `ablation`. Prints success rates with Wilson 95% intervals, steps to threshold, who sits
on the 0.0658 plateau, and where the stuck nets' kinks are; draws plateau.png (a stuck model's
function next to the least-squares straight line).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxfit import report  # noqa: E402

ROOT = Path(__file__).resolve().parent
CELLS = {  # cell: (run folder, group)
    "narrow + constant SGD (the seed's narrow)": ("faithful_100_seeds", "narrow"),
    "narrow + CyclicLR": ("ablation", "narrow_cyclic"),
    "wide + constant SGD": ("ablation", "wide_constant"),
    "wide + CyclicLR (the seed's wide)": ("faithful_100_seeds", "wide"),
}
x = np.linspace(0.0, 1000.0, 5001, dtype=np.float32) / np.float32(1000.0)
target = np.where(x * np.float32(1000) > 100, 1.0, 0.0)


def leaky(z):
    return np.where(z > 0, z, 0.001 * z)


def cell(folder: str, group: str) -> dict:
    summary = json.loads((ROOT / folder / "summary.json").read_text())
    models = [m for m in summary["models"] if m["group"] == group]
    params = report.load_params(np.load(ROOT / folder / "params.npz"), group, "last")
    w1, b1 = params["fc1"]["kernel"][:, 0, :], params["fc1"]["bias"]  # [models, width]
    w2, b2 = params["fc2"]["kernel"][:, :, 0], params["fc2"]["bias"][:, 0]
    kinks = -b1 / np.where(w1 != 0, w1, np.nan)
    inside = np.sum((kinks > 0) & (kinks < 1) & (np.abs(w2) > 1e-3), axis=1)  # kinks of live units within the data
    return {"models": models, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "kinks_inside": inside}


def function(c: dict, i: int) -> np.ndarray:
    return leaky(leaky(x[:, None] * c["w1"][i] + c["b1"][i]) @ c["w2"][i] + c["b2"][i])


def main() -> None:
    line = np.polyfit(x, target, 1)
    plateau = float(np.mean((np.polyval(line, x) - target) ** 2))
    print(f"least-squares straight line: {line[1]:.4f} + {line[0]:.4f} x, MSE {plateau:.5f}\n")
    print("| cell | reached 0.005 | Wilson 95% | steps to threshold: 10% / median / 90% | on the plateau (|loss - line MSE| < 0.001) | kinks inside [0,1], stuck models (median) | reached models (median) |")
    print("|---|---|---|---|---|---|---|")
    cells = {name: cell(*where) for name, where in CELLS.items()}
    for name, c in cells.items():
        reached = np.array([m["reached"] for m in c["models"]])
        final = np.array([m["loss_final"] for m in c["models"]])
        steps = np.array([m["steps"] for m in c["models"]])[reached]
        low, high = report.wilson_interval(int(reached.sum()), len(reached))
        quantiles = " / ".join(f"{q:,.0f}" for q in np.percentile(steps, [10, 50, 90])) if len(steps) else "-"
        on_plateau = int(np.sum(np.abs(final - plateau) < 0.001))
        stuck_kinks = f"{np.median(c['kinks_inside'][~reached]):.0f}" if (~reached).any() else "-"
        print(f"| {name} | {reached.sum()}/{len(reached)} | [{low:.2f}, {high:.2f}] | {quantiles} | {on_plateau} | {stuck_kinks} | {np.median(c['kinks_inside'][reached]):.0f} |")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("narrow + constant SGD (the seed's narrow)", "wide + CyclicLR (the seed's wide)")):
        c = cells[name]
        reached = np.array([m["reached"] for m in c["models"]])
        ax.plot(x, target, "k-", lw=1, label="target step")
        ax.plot(x, np.polyval(line, x), "k--", lw=1, label=f"least-squares line (MSE {plateau:.4f})")
        if (~reached).any():
            i = int(np.flatnonzero(~reached)[0])
            ax.plot(x, function(c, i), "C3", lw=2, alpha=0.7, label=f"stuck seed {c['models'][i]['seed']} (loss {c['models'][i]['loss_final']:.4f})")
        i = int(np.flatnonzero(reached)[0])
        ax.plot(x, function(c, i), "C2", lw=1.5, label=f"seed {c['models'][i]['seed']}, reached (loss {c['models'][i]['loss_final']:.4f})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ROOT / "plateau.png", dpi=110)
    print("\nwrote", ROOT / "plateau.png")


if __name__ == "__main__":
    main()
