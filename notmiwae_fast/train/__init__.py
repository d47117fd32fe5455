"""Training: :class:`Trainer`, the one training loop (single process or torchrun;
:mod:`.trainer`), its checkpoints (:mod:`.checkpoint`), its optimizer step
(:mod:`.optim`), its data-parallel pieces (:mod:`.parallel`), what a run reports
(:mod:`.metrics`) and its health checks (:mod:`.health`)."""

from .health import TrainingWarning, loss_diverged
from .trainer import Trainer

__all__ = ["Trainer", "TrainingWarning", "loss_diverged"]
