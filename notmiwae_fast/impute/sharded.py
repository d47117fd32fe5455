"""Imputation split across the ranks of a process group: a model's rows
(:func:`impute_sharded`) and a fitted scikit-learn style imputer's table
(:func:`transform_sharded`), each assembled in the original row order, the same values
a single process gives."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch.distributed as dist

from ..distributed.group import barrier, collectively, context, gather_failures, shard_bounds

__all__ = ["impute_sharded", "transform_sharded"]


def impute_sharded(
    model, x, s, output: str, n_samples: int = 1000, batch_size: int = 256, seed: int = 0
) -> Optional[np.ndarray]:
    """Imputes rows [N, D] split across the ranks; the assembled result goes to
    ``output`` (a .npy file) in the original row order.

    Each rank imputes a contiguous block of whole batches with the per-batch seeds of
    :func:`notmiwae_fast.utils.impute` (seed + batch index), so the result is the same
    for any number of processes. Each rank writes its shard next to ``output``; rank 0
    assembles them (temporary file, then rename) once every rank has reported success.
    If any rank fails, every rank raises RuntimeError naming the failed ranks, and
    ``output`` is not written. Returns the array on rank 0, None elsewhere.
    """
    from .._common.io import save_array_atomic
    from ..utils import impute

    ctx = context()
    n = int(x.shape[0])
    start, stop = shard_bounds(n, ctx.world_size, ctx.rank, align=batch_size)
    shard_path = f"{output}.shard-{ctx.rank:05d}-of-{ctx.world_size:05d}.npy"
    error = ""
    try:
        part = impute(
            model,
            x[start:stop],
            s[start:stop],
            n_samples=n_samples,
            batch_size=batch_size,
            seed=seed + start // batch_size,
        )
        save_array_atomic(part, shard_path)
    except Exception as exc:  # reported to every rank below
        error = f"{type(exc).__name__}: {exc}"
    failures = gather_failures(ctx, error)
    if failures:
        raise RuntimeError(
            "sharded imputation failed on "
            + "; ".join(f"rank {r}: {msg}" for r, msg in failures)
            + f"; {output} was not written"
        )
    if not ctx.is_main:
        barrier(ctx)
        return None
    shards = [
        np.load(f"{output}.shard-{r:05d}-of-{ctx.world_size:05d}.npy")
        for r in range(ctx.world_size)
    ]
    result = np.concatenate(shards, axis=0)
    if result.shape[0] != n:
        raise RuntimeError(f"sharded imputation assembled {result.shape[0]} rows, expected {n}")
    save_array_atomic(result, output)
    for r in range(ctx.world_size):
        os.unlink(f"{output}.shard-{r:05d}-of-{ctx.world_size:05d}.npy")
    barrier(ctx)
    return result


# -- a fitted imputer over the ranks -----------------------------------------------------------
def transform_sharded(imputer, X):
    """``imputer.transform(X)`` split across the ranks, assembled on rank 0.

    Args:
        imputer: a fitted :class:`~notmiwae_fast.NotMIWAEImputer` or
            :class:`~notmiwae_fast.MIWAEImputer` (the same on every rank).
        X: [N, D] array or DataFrame, NaN = missing: the whole table, on every rank.
    Returns:
        on rank 0 the imputed [N, D] table (the type of X, rows in the original order),
        the same values a single process gives; None on the other ranks. Without a
        process group: ``imputer.transform(X)``.

    Rank r imputes the rows :func:`shard_bounds` (N, world size, r, align=256) gives it;
    each block of 256 rows is imputed with the seed of its position in the whole table.
    The shards travel to rank 0 through the process group (no shared file system
    needed). If any rank fails, every rank raises :class:`RankFailure`.
    """
    from sklearn.utils.validation import check_is_fitted

    from . import _mixed
    from ._transform import SEED_BLOCK

    ctx = context()
    if not ctx.distributed:
        return imputer.transform(X)
    mixed = getattr(imputer, "codec_", None) is not None
    with collectively("imputation"):
        check_is_fitted(imputer)
        arr = imputer.codec_.encode(X) if mixed else imputer._check_X(X, reset=False)
        start, stop = shard_bounds(arr.shape[0], ctx.world_size, ctx.rank, align=SEED_BLOCK)
        if mixed:
            part = _mixed.impute_codes(imputer, X.iloc[start:stop], first_row=start)
        else:
            part = imputer._impute_rows(arr[start:stop], first_row=start)
    parts: Optional[list] = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(part, parts, dst=0)
    if not ctx.is_main:
        return None
    out = np.concatenate(parts, axis=0)
    if out.shape != arr.shape:
        raise RuntimeError(
            f"sharded imputation assembled {out.shape[0]} rows, expected {arr.shape[0]}"
        )
    return imputer.codec_.decode(out, X) if mixed else imputer._wrap_like(X, out)
