"""The ``notmiwae-fast`` command.

    notmiwae-fast demo                      # the paper's MNAR protocol on breast cancer
    notmiwae-fast fit data.csv model.pt     # train an imputer on a CSV (empty cell = NaN)
    notmiwae-fast impute data.csv out.csv --model model.pt
    notmiwae-fast export model.pt --format torchscript|onnx --out imputer.pt
    notmiwae-fast impute-image in.png out.png [--model M] [--clip-level 0.75]
    notmiwae-fast impute-image in_folder/ out_folder/   # every image of a folder
    notmiwae-fast train-image image_model.pt   # on the photographs scikit-image ships
    notmiwae-fast bench --suite all --out bench-results   # one report: JSON, Markdown, PNG

Every error ends the command with exit status 2 and one line on stderr (set
``NOTMIWAE_FAST_DEBUG=1`` for the traceback); every warning (e.g. a training that
diverged, see :class:`notmiwae_fast.train.TrainingWarning`) is one line
``notmiwae-fast COMMAND: warning: ...`` on stderr, --quiet or not. No command overwrites
its input file; an existing output is refused unless ``--force``.

``fit``, ``impute`` and ``impute-image`` also run under ``torchrun`` (several processes,
one or more machines): every rank reads the input and trains data-parallel, the
imputation (rows, or the images of a folder) is split across the ranks, rank 0 alone
writes the model / output CSV (atomically, rows in the original order) and prints. When
a step fails on any rank, every rank stops with status 2, rank 0 prints one line naming
the failed ranks, and no output is written (see :mod:`notmiwae_fast.distributed`).

The commands live in this package by group: :mod:`.tables` (fit, impute), :mod:`.demo`,
:mod:`.images` (impute-image, train-image), :mod:`.deploy` (export) and :mod:`.bench`;
the parser in :mod:`._parser`; how a command runs (torchrun, errors, warnings) in
:mod:`._runtime`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from ._common import CLIError, _check_output  # noqa: F401  (tests import them from here)
from ._files import _read_csv, read_csv_exact  # noqa: F401  (likewise)
from ._parser import _positive, build_parser
from ._runtime import _report, _start_distributed, _warning_printer

__all__ = ["main", "run"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 2 error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench" and "OMP_WAIT_POLICY" not in os.environ:
        # OpenMP reads its wait policy when it loads (with torch, before this runs):
        # idle workers spinning on a small machine slow the many small eager ops of the
        # baselines by up to an order of magnitude. Run the benchmark in a process that
        # starts with PASSIVE.
        import subprocess

        return subprocess.call(
            [sys.executable, "-m", "notmiwae_fast.cli", *argv],
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
    started = succeeded = False
    try:
        _positive(args)
        started = _start_distributed(args)
        with warnings.catch_warnings():  # restores showwarning after the command
            warnings.showwarning = _warning_printer(args)
            status = args.func(args)
        succeeded = True
        return status
    except KeyboardInterrupt:
        print("notmiwae-fast: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # any error: one line, never a traceback
        if os.environ.get("NOTMIWAE_FAST_DEBUG"):
            raise
        return _report(args, err)
    finally:
        if started:
            from .. import distributed

            # After success every rank is alive: meet in a barrier before closing. After
            # an agreed failure _report has met the others; after any other failure a
            # peer may be gone, so do not wait. (How the process then exits: run.)
            distributed.shutdown(wait_for_all=succeeded)


def run() -> NoReturn:
    """The ``notmiwae-fast`` command and ``python -m notmiwae_fast.cli``: exits with
    :func:`main`'s status.

    A process started by torchrun (WORLD_SIZE > 1) flushes its output and leaves with
    ``os._exit``, without the interpreter's finalisation: once DistributedDataParallel
    has used a gloo group, its worker threads outlive ``destroy_process_group``, and one
    that drops the last collective's tensors while the interpreter shuts down aborts the
    process ("terminate called without an active exception", a PyTorch problem) after
    the command has succeeded. Every file the commands write is complete (written,
    synced and renamed) before main returns; nothing is left for finalisation to do."""
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
