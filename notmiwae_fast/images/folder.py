"""Imputing a folder of images split across the ranks of a process group
(:func:`impute_image_folder`), with a manifest that marks the output as complete."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from .. import images  # the package's impute_image: a replacement there applies here
from .._common.image_io import IMAGE_SUFFIXES, read_image, write_image
from .._common.io import write_atomic
from .._common.progress import progress_bar
from .._common.seeding import forked_rng
from ..distributed.group import (
    Context,
    RankFailure,
    barrier,
    collectively,
    context,
    describe_exception,
    gather_failures,
)

__all__ = ["impute_image_folder", "list_images", "MANIFEST_NAME"]

# The file that marks a folder written by impute_image_folder as complete.
MANIFEST_NAME = "notmiwae_fast_manifest.json"


# -- a folder of images over the ranks -----------------------------------------------------
def list_images(folder: Union[str, Path]) -> list[Path]:
    """The image files (.png, .jpg, .jpeg, .tif, .tiff, .bmp, any case) directly in
    ``folder``, sorted by name."""
    return sorted(
        (p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )


def impute_image_folder(
    model: nn.Module,
    in_dir: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    clip_level: Optional[float] = 0.75,
    n_samples: Optional[int] = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    **impute_kwargs: Any,
) -> Optional[dict]:
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
    ctx = context()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    with collectively("preparing the image folder"):
        files, mine = _prepare(ctx, in_dir, out_dir, overwrite)
    barrier(ctx)  # the stale manifest is gone before any image is replaced

    errors = _impute_files(
        model,
        files,
        mine,
        out_dir,
        seed,
        progress and ctx.is_main,
        dict(impute_kwargs, clip_level=clip_level, n_samples=n_samples),
    )
    failures = gather_failures(ctx, _failure_message(errors, len(mine)))
    if failures:
        raise RankFailure(
            f"imputing the images of {in_dir}",
            failures,
            ctx.world_size,
            note=f"no manifest written in {out_dir}",
        )

    manifest = {
        "format": "notmiwae_fast.image_folder/1",
        "complete": True,
        "input": str(in_dir),
        "images": [f.name for f in files],
        "clip_level": clip_level,
        "n_samples": n_samples,
        "seed": seed,
        "processes": ctx.world_size,
    }
    with collectively("writing the manifest"):
        if ctx.is_main:
            write_atomic(
                out_dir / MANIFEST_NAME, lambda f: json.dump(manifest, f, indent=2), text=True
            )
    return manifest if ctx.is_main else None


def _prepare(
    ctx: Context, in_dir: Path, out_dir: Path, overwrite: bool
) -> tuple[list[Path], list[int]]:
    """Checks the folders, creates ``out_dir`` and (rank 0) removes a stale manifest;
    returns (the images of ``in_dir``, sorted; the indices of this rank's)."""
    if not in_dir.is_dir():
        raise ValueError(f"argument 'in_dir': {in_dir} is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"argument 'out_dir': {out_dir} exists and is not a folder")
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ValueError(
            f"argument 'out_dir' must differ from 'in_dir' ({in_dir}); "
            "input images are never overwritten"
        )
    files = list_images(in_dir)
    if not files:
        raise ValueError(f"argument 'in_dir': no images ({', '.join(IMAGE_SUFFIXES)}) in {in_dir}")
    mine = list(range(ctx.rank, len(files), ctx.world_size))
    if not overwrite:
        taken = [files[i].name for i in mine if (out_dir / files[i].name).exists()]
        if taken:
            raise ValueError(
                f"argument 'out_dir': {len(taken)} output image(s) exist "
                f"already in {out_dir} (e.g. {taken[0]}); pass "
                "overwrite=True (--force) to replace them"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    if ctx.is_main and (out_dir / MANIFEST_NAME).exists():
        os.unlink(out_dir / MANIFEST_NAME)
    return files, mine


def _impute_files(
    model: nn.Module,
    files: list[Path],
    mine: list[int],
    out_dir: Path,
    seed: int,
    progress: bool,
    impute_kwargs: dict,
) -> list[str]:
    """Imputes images ``files[i]`` for i in ``mine``, image i with torch seeded to
    ``seed + i`` (the caller's random state left as it was), each written atomically
    under its own name in ``out_dir`` with its metadata (EXIF, ICC); returns one line
    per image that failed."""
    errors = []
    device = next(model.parameters()).device
    bar = progress_bar(len(mine), progress, "imputing images")
    for i in mine:
        try:
            image, metadata = read_image(files[i], metadata=True)
            with forked_rng(device, seed + i):
                result = images.impute_image(model, image, progress=False, **impute_kwargs)
            write_image(out_dir / files[i].name, result, metadata)
        except Exception as exc:  # every failed image is reported by the caller
            errors.append(f"{files[i].name}: {' '.join(describe_exception(exc).split())}")
        bar.update(1)
    bar.close()
    return errors


def _failure_message(errors: list[str], n_images: int) -> str:
    """One line naming the first three failed images ("" when none failed)."""
    if not errors:
        return ""
    message = f"{len(errors)} of {n_images} image(s) failed: " + "; ".join(errors[:3])
    if len(errors) > 3:
        message += f"; and {len(errors) - 3} more"
    return message
