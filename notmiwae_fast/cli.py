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
diverged, see :class:`notmiwae_fast.trainer.TrainingWarning`) is one line
``notmiwae-fast COMMAND: warning: ...`` on stderr, --quiet or not. No command overwrites its input file; an
existing output is refused unless ``--force``.

``fit``, ``impute`` and ``impute-image`` also run under ``torchrun`` (several processes,
one or more machines): every rank reads the input and trains data-parallel, the
imputation (rows, or the images of a folder) is split across the ranks, rank 0 alone
writes the model / output CSV (atomically, rows in the original order) and prints. When
a step fails on any rank, every rank stops with status 2, rank 0 prints one line naming
the failed ranks, and no output is written (see :mod:`notmiwae_fast.distributed`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn, Optional, Sequence

import numpy as np

__all__ = ["main", "run"]

DEMO_ITERATIONS = 8000
DEMO_IMPUTE_SAMPLES = 1000
IMPUTE_SAMPLES = 1000  # fit / impute without --impute-samples


class CLIError(Exception):
    """An error reported as one line, exit status 2."""


# -- files -----------------------------------------------------------------------------
def read_csv_exact(path, **kwargs):
    """pandas.read_csv that parses every number to the nearest double, so observed
    values pass through fit / impute bit for bit (pandas 3 does by default; pandas 2's
    default parser can be one unit in the last place off)."""
    import warnings

    import pandas as pd
    kwargs.setdefault("float_precision", "round_trip")
    with warnings.catch_warnings():  # pandas 3 deprecates the argument (its default is exact)
        warnings.filterwarnings("ignore", message=".*float_precision.*")
        return pd.read_csv(path, **kwargs)


def _check_csv_layout(path: Path) -> int:
    """The number of data rows of the CSV ``path``, once its layout is known to be one
    pandas reads as written: UTF-8 text, a header row of unique, non-empty names, and
    every other row with the header's number of fields (blank and white lines are
    skipped, as pandas skips them). pandas would rename duplicate or empty names ('a.1',
    'Unnamed: 0') and pad a short row with missing values, which would then be imputed:
    a CLIError naming the line instead."""
    import csv
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            last_line = [""]  # the text of the line the reader read last

            def lines():
                for line in f:
                    last_line[0] = line
                    yield line
            reader = csv.reader(lines())
            header = next(reader, None)
            if header is None:
                raise CLIError(f"input file {path} is empty")
            names = [name.strip() for name in header]
            if not any(names):
                raise CLIError(f"input file {path}: line 1, the header, has no column names")
            for j, name in enumerate(names):
                if not name:
                    raise CLIError(f"input file {path}: column {j + 1} of the header "
                                   "(line 1) has no name; every column needs one")
                if name in names[:j]:
                    raise CLIError(f"input file {path}: the header (line 1) names column "
                                   f"{name!r} twice (columns {names.index(name) + 1} and "
                                   f"{j + 1}); column names must be unique")
            rows = 0
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()
                               and '"' not in last_line[0]):
                    continue  # a blank or white line ('""' is a row of one empty field)
                if len(row) != len(header):
                    raise CLIError(f"input file {path}: line {reader.line_num} has "
                                   f"{len(row)} field(s), the header {len(header)}")
                rows += 1
    except UnicodeDecodeError as err:
        raise CLIError(f"input file {path} is not UTF-8 text (byte {err.start} cannot be "
                       "decoded)") from None
    except csv.Error as err:
        raise CLIError(f"input file {path} is not a valid CSV: line {reader.line_num}: "
                       f"{err}") from None
    return rows


