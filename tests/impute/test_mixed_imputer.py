"""The imputers on DataFrames of mixed column types: type detection, round trips with
dtypes and categories kept, learning a categorical self-masking mechanism, bad input."""

import pickle

import numpy as np
import pandas as pd
import pytest
from helpers import MIXED_FAST as FAST
from helpers import mixed_frame, with_holes

from notmiwae_fast import MIWAEImputer, NotMIWAEImputer
from notmiwae_fast.impute._columns import MAX_CATEGORIES, TableCodec, is_mixed


def test_column_types_are_detected():
    codec = TableCodec.detect(mixed_frame())
    kinds = {c.name: c.kind for c in codec.columns}
    assert kinds == {
        "x": "real",
        "level": "categorical",
        "colour": "categorical",
        "label": "categorical",
        "visits": "count",
        "flag": "binary",
        "age": "real",
    }
    assert codec.columns[1].categories == ["low", "mid", "high", "unused"]
    assert codec.columns[2].categories == ["blue", "red"]
    assert is_mixed(mixed_frame(), None)
    assert not is_mixed(mixed_frame()[["x"]], None)
    assert not is_mixed(np.zeros((3, 2)), None)


def test_column_types_override_and_are_checked():
    df = mixed_frame()
    codec = TableCodec.detect(df, {"visits": "real", "flag": "categorical"})
    assert [c.kind for c in codec.columns][4:6] == ["real", "categorical"]
    with pytest.raises(ValueError, match="column_types.*nope"):
        TableCodec.detect(df, {"nope": "real"})
    with pytest.raises(ValueError, match="'x'.*'ordinal'"):
        TableCodec.detect(df, {"x": "ordinal"})
    with pytest.raises(ValueError, match="column_types"):
        is_mixed(np.zeros((3, 2)), {"x": "real"})


def test_round_trip_keeps_columns_dtypes_categories_and_observed_values():
    df = with_holes(mixed_frame())
    imputer = NotMIWAEImputer(**FAST)
    out = imputer.fit_transform(df)
    assert list(out.columns) == list(df.columns) and out.index.equals(df.index)
    assert out.dtypes.to_dict() == df.dtypes.to_dict()
    assert list(out["level"].cat.categories) == ["low", "mid", "high", "unused"]
    assert out.isna().sum().sum() == 0
    observed = df.notna()
    for c in df.columns:
        assert out[c][observed[c]].equals(df[c][observed[c]]), c
    assert set(out["label"]) <= {"yes", "no"} and set(out["colour"]) <= {"red", "blue"}
    assert (out["visits"] >= 0).all()
    assert set(imputer.missing_process_["level"]["p_missing"]) == {"low", "mid", "high", "unused"}
    again = pickle.loads(pickle.dumps(imputer)).transform(df)
    pd.testing.assert_frame_equal(again, out)


def test_miwae_imputer_takes_mixed_frames_too():
    df = with_holes(mixed_frame(120))
    out = MIWAEImputer(**FAST).fit_transform(df)
    assert out.dtypes.to_dict() == df.dtypes.to_dict() and out.isna().sum().sum() == 0


def test_learns_which_category_goes_missing():
    """'high' is lost 80 % of the time, the others 5 %: the learnt process says so, and
    the imputations of the lost level beat the mode of what is observed."""
    rng = np.random.default_rng(3)
    df = mixed_frame(800, seed=3)
    truth = df["level"].copy()
    lost = np.where(truth == "high", rng.random(len(df)) < 0.8, rng.random(len(df)) < 0.05)
    holes = df.copy()
    holes.loc[lost, "level"] = None
    imputer = NotMIWAEImputer(**{**FAST, "max_iter": 1500})
    out = imputer.fit_transform(holes)
    p = imputer.missing_process_["level"]["p_missing"]
    assert p["high"] > max(p["low"], p["mid"]) + 0.2
    accuracy = (out["level"][lost] == truth[lost]).mean()
    mode = (truth[lost] == holes["level"].mode()[0]).mean()
    assert accuracy > mode + 0.3


