"""torch's random numbers seeded for a block and put back after it."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

__all__: list[str] = []


@contextlib.contextmanager
def forked_rng(device: torch.device, seed: Optional[int] = None) -> Iterator[None]:
    """Runs the block with torch's global random state saved and put back after it: the
    CPU's and, when ``device`` is a CUDA device, that GPU's (the one the block draws
    from; ``torch.manual_seed`` reseeds every GPU, and only what is saved comes back).
    With ``seed``, the block starts from ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        yield
