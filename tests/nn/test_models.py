"""The model layer: the bound against an independent computation, fused vs reference
backends, learning on MNAR data, supervised models, imputation (streaming and multiple),
the missing process, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.distributions import Bernoulli, Normal

import notmiwae_fast as nf
from notmiwae_fast import utils

D = 5


def batch(n=32, d=D, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    s = (torch.rand(n, d, generator=g) > 0.3).to(dtype)
    s[:, 0] = 1
    x_nan = torch.where(s.bool(), x, torch.full_like(x, math.nan))
    return x, x_nan, s


def mnar_data(n=1000, d=4, seed=0):
    """Correlated Gaussian data, standardised; values above the mean of the first d // 2
    columns go missing (the paper's protocol)."""
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, 1))
    x = z @ g.normal(size=(1, d)) + 0.3 * g.normal(size=(n, d))
    x = (x - x.mean(0)) / x.std(0)
    x_missing, s = utils.introduce_mnar(x)
    return x, x_missing, s


def loader(*arrays, batch_size=32, shuffle=True):
    tensors = [
        torch.as_tensor(np.nan_to_num(a), dtype=torch.float32) if not torch.is_tensor(a) else a
        for a in arrays
    ]
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle
    )


# ------------------------------------------------------------------------------------
# The bound
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_cls", [nf.MIWAE, nf.NotMIWAE])
def test_bound_equals_an_independent_computation(model_cls):
    """Same random draws, the bound recomputed with torch.distributions."""
    x, x_nan, s = batch(dtype=torch.float64)
    model = model_cls(D, latent_dim=3, hidden_dim=16, n_samples=7).double()
    torch.manual_seed(123)
    out = model(x_nan, s)

    torch.manual_seed(123)
    x0 = torch.where(s.bool(), x, torch.zeros_like(x))
    mu, std = model.encoder(x0)
    eps_z = torch.randn(x.shape[0], 7, 3, dtype=torch.float64)
    z = mu.unsqueeze(1) + std.unsqueeze(1) * eps_z
    p = model.decoder(z)
    obs = s.bool().unsqueeze(1)
    log_px = torch.where(
        obs, Normal(p["loc"], p["scale"]).log_prob(x0.unsqueeze(1)), torch.zeros(())
    ).sum(-1)
    log_w = (
        log_px
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(mu.unsqueeze(1), std.unsqueeze(1)).log_prob(z).sum(-1)
    )
    if model_cls is nf.NotMIWAE:
        eps_x = torch.randn_like(p["loc"])
        x_hat = torch.where(obs, x0.unsqueeze(1), p["loc"] + p["scale"] * eps_x)
        W, b = model.missing_model.W, model.missing_model.b
        log_w = log_w + Bernoulli(logits=-W * (x_hat - b)).log_prob(s.unsqueeze(1)).sum(-1)
    expected = (torch.logsumexp(log_w, 1) - math.log(7)).mean()
    torch.testing.assert_close(out["elbo"], expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["loss"], -expected, rtol=1e-10, atol=1e-10)


CONFIGS = [
    (nf.MIWAE, dict(out_dist="gauss")),
    (nf.MIWAE, dict(out_dist="bern")),
    (nf.MIWAE, dict(out_dist="student_t")),
    (nf.MIWAE, dict(out_dist="gauss", ppca=True)),
    (nf.NotMIWAE, dict(missing_process="selfmasking")),
    (nf.NotMIWAE, dict(missing_process="selfmasking_known_signs", signs=[1, -1, 1, 1, -1])),
    (nf.NotMIWAE, dict(missing_process="linear")),
    (nf.NotMIWAE, dict(missing_process="nonlinear")),
    (nf.NotMIWAE, dict(missing_process="selfmasking", out_dist="student_t")),
    (nf.NotMIWAE, dict(missing_process="selfmasking", out_dist="bern")),
    (nf.NotMIWAE, dict(missing_process="selfmasking", ppca=True)),
    (nf.SupMIWAE, dict(task="regression", y_dim=2)),
    (nf.SupNotMIWAE, dict(task="classification", y_dim=1)),
    (nf.SupNotMIWAE, dict(task="classification", y_dim=3, missing_process="linear")),
]


