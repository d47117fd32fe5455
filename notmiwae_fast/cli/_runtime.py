"""How a command runs: the process group under torchrun, errors as one line and
warnings as one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ._common import _is_main

# Commands that run under torchrun (the others run as they would in one process).
DISTRIBUTED_COMMANDS = ("fit", "impute", "impute-image")
# How long a rank waits in a collective (for the slowest rank's share of the rows or
# images) before the job fails. A rank that dies is noticed at once (lost connection).
DISTRIBUTED_TIMEOUT_S = 4 * 3600


def _start_distributed(args: argparse.Namespace) -> bool:
    """Under torchrun (WORLD_SIZE > 1, no process group yet) starts the process group for
    a command that runs distributed: NCCL when it trains on CUDA, else gloo. Returns
    whether it started one."""
    if args.command not in DISTRIBUTED_COMMANDS or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    import torch

    from .. import distributed

    if distributed.context().distributed:
        return False
    device = torch.device("cpu")
    if args.command in ("fit", "impute") and getattr(args, "model", None) is None:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    distributed.init_from_env(device, timeout_s=DISTRIBUTED_TIMEOUT_S)
    return True


def _report(args: argparse.Namespace, err: Exception) -> int:
    """Prints the error as one line; returns 2. In a distributed run an error every rank
    raised alike (RankFailure) is printed by rank 0 only, any other with its rank."""
    from .. import distributed

    ctx = distributed.context()
    message = " ".join(str(err).split()) or type(err).__name__
    agreed = isinstance(err, distributed.RankFailure)
    if ctx.distributed and not agreed:
        import torch.distributed as dist

        if isinstance(err, dist.DistError) or any(  # gloo / NCCL: a peer went away
            m in message for m in ("closed by peer", "reset by peer", "remote worker")
        ):
            message = (
                "lost the connection to another process, which probably failed "
                f"(see its message) ({message.split('. ')[0]})"
            )
        message = f"rank {ctx.rank}: {message}"
    if ctx.is_main or not agreed:
        print(f"notmiwae-fast {args.command}: error: {message}", file=sys.stderr, flush=True)
    if ctx.distributed and agreed:
        import torch.distributed as dist

        dist.barrier()  # the others exit only once rank 0 has printed
    return 2


def _warning_printer(args: argparse.Namespace) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints a warning as one line on stderr, on rank
    0 only (every rank trains alike): ``notmiwae-fast COMMAND: warning: message``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if _is_main():
            text = " ".join(str(message).split())
            print(f"notmiwae-fast {args.command}: warning: {text}", file=sys.stderr, flush=True)

    return show
