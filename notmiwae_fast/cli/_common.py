"""What every command uses: the one-line error, the output check, the ranks of a
distributed run, atomic writes, messages, threads and the --device check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class CLIError(Exception):
    """An error reported as one line, exit status 2."""


def _check_output(output: str, inputs: Sequence[str], force: bool) -> Path:
    """``output`` as a Path, once it is known to be writable, before any long work: not
    an input, not an existing file unless ``force``, never anything but a regular file
    (a device such as /dev/null, a FIFO or a folder is refused even with ``force``: the
    atomic rename would replace it), and in a folder that takes a new file."""
    from .._common.io import check_writable

    out = Path(output)
    for given in inputs:
        if (
            given is not None
            and Path(given).exists()
            and out.exists()
            and out.resolve() == Path(given).resolve()
        ):
            raise CLIError(f"output {output} is an input file; it is never overwritten")
    if out.is_file() and not force:
        raise CLIError(f"output {output} exists; pass --force to overwrite it")
    try:
        check_writable(out)
    except ValueError as err:
        raise CLIError(str(err)) from None
    return out


def _all_ranks(what: str):
    """``with _all_ranks(step):`` a step that fails on every rank when it fails on any
    (without a process group: errors go through unchanged)."""
    from .. import distributed

    return distributed.collectively(
        what,
        describe=lambda exc: (
            str(exc) if isinstance(exc, CLIError) else (str(exc) or type(exc).__name__)
        ),
    )


def _is_main() -> bool:
    """True on rank 0 of a distributed run, and without one."""
    from .. import distributed

    return distributed.context().is_main


def _write_atomic(path: Path, write, binary: bool = False) -> None:
    """Calls write(file_object) on a temporary file next to ``path``, then renames."""
    from .._common.io import write_atomic

    write_atomic(path, write, text=not binary)


def _say(args, *text) -> None:
    if not args.quiet and _is_main():
        print(*text, flush=True)


def _with_threads(n_threads):
    """Decorator: run the command with torch limited to the number of threads
    ``n_threads(args)``, the previous setting restored after."""

    def wrap(command):
        def run(args) -> int:
            from .._common.threads import torch_threads

            with torch_threads(n_threads(args)):
                return command(args)

        run.__doc__ = command.__doc__
        return run

    return wrap


def _check_device(device: str | None) -> None:
    """CLIError naming --device when ``device`` is not a device or a CUDA device this
    machine lacks (None: the default, always fine)."""
    if device is None:
        return
    from .._common import validate as _validate

    try:
        _validate.device(device, "--device")
    except ValueError as err:
        raise CLIError(str(err)) from None
