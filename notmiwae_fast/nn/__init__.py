"""The model layer: networks (:mod:`.networks`), missing processes (:mod:`.missing`) and
the four importance-weighted models (:mod:`.models`: MIWAE and NotMIWAE;
:mod:`.supervised`: SupMIWAE and SupNotMIWAE), built on the operators."""

from .base import ImportanceWeightedModel
from .missing import (
    MISSING_PROCESSES,
    BaseMissingProcess,
    LinearMissingProcess,
    MissingProcess,
    NonlinearMissingProcess,
    SelfMaskingKnownSignsProcess,
    SelfMaskingProcess,
)
from .models import MIWAE, NotMIWAE
from .networks import PredictionHead
from .supervised import SupMIWAE, SupNotMIWAE

__all__ = [
    "MIWAE",
    "NotMIWAE",
    "SupMIWAE",
    "SupNotMIWAE",
    "ImportanceWeightedModel",
    "PredictionHead",
    "BaseMissingProcess",
    "SelfMaskingProcess",
    "SelfMaskingKnownSignsProcess",
    "LinearMissingProcess",
    "NonlinearMissingProcess",
    "MissingProcess",
    "MISSING_PROCESSES",
]