def _targets(model, n):
    if not model.supervised:
        return ()
    if model.task == "regression":
        return (torch.randn(n, model.y_dim),)
    return (torch.randint(0, model.head.n_classes, (n,)),)


@pytest.mark.parametrize(
    "model_cls,kwargs",
    CONFIGS,
    ids=[f"{c.__name__}-{'-'.join(map(str, k.values()))}" for c, k in CONFIGS],
)
def test_fused_and_reference_backends_agree(model_cls, kwargs):
    x, x_nan, s = batch()
    if kwargs.get("out_dist") == "bern":
        x_nan = torch.where(s.bool(), (x > 0).float(), x_nan)
    torch.manual_seed(0)
    fused = model_cls(D, hidden_dim=16, n_samples=6, backend="fused", **kwargs)
    ref = model_cls(D, hidden_dim=16, n_samples=6, backend="reference", **kwargs)
    ref.load_state_dict(fused.state_dict())
    y = _targets(fused, x.shape[0])
    results = []
    for model in (fused, ref):
        torch.manual_seed(42)
        out = model(x_nan, s, *y)
        grads = torch.autograd.grad(out["loss"], list(model.parameters()), allow_unused=True)
        results.append((out["loss"].detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for g_fused, g_ref in zip(results[0][1], results[1][1]):
        assert (g_fused is None) == (g_ref is None)
        if g_fused is not None:
            torch.testing.assert_close(g_fused, g_ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------
# Learning
# ------------------------------------------------------------------------------------
def _fit(model, x_missing, s, epochs=30, lr=3e-3):
    utils.set_seed(0)
    nf.Trainer(model, lr=lr, progress=False).train(loader(x_missing, s), n_epochs=epochs)
    return utils.impute(model, np.nan_to_num(x_missing), s, n_samples=500)


@pytest.mark.slow
def test_not_miwae_beats_miwae_and_mean_on_self_masking_data():
    x, x_missing, s = mnar_data()
    mean_imputed = np.where(s == 1, x, np.nanmean(x_missing, axis=0))
    rmse_mean = utils.missing_rmse(x, mean_imputed, s)
    utils.set_seed(0)
    rmse_miwae = utils.missing_rmse(
        x, _fit(nf.MIWAE(4, latent_dim=2, hidden_dim=32), x_missing, s), s
    )
    utils.set_seed(0)
    not_miwae = nf.NotMIWAE(4, latent_dim=2, hidden_dim=32, missing_process="selfmasking")
    rmse_not = utils.missing_rmse(x, _fit(not_miwae, x_missing, s), s)
    assert rmse_not < 0.75 * rmse_miwae, (rmse_not, rmse_miwae)
    assert rmse_not < 0.75 * rmse_mean, (rmse_not, rmse_mean)
    # The learnt process points the right way: high values of columns 0 and 1 go missing.
    features = not_miwae.interpret_missing_process()["features"]
    for f in features[:2]:
        assert f["direction"] == "high values missing" and f["W"] > 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "task,y_dim", [("regression", 1), ("classification", 1), ("classification", 2)]
)
@pytest.mark.parametrize("model_cls", [nf.SupMIWAE, nf.SupNotMIWAE])
def test_supervised_models_learn_a_simple_task(model_cls, task, y_dim):
    g = np.random.default_rng(1)
    x = g.normal(size=(600, 4))
    signal = x[:, 0] - x[:, 1] + 0.5 * x[:, 3]
    y = signal + 0.1 * g.normal(size=600) if task == "regression" else (signal > 0) * 1.0
    s = (g.random(size=x.shape) > 0.2) * 1.0
    s[:, 3] = 1
    utils.set_seed(0)
    model = model_cls(4, y_dim=y_dim, task=task, hidden_dim=32, n_samples=10)
    data = loader(np.where(s == 1, x, 0), s, y)
    nf.Trainer(model, lr=3e-3, progress=False).train(data, n_epochs=25)
    pred = model.predict(torch.tensor(np.where(s == 1, x, np.nan)), s, n_samples=100)
    if task == "regression":
        mse = ((pred[:, 0].numpy() - y) ** 2).mean()
        assert mse < 0.5 * y.var(), (mse, y.var())
    else:
        assert pred.shape == (600, 2)
        torch.testing.assert_close(pred.sum(1), torch.ones(600, dtype=pred.dtype))
        accuracy = ((pred[:, 1].numpy() > 0.5) == (y == 1)).mean()
        assert accuracy > 0.8, accuracy


def test_supervised_head_sees_imputed_samples_not_zero_filled_x():
    x, x_nan, s = batch()
    model = nf.SupMIWAE(D, y_dim=1, hidden_dim=16, n_samples=4)
    seen = []
    model.head.net.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    model(x_nan, s, torch.randn(x.shape[0]))
    x_hat = seen[0]  # [B, K, D]
    missing = ~s.bool()
    assert x_hat.shape == (x.shape[0], 4, D)
    torch.testing.assert_close(x_hat[:, 0][~missing], x[~missing])  # observed kept
    values = x_hat.permute(1, 0, 2)[:, missing]  # [K, n_missing]
    assert (values != 0).all()  # not zero-filled
    assert (values.std(0) > 0).all()  # differs across the importance samples


def test_binary_classification_with_one_output_gives_signal():
    x, x_nan, s = batch()
    for y_dim in (1, 2):
        model = nf.SupMIWAE(D, y_dim=y_dim, task="classification", hidden_dim=16)
        out = model(x_nan, s, (x[:, 0] > 0).long())
        grads = torch.autograd.grad(out["loss"], list(model.head.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


# ------------------------------------------------------------------------------------
# Imputation
# ------------------------------------------------------------------------------------
def test_impute_keeps_observed_entries_and_mode():
    x, x_nan, s = batch()
    model = nf.NotMIWAE(D, hidden_dim=16)
    for training in (True, False):
        model.train(training)
        out = model.impute(x_nan, s, n_samples=50)
        assert model.training is training
        torch.testing.assert_close(out[s.bool()], x[s.bool()], rtol=0, atol=0)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("n_draws", [None, 3])
def test_impute_skips_complete_rows(n_draws):
    """Rows without a missing entry come back exactly and cost no random numbers: the
    other rows get what imputing them alone gives, and a batch of complete rows leaves
    the random state untouched."""
    x, x_nan, s = batch(n=12)
    complete = torch.tensor([0, 4, 5, 11])
    s[complete] = 1
    x_nan[complete] = x[complete]
    model = nf.NotMIWAE(D, hidden_dim=16)
    torch.manual_seed(3)
    out = model.impute(x_nan, s, n_samples=40, n_draws=n_draws)
    rest = torch.tensor([i for i in range(12) if i not in complete.tolist()])
    torch.manual_seed(3)
    alone = model.impute(x_nan[rest], s[rest], n_samples=40, n_draws=n_draws)
    torch.testing.assert_close(
        out[..., complete, :], x[complete].expand_as(out[..., complete, :]), rtol=0, atol=0
    )
    torch.testing.assert_close(out[..., rest, :], alone, rtol=0, atol=0)
    assert not torch.equal(
        out[..., rest, :][..., ~s[rest].bool()],
        x[rest][~s[rest].bool()].expand_as(alone[..., ~s[rest].bool()]),
    )
    state = torch.get_rng_state()
    full = model.impute(x[complete], s[complete], n_samples=40, n_draws=n_draws)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(full, x[complete].expand_as(full), rtol=0, atol=0)
    sup = nf.SupMIWAE(D, hidden_dim=16).train()
    sup.predict(x_nan, s, n_samples=10)
    assert sup.training


@pytest.mark.parametrize("model_cls", [nf.MIWAE, nf.NotMIWAE])
def test_chunked_imputation_equals_one_chunk(model_cls):
    """Merging chunks with the online softmax gives what one big chunk gives (same
    draws: the chunks consume the random stream in the same order only per chunk, so
    compare with a deterministic decoder: K samples with zero posterior variance)."""
    x, x_nan, s = batch(n=8)
    model = model_cls(D, hidden_dim=16, n_samples=5, backend="reference").double()
    torch.manual_seed(0)
    values = torch.randn(8, 300, D, dtype=torch.float64)
    log_w = 3 * torch.randn(8, 300, dtype=torch.float64)
    terms = iter(
        [
            {"log_w": log_w[:, i : i + 64], "means": values[:, i : i + 64], "draws": None}
            for i in range(0, 300, 64)
        ]
    )
    model._terms = lambda *a, **k: next(terms)
    merged, _ = model._stream(x.double(), s.double(), 300, 64, lambda t: t["means"])
    torch.testing.assert_close(
        merged, nf.reference.iw_impute(log_w, values), rtol=1e-12, atol=1e-12
    )


def test_multiple_imputation_draws():
    x, x_nan, s = batch(n=16)
    model = nf.NotMIWAE(D, hidden_dim=16)
    draws = model.impute(x_nan, s, n_samples=200, n_draws=300, chunk_size=64)
    assert draws.shape == (300, 16, D)
    for m in range(300):
        torch.testing.assert_close(draws[m][s.bool()], x[s.bool()], rtol=0, atol=0)
    missing = ~s.bool()
    assert (draws[:, missing].std(0) > 0).all()  # draws differ
    # Their average approaches the conditional-mean imputation.
    single = model.impute(x_nan, s, n_samples=4000)
    gap = (draws.mean(0) - single)[missing].abs().mean()
    spread = draws[:, missing].std(0).mean()
    assert gap < 0.5 * spread, (gap, spread)


@pytest.mark.slow
def test_imputation_memory_is_bounded_for_large_k_and_wide_rows():
    """K = 10,000 samples of D = 12,288 (a 64×64×3 image row): all [B, K, D] at once would
    be 983 MB per tensor; chunked, the peak stays far below."""
    code = """
import resource, torch, notmiwae_fast as nf
torch.set_num_threads(2)
model = nf.NotMIWAE(12288, latent_dim=4, hidden_dim=16, missing_process='selfmasking')
x = torch.randn(2, 12288); s = (torch.rand(2, 12288) > 0.3).float()
model.impute(x[:, :], s, n_samples=10)            # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = model.impute(x, s, n_samples=10_000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
assert torch.isfinite(out).all()
print(after - before)
"""
    from helpers import run_python

    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    extra_mb = float(proc.stdout.strip().splitlines()[-1])
    assert extra_mb < 400, extra_mb


# ------------------------------------------------------------------------------------
# The missing process
# ------------------------------------------------------------------------------------
def test_sensitivity_is_one_vectorised_jacobian():
    calls = []

    class Counting(nf.BaseMissingProcess):
        def __init__(self):
            super().__init__(D)
            self.linear = torch.nn.Linear(D, D)

        def forward(self, x):
            calls.append(x.shape)
            return self.linear(torch.tanh(x))

    model = nf.NotMIWAE(D, hidden_dim=16, missing_process=Counting())
    x = torch.randn(7, D)
    sens = model.compute_missing_sensitivity(x)
    assert len(calls) == 1  # one vmapped call, not one backward pass per feature
    expected = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda r: torch.sigmoid(-model.missing_model.linear(torch.tanh(r))), row
            ).abs()
            for row in x
        ]
    ).mean(0)
    torch.testing.assert_close(sens, expected)


@pytest.mark.parametrize("process", ["selfmasking", "linear", "nonlinear"])
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_sensitivity_equals_per_feature_gradients(process, backend):
    """On every backend (the fused MLP is an autograd Function that torch.func cannot
    transform: the Jacobian runs the networks layer by layer, then puts them back)."""
    torch.manual_seed(0)
    model = nf.NotMIWAE(D, hidden_dim=8, missing_process=process, backend=backend)
    x = torch.randn(6, D)
    sens = model.compute_missing_sensitivity(x)
    rows = []
    for i in range(D):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.missing_model.missing_probability(xr)[:, i].sum(), xr)
        rows.append(grad.abs().mean(0))
    torch.testing.assert_close(sens, torch.stack(rows))
    assert model.backend == backend
    assert all(m.fused == (backend == "fused") for m in model.modules() if hasattr(m, "fused"))
    with pytest.raises(ValueError, match="'x' must be complete data"):
        model.compute_missing_sensitivity(torch.full((2, D), math.nan))


