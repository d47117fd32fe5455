"""The MLP operator (mlp_tanh): kernels against the pure-PyTorch reference, the tanh
formula against float64, gradients, opcheck, edge cases, bad input, and the models'
MLPs switching with the backend."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    BAD_INPUT_ROUTES,
    DEVICES,
    TOL,
    assert_bad_input,
    cuda_only,
    library_loaded,
    run_python,
)
from torch import nn

import notmiwae_fast
from notmiwae_fast import ops
from notmiwae_fast.nn import networks
from notmiwae_fast.ops import _checks, reference

OPS = torch.ops.notmiwae_fast
needs_library = pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")
pytestmark = needs_library

# (N, sizes): sizes[0] inputs, sizes[-1] outputs, one layer per consecutive pair.
CASES = [
    (1, [1, 1]),
    (7, [3, 5]),
    (16, [11, 128, 128, 20]),
    (320, [10, 128, 128, 22]),
    (33, [4, 6, 2, 9, 3]),
    (0, [5, 8, 8, 4]),
]


def make_layers(N, sizes, dtype=torch.float64, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(N + len(sizes))
    x = torch.randn(N, sizes[0], generator=g, dtype=torch.float64) * scale
    weights = [
        torch.randn(b, a, generator=g, dtype=torch.float64) / a**0.5
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    biases = [torch.randn(b, generator=g, dtype=torch.float64) for b in sizes[1:]]
    move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return move(x), [move(w) for w in weights], [move(b) for b in biases]


def forward_backward(fn, x, weights, biases):
    """fn(x, weights, biases) and the gradients of a fixed projection of it."""
    leaves = [t.detach().clone().requires_grad_(True) for t in [x, *weights, *biases]]
    n = len(weights)
    out = fn(leaves[0], leaves[1 : 1 + n], leaves[1 + n :])
    proj = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    ).to(out)
    grads = torch.autograd.grad((out * proj).sum(), leaves, allow_unused=True)
    return out.detach(), [g.detach() for g in grads]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[0]}-{'x'.join(map(str, c[1]))}")
def test_matches_reference(case, dtype, device):
    x, weights, biases = make_layers(*case, dtype=dtype, device=device)
    out, grads = forward_backward(OPS.mlp_tanh, x, weights, biases)
    ref_out, ref_grads = forward_backward(
        reference.mlp_tanh, x.double(), [w.double() for w in weights], [b.double() for b in biases]
    )
    # float32: the matrix products' own rounding over 128-wide sums dominates the tolerance.
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, ref_out.to(dtype), **tol)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg.to(dtype), **tol)


def test_wrapper_is_the_kernel():
    x, weights, biases = make_layers(9, [4, 6, 3])
    torch.testing.assert_close(
        ops.mlp_tanh(x, weights, biases), OPS.mlp_tanh(x, weights, biases), rtol=0, atol=0
    )


@pytest.mark.parametrize("device", DEVICES)
def test_tanh_accuracy_float32(device):
    """The float32 tanh (a rational function on the CPU) against float64 tanh: a few ulp
    over the whole range (the dense grid near 0 and where it saturates included), exact
    signs, ±1 at the ends, NaN kept."""
    t = torch.cat(
        [
            torch.linspace(-30, 30, 600_001),
            torch.linspace(-0.01, 0.01, 20_001),
            torch.linspace(7.8, 9.2, 20_001),
            torch.tensor([0.0, 1e-30, -1e-8, 4e-4, -4e-4, 0.125, -0.125, 0.12499999]),
        ]
    )
    one = [torch.ones(1, 1, device=device)] * 2
    zero = [torch.zeros(1, device=device)] * 2
    y = OPS.mlp_tanh(t[:, None].to(device), one, zero)[:, 0].cpu().double()
    exact = torch.tanh(t.double())
    rel = (y - exact).abs() / exact.abs().clamp_min(torch.finfo(torch.float32).tiny)
    assert rel.max().item() < 8 * 2.0**-24, rel.max().item()
    assert torch.equal(torch.sign(y), torch.sign(exact))
    ends = OPS.mlp_tanh(
        torch.tensor(
            [[-1e4], [1e4], [float("inf")], [-float("inf")], [float("nan")]], device=device
        ),
        one,
        zero,
    )[:, 0].cpu()
    assert ends[:4].tolist() == [-1.0, 1.0, 1.0, -1.0]
    assert torch.isnan(ends[4])


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    x, weights, biases = make_layers(5, [3, 4, 4, 2], device=device)
    n = len(weights)

    def fn(*args):
        return OPS.mlp_tanh(args[0], list(args[1 : 1 + n]), list(args[1 + n :]))

    args = tuple(t.clone().requires_grad_(True) for t in [x, *weights, *biases])
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    x, weights, biases = make_layers(6, [3, 5, 2], dtype=torch.float32, device=device)
    x = x.requires_grad_(requires_grad)
    weights = [w.requires_grad_(requires_grad) for w in weights]
    torch.library.opcheck(OPS.mlp_tanh.default, (x, weights, biases))
    # the forward that keeps activations sits below autograd (mlp_tanh is its autograd)
    torch.library.opcheck(
        OPS.mlp_tanh_forward.default, (x.detach(), [w.detach() for w in weights], biases)
    )


def test_second_derivative_raises_instead_of_vanishing():
    """mlp_tanh_backward returns lists of tensors: each gets the error node too."""
    x, weights, biases = make_layers(6, [3, 5, 2], dtype=torch.float64, device="cpu")
    weights = [w.requires_grad_(True) for w in weights]
    grads = torch.autograd.grad(
        OPS.mlp_tanh(x, weights, biases).pow(2).sum(), weights, create_graph=True
    )
    assert all(g.requires_grad for g in grads)
    with pytest.raises(RuntimeError, match="mlp_tanh_backward: .*not differentiable"):
        torch.autograd.grad(sum(g.sum() for g in grads), weights)


def test_torch_compile_fullgraph():
    x, weights, biases = make_layers(8, [4, 6, 3], dtype=torch.float32)
    compiled = torch.compile(lambda *a: OPS.mlp_tanh(*a).sum(), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, weights, biases), OPS.mlp_tanh(x, weights, biases).sum())


def test_no_grad_keeps_no_activations_and_gives_the_same_values():
    x, weights, biases = make_layers(20, [4, 16, 16, 3])
    weights = [w.requires_grad_() for w in weights]
    with_graph = OPS.mlp_tanh(x, weights, biases)
    with torch.no_grad():
        without = OPS.mlp_tanh(x, weights, biases)
    assert with_graph.requires_grad and not without.requires_grad
    torch.testing.assert_close(without, with_graph.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_inference_in_row_blocks(dtype, device):
    """Without gradients the CPU runs many rows in blocks (about 512 KB of the widest
    activation: 1024 rows at width 128); blocks, including a ragged last one, agree with
    the reference."""
    x, weights, biases = make_layers(5000, [10, 128, 128, 22], dtype=dtype, device=device)
    with torch.no_grad():
        out = OPS.mlp_tanh(x, weights, biases)
    ref = reference.mlp_tanh(
        x.double(), [w.double() for w in weights], [b.double() for b in biases]
    )
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, ref.to(dtype), **tol)


def test_gradients_only_where_asked():
    """x without requires_grad (data into an encoder) gets none; weights do."""
    x, weights, biases = make_layers(10, [4, 8, 2])
    w = [t.clone().requires_grad_() for t in weights]
    OPS.mlp_tanh(x, w, biases).sum().backward()
    assert x.grad is None and all(t.grad is not None for t in w)
    assert all(b.grad is None for b in biases)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_input(device):
    x, weights, biases = make_layers(12, [6, 5, 4], device=device)
    wide = torch.randn(12, 20, dtype=x.dtype, device=device)
    strided = wide[:, ::3][:, :6]
    assert not strided.is_contiguous()
    out, grads = forward_backward(OPS.mlp_tanh, strided, weights, biases)
    ref, ref_grads = forward_backward(reference.mlp_tanh, strided.contiguous(), weights, biases)
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_single_layer_is_affine(device):
    x, weights, biases = make_layers(9, [5, 3], device=device)
    torch.testing.assert_close(
        OPS.mlp_tanh(x, weights, biases), x @ weights[0].T + biases[0], rtol=1e-13, atol=1e-13
    )


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_half_types(dtype):
    x, weights, biases = make_layers(64, [11, 128, 128, 22], device="cuda")
    exact = reference.mlp_tanh(x, weights, biases)
    half = lambda t: t.to(dtype)  # noqa: E731
    out = OPS.mlp_tanh(half(x), [half(w) for w in weights], [half(b) for b in biases])
    ref = reference.mlp_tanh(half(x), [half(w) for w in weights], [half(b) for b in biases])
    err = (out.double() - exact).abs().max().item()
    ref_err = (ref.double() - exact).abs().max().item()
    assert err <= 2 * ref_err + 1e-6, (err, ref_err)


# ------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument
# ------------------------------------------------------------------------------------
def _layers():
    x, w, b = make_layers(4, [3, 5, 2])
    return x, w, b


def _with(i, j, value):
    """The layers with argument i (0 x, 1 weights, 2 biases), entry j, replaced."""
    args = list(_layers())
    if i == 0:
        args[0] = value
    else:
        args[i] = list(args[i])
        args[i][j] = value
    return tuple(args)


BAD_INPUTS = [
    (
        lambda: _with(0, None, torch.randn(4, 3, 1).double()),
        ValueError,
        "'x' must have shape \\[N, in_features\\]",
    ),
    (
        lambda: _with(1, 0, torch.randn(5, 4).double()),
        ValueError,
        "'weights\\[0\\]' must have shape \\[out_features, in_features\\] with size 3",
    ),
    (
        lambda: _with(1, 1, torch.randn(2, 6).double()),
        ValueError,
        "'weights\\[1\\]' must have shape .* with size 5",
    ),
    (
        lambda: _with(2, 1, torch.randn(3).double()),
        ValueError,
        "'biases\\[1\\]' must have shape \\[out_features\\] with size 2",
    ),
    (lambda: _with(1, 1, torch.randn(2, 5)), TypeError, "'weights\\[1\\]' has dtype"),
    (
        lambda: (_layers()[0], _layers()[1], _layers()[2][:1]),
        ValueError,
        "'weights' and 'biases' must have one entry per layer",
    ),
    (lambda: (_layers()[0], [], []), ValueError, "'weights' must hold at least one layer"),
    (
        lambda: tuple(
            [
                _layers()[0].long(),
                [w.long() for w in _layers()[1]],
                [b.long() for b in _layers()[2]],
            ]
        ),
        TypeError,
        "'x' must be (a floating-point tensor|float32, float64, bfloat16 or float16)",
    ),
]


@pytest.mark.parametrize("via", BAD_INPUT_ROUTES)
@pytest.mark.parametrize(
    "make,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_bad_input(make, exc, message, via):
    assert_bad_input("mlp_tanh", make(), exc, message, via, _checks.mlp_layers)


def test_backward_rejects_missing_activations():
    x, weights, biases = make_layers(4, [3, 5, 2])
    grad = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="'x' must have shape \\[N, in_features\\] with size 3"):
        OPS.mlp_tanh_backward(
            grad,
            torch.randn(4, 7, dtype=torch.float64),
            weights,
            [torch.randn(4, 5, dtype=torch.float64)],
        )
    with pytest.raises(ValueError, match="'hidden' must hold one activation per hidden layer"):
        OPS.mlp_tanh_backward(grad, x, weights, [])
    with pytest.raises(ValueError, match="'hidden\\[0\\]' must have shape"):
        OPS.mlp_tanh_backward(grad, x, weights, [torch.randn(4, 4, dtype=torch.float64)])
    with pytest.raises(ValueError, match="'hidden\\[0\\]' must have shape \\[4, 5\\]"):
        OPS.mlp_tanh_backward(grad, x, weights, [torch.randn(3, 5, dtype=torch.float64)])
    with pytest.raises(TypeError, match="'hidden\\[0\\]' has dtype Float"):
        OPS.mlp_tanh_backward(grad, x, weights, [torch.randn(4, 5)])


@cuda_only
@pytest.mark.cuda
def test_an_argument_on_the_other_device_is_named():
    """x on the CPU, the layers on CUDA (the dispatcher picks the CUDA kernel): the
    message names the argument, it is not CUDA's own device-guard error."""
    x, weights, biases = make_layers(4, [3, 5, 2])
    on_gpu = [w.cuda() for w in weights], [b.cuda() for b in biases]
    with pytest.raises(ValueError, match="'weights\\[0\\]' is on cuda:0 but 'x' is on cpu"):
        OPS.mlp_tanh(x, *on_gpu)
    with pytest.raises(ValueError, match="'weights\\[0\\]' is on cuda:0 but 'x' is on cpu"):
        OPS.mlp_tanh_forward(x, *on_gpu)
    grad = torch.randn(4, 2, dtype=torch.float64)
    hidden = [torch.randn(4, 5, dtype=torch.float64)]
    with pytest.raises(ValueError, match="'weights\\[0\\]' is on cuda:0 but 'x' is on cpu"):
        OPS.mlp_tanh_backward(grad, x, on_gpu[0], hidden)


