"""Reading and writing image files (Pillow, an optional dependency) for the command line
and :func:`notmiwae_fast.distributed.impute_image_folder`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np

from ._io import write_atomic

# What counts as an image in a folder (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs Pillow (pip install pillow)") from None
    return Image


def read_image(path: Union[str, Path]) -> np.ndarray:
    """The pixels of an image file as [H, W] or [H, W, C] uint8 / uint16 (palette images
    converted to RGB or RGBA). Raises FileNotFoundError or ValueError naming the file."""
    Image = _pil()
    if not Path(path).is_file():
        raise FileNotFoundError(f"input image {path} does not exist")
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            array = np.asarray(img)
    except Exception as err:  # noqa: BLE001 - an unreadable file is one message
        raise ValueError(f"input image {path} cannot be read ({type(err).__name__})") from None
    if array.dtype == np.int32 or mode.startswith("I;16"):
        array = array.astype(np.uint16)
    return array


def _output_format(path: Path) -> str:
    """The Pillow format that ``path``'s suffix names (PNG when it has none); a
    ValueError naming the output when Pillow cannot write it."""
    Image = _pil()
    if not path.suffix:
        return "PNG"
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in Image.SAVE:
        raise ValueError(f"output {path}: Pillow cannot write {path.suffix} images; use "
                         "a suffix such as .png, .jpg or .tif")
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
        raise ValueError(f"output {path}: cannot write this {array.dtype} image with "
                         f"{1 if array.ndim == 2 else array.shape[2]} channel(s) as {fmt} "
                         f"({err})") from None


def write_image(path: Union[str, Path], array: np.ndarray) -> None:
    """Writes ``array`` to ``path`` atomically, in the format its suffix names (PNG when
    it has none)."""
    Image = _pil()
    path = Path(path)
    fmt = _output_format(path)
    write_atomic(path, lambda f: Image.fromarray(array).save(f, format=fmt))
