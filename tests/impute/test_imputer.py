"""The scikit-learn imputers: the estimator checks, types in and out, original units,
observed entries untouched, MNAR learning, pipelines, pickling, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from notmiwae_fast import SelfMaskingProcess, utils
from notmiwae_fast.impute.imputer import MIWAEImputer, NotMIWAEImputer

TINY = dict(
    hidden_dim=8,
    n_samples=4,
    n_impute_samples=8,
    max_iter=3,
    batch_size=8,
    random_state=0,
    device="cpu",
)


def mnar(n=300, d=4, seed=0, loc=10.0, scale=3.0):
    """Correlated data in non-standard units; values above the mean of the first d // 2
    columns go missing. Returns (complete, with NaN, mask 1 = observed)."""
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, 1))
    x = loc + scale * (z @ g.normal(1.0, 0.2, size=(1, d)) + 0.3 * g.normal(size=(n, d)))
    s = np.ones_like(x)
    for c in range(d // 2):
        s[:, c] = x[:, c] <= x[:, c].mean()
    return x, np.where(s == 1, x, np.nan), s


# ------------------------------------------------------------------------------------
# scikit-learn's estimator checks
# ------------------------------------------------------------------------------------
def _expected_failures(estimator):
    # Every check that applies passes; none is marked expected to fail. (The dict is
    # the place to list a check that cannot apply, with its reason.)
    return {}


@parametrize_with_checks(
    [
        MIWAEImputer(**TINY),
        NotMIWAEImputer(**TINY),
        NotMIWAEImputer(missing_process="linear", **TINY),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------------
# Behaviour
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MIWAEImputer, NotMIWAEImputer])
def test_numpy_in_numpy_out_observed_unchanged_original_units(cls):
    x, x_nan, s = mnar()
    out = cls(**{**TINY, "max_iter": 50}).fit_transform(x_nan)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == x.shape
    assert not np.isnan(out).any()
    # bit for bit, NaN-free copies of the observed entries
    assert np.array_equal(out[s == 1].view(np.int64), x_nan[s == 1].view(np.int64))
    # imputations in the data's units (around 10), not the standardised scale (around 0)
    assert abs(out[s == 0].mean() - x.mean()) < 3 * x.std()
    assert out[s == 0].mean() > 5


@pytest.mark.parametrize("cls", [MIWAEImputer, NotMIWAEImputer])
def test_standardize_false_trains_on_the_data_as_given(cls):
    """standardize=False: no observed-statistics rescaling (mean_ 0, scale_ 1), observed
    entries unchanged; the default standardises with the observed mean and std."""
    x, x_nan, s = mnar()
    plain = cls(**TINY, standardize=False).fit(x_nan)
    assert np.all(plain.mean_ == 0) and np.all(plain.scale_ == 1)
    out = plain.transform(x_nan)
    assert np.array_equal(out[s == 1], x_nan[s == 1]) and not np.isnan(out).any()
    default = cls(**TINY).fit(x_nan)
    np.testing.assert_allclose(default.mean_, np.nanmean(x_nan, axis=0))
    assert cls(**TINY, standardize=False).get_params()["standardize"] is False
    with pytest.raises(ValueError, match="standardize"):
        cls(**TINY, standardize="no").fit(x_nan)


def test_dataframe_in_dataframe_out_with_columns_and_index():
    x, x_nan, s = mnar()
    df = pd.DataFrame(x_nan, columns=["a", "b", "c", "d"], index=np.arange(300) * 3 + 7)
    imp = NotMIWAEImputer(missing_process="selfmasking", **TINY).fit(df)
    out = imp.transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["a", "b", "c", "d"]
    assert out.index.equals(df.index)
    assert not out.isna().any().any()
    assert list(imp.feature_names_in_) == ["a", "b", "c", "d"]
    assert [f["feature"] for f in imp.missing_process_["features"]] == ["a", "b", "c", "d"]
    assert list(imp.get_feature_names_out()) == ["a", "b", "c", "d"]


def test_object_dataframe_of_numbers_is_accepted_like_the_float_one():
    _, x_nan, _ = mnar(n=40)
    df = pd.DataFrame(x_nan, columns=["a", "b", "c", "d"])
    df_obj = df.astype(object)
    df_obj.iloc[3, 2] = None  # None marks a missing value too
    df.iloc[3, 2] = np.nan
    assert (df_obj.dtypes == object).all()  # noqa: E721 - element-wise over the dtypes
    expected = NotMIWAEImputer(**TINY).fit_transform(df)
    out = NotMIWAEImputer(**TINY).fit_transform(df_obj)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(out.to_numpy(), expected.to_numpy())
    assert (df_obj.dtypes == object).all()  # noqa: E721 - the caller's DataFrame as it was
    # A column holding text among its numbers is refused, named.
    df_obj["b"] = df_obj["b"].where(df_obj.index != 5, "seven")
    with pytest.raises(ValueError, match="column 'b' mixes value types"):
        NotMIWAEImputer(**TINY).fit(df_obj)


def test_float32_kept():
    _, x_nan, _ = mnar()
    out = MIWAEImputer(**TINY).fit_transform(x_nan.astype(np.float32))
    assert out.dtype == np.float32 and not np.isnan(out).any()


def test_fitted_attributes_and_iterations():
    _, x_nan, _ = mnar()
    imp = NotMIWAEImputer(**{**TINY, "max_iter": 17, "missing_process": "selfmasking"}).fit(x_nan)
    assert imp.n_iter_ == 17 and imp.loss_curve_.shape == (17,)
    assert np.isfinite(imp.loss_curve_).all()
    assert isinstance(imp.model_, torch.nn.Module)
    assert imp.n_features_in_ == 4 and imp.mean_.shape == (4,) and imp.scale_.shape == (4,)
    np.testing.assert_allclose(imp.mean_, np.nanmean(x_nan, 0))
    assert imp.missing_process_["units"] == "original"


def test_random_state_makes_fit_and_transform_reproducible():
    _, x_nan, _ = mnar()
    state = torch.get_rng_state()
    a = NotMIWAEImputer(**{**TINY, "max_iter": 20}).fit_transform(x_nan)
    b = NotMIWAEImputer(**{**TINY, "max_iter": 20}).fit_transform(x_nan)
    np.testing.assert_array_equal(a, b)
    assert torch.equal(state, torch.get_rng_state()), "the global torch RNG was touched"
    c = NotMIWAEImputer(**{**TINY, "max_iter": 20, "random_state": 1}).fit_transform(x_nan)
    assert not np.array_equal(a, c)


@pytest.mark.slow
def test_not_miwae_beats_mean_and_miwae_on_mnar_data_and_learns_the_threshold():
    x, x_nan, s = mnar(n=600)
    kw = dict(
        hidden_dim=32,
        n_samples=10,
        n_impute_samples=200,
        max_iter=1500,
        random_state=0,
        device="cpu",
    )
    out_not = NotMIWAEImputer(missing_process="selfmasking", **kw).fit(x_nan)
    rmse_not = utils.missing_rmse(x, out_not.transform(x_nan), s)
    rmse_miwae = utils.missing_rmse(x, MIWAEImputer(**kw).fit_transform(x_nan), s)
    rmse_mean = utils.missing_rmse(x, np.where(s == 1, x, np.nanmean(x_nan, 0)), s)
    assert rmse_not < rmse_miwae < rmse_mean
    # the first two columns: high values missing, threshold near the column mean
    for j in (0, 1):
        f = out_not.missing_process_["features"][j]
        assert f["direction"] == "high values missing"
        assert abs(f["threshold"] - np.nanmean(x[:, j])) < x[:, j].std()
    p = out_not.missing_probability(x)
    assert p.shape == x.shape
    high = x[:, 0] > x[:, 0].mean()
    assert p[high, 0].mean() > p[~high, 0].mean() + 0.3


def test_known_signs_and_custom_process_and_linear():
    _, x_nan, _ = mnar()
    imp = NotMIWAEImputer(
        missing_process="selfmasking_known_signs", signs=[1, 1, -1, -1], **TINY
    ).fit(x_nan)
    assert imp.model_.missing_model.signs.tolist() == [1, 1, -1, -1]
    process = SelfMaskingProcess(4)
    before = process.W.detach().clone()
    imp = NotMIWAEImputer(missing_process=process, **{**TINY, "max_iter": 20}).fit(x_nan)
    assert torch.equal(process.W, before), "the given process instance was trained in place"
    assert not torch.equal(imp.model_.missing_model.W.detach(), before)
    assert not np.isnan(
        NotMIWAEImputer(missing_process="linear", **TINY).fit_transform(x_nan)
    ).any()


def test_get_set_params_and_clone():
    imp = NotMIWAEImputer(max_iter=5, missing_process="linear")
    params = imp.get_params()
    for name in (
        "missing_process",
        "signs",
        "out_dist",
        "latent_dim",
        "hidden_dim",
        "n_samples",
        "n_impute_samples",
        "max_iter",
        "batch_size",
        "lr",
        "random_state",
        "device",
        "verbose",
        "ppca",
    ):
        assert name in params
    assert params["max_iter"] == 5 and params["missing_process"] == "linear"
    imp.set_params(max_iter=7, hidden_dim=3)
    assert imp.max_iter == 7 and clone(imp).hidden_dim == 3
    assert "missing_process" not in MIWAEImputer().get_params()


def test_pipeline_before_a_regressor():
    x, x_nan, _ = mnar()
    y = x.sum(1)
    pipe = Pipeline(
        [("impute", NotMIWAEImputer(**{**TINY, "max_iter": 30})), ("regress", LinearRegression())]
    )
    pipe.fit(x_nan, y)
    pred = pipe.predict(x_nan)
    assert pred.shape == y.shape and np.isfinite(pred).all()
    assert pipe.score(x_nan, y) > 0.5


def test_pickle_after_fit_gives_the_same_imputations():
    _, x_nan, _ = mnar()
    imp = NotMIWAEImputer(**{**TINY, "max_iter": 20}).fit(x_nan)
    again = pickle.loads(pickle.dumps(imp))
    np.testing.assert_array_equal(imp.transform(x_nan), again.transform(x_nan))


# ------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------
def test_entirely_missing_column_is_named():
    _, x_nan, _ = mnar()
    df = pd.DataFrame(x_nan, columns=["a", "b", "c", "d"])
    df["c"] = np.nan
    with pytest.raises(ValueError, match="column 'c' is entirely missing"):
        NotMIWAEImputer(**TINY).fit(df)
    x_nan[:, 3] = np.nan
    with pytest.raises(ValueError, match="column 3 is entirely missing"):
        MIWAEImputer(**TINY).fit(x_nan)


def test_non_numeric_column_is_named():
    """A DataFrame's text column is categorical (tests/impute/test_mixed_imputer.py); in
    a NumPy array, text is refused with the column named."""
    _, x_nan, _ = mnar(n=20)
    df = pd.DataFrame(x_nan, columns=["a", "b", "c", "d"])
    df["b"] = ["x"] * 20
    assert NotMIWAEImputer(**TINY).fit(df).codec_.columns[1].kind == "categorical"
    arr = x_nan.astype(object)
    arr[3, 2] = "seven"
    with pytest.raises(ValueError, match="column 2 is not numeric"):
        NotMIWAEImputer(**TINY).fit(arr)


def test_inf_is_refused_with_the_column_named():
    _, x_nan, _ = mnar(n=20)
    x_nan[5, 1] = np.inf
    with pytest.raises(ValueError, match="column 1 holds inf"):
        NotMIWAEImputer(**TINY).fit(x_nan)
    df = pd.DataFrame(x_nan, columns=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="column 'b' holds inf"):
        NotMIWAEImputer(**TINY).fit(df)


def test_transform_with_other_columns_is_refused():
    _, x_nan, _ = mnar()
    imp = NotMIWAEImputer(**TINY).fit(x_nan)
    with pytest.raises(ValueError, match="X has 3 features.*expecting 4"):
        imp.transform(x_nan[:, :3])
    df_imp = NotMIWAEImputer(**TINY).fit(pd.DataFrame(x_nan, columns=list("abcd")))
    with pytest.raises(ValueError, match="feature names"):
        df_imp.transform(pd.DataFrame(x_nan, columns=list("abce")))


@pytest.mark.parametrize("cls", [MIWAEImputer, NotMIWAEImputer])
def test_glorot_weight_init(cls):
    """weight_init="glorot": every linear layer of the model starts Glorot-uniform with
    zero biases (as the paper's Keras code); the default is PyTorch's (non-zero biases)."""
    from notmiwae_fast.nn.networks import glorot_init_

    _, x_nan, _ = mnar(n=40)
    params = {**TINY, "max_iter": 1, "lr": 1e-12}  # one step that moves nothing visibly
    glorot = cls(**params, weight_init="glorot").fit(x_nan).model_
    default = cls(**params).fit(x_nan).model_
    linears = [m for m in glorot.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.bias.abs().max() < 1e-9 for m in linears)
    for m in linears:
        fan_out, fan_in = m.weight.shape
        assert m.weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5 + 1e-9
    assert any(
        m.bias.abs().max() > 1e-3 for m in default.modules() if isinstance(m, torch.nn.Linear)
    )
    layer = torch.nn.Linear(256, 128)
    assert glorot_init_(layer) is layer and layer.bias.abs().max() == 0
    assert layer.weight.std().item() == pytest.approx((2 / (256 + 128)) ** 0.5, rel=0.05)
    with pytest.raises(ValueError, match="weight_init"):
        cls(**TINY, weight_init="he").fit(x_nan)


@pytest.mark.parametrize(
    "name,value",
    [
        ("max_iter", 0),
        ("lr", -1.0),
        ("out_dist", "poisson"),
        ("missing_process", "nope"),
        ("batch_size", 0),
    ],
)
def test_bad_hyper_parameters_are_named_at_fit(name, value):
    _, x_nan, _ = mnar(n=20)
    imp = NotMIWAEImputer(**{**TINY, name: value})  # __init__ only stores
    with pytest.raises(ValueError, match=name):
        imp.fit(x_nan)


def test_verbose_shows_progress_bars_and_quiet_does_not(capsys):
    _, x_nan, _ = mnar()
    NotMIWAEImputer(**{**TINY, "verbose": True}).fit_transform(x_nan)
    err = capsys.readouterr().err
    assert "fitting" in err and "imputing" in err
    NotMIWAEImputer(**TINY).fit_transform(x_nan)
    assert capsys.readouterr().err == ""
