"""The pure-PyTorch twin of every notmiwae_fast operator, one module per operator family.

These functions are the source of truth: the tests compare the C++ and CUDA kernels to
them, the package falls back to them when the compiled library is absent, and export
to ONNX traces them. They favour clarity over speed, use only differentiable PyTorch
operations (so autograd gives their gradients), and follow the same edge-case rules as
the kernels:

* a row of log-weights that are all ``-inf`` has no mass: ``iw_logmeanexp`` gives
  ``-inf``, ``iw_weights`` and ``iw_impute`` give zeros, and every gradient is zero,
  never NaN;
* entries under ``mask == 0`` contribute exactly 0 to the masked likelihoods, whatever
  ``x`` holds there (NaN and ±inf included), to the values and to the gradients;
* log-sigmoids are computed in softplus form, finite for logits up to ±1e4.

Shapes: ``x``, ``mask``: [B, D] (broadcast over K); per-sample tensors: [B, K, D];
per-feature parameters: [D]; log-weights: [B, K]. ``mask`` is bool or 0/1 float.
"""

from __future__ import annotations

from .bound import LOG_VAR_BOUND, gauss_bound, gauss_bound_grads
from .clipped import (
    censored_normal_log_prob,
    clipped_impute,
    clipped_log_weights,
    clipped_mean,
    mills_ratio,
)
from .data import observed_data
from .iw import iw_impute, iw_logmeanexp, iw_weights
from .latent import latent_terms
from .likelihood import (
    masked_bernoulli_logprob,
    masked_categorical_logprob,
    masked_normal_logprob,
    masked_poisson_logprob,
    masked_studentt_logprob,
    masked_studentt_logprob_normalised,
    normal_log_density,
    notmiwae_normal_terms,
    selfmask_logprob,
    studentt_log_density,
    studentt_log_normaliser,
)
from .mlp import mlp_tanh, softplus_scale

__all__ = [
    "observed_data",
    "iw_logmeanexp",
    "iw_weights",
    "iw_impute",
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "masked_poisson_logprob",
    "masked_categorical_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
    "mlp_tanh",
    "softplus_scale",
    "latent_terms",
    "gauss_bound",
    "gauss_bound_grads",
    "clipped_impute",
]
