"""Images: the convolutional models, the per-pixel missing process, and impute_image on
images of any size, dtype and layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import notmiwae_fast.images._tiling  # noqa: F401  (monkeypatched below)
from notmiwae_fast import images

PATCH = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return images.image_model(
        "notmiwae", channels=3, patch=PATCH, latent_dim=4, width=4, n_samples=4
    )


def photo(h=21, w=30, c=3, seed=0):
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


@pytest.mark.parametrize(
    "kind,out_dist", [("notmiwae", "gauss"), ("miwae", "gauss"), ("notmiwae", "bern")]
)
def test_conv_models_fused_equal_reference(kind, out_dist):
    torch.manual_seed(0)
    fused = images.image_model(
        kind,
        channels=2,
        patch=PATCH,
        latent_dim=3,
        width=4,
        n_samples=3,
        out_dist=out_dist,
        per_channel=True,
    )
    ref = images.image_model(
        kind,
        channels=2,
        patch=PATCH,
        latent_dim=3,
        width=4,
        n_samples=3,
        out_dist=out_dist,
        per_channel=True,
        backend="reference",
    )
    ref.load_state_dict(fused.state_dict())
    x = torch.rand(5, 2 * PATCH * PATCH)
    s = (x < 0.7).float()
    losses = []
    for m in (fused, ref):
        torch.manual_seed(1)
        losses.append(m(x * s, s)["loss"])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-4)


def test_pixel_self_masking_parameters():
    shared = images.PixelSelfMasking(3, 4)
    per_channel = images.PixelSelfMasking(3, 4, per_channel=True, sign=-1)
    w, b = shared.selfmask_params()
    assert w.shape == b.shape == (48,) and torch.all(w == w[0]) and torch.all(w > 0)
    with torch.no_grad():
        per_channel.b.copy_(torch.tensor([0.1, 0.2, 0.3]))
    w, b = per_channel.selfmask_params()
    assert torch.all(w < 0)  # dark values go missing
    assert b[:16].eq(0.1).all() and b[16:32].eq(0.2).all() and b[32:].eq(0.3).all()
    # bright values are likely missing under the default (sign +1) process
    p_missing = shared.missing_probability(torch.tensor([[0.0] * 48, [1.0] * 48]))
    assert p_missing[1].min() > p_missing[0].max()
    with pytest.raises(ValueError, match="'sign' must be \\+1 or -1"):
        images.PixelSelfMasking(3, 4, sign=2)


def test_impute_image_keeps_observed_values_and_fills_lost_ones(model):
    img = photo()
    out = images.impute_image(model, img, clip_level=0.75, overlap=2, progress=False)
    lost = img >= 0.75
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[~lost], img[~lost])
    assert np.isfinite(out).all() and (out[lost] >= 0).all() and (out[lost] <= 1).all()


def test_impute_image_with_a_mask_equals_clip_level(model):
    img = photo(seed=1)
    torch.manual_seed(3)
    a = images.impute_image(model, img, clip_level=0.6, overlap=2, progress=False)
    torch.manual_seed(3)
    b = images.impute_image(model, img, mask=img < 0.6, overlap=2, progress=False)
    np.testing.assert_array_equal(a, b)
    torch.manual_seed(3)
    pixel_mask = (img < 0.6).all(axis=2)  # [H, W]: a pixel is lost in every channel
    c = images.impute_image(model, img, mask=pixel_mask, overlap=2, progress=False)
    np.testing.assert_array_equal(c[pixel_mask], img[pixel_mask])


def test_integer_images_alpha_and_small_images(model):
    rgba = (photo(5, 6, 4) * 255).astype(np.uint8)  # smaller than a tile, with alpha
    out = images.impute_image(model, rgba, clip_level=0.75, progress=False)
    assert out.dtype == np.uint8 and out.shape == rgba.shape
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    kept = rgba[..., :3] < 0.75 * 255
    np.testing.assert_array_equal(out[..., :3][kept], rgba[..., :3][kept])
    deep = (photo(12, 9) * 65535).astype(np.uint16)
    out16 = images.impute_image(model, deep, clip_level=0.75, progress=False)
    assert out16.dtype == np.uint16 and out16.shape == deep.shape


def test_bad_images(model):
    with pytest.raises(ValueError, match="has 1 colour channel.*trained on 3"):
        images.impute_image(model, photo(10, 10)[:, :, 0], progress=False)
    with pytest.raises(ValueError, match="'mask' must have shape \\[10, 10\\]"):
        images.impute_image(model, photo(10, 10), mask=np.ones((9, 10)), progress=False)
    with pytest.raises(ValueError, match="float images must hold values in \\[0, 1\\]"):
        images.impute_image(model, photo(10, 10) * 300, progress=False)
    with pytest.raises(ValueError, match="'tile' must be the model's patch size 8"):
        images.impute_image(model, photo(10, 10), tile=16, progress=False)


def test_tiles_cover_the_image_and_weights_blend():
    for length, tile, stride in [(30, 8, 6), (8, 8, 6), (9, 8, 6), (100, 16, 12)]:
        starts = images._tile_starts(length, tile, stride)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[-1] + tile == length
    w = images._window(8, 2)
    assert w.shape == (8, 8) and w[3:5, 3:5].min() == 1 and 0 < w[0, 0] < w[1, 1] < 1


def test_photo_patches_layout():
    img = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3) / 64
    patches = images.photo_patches([img], 4, 3)
    assert patches.shape == (3, 3 * 16)
    first = patches[0].reshape(3, 4, 4)  # channel-major
    assert np.all(first[1] == first[0] + 1 / 64)


def test_photo_patches_converts_and_checks_the_photos():
    rng = np.random.default_rng(0)
    u8 = (rng.random((20, 20, 3)) * 255).astype(np.uint8)
    patches = images.photo_patches([u8], 8, 5)  # uint8 scaled to [0, 1] like impute_image
    assert patches.dtype == np.float32 and patches.max() <= 1 and patches.max() > 0.5
    grey = images.photo_patches([rng.random((20, 20))], 8, 5)  # [H, W]: one channel
    assert grey.shape == (5, 64)
    rgba = images.photo_patches([np.dstack([u8, np.full((20, 20), 255, np.uint8)])], 8, 2)
    assert rgba.shape == (2, 3 * 64)  # alpha dropped
    with pytest.raises(ValueError, match="'patch' \\(8\\) is larger than photo 1"):
        images.photo_patches([u8, rng.random((5, 40, 3))], 8, 5)
    with pytest.raises(ValueError, match="'photos': photo 1 has 1 colour channel"):
        images.photo_patches([u8, rng.random((20, 20, 1))], 8, 5)
    with pytest.raises(ValueError, match="'photos': photo 0: .*float images must hold"):
        images.photo_patches([u8 * 2.0], 8, 5)
    with pytest.raises(ValueError, match="'photos' must hold at least one image"):
        images.photo_patches([], 8, 5)
    with pytest.raises(ValueError, match="'patch' must be an int >= 1"):
        images.photo_patches([u8], 0, 5)


def _deadline(seconds):
    """Fails the test (instead of hanging) when the block runs past ``seconds``."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard():
        def fail(*_):
            raise TimeoutError(f"still running after {seconds} s")

        previous = signal.signal(signal.SIGALRM, fail)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return guard()


