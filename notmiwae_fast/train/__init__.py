"""Training: :class:`Trainer`, the one training loop (single process or torchrun), its
checkpoints and its health checks."""

from .trainer import Trainer, TrainingWarning, loss_diverged

__all__ = ["Trainer", "TrainingWarning", "loss_diverged"]
