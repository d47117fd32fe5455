"""NotMIWAEImputer(missing_process="auto"), the default: the process chosen by the
held-out bound (impute/_select.py), its record, its errors and saved files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from notmiwae_fast import ConstantMissingProcess, NotMIWAEImputer
from notmiwae_fast.impute import _select
from notmiwae_fast.impute.files import load_imputer, save_imputer

FAST = dict(hidden_dim=32, n_samples=8, n_impute_samples=16, random_state=0, device="cpu")


def independent(n=800, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_default_is_auto_and_chooses_mcar_under_mcar():
    x = independent()
    x_nan = np.where(np.random.default_rng(1).random(x.shape) < 0.3, np.nan, x)
    imp = NotMIWAEImputer(max_iter=800, **FAST).fit(x_nan)
    assert NotMIWAEImputer().get_params()["missing_process"] == "auto"
    selection = imp.missing_process_selection_
    assert selection["chosen"] == "mcar" and imp.model_.missing_process == "mcar"
    assert set(selection["held_out_bounds"]) == set(_select.CANDIDATES)
    assert selection["held_out_rows"] == 160 and selection["candidate_iter"] == 200
    assert isinstance(imp.model_.missing_model, ConstantMissingProcess)
    rates = imp.missing_process_["missing_rate"]
    assert np.allclose(rates, 0.3, atol=0.1)


def test_chooses_a_self_masking_process_under_strong_self_masking():
    # Correlated columns: with independent ones self-masking is not identifiable (a
    # half-normal column missing at a constant rate fits as well).
    g = np.random.default_rng(0)
    x = g.normal(size=(800, 1)) + 0.5 * g.normal(size=(800, 4))
    x_nan = x.copy()
    x_nan[:, :2] = np.where(x[:, :2] > 0, np.nan, x[:, :2])  # high values missing
    selection = NotMIWAEImputer(max_iter=800, **FAST).fit(x_nan).missing_process_selection_
    bounds = selection["held_out_bounds"]
    # selfmasking and linear (which holds it) both model it; mcar cannot
    assert selection["chosen"] in ("selfmasking", "linear")
    assert min(bounds["selfmasking"], bounds["linear"]) > bounds["mcar"] + 0.1


def test_named_process_records_no_selection_and_tiny_or_complete_tables_skip_it():
    x = independent(n=60)
    x_nan = np.where(x > 1, np.nan, x)
    named = NotMIWAEImputer(missing_process="linear", max_iter=3, **FAST).fit(x_nan)
    assert named.missing_process_selection_ is None
    complete = NotMIWAEImputer(max_iter=3, **FAST).fit(x).missing_process_selection_
    assert complete["chosen"] == "mcar" and complete["held_out_bounds"] == {}
    tiny = NotMIWAEImputer(max_iter=3, **FAST).fit(x_nan[:10]).missing_process_selection_
    assert tiny["chosen"] == "mcar" and "rows" in tiny["reason"]


def test_auto_with_signs_is_refused_naming_signs():
    x = independent(n=60)
    x_nan = np.where(x > 1, np.nan, x)
    with pytest.raises(ValueError, match="signs"):
        NotMIWAEImputer(signs=[1, 1, 1, 1], max_iter=3, **FAST).fit(x_nan)
    with pytest.raises(ValueError, match="missing_process"):
        NotMIWAEImputer(missing_process="automatic", max_iter=3, **FAST).fit(x_nan)


def test_saved_auto_imputer_round_trips(tmp_path):
    x = independent(n=100)
    x_nan = np.where(x > 0.5, np.nan, x)
    imp = NotMIWAEImputer(max_iter=20, **FAST).fit(x_nan)
    save_imputer(imp, tmp_path / "m.pt")
    loaded = load_imputer(tmp_path / "m.pt")
    assert loaded.missing_process_selection_ == imp.missing_process_selection_
    assert loaded.model_.missing_process == imp.model_.missing_process
    np.testing.assert_array_equal(loaded.transform(x_nan), imp.transform(x_nan))
    named = NotMIWAEImputer(missing_process="selfmasking", max_iter=3, **FAST).fit(x_nan)
    save_imputer(named, tmp_path / "n.pt")
    assert load_imputer(tmp_path / "n.pt").missing_process_selection_ is None


def test_checked_selection_refuses_what_is_not_a_selection():
    good = {
        "chosen": "linear",
        "held_out_bounds": {"mcar": -1.0, "linear": -0.5},
        "held_out_rows": 3,
        "candidate_iter": 2,
        "reason": "r",
    }
    assert _select.checked_selection(good) == good
    for bad in (None, {**good, "chosen": "os.system"}, {**good, "held_out_bounds": {"a": "b"}}):
        with pytest.raises(ValueError, match="missing_process_selection"):
            _select.checked_selection(bad)


def test_constant_process_logits_do_not_depend_on_x():
    process = ConstantMissingProcess(3)
    with torch.no_grad():
        process.c.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(5, 7, 3)
    logits = process(x)
    assert logits.shape == x.shape
    assert torch.equal(logits, process(torch.zeros_like(x)))
    p = process.missing_probability(x[:, 0])
    assert torch.allclose(p[0], torch.sigmoid(-process.c))


def test_a_candidate_with_a_nan_bound_is_never_chosen(monkeypatch):
    fake = iter([float("nan"), -3.0, -4.0])  # mcar, selfmasking, linear
    monkeypatch.setattr(_select, "mean_bound", lambda *args, **kw: next(fake))
    x = independent(n=60)
    x_nan = np.where(x > 1, np.nan, x)
    selection = NotMIWAEImputer(max_iter=4, **FAST).fit(x_nan).missing_process_selection_
    assert selection["chosen"] == "selfmasking"
