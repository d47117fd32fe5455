"""The model layer: networks (:mod:`.networks`), missing processes (:mod:`.missing`) and
the four importance-weighted models (:mod:`.models`), built on the operators."""

from .missing import (MISSING_PROCESSES, BaseMissingProcess, LinearMissingProcess,
                      MissingProcess, NonlinearMissingProcess, SelfMaskingKnownSignsProcess,
                      SelfMaskingProcess)
from .models import MIWAE, ImportanceWeightedModel, NotMIWAE, SupMIWAE, SupNotMIWAE
from .networks import PredictionHead

__all__ = ["MIWAE", "NotMIWAE", "SupMIWAE", "SupNotMIWAE", "ImportanceWeightedModel",
           "PredictionHead", "BaseMissingProcess", "SelfMaskingProcess",
           "SelfMaskingKnownSignsProcess", "LinearMissingProcess", "NonlinearMissingProcess",
           "MissingProcess", "MISSING_PROCESSES"]
