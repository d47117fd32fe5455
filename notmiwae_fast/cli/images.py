"""``impute-image`` and ``train-image``: the clipped-pixel commands (an image or a
folder of images in, imputed images out; photographs in, a clipped-pixel model out)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._common import CLIError, _all_ranks, _check_output, _is_main, _say, _with_threads


def _read_image(path: str):
    """(pixels, metadata to carry over: EXIF, ICC profile) of an image file."""
    from .._common.image_io import read_image

    return read_image(path, metadata=True)


def _check_image_output(path: Path, array) -> None:
    from .._common.image_io import check_writable

    check_writable(path, array)


def _write_image(path: Path, array, metadata=None) -> None:
    from .._common.image_io import write_image

    write_image(path, array, metadata)


def _image_threads(args) -> int:
    """--threads, or by default 2 per process, fewer when torchrun starts several
    processes on this machine (they share its cores)."""
    if args.threads is not None:
        return args.threads
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // max(1, per_node)))


@_with_threads(_image_threads)
def cmd_impute_image(args: argparse.Namespace) -> int:
    """notmiwae-fast impute-image IMAGE OUTPUT: imputes the clipped values of an image
    (on rank 0), or of every image of a folder (split across the ranks)."""
    from .. import images
    from .._common.seeding import forked_rng

    if Path(args.image).is_dir():
        return _impute_image_folder(args)
    with _all_ranks("imputing the image"):
        if _is_main():  # one image: rank 0 does it, the others wait
            out = _check_output(
                args.output, [args.image] + ([args.model] if args.model else []), args.force
            )
            image, metadata = _read_image(args.image)
            _check_image_output(out, image)
            colour = images._colour(image, images._colour_channels(image))  # without alpha
            model = _image_model(args, colour.shape[2])
            with forked_rng(next(model.parameters()).device, args.seed):
                result = images.impute_image(
                    model,
                    image,
                    clip_level=args.clip_level,
                    n_samples=args.n_samples,
                    progress=not args.quiet,
                )
            _write_image(out, result, metadata)
            lost = images.count_lost(colour, args.clip_level)
    if _is_main():
        _say(args, f"imputed {lost} values at or above {args.clip_level}; wrote {out}")
    return 0


def _image_model(args, channels: int = 3):
    """--model, or the bundled model for the image's colour channels (grey or RGB)."""
    from .. import images

    if args.model is not None:
        return images.load_image_model(args.model)
    if channels not in (1, 3):
        raise CLIError(
            f"{args.image} has {channels} colour channels; the bundled models "
            "are for grey (1) and RGB (3) images"
        )
    return images.load_image_model(channels=channels)


def _impute_image_folder(args) -> int:
    """impute-image IN_FOLDER OUT_FOLDER: the images split across the ranks."""
    from .. import distributed

    in_dir, out_dir = Path(args.image), Path(args.output)
    with _all_ranks("checking the files"):
        if out_dir.exists() and not out_dir.is_dir():
            raise CLIError(
                f"output {out_dir} is a file; the input {in_dir} is a folder, "
                "so the output must be a folder too"
            )
        if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
            raise CLIError(
                f"output {out_dir} is the input folder; input images are never overwritten"
            )
        model = _image_model(args, args.channels)
    manifest = distributed.impute_image_folder(
        model,
        in_dir,
        out_dir,
        clip_level=args.clip_level,
        n_samples=args.n_samples,
        seed=args.seed,
        overwrite=args.force,
        progress=not args.quiet,
    )
    if manifest is not None:
        _say(
            args,
            f"imputed the values at or above {args.clip_level} in "
            f"{len(manifest['images'])} images of {in_dir} on "
            f"{manifest['processes']} process(es); wrote them and "
            f"{distributed.MANIFEST_NAME} to {out_dir}",
        )
    return 0


@_with_threads(lambda args: args.threads)
def cmd_train_image(args: argparse.Namespace) -> int:
    """notmiwae-fast train-image MODEL_FILE: trains a clipped-pixel model on photographs
    (--photos, or the bundled ones) and saves it."""
    import torch

    from .. import images

    bad = [c for c in args.clip_levels if not 0 < c <= 1]
    if bad:
        raise CLIError(f"--clip-levels must be in (0, 1]; got {bad[0]}")
    if any(g <= 0 for g in args.gains):
        raise CLIError(f"--gains must be positive; got {min(args.gains)}")
    out = _check_output(args.model_file, [], args.force)
    if args.photos:
        photos = {}
        for path in _photo_files(args.photos):
            pixels = _read_image(str(path))[0]
            colour = images.as_float_image(pixels)[0]
            if args.channels == 1 and colour.shape[2] == 3:
                colour = images.to_grey(colour)
            if colour.shape[2] != args.channels:
                raise CLIError(
                    f"photograph {path} has {colour.shape[2]} colour channel(s); "
                    f"--channels is {args.channels}"
                )
            photos[str(path)] = colour
    else:
        photos = images.bundled_photographs()
        if args.channels == 1:
            photos = {k: images.to_grey(v) for k, v in photos.items()}
    torch.manual_seed(args.seed)
    pixels = images.training_pixels(
        list(photos.values()),
        args.clip_levels,
        args.gains,
        per_image=args.per_image,
        seed=args.seed,
    )
    model = images.ClippedPixelModel(args.channels, kind=args.kind, latent_dim=args.latent_dim)
    losses = images.train_clipped(
        model,
        pixels,
        steps=args.steps,
        batch_size=args.batch_size,
        n_samples=args.n_samples,
        complete=args.complete,
        progress=not args.quiet,
    )
    images.save_image_model(model, out)
    data = "complete photographs" if args.complete else "clipped photographs only"
    _say(
        args,
        f"trained {args.kind} on {len(photos)} photographs ({data}, {args.steps} "
        f"steps, final loss {np.mean(losses[-50:]):.3f}); saved to {out}",
    )
    return 0


def _photo_files(paths: Sequence[str]) -> list:
    """The image files named, and those directly inside the folders named."""
    from .._common.image_io import IMAGE_SUFFIXES

    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise CLIError(f"--photos: {path} does not exist")
    if not files:
        raise CLIError("--photos: no image file found")
    return files