def test_interpretation_in_original_units():
    model = nf.NotMIWAE(
        3, hidden_dim=8, missing_process="selfmasking_known_signs", signs=[1, -1, 1]
    )
    with torch.no_grad():
        model.missing_model.b.copy_(torch.tensor([0.5, -1.0, 0.0]))
    model.set_standardization(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 1.0])
    features = model.interpret_missing_process()["features"]
    assert [f["direction"] for f in features] == [
        "high values missing",
        "low values missing",
        "high values missing",
    ]
    assert [f["threshold"] for f in features] == pytest.approx([11.0, 16.0, 30.0])
    # The slope per original unit: the logit −(W / std)(x − threshold).
    slope = model.missing_model.selfmask_params()[0].detach()
    assert [f["W"] for f in features] == pytest.approx(
        (slope / torch.tensor([2.0, 4.0, 1.0])).tolist()
    )
    assert [f["strength"] for f in features] == pytest.approx(slope.abs().tolist())


def test_standardisation_survives_the_state_dict():
    """A fresh model loads the state of one with a standardisation (as Trainer's
    resume_from and a saved imputer model do)."""
    model = nf.NotMIWAE(3, hidden_dim=8)
    model.set_standardization(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 1.0])
    fresh = nf.NotMIWAE(3, hidden_dim=8)
    fresh.load_state_dict(model.state_dict())
    assert fresh.interpret_missing_process() == model.interpret_missing_process()
    for bad, match in (
        (
            dict(mean=[1.0, 2.0], std=[1.0, 1.0, 1.0]),
            "'mean' must have input_dim = 3 values; got 2",
        ),
        (dict(mean=[0.0] * 3, std=[1.0, 0.0, 1.0]), "'std' must be > 0"),
        (dict(mean=[0.0, math.nan, 0.0], std=[1.0] * 3), "'mean' must be finite"),
    ):
        with pytest.raises(ValueError, match=match):
            model.set_standardization(**bad)


