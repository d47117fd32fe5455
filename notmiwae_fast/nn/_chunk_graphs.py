"""Imputation's chunk loop as a CUDA graph: one chunk of a single imputation (the terms of
``chunk`` fresh samples of every row and their online-softmax merge into the running
mass and mean, :func:`._streaming.merge_chunk`) captured once per (rows, columns, chunk)
and replayed for the call's full chunks, with the rows copied into static buffers.

Per call, the first chunk runs uncaptured (it starts the running mass and mean; on a new
shape it is also the warm-up before the capture, on a side stream), the full chunks after
it replay the graph, and a remainder chunk (n_samples not a multiple of the chunk) runs
uncaptured: the same samples in the same order, so the same arithmetic as
:func:`._streaming.weighted_mean`. Multiple imputation (resampled draws) is not
captured."""

from __future__ import annotations

import math
import weakref
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .._common.capture import Captured, capture_failed, side_stream, tensor_addresses
from . import _streaming

__all__: list[str] = []

# Captured shapes kept per model (the oldest is dropped beyond that).
MAX_GRAPHS = 4

_graphs: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, _ChunkGraph]]" = (
    weakref.WeakKeyDictionary()
)


def captured_mean(
    model: Any,
    x0: Tensor,
    s: Tensor,
    n_samples: int,
    chunk_size: Optional[int],
    stand_in: bool = False,
) -> Optional[Tensor]:
    """The single imputation's conditional mean [B, D] of the rows x0 [B, D] (mask s,
    both as the model's _inputs gives them) over ``n_samples`` importance samples, its
    full chunks replayed from a CUDA graph; None where nothing is captured (not on CUDA,
    gradients enabled, or fewer than two full chunks): then the caller streams as usual.
    ``stand_in`` replays by running the chunk again (the CPU tests' seam)."""
    if (x0.device.type != "cuda" and not stand_in) or torch.is_grad_enabled():
        return None
    chunk = _streaming.chunk_size(x0.shape[0] * x0.shape[1], n_samples, chunk_size)
    n_full, remainder = divmod(n_samples, chunk)
    if n_full < 2:
        return None
    graph = _graph_for(model, x0, s, chunk, stand_in)
    mean = graph.run(x0, s, n_full)
    if mean is None:  # the capture failed (and said so): stream as usual
        _graphs[model] = {k: g for k, g in _graphs[model].items() if g is not graph}
        return None
    if remainder:
        terms = model._terms(graph.x, graph.s, remainder)
        _, mean, _ = _streaming.merge_chunk(
            model.ops, terms["log_w"], terms["means"], remainder, graph.mass, mean
        )
    return mean


def _graph_for(model: Any, x0: Tensor, s: Tensor, chunk: int, stand_in: bool) -> "_ChunkGraph":
    """The model's graph for this shape and chunk, made when there is none; the model's
    graphs are dropped when its parameters have moved (they read the old ones)."""
    addresses = tensor_addresses([*model.parameters(), *model.buffers()])
    key = (
        tuple(x0.shape),
        x0.dtype,
        s.dtype,
        chunk,
        model.backend,
        torch.is_autocast_enabled(x0.device.type),
        stand_in,
    )
    graphs = _graphs.setdefault(model, {})
    if graphs and next(iter(graphs.values())).addresses != addresses:
        graphs.clear()
    if key not in graphs:
        if len(graphs) >= MAX_GRAPHS:
            graphs.pop(next(iter(graphs)))
        graphs[key] = _ChunkGraph(model, x0, s, chunk, stand_in, addresses)
    return graphs[key]


class _ChunkGraph:
    """Static rows x, s, running mass [B] and mean [B, D], and the captured chunk."""

    def __init__(
        self, model: Any, x0: Tensor, s: Tensor, chunk: int, stand_in: bool, addresses: tuple
    ) -> None:
        self.model, self.chunk, self.addresses = model, chunk, addresses
        self.x, self.s = x0.clone(), s.clone()
        self.mass = torch.empty(x0.shape[0], dtype=x0.dtype, device=x0.device)
        self.mean = torch.empty_like(x0)
        self.captured: Optional[Captured] = None
        self.stand_in = stand_in

    def _chunk(self, first: bool = False) -> None:
        """One more chunk merged into the running mass and mean (what the graph holds);
        ``first``: the call's first chunk, uncaptured, which starts them."""
        terms = self.model._terms(self.x, self.s, self.chunk)
        if first:
            mass, mean = torch.full_like(self.mass, -math.inf), None
        else:
            mass, mean = self.mass, self.mean
        mass, mean, _ = _streaming.merge_chunk(
            self.model.ops, terms["log_w"], terms["means"], self.chunk, mass, mean
        )
        self.mass.copy_(mass)
        self.mean.copy_(mean)

    def run(self, x0: Tensor, s: Tensor, n_full: int) -> Optional[Tensor]:
        """The running mean after ``n_full`` chunks of the rows x0 (a fresh tensor);
        None when the capture failed."""
        self.x.copy_(x0)
        self.s.copy_(s)
        if self.captured is None:
            with side_stream(self.x.device):
                self._chunk(first=True)
            try:
                self.captured = Captured(self._chunk, self.x.device, self.stand_in)
            except RuntimeError as err:
                rows = self.x.shape[0]
                capture_failed(f"Imputation's chunk of {self.chunk} samples of {rows} rows", err)
                return None
        else:
            self._chunk(first=True)
        for _ in range(n_full - 1):
            self.captured.replay()
        return self.mean.clone()
