"""The latent-sample operator (latent_terms): kernels against the pure-PyTorch reference
and torch.distributions, gradients, opcheck, edge cases and bad input."""

from __future__ import annotations

import pytest
import torch
from helpers import BAD_INPUT_ROUTES, DEVICES, TOL, assert_bad_input, cuda_only, library_loaded

from notmiwae_fast import ops
from notmiwae_fast.ops import _checks, reference

OPS = torch.ops.notmiwae_fast
pytestmark = pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")
SHAPES = [(1, 1, 1), (3, 5, 2), (16, 20, 10), (4, 1000, 7), (0, 3, 4), (2, 0, 3)]  # B, K, L


def make_inputs(B, K, L, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(B * 100 + K + L)
    mu = torch.randn(B, L, generator=g, dtype=torch.float64)
    std = torch.exp(0.5 * torch.randn(B, L, generator=g, dtype=torch.float64))
    eps = torch.randn(B, K, L, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (mu, std, eps))


def forward_backward(fn, mu, std, eps):
    leaves = [mu.clone().requires_grad_(True), std.clone().requires_grad_(True)]
    outs = fn(leaves[0], leaves[1], eps)
    g = torch.Generator().manual_seed(7)
    loss = sum(
        (o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o)).sum() for o in outs
    )
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [o.detach() for o in outs], [
        torch.zeros_like(leaf) if gr is None else gr for gr, leaf in zip(grads, leaves)
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dK%dL%d" % s)
def test_matches_reference(shape, dtype, device):
    mu, std, eps = make_inputs(*shape, dtype=dtype, device=device)
    outs, grads = forward_backward(OPS.latent_terms, mu, std, eps)
    ref_outs, ref_grads = forward_backward(
        reference.latent_terms, mu.double(), std.double(), eps.double()
    )
    for a, r in zip(outs + grads, ref_outs + ref_grads):
        torch.testing.assert_close(a, r.to(dtype), **TOL[dtype])


def test_against_torch_distributions():
    """Independent of the reference: the two log-densities are those of
    torch.distributions.Normal."""
    mu, std, eps = make_inputs(5, 8, 3)
    z, log_p, log_q = OPS.latent_terms(mu, std, eps)
    torch.testing.assert_close(z, mu[:, None] + std[:, None] * eps, rtol=1e-15, atol=1e-15)
    normal = torch.distributions.Normal
    torch.testing.assert_close(log_p, normal(0.0, 1.0).log_prob(z).sum(-1), **TOL[torch.float64])
    torch.testing.assert_close(
        log_q, normal(mu[:, None], std[:, None]).log_prob(z).sum(-1), **TOL[torch.float64]
    )


def test_wrapper_is_the_kernel():
    args = make_inputs(3, 4, 5)
    for a, b in zip(ops.latent_terms(*args), OPS.latent_terms(*args)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    mu, std, eps = make_inputs(3, 4, 2, device=device)
    args = (mu.requires_grad_(True), std.requires_grad_(True), eps)
    assert torch.autograd.gradcheck(lambda m, s, e: OPS.latent_terms(m, s, e), args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    mu, std, eps = make_inputs(3, 4, 5, dtype=torch.float32, device=device)
    torch.library.opcheck(
        OPS.latent_terms.default,
        (mu.requires_grad_(requires_grad), std.requires_grad_(requires_grad), eps),
    )


@pytest.mark.parametrize("which", [0, 1, 2])
def test_one_output_used(which):
    """Only z, only log p or only log q used: the others count as zero gradients."""
    mu, std, eps = make_inputs(4, 6, 3)
    outs, grads = forward_backward(lambda *a: (OPS.latent_terms(*a)[which],), mu, std, eps)
    ref_outs, ref_grads = forward_backward(
        lambda *a: (reference.latent_terms(*a)[which],), mu, std, eps
    )
    for a, r in zip(outs + grads, ref_outs + ref_grads):
        torch.testing.assert_close(a, r, **TOL[torch.float64])


def test_no_gradient_for_noise():
    mu, std, eps = make_inputs(2, 3, 4)
    eps.requires_grad_(True)
    mu.requires_grad_(True)
    z, _, _ = OPS.latent_terms(mu, std, eps)
    z.sum().backward()
    assert eps.grad is None and mu.grad is not None


@pytest.mark.parametrize("device", DEVICES)
def test_no_latent_dimensions(device):
    """L = 0: z is [B, K, 0], both log-densities 0, and the backward gives empty
    gradients (it read the [B, K] shape of its row gradients from eps's first column)."""
    mu, std, eps = make_inputs(2, 3, 1, device=device)
    mu, std, eps = mu[:, :0], std[:, :0], eps[..., :0]
    z, log_p, log_q = OPS.latent_terms(mu, std, eps)
    assert z.shape == (2, 3, 0) and torch.all(log_p == 0) and torch.all(log_q == 0)
    g_mu, g_std = OPS.latent_terms_backward(None, torch.ones_like(log_p), None, mu, std, eps)
    assert g_mu.shape == (2, 0) and g_std.shape == (2, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous(device):
    mu, std, eps = make_inputs(6, 5, 4, device=device)
    wide = torch.cat([mu, std], dim=1)  # the encoder's [B, 2L] output, split in two views
    m, s = wide[:, :4], wide[:, 4:]
    assert not m.is_contiguous()
    for a, r in zip(
        OPS.latent_terms(m, s, eps.transpose(0, 1).contiguous().transpose(0, 1)),
        reference.latent_terms(m, s, eps),
    ):
        torch.testing.assert_close(a, r, **TOL[torch.float64])


def test_torch_compile_fullgraph():
    mu, std, eps = make_inputs(4, 5, 3, dtype=torch.float32)
    compiled = torch.compile(
        lambda *a: sum(o.sum() for o in OPS.latent_terms(*a)), fullgraph=True, backend="aot_eager"
    )
    torch.testing.assert_close(
        compiled(mu, std, eps), sum(o.sum() for o in OPS.latent_terms(mu, std, eps))
    )


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_half_types(dtype):
    mu, std, eps = make_inputs(8, 20, 16, device="cuda")
    exact = reference.latent_terms(mu, std, eps)
    half = OPS.latent_terms(mu.to(dtype), std.to(dtype), eps.to(dtype))
    ref_half = reference.latent_terms(mu.to(dtype), std.to(dtype), eps.to(dtype))
    for a, r, e in zip(half, ref_half, exact):
        err = (a.double() - e).abs().max().item()
        ref_err = (r.double() - e).abs().max().item()
        assert err <= 2 * ref_err + 1e-6, (err, ref_err)


BAD_INPUTS = [
    (
        lambda: (torch.randn(3), *make_inputs(3, 4, 5)[1:]),
        ValueError,
        "'mu' must have shape \\[B, L\\]",
    ),
    (
        lambda: (make_inputs(3, 4, 5)[0], torch.rand(3, 4).double(), make_inputs(3, 4, 5)[2]),
        ValueError,
        "'std' must have shape \\[B, L\\] \\(L from mu\\)",
    ),
    (
        lambda: (*make_inputs(3, 4, 5)[:2], torch.randn(3, 4, 6).double()),
        ValueError,
        "'eps' must have shape \\[B, K, L\\] \\(L from mu\\)",
    ),
    (
        lambda: (*make_inputs(3, 4, 5)[:2], torch.randn(2, 4, 5).double()),
        ValueError,
        "'eps' must have shape \\[B, K, L\\] \\(B from mu\\)",
    ),
    (
        lambda: (make_inputs(3, 4, 5)[0], make_inputs(3, 4, 5)[1].float(), make_inputs(3, 4, 5)[2]),
        TypeError,
        "'std' has dtype",
    ),
    (lambda: make_inputs(3, 4, 5, dtype=torch.float16), TypeError, "float32 or float64"),
]


@pytest.mark.parametrize("via", BAD_INPUT_ROUTES)
@pytest.mark.parametrize(
    "make,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_bad_input(make, exc, message, via):
    assert_bad_input("latent_terms", make(), exc, message, via, _checks.latent)
