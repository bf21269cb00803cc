// fastmi fused CUDA kernels: the InfoGAN losses and MI bounds of one batch in one launch
// (two when the grid has several blocks: forward.cuh), and every gradient in one more
// launch that recomputes from the inputs. This file is the
// translation unit: it plans the launches, launches them, and implements the plain C ABI
// of infogan_cuda.h; it includes no torch header (csrc/infogan/cuda/binding.cpp validates
// and allocates, then calls that ABI). The rest, one job per file:
//
//   device.cuh      the platform: GPU build vs CPU emulation, decided there alone
//   reductions.cuh  warp and block reductions: sums, log-sum-exps, WarpRows / BlockRows
//   tile.cuh        the tile layout's shared-memory tile: staging and storing
//   args.cuh        the kernel argument, the shared-memory map, the codes
//   forward.cuh     the forward kernel and its deterministic grid reduction
//   backward.cuh    the backward kernel
//
// The per-row math is csrc/infogan/math.h (ARCHITECTURE.md: terms, outputs, gradients), the
// numerics csrc/common/, shared with the CPU kernels. emulated.cpp compiles this file, and
// so every kernel file, as plain C++ for the CPU emulation.
//
// Layouts (chosen by plan_launch from B and W; FASTMI_LAYOUT_* in infogan_cuda.h):
//   tile   a thread per Q row, 256 rows staged through shared memory (tile.cuh); each
//          thread takes a code's log-sum-exp in two passes over its row (lse_of). Used
//          when a row fits (Wp * sizeof(acc) * 256 <= 40 KB) and W <= 32, or wider with at
//          least 16384 rows. 256 threads, grid = min(tiles, resident blocks).
//   warp   a warp per row, read straight from global memory: lanes stride over each
//          categorical block with an online log-sum-exp (lse_push, one exp per element),
//          combined across lanes by a butterfly of shuffles (lse_merge). The default for
//          wide rows. (lse_*: csrc/common/lse.h.)
//   block  a block (256 threads) per row, the same with a shared-memory combine across
//          warps: for few rows (< 8 per SM) of W >= 2048, e.g. one code of 65536 classes.

#include "infogan_cuda.h"

#include "backward.cuh"
#include "device.cuh"
#include "forward.cuh"

#include <mutex>

