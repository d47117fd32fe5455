"""masked_categorical_logprob: kernels against the pure-PyTorch reference and the
reference against torch.distributions.Categorical, gradients, opcheck, junk under the
mask, invalid observed codes, one-category columns, extreme logits, non-contiguous
inputs, autocast, half types on CUDA and bad input."""

from __future__ import annotations

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
    same_bits,
)

from notmiwae_fast import ops
from notmiwae_fast.ops import _checks, reference

NAME = "masked_categorical_logprob"
OP = torch.ops.notmiwae_fast.masked_categorical_logprob
# (B, K, categories per column)
SHAPES = [
    (1, 1, (1,)),
    (3, 1, (4,)),
    (5, 20, (2, 3, 1, 7, 4)),
    (0, 4, (2, 3)),
    (2, 3, (3,) * 300),
    (4, 2, (1000, 2)),
]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def offsets_of(sizes) -> list[int]:
    return [0] + torch.tensor(sizes).cumsum(0).tolist()


def make_inputs(
    B, K, sizes, dtype=torch.float64, device="cpu", mask_kind="bool", seed=0, junk=True
) -> Inputs:
    """Random codes and logits (drawn in float64 on the CPU, then converted). Under
    mask = 0, x holds junk (NaN, ±inf, negative, too large or fractional codes) unless
    ``junk`` is False; then it holds valid codes."""
    g = torch.Generator().manual_seed(seed)
    G, T = len(sizes), sum(sizes)
    n = torch.tensor(sizes, dtype=torch.float64)
    observed = torch.rand(B, G, generator=g) > 0.3
    x = torch.floor(torch.rand(B, G, dtype=torch.float64, generator=g) * n)
    bad = torch.tensor([math.nan, math.inf, -math.inf, -1.0, 1e6, 0.5], dtype=torch.float64)
    bad = bad[torch.randint(0, bad.numel(), (B, G), generator=g)]
    if junk:
        x = torch.where(observed, x, bad)
    mask = observed if mask_kind == "bool" else observed.to(dtype)
    logits = 3 * torch.randn(B, K, T, dtype=torch.float64, generator=g)
    return Inputs([x, mask, logits, offsets_of(sizes)], [2]).to(dtype=dtype, device=device)


# ------------------------------------------------------------------------------------
# Agreement with the reference, and of the reference with torch.distributions
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dK%dG%d" % (s[0], s[1], len(s[2])))
def test_matches_reference(shape, dtype, mask_kind, device):
    B, K, sizes = shape
    inp = make_inputs(B, K, sizes, dtype=dtype, device=device, mask_kind=mask_kind)
    outs, grads = forward_backward(OP, inp)
    ref_outs, ref_grads = forward_backward(
        reference.masked_categorical_logprob, inp.to(dtype=torch.float64)
    )
    assert outs[0].dtype == dtype and outs[0].shape == (B, K)
    assert torch.isfinite(outs[0]).all()
    assert_all_close(outs, ref_outs, **TOL[dtype])
    assert_all_close(grads, ref_grads, **TOL[dtype])


def test_wrapper_is_the_kernel():
    inp = make_inputs(4, 3, (2, 5, 1))
    torch.testing.assert_close(ops.masked_categorical_logprob(*inp.args), OP(*inp.args))


@pytest.mark.parametrize("with_mask", [False, True])
def test_reference_against_torch_distributions(with_mask):
    """Independent of the kernels: each column's log-mass from
    torch.distributions.Categorical, summed over the observed columns."""
    B, K, sizes = 6, 3, (2, 5, 1, 3)
    x, mask, logits, offsets = make_inputs(B, K, sizes, junk=False).args
    if not with_mask:
        mask = torch.ones_like(mask)
    expected = torch.zeros(B, K, dtype=torch.float64)
    for g in range(len(sizes)):
        dist = torch.distributions.Categorical(logits=logits[..., offsets[g] : offsets[g + 1]])
        log_p = dist.log_prob(x[:, g].long()[:, None].expand(B, K))
        expected += torch.where(mask[:, g, None], log_p, torch.zeros_like(log_p))
    torch.testing.assert_close(
        reference.masked_categorical_logprob(*[x, mask, logits, offsets]), expected
    )
    torch.testing.assert_close(OP(x, mask, logits, offsets), expected)


