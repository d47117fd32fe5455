"""How the imputers train their model: ``max_iter`` steps of :class:`Trainer` over
mini-batches of the table's rows, drawn without replacement, a new order each pass
(:class:`_RowBatches`); the per-step losses are the fit's loss curve."""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from .._common.progress import progress_bar
from .._common.seeding import forked_rng
from ..distributed.group import all_reduce_sum, context, shard_bounds
from ..train import Trainer

__all__: list[str] = []


class FitData(NamedTuple):
    """What an imputer's fit trains on: x_std ([N, D], standardised with ``stats`` =
    (mean [D], scale [D]), NaN = missing), its mask ``observed`` ([N, D] bool), the
    DataFrame's ``columns`` (or None), the ``device`` and the fit's ``seed``."""

    x_std: np.ndarray
    observed: np.ndarray
    stats: tuple[np.ndarray, np.ndarray]
    columns: Optional[list]
    device: torch.device
    seed: int

    def rows(self, index: np.ndarray) -> "FitData":
        """The same fit data for the rows ``index`` only."""
        return self._replace(x_std=self.x_std[index], observed=self.observed[index])


# Importance samples per row of the bounds that compare models (mean_bound).
BOUND_SAMPLES = 100
# Rows per chunk of mean_bound (bounds the memory to rows x K x D values).
_CHUNK_ROWS = 256

# Steps between two updates of the loss shown on the progress bar.
_SHOW_LOSS_EVERY = 200


class _RowBatches:
    """Mini-batches (x [B, D], s [B, D]) of the rows of ``x`` and ``s``: each pass over
    them (an epoch) takes the rows in a new order and cuts it into whole batches of
    ``batch_size`` rows (the rows left over sit that pass out).

    Single process, ``sampler`` None: the order is a permutation of all rows from the
    global torch generator on the rows' device. Distributed: ``sampler`` (the Trainer's
    :meth:`~Trainer.shard_sampler`, drop_last) gives this rank's equal share of one
    permutation shared by the ranks, a new one each epoch (the Trainer sets it)."""

    def __init__(
        self,
        x: torch.Tensor,
        s: torch.Tensor,
        batch_size: int,
        sampler: Optional[DistributedSampler] = None,
    ) -> None:
        self.x, self.s, self.batch_size, self.sampler = x, s, batch_size, sampler

    def __len__(self) -> int:
        rows = len(self.sampler) if self.sampler is not None else len(self.x)
        return rows // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampler is None:
            order = torch.randperm(len(self.x), device=self.x.device)
        else:
            order = torch.tensor(list(self.sampler), device=self.x.device)
        bs = self.batch_size
        for start in range(0, len(self) * bs, bs):
            rows = order[start : start + bs]
            yield self.x[rows], self.s[rows]


def _row_batches(
    trainer: Trainer, x: torch.Tensor, s: torch.Tensor, batch_size: int
) -> _RowBatches:
    """The training batches of ``trainer``'s rank: batches of ``batch_size`` rows (fewer
    when a rank has fewer rows); ValueError when a rank would have no row."""
    ctx, n = trainer.ctx, len(x)
    sampler = None
    if ctx.distributed:
        if n < ctx.world_size:
            raise ValueError(
                f"argument 'X' has {n} row(s); training on {ctx.world_size} "
                "processes needs at least one row per process"
            )
        sampler = trainer.shard_sampler(range(n), shuffle=True, drop_last=True)
    rows = len(sampler) if sampler is not None else n
    return _RowBatches(x, s, min(batch_size, rows), sampler)


def _train_model(
    model: nn.Module,
    x_std: np.ndarray,
    observed: np.ndarray,
    device: torch.device,
    lr: float,
    batch_size: int,
    max_iter: int,
    verbose: bool,
) -> np.ndarray:
    """``max_iter`` Adam steps (learning rate ``lr``) of ``model`` on mini-batches of
    ``batch_size`` rows of x_std ([N, D], standardised, NaN allowed) with mask
    ``observed`` ([N, D] bool), data-parallel under torchrun; a progress bar when
    ``verbose`` (rank 0). Returns the per-step losses ([max_iter], averaged over ranks
    in a distributed run); the model is left in eval mode."""
    trainer = Trainer(model, lr=lr, device=device, progress=False, check_health=False)
    ctx, device = trainer.ctx, trainer.device
    x_t = torch.as_tensor(np.nan_to_num(x_std, nan=0.0), dtype=torch.float32, device=device)
    s_t = torch.as_tensor(observed, dtype=torch.float32, device=device)
    batches = _row_batches(trainer, x_t, s_t, batch_size)
    losses = torch.empty(max_iter, dtype=torch.float32, device=device)
    shown = bool(verbose) and ctx.is_main
    bar = progress_bar(max_iter, shown, "fitting")

    def record(step: int, outputs: dict) -> None:
        losses[step] = outputs["loss"]
        bar.update(1)
        if shown and step % _SHOW_LOSS_EVERY == 0:
            bar.set_postfix(loss=f"{losses[step].item():.3f}")

    try:
        trainer.train(
            batches, n_epochs=-(-max_iter // len(batches)), max_steps=max_iter, on_step=record
        )
    finally:
        bar.close()
    if ctx.distributed:
        torch.distributed.all_reduce(losses)
        losses /= ctx.world_size
    model.eval()
    return losses.cpu().numpy()


def mean_bound(
    model: torch.nn.Module,
    x_std: np.ndarray,
    observed: np.ndarray,
    device: torch.device,
    seed: int,
    n_samples: int = BOUND_SAMPLES,
) -> float:
    """The model's importance-weighted bound with ``n_samples`` samples (nats per row),
    averaged over the rows of x_std ([n, D], NaN = missing) with mask ``observed``;
    torch seeded with ``seed`` (the global RNG left as it was).

    Under torchrun each rank computes its share of the rows and the sums are added over
    the ranks, so every rank gets the same value (and makes the same choice with it)."""
    ctx = context()
    first, stop = shard_bounds(len(x_std), ctx.world_size, ctx.rank)
    x = torch.as_tensor(
        np.nan_to_num(x_std[first:stop], nan=0.0), dtype=torch.float32, device=device
    )
    s = torch.as_tensor(observed[first:stop], dtype=torch.float32, device=device)
    total = 0.0
    with forked_rng(device, seed):
        with torch.no_grad():
            for start in range(0, len(x), _CHUNK_ROWS):
                rows = slice(start, start + _CHUNK_ROWS)
                elbo = model(x[rows], s[rows], n_samples=n_samples)["elbo"]
                total += float(elbo) * len(x[rows])
    total, n = all_reduce_sum([total, float(len(x))], device)
    return total / n