def test_train_on_patches_with_fewer_patches_than_a_batch():
    torch.manual_seed(0)
    m = images.image_model("notmiwae", channels=3, patch=PATCH, latent_dim=3, width=4, n_samples=2)
    patches = np.random.default_rng(0).random((10, 3 * PATCH * PATCH)).astype(np.float32)
    with _deadline(60):  # an empty loader (drop_last) made this loop forever
        losses = images.train_on_patches(m, patches, steps=3, batch_size=32, progress=False)
    assert len(losses) == 3 and np.isfinite(losses).all()
    with pytest.raises(ValueError, match="'patches' must be \\[n, 192\\].*got shape \\[0, 192\\]"):
        images.train_on_patches(m, patches[:0], steps=1, progress=False)
    with pytest.raises(ValueError, match="'patches' must be \\[n, 192\\]"):
        images.train_on_patches(m, patches[:, :100], steps=1, progress=False)
    with pytest.raises(ValueError, match="'batch_size' must be an int >= 1"):
        images.train_on_patches(m, patches, steps=1, batch_size=0, progress=False)


# --------------------------------------------------------------------------------------
# impute_image: the streaming (fused) path against its whole-image reference twin
# --------------------------------------------------------------------------------------
class _PointEncoder(torch.nn.Module):
    """The wrapped encoder's μ with a posterior scale of 1e-30: every importance sample
    is z = μ(tile), so model.impute gives the decoder mean at μ(tile) whatever the
    random numbers, and impute_image becomes a deterministic function of the tiles it
    cuts, the masks it passes and the blending: what the two paths do differently."""

    def __init__(self, encoder):
        super().__init__()
        self.inner = encoder

    def forward(self, x):
        mu, _ = self.inner(x)
        return mu, torch.full_like(mu, 1e-30)


