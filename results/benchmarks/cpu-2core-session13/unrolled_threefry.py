"""Measurement device (issue 28), not part of jaxfit: JAX lowers threefry on a CPU as a rolled
loop of 5 iterations (a while loop per hash, to keep compiles short); on other devices it is
unrolled. This runs `python -m MODULE ARGS` with the unrolled lowering on the CPU too -- the same
arithmetic, so the same bits -- to measure what the loops cost a step.

    python unrolled_threefry.py -m jaxfit.bench --one SPEC
"""

import runpy
import sys

from jax._src.random import threefry2x32
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

mlir.register_lowering(threefry2x32_p, threefry2x32._threefry2x32_lowering_rule, platform="cpu")

if __name__ == "__main__":
    flag, module, *rest = sys.argv[1:]
    assert flag == "-m", __doc__
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
