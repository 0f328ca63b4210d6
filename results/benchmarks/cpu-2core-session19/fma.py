import sys

import jax
import numpy as np

r = np.random.default_rng(0)
a, b, c = (r.standard_normal(100000).astype(np.float32) for _ in range(3))
f = jax.jit(lambda a, b, c: a * b + c)
opts = eval(sys.argv[1]) if len(sys.argv) > 1 else {}
out = np.asarray(f.lower(a, b, c).compile(compiler_options=opts)(a, b, c))
print(opts, "differs from unfused:", np.sum(out != a * b + c))
