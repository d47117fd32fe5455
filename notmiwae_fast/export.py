"""Deployment: a trained MIWAE / NotMIWAE as a TorchScript or ONNX imputer.

The exported function is (x with anything at the missing entries, mask) -> imputed x,
for any batch size, with ``n_samples`` importance samples fixed at export:

    x_imputed = Σ_k softmax(log w)_k E[x | z_k]  at the missing entries, x elsewhere.

``deterministic=True`` makes the noise explicit inputs, ``eps_z`` [B, K, L] (standard
normal) and, for not-MIWAE, ``eps_x`` [B, K, D] (standard normal; standard Student-t
for ``student_t``), so an exported model can be compared exactly with eager PyTorch.

* :func:`to_torchscript` with ``fused=True`` (default) calls the ``torch.ops.notmiwae_fast``
  kernels; load it with ``torch.ops.load_library(notmiwae_fast.library_path())`` then
  ``torch.jit.load``, in Python or C++ (``examples/cpp_impute``). ``fused=False`` writes
  the pure-PyTorch variant, which loads with torch alone.
* :func:`to_onnx` exports the pure-PyTorch math (standard ONNX ops, opset 17+).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from ._common import io as _io
from ._common.io import write_atomic
from .nn.missing import (
    MISSING_PROCESSES,
    LinearMissingProcess,
    NonlinearMissingProcess,
    SelfMaskingKnownSignsProcess,
    SelfMaskingProcess,
)
from .nn.models import MIWAE, ImportanceWeightedModel, NotMIWAE
from .nn.networks import _DECODERS, DEFAULT_MIN_SCALE, Encoder, use_fused_networks
from .ops import reference

__all__ = ["ExportableImputer", "to_torchscript", "to_onnx", "save_model", "load_model"]

_BUILT_IN = (
    SelfMaskingProcess,
    SelfMaskingKnownSignsProcess,
    LinearMissingProcess,
    NonlinearMissingProcess,
)


class _NoMissingProcess(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class ExportableImputer(nn.Module):
    """The imputation function of a trained model as a scriptable / exportable module.

    forward(x [B, D], mask [B, D] (1 = observed), eps_z=None, eps_x=None) -> [B, D], in the
    data's original units when the model records a standardisation
    (``model.set_standardization``). Rows of the wrong width raise an error from the
    module itself.
    """

    __constants__ = [
        "n_samples",
        "input_dim",
        "latent_dim",
        "family",
        "has_missing",
        "selfmask",
        "fused",
    ]

    def __init__(self, model: ImportanceWeightedModel, n_samples: int = 1000, fused: bool = True):
        super().__init__()
        if not isinstance(model, (MIWAE, NotMIWAE)) or model.supervised:
            raise TypeError(
                f"export supports MIWAE and NotMIWAE models; got {type(model).__name__}"
            )
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"argument 'n_samples' must be an int >= 1; got {n_samples!r}")
        self.n_samples = n_samples
        self.input_dim, self.latent_dim = model.input_dim, model.latent_dim
        self.family = model.out_dist
        self.fused = bool(fused)
        self.encoder = copy.deepcopy(model.encoder)
        self.decoder = copy.deepcopy(model.decoder)
        self.has_missing = model.has_missing_process
        process = model.missing_model if self.has_missing else _NoMissingProcess()
        self.selfmask = isinstance(process, (SelfMaskingProcess, SelfMaskingKnownSignsProcess))
        self.missing = copy.deepcopy(process)
        if self.family == "student_t":
            df = model.decoder(
                torch.zeros(1, 1, model.latent_dim, dtype=model._dtype, device=model._device)
            )["df"]
            self.register_buffer("df", df.detach().clone())
        else:
            self.register_buffer("df", torch.zeros(0))
        self.register_buffer("df_log_normaliser", reference.studentt_log_normaliser(self.df))
        # The data's standardisation (model.set_standardization, as the imputers set it):
        # the exported imputer takes and returns original units.
        dtype, device = model._dtype, model._device
        mean = (
            model.data_mean
            if model.data_mean is not None
            else torch.zeros(model.input_dim, dtype=dtype, device=device)
        )
        std = (
            model.data_std
            if model.data_std is not None
            else torch.ones(model.input_dim, dtype=dtype, device=device)
        )
        self.register_buffer("data_mean", mean.detach().clone())
        self.register_buffer("data_std", std.detach().clone())
        # The MLPs run layer by layer here (TorchScript compiles that branch only; ONNX
        # has no mlp_tanh).
        use_fused_networks(self, False)
        self.requires_grad_(False)  # an inference artefact
        self.eval()

    def _check(self, x: Tensor, mask: Tensor):
        if x.dim() != 2 or x.size(1) != self.input_dim:
            raise ValueError(
                "notmiwae_fast imputer: argument 'x' must have shape [B, "
                + str(self.input_dim)
                + "]; got a tensor with "
                + str(x.dim())
                + " dimensions and "
                + str(x.size(-1))
                + " columns"
            )
        if mask.shape != x.shape:
            raise ValueError("notmiwae_fast imputer: argument 'mask' must have the shape of 'x'")

    def _masked_logprob(
        self, x0: Tensor, s: Tensor, loc: Tensor, scale: Tensor, logits: Tensor
    ) -> Tensor:
        if self.family == "gauss":
            if self.fused:
                return torch.ops.notmiwae_fast.masked_normal_logprob(x0, s, loc, scale)
            return reference.masked_normal_logprob(x0, s, loc, scale)
        if self.family == "student_t":
            if self.fused:
                return torch.ops.notmiwae_fast.masked_studentt_logprob(x0, s, loc, scale, self.df)
            return reference.masked_studentt_logprob_normalised(
                x0, s, loc, scale, self.df, self.df_log_normaliser
            )
        if self.fused:
            return torch.ops.notmiwae_fast.masked_bernoulli_logprob(x0, s, logits)
        return reference.masked_bernoulli_logprob(x0, s, logits)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        eps_z: Optional[Tensor] = None,
        eps_x: Optional[Tensor] = None,
    ) -> Tensor:
        self._check(x, mask)
        observed = mask != 0
        s = observed.to(x.dtype)
        x_original = x
        x = (x - self.data_mean) / self.data_std
        x0 = torch.where(observed, x, torch.zeros_like(x))
        mu, std = self.encoder(x0)
        if eps_z is None:
            eps_z = torch.randn(
                x.size(0), self.n_samples, self.latent_dim, dtype=x.dtype, device=x.device
            )
        z = mu.unsqueeze(1) + std.unsqueeze(1) * eps_z
        log_w = -0.5 * (z * z).sum(-1) - (-0.5 * (eps_z * eps_z) - torch.log(std).unsqueeze(1)).sum(
            -1
        )
        p = self.decoder(z)
        if self.family == "bern":
            logits = p["logits"]
            loc = torch.sigmoid(logits)
            scale = loc
        else:
            loc, scale = p["loc"], p["scale"]
            logits = loc
        if self.has_missing:
            if eps_x is None:
                eps_x = torch.randn_like(loc)
                if self.family == "student_t":
                    half_df = 0.5 * self.df.expand_as(loc)
                    eps_x = eps_x * torch.rsqrt(torch._standard_gamma(half_df) / half_df)
            if self.family == "gauss" and self.selfmask and self.fused:
                w, b = self.missing.selfmask_params()
                log_px, log_ps = torch.ops.notmiwae_fast.notmiwae_normal_terms(
                    x0, s, loc, scale, eps_x, w, b
                )
                log_w = log_w + log_px + log_ps
            else:
                log_w = log_w + self._masked_logprob(x0, s, loc, scale, logits)
                x_k = loc if self.family == "bern" else loc + scale * eps_x
                x_hat = torch.where(observed.unsqueeze(1), x0.unsqueeze(1), x_k)
                ones = torch.ones_like(s)
                miss_logits = self.missing(x_hat)
                if self.fused:
                    log_w = log_w + torch.ops.notmiwae_fast.masked_bernoulli_logprob(
                        s, ones, miss_logits
                    )
                else:
                    log_w = log_w + reference.masked_bernoulli_logprob(s, ones, miss_logits)
        else:
            log_w = log_w + self._masked_logprob(x0, s, loc, scale, logits)
        if self.fused:
            imputed = torch.ops.notmiwae_fast.iw_impute(log_w, loc)
        else:
            imputed = reference.iw_impute(log_w, loc)
        return torch.where(observed, x_original, imputed * self.data_std + self.data_mean)


def _prepare(model, path, n_samples: int, fused: bool) -> ExportableImputer:
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"argument 'path': the folder {folder} does not exist")
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
        the scripted module. Its forward is (x, mask, eps_z=None, eps_x=None).
    """
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
        if module.has_missing:
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
MODEL_FORMAT = "notmiwae_fast.model/1"
_MODELS = {"MIWAE": MIWAE, "NotMIWAE": NotMIWAE}


