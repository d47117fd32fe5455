"""Reading and writing image files (Pillow, an optional dependency) for the command line
and :func:`notmiwae_fast.distributed.impute_image_folder`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .io import write_atomic

# What counts as an image in a folder (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs Pillow (pip install pillow)") from None
    return Image


# Pillow modes read as they are ("I": 32-bit integers, range checked; "F": floats).
_KEPT_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")
# Modes converted on reading: to grey, RGB or RGBA ("P": RGBA when it has transparency).
_CONVERTED_MODES = {
    "1": "L",
    "P": "RGB",
    "PA": "RGBA",
    "La": "LA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}
# Colour spaces converted to RGB (an ICC profile of the file no longer applies).
_OTHER_COLOUR_SPACES = ("CMYK", "YCbCr", "LAB", "HSV")


def _sample_bits(img) -> int:
    """16 when Pillow decodes ``img`` from 16-bit samples (its raw mode says ';16'),
    else 8 (or the 32-bit modes' own)."""
    for tile in getattr(img, "tile", None) or []:
        args = tile[3]  # (codec, extents, offset, args): args a raw mode or a tuple
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return 16
    return 8


def _refusal(mode: str, bits: int) -> Optional[str]:
    """Why an image of this Pillow mode and sample size is not read, or None."""
    if mode.startswith("I;16") or mode in _KEPT_MODES + tuple(_CONVERTED_MODES):
        if bits == 16 and not mode.startswith("I"):
            return (
                f"16-bit {mode} images are not supported (Pillow reads them as 8 bits); "
                "convert it to 8-bit colour or 16-bit grey"
            )
        return None
    return f"images of mode {mode} are not supported; convert it to grey, RGB or RGBA"


def read_image(path: Union[str, Path], metadata: bool = False):
    """The pixels of an image file as [H, W] or [H, W, C] uint8 / uint16 (float32 for
    floating-point TIFFs): grey, grey + alpha, RGB or RGBA. Palette, 1-bit, CMYK, YCbCr,
    LAB and HSV images are converted to RGB (RGBA) or grey. 16-bit colour images (which
    Pillow would read as 8 bits), other modes, and 32-bit integer images with values
    outside [0, 65535] are refused. With ``metadata=True``, also a dict of what
    :func:`write_image` carries over: ``exif`` and ``icc_profile`` (not when the colours
    were converted). Raises FileNotFoundError or ValueError naming the file."""
    Image = _pil()
    if not Path(path).is_file():
        raise FileNotFoundError(f"input image {path} does not exist")
    try:
        with _any_size(Image), Image.open(path) as img:
            mode, info = img.mode, dict(img.info)
            refused = _refusal(mode, _sample_bits(img))
            if refused is None:
                if mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                elif mode in _CONVERTED_MODES:
                    img = img.convert(_CONVERTED_MODES[mode])
                array = np.asarray(img)
    except Exception as err:  # noqa: BLE001 - an unreadable file is one message
        raise ValueError(f"input image {path} cannot be read ({type(err).__name__})") from None
    if refused is not None:
        raise ValueError(f"input image {path}: {refused}")
    if mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
        raise ValueError(
            f"input image {path}: 32-bit integer values must lie in [0, 65535] "
            f"(read as 16 bits); got [{array.min()}, {array.max()}]"
        )
    if array.dtype == np.int32 or mode.startswith("I;16"):
        array = array.astype(np.uint16)
    if not metadata:
        return array
    kept = {
        "exif": info.get("exif"),
        "icc_profile": None if mode in _OTHER_COLOUR_SPACES else info.get("icc_profile"),
    }
    return array, {k: v for k, v in kept.items() if v}


class _any_size:
    """Lifts Pillow's decompression-bomb limit (and its warning) while an image is read:
    the imputation streams in bounded memory whatever the size, and the files are the
    user's own."""

    def __init__(self, Image) -> None:
        self.Image = Image

    def __enter__(self) -> None:
        import warnings

        self.limit = self.Image.MAX_IMAGE_PIXELS
        self.Image.MAX_IMAGE_PIXELS = None
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore", self.Image.DecompressionBombWarning)

    def __exit__(self, *exc) -> None:
        self.Image.MAX_IMAGE_PIXELS = self.limit
        self.warnings.__exit__(*exc)


# Formats that would change observed values (a palette of 256 colours).
_LOSSY_PALETTE_FORMATS = ("GIF",)


def _output_format(path: Path) -> str:
    """The Pillow format that ``path``'s suffix names (PNG when it has none); a
    ValueError naming the output when Pillow cannot write it."""
    Image = _pil()
    if not path.suffix:
        return "PNG"
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in Image.SAVE:
        raise ValueError(
            f"output {path}: Pillow cannot write {path.suffix} images; use "
            "a suffix such as .png, .jpg or .tif"
        )
    if fmt in _LOSSY_PALETTE_FORMATS:
        raise ValueError(
            f"output {path}: {fmt} stores a palette of 256 colours and would "
            "change the observed values; use .png or .tif (lossless) or .jpg"
        )
    return fmt


def check_writable(path: Union[str, Path], array: np.ndarray) -> None:
    """Raises a ValueError naming ``path`` when :func:`write_image` could not write an
    image of ``array``'s dtype and channels there (an unknown suffix, an alpha channel
    or 16 bits as JPEG, ...): a 1 x 1 pixel of it is written to memory."""
    Image = _pil()
    path = Path(path)
    fmt = _output_format(path)
    try:
        Image.fromarray(np.ascontiguousarray(array[:1, :1])).save(io.BytesIO(), format=fmt)
    except Exception as err:  # noqa: BLE001 - Pillow's own reason, in one message
        raise ValueError(
            f"output {path}: cannot write this {array.dtype} image with "
            f"{1 if array.ndim == 2 else array.shape[2]} channel(s) as {fmt} "
            f"({err})"
        ) from None


def write_image(path: Union[str, Path], array: np.ndarray, metadata: Optional[dict] = None) -> None:
    """Writes ``array`` to ``path`` atomically, in the format its suffix names (PNG when
    it has none); JPEG at quality 95 without chroma subsampling (observed pixels change
    by a level or so, not by tens). ``metadata`` (from :func:`read_image`): its
    ``exif`` (orientation, ...) and ``icc_profile`` are written where the format keeps
    them."""
    Image = _pil()
    path = Path(path)
    fmt = _output_format(path)
    options = {k: v for k, v in (metadata or {}).items() if k in ("exif", "icc_profile")}
    if fmt == "JPEG":
        options.update(quality=95, subsampling=0)
    write_atomic(path, lambda f: Image.fromarray(array).save(f, format=fmt, **options))
