"""One compiled chunk for both stepfit groups against one per group, run one after the other:
seconds per chunk of 20,000 steps, three alternations (N=10 or N=100 seeds per group)."""

import os
import time

import jax
import jax.numpy as jnp

from jaxfit import config, sweep

n = int(os.environ.get("N", "10"))
cfg = config.load("stepfit", ["train.steps=200000", f"sweep.n_seeds={n}", "execution.chunk_epochs=20000", "train.stop_at=1e-12"])
p = sweep.prepare(cfg)
state = p.init_fn(p.coords, p.given, p.data)
narrow, wide = p.program(0, None), p.program(1, None)
for r in range(3):
    start = time.perf_counter()
    state = [narrow(state[0], p.coords[0], p.data, jnp.int32(2 * r), None), wide(state[1], p.coords[1], p.data, jnp.int32(2 * r), None)]
    jax.block_until_ready(state)
    print(f"per-group programs, round {r}: {time.perf_counter() - start:.3f} s")
