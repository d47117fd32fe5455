"""The importance-weighting core of the four models (:class:`ImportanceWeightedModel`;
MIWAE and NotMIWAE in :mod:`.models`, SupMIWAE and SupNotMIWAE in :mod:`.supervised`):

    log w_k = log p(x° | z_k) + log p(z_k) − log q(z_k | x̃)
              [+ log p(s | x̂_k)]       not-MIWAE: x̂_k = s ⊙ x + (1 − s) ⊙ x_k, x_k ~ p(x | z_k)
              [+ log p(y | x̂_k)]       supervised models (Ipsen et al. 2022)
    bound  = log (1/K) Σ_k w_k,         loss = −mean over rows of the bound.

The likelihood terms run on the fused operators (``backend="fused"``) or on their
pure-PyTorch twins (``backend="reference"``): the same math. A Gaussian decoder with a
self-masking process uses the fused ``notmiwae_normal_terms`` kernel, which never writes
x̂ to memory; with the standard networks the whole bound is one operator
(:mod:`._gauss_bound`). Imputation streams over the importance samples in chunks and
merges them with an online softmax (:mod:`._streaming`), so its memory does not grow
with ``n_samples``.

Shapes: x, s [B, D]; z [B, K, L]; decoder parameters [B, K, D]; log-weights [B, K].
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import ops
from .._common import validate as _validate
from ..ops import reference
from . import _chunk_graphs, _gauss_bound, _streaming
from ._types import ArrayLike, Decoder, Operators
from .missing import BaseMissingProcess, process_logits
from .networks import DEFAULT_MIN_SCALE, MLP, OUT_DISTS, Encoder, make_decoder, use_fused_networks

__all__ = ["ImportanceWeightedModel", "kept_modes", "evaluation"]

# (Over 400 lines, a quarter of them docstrings: the one base class of the four models;
# what stands alone lives beside it: _gauss_bound, _streaming, _types, networks, missing.)

BACKENDS = ("fused", "reference")
# [(tensor, gradient)] of a training step's loss, where the bound is one operator.
Gradients = list[tuple[Tensor, Tensor]]


@contextlib.contextmanager
def kept_modes(model: nn.Module) -> Iterator[None]:
    """Puts back every submodule's train / eval mode on exit (a user's encoder may be in
    eval mode inside a model in train mode)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; every submodule's previous mode restored after."""
    with kept_modes(model), torch.no_grad():
        model.eval()
        yield