def test_custom_missing_process():
    class Threshold(nf.BaseMissingProcess):
        def __init__(self, d):
            super().__init__(d)
            self.t = torch.nn.Parameter(torch.zeros(d))

        def forward(self, x):
            return 3.0 * (self.t - x)

    x, x_nan, s = batch()
    model = nf.NotMIWAE(D, hidden_dim=16, missing_process=Threshold(D))
    model(x_nan, s)["loss"].backward()
    assert model.missing_model.t.grad is not None and model.missing_model.t.grad.abs().sum() > 0


class _Logits(nf.BaseMissingProcess):
    """A user process returning logits of a given width and dtype."""

    def __init__(self, d, width, dtype=torch.float32):
        super().__init__(d)
        self.width, self.dtype = width, dtype
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return (self.scale * x[..., : self.width]).to(self.dtype)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_user_process_output_is_checked(backend):
    """A process whose logits do not have its input's shape is refused on both backends
    (a [..., 1] would broadcast silently); other float dtypes are cast."""
    x, x_nan, s = batch(n=4)
    for width in (1, D - 1):
        model = nf.NotMIWAE(D, hidden_dim=8, backend=backend, missing_process=_Logits(D, width))
        for call in (lambda m=model: m(x_nan, s), lambda m=model: m.impute(x_nan, s, n_samples=5)):
            with pytest.raises(
                ValueError,
                match=r"'missing_process': _Logits.forward must "
                r"return logits of its input's shape",
            ):
                call()
    model = nf.NotMIWAE(
        D, hidden_dim=8, backend=backend, missing_process=_Logits(D, D, torch.float64)
    )
    assert torch.isfinite(model(x_nan, s)["loss"])
    assert model.impute(x_nan, s, n_samples=5).dtype == torch.float32


