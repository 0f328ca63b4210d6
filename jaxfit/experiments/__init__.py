"""The built-in experiments, one module each: `sumsq` and `stepfit`, the two forum threads
jaxfit was built for. They register through the `jaxfit.experiments` entry points of
pyproject.toml, as an installed third-party experiment would. `torch_reference` holds their
PyTorch modules for the parity tests and the benchmark (it needs torch; the engine never imports it)."""
