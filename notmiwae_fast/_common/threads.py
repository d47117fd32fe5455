"""torch's thread count for the duration of a block, put back afterwards."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's thread count set to ``n`` for the duration (nothing done when it already
    is), put back afterwards, also on an exception. OpenMP's and MKL's counts are the
    calling thread's own; torch's process-wide default (read by a thread that starts
    meanwhile) is put back with them."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
