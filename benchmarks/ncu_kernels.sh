#!/usr/bin/env bash
# Nsight Compute profile of fastmi's fused GPU kernels (the Triton and the CUDA C++
# forward and backward kernels), driven by benchmarks/profile_steps.py --no-profiler:
#
#     bash benchmarks/ncu_kernels.sh [OUT_DIR] [--dry-run] [profile_steps.py options]
#
#     e.g. bash benchmarks/ncu_kernels.sh "$OUT" --spec wide --batch 1048576 --dtype bfloat16
#
# Writes OUT_DIR/fastmi_kernels.ncu-rep (open it in Nsight Compute, or
# `ncu --import OUT_DIR/fastmi_kernels.ncu-rep --page details`), a CSV of the main
# metrics (fastmi_kernels.csv) and this run's log. OUT_DIR defaults to $OUT, else
# benchmarks/results/ncu. --dry-run prints the ncu command line and exits.
#
# Settings (environment):
#   NCU          the ncu binary (default: ncu on PATH, else /usr/local/cuda/bin/ncu)
#   NCU_SET      the section set (default: full; "basic" is faster)
#   NCU_COUNT    kernels to profile (default 10: forward (+ Triton's finalize) + backward, 2 steps, 2 backends)
#   PROVIDERS    backends to run (default: "triton cuda")
#
# --clock-control none keeps the GPU at its application clocks (ncu locks them to base
# clocks by default, which understates a memory-bound kernel's bandwidth). Only kernels
# whose function name matches KERNEL_REGEX are profiled: the Triton kernels are
# infogan_forward_kernel / infogan_backward_kernel (kernels/), the CUDA ones
# forward_kernel / backward_kernel (csrc/infogan/cuda/{forward,backward}.cuh); and only inside the NVTX
# range that profile_steps.py opens per provider after its warm-up, so the warm-up's
# launches (and Triton's JIT) are not what ncu profiles.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
KERNEL_REGEX='^(infogan_)?(forward|finalize|backward)_kernel'
OUT_DIR=${OUT:-benchmarks/results/ncu}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT_DIR=$1; shift; fi
DRY_RUN=0
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then DRY_RUN=1; else ARGS+=("$arg"); fi
done
NCU_BIN=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
# shellcheck disable=SC2206
PROVIDER_LIST=(${PROVIDERS:-triton cuda})
NVTX=(--nvtx)
for p in "${PROVIDER_LIST[@]}"; do NVTX+=(--nvtx-include "$p/"); done
CMD=("$NCU_BIN" --clock-control none --target-processes all "${NVTX[@]}"
     --kernel-name-base function --kernel-name "regex:$KERNEL_REGEX"
     --launch-count "${NCU_COUNT:-10}" --set "${NCU_SET:-full}"
     --export "$OUT_DIR/fastmi_kernels" --force-overwrite
     "$PY" benchmarks/profile_steps.py --no-profiler --steps 2 --out "$OUT_DIR"
     --providers "${PROVIDER_LIST[@]}" "${ARGS[@]}")
if [ "$DRY_RUN" = 1 ]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
mkdir -p "$OUT_DIR"
{
  echo "== fastmi ncu $(date -u +%Y-%m-%dT%H:%M:%SZ): $("$NCU_BIN" --version 2>&1 | tail -1)"
  printf '%q ' "${CMD[@]}"
  echo
  "${CMD[@]}"
  status=$?
  if [ -f "$OUT_DIR/fastmi_kernels.ncu-rep" ]; then
    "$NCU_BIN" --import "$OUT_DIR/fastmi_kernels.ncu-rep" --csv --page raw \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
      > "$OUT_DIR/fastmi_kernels.csv" 2>&1 || echo "ncu --import failed: see $OUT_DIR/fastmi_kernels.csv"
    echo "written: $OUT_DIR/fastmi_kernels.ncu-rep, $OUT_DIR/fastmi_kernels.csv"
  fi
  exit $status
} 2>&1 | tee "$OUT_DIR/ncu.log"
exit "${PIPESTATUS[0]}"
