"""The unsupervised models: MIWAE (data missing at random) and NotMIWAE (missing not at
random, with a model p(s | x) of the missing process), on the importance-weighting core
of :mod:`.base`. Shapes: x, s [B, D].
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import nn

from .._common import validate as _validate
from ._types import Decoder
from .base import ImportanceWeightedModel, kept_modes
from .missing import BaseMissingProcess, Signs, as_missing_process
from .networks import DEFAULT_MIN_SCALE

# The core and its mode helper are importable from here too (the training layer does).
__all__ = ["MIWAE", "NotMIWAE", "ImportanceWeightedModel", "kept_modes"]


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

    def __init__(
        self,
        input_dim: int,
        latent_dim: Optional[int] = None,
        hidden_dim: int = 128,
        n_samples: int = 20,
        out_dist: str = "gauss",
        missing_process: Union[str, BaseMissingProcess] = "selfmasking",
        signs: Optional[Signs] = None,
        feature_names: Optional[Sequence[str]] = None,
        ppca: bool = False,
        min_scale: float = DEFAULT_MIN_SCALE,
        missing_hidden_dim: Optional[int] = None,
        backend: str = "fused",
        encoder: Optional[nn.Module] = None,
        decoder: Optional[Decoder] = None,
    ):
        super().__init__(
            input_dim,
            latent_dim,
            hidden_dim,
            n_samples,
            out_dist,
            ppca,
            min_scale,
            feature_names,
            backend,
            encoder,
            decoder,
        )
        if missing_hidden_dim is None:
            missing_hidden_dim = max(1, hidden_dim // 2)
        self.missing_model = as_missing_process(
            missing_process,
            self.input_dim,
            _validate.positive_int(missing_hidden_dim, "missing_hidden_dim"),
            feature_names,
            signs,
        )
        self.missing_process = (
            missing_process if isinstance(missing_process, str) else type(missing_process).__name__
        )
        self._apply_backend()

    def _missing_model(self) -> BaseMissingProcess:
        return self.missing_model