# ------------------------------------------------------------------------------------
# Bad input and the defects of notmiwae-pytorch 0.1.3 (SPEC section 4)
# ------------------------------------------------------------------------------------
def test_out_dist_is_respected_and_misspellings_rejected():
    assert nf.MIWAE(D, out_dist="student_t").decoder.family == "student_t"
    assert nf.NotMIWAE(D, out_dist="bern").decoder.family == "bern"
    with pytest.raises(
        ValueError, match="'out_dist' must be one of 'gauss', 'bern', 'student_t'; got 'gaus'"
    ):
        nf.MIWAE(D, out_dist="gaus")


def test_unknown_missing_process_lists_valid_ones():
    with pytest.raises(
        ValueError,
        match="'missing_process' must be one of 'selfmasking', "
        "'selfmasking_known_signs', 'linear', 'nonlinear'",
    ):
        nf.NotMIWAE(D, missing_process="self-masking")
    with pytest.raises(ValueError, match="'signs' must have input_dim = 5 entries; got 3"):
        nf.NotMIWAE(D, missing_process="selfmasking_known_signs", signs=[1, 1, -1])


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_n_samples_must_be_positive(n):
    x, x_nan, s = batch()
    model = nf.MIWAE(D, hidden_dim=8)
    with pytest.raises(ValueError, match="'n_samples' must be an int >= 1"):
        model.impute(x_nan, s, n_samples=n)
    with pytest.raises(ValueError, match="'n_samples' must be an int >= 1"):
        model(x_nan, s, n_samples=n)


