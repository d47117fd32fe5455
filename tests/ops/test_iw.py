"""The importance-weighting operators (iw_logmeanexp, iw_weights, iw_impute): kernels
against the pure-PyTorch reference, gradients, opcheck, edge cases and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import BAD_INPUT_ROUTES, DEVICES, TOL, assert_bad_input, cuda_only

from notmiwae_fast import ops
from notmiwae_fast.ops import reference

OPS = torch.ops.notmiwae_fast
SHAPES = [(1, 1, 1), (3, 1, 4), (5, 20, 11), (16, 257, 3), (2, 3000, 7)]  # (B, K, D)


def make_inputs(B, K, D, dtype, device, spread=3.0):
    log_w = (spread * torch.randn(B, K, dtype=torch.float64)).to(device=device, dtype=dtype)
    values = torch.randn(B, K, D, dtype=torch.float64).to(device=device, dtype=dtype)
    return log_w, values


def kernel_and_reference(name):
    return getattr(OPS, name), getattr(reference, name)


def forward_backward(fn, *inputs):
    """fn(*inputs), and the gradients of a fixed random projection of it."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    proj = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    ).to(out)
    grads = torch.autograd.grad((out * proj).sum(), leaves)
    return out.detach(), [g.detach() for g in grads]


# ------------------------------------------------------------------------------------
# Agreement with the reference
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dK%dD%d" % s)
@pytest.mark.parametrize("name", ["iw_logmeanexp", "iw_weights", "iw_impute"])
def test_matches_reference(name, shape, dtype, device):
    B, K, D = shape
    log_w, values = make_inputs(B, K, D, dtype, device)
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    kernel, ref = kernel_and_reference(name)
    out, grads = forward_backward(kernel, *inputs)
    # The reference runs in float64: the kernel must match it to the dtype's tolerance.
    ref_out, ref_grads = forward_backward(ref, *[t.double() for t in inputs])
    torch.testing.assert_close(out, ref_out.to(dtype), **TOL[dtype])
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg.to(dtype), **TOL[dtype])


@pytest.mark.parametrize("name", ["iw_logmeanexp", "iw_weights", "iw_impute"])
def test_wrapper_is_the_kernel(name):
    log_w, values = make_inputs(4, 9, 5, torch.float64, "cpu")
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    torch.testing.assert_close(
        getattr(ops, name)(*inputs), getattr(OPS, name)(*inputs), rtol=0, atol=0
    )


