"""Imputation's chunk loop replayed from a graph (nn/_chunk_graphs.captured_mean): when it
applies, which chunks replay, and its numbers against the uncaptured stream (on the CPU
through the stand-in that replays by running the chunk again; on a GPU with real CUDA
graphs)."""

from __future__ import annotations

import gc
import inspect
import warnings
import weakref

import pytest
import torch
from helpers import cuda_only, fixed_noise

import notmiwae_fast as nf
from notmiwae_fast import utils
from notmiwae_fast.nn import _chunk_graphs

D = 4


def model_and_rows(kind="notmiwae", device="cpu", n=24):
    utils.set_seed(0)
    model = (nf.NotMIWAE if kind == "notmiwae" else nf.MIWAE)(D, hidden_dim=16).to(device)
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, D, generator=g)
    s = (torch.rand(n, D, generator=g) > 0.3).float()
    return model, (x * s).to(device), s.to(device)


def streamed(model, x, s, n_samples, chunk):
    torch.manual_seed(7)
    return model._stream(x, s, n_samples, chunk, lambda t: t["means"])[0]


def captured(model, x, s, n_samples, chunk, stand_in=True):
    torch.manual_seed(7)
    return _chunk_graphs.captured_mean(model, x, s, n_samples, chunk, stand_in=stand_in)


def kept(model):
    """The model's captured shapes (key -> graph)."""
    return _chunk_graphs._graphs[model].graphs


@pytest.mark.parametrize("kind", ["notmiwae", "miwae"])
@pytest.mark.parametrize("n_samples", [40, 47, 20], ids=["whole", "remainder", "two_chunks"])
@torch.no_grad()
def test_replayed_chunks_give_the_streamed_mean(kind, n_samples):
    """Full chunks replayed, a remainder chunk uncaptured: the same mean as the stream,
    bit for bit, over repeated calls and after the model's parameters changed in place
    (the graph reads them where they are). The first call of a shape captures nothing
    (None: the caller streams)."""
    model, x, s = model_and_rows(kind)
    assert captured(model, x, s, n_samples, 10) is None and not kept(model)
    for _ in range(2):
        assert torch.equal(
            captured(model, x, s, n_samples, 10), streamed(model, x, s, n_samples, 10)
        )
        with torch.no_grad():
            model.decoder.net[0].weight.mul_(0.9)
    assert len(kept(model)) == 1


@torch.no_grad()
def test_when_nothing_is_captured():
    """Fewer than two full chunks, gradients enabled, under autocast (its cast weights
    are freed when the region ends) or off CUDA without the stand-in: None (the caller
    streams as usual), however often the shape comes."""
    model, x, s = model_and_rows()
    for _ in range(2):
        assert captured(model, x, s, 15, 10) is None
        assert captured(model, x, s, 40, None) is None  # default chunk: all 40 in one
        assert captured(model, x, s, 40, 10, stand_in=False) is None
        with torch.enable_grad():
            assert captured(model, x, s, 40, 10) is None
        with torch.autocast("cpu"):
            assert captured(model, x, s, 40, 10) is None
    assert model not in _chunk_graphs._graphs or not kept(model)


@torch.no_grad()
def test_one_graph_per_shape_and_new_parameters_capture_again():
    """Each row count and chunk gets its graph, at most MAX_GRAPHS (later shapes
    stream); parameters that moved (a new dtype) drop them all."""
    model, x, s = model_and_rows()
    graphs = lambda: kept(model)  # noqa: E731
    for rows in (24, 16, 8, 4, 2):
        for _ in range(2):
            captured(model, x[:rows], s[:rows], 30, 10)
    assert [key[0][0] for key in graphs()] == [24, 16, 8, 4]
    assert captured(model, x[:2], s[:2], 30, 10) is None  # beyond MAX_GRAPHS: streams
    model.double()
    x, s = x.double(), s.double()
    assert captured(model, x, s, 30, 10) is None  # a new shape (float64): first sight
    assert torch.equal(captured(model, x, s, 30, 10), streamed(model, x, s, 30, 10))
    assert len(graphs()) == 1


@torch.no_grad()
def test_a_model_with_graphs_is_freed_with_its_graphs():
    """The graphs are kept weakly by model: once the caller lets go of the model, it and
    its graphs are freed (a graph referring to its model would keep both for good)."""
    model, x, s = model_and_rows()
    for _ in range(2):
        captured(model, x, s, 30, 10)
    assert len(kept(model)) == 1
    gone = weakref.ref(model)
    count = len(_chunk_graphs._graphs)
    del model
    gc.collect()
    assert gone() is None and len(_chunk_graphs._graphs) == count - 1


@cuda_only
@pytest.mark.cuda
@torch.no_grad()
def test_cuda_graph_chunks_equal_the_stream(monkeypatch):
    """On a GPU, with the same noise, the replayed chunks give the stream's mean; with
    the random noise, two calls differ (each replay draws fresh samples) but stay
    close to the stream's mean (an average over many samples)."""
    model, x, s = model_and_rows(device="cuda", n=64)
    with monkeypatch.context() as m:
        fixed_noise(m)
        assert captured(model, x, s, 1000, 64, stand_in=False) is None  # first sight
        got = captured(model, x, s, 1000, 64, stand_in=False)
        torch.testing.assert_close(got, streamed(model, x, s, 1000, 64))
    graph = next(iter(kept(model).values()))
    assert graph.captured.is_graph
    kept(model).clear()  # that graph holds the fixed noise
    a = captured(model, x, s, 1000, 64, stand_in=False)
    b = _chunk_graphs.captured_mean(model, x, s, 1000, 64)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, streamed(model, x, s, 1000, 64), rtol=0.1, atol=0.1)


@torch.no_grad()
def test_a_failed_capture_warns_and_gives_none(monkeypatch):
    """A chunk that cannot be captured warns once and gives None (the caller streams);
    that shape is not tried again."""
    tries = []

    def refuse(*args, **kwargs):
        tries.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(_chunk_graphs, "Captured", refuse)
    model, x, s = model_and_rows()
    assert captured(model, x, s, 40, 10) is None and not tries  # first sight
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        assert captured(model, x, s, 40, 10) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert captured(model, x, s, 40, 10) is None
    assert len(tries) == 1


HAS_SWITCH = "cuda_graphs" in inspect.signature(nf.MIWAE.impute).parameters


@pytest.mark.skipif(not HAS_SWITCH, reason="impute has no cuda_graphs switch yet")
def test_impute_switch_routes_single_imputation_through_the_captured_chunks(monkeypatch):
    """impute(cuda_graphs=True): single imputation goes through captured_mean (here its
    CPU stand-in) with impute's numbers; multiple imputation and the switch off do not;
    a switch that is not a bool is refused."""
    calls = []
    original = _chunk_graphs.captured_mean

    def stand_in(*args):
        calls.append(1)
        return original(*args, stand_in=True)

    monkeypatch.setattr(_chunk_graphs, "captured_mean", stand_in)
    model, x, s = model_and_rows()
    results = []
    for switch in (False, True):
        torch.manual_seed(2)
        results.append(model.impute(x, s, n_samples=50, chunk_size=10, cuda_graphs=switch))
    assert torch.equal(results[0], results[1]) and len(calls) == 1
    model.impute(x, s, n_samples=50, n_draws=2, chunk_size=10, cuda_graphs=True)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="argument 'cuda_graphs' must be True or False"):
        model.impute(x, s, cuda_graphs="yes")
