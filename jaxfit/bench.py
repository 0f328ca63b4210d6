"""Benchmark: jaxfit against the PyTorch a user would write, side by side on one machine.

    python -m jaxfit.bench [--quick] [--models 10,100] [--scaling 1,10,100,1000] [--out DIR]

Workloads: stepfit wide + CyclicLR and stepfit narrow + SGD (validation on the 5001-point grid
every step), sumsq (dropout on, Adam + StepLR). Implementations: jaxfit; the seeds' sequential
PyTorch loop (one model after another, as the forum scripts run); a torch.func vmap ensemble
with a hand-written optimiser; that ensemble under torch.compile; for stepfit, the nets over a
[models, batch] layout with the gradient written by hand under torch.compile. Every measurement runs in a
fresh subprocess (so its peak RSS is its own) for a fixed number of steps after a warm-up;
compile time is reported apart. Without torch, jaxfit alone is measured. The sequential loops
are jaxfit/experiments/torch_reference.py's models.

Writes DIR/bench.json and DIR/throughput.png and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxfit import config, sweep

WORKLOADS = ("stepfit_wide", "stepfit_narrow", "sumsq")
_TORCH_DEVICE = "cpu"  # set from the spec: "cuda" runs the PyTorch variants on the GPU
IMPLEMENTATIONS = ("jaxfit", "torch_sequential", "torch_vmap", "torch_compile", "torch_by_hand")


# ----------------------------------------------------------------------------- jaxfit


def bench_jaxfit(workload: str, n_models: int, steps: int) -> dict:
    if workload == "sumsq":
        epochs = max(1, steps // 900)
        overrides = [
            f"train.epochs={epochs}",
            "task.eval_train=false",
            "model.init=manual",
            f"sweep.n_seeds={n_models}",
            "execution.chunk_epochs=1",
        ]
        cfg = config.load("sumsq", overrides)
    else:
        group = "wide" if workload == "stepfit_wide" else "narrow"
        raw = config.to_dict(config.load("stepfit", [f"train.steps={steps}", f"sweep.n_seeds={n_models}"]))
        raw["groups"] = {group: raw["groups"][group]}
        raw["train"].pop("stop_at")  # a fixed number of steps for every model
        cfg = config.from_dict(raw, "bench")
    result = sweep.run(cfg, quiet=True)
    t = result.timing
    return {"model_steps_per_s": t["model_steps_per_s"], "compile_s": t["compile_s"], "steps": t["steps_run"]}


# ----------------------------------------------------------------------------- early stopping

STOPPING = ("ablation", "spirals", "stepfit_1000")  # runs where models stop at different times
VARIANTS = ("compacted", "not_compacted", "no_stop")  # jaxfit as it runs, without compaction, nothing stopping


def stopping_config(workload: str, variant: str) -> config.Config:
    """(a) `--config stepfit_ablation` (200 models, 1,000,001 steps), (b) examples/spirals.toml
    (60 models, its 0.98 accuracy threshold, 20,000 steps), (c) 1,000 stepfit models over 30,000
    steps (over a third cross 0.005). "no_stop": the same with a threshold no model reaches, for
    50,000 steps of (a) (the rate of a run where nothing stops does not change along it)."""
    overrides = {"ablation": [], "stepfit_1000": ["sweep.n_seeds=500", "train.steps=30000"], "spirals": ["train.steps=20000"]}[workload]
    name = str(Path(__file__).resolve().parents[1] / "examples" / "spirals.toml") if workload == "spirals" else "stepfit_ablation"
    if variant == "no_stop":
        overrides += ["train.stop_at=2.0"] if workload == "spirals" else ["train.stop_at=1e-12"]
        overrides += ["train.steps=50000"] if workload == "ablation" else []
    return config.load(name, overrides)


def bench_stopping(workload: str, variant: str) -> dict:
    """A run of `stopping_config`, its rates: every model's steps counted to the end, and each
    model's own (until it stopped) -- the effective rate."""
    os.environ[sweep.COMPACT_ENV] = "never" if variant == "not_compacted" else "auto"
    t = sweep.run(stopping_config(workload, variant), quiet=True).timing
    keys = ("model_steps_per_s", "own_model_steps_per_s", "compile_s", "run_s", "steps_run", "compaction")
    return {k: t[k] for k in keys}


