# Dumps the compiled chunk (optimised HLO) of a small sumsq and stepfit config, to compare two
# versions of the engine instruction for instruction: python results/benchmarks/compiled_chunk.py NAME
# (writes /tmp/hlo_NAME_sumsq.txt and /tmp/hlo_NAME_stepfit.txt).
import sys, jax, jax.numpy as jnp, hashlib
from jaxfit import config, sweep, train, tasks
which = sys.argv[1]
for name, ov in (("sumsq", ["sweep.n_seeds=5", "train.epochs=2", "task.eval_train=false", "model.init=manual", "execution.chunk_epochs=1"]),
                 ("stepfit", ["sweep.n_seeds=5", "train.steps=20000"])):
    cfg = config.load(name, ov)
    if hasattr(sweep, "prepare"):
        p = sweep.prepare(cfg)
        text = p.chunk_fn.as_text()
    else:  # the session-start engine: the same steps as its run()
        groups = sweep.expand(cfg); per_model, replicated, n = sweep._mesh()
        data = tasks.make_data(cfg.task, cfg.train.eval_batch_size)
        trainers = [train.make_train(cfg, g.group) for g in groups]
        coords = [sweep.padded(g.coords, n) for g in groups]
        given = [None for g in groups]
        coords, given = jax.device_put((coords, given), per_model); data = jax.device_put(data, replicated)
        def init_all(coords, data, given):
            return [jax.vmap(init, in_axes=(0, None, 0))(c, data, p) for (init, _), c, p in zip(trainers, coords, given)]
        def chunk_all(states, coords, data, first_interval):
            return [jax.vmap(rc, in_axes=(0, 0, None, None), axis_name=train.MODELS_AXIS)(s, c, data, first_interval) for (_, rc), s, c in zip(trainers, states, coords)]
        states = jax.jit(init_all, out_shardings=per_model)(coords, data, given)
        text = jax.jit(chunk_all, donate_argnums=0, out_shardings=per_model).lower(states, coords, data, jnp.int32(0)).compile().as_text()
    open(f"/tmp/hlo_{which}_{name}.txt", "w").write(text)
    print(which, name, hashlib.sha256(text.encode()).hexdigest()[:16], len(text))