def _read_csv(path: str):
    """A numeric DataFrame from a CSV with a header row (empty cells become NaN).

    The layout is checked first (:func:`_check_csv_layout`). Columns of whole numbers
    with empty cells come back as pandas' nullable Int64 (so their imputations are
    rounded and written as integers), True / False columns as nullable booleans, other
    number columns as float64. Every failure is a CLIError naming the file."""
    import pandas as pd
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"input file {path} does not exist")
    rows = _check_csv_layout(p)
    try:
        df = read_csv_exact(p, dtype_backend="numpy_nullable")
    except pd.errors.EmptyDataError:
        raise CLIError(f"input file {path} is empty") from None
    except (pd.errors.ParserError, ValueError, OverflowError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CLIError(f"input file {path} is not a valid CSV: {first}") from None
    if df.shape[0] == 0:
        raise CLIError(f"input file {path} has a header but no data rows")
    if df.shape[0] != rows:  # a layout the two readers see differently (quotes, ...)
        raise CLIError(f"input file {path} is not a valid CSV: {rows} data rows by its "
                       f"lines, {df.shape[0]} as a table (check its quotes)")
    from pandas.api.types import is_bool_dtype, is_float_dtype, is_numeric_dtype
    for name in df.columns:
        dtype = df[name].dtype
        if not (is_numeric_dtype(dtype) or is_bool_dtype(dtype)):
            raise CLIError(f"input file {path}: column {name!r} is not numeric")
        if is_float_dtype(dtype):  # Float64 (nullable) -> float64 with NaN
            df[name] = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
    return df


def _check_output(output: str, inputs: Sequence[str], force: bool) -> Path:
    """``output`` as a Path, once it is known to be writable, before any long work: not
    an input, not an existing file unless ``force``, never anything but a regular file
    (a device such as /dev/null, a FIFO or a folder is refused even with ``force``: the
    atomic rename would replace it), and in a folder that takes a new file."""
    from ._common.io import check_writable
    out = Path(output)
    for given in inputs:
        if given is not None and Path(given).exists() and out.exists() and \
                out.resolve() == Path(given).resolve():
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
    from . import distributed
    return distributed.collectively(
        what, describe=lambda exc: str(exc) if isinstance(exc, CLIError)
        else (str(exc) or type(exc).__name__))


def _is_main() -> bool:
    """True on rank 0 of a distributed run, and without one."""
    from . import distributed
    return distributed.context().is_main


def _write_atomic(path: Path, write, binary: bool = False) -> None:
    """Calls write(file_object) on a temporary file next to ``path``, then renames."""
    from ._common.io import write_atomic
    write_atomic(path, write, text=not binary)


def _read_model_file(path: str):
    """What ``path`` holds, on the CPU: a fitted imputer (``notmiwae-fast fit``,
    imputer.save_imputer), or a MIWAE / NotMIWAE (export.save_model). The file is read
    with torch.load(weights_only=True), so loading it runs no code the file names; a
    CLIError naming the file when it does not exist, cannot be read, holds pickled
    Python objects or neither of those."""
    from ._common import io as _io
    from . import export
    from .impute.imputer import _imputer_from_state
    if not Path(path).is_file():
        raise CLIError(f"model file {path} does not exist")
    try:
        obj = _io.load_plain(path, "model file", "cpu", allowed=[_imputer_from_state])
        if isinstance(obj, dict) and obj.get("format") == export.MODEL_FORMAT:
            obj = export.model_from_state(obj)
    except _io.FormatError as err:
        raise CLIError(f"model file {path} does not hold a fitted imputer or a model saved "
                       f"by this package ({err})") from None
    except ValueError as err:
        raise CLIError(str(err)) from None
    return obj


def _load_model(path: str, device: Optional[str] = None):
    """The fitted imputer in ``path``, set to impute on ``device`` (--device; default
    the CPU)."""
    from .impute.imputer import _BaseIWImputer
    imputer = _read_model_file(path)
    if not isinstance(imputer, _BaseIWImputer):
        raise CLIError(f"model file {path} does not hold a fitted imputer")
    imputer.set_params(device=device or "cpu")
    return imputer


# -- shared options ----------------------------------------------------------------------
def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (when fitting)")
    g.add_argument("--method", choices=["notmiwae", "miwae"], default="notmiwae",
                   help="not-MIWAE (missing not at random, default) or MIWAE")
    g.add_argument("--missing-process", default="selfmasking",
                   choices=["selfmasking", "selfmasking_known_signs", "linear", "nonlinear"],
                   help="not-MIWAE's model of which values go missing")
    g.add_argument("--max-iter", type=int, default=10_000,
                   help="training iterations (optimizer steps; the paper: 100000)")
    g.add_argument("--hidden-dim", type=int, default=128)
    g.add_argument("--latent-dim", type=int, default=None, help="default: D - 1")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--impute-samples", type=int, default=None,
                   help=f"importance samples per row when imputing (default "
                   f"{IMPUTE_SAMPLES}; with --model: the model's; the paper: 10000)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present "
                   "when fitting, the CPU with --model); an error when cuda is asked for "
                   "and there is no GPU")


