"""notmiwae_fast: MIWAE / not-MIWAE for data missing not at random, on fused C++ and
CUDA kernels registered as PyTorch operators.

* models: :class:`MIWAE`, :class:`NotMIWAE`, :class:`SupMIWAE`, :class:`SupNotMIWAE`;
  missing processes (:class:`BaseMissingProcess` and the built-in ones); :class:`Trainer`;
  :mod:`notmiwae_fast.utils`;
* :func:`backend` says which implementation of the operators is active;
* :class:`NotMIWAEImputer`, :class:`MIWAEImputer`: scikit-learn estimators (need
  scikit-learn; imported on first use); :mod:`notmiwae_fast.experiments` (the paper's UCI
  protocol);
* :mod:`notmiwae_fast.export` (TorchScript, ONNX), :mod:`notmiwae_fast.images` (clipped
  pixels), :mod:`notmiwae_fast.distributed` (torchrun);
* :mod:`notmiwae_fast.ops` holds the operators (typed wrappers over
  ``torch.ops.notmiwae_fast.*``), :mod:`notmiwae_fast.reference` their pure-PyTorch twins.
"""

from . import ops, utils
from ._version import __version__
from .nn.missing import (
    MISSING_PROCESSES,
    BaseMissingProcess,
    ConstantMissingProcess,
    LinearMissingProcess,
    MissingProcess,
    NonlinearMissingProcess,
    SelfMaskingKnownSignsProcess,
    SelfMaskingProcess,
)
from .nn.models import MIWAE, NotMIWAE
from .nn.networks import PredictionHead
from .nn.supervised import SupMIWAE, SupNotMIWAE
from .ops import reference
from .ops._library import Backend, backend, library_path
from .train.trainer import Trainer

__all__ = [
    "MIWAE",
    "NotMIWAE",
    "SupMIWAE",
    "SupNotMIWAE",
    "Trainer",
    "PredictionHead",
    "BaseMissingProcess",
    "SelfMaskingProcess",
    "SelfMaskingKnownSignsProcess",
    "LinearMissingProcess",
    "NonlinearMissingProcess",
    "ConstantMissingProcess",
    "MissingProcess",
    "MISSING_PROCESSES",
    "Backend",
    "backend",
    "library_path",
    "ops",
    "reference",
    "utils",
    "__version__",
    "NotMIWAEImputer",
    "MIWAEImputer",
]

_LAZY = {"NotMIWAEImputer": "impute.imputer", "MIWAEImputer": "impute.imputer"}


def __getattr__(name: str):
    """The scikit-learn imputers, imported on first use (scikit-learn is optional)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'notmiwae_fast' has no attribute {name!r}")
