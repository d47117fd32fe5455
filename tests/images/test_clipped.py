"""The clipped-pixel family: the clipped_impute operator against its reference twin, the
censored-normal formulas against direct integration, and the ClippedPixelModel on
images (bounds, banding, files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import DEVICES, cuda_only, library_loaded

from notmiwae_fast import images
from notmiwae_fast.images import _context
from notmiwae_fast.ops import reference

OPS = torch.ops.notmiwae_fast
needs_library = pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")
SHAPES = [
    (1, 1, 1, 1, 1),
    (7, 3, 2, 8, 10),
    (200, 3, 4, 64, 20),
    (50, 1, 2, 16, 5),
    (0, 3, 2, 8, 4),
]  # N, C, L, H, K


def make_inputs(N, C, L, H, K, dtype=torch.float64, device="cpu", spread=1.0, clip=0.75):
    g = torch.Generator().manual_seed(N * 1000 + C * 100 + L * 10 + H + K)
    x = torch.rand(N, C, generator=g, dtype=torch.float64) * clip * 0.999
    x[: N // 5, 0] = 0.0  # values at the lower edge (mass P(y <= 0))
    lost = torch.rand(N, C, generator=g) < 0.5
    x = torch.where(lost, torch.full_like(x, clip), x)
    ctx = torch.randn(N, H, generator=g, dtype=torch.float64) * spread
    mu = torch.randn(N, L, generator=g, dtype=torch.float64)
    std = torch.exp(0.3 * torch.randn(N, L, generator=g, dtype=torch.float64))
    eps = torch.randn(K, L, generator=g, dtype=torch.float64)
    w_latent = torch.randn(H, L, generator=g, dtype=torch.float64) * spread
    w_out = torch.randn(2 * C, H, generator=g, dtype=torch.float64) / math.sqrt(H) * spread
    b_out = torch.randn(2 * C, generator=g, dtype=torch.float64) * 0.3 + 0.5
    floats = [
        t.to(device=device, dtype=dtype) for t in (x, ctx, mu, std, eps, w_latent, w_out, b_out)
    ]
    x, ctx, mu, std, eps, w_latent, w_out, b_out = floats
    return (x, lost.to(device), ctx, mu, std, eps, w_latent, w_out, b_out, clip, 0.01)


@needs_library
@cuda_only
@pytest.mark.cuda
def test_an_argument_on_the_other_device_is_named():
    """x on the CPU, the network's tensors on CUDA: the message names the argument (the
    checks run before the CUDA kernel's device guard)."""
    x, lost, *rest = make_inputs(8, 3, 2, 4, 5)
    tensors = [t.cuda() for t in rest[:6]]
    with pytest.raises(ValueError, match="is on cuda:0 but 'x' is on cpu"):
        OPS.clipped_impute(x, lost, *tensors, *rest[6:], True)


