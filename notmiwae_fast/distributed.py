"""Running on several processes and machines with torch.distributed.

Launch any script that uses :class:`notmiwae_fast.Trainer` with ``torchrun``; the process
group is started from torchrun's environment (gloo on CPU, NCCL on GPU) and the Trainer
wraps the model in DistributedDataParallel, shards the data with a DistributedSampler,
averages the metrics over ranks, writes checkpoints from rank 0 only and offsets the
seeds by rank. :func:`impute_sharded` splits an imputation over the ranks and assembles
the result in the original row order; :func:`transform_sharded` does the same for a
fitted scikit-learn style imputer and :func:`impute_image_folder` for a folder of images.
The ``notmiwae-fast`` command's ``fit``, ``impute`` and ``impute-image`` run on these.

A step that can fail on some ranks only runs under :func:`collectively`: every rank
learns whether it failed anywhere and raises :class:`RankFailure` naming the failed
ranks, so that no rank waits forever and nothing is written as if the job had succeeded.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Context", "context", "init_from_env", "shutdown", "impute_sharded",
           "shard_bounds", "RankFailure", "collectively", "transform_sharded",
           "impute_image_folder", "list_images", "MANIFEST_NAME"]

# The file that marks a folder written by impute_image_folder as complete.
MANIFEST_NAME = "notmiwae_fast_manifest.json"


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
        if backend == "nccl":  # one GPU per process; object collectives use this one
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
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


# -- failing together ---------------------------------------------------------------------
class RankFailure(RuntimeError):
    """A step failed on one or more ranks; raised on every rank alike.

    Attributes: ``what`` (the step), ``failures`` ([(rank, message)], the failed ranks
    only), ``world_size`` and ``note`` (appended to the message)."""

    def __init__(self, what: str, failures: Sequence[tuple[int, str]], world_size: int,
                 note: str = ""):
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
            for message, ranks in groups.items())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def collectively(what: str, describe: Callable[[BaseException], str] = _describe):
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
    failures = _gather_failures(ctx, error)
    if failures:
        raise RankFailure(what, failures, ctx.world_size)


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

    from .imputer import _SEED_BLOCK

    ctx = context()
    if not ctx.distributed:
        return imputer.transform(X)
    with collectively("imputation"):
        check_is_fitted(imputer)
        arr = imputer._check_X(X, reset=False)
        start, stop = shard_bounds(arr.shape[0], ctx.world_size, ctx.rank, align=_SEED_BLOCK)
        part = imputer._impute_rows(arr[start:stop], first_row=start)
    parts: Optional[list] = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(part, parts, dst=0)
    if not ctx.is_main:
        return None
    out = np.concatenate(parts, axis=0)
    if out.shape != arr.shape:
        raise RuntimeError(f"sharded imputation assembled {out.shape[0]} rows, expected "
                           f"{arr.shape[0]}")
    return imputer._wrap_like(X, out)


# -- a folder of images over the ranks -----------------------------------------------------
def list_images(folder: Union[str, Path]) -> list[Path]:
    """The image files (.png, .jpg, .jpeg, .tif, .tiff, .bmp, any case) directly in
    ``folder``, sorted by name."""
    from ._image_io import IMAGE_SUFFIXES

    return sorted((p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.name)


def impute_image_folder(model, in_dir: Union[str, Path], out_dir: Union[str, Path], *,
                        clip_level: Optional[float] = 0.75, n_samples: Optional[int] = None,
                        seed: int = 0, overwrite: bool = False, progress: bool = False,
                        **impute_kwargs) -> Optional[dict]:
    """Imputes the lost pixels of every image in ``in_dir``, split across the ranks.

    Args:
        model: an image model (:func:`notmiwae_fast.images.image_model`), trained.
        in_dir: folder of images ([H, W] or [H, W, C], 8 or 16 bit; the files
            :func:`list_images` finds, not sub-folders).
        out_dir: where the imputed images go, under their own names and formats
            (created if needed; must not be ``in_dir``: inputs are never overwritten).
        clip_level, n_samples, **impute_kwargs: passed to
            :func:`notmiwae_fast.images.impute_image` for each image.
        seed: image i of the sorted list is imputed with torch seeded to ``seed + i``,
            so the output does not depend on the number of processes.
        overwrite: replace existing images in ``out_dir`` (else refused, naming one).
        progress: a progress bar (rank 0, over its own images).
    Returns:
        on rank 0 the manifest (also written to ``out_dir/MANIFEST_NAME``); None on the
        other ranks.

    Rank r takes images r, r + W, r + 2W, ... of the sorted list (W processes) and
    writes each atomically (temporary file, then rename). A stale manifest is removed
    first; after every rank has reported success rank 0 writes the manifest (atomically)
    listing every image: the folder is complete exactly when it holds the manifest. If
    any image fails, every rank raises :class:`RankFailure` naming the ranks and files;
    images finished before are kept (each complete) and no manifest is written. Several
    machines need ``in_dir`` and ``out_dir`` on a file system they share.
    """
    from . import images
    from ._image_io import read_image, write_image
    from ._io import write_atomic
    from ._progress import progress_bar

    ctx = context()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    with collectively("preparing the image folder"):
        if not in_dir.is_dir():
            raise ValueError(f"argument 'in_dir': {in_dir} is not a folder")
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"argument 'out_dir': {out_dir} exists and is not a folder")
        if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
            raise ValueError(f"argument 'out_dir' must differ from 'in_dir' ({in_dir}); "
                             "input images are never overwritten")
        files = list_images(in_dir)
        if not files:
            raise ValueError(f"argument 'in_dir': no images ({', '.join(_suffixes())}) "
                             f"in {in_dir}")
        mine = list(range(ctx.rank, len(files), ctx.world_size))
        if not overwrite:
            taken = [files[i].name for i in mine if (out_dir / files[i].name).exists()]
            if taken:
                raise ValueError(f"argument 'out_dir': {len(taken)} output image(s) exist "
                                 f"already in {out_dir} (e.g. {taken[0]}); pass "
                                 "overwrite=True (--force) to replace them")
        out_dir.mkdir(parents=True, exist_ok=True)
        if ctx.is_main and (out_dir / MANIFEST_NAME).exists():
            os.unlink(out_dir / MANIFEST_NAME)
    _barrier(ctx)  # the stale manifest is gone before any image is replaced

    errors = []
    device = next(model.parameters()).device
    bar = progress_bar(len(mine), progress and ctx.is_main, "imputing images")
    for i in mine:
        try:
            image, metadata = read_image(files[i], metadata=True)  # EXIF / ICC kept
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + i)
                result = images.impute_image(model, image, clip_level=clip_level,
                                             n_samples=n_samples, progress=False,
                                             **impute_kwargs)
            write_image(out_dir / files[i].name, result, metadata)
        except Exception as exc:  # every failed image is reported below
            errors.append(f"{files[i].name}: {' '.join(_describe(exc).split())}")
        bar.update(1)
    bar.close()
    message = ""
    if errors:
        message = f"{len(errors)} of {len(mine)} image(s) failed: " + "; ".join(errors[:3])
        if len(errors) > 3:
            message += f"; and {len(errors) - 3} more"
    failures = _gather_failures(ctx, message)
    if failures:
        raise RankFailure(f"imputing the images of {in_dir}", failures, ctx.world_size,
                          note=f"no manifest written in {out_dir}")

    manifest = {"format": "notmiwae_fast.image_folder/1", "complete": True,
                "input": str(in_dir), "images": [f.name for f in files],
                "clip_level": clip_level, "n_samples": n_samples, "seed": seed,
                "processes": ctx.world_size}
    with collectively("writing the manifest"):
        if ctx.is_main:
            write_atomic(out_dir / MANIFEST_NAME,
                         lambda f: json.dump(manifest, f, indent=2), text=True)
    return manifest if ctx.is_main else None


def _suffixes() -> list[str]:
    from ._image_io import IMAGE_SUFFIXES

    return list(IMAGE_SUFFIXES)
