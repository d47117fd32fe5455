"""Reading the commands' input files: CSV tables (checked line by line before pandas
reads them) and model files (read without running any code they name)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import CLIError

if TYPE_CHECKING:
    import pandas as pd


def read_csv_exact(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """pandas.read_csv that parses every number to the nearest double, so observed
    values pass through fit / impute bit for bit (pandas 3 does by default; pandas 2's
    default parser can be one unit in the last place off)."""
    import warnings

    import pandas as pd

    kwargs.setdefault("float_precision", "round_trip")
    with warnings.catch_warnings():  # pandas 3 deprecates the argument (its default is exact)
        warnings.filterwarnings("ignore", message=".*float_precision.*")
        return pd.read_csv(path, **kwargs)


def _check_csv_layout(path: Path) -> int:
    """The number of data rows of the CSV ``path``, once its layout is known to be one
    pandas reads as written: UTF-8 text, a header row of unique, non-empty names, and
    every other row with the header's number of fields (blank and white lines are
    skipped, as pandas skips them). pandas would rename duplicate or empty names ('a.1',
    'Unnamed: 0') and pad a short row with missing values, which would then be imputed:
    a CLIError naming the line instead."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            last_line = [""]  # the text of the line the reader read last

            def lines():
                for line in f:
                    last_line[0] = line
                    yield line

            reader = csv.reader(lines())
            header = next(reader, None)
            if header is None:
                raise CLIError(f"input file {path} is empty")
            names = [name.strip() for name in header]
            if not any(names):
                raise CLIError(f"input file {path}: line 1, the header, has no column names")
            _refuse_other_separators(path, names)
            for j, name in enumerate(names):
                if not name:
                    raise CLIError(
                        f"input file {path}: column {j + 1} of the header "
                        "(line 1) has no name; every column needs one"
                    )
                if name in names[:j]:
                    raise CLIError(
                        f"input file {path}: the header (line 1) names column "
                        f"{name!r} twice (columns {names.index(name) + 1} and "
                        f"{j + 1}); column names must be unique"
                    )
            rows = 0
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip() and '"' not in last_line[0]):
                    continue  # a blank or white line ('""' is a row of one empty field)
                if len(row) != len(header):
                    raise CLIError(
                        f"input file {path}: line {reader.line_num} has "
                        f"{len(row)} field(s), the header {len(header)}"
                    )
                rows += 1
    except UnicodeDecodeError as err:
        raise CLIError(
            f"input file {path} is not UTF-8 text (byte {err.start} cannot be decoded)"
        ) from None
    except csv.Error as err:
        raise CLIError(
            f"input file {path} is not a valid CSV: line {reader.line_num}: {err}"
        ) from None
    return rows


# Separators of files that are not comma-separated, as they would be named in an error.
_OTHER_SEPARATORS = {"\t": "tabs", ";": "semicolons", "|": "vertical bars"}


def _refuse_other_separators(path: Path, names: list[str]) -> None:
    """A CLIError when the header is one column whose name holds a tab, ';' or '|': the
    file is separated by that, and read as comma-separated every row would be one text
    column (refused later as a column of too many categories, a confusing message)."""
    if len(names) != 1:
        return
    for separator, what in _OTHER_SEPARATORS.items():
        if separator in names[0]:
            raise CLIError(
                f"input file {path}: the header (line 1) is one column {names[0]!r}, "
                f"which looks separated by {what}; the CLI reads comma-separated files "
                "(convert it, e.g. pandas.read_csv(path, sep=...).to_csv(new_path, "
                "index=False))"
            )


def _read_csv(path: str):
    """A DataFrame from a CSV with a header row (empty cells become missing).

    The layout is checked first (:func:`_check_csv_layout`). Columns of whole numbers
    come back as pandas' nullable Int64, True / False columns as nullable booleans,
    other number columns as float64 and text columns as strings: the imputer takes each
    as its type (count or binary, boolean, real, categorical; see
    :mod:`notmiwae_fast.impute._columns`). Every failure is a CLIError naming the file."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"input file {path} does not exist")
    rows = _check_csv_layout(p)
    try:
        df = read_csv_exact(p, dtype_backend="numpy_nullable")
    except pd.errors.EmptyDataError:
        raise CLIError(f"input file {path} is empty") from None
    except (pd.errors.ParserError, ValueError, OverflowError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CLIError(f"input file {path} is not a valid CSV: {first}") from None
    if df.shape[0] == 0:
        raise CLIError(f"input file {path} has a header but no data rows")
    if df.shape[0] != rows:  # a layout the two readers see differently (quotes, ...)
        raise CLIError(
            f"input file {path} is not a valid CSV: {rows} data rows by its "
            f"lines, {df.shape[0]} as a table (check its quotes)"
        )
    from pandas.api.types import is_float_dtype

    for name in df.columns:
        dtype = df[name].dtype
        if is_float_dtype(dtype):  # Float64 (nullable) -> float64 with NaN
            df[name] = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
    return df


def _read_model_file(path: str):
    """What ``path`` holds, on the CPU: a fitted imputer (``notmiwae-fast fit``,
    imputer.save_imputer), or a MIWAE / NotMIWAE (export.save_model). The file is read
    with torch.load(weights_only=True), so loading it runs no code the file names; a
    CLIError naming the file when it does not exist, cannot be read, holds pickled
    Python objects or neither of those."""
    from .. import export
    from .._common import io as _io
    from ..impute.files import _ALLOWED_CONSTRUCTORS

    if not Path(path).is_file():
        raise CLIError(f"model file {path} does not exist")
    try:
        obj = _io.load_plain(path, "model file", "cpu", allowed=_ALLOWED_CONSTRUCTORS)
        if isinstance(obj, dict) and obj.get("format") == export.MODEL_FORMAT:
            obj = export.model_from_state(obj)
    except _io.FormatError as err:
        raise CLIError(
            f"model file {path} does not hold a fitted imputer or a model saved "
            f"by this package ({err})"
        ) from None
    except ValueError as err:
        raise CLIError(str(err)) from None
    return obj


def _load_model(path: str, device: str | None = None):
    """The fitted imputer in ``path``, set to impute on ``device`` (--device; default
    the CPU)."""
    from ..impute.imputer import _BaseIWImputer

    imputer = _read_model_file(path)
    if not isinstance(imputer, _BaseIWImputer):
        raise CLIError(f"model file {path} does not hold a fitted imputer")
    imputer.set_params(device=device or "cpu")
    return imputer
