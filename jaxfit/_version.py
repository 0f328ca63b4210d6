"""jaxfit's version (pyproject.toml reads it from here; a resumed run must have the same)."""

__version__ = "0.1.0"
