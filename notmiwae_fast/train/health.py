"""Training health: :class:`TrainingWarning`, the divergence criterion
:func:`loss_diverged`, :func:`_record`, which flags a history and warns, and the
Trainer's checks (:func:`_count_outside_01` while training, :func:`_check_trainer_health`
at the end). The Trainer
and the imputers judge their runs with these and keep the flags in their histories
(``"health"``: short flags, ``"warnings"``: the messages)."""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["TrainingWarning", "loss_diverged"]


class TrainingWarning(UserWarning):
    """Training ended in a state whose results should not be trusted (the loss diverged
    or ended far above its best, Bernoulli data outside [0, 1], a column with too few
    observed values). :meth:`Trainer.train` and the imputers' ``fit`` issue it and
    record it in their history (``"health"``: short flags, ``"warnings"``: the
    messages)."""


def loss_diverged(
    losses: Sequence[float] | np.ndarray, window: Optional[int] = None, min_length: int = 2
) -> Optional[str]:
    """Why the loss curve ``losses`` ([T], per step or per epoch) looks diverged, or None.

    The curve is smoothed by a running mean over ``window`` values (default: a tenth of
    the curve, 1 to 100 values: mini-batch losses are noisy); it is diverged when a value
    is not finite or when its last smoothed value lies above its best (lowest) by more
    than max(|best|, 1): the loss at least doubled from its best, or rose by a whole
    nat per row from a best near 0. A curve shorter than ``min_length`` is only checked
    for non-finite values (a few mini-batch losses are too noisy to judge)."""
    values = np.asarray(losses, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        return "the training loss became NaN or infinite"
    if values.size < max(2, min_length):
        return None
    w = window if window is not None else max(1, min(100, values.size // 10))
    smooth = np.convolve(values, np.ones(w) / w, mode="valid")
    best, final = float(smooth.min()), float(smooth[-1])
    if final > best + max(abs(best), 1.0):
        return (
            f"the training loss ended at {final:.4g}, far above its best {best:.4g}: "
            "training diverged (lower the learning rate, standardise the data or set "
            "grad_clip)"
        )
    return None


def _record(history: dict, flag: str, message: str, stacklevel: int = 3) -> None:
    """Adds ``flag`` to history["health"] and ``message`` to history["warnings"] (each
    once) and issues ``message`` as a TrainingWarning (``stacklevel`` counted from the
    caller of _record, as for ``warnings.warn``)."""
    health = history.setdefault("health", [])
    if flag not in health:
        health.append(flag)
    messages = history.setdefault("warnings", [])
    if message not in messages:
        messages.append(message)
    warnings.warn(message, TrainingWarning, stacklevel=stacklevel + 1)


def _check_trainer_health(
    history: dict, outside_01: Optional[torch.Tensor], stacklevel: int = 3
) -> None:
    """What :meth:`Trainer.train` judges at the end of a run: warns (TrainingWarning)
    and flags ``history`` when its per-epoch training loss ended far above its best
    (:func:`loss_diverged`, window 1: "diverged") or when ``outside_01`` (the count of
    observed entries outside [0, 1] a Bernoulli model was trained on; None: not
    counted) is not 0 ("bern_data_outside_01")."""
    reason = loss_diverged(history.get("train_loss", []), window=1)
    if reason is not None:
        _record(history, "diverged", f"Trainer.train: {reason}", stacklevel)
    if outside_01 is not None:
        count = int(outside_01.item())
        if count:
            _record(
                history,
                "bern_data_outside_01",
                f"Trainer.train: the model's out_dist is 'bern' (data in [0, 1]) "
                f"but {count} observed entries lie outside [0, 1]; rescale the data "
                "to [0, 1] or use out_dist='gauss'",
                stacklevel,
            )


def _count_outside_01(batch: Sequence, count: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``count`` plus the observed entries of the batch (x [B, D] = batch[0], mask
    [B, D] = batch[1]) outside [0, 1], added on the device (no host sync); ``count``
    as it is for batches that are not tensors."""
    if not (torch.is_tensor(batch[0]) and torch.is_tensor(batch[1])):
        return count
    outside = (((batch[0] < 0) | (batch[0] > 1)) & (batch[1] != 0)).sum()
    return outside if count is None else count + outside