def deterministic_model(channels=3):
    torch.manual_seed(0)
    m = images.image_model(
        "notmiwae",
        channels=channels,
        patch=PATCH,
        latent_dim=4,
        width=4,
        n_samples=3,
        out_dist="bern",
    )
    m.encoder = _PointEncoder(m.encoder)
    return m


def both_paths(model, image, **kw):
    fused = images.impute_image(model, image, backend="fused", progress=False, **kw)
    ref = images.impute_image(model, image, backend="reference", progress=False, **kw)
    return fused, ref


@pytest.mark.parametrize(
    "shape,dtype,channels,dense,kw",
    [
        ((21, 30, 3), np.float32, 3, True, dict(overlap=2, batch_size=1)),  # H, W not multiples
        ((50, 37, 3), np.float32, 3, True, dict(batch_size=7)),  # bands of 2 tile rows, carries
        ((50, 37, 3), np.float32, 3, False, dict(batch_size=5)),  # tiles with nothing lost
        ((77, 29, 3), np.float32, 3, False, dict(overlap=3, batch_size=64)),  # bands of rows
        ((50, 37, 3), np.float64, 3, True, dict(overlap=0, batch_size=64)),  # no blending
        ((5, 6, 4), np.uint8, 3, True, dict(batch_size=2)),  # smaller than a tile, alpha
        ((40, 5), np.uint16, 1, False, dict(batch_size=3)),  # grey, narrower than a tile
        ((3, 45, 2), np.float32, 1, True, dict(batch_size=4)),  # grey + alpha, low
    ],
)
def test_fused_path_equals_reference_path(shape, dtype, channels, dense, kw):
    model = deterministic_model(channels)
    rng = np.random.default_rng(4)
    # dense: 30% of the values lost at random; sparse: none but lines every 11 rows
    # (some tiles lose values only in their first row) and a block at the bottom right
    image = rng.random(shape) * (1.0 if dense else 0.65)
    lines = (slice(None, None, 11), slice(None)) + ((0,) if len(shape) == 3 else ())
    image[lines] = 0.9 + 0.1 * rng.random(image[lines].shape)
    image[-2:, -3:] = 0.95
    if dtype == np.uint8:
        image = (image * 255).astype(np.uint8)
    elif dtype == np.uint16:
        image = (image * 65535).astype(np.uint16)
    else:
        image = image.astype(dtype)
    fused, ref = both_paths(model, image, clip_level=0.7, **kw)
    assert fused.shape == ref.shape == image.shape and fused.dtype == ref.dtype == image.dtype
    colour = image if image.ndim == 2 else image[..., :channels]
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    lost = colour >= 0.7 * scale
    assert lost.any() and (~lost).any()
    for out in (fused, ref):  # observed values and alpha exactly as they were
        out_colour = out if out.ndim == 2 else out[..., :channels]
        np.testing.assert_array_equal(out_colour[~lost], colour[~lost])
        if image.ndim == 3 and shape[2] in (2, 4):
            np.testing.assert_array_equal(out[..., -1], image[..., -1])
    a = (fused if fused.ndim == 2 else fused[..., :channels])[lost].astype(np.float64) / scale
    b = (ref if ref.ndim == 2 else ref[..., :channels])[lost].astype(np.float64) / scale
    # the imputations differ from place to place (a comparison that can fail) ...
    assert a.std() > 1e-3
    # ... and the two paths agree (integers: up to one level where rounding differs)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 if scale == 1 else 1.0 / scale)