# The imputer's parameters and the options that set them (for its error messages).
_OPTION_OF_PARAMETER = {"max_iter": "--max-iter", "hidden_dim": "--hidden-dim",
                        "latent_dim": "--latent-dim", "batch_size": "--batch-size",
                        "lr": "--lr", "n_impute_samples": "--impute-samples",
                        "random_state": "--seed", "device": "--device",
                        "missing_process": "--missing-process"}


def _checked_imputer(imputer, df, path: str) -> None:
    """imputer._fit_input(df) (the parameters and the data checked), with an error about
    a parameter reworded to name the command's option (--seed, not 'random_state') and
    one about the data to name the input file ``path``."""
    import re
    try:
        imputer._fit_input(df)
    except ValueError as err:
        message = " ".join(str(err).split())
        prefix = "argument 'X': "
        if message.startswith(prefix):
            raise CLIError(f"input file {path}: {message[len(prefix):]}") from None
        for name, option in _OPTION_OF_PARAMETER.items():
            if re.search(rf"(The|argument) '{name}'( parameter of \w+)?", message):
                message = re.sub(rf"(The|argument) '{name}'( parameter of \w+)?", option,
                                 message, count=1)
                raise CLIError(message[0].upper() + message[1:] if message[0] != "-"
                               else message) from None
        raise


def _new_imputer(args):
    from .impute.imputer import MIWAEImputer, NotMIWAEImputer
    common = dict(max_iter=args.max_iter, hidden_dim=args.hidden_dim,
                  latent_dim=args.latent_dim, batch_size=args.batch_size, lr=args.lr,
                  n_impute_samples=IMPUTE_SAMPLES if args.impute_samples is None
                  else args.impute_samples, random_state=args.seed,
                  device=args.device, verbose=not args.quiet)
    if args.method == "miwae":
        return MIWAEImputer(**common)
    return NotMIWAEImputer(missing_process=args.missing_process, **common)


def _say(args, *text) -> None:
    if not args.quiet and _is_main():
        print(*text, flush=True)


# -- commands ----------------------------------------------------------------------------
def cmd_fit(args) -> int:
    with _all_ranks("checking the files"):
        out = _check_output(args.model_file, [args.data], args.force) if _is_main() \
            else None
        df = _read_csv(args.data)
        imputer = _new_imputer(args)
        _checked_imputer(imputer, df, args.data)
    imputer.fit(df)  # under torchrun: data-parallel on every rank, the same model on all
    with _all_ranks("saving the model"):
        if _is_main():
            _save_or_rescue(imputer, out)
    _say(args, f"fitted {type(imputer).__name__} on {df.shape[0]} rows x {df.shape[1]} "
               f"columns ({int(df.isna().sum().sum())} missing); final loss "
               f"{float(np.mean(imputer.loss_curve_[-100:])):.4f}; saved to {out}")
    return 0


def _save_or_rescue(imputer, out: Path) -> None:
    """Saves the fitted imputer to ``out``; when that fails (the folder went away, the
    disk is full), saves it in the current or the temporary folder instead, so the
    training is not lost, and raises a CLIError that says where it went."""
    from ._common.io import save_rescued
    from .impute.imputer import _imputer_state, _SavedImputer, save_imputer
    try:
        save_imputer(imputer, out)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        rescued = save_rescued(_SavedImputer(_imputer_state(imputer)), out)
        where = (f"the fitted model was saved to {rescued} instead" if rescued else
                 "the fitted model could not be saved anywhere else either")
        raise CLIError(f"cannot write the model file {out} ({reason}); {where}") from None


def cmd_impute(args) -> int:
    from . import distributed
    with _all_ranks("checking the files"):
        out = _check_output(args.output, [args.data, args.model], args.force) \
            if _is_main() else None
        df = _read_csv(args.data)
        imputer = _impute_model(args, df)
    if args.model is None:
        imputer.fit(df)  # under torchrun: data-parallel on every rank
    result = distributed.transform_sharded(imputer, df)  # None except on rank 0
    with _all_ranks("writing the output"):
        if _is_main():
            _write_atomic(out, lambda f: result.to_csv(f, index=False))
    _say(args, f"imputed {int(df.isna().sum().sum())} missing values in {df.shape[0]} rows; "
               f"wrote {out}")
    return 0


