"""Imputing tables: the scikit-learn style imputers (:mod:`.imputer`, which needs
scikit-learn and is imported on first use), their files (:mod:`.files`) and their
sharded runs across ranks (:mod:`.sharded`)."""

import importlib

_LAZY = {
    "NotMIWAEImputer": ".imputer",
    "MIWAEImputer": ".imputer",
    "save_imputer": ".files",
    "load_imputer": ".files",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
