#!/usr/bin/env bash
# critic_bound's Triton backend on a GPU in one call (at most 9.5 minutes: one device command): its
# checks, then the benchmark table against the peers.
#
#     bash benchmarks/critic_gpu.sh [OUT_DIR]
#
# Needs the peers' wheels in .whl/ (the GPU machine has no network; carry .whl):
#
#     pip download --no-deps open-clip-torch==3.3.0 inf-cl==1.2.1 siglip-kernel==0.1.2 -d .whl
#
# Phases, each a process with its own time limit, so that a slow phase costs only itself:
#   1. install fastmi from the checkout if it does not import (editable, no deps, no
#      build isolation)
#   2. python -m fastmi.validate --ops critic --standard --backends triton: every check of
#      fastmi/critic/checks.py (float64 oracle matrix, no host sync, zero rows, bitwise
#      determinism, two streams and two graphs at once, graph replay, torch.compile, the
#      O(B d) memory)                                     -> validate_critic.json
#   3. benchmarks/critic_gpu.py: fastmi, Inf-CL, siglip-kernel, OpenCLIP eager and
#      compiled, B = 4,096 .. 1,048,576, d = 512 and 1024, bf16, the targets' points
#      first                                               -> critic_gpu.md, critic_gpu.json
# Everything, this run's log (critic_gpu.log) included, lands in OUT_DIR (default: $OUT,
# as the device machine sets it, else benchmarks/results/critic-gpu).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
OUT_DIR=${OUT:-benchmarks/results/critic-gpu}
if [ $# -gt 0 ]; then OUT_DIR=$1; shift; fi
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "== fastmi critic_gpu $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$PY" --version 2>&1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 \
    || echo "nvidia-smi: unavailable"
  ls -l .whl 2>&1 || echo "no .whl/: the peers will be reported unavailable"
  if ! "$PY" -c "import fastmi.kernels.critic" 2>/dev/null; then
    echo "== installing fastmi from the checkout (editable, --no-deps --no-build-isolation)"
    "$PY" -m pip install -e . --no-deps --no-build-isolation -q 2>&1 || echo "pip install failed: using PYTHONPATH"
  fi
  echo "== python -m fastmi.validate --ops critic --standard --backends triton"
  timeout 170 "$PY" -m fastmi.validate --ops critic --standard --backends triton --no-record \
    --json "$OUT_DIR/validate_critic.json" || echo "validate: exit $?"
  echo "== benchmarks/critic_gpu.py"
  timeout 400 "$PY" benchmarks/critic_gpu.py --out "$OUT_DIR" --budget 300 "$@" || echo "critic_gpu.py: exit $?"
} 2>&1 | tee "$OUT_DIR/critic_gpu.log"