def _impute_model(args, df):
    """The imputer ``impute`` uses: the one in --model (its columns checked against the
    CSV's header), or a new one (unfitted; its parameters and the data checked)."""
    if args.model is not None:
        imputer = _load_model(args.model, args.device)
        expected = [str(c) for c in getattr(imputer, "feature_names_in_", [])]
        if expected and list(map(str, df.columns)) != expected:
            extra = [c for c in df.columns if str(c) not in expected]
            absent = [c for c in expected if c not in map(str, df.columns)]
            detail = (f"unknown columns {extra}" if extra else "") + \
                     ("; " if extra and absent else "") + \
                     (f"missing columns {absent}" if absent else "")
            raise CLIError(f"header of {args.data} does not match the model's columns "
                           f"({detail or 'different order'}); expected {expected}")
        imputer.set_params(verbose=not args.quiet)  # the saved one was the fit's
        if args.impute_samples is not None:
            imputer.set_params(n_impute_samples=args.impute_samples)
        return imputer
    imputer = _new_imputer(args)
    _checked_imputer(imputer, df, args.data)
    return imputer


def _with_threads(n_threads):
    """Decorator: run the command with torch limited to the number of threads
    ``n_threads(args)``, the previous setting restored after."""
    def wrap(command):
        def run(args) -> int:
            import torch
            before = torch.get_num_threads()
            torch.set_num_threads(n_threads(args))
            try:
                return command(args)
            finally:
                torch.set_num_threads(before)
        run.__doc__ = command.__doc__
        return run
    return wrap


@_with_threads(lambda args: args.threads)
def cmd_demo(args) -> int:
    from .experiments import protocol
    from . import utils
    from .experiments.datasets import load_breast_cancer
    from .experiments.plots import plot_missing_process

    out_dir = Path(args.out)
    plot_path, summary_path = out_dir / "missing_process.png", out_dir / "demo_results.json"
    for path in (summary_path, plot_path):
        _check_output(path, [], args.force)
    X, names = load_breast_cancer()
    X_true, X_missing, s = protocol.mnar_table1(X, args.seed)
    D = X.shape[1]
    _say(args, f"breast cancer (scikit-learn): {X.shape[0]} rows x {D} features, "
               f"standardised; the first {D // 2} features miss their values above the "
               f"mean ({int((s == 0).sum())} missing entries, "
               f"{100 * (s == 0).mean():.1f}%)")
    _say(args, f"training MIWAE and not-MIWAE (self-masking) for {args.max_iter} "
               f"iterations each, imputing with {args.impute_samples} importance samples")
    results = {}
    fitted = {}
    for method in ("mean", "miwae", "notmiwae_selfmasking"):
        start = time.perf_counter()
        imputer = protocol.make_imputer(method, args.max_iter, args.impute_samples,
                                        args.seed, D, verbose=not args.quiet)
        X_imputed = imputer.fit_transform(X_missing)
        results[protocol.METHODS[method][0]] = {
            "rmse": utils.missing_rmse(X_true, X_imputed, s),
            "seconds": time.perf_counter() - start}
        fitted[method] = imputer
    width = max(map(len, results))
    print(f"{'method':<{width}}  RMSE (missing entries, standardised)")
    for label, r in results.items():
        print(f"{label:<{width}}  {r['rmse']:.3f}   ({r['seconds']:.1f} s)")
    columns = list(range(D // 2))
    plot = plot_missing_process(fitted["notmiwae_selfmasking"], X_true, columns,
                                thresholds=X_true[:, columns].mean(axis=0), names=names,
                                path=plot_path)
    summary = {"data": "sklearn breast cancer", "iterations": args.max_iter,
               "impute_samples": args.impute_samples, "seed": args.seed,
               "results": results, "plot": str(plot)}
    _write_atomic(summary_path, lambda f: json.dump(summary, f, indent=2))
    print(f"plot of the learnt missing process: {plot}")
    return 0


def cmd_bench(args) -> int:
    from . import benchmark
    _check_device(args.device)
    out = Path(args.out)
    if (out / "bench.json").exists() and not args.force:
        raise CLIError(f"{out / 'bench.json'} exists; pass --force to overwrite it")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is not a folder")
    for name in ("bench.json", "bench.md"):  # before the long runs
        _check_output(str(out / name), [], force=True)
    report = benchmark.run(args.suite, device=args.device, out_dir=out, quick=args.quick,
                           threads=args.threads, repeats=args.repeats,
                           log=(lambda text: None) if args.quiet else print)
    if not args.quiet:
        print(benchmark.markdown(report))
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}"
          + "".join(f", {p}" for p in report["plots"]) + f" in {report['seconds']:.0f} s")
    return 0


