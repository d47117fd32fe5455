"""gauss_bound (csrc/composite/bound_composite.cpp): the whole bound of a
Gaussian-decoder MIWAE / self-masking not-MIWAE in one operator, against its
pure-PyTorch twin in float64 and float32 (values and gradients), gradcheck, opcheck,
edge cases, bad input, and the models using it."""

from __future__ import annotations

import pytest
import torch
from helpers import BAD_INPUT_ROUTES, DEVICES, assert_bad_input, library_loaded

import notmiwae_fast as nf
from notmiwae_fast import ops
from notmiwae_fast.ops import _checks, reference

OPS = torch.ops.notmiwae_fast
pytestmark = pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")


def make_inputs(
    B=5, K=4, D=6, L=3, H=8, self_masking=True, dtype=torch.float64, device="cpu", seed=0
):
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x = rn(B, D)
    mask = (torch.rand(B, D, generator=g) > 0.35).double()
    x = x * mask
    eps_z, eps_x = rn(B, K, L), rn(B, K, D)
    enc = [
        (rn(H, D) / D**0.5, 0.1 * rn(H)),
        (rn(H, H) / H**0.5, 0.1 * rn(H)),
        (rn(2 * L, H) / H**0.5, 0.1 * rn(2 * L)),
    ]
    dec = [
        (rn(H, L) / L**0.5, 0.1 * rn(H)),
        (rn(H, H) / H**0.5, 0.1 * rn(H)),
        (rn(2 * D, H) / H**0.5, 0.1 * rn(2 * D)),
    ]
    W, b = (torch.rand(D, generator=g, dtype=torch.float64) + 0.5, 0.3 * rn(D))
    mv = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return dict(
        x=mv(x),
        mask=mv(mask),
        eps_z=mv(eps_z),
        eps_x=mv(eps_x) if self_masking else None,
        enc_weights=[mv(w) for w, _ in enc],
        enc_biases=[mv(b_) for _, b_ in enc],
        dec_weights=[mv(w) for w, _ in dec],
        dec_biases=[mv(b_) for _, b_ in dec],
        W=mv(W) if self_masking else None,
        b=mv(b) if self_masking else None,
    )


def params_of(inp):
    ps = inp["enc_weights"] + inp["enc_biases"] + inp["dec_weights"] + inp["dec_biases"]
    return ps + ([inp["W"], inp["b"]] if inp["W"] is not None else [])


def args_of(inp, min_scale=1e-3):
    """The operators' positional arguments from make_inputs' dict."""
    return (
        inp["x"],
        inp["mask"],
        inp["eps_z"],
        inp["eps_x"],
        inp["enc_weights"],
        inp["enc_biases"],
        inp["dec_weights"],
        inp["dec_biases"],
        inp["W"],
        inp["b"],
        min_scale,
    )


def call(fn, inp, min_scale=1e-3):
    return fn(*args_of(inp, min_scale))


