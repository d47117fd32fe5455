"""Small CPU work on the calling thread alone. Waking threads that sleep between
parallel regions (OMP_WAIT_POLICY=PASSIVE, or a pool gone idle) costs tens of
microseconds a region, more than a small tensor's work saves; the operators decide
this in C++ for their own products (``kSerialMultiplyAdds`` in
``csrc/include/notmiwae_fast/mlp.h``), :func:`one_thread` does it for the Python
around them: the Trainer's step on a small model and batch, torch's fused Adam kernel
on small parameters."""

from __future__ import annotations

import contextlib

from torch import nn

from .._common.threads import torch_threads

__all__: list[str] = []

# ATen's elementwise kernels split a tensor across threads only from this many elements
# (at::internal::GRAIN_SIZE).
GRAIN_SIZE = 32768
# The operators multiply on one thread below this many multiply-adds (mlp.h).
SERIAL_MULTIPLY_ADDS = 1 << 24


def one_thread(active: bool = True) -> contextlib.AbstractContextManager[None]:
    """torch's thread count set to 1 for the duration when ``active``, put back
    afterwards, also on an exception (:func:`~notmiwae_fast._common.threads.torch_threads`)."""
    return torch_threads(1) if active else contextlib.nullcontext()


def widest_linear(model: nn.Module) -> int:
    """The largest in·out over the linear layers of ``model`` (the multiply-adds per
    sample of its largest product); 0 when a module other than ``nn.Linear`` holds a
    parameter of two or more dimensions (a convolution, an embedding: work this count
    cannot see), meaning "do not run this model serially"."""
    widest = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            widest = max(widest, module.in_features * module.out_features)
        elif any(p.dim() >= 2 for p in module.parameters(recurse=False)):
            return 0
    return widest