def test_fused_path_equals_reference_path_with_a_mask():
    model = deterministic_model()
    img = photo(33, 26, seed=5)
    mask = np.ones((33, 26), bool)
    mask[10:14, 3:20] = False
    mask[30:, 20:] = False
    fused, ref = both_paths(model, img, mask=mask, overlap=3, batch_size=5)
    np.testing.assert_allclose(fused, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(fused[mask], img[mask])
    assert np.abs(fused[~mask] - img[~mask]).max() > 0.05  # lost values were replaced


def test_one_tile_image_is_one_impute_call_on_both_paths(model):
    """On an image of exactly one tile both paths make the same single model.impute call
    with the same random numbers: equal to calling the model directly."""
    img = photo(PATCH, PATCH, seed=6)
    observed = img < 0.75
    tile = torch.as_tensor(img.transpose(2, 0, 1).reshape(1, -1))
    s = torch.as_tensor(observed.transpose(2, 0, 1).reshape(1, -1))
    torch.manual_seed(9)
    direct = model.impute(tile, s, n_samples=7).numpy().reshape(3, PATCH, PATCH)
    direct = np.clip(direct.transpose(1, 2, 0), 0, 1)
    for backend in ("fused", "reference"):
        torch.manual_seed(9)
        out = images.impute_image(
            model, img, clip_level=0.75, n_samples=7, backend=backend, progress=False
        )
        np.testing.assert_allclose(out, np.where(observed, img, direct), rtol=0, atol=1e-6)


def test_backend_defaults_to_the_models(monkeypatch):
    torch.manual_seed(0)
    ref_model = images.image_model(
        "notmiwae", channels=3, patch=PATCH, latent_dim=4, width=4, n_samples=2, backend="reference"
    )
    calls = []
    monkeypatch.setattr(
        images.impute, "_impute_reference", lambda *args: calls.append("reference") or args[-1]
    )
    monkeypatch.setattr(
        images.impute, "_impute_streaming", lambda *args: calls.append("fused") or args[-1]
    )
    images.impute_image(ref_model, photo(), progress=False)
    images.impute_image(ref_model, photo(), progress=False, backend="fused")
    assert calls == ["reference", "fused"]
    with pytest.raises(ValueError, match="'backend' must be one of 'fused', 'reference'"):
        images.impute_image(ref_model, photo(), progress=False, backend="cuda")


def test_in_place_and_out_arrays(model):
    img = (photo(30, 41, seed=7) * 255).astype(np.uint8)
    torch.manual_seed(2)
    new = images.impute_image(model, img, progress=False)
    for backend in ("fused", "reference"):
        target = np.zeros_like(img)
        torch.manual_seed(2)
        got = images.impute_image(model, img, out=target, progress=False, backend=backend)
        assert got is target
        if backend == "fused":
            np.testing.assert_array_equal(target, new)
        copy = img.copy()
        torch.manual_seed(2)
        assert images.impute_image(model, copy, out=copy, progress=False, backend=backend) is copy
        np.testing.assert_array_equal(copy, target)
    assert not np.array_equal(new, img)
    with pytest.raises(
        ValueError,
        match="'out' must be a numpy array of the image's shape \\[30, 41, 3\\] and dtype uint8",
    ):
        images.impute_image(model, img, out=np.zeros((30, 41, 3), np.float32), progress=False)
    with pytest.raises(ValueError, match="'out' must be the image itself"):
        images.impute_image(model, img, out=img[::-1], progress=False)
    frozen = img.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="'out' must be writable"):
        images.impute_image(model, img, out=frozen, progress=False)