class ImportanceWeightedModel(nn.Module):
    """The shared core of the four models (not used directly).

    Args:
        input_dim: D, the number of features.
        latent_dim: L (default D − 1, the paper's choice; at least 1).
        hidden_dim: width of the two hidden tanh layers of encoder and decoder.
        n_samples: K, importance samples per row during training.
        out_dist: ``"gauss"``, ``"bern"`` or ``"student_t"``.
        ppca: PPCA-like decoder (loc linear in z, one shared scale) instead of an MLP.
        min_scale: floor of the decoder scale (default 1e-3, for standardised data).
        feature_names: optional names of the D features.
        backend: ``"fused"`` (kernels) or ``"reference"`` (pure PyTorch, same math).
        encoder, decoder: networks to use instead of the MLPs (e.g. the convolutional
            ones of :mod:`notmiwae_fast.images`): the encoder maps x̃ [B, D] to (μ, σ)
            [B, L]; the decoder maps z [B, K, L] to its family's parameters [B, K, D] and
            has that family's ``family``, ``log_prob``, ``mean``, ``sample`` and ``draw``.
    """

    has_missing_process = False
    supervised = False
    # Buffers: the standardisation of the training data (None until
    # set_standardization) and the optimizer steps taken by notmiwae_fast.Trainer.
    data_mean: Optional[Tensor]
    data_std: Optional[Tensor]
    n_train_steps: Tensor

    def __init__(
        self,
        input_dim: int,
        latent_dim: Optional[int] = None,
        hidden_dim: int = 128,
        n_samples: int = 20,
        out_dist: str = "gauss",
        ppca: bool = False,
        min_scale: float = DEFAULT_MIN_SCALE,
        feature_names: Optional[Sequence[str]] = None,
        backend: str = "fused",
        encoder: Optional[nn.Module] = None,
        decoder: Optional[Decoder] = None,
    ):
        super().__init__()
        input_dim = _validate.positive_int(input_dim, "input_dim")
        latent_dim = _validate.positive_int(
            max(1, input_dim - 1) if latent_dim is None else latent_dim, "latent_dim"
        )
        hidden_dim = _validate.positive_int(hidden_dim, "hidden_dim")
        if not min_scale > 0:
            raise ValueError(f"argument 'min_scale' must be > 0; got {min_scale!r}")
        self.input_dim, self.latent_dim, self.hidden_dim = input_dim, latent_dim, hidden_dim
        self.n_samples = _validate.n_samples(n_samples)
        self.out_dist = _validate.choice(out_dist, "out_dist", OUT_DISTS)
        self.backend = _validate.choice(backend, "backend", BACKENDS)
        self.ppca = bool(ppca)
        self.feature_names = _validate.optional_names(
            None if feature_names is None else list(feature_names), input_dim
        )
        self.encoder = (
            encoder if encoder is not None else Encoder(input_dim, hidden_dim, latent_dim)
        )
        self.decoder: Decoder = (
            decoder
            if decoder is not None
            else make_decoder(out_dist, latent_dim, hidden_dim, input_dim, min_scale, ppca)
        )
        if getattr(self.decoder, "family", None) != self.out_dist:
            raise ValueError(
                f"argument 'decoder' models the family "
                f"{getattr(self.decoder, 'family', None)!r}; out_dist is "
                f"{self.out_dist!r}"
            )
        # Standardisation of the training data, if the user's data went through
        # utils.standardize: lets interpret_missing_process speak in original units.
        self.register_buffer("data_mean", None)
        self.register_buffer("data_std", None)
        # Optimizer steps taken by notmiwae_fast.Trainer (saved with the state dict).
        self.register_buffer("n_train_steps", torch.zeros((), dtype=torch.long))
        self._apply_backend()

    # -- the operators of the chosen backend ------------------------------------------
    @property
    def backend(self) -> str:
        """``"fused"`` or ``"reference"``; assigning it switches every operator and network."""
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = _validate.choice(value, "backend", BACKENDS)
        self._apply_backend()

    def _apply_backend(self) -> None:
        """Switches the networks built so far (constructors call it once all are built)."""
        use_fused_networks(self, self._backend == "fused")

    @property
    def ops(self) -> Operators:
        """The operators of the backend: :mod:`notmiwae_fast.ops` or its reference twins."""
        return ops if self.backend == "fused" else reference

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _missing_model(self) -> Optional[BaseMissingProcess]:
        """The model p(s | x) of the missing process; None for a model without one."""
        return None

    def _missing_model_and_selfmask(
        self,
    ) -> tuple[Optional[BaseMissingProcess], Optional[tuple[Tensor, Tensor]]]:
        """(the missing process or None, its self-masking (W, b) or None): what the
        bound's one-operator path needs to know of the process."""
        process = self._missing_model()
        return process, process.selfmask_params() if process is not None else None

    def set_standardization(self, mean: ArrayLike, std: ArrayLike) -> None:
        """Records the per-feature mean and std ([D], finite, std > 0) used to standardise
        the data (saved with the state dict)."""
        mean_ = _validate.as_tensor(mean, "mean", self._dtype, self._device).flatten()
        std_ = _validate.as_tensor(std, "std", self._dtype, self._device).flatten()
        for name, value in (("mean", mean_), ("std", std_)):
            if value.numel() != self.input_dim:
                raise ValueError(
                    f"argument '{name}' must have input_dim = {self.input_dim} "
                    f"values; got {value.numel()}"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"argument '{name}' must be finite")
        if not (std_ > 0).all():
            raise ValueError("argument 'std' must be > 0")
        self.data_mean, self.data_std = mean_, std_

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The standardisation buffers are None until set_standardization: make room for
        # them when the state being loaded has them (a fresh model, Trainer resume_from).
        for name in ("data_mean", "data_std"):
            saved = state_dict.get(prefix + name)
            if saved is not None and getattr(self, name) is None:
                setattr(self, name, torch.empty_like(saved, dtype=self._dtype, device=self._device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the importance-weighting core ---------------------------------------------------
    def _terms(self, x0: Tensor, s: Tensor, k: int, need_draws: bool = False) -> dict[str, Tensor]:
        """All per-sample terms for K = k samples of z per row.

        Returns ``log_w`` [B, k] (without the y term), the separate log-terms
        (``log_p_s_given_x`` only with a missing process), ``means`` (E[x | z_k],
        [B, k, D]), ``x_hat`` (when a missing process or a prediction head needs it) and
        ``draws`` (samples of x for multiple imputation, when ``need_draws``)."""
        mu, std = self.encoder(x0)
        # Noise in x's dtype, also under autocast (where mu and loc are bfloat16): the
        # same random numbers as without autocast, at full precision.
        eps_z = torch.randn(mu.shape[0], k, mu.shape[1], dtype=x0.dtype, device=mu.device)
        z, log_p_z, log_q_z = self.ops.latent_terms(mu, std, eps_z)
        params = self.decoder(z)
        process, selfmask = self._missing_model_and_selfmask()
        log_ps: Optional[Tensor]
        if selfmask is not None and self.out_dist == "gauss":
            log_px, log_ps, x_k = self._normal_selfmask_terms(
                x0, s, params, selfmask, keep_samples=self.supervised or need_draws
            )
        else:
            log_px, log_ps, x_k = self._decoder_terms(x0, s, params, process)
        out = {"log_p_z": log_p_z, "log_q_z_given_x": log_q_z, "log_p_x_given_z": log_px}
        log_w = log_px + log_p_z - log_q_z
        if log_ps is not None:
            out["log_p_s_given_x"] = log_ps
            log_w = log_w + log_ps
        if x_k is not None:
            out["x_hat"] = torch.where(s.bool().unsqueeze(1), x0.unsqueeze(1), x_k)
        if need_draws:
            # Resampled draws must be the samples the weights were computed with when the
            # weights depend on them (not-MIWAE); otherwise fresh draws of p(x | z_k).
            weighted = process is not None and self.out_dist != "bern"
            out["draws"] = x_k if weighted and x_k is not None else self.decoder.draw(params)
        out["log_w"] = log_w
        out["means"] = self.decoder.mean(params)
        return out

    def _normal_selfmask_terms(
        self,
        x0: Tensor,
        s: Tensor,
        params: dict[str, Tensor],
        selfmask: tuple[Tensor, Tensor],
        keep_samples: bool,
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """(log p(x° | z), log p(s | x̂), the samples x_k when ``keep_samples``) of a
        Gaussian decoder and a self-masking process (W, b = ``selfmask``): both terms in
        one fused pass, x̂ never written to memory."""
        eps_x = torch.randn(params["loc"].shape, dtype=x0.dtype, device=x0.device)
        log_px, log_ps = self.ops.notmiwae_normal_terms(
            x0, s, params["loc"], params["scale"], eps_x, *selfmask
        )
        x_k = params["loc"] + params["scale"] * eps_x if keep_samples else None
        return log_px, log_ps, x_k

    def _decoder_terms(
        self,
        x0: Tensor,
        s: Tensor,
        params: dict[str, Tensor],
        process: Optional[BaseMissingProcess],
    ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """(log p(x° | z), log p(s | x̂) with a missing process, the samples x_k ~ p(x | z)
        when a missing process or a prediction head needs them), term by term."""
        log_px = self.decoder.log_prob(self.ops, x0, s, params)
        if process is None and not self.supervised:
            return log_px, None, None
        x_k = self.decoder.sample(params)
        if process is None:
            return log_px, None, x_k
        logits = process_logits(process, torch.where(s.bool().unsqueeze(1), x0.unsqueeze(1), x_k))
        # log Π_d Bernoulli(s_d; σ(ℓ_d)): a Bernoulli likelihood of s, all observed.
        log_ps = self.ops.masked_bernoulli_logprob(s, torch.ones_like(s), logits)
        return log_px, log_ps, x_k

    def _inputs(self, x: ArrayLike, s: ArrayLike) -> tuple[Tensor, Tensor]:
        return _validate.data_and_mask(x, s, self.input_dim, self._dtype, self._device)

    def _batch_inputs(self, x: ArrayLike, s: ArrayLike) -> tuple[Tensor, Tensor]:
        """_inputs of a batch the bound is computed on (at least one row)."""
        x0, s_ = self._inputs(x, s)
        if x0.shape[0] == 0:
            raise ValueError("argument 'x' has no rows: the bound of an empty batch is undefined")
        return x0, s_

    def _bound_outputs(
        self, terms: dict[str, Tensor], log_w: Tensor, bound: Optional[Tensor] = None
    ) -> dict[str, Tensor]:
        if bound is None:
            bound = self.ops.iw_logmeanexp(log_w)
        elbo = bound.mean()
        result = {"loss": -elbo, "elbo": elbo, "log_w": log_w}
        for key in ("log_p_x_given_z", "log_p_s_given_x", "log_p_z", "log_q_z_given_x"):
            if key in terms:
                result[key] = terms[key].mean()
        return result

    def forward(
        self, x: ArrayLike, s: ArrayLike, n_samples: Optional[int] = None
    ) -> dict[str, Tensor]:
        """The importance-weighted bound of a batch.

        Args:
            x: [B, D] data; anything (NaN included) at missing entries.
            s: [B, D] mask, 1 = observed, 0 = missing (bool, int or float).
            n_samples: K (default: the model's ``n_samples``).
        Returns:
            dict with ``loss`` (−elbo), ``elbo`` (the bound averaged over rows),
            ``log_w`` [B, K] and the batch means of the log-terms.
        """
        k = self.n_samples if n_samples is None else _validate.n_samples(n_samples)
        return self._forward(x, s, k, with_grads=False)[0]

    def _loss_and_grads(
        self, x: ArrayLike, s: ArrayLike
    ) -> tuple[dict[str, Tensor], Optional[Gradients]]:
        """A training step's forward and backward (:class:`~notmiwae_fast.Trainer`):
        forward(x, s)'s outputs and, where the bound is one operator, the gradients of its
        loss from :func:`ops.gauss_bound_grads` (no autograd graph; the outputs are plain
        tensors) as [(tensor, gradient)] for the networks' weights and biases and the
        self-masking (W, b) (W may be computed from a parameter, as the known-signs slope:
        the caller propagates into it). Elsewhere (forward's outputs, None): call
        ``loss.backward()``."""
        return self._forward(x, s, self.n_samples, with_grads=True)

    def _forward(
        self, x: ArrayLike, s: ArrayLike, k: int, with_grads: bool
    ) -> tuple[dict[str, Tensor], Optional[Gradients]]:
        x0, s_ = self._batch_inputs(x, s)
        return self._checked_forward(x0, s_, k, with_grads)

    def _checked_forward(
        self, x0: Tensor, s: Tensor, k: int, with_grads: bool
    ) -> tuple[dict[str, Tensor], Optional[Gradients]]:
        """:meth:`_forward` on rows already checked and zero-filled: x0 [B, D] and s as 0/1
        of x0's dtype, as :meth:`_batch_inputs` (or ``ops.observed_data``) gives them."""
        process, selfmask = self._missing_model_and_selfmask()
        nets = self._gauss_bound_networks(x0, process, selfmask)
        if nets is None:
            terms = self._terms(x0, s, k)
            return self._bound_outputs(terms, terms["log_w"]), None
        args = _gauss_bound.arguments(x0, s, k, self.latent_dim, nets, selfmask)
        if not with_grads:
            return self._bound_outputs(*_gauss_bound.terms(ops.gauss_bound(*args), selfmask)), None
        *results, grads = ops.gauss_bound_grads(*args)
        outputs = self._bound_outputs(*_gauss_bound.terms(results, selfmask))
        return outputs, list(zip(_gauss_bound.parameters(args), grads))

    def _gauss_bound_networks(
        self,
        x0: Tensor,
        process: Optional[BaseMissingProcess],
        selfmask: Optional[tuple[Tensor, Tensor]],
    ) -> Optional[tuple[MLP, MLP, float]]:
        """The networks of :func:`ops.gauss_bound` when it computes this model's bound: the
        fused backend, the standard encoder and (non-PPCA) Gaussian decoder, no missing
        process or a self-masking one (``selfmask``: its (W, b)), and no autocast (under
        autocast the step-by-step path runs the networks in reduced precision); else None."""
        if (
            self._backend != "fused"
            or self.out_dist != "gauss"
            or (process is not None and selfmask is None)
            or torch.is_autocast_enabled(x0.device.type)
        ):
            return None
        return _gauss_bound.standard_networks(self.encoder, self.decoder)

    # -- streaming over the importance samples -----------------------------------------
    def _stream(
        self,
        x0: Tensor,
        s: Tensor,
        n_samples: int,
        chunk_size: Optional[int],
        value_fn: Callable[[dict[str, Tensor]], Tensor],
        n_draws: Optional[int] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """:func:`._streaming.weighted_mean` of value_fn over the terms of ``n_samples``
        samples of the rows x0 [B, D], α the softmax of the log-weights without any y term.
        Returns (mean [B, V], M = ``n_draws`` resampled draws [M, B, D] or None)."""
        chunk = _streaming.chunk_size(x0.shape[0] * self.input_dim, n_samples, chunk_size)
        return _streaming.weighted_mean(
            lambda k: self._terms(x0, s, k, n_draws is not None),
            self.ops,
            x0,
            n_samples,
            chunk,
            value_fn,
            n_draws,
        )

    def impute(
        self,
        x: ArrayLike,
        s: ArrayLike,
        n_samples: int = 1000,
        n_draws: Optional[int] = None,
        chunk_size: Optional[int] = None,
        cuda_graphs: bool = False,
    ) -> Tensor:
        """Imputes the missing entries; observed entries are returned unchanged.

        Single imputation (default) is the conditional mean Σ_k α_k E[x | z_k] with
        self-normalised importance weights α (including p(s | x̂) for not-MIWAE). It
        streams over the ``n_samples`` importance samples in chunks (``chunk_size``,
        default: about 4M elements per [B, chunk, D] tensor), so memory does not grow
        with ``n_samples``: K = 10,000 is practical.

        Multiple imputation: ``n_draws = M`` returns M draws by sampling-importance-
        resampling from the same weights, shape [M, B, D].

        Rows without a missing entry are returned as they are, without running the
        networks on them (and without drawing random numbers for them).

        ``cuda_graphs=True`` (single imputation on a CUDA device, at least two full
        chunks): the full chunks after the first replay one captured chunk, a CUDA graph
        per (rows, chunk) shape (:mod:`._chunk_graphs`); elsewhere it changes nothing.

        Args:
            x: [B, D]; anything at missing entries. s: [B, D] mask (1 = observed).
        Returns:
            [B, D] (or [M, B, D]) in x's dtype when x is a tensor; the model's mode
            (train / eval) is left as it was.
        """
        n_samples = _validate.n_samples(n_samples)
        if not isinstance(cuda_graphs, bool):
            raise ValueError(f"argument 'cuda_graphs' must be True or False; got {cuda_graphs!r}")
        if n_draws is not None:
            n_draws = _validate.positive_int(n_draws, "n_draws")
        out_dtype = x.dtype if isinstance(x, Tensor) and x.is_floating_point() else self._dtype
        with evaluation(self):
            x0, s_ = self._inputs(x, s)
            observed = s_.bool()
            shape = (n_draws, *x0.shape) if n_draws is not None else x0.shape
            result = x0.expand(shape).clone()
            # Rows with nothing missing come back as they are: the networks run only on
            # the others (no random numbers are drawn for a complete row).
            rows = (~observed.all(1)).nonzero().squeeze(1)
            if len(rows):
                whole = len(rows) == len(x0)
                x_rows, s_rows = (x0, s_) if whole else (x0[rows], s_[rows])
                mean = draws = None
                if cuda_graphs and n_draws is None:
                    mean = _chunk_graphs.captured_mean(self, x_rows, s_rows, n_samples, chunk_size)
                if mean is None:
                    mean, draws = self._stream(
                        x_rows, s_rows, n_samples, chunk_size, lambda t: t["means"], n_draws
                    )
                filled = torch.where(observed[rows], x_rows, mean if draws is None else draws)
                result[..., rows, :] = filled
        return result.to(out_dtype)

    # -- the missing process --------------------------------------------------------------
    def interpret_missing_process(self, verbose: bool = False) -> dict[str, Any]:
        """Per feature: direction, strength, slope W and threshold b of the learnt process
        (W and b in the data's original units when :meth:`set_standardization` was called;
        the strength |W| and the direction on the standardised scale)."""
        process = self._missing_model()
        if process is None:
            raise AttributeError(f"{type(self).__name__} has no missing process")
        return process.interpret(verbose=verbose, mean=self.data_mean, std=self.data_std)

    def compute_missing_sensitivity(self, x: ArrayLike) -> Tensor:
        """[D, D] mean |∂ p(s_i = 0 | x) / ∂ x_j| over the rows of complete data x [B, D]
        (one vectorised Jacobian)."""
        process = self._missing_model()
        if process is None:
            raise AttributeError(f"{type(self).__name__} has no missing process")
        x_ = _validate.as_tensor(x, "x", self._dtype, self._device)
        if not torch.isfinite(x_).all():
            raise ValueError("argument 'x' must be complete data (finite; impute it first)")
        return process.compute_sensitivity(x_)