def test_unseen_category_at_transform_names_column_and_value():
    df = mixed_frame(100)
    imputer = NotMIWAEImputer(**{**FAST, "max_iter": 5}).fit(with_holes(df))
    bad = df.copy()
    bad["label"] = bad["label"].astype(object)
    bad.loc[0, "label"] = "maybe"
    with pytest.raises(ValueError, match="'label'.*'maybe'.*not seen at fit"):
        imputer.transform(bad)


def test_bad_tables_are_refused_with_the_column_named():
    base = mixed_frame(50)
    many = pd.concat([base] * 3, ignore_index=True)
    many["code"] = [f"c{i}" for i in range(len(many))]
    assert len(many) > MAX_CATEGORIES
    with pytest.raises(ValueError, match="'code' has .* categories.*column_types"):
        NotMIWAEImputer(**FAST).fit(many)
    mixed_types = base.assign(label=[1.5 if i % 2 else "a" for i in range(50)])
    with pytest.raises(ValueError, match="'label' mixes value types"):
        NotMIWAEImputer(**FAST).fit(mixed_types)
    empty = base.assign(level=pd.Categorical([None] * 50, categories=["a", "b"]))
    with pytest.raises(ValueError, match="'level' is entirely missing"):
        NotMIWAEImputer(**FAST).fit(empty)
    with pytest.raises(ValueError, match="missing_process"):
        NotMIWAEImputer(**FAST, missing_process="linear").fit(base)


def test_columns_of_other_dtypes_and_empty_tables_are_refused_clearly():
    base = mixed_frame(50)
    dated = base.assign(when=pd.date_range("2020-01-01", periods=50))
    with pytest.raises(ValueError, match="column 'when' has dtype datetime64.*convert"):
        NotMIWAEImputer(**FAST).fit(dated)
    spans = base.assign(took=pd.to_timedelta(np.arange(50), unit="s"))
    with pytest.raises(ValueError, match="column 'took' has dtype timedelta64"):
        NotMIWAEImputer(**FAST).fit(spans)
    with pytest.raises(ValueError, match="column 'z' has dtype complex"):
        NotMIWAEImputer(**FAST).fit(base.assign(z=np.arange(50) * 1j))
    with pytest.raises(ValueError, match="count column 'colour' holds values that are not num"):
        NotMIWAEImputer(**FAST, column_types={"colour": "count"}).fit(base)
    with pytest.raises(ValueError, match="argument 'X' has no rows"):
        NotMIWAEImputer(**FAST).fit(base.iloc[:0])


def test_one_category_column_is_imputed_with_it():
    df = mixed_frame(80).assign(const=pd.Categorical(["only"] * 80))
    df.loc[::4, "const"] = None
    out = NotMIWAEImputer(**{**FAST, "max_iter": 20}).fit_transform(df)
    assert (out["const"] == "only").all()


def test_saved_file_round_trips_a_mixed_imputer(tmp_path):
    from notmiwae_fast.impute.files import load_imputer, save_imputer

    df = with_holes(mixed_frame(100))
    imputer = NotMIWAEImputer(**{**FAST, "max_iter": 20}, column_types={"age": "count"})
    with pytest.raises(ValueError, match="'age'"):  # negative values are no counts
        imputer.fit(df)
    imputer.set_params(column_types={"visits": "real"}).fit(df)
    save_imputer(imputer, tmp_path / "m.pt")
    loaded = load_imputer(tmp_path / "m.pt")
    assert [c.kind for c in loaded.codec_.columns] == [c.kind for c in imputer.codec_.columns]
    assert loaded.missing_process_ == imputer.missing_process_
    pd.testing.assert_frame_equal(loaded.transform(df), imputer.transform(df))


