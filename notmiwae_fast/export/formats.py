"""Writing an ExportableImputer as TorchScript or ONNX."""

from __future__ import annotations

import copy
import logging
import os
import warnings

import torch
from torch import nn

from .._common.io import write_atomic
from ..nn.mixed import MixedNotMIWAE
from ..nn.models import ImportanceWeightedModel
from ..nn.networks import use_fused_networks
from .mixed import MixedExportableImputer
from .module import _BUILT_IN, ExportableImputer

__all__ = ["to_torchscript", "to_onnx"]


def _check_folder(path) -> None:
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"argument 'path': the folder {folder} does not exist")


def _on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself when it lives on the CPU, else a copy there: exports are written
    from the CPU (the example inputs are CPU tensors, and a TorchScript file keeps each
    tensor's device, so one written from a GPU would not load on a machine without it)."""
    if all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()]):
        return model
    return copy.deepcopy(model).cpu()


def _prepare(model, path, n_samples: int, fused: bool) -> ExportableImputer:
    _check_folder(path)
    if int(model.n_train_steps) == 0:
        warnings.warn(
            f"exporting a {type(model).__name__} that has not been trained (no "
            "Trainer step recorded in model.n_train_steps); its imputations will "
            "be poor",
            stacklevel=3,
        )
    process = getattr(model, "missing_model", None)
    if process is not None and not isinstance(process, _BUILT_IN):
        try:
            scripted = copy.deepcopy(process)
            use_fused_networks(scripted, False)
            torch.jit.script(scripted)
        except Exception as exc:
            raise TypeError(
                f"the custom missing process {type(process).__name__} cannot be exported: "
                f"its forward(x) does not compile with TorchScript ({str(exc).splitlines()[0]}"
                "...). Use only tensor operations with type annotations in forward, or "
                "export with ONNX (to_onnx), which traces instead of compiling"
            ) from exc
    return ExportableImputer(model, n_samples=n_samples, fused=fused)


def to_torchscript(
    model: ImportanceWeightedModel, path, n_samples: int = 1000, fused: bool = True
) -> torch.jit.ScriptModule:
    """Scripts the imputation function of ``model`` and saves it to ``path``.

    Args:
        model: a trained MIWAE or NotMIWAE.
        path: the .pt file to write (its folder must exist; written atomically).
        n_samples: importance samples K of the exported imputer.
        fused: call the compiled kernels (load the library before ``torch.jit.load``);
            False writes the pure-PyTorch variant, loadable with torch alone.
    Returns:
        the scripted module, on the CPU whatever device ``model`` is on (``torch.jit.load``
        with ``map_location`` puts it elsewhere). Its forward is (x, mask, eps_z=None,
        eps_x=None).
    """
    model = _on_cpu(model)
    if isinstance(model, MixedNotMIWAE):  # Python loops over columns: traced, not scripted
        _check_folder(path)
        example = (torch.zeros(2, model.input_dim), torch.ones(2, model.input_dim))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and tracer notes
            scripted = torch.jit.trace(MixedExportableImputer(model, n_samples), example)
        write_atomic(path, lambda f: f.write(scripted.save_to_buffer()))
        return scripted
    module = _prepare(model, path, n_samples, fused)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        scripted = torch.jit.script(module)
    write_atomic(path, lambda f: f.write(scripted.save_to_buffer()))  # serialised in memory
    return scripted


def to_onnx(
    model: ImportanceWeightedModel,
    path,
    n_samples: int = 1000,
    deterministic: bool = False,
    opset_version: int = 18,
):
    """Exports the imputation function of ``model`` to ONNX (standard ops only).

    Inputs: ``x`` [B, D] float32 (anything at missing entries; NaN is fine), ``mask``
    [B, D] float32 (1 = observed); with ``deterministic=True`` also ``eps_z`` [B, K, L]
    and, for not-MIWAE, ``eps_x`` [B, K, D]. Output ``x_imputed`` [B, D]. The batch
    axis B is dynamic. Needs the ``onnx`` and ``onnxscript`` packages. ``path`` is
    written atomically, as one file.
    """
    if opset_version < 17:
        raise ValueError(f"argument 'opset_version' must be >= 17; got {opset_version}")
    model = _on_cpu(model)
    if isinstance(model, MixedNotMIWAE):
        if deterministic:
            raise NotImplementedError("a mixed-table model exports without deterministic=True")
        _check_folder(path)
        module: nn.Module = MixedExportableImputer(model, n_samples)
        D, L, K = model.input_dim, model.latent_dim, n_samples
    else:
        module = _prepare(model, path, n_samples, fused=False).float()
        if not deterministic and module.family == "student_t" and module.has_missing:
            raise NotImplementedError(
                "ONNX has no Gamma sampler for Student-t noise: export a "
                "student_t not-MIWAE with deterministic=True"
            )
        D, L, K = module.input_dim, module.latent_dim, n_samples
    batch = torch.export.Dim("batch", min=1)
    args = [torch.zeros(2, D), torch.ones(2, D)]
    names = ["x", "mask"]
    shapes = {"x": {0: batch}, "mask": {0: batch}}
    if deterministic:
        args.append(torch.zeros(2, K, L))
        names.append("eps_z")
        shapes["eps_z"] = {0: batch}
        if getattr(module, "has_missing", False):
            args.append(torch.zeros(2, K, D))
            names.append("eps_x")
            shapes["eps_x"] = {0: batch}
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # notes about optional torchvision ops
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                tuple(args),
                input_names=names,
                output_names=["x_imputed"],
                dynamic_shapes=shapes,
                opset_version=opset_version,
                dynamo=True,
                verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)
    # one file, no external data (the weights are far below ONNX's 2 GB limit)
    write_atomic(path, lambda f: f.write(program.model_proto.SerializeToString()))
    return program


# -- model files ---------------------------------------------------------------------------
# A MIWAE / NotMIWAE with the standard networks and a built-in missing process saved as
# plain data (its constructor's arguments and its state dict), which torch.load reads
# with weights_only=True: loading it never runs code named by the file.
