"""Missing-data processes p(s | x) for not-MIWAE.

p(s | x) = Π_d Bernoulli(s_d; σ(ℓ_d(x))), where s_d = 1 means *observed*. A process is an
``nn.Module`` whose ``forward(x)`` maps data of shape [..., D] to the logits ℓ of the
same shape. Built in:

* ``selfmasking``: ℓ_d = −W_d (x_d − b_d). W_d > 0: values above b_d tend to be missing.
* ``selfmasking_known_signs``: ℓ_d = −sign_d · softplus(W_d) · (x_d − b_d). sign +1: high
  values go missing; −1: low values go missing (the direction is known, the strength
  and the threshold are learnt).
* ``linear`` (the paper's "agnostic"): ℓ = A x + c, a dense D × D layer.
* ``nonlinear``: an MLP D → h → h → D.
* ``mcar``: ℓ_d = c_d, a constant per feature (missing completely at random: p(s) does
  not depend on x, so the model imputes as MIWAE does; its bound also scores s, which
  makes it comparable with the other processes').

A user-defined process subclasses :class:`BaseMissingProcess` and implements
``forward``. The self-masking processes also expose :meth:`selfmask_params`, which lets
the models use the fused ``notmiwae_normal_terms`` kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._common import validate as _validate
from .networks import layer_by_layer, mlp

# The per-feature directions of selfmasking_known_signs: +1 (high values go missing), −1.
Signs = Union[Sequence[float], Tensor]

__all__ = [
    "BaseMissingProcess",
    "SelfMaskingProcess",
    "SelfMaskingKnownSignsProcess",
    "LinearMissingProcess",
    "NonlinearMissingProcess",
    "ConstantMissingProcess",
    "MissingProcess",
    "MISSING_PROCESSES",
]


class BaseMissingProcess(nn.Module):
    """Base class of missing processes: subclass it and implement ``forward(x)``.

    Args:
        input_dim: number of features D.
        feature_names: optional names of the D features (used by ``interpret``).

    Example::

        class ThresholdProcess(BaseMissingProcess):
            def __init__(self, input_dim):
                super().__init__(input_dim)
                self.threshold = nn.Parameter(torch.zeros(input_dim))

            def forward(self, x):             # [..., D] -> logits of s = 1, [..., D]
                return 5.0 * (self.threshold - x)
    """

    def __init__(
        self, input_dim: int, feature_names: Optional[Sequence[str]] = None, **kwargs: Any
    ):
        super().__init__()
        input_dim = _validate.positive_int(input_dim, "input_dim")
        if feature_names is not None and len(feature_names) != input_dim:
            raise ValueError(
                f"argument 'feature_names' must have input_dim = {input_dim} "
                f"names; got {len(feature_names)}"
            )
        self.input_dim = input_dim
        self.feature_names = (
            list(feature_names)
            if feature_names is not None
            else [f"feature_{i}" for i in range(input_dim)]
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits of p(s = 1 | x): [..., D] -> [..., D]."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x) -> logits")

    def selfmask_params(self) -> Optional[tuple[Tensor, Tensor]]:
        """(W, b), both [D], when the logits are −W · (x − b); None otherwise.

        Processes of that form get the fused not-MIWAE kernel."""
        return None

    def interpret(
        self, verbose: bool = False, mean: Optional[Tensor] = None, std: Optional[Tensor] = None
    ) -> dict[str, Any]:
        """A description of the learnt process (override for custom processes).

        ``mean`` and ``std`` ([D]) convert thresholds to the data's original units when
        the data were standardised."""
        result = {
            "process_type": type(self).__name__,
            "feature_names": self.feature_names,
            "note": "no closed-form interpretation; see compute_sensitivity(x)",
        }
        if verbose:
            print(f"{type(self).__name__}: {result['note']}")
        return result

    def missing_probability(self, x: Tensor) -> Tensor:
        """p(s_d = 0 | x) for every feature: [B, D] -> [B, D]."""
        return torch.sigmoid(-self.forward(x))

    def compute_sensitivity(self, x: Tensor) -> Tensor:
        """How much each feature moves each feature's probability of being missing.

        One vectorised Jacobian (``torch.func.vmap`` of ``jacrev``), not D backward passes.

        Args:
            x: [B, D] complete data (e.g. imputed).
        Returns:
            [D, D]: entry [i, j] is the mean over rows of |∂ p(s_i = 0 | x) / ∂ x_j|.
        """
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"argument 'x' must have shape [B, {self.input_dim}]; got {list(x.shape)}"
            )
        with layer_by_layer(self):
            jac = torch.func.vmap(torch.func.jacrev(self.missing_probability))(x.detach())
        return jac.abs().mean(dim=0)


def _selfmask_interpretation(
    process: BaseMissingProcess,
    slope: Tensor,
    b: Tensor,
    verbose: bool,
    mean: Optional[Tensor],
    std: Optional[Tensor],
) -> dict[str, Any]:
    """Per-feature direction, strength and threshold of logits −slope · (x − b).

    With the standardisation (``mean``, ``std``) the logits in original units are
    −(slope / std) · (x − (mean + std · b)): "W" and "threshold" are given in those
    units; "strength" and the direction stay on the model's standardised scale (|W| per
    standard deviation, comparable across features; below 0.1 counts as no effect)."""
    slope = slope.detach().cpu().double()
    threshold = b.detach().cpu().double()
    original = mean is not None and std is not None
    w_units = slope
    if mean is not None and std is not None:
        std_ = std.detach().cpu().double()
        threshold = threshold * std_ + mean.detach().cpu().double()
        w_units = slope / std_
    features = []
    for i, name in enumerate(process.feature_names):
        w = float(slope[i])
        if abs(w) < 0.1:
            direction = "none (missing at random)"
        else:
            direction = "high values missing" if w > 0 else "low values missing"
        features.append(
            {
                "feature": name,
                "direction": direction,
                "strength": abs(w),
                "W": float(w_units[i]),
                "threshold": float(threshold[i]),
            }
        )
        if verbose:
            print(
                f"{name}: {direction} (strength {abs(w):.3f}, threshold {float(threshold[i]):.3f})"
            )
    return {
        "process_type": type(process).__name__,
        "feature_names": process.feature_names,
        "units": "original" if original else "model",
        "features": features,
    }


class SelfMaskingProcess(BaseMissingProcess):
    """ℓ_d = −W_d (x_d − b_d): each feature's missingness depends on its own value."""

    def __init__(
        self, input_dim: int, feature_names: Optional[Sequence[str]] = None, **kwargs: Any
    ):
        super().__init__(input_dim, feature_names)
        self.W = nn.Parameter(torch.ones(input_dim))
        self.b = nn.Parameter(torch.zeros(input_dim))

    def forward(self, x: Tensor) -> Tensor:
        return -self.W * (x - self.b)

    def selfmask_params(self) -> tuple[Tensor, Tensor]:
        return self.W, self.b

    def interpret(
        self, verbose: bool = False, mean: Optional[Tensor] = None, std: Optional[Tensor] = None
    ) -> dict[str, Any]:
        return _selfmask_interpretation(self, self.W, self.b, verbose, mean, std)


