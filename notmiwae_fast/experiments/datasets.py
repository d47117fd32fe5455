"""Data sets of the paper's Table 1: the six UCI CSVs (read from a folder, never shipped
with the package) and scikit-learn's breast cancer data (no file needed).

Each CSV is comma-separated with a header row; its last column is the label and is
dropped. The folder is, in order: the ``data_dir`` argument, the ``NOTMIWAE_FAST_DATA``
environment variable, then ``../shared/data/uci`` next to the repository when it exists.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = ["UCI_DATASETS", "load_uci", "load_breast_cancer", "default_data_dir"]

UCI_DATASETS = ("banknote", "concrete", "winequality-red", "winequality-white", "yeast", "breast")
ENV_VAR = "NOTMIWAE_FAST_DATA"


def default_data_dir() -> Optional[Path]:
    """``$NOTMIWAE_FAST_DATA``, else ``<repository>/../shared/data/uci`` if it exists,
    else None."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[3] / "shared" / "data" / "uci"
    return candidate if candidate.is_dir() else None


def load_uci(
    name: str, data_dir: Optional[Union[str, Path]] = None, keep_label: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Loads one of :data:`UCI_DATASETS` without its label column.

    Args:
        name: ``"banknote"``, ``"concrete"``, ``"winequality-red"``,
            ``"winequality-white"``, ``"yeast"`` or ``"breast"``.
        data_dir: folder holding ``<name>.csv`` (default: see the module docstring).
        keep_label: keep the last column too (it must be numeric; not yeast's).
    Returns:
        (X [N, D] float64, the D feature names); D + 1 columns with ``keep_label``.
    Raises:
        ValueError: unknown name (the valid ones listed); a file without feature
            columns or data rows; a row whose number of fields differs from the header's,
            or an empty or non-numeric value (file, line and column named).
        FileNotFoundError: no such file (the path searched named).
    """
    if name not in UCI_DATASETS:
        raise ValueError(f"argument 'name' must be one of {', '.join(UCI_DATASETS)}; got {name!r}")
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if folder is None:
        raise FileNotFoundError(
            f"no data folder for {name!r}: pass data_dir or set "
            f"{ENV_VAR} to the folder holding {name}.csv (valid names: "
            f"{', '.join(UCI_DATASETS)})"
        )
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"data set {name!r}: no file {path} (valid names: "
            f"{', '.join(UCI_DATASETS)}; folder from argument "
            f"'data_dir' or ${ENV_VAR})"
        )
    end = None if keep_label else -1
    # utf-8-sig: a byte-order mark is not part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        fields = next(reader, [])
        if len(fields) < 2:
            raise ValueError(
                f"data set {name!r}: {path} has no feature columns (header "
                f"{','.join(fields)!r}; expected comma-separated features, "
                "then the label)"
            )
        header = fields[:end]
        body = []
        for row in reader:
            if not row:
                continue
            where = f"data set {name!r}: {path} line {reader.line_num}"
            if len(row) != len(fields):
                raise ValueError(f"{where} has {len(row)} fields; the header has {len(fields)}")
            body.append(
                [_number(cell, f"{where}, column {column!r}") for column, cell in zip(header, row)]
            )
    if not body:
        raise ValueError(f"data set {name!r}: {path} holds no data rows")
    X = np.array(body, dtype=np.float64)
    return X, header


def _number(cell: str, where: str) -> float:
    try:
        return float(cell)
    except ValueError:
        what = "is empty" if not cell.strip() else f"holds {cell!r}, a non-numeric value"
        raise ValueError(f"{where} {what}") from None


def load_breast_cancer() -> tuple[np.ndarray, list[str]]:
    """scikit-learn's breast cancer data (569 × 30, the same as ``breast.csv``), no file
    needed. Returns (X [569, 30] float64, the 30 feature names)."""
    from sklearn.datasets import load_breast_cancer as _sk_load

    data = _sk_load()
    return np.asarray(data.data, dtype=np.float64), [str(n) for n in data.feature_names]
