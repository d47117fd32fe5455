"""Real tables of mixed column types, shipped inside installable packages (read from
the installed package's files, nothing downloaded), for the mixed-table evaluation
(``benchmarks/mixed_tables.py``; the packages are listed in
``benchmarks/requirements-mixed.txt``).

Each loader returns a complete DataFrame (rows with a missing value dropped, so every
masked entry has a ground truth) with pandas dtypes the imputers detect: categories as
``category``, counts as nullable ``Int64``, measurements as ``float64``; id-like and
date columns are dropped. :data:`MIXED_TABLES` gives, per table, the categorical column
the categorical self-masking mechanism acts on and the categories it loses most often
(:mod:`.mixed_masks`).

* ``penguins`` (palmerpenguins, 333 complete rows of 344): four categorical columns
  (species 3, island 3, sex 2, and the study year 2007 / 2008 / 2009: three field
  seasons, not a quantity; as Int64 the imputers would take it for a Poisson count of
  mean 2008) and four float measurements. Small,
  and species is well predicted by the bill and flipper measurements: a clean test of
  whether a model recovers a category lost because of itself. MNAR: the Chinstrap
  species goes missing far more often (the rarest species left unidentified in the
  field).
* ``cars`` (vega_datasets' local ``cars.json``, 392 complete rows of 406): origin
  (USA / Europe / Japan) as the categorical column, cylinders as a count, five float
  measurements and the model year (the car's name and the date dropped). MNAR: European
  cars lose their origin far more often (imports recorded less carefully).
* ``fair`` (statsmodels' ``fair``, Fair's 1978 affairs survey, 6,366 rows; a fixed
  random subset of 2,000 by default to keep the baselines' time in check): survey
  answers coded as categories (occupation 6, husband's occupation 6, marriage rating 5,
  religiousness 4), education and children as counts, age, years married and the
  affairs measure as floats. Larger, with categories weakly tied to the numeric
  columns. MNAR: the two professional occupations (codes 5 and 6) go unreported far
  more often.
* ``anes96`` (statsmodels' ``anes96``, the 1996 American National Election Study,
  944 rows, all complete): party identification ``PID`` as the categorical column
  (7 codes kept as strings: "0" strong Democrat, "1" weak Democrat, "2" independent
  leaning Democrat, "3" independent, "4" independent leaning Republican, "5" weak
  Republican, "6" strong Republican), strongly tied to the other columns (expected vote,
  self-placement, the placement of Clinton). The other columns: education as a category
  (7 levels from "1-8 grades" to "PhD": degrees, not equally spaced steps of a
  quantity); the expected vote as a category ("Clinton" / "Dole"); TVnews (days a week
  the respondent watches TV news, 0–7) as a count (Int64); the three 7-point
  liberal–conservative scales (selfLR, ClinLR, DoleLR) as floats: they are built as
  equally spaced points of one left–right continuum and are analysed as numbers in
  the election-study literature (statsmodels' own example regresses on them), while as
  categories they would lose their order and split 944 rows over 7 classes each, and
  as counts (Poisson) they would get a variance tied to their mean on a bounded 1–7
  range; income (24 ordered brackets) as a float bracket index for the same reasons;
  age and the census place population (popul, in thousands) as floats; logpopul dropped
  (log(popul + 0.1), a function of popul). MNAR, chosen before any method was run: the
  three independent codes ("2", "3", "4") lose their party identification far more
  often — respondents without a party attachment are the ones who answer "no
  preference", "don't know" or refuse the party question (and are then left without a
  code on the 7-point scale), a plausible survey mechanism with no partisan side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

__all__ = ["MIXED_TABLES", "MixedTable", "load_mixed_table", "numeric_columns"]


def _categorical(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for name in columns:
        frame[name] = frame[name].astype("category")
    return frame


def load_penguins() -> pd.DataFrame:
    """palmerpenguins' table without incomplete rows, the year as a category
    (333 × 8)."""
    import palmerpenguins

    frame = palmerpenguins.load_penguins().dropna().reset_index(drop=True)
    frame["year"] = frame["year"].astype(str)
    frame = _categorical(frame, ["species", "island", "sex", "year"])
    for name in ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]:
        frame[name] = frame[name].astype("float64")
    return frame


def load_cars() -> pd.DataFrame:
    """vega_datasets' local cars table without incomplete rows, Name and the date
    dropped, the model year kept as a float (392 × 8)."""
    from vega_datasets import local_data

    frame = local_data.cars().dropna().reset_index(drop=True)
    frame["Model_year"] = (pd.to_datetime(frame["Year"]).dt.year - 1900).astype("float64")
    frame = frame.drop(columns=["Name", "Year"])
    frame = _categorical(frame, ["Origin"])
    frame["Cylinders"] = frame["Cylinders"].astype("Int64")
    for name in ["Miles_per_Gallon", "Displacement", "Horsepower", "Weight_in_lbs"]:
        frame[name] = frame[name].astype("float64")
    return frame


def load_fair(n_rows: Optional[int] = 2000, seed: int = 0) -> pd.DataFrame:
    """statsmodels' fair table, its coded answers as categories (codes as strings),
    education and children (5.5 = "5 or more", floored) as counts; ``n_rows`` rows
    drawn without replacement with ``seed`` (None: all 6,366)."""
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data.copy()
    if n_rows is not None and n_rows < len(frame):
        rows = np.random.default_rng(seed).choice(len(frame), n_rows, replace=False)
        frame = frame.iloc[np.sort(rows)].reset_index(drop=True)
    coded = ["occupation", "occupation_husb", "rate_marriage", "religious"]
    for name in coded:
        frame[name] = frame[name].astype(int).astype(str)
    frame = _categorical(frame, coded)
    frame["educ"] = frame["educ"].astype("Int64")
    frame["children"] = np.floor(frame["children"]).astype("Int64")
    return frame


def load_anes96() -> pd.DataFrame:
    """statsmodels' anes96 table (944 × 10): PID (codes as strings), educ (codes as
    strings) and vote ("Clinton" / "Dole") as categories, TVnews as a count, the
    7-point scales, income, age and popul as floats, logpopul dropped."""
    import statsmodels.api as sm

    frame = sm.datasets.anes96.load_pandas().data.copy()
    frame = frame.drop(columns=["logpopul"])
    for name in ["PID", "educ"]:
        frame[name] = frame[name].astype(int).astype(str)
    frame["vote"] = frame["vote"].map({0.0: "Clinton", 1.0: "Dole"})
    frame = _categorical(frame, ["PID", "educ", "vote"])
    frame["TVnews"] = frame["TVnews"].astype("Int64")
    for name in ["selfLR", "ClinLR", "DoleLR", "income", "age", "popul"]:
        frame[name] = frame[name].astype("float64")
    return frame


@dataclass(frozen=True)
class MixedTable:
    """A table of the evaluation: its loader, the categorical column of the categorical
    self-masking mechanism and the categories lost most often there."""

    load: Callable[[], pd.DataFrame]
    categorical: str
    lost: tuple
    package: str


MIXED_TABLES = {
    "penguins": MixedTable(load_penguins, "species", ("Chinstrap",), "palmerpenguins"),
    "cars": MixedTable(load_cars, "Origin", ("Europe",), "vega_datasets"),
    "fair": MixedTable(load_fair, "occupation", ("5", "6"), "statsmodels"),
    "anes96": MixedTable(load_anes96, "PID", ("2", "3", "4"), "statsmodels"),
}


def load_mixed_table(name: str) -> pd.DataFrame:
    """One of :data:`MIXED_TABLES` by name; ValueError naming the valid ones."""
    if name not in MIXED_TABLES:
        raise ValueError(f"argument 'name' must be one of {sorted(MIXED_TABLES)}; got {name!r}")
    return MIXED_TABLES[name].load()


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    """The float and integer (count) columns of a frame, booleans excluded."""
    return [
        name
        for name in frame.columns
        if pd.api.types.is_numeric_dtype(frame[name].dtype)
        and not pd.api.types.is_bool_dtype(frame[name].dtype)
    ]