def test_values_against_closed_forms():
    """Independent of the reference: K equal weights give log-mean-exp = the weight,
    uniform softmax and the plain mean of the values."""
    log_w = torch.full((3, 8), -2.5, dtype=torch.float64)
    values = torch.randn(3, 8, 4, dtype=torch.float64)
    torch.testing.assert_close(
        OPS.iw_logmeanexp(log_w), torch.full((3,), -2.5, dtype=torch.float64)
    )
    torch.testing.assert_close(
        OPS.iw_weights(log_w), torch.full((3, 8), 1 / 8, dtype=torch.float64)
    )
    torch.testing.assert_close(OPS.iw_impute(log_w, values), values.mean(1))
    # and against torch's own logsumexp / softmax on generic input
    x = torch.randn(6, 50, dtype=torch.float64) * 5
    torch.testing.assert_close(
        OPS.iw_logmeanexp(x), torch.logsumexp(x, 1) - math.log(50), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(OPS.iw_weights(x), torch.softmax(x, 1), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------
# Gradients and operator registration
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["iw_logmeanexp", "iw_weights", "iw_impute"])
def test_gradcheck(name, device):
    log_w, values = make_inputs(3, 6, 4, torch.float64, device)
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    inputs = tuple(t.requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(getattr(OPS, name), inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", ["iw_logmeanexp", "iw_weights", "iw_impute"])
def test_opcheck(name, requires_grad, device):
    log_w, values = make_inputs(4, 7, 3, torch.float32, device)
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    inputs = tuple(t.requires_grad_(requires_grad) for t in inputs)
    torch.library.opcheck(getattr(OPS, name).default, inputs)


def test_torch_compile_fullgraph():
    log_w, values = make_inputs(5, 12, 3, torch.float32, "cpu")

    def bound_and_imputation(lw, v):
        return OPS.iw_logmeanexp(lw).sum() + OPS.iw_impute(lw, v).sum()

    compiled = torch.compile(bound_and_imputation, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(log_w, values), bound_and_imputation(log_w, values))


# ------------------------------------------------------------------------------------
# Edge cases
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_k_equals_one(device):
    log_w, values = make_inputs(5, 1, 3, torch.float64, device)
    torch.testing.assert_close(OPS.iw_logmeanexp(log_w), log_w[:, 0])
    torch.testing.assert_close(OPS.iw_weights(log_w), torch.ones_like(log_w))
    torch.testing.assert_close(OPS.iw_impute(log_w, values), values[:, 0])


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    log_w, values = make_inputs(0, 5, 3, torch.float32, device)
    log_w.requires_grad_(True)
    values.requires_grad_(True)
    lme, w, imp = OPS.iw_logmeanexp(log_w), OPS.iw_weights(log_w), OPS.iw_impute(log_w, values)
    assert lme.shape == (0,) and w.shape == (0, 5) and imp.shape == (0, 3)
    g_lw, g_v = torch.autograd.grad(lme.sum() + w.sum() + imp.sum(), (log_w, values))
    assert g_lw.shape == (0, 5) and g_v.shape == (0, 5, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_width_values(device):
    log_w, values = make_inputs(3, 5, 0, torch.float32, device)
    assert OPS.iw_impute(log_w, values).shape == (3, 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["iw_logmeanexp", "iw_weights", "iw_impute"])
def test_non_contiguous_inputs(name, device):
    base_lw = torch.randn(9, 12, dtype=torch.float64, device=device)
    base_v = torch.randn(7, 9, 12, dtype=torch.float64, device=device)
    log_w = base_lw.t()[::2]  # [6, 9], strided
    values = base_v.permute(2, 1, 0)[::2]  # [6, 9, 7], permuted
    assert not log_w.is_contiguous() and not values.is_contiguous()
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    kernel, ref = kernel_and_reference(name)
    out, grads = forward_backward(kernel, *inputs)
    ref_out, ref_grads = forward_backward(ref, *inputs)
    torch.testing.assert_close(out, ref_out, **TOL[torch.float64])
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, **TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("K", [2, 300, 3000])
def test_a_nan_log_weight_leaves_its_row_without_mass(device, K):
    """A NaN log-weight anywhere in a row (first, last, mid-chunk; K spanning several
    CPU chunks and CUDA threads): the row has no mass, as in the reference: bound −inf,
    weights 0, imputation 0; the other rows are untouched."""
    log_w, values = make_inputs(4, K, 3, torch.float64, device)
    for row, k in ((0, 0), (1, K - 1), (2, K // 2)):
        log_w[row, k] = math.nan
    lme, w, imp = OPS.iw_logmeanexp(log_w), OPS.iw_weights(log_w), OPS.iw_impute(log_w, values)
    assert torch.all(lme[:3] == -math.inf) and torch.all(w[:3] == 0) and torch.all(imp[:3] == 0)
    torch.testing.assert_close(lme, reference.iw_logmeanexp(log_w), **TOL[torch.float64])
    torch.testing.assert_close(w, reference.iw_weights(log_w), **TOL[torch.float64])
    torch.testing.assert_close(imp, reference.iw_impute(log_w, values), **TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_minus_infinity_entries(device):
    """Some -inf: those samples get weight 0. All -inf: -inf bound, zero weights,
    zero imputation, zero gradients, never NaN."""
    ninf = -math.inf
    log_w = torch.tensor(
        [[0.0, ninf, 1.0], [ninf, ninf, ninf]],
        dtype=torch.float64,
        device=device,
        requires_grad=True,
    )
    values = torch.randn(2, 3, 2, dtype=torch.float64, device=device)
    values[0, 1] = math.nan  # a sample with no weight: its values must not leak
    values.requires_grad_(True)

    lme = OPS.iw_logmeanexp(log_w)
    w = OPS.iw_weights(log_w)
    imp = OPS.iw_impute(log_w, values)
    expected_lme0 = math.log((1 + math.e) / 3)
    assert lme[0].item() == pytest.approx(expected_lme0, rel=1e-12)
    assert lme[1].item() == ninf
    assert w[0, 1].item() == 0 and torch.all(w[1] == 0)
    torch.testing.assert_close(imp[0], (values[0, 0] + math.e * values[0, 2]) / (1 + math.e))
    assert torch.all(imp[1] == 0)

    for out in (lme, w.sum(1), imp.sum(1)):
        g_lw, g_v = torch.autograd.grad(
            out.sum(), (log_w, values), allow_unused=True, materialize_grads=True
        )
        assert torch.isfinite(g_lw).all() and torch.isfinite(g_v).all()
        assert torch.all(g_lw[1] == 0) and g_lw[0, 1] == 0
        assert torch.all(g_v[1] == 0) and torch.all(g_v[0, 1] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_extreme_magnitudes(device):
    """Log-weights and values of ±1e4 stay finite and accurate."""
    log_w = torch.tensor(
        [[1e4, -1e4, 1e4 - 0.05], [-1e4, -1e4 + 2.0, -1e4]],
        dtype=torch.float32,
        device=device,
        requires_grad=True,
    )
    values = torch.tensor([1e4, -1e4, 0.5], device=device).repeat(2, 1).unsqueeze(-1)
    values.requires_grad_(True)
    lme = OPS.iw_logmeanexp(log_w)
    imp = OPS.iw_impute(log_w, values)
    ref_lme = reference.iw_logmeanexp(log_w.double())
    ref_imp = reference.iw_impute(log_w.double(), values.double())
    torch.testing.assert_close(lme.double(), ref_lme, rtol=1e-6, atol=0)
    torch.testing.assert_close(imp.double(), ref_imp, rtol=1e-5, atol=1e-3)
    # The weights carry no rounded log-sum-exp of magnitude 1e4 (5e-4 relative error in
    # float32): they are exp(a - max) / sum.
    torch.testing.assert_close(
        OPS.iw_weights(log_w).double(), reference.iw_weights(log_w.double()), rtol=1e-5, atol=1e-7
    )
    g_lw, g_v = torch.autograd.grad(lme.sum() + imp.sum(), (log_w, values))
    assert torch.isfinite(g_lw).all() and torch.isfinite(g_v).all()
    lw64, v64 = log_w.detach().double().requires_grad_(), values.detach().double().requires_grad_()
    ref_g = torch.autograd.grad(
        reference.iw_logmeanexp(lw64).sum() + reference.iw_impute(lw64, v64).sum(), (lw64, v64)
    )
    torch.testing.assert_close(g_v.double(), ref_g[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_lw.double(), ref_g[0], rtol=1e-5, atol=2e-2)


def test_large_k_streaming_matches_reference():
    """K much larger than any tile or chunk: the streaming kernel equals the reference."""
    log_w, values = make_inputs(3, 50_000, 5, torch.float64, "cpu", spread=10.0)
    torch.testing.assert_close(
        OPS.iw_impute(log_w, values), reference.iw_impute(log_w, values), **TOL[torch.float64]
    )


@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_outweighed_sample_of_an_earlier_chunk_is_dropped(bad, dtype):
    """A sample with weight in its own chunk of K (256 on the CPU) and none once a later
    chunk raises the maximum: its values (inf / NaN) must not reach the result (the CPU
    kernel once scaled its running sum by 0, and 0 · inf is NaN) nor the gradients."""
    log_w = torch.full((1, 300), -math.inf, dtype=dtype)
    # exp(−5 − 1000) is 0 in both dtypes; the reference runs in float64 (its float32
    # softmax loses ~1e-4 at |log w| = 1000).
    log_w[0, 0], log_w[0, 299], log_w[0, 280] = -5.0, 1000.0, 999.0
    values = torch.randn(1, 300, 2, dtype=dtype)
    values[0, 0] = bad
    lw, v = log_w.clone().requires_grad_(), values.clone().requires_grad_()
    out = OPS.iw_impute(lw, v)
    assert torch.isfinite(out).all()
    lw_r, v_r = log_w.double().requires_grad_(), values.double().requires_grad_()
    ref = reference.iw_impute(lw_r, v_r)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(out.sum(), (lw, v))
    ref_grads = torch.autograd.grad(ref.sum(), (lw_r, v_r))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["iw_logmeanexp", "iw_weights", "iw_impute"])
def test_second_derivative_raises_instead_of_vanishing(name):
    """The gradients are not differentiable (csrc/autograd/backward_autograd.cpp): a
    first grad with create_graph=True works, a second one through it raises (it once
    came out as None / zero, with only a warning)."""
    log_w, values = make_inputs(2, 5, 3, torch.float64, "cpu")
    log_w.requires_grad_(True)
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    (first,) = torch.autograd.grad(getattr(OPS, name)(*inputs).sum(), log_w, create_graph=True)
    (ref_first,) = torch.autograd.grad(getattr(reference, name)(*inputs).sum(), log_w)
    torch.testing.assert_close(first.detach(), ref_first)
    with pytest.raises(RuntimeError, match=f"notmiwae_fast::{name}_backward: .*not differentiable"):
        torch.autograd.grad((first * torch.randn_like(first)).sum(), log_w)


def test_wide_rows_cross_column_tiles():
    """D spans several column tiles of the CPU kernel (tile = 1024)."""
    log_w, values = make_inputs(2, 6, 2500, torch.float64, "cpu")
    torch.testing.assert_close(
        OPS.iw_impute(log_w, values), reference.iw_impute(log_w, values), **TOL[torch.float64]
    )


# ------------------------------------------------------------------------------------
# Half types on CUDA: error against float64 at most twice that of the reference run
# in the same dtype (the flash-attention rule).
# ------------------------------------------------------------------------------------
@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", ["iw_logmeanexp", "iw_weights", "iw_impute"])
def test_cuda_half_types(name, dtype):
    log_w, values = make_inputs(8, 100, 16, torch.float64, "cuda")
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    kernel, ref = kernel_and_reference(name)
    exact, exact_grads = forward_backward(ref, *inputs)
    out, grads = forward_backward(kernel, *[t.to(dtype) for t in inputs])
    ref_half, ref_half_grads = forward_backward(ref, *[t.to(dtype) for t in inputs])
    for a, r, e in [(out, ref_half, exact)] + list(zip(grads, ref_half_grads, exact_grads)):
        err = (a.double() - e).abs().max().item()
        ref_err = (r.double() - e).abs().max().item()
        assert err <= 2 * ref_err + 1e-6, (err, ref_err)


# ------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument
# ------------------------------------------------------------------------------------
BAD_INPUTS = [
    ("iw_logmeanexp", lambda: (torch.randn(3),), ValueError, "'log_w' must have shape \\[B, K\\]"),
    ("iw_logmeanexp", lambda: (torch.randn(2, 3, 4),), ValueError, "'log_w' must have shape"),
    ("iw_logmeanexp", lambda: (torch.randn(3, 0),), ValueError, "K >= 1"),
    (
        "iw_weights",
        lambda: (torch.ones(3, 4, dtype=torch.int64),),
        TypeError,
        "'log_w' must be a floating-point",
    ),
    (
        "iw_impute",
        lambda: (torch.randn(3, 4), torch.randn(3, 5, 2)),
        ValueError,
        "'values' must have shape \\[B, K, D\\] \\(K from log_w\\)",
    ),
    (
        "iw_impute",
        lambda: (torch.randn(3, 4), torch.randn(2, 4, 2)),
        ValueError,
        "'values' must have shape \\[B, K, D\\] \\(B from log_w\\)",
    ),
    (
        "iw_impute",
        lambda: (torch.randn(3, 4), torch.randn(3, 4)),
        ValueError,
        "'values' must have shape \\[B, K, D\\]",
    ),
    (
        "iw_impute",
        lambda: (torch.randn(3, 4), torch.randn(3, 4, 2, dtype=torch.float64)),
        TypeError,
        "'values' has dtype",
    ),
    (
        "iw_logmeanexp",
        lambda: (torch.randn(3, 4, dtype=torch.float16),),
        TypeError,
        "float32 or float64",
    ),
]


@pytest.mark.parametrize("via", BAD_INPUT_ROUTES)
@pytest.mark.parametrize(
    "name,make,exc,message", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)]
)
def test_bad_input(name, make, exc, message, via):
    from notmiwae_fast.ops import _checks

    check = _checks.iw_values if name == "iw_impute" else _checks.log_weights
    assert_bad_input(name, make(), exc, message, via, check)


@cuda_only
@pytest.mark.cuda
def test_mixed_devices():
    with pytest.raises(ValueError, match="'values' is on"):
        OPS.iw_impute(torch.randn(3, 4, device="cuda"), torch.randn(3, 4, 2))