@needs_library
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("censored", [True, False], ids=["notmiwae", "miwae"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N%dC%dL%dH%dK%d" % s)
def test_matches_reference(shape, censored, dtype, device):
    args = make_inputs(*shape, dtype=dtype, device=device)
    out = OPS.clipped_impute(*args, censored)
    ref = reference.clipped_impute(
        *[a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args], censored
    )
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.double(), ref, **tol)
    x, lost = args[0], args[1]
    assert torch.equal(out[~lost], x[~lost])  # observed values exactly as given
    if censored:
        assert (out[lost] >= args[9]).all() and (out[lost] <= 1).all()


@needs_library
def test_extreme_decoders_stay_finite_and_bounded():
    """Decoder outputs far beyond the clip level or far below it (log Φ deep in its
    tail, weights of very different sizes): the kernel matches the reference and stays
    in [clip, 1]."""
    args = make_inputs(300, 3, 2, 16, 10, spread=8.0)
    out = OPS.clipped_impute(*args, True)
    torch.testing.assert_close(out, reference.clipped_impute(*args, True), rtol=1e-6, atol=1e-6)
    lost = args[1]
    assert torch.isfinite(out).all() and (out[lost] >= 0.75).all() and (out[lost] <= 1).all()


@needs_library
def test_far_below_the_clip_level_the_mean_is_the_clip_level():
    """loc = −1000 with scale 0.01: E[y | y ≥ c] = c + s·(1/a − 2/a³ + …), a ≈ 1e5; the
    kernel and the reference (both through erfcx, no cancelling tail terms) get it."""
    x, lost, ctx, mu, std, eps, w_latent, w_out, b_out, clip, min_scale = make_inputs(
        50, 3, 2, 16, 10
    )
    lost = torch.ones_like(lost)
    b_out = torch.tensor([-1000.0] * 3 + [-50.0] * 3, dtype=torch.float64)
    w_out = torch.zeros_like(w_out)
    out = OPS.clipped_impute(
        x, lost, ctx, mu, std, eps, w_latent, w_out, b_out, clip, min_scale, True
    )
    scale = torch.nn.functional.softplus(torch.tensor(-50.0, dtype=torch.float64)) + min_scale
    a = (clip + 1000.0) / scale
    want = clip + scale * (1 / a - 2 / a**3)  # loc + s·λ(a), λ(a) = a + 1/a − 2/a³ + …
    # loc + s·λ(a) cancels to |loc|·ε ≈ 2e-13
    torch.testing.assert_close(out, torch.full_like(out, float(want)), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        reference.clipped_impute(
            x, lost, ctx, mu, std, eps, w_latent, w_out, b_out, clip, min_scale, True
        ),
        out,
        rtol=0,
        atol=1e-12,
    )


@needs_library
def test_all_lost_and_none_lost():
    x, lost, *rest = make_inputs(40, 3, 2, 8, 6)
    all_lost = torch.ones_like(lost)
    out = OPS.clipped_impute(x, all_lost, *rest, True)
    torch.testing.assert_close(out, reference.clipped_impute(x, all_lost, *rest, True))
    assert (out >= 0.75).all()
    none_lost = torch.zeros_like(lost)
    assert torch.equal(OPS.clipped_impute(x, none_lost, *rest, True), x)


@needs_library
def test_opcheck():
    args = make_inputs(9, 3, 2, 8, 4)
    torch.library.opcheck(OPS.clipped_impute.default, (*args, True))
    torch.library.opcheck(OPS.clipped_impute.default, (*args, False))


@needs_library
@pytest.mark.parametrize(
    "index, bad, message",
    [
        (0, torch.zeros(5, 3, 3), "'x' must have shape"),
        (1, torch.zeros(9, 3), "'lost' must be a bool tensor"),
        (2, torch.zeros(8, 8, dtype=torch.float64), "'context' must have shape"),
        (5, torch.zeros(4, 3, dtype=torch.float64), "'eps' must have shape"),
        (7, torch.zeros(5, 8, dtype=torch.float64), "'w_out' must have shape"),
        (9, 1.5, "'clip' must be in"),
    ],
)
def test_bad_input_names_the_argument(index, bad, message):
    args = list(make_inputs(9, 3, 2, 8, 4))
    args[index] = bad
    with pytest.raises((ValueError, TypeError), match=message):
        OPS.clipped_impute(*args, True)


@pytest.mark.parametrize(
    "loc, scale, clip",
    [
        (0.5, 0.1, 0.75),
        (0.9, 0.05, 0.75),
        (1.4, 0.2, 0.7),
        (-2.0, 0.3, 0.85),
        (0.75, 0.01, 0.75),
        (0.3, 0.04, 0.9),
    ],
)
def test_clipped_mean_against_integration(loc, scale, clip):
    """E[min(y, 1) | y ≥ clip] against a fine quadrature in float64 (where the tail mass
    is representable), and the clip level where it is not."""
    y = torch.linspace(clip, loc + 40 * scale + 2, 400_001, dtype=torch.float64)
    dens = torch.exp(-0.5 * ((y - loc) / scale) ** 2)
    mass = torch.trapezoid(dens, y)
    got = reference.clipped_mean(
        torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64), clip
    )
    if mass > 1e-200:
        want = torch.trapezoid(torch.clamp(y, max=1.0) * dens, y) / mass
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert clip <= got <= 1


def test_reference_falls_back_without_kernels():
    """ops.clipped_impute on a device without kernels runs the reference (meta device:
    shapes only)."""
    args = make_inputs(6, 3, 2, 8, 4)
    out = reference.clipped_impute(*args, True)
    assert out.shape == (6, 3)


@pytest.mark.cuda
@needs_library
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    args = make_inputs(500, 3, 2, 64, 10)
    cpu = OPS.clipped_impute(*args, True)
    cuda = OPS.clipped_impute(*[a.cuda() if torch.is_tensor(a) else a for a in args], True)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------