class SelfMaskingKnownSignsProcess(BaseMissingProcess):
    """ℓ_d = −sign_d · softplus(W_d) · (x_d − b_d), the direction sign_d given.

    Args:
        signs: [D] of +1 (high values go missing) and −1 (low values go missing);
            default all +1.
    """

    # The buffer of the [D] directions, declared for type checkers only: TorchScript, which
    # compiles the processes for export, cannot resolve a class-level annotation.
    if TYPE_CHECKING:
        signs: Tensor

    def __init__(
        self,
        input_dim: int,
        signs: Optional[Signs] = None,
        feature_names: Optional[Sequence[str]] = None,
        **kwargs: Any,
    ):
        super().__init__(input_dim, feature_names)
        given = (
            torch.ones(input_dim)
            if signs is None
            else torch.as_tensor(signs, dtype=torch.float32).flatten()
        )
        if given.numel() != input_dim:
            raise ValueError(
                f"argument 'signs' must have input_dim = {input_dim} entries; got {given.numel()}"
            )
        if not torch.all((given == 1) | (given == -1)):
            raise ValueError(
                "argument 'signs' must hold only +1 (high values missing) and "
                f"-1 (low values missing); got {given.tolist()}"
            )
        self.W = nn.Parameter(torch.ones(input_dim))
        self.b = nn.Parameter(torch.zeros(input_dim))
        self.register_buffer("signs", given)

    def slope(self) -> Tensor:
        """sign_d · softplus(W_d), [D]: the W of the self-masking logits −W (x − b)."""
        return self.signs * F.softplus(self.W)

    def forward(self, x: Tensor) -> Tensor:
        return -self.slope() * (x - self.b)

    def selfmask_params(self) -> tuple[Tensor, Tensor]:
        return self.slope(), self.b

    def interpret(
        self, verbose: bool = False, mean: Optional[Tensor] = None, std: Optional[Tensor] = None
    ) -> dict[str, Any]:
        return _selfmask_interpretation(self, self.slope(), self.b, verbose, mean, std)