def cmd_export(args) -> int:
    import torch
    from . import export
    out = _check_output(args.out, [args.model], args.force)
    obj = _read_model_file(args.model)
    model = getattr(obj, "model_", obj)  # a fitted imputer (notmiwae-fast fit) or a model
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"model file {args.model} holds neither a fitted imputer nor a model")
    if args.format == "torchscript":
        export.to_torchscript(model, out, n_samples=args.n_samples, fused=not args.pure)
    else:
        export.to_onnx(model, out, n_samples=args.n_samples, deterministic=args.deterministic)
    _say(args, f"exported {type(model).__name__} ({args.format}, K = {args.n_samples}) "
               f"to {out}")
    return 0


def _read_image(path: str):
    """(pixels, metadata to carry over: EXIF, ICC profile) of an image file."""
    from ._common.image_io import read_image
    return read_image(path, metadata=True)


def _check_image_output(path: Path, array) -> None:
    from ._common.image_io import check_writable
    check_writable(path, array)


def _write_image(path: Path, array, metadata=None) -> None:
    from ._common.image_io import write_image
    write_image(path, array, metadata)


def _image_threads(args) -> int:
    """--threads, or by default 2 per process, fewer when torchrun starts several
    processes on this machine (they share its cores)."""
    if args.threads is not None:
        return args.threads
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // max(1, per_node)))


@_with_threads(_image_threads)
def cmd_impute_image(args) -> int:
    import torch
    from . import images
    if Path(args.image).is_dir():
        return _impute_image_folder(args)
    with _all_ranks("imputing the image"):
        if _is_main():  # one image: rank 0 does it, the others wait
            out = _check_output(args.output, [args.image] + ([args.model] if args.model
                                                            else []), args.force)
            image, metadata = _read_image(args.image)
            _check_image_output(out, image)
            colour = images._colour(image, images._colour_channels(image))  # without alpha
            model = _image_model(args, colour.shape[2])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                result = images.impute_image(model, image, clip_level=args.clip_level,
                                             n_samples=args.n_samples,
                                             progress=not args.quiet)
            _write_image(out, result, metadata)
            lost = images.count_lost(colour, args.clip_level)
    if _is_main():
        _say(args, f"imputed {lost} values at or above {args.clip_level}; wrote {out}")
    return 0


def _image_model(args, channels: int = 3):
    """--model, or the bundled model for the image's colour channels (grey or RGB)."""
    from . import images
    if args.model is not None:
        return images.load_image_model(args.model)
    if channels not in (1, 3):
        raise CLIError(f"{args.image} has {channels} colour channels; the bundled models "
                       "are for grey (1) and RGB (3) images")
    return images.load_image_model(channels=channels)


def _impute_image_folder(args) -> int:
    """impute-image IN_FOLDER OUT_FOLDER: the images split across the ranks."""
    from . import distributed
    in_dir, out_dir = Path(args.image), Path(args.output)
    with _all_ranks("checking the files"):
        if out_dir.exists() and not out_dir.is_dir():
            raise CLIError(f"output {out_dir} is a file; the input {in_dir} is a folder, "
                           "so the output must be a folder too")
        if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
            raise CLIError(f"output {out_dir} is the input folder; input images are never "
                           "overwritten")
        model = _image_model(args, args.channels)
    manifest = distributed.impute_image_folder(
        model, in_dir, out_dir, clip_level=args.clip_level, n_samples=args.n_samples,
        seed=args.seed, overwrite=args.force, progress=not args.quiet)
    if manifest is not None:
        _say(args, f"imputed the values at or above {args.clip_level} in "
                   f"{len(manifest['images'])} images of {in_dir} on "
                   f"{manifest['processes']} process(es); wrote them and "
                   f"{distributed.MANIFEST_NAME} to {out_dir}")
    return 0