def test_a_file_of_the_older_process_form_still_loads(tmp_path):
    """Mixed imputers saved before the scalar process took an intercept hold
    missing_model.b (logits −W (x̂ − b)); they load as the same process."""
    from notmiwae_fast._common import io as _io
    from notmiwae_fast.impute.files import _imputer_state, _SavedImputer, load_imputer

    df = mixed_frame(100)
    imputer = NotMIWAEImputer(**{**FAST, "max_iter": 20}).fit(with_holes(df))
    state = _imputer_state(imputer)
    weights = state["model"]
    weights["missing_model.b"] = weights.pop("missing_model.intercept") / weights["missing_model.W"]
    _io.save_atomic(_SavedImputer(state), tmp_path / "old.pt")
    loaded = load_imputer(tmp_path / "old.pt")
    np.testing.assert_allclose(
        loaded.missing_probability(df), imputer.missing_probability(df), rtol=1e-5, atol=1e-7
    )


def test_transform_sharded_without_a_process_group_is_transform():
    from notmiwae_fast.distributed import transform_sharded

    df = with_holes(mixed_frame(60))
    imputer = NotMIWAEImputer(**{**FAST, "max_iter": 10}).fit(df)
    pd.testing.assert_frame_equal(transform_sharded(imputer, df), imputer.transform(df))


def test_object_column_of_booleans_with_gaps_is_binary():
    df = mixed_frame(80)[["x", "level"]]
    df["ok"] = pd.Series([bool(v) for v in df["x"] > 0], dtype=object)
    df.loc[::5, "ok"] = None
    assert TableCodec.detect(df).columns[2].kind == "binary"
    out = NotMIWAEImputer(**{**FAST, "max_iter": 10}).fit_transform(df)
    assert out["ok"].dtype == object and set(out["ok"]) <= {True, False}
    assert out["ok"].map(type).eq(bool).all()


def test_integer_columns_are_counts_only_when_poisson_like():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "year": pd.array(rng.integers(2007, 2010, size=200), dtype="Int64"),
            "visits": pd.array(rng.poisson(3.0, size=200), dtype="Int64"),
            "income": pd.array(rng.integers(0, 100_000, size=200), dtype="Int64"),
        }
    )
    assert [c.kind for c in TableCodec.detect(df).columns] == ["real", "count", "real"]


def test_missing_probability_on_a_mixed_table():
    """Per entry: a categorical entry's p(missing) is its category's (as
    missing_process_ reports it), a scalar one σ(W x − a) in the model's units; an
    incomplete table is refused with the column named, an MCAR fit has no process."""
    df = mixed_frame(120)
    imputer = NotMIWAEImputer(**{**FAST, "max_iter": 20}).fit(with_holes(df))
    p = imputer.missing_probability(df)
    assert p.shape == df.shape and p.dtype == np.float64
    assert ((p > 0) & (p < 1)).all()
    for j, name in enumerate(df.columns):
        info = imputer.missing_process_[name]
        if info["kind"] == "categorical":
            expected = df[name].astype(str).map(info["p_missing"]).to_numpy(dtype=float)
            np.testing.assert_allclose(p[:, j], expected, rtol=1e-6)
        elif info["kind"] == "real":
            x = (df[name].to_numpy(dtype=float) - imputer.mean_[j]) / imputer.scale_[j]
            expected = 1 / (1 + np.exp(info["intercept"] - info["W"] * x))
            np.testing.assert_allclose(p[:, j], expected, rtol=1e-5, atol=1e-7)
    holes = with_holes(df)
    gap = next(c for c in holes.columns if holes[c].isna().any())
    with pytest.raises(ValueError, match=f"complete.*'{gap}'"):
        imputer.missing_probability(holes)
    mcar = NotMIWAEImputer(**{**FAST, "max_iter": 5, "missing_process": "mcar"})
    with pytest.raises(AttributeError, match="missing_process='mcar'"):
        mcar.fit(with_holes(df)).missing_probability(df)
