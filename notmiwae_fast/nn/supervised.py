"""The supervised models SupMIWAE and SupNotMIWAE (Ipsen et al. 2022): MIWAE and
not-MIWAE with a prediction head p(y | x̂) on the imputed samples, whose log-likelihood
joins the importance weights of the bound:

    log w_k = (the unsupervised model's log w_k) + log p(y | x̂_k)

and whose prediction p(y | x°) ≈ Σ_k α_k p(y | x̂_k) marginalises over the missing
values. Shapes: x, s [B, D]; y [B, y_dim] (regression) or [B] (class indices).
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from .._common import validate as _validate
from ._types import ArrayLike
from .base import ImportanceWeightedModel, evaluation
from .models import MIWAE, NotMIWAE
from .networks import PredictionHead

__all__ = ["SupMIWAE", "SupNotMIWAE"]


class _SupervisedModel(ImportanceWeightedModel):
    """The supervised part shared by SupMIWAE and SupNotMIWAE: the head, the bound with
    y and the prediction. Args of the unsupervised model plus ``y_dim``, ``task``
    (``"regression"`` or ``"classification"``) and ``head_hidden_dim`` (default
    hidden_dim)."""

    supervised = True

    def __init__(
        self,
        input_dim: int,
        y_dim: int = 1,
        task: str = "regression",
        head_hidden_dim: Optional[int] = None,
        **kwargs: Any,
    ):
        super().__init__(input_dim, **kwargs)
        self.task = _validate.choice(task, "task", PredictionHead.TASKS)
        self.y_dim = y_dim = _validate.positive_int(y_dim, "y_dim")
        head_hidden_dim = _validate.positive_int(
            self.hidden_dim if head_hidden_dim is None else head_hidden_dim, "head_hidden_dim"
        )
        self.head = PredictionHead(self.input_dim, y_dim, head_hidden_dim, self.task)
        self._apply_backend()

    # y comes third, as in forward(x, s, y): the supervised models' public signature,
    # which puts the unsupervised models' n_samples one place later.
    def forward(  # type: ignore[override]
        self,
        x: ArrayLike,
        s: ArrayLike,
        y: Optional[ArrayLike] = None,
        n_samples: Optional[int] = None,
    ) -> dict[str, Tensor]:
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
        y_ = _validate.targets(y, x0.shape[0], self.task, self.y_dim, self._dtype, self._device)
        terms = self._terms(x0, s_, k)
        log_py = self.head.log_prob(terms["x_hat"], y_)
        result = self._bound_outputs(terms, terms["log_w"] + log_py)
        result["log_p_y_given_x"] = log_py.mean()
        return result

    def predict(
        self, x: ArrayLike, s: ArrayLike, n_samples: int = 1000, chunk_size: Optional[int] = None
    ) -> Tensor:
        """p(y | x°) ≈ Σ_k α_k p(y | x̂_k), marginalising over the missing values.

        Args:
            x: [B, D]; anything at missing entries. s: [B, D] mask (1 = observed).
        Returns:
            [B, y_dim] predicted means (regression) or [B, C] class probabilities
            (classification; C = 2 for binary with y_dim = 1). The model's mode is kept."""
        n_samples = _validate.n_samples(n_samples)
        with evaluation(self):
            x0, s_ = self._inputs(x, s)
            mean, _ = self._stream(
                x0, s_, n_samples, chunk_size, lambda t: self.head.predictive(t["x_hat"])
            )
        return mean


class SupMIWAE(_SupervisedModel, MIWAE):
    """supMIWAE: MIWAE with a prediction head p(y | x̂) on the imputed samples.

    Extra args: ``y_dim``, ``task`` (``"regression"`` or ``"classification"``),
    ``head_hidden_dim``. ``forward(x, s, y)``, ``predict(x, s, n_samples)``."""


class SupNotMIWAE(_SupervisedModel, NotMIWAE):
    """sup-not-MIWAE: not-MIWAE with a prediction head p(y | x̂) on the imputed samples
    (the weights include p(s | x̂_k)). Arguments of :class:`NotMIWAE` plus ``y_dim``,
    ``task`` and ``head_hidden_dim``."""