def values_and_grads(fn, inp):
    inp = {
        k: ([t.detach().clone().requires_grad_(True) for t in v] if isinstance(v, list) else v)
        for k, v in inp.items()
    }
    for k in ("W", "b"):
        if inp[k] is not None:
            inp[k] = inp[k].detach().clone().requires_grad_(True)
    out = call(fn, inp)
    # every output carries gradient: a fixed combination of all of them
    g = torch.Generator().manual_seed(9)
    loss = out[0].sum() + sum(
        (o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o)).sum()
        for o in out[1:]
        if o.requires_grad
    )
    grads = torch.autograd.grad(loss, params_of(inp))
    return [o.detach() for o in out], grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("self_masking", [True, False], ids=["notmiwae", "miwae"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_reference(dtype, self_masking, device):
    inp = make_inputs(self_masking=self_masking, dtype=dtype, device=device)
    out, grads = values_and_grads(OPS.gauss_bound, inp)
    ref_inp = make_inputs(self_masking=self_masking, dtype=torch.float64, device=device)
    ref_out, ref_grads = values_and_grads(reference.gauss_bound, ref_inp)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for o, r in zip(out, ref_out):
        torch.testing.assert_close(o, r.to(dtype), **tol)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r.to(dtype), **tol)
    if not self_masking:
        assert torch.equal(out[3], torch.zeros_like(out[3]))


@pytest.mark.parametrize("self_masking", [True, False], ids=["notmiwae", "miwae"])
def test_gradcheck(self_masking):
    inp = make_inputs(B=3, K=2, D=4, L=2, H=5, self_masking=self_masking)
    params = params_of(inp)
    n_e, n_d = len(inp["enc_weights"]), len(inp["dec_weights"])

    def fn(*ps):
        ps = list(ps)
        args = dict(
            inp,
            enc_weights=ps[:n_e],
            enc_biases=ps[n_e : 2 * n_e],
            dec_weights=ps[2 * n_e : 2 * n_e + n_d],
            dec_biases=ps[2 * n_e + n_d : 2 * n_e + 2 * n_d],
        )
        if self_masking:
            args["W"], args["b"] = ps[-2], ps[-1]
        out = call(OPS.gauss_bound, args)
        return out[0], out[1], out[4]

    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_clamped_log_variance_gets_no_gradient():
    """Where the encoder's log σ² is clamped (|log σ²| > 10) its gradient is zero, as
    torch.clamp's: the fused and the reference gradients agree there."""
    inp = make_inputs()
    inp["enc_biases"][-1] = inp["enc_biases"][-1].clone()
    inp["enc_biases"][-1][3:] += 40.0  # log σ² far above 10 for every row
    out, grads = values_and_grads(OPS.gauss_bound, inp)
    ref_out, ref_grads = values_and_grads(reference.gauss_bound, inp)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)
    assert torch.all(grads[2][3:] == 0)  # the log-variance rows of the last encoder layer


def test_opcheck():
    for self_masking in (True, False):
        inp = make_inputs(dtype=torch.float32, self_masking=self_masking)
        for t in params_of(inp):
            t.requires_grad_(True)
        torch.library.opcheck(OPS.gauss_bound, args_of(inp))


def test_single_sample_and_single_row():
    inp = make_inputs(B=1, K=1)
    out, grads = values_and_grads(OPS.gauss_bound, inp)
    ref_out, ref_grads = values_and_grads(reference.gauss_bound, inp)
    torch.testing.assert_close(out[0], out[1][:, 0])  # K = 1: the bound is log w
    for o, r in zip(out + list(grads), ref_out + list(ref_grads)):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)


def _bad(**change):
    inp = make_inputs()
    inp.update(change)
    return args_of(inp)


BAD_INPUTS = [
    (
        lambda: _bad(mask=torch.ones(5, 7, dtype=torch.float64)),
        ValueError,
        "'mask' must have the shape of 'x'",
    ),
    (
        lambda: _bad(eps_z=torch.randn(4, 4, 3, dtype=torch.float64)),
        ValueError,
        "'eps_z' must have shape \\[B, K, L\\]",
    ),
    (lambda: _bad(eps_x=None), ValueError, "'eps_x' is required"),
    (lambda: _bad(W=None), ValueError, "'W' and 'b' must be given together"),
    (
        lambda: _bad(eps_x=torch.randn(5, 4, 5, dtype=torch.float64)),
        ValueError,
        "'eps_x' must have shape \\[B, K, D\\]",
    ),
    (
        lambda: _bad(
            enc_weights=make_inputs(L=2)["enc_weights"], enc_biases=make_inputs(L=2)["enc_biases"]
        ),
        ValueError,
        "encoder's last layer must have 2 L = 6",
    ),
    (lambda: _bad(eps_z=torch.randn(5, 4, 3)), TypeError, "'eps_z' has dtype"),
    # The networks' lists are named as gauss_bound's arguments (not 'biases[0]').
    (
        lambda: _bad(
            dec_biases=[torch.zeros(9, dtype=torch.float64)] + make_inputs()["dec_biases"][1:]
        ),
        ValueError,
        "'dec_biases\\[0\\]' must have shape \\[out_features\\]",
    ),
    (
        lambda: _bad(enc_weights=make_inputs()["enc_weights"][:1]),
        ValueError,
        "'enc_weights' and 'enc_biases' must have one entry per layer",
    ),
]


