#!/usr/bin/env bash
# The GPU benchmark report in one call (a GPU session runs this once, < 8 minutes):
#
#     bash benchmarks/gpu_bench.sh [OUT_DIR]
#
# OUT_DIR defaults to $FASTMI_RESULTS_DIR, else $OUT (the device machine sets it), else
# benchmarks/results/gpu. Phases, each a separate process with its own time limit, so
# that a slow phase costs only itself; whatever finished is reported:
#
#   1. install fastmi from the checkout if it does not import (editable, no deps, no
#      build isolation: the GPU machine has no network); build the CUDA extension
#   2. the quick loss suite (mnist and wide, float32, B = 64, 65,536, 1,048,576; forward,
#      backward, forward + backward) for eager, triton, cuda and their CUDA-graph replays
#                                                       -> bench_loss.json
#   3. the training step of the trainer's MNIST networks per provider -> bench_e2e.json
#   4. torch.compile of the reference (default and max-autotune-no-cudagraphs, plain and
#      graph-replayed), one workload per pytest run, most telling first, while the time
#      budget lasts                                      -> bench_compile_<workload>.json
#   5. benchmarks/profile_steps.py: kernels and launches per training-like step and CUDA
#      time per provider, Chrome traces                  -> profile/
#   6. python -m fastmi.bench report: report.md, summary.md, results.json, PNG plots
#
# Everything, this run's log (gpu_bench.log) included, lands in OUT_DIR. The total is
# kept under FASTMI_BENCH_BUDGET seconds (default 420): phase 4 stops starting new
# workloads when less than 110 s are left, which phases 5 and 6 need.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
OUT_DIR=${FASTMI_RESULTS_DIR:-${OUT:-benchmarks/results/gpu}}
if [ $# -gt 0 ]; then OUT_DIR=$1; shift; fi
BUDGET=${FASTMI_BENCH_BUDGET:-420}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTEST=("$PY" -m pytest -p no:cacheprovider -q --benchmark-only --fastmi-device cuda --fastmi-max-time 0.2
        --benchmark-columns median,rounds --benchmark-sort name)

left() { echo $((BUDGET - SECONDS)); }
limit() {  # limit SECONDS: a phase's timeout, never past the budget less the reserve $2
  local t=$(( $(left) - ${2:-0} ))
  [ "$t" -gt "$1" ] && t=$1
  [ "$t" -lt 1 ] && t=1
  echo "$t"
}
phase() { echo; echo "== [$SECONDS s] $*"; }

{
  phase "fastmi gpu_bench $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$PY" --version 2>&1), budget $BUDGET s, out $OUT_DIR"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 \
    || echo "nvidia-smi: unavailable"
  if ! "$PY" -c "import fastmi.bench, fastmi.csrc, fastmi.kernels" 2>/dev/null; then
    phase "installing fastmi from the checkout (editable, --no-deps --no-build-isolation)"
    "$PY" -m pip install -e . --no-deps --no-build-isolation -q 2>&1 || echo "pip install failed: using PYTHONPATH"
  fi
  phase "python -m fastmi.build --cuda"
  timeout "$(limit 240 180)" "$PY" -m fastmi.build --cuda || echo "build: FAILED (the cuda provider will be missing)"

  phase "loss suite: eager, triton, cuda and their CUDA-graph replays"
  timeout "$(limit 150 150)" "${PYTEST[@]}" benchmarks/bench_loss.py -k "not compile" \
    --benchmark-json "$OUT_DIR/bench_loss.json" || echo "loss suite: exit $?"

  phase "training step"
  timeout "$(limit 90 130)" "${PYTEST[@]}" benchmarks/bench_e2e.py --benchmark-json "$OUT_DIR/bench_e2e.json" \
    || echo "training step: exit $?"

  for work in mnist-B65536-float32 mnist-B1048576-float32 mnist-B64-float32 wide-B1048576-float32 \
              wide-B65536-float32 wide-B64-float32; do
    if [ "$(left)" -lt 170 ]; then echo "torch.compile: $work and the rest skipped (time budget)"; break; fi
    phase "torch.compile providers, $work"
    timeout "$(limit 150 110)" "${PYTEST[@]}" benchmarks/bench_loss.py -k "compile and $work" \
      --benchmark-json "$OUT_DIR/bench_compile_$work.json" || echo "torch.compile $work: exit $?"
  done

  phase "torch.profiler: kernels and launches per step"
  timeout "$(limit 80 25)" "$PY" benchmarks/profile_steps.py --device cuda --spec mnist --batch 65536 --steps 10 \
    --providers eager triton cuda compile eager+graph triton+graph cuda+graph --out "$OUT_DIR/profile" \
    || echo "profile: exit $?"

  phase "report"
  timeout "$(limit 60 0)" "$PY" -m fastmi.bench report "$OUT_DIR"/bench_*.json --out "$OUT_DIR" \
    --command "bash benchmarks/gpu_bench.sh" || echo "report: exit $?"
  phase "done"
} 2>&1 | tee "$OUT_DIR/gpu_bench.log"
