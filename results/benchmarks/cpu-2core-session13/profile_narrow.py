"""Where a narrow stepfit step's time goes on this CPU (issue 28), at 10, 100 and 1,000 models:
the benchmark's chunk (compiled_chunk.workload_config) run under jax.profiler.trace, its XLA
operations' time summed by operation and divided by the chunk's steps.

    python results/benchmarks/cpu-2core-session13/profile_narrow.py [MODELS ...] [--workload W]
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiled_chunk import workload_config  # noqa: E402

from jaxfit import sweep, trainer  # noqa: E402


def profile(workload: str, n_models: int, top: int = 12) -> None:
    cfg = workload_config(workload, n_models)
    prepared = sweep.prepare(cfg)
    program = prepared.program(0, None)
    states = prepared.init_fn(prepared.coords, prepared.given, prepared.data)
    state = jax.block_until_ready(program(states[0], prepared.coords[0], prepared.data, jnp.int32(0), None))  # warm
    steps = trainer.chunk_intervals(cfg) * cfg.train.eval_every * cfg.steps_per_epoch
    folder = f"/tmp/profile_{workload}_{n_models}"
    start = time.perf_counter()
    with jax.profiler.trace(folder):
        jax.block_until_ready(program(state, prepared.coords[0], prepared.data, jnp.int32(1), None))
    wall = time.perf_counter() - start
    trace = json.load(gzip.open(sorted(glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True))[-1]))
    by_name: collections.Counter = collections.Counter()
    for event in trace["traceEvents"]:
        if event.get("ph") == "X" and "dur" in event and event.get("args", {}).get("hlo_op"):
            by_name[event["args"]["hlo_op"]] += event["dur"]
    total = sum(by_name.values())
    per_step = 1e6 * wall / steps
    print(f"{workload}, {n_models} models: {steps} steps in {wall:.3f} s under the profiler = {per_step:.1f} us/step;", end=" ")
    print(f"ops {total / steps:.1f} us/step")
    for name, dur in by_name.most_common(top):
        print(f"  {dur / steps:8.2f} us/step  {100 * dur / total:5.1f} %  {name}")


if __name__ == "__main__":
    args = sys.argv[1:]
    workload = "stepfit_narrow"
    if "--workload" in args:
        i = args.index("--workload")
        workload = args[i + 1]
        del args[i : i + 2]
    for n in [int(a) for a in args] or [10, 100, 1000]:
        profile(workload, n)
