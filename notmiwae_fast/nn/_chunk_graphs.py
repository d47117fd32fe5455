"""Imputation's chunk loop as a CUDA graph: one chunk of a single imputation (the terms of
``chunk`` fresh samples of every row and their online-softmax merge into the running
mass and mean, :func:`._streaming.merge_chunk`) captured once per (rows, columns, chunk)
and replayed for the call's full chunks, with the rows copied into static buffers.

Per call, the first chunk runs uncaptured (it starts the running mass and mean; on a new
shape it is also the warm-up before the capture, on a side stream), the full chunks after
it replay the graph, and a remainder chunk (n_samples not a multiple of the chunk) runs
uncaptured: the same samples in the same order, so the same arithmetic as
:func:`._streaming.weighted_mean`. Multiple imputation (resampled draws) is not
captured, nor is imputation under ``torch.autocast`` (its cast weights live in autocast's
cache, freed when the region ends, while a graph would go on reading them).

A shape is captured the second time a call has it (the first call streams): a
capture synchronises the device and empties torch's cache of free blocks, which would
cost more than it saves for shapes seen once (a table imputed batch by batch has a
different number of incomplete rows in every batch). A shape whose capture failed is
not tried again for that model."""

from __future__ import annotations

import math
import weakref
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .._common.capture import Captured, capture_failed, side_stream, tensor_addresses
from . import _streaming

__all__: list[str] = []

# Captured shapes per model; further shapes stream (dropping a graph to capture another
# would recapture at every call when more shapes than this recur).
MAX_GRAPHS = 4

# Keyed weakly by the model; nothing in a value refers to the model (a _ChunkGraph holds
# a weak reference), or the entry would keep its key alive and never go.
_graphs: "weakref.WeakKeyDictionary[nn.Module, _ModelGraphs]" = weakref.WeakKeyDictionary()


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
    gradients or autocast enabled, fewer than two full chunks, the shape's first call, a
    shape beyond MAX_GRAPHS, a failed capture): then the caller streams as usual.
    ``stand_in`` replays by running the chunk again (the CPU tests' seam)."""
    if (
        (x0.device.type != "cuda" and not stand_in)
        or torch.is_grad_enabled()
        or torch.is_autocast_enabled(x0.device.type)
    ):
        return None
    chunk = _streaming.chunk_size(x0.shape[0] * x0.shape[1], n_samples, chunk_size)
    n_full, remainder = divmod(n_samples, chunk)
    if n_full < 2:
        return None
    graph = _graph_for(model, x0, s, chunk, stand_in)
    if graph is None:  # the shape's first call, or beyond MAX_GRAPHS: stream
        return None
    mean = graph.run(x0, s, n_full)
    if mean is None:  # its capture failed (and said so): stream
        return None
    if remainder:
        terms = model._terms(graph.x, graph.s, remainder)
        _, mean, _ = _streaming.merge_chunk(
            model.ops, terms["log_w"], terms["means"], remainder, graph.mass, mean
        )
    return mean


def _graph_for(
    model: Any, x0: Tensor, s: Tensor, chunk: int, stand_in: bool
) -> Optional["_ChunkGraph"]:
    """The model's graph for this shape and chunk, made the second time the shape is
    asked for; None the first time and once MAX_GRAPHS other shapes have graphs. The
    model's graphs are dropped when its parameters have moved (they read the old ones)."""
    addresses = tensor_addresses([*model.parameters(), *model.buffers()])
    key = (tuple(x0.shape), x0.dtype, s.dtype, chunk, model.backend, stand_in)
    kept = _graphs.setdefault(model, _ModelGraphs())
    if kept.addresses != addresses:
        kept.graphs.clear()
        kept.addresses = addresses
    if key not in kept.graphs:
        if key not in kept.seen:
            kept.seen.add(key)
            return None
        if len(kept.graphs) >= MAX_GRAPHS:
            return None
        kept.graphs[key] = _ChunkGraph(model, x0, s, chunk, stand_in)
    return kept.graphs[key]


class _ModelGraphs:
    """One model's captured shapes (oldest first), the shapes asked for so far and where
    its parameters were when the graphs were captured."""

    def __init__(self) -> None:
        self.graphs: dict[tuple, _ChunkGraph] = {}
        self.seen: set[tuple] = set()
        self.addresses: Optional[tuple] = None


class _ChunkGraph:
    """Static rows x, s, running mass [B] and mean [B, D], and the captured chunk."""

    def __init__(self, model: Any, x0: Tensor, s: Tensor, chunk: int, stand_in: bool) -> None:
        self._model = weakref.ref(model)
        self.chunk = chunk
        self.failed = False  # the capture failed: this shape streams from now on
        self.x, self.s = x0.clone(), s.clone()
        self.mass = torch.empty(x0.shape[0], dtype=x0.dtype, device=x0.device)
        self.mean = torch.empty_like(x0)
        self.captured: Optional[Captured] = None
        self.stand_in = stand_in

    def _chunk(self, first: bool = False) -> None:
        """One more chunk merged into the running mass and mean (what the graph holds);
        ``first``: the call's first chunk, uncaptured, which starts them."""
        model = self._model()
        assert model is not None  # called from captured_mean, which holds the model
        terms = model._terms(self.x, self.s, self.chunk)
        if first:
            mass, mean = torch.full_like(self.mass, -math.inf), None
        else:
            mass, mean = self.mass, self.mean
        mass, mean, _ = _streaming.merge_chunk(
            model.ops, terms["log_w"], terms["means"], self.chunk, mass, mean
        )
        self.mass.copy_(mass)
        self.mean.copy_(mean)

    def run(self, x0: Tensor, s: Tensor, n_full: int) -> Optional[Tensor]:
        """The running mean after ``n_full`` chunks of the rows x0 (a fresh tensor);
        None when the capture failed (now or before)."""
        if self.failed:
            return None
        self.x.copy_(x0)
        self.s.copy_(s)
        if self.captured is None:
            with side_stream(self.x.device):
                self._chunk(first=True)
            try:
                self.captured = Captured(self._chunk, self.x.device, self.stand_in)
            except RuntimeError as err:
                self.failed = True
                rows = self.x.shape[0]
                capture_failed(f"Imputation's chunk of {self.chunk} samples of {rows} rows", err)
                return None
        else:
            self._chunk(first=True)
        for _ in range(n_full - 1):
            self.captured.replay()
        return self.mean.clone()
