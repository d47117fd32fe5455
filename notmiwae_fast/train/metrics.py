"""What a training run reports: the metrics of a pass, each weighed by its batches' rows
and averaged over the ranks (:class:`_RowWeightedSums`), and the TensorBoard writer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..distributed.group import all_reduce_sum

__all__: list[str] = []


class _RowWeightedSums:
    """The scalar outputs of a pass's batches, each weighed by its batch's rows; kept as
    tensors and read from the device once, at :meth:`sums` (no host sync per batch),
    then summed in float64 in batch order."""

    def __init__(self) -> None:
        self._terms: dict[str, list[tuple[torch.Tensor, int]]] = {}
        self.rows = 0

    def add(self, outputs: dict, rows: int) -> None:
        """Adds a batch's outputs (0-dim tensors count; the rest is passed over)."""
        self.rows += rows
        for key, value in outputs.items():
            if torch.is_tensor(value) and value.dim() == 0:
                if value.requires_grad:
                    value = value.detach()
                self._terms.setdefault(key, []).append((value, rows))

    def sums(self) -> dict[str, float]:
        """{key: Σ value × rows} over the batches added."""
        totals = {}
        for key, terms in self._terms.items():
            values = torch.stack([value for value, _ in terms]).tolist()
            total = 0.0
            for value, (_, rows) in zip(values, terms):
                total = total + value * rows
            totals[key] = total
        return totals

    def means_over_ranks(self, device: torch.device) -> dict[str, float]:
        """{key: mean over the rows of every rank} (one all-reduce in a distributed
        run, on ``device``)."""
        sums = self.sums()
        keys = sorted(sums)
        totals = all_reduce_sum([sums[k] for k in keys] + [float(self.rows)], device)
        return {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}


def _tensorboard(log_dir: Optional[Union[str, Path]]) -> Any:
    """A TensorBoard SummaryWriter on ``log_dir`` (None: none; also None, with a
    warning at the Trainer's caller, when the tensorboard package is missing)."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "Trainer: 'log_dir' was given but the tensorboard package is not "
            "installed; TensorBoard logging is off (pip install tensorboard)",
            stacklevel=3,
        )
        return None
    return SummaryWriter(log_dir=str(log_dir))