def test_bad_data_and_masks():
    x, x_nan, s = batch()
    model = nf.NotMIWAE(D, hidden_dim=8)
    bad_x = x.clone()
    bad_x[3, 2] = math.nan
    s_obs = s.clone()
    s_obs[3, 2] = 1
    with pytest.raises(
        ValueError, match="'x' has NaN or inf at 1 observed entries.*row 3, column 2"
    ):
        model(bad_x, s_obs)
    half = s.clone()
    half[0, 0] = 0.5
    with pytest.raises(ValueError, match="'s' must hold only 0 .* and 1 .*got 0.5"):
        model(x_nan, half)
    # Values a float32 cast would round to 1, integers other than 0/1, NaN and inf.
    nearly_one = s.double()
    nearly_one[1, 1] = 1 + 1e-10
    two, minus_one = s.long(), s.int()
    two[2, 0], minus_one[0, 3] = 2, -1
    for bad_mask, shown in ((nearly_one, "1.0000000001"), (two, "got 2 "), (minus_one, "got -1 ")):
        with pytest.raises(ValueError, match=f"'s' must hold only 0 .* and 1 .*{shown}"):
            model(x_nan, bad_mask)
    for special in (math.nan, math.inf):
        odd = s.clone()
        odd[4, 4] = special
        with pytest.raises(ValueError, match="'s' must hold only 0 .* NaN or inf"):
            model(x_nan, odd)
    with pytest.raises(ValueError, match=r"'x' must have shape \[B, input_dim\] = \[B, 5\]"):
        model(x_nan[:, :4], s[:, :4])
    with pytest.raises(ValueError, match="'s' must have the shape of 'x'"):
        model(x_nan, s[:10])


def test_more_bad_arguments():
    x, x_nan, s = batch(n=4)
    model = nf.NotMIWAE(D, hidden_dim=8)
    with pytest.raises(ValueError, match="'s' must be a bool, int or float mask"):
        model(x_nan, np.array([["a"] * D] * 4))
    with pytest.raises(ValueError, match="'x' has no rows"):
        model(x_nan[:0], s[:0])
    assert model.impute(x_nan[:0], s[:0]).shape == (0, D)  # imputing nothing is fine
    with pytest.raises(ValueError, match="'signs' is for missing_process="):
        nf.NotMIWAE(D, missing_process=_Logits(D, D), signs=[1] * D)
    for width in (0, -3, 2.5):
        with pytest.raises(ValueError, match="'missing_hidden_dim' must be an int >= 1"):
            nf.NotMIWAE(D, missing_process="nonlinear", missing_hidden_dim=width)
    numpy_ints = nf.NotMIWAE(np.int64(D), hidden_dim=np.int64(8), latent_dim=np.int32(2))
    assert (numpy_ints.input_dim, numpy_ints.hidden_dim, numpy_ints.latent_dim) == (D, 8, 2)
    sup = nf.SupMIWAE(D, hidden_dim=8)
    for y, shown in (([1.0, 2.0], r"\[2\]"), (3.0, r"\[\]")):
        with pytest.raises(ValueError, match=rf"'y' must have 4 rows .*got shape {shown}"):
            sup(x_nan, s, y)
    with pytest.raises(
        ValueError,
        match=r"'y' must have shape \[B, y_dim\] = \[4, 1\]; "
        r"got \[4, 2\]",
    ):
        sup(x_nan, s, [[1.0, 2.0]] * 4)
    classifier = nf.SupMIWAE(D, hidden_dim=8, task="classification")
    with pytest.raises(ValueError, match=r"one class index per row, shape \[4\]; got \[4, 2\]"):
        classifier(x_nan, s, [[0, 1]] * 4)


