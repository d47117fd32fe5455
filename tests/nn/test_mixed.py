"""The mixed-type model: layout bookkeeping, the bound against a direct computation,
gradients, imputation rules and draws."""

import math

import pytest
import torch
import torch.nn.functional as F

from notmiwae_fast.nn.mixed import (
    MixedLayout,
    MixedNotMIWAE,
    MixedSelfMaskingProcess,
    upgrade_state_dict,
)
from notmiwae_fast.nn.models import NotMIWAE

KINDS = ("real", "categorical", "binary", "count", "categorical", "real")
CATS = (0, 3, 0, 0, 2, 0)


@pytest.fixture
def layout():
    return MixedLayout(KINDS, CATS)


def table(B: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack(
        [
            torch.randn(B, generator=g),
            torch.randint(0, 3, (B,), generator=g).float(),
            torch.randint(0, 2, (B,), generator=g).float(),
            torch.poisson(torch.full((B,), 2.0), generator=g),
            torch.randint(0, 2, (B,), generator=g).float(),
            torch.randn(B, generator=g),
        ],
        1,
    )
    s = (torch.rand(B, 6, generator=g) > 0.3).float()
    return x, s


def test_layout_widths_and_offsets(layout):
    assert layout.columns("categorical") == [1, 4]
    assert layout.offsets == [0, 3, 5]
    assert layout.scalar_columns == [0, 2, 3, 5]
    assert layout.scalar_positions("count") == [2]
    assert layout.encoder_width == 4 + 5
    # loc + scale for 2 reals, 1 binary logit, 1 log-rate, 5 category logits
    assert layout.decoder_width == 4 + 1 + 1 + 5
    assert MixedLayout.from_dict(layout.to_dict()) == layout


@pytest.mark.parametrize(
    "kinds, cats, match",
    [
        (("real", "ordinal"), (0, 0), "kinds"),
        (("categorical",), (0,), "category"),
        (("real",), (0, 0), "n_categories"),
    ],
)
def test_layout_refuses_bad_specs(kinds, cats, match):
    with pytest.raises(ValueError, match=match):
        MixedLayout(kinds, cats)


def direct_log_px(model, x, s, p):
    """log p(x° | z) written out with torch.distributions, column by column."""
    total = torch.zeros(p["loc"].shape[:-1], dtype=x.dtype)
    lay = model.layout
    for i, j in enumerate(lay.columns("real")):
        d = torch.distributions.Normal(p["loc"][..., i], p["scale"][..., i])
        total += s[:, j : j + 1] * d.log_prob(x[:, j : j + 1])
    for i, j in enumerate(lay.columns("binary")):
        d = torch.distributions.Bernoulli(logits=p["logits"][..., i])
        total += s[:, j : j + 1] * d.log_prob(x[:, j : j + 1])
    for i, j in enumerate(lay.columns("count")):
        d = torch.distributions.Poisson(p["log_rate"][..., i].exp())
        total += s[:, j : j + 1] * d.log_prob(x[:, j : j + 1])
    off = lay.offsets
    for g, j in enumerate(lay.columns("categorical")):
        d = torch.distributions.Categorical(logits=p["category_logits"][..., off[g] : off[g + 1]])
        total += s[:, j : j + 1] * d.log_prob(x[:, j : j + 1].long())
    return total


def test_log_px_matches_torch_distributions(layout):
    torch.manual_seed(0)
    model = MixedNotMIWAE(layout, hidden_dim=16, missing_process=None).double()
    x, s = table(7)
    x, s = x.double(), s.double()
    z = torch.randn(7, 5, model.latent_dim, dtype=torch.float64)
    p = model._heads(model.decoder(z))
    torch.testing.assert_close(model._log_px(x, s, p), direct_log_px(model, x, s, p))


def test_miwae_bound_is_the_log_mean_of_the_weights(layout):
    torch.manual_seed(1)
    model = MixedNotMIWAE(layout, hidden_dim=16, n_samples=9, missing_process=None)
    x, s = table(5)
    out = model(x, s)
    assert out["log_w"].shape == (5, 9)
    expected = torch.logsumexp(out["log_w"], 1) - math.log(9)
    torch.testing.assert_close(out["bound"], expected)
    assert torch.isfinite(out["loss"])
    assert torch.equal(out["elbo"], out["bound"].mean()) and torch.equal(out["loss"], -out["elbo"])
    # K per call, as the other models take it (the bounds that compare models use 100).
    assert model(x, s, n_samples=4)["log_w"].shape == (5, 4)
    with pytest.raises(ValueError, match="n_samples"):
        model(x, s, n_samples=0)


def test_every_parameter_gets_a_gradient(layout):
    torch.manual_seed(2)
    model = MixedNotMIWAE(layout, hidden_dim=16)
    x, s = table(11)
    model(x, s)["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.missing_model.category_logits.grad.abs().sum() > 0


def test_values_under_the_mask_do_not_matter(layout):
    model = MixedNotMIWAE(layout, hidden_dim=16)
    x, s = table(6)
    junk = torch.where(s.bool(), x, torch.full_like(x, float("nan")))
    torch.manual_seed(3)
    a = model(x, s)["log_w"]
    torch.manual_seed(3)
    b = model(junk, s)["log_w"]
    torch.testing.assert_close(a, b)


def test_impute_keeps_observed_and_follows_each_columns_rule(layout):
    torch.manual_seed(4)
    model = MixedNotMIWAE(layout, hidden_dim=16)
    x, s = table(40)
    out = model.impute(x, s, n_samples=30)
    observed = s.bool()
    assert torch.equal(out[observed], x[observed])
    assert set(out[:, 1].unique().tolist()) <= {0.0, 1.0, 2.0}
    assert set(out[:, 4].unique().tolist()) <= {0.0, 1.0}
    assert set(out[:, 2].unique().tolist()) <= {0.0, 1.0}
    counts = out[:, 3]
    assert torch.equal(counts, counts.round()) and (counts >= 0).all()
    assert model.training  # mode put back


def test_multiple_imputation_draws(layout):
    torch.manual_seed(5)
    model = MixedNotMIWAE(layout, hidden_dim=16)
    x, s = table(8)
    draws = model.impute(x, s, n_samples=20, n_draws=6)
    assert draws.shape == (6, 8, 6)
    observed = s.bool().expand(6, -1, -1)
    assert torch.equal(draws[observed], x.expand(6, -1, -1)[observed])
    assert set(draws[..., 1].unique().tolist()) <= {0.0, 1.0, 2.0}


def test_categorical_process_logit_is_the_categorys():
    lay = MixedLayout(("categorical", "real"), (3, 0))
    process = MixedSelfMaskingProcess(lay)
    with torch.no_grad():
        process.category_logits.copy_(torch.tensor([1.0, -2.0, 0.5]))
        process.W.fill_(2.0)
        process.intercept.fill_(0.5)
    # a − W x̂ = −W (x̂ − b) with the threshold b = a / W = 0.25
    torch.testing.assert_close(process(torch.tensor([[1.25]])), torch.tensor([[-2.0]]))
    # an observed entry of category 1: log σ(ℓ_1); a missing one: log Σ_c π_c σ(−ℓ_c)
    probs = torch.tensor([[[0.2, 0.5, 0.3]]])
    observed, hot = torch.tensor([[True]]), torch.tensor([[0.0, 1.0, 0.0]])
    seen = process.category_log_prob(observed, hot, probs.log())
    torch.testing.assert_close(seen, F.logsigmoid(torch.tensor([[-2.0]])))
    lost = process.category_log_prob(~observed, torch.zeros(1, 3), probs.log())
    mixture = (probs * torch.sigmoid(-torch.tensor([1.0, -2.0, 0.5]))).sum(-1).log()
    torch.testing.assert_close(lost, mixture)
    info = process.interpret(["c", "r"], [["a", "b", "c"], None])
    assert info["c"]["p_missing"]["b"] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert info["r"]["direction"] == "high values missing"
    assert info["r"]["b"] == pytest.approx(0.25) and info["r"]["intercept"] == 0.5


def test_a_scalar_column_missing_at_a_constant_rate_needs_no_slope():
    # W = 0 with an intercept: p(missing) = σ(−a) whatever the value, the form an MCAR
    # column takes (with logits −W (x̂ − b), W = 0 would fix p at 1/2)
    lay = MixedLayout(("real", "binary"), (0, 0))
    process = MixedSelfMaskingProcess(lay)
    with torch.no_grad():
        process.intercept.copy_(torch.tensor([math.log(4.0), -1.0]))
    x = torch.tensor([[-3.0, 0.0], [0.0, 1.0], [5.0, 1.0]])
    p_missing = torch.sigmoid(-process(x))
    torch.testing.assert_close(p_missing[:, 0], torch.full((3,), 0.2))
    torch.testing.assert_close(p_missing[:, 1], torch.full((3,), 1 / (1 + math.exp(-1.0))))
    info = process.interpret(["r", "b"])
    assert info["r"]["direction"] == "constant rate" and info["r"]["b"] is None


def test_a_state_dict_of_the_older_form_loads_as_the_same_process(layout):
    # Files saved before the intercept hold missing_model.b (logits −W (x̂ − b)).
    torch.manual_seed(0)
    model = MixedNotMIWAE(layout, hidden_dim=8)
    with torch.no_grad():
        model.missing_model.W.copy_(torch.randn(layout.n_scalar))
        model.missing_model.intercept.copy_(torch.randn(layout.n_scalar))
    old = dict(model.state_dict())
    W = old["missing_model.W"]
    old["missing_model.b"] = old.pop("missing_model.intercept") / W
    x = torch.randn(5, layout.n_scalar)
    expected = -W * (x - old["missing_model.b"])
    fresh = MixedNotMIWAE(layout, hidden_dim=8)
    fresh.load_state_dict(upgrade_state_dict(fresh, old))
    torch.testing.assert_close(fresh.missing_model(x), expected)
    current = model.state_dict()
    assert upgrade_state_dict(model, current) is current
    # a numeric NotMIWAE's self-masking W and b mean −W (x − b) still: left alone
    numeric = NotMIWAE(3, hidden_dim=8)
    numeric_weights = numeric.state_dict()
    assert "missing_model.b" in numeric_weights
    assert upgrade_state_dict(numeric, numeric_weights) is numeric_weights


def test_missing_process_name_is_checked(layout):
    with pytest.raises(ValueError, match="missing_process"):
        MixedNotMIWAE(layout, missing_process="linear")


def test_interpret_missing_process_names_columns_and_categories(layout):
    model = MixedNotMIWAE(layout, hidden_dim=8)
    names = ["a", "b", "c", "d", "e", "f"]
    cats = [None, ["x", "y", "z"], None, None, ["p", "q"], None]
    info = model.interpret_missing_process(names, cats)
    assert set(info) == set(names)
    assert set(info["b"]["p_missing"]) == {"x", "y", "z"} and info["d"]["kind"] == "count"
    with pytest.raises(AttributeError, match="MIWAE"):
        MixedNotMIWAE(layout, missing_process=None).interpret_missing_process()


def test_missing_category_is_the_posterior_given_that_it_went_missing():
    # One categorical column (2 categories) and one real one. The decoder's last layer
    # zeroed so that π = (0.7, 0.3) whatever z (its outputs: loc, raw scale, then the two
    # category logits); the process loses category 1 far more often: p(missing | c) =
    # σ(−ℓ_c) = (0.05, 0.9). A missing entry's posterior is π_c σ(−ℓ_c) / Σ = (0.035,
    # 0.27) / 0.305: category 1, drawn 88.5 % of the time. The decoder's π alone (MIWAE,
    # or a fill that forgets why the entry went missing) says category 0.
    lay = MixedLayout(("categorical", "real"), (2, 0))
    torch.manual_seed(0)
    model = MixedNotMIWAE(lay, hidden_dim=8)
    last = model.decoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[2:4] = torch.tensor([0.7, 0.3]).log()
        lost = torch.tensor([0.05, 0.9])
        model.missing_model.category_logits.copy_(torch.log((1 - lost) / lost))
    torch.testing.assert_close(torch.sigmoid(-model.missing_model.category_logits), lost)
    x = torch.tensor([[0.0, 0.5], [0.0, -0.5]])
    s = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert torch.equal(model.impute(x, s, n_samples=50)[:, 0], torch.ones(2))
    draws = model.impute(x, s, n_samples=50, n_draws=1000)[..., 0]
    assert abs(draws.mean().item() - 0.27 / 0.305) < 0.04  # 4.5 standard errors
    miwae = MixedNotMIWAE(lay, hidden_dim=8, missing_process=None)
    miwae.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("missing_model")}
    )
    assert torch.equal(miwae.impute(x, s, n_samples=50)[:, 0], torch.zeros(2))
    assert abs(miwae.impute(x, s, n_samples=50, n_draws=1000)[..., 0].mean().item() - 0.3) < 0.04
