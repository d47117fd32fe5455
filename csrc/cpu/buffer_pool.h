// cpu::pooled_empty: large CPU buffers that the operators keep for reuse.
//
// glibc's malloc serves a request of a few hundred KB or more from mmap or from the top
// of its heap, and hands the memory back to the system once a free region at the top
// passes its trim threshold. An operator that allocates its activations and gradients
// afresh on every call then page-faults them in again on every call (a batch-128
// training step of the paper's model: megabytes of fresh pages a step; figures in
// benchmarks/results/cpu/malloc_reuse.md). The layer loop of the MLP (mlp.h) allocates its
// activations, gradients and temporaries here instead: a freed buffer goes back to a
// list by size and the next request of the same size takes it, warm.
//
// Bounded: buffers between kMinPooledBytes and kMaxPooledBytes only (smaller ones are
// malloc's fast path, larger ones too big to keep), and at most kMaxCachedBytes of freed
// buffers kept (for the life of the process); beyond that a freed buffer goes back to
// the system. Thread-safe: a buffer may be freed on any thread.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>

namespace notmiwae_fast {
namespace cpu {

constexpr size_t kMinPooledBytes = size_t{64} << 10;
constexpr size_t kMaxPooledBytes = size_t{16} << 20;
constexpr size_t kMaxCachedBytes = size_t{64} << 20;

// An uninitialised contiguous CPU tensor of these sizes and options (dtype; the device
// must be the CPU), its storage from the pool where its size is in the pooled range and
// from ATen's CPU allocator otherwise. The storage is resizable, as at::empty's is.
at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace cpu
}  // namespace notmiwae_fast
