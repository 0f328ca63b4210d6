"""The built-in experiments, one module each (importing them registers them): `sumsq` and
`stepfit`, the two forum threads jaxfit was built for. `torch_reference` holds their PyTorch
modules for the parity tests and the benchmark (it needs torch; jaxfit itself never imports it)."""

from jaxfit.experiments import stepfit, sumsq  # noqa: F401
