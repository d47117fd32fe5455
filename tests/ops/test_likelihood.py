"""The likelihood operators (masked_normal_logprob, masked_bernoulli_logprob,
masked_studentt_logprob, masked_poisson_logprob, selfmask_logprob,
notmiwae_normal_terms; masked_categorical_logprob: test_categorical.py): kernels against the
pure-PyTorch reference, gradients, opcheck, masked NaN / ±inf, extreme logits,
non-contiguous inputs, half types on CUDA and bad input."""

from __future__ import annotations

import ast
import math

import pytest
import torch
from helpers import (
    BAD_INPUT_ROUTES,
    DEVICES,
    Inputs,
    assert_all_close,
    assert_bad_input,
    cuda_only,
    forward_backward,
    library_loaded,
    run_python,
    same_bits,
)

import notmiwae_fast
from notmiwae_fast import ops
from notmiwae_fast.ops import _checks, reference

OPS = torch.ops.notmiwae_fast
NAMES = [
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "masked_poisson_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
]
SHAPES = [(1, 1, 1), (3, 1, 4), (5, 20, 11), (0, 4, 3), (2, 3, 12288)]  # (B, K, D)
# Kernel against the float64 reference (SPEC: float64 to 1e-10 relative, float32 to
# 1e-5; the absolute part covers sums near 0).
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def make_inputs(
    name, B, K, D, dtype=torch.float64, device="cpu", mask_kind="bool", seed=0, nan_under_mask=True
):
    """Random inputs of op ``name`` (drawn in float64 on the CPU, then converted). Entries
    of x under mask = 0 hold NaN / ±inf unless ``nan_under_mask`` is False."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    observed = torch.rand(B, D, generator=g) > 0.3
    x = torch.randn(B, D, **f64)
    if name == "masked_bernoulli_logprob":  # 0/1 data and some relaxed values in (0, 1)
        relaxed = torch.rand(B, D, **f64)
        x = torch.where(torch.rand(B, D, generator=g) > 0.2, (x > 0).double(), relaxed)
    if name == "masked_poisson_logprob":  # counts, zeros included, some large
        x = torch.poisson(torch.exp(2 * torch.randn(B, D, **f64)), generator=g)
    junk = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)
    junk = junk[torch.randint(0, 3, (B, D), generator=g)]  # drawn always: same stream
    if nan_under_mask:
        x = torch.where(observed, x, junk)
    mask = observed if mask_kind == "bool" else observed.to(dtype)
    loc = torch.randn(B, K, D, **f64)
    scale = 0.5 + torch.rand(B, K, D, **f64)
    W, b = torch.randn(D, **f64), 0.5 * torch.randn(D, **f64)
    if name == "masked_normal_logprob":
        inp = Inputs([x, mask, loc, scale], [2, 3])
    elif name == "masked_bernoulli_logprob":
        inp = Inputs([x, mask, 3 * torch.randn(B, K, D, **f64)], [2])
    elif name == "masked_poisson_logprob":
        inp = Inputs([x, mask, 0.5 + loc], [2])
    elif name == "masked_studentt_logprob":
        inp = Inputs([x, mask, loc, scale, 1.5 + 4 * torch.rand(D, **f64)], [2, 3, 4])
    elif name == "selfmask_logprob":
        inp = Inputs([torch.randn(B, K, D, **f64), mask, W, b], [0, 2, 3])
    else:
        inp = Inputs([x, mask, loc, scale, torch.randn(B, K, D, **f64), W, b], [2, 3, 5, 6])
    return inp.to(dtype=dtype, device=device)


# ------------------------------------------------------------------------------------
# Agreement with the reference
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dK%dD%d" % s)
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name, shape, dtype, mask_kind, device):
    inp = make_inputs(name, *shape, dtype=dtype, device=device, mask_kind=mask_kind)
    outs, grads = forward_backward(getattr(OPS, name), inp)
    ref_outs, ref_grads = forward_backward(getattr(reference, name), inp.to(dtype=torch.float64))
    assert all(o.dtype == dtype and o.shape == shape[:2] for o in outs)
    assert_all_close(outs, ref_outs, **TOL[dtype])
    assert_all_close(grads, ref_grads, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_studentt_large_df_in_float32_keeps_its_normaliser(device):
    """float32 with df in the hundreds and thousands (a Student-t gone nearly Gaussian):
    c(df) and its df-gradient, differences of large lgamma / digamma values, are taken
    in float64 on every device, so the result and the df gradient stay within float32's
    rounding of the float64 reference (float32 lgamma would be off by 3e-4 at df 3000,
    and the gradient by more than its own size)."""
    g = torch.Generator().manual_seed(0)
    B, K, D = 3, 5, 4
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    mask = torch.ones(B, D, dtype=torch.bool)
    loc = torch.randn(B, K, D, generator=g, dtype=torch.float64)
    scale = 0.5 + torch.rand(B, K, D, generator=g, dtype=torch.float64)
    df = torch.tensor([3.0, 300.0, 3000.0, 30000.0], dtype=torch.float64)
    args = [t.to(device) for t in (x, mask, loc, scale, df)]
    f32 = [t.float() if t.is_floating_point() else t for t in args]
    df32 = f32[4].clone().requires_grad_(True)
    out = OPS.masked_studentt_logprob(*f32[:4], df32)
    (grad_df,) = torch.autograd.grad(out.sum(), df32)
    df64 = df.clone().requires_grad_(True)
    want = reference.masked_studentt_logprob(x, mask, loc, scale, df64)
    (want_df,) = torch.autograd.grad(want.sum(), df64)
    torch.testing.assert_close(out.cpu().double(), want.detach(), rtol=2e-6, atol=2e-5)
    torch.testing.assert_close(grad_df.cpu().double(), want_df, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_wrapper_is_the_kernel(name):
    inp = make_inputs(name, 4, 3, 5)
    a = getattr(ops, name)(*inp.args)
    k = getattr(OPS, name)(*inp.args)
    assert_all_close(
        a if isinstance(a, tuple) else (a,), k if isinstance(k, tuple) else (k,), rtol=0, atol=0
    )


def test_against_torch_distributions():
    """Independent of the reference: fully observed rows against torch.distributions."""
    B, K, D = 3, 4, 6
    x = torch.randn(B, D, dtype=torch.float64)
    mask = torch.ones(B, D, dtype=torch.bool)
    loc, scale = torch.randn(B, K, D, dtype=torch.float64), torch.rand(B, K, D).double() + 0.5
    df = torch.rand(D, dtype=torch.float64) * 4 + 1
    logits = torch.randn(B, K, D, dtype=torch.float64) * 3
    xb = (x > 0).double()
    dist = torch.distributions
    torch.testing.assert_close(
        OPS.masked_normal_logprob(x, mask, loc, scale),
        dist.Normal(loc, scale).log_prob(x[:, None]).sum(-1),
    )
    torch.testing.assert_close(
        OPS.masked_studentt_logprob(x, mask, loc, scale, df),
        dist.StudentT(df, loc, scale).log_prob(x[:, None]).sum(-1),
    )
    torch.testing.assert_close(
        OPS.masked_bernoulli_logprob(xb, mask, logits),
        dist.Bernoulli(logits=logits).log_prob(xb[:, None]).sum(-1),
    )
    counts = torch.poisson(torch.full((B, D), 4.0, dtype=torch.float64))
    torch.testing.assert_close(
        OPS.masked_poisson_logprob(counts, mask, loc),
        dist.Poisson(loc.exp()).log_prob(counts[:, None]).sum(-1),
    )
    W, b = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    s = torch.rand(B, D) > 0.5
    torch.testing.assert_close(
        OPS.selfmask_logprob(loc, s, W, b),
        dist.Bernoulli(logits=-W * (loc - b)).log_prob(s[:, None].double()).sum(-1),
    )


# ------------------------------------------------------------------------------------
# Gradients and operator registration
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name, device):
    inp = make_inputs(name, 2, 3, 4, device=device, nan_under_mask=False)
    args = list(inp.args)
    for i in inp.grad_idx:
        args[i] = args[i].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(getattr(OPS, name), tuple(args))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_opcheck(name, requires_grad, device):
    inp = make_inputs(name, 3, 4, 5, dtype=torch.float32, device=device, nan_under_mask=False)
    args = list(inp.args)
    for i in inp.grad_idx:
        args[i] = args[i].clone().requires_grad_(requires_grad)
    torch.library.opcheck(getattr(OPS, name).default, tuple(args))


def test_torch_compile_fullgraph():
    inp = make_inputs("notmiwae_normal_terms", 4, 5, 6, dtype=torch.float32)

    def bound(*args):
        log_obs, log_miss = OPS.notmiwae_normal_terms(*args)
        return OPS.iw_logmeanexp(log_obs + log_miss).sum()

    compiled = torch.compile(bound, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inp.args), bound(*inp.args))


def test_one_output_of_notmiwae_terms_used():
    """An unused output gets a zero gradient (materialised), not an error."""
    inp = make_inputs("notmiwae_normal_terms", 3, 4, 5)
    for which in (0, 1):

        def only(*args, which=which):
            return reference.notmiwae_normal_terms(*args)[which]

        def only_kernel(*args, which=which):
            return OPS.notmiwae_normal_terms(*args)[which]

        outs, grads = forward_backward(only_kernel, inp)
        ref_outs, ref_grads = forward_backward(only, inp)
        assert_all_close(outs, ref_outs, **TOL[torch.float64])
        assert_all_close(grads, ref_grads, **TOL[torch.float64])


def test_no_gradient_for_data_mask_and_noise():
    inp = make_inputs("notmiwae_normal_terms", 2, 3, 4, nan_under_mask=False)
    x, mask, loc, scale, eps, W, b = inp.args
    mask = mask.double().requires_grad_(True)
    x, eps, loc = x.requires_grad_(True), eps.requires_grad_(True), loc.requires_grad_(True)
    log_obs, log_miss = OPS.notmiwae_normal_terms(x, mask, loc, scale, eps, W, b)
    g = torch.autograd.grad((log_obs + log_miss).sum(), (x, mask, eps, loc), allow_unused=True)
    assert g[0] is None and g[1] is None and g[2] is None and g[3] is not None


# ------------------------------------------------------------------------------------
# Edge cases
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_junk_under_mask_changes_nothing(name, device):
    """NaN / ±inf / huge values under mask = 0 give bit-identical values and gradients
    (up to the order of CUDA's atomic sums)."""
    clean = make_inputs(name, 4, 3, 7, device=device, nan_under_mask=False)
    dirty = make_inputs(name, 4, 3, 7, device=device, nan_under_mask=True)
    outs, grads = forward_backward(getattr(OPS, name), clean)
    d_outs, d_grads = forward_backward(getattr(OPS, name), dirty)
    assert_all_close(d_outs + d_grads, outs + grads, **same_bits(device))
    assert all(torch.isfinite(t).all() for t in d_outs + d_grads)


@pytest.mark.parametrize("device", DEVICES)
def test_a_nan_logit_where_it_counts_gives_nan(device):
    """A NaN logit of an observed Bernoulli entry, a NaN self-masking input, a NaN
    decoder mean at a missing entry: the term is NaN, as the reference's (the kernels'
    max(l, 0) once turned a NaN logit into a finite −log 2, hiding a diverged decoder)."""
    nan = math.nan
    f = dict(dtype=torch.float64, device=device)
    one, zero = torch.ones(1, 1, **f), torch.zeros(1, 1, **f)
    W, b = torch.ones(1, **f), torch.zeros(1, **f)
    nan3, ones3, zeros3 = (torch.full((1, 1, 1), v, **f) for v in (nan, 1.0, 0.0))
    assert OPS.masked_bernoulli_logprob(one, one, nan3).isnan().all()
    assert OPS.selfmask_logprob(nan3, one, W, b).isnan().all()
    # Only the mean is NaN (unit scale, zero noise): x̂ = loc at the missing entry.
    terms = OPS.notmiwae_normal_terms(zero, zero, nan3, ones3, zeros3, W, b)
    assert terms[1].isnan().all() and torch.equal(terms[0], torch.zeros(1, 1, **f))
    for got, want in (
        (
            OPS.masked_bernoulli_logprob(one, one, nan3),
            reference.masked_bernoulli_logprob(one, one, nan3),
        ),
        (OPS.selfmask_logprob(nan3, one, W, b), reference.selfmask_logprob(nan3, one, W, b)),
    ):
        torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("observed", [True, False], ids=["all-observed", "all-missing"])
@pytest.mark.parametrize("name", NAMES)
def test_all_observed_or_all_missing(name, observed, device):
    inp = make_inputs(name, 3, 4, 5, device=device, nan_under_mask=False)
    mask_idx = 1
    inp.args[mask_idx] = torch.full_like(inp.args[mask_idx], observed)
    outs, grads = forward_backward(getattr(OPS, name), inp)
    ref_outs, ref_grads = forward_backward(getattr(reference, name), inp)
    assert_all_close(outs, ref_outs, **TOL[torch.float64])
    assert_all_close(grads, ref_grads, **TOL[torch.float64])
    if not observed and name.startswith("masked_"):
        assert all(torch.all(t == 0) for t in outs + grads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_extreme_logits(dtype, device):
    """Logits and W·(x − b) of ±1e4: finite values and gradients, equal to the reference."""
    big = torch.tensor([1e4, -1e4, 1e4, -1e4, 3.0, -3.0], dtype=torch.float64)
    B, K, D = 2, 2, big.numel()
    x = torch.tensor([[1, 0, 0, 1, 1, 0], [0.5, 1, 1, 0, 0.25, 1]], dtype=torch.float64)
    mask = torch.ones(B, D, dtype=torch.bool)
    mask[1, 0] = False
    logits = big.expand(B, K, D).clone()
    W = torch.ones(D, dtype=torch.float64)
    b = torch.zeros(D, dtype=torch.float64)
    x_full = -big.expand(B, K, D).clone()  # logits −W (x − b) = big
    loc = torch.zeros(B, K, D, dtype=torch.float64)
    scale = torch.ones(B, K, D, dtype=torch.float64)
    cases = [
        ("masked_bernoulli_logprob", Inputs([x, mask, logits], [2])),
        ("selfmask_logprob", Inputs([x_full, mask, W, b], [0, 2, 3])),
        (
            "notmiwae_normal_terms",
            Inputs([-big.expand(B, D).clone(), mask, loc, scale, x_full, W, b], [2, 3, 5, 6]),
        ),
    ]
    for name, inp in cases:
        outs, grads = forward_backward(getattr(OPS, name), inp.to(dtype=dtype, device=device))
        ref_outs, ref_grads = forward_backward(getattr(reference, name), inp)
        assert all(torch.isfinite(t).all() for t in outs + grads), name
        assert_all_close(outs, ref_outs, rtol=1e-6, atol=1e-6)
        assert_all_close(grads, ref_grads, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_inputs(name, mask_kind, device):
    """Every input stored transposed, the mask too (a float mask compared with 0 keeps its
    layout: the kernels once read a transposed float mask as row-major)."""
    base = make_inputs(name, 4, 6, 10, device=device, mask_kind=mask_kind)

    def strided(t):  # the same values, stored transposed: a non-contiguous view
        return (
            t.t().contiguous().t()
            if t.dim() == 2
            else (
                t.transpose(0, 2).contiguous().transpose(0, 2)
                if t.dim() == 3
                else t.expand(2, -1)[0]
            )
        )

    inp = Inputs([strided(a) for a in base.args], base.grad_idx)
    assert not any(a.is_contiguous() for a in inp.args if a.dim() >= 2)
    outs, grads = forward_backward(getattr(OPS, name), inp)
    ref_outs, ref_grads = forward_backward(getattr(OPS, name), base)
    assert_all_close(outs, ref_outs, **same_bits(device))
    assert_all_close(grads, ref_grads, **same_bits(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_zero_width(name, device):
    """D = 0: every sum is empty (0), every gradient empty."""
    inp = make_inputs(name, 3, 2, 0, device=device)
    outs, grads = forward_backward(getattr(OPS, name), inp)
    assert all(o.shape == (3, 2) and torch.all(o == 0) for o in outs)
    assert all(g.numel() == 0 for g in grads)


# ------------------------------------------------------------------------------------
# Half types on CUDA: error against float64 at most twice that of the reference run
# in the same dtype (the flash-attention rule).
# ------------------------------------------------------------------------------------
@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_cuda_half_types(name, dtype):
    inp = make_inputs(name, 8, 20, 64, device="cuda", nan_under_mask=False)
    exact, exact_grads = forward_backward(getattr(reference, name), inp)
    outs, grads = forward_backward(getattr(OPS, name), inp.to(dtype=dtype))
    ref_half, ref_half_grads = forward_backward(getattr(reference, name), inp.to(dtype=dtype))
    for a, r, e in zip(outs + grads, ref_half + ref_half_grads, exact + exact_grads):
        err = (a.double() - e).abs().max().item()
        ref_err = (r.double() - e).abs().max().item()
        assert err <= 2 * ref_err + 1e-6, (err, ref_err)


# ------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument
# ------------------------------------------------------------------------------------
def _normal(B=3, K=4, D=5, **kw):
    return tuple(make_inputs("masked_normal_logprob", B, K, D, **kw).args)


def _replace(args, i, value):
    args = list(args)
    args[i] = value
    return tuple(args)


BAD_INPUTS = [
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 0, torch.randn(3, 1, 5).double()),
        ValueError,
        "'x' must have shape \\[B, D\\]",
    ),
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 1, torch.ones(3, 4, dtype=torch.bool)),
        ValueError,
        "'mask' must have shape \\[B, D\\]",
    ),
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 1, torch.ones(3, 5, dtype=torch.int64)),
        TypeError,
        "'mask' must be bool or floating",
    ),
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 2, torch.randn(3, 4, 6).double()),
        ValueError,
        "'loc' must have shape \\[B, K, D\\] \\(D from x\\)",
    ),
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 2, torch.randn(2, 4, 5).double()),
        ValueError,
        "'loc' must have shape \\[B, K, D\\] \\(B from x\\)",
    ),
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 3, torch.rand(3, 2, 5).double()),
        ValueError,
        "'scale' must have shape \\[B, K, D\\]",
    ),
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 3, torch.rand(3, 4, 5)),
        TypeError,
        "'scale' has dtype",
    ),
    (
        "masked_normal_logprob",
        lambda: _replace(_normal(), 0, torch.randn(3, 5)),
        TypeError,
        "'loc' has dtype",
    ),
    (
        "masked_studentt_logprob",
        lambda: _normal() + (torch.ones(4).double(),),
        ValueError,
        "'df' must have shape \\[D\\]",
    ),
    (
        "masked_bernoulli_logprob",
        lambda: (torch.rand(3, 5), torch.ones(3, 5).bool(), torch.randn(3, 4)),
        ValueError,
        "'logits' must have shape \\[B, K, D\\]",
    ),
    (
        "masked_poisson_logprob",
        lambda: (torch.rand(3, 5), torch.ones(3, 5).bool(), torch.randn(3, 4, 6)),
        ValueError,
        "'log_rate' must have shape \\[B, K, D\\] \\(D from x\\)",
    ),
    (
        "masked_poisson_logprob",
        lambda: (torch.rand(3, 5), torch.ones(3, 5).bool(), torch.randn(3, 4, 5).double()),
        TypeError,
        "'log_rate' has dtype",
    ),
    (
        "selfmask_logprob",
        lambda: (torch.randn(3, 4, 5), torch.ones(3, 5).bool(), torch.randn(5), torch.randn(1)),
        ValueError,
        "'b' must have shape \\[D\\]",
    ),
    (
        "selfmask_logprob",
        lambda: (torch.randn(3, 4, 5), torch.ones(3, 4).bool(), torch.randn(5), torch.randn(5)),
        ValueError,
        "'mask' must have shape \\[B, D\\]",
    ),
    (
        "notmiwae_normal_terms",
        lambda: (
            _normal()
            + (torch.randn(3, 4, 4).double(), torch.randn(5).double(), torch.randn(5).double())
        ),
        ValueError,
        "'eps' must have shape \\[B, K, D\\]",
    ),
    (
        "notmiwae_normal_terms",
        lambda: (
            _normal() + (torch.randn(3, 4, 5).double(), torch.randn(5), torch.randn(5).double())
        ),
        TypeError,
        "'W' has dtype",
    ),
    (
        "masked_normal_logprob",
        lambda: _normal(dtype=torch.float16),
        TypeError,
        "float32 or float64",
    ),
]


