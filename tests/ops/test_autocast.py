"""torch.autocast with the fused operators (csrc/autocast.cpp): mlp_tanh runs in the
autocast dtype like nn.Linear (its CPU kernels take bfloat16 and float16, the element
math in float32), the other operators in float32; the models train and impute under
autocast with either backend, and the results stay close to float32's."""

from __future__ import annotations

import pytest
import torch
from helpers import cuda_only, library_loaded

import notmiwae_fast as nf
from notmiwae_fast import ops
from notmiwae_fast.ops import reference

OPS = torch.ops.notmiwae_fast
pytestmark = pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")

REDUCED = [torch.bfloat16, torch.float16]


def layers(N=96, sizes=(10, 128, 128, 22), device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, sizes[0], generator=g)
    weights = [torch.randn(b, a, generator=g) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * torch.randn(b, generator=g) for b in sizes[1:]]
    return x.to(device), [w.to(device) for w in weights], [b.to(device) for b in biases]


def grads_of(fn, x, weights, biases, proj):
    leaves = [t.detach().clone().requires_grad_(True) for t in [x, *weights, *biases]]
    n = len(weights)
    out = fn(leaves[0], leaves[1 : 1 + n], leaves[1 + n :])
    grads = torch.autograd.grad((out.float() * proj).sum(), leaves)
    return out.detach(), grads


@pytest.mark.parametrize("dtype", REDUCED, ids=["bf16", "f16"])
def test_cpu_mlp_reduced_precision_is_as_accurate_as_aten(dtype):
    """mlp_tanh in bfloat16 / float16 on the CPU: forward and gradients no further from
    the float64 result than the layer-by-layer ATen computation in the same dtype."""
    x, weights, biases = layers()
    cast = lambda ts: [t.to(dtype) for t in ts]  # noqa: E731
    proj = torch.randn(x.shape[0], 22, generator=torch.Generator().manual_seed(1))
    out, grads = grads_of(OPS.mlp_tanh, x.to(dtype), cast(weights), cast(biases), proj)
    ref, ref_grads = grads_of(reference.mlp_tanh, x.to(dtype), cast(weights), cast(biases), proj)
    exact, exact_grads = grads_of(
        reference.mlp_tanh,
        x.double(),
        [w.double() for w in weights],
        [b.double() for b in biases],
        proj.double(),
    )
    assert out.dtype == dtype
    err = (out.double() - exact).abs().max().item()
    ref_err = (ref.double() - exact).abs().max().item()
    assert 0 < err <= 2 * ref_err + 1e-3, (err, ref_err)
    for g, rg, eg in zip(grads, ref_grads, exact_grads):
        assert g.dtype == dtype
        scale = eg.abs().max().item()
        e, re = (
            (g.double() - eg).abs().max().item() / scale,
            (rg.double() - eg).abs().max().item() / scale,
        )
        assert e <= 2 * re + 2e-2, (e, re)


def test_autocast_policy_cpu():
    """Under autocast: mlp_tanh gives the autocast dtype (bfloat16 on CPU), the other
    operators take reduced-precision inputs and compute in float32, exactly as on the
    inputs cast up by hand; float64 inputs stay float64."""
    x, weights, biases = layers()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.mlp_tanh(x, weights, biases)
    assert y.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y64 = ops.mlp_tanh(x.double(), [w.double() for w in weights], [b.double() for b in biases])
    assert y64.dtype == torch.float64

    g = torch.Generator().manual_seed(2)
    B, K, D = 5, 7, 11
    x0 = torch.randn(B, D, generator=g)
    mask = (torch.rand(B, D, generator=g) > 0.3).float()
    loc = torch.randn(B, K, D, generator=g).bfloat16()
    raw = torch.randn(B, K, D, generator=g).bfloat16()
    eps = torch.randn(B, K, D, generator=g)
    W, b = torch.rand(D, generator=g), torch.randn(D, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scale = ops.softplus_scale(raw, 1e-3)
        terms = ops.notmiwae_normal_terms(x0, mask, loc, scale, eps, W, b)
        log_w = terms[0].bfloat16()
        bound = ops.iw_logmeanexp(log_w)
        mean = ops.iw_impute(log_w, loc)
    assert scale.dtype == bound.dtype == mean.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in terms)
    torch.testing.assert_close(scale, ops.softplus_scale(raw.float(), 1e-3), rtol=0, atol=0)
    for t, u in zip(terms, ops.notmiwae_normal_terms(x0, mask, loc.float(), scale, eps, W, b)):
        torch.testing.assert_close(t, u, rtol=0, atol=0)
    torch.testing.assert_close(mean, ops.iw_impute(log_w.float(), loc.float()), rtol=0, atol=0)


