"""notmiwae_fast.experiments.mixed_masks: the rates each mechanism hits, only the intended
columns masked, determinism; and the mixed-table loaders (skipped without their
packages)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from notmiwae_fast.experiments import mixed_masks, mixed_tables

N = 20_000


def frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "cat": pd.Categorical(rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])),
            "x": rng.normal(size=n),
            "y": rng.exponential(size=n),
            "k": pd.array(rng.poisson(2.0, n), dtype="Int64"),
        }
    )


def test_categorical_self_masking_rates_and_columns():
    df = frame()
    mask = mixed_masks.categorical_self_masking(df, "cat", ["c"], seed=1)
    lost = (df["cat"] == "c").to_numpy()
    assert abs(mask["cat"][lost].mean() - 0.6) < 0.03
    assert abs(mask["cat"][~lost].mean() - 0.05) < 0.01
    assert not mask.drop(columns="cat").to_numpy().any()


def test_threshold_self_masking_rates_and_columns():
    df = frame()
    mask = mixed_masks.threshold_self_masking(df, ["x", "y"], quantile=0.75, seed=1)
    for name in ["x", "y"]:
        high = (df[name] > df[name].quantile(0.75)).to_numpy()
        assert abs(mask[name][high].mean() - 0.8) < 0.03
        assert abs(mask[name][~high].mean() - 0.05) < 0.01
    assert not mask[["cat", "k"]].to_numpy().any()


@pytest.mark.parametrize("mechanism", mixed_masks.MECHANISMS)
def test_mechanisms_mask_the_categorical_and_numeric_columns_only(mechanism):
    df = frame()
    mask = mixed_masks.mechanism_mask(df, mechanism, "cat", ["c"], ["x", "y"], seed=2)
    assert mask[["cat", "x", "y"]].to_numpy().any(0).all()
    assert not mask["k"].any()
    assert abs(mask["x"].mean() - (0.2 if mechanism != "numeric_mnar" else 0.2375)) < 0.015


def test_mcar_has_the_categorical_mnar_rate_without_dependence():
    df = frame()
    mnar = mixed_masks.mechanism_mask(df, "categorical_mnar", "cat", ["c"], ["x"], seed=3)
    mcar = mixed_masks.mechanism_mask(df, "mcar", "cat", ["c"], ["x"], seed=3)
    assert abs(mnar["cat"].mean() - mcar["cat"].mean()) < 0.01
    assert abs(mnar.to_numpy().mean() - mcar.to_numpy().mean()) < 0.005
    rates = mcar["cat"].groupby(df["cat"], observed=True).mean()
    assert rates.max() - rates.min() < 0.03


def test_masks_are_deterministic_and_per_column():
    df = frame(500)
    a = mixed_masks.mechanism_mask(df, "numeric_mnar", "cat", ["c"], ["x", "y"], seed=4)
    b = mixed_masks.mechanism_mask(df, "numeric_mnar", "cat", ["c"], ["x", "y"], seed=4)
    c = mixed_masks.mechanism_mask(df, "numeric_mnar", "cat", ["c"], ["x", "y"], seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    alone = mixed_masks.threshold_self_masking(df, ["y"], seed=4)
    np.testing.assert_array_equal(alone["y"], a["y"])


def test_apply_mask_keeps_dtypes_and_categories():
    df = frame(200)
    mask = mixed_masks.mcar(df, {"cat": 0.3, "x": 0.3, "k": 0.3}, seed=0)
    out = mixed_masks.apply_mask(df, mask)
    assert (out.dtypes == df.dtypes).all()
    assert list(out["cat"].cat.categories) == ["a", "b", "c"]
    pd.testing.assert_frame_equal(out.isna(), mask)
    pd.testing.assert_frame_equal(df, frame(200))  # the input is left as it was


def test_bad_arguments_named():
    df = frame(50)
    with pytest.raises(ValueError, match="no category"):
        mixed_masks.categorical_self_masking(df, "cat", ["z"])
    with pytest.raises(ValueError, match="'mechanism'"):
        mixed_masks.mechanism_mask(df, "mar", "cat", ["c"], ["x"])
    with pytest.raises(ValueError, match="'name'"):
        mixed_tables.load_mixed_table("iris")


@pytest.mark.parametrize("name", sorted(mixed_tables.MIXED_TABLES))
def test_loaders(name):
    table = mixed_tables.MIXED_TABLES[name]
    pytest.importorskip(table.package)
    df = table.load()
    assert not df.isna().to_numpy().any()
    assert isinstance(df[table.categorical].dtype, pd.CategoricalDtype)
    assert set(table.lost) <= set(df[table.categorical].unique())
    kinds = {str(t) for t in df.dtypes}
    assert {"category", "float64"} <= kinds
    assert len(mixed_tables.numeric_columns(df)) >= 4


def test_anes96_loader_types():
    pytest.importorskip("statsmodels")
    df = mixed_tables.load_mixed_table("anes96")
    assert df.shape == (944, 10) and "logpopul" not in df
    assert not df.isna().to_numpy().any()
    kinds = {name: str(dtype) for name, dtype in df.dtypes.items()}
    assert {n for n, k in kinds.items() if k == "category"} == {"PID", "educ", "vote"}
    assert kinds["TVnews"] == "Int64" and df["TVnews"].between(0, 7).all()
    floats = {"selfLR", "ClinLR", "DoleLR", "income", "age", "popul"}
    assert {n for n, k in kinds.items() if k == "float64"} == floats
    assert list(df["PID"].cat.categories) == [str(k) for k in range(7)]
    assert set(df["vote"].cat.categories) == {"Clinton", "Dole"}
    table = mixed_tables.MIXED_TABLES["anes96"]
    assert (table.categorical, table.lost) == ("PID", ("2", "3", "4"))
    # the lost categories (the independents) are a quarter of the rows
    share = df["PID"].isin(table.lost).mean()
    assert 0.2 < share < 0.3
