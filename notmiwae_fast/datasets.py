"""Data sets of the paper's Table 1: the six UCI CSVs (read from a folder, never shipped
with the package) and scikit-learn's breast cancer data (no file needed).

Each CSV has a header row; its last column is the label and is dropped. The folder is,
in order: the ``data_dir`` argument, the ``NOTMIWAE_FAST_DATA`` environment variable,
then ``../shared/data/uci`` next to the repository when it exists.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = ["UCI_DATASETS", "load_uci", "load_breast_cancer", "default_data_dir"]

UCI_DATASETS = ("banknote", "concrete", "winequality-red", "winequality-white", "yeast",
                "breast")
ENV_VAR = "NOTMIWAE_FAST_DATA"


def default_data_dir() -> Optional[Path]:
    """``$NOTMIWAE_FAST_DATA``, else ``<repository>/../shared/data/uci`` if it exists,
    else None."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "uci"
    return candidate if candidate.is_dir() else None


def load_uci(name: str, data_dir: Optional[Union[str, Path]] = None,
             keep_label: bool = False) -> tuple[np.ndarray, list[str]]:
    """Loads one of :data:`UCI_DATASETS` without its label column.

    Args:
        name: ``"banknote"``, ``"concrete"``, ``"winequality-red"``,
            ``"winequality-white"``, ``"yeast"`` or ``"breast"``.
        data_dir: folder holding ``<name>.csv`` (default: see the module docstring).
        keep_label: keep the last column too (it must be numeric; not yeast's).
    Returns:
        (X [N, D] float64, the D feature names); D + 1 columns with ``keep_label``.
    Raises:
        ValueError: unknown name (the valid ones listed), or a non-numeric feature.
        FileNotFoundError: no such file (the path searched named).
    """
    if name not in UCI_DATASETS:
        raise ValueError(f"argument 'name' must be one of {', '.join(UCI_DATASETS)}; "
                         f"got {name!r}")
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if folder is None:
        raise FileNotFoundError(f"no data folder for {name!r}: pass data_dir or set "
                                f"{ENV_VAR} to the folder holding {name}.csv (valid names: "
                                f"{', '.join(UCI_DATASETS)})")
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"data set {name!r}: no file {path} (valid names: "
                                f"{', '.join(UCI_DATASETS)}; folder from argument "
                                f"'data_dir' or ${ENV_VAR})")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"data set {name!r}: {path} holds no data rows")
    end = None if keep_label else -1
    header, body = rows[0][:end], [r[:end] for r in rows[1:] if r]
    try:
        X = np.array(body, dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"data set {name!r}: {path} has a non-numeric feature ({err})") \
            from None
    return X, header


def load_breast_cancer() -> tuple[np.ndarray, list[str]]:
    """scikit-learn's breast cancer data (569 × 30, the same as ``breast.csv``), no file
    needed. Returns (X [569, 30] float64, the 30 feature names)."""
    from sklearn.datasets import load_breast_cancer as _sk_load
    data = _sk_load()
    return np.asarray(data.data, dtype=np.float64), [str(n) for n in data.feature_names]