def _model_config(model: ImportanceWeightedModel) -> dict:
    """The constructor arguments that rebuild ``model`` (before its state dict is
    loaded); ValueError for a model this format cannot describe."""
    name = type(model).__name__
    if _MODELS.get(name) is not type(model):
        raise ValueError(f"save_model saves MIWAE and NotMIWAE models; got {name}")
    if type(model.encoder) is not Encoder or type(model.decoder) is not _DECODERS[model.out_dist]:
        raise ValueError(
            "save_model saves models with the standard networks; this one has "
            f"a {type(model.encoder).__name__} / {type(model.decoder).__name__} "
            "(image models: notmiwae_fast.images.save_image_model)"
        )
    config = dict(
        input_dim=model.input_dim,
        latent_dim=model.latent_dim,
        hidden_dim=model.hidden_dim,
        n_samples=model.n_samples,
        out_dist=model.out_dist,
        ppca=model.ppca,
        min_scale=float(getattr(model.decoder, "min_scale", DEFAULT_MIN_SCALE)),
        feature_names=None
        if model.feature_names is None
        else [str(n) for n in model.feature_names],
        backend=model.backend,
    )
    if name == "NotMIWAE":
        process = model.missing_model
        kind = model.missing_process
        if MISSING_PROCESSES.get(kind) is not type(process):
            raise ValueError(
                "save_model saves NotMIWAE models with a built-in missing "
                f"process; this one has a {type(process).__name__}"
            )
        config["missing_process"] = kind
        if kind == "nonlinear":
            config["missing_hidden_dim"] = int(process.mlp[0].out_features)
    return config