# ------------------------------------------------------------------------------------
# The networks: fused MLPs follow the model's backend and keep nn.Sequential's layout
# ------------------------------------------------------------------------------------
def test_mlp_module_fused_and_layer_by_layer_agree():
    net = networks.mlp([7, 16, 16, 4]).double()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    net.fused = False
    expected = net(x)
    net.fused = True
    got = net(x)
    assert got.shape == (3, 5, 4)
    torch.testing.assert_close(got, expected, **TOL[torch.float64])
    # the layout (and so the state-dict keys) of the nn.Sequential it replaces
    assert list(net.state_dict()) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
        "4.weight",
        "4.bias",
    ]


def test_mlp_slices_are_plain_sequentials():
    net = networks.mlp([5, 8, 8, 3]).double()
    net.fused = True
    head = net[:2]  # Linear, Tanh: not an MLP ending in a linear layer
    assert type(head) is nn.Sequential and len(head) == 2
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(head(x), torch.tanh(net[0](x)))
    torch.testing.assert_close(net[2:](head(x)), net(x), **TOL[torch.float64])


def test_models_switch_their_mlps_with_the_backend():
    model = notmiwae_fast.SupNotMIWAE(
        6, y_dim=2, task="classification", missing_process="nonlinear", hidden_dim=8
    )
    mlps = [m for m in model.modules() if isinstance(m, networks.MLP)]
    assert len(mlps) == 4  # encoder, decoder, missing process, prediction head
    assert all(m.fused for m in mlps)
    model.backend = "reference"
    assert not any(m.fused for m in mlps)
    model.backend = "fused"
    assert all(m.fused for m in mlps)
    with pytest.raises(ValueError, match="argument 'backend'"):
        model.backend = "fast"
    ref = notmiwae_fast.MIWAE(4, hidden_dim=8, backend="reference")
    assert not any(m.fused for m in ref.modules() if isinstance(m, networks.MLP))


