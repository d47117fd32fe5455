"""Property-based tests (hypothesis): the operators (notmiwae_fast.ops, which call
torch.ops.notmiwae_fast where the library serves the device) against their pure-PyTorch
twins in notmiwae_fast.reference on random shapes, masks, magnitudes up to ±1e4 and
non-contiguous layouts (transposed and strided views); and a fuzz test of the command
line's CSV reader (a valid table or one clean CLIError, never an exception from inside
pandas).

The "ci" profile (the default) runs a fixed, bounded number of derandomised examples per
test; HYPOTHESIS_PROFILE=dev runs more, random ones."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from notmiwae_fast import ops  # noqa: E402
from notmiwae_fast.cli import CLIError, _read_csv  # noqa: E402
from notmiwae_fast.ops import reference  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=300,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

LAYOUTS = ["contiguous", "transposed", "strided"]
MAGNITUDES = [1e-3, 1.0, 30.0, 1e4]


# -- building inputs -----------------------------------------------------------------------
def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values in a non-contiguous view: its last two dims transposed in memory
    (a transposed tensor transposed back) or every other element of a larger tensor."""
    if layout == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "strided":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


@st.composite
def case(draw, max_b=6, max_k=8, max_d=6):
    """(generator, sizes B, K, D, magnitude, layout, dtype)."""
    seed = draw(st.integers(0, 2**31 - 1))
    sizes = (draw(st.integers(1, max_b)), draw(st.integers(1, max_k)), draw(st.integers(1, max_d)))
    magnitude = draw(st.sampled_from(MAGNITUDES))
    layout = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    return torch.Generator().manual_seed(seed), sizes, magnitude, layout, dtype


def uniform(g, shape, magnitude, dtype=torch.float64):
    """Values in [-magnitude, magnitude]."""
    return ((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * magnitude).to(dtype)


def random_mask(g, shape):
    """A 0/1 float mask with all-missing and all-observed rows among the random ones."""
    p = torch.rand(shape[0], 1, generator=g, dtype=torch.float64)
    return (torch.rand(shape, generator=g, dtype=torch.float64) < p).double()


def positive(g, shape, magnitude, dtype=torch.float64):
    """Scales in (magnitude · e^-3, magnitude · e^3) (at least 1e-3)."""
    base = max(magnitude, 1e-3)
    return (base * torch.exp(uniform(g, shape, 3.0))).to(dtype)


def close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """got (the operator) equals want (the reference, computed in float64) to the
    dtype's precision, relative to the size of the values (sums of large terms)."""
    want = want.double()
    got = got.double()
    assert got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got)), (got, want)
    assert torch.equal(want[~finite], got[~finite])
    if finite.any():
        size = 1.0 + want[finite].abs().max().item()
        rtol = 1e-9 if dtype == torch.float64 else 2e-4
        torch.testing.assert_close(got[finite], want[finite], rtol=rtol, atol=rtol * size)