def stopping_table(rows: list[dict]) -> str:
    """Effective rate (each model's own steps per second) with early stopping, against the rate
    of the same models when none stops, side by side."""
    lines = [
        "| run | compacted: effective rate, run s | not compacted: effective rate, run s | no stop: rate | compacted ÷ no stop |",
        "|---|---|---|---|---|",
    ]
    for workload in STOPPING:
        got = {r["variant"]: r for r in rows if r.get("workload") == workload and "error" not in r}
        if len(got) < len(VARIANTS):
            continue
        cells = [f"{got[v]['own_model_steps_per_s']:,.0f}, {got[v]['run_s']:,.0f}" for v in ("compacted", "not_compacted")]
        ratio = got["compacted"]["own_model_steps_per_s"] / got["no_stop"]["own_model_steps_per_s"]
        lines.append(f"| {workload} | {cells[0]} | {cells[1]} | {got['no_stop']['own_model_steps_per_s']:,.0f} | {ratio:.0%} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- torch


def _torch_setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.set_default_device(_TORCH_DEVICE)
    from jaxfit.experiments import torch_reference

    return torch, torch_reference


def _sync(torch) -> None:
    """Wait for queued GPU work, so that a timer read after it counts the work."""
    if _TORCH_DEVICE != "cpu":
        torch.cuda.synchronize()


def _cyclic_lr(i: int) -> float:
    """The seed's CyclicLR(base 0.001, max 0.5, up 100, down 900, triangular2) at step i."""
    cycle, x = 1 + i // 1000, (i % 1000)
    scale = x / 100 if x <= 100 else (1000 - x) / 900
    return 0.001 + (0.5 - 0.001) * scale / 2 ** (cycle - 1)


def bench_torch_sequential(workload: str, n_models: int, steps: int, threads: int) -> dict:
    """The seeds' loops, one model after another. Its rate does not depend on how many models
    follow, so min(n_models, 2) models are timed, after a few untimed steps (on a GPU the first
    steps load kernels and make library handles)."""
    torch, ref = _torch_setup(threads)
    if workload == "sumsq":
        x, y = config.load("sumsq").task.dataset()  # type: ignore[attr-defined]  # SumsqTask's
        x, y = torch.as_tensor(x[:90000]).to(_TORCH_DEVICE), torch.as_tensor(y[:90000]).to(_TORCH_DEVICE)

        def train_one(steps: int) -> None:
            net = ref.SumSq().manual_init()
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            order = torch.randperm(90000)
            for i in range(steps):
                index = order[(i % 900) * 100 : (i % 900 + 1) * 100]
                loss = torch.nn.functional.mse_loss(net(x[index]), y[index])
                opt.zero_grad()
                loss.backward()
                opt.step()
    else:
        width = 8 if workload == "stepfit_wide" else 1
        grid = (torch.linspace(0.0, 1000.0, 5001) / 1000.0).unsqueeze(1)
        target = torch.where(grid * 1000.0 > 100, 1000.0, 0) / 1000.0
        loss_fn = torch.nn.MSELoss()

        def train_one(steps: int) -> None:
            net = ref.StepModel(width)
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            sched = (
                torch.optim.lr_scheduler.CyclicLR(
                    opt, base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode="triangular2", cycle_momentum=False
                )
                if width == 8
                else None
            )
            for _ in range(steps):
                inp = torch.rand(100, 1)
                out = torch.where(inp * 1000.0 > 100, 1000.0, 0) / 1000.0
                loss = loss_fn(net(inp), out)
                with torch.no_grad():
                    loss_fn(net(grid), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()

    timed = min(n_models, 2)
    train_one(10)  # warm-up, untimed
    _sync(torch)
    start = time.perf_counter()
    for _ in range(timed):
        train_one(steps)
    _sync(torch)
    elapsed = time.perf_counter() - start
    return {"model_steps_per_s": timed * steps / elapsed, "compile_s": 0.0, "steps": steps, "timed_models": timed}


def bench_torch_ensemble(workload: str, n_models: int, steps: int, threads: int, compiled: bool) -> dict:
    """torch.func: parameters stacked over models, vmap(grad) for the step, a hand-written
    SGD / Adam update, optionally the whole step under torch.compile."""
    torch, ref = _torch_setup(threads)
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    if workload == "sumsq":
        x, y = config.load("sumsq").task.dataset()  # type: ignore[attr-defined]  # SumsqTask's
        x, y = torch.as_tensor(x[:90000]).to(_TORCH_DEVICE), torch.as_tensor(y[:90000]).to(_TORCH_DEVICE)
        nets = [ref.SumSq().manual_init() for _ in range(n_models)]
    else:
        width = 8 if workload == "stepfit_wide" else 1
        nets = [ref.StepModel(width) for _ in range(n_models)]
        grid = (torch.linspace(0.0, 1000.0, 5001) / 1000.0).unsqueeze(1)
        target = torch.where(grid * 1000.0 > 100, 1000.0, 0) / 1000.0
    params, _ = stack_module_state(nets)
    params = {k: v.detach() for k, v in params.items()}
    base = nets[0]

    def loss_of(p, xb, yb):
        return ((functional_call(base, (p,), (xb,)) - yb) ** 2).mean()

    if workload == "sumsq":
        moments = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}
        step_grad = vmap(grad_and_value(loss_of), randomness="different")

        def step(params, moments, xb, yb, t):
            grads, loss = step_grad(params, xb, yb)
            new_params, new_moments = {}, {}
            for k, g in grads.items():
                m, v = moments[k]
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                update = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
                new_params[k], new_moments[k] = params[k] - 1e-4 * update, (m, v)
            return new_params, new_moments, loss
    else:
        moments = None  # plain SGD keeps no state
        step_grad = vmap(grad_and_value(loss_of))
        val_of = vmap(lambda p: ((functional_call(base, (p,), (grid,)) - target) ** 2).mean())

        def step(params, moments, xb, yb, lr):
            grads, loss = step_grad(params, xb, yb)
            with torch.no_grad():
                val = val_of(params)
            return {k: params[k] - lr * grads[k] for k in params}, moments, (loss, val)

    if compiled:
        step = torch.compile(step)

    def batch(i):
        if workload == "sumsq":
            index = torch.randint(0, 90000, (n_models, 100))
            return x[index], y[index], torch.tensor(float(i + 1))
        inp = torch.rand(n_models, 100, 1)
        lr = _cyclic_lr(i) if workload == "stepfit_wide" else 0.1
        return inp, torch.where(inp * 1000.0 > 100, 1000.0, 0) / 1000.0, torch.tensor(lr)

    def advance(state, *inputs):
        params, moments, _ = step(*state, *inputs)
        return params, moments

    return _timed_steps(torch, advance, (params, moments), batch, n_models, steps)


def _timed_steps(torch, advance: Callable, state: Any, batch: Callable, n_models: int, steps: int) -> dict:
    """`state = advance(state, *batch(i))` once untimed (warm-up and compile), then for steps
    1..steps timed: the rate and the compile seconds."""
    start = time.perf_counter()
    state = advance(state, *batch(0))
    _sync(torch)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(1, steps + 1):
        state = advance(state, *batch(i))
    _sync(torch)
    elapsed = time.perf_counter() - start
    return {"model_steps_per_s": n_models * steps / elapsed, "compile_s": compile_s, "steps": steps}


def leaky_net(torch, params, x, slope: float = 0.001):
    """stepfit's net, LeakyReLU(Linear(LeakyReLU(Linear(x)))), over [models, points]: (pre
    [models, points, width], hidden, out_pre [models, points], out)."""
    w1, b1, w2, b2 = params
    pre = x[:, :, None] * w1[:, None, :] + b1[:, None, :]
    hidden = torch.where(pre > 0, pre, slope * pre)
    out_pre = (hidden * w2[:, None, :]).sum(-1) + b2[:, None]
    return pre, hidden, out_pre, torch.where(out_pre > 0, out_pre, slope * out_pre)


def leaky_net_grads(torch, params, x, y, slope: float = 0.001):
    """Each model's MSE on its batch (x, y [models, batch]) and its gradient, written by hand."""
    w2 = params[2]
    pre, hidden, out_pre, out = leaky_net(torch, params, x, slope)
    d_out_pre = 2 * (out - y) / x.shape[1] * torch.where(out_pre > 0, 1.0, slope)
    d_pre = d_out_pre[:, :, None] * w2[:, None, :] * torch.where(pre > 0, 1.0, slope)
    grads = ((d_pre * x[:, :, None]).sum(1), d_pre.sum(1), (d_out_pre[:, :, None] * hidden).sum(1), d_out_pre.sum(1))
    return ((out - y) ** 2).mean(1), grads


def bench_torch_by_hand(workload: str, n_models: int, steps: int, threads: int) -> dict:
    """The strongest stepfit a PyTorch user could write: the nets over a [models, batch] layout,
    the gradient written out by hand (no autograd; `leaky_net_grads`), SGD, validation on the
    5001-point grid every step, the whole step under torch.compile."""
    torch, _ = _torch_setup(threads)
    if workload == "sumsq":
        raise ValueError("torch_by_hand is written for stepfit")
    width = 8 if workload == "stepfit_wide" else 1
    grid = torch.linspace(0.0, 1000.0, 5001) / 1000.0
    target = torch.where(grid * 1000.0 > 100, 1000.0, 0) / 1000.0
    bound = 1.0 / width**0.5  # torch.nn.Linear's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in 1 for the first layer
    uniform = lambda *shape: torch.rand(*shape) * 2 - 1  # noqa: E731
    params = (uniform(n_models, width), uniform(n_models, width), uniform(n_models, width) * bound, uniform(n_models) * bound)

    def step(params, x, y, lr):
        loss, grads = leaky_net_grads(torch, params, x, y)
        val = ((leaky_net(torch, params, grid.expand(x.shape[0], -1))[3] - target) ** 2).mean(1)
        return tuple(p - lr * g for p, g in zip(params, grads)), (loss, val)

    step = torch.compile(step)

    def batch(i):
        inp = torch.rand(n_models, 100)
        lr = _cyclic_lr(i) if workload == "stepfit_wide" else 0.1
        return inp, torch.where(inp * 1000.0 > 100, 1000.0, 0) / 1000.0, torch.tensor(lr)

    return _timed_steps(torch, lambda params, *inputs: step(params, *inputs)[0], params, batch, n_models, steps)


# ----------------------------------------------------------------------------- driver


def steps_for(implementation: str, workload: str, n_models: int, quick: bool) -> int:
    """Steps to time: enough for a second or more of work, fewer for the slow loops."""
    table = {
        ("jaxfit", "sumsq"): 1800,
        ("jaxfit", "stepfit_wide"): 20000,
        ("jaxfit", "stepfit_narrow"): 20000,
        ("torch_sequential", "sumsq"): 300,
        ("torch_sequential", "stepfit_wide"): 2000,
        ("torch_sequential", "stepfit_narrow"): 2000,
        ("torch_vmap", "sumsq"): 200,
        ("torch_vmap", "stepfit_wide"): 1000,
        ("torch_vmap", "stepfit_narrow"): 1000,
        ("torch_compile", "sumsq"): 300,
        ("torch_compile", "stepfit_wide"): 3000,
        ("torch_compile", "stepfit_narrow"): 3000,
        ("torch_by_hand", "stepfit_wide"): 5000,
        ("torch_by_hand", "stepfit_narrow"): 5000,
    }
    steps = table[(implementation, workload)]
    if implementation == "jaxfit" and workload == "sumsq" and n_models >= 1000:
        steps = 900  # one epoch: 0.9M model-steps, minutes on a 2-core CPU
    if quick:
        steps = 900 if workload == "sumsq" and implementation == "jaxfit" else max(20, steps // 10)
    return steps


def measure_one(spec: dict) -> dict:
    global _TORCH_DEVICE
    _TORCH_DEVICE = spec.get("torch_device", "cpu")
    if spec["implementation"] == "jaxfit_stopping":
        return bench_stopping(spec["workload"], spec["variant"])
    implementation, workload, n_models, steps = spec["implementation"], spec["workload"], spec["n_models"], spec["steps"]
    if implementation == "jaxfit":
        return bench_jaxfit(workload, n_models, steps)
    if implementation == "torch_sequential":
        return bench_torch_sequential(workload, n_models, steps, spec["threads"])
    if implementation == "torch_by_hand":
        return bench_torch_by_hand(workload, n_models, steps, spec["threads"])
    return bench_torch_ensemble(workload, n_models, steps, spec["threads"], compiled=implementation == "torch_compile")


def run_isolated(spec: dict, timeout: float) -> dict:
    """One measurement in a fresh process; adds its peak RSS (MiB) or the error it hit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxfit.bench", "--one", json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**spec, "error": (err.strip().splitlines() or ["failed"])[-1][:300]}
    result = json.loads(lines[-1])
    return {**spec, **result}  # peak_rss_mib: the child's own, measured in --one


def machine() -> dict:
    import jax

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_device": str(jax.devices()[0].device_kind),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["torch"] = None
    return info


def _row(rows: list[dict], implementation: str, workload: str, n: int) -> dict | None:
    """The measurement for one cell; the sequential loop's rate is per model whatever the count,
    so its one measurement serves every count."""
    for r in rows:
        if (
            r["implementation"] == implementation
            and r["workload"] == workload
            and (r["n_models"] == n or implementation == "torch_sequential")
        ):
            return r
    return None


def table(rows: list[dict], workload: str, counts: list[int]) -> str:
    lines = [
        f"| {workload} (model-steps/s) | " + " | ".join(f"{n} models" for n in counts) + " | compile s |",
        "|---|" + "---|" * (len(counts) + 1),
    ]
    for implementation in IMPLEMENTATIONS:
        cells, compile_s = [], ""
        for n in counts:
            row = _row(rows, implementation, workload, n)
            if row is None:
                cells.append("–")
            elif "error" in row:
                cells.append("failed" if not row["error"].startswith("skipped") else "skipped")
            else:
                cells.append(f"{row['model_steps_per_s']:,.0f}")
                compile_s = f"{row['compile_s']:.1f}"
        if any(c != "–" for c in cells):
            lines.append(f"| {implementation} | " + " | ".join(cells) + f" | {compile_s} |")
    for implementation in IMPLEMENTATIONS[1:]:
        ratios = []
        for n in counts:
            ours, other = _row(rows, "jaxfit", workload, n), _row(rows, implementation, workload, n)
            if ours and other and "error" not in ours and "error" not in other:
                ratios.append(f"{ours['model_steps_per_s'] / other['model_steps_per_s']:.1f}×")
            else:
                ratios.append("–")
        if any(r != "–" for r in ratios):
            lines.append(f"| jaxfit ÷ {implementation} | " + " | ".join(ratios) + " | |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(15, 4), squeeze=False)
    for ax, workload in zip(axes[0], WORKLOADS):
        for implementation in IMPLEMENTATIONS:
            points = sorted(
                (r["n_models"], r["model_steps_per_s"])
                for r in rows
                if r["workload"] == workload and r["implementation"] == implementation and "error" not in r
            )
            if points:
                ax.plot(*zip(*points), "o-", label=implementation)
        ax.set(xscale="log", yscale="log", xlabel="models", ylabel="model-steps/s", title=workload)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxfit.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="10,100", help="model counts compared across implementations")
    parser.add_argument("--scaling", default="1,10,100,1000", help="model counts of the jaxfit scaling sweep")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1, as the issue's baselines)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps: a smoke test, not a measurement")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    parser.add_argument("--budget", type=float, help="seconds in all: measurements not started by then are skipped")
    parser.add_argument(
        "--torch-device", default="auto", help="where the PyTorch variants run: cpu, cuda, or auto (cuda if torch sees a GPU)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument(
        "--stopping",
        nargs="?",
        const=",".join(STOPPING),
        help=f"instead: early stopping's effective rate, compacted or not, against no stop, on {', '.join(STOPPING)} (ablation: ~20 min)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        import resource

        result = measure_one(json.loads(args.one))
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0
    if args.stopping:
        return main_stopping(args.stopping.split(","), args.out, args.timeout)
    try:
        import torch

        implementations = args.implementations.split(",")
        torch_device = args.torch_device if args.torch_device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    except ImportError:
        print("torch is not installed: measuring jaxfit alone", file=sys.stderr)
        implementations, torch_device = ["jaxfit"], None
    compare = [int(n) for n in args.models.split(",") if n]
    scaling = [int(n) for n in args.scaling.split(",") if n]
    specs = []
    for implementation in implementations:  # jaxfit first: under a --budget the baselines are what is skipped
        for workload in args.workloads.split(","):
            counts = sorted(set(compare) | set(scaling)) if implementation == "jaxfit" else compare
            if workload == "sumsq" and 20 not in counts:
                counts = sorted(set(counts) | {20})
            if implementation == "torch_sequential":
                counts = counts[:1]  # one model after another: the rate per model is the same at any count
            if implementation == "torch_by_hand" and workload == "sumsq":
                continue  # written for stepfit
            for n in counts:
                specs.append(
                    {
                        "implementation": implementation,
                        "workload": workload,
                        "n_models": n,
                        "steps": steps_for(implementation, workload, n, args.quick),
                        "threads": args.threads,
                        "torch_device": torch_device,
                    }
                )
    rows, began = [], time.perf_counter()
    for spec in specs:
        if args.budget is not None and time.perf_counter() - began > args.budget:
            rows.append({**spec, "error": "skipped: --budget spent"})
            continue
        row = run_isolated(spec, args.timeout)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"machine": machine(), "argv": sys.argv, "rows": rows}, indent=1))
    plot(rows, args.out / "throughput.png")
    for workload in args.workloads.split(","):
        counts = sorted({r["n_models"] for r in rows if r["workload"] == workload})
        print(table(rows, workload, counts), "\n")
    print(f"wrote {args.out}/bench.json and throughput.png")
    return 0


def main_stopping(workloads: list[str], out: Path, timeout: float) -> int:
    """`--stopping`: each workload's three variants, one after another in fresh processes."""
    rows = []
    for workload in workloads:
        for variant in VARIANTS:
            row = run_isolated({"implementation": "jaxfit_stopping", "workload": workload, "variant": variant}, max(timeout, 3600))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stopping.json").write_text(json.dumps({"machine": machine(), "argv": sys.argv, "rows": rows}, indent=1))
    print(stopping_table(rows))
    print(f"wrote {out}/stopping.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