def test_masks_must_be_bool_or_zero_one(model):
    img = photo(20, 20)
    lost = img >= 0.75
    torch.manual_seed(0)
    a = images.impute_image(model, img, mask=~lost, progress=False)
    torch.manual_seed(0)
    b = images.impute_image(model, img, mask=np.where(lost, 0.0, 1.0), progress=False)
    np.testing.assert_array_equal(a, b)
    for bad in (np.where(lost, np.nan, 1.0), np.where(lost, -1, 1), np.full(img.shape, 0.5)):
        with pytest.raises(
            ValueError, match="'mask' must be bool or hold only 0 \\(lost\\) and 1 \\(observed\\)"
        ):
            images.impute_image(model, img, mask=bad, progress=False)


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("shape", [(20, 20), (5, 6)])  # tiles, and one padded tile
def test_clip_level_compared_on_the_inputs_own_values(model, backend, shape):
    """A float64 value just below the clip level is observed (as clip_mask says), not
    rounded up to it in float32 and imputed; integers compare as value / max."""
    img = np.full(shape + (3,), 0.3)
    img[2, 2, 0] = 0.7499999999
    img[1, 1, 1] = 0.9
    assert images.clip_mask(img, 0.75)[2, 2, 0] == 1
    out = images.impute_image(model, img, clip_level=0.75, backend=backend, progress=False)
    assert out[2, 2, 0] == img[2, 2, 0] and out[1, 1, 1] != img[1, 1, 1]
    u8 = np.full(shape + (3,), 50, np.uint8)
    u8[3, 3, 2] = 51  # 51 / 255 == 0.2: lost at clip level 0.2
    np.testing.assert_array_equal(images.clip_mask(u8, 0.2) == 0, u8 == 51)
    out = images.impute_image(model, u8, clip_level=0.2, backend=backend, progress=False)
    np.testing.assert_array_equal(out[u8 == 50], u8[u8 == 50])


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("shape", [(20, 20), (5, 6)])
def test_float_range_is_checked_on_the_colour_channels_only(model, backend, shape):
    img = photo(*shape, c=4)
    img[..., 3] = 255.0  # alpha as 0..255: kept as it is, not a colour value
    out = images.impute_image(model, img, backend=backend, progress=False)
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    values, info = images.as_float_image(img)
    assert values.shape == shape + (3,) and (info["alpha"] == 255).all()
    img[0, 0, 0] = 2.0
    with pytest.raises(ValueError, match="float images must hold values in \\[0, 1\\]"):
        images.impute_image(model, img, backend=backend, progress=False)
    # float64 just above 1: checked as given, not after rounding to float32 (which gives 1)
    img64 = img.astype(np.float64)
    img64[0, 0, 0] = 1 + 1e-10
    with pytest.raises(ValueError, match="float images must hold values in \\[0, 1\\]"):
        images.impute_image(model, img64, backend=backend, progress=False)


