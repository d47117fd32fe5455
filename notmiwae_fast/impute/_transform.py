"""The imputers' transform: a fitted model's conditional means at the NaN entries of a
table, block by block under seeds that do not depend on how the rows are split."""

from __future__ import annotations

import numpy as np
import torch

from .. import utils
from .._common.progress import progress
from .._common.seeding import forked_rng

# Rows per step of the imputation progress bar.
IMPUTE_BLOCK = 1024
# Rows imputed under one seed (seed + index of the block of this many rows).
SEED_BLOCK = 256


def impute_rows(
    model: torch.nn.Module,
    arr: np.ndarray,
    *,
    standardized: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    device: torch.device,
    n_samples: int,
    seed: int,
    first_row: int,
    verbose: bool,
) -> np.ndarray:
    """arr ([n, D], NaN = missing) with its NaN entries filled, in arr's dtype.

    ``standardized`` is arr in the model's units ([n, D]); ``mean``, ``scale`` [D] take
    the imputations back. The rows are rows first_row, first_row + 1, ... of a larger
    table: the block of 256 rows holding row i is imputed with torch seeded to
    ``seed + i // 256``, so a table split at multiples of 256 rows gives the same values
    as a whole (``first_row`` must be such a multiple; an empty arr may start anywhere:
    the last ranks' shares of a small table under torchrun start at its end)."""
    if first_row % SEED_BLOCK and len(arr):
        raise ValueError(
            f"argument 'first_row' must be a multiple of {SEED_BLOCK}; got {first_row}"
        )
    missing = np.isnan(arr)
    out = arr.copy()
    if not missing.any():
        return out
    from ..distributed import context

    with forked_rng(device):
        model = model.to(device)
        x_t = torch.as_tensor(np.nan_to_num(standardized), dtype=torch.float32)
        s_t = torch.as_tensor(~missing, dtype=torch.float32)
        blocks = progress(
            range(0, len(x_t), IMPUTE_BLOCK),
            verbose and context().is_main,
            desc="imputing",
            unit="block",
            mininterval=0.5,
        )
        imputed = np.concatenate(
            [
                utils.impute(
                    model,
                    x_t[i : i + IMPUTE_BLOCK],
                    s_t[i : i + IMPUTE_BLOCK],
                    n_samples=n_samples,
                    batch_size=SEED_BLOCK,
                    device=device,
                    seed=seed + (first_row + i) // SEED_BLOCK,
                )
                for i in blocks
            ]
        )
    back = utils.destandardize(imputed.astype(np.float64), mean, scale)
    out[missing] = back[missing].astype(out.dtype)
    return out
