"""notmiwae_fast.utils: impute (types, exact observed entries, empty input),
missing_rmse, standardize / destandardize and the MNAR protocol."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import DEVICES

from notmiwae_fast import NotMIWAE, utils


def model_and_data(n=10, d=4):
    """A small untrained model and float64 data in large units (so that a float32 round
    trip changes the observed values) with a mask, 1 = observed."""
    g = np.random.default_rng(0)
    x = g.normal(size=(n, d)) * 1e3 + 0.1
    s = (g.random((n, d)) > 0.3).astype(np.float64)
    return NotMIWAE(d, hidden_dim=8, n_samples=5), x, s


# ------------------------------------------------------------------------------------
# impute
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ndarray", "DataFrame", "list"])
@pytest.mark.parametrize("n_draws", [None, 3])
def test_impute_array_input_keeps_dtype_and_observed_entries(kind, n_draws):
    model, x, s = model_and_data()
    data = {"ndarray": x, "DataFrame": pd.DataFrame(x), "list": x.tolist()}[kind]
    out = utils.impute(model, data, s, n_samples=5, batch_size=4, n_draws=n_draws)
    assert out.dtype == np.float64
    assert out.shape == (x.shape if n_draws is None else (n_draws, *x.shape))
    observed = np.broadcast_to(s == 1, out.shape)
    np.testing.assert_array_equal(out[observed], np.broadcast_to(x, out.shape)[observed])
    assert np.isfinite(out).all()


def test_impute_float32_array_stays_float32_and_int_array_gives_float64():
    model, x, s = model_and_data()
    out = utils.impute(model, x.astype(np.float32), s, n_samples=5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[s == 1], x.astype(np.float32)[s == 1])
    x_int = np.round(x).astype(np.int64)
    out = utils.impute(model, x_int, s, n_samples=5)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[s == 1], x_int[s == 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_impute_tensor_keeps_dtype_and_observed_entries(dtype):
    model, x, s = model_and_data()
    x_t = torch.as_tensor(x, dtype=dtype)
    out = utils.impute(model, x_t, torch.as_tensor(s), n_samples=5, batch_size=4)
    assert out.dtype == x_t.numpy().dtype
    np.testing.assert_array_equal(out[s == 1], x_t.numpy()[s == 1])


def test_imputation_rmse_returns_the_exact_observed_entries():
    model, x, s = model_and_data()
    x_nan = np.where(s == 1, x, np.nan)
    rmse, out = utils.imputation_rmse(model, x, x_nan, s, n_samples=5)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[s == 1], x[s == 1])
    assert rmse == utils.missing_rmse(x, out, s)


@pytest.mark.parametrize("n_draws", [None, 3])
@pytest.mark.parametrize("kind", ["tensor", "ndarray"])
def test_impute_empty_input_is_shaped_and_typed_as_non_empty(kind, n_draws):
    model, x, s = model_and_data()
    if kind == "tensor":
        x, s = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(s)
    full = utils.impute(model, x, s, n_samples=5, n_draws=n_draws)
    empty = utils.impute(model, x[:0], s[:0], n_samples=5, n_draws=n_draws)
    assert empty.shape == (*full.shape[:-2], 0, 4)
    assert empty.dtype == full.dtype


def test_impute_bad_data_is_named():
    model, x, s = model_and_data()
    with pytest.raises(TypeError, match="argument 'x' must be a tensor or an array"):
        utils.impute(model, {"a": 1}, s)
    with pytest.raises(ValueError, match="argument 'x' must hold numbers"):
        utils.impute(model, [["a", "b", "c", "d"]], s[:1])
    with pytest.raises(ValueError, match=r"argument 'x' must be 2-D \[N, D\]"):
        utils.impute(model, x[0], s[0])
    with pytest.raises(ValueError, match="argument 's' must have the shape of 'x'"):
        utils.impute(model, x, np.ones((20, 4)))


# ------------------------------------------------------------------------------------
# missing_rmse
# ------------------------------------------------------------------------------------
def test_missing_rmse_masks():
    assert utils.missing_rmse([[1, 2]], [[1, 3]], [[1, 0]]) == 1.0
    assert utils.missing_rmse([[1, 2]], [[1, 3]], np.array([[True, False]])) == 1.0
    assert utils.missing_rmse([[1, 2]], [[5, 3]], np.array([[1, 1]])) == 0.0
    for bad in ([[1, 0.5]], [[1, np.nan]], [[2, 0]], [[1, -1]]):
        with pytest.raises(ValueError, match="argument 's' .*must hold only 0"):
            utils.missing_rmse([[1, 2]], [[1, 3]], bad)


# ------------------------------------------------------------------------------------
# standardize / destandardize
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_standardize_int_tensor_gives_floats(device):
    x = torch.tensor([[1, 10], [2, 20], [3, 30]], device=device)
    expected = (x.cpu().numpy() - [2, 20]) / np.std(x.cpu().numpy(), axis=0)
    x_std, mean, std = utils.standardize(x)
    for t in (x_std, mean, std):
        assert t.dtype == torch.get_default_dtype() and t.device == x.device
    np.testing.assert_allclose(x_std.cpu().numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(std.cpu().numpy(), [np.sqrt(2 / 3), 10 * np.sqrt(2 / 3)], rtol=1e-6)
    back = utils.destandardize(x_std, mean, std)
    assert back.dtype == torch.get_default_dtype() and back.device == x.device
    np.testing.assert_allclose(back.cpu().numpy(), x.cpu().numpy(), rtol=1e-6)
    # destandardize of an int tensor is in floats too (mean and std not truncated)
    np.testing.assert_allclose(
        utils.destandardize(x, [0.5, 0.5], [0.5, 0.5]).cpu().numpy(), x.cpu().numpy() * 0.5 + 0.5
    )
    # float64 stays float64
    assert utils.standardize(x.double())[0].dtype == torch.float64


def test_standardize_int_ndarray_gives_float64():
    x = np.array([[1, 10], [2, 20], [3, 30]])
    x_std, mean, std = utils.standardize(x)
    assert x_std.dtype == mean.dtype == std.dtype == np.float64
    np.testing.assert_allclose(x_std, (x - [2, 20]) / np.std(x, axis=0))
    np.testing.assert_allclose(utils.destandardize(x_std, mean, std), x)


# ------------------------------------------------------------------------------------
# introduce_mnar
# ------------------------------------------------------------------------------------
def test_introduce_mnar_counts_nan_as_missing():
    X = np.random.default_rng(0).normal(size=(1000, 4))
    X[0, 0] = X[1, 2] = np.nan
    X_missing, s = utils.introduce_mnar(X)
    assert s[0, 0] == 0 and s[1, 2] == 0
    np.testing.assert_array_equal(np.isnan(X_missing), s == 0)
    for c in (0, 1):  # above the mean of the column's other values
        col = X[:, c]
        np.testing.assert_array_equal(s[:, c] == 0, np.isnan(col) | (col > np.nanmean(col)))
    _, s_q = utils.introduce_mnar(X, threshold="quantile", quantile=0.25)
    col = X[:, 0]
    np.testing.assert_array_equal(s_q[:, 0] == 0, np.isnan(col) | (col > np.nanquantile(col, 0.25)))
    X[:, 1] = np.nan  # an entirely missing column stays missing, without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, s = utils.introduce_mnar(X)
    assert (s[:, 1] == 0).all()


@pytest.mark.parametrize("threshold", [np.float32(0.0), np.int64(0), np.float64(0.0), 0, 0.0])
def test_introduce_mnar_accepts_any_real_threshold(threshold):
    X = np.random.default_rng(0).normal(size=(50, 4))
    _, s = utils.introduce_mnar(X, threshold=threshold)
    np.testing.assert_array_equal(s[:, :2] == 0, X[:, :2] > 0)


@pytest.mark.parametrize("threshold", [True, "median", torch.tensor(0.0), None])
def test_introduce_mnar_bad_threshold_is_named(threshold):
    with pytest.raises(ValueError, match="argument 'threshold'"):
        utils.introduce_mnar(np.zeros((5, 2)), threshold=threshold)
    with pytest.raises(ValueError, match="argument 'quantile'"):
        utils.introduce_mnar(np.zeros((5, 2)), threshold="quantile", quantile=1.5)


@pytest.mark.parametrize("columns", [[1.5], [True], ["0"]])
def test_introduce_mnar_columns_must_be_indices(columns):
    with pytest.raises(ValueError, match="argument 'columns' must hold column indices"):
        utils.introduce_mnar(np.zeros((5, 2)), columns=columns)
    x, s = utils.introduce_mnar(np.arange(10.0).reshape(5, 2), columns=[np.int64(1)])
    assert s[:, 0].all() and not s[:, 1].all()
