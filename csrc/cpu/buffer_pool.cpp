// The buffer pool of buffer_pool.h: an allocator whose freed buffers go to lists by
// exact size (the operators ask for the same sizes step after step).
#include "buffer_pool.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <pthread.h>

#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace notmiwae_fast {
namespace cpu {
namespace {

// One buffer; the DataPtr's context while a tensor holds it.
struct Block {
  void* data;
  size_t bytes;
};

class BufferPool final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    if (bytes < kMinPooledBytes || bytes > kMaxPooledBytes)
      return c10::GetCPUAllocator()->allocate(bytes);
    Block* block = take(bytes);
    if (block == nullptr) block = new Block{c10::alloc_cpu(bytes), bytes};
    return {block->data, block, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  Block* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = free_.find(bytes);
    if (found == free_.end() || found->second.empty()) return nullptr;
    Block* block = found->second.back();
    found->second.pop_back();
    cached_ -= bytes;
    return block;
  }

  // The deleter of a pooled DataPtr: back to its list, or to the system when the pool
  // keeps enough already.
  static void give_back(void* context);

  static void destroy(Block* block) {
    c10::free_cpu(block->data);
    delete block;
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<Block*>> free_;
  size_t cached_ = 0;
};

BufferPool& pool();

// fork() while another thread holds the pool's lock would leave the child's copy locked
// for ever: the lock is taken around fork and released on both sides (as glibc's malloc
// does with its own).
void lock_for_fork() { pool().lock(); }
void unlock_after_fork() { pool().unlock(); }

// Never destroyed: tensors freed while the process exits still return their buffers.
BufferPool& pool() {
  static BufferPool* const instance = [] {
    auto* created = new BufferPool();
    pthread_atfork(&lock_for_fork, &unlock_after_fork, &unlock_after_fork);
    return created;
  }();
  return *instance;
}

void BufferPool::give_back(void* context) {
  Block* block = static_cast<Block*>(context);
  BufferPool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mutex_);
    if (p.cached_ + block->bytes <= kMaxCachedBytes) {
      p.free_[block->bytes].push_back(block);
      p.cached_ += block->bytes;
      return;
    }
  }
  destroy(block);
}

}  // namespace

at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::detail::empty_generic(sizes, &pool(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt);
}

}  // namespace cpu
}  // namespace notmiwae_fast