def test_gradient_formula():
    """d/dlogits = grad · mask · (onehot(x) − softmax(column)), written out."""
    B, K, sizes = 3, 2, (3, 4)
    x, mask, logits, offsets = make_inputs(B, K, sizes).args
    logits.requires_grad_(True)
    grad = torch.randn(B, K, dtype=torch.float64)
    (got,) = torch.autograd.grad(OP(x, mask, logits, offsets), logits, grad)
    expected = torch.zeros_like(logits)
    for g in range(len(sizes)):
        lo, hi = offsets[g], offsets[g + 1]
        for b in range(B):
            if mask[b, g]:
                onehot = torch.nn.functional.one_hot(x[b, g].long(), hi - lo).double()
                soft = torch.softmax(logits[b, :, lo:hi].detach(), -1)
                expected[b, :, lo:hi] = grad[b, :, None] * (onehot - soft)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------
# Gradients and operator registration
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    x, mask, logits, offsets = make_inputs(2, 3, (2, 1, 4), device=device).args
    logits = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda lg: OP(x, mask, lg, offsets), (logits,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    x, mask, logits, offsets = make_inputs(
        3, 4, (2, 3, 1), dtype=torch.float32, device=device, junk=False
    ).args
    logits = logits.clone().requires_grad_(requires_grad)
    torch.library.opcheck(OP.default, (x, mask, logits, offsets))


def test_torch_compile_fullgraph():
    x, mask, logits, offsets = make_inputs(4, 5, (3, 2), dtype=torch.float32).args

    def bound(x, mask, logits):
        log_w = OP(x, mask, logits, offsets)
        return torch.ops.notmiwae_fast.iw_logmeanexp(log_w).sum()

    compiled = torch.compile(bound, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, mask, logits), bound(x, mask, logits))


def test_no_gradient_for_data_and_mask():
    x, mask, logits, offsets = make_inputs(2, 3, (2, 3), junk=False).args
    x, mask = x.requires_grad_(True), mask.double().requires_grad_(True)
    logits.requires_grad_(True)
    g = torch.autograd.grad(
        OP(x, mask, logits, offsets).sum(), (x, mask, logits), allow_unused=True
    )
    assert g[0] is None and g[1] is None and g[2] is not None


