// fastmi CUDA kernels: the platform. Everything that differs between the GPU build (nvcc)
// and the CPU emulation (g++ -DFASTMI_CUDA_EMULATION with csrc/common/cuda/emulation.h) is
// decided in this file and nowhere else: the qualifier macros, 16-byte loads and stores,
// and, host side, the runtime calls (device queries, occupancy, the launch, reading a
// device array back, error strings). The other kernel files are written once for both.
// Also here: the block shape every kernel is compiled for, and the small device helpers
// every layout uses (grid-stride loops, warp shuffles).
#pragma once

#include "../../common/dtypes.h"

#if defined(FASTMI_CUDA_EMULATION)
#include "../../common/cuda/emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(FASTMI_CUDA_EMULATION)
#define FM_DEV inline
#define FM_HD inline
#define FM_DYNAMIC_SMEM(name) unsigned char* name = ::fastmi_emu::dynamic_smem()
#else
#define FM_DEV __device__ __forceinline__
#define FM_HD __host__ __device__ __forceinline__
#define FM_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace fastmi {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Resident blocks per SM that __launch_bounds__ asks ptxas to allow for: a register budget
// of 64 (32-bit and 16-bit inputs) or 85 (float64) per thread. Without it ptxas's own
// heuristic settled on 48 registers and spilled a few bytes after small code changes.
// 4 blocks of 256 threads = 32 warps per SM, with each thread's staged 16-byte loads
// independent: far more bytes in flight than an H100 / H200 needs to saturate HBM.
template <typename A>
constexpr int kMinBlocksPerSM = sizeof(A) == 8 ? 3 : 4;

// ---- device side -----------------------------------------------------------------------------

// 16 bytes from a 16-byte aligned address: one vector load or store on the GPU. The
// emulation copies the bytes instead: for g++ a float array read through a uint4 lvalue
// breaks strict aliasing, which -O2 may exploit.
template <typename T>
FM_DEV void load16(const T* p, T* out) {
#if defined(FASTMI_CUDA_EMULATION)
  memcpy(out, p, 16);
#else
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  memcpy(out, &u, 16);
#endif
}
template <typename T>
FM_DEV void store16(T* p, const T* in) {
#if defined(FASTMI_CUDA_EMULATION)
  memcpy(p, in, 16);
#else
  uint4 u;
  memcpy(&u, in, 16);
  *reinterpret_cast<uint4*>(p) = u;
#endif
}
FM_DEV bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// body(i, x[i]) for i = first, first + step, ... below n, the loads four at a time so that
// each thread keeps four in flight. The int64 loops stay rolled (#pragma unroll 1): an
// unrolled one divides for its trip count, a subroutine call (see kMinBlocksPerSM).
template <typename T, typename Body>
FM_DEV void grid_stride(const T* __restrict__ x, int64_t first, int64_t n, int64_t step, Body body) {
  int64_t i = first;
#pragma unroll 1
  for (; i < n - 3 * step; i += 4 * step) {
    const T v0 = x[i], v1 = x[i + step], v2 = x[i + 2 * step], v3 = x[i + 3 * step];
    body(i, v0);
    body(i + step, v1);
    body(i + 2 * step, v2);
    body(i + 3 * step, v3);
  }
#pragma unroll 1
  for (; i < n; i += step) body(i, x[i]);
}

template <typename V>
FM_DEV V shfl_xor(V v, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, v, lane_mask);
}

// ---- host side: the runtime ------------------------------------------------------------------
//
// Each call returns 0 or an error code that error_string names (a cudaError_t on the GPU).

#if defined(FASTMI_CUDA_EMULATION)

constexpr int kErrInvalidValue = 1;

inline int current_device(int* dev) {
  *dev = 0;
  return 0;
}

// A small odd grid exercises the grid-stride loops; FASTMI_EMULATED_SMS makes a large one.
// Read at every call (not cached): the tests change it between calls.
inline int sm_count_of(int, int* count) {
  const char* env = getenv("FASTMI_EMULATED_SMS");
  *count = env != nullptr && atoi(env) > 0 ? atoi(env) : 3;
  return 0;
}

template <typename Kernel>
int query_resident_blocks(Kernel, int /*threads*/, int /*smem*/, int* blocks) {
  *blocks = 2;
  return 0;
}

template <typename Kernel, typename Arg>
int launch_kernel(Kernel fn, int blocks, int threads, int smem, void* /*stream*/, const Arg& arg) {
  return fastmi_emu::launch(blocks, threads, smem, [fn, arg] { fn(arg); });  // by value: a deferred launch outlives arg
}


inline const char* error_string(int code) {
  if (code == kErrInvalidValue)
    return "invalid argument (a layout that cannot hold this problem, or m > FASTMI_CUDA_MAX_CAT)";
  return fastmi_emu::emu().error.c_str();
}

#else

constexpr int kErrInvalidValue = static_cast<int>(cudaErrorInvalidValue);

inline int current_device(int* dev) { return static_cast<int>(cudaGetDevice(dev)); }

// Cached per device: an attribute query on every plan is not free, and the count never changes.
inline int sm_count_of(int dev, int* count) {
  static int cached[64] = {0};
  if (dev >= 0 && dev < 64 && cached[dev] > 0) {
    *count = cached[dev];
    return 0;
  }
  const cudaError_t err = cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess && dev >= 0 && dev < 64) cached[dev] = *count;
  return static_cast<int>(err);
}

template <typename Kernel>
int query_resident_blocks(Kernel fn, int threads, int smem, int* blocks) {
  return static_cast<int>(cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, fn, threads, smem));
}

template <typename Kernel, typename Arg>
int launch_kernel(Kernel fn, int blocks, int threads, int smem, void* stream, const Arg& arg) {
  fn<<<blocks, threads, smem, static_cast<cudaStream_t>(stream)>>>(arg);
  return static_cast<int>(cudaGetLastError());
}


inline const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

#endif

}  // namespace cuda
}  // namespace fastmi
