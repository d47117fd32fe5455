"""The models: MIWAE, NotMIWAE, SupMIWAE and SupNotMIWAE.

All four share one importance-weighting core (:class:`ImportanceWeightedModel`):

    log w_k = log p(x° | z_k) + log p(z_k) − log q(z_k | x̃)
              [+ log p(s | x̂_k)]       not-MIWAE: x̂_k = s ⊙ x + (1 − s) ⊙ x_k, x_k ~ p(x | z_k)
              [+ log p(y | x̂_k)]       supervised models (Ipsen et al. 2022)
    bound  = log (1/K) Σ_k w_k,         loss = −mean over rows of the bound.

The likelihood terms run on the fused operators (``backend="fused"``) or on their
pure-PyTorch twins (``backend="reference"``): the same math. A Gaussian decoder with a
self-masking process uses the fused ``notmiwae_normal_terms`` kernel, which never writes
x̂ to memory. Imputation streams over the importance samples in chunks and merges them
with an online softmax, so its memory does not grow with ``n_samples``.

Shapes: x, s [B, D]; z [B, K, L]; decoder parameters [B, K, D]; log-weights [B, K].
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .._common import validate as _validate
from .. import ops
from ..ops import reference
from .missing import BaseMissingProcess, MissingProcess
from .networks import MLP, OUT_DISTS, Encoder, GaussianDecoder, PredictionHead, make_decoder, DEFAULT_MIN_SCALE, use_fused_networks

__all__ = ["MIWAE", "NotMIWAE", "SupMIWAE", "SupNotMIWAE", "ImportanceWeightedModel"]

BACKENDS = ("fused", "reference")
# Elements of one [B, chunk, D] tensor during imputation (about 16 MB in float32).
IMPUTE_CHUNK_ELEMENTS = 1 << 22


@contextlib.contextmanager
def kept_modes(model: nn.Module):
    """Puts back every submodule's train / eval mode on exit (a user's encoder may be in
    eval mode inside a model in train mode)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def evaluation(model: nn.Module):
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

    def __init__(self, input_dim: int, latent_dim: Optional[int] = None, hidden_dim: int = 128,
                 n_samples: int = 20, out_dist: str = "gauss", ppca: bool = False,
                 min_scale: float = DEFAULT_MIN_SCALE,
                 feature_names: Optional[Sequence[str]] = None, backend: str = "fused",
                 encoder: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None):
        super().__init__()
        input_dim = _validate.positive_int(input_dim, "input_dim")
        latent_dim = _validate.positive_int(
            max(1, input_dim - 1) if latent_dim is None else latent_dim, "latent_dim")
        hidden_dim = _validate.positive_int(hidden_dim, "hidden_dim")
        if not min_scale > 0:
            raise ValueError(f"argument 'min_scale' must be > 0; got {min_scale!r}")
        self.input_dim, self.latent_dim, self.hidden_dim = input_dim, latent_dim, hidden_dim
        self.n_samples = _validate.n_samples(n_samples)
        self.out_dist = _validate.choice(out_dist, "out_dist", OUT_DISTS)
        self.backend = _validate.choice(backend, "backend", BACKENDS)
        self.ppca = bool(ppca)
        self.feature_names = _validate.optional_names(feature_names, input_dim)
        self.encoder = encoder if encoder is not None else Encoder(input_dim, hidden_dim,
                                                                   latent_dim)
        self.decoder = decoder if decoder is not None else make_decoder(
            out_dist, latent_dim, hidden_dim, input_dim, min_scale, ppca)
        if getattr(self.decoder, "family", None) != self.out_dist:
            raise ValueError(f"argument 'decoder' models the family "
                             f"{getattr(self.decoder, 'family', None)!r}; out_dist is "
                             f"{self.out_dist!r}")
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
    def ops(self):
        return ops if self.backend == "fused" else reference

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def set_standardization(self, mean, std) -> None:
        """Records the per-feature mean and std ([D], finite, std > 0) used to standardise
        the data (saved with the state dict)."""
        mean = _validate.as_tensor(mean, "mean", self._dtype, self._device).flatten()
        std = _validate.as_tensor(std, "std", self._dtype, self._device).flatten()
        for name, value in (("mean", mean), ("std", std)):
            if value.numel() != self.input_dim:
                raise ValueError(f"argument '{name}' must have input_dim = {self.input_dim} "
                                 f"values; got {value.numel()}")
            if not torch.isfinite(value).all():
                raise ValueError(f"argument '{name}' must be finite")
        if not (std > 0).all():
            raise ValueError("argument 'std' must be > 0")
        self.data_mean, self.data_std = mean, std

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The standardisation buffers are None until set_standardization: make room for
        # them when the state being loaded has them (a fresh model, Trainer resume_from).
        for name in ("data_mean", "data_std"):
            saved = state_dict.get(prefix + name)
            if saved is not None and getattr(self, name) is None:
                setattr(self, name, torch.empty_like(saved, dtype=self._dtype,
                                                     device=self._device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the importance-weighting core ---------------------------------------------------
    def _terms(self, x0: Tensor, s: Tensor, k: int, y: Optional[Tensor] = None,
               need_draws: bool = False) -> dict:
        """All per-sample terms for K = k samples of z per row.

        Returns a dict with ``log_w`` [B, k] (without the y term), the separate terms,
        ``means`` (E[x | z_k], [B, k, D]), ``x_hat`` (when a missing process or a
        prediction head needs it) and ``draws`` (samples of x for multiple imputation,
        when ``need_draws``)."""
        mu, std = self.encoder(x0)
        # Noise in x's dtype, also under autocast (where mu and loc are bfloat16): the
        # same random numbers as without autocast, at full precision.
        eps_z = torch.randn(mu.shape[0], k, mu.shape[1], dtype=x0.dtype, device=mu.device)
        z, log_p_z, log_q_z = self.ops.latent_terms(mu, std, eps_z)
        params = self.decoder(z)
        out = {"log_p_z": log_p_z, "log_q_z_given_x": log_q_z, "log_p_s_given_x": None,
               "x_hat": None, "draws": None}
        observed = s.bool().unsqueeze(1)
        selfmask = self.missing_model.selfmask_params() if self.has_missing_process else None
        x_k = None
        if selfmask is not None and self.out_dist == "gauss":
            # Fused: log p(x°|z) and log p(s|x̂) in one pass, x̂ never written to memory.
            eps_x = torch.randn(params["loc"].shape, dtype=x0.dtype, device=x0.device)
            log_px, out["log_p_s_given_x"] = self.ops.notmiwae_normal_terms(
                x0, s, params["loc"], params["scale"], eps_x, *selfmask)
            if self.supervised or need_draws:
                x_k = params["loc"] + params["scale"] * eps_x
        else:
            log_px = self.decoder.log_prob(self.ops, x0, s, params)
            if self.has_missing_process or self.supervised:
                x_k = self.decoder.sample(params)
            if self.has_missing_process:
                x_hat = torch.where(observed, x0.unsqueeze(1), x_k)
                logits = self.missing_model(x_hat)
                if not isinstance(logits, Tensor) or logits.shape != x_hat.shape:
                    got = (list(logits.shape) if isinstance(logits, Tensor)
                           else type(logits).__name__)
                    raise ValueError(
                        f"argument 'missing_process': {type(self.missing_model).__name__}"
                        f".forward must return logits of its input's shape "
                        f"{list(x_hat.shape)}; got {got}")
                logits = logits.to(x_hat.dtype)  # e.g. a float64 process, or autocast
                # log Π_d Bernoulli(s_d; σ(ℓ_d)): a Bernoulli likelihood of s, all observed.
                out["log_p_s_given_x"] = self.ops.masked_bernoulli_logprob(
                    s, torch.ones_like(s), logits)
        if x_k is not None:
            out["x_hat"] = torch.where(observed, x0.unsqueeze(1), x_k)
        if need_draws:
            # Resampled draws must be the samples the weights were computed with when the
            # weights depend on them (not-MIWAE); otherwise fresh draws of p(x | z_k).
            weighted_sample = self.has_missing_process and self.out_dist != "bern"
            out["draws"] = x_k if weighted_sample else self.decoder.draw(params)
        out["log_p_x_given_z"] = log_px
        log_w = log_px + log_p_z - log_q_z
        if out["log_p_s_given_x"] is not None:
            log_w = log_w + out["log_p_s_given_x"]
        out["log_w"] = log_w
        out["means"] = self.decoder.mean(params)
        return out

    def _inputs(self, x, s) -> tuple[Tensor, Tensor]:
        return _validate.data_and_mask(x, s, self.input_dim, self._dtype, self._device)

    def _batch_inputs(self, x, s) -> tuple[Tensor, Tensor]:
        """_inputs of a batch the bound is computed on (at least one row)."""
        x0, s_ = self._inputs(x, s)
        if x0.shape[0] == 0:
            raise ValueError("argument 'x' has no rows: the bound of an empty batch is "
                             "undefined")
        return x0, s_

    def _bound_outputs(self, terms: dict, log_w: Tensor,
                       bound: Optional[Tensor] = None) -> dict:
        if bound is None:
            bound = self.ops.iw_logmeanexp(log_w)
        elbo = bound.mean()
        result = {"loss": -elbo, "elbo": elbo, "log_w": log_w}
        for key in ("log_p_x_given_z", "log_p_s_given_x", "log_p_z", "log_q_z_given_x"):
            if terms.get(key) is not None:
                result[key] = terms[key].mean()
        return result

    def forward(self, x, s, n_samples: Optional[int] = None) -> dict:
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

    def _loss_and_grads(self, x, s) -> tuple[dict, Optional[list[tuple[Tensor, Tensor]]]]:
        """A training step's forward and backward (:class:`~notmiwae_fast.Trainer`):
        forward(x, s)'s outputs and, where the bound is one operator, the gradients of its
        loss from :func:`ops.gauss_bound_grads` (no autograd graph; the outputs are plain
        tensors) as [(tensor, gradient)] for the networks' weights and biases and the
        self-masking (W, b) (W may be computed from a parameter, as the known-signs slope:
        the caller propagates into it). Elsewhere (forward's outputs, None): call
        ``loss.backward()``."""
        return self._forward(x, s, self.n_samples, with_grads=True)

    def _forward(self, x, s, k: int, with_grads: bool) -> tuple[dict, Optional[list]]:
        x0, s_ = self._batch_inputs(x, s)
        selfmask = self.missing_model.selfmask_params() if self.has_missing_process else None
        if not self._whole_bound_applies(x0, selfmask):
            terms = self._terms(x0, s_, k)
            return self._bound_outputs(terms, terms["log_w"]), None
        args = self._whole_bound_args(x0, s_, k, selfmask)
        if not with_grads:
            return self._whole_bound_outputs(ops.gauss_bound(*args), selfmask), None
        *results, grads = ops.gauss_bound_grads(*args)
        tensors = [*args[4], *args[5], *args[6], *args[7], *(selfmask or ())]
        return self._whole_bound_outputs(results, selfmask), list(zip(tensors, grads))

    def _whole_bound_applies(self, x0: Tensor, selfmask) -> bool:
        """Whether :func:`ops.gauss_bound` computes this model's bound: the fused backend,
        the standard encoder and (non-PPCA) Gaussian decoder, no missing process or a
        self-masking one (``selfmask``: its (W, b)), and no autocast (under autocast the
        step-by-step path runs the networks in reduced precision)."""
        return (self._backend == "fused" and self.out_dist == "gauss"
                and type(self.encoder) is Encoder and type(self.decoder) is GaussianDecoder
                and not self.decoder.ppca
                and type(self.encoder.net) is MLP and type(self.decoder.net) is MLP
                and (not self.has_missing_process or selfmask is not None)
                and not torch.is_autocast_enabled(x0.device.type))

    def _whole_bound_args(self, x0: Tensor, s: Tensor, k: int, selfmask) -> tuple:
        """The arguments of :func:`ops.gauss_bound` (and of ``gauss_bound_grads``): the same
        noise, drawn in the same order, as :meth:`_terms` (so every path gives the same
        numbers for the same seed)."""
        B, L = x0.shape[0], self.latent_dim
        eps_z = torch.randn(B, k, L, dtype=x0.dtype, device=x0.device)
        eps_x = (torch.randn(B, k, self.input_dim, dtype=x0.dtype, device=x0.device)
                 if selfmask is not None else None)
        enc_w, enc_b = self.encoder.net.layer_parameters()
        dec_w, dec_b = self.decoder.net.layer_parameters()
        W, b = selfmask if selfmask is not None else (None, None)
        return (x0, s, eps_z, eps_x, enc_w, enc_b, dec_w, dec_b, W, b, self.decoder.min_scale)

    def _whole_bound_outputs(self, results, selfmask) -> dict:
        bound, log_w, log_px, log_ps, log_pz, log_qz = results
        terms = {"log_p_x_given_z": log_px, "log_p_z": log_pz, "log_q_z_given_x": log_qz,
                 "log_p_s_given_x": log_ps if selfmask is not None else None}
        return self._bound_outputs(terms, log_w, bound)

    # -- streaming over the importance samples -----------------------------------------
    def _chunk_size(self, batch: int, n_samples: int, chunk_size: Optional[int]) -> int:
        if chunk_size is not None:
            return min(_validate.positive_int(chunk_size, "chunk_size"), n_samples)
        return max(1, min(n_samples, IMPUTE_CHUNK_ELEMENTS // max(1, batch * self.input_dim)))

    def _stream(self, x0: Tensor, s: Tensor, n_samples: int, chunk_size: Optional[int],
                value_fn: Callable[[dict], Tensor], n_draws: Optional[int] = None):
        """Σ_k α_k value_fn(terms)_k over n_samples samples, by chunks.

        α = softmax of the log-weights (without any y term). Chunks are merged with the
        online softmax rule: with L_c = log Σ_{k in c} w_k, the running mean m and mass L
        become m ← (e^L m + e^{L_c} m_c) / (e^L + e^{L_c}). With ``n_draws`` = M it also
        keeps M sampling-importance-resampling draws (weighted reservoir sampling over
        the chunks) of ``terms["draws"]``. Returns (mean [B, V], draws [M, B, D] or None).
        """
        B = x0.shape[0]
        c = self._chunk_size(B, n_samples, chunk_size)
        mass = torch.full((B,), -math.inf, dtype=x0.dtype, device=x0.device)
        mean = None
        picked = None
        done = 0
        while done < n_samples:
            k = min(c, n_samples - done)
            terms = self._terms(x0, s, k, need_draws=n_draws is not None)
            log_w = terms["log_w"]
            chunk_mass = self.ops.iw_logmeanexp(log_w) + math.log(k)
            chunk_mean = self.ops.iw_impute(log_w, value_fn(terms))
            total = torch.logaddexp(mass, chunk_mass)
            keep = _share(mass, total)
            take = _share(chunk_mass, total)
            mean = chunk_mean * take.unsqueeze(1) if mean is None else \
                mean * keep.unsqueeze(1) + chunk_mean * take.unsqueeze(1)
            if n_draws is not None:
                picked = _resample(picked, terms["draws"], self.ops.iw_weights(log_w), take,
                                   n_draws)
            mass = total
            done += k
        return mean, picked

    def impute(self, x, s, n_samples: int = 1000, n_draws: Optional[int] = None,
               chunk_size: Optional[int] = None) -> Tensor:
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

        Args:
            x: [B, D]; anything at missing entries. s: [B, D] mask (1 = observed).
        Returns:
            [B, D] (or [M, B, D]) in x's dtype when x is a tensor; the model's mode
            (train / eval) is left as it was.
        """
        n_samples = _validate.n_samples(n_samples)
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
                mean, draws = self._stream(x_rows, s_rows, n_samples, chunk_size,
                                           lambda t: t["means"], n_draws)
                filled = torch.where(observed[rows], x_rows, mean if draws is None else draws)
                result[..., rows, :] = filled
        return result.to(out_dtype)

    # -- the missing process --------------------------------------------------------------
    def interpret_missing_process(self, verbose: bool = False) -> dict:
        """Per feature: direction, strength, slope W and threshold b of the learnt process
        (W and b in the data's original units when :meth:`set_standardization` was called;
        the strength |W| and the direction on the standardised scale)."""
        if not self.has_missing_process:
            raise AttributeError(f"{type(self).__name__} has no missing process")
        return self.missing_model.interpret(verbose=verbose, mean=self.data_mean,
                                            std=self.data_std)

    def compute_missing_sensitivity(self, x) -> Tensor:
        """[D, D] mean |∂ p(s_i = 0 | x) / ∂ x_j| over the rows of complete data x [B, D]
        (one vectorised Jacobian)."""
        if not self.has_missing_process:
            raise AttributeError(f"{type(self).__name__} has no missing process")
        x = _validate.as_tensor(x, "x", self._dtype, self._device)
        if not torch.isfinite(x).all():
            raise ValueError("argument 'x' must be complete data (finite; impute it first)")
        return self.missing_model.compute_sensitivity(x)


def _share(part: Tensor, total: Tensor) -> Tensor:
    """exp(part − total), 0 where the total has no mass (never NaN)."""
    safe_total = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    return torch.where(torch.isfinite(total), torch.exp(part - safe_total),
                       torch.zeros_like(total))


def _resample(picked: Optional[Tensor], draws: Tensor, w: Tensor, take: Tensor,
              n_draws: int) -> Tensor:
    """Weighted reservoir step: each of the M current picks is replaced, with probability
    ``take`` (this chunk's share of the mass so far), by a draw from this chunk chosen
    with probability w_k (the chunk's normalised weights).
    picked: [M, B, D]; draws: [B, k, D]; w: [B, k]."""
    B, k, D = draws.shape
    has_mass = w.sum(1) > 0
    probs = torch.where(has_mass.unsqueeze(1), w, torch.full_like(w, 1.0 / k))
    idx = torch.multinomial(probs, n_draws, replacement=True)           # [B, M]
    chosen = draws.gather(1, idx.unsqueeze(-1).expand(B, n_draws, D))    # [B, M, D]
    chosen = chosen.permute(1, 0, 2)
    if picked is None:
        return chosen
    replace = torch.rand(n_draws, B, 1, device=draws.device) < take.view(1, B, 1)
    return torch.where(replace, chosen, picked)


def _missing_process(missing_process, input_dim: int, hidden_dim: int,
                     feature_names, signs) -> BaseMissingProcess:
    if isinstance(missing_process, BaseMissingProcess):
        if signs is not None:
            raise ValueError("argument 'signs' is for missing_process="
                             "'selfmasking_known_signs'; a BaseMissingProcess instance "
                             "holds its own parameters")
        if missing_process.input_dim != input_dim:
            raise ValueError(f"argument 'missing_process' has input_dim "
                             f"{missing_process.input_dim}; the model has {input_dim}")
        return missing_process
    if isinstance(missing_process, nn.Module):
        raise ValueError("argument 'missing_process' must subclass BaseMissingProcess "
                         f"(got {type(missing_process).__name__})")
    return MissingProcess(input_dim, missing_process, hidden_dim=hidden_dim,
                          feature_names=feature_names, signs=signs)


class MIWAE(ImportanceWeightedModel):
    """MIWAE (Mattei & Frellsen 2019): missing at random, no model of the mask.

    See :class:`ImportanceWeightedModel` for the arguments; ``forward(x, s)``,
    ``impute(x, s, n_samples)``."""


class NotMIWAE(ImportanceWeightedModel):
    """not-MIWAE (Ipsen, Mattei & Frellsen 2021): data missing not at random, with a
    model p(s | x) of the missing process.

    Extra args:
        missing_process: ``"selfmasking"`` (default), ``"selfmasking_known_signs"``,
            ``"linear"``, ``"nonlinear"`` or a :class:`BaseMissingProcess` instance.
        signs: [D] of ±1 for ``selfmasking_known_signs`` (+1: high values missing).
        missing_hidden_dim: width of the ``nonlinear`` process (default hidden_dim // 2).
    """

    has_missing_process = True

    def __init__(self, input_dim: int, latent_dim: Optional[int] = None, hidden_dim: int = 128,
                 n_samples: int = 20, out_dist: str = "gauss",
                 missing_process: Union[str, BaseMissingProcess] = "selfmasking",
                 signs=None, feature_names: Optional[Sequence[str]] = None,
                 ppca: bool = False, min_scale: float = DEFAULT_MIN_SCALE,
                 missing_hidden_dim: Optional[int] = None, backend: str = "fused",
                 encoder: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None):
        super().__init__(input_dim, latent_dim, hidden_dim, n_samples, out_dist, ppca,
                         min_scale, feature_names, backend, encoder, decoder)
        if missing_hidden_dim is None:
            missing_hidden_dim = max(1, hidden_dim // 2)
        self.missing_model = _missing_process(
            missing_process, self.input_dim,
            _validate.positive_int(missing_hidden_dim, "missing_hidden_dim"),
            feature_names, signs)
        self.missing_process = (missing_process if isinstance(missing_process, str)
                                else type(missing_process).__name__)
        self._apply_backend()


class _Supervised:
    """The supervised part shared by SupMIWAE and SupNotMIWAE (Ipsen et al. 2022)."""

    supervised = True

    def _init_head(self, y_dim: int, task: str, head_hidden_dim: Optional[int]) -> None:
        self.task = _validate.choice(task, "task", PredictionHead.TASKS)
        self.y_dim = y_dim = _validate.positive_int(y_dim, "y_dim")
        head_hidden_dim = _validate.positive_int(
            self.hidden_dim if head_hidden_dim is None else head_hidden_dim, "head_hidden_dim")
        self.head = PredictionHead(self.input_dim, y_dim, head_hidden_dim, self.task)
        self._apply_backend()

    def forward(self, x, s, y=None, n_samples: Optional[int] = None) -> dict:
        """The bound with log p(y | x̂_k), x̂_k the k-th imputed sample (not the
        zero-filled x).

        Args:
            x: [B, D] data; anything at missing entries. s: [B, D] mask (1 = observed).
            y: regression [B, y_dim] (or [B] when y_dim = 1) floats; classification [B]
                class indices.
            n_samples: K (default: the model's ``n_samples``).
        Returns:
            the dict of the unsupervised models plus ``log_p_y_given_x`` (batch mean)."""
        k = self.n_samples if n_samples is None else _validate.n_samples(n_samples)
        x0, s_ = self._batch_inputs(x, s)
        y_ = _validate.targets(y, x0.shape[0], self.task, self.y_dim, self._dtype,
                               self._device)
        terms = self._terms(x0, s_, k)
        log_py = self.head.log_prob(terms["x_hat"], y_)
        result = self._bound_outputs(terms, terms["log_w"] + log_py)
        result["log_p_y_given_x"] = log_py.mean()
        return result

    def predict(self, x, s, n_samples: int = 1000, chunk_size: Optional[int] = None) -> Tensor:
        """p(y | x°) ≈ Σ_k α_k p(y | x̂_k), marginalising over the missing values.

        Args:
            x: [B, D]; anything at missing entries. s: [B, D] mask (1 = observed).
        Returns:
            [B, y_dim] predicted means (regression) or [B, C] class probabilities
            (classification; C = 2 for binary with y_dim = 1). The model's mode is kept."""
        n_samples = _validate.n_samples(n_samples)
        with evaluation(self):
            x0, s_ = self._inputs(x, s)
            mean, _ = self._stream(x0, s_, n_samples, chunk_size,
                                   lambda t: self.head.predictive(t["x_hat"]))
        return mean


class SupMIWAE(_Supervised, MIWAE):
    """supMIWAE: MIWAE with a prediction head p(y | x̂) on the imputed samples.

    Extra args: ``y_dim``, ``task`` (``"regression"`` or ``"classification"``),
    ``head_hidden_dim``. ``forward(x, s, y)``, ``predict(x, s, n_samples)``."""

    def __init__(self, input_dim: int, y_dim: int = 1, task: str = "regression",
                 head_hidden_dim: Optional[int] = None, **kwargs):
        super().__init__(input_dim, **kwargs)
        self._init_head(y_dim, task, head_hidden_dim)


class SupNotMIWAE(_Supervised, NotMIWAE):
    """sup-not-MIWAE: not-MIWAE with a prediction head p(y | x̂) on the imputed samples
    (the weights include p(s | x̂_k)). Arguments of :class:`NotMIWAE` plus ``y_dim``,
    ``task`` and ``head_hidden_dim``."""

    def __init__(self, input_dim: int, y_dim: int = 1, task: str = "regression",
                 head_hidden_dim: Optional[int] = None, **kwargs):
        super().__init__(input_dim, **kwargs)
        self._init_head(y_dim, task, head_hidden_dim)