@_with_threads(lambda args: args.threads)
def cmd_train_image(args) -> int:
    import torch
    from . import images
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
                raise CLIError(f"photograph {path} has {colour.shape[2]} colour channel(s); "
                               f"--channels is {args.channels}")
            photos[str(path)] = colour
    else:
        photos = images.bundled_photographs()
        if args.channels == 1:
            photos = {k: images.to_grey(v) for k, v in photos.items()}
    torch.manual_seed(args.seed)
    pixels = images.training_pixels(list(photos.values()), args.clip_levels, args.gains,
                                    per_image=args.per_image, seed=args.seed)
    model = images.ClippedPixelModel(args.channels, kind=args.kind,
                                     latent_dim=args.latent_dim)
    losses = images.train_clipped(model, pixels, steps=args.steps, batch_size=args.batch_size,
                                  n_samples=args.n_samples, complete=args.complete,
                                  progress=not args.quiet)
    images.save_image_model(model, out)
    data = "complete photographs" if args.complete else "clipped photographs only"
    _say(args, f"trained {args.kind} on {len(photos)} photographs ({data}, {args.steps} "
               f"steps, final loss {np.mean(losses[-50:]):.3f}); saved to {out}")
    return 0


def _photo_files(paths: Sequence[str]) -> list:
    """The image files named, and those directly inside the folders named."""
    from ._common.image_io import IMAGE_SUFFIXES
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


