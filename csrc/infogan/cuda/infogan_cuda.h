// fastmi CUDA kernels: the plain C ABI between the kernels (csrc/infogan/cuda/launch.cu and the
// .cuh files it includes, no torch headers) and the torch binding (csrc/infogan/cuda/binding.cpp).
//
// The binding validates shapes, dtypes and devices, allocates every output and the
// workspace, and passes raw pointers; the launchers trust them. Every launcher returns 0
// or a cudaError_t value (fastmi_cuda_error_string names it) and never synchronizes.
#pragma once

#include <stdint.h>

// Categorical codes one call may hold: their class counts travel as a kernel argument.
#define FASTMI_CUDA_MAX_CAT 128

#ifdef __cplusplus
extern "C" {
#endif

// dtype of the logits and q (the accumulation type is float64 for FASTMI_F64, else float32)
enum { FASTMI_F32 = 0, FASTMI_F64 = 1, FASTMI_BF16 = 2, FASTMI_F16 = 3 };

// How Q rows map onto threads (launch.cu's header comment says when each is used).
enum {
  FASTMI_LAYOUT_AUTO = -1,
  FASTMI_LAYOUT_TILE = 0,   // a thread per row, rows staged through shared memory
  FASTMI_LAYOUT_WARP = 1,   // a warp per row, read straight from global memory
  FASTMI_LAYOUT_BLOCK = 2,  // a block per row, for few rows of a huge width
};

// The spec and options of one call: fastmi/infogan/problem.py's kernel_args.
typedef struct FastmiProblem {
  int32_t m;              // categorical codes
  int32_t nb;             // bernoulli codes
  int32_t n;              // continuous codes
  int32_t W;              // q width: sum(cat_sizes) + nb + n * (learned_std ? 2 : 1)
  int32_t learned_std;
  int32_t minimax;
  int32_t sum_reduction;
  // (4 bytes of padding: the doubles start at offset 32; binding.cpp zeroes the whole struct)
  double fixed_logvar, prior_entropy, lambda_cat, lambda_cont, real_label;
  int32_t cat_sizes[FASTMI_CUDA_MAX_CAT];
} FastmiProblem;

// The inputs: contiguous device pointers; real / fake / cat / bern / cont may be NULL.
typedef struct FastmiInputs {
  const void* real;  // [Br] dtype
  const void* fake;  // [Bq] dtype
  const void* q;     // [Bq, W] dtype
  const void* cat;   // [Bq, m] int32 or int64
  const void* bern;  // [Bq, nb] accumulation type
  const void* cont;  // [Bq, n] accumulation type
  int64_t Br;        // 0 when real is NULL
  int64_t Bq;        // >= 1
  int32_t dtype;     // FASTMI_F32 ...
  int32_t cat_int64; // 1: cat is int64, 0: int32
} FastmiInputs;

// The launch a call gets: a function of (problem, inputs, device) alone, so that the
// summation order, hence the result, is the same on every call.
typedef struct FastmiPlan {
  int32_t layout;
  int32_t blocks;
  int32_t threads;
  int32_t smem_bytes;
  int64_t workspace_doubles;  // forward only: per-block partial sums (0 for a one-block grid)
} FastmiPlan;

// Forward outputs, all in the accumulation type: three 0-dim losses and stats [3 + m].
typedef struct FastmiForwardOutputs {
  void* discriminator;
  void* generator;
  void* info;
  void* stats;
  double* workspace;  // plan.workspace_doubles doubles, uninitialized: the call's own
} FastmiForwardOutputs;

// Backward: upstream grads (0-dim, accumulation type; NULL counts as zero) in, input
// grads (dtype; NULL where the input is absent) out.
typedef struct FastmiBackwardIO {
  const void* grad_discriminator;
  const void* grad_generator;
  const void* grad_info;
  void* grad_real;
  void* grad_fake;
  void* grad_q;
} FastmiBackwardIO;

int fastmi_cuda_plan_forward(const FastmiProblem* problem, const FastmiInputs* inputs, FastmiPlan* plan);
int fastmi_cuda_plan_backward(const FastmiProblem* problem, const FastmiInputs* inputs, FastmiPlan* plan);
// One launch each; plan comes from the matching plan function with the same arguments.
int fastmi_cuda_forward(const FastmiProblem* problem, const FastmiInputs* inputs, const FastmiPlan* plan,
                        const FastmiForwardOutputs* outputs, void* stream);
int fastmi_cuda_backward(const FastmiProblem* problem, const FastmiInputs* inputs, const FastmiPlan* plan,
                         const FastmiBackwardIO* io, void* stream);

// Testing and benchmarking: force a layout (FASTMI_LAYOUT_AUTO restores the rule) and cap
// the grid (0: no cap). Affects the plans made afterwards, process-wide.
void fastmi_cuda_set_override(int32_t layout, int32_t max_blocks);
const char* fastmi_cuda_error_string(int code);
const char* fastmi_cuda_layout_name(int32_t layout);

#ifdef __cplusplus
}
#endif