def save_model(model: ImportanceWeightedModel, path) -> None:
    """Saves a MIWAE or NotMIWAE (standard networks, a built-in missing process) to
    ``path`` atomically as its configuration and state dict, a file that
    :func:`load_model` and ``notmiwae-fast export`` read without unpickling objects."""
    state = {
        "format": MODEL_FORMAT,
        "class": type(model).__name__,
        "config": _model_config(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    _io.save_atomic(state, path)


def model_from_state(state) -> ImportanceWeightedModel:
    """The model that :func:`save_model` described in ``state`` (what torch.load gives
    for its file), in eval mode; FormatError (a ValueError) saying what does not fit."""
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise _io.FormatError(f"the format is not {MODEL_FORMAT!r}")
    cls = _MODELS.get(state.get("class"))
    config, weights = state.get("config"), state.get("state_dict")
    if cls is None:
        raise _io.FormatError(f"unknown model class {state.get('class')!r}")
    plain = (type(None), bool, int, float, str)
    if not isinstance(config, dict) or not all(
        isinstance(k, str)
        and (
            isinstance(v, plain)
            or (
                k == "feature_names"
                and (isinstance(v, list) and all(isinstance(n, str) for n in v))
            )
        )
        for k, v in config.items()
    ):
        raise _io.FormatError("'config' is not a dict of plain values")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()
    ):
        raise _io.FormatError("'state_dict' is not a state dict")
    try:
        with torch.random.fork_rng(devices=[]):  # initial weights, replaced below
            model = cls(**config)
    except (TypeError, ValueError) as err:
        raise _io.FormatError(
            f"'config' does not build a {cls.__name__} ({' '.join(str(err).split())[:200]})"
        ) from None
    expected = model.state_dict()
    expected.update({k: weights[k] for k in ("data_mean", "data_std") if k in weights})
    if set(weights) != set(expected) or any(
        weights[k].shape != expected[k].shape for k in expected
    ):
        raise _io.FormatError("the state dict does not fit the configuration")
    model.load_state_dict(weights)
    return model.eval()


def load_model(path, map_location="cpu") -> ImportanceWeightedModel:
    """The model :func:`save_model` wrote to ``path``, on ``map_location``, in eval
    mode; ValueError naming the file when it cannot be read, holds pickled objects or
    no such model (FileNotFoundError when it does not exist)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    state = _io.load_plain(path, "model file", map_location)
    try:
        return model_from_state(state)
    except _io.FormatError as err:
        raise ValueError(
            f"model file {path} does not hold a model saved by save_model ({err})"
        ) from None