# -- the parser ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notmiwae-fast", description="MIWAE / not-MIWAE imputation of data missing "
        "not at random, on fused C++/CUDA kernels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars or messages")

    demo = sub.add_parser("demo", parents=[quiet], help="the paper's MNAR protocol on the "
                          "breast cancer data: mean / MIWAE / not-MIWAE RMSE and a plot",
                          description="Breast cancer data (scikit-learn), standardised; "
                          "the first 15 features miss their values above the mean. Prints "
                          "the RMSE of mean, MIWAE and not-MIWAE imputation and saves a "
                          "plot of the learnt missing process.")
    demo.add_argument("--out", default="notmiwae-demo", help="folder for the plot and JSON "
                      "(default: ./notmiwae-demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: "
                      "the models are small, more threads rarely help)")
    demo.add_argument("--max-iter", type=int, default=DEMO_ITERATIONS,
                      help=f"training iterations per model (default {DEMO_ITERATIONS}; "
                      "the paper: 100000)")
    demo.add_argument("--impute-samples", type=int, default=DEMO_IMPUTE_SAMPLES,
                      help=f"importance samples when imputing (default "
                      f"{DEMO_IMPUTE_SAMPLES}; the paper: 10000)")
    demo.add_argument("--force", action="store_true", help="overwrite the plot and JSON "
                      "of an earlier run in --out")
    demo.set_defaults(func=cmd_demo)

    fit = sub.add_parser("fit", parents=[quiet], help="train an imputer on a CSV and save it",
                         description="Reads a CSV with a header row (empty cells are "
                         "missing), trains an imputer and saves it (plain tensors and "
                         "data, atomic).")
    fit.add_argument("data", help="input CSV")
    fit.add_argument("model_file", help="where the fitted imputer goes")
    fit.add_argument("--force", action="store_true", help="overwrite an existing model file")
    _add_model_options(fit)
    fit.set_defaults(func=cmd_fit)

    imp = sub.add_parser("impute", parents=[quiet], help="fill the empty cells of a CSV",
                         description="Fills the empty cells of a CSV with a saved imputer "
                         "(--model) or one fitted on the spot; writes a new CSV.")
    imp.add_argument("data", help="input CSV (never overwritten)")
    imp.add_argument("output", help="output CSV")
    imp.add_argument("--model", default=None, help="a file written by 'notmiwae-fast fit' "
                     "(default: fit on the input)")
    imp.add_argument("--force", action="store_true", help="overwrite an existing output")
    _add_model_options(imp)
    imp.set_defaults(func=cmd_impute)

    bench = sub.add_parser("bench", parents=[quiet], help="benchmark the fused kernels "
                           "against the reference, torch.compile and notmiwae-pytorch",
                           description="Times ops (forward + backward), training steps and "
                           "imputation, fused against the pure-PyTorch reference, "
                           "torch.compile and notmiwae-pytorch 0.1.3 (when installed), with "
                           "scaling sweeps over B, K and D; writes bench.json, bench.md and "
                           "PNG plots into --out.")
    bench.add_argument("--suite", nargs="+", default=["all"],
                       choices=["ops", "train", "impute", "sweep", "all"],
                       help="what to run (default: all)")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.add_argument("--out", default="bench-results", help="output folder")
    bench.add_argument("--quick", action="store_true", help="small shapes and few repeats "
                       "(a smoke run of about a minute)")
    bench.add_argument("--threads", type=int, default=None,
                       help="CPU threads (default: torch's default)")
    bench.add_argument("--repeats", type=int, default=None,
                       help="timed rounds per case (default 15; 5 with --quick)")
    bench.add_argument("--force", action="store_true", help="overwrite an existing report")
    bench.set_defaults(func=cmd_bench)

    exp = sub.add_parser("export", parents=[quiet], help="export a fitted imputer to "
                         "TorchScript or ONNX", description="Exports the imputation "
                         "function (x, mask) -> imputed x of a fitted imputer (from "
                         "'notmiwae-fast fit') or of a saved MIWAE / NotMIWAE, in the data's "
                         "original units.")
    exp.add_argument("model", help="a file written by 'notmiwae-fast fit' (or by "
                     "notmiwae_fast.export.save_model: a MIWAE / NotMIWAE)")
    exp.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    exp.add_argument("--out", required=True, help="the file to write")
    exp.add_argument("--n-samples", type=int, default=1000, help="importance samples K")
    exp.add_argument("--pure", action="store_true", help="TorchScript without the compiled "
                     "kernels (loads with torch alone)")
    exp.add_argument("--deterministic", action="store_true", help="ONNX: the noise becomes "
                     "inputs eps_z and eps_x")
    exp.add_argument("--force", action="store_true", help="overwrite an existing output")
    exp.set_defaults(func=cmd_export)

    ii = sub.add_parser("impute-image", parents=[quiet], help="impute the clipped pixels of "
                        "an image or of every image in a folder", description="Values at "
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
                        "complete.")
    ii.add_argument("image", help="input image or folder of images (never overwritten)")
    ii.add_argument("output", help="output image, or output folder for an input folder")
    ii.add_argument("--model", default=None, help="an image model from 'notmiwae-fast "
                    "train-image' (default: the bundled not-MIWAE model for the image's "
                    "colour channels, grey or RGB)")
    ii.add_argument("--clip-level", type=float, default=0.75)
    ii.add_argument("--n-samples", type=_positive_int, default=None,
                    help="importance samples K (default: 10, or 20 for a tile model)")
    ii.add_argument("--channels", type=int, choices=[1, 3], default=3,
                    help="a folder's colour channels, choosing the bundled model (default 3)")
    ii.add_argument("--seed", type=int, default=0, help="torch seed (image i of a folder: "
                    "seed + i, whatever the number of processes)")
    ii.add_argument("--threads", type=int, default=None, help="torch CPU threads per "
                    "process (default 2, fewer when torchrun starts more processes on a "
                    "machine than it has cores / 2)")
    ii.add_argument("--force", action="store_true", help="overwrite existing output "
                    "image(s)")
    ii.set_defaults(func=cmd_impute_image)

    ti = sub.add_parser("train-image", parents=[quiet], help="train a clipped-pixel model",
                        description="Trains a not-MIWAE (or MIWAE) clipped-pixel model on "
                        "photographs (--photos, or those the bundled models learnt from), "
                        "brightened by each --gains factor and clipped at each "
                        "--clip-levels level. By default it learns from the clipped values "
                        "alone (the not-MIWAE setting); --complete also learns from the true "
                        "values of the lost ones, for photographs that are not clipped.")
    ti.add_argument("model_file", help="where the model goes")
    ti.add_argument("--photos", nargs="+", default=None, help="image files or folders "
                    "(default: the bundled training photographs; needs scikit-image)")
    ti.add_argument("--complete", action="store_true", help="the photographs are complete: "
                    "learn from the true values of the values lost to clipping too")
    ti.add_argument("--kind", choices=["notmiwae", "miwae"], default="notmiwae")
    ti.add_argument("--channels", type=int, choices=[1, 3], default=3,
                    help="1: grey (colour photographs are converted), 3: RGB")
    ti.add_argument("--steps", type=_positive_int, default=4000)
    ti.add_argument("--batch-size", type=_positive_int, default=1024, help="pixels per step")
    ti.add_argument("--n-samples", type=_positive_int, default=8, help="importance samples K")
    ti.add_argument("--latent-dim", type=_positive_int, default=2)
    ti.add_argument("--per-image", type=_positive_int, default=40_000,
                    help="training pixels per photograph, gain and clip level")
    ti.add_argument("--clip-levels", type=float, nargs="+",
                    default=[0.6, 0.7, 0.75, 0.8, 0.9])
    ti.add_argument("--gains", type=float, nargs="+", default=[1.0, 1.3, 1.7],
                    help="brightness factors (values above 1 saturate, as over-exposure)")
    ti.add_argument("--seed", type=int, default=0)
    ti.add_argument("--threads", type=int, default=2)
    ti.add_argument("--force", action="store_true", help="overwrite an existing model file")
    ti.set_defaults(func=cmd_train_image)
    return parser


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; got {text!r}")
    return value