def grads(fn, inputs: list, cotangent_seed: int) -> list:
    """Gradients of Σ out · c (c random, fixed by the seed) w.r.t. ``inputs``."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(cotangent_seed)
    total = sum(
        (o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in outs
    )
    return list(torch.autograd.grad(total, inputs, allow_unused=True))


def compare(op, ref, inputs_op: list, inputs_ref: list, dtype, differentiable: list):
    """The op on inputs_op against the reference on inputs_ref (float64): outputs, and
    the gradients w.r.t. the inputs at the ``differentiable`` positions."""
    out, want = op(*inputs_op), ref(*inputs_ref)
    outs = out if isinstance(out, tuple) else (out,)
    wants = want if isinstance(want, tuple) else (want,)
    for o, w in zip(outs, wants, strict=True):
        close(o, w, dtype)
    if not differentiable:
        return
    seed = 1234

    def pick(fn, inputs):
        def call(*chosen):
            full = list(inputs)
            for i, t in zip(differentiable, chosen):
                full[i] = t
            return fn(*full)

        return call

    got = grads(pick(op, inputs_op), [inputs_op[i] for i in differentiable], seed)
    exp = grads(pick(ref, inputs_ref), [inputs_ref[i] for i in differentiable], seed)
    for a, b in zip(got, exp):
        if b is None:
            assert a is None or not a.any()
            continue
        close(a, b, dtype)


def as_op_input(t: torch.Tensor, layout: str, dtype) -> torch.Tensor:
    return laid_out(t.to(dtype), layout)


# -- importance weighting -----------------------------------------------------------------
@st.composite
def log_weights(draw):
    g, (B, K, D), magnitude, layout, dtype = draw(case())
    log_w = uniform(g, (B, K), magnitude)
    dead = torch.rand(B, K, generator=g) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    log_w = log_w.masked_fill(dead, -math.inf)  # some -inf, and rows of -inf only
    return g, (B, K, D), magnitude, layout, dtype, log_w


@given(log_weights())
def test_iw_logmeanexp(c):
    g, _, _, layout, dtype, log_w = c
    compare(
        ops.iw_logmeanexp,
        reference.iw_logmeanexp,
        [as_op_input(log_w, layout, dtype)],
        [log_w],
        dtype,
        [0],
    )


@given(log_weights())
def test_iw_weights(c):
    g, _, _, layout, dtype, log_w = c
    out = ops.iw_weights(as_op_input(log_w, layout, dtype))
    alive = torch.isfinite(log_w).any(1)
    torch.testing.assert_close(
        out.double().sum(1)[alive],
        torch.ones(int(alive.sum()), dtype=torch.float64),
        rtol=0,
        atol=1e-5,
    )
    compare(
        ops.iw_weights,
        reference.iw_weights,
        [as_op_input(log_w, layout, dtype)],
        [log_w],
        dtype,
        [0],
    )


@given(log_weights())
def test_iw_impute(c):
    g, (B, K, D), magnitude, layout, dtype, log_w = c
    values = uniform(g, (B, K, D), magnitude)
    compare(
        ops.iw_impute,
        reference.iw_impute,
        [as_op_input(log_w, layout, dtype), as_op_input(values, layout, dtype)],
        [log_w, values],
        dtype,
        [0, 1],
    )


# -- likelihoods and the missing process -----------------------------------------------------
def hidden_garbage(x: torch.Tensor, mask: torch.Tensor, g) -> torch.Tensor:
    """x with NaN, ±inf and huge values where mask = 0 (must not matter)."""
    junk = torch.tensor([math.nan, math.inf, -math.inf, 1e300], dtype=x.dtype)
    pick = torch.randint(0, 4, x.shape, generator=g)
    return torch.where(mask == 0, junk[pick].to(x.dtype), x)


@given(case())
def test_masked_normal_logprob(c):
    g, (B, K, D), magnitude, layout, dtype = c
    mask = random_mask(g, (B, D))
    x = hidden_garbage(uniform(g, (B, D), magnitude), mask, g)
    loc = uniform(g, (B, K, D), magnitude)
    scale = positive(g, (B, K, D), magnitude)
    compare(
        ops.masked_normal_logprob,
        reference.masked_normal_logprob,
        [as_op_input(t, layout, dtype) for t in (x, mask, loc, scale)],
        [x, mask, loc, scale],
        dtype,
        [2, 3],
    )


@given(case())
def test_masked_bernoulli_logprob(c):
    g, (B, K, D), magnitude, layout, dtype = c
    mask = random_mask(g, (B, D))
    x = hidden_garbage(torch.rand(B, D, generator=g, dtype=torch.float64), mask, g)
    logits = uniform(g, (B, K, D), magnitude)
    compare(
        ops.masked_bernoulli_logprob,
        reference.masked_bernoulli_logprob,
        [as_op_input(t, layout, dtype) for t in (x, mask, logits)],
        [x, mask, logits],
        dtype,
        [2],
    )


@given(case())
def test_selfmask_logprob(c):
    g, (B, K, D), magnitude, layout, dtype = c
    mask = random_mask(g, (B, D))
    x_full = uniform(g, (B, K, D), magnitude)
    W, b = uniform(g, (D,), magnitude), uniform(g, (D,), magnitude)
    compare(
        ops.selfmask_logprob,
        reference.selfmask_logprob,
        [
            as_op_input(x_full, layout, dtype),
            as_op_input(mask, layout, dtype),
            W.to(dtype),
            b.to(dtype),
        ],
        [x_full, mask, W, b],
        dtype,
        [0, 2, 3],
    )


# -- the decoders' scale and the latent samples ----------------------------------------------
@given(case(), st.floats(1e-6, 1.0))
def test_softplus_scale(c, min_scale):
    g, (B, K, D), magnitude, layout, dtype = c
    raw = uniform(g, (B, K, D), magnitude)
    out = ops.softplus_scale(as_op_input(raw, layout, dtype), min_scale)
    assert (out >= min_scale * (1 - 1e-6)).all()
    compare(
        lambda r: ops.softplus_scale(r, min_scale),
        lambda r: reference.softplus_scale(r, min_scale),
        [as_op_input(raw, layout, dtype)],
        [raw],
        dtype,
        [0],
    )


@given(case())
def test_latent_terms(c):
    g, (B, K, L), magnitude, layout, dtype = c
    mu = uniform(g, (B, L), magnitude)
    std = positive(g, (B, L), min(magnitude, 10.0))
    eps = torch.randn(B, K, L, generator=g, dtype=torch.float64)
    compare(
        ops.latent_terms,
        reference.latent_terms,
        [as_op_input(t, layout, dtype) for t in (mu, std, eps)],
        [mu, std, eps],
        dtype,
        [0, 1],
    )


# -- the clipped-pixel imputation ----------------------------------------------------------
def clipped_available() -> bool:
    from notmiwae_fast.ops import _library

    return _library.backend().library is not None and hasattr(
        torch.ops.notmiwae_fast, "clipped_impute"
    )


def clipped_tensors(
    g: torch.Generator, N: int, C: int, L: int, H: int, K: int, clip: float, spread: float
) -> tuple:
    """clipped_impute's nine tensors (float64) drawn from ``g``: values below the clip
    level, half of them lost (then holding the clip level), the networks' outputs
    scaled by ``spread``."""
    x = torch.rand(N, C, generator=g, dtype=torch.float64) * clip
    lost = torch.rand(N, C, generator=g) < 0.5
    x = torch.where(lost, torch.full_like(x, clip), x)
    ctx = torch.randn(N, H, generator=g, dtype=torch.float64) * spread
    mu = torch.randn(N, L, generator=g, dtype=torch.float64) * spread
    std = torch.exp(0.3 * torch.randn(N, L, generator=g, dtype=torch.float64))
    eps = torch.randn(K, L, generator=g, dtype=torch.float64)
    w_latent = torch.randn(H, L, generator=g, dtype=torch.float64) * spread
    w_out = torch.randn(2 * C, H, generator=g, dtype=torch.float64) / math.sqrt(H) * spread
    b_out = torch.randn(2 * C, generator=g, dtype=torch.float64) * 0.3 + 0.5
    return (x, lost, ctx, mu, std, eps, w_latent, w_out, b_out)


@st.composite
def clipped_case(draw, spreads=(1e-3, 0.3, 1.0)):
    """The clipped_impute inputs (as tests/images/test_clipped.py builds them) with the
    networks' outputs scaled by a spread drawn from ``spreads``."""
    g, _, _, layout, dtype = draw(case())
    N, C, L = draw(st.integers(1, 12)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    H, K = draw(st.integers(1, 16)), draw(st.integers(1, 10))
    clip = draw(st.floats(0.05, 1.0))
    spread = draw(st.sampled_from(spreads))
    tensors = clipped_tensors(g, N, C, L, H, K, clip, spread)
    censored = draw(st.booleans())
    return tensors, clip, censored, layout, dtype


needs_clipped = pytest.mark.skipif(
    not clipped_available(),
    reason="clipped_impute is not "
    "in the loaded library yet (rebuild the extension: pip "
    "install --no-build-isolation -e .)",
)


def check_clipped_bounds(c) -> None:
    """clipped_impute's output is finite, observed values come back exactly as given,
    imputations of lost values lie in [clip, 1] (not-MIWAE) or [0, 1] (MIWAE)."""
    tensors, clip, censored, layout, dtype = c
    x, lost = tensors[0], tensors[1]
    op_inputs = [
        as_op_input(t, layout, dtype) if t.is_floating_point() else laid_out(t, layout)
        for t in tensors
    ]
    out = ops.clipped_impute(*op_inputs, clip, 0.01, censored)
    assert torch.isfinite(out).all(), out
    assert torch.equal(out[~lost], x.to(dtype)[~lost])
    low = float(torch.tensor(clip, dtype=dtype)) if censored else 0.0
    assert (out.double()[lost] >= low - 1e-6).all() and (out[lost] <= 1).all()


@needs_clipped
@given(clipped_case(spreads=(1e-3, 1.0, 10.0, 1e4)))
def test_clipped_impute_bounds_at_any_magnitude_float64(c):
    """Decoders up to ±1e4 (and far beyond, through the products), float64."""
    tensors, clip, censored, layout, _ = c
    check_clipped_bounds((tensors, clip, censored, layout, torch.float64))


@needs_clipped
@given(clipped_case(spreads=(1e-3, 0.3, 1.0)))
def test_clipped_impute_bounds_float32(c):
    tensors, clip, censored, layout, _ = c
    check_clipped_bounds((tensors, clip, censored, layout, torch.float32))


@needs_clipped
@given(clipped_case(spreads=(10.0, 1e4)))
def test_clipped_impute_bounds_float32_extreme_decoders(c):
    tensors, clip, censored, layout, _ = c
    check_clipped_bounds((tensors, clip, censored, layout, torch.float32))


@needs_clipped
@pytest.mark.xfail(
    strict=False,
    reason="float32 only: with decoder means thousands of "
    "scales from the clip level (spread >= 10), loc + s·λ(a) cancels in float32 "
    "(an error of |loc|·6e-8, clamped to [clip, 1]); float64 agrees",
)
@given(clipped_case(spreads=(10.0, 1e4)))
def test_clipped_impute_matches_reference_for_extreme_decoders(c):
    tensors, clip, censored, layout, dtype = c
    out = ops.clipped_impute(
        *[
            as_op_input(t, layout, dtype) if t.is_floating_point() else laid_out(t, layout)
            for t in tensors
        ],
        clip,
        0.01,
        censored,
    )
    want = reference.clipped_impute(*tensors, clip, 0.01, censored)
    rtol = 1e-7 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=rtol)


