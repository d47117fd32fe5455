"""notmiwae_fast: MIWAE / not-MIWAE for data missing not at random, on fused C++ and
CUDA kernels registered as PyTorch operators.

* models: :class:`MIWAE`, :class:`NotMIWAE`, :class:`SupMIWAE`, :class:`SupNotMIWAE`;
  missing processes (:class:`BaseMissingProcess` and the built-in ones); :class:`Trainer`;
  :mod:`notmiwae_fast.utils`;
* :func:`backend` says which implementation of the operators is active;
* :mod:`notmiwae_fast.ops` holds the operators (typed wrappers over
  ``torch.ops.notmiwae_fast.*``), :mod:`notmiwae_fast.reference` their pure-PyTorch twins.
"""

from . import ops, reference, utils
from ._library import Backend, backend, library_path
from .missing import (MISSING_PROCESSES, BaseMissingProcess, LinearMissingProcess,
                      MissingProcess, NonlinearMissingProcess, SelfMaskingKnownSignsProcess,
                      SelfMaskingProcess)
from .models import MIWAE, NotMIWAE, SupMIWAE, SupNotMIWAE
from .networks import PredictionHead
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "MIWAE", "NotMIWAE", "SupMIWAE", "SupNotMIWAE", "Trainer", "PredictionHead",
    "BaseMissingProcess", "SelfMaskingProcess", "SelfMaskingKnownSignsProcess",
    "LinearMissingProcess", "NonlinearMissingProcess", "MissingProcess", "MISSING_PROCESSES",
    "Backend", "backend", "library_path", "ops", "reference", "utils", "__version__",
]