# ------------------------------------------------------------------------------------
# Edge cases
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_junk_under_mask_changes_nothing(device):
    """NaN / ±inf / out-of-range / fractional codes under mask = 0 give bit-identical
    values and gradients."""
    clean = make_inputs(4, 3, (2, 5, 1, 3), device=device, junk=False)
    dirty = make_inputs(4, 3, (2, 5, 1, 3), device=device, junk=True)
    assert not torch.equal(clean.args[0], dirty.args[0])
    outs, grads = forward_backward(OP, clean)
    d_outs, d_grads = forward_backward(OP, dirty)
    assert_all_close(d_outs + d_grads, outs + grads, **same_bits(device))
    assert all(torch.isfinite(t).all() for t in d_outs + d_grads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("observed", [True, False], ids=["all-observed", "all-missing"])
def test_all_observed_or_all_missing(observed, device):
    inp = make_inputs(3, 4, (2, 3, 4), device=device, junk=False)
    inp.args[1] = torch.full_like(inp.args[1], observed)
    outs, grads = forward_backward(OP, inp)
    ref_outs, ref_grads = forward_backward(reference.masked_categorical_logprob, inp)
    assert_all_close(outs, ref_outs, **TOL[torch.float64])
    assert_all_close(grads, ref_grads, **TOL[torch.float64])
    if not observed:
        assert all(torch.all(t == 0) for t in outs + grads)


@pytest.mark.parametrize("device", DEVICES)
def test_one_category_columns(device):
    """A column of one category has log-probability 0 and no gradient."""
    x = torch.zeros(3, 2, dtype=torch.float64, device=device)
    mask = torch.ones(3, 2, dtype=torch.bool, device=device)
    logits = torch.randn(3, 4, 2, dtype=torch.float64, device=device, requires_grad=True)
    value = OP(x, mask, logits, [0, 1, 2])
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert torch.all(value == 0) and torch.all(grad == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_extreme_logits(dtype, device):
    """Logits of ±1e4: finite values and gradients, equal to the reference."""
    big = torch.tensor([1e4, -1e4, 3.0, -1e4, 1e4, 1e4, -3.0], dtype=torch.float64)
    offsets = [0, 2, 4, 7]
    x = torch.tensor([[0.0, 0.0, 2.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    inp = Inputs([x, mask, big.expand(2, 3, -1).clone(), offsets], [2])
    outs, grads = forward_backward(OP, inp.to(dtype=dtype, device=device))
    ref_outs, ref_grads = forward_backward(reference.masked_categorical_logprob, inp)
    assert all(torch.isfinite(t).all() for t in outs + grads)
    assert outs[0].abs().max() > 1e3  # the unlikely codes cost about 2e4
    assert_all_close(outs, ref_outs, rtol=1e-6, atol=1e-6)
    assert_all_close(grads, ref_grads, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("code", [math.nan, math.inf, -math.inf, -1.0, 3.0, 1e30, 0.5])
def test_invalid_observed_code(code, device):
    """The operator: an observed code that is not an integer in [0, n_g) has probability
    0 (−inf) and its column's logits get no gradient; the other columns are untouched.
    (Code 3 of a 3-category column would read the next column's first logit, a finite
    value, if the kernel indexed without checking.)"""
    x, mask, logits, offsets = make_inputs(2, 3, (3, 2), device=device, junk=False).args
    mask = torch.ones_like(mask)
    x[0, 0] = code
    logits.requires_grad_(True)
    value = OP(x, mask, logits, offsets)
    grad = torch.autograd.grad(value.sum(), logits)[0]
    ref = reference.masked_categorical_logprob(x, mask, logits, offsets)
    ref_grad = torch.autograd.grad(ref.sum(), logits)[0]
    assert torch.all(value[0] == -math.inf) and torch.all(grad[0, :, :3] == 0)
    torch.testing.assert_close(value, ref, equal_nan=True)
    torch.testing.assert_close(grad, ref_grad, equal_nan=True)


@pytest.mark.parametrize("code", [math.nan, -1.0, 2.0, 0.5])
def test_wrapper_rejects_invalid_observed_code_on_cpu(code):
    x, mask, logits, offsets = make_inputs(2, 3, (3, 2), junk=False).args
    mask = torch.ones_like(mask)
    x[1, 1] = code
    with pytest.raises(ValueError, match=r"argument 'x' .* got x\[1, 1\]"):
        ops.masked_categorical_logprob(x, mask, logits, offsets)
    mask[1, 1] = False  # the same code under the mask is fine
    torch.testing.assert_close(
        ops.masked_categorical_logprob(x, mask, logits, offsets), OP(x, mask, logits, offsets)
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_non_contiguous_inputs(mask_kind, device):
    base = make_inputs(4, 6, (3, 1, 5), device=device, mask_kind=mask_kind)
    x, mask, logits, offsets = base.args
    strided = [x.t().contiguous().t(), mask.t().contiguous().t()]
    strided.append(logits.transpose(0, 2).contiguous().transpose(0, 2))
    assert not any(t.is_contiguous() for t in strided)
    outs, grads = forward_backward(OP, Inputs(strided + [offsets], [2]))
    ref_outs, ref_grads = forward_backward(OP, base)
    assert_all_close(outs + grads, ref_outs + ref_grads, **same_bits(device))


@pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")
def test_autocast_runs_in_float32():
    x, mask, logits, offsets = make_inputs(3, 4, (2, 3), dtype=torch.float32, junk=False).args
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = OP(x.bfloat16(), mask, logits.bfloat16(), offsets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, OP(x, mask, logits.bfloat16().float(), offsets), rtol=0, atol=0)


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_half_types(dtype):
    """Error against float64 at most twice that of the reference run in the same dtype."""
    inp = make_inputs(8, 20, (2, 5, 1, 30, 3), device="cuda", junk=False)
    exact, exact_grads = forward_backward(reference.masked_categorical_logprob, inp)
    outs, grads = forward_backward(OP, inp.to(dtype=dtype))
    ref_half, ref_half_grads = forward_backward(
        reference.masked_categorical_logprob, inp.to(dtype=dtype)
    )
    for a, r, e in zip(outs + grads, ref_half + ref_half_grads, exact + exact_grads):
        err = (a.double() - e).abs().max().item()
        ref_err = (r.double() - e).abs().max().item()
        assert err <= 2 * ref_err + 1e-6, (err, ref_err)


# ------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument (offsets as a tuple: a list would read as
# a list of tensors in assert_bad_input's fake route)
# ------------------------------------------------------------------------------------
def _args(B=3, K=4, sizes=(2, 3), **kw):
    x, mask, logits, offsets = make_inputs(B, K, sizes, junk=False, **kw).args
    return x, mask, logits, tuple(offsets)


def _replace(args, i, value):
    args = list(args)
    args[i] = value
    return tuple(args)


BAD_INPUTS = [
    (lambda: _replace(_args(), 3, (0, 2)), ValueError, "'offsets' must hold G \\+ 1 = 3"),
    (lambda: _replace(_args(), 3, (1, 2, 5)), ValueError, "'offsets' must run from 0 to T = 5"),
    (lambda: _replace(_args(), 3, (0, 2, 6)), ValueError, "'offsets' must run from 0 to T = 5"),
    (lambda: _replace(_args(), 3, (0, 5, 5)), ValueError, "'offsets' must be strictly increasing"),
    (
        lambda: _replace(_args(), 0, torch.zeros(3, 2, 1).double()),
        ValueError,
        "'x' must have shape \\[B, G\\]",
    ),
    (
        lambda: _replace(_args(), 1, torch.ones(3, 3, dtype=torch.bool)),
        ValueError,
        "'mask' must have shape",
    ),
    (
        lambda: _replace(_args(), 1, torch.ones(3, 2, dtype=torch.int64)),
        TypeError,
        "'mask' must be bool or floating",
    ),
    (
        lambda: _replace(_args(), 2, torch.randn(2, 4, 5).double()),
        ValueError,
        "'logits' must have shape \\[B, K, T\\] \\(B from x\\)",
    ),
    (
        lambda: _replace(_args(), 2, torch.randn(3, 4, 5)),
        TypeError,
        "'logits' has dtype",
    ),
    (
        lambda: _replace(_args(), 0, torch.zeros(3, 2, dtype=torch.int64)),
        TypeError,
        "'x' must be a floating-point tensor",
    ),
    (lambda: _args(dtype=torch.float16), TypeError, "float32 or float64"),
]


@pytest.mark.parametrize("via", BAD_INPUT_ROUTES)
@pytest.mark.parametrize(
    "make,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_bad_input(make, exc, message, via):
    assert_bad_input(NAME, make(), exc, message, via, _checks.categorical)


@cuda_only
@pytest.mark.cuda
def test_mixed_devices():
    x, mask, logits, offsets = _args()
    with pytest.raises(ValueError, match="'logits' is on"):
        OP(x.cuda(), mask.cuda(), logits, offsets)
