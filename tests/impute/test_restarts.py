"""``n_init``: several random starts, the one with the highest bound on the training rows
kept (impute/_restarts.py); on plain and mixed tables, saved files and bad values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import MIXED_FAST, mixed_frame, with_holes

from notmiwae_fast import MIWAEImputer, NotMIWAEImputer, utils
from notmiwae_fast.impute import _mixed, _restarts, files
from notmiwae_fast.impute._training import FitData, mean_bound
from notmiwae_fast.impute.files import load_imputer, save_imputer

FAST = dict(
    hidden_dim=16, n_samples=4, n_impute_samples=8, max_iter=60, random_state=0, device="cpu"
)


def table(n=200, d=3, seed=0):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 1)) + 0.5 * g.normal(size=(n, d))
    return np.where(g.random(x.shape) < 0.25, np.nan, x)


def bound_of(imputer, x):
    """The bound best_of_restarts compares, recomputed for the imputer's kept model."""
    x_std, _, _ = utils.standardize(x, imputer.mean_, imputer.scale_)
    return mean_bound(imputer.model_, x_std, ~np.isnan(x), torch.device("cpu"), imputer._seed_)


@pytest.mark.parametrize("cls", [MIWAEImputer, NotMIWAEImputer])
def test_keeps_the_start_with_the_highest_bound(cls):
    x = table()
    imputer = cls(n_init=3, missing_process="selfmasking", **FAST) if cls is NotMIWAEImputer \
        else cls(n_init=3, **FAST)  # fmt: skip
    imputer.fit(x)
    bounds = imputer.init_bounds_
    assert len(bounds) == 3 and all(math.isfinite(b) for b in bounds)
    assert len(set(bounds)) == 3  # three different starts
    assert bound_of(imputer, x) == max(bounds)
    assert imputer.n_iter_ == FAST["max_iter"] and not np.isnan(imputer.transform(x)).any()


def test_first_start_is_the_single_fit():
    x = table()
    single = NotMIWAEImputer(missing_process="selfmasking", **FAST).fit(x)
    several = NotMIWAEImputer(missing_process="selfmasking", n_init=2, **FAST).fit(x)
    assert single.init_bounds_ == [] and NotMIWAEImputer().n_init == 1
    assert several.init_bounds_[0] == bound_of(single, x)
    assert single._seed_ == several._seed_  # imputation draws do not depend on n_init


def test_restart_seeds_start_with_the_fits_seed_and_differ():
    seeds = _restarts.restart_seeds(12345, 4)
    assert seeds[0] == 12345 and len(set(seeds)) == 4
    assert _restarts.restart_seeds(12345, 4) == seeds and _restarts.restart_seeds(7, 1) == [7]


@pytest.mark.parametrize(
    "bounds, kept", [([float("nan"), -5.0, -3.0], 2), ([-3.0, float("nan"), -5.0], 0),
                     ([float("nan")] * 3, 0), ([-4.0, -4.0, -9.0], 0)],
)  # fmt: skip
def test_a_nan_bound_loses_and_ties_keep_the_first(monkeypatch, bounds, kept):
    values = iter(bounds)
    monkeypatch.setattr(_restarts, "mean_bound", lambda *args: next(values))
    data = FitData(np.zeros((4, 2)), np.ones((4, 2), bool), None, None, torch.device("cpu"), 3)
    model, losses, got = _restarts.best_of_restarts(3, data, lambda d: (d.seed, np.zeros(1)))
    assert model == _restarts.restart_seeds(3, 3)[kept]
    np.testing.assert_array_equal(got, bounds)


def test_mixed_tables_restart_too():
    df = with_holes(mixed_frame(120))
    imputer = NotMIWAEImputer(**{**MIXED_FAST, "n_init": 2}).fit(df)
    assert len(imputer.init_bounds_) == 2
    codec_values = imputer.codec_.encode(df)
    x_std = _mixed._standardized(codec_values, imputer.mean_, imputer.scale_)
    kept = mean_bound(
        imputer.model_, x_std, ~np.isnan(codec_values), torch.device("cpu"), imputer._seed_
    )
    assert kept == max(imputer.init_bounds_)
    assert imputer.transform(df).dtypes.to_dict() == df.dtypes.to_dict()


def test_saved_files_keep_the_bounds(tmp_path):
    x = table()
    imputer = NotMIWAEImputer(missing_process="selfmasking", n_init=2, **FAST).fit(x)
    save_imputer(imputer, tmp_path / "imp.pt")
    loaded = load_imputer(tmp_path / "imp.pt")
    assert loaded.init_bounds_ == imputer.init_bounds_ and loaded.n_init == 2
    np.testing.assert_array_equal(loaded.transform(x), imputer.transform(x))
    state = files._imputer_state(imputer)
    del state["init_bounds"]  # a file from before n_init
    assert files._imputer_from_state(state).init_bounds_ == []
    state["init_bounds"] = ["-1.0"]
    with pytest.raises(ValueError, match="init_bounds"):
        files._imputer_from_state(state)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3"])
def test_bad_n_init_is_refused_by_name(value):
    with pytest.raises(ValueError, match="'n_init'"):
        NotMIWAEImputer(n_init=value, **FAST).fit(table())
