"""``fit`` and ``impute``: the table commands (a CSV in; a fitted imputer or a CSV out).
Both also run under torchrun (see :mod:`notmiwae_fast.distributed`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._common import CLIError, _all_ranks, _check_output, _is_main, _say, _write_atomic
from ._files import _load_model, _read_csv

IMPUTE_SAMPLES = 1000  # fit / impute without --impute-samples

# The imputer's parameters and the options that set them (for its error messages).
_OPTION_OF_PARAMETER = {
    "max_iter": "--max-iter",
    "hidden_dim": "--hidden-dim",
    "latent_dim": "--latent-dim",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "n_impute_samples": "--impute-samples",
    "random_state": "--seed",
    "device": "--device",
    "missing_process": "--missing-process",
}


def _checked_imputer(imputer, df, path: str) -> None:
    """imputer.check_fit_input(df) (the parameters and the data checked), with an error about
    a parameter reworded to name the command's option (--seed, not 'random_state') and
    one about the data to name the input file ``path``."""
    import re

    try:
        imputer.check_fit_input(df)
    except ValueError as err:
        message = " ".join(str(err).split())
        prefix = "argument 'X': "
        if message.startswith(prefix):
            raise CLIError(f"input file {path}: {message[len(prefix) :]}") from None
        for name, option in _OPTION_OF_PARAMETER.items():
            if re.search(rf"(The|argument) '{name}'( parameter of \w+)?", message):
                message = re.sub(
                    rf"(The|argument) '{name}'( parameter of \w+)?", option, message, count=1
                )
                raise CLIError(
                    message[0].upper() + message[1:] if message[0] != "-" else message
                ) from None
        raise


def _new_imputer(args):
    from ..impute.imputer import MIWAEImputer, NotMIWAEImputer

    common = {
        "max_iter": args.max_iter,
        "hidden_dim": args.hidden_dim,
        "latent_dim": args.latent_dim,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "n_impute_samples": IMPUTE_SAMPLES if args.impute_samples is None else args.impute_samples,
        "random_state": args.seed,
        "device": args.device,
        "verbose": not args.quiet,
    }
    if args.method == "miwae":
        return MIWAEImputer(**common)
    return NotMIWAEImputer(missing_process=args.missing_process, **common)


def cmd_fit(args: argparse.Namespace) -> int:
    """notmiwae-fast fit DATA MODEL_FILE: trains an imputer on a CSV and saves it."""
    with _all_ranks("checking the files"):
        out = _check_output(args.model_file, [args.data], args.force) if _is_main() else None
        df = _read_csv(args.data)
        imputer = _new_imputer(args)
        _checked_imputer(imputer, df, args.data)
    imputer.fit(df)  # under torchrun: data-parallel on every rank, the same model on all
    with _all_ranks("saving the model"):
        if _is_main():
            _save_or_rescue(imputer, out)
    _say(
        args,
        f"fitted {type(imputer).__name__} on {df.shape[0]} rows x {df.shape[1]} "
        f"columns ({int(df.isna().sum().sum())} missing); final loss "
        f"{float(np.mean(imputer.loss_curve_[-100:])):.4f}; saved to {out}",
    )
    return 0


def _save_or_rescue(imputer, out: Path) -> None:
    """Saves the fitted imputer to ``out``; when that fails (the folder went away, the
    disk is full), saves it in the current or the temporary folder instead, so the
    training is not lost, and raises a CLIError that says where it went."""
    from .._common.io import save_rescued
    from ..impute.files import _imputer_state, _SavedImputer, save_imputer

    try:
        save_imputer(imputer, out)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        rescued = save_rescued(_SavedImputer(_imputer_state(imputer)), out)
        where = (
            f"the fitted model was saved to {rescued} instead"
            if rescued
            else "the fitted model could not be saved anywhere else either"
        )
        raise CLIError(f"cannot write the model file {out} ({reason}); {where}") from None


def cmd_impute(args: argparse.Namespace) -> int:
    """notmiwae-fast impute DATA OUTPUT: fills the empty cells of a CSV (with --model or
    an imputer fitted on the spot) and writes a new CSV."""
    from .. import distributed

    with _all_ranks("checking the files"):
        out = (
            _check_output(args.output, [args.data, args.model], args.force) if _is_main() else None
        )
        df = _read_csv(args.data)
        imputer = _impute_model(args, df)
    if args.model is None:
        imputer.fit(df)  # under torchrun: data-parallel on every rank
    result = distributed.transform_sharded(imputer, df)  # None except on rank 0
    with _all_ranks("writing the output"):
        if _is_main():
            _write_atomic(out, lambda f: result.to_csv(f, index=False))
    _say(
        args,
        f"imputed {int(df.isna().sum().sum())} missing values in {df.shape[0]} rows; wrote {out}",
    )
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
            detail = (
                (f"unknown columns {extra}" if extra else "")
                + ("; " if extra and absent else "")
                + (f"missing columns {absent}" if absent else "")
            )
            raise CLIError(
                f"header of {args.data} does not match the model's columns "
                f"({detail or 'different order'}); expected {expected}"
            )
        imputer.set_params(verbose=not args.quiet)  # the saved one was the fit's
        if args.impute_samples is not None:
            imputer.set_params(n_impute_samples=args.impute_samples)
        return imputer
    imputer = _new_imputer(args)
    _checked_imputer(imputer, df, args.data)
    return imputer
