"""observed_data (csrc/cpu/data_cpu.cpp; any other device: csrc/composite/
data_composite.cpp): the models' input check and zero-fill in one pass, against its
pure-PyTorch twin for every mask dtype, the counts of bad entries, opcheck, bad input,
and the models' messages built on it."""

from __future__ import annotations

import pytest
import torch
from helpers import BAD_INPUT_ROUTES, DEVICES, assert_bad_input, library_loaded

import notmiwae_fast as nf
from notmiwae_fast import ops
from notmiwae_fast.ops import _checks, reference

OPS = torch.ops.notmiwae_fast
pytestmark = pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")

MASK_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.float32,
    torch.float64,
]


def make(B=7, D=5, x_dtype=torch.float32, s_dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    s = torch.rand(B, D, generator=g) > 0.4
    x[~s] = torch.nan  # anything may sit at missing entries
    x[0, 0], s[0, 0] = torch.inf, False
    return x.to(device=device, dtype=x_dtype), s.to(device=device, dtype=s_dtype)


def assert_same(out, ref):
    for o, r in zip(out, ref):
        assert o.dtype == r.dtype and o.shape == r.shape
        torch.testing.assert_close(o.cpu(), r.cpu(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("s_dtype", MASK_DTYPES, ids=str)
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_reference(x_dtype, s_dtype, device):
    x, s = make(x_dtype=x_dtype, s_dtype=s_dtype, device=device)
    out = OPS.observed_data(x, s)
    assert_same(out, reference.observed_data(x, s))
    x0, mask, counts = out
    assert counts.tolist() == [0, 0]
    assert torch.equal(mask.bool(), s.bool()) and torch.all(x0[~s.bool()] == 0)
    assert torch.equal(x0[s.bool()], x[s.bool()])
    assert_same(ops.observed_data(x, s), out)


@pytest.mark.parametrize("device", DEVICES)
def test_counts_bad_entries(device):
    """Every mask value other than 0 and 1 is counted (2, −1, 0.5, NaN, inf, 1 + 1e-10 in
    float64), and every observed NaN / ±inf of x; missing ones are not."""
    x, s = make(B=4, D=6, x_dtype=torch.float64, s_dtype=torch.float64, device=device)
    s = torch.ones_like(s)
    s[0, :6] = torch.tensor([2.0, -1.0, 0.5, torch.nan, torch.inf, 1 + 1e-10], dtype=torch.float64)
    x = torch.zeros_like(x)
    x[1, 0], x[1, 1], x[2, 2] = torch.nan, -torch.inf, torch.inf
    s[2, 2] = 0  # missing: not counted
    for fn in (OPS.observed_data, reference.observed_data):
        assert fn(x, s)[2].tolist() == [6, 2]
    s_int = torch.ones(4, 6, dtype=torch.int64, device=device)
    s_int[0, :3] = torch.tensor([2, -1, 7])
    s_int[2, 2] = 0
    for fn in (OPS.observed_data, reference.observed_data):
        assert fn(x, s_int)[2].tolist() == [3, 2]


def test_many_blocks():
    """More elements than one parallel block (32,768): the blocks' counts add up."""
    x, s = make(B=700, D=100, s_dtype=torch.float32)
    x = x.nan_to_num(0.0, 0.0, 0.0)
    s[::7, 3] = 2.0
    x[1::5, 4] = torch.nan
    s[1::5, 4] = 1.0
    out = OPS.observed_data(x, s)
    assert_same(out, reference.observed_data(x, s))
    assert out[2].tolist() == [100, 140]


def test_opcheck_and_empty():
    x, s = make()
    torch.library.opcheck(OPS.observed_data, (x, s))
    torch.library.opcheck(OPS.observed_data, (x.double(), s.bool()))
    empty = OPS.observed_data(torch.empty(0, 3), torch.empty(0, 3))
    assert [tuple(t.shape) for t in empty] == [(0, 3), (0, 3), (2,)]
    assert empty[2].tolist() == [0, 0]


BAD_INPUTS = [
    (
        lambda: (torch.zeros(3, 2, dtype=torch.int64), torch.ones(3, 2)),
        TypeError,
        "'x' must be a floating-point tensor",
    ),
    (lambda: (torch.zeros(3, 2), torch.ones(3, 3)), ValueError, "'s' must have the shape of 'x'"),
    (
        lambda: (torch.zeros(3, 2), torch.ones(3, 2, dtype=torch.complex64)),
        TypeError,
        "'s' must be a bool, integer or real floating mask",
    ),
]


@pytest.mark.parametrize("via", [v for v in BAD_INPUT_ROUTES if v != "reference-fallback"])
@pytest.mark.parametrize(
    "make_bad,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_bad_input(make_bad, exc, message, via):
    assert_bad_input("observed_data", make_bad(), exc, message, via, _checks.observed_data)


@pytest.mark.parametrize(
    "make_bad,exc,message", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))]
)
def test_bad_input_python_checks(make_bad, exc, message):
    with pytest.raises(exc, match=message):
        _checks.observed_data(*make_bad())


@pytest.mark.parametrize("value", [2.0, -1.0, 0.5, float("nan")])
def test_models_name_the_bad_entries(value):
    """The models' messages, built from the counts: the bad mask value, or the first
    observed non-finite entry of x."""
    model = nf.NotMIWAE(4, hidden_dim=8, n_samples=3)
    x, s = torch.zeros(3, 4), torch.ones(3, 4)
    s[1, 2] = value
    with pytest.raises(ValueError, match=r"'s' must hold only 0 \(missing\) and 1"):
        model(x, s)
    s[1, 2] = 1.0
    x[2, 3] = torch.inf
    with pytest.raises(
        ValueError,
        match=r"'x' has NaN or inf at 1 observed entries .*row 2, "
        "column 3",
    ):
        model(x, s)
