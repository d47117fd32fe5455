"""How the imputers train their model: ``max_iter`` Trainer steps over mini-batches of
the table's rows, drawn without replacement, a new order each pass; the per-step losses
are the fit's loss curve."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._common.progress import progress
from ..train import Trainer

__all__: list[str] = []


def _train_model(model: nn.Module, x_std: np.ndarray, observed: np.ndarray,
                 device: torch.device, lr: float, batch_size: int, max_iter: int,
                 verbose: bool, seed: int) -> np.ndarray:
    """``max_iter`` Adam steps on mini-batches of x_std ([N, D], standardised, NaN
    allowed) with mask ``observed`` ([N, D] bool); returns the per-step losses
    ([max_iter], averaged over ranks in a distributed run)."""
    trainer = Trainer(model, lr=lr, device=device, progress=False)
    ctx, device = trainer.ctx, trainer.device
    x_t = torch.as_tensor(np.nan_to_num(x_std, nan=0.0), dtype=torch.float32,
                          device=device)
    s_t = torch.as_tensor(observed, dtype=torch.float32, device=device)
    n = x_t.shape[0]
    if ctx.distributed:
        # Each epoch: one permutation shared by all ranks (its own generator, seeded
        # alike everywhere), cut to a multiple of the world size, rank r taking every
        # world_size-th row from r: disjoint, equal shares.
        n_local = n // ctx.world_size
        if n_local < 1:
            raise ValueError(f"argument 'X' has {n} row(s); training on "
                             f"{ctx.world_size} processes needs at least one row per "
                             "process")
        shared = torch.Generator().manual_seed(seed)

        def new_order() -> torch.Tensor:
            perm = torch.randperm(n, generator=shared)[:n_local * ctx.world_size]
            return perm[ctx.rank::ctx.world_size].to(device)
    else:
        n_local = n

        def new_order() -> torch.Tensor:
            return torch.randperm(n, device=device)
    bs = min(batch_size, n_local)
    losses = torch.empty(max_iter, dtype=torch.float32, device=device)
    order = new_order()
    pos = 0
    steps = progress(range(max_iter), bool(verbose) and ctx.is_main,
                     desc="fitting", unit="step", mininterval=0.5)
    for step in steps:
        if pos + bs > n_local:
            order, pos = new_order(), 0
        idx = order[pos:pos + bs]
        pos += bs
        losses[step] = trainer.train_step((x_t[idx], s_t[idx]))["loss"]
        if hasattr(steps, "set_postfix") and step % 200 == 0:
            steps.set_postfix(loss=f"{losses[step].item():.3f}")
    if ctx.distributed:
        torch.distributed.all_reduce(losses)
        losses /= ctx.world_size
    model.eval()
    return losses.cpu().numpy()