def seeded_clipped_inputs(seed: int, spread: float, shape=(8, 3, 2, 8, 6)):
    """clipped_impute's tensors (float64) and clip level from a seed, for the known
    cases below."""
    N, C, L, H, K = shape
    g = torch.Generator().manual_seed(seed)
    clip = 0.05 + 0.95 * torch.rand(1, generator=g).item()
    return clipped_tensors(g, N, C, L, H, K, clip, spread), clip


@needs_clipped
def test_clipped_impute_known_case_deep_tail_float64():
    tensors, clip = seeded_clipped_inputs(0, 10.0)
    out = ops.clipped_impute(*tensors, clip, 0.01, True)
    want = reference.clipped_impute(*tensors, clip, 0.01, True)
    torch.testing.assert_close(out, want, rtol=1e-7, atol=1e-7)


@needs_clipped
def test_clipped_impute_known_case_float32_nan():
    f64 = dict(dtype=torch.float64)
    tensors = (
        torch.tensor([[1.0]], **f64),
        torch.tensor([[True]]),
        torch.tensor([[3643.3819, 1343.9633, 1642.1625, 3057.6102, 2099.8092, 9056.2613]], **f64),
        torch.tensor([[6035.4302]], **f64),
        torch.tensor([[1.2754]], **f64),
        torch.tensor([[-0.0451], [0.8797]], **f64),
        torch.tensor(
            [[10482.0618], [-445.0047], [-7228.8440], [28663.4010], [-5655.0862], [1604.3702]],
            **f64,
        ),
        torch.tensor(
            [
                [-103.4958, 4384.1794, 9238.0294, -3745.7977, -919.0311, 9580.1102],
                [-4526.8549, 6635.4747, 5035.0738, -747.8518, -5364.4861, -6897.1236],
            ],
            **f64,
        ),
        torch.tensor([0.8758, 0.3336], **f64),
    )
    check_clipped_bounds((tensors, 1.0, True, "contiguous", torch.float32))