@pytest.mark.parametrize("via", BAD_INPUT_ROUTES)
@pytest.mark.parametrize(
    "name,make,exc,message", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)]
)
def test_bad_input(name, make, exc, message, via):
    check = {
        "masked_normal_logprob": _checks.location_scale,
        "masked_bernoulli_logprob": _checks.bernoulli,
        "masked_studentt_logprob": _checks.studentt,
        "masked_poisson_logprob": _checks.poisson,
        "selfmask_logprob": _checks.selfmask,
        "notmiwae_normal_terms": _checks.notmiwae,
    }[name]
    assert_bad_input(name, make(), exc, message, via, check)


@cuda_only
@pytest.mark.cuda
def test_mixed_devices():
    x, mask, loc, scale = _normal()
    with pytest.raises(ValueError, match="'loc' is on"):
        OPS.masked_normal_logprob(x.cuda(), mask.cuda(), loc, scale.cuda())


@pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")
def test_backward_with_the_library_alone():
    """Autograd is registered in C++: a process that loads only the shared library (as
    a TorchScript deployment does) gets the same gradients as the reference."""
    code = f"""
import torch
torch.ops.load_library({notmiwae_fast.library_path()!r})
g = torch.Generator().manual_seed(0)
x = torch.randn(3, 5, dtype=torch.float64, generator=g)
mask = torch.rand(3, 5, generator=g) > 0.4
loc = torch.randn(3, 4, 5, dtype=torch.float64, generator=g).requires_grad_()
scale = (0.5 + torch.rand(3, 4, 5, dtype=torch.float64, generator=g)).requires_grad_()
eps = torch.randn(3, 4, 5, dtype=torch.float64, generator=g)
W = torch.randn(5, dtype=torch.float64, generator=g).requires_grad_()
b = torch.randn(5, dtype=torch.float64, generator=g).requires_grad_()
obs, miss = torch.ops.notmiwae_fast.notmiwae_normal_terms(x, mask, loc, scale, eps, W, b)
grads = torch.autograd.grad((obs + 2 * miss).sum(), (loc, scale, W, b))
print(repr([float(obs.sum()), float(miss.sum())] + [float(t.sum()) for t in grads]))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    got = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.4
    loc = torch.randn(3, 4, 5, dtype=torch.float64, generator=g).requires_grad_()
    scale = (0.5 + torch.rand(3, 4, 5, dtype=torch.float64, generator=g)).requires_grad_()
    eps = torch.randn(3, 4, 5, dtype=torch.float64, generator=g)
    W = torch.randn(5, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(5, dtype=torch.float64, generator=g).requires_grad_()
    obs, miss = reference.notmiwae_normal_terms(x, mask, loc, scale, eps, W, b)
    grads = torch.autograd.grad((obs + 2 * miss).sum(), (loc, scale, W, b))
    expected = [float(obs.sum().detach()), float(miss.sum().detach())] + [
        float(t.sum()) for t in grads
    ]
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)