def test_bool_int_masks_and_float64_data_are_accepted():
    x, x_nan, s = batch(dtype=torch.float64)
    model = nf.NotMIWAE(D, hidden_dim=8)
    torch.manual_seed(0)
    ref = model(x_nan.float(), s.float())["loss"]
    for mask in (s.bool(), s.long(), s.int(), s.numpy()):
        torch.manual_seed(0)
        torch.testing.assert_close(model(x_nan, mask)["loss"], ref)
    out = model.impute(x_nan, s.bool(), n_samples=20)
    assert out.dtype == torch.float64


def test_scale_floor_bounds_the_likelihood():
    """A constant observed column cannot drive the loss to −∞: the decoder scale has a
    floor of 1e-3, so each entry's log-density is at most −log(1e-3) − ½ log 2π."""
    model = nf.MIWAE(D, hidden_dim=8)
    p = model.decoder(torch.randn(4, 3, model.latent_dim))
    assert (p["scale"] >= 1e-3).all()
    x = torch.zeros(64, D)
    s = torch.ones(64, D)
    utils.set_seed(0)
    nf.Trainer(model, lr=1e-2, progress=False).train(loader(x, s), n_epochs=15)
    bound = D * (-math.log(1e-3) - 0.5 * math.log(2 * math.pi))
    elbo = model(x, s)["elbo"].item()
    assert math.isfinite(elbo) and elbo <= bound + 1e-3


def test_import_needs_no_optional_dependency():
    from helpers import run_python

    code = (
        "import sys\n"
        "for name in ('tensorboard', 'matplotlib', 'tqdm', 'pandas', 'sklearn'):\n"
        "    sys.modules[name] = None\n"
        "import notmiwae_fast\n"
        "print(notmiwae_fast.NotMIWAE(3).out_dist)\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("gauss")


def test_readme_style_calls_work():
    """notmiwae-pytorch's README showed Trainer(..., n_epochs) and impute(model, x, mask),
    which raise TypeError there."""
    x, x_nan, s = batch()
    model = nf.NotMIWAE(D, hidden_dim=8)
    history = nf.Trainer(model, lr=1e-3, progress=False).train(loader(x_nan, s), n_epochs=2)
    assert len(history["train_loss"]) == 2
    out = utils.impute(model, x_nan, s, n_samples=20)
    assert out.shape == (32, D) and np.isfinite(out).all()
    rmse, _ = utils.imputation_rmse(model, x, x_nan, s, n_samples=20)
    assert math.isfinite(rmse)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array(["a", "b", "c", "a"]), "encode the labels first"),
        (pd.Series(["a", "b", "c", "a"], dtype="category"), "y.cat.codes"),
        (pd.Series([True, None, False, True]), "got an array of object"),
    ],
    ids=["strings", "category", "boolean-with-missing"],
)
def test_supervised_models_refuse_labels_that_are_not_class_indices(labels, message):
    """A categorical target (strings, a pandas category, booleans with missing values) is
    refused with a message saying how to encode it, not a torch conversion error."""
    model = nf.SupNotMIWAE(4, task="classification", y_dim=3, hidden_dim=8)
    x, s = torch.randn(4, 4), torch.ones(4, 4)
    with pytest.raises(ValueError, match=message):
        model(x, s, labels)
