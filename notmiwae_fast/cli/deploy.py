"""``export``: a fitted imputer (or a saved MIWAE / NotMIWAE) as TorchScript or ONNX,
for deployment without this package's Python code."""

from __future__ import annotations

import argparse

from ._common import CLIError, _check_output, _say
from ._files import _read_model_file


def cmd_export(args: argparse.Namespace) -> int:
    """notmiwae-fast export MODEL --out FILE: the imputation function of a fitted imputer
    or model as TorchScript or ONNX."""
    import torch

    from .. import export

    out = _check_output(args.out, [args.model], args.force)
    obj = _read_model_file(args.model)
    model = getattr(obj, "model_", obj)  # a fitted imputer (notmiwae-fast fit) or a model
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"model file {args.model} holds neither a fitted imputer nor a model")
    if args.format == "torchscript":
        export.to_torchscript(model, out, n_samples=args.n_samples, fused=not args.pure)
    else:
        export.to_onnx(model, out, n_samples=args.n_samples, deterministic=args.deterministic)
    _say(args, f"exported {type(model).__name__} ({args.format}, K = {args.n_samples}) to {out}")
    return 0
