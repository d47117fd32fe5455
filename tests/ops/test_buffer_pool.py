"""The CPU buffer pool of the MLP's layer loop (csrc/cpu/buffer_pool.h): a freed
activation's buffer is kept for the next call of the same size instead of going back to
malloc (which hands it to the system and page-faults it in again), and pooled results
behave as any CPU tensor (values, resizing, freeing on another thread)."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from helpers import library_loaded

from notmiwae_fast.ops import reference

OPS = torch.ops.notmiwae_fast
pytestmark = pytest.mark.skipif(not library_loaded(), reason="needs the compiled library")

# One layer, 1024 rows of 64 float32 outputs: a 256 KB result, inside the pooled range
# (64 KB to 16 MB) and wide enough to be computed in place (no transposed temporary).
ROWS, IN, OUT = 1024, 3, 64


def layer():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, IN, generator=g)
    return x, [torch.randn(OUT, IN, generator=g)], [torch.randn(OUT, generator=g)]


def test_a_freed_result_is_reused_by_the_next_call_not_by_malloc():
    x, weights, biases = layer()
    first = OPS.mlp_tanh(x, weights, biases)
    address = first.data_ptr()
    del first
    # A plain allocation of the same size: malloc would hand it the freed block.
    other = torch.empty(ROWS, OUT)
    second = OPS.mlp_tanh(x, weights, biases)
    assert other.data_ptr() != address
    assert second.data_ptr() == address
    torch.testing.assert_close(second, reference.mlp_tanh(x, weights, biases))


def test_a_pooled_result_resizes_and_keeps_its_values():
    x, weights, biases = layer()
    y = OPS.mlp_tanh(x, weights, biases)
    expected = y.clone()
    y.resize_(2 * ROWS, OUT)
    assert y.shape == (2 * ROWS, OUT)
    torch.testing.assert_close(y[:ROWS], expected)


def test_results_freed_on_other_threads_come_back_intact():
    x, weights, biases = layer()
    expected = reference.mlp_tanh(x, weights, biases)
    results = [OPS.mlp_tanh(x, weights, biases) for _ in range(8)]
    threads = [threading.Thread(target=results.pop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == []
    again = [OPS.mlp_tanh(x, weights, biases) for _ in range(8)]
    assert len({t.data_ptr() for t in again}) == 8
    for y in again:
        torch.testing.assert_close(y, expected)


def test_a_training_step_gives_the_same_gradients_with_warm_buffers():
    """The second call of a gradient computation reuses the first one's buffers; the
    numbers are the same as the first call's (nothing stale is read)."""
    g = torch.Generator().manual_seed(1)
    sizes = [10, 128, 128, 22]
    x = torch.randn(2560, sizes[0], generator=g)
    weights = [torch.randn(o, i, generator=g) / i**0.5 for i, o in zip(sizes, sizes[1:])]
    biases = [torch.randn(o, generator=g) for o in sizes[1:]]
    grad = torch.randn(2560, sizes[-1], generator=g)

    def gradients():
        y, hidden = OPS.mlp_tanh_forward(x, weights, biases)
        grad_x, grad_w, grad_b = OPS.mlp_tanh_backward(grad, x, weights, hidden)
        return [y, grad_x, *grad_w, *grad_b]

    first = [t.clone() for t in gradients()]
    for a, b in zip(first, gradients()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_allocates_and_frees_pooled_buffers():
    """The pool's lock is taken around fork and released on both sides: a child made
    while buffers are pooled (and some held) allocates and frees as the parent does."""
    x, weights, biases = layer()
    held = OPS.mlp_tanh(x, weights, biases)
    del held
    kept = OPS.mlp_tanh(x, weights, biases)
    pid = os.fork()
    if pid == 0:  # the child: any failure is its exit status
        try:
            # As DataLoader workers do: OpenMP's and MKL's thread pools do not survive
            # fork (plain torch.mm hangs in such a child after threaded work here).
            torch.set_num_threads(1)
            y = OPS.mlp_tanh(x, weights, biases)
            ok = torch.equal(y, kept)
            del y
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    torch.testing.assert_close(OPS.mlp_tanh(x, weights, biases), kept, rtol=0, atol=0)