# The model on images
# --------------------------------------------------------------------------------------
def photo(h=70, w=90, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.45 * np.sin(6 * xx)[..., None] * np.array([1.0, 0.8, 0.6])
    return np.clip(base + 0.05 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = images.ClippedPixelModel(3)
    pixels = images.training_pixels(
        [photo(seed=1), photo(seed=2)], [0.7, 0.8], (1.0, 1.3), per_image=500
    )
    losses = images.train_clipped(m, pixels, steps=30, batch_size=128, progress=False)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < losses[0]
    return m


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
@pytest.mark.parametrize("clip", [0.7, 0.75, 0.85])
def test_imputed_values_respect_the_clip_level(model, dtype, clip):
    img = photo()
    if dtype == "uint8":
        arr = np.rint(img * 255).astype(np.uint8)
    elif dtype == "uint16":
        arr = np.rint(img * 65535).astype(np.uint16)
    else:
        arr = img.astype(dtype)
    scale = 255.0 if dtype == "uint8" else 65535.0 if dtype == "uint16" else 1.0
    lost = (arr / scale if scale != 1.0 else arr) >= clip
    assert lost.any()
    out = images.impute_image(model, arr, clip_level=clip, progress=False)
    assert out.dtype == arr.dtype
    assert np.array_equal(out[~lost], arr[~lost])
    values = out[lost] / scale if scale != 1.0 else out[lost]
    assert (values >= clip).all() and (values <= 1).all()


def test_grey_and_alpha(model):
    grey_model = images.ClippedPixelModel(1)
    grey = (photo()[..., 0] * 255).astype(np.uint8)
    out = images.impute_image(grey_model, grey, clip_level=0.75, progress=False)
    assert out.shape == grey.shape and (out[grey / 255 >= 0.75] / 255 >= 0.75).all()
    rgba = np.concatenate(
        [(photo() * 255).astype(np.uint8), np.full((70, 90, 1), 7, np.uint8)], axis=2
    )
    out = images.impute_image(model, rgba, clip_level=0.75, progress=False)
    assert (out[..., 3] == 7).all()
    with pytest.raises(ValueError, match="3 colour channel"):
        images.impute_image(grey_model, rgba, clip_level=0.75, progress=False)


def test_needs_a_clip_level(model):
    with pytest.raises(ValueError, match="'clip_level' is needed"):
        images.impute_image(model, photo(), mask=np.ones((70, 90), bool), clip_level=None)


def test_banded_features_equal_whole_image_features():
    """A band read with max(radii) rows of context above and below gives each of its
    pixels the features the whole image gives them."""
    img = photo(120, 50, seed=3)
    lost = img >= 0.7
    stats = _context.finish_statistics(_context.image_statistics(img, lost), 120 * 50, 0.7)
    rows, cols = np.nonzero(lost.any(axis=2))
    whole = _context.pixel_features(img, lost, rows, cols, stats, 0.7)
    R = max(_context.RADII)
    for r0 in range(0, 120, 40):
        c0, c1 = max(0, r0 - R), min(120, r0 + 40 + R)
        pick = (rows >= r0) & (rows < r0 + 40)
        band = _context.pixel_features(
            img[c0:c1], lost[c0:c1], rows[pick] - c0, cols[pick], stats, 0.7
        )
        np.testing.assert_allclose(band, whole[pick], rtol=1e-6, atol=1e-6)


def test_features_leave_the_pixel_out():
    """Changing a pixel's own value does not change its features."""
    img = photo(30, 30)
    lost = img >= 0.9
    stats = np.zeros(9)
    a = _context.pixel_features(img, lost, np.array([15]), np.array([15]), stats, 0.9)
    img2 = img.copy()
    img2[15, 15] = [0.1, 0.2, 0.3]
    b = _context.pixel_features(img2, lost, np.array([15]), np.array([15]), stats, 0.9)
    np.testing.assert_array_equal(a, b)


def test_model_files_round_trip(model, tmp_path):
    path = tmp_path / "m.pt"
    images.save_image_model(model, path)
    loaded = images.load_image_model(path)
    assert isinstance(loaded, images.ClippedPixelModel) and loaded.config == model.config
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(3)
    first = images.impute_image(model, photo(), clip_level=0.75, progress=False)
    torch.manual_seed(3)
    second = images.impute_image(loaded, photo(), clip_level=0.75, progress=False)
    np.testing.assert_array_equal(first, second)


def test_tile_model_files_still_load(tmp_path):
    tile = images.image_model("notmiwae", channels=3, patch=8, latent_dim=2, width=4)
    images.save_image_model(tile, tmp_path / "tile.pt")
    loaded = images.load_image_model(tmp_path / "tile.pt")
    assert loaded.image_config == tile.image_config
    out = images.impute_image(loaded, photo(20, 20), clip_level=0.75, progress=False)
    assert out.shape == (20, 20, 3)


@pytest.mark.parametrize("channels", [3, 1])
def test_bundled_models_load_and_impute(channels):
    model = images.load_image_model(channels=channels)
    assert isinstance(model, images.ClippedPixelModel) and model.channels == channels
    img = photo() if channels == 3 else photo()[..., 0]
    out = images.impute_image(model, img, clip_level=0.75, progress=False)
    lost = img >= 0.75
    assert (out[lost] >= 0.75).all() and np.array_equal(out[~lost], img[~lost])


def test_training_on_complete_data_uses_the_true_values():
    """complete=True: the lost values' terms are their densities, so the loss depends on
    their true values; complete=False: it does not."""
    torch.manual_seed(0)
    m = images.ClippedPixelModel(3)
    x, lost, h = images.training_pixels([photo()], [0.7], per_image=200)
    assert lost.any()
    x2 = torch.where(lost, torch.full_like(x, 0.99), x)
    clip = h[:, -1:]
    for complete, should_differ in ((True, True), (False, False)):
        censor = torch.zeros_like(lost) if complete else None
        torch.manual_seed(1)
        a = m.loss(x, lost, h, clip, 4, censor)
        torch.manual_seed(1)
        b = m.loss(x2, lost, h, clip, 4, censor)
        assert bool(a != b) == should_differ


def test_gif_output_is_refused_before_imputing(tmp_path, capsys):
    PIL = pytest.importorskip("PIL.Image")
    from notmiwae_fast.cli import main

    PIL.fromarray((photo() * 255).astype(np.uint8)).save(tmp_path / "in.png")
    assert main(["impute-image", str(tmp_path / "in.png"), str(tmp_path / "out.gif")]) == 2
    err = capsys.readouterr().err
    assert "palette of 256 colours" in err and err.count("\n") == 1
    assert not (tmp_path / "out.gif").exists()


def test_images_beyond_pillows_limit_are_read_without_noise(tmp_path, monkeypatch, recwarn):
    """Pillow refuses images above MAX_IMAGE_PIXELS (a decompression-bomb guard) and warns
    above half of it; impute-image reads any size, silently, and leaves the limit as it
    was."""
    PIL = pytest.importorskip("PIL.Image")
    from notmiwae_fast._common.image_io import read_image

    PIL.fromarray((photo(60, 80) * 255).astype(np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(PIL, "MAX_IMAGE_PIXELS", 1000)  # 4800 pixels: a "bomb" here
    assert read_image(tmp_path / "big.png").shape == (60, 80, 3)
    assert PIL.MAX_IMAGE_PIXELS == 1000
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_the_lost_count_is_banded():
    img = (photo(600, 90) * 255).astype(np.uint8)
    assert images.count_lost(img, 0.75, rows=7) == int((img / 255 >= 0.75).sum())
    flt = photo(50, 40)
    flt[3, 4, 1] = np.nan
    assert images.count_lost(flt, 0.75) == int((flt >= 0.75).sum()) + 1


def test_no_seams_between_chunks(model, monkeypatch):
    """The image's pixels are imputed in chunks with the same K draws: chunked and
    unchunked imputations are equal (a seam would show where chunks meet)."""
    import notmiwae_fast.images.impute as impute_module

    img = photo(80, 90, seed=5)
    torch.manual_seed(4)
    whole = images.impute_image(model, img, clip_level=0.7, progress=False)
    monkeypatch.setattr(impute_module, "_PIXEL_CHUNK", 7)
    monkeypatch.setattr(impute_module, "_BAND_BYTES", 1)
    torch.manual_seed(4)
    chunked = images.impute_image(model, img, clip_level=0.7, progress=False)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)


def test_an_image_model_file_that_runs_code_is_refused(tmp_path):
    """load_image_model reads as every model file is read (_io.load_plain): a file whose
    pickled object would run a command is refused, naming the file, and nothing runs."""
    import os

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "notmiwae_fast.clipped_pixel_model/1", "config": Payload()}, path)
    with pytest.raises(
        ValueError, match=f"image model file {path} is refused: it holds pickled Python objects"
    ):
        images.load_image_model(path)
    assert not marker.exists()