@needs_clipped
@given(clipped_case())
def test_clipped_impute(c):
    tensors, clip, censored, layout, dtype = c
    x, lost = tensors[0], tensors[1]
    op_inputs = [
        as_op_input(t, layout, dtype) if t.is_floating_point() else laid_out(t, layout)
        for t in tensors
    ]
    out = ops.clipped_impute(*op_inputs, clip, 0.01, censored)
    want = reference.clipped_impute(*tensors, clip, 0.01, censored)
    assert torch.isfinite(out).all()
    assert torch.equal(out[~lost], x.to(dtype)[~lost])  # observed values exactly
    if censored:
        assert (out.double()[lost] >= float(torch.tensor(clip, dtype=dtype)) - 1e-6).all()
        assert (out[lost] <= 1).all()
    rtol = 1e-7 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=rtol)


# -- the CSV reader ------------------------------------------------------------------------
CSV_ALPHABET = st.sampled_from(list('0123456789,,,,\n\n\r"".-+eE abcxyz\t;NaNinf#\x00é'))


def csvish() -> st.SearchStrategy:
    """Text that looks like a CSV: a header and rows of numbers, empty cells and noise."""
    cell = st.one_of(
        st.just(""),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(10**20), 10**20).map(str),
        st.text(CSV_ALPHABET, max_size=4),
    )
    name = st.one_of(st.text(st.sampled_from("abcxyz _"), max_size=3), st.just('"a,b"'))

    @st.composite
    def table(draw):
        width = draw(st.integers(1, 4))
        header = ",".join(draw(st.lists(name, min_size=width, max_size=width)))
        rows = []
        for _ in range(draw(st.integers(0, 5))):
            n = draw(st.sampled_from([width, width, width, width - 1, width + 1, 0]))
            rows.append(",".join(draw(st.lists(cell, min_size=max(n, 0), max_size=max(n, 0)))))
        ending = draw(st.sampled_from(["\n", "\r\n", "\r", ""]))
        return (ending or "\n").join([header, *rows]) + ending

    return table()