@pytest.mark.parametrize("via", [v for v in BAD_INPUT_ROUTES if v != "reference-fallback"])
@pytest.mark.parametrize(
    "make,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_bad_input(make, exc, message, via):
    assert_bad_input("gauss_bound", make(), exc, message, via, _checks.gauss_bound)


@pytest.mark.parametrize(
    "make,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_bad_input_python_checks(make, exc, message):
    with pytest.raises(exc, match=message):
        _checks.gauss_bound(*make()[:-1])


# ------------------------------------------------------------------------------------
# The models
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model_cls,kwargs",
    [
        (nf.NotMIWAE, dict(missing_process="selfmasking")),
        (nf.NotMIWAE, dict(missing_process="selfmasking_known_signs", signs=[1.0] * 6)),
        (nf.MIWAE, {}),
    ],
)
def test_models_use_it_and_agree_with_the_reference_backend(model_cls, kwargs, monkeypatch):
    calls = []
    original = ops.gauss_bound
    monkeypatch.setattr(ops, "gauss_bound", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(0)
    fused = model_cls(6, hidden_dim=16, n_samples=5, backend="fused", **kwargs)
    ref = model_cls(6, hidden_dim=16, n_samples=5, backend="reference", **kwargs)
    ref.load_state_dict(fused.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 6, generator=g)
    s = (x < 0.5).float()
    results = []
    for model in (fused, ref):
        torch.manual_seed(3)
        out = model(torch.where(s.bool(), x, torch.nan), s)
        grads = torch.autograd.grad(out["loss"], list(model.parameters()))
        results.append((out, grads))
    assert calls, "the fused model did not use gauss_bound"
    for key in ("loss", "elbo", "log_w", "log_p_x_given_z", "log_p_z", "log_q_z_given_x"):
        torch.testing.assert_close(results[0][0][key], results[1][0][key], rtol=1e-5, atol=1e-5)
    for a, b in zip(*(r[1] for r in results)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------
# gauss_bound_grads: the bound and the loss's gradients in one call, no graph
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("self_masking", [True, False], ids=["notmiwae", "miwae"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_grads_op_matches_autograd_and_reference(dtype, self_masking, device):
    """gauss_bound_grads gives gauss_bound's outputs and the gradients autograd takes of
    −mean(bound) through gauss_bound (the same kernels: equal to rounding), and its
    pure-PyTorch twin agrees; no result carries a graph though the weights require grad."""
    inp = make_inputs(dtype=dtype, self_masking=self_masking, device=device)
    for t in params_of(inp):
        t.requires_grad_(True)
    *out, grads = call(OPS.gauss_bound_grads, inp)
    assert not any(t.requires_grad for t in out + list(grads))
    assert len(grads) == len(params_of(inp))
    graph_out = call(OPS.gauss_bound, inp)
    expected = torch.autograd.grad(-graph_out[0].mean(), params_of(inp))
    exact = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for o, e in zip(out, graph_out):
        torch.testing.assert_close(o, e.detach(), **exact)
    for g, e, p in zip(grads, expected, params_of(inp)):
        assert g.shape == p.shape
        torch.testing.assert_close(g, e, **exact)
    ref_inp = make_inputs(dtype=torch.float64, self_masking=self_masking)
    *ref_out, ref_grads = call(reference.gauss_bound_grads, ref_inp)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for o, r in zip(out + list(grads), ref_out + list(ref_grads)):
        torch.testing.assert_close(o.cpu().double(), r, **tol)


def _leaf_inputs(self_masking, requires_grad=True):
    inp = make_inputs(self_masking=self_masking)
    for t in params_of(inp):
        t.requires_grad_(requires_grad)
    return inp


@pytest.mark.parametrize("self_masking", [True, False], ids=["notmiwae", "miwae"])
@pytest.mark.parametrize(
    "objective",
    [
        lambda out: -out[0].mean(),  # the models' loss: the gradients computed in the forward
        lambda out: 3.0 * out[0].sum(),  # a multiple of it: the same, scaled
        lambda out: (out[0] * torch.linspace(-1, 2, len(out[0]), dtype=out[0].dtype)).sum(),
        lambda out: -out[0].mean() + out[1].logsumexp(1).sum(),  # log_w too: the chain rule
    ],
    ids=["loss", "multiple", "row-weights", "with-log_w"],
)
def test_autograd_gradients_of_any_objective_match_the_reference(self_masking, objective):
    """On the CPU the autograd kernel computes the loss's gradients in the forward pass and
    backward hands them on when the bound's incoming gradient is uniform and no other
    output has one; any other objective takes the chain rule. Both agree with the
    reference twin's autograd in float64."""
    inp, ref = _leaf_inputs(self_masking), _leaf_inputs(self_masking)
    grads = torch.autograd.grad(objective(call(OPS.gauss_bound, inp)), params_of(inp))
    expected = torch.autograd.grad(objective(call(reference.gauss_bound, ref)), params_of(ref))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_retained_graph_and_frozen_parameters():
    """A second backward through a retained graph (the gradients handed on once, then the
    chain rule) adds the same gradients again; parameters that do not require grad get
    none and the others are right."""
    inp = _leaf_inputs(True)
    loss = -call(OPS.gauss_bound, inp)[0].mean()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in params_of(inp)]
    loss.backward()
    for p, g in zip(params_of(inp), first):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-12, atol=1e-12)

    frozen = _leaf_inputs(True, requires_grad=False)
    frozen["W"].requires_grad_(True)
    ref = _leaf_inputs(True, requires_grad=False)
    ref["W"].requires_grad_(True)
    (g,) = torch.autograd.grad(-call(OPS.gauss_bound, frozen)[0].mean(), [frozen["W"]])
    (e,) = torch.autograd.grad(-call(reference.gauss_bound, ref)[0].mean(), [ref["W"]])
    torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        assert call(OPS.gauss_bound, _leaf_inputs(True))[0].grad_fn is None


def test_grads_op_wrapper_and_opcheck():
    """ops.gauss_bound_grads (the typed wrapper) returns the raw operator's results, and
    the operator passes opcheck (schema, fake kernel, dispatch)."""
    for self_masking in (True, False):
        inp = make_inputs(dtype=torch.float32, self_masking=self_masking)
        *out, grads = call(ops.gauss_bound_grads, inp)
        *raw, raw_grads = call(OPS.gauss_bound_grads, inp)
        for a, b in zip(out + list(grads), raw + list(raw_grads)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.library.opcheck(OPS.gauss_bound_grads, args_of(inp))


def test_grads_op_single_row_single_sample():
    inp = make_inputs(B=1, K=1)
    *out, grads = call(OPS.gauss_bound_grads, inp)
    *ref_out, ref_grads = call(reference.gauss_bound_grads, inp)
    for o, r in zip(out + list(grads), ref_out + list(ref_grads)):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("via", [v for v in BAD_INPUT_ROUTES if v != "reference-fallback"])
@pytest.mark.parametrize(
    "make,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_grads_op_bad_input(make, exc, message, via):
    assert_bad_input("gauss_bound_grads", make(), exc, message, via, _checks.gauss_bound)


def test_small_bound_on_several_threads_leaves_the_thread_count():
    """A small bound runs on the calling thread alone (csrc/cpu/one_thread.h): the same
    numbers as with one thread, and the caller's thread count is put back."""
    inp = make_inputs(dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        *one, one_grads = call(OPS.gauss_bound_grads, inp)
        torch.set_num_threads(2)
        *two, two_grads = call(OPS.gauss_bound_grads, inp)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one + list(one_grads), two + list(two_grads)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