def test_clip_level_model_and_model_file_checks(model, tmp_path):
    img = photo(10, 10)
    for bad in ("0.75", float("nan"), -1.0, 0.0, 1.5, [0.5, 0.6], True):
        with pytest.raises(ValueError, match="'clip_level' must be a number in \\(0, 1\\]"):
            images.impute_image(model, img, clip_level=bad, progress=False)
    images.impute_image(model, img, clip_level=1, progress=False)
    from notmiwae_fast import MIWAE

    with pytest.raises(ValueError, match="'model' must be an image model.*got MIWAE"):
        images.impute_image(MIWAE(12, latent_dim=2), img, progress=False)
    missing = tmp_path / "none.pt"
    with pytest.raises(FileNotFoundError, match=f"image model file {missing} does not exist"):
        images.load_image_model(str(missing))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=f"image model file {garbage} cannot be read"):
        images.load_image_model(str(garbage))
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=f"image model file {other} does not hold an image"):
        images.load_image_model(str(other))
    saved = tmp_path / "model.pt"
    images.save_image_model(model, saved)  # loads with weights_only=True
    loaded = images.load_image_model(str(saved))
    assert loaded.image_config == model.image_config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_more_bad_arguments(model):
    rgba = photo(10, 12, 4)
    with pytest.raises(
        ValueError,
        match="'mask' must have shape \\[10, 12\\] or \\[10, 12, 3\\]; got \\[10, 12, 4\\]",
    ):
        images.impute_image(model, rgba, mask=np.ones((10, 12, 4)), progress=False)
    with pytest.raises(ValueError, match="'overlap' must be an int in \\[0, 4\\]"):
        images.impute_image(model, rgba, overlap=5, progress=False)
    with pytest.raises(ValueError, match="'batch_size' must be an int >= 1"):
        images.impute_image(model, rgba, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="'image' must be uint8, uint16 or float"):
        images.impute_image(model, np.zeros((10, 10, 3), np.int32), progress=False)
    with pytest.raises(ValueError, match="give a 'mask' or a 'clip_level'"):
        images.impute_image(model, rgba, clip_level=None, progress=False)
    for backend in ("fused", "reference"):  # nothing written before the range check
        bad = photo(40, 40)
        bad[35, 35, 1] = 2.0
        before = bad.copy()
        target = np.zeros_like(bad)
        for out in (bad, target):
            with pytest.raises(
                ValueError, match="float images must hold values in \\[0, 1\\]; got \\[.*, 2\\]"
            ):
                images.impute_image(model, bad, out=out, backend=backend, progress=False)
        np.testing.assert_array_equal(bad, before)
        assert not target.any()


def test_fused_path_memory_does_not_grow_with_the_image(model, monkeypatch):
    """numpy allocations (tracemalloc) of impute_image in place on tall uint8 images,
    with bands capped at one row of tiles (as on images wider than _BAND_BYTES allows):
    the fused path's peak barely grows from 512 to 4096 rows and stays far below the
    image; the
    reference path's float copy of the image alone is 4× the image."""
    import tracemalloc

    monkeypatch.setattr(images._tiling, "_BAND_BYTES", 1)

    def peak(height, backend):
        rng = np.random.default_rng(8)
        img = (rng.random((height, 96, 3)) * 180).astype(np.uint8)  # nothing lost ...
        rows = np.linspace(0, height - 1, 12).astype(int)
        img[rows, (rows * 5) % 96, 1] = 255  # ... but 12 values, down to the last row
        tracemalloc.start()
        images.impute_image(model, img, out=img, n_samples=1, backend=backend, progress=False)
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (img[rows, (rows * 5) % 96, 1] < 255).sum() >= 6  # imputed
        return result, img.nbytes

    small, small_nbytes = peak(512, "fused")
    large, nbytes = peak(4096, "fused")
    reference, _ = peak(4096, "reference")
    # Any buffer of the image's size (even a bool mask: 1× this uint8 image) would fail
    # this; what grows is the tile-grid bookkeeping (a few bytes per tile row and tile).
    assert large - small < (nbytes - small_nbytes) / 4, (small, large, nbytes)
    assert large < nbytes / 4, (large, nbytes)
    assert reference > 4 * nbytes, (reference, nbytes)
