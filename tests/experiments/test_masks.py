"""notmiwae_fast.experiments.masks: the rates the intercepts are solved for, which
columns each mechanism masks, what the missingness depends on, seeds and errors."""

from __future__ import annotations

import numpy as np
import pytest

from notmiwae_fast.experiments import masks


def data(n=20_000, d=6, seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(n, 1)) + g.normal(size=(n, d))


def test_solve_intercept_hits_the_rate():
    logits = np.random.default_rng(1).normal(size=5000) * 3
    c = masks.solve_intercept(logits, 0.3)
    assert abs(masks._sigmoid(logits + c).mean() - 0.3) < 1e-9


@pytest.mark.parametrize("mechanism", list(masks.MECHANISMS))
def test_rate_on_the_masked_columns_and_seeded(mechanism):
    X = data()
    s = masks.make_mask(mechanism, X, 0.3, seed=3)
    assert s.shape == X.shape and set(np.unique(s)) <= {0.0, 1.0}
    rates = 1 - s.mean(axis=0)
    masked = rates > 0
    assert np.all(np.abs(rates[masked] - 0.3) < 0.02)
    np.testing.assert_array_equal(s, masks.make_mask(mechanism, X, 0.3, seed=3))
    assert not np.array_equal(s, masks.make_mask(mechanism, X, 0.3, seed=4))


def test_mar_keeps_some_columns_observed_and_depends_on_them_only():
    X = data(d=10)
    s = masks.mar_logistic_mask(X, 0.3, np.random.default_rng(0))
    full = s.all(axis=0)
    assert full.sum() == 3 and (~full).sum() == 7
    # the masked columns' missingness is predictable from the observed columns
    for j in np.nonzero(~full)[0]:
        gap = X[s[:, j] == 0][:, full].mean(axis=0) - X[s[:, j] == 1][:, full].mean(axis=0)
        assert np.abs(gap).max() > 0.2


def test_mnar_masks_every_column_and_depends_on_the_values():
    X = data()
    s = masks.mnar_logistic_mask(X, 0.3, np.random.default_rng(0))
    assert np.all(1 - s.mean(axis=0) > 0.25)
    # missing and observed rows differ in their (complete) values
    for j in range(X.shape[1]):
        gap = X[s[:, j] == 0].mean(axis=0) - X[s[:, j] == 1].mean(axis=0)
        assert np.abs(gap).max() > 0.2


def test_mcar_does_not_depend_on_the_values():
    X = data()
    s = masks.mcar_mask(X, 0.3, np.random.default_rng(0))
    gap = X[s[:, 0] == 0].mean(axis=0) - X[s[:, 0] == 1].mean(axis=0)
    assert np.abs(gap).max() < 0.1


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="mechanism"):
        masks.make_mask("nope", data(n=10), 0.3, 0)
    with pytest.raises(ValueError, match="rate"):
        masks.make_mask("mcar", data(n=10), 1.5, 0)
    with pytest.raises(ValueError, match="'X'"):
        masks.make_mask("mcar", np.full((3, 2), np.nan), 0.3, 0)
    with pytest.raises(ValueError, match="'X'"):
        masks.make_mask("mar_logistic", data(n=10, d=1), 0.3, 0)
