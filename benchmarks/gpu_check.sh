#!/usr/bin/env bash
# One-call GPU validation of fastmi's GPU backends (cuda and triton) on an H100 / H200:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR] [gpu_check.py options, e.g. --quick]
#
# Installs fastmi from this checkout if it does not import (editable, no dependencies, no
# build isolation: the GPU machine has no network), builds the native kernels
# (python -m fastmi.build --cuda), then runs benchmarks/gpu_check.py, whose docstring lists
# the checks. Everything goes to OUT_DIR (default: $FASTMI_RESULTS_DIR, else $OUT as the
# device machine sets it, else benchmarks/results/): gpu_check.md, gpu_check.json and this
# run's log, gpu_check.log. About 5 minutes on an H200, a first build included.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
OUT_DIR=${FASTMI_RESULTS_DIR:-${OUT:-benchmarks/results}}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT_DIR=$1; shift; fi
mkdir -p "$OUT_DIR"
{
  echo "== fastmi gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$PY" --version 2>&1) at $PY"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: unavailable"
  if ! "$PY" -c "import fastmi.csrc, fastmi.kernels" 2>/dev/null; then
    echo "== installing fastmi from the checkout (editable, --no-deps --no-build-isolation)"
    "$PY" -m pip install -e . --no-deps --no-build-isolation -q 2>&1 \
      || echo "pip install failed: gpu_check.py imports fastmi from the checkout instead"
  fi
  echo "== python -m fastmi.build --cuda (verbose: a compiler error lands in this log)"
  FASTMI_VERBOSE_BUILD=${FASTMI_VERBOSE_BUILD:-1} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
    timeout 900 "$PY" -m fastmi.build --cuda \
    || echo "build: FAILED (gpu_check.py's build section says why)"
  echo "== benchmarks/gpu_check.py"
  "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" "$@"
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
