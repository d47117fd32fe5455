"""Training: :class:`Trainer`, the one training loop (single process or torchrun;
:mod:`.trainer`), its checkpoints (:mod:`.checkpoint`), its optimizer step
(:mod:`.optim`), its data-parallel pieces (:mod:`.parallel`), what a run reports
(:mod:`.metrics`), its health checks (:mod:`.health`) and small CPU steps on one
thread (:mod:`.threads`)."""

from .health import TrainingWarning, loss_diverged
from .trainer import Trainer

__all__ = ["Trainer", "TrainingWarning", "loss_diverged"]
