// fastmi CPU threading: a deterministic chunked parallel loop and per-thread scratch
// buffers, for any op's CPU kernels. No torch headers: OpenMP directly (the library is
// built with -fopenmp; without it the loop runs on the caller, with the same result).
//
// Determinism: the rows of a call are cut into chunks whose size depends only on the
// shape (chunk_rows), each chunk writes only its own rows and its own partial-sum slot,
// and the caller adds the slots in chunk order. Which thread runs a chunk then changes
// no bit of the result, for any thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>

namespace fastmi {

// Rows per chunk for rows of row_elems elements: about chunk_elems elements, a multiple
// of `multiple` rows (the lanes a kernel takes at once), at least `multiple`. A function
// of the shape alone, so the summation order never depends on the thread count.
inline int64_t chunk_rows(int64_t row_elems, int64_t chunk_elems, int64_t multiple) {
  int64_t rows = chunk_elems / std::max<int64_t>(row_elems, 1);
  rows = (rows / multiple) * multiple;
  return std::max(rows, multiple);
}

// Runs worker(next) on up to `threads` threads (never more than there are chunks), where
// next() hands out the chunk indices 0, 1, ... one at a time (>= chunks: done). Handed out
// as threads come free, not split up front: a thread that the OS or a VM's neighbour holds
// up then delays its current chunk, not a fixed half of the work. One chunk, or one
// thread, runs on the caller without entering a parallel region. An exception thrown by a
// worker is rethrown here after every thread has finished (none may leave an OpenMP
// region); the other threads stop taking chunks.
template <typename Worker>
void for_each_chunk(int64_t chunks, int threads, Worker&& worker) {
  std::atomic<int64_t> counter{0};
  auto next = [&counter] { return counter.fetch_add(1, std::memory_order_relaxed); };
  const int64_t team = std::min<int64_t>(chunks, std::max(threads, 1));
  if (team <= 1) {
    worker(next);
    return;
  }
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(static_cast<int>(team))
  {
    try {
      worker(next);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
      counter.store(chunks, std::memory_order_relaxed);
    }
  }
  if (error) std::rethrow_exception(error);
}

// A thread's scratch buffer of n values (at least one), value-initialized, on cache lines
// of its own: two threads' small heap blocks can share a line, and the per-row
// read-modify-writes of the accumulators then bounce it between cores (measured: 2
// threads ran 4x slower than 1). Throws std::bad_alloc when out of memory.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n) : n_(std::max<int64_t>(n, 1)) {
    data_ = static_cast<T*>(std::aligned_alloc(kLine, round_up(n_ * sizeof(T))));
    if (data_ == nullptr) throw std::bad_alloc();
    std::uninitialized_value_construct_n(data_, n_);
  }
  ~Scratch() { std::free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() const { return data_; }

 private:
  static constexpr size_t kLine = 64;
  static size_t round_up(size_t bytes) { return (bytes + kLine - 1) / kLine * kLine; }
  int64_t n_;
  T* data_;
};

}  // namespace fastmi
