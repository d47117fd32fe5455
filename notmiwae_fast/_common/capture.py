"""Work captured once and replayed: a CUDA graph (``torch.cuda.CUDAGraph``) of a function
that reads and writes tensors at fixed addresses, or, off the GPU (the tests' seam), a
stand-in that runs the function again at every replay: the same code, the same numbers,
so the logic around a capture (static buffers, which shapes replay) runs on the CPU."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator, Optional

import torch

__all__: list[str] = []


class Captured:
    """``fn`` (no arguments) captured on ``device``; :meth:`replay` runs it again and
    returns its results (a graph's: the same tensors, overwritten at each replay).

    ``stand_in=True`` captures nothing: every replay calls ``fn`` (CPU tests)."""

    def __init__(
        self,
        fn: Callable[[], Any],
        device: torch.device,
        stand_in: bool = False,
        pool: Optional[Any] = None,
    ) -> None:
        self._fn = fn
        self._graph: Optional[torch.cuda.CUDAGraph] = None
        if stand_in:
            self.results: Any = None
            return
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; got {device}")
        self._graph = torch.cuda.CUDAGraph()
        # Capture records the kernels without running them: replay runs them. Other
        # threads' CUDA calls (a DataLoader's pinning thread) may go on meanwhile. The
        # capture runs with ``device`` current and on a stream of its own there: torch's
        # default capture stream is made once, on whichever device was current then, and
        # the default generator that fn's noise comes from must be the current device's.
        with torch.cuda.device(device):
            stream = torch.cuda.Stream(device)
            with torch.cuda.graph(
                self._graph, pool=pool, stream=stream, capture_error_mode="thread_local"
            ):
                self.results = fn()

    @property
    def is_graph(self) -> bool:
        return self._graph is not None

    def replay(self) -> Any:
        if self._graph is None:
            self.results = self._fn()
        else:
            self._graph.replay()
        return self.results


@contextlib.contextmanager
def side_stream(device: torch.device) -> Iterator[None]:
    """Runs the block on a fresh CUDA stream that first waits for the current one (and
    makes the current one wait for it after): warm-up before a capture, so its lazy
    initialisations and allocations stay out of the graph's pool. Off CUDA: nothing."""
    if device.type != "cuda":
        yield
        return
    current = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(current)
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        current.wait_stream(stream)


def capture_failed(what: str, err: Exception) -> None:
    """Warns (RuntimeWarning) that ``what`` could not be captured and runs uncaptured."""
    warnings.warn(
        f"{what} could not be captured as a CUDA graph ({type(err).__name__}: {err}); "
        "it runs uncaptured",
        RuntimeWarning,
        stacklevel=4,
    )


def tensor_addresses(tensors: Any) -> tuple:
    """The storage addresses of ``tensors`` (None kept as None): a graph reads its
    captured tensors at these addresses, so a change means it must be captured again."""
    return tuple(None if t is None else t.data_ptr() for t in tensors)