def check_read(data: bytes) -> None:
    """_read_csv on ``data`` gives a numeric table whose header holds unique, non-empty
    names, or a one-line CLIError naming the file."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype, is_string_dtype

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_bytes(data)
        try:
            df = _read_csv(str(path))
        except CLIError as err:
            message = str(err)
            assert "\n" not in message and str(path) in message, message
            return
    names = [str(c) for c in df.columns]
    assert len(set(names)) == len(names) and all(n.strip() for n in names), names
    assert not any(n.startswith("Unnamed: ") for n in names), names
    assert df.shape[0] >= 1
    for name in df.columns:  # numbers, booleans or text (a categorical column)
        dtype = df[name].dtype
        assert is_numeric_dtype(dtype) or is_bool_dtype(dtype) or is_string_dtype(dtype)


@given(st.binary(max_size=200))
def test_csv_reader_on_random_bytes(data):
    check_read(data)


@given(csvish())
def test_csv_reader_on_csvish_text(text):
    check_read(text.encode("utf-8"))


@given(st.text(CSV_ALPHABET, max_size=120))
def test_csv_reader_on_random_text(text):
    check_read(text.encode("utf-8", errors="surrogatepass"))


def test_profile_is_bounded():
    assert settings().max_examples <= 300 and settings().deadline is None
