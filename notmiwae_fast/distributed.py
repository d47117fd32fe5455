"""Running on several processes and machines with torch.distributed.

Launch any script that uses :class:`notmiwae_fast.Trainer` with ``torchrun``; the process
group is started from torchrun's environment (gloo on CPU, NCCL on GPU) and the Trainer
wraps the model in DistributedDataParallel, shards the data with a DistributedSampler,
averages the metrics over ranks, writes checkpoints from rank 0 only and offsets the
seeds by rank. :func:`impute_sharded` splits an imputation over the ranks and assembles
the result in the original row order.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Context", "context", "init_from_env", "shutdown", "impute_sharded",
           "shard_bounds"]


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
        return Context(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Context()


def init_from_env(device: Optional[torch.device] = None, timeout_s: int = 600) -> Context:
    """Starts the process group when launched by torchrun (WORLD_SIZE > 1) and none runs
    yet: NCCL for CUDA devices, gloo otherwise. Returns the context."""
    if (dist.is_available() and not dist.is_initialized()
            and int(os.environ.get("WORLD_SIZE", "1")) > 1):
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        # A group left open at exit aborts the process ("terminate called without an
        # active exception") while its threads still run: close the one we opened.
        atexit.register(shutdown, wait_for_all=False)
    return context()


def shutdown(wait_for_all: bool = True) -> None:
    """Closes the process group, if one is open, after every rank has arrived (call it
    at the end of a distributed script; it also runs at exit, without waiting, for a
    group that init_from_env opened)."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
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


def impute_sharded(model, x, s, output: str, n_samples: int = 1000, batch_size: int = 256,
                   seed: int = 0) -> Optional[np.ndarray]:
    """Imputes rows [N, D] split across the ranks; the assembled result goes to
    ``output`` (a .npy file) in the original row order.

    Each rank imputes a contiguous block of whole batches with the per-batch seeds of
    :func:`notmiwae_fast.utils.impute` (seed + batch index), so the result is the same
    for any number of processes. Each rank writes its shard next to ``output``; rank 0
    assembles them (temporary file, then rename) once every rank has reported success.
    If any rank fails, every rank raises RuntimeError naming the failed ranks, and
    ``output`` is not written. Returns the array on rank 0, None elsewhere.
    """
    from ._io import save_array_atomic
    from .utils import impute

    ctx = context()
    n = int(x.shape[0])
    start, stop = shard_bounds(n, ctx.world_size, ctx.rank, align=batch_size)
    shard_path = f"{output}.shard-{ctx.rank:05d}-of-{ctx.world_size:05d}.npy"
    error = ""
    try:
        part = impute(model, x[start:stop], s[start:stop], n_samples=n_samples,
                      batch_size=batch_size, seed=seed + start // batch_size)
        save_array_atomic(part, shard_path)
    except Exception as exc:  # reported to every rank below
        error = f"{type(exc).__name__}: {exc}"
    failures = _gather_failures(ctx, error)
    if failures:
        raise RuntimeError("sharded imputation failed on " + "; ".join(
            f"rank {r}: {msg}" for r, msg in failures) + f"; {output} was not written")
    if not ctx.is_main:
        _barrier(ctx)
        return None
    shards = [np.load(f"{output}.shard-{r:05d}-of-{ctx.world_size:05d}.npy")
              for r in range(ctx.world_size)]
    result = np.concatenate(shards, axis=0)
    if result.shape[0] != n:
        raise RuntimeError(f"sharded imputation assembled {result.shape[0]} rows, expected {n}")
    save_array_atomic(result, output)
    for r in range(ctx.world_size):
        os.unlink(f"{output}.shard-{r:05d}-of-{ctx.world_size:05d}.npy")
    _barrier(ctx)
    return result


def _gather_failures(ctx: Context, error: str) -> list[tuple[int, str]]:
    if not ctx.distributed:
        return [(0, error)] if error else []
    messages: list = [None] * ctx.world_size
    dist.all_gather_object(messages, error)
    return [(r, m) for r, m in enumerate(messages) if m]


def _barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
