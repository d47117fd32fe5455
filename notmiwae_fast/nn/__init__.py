"""The model layer: networks (:mod:`.networks`), missing processes (:mod:`.missing`) and
the four importance-weighted models (:mod:`.models`: MIWAE and NotMIWAE;
:mod:`.supervised`: SupMIWAE and SupNotMIWAE), built on the operators."""

from . import missing
from .base import ImportanceWeightedModel
from .missing import *  # noqa: F403  (the missing processes: missing.__all__)
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
    *missing.__all__,
]