# The largest --seed of fit, impute and demo (NumPy's seeds are 32-bit).
MAX_SEED = 2**32 - 1


def _positive(args) -> None:
    for name in ("max_iter", "impute_samples", "repeats", "threads", "batch", "features",
                 "impute_rows", "batch_size", "hidden_dim", "latent_dim", "n_samples",
                 "steps", "patches"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1; got {value}")
    if args.command in ("fit", "impute", "demo"):
        if not 0 <= args.seed <= MAX_SEED:
            raise CLIError(f"--seed must be in [0, {MAX_SEED}]; got {args.seed}")
    lr = getattr(args, "lr", None)
    if lr is not None and not (np.isfinite(lr) and lr > 0):
        raise CLIError(f"--lr must be a finite number > 0; got {lr}")
    clip = getattr(args, "clip_level", None)
    if clip is not None and not 0 < clip <= 1:
        raise CLIError(f"--clip-level must be in (0, 1]; got {clip}")
    if args.command in ("fit", "impute"):
        _check_device(args.device)


def _check_device(device: Optional[str]) -> None:
    """CLIError naming --device when ``device`` is not a device or a CUDA device this
    machine lacks (None: the default, always fine)."""
    if device is None:
        return
    from ._common import validate as _validate
    try:
        _validate.device(device, "--device")
    except ValueError as err:
        raise CLIError(str(err)) from None


# Commands that run under torchrun (the others run as they would in one process).
DISTRIBUTED_COMMANDS = ("fit", "impute", "impute-image")
# How long a rank waits in a collective (for the slowest rank's share of the rows or
# images) before the job fails. A rank that dies is noticed at once (lost connection).
DISTRIBUTED_TIMEOUT_S = 4 * 3600


def _start_distributed(args) -> bool:
    """Under torchrun (WORLD_SIZE > 1, no process group yet) starts the process group for
    a command that runs distributed: NCCL when it trains on CUDA, else gloo. Returns
    whether it started one."""
    if args.command not in DISTRIBUTED_COMMANDS or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    import torch
    from . import distributed
    if distributed.context().distributed:
        return False
    device = torch.device("cpu")
    if args.command in ("fit", "impute") and getattr(args, "model", None) is None:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    distributed.init_from_env(device, timeout_s=DISTRIBUTED_TIMEOUT_S)
    return True


def _report(args, err: Exception) -> int:
    """Prints the error as one line; returns 2. In a distributed run an error every rank
    raised alike (RankFailure) is printed by rank 0 only, any other with its rank."""
    from . import distributed
    ctx = distributed.context()
    message = " ".join(str(err).split()) or type(err).__name__
    agreed = isinstance(err, distributed.RankFailure)
    if ctx.distributed and not agreed:
        import torch.distributed as dist
        if isinstance(err, dist.DistError) or any(  # gloo / NCCL: a peer went away
                m in message for m in ("closed by peer", "reset by peer", "remote worker")):
            message = ("lost the connection to another process, which probably failed "
                       f"(see its message) ({message.split('. ')[0]})")
        message = f"rank {ctx.rank}: {message}"
    if ctx.is_main or not agreed:
        print(f"notmiwae-fast {args.command}: error: {message}", file=sys.stderr, flush=True)
    if ctx.distributed and agreed:
        import torch.distributed as dist
        dist.barrier()  # the others exit only once rank 0 has printed
    return 2


def _warning_printer(args):
    """A ``warnings.showwarning`` that prints a warning as one line on stderr, on rank
    0 only (every rank trains alike): ``notmiwae-fast COMMAND: warning: message``."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if _is_main():
            text = " ".join(str(message).split())
            print(f"notmiwae-fast {args.command}: warning: {text}", file=sys.stderr,
                  flush=True)
    return show


def main(argv: Optional[Sequence[str]] = None) -> int:
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
        return subprocess.call([sys.executable, "-m", "notmiwae_fast.cli", *argv],
                               env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
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
    except Exception as err:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("NOTMIWAE_FAST_DEBUG"):
            raise
        return _report(args, err)
    finally:
        if started:
            from . import distributed
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


if __name__ == "__main__":
    run()
