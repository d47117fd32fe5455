"""The package's version: the one place it is written (pyproject.toml reads it for the
distribution's metadata, ``notmiwae_fast.__version__`` re-exports it)."""

__version__ = "0.1.0"
