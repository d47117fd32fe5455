"""Writing files atomically: a temporary file in the same folder, then a rename, so a
crash never leaves a half-written file under the final name (and, the folder synced
after the rename, a power loss keeps either the old or the new file)."""

from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

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


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words (for error messages)."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_replaceable(path: PathLike) -> None:
    """ValueError naming ``path`` when it exists and is not a regular file (a folder, a
    device such as /dev/null, a FIFO, a socket): the atomic rename would replace it with
    a regular file, so such a target is never written, even when overwriting is allowed.
    A symbolic link is judged by what it points to."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:  # e.g. a component of the path is a file (ENOTDIR)
        raise ValueError(f"output {path} cannot be written ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"output {path} exists and is {_kind(mode)}, not a regular file; it is never replaced"
        )


def check_writable(path: PathLike) -> None:
    """ValueError naming ``path`` when a file cannot be written there, checked before any
    long work: ``path`` must be a regular file or absent (see :func:`check_replaceable`),
    and its folder (or, where that does not exist yet, its nearest existing ancestor,
    in which the missing folders will be created) must be a folder that accepts a new
    file: one is created and removed there, which also catches read-only file systems
    and permissions that ``os.access`` misjudges."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        if os.path.lexists(folder):  # a dangling symbolic link
            raise ValueError(f"output {path} cannot be written: {folder} is a broken link")
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"output {path} cannot be written: {folder} is not a folder")
    check_replaceable(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as err:
        raise ValueError(
            f"output {path} cannot be written: no new file can be created in "
            f"{folder} ({err.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _temporary_name(path: Path) -> "re.Pattern":
    """The names :func:`write_atomic` gives its temporary files for ``path``."""
    return re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{8}\.tmp")


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Removes the temporary files that writes of ``path`` by :func:`write_atomic` left
    behind when their process was killed (a rename never came); returns them. Only for
    files that one process writes at a time (a Trainer's checkpoints): a write of the same
    file in progress elsewhere would lose its temporary file."""
    path = Path(path)
    pattern = _temporary_name(path)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        if pattern.fullmatch(name):
            stale = path.parent / name
            try:
                if stat.S_ISREG(os.lstat(stale).st_mode):
                    os.unlink(stale)
                    removed.append(stale)
            except OSError:
                pass
    return removed


def write_atomic(path: PathLike, write: Callable, text: bool = False) -> None:
    """Calls ``write(file)`` on a temporary file (binary, or text with ``text=True``),
    then renames it to ``path``. An OSError of the writing (a full disk) names ``path``;
    an existing file at ``path`` is then left as it was. A ``path`` that exists and is
    not a regular file (a device, a FIFO, a folder) is refused with a ValueError before
    anything is written (:func:`check_replaceable`)."""
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # an ordinary new file's permissions, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        check_replaceable(path)  # again: the target may have appeared since
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


def save_rescued(obj, path: PathLike) -> Optional[Path]:
    """torch.save of ``obj`` to a new file named after ``path`` in the current folder or,
    failing that, the system's temporary folder, for a result whose write to ``path``
    failed; returns the file, or None when neither place takes it."""
    name = Path(path).name or "model"
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            fd, rescue = tempfile.mkstemp(prefix=f"{name}.", suffix=".rescued", dir=folder)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
            return Path(rescue)
        except Exception:  # noqa: BLE001 - try the next place
            try:
                os.unlink(rescue)
            except OSError:
                pass
    return None


def cpu_state_dict(module: torch.nn.Module) -> dict:
    """``module``'s state dict detached and on the CPU: what a model file holds, so that it
    loads on a machine without the GPU it was trained on."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def on_loaded_device(module: torch.nn.Module, weights: dict) -> torch.nn.Module:
    """``module``, whose state was just loaded from ``weights``, moved to the device those
    were loaded on (``map_location``): load_state_dict copies into the module's own
    tensors, which stay where the module was built."""
    first = next(iter(weights.values()), None)
    return module if first is None else module.to(first.device)


class FormatError(ValueError):
    """Raised by a constructor that :func:`load_plain` allows when the plain data it is
    given do not describe what it builds; passed through by load_plain unchanged."""


def load_plain(path: PathLike, what: str, map_location=None, allowed: Iterable = ()) -> object:
    """``torch.load(path, weights_only=True)``: tensors and plain data (dicts, lists,
    tuples, numbers, strings) only, plus the globals in ``allowed`` (this package's
    constructors of plain data; a ``(global, "module.name")`` pair allows it under that
    name, as torch.serialization.safe_globals does), so loading never runs code that the
    file names.

    Raises ValueError naming the file (``what`` says what it should be, e.g. "model
    file"): it is empty, not a complete file written by torch.save (truncated, or another
    kind of file), holds pickled Python objects (the error lists them), or is otherwise
    unreadable."""
    path, allowed = Path(path), list(allowed)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FormatError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is one message
        raise ValueError(_unreadable(path, what, err, allowed)) from None


def _unreadable(path: Path, what: str, err: Exception, allowed: list) -> str:
    """The one-line message of :func:`load_plain` for a file torch.load refused."""
    try:
        size = path.stat().st_size
    except OSError as stat_err:
        return f"{what} {path} cannot be read ({stat_err.strerror})"
    if size == 0:
        return f"{what} {path} cannot be read: it is empty"
    if not zipfile.is_zipfile(path):
        return (
            f"{what} {path} cannot be read: it is not a complete file written by "
            f"torch.save (truncated, or another kind of file) ({type(err).__name__})"
        )
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - then the error itself says what is wrong
        unsafe = []
    known = {f[1] if isinstance(f, tuple) else f"{f.__module__}.{f.__qualname__}" for f in allowed}
    unsafe = [name for name in unsafe if name not in known]
    if unsafe:
        shown = ", ".join(unsafe[:3]) + (", ..." if len(unsafe) > 3 else "")
        return (
            f"{what} {path} is refused: it holds pickled Python objects ({shown}), and "
            "loading those could run any code; only files in this package's plain "
            "format (tensors and plain data) are loaded (a file of an older version: "
            "write it again with this one)"
        )
    detail = " ".join(str(err).split()).split(". ")[0][:200]
    return f"{what} {path} cannot be read ({type(err).__name__}{': ' + detail if detail else ''})"


def save_array_atomic(array: np.ndarray, path: PathLike) -> None:
    """np.save (to exactly ``path``), atomically."""
    write_atomic(path, lambda f: np.save(f, array))
