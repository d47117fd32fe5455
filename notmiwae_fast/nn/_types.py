"""The types the model layer is written against: what the models accept as data, the
operators they call (the fused ones or their reference twins) and what a decoder is."""

from __future__ import annotations

from typing import Protocol, Union

import numpy.typing as npt
from torch import Tensor

# x, s and y as the models take them: a tensor, or an array-like (ndarray, DataFrame,
# nested lists) converted with the model's dtype and device.
ArrayLike = Union[Tensor, npt.ArrayLike]


class Operators(Protocol):
    """The operators the models and decoders call, with the same signatures in
    :mod:`notmiwae_fast.ops` (kernels) and :mod:`notmiwae_fast.ops.reference` (pure
    PyTorch): either module is an ``Operators``."""

    def latent_terms(
        self, mu: Tensor, std: Tensor, eps: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]: ...

    def masked_normal_logprob(
        self, x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor
    ) -> Tensor: ...

    def masked_bernoulli_logprob(self, x: Tensor, mask: Tensor, logits: Tensor) -> Tensor: ...

    def masked_studentt_logprob(
        self, x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, df: Tensor
    ) -> Tensor: ...

    def notmiwae_normal_terms(
        self, x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, eps: Tensor, W: Tensor, b: Tensor
    ) -> tuple[Tensor, Tensor]: ...

    def iw_logmeanexp(self, log_w: Tensor) -> Tensor: ...

    def iw_weights(self, log_w: Tensor) -> Tensor: ...

    def iw_impute(self, log_w: Tensor, values: Tensor) -> Tensor: ...


class Decoder(Protocol):
    """What the models need of a decoder (an ``nn.Module``): called on z [B, K, L] it
    gives its family's parameters, each [B, K, D] (a Student-t's df [D]); the rest are
    that family's, as in :class:`~notmiwae_fast.nn.networks.GaussianFamily`."""

    family: str

    def __call__(self, z: Tensor) -> dict[str, Tensor]: ...

    def log_prob(self, ops: Operators, x0: Tensor, s: Tensor, p: dict[str, Tensor]) -> Tensor:
        """Σ_d s · log p(x0 | params) [B, K], through ``ops``."""
        ...

    def mean(self, p: dict[str, Tensor]) -> Tensor:
        """E[x | z] [B, K, D]."""
        ...

    def sample(self, p: dict[str, Tensor]) -> Tensor:
        """A differentiable draw (or stand-in) of x | z [B, K, D], for p(s | x̂)."""
        ...

    def draw(self, p: dict[str, Tensor]) -> Tensor:
        """A genuine draw of x | z [B, K, D], for multiple imputation."""
        ...
