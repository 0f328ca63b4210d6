"""One spirals optimiser step, vmapped over models: plain jit on one device vs shard_map over two."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxfit import config, optim, plan, train

if "recip" in sys.argv:
    exec(open("adam_recip.py").read())
cfg = config.load("/work/main/examples/spirals.toml", ["sweep.n_seeds=3"])
g = plan.expand(cfg)[0]
step = train.make_step(cfg, g.group)
module = train.module_of(cfg.task, g.group.model)
n = 10
r = np.random.default_rng(0)
x = jnp.asarray(r.standard_normal((64, 2)), jnp.float32)
y = jnp.asarray(r.integers(0, 2, 64))
coords = jax.tree.map(lambda a: jnp.asarray(np.resize(a, (n, *a.shape[1:]))), plan.padded(g.coords))
s = train.make_setup(cfg, g.group)
key = jax.random.split(jax.random.key(0), n)
params = jax.vmap(lambda k: module.init(k, x[0] if x.ndim == 3 else x, train=False)["params"])(key)

opt = jax.vmap(lambda p, c: optim.chain(g.group, c.hp, 0.01).init(p))(params, coords)
x = jnp.broadcast_to(x, (n, *x.shape))
y = jnp.broadcast_to(y, (n, *y.shape))
f = jax.vmap(step, (0, 0, 0, 0, None, 0))
OPTIONS = plan.compiler_options(jax.devices()[0])
C = lambda fn, *a: jax.jit(fn).lower(*a).compile(compiler_options=OPTIONS)(*a)
one = C(f, params, opt, x, y, jnp.int32(0), coords)
mesh = Mesh(np.asarray(jax.devices()[:2]), ("models",))
sm0 = jax.shard_map(
    f, mesh=mesh, in_specs=(P("models"), P("models"), P("models"), P("models"), P(), P("models")), out_specs=P("models"), check_vma=False
)
two = C(sm0, params, opt, x, y, jnp.int32(0), coords)
sm = jax.jit(sm0)
half = C(f, *jax.tree.map(lambda a: a[5:], (params, opt)), x[5:], y[5:], jnp.int32(0), jax.tree.map(lambda a: a[5:], coords))
for name, other in (("two vs one", two), ("half(5) vs one[5:]", jax.tree.map(lambda a: a, half))):
    a = jax.tree.leaves(one)
    b = jax.tree.leaves(other)
    if name.startswith("half"):
        a = [leaf[5:] for leaf in a]
    print(name, sum(int(np.sum(np.asarray(u) != np.asarray(v))) for u, v in zip(a, b)))

pathlib.Path("/tmp/s19/hlo_one.txt").write_text(
    jax.jit(f).lower(params, opt, x, y, jnp.int32(0), coords).compile(compiler_options=OPTIONS).as_text()
)
pathlib.Path("/tmp/s19/hlo_two.txt").write_text(
    sm.lower(params, opt, x, y, jnp.int32(0), coords).compile(compiler_options=OPTIONS).as_text()
)
h5 = jax.tree.map(lambda a: a[5:], (params, opt, x, y))
pathlib.Path("/tmp/s19/hlo_half.txt").write_text(
    jax.jit(f)
    .lower(h5[0], h5[1], h5[2], h5[3], jnp.int32(0), jax.tree.map(lambda a: a[5:], coords))
    .compile(compiler_options=OPTIONS)
    .as_text()
)
