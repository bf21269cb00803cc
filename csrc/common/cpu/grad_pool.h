// A small cache of gradient buffers for the CPU backward.
//
// Why: a gradient leaves the call (autograd hands it to the caller or to the layer below,
// which frees it within the step), so every backward needs a fresh buffer the size of its
// inputs: 4 MB at B = 65536 for the MNIST spec. Inside a training step glibc serves a
// block that size from the top of the heap and gives it back to the kernel when it is
// freed, so each step paid ~1000 page faults, and shrinking the heap while a second
// thread of the process runs costs TLB shootdowns, which a VM pays dearly for. On the
// 2-vCPU CI VM the pool has saved from nothing to a third of the step, run to run, most
// often 10-15% (benchmarks/core_speed.py: "cpu" against "cpu-no-pool"; results in
// benchmarks/results/cpu/core_speed.txt and its earlier versions).
//
// GradPool keeps up to kMaxBlocks freed buffers of at least kMinBytes (kMaxBytes in all)
// and hands one of exactly the requested size out again; smaller requests, and requests
// no cached block fits, go to torch's CPU allocator as usual. A block returns here when
// the last tensor using it is freed, so a buffer in use is never handed out twice.
// Cached blocks stay with the pool until empty() (fastmi.empty_cache()) or
// the end of the process.
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>

namespace fastmi {

class GradPool final : public c10::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t(64) << 10;   // below this, malloc keeps its own free lists
  static constexpr size_t kMaxBlocks = 8;                  // a D step and a G step of 3 gradients each, and slack
  static constexpr size_t kMaxBytes = size_t(512) << 20;   // what the cache may hold while no tensor uses it

  // The process-wide pool. Never destroyed: a tensor freed during interpreter shutdown
  // may still return its block after static destructors have run.
  static GradPool& get() {
    static GradPool* pool = new GradPool();
    return *pool;
  }

  c10::DataPtr allocate(size_t bytes) override {
    if (!enabled_ || bytes < kMinBytes) return c10::GetCPUAllocator()->allocate(bytes);
    Block* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = free_.rbegin(); it != free_.rend(); ++it) {   // the most recently freed first: warm in cache
        if ((*it)->bytes == bytes) {
          block = *it;
          free_.erase(std::next(it).base());
          cached_ -= bytes;
          break;
        }
      }
    }
    if (block == nullptr) block = new Block{c10::alloc_cpu(bytes), bytes};
    return {block->ptr, block, &GradPool::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

  // Bytes held by cached blocks that no tensor uses.
  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

  // Off: every buffer comes from torch's CPU allocator (benchmarks/core_speed.py, cpu-no-pool).
  void set_enabled(bool on) { enabled_ = on; }

  // Frees every cached block.
  void empty() {
    std::deque<Block*> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (Block* b : blocks) destroy(b);
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };

  GradPool() = default;

  static void destroy(Block* b) {
    c10::free_cpu(b->ptr);
    delete b;
  }

  // The DataPtr's deleter: the last tensor on the block is gone.
  static void release(void* ctx) {
    Block* block = static_cast<Block*>(ctx);
    GradPool& pool = get();
    std::deque<Block*> evicted;
    {
      std::lock_guard<std::mutex> lock(pool.mu_);
      pool.free_.push_back(block);
      pool.cached_ += block->bytes;
      while (pool.free_.size() > kMaxBlocks || pool.cached_ > kMaxBytes) {   // evict the oldest
        evicted.push_back(pool.free_.front());
        pool.cached_ -= pool.free_.front()->bytes;
        pool.free_.pop_front();
      }
    }
    for (Block* b : evicted) destroy(b);
  }

  std::atomic<bool> enabled_{true};
  std::mutex mu_;
  std::deque<Block*> free_;   // oldest first
  size_t cached_ = 0;
};

}  // namespace fastmi