def test_mlp_module_trains_the_same_as_layer_by_layer():
    """Gradients of a whole model agree between fused and layer-by-layer MLPs."""
    torch.manual_seed(3)
    model = notmiwae_fast.NotMIWAE(5, hidden_dim=12, n_samples=4).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    s = torch.rand(6, 5) > 0.3
    grads = {}
    for fused in (True, False):
        networks.use_fused_networks(model, fused)
        model.zero_grad()
        torch.manual_seed(0)
        model(x, s)["loss"].backward()
        grads[fused] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_backward_with_the_library_alone():
    """Autograd of mlp_tanh is registered in C++: loading the library alone is enough."""
    code = f"""
import torch
torch.ops.load_library({notmiwae_fast.library_path()!r})
g = torch.Generator().manual_seed(0)
x = torch.randn(5, 3, dtype=torch.float64, generator=g)
w = [torch.randn(4, 3, dtype=torch.float64, generator=g).requires_grad_(),
     torch.randn(2, 4, dtype=torch.float64, generator=g).requires_grad_()]
b = [torch.zeros(4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)]
torch.ops.notmiwae_fast.mlp_tanh(x, w, b).sum().backward()
expected = torch.autograd.grad(
    torch.nn.functional.linear(torch.tanh(torch.nn.functional.linear(x, w[0])), w[1]).sum(), w)
print(max((a.grad - e).abs().max().item() for a, e in zip(w, expected)))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) < 1e-12


# ------------------------------------------------------------------------------------
# softplus_scale: the decoders' positive scale
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(0,), (7,), (16, 20, 11), (3, 5000)], ids=str)
def test_softplus_scale_matches_reference(shape, dtype, device):
    raw = (4 * torch.randn(shape, dtype=torch.float64)).to(device=device, dtype=dtype)
    leaf = raw.clone().requires_grad_(True)
    out = OPS.softplus_scale(leaf, 1e-3)
    proj = torch.randn(shape, dtype=torch.float64).to(out)
    (grad,) = torch.autograd.grad((out * proj).sum(), leaf)
    ref_leaf = raw.double().requires_grad_(True)
    ref = reference.softplus_scale(ref_leaf, 1e-3)
    (ref_grad,) = torch.autograd.grad((ref * proj.double()).sum(), ref_leaf)
    torch.testing.assert_close(out, ref.to(dtype), **TOL[dtype])
    torch.testing.assert_close(grad, ref_grad.to(dtype), **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_softplus_scale_extremes_and_strides(device):
    raw = torch.tensor(
        [-1e4, -100.0, -20.0, -1e-8, 0.0, 1e-8, 20.0, 100.0, 1e4, float("inf"), -float("inf")],
        dtype=torch.float64,
        device=device,
    )
    out = OPS.softplus_scale(raw, 0.5).cpu()
    expected = torch.nn.functional.softplus(raw.cpu()) + 0.5
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=1e-15)
    strided = torch.randn(6, 8, dtype=torch.float64, device=device)[:, ::2]
    torch.testing.assert_close(
        OPS.softplus_scale(strided, 0.0),
        torch.nn.functional.softplus(strided),
        **TOL[torch.float64],
    )


@pytest.mark.parametrize("device", DEVICES)
def test_softplus_scale_gradcheck_and_opcheck(device):
    raw = torch.randn(4, 6, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: OPS.softplus_scale(r, 1e-3), (raw,))
    torch.library.opcheck(OPS.softplus_scale.default, (raw.float().detach().requires_grad_(), 0.01))
    torch.library.opcheck(OPS.softplus_scale.default, (raw.float().detach(), 0.01))


def test_softplus_scale_bad_input():
    with pytest.raises(TypeError, match="'raw' must be a floating-point tensor"):
        OPS.softplus_scale(torch.ones(3, dtype=torch.int64), 0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        OPS.softplus_scale(torch.ones(3, dtype=torch.float16), 0.1)
    with pytest.raises(ValueError, match="'grad' must have the shape of 'raw'"):
        OPS.softplus_scale_backward(
            torch.ones(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        )
    with pytest.raises(TypeError, match="'raw' must be a floating-point tensor"):
        _checks.floating(torch.ones(3, dtype=torch.int64), "raw")  # the fallback's check


def test_decoders_scale_follows_the_backend():
    for out_dist in ("gauss", "student_t"):
        model = notmiwae_fast.NotMIWAE(5, hidden_dim=8, out_dist=out_dist).double()
        z = torch.randn(3, 4, 4, dtype=torch.float64)
        assert model.decoder.fused
        fused = model.decoder(z)["scale"]
        model.backend = "reference"
        assert not model.decoder.fused
        torch.testing.assert_close(fused, model.decoder(z)["scale"], **TOL[torch.float64])