def _model(backend, seed=0):
    torch.manual_seed(seed)
    return nf.NotMIWAE(
        11,
        latent_dim=10,
        hidden_dim=64,
        n_samples=20,
        missing_process="selfmasking",
        backend=backend,
    )


def _data(n=64, d=11, device="cpu"):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, d, generator=g)
    s = (x <= 0).float()
    s[:, d // 2 :] = 1
    return (x * s).to(device), s.to(device)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_models_train_under_autocast_close_to_float32(backend):
    """Loss and gradients under autocast(bfloat16): float32 gradients for the float32
    parameters, within bfloat16's rounding of the float32 result, for both backends."""
    model = _model(backend)
    x, s = _data()
    results = {}
    for name, ctx in (
        ("f32", torch.autocast("cpu", enabled=False)),
        ("bf16", torch.autocast("cpu", dtype=torch.bfloat16)),
    ):
        torch.manual_seed(7)
        with ctx:
            loss = model(x, s)["loss"]
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results[name] = (loss.detach(), grads)
    loss32, g32 = results["f32"]
    loss16, g16 = results["bf16"]
    assert loss16.dtype == torch.float32
    assert torch.isfinite(loss16)
    assert abs(loss16.item() - loss32.item()) <= 0.02 * abs(loss32.item()) + 0.05
    for a, _ in zip(g16, g32):
        assert a.dtype == torch.float32
        assert torch.isfinite(a).all()
    flat16 = torch.cat([g.flatten() for g in g16])
    flat32 = torch.cat([g.flatten() for g in g32])
    cos = torch.nn.functional.cosine_similarity(flat16, flat32, dim=0).item()
    assert cos > 0.98, cos


def test_fused_and_reference_agree_under_autocast():
    fused, ref = _model("fused"), _model("reference")
    ref.load_state_dict(fused.state_dict())
    x, s = _data()
    losses = []
    for model in (fused, ref):
        torch.manual_seed(11)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(x, s)["loss"].item())
    assert abs(losses[0] - losses[1]) <= 0.01 * abs(losses[1]) + 0.02, losses


def test_impute_under_autocast_is_close_to_float32():
    """Imputation under autocast(bfloat16): float32 result, observed entries unchanged,
    imputed entries within a small fraction of the data's scale of float32's."""
    model = _model("fused")
    x, s = _data(128)
    torch.manual_seed(5)
    full = model.impute(x, s, n_samples=500)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model.impute(x, s, n_samples=500)
    assert fast.dtype == torch.float32
    observed = s.bool()
    torch.testing.assert_close(fast[observed], x[observed], rtol=0, atol=0)
    diff = (fast - full)[~observed].abs()
    assert diff.max().item() < 0.1 and diff.mean().item() < 0.02, (diff.max(), diff.mean())


@pytest.mark.parametrize("model_cls", [nf.MIWAE, nf.NotMIWAE])
def test_autocast_draws_the_same_noise_as_float32(model_cls):
    """The noise (z and x̂) is drawn in float32 under autocast too: the same random
    numbers as without it, so the two imputations differ by rounding only. (Drawn in
    bfloat16, as loc's dtype, the stream diverged from float32's for sizes that are not
    multiples of 16 and the imputations differed by Monte Carlo noise, ~0.1.)"""
    torch.manual_seed(0)
    model = model_cls(11, hidden_dim=32)
    x, s = _data(37)
    results = []
    for enabled in (False, True):
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            results.append(
                torch.cat(
                    [
                        model.impute(x[:19], s[:19], n_samples=333),
                        model.impute(x[19:], s[19:], n_samples=333),
                    ]
                )
            )
    diff = (results[0] - results[1])[s == 0].abs()
    assert diff.max().item() < 0.02, diff.max()


@cuda_only
@pytest.mark.cuda
def test_cuda_autocast_float16_model():
    model = _model("fused").cuda()
    x, s = _data(device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(x, s)
        y = ops.mlp_tanh(
            x,
            [model.encoder.net[i].weight for i in (0, 2, 4)],
            [model.encoder.net[i].bias for i in (0, 2, 4)],
        )
    assert y.dtype == torch.float16
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        for p in model.parameters()
    )
    with torch.autocast("cuda", dtype=torch.float16):
        imputed = model.impute(x, s, n_samples=200)
    assert imputed.dtype == torch.float32 and torch.isfinite(imputed).all()
