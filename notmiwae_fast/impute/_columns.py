"""Column types of a mixed DataFrame: detecting them, encoding the table as the float
array the mixed models take, and decoding imputations back to the table's dtypes.

Detection (``column_types`` overrides it per column):
* ``category`` dtype, object and string columns: "categorical" (a category dtype keeps
  its categories, the others take their sorted distinct values);
* bool and pandas ``boolean`` columns, and object columns of True / False (None or NaN
  for missing): "binary";
* integer columns (NumPy ints, nullable ``Int64`` ...): "binary" when every observed
  value is 0 or 1, "count" when they are ≥ 0 and dispersed about as a Poisson
  (mean / 2 ≤ variance ≤ 2 × mean: a year or an age is not), else "real" (imputations
  rounded back to integers);
* float columns: "real";
* any other dtype (dates, time spans, complex numbers) is refused, naming the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..nn.mixed import COLUMN_KINDS, MixedLayout
from ._input import _in_dtype_of

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_CATEGORIES", "Column", "TableCodec", "is_mixed"]

# Values that make an object column numeric (bool, an int to Python, does not).
_NUMBERS = (int, float, np.integer, np.floating)

# More categories than this in one column is refused (one logit per category in the
# decoder and the missing process): pass column_types to treat it otherwise.
MAX_CATEGORIES = 100


@dataclass
class Column:
    """One column: its name, type, pandas dtype and (categorical) categories."""

    name: Any
    kind: str
    dtype: Any
    categories: Optional[list] = None

    def to_plain(self) -> dict:
        """The column as plain data (what a saved imputer holds)."""
        categories = None
        if self.categories is not None:
            categories = [c.item() if isinstance(c, np.generic) else c for c in self.categories]
        return {
            "name": self.name,
            "kind": self.kind,
            "dtype": str(self.dtype),
            "categories": categories,
        }

    @classmethod
    def from_plain(cls, d: dict) -> "Column":
        """The column :meth:`to_plain` described; ValueError when it is not one."""
        import pandas as pd

        plain = (str, int, float, bool)
        if not isinstance(d, dict) or set(d) != {"name", "kind", "dtype", "categories"}:
            raise ValueError("a column is not a dict of name, kind, dtype and categories")
        categories = d["categories"]
        if d["kind"] not in COLUMN_KINDS or not isinstance(d["name"], (str, int)):
            raise ValueError(f"column {d['name']!r} has an unknown kind {d['kind']!r}")
        if (d["kind"] == "categorical") != isinstance(categories, list) or (
            categories is not None and not all(isinstance(c, plain) for c in categories)
        ):
            raise ValueError(f"column {d['name']!r}: categories are not a list of plain values")
        if d["dtype"] == "category":
            dtype: Any = pd.CategoricalDtype(categories)
        else:
            dtype = pd.api.types.pandas_dtype(d["dtype"])
        return cls(d["name"], d["kind"], dtype, categories)


def _is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and hasattr(X, "dtypes")


def is_mixed(X: Any, column_types: Optional[dict]) -> bool:
    """Whether X takes the mixed-type path: a DataFrame with a column that is not a
    real number (or column_types naming a type other than "real")."""
    if not _is_frame(X):
        if column_types:
            raise ValueError("argument 'column_types' needs a DataFrame with named columns")
        return False
    return any(c.kind != "real" for c in _detect(X, column_types or {}))


def _kind_of(series: "pd.Series") -> str:
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_object_dtype(dtype):
        values = series.dropna()
        if len(values) and values.map(lambda v: isinstance(v, (bool, np.bool_))).all():
            return "binary"  # True / False with None for missing
        numbers = values.map(
            lambda v: isinstance(v, _NUMBERS) and not isinstance(v, (bool, np.bool_))
        ).to_numpy(dtype=bool)
        if len(values) and numbers.all():  # numbers stored as objects: a numeric column
            return "real"
        return "categorical"
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_string_dtype(dtype):
        return "categorical"
    if pd.api.types.is_bool_dtype(dtype):
        return "binary"
    if pd.api.types.is_integer_dtype(dtype):
        values = series.dropna().to_numpy(dtype=np.float64)
        if len(values) and np.isin(values, (0.0, 1.0)).all():
            return "binary"
        mean, var = (values.mean(), values.var()) if len(values) else (0.0, 0.0)
        if len(values) and values.min() >= 0 and 0.5 * mean <= var <= 2 * mean:
            return "count"  # dispersed about as a Poisson (variance ≈ mean)
        return "real"
    if pd.api.types.is_complex_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        raise ValueError(
            f"column {series.name!r} has dtype {dtype}, which the imputer does not model; "
            "convert it to numbers (a date to e.g. days since a reference date) or to text, "
            "or drop it"
        )
    return "real"


def _categories(series: "pd.Series", name: Any) -> list:
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = list(series.cat.categories)
    else:
        values = series.dropna()
        kinds = {type(v).__name__ for v in values}
        if len(kinds) > 1:
            raise ValueError(
                f"column {name!r} mixes value types ({', '.join(sorted(kinds))}); convert it "
                "to one type (e.g. X[col].astype(str)) or name its type in column_types"
            )
        categories = sorted(values.unique().tolist())
    if len(categories) > MAX_CATEGORIES:
        raise ValueError(
            f"column {name!r} has {len(categories)} categories (more than {MAX_CATEGORIES}); "
            "group the rare ones, or pass column_types={%r: 'real'} for an ordered code" % (name,)
        )
    if not categories:
        raise ValueError(f"column {name!r} has no observed category")
    return categories


def _detect(X: "pd.DataFrame", column_types: dict) -> list[Column]:
    unknown = set(column_types) - set(X.columns)
    if unknown:
        raise ValueError(
            f"argument 'column_types' names columns not in X: {sorted(map(str, unknown))}"
        )
    if len(X) == 0:
        raise ValueError("argument 'X' has no rows: fit needs at least one")
    columns = []
    for name in X.columns:
        kind = column_types.get(name) or _kind_of(X[name])
        if kind not in COLUMN_KINDS:
            raise ValueError(
                f"argument 'column_types' gives column {name!r} the type {kind!r}; expected "
                f"one of {COLUMN_KINDS}"
            )
        categories = _categories(X[name], name) if kind == "categorical" else None
        columns.append(Column(name, kind, X[name].dtype, categories))
    return columns


class TableCodec:
    """A DataFrame's column types (detected once, at fit) and the conversions to and
    from the float array of the mixed models."""

    def __init__(self, columns: list[Column]):
        self.columns = columns

    @classmethod
    def detect(cls, X: "pd.DataFrame", column_types: Optional[dict] = None) -> "TableCodec":
        """The codec of X's columns, their types detected (see the module docstring)
        or taken from ``column_types``."""
        return cls(_detect(X, column_types or {}))

    @property
    def layout(self) -> MixedLayout:
        return MixedLayout(
            tuple(c.kind for c in self.columns),
            tuple(len(c.categories) if c.categories is not None else 0 for c in self.columns),
        )

    @property
    def names(self) -> list:
        return [c.name for c in self.columns]

    def encode(self, X: "pd.DataFrame") -> np.ndarray:
        """[N, D] float64: category codes, 0 / 1, counts and real values; NaN where
        missing. ValueError naming the column for a category not seen at fit, a binary
        value other than 0 / 1, a negative or fractional count."""
        if list(X.columns) != self.names:
            raise ValueError(
                f"argument 'X' must have the columns seen at fit {self.names}; got "
                f"{list(X.columns)}"
            )
        out = np.empty((len(X), len(self.columns)))
        for j, column in enumerate(self.columns):
            out[:, j] = self._encode_column(X[column.name], column)
        return out

    @staticmethod
    def _encode_column(series: "pd.Series", column: Column) -> np.ndarray:
        missing = series.isna().to_numpy()
        if column.kind == "categorical":
            lookup = {c: i for i, c in enumerate(column.categories)}
            values = series.astype(object).to_numpy()
            codes = np.full(len(values), np.nan)
            for i in np.flatnonzero(~missing):
                if values[i] not in lookup:
                    raise ValueError(
                        f"column {column.name!r} holds {values[i]!r}, a category not seen "
                        f"at fit (known: {column.categories[:10]}"
                        f"{' ...' if len(column.categories) > 10 else ''})"
                    )
                codes[i] = lookup[values[i]]
            return codes
        values = np.full(len(series), np.nan)
        observed = series[~missing]
        try:
            values[~missing] = observed.astype(np.float64).to_numpy()
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{column.kind} column {column.name!r} holds values that are not numbers "
                f"({error}); convert them, or name the column's type in column_types"
            ) from None
        seen = values[~missing]
        if column.kind == "binary" and not np.isin(seen, (0.0, 1.0)).all():
            raise ValueError(f"binary column {column.name!r} holds values other than 0 and 1")
        if column.kind == "count" and ((seen < 0).any() or (seen != np.round(seen)).any()):
            raise ValueError(f"count column {column.name!r} holds negative or fractional values")
        if not np.isfinite(seen).all():
            raise ValueError(f"column {column.name!r} holds inf")
        return values

    def decode(self, filled: np.ndarray, X: "pd.DataFrame") -> "pd.DataFrame":
        """The DataFrame X with its missing entries taken from ``filled`` [N, D] (codes
        for categorical columns), each column in its dtype with its categories."""
        import pandas as pd

        out = X.copy()
        for j, column in enumerate(self.columns):
            series = X[column.name]
            missing = series.isna().to_numpy()
            if not missing.any():
                continue
            new = filled[:, j]
            if column.kind == "categorical":
                values = series.astype(object).to_numpy().copy()
                codes = new[missing].astype(np.int64)
                values[missing] = [column.categories[c] for c in codes]
                out[column.name] = pd.Series(values, index=X.index).astype(series.dtype)
                continue
            if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(
                series.dtype
            ):  # rounded and clipped to the dtype, or thresholded: as on the numeric path
                out[column.name] = _in_dtype_of(series, new)
                continue
            values = series.astype(object).to_numpy().copy()
            if column.kind == "binary" and pd.api.types.is_object_dtype(series.dtype):
                values[missing] = new[missing] >= 0.5  # True / False held as objects
            elif column.kind in ("binary", "count"):  # a float column given that type
                values[missing] = np.round(new[missing])
            else:
                values[missing] = new[missing]
            out[column.name] = pd.Series(values, index=X.index).astype(series.dtype)
        return out