namespace fastmi {
namespace cuda {

constexpr int kTileBytes = 40 * 1024;           // the tile's shared memory, at most
constexpr int kTileNarrowW = 32;                // tile for any B up to this width
constexpr int64_t kTileWideMinRows = 16384;     // wider rows use the tile from this B on
constexpr int kBlockMinW = 2048;                // block layout: rows at least this wide ...
constexpr int kBlockMaxRowsPerSM = 8;           // ... and fewer rows than this per SM
constexpr int kSmemLimit = 48 * 1024;           // no opt-in launch attribute needed
constexpr int kRealRowsPerThread = 4;           // real / fake logits: grid-sizing hint

int g_layout_override = FASTMI_LAYOUT_AUTO;
int g_max_blocks = 0;

int acc_bytes(int dtype) { return dtype == FASTMI_F64 ? 8 : 4; }
bool tile_fits(int W, int dtype) { return odd_stride(W) * acc_bytes(dtype) * kTileRows <= kTileBytes; }

// The layout rule of the header comment.
int choose_layout(const FastmiProblem& p, const FastmiInputs& in, int sm_count) {
  if (tile_fits(p.W, in.dtype) && (p.W <= kTileNarrowW || in.Bq >= kTileWideMinRows)) return FASTMI_LAYOUT_TILE;
  if (p.W >= kBlockMinW && in.Bq < static_cast<int64_t>(kBlockMaxRowsPerSM) * sm_count) return FASTMI_LAYOUT_BLOCK;
  return FASTMI_LAYOUT_WARP;
}

using KernelFn = void (*)(Args);

template <typename T>
KernelFn kernel_for(bool forward, int layout) {
  switch (layout) {
    case FASTMI_LAYOUT_TILE:
      return forward ? forward_kernel<T, FASTMI_LAYOUT_TILE> : backward_kernel<T, FASTMI_LAYOUT_TILE>;
    case FASTMI_LAYOUT_WARP:
      return forward ? forward_kernel<T, FASTMI_LAYOUT_WARP> : backward_kernel<T, FASTMI_LAYOUT_WARP>;
    default:
      return forward ? forward_kernel<T, FASTMI_LAYOUT_BLOCK> : backward_kernel<T, FASTMI_LAYOUT_BLOCK>;
  }
}

KernelFn kernel_for(int dtype, bool forward, int layout) {
  switch (dtype) {
    case FASTMI_F32: return kernel_for<float>(forward, layout);
    case FASTMI_F64: return kernel_for<double>(forward, layout);
    case FASTMI_BF16: return kernel_for<bf16_t>(forward, layout);
    default: return kernel_for<f16_t>(forward, layout);
  }
}

// Resident blocks per SM of one kernel at one shared-memory size, cached: the occupancy
// query is a host-side computation, but not free.
int resident_blocks_per_sm(KernelFn fn, int dev, int smem, int* blocks) {
  struct Entry {
    KernelFn fn;
    int dev, smem, blocks;
  };
  static std::mutex mu;
  static Entry entries[512];
  static int used = 0;
  std::lock_guard<std::mutex> lock(mu);
  for (int i = 0; i < used; ++i) {
    if (entries[i].fn == fn && entries[i].dev == dev && entries[i].smem == smem) {
      *blocks = entries[i].blocks;
      return 0;
    }
  }
  const int err = query_resident_blocks(fn, kThreads, smem, blocks);
  if (err != 0) return err;
  if (*blocks < 1) *blocks = 1;
  if (used < 512) entries[used++] = Entry{fn, dev, smem, *blocks};
  return 0;
}

int plan_launch(const FastmiProblem* p, const FastmiInputs* in, bool forward, FastmiPlan* plan) {
  if (p->m < 0 || p->m > FASTMI_CUDA_MAX_CAT || p->W < 1 || in->Bq < 1 || in->Br < 0 || in->dtype < 0 ||
      in->dtype > FASTMI_F16)
    return kErrInvalidValue;
  int dev = 0, sms = 0, per_sm = 0;
  int err = current_device(&dev);
  if (err == 0) err = sm_count_of(dev, &sms);
  if (err != 0) return err;
  int layout = g_layout_override >= 0 ? g_layout_override : choose_layout(*p, *in, sms);
  if (layout == FASTMI_LAYOUT_TILE && !tile_fits(p->W, in->dtype)) return kErrInvalidValue;
  const int smem = smem_layout(p->m, layout, odd_stride(p->W), acc_bytes(in->dtype)).total;
  if (smem > kSmemLimit) return kErrInvalidValue;
  err = resident_blocks_per_sm(kernel_for(in->dtype, forward, layout), dev, smem, &per_sm);
  if (err != 0) return err;
  const int64_t rows_per_block = layout == FASTMI_LAYOUT_TILE ? kTileRows : layout == FASTMI_LAYOUT_WARP ? kWarps : 1;
  int64_t units = (in->Bq + rows_per_block - 1) / rows_per_block;
  const int64_t real_units = (in->Br + kThreads * kRealRowsPerThread - 1) / (kThreads * kRealRowsPerThread);
  if (real_units > units) units = real_units;
  int64_t blocks = static_cast<int64_t>(per_sm) * sms;
  if (units < blocks) blocks = units;
  if (g_max_blocks > 0 && blocks > g_max_blocks) blocks = g_max_blocks;
  if (blocks < 1) blocks = 1;
  plan->layout = layout;
  plan->blocks = static_cast<int32_t>(blocks);
  plan->threads = kThreads;
  plan->smem_bytes = smem;
  plan->workspace_doubles = forward && blocks > 1 ? blocks * (kFixedSums + p->m) : 0;  // one block: no columns
  return 0;
}

Args make_args(const FastmiProblem* p, const FastmiInputs* in, const FastmiPlan* plan) {
  Args args;
  memset(&args, 0, sizeof args);
  args.p = *p;
  args.in = *in;
  args.Wp = odd_stride(p->W);
  args.n_blocks = plan->blocks;
  args.inv_w = 1.0f / static_cast<float>(p->W);
  args.inv_real = 1.0 / static_cast<double>(in->Br > 0 ? in->Br : 1);
  args.inv_q = 1.0 / static_cast<double>(in->Bq);
  return args;
}

int launch(const FastmiPlan* plan, bool forward, int dtype, const Args& args, void* stream) {
  int err = launch_kernel(kernel_for(dtype, forward, plan->layout), plan->blocks, plan->threads, plan->smem_bytes,
                          stream, args);
  if (err == 0 && forward && plan->blocks > 1) {  // the second launch: the blocks' columns, finalized
    const int smem = smem_layout(args.p.m, FASTMI_LAYOUT_WARP, args.Wp, acc_bytes(dtype)).total;
    err = dtype == FASTMI_F64 ? launch_kernel(finalize_kernel<double>, 1, kThreads, smem, stream, args)
                              : launch_kernel(finalize_kernel<float>, 1, kThreads, smem, stream, args);
  }
  return err;
}

}  // namespace cuda
}  // namespace fastmi

// ---- the C ABI --------------------------------------------------------------------------------------

extern "C" {

int fastmi_cuda_plan_forward(const FastmiProblem* problem, const FastmiInputs* inputs, FastmiPlan* plan) {
  return fastmi::cuda::plan_launch(problem, inputs, true, plan);
}

int fastmi_cuda_plan_backward(const FastmiProblem* problem, const FastmiInputs* inputs, FastmiPlan* plan) {
  return fastmi::cuda::plan_launch(problem, inputs, false, plan);
}

int fastmi_cuda_forward(const FastmiProblem* problem, const FastmiInputs* inputs, const FastmiPlan* plan,
                        const FastmiForwardOutputs* outputs, void* stream) {
  fastmi::cuda::Args args = fastmi::cuda::make_args(problem, inputs, plan);
  args.out = *outputs;
  return fastmi::cuda::launch(plan, true, inputs->dtype, args, stream);
}

int fastmi_cuda_backward(const FastmiProblem* problem, const FastmiInputs* inputs, const FastmiPlan* plan,
                         const FastmiBackwardIO* io, void* stream) {
  fastmi::cuda::Args args = fastmi::cuda::make_args(problem, inputs, plan);
  args.io = *io;
  return fastmi::cuda::launch(plan, false, inputs->dtype, args, stream);
}

void fastmi_cuda_set_override(int32_t layout, int32_t max_blocks) {
  fastmi::cuda::g_layout_override = layout;
  fastmi::cuda::g_max_blocks = max_blocks;
}

const char* fastmi_cuda_error_string(int code) { return fastmi::cuda::error_string(code); }

const char* fastmi_cuda_layout_name(int32_t layout) {
  switch (layout) {
    case FASTMI_LAYOUT_TILE: return "tile";
    case FASTMI_LAYOUT_WARP: return "warp";
    case FASTMI_LAYOUT_BLOCK: return "block";
    default: return "auto";
  }
}

}  // extern "C"
