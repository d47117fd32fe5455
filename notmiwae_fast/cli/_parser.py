"""The ``notmiwae-fast`` argument parser, one function per command, and the checks of
the parsed values that argparse does not make."""

from __future__ import annotations

import argparse

import numpy as np

from ._common import CLIError, _check_device
from .bench import cmd_bench
from .demo import DEMO_IMPUTE_SAMPLES, DEMO_ITERATIONS, cmd_demo
from .deploy import cmd_export
from .images import cmd_impute_image, cmd_train_image
from .tables import IMPUTE_SAMPLES, cmd_fit, cmd_impute

# The largest --seed of fit, impute and demo (NumPy's seeds are 32-bit).
MAX_SEED = 2**32 - 1


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each sets ``func``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="notmiwae-fast",
        description="MIWAE / not-MIWAE imputation of data missing "
        "not at random, on fused C++/CUDA kernels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars or messages")

    _add_demo(sub, quiet)
    _add_fit(sub, quiet)
    _add_impute(sub, quiet)
    _add_bench(sub, quiet)
    _add_export(sub, quiet)
    _add_impute_image(sub, quiet)
    _add_train_image(sub, quiet)
    return parser


def _add_demo(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """demo: the paper's MNAR protocol on the breast cancer data."""
    demo = sub.add_parser(
        "demo",
        parents=[quiet],
        help="the paper's MNAR protocol on the "
        "breast cancer data: mean / MIWAE / not-MIWAE RMSE and a plot",
        description="Breast cancer data (scikit-learn), standardised; "
        "the first 15 features miss their values above the mean. Prints "
        "the RMSE of mean, MIWAE and not-MIWAE imputation and saves a "
        "plot of the learnt missing process.",
    )
    demo.add_argument(
        "--out",
        default="notmiwae-demo",
        help="folder for the plot and JSON (default: ./notmiwae-demo)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the models are small, more threads rarely help)",
    )
    demo.add_argument(
        "--max-iter",
        type=int,
        default=DEMO_ITERATIONS,
        help=f"training iterations per model (default {DEMO_ITERATIONS}; the paper: 100000)",
    )
    demo.add_argument(
        "--impute-samples",
        type=int,
        default=DEMO_IMPUTE_SAMPLES,
        help=f"importance samples when imputing (default {DEMO_IMPUTE_SAMPLES}; the paper: 10000)",
    )
    demo.add_argument(
        "--force",
        action="store_true",
        help="overwrite the plot and JSON of an earlier run in --out",
    )
    demo.set_defaults(func=cmd_demo)


def _add_fit(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """fit: training an imputer on a CSV."""
    fit = sub.add_parser(
        "fit",
        parents=[quiet],
        help="train an imputer on a CSV and save it",
        description="Reads a CSV with a header row (empty cells are "
        "missing), trains an imputer and saves it (plain tensors and "
        "data, atomic).",
    )
    fit.add_argument("data", help="input CSV")
    fit.add_argument("model_file", help="where the fitted imputer goes")
    fit.add_argument("--force", action="store_true", help="overwrite an existing model file")
    _add_model_options(fit)
    fit.set_defaults(func=cmd_fit)


def _add_impute(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """impute: filling the empty cells of a CSV."""
    imp = sub.add_parser(
        "impute",
        parents=[quiet],
        help="fill the empty cells of a CSV",
        description="Fills the empty cells of a CSV with a saved imputer "
        "(--model) or one fitted on the spot; writes a new CSV.",
    )
    imp.add_argument("data", help="input CSV (never overwritten)")
    imp.add_argument("output", help="output CSV")
    imp.add_argument(
        "--model",
        default=None,
        help="a file written by 'notmiwae-fast fit' (default: fit on the input)",
    )
    imp.add_argument("--force", action="store_true", help="overwrite an existing output")
    _add_model_options(imp)
    imp.set_defaults(func=cmd_impute)


def _add_bench(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """bench: the benchmark report."""
    bench = sub.add_parser(
        "bench",
        parents=[quiet],
        help="benchmark the fused kernels "
        "against the reference, torch.compile and notmiwae-pytorch",
        description="Times ops (forward + backward), training steps and "
        "imputation, fused against the pure-PyTorch reference, "
        "torch.compile and notmiwae-pytorch 0.1.3 (when installed), with "
        "scaling sweeps over B, K and D; writes bench.json, bench.md and "
        "PNG plots into --out.",
    )
    bench.add_argument(
        "--suite",
        nargs="+",
        default=["all"],
        choices=["ops", "train", "impute", "sweep", "all"],
        help="what to run (default: all)",
    )
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.add_argument("--out", default="bench-results", help="output folder")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="small shapes and few repeats (a smoke run of about a minute)",
    )
    bench.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's default)"
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per case (default 15; 5 with --quick)",
    )
    bench.add_argument("--force", action="store_true", help="overwrite an existing report")
    bench.set_defaults(func=cmd_bench)


def _add_export(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """export: TorchScript or ONNX export."""
    exp = sub.add_parser(
        "export",
        parents=[quiet],
        help="export a fitted imputer to TorchScript or ONNX",
        description="Exports the imputation "
        "function (x, mask) -> imputed x of a fitted imputer (from "
        "'notmiwae-fast fit') or of a saved MIWAE / NotMIWAE, in the data's "
        "original units.",
    )
    exp.add_argument(
        "model",
        help="a file written by 'notmiwae-fast fit' (or by "
        "notmiwae_fast.export.save_model: a MIWAE / NotMIWAE)",
    )
    exp.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    exp.add_argument("--out", required=True, help="the file to write")
    exp.add_argument("--n-samples", type=int, default=1000, help="importance samples K")
    exp.add_argument(
        "--pure",
        action="store_true",
        help="TorchScript without the compiled kernels (loads with torch alone)",
    )
    exp.add_argument(
        "--deterministic",
        action="store_true",
        help="ONNX: the noise becomes inputs eps_z and eps_x",
    )
    exp.add_argument("--force", action="store_true", help="overwrite an existing output")
    exp.set_defaults(func=cmd_export)


def _add_impute_image(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """impute-image: imputing the clipped pixels of an image or a folder."""
    ii = sub.add_parser(
        "impute-image",
        parents=[quiet],
        help="impute the clipped pixels of an image or of every image in a folder",
        description="Values at "
        "or above --clip-level are taken as lost and imputed, each at or "
        "above the clip level, by the bundled not-MIWAE model for grey or "
        "RGB images (or --model). "
        "PNG, JPEG, TIFF or BMP: 8-bit grey or RGB, 16-bit grey, an alpha "
        "channel kept as it is; palette, 1-bit, CMYK, YCbCr, LAB and HSV "
        "images are converted to RGB or grey; 16-bit colour is refused. "
        "JPEG is written at quality 95 without chroma subsampling; a single "
        "image keeps its EXIF and ICC profile. Given a folder, every image "
        "in it (sorted by name; under torchrun split across the processes) "
        "is written under its own name to the output folder, then a "
        "manifest file (notmiwae_fast_manifest.json) marks the folder "
        "complete.",
    )
    ii.add_argument("image", help="input image or folder of images (never overwritten)")
    ii.add_argument("output", help="output image, or output folder for an input folder")
    ii.add_argument(
        "--model",
        default=None,
        help="an image model from 'notmiwae-fast "
        "train-image' (default: the bundled not-MIWAE model for the image's "
        "colour channels, grey or RGB)",
    )
    ii.add_argument("--clip-level", type=float, default=0.75)
    ii.add_argument(
        "--n-samples",
        type=_positive_int,
        default=None,
        help="importance samples K (default: 10, or 20 for a tile model)",
    )
    ii.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        default=3,
        help="a folder's colour channels, choosing the bundled model (default 3)",
    )
    ii.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch seed (image i of a folder: seed + i, whatever the number of processes)",
    )
    ii.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per "
        "process (default 2, fewer when torchrun starts more processes on a "
        "machine than it has cores / 2)",
    )
    ii.add_argument("--force", action="store_true", help="overwrite existing output image(s)")
    ii.set_defaults(func=cmd_impute_image)


def _add_train_image(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    """train-image: training a clipped-pixel model."""
    ti = sub.add_parser(
        "train-image",
        parents=[quiet],
        help="train a clipped-pixel model",
        description="Trains a not-MIWAE (or MIWAE) clipped-pixel model on "
        "photographs (--photos, or those the bundled models learnt from), "
        "brightened by each --gains factor and clipped at each "
        "--clip-levels level. By default it learns from the clipped values "
        "alone (the not-MIWAE setting); --complete also learns from the true "
        "values of the lost ones, for photographs that are not clipped.",
    )
    ti.add_argument("model_file", help="where the model goes")
    ti.add_argument(
        "--photos",
        nargs="+",
        default=None,
        help="image files or folders "
        "(default: the bundled training photographs; needs scikit-image)",
    )
    ti.add_argument(
        "--complete",
        action="store_true",
        help="the photographs are complete: "
        "learn from the true values of the values lost to clipping too",
    )
    ti.add_argument("--kind", choices=["notmiwae", "miwae"], default="notmiwae")
    ti.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        default=3,
        help="1: grey (colour photographs are converted), 3: RGB",
    )
    ti.add_argument("--steps", type=_positive_int, default=4000)
    ti.add_argument("--batch-size", type=_positive_int, default=1024, help="pixels per step")
    ti.add_argument("--n-samples", type=_positive_int, default=8, help="importance samples K")
    ti.add_argument("--latent-dim", type=_positive_int, default=2)
    ti.add_argument(
        "--per-image",
        type=_positive_int,
        default=40_000,
        help="training pixels per photograph, gain and clip level",
    )
    ti.add_argument("--clip-levels", type=float, nargs="+", default=[0.6, 0.7, 0.75, 0.8, 0.9])
    ti.add_argument(
        "--gains",
        type=float,
        nargs="+",
        default=[1.0, 1.3, 1.7],
        help="brightness factors (values above 1 saturate, as over-exposure)",
    )
    ti.add_argument("--seed", type=int, default=0)
    ti.add_argument("--threads", type=int, default=2)
    ti.add_argument("--force", action="store_true", help="overwrite an existing model file")
    ti.set_defaults(func=cmd_train_image)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The options of fit and impute that set the imputer's parameters."""
    g = p.add_argument_group("model (when fitting)")
    g.add_argument(
        "--method",
        choices=["notmiwae", "miwae"],
        default="notmiwae",
        help="not-MIWAE (missing not at random, default) or MIWAE",
    )
    g.add_argument(
        "--missing-process",
        default="auto",
        choices=["auto", "selfmasking", "selfmasking_known_signs", "linear", "nonlinear", "mcar"],
        help="not-MIWAE's model of which values go missing (auto: chosen by held-out bound)",
    )
    g.add_argument(
        "--max-iter",
        type=int,
        default=10_000,
        help="training iterations (optimizer steps; the paper: 100000)",
    )
    g.add_argument("--hidden-dim", type=int, default=128)
    g.add_argument("--latent-dim", type=int, default=None, help="default: D - 1")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument(
        "--impute-samples",
        type=int,
        default=None,
        help=f"importance samples per row when imputing (default "
        f"{IMPUTE_SAMPLES}; with --model: the model's; the paper: 10000)",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--device",
        default=None,
        help="cpu or cuda (default: cuda if present "
        "when fitting, the CPU with --model); an error when cuda is asked for "
        "and there is no GPU",
    )


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; got {text!r}")
    return value


def _positive(args: argparse.Namespace) -> None:
    """CLIError for a parsed value out of its range (sizes, --seed, --lr, --clip-level,
    the --device of fit and impute)."""
    for name in (
        "max_iter",
        "impute_samples",
        "repeats",
        "threads",
        "batch",
        "features",
        "impute_rows",
        "batch_size",
        "hidden_dim",
        "latent_dim",
        "n_samples",
        "steps",
        "patches",
    ):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1; got {value}")
    if args.command in ("fit", "impute", "demo") and not 0 <= args.seed <= MAX_SEED:
        raise CLIError(f"--seed must be in [0, {MAX_SEED}]; got {args.seed}")
    lr = getattr(args, "lr", None)
    if lr is not None and not (np.isfinite(lr) and lr > 0):
        raise CLIError(f"--lr must be a finite number > 0; got {lr}")
    clip = getattr(args, "clip_level", None)
    if clip is not None and not 0 < clip <= 1:
        raise CLIError(f"--clip-level must be in (0, 1]; got {clip}")
    if args.command in ("fit", "impute"):
        _check_device(args.device)
