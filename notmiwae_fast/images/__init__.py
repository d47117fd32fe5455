"""Images: imputing clipped (over-exposed) pixels with not-MIWAE.

Pixels at or above a brightness level (the clip level) are lost: a self-masking missing
process whose direction and threshold are known. The bundled models are
:class:`ClippedPixelModel`\\ s — not-MIWAE per pixel, conditioned on the pixel's
neighbourhood, with the clipping process integrated in closed form — trained on
clipped photographs only; :func:`impute_image` imputes an image of any size in bounded
memory, every imputed value at or above the clip level.

    model = load_image_model()                       # bundled, RGB
    restored = impute_image(model, photo, clip_level=0.75)

    model = ClippedPixelModel(channels=3)            # train one's own
    train_clipped(model, training_pixels(list(photos.values()), [0.7, 0.75, 0.8]))

Tile models, convolutional MIWAE / not-MIWAE on square tiles (:func:`image_model`,
:func:`train_on_patches`), are in :mod:`.tiles`; :func:`load_image_model` and
:func:`impute_image` take them too.

Layout: ``_arrays`` (dtypes, colour channels, masks), ``_context`` (a pixel's
features), ``clipped`` (the clipped-pixel model and its training), ``tiles`` and
``_tiling`` (tile models), ``impute`` (:func:`impute_image`), ``files`` (model files,
bundled models), ``photos`` (the photographs packages ship), ``folder`` (a folder of
images over the ranks of a process group).
"""

from ._arrays import _colour, _colour_channels, as_float_image, clip_mask, count_lost, to_grey
from ._tiling import IMAGE_BACKENDS, _tile_starts, _window
from .clipped import ClippedPixelModel, train_clipped, training_pixels
from .files import bundled_model_path, load_image_model, save_image_model
from .impute import impute_image
from .photos import HELD_OUT_PHOTOGRAPHS, TRAINING_PHOTOGRAPHS, bundled_photographs
from .tiles import (
    IMAGE_MIN_SCALE,
    ConvBernoulliDecoder,
    ConvEncoder,
    ConvGaussianDecoder,
    PixelSelfMasking,
    image_model,
    photo_patches,
    train_on_patches,
)

__all__ = [
    "ClippedPixelModel",
    "train_clipped",
    "training_pixels",
    "impute_image",
    "load_image_model",
    "save_image_model",
    "bundled_model_path",
    "bundled_photographs",
    "TRAINING_PHOTOGRAPHS",
    "HELD_OUT_PHOTOGRAPHS",
    "as_float_image",
    "clip_mask",
    "count_lost",
    "to_grey",
    "image_model",
    "photo_patches",
    "train_on_patches",
    "ConvEncoder",
    "ConvGaussianDecoder",
    "ConvBernoulliDecoder",
    "PixelSelfMasking",
    "IMAGE_MIN_SCALE",
    "IMAGE_BACKENDS",
    "_colour",
    "_colour_channels",
    "_tile_starts",
    "_window",
]
