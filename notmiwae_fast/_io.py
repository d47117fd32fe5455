"""Writing files atomically: a temporary file in the same folder, then a rename, so a
crash never leaves a half-written file under the final name (and, the folder synced
after the rename, a power loss keeps either the old or the new file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

PathLike = Union[str, Path]


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (setting and
    restoring it would, for that instant, apply umask 0 to other threads' new files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_folder(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (POSIX); a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: PathLike, write: Callable, text: bool = False) -> None:
    """Calls ``write(file)`` on a temporary file (binary, or text with ``text=True``),
    then renames it to ``path``. An OSError of the writing (a full disk) names ``path``;
    an existing file at ``path`` is then left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # an ordinary new file's permissions, not mkstemp's 0600
    try:
        with (os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
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
