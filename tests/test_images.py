"""Images: the convolutional models, the per-pixel missing process, and impute_image on
images of any size, dtype and layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from notmiwae_fast import images

PATCH = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return images.image_model("notmiwae", channels=3, patch=PATCH, latent_dim=4, width=4,
                              n_samples=4)


def photo(h=21, w=30, c=3, seed=0):
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


@pytest.mark.parametrize("kind,out_dist", [("notmiwae", "gauss"), ("miwae", "gauss"),
                                           ("notmiwae", "bern")])
def test_conv_models_fused_equal_reference(kind, out_dist):
    torch.manual_seed(0)
    fused = images.image_model(kind, channels=2, patch=PATCH, latent_dim=3, width=4,
                               n_samples=3, out_dist=out_dist, per_channel=True)
    ref = images.image_model(kind, channels=2, patch=PATCH, latent_dim=3, width=4,
                             n_samples=3, out_dist=out_dist, per_channel=True,
                             backend="reference")
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
            covered[s:s + tile] = True
        assert covered.all() and starts[-1] + tile == length
    w = images._window(8, 2)
    assert w.shape == (8, 8) and w[3:5, 3:5].min() == 1 and 0 < w[0, 0] < w[1, 1] < 1


def test_photo_patches_layout():
    img = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    patches = images.photo_patches([img], 4, 3)
    assert patches.shape == (3, 3 * 16)
    first = patches[0].reshape(3, 4, 4)  # channel-major
    assert np.all(first[1] == first[0] + 1)