class LinearMissingProcess(BaseMissingProcess):
    """ℓ = A x + c with a dense D × D matrix A (missingness may depend on every feature)."""

    def __init__(
        self, input_dim: int, feature_names: Optional[Sequence[str]] = None, **kwargs: Any
    ):
        super().__init__(input_dim, feature_names)
        self.linear = nn.Linear(input_dim, input_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def interpret(
        self, verbose: bool = False, mean: Optional[Tensor] = None, std: Optional[Tensor] = None
    ) -> dict[str, Any]:
        A = self.linear.weight.detach().cpu()
        self_dependence = -torch.diagonal(A)
        result = {
            "process_type": type(self).__name__,
            "feature_names": self.feature_names,
            "A": A,
            "c": self.linear.bias.detach().cpu(),
            "self_dependence": self_dependence,
        }
        if verbose:
            for name, w in zip(self.feature_names, self_dependence.tolist()):
                print(f"{name}: self-dependence {w:+.3f} (positive: high values missing)")
        return result


class NonlinearMissingProcess(BaseMissingProcess):
    """ℓ = MLP(x), D → hidden → hidden → D with tanh activations."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 64,
        feature_names: Optional[Sequence[str]] = None,
        **kwargs: Any,
    ):
        super().__init__(input_dim, feature_names)
        self.mlp = mlp([input_dim, hidden_dim, hidden_dim, input_dim])

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class ConstantMissingProcess(BaseMissingProcess):
    """ℓ_d = c_d: each feature goes missing at its own constant rate, whatever x is
    (missing completely at random)."""

    def __init__(
        self, input_dim: int, feature_names: Optional[Sequence[str]] = None, **kwargs: Any
    ):
        super().__init__(input_dim, feature_names)
        self.c = nn.Parameter(torch.zeros(input_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.c.to(x.dtype).expand(x.shape)

    def interpret(
        self, verbose: bool = False, mean: Optional[Tensor] = None, std: Optional[Tensor] = None
    ) -> dict[str, Any]:
        rate = torch.sigmoid(-self.c.detach().cpu()).tolist()
        result = {
            "process_type": type(self).__name__,
            "feature_names": self.feature_names,
            "missing_rate": rate,
        }
        if verbose:
            for name, r in zip(self.feature_names, rate):
                print(f"{name}: missing at a constant rate {r:.3f}")
        return result


def process_logits(process: BaseMissingProcess, x_hat: Tensor) -> Tensor:
    """The logits ``process(x_hat)`` ([..., D], x_hat's shape and dtype); a ValueError when
    a user's process returns something else."""
    logits = process(x_hat)
    if not isinstance(logits, Tensor) or logits.shape != x_hat.shape:
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"argument 'missing_process': {type(process).__name__}.forward must "
            f"return logits of its input's shape {list(x_hat.shape)}; got {got}"
        )
    return logits.to(x_hat.dtype)  # e.g. a float64 process, or autocast


MISSING_PROCESSES = {
    "selfmasking": SelfMaskingProcess,
    "selfmasking_known_signs": SelfMaskingKnownSignsProcess,
    "linear": LinearMissingProcess,
    "nonlinear": NonlinearMissingProcess,
    "mcar": ConstantMissingProcess,
}


def MissingProcess(
    input_dim: int,
    missing_process: str = "selfmasking",
    hidden_dim: int = 64,
    feature_names: Optional[Sequence[str]] = None,
    signs: Optional[Signs] = None,
) -> BaseMissingProcess:
    """Builds a built-in process by name (one of :data:`MISSING_PROCESSES`)."""
    if missing_process not in MISSING_PROCESSES:
        raise ValueError(
            f"argument 'missing_process' must be one of "
            f"{', '.join(repr(k) for k in MISSING_PROCESSES)} or a "
            f"BaseMissingProcess instance; got {missing_process!r}"
        )
    if signs is not None and missing_process != "selfmasking_known_signs":
        raise ValueError(
            "argument 'signs' is only used by missing_process="
            f"'selfmasking_known_signs'; got missing_process={missing_process!r}"
        )
    return MISSING_PROCESSES[missing_process](
        input_dim, hidden_dim=hidden_dim, signs=signs, feature_names=feature_names
    )


def as_missing_process(
    missing_process: Union[str, BaseMissingProcess],
    input_dim: int,
    hidden_dim: int,
    feature_names: Optional[Sequence[str]],
    signs: Optional[Signs],
) -> BaseMissingProcess:
    """A model's ``missing_process`` argument as a process: a built-in one by name, or the
    user's :class:`BaseMissingProcess` instance (checked against ``input_dim``)."""
    if isinstance(missing_process, BaseMissingProcess):
        if signs is not None:
            raise ValueError(
                "argument 'signs' is for missing_process="
                "'selfmasking_known_signs'; a BaseMissingProcess instance "
                "holds its own parameters"
            )
        if missing_process.input_dim != input_dim:
            raise ValueError(
                f"argument 'missing_process' has input_dim "
                f"{missing_process.input_dim}; the model has {input_dim}"
            )
        return missing_process
    if isinstance(missing_process, nn.Module):
        raise ValueError(
            "argument 'missing_process' must subclass BaseMissingProcess "
            f"(got {type(missing_process).__name__})"
        )
    return MissingProcess(
        input_dim, missing_process, hidden_dim=hidden_dim, feature_names=feature_names, signs=signs
    )
