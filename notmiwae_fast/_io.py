"""Writing files atomically: a temporary file in the same folder, then a rename, so a
crash never leaves a half-written file under the final name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

PathLike = Union[str, Path]


def write_atomic(path: PathLike, write: Callable, text: bool = False) -> None:
    """Calls ``write(file)`` on a temporary file (binary, or text with ``text=True``),
    then renames it to ``path``. An OSError of the writing (a full disk) names ``path``;
    an existing file at ``path`` is then left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the permissions of an ordinary new file, not mkstemp's 0600
    try:
        with (os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def save_atomic(obj, path: PathLike) -> None:
    """torch.save, atomically."""
    write_atomic(path, lambda f: torch.save(obj, f))


def save_array_atomic(array: np.ndarray, path: PathLike) -> None:
    """np.save (to exactly ``path``), atomically."""
    write_atomic(path, lambda f: np.save(f, array))
