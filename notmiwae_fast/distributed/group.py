"""Process-group primitives for running on several processes and machines with
torch.distributed: the rank context, starting and stopping the group from torchrun's
environment, sums over ranks, the one way work is split across ranks
(:func:`shard_bounds`), and :func:`collectively` for steps that can fail on some ranks
only: every rank learns whether it failed anywhere and raises :class:`RankFailure`
naming the failed ranks, so that no rank waits forever and nothing is written as if the
job had succeeded.

This module imports nothing else of the package (the Trainer and the sharded
applications build on it).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "Context",
    "context",
    "init_from_env",
    "shutdown",
    "all_reduce_sum",
    "shard_bounds",
    "RankFailure",
    "collectively",
    "gather_failures",
    "barrier",
    "describe_exception",
]


@dataclass(frozen=True)
class Context:
    """This process's place in the job: rank, world size and local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> Context:
    """The current process group's context ((0, 1, 0) when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Context(
            dist.get_rank(),
            dist.get_world_size(),
            int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        )
    return Context()


def init_from_env(device: Optional[torch.device] = None, timeout_s: int = 600) -> Context:
    """Starts the process group when launched by torchrun (WORLD_SIZE > 1) and none runs
    yet: NCCL for CUDA devices, gloo otherwise. Returns the context."""
    if (
        dist.is_available()
        and not dist.is_initialized()
        and int(os.environ.get("WORLD_SIZE", "1")) > 1
    ):
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        options: dict = {}
        if backend == "nccl":  # one GPU per process; object collectives use this one
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"this process's LOCAL_RANK is {local_rank} but this machine has "
                    f"{torch.cuda.device_count()} CUDA GPU(s): start at most that many "
                    "processes per machine (torchrun --nproc-per-node)"
                )
            torch.cuda.set_device(local_rank)
            # The group's own GPU (NCCL's barrier would otherwise guess it and warn).
            options["device_id"] = torch.device("cuda", local_rank)
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **options
        )
        # Close the group we opened if the caller does not (see shutdown).
        atexit.register(shutdown, wait_for_all=False)
    return context()


# How long shutdown pauses, the GIL released, before it closes the group (see there).
SETTLE_S = 0.1


def shutdown(wait_for_all: bool = True) -> None:
    """Closes the process group, if one is open, after every rank has arrived (call it
    at the end of a distributed script; it also runs at exit, without waiting, for a
    group that init_from_env opened). Wait unless a rank may have died.

    Before closing it pauses for SETTLE_S seconds so that gloo's worker threads drop the
    tensors of the last collectives while the interpreter still runs: once
    DistributedDataParallel has used a gloo group, destroying it does not stop those
    threads, and one that drops a Python-owned tensor while the interpreter shuts down
    aborts the process ("terminate called without an active exception", a PyTorch
    problem; measured with a two-process Trainer script left to the exit handler: 5
    aborts in 30 runs without the pause, none in 60 with it, 30 of them beside a busy
    process). A pause cannot promise it on a heavily loaded machine; the command line
    also leaves with ``os._exit`` (:func:`notmiwae_fast.cli.run`), and a script of your
    own can do the same after its last write."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        time.sleep(SETTLE_S)
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of a list of floats over all ranks (identity without a group)."""
    if not context().distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard_bounds(n_rows: int, world_size: int, rank: int, align: int = 1) -> tuple[int, int]:
    """[start, stop) rows of ``rank``: contiguous, in order, cut at multiples of ``align``
    so that a rank's batches are the single-process batches."""
    n_blocks = -(-n_rows // align)
    per_rank, extra = divmod(n_blocks, world_size)
    first = rank * per_rank + min(rank, extra)
    last = first + per_rank + (1 if rank < extra else 0)
    return min(n_rows, first * align), min(n_rows, last * align)


def gather_failures(ctx: Context, error: str) -> list[tuple[int, str]]:
    """Every rank's ``error`` ("" for none), gathered on all ranks: [(rank, message)]
    of the ranks that failed. A collective call."""
    if not ctx.distributed:
        return [(0, error)] if error else []
    messages: list = [None] * ctx.world_size
    dist.all_gather_object(messages, error)
    return [(r, m) for r, m in enumerate(messages) if m]


def barrier(ctx: Context) -> None:
    """Waits for every rank of the group (returns at once in a single process)."""
    if ctx.distributed:
        dist.barrier()


# -- failing together ---------------------------------------------------------------------
class RankFailure(RuntimeError):
    """A step failed on one or more ranks; raised on every rank alike.

    Attributes: ``what`` (the step), ``failures`` ([(rank, message)], the failed ranks
    only), ``world_size`` and ``note`` (appended to the message)."""

    def __init__(
        self, what: str, failures: Sequence[tuple[int, str]], world_size: int, note: str = ""
    ):
        self.what, self.failures, self.world_size = what, list(failures), world_size
        self.note = note
        super().__init__(self._message() + (f"; {note}" if note else ""))

    def _message(self) -> str:
        messages = [m for _, m in self.failures]
        if self.world_size == 1:
            return f"{self.what} failed: {messages[0]}"
        if len(self.failures) == self.world_size and len(set(messages)) == 1:
            return f"{messages[0]} (on all {self.world_size} processes)"
        groups: dict[str, list[int]] = {}
        for rank, message in self.failures:
            groups.setdefault(message, []).append(rank)
        return f"{self.what} failed on " + "; ".join(
            f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}: {message}"
            for message, ranks in groups.items()
        )


def describe_exception(exc: BaseException) -> str:
    """One line for an exception: its type's name and its message."""
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def collectively(what: str, describe: Callable[[BaseException], str] = describe_exception):
    """Runs the ``with`` block on every rank; if it raised on any rank, every rank raises
    :class:`RankFailure` (the failed ranks and their messages, ``describe(exception)``)
    after the block. Every rank must enter the block. Without a process group the
    exception goes through unchanged.

    Do not put collective operations that a failure could skip (a DDP training step)
    inside: a rank that fails before one would leave the others waiting in it."""
    ctx = context()
    if not ctx.distributed:
        yield
        return
    error = ""
    try:
        yield
    except Exception as exc:  # reported to every rank below
        error = " ".join(describe(exc).split()) or type(exc).__name__
    failures = gather_failures(ctx, error)
    if failures:
        raise RankFailure(what, failures, ctx.world_size)
