#!/usr/bin/env bash
# The CPU results of benchmarks/results/cpu/: the full matrix, one process per latent spec
# (and one for the training step), then the report.
#
#   bash benchmarks/run_cpu_suite.sh [OUT_DIR]      # default: benchmarks/results/cpu
#
# One process per spec: in one run of the whole matrix in a single process here, MNIST at
# B = 65,536 took 6.1 ms per forward + backward (eager 29 ms) against 2.5-2.8 ms (eager
# 14-21 ms) in a process of its own; a training loop, like a process per spec, keeps one
# working set.
# OMP_WAIT_POLICY=PASSIVE: see benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/cpu}
tmp=$(mktemp -d)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
jsons=()
for spec in copy_bandwidth mnist svhn celeba chairs faces wide; do
  python -m pytest benchmarks/bench_loss.py --benchmark-only --fastmi-full -k "$spec" -q -p no:cacheprovider \
    --benchmark-json="$tmp/$spec.json" >"$tmp/$spec.log" 2>&1 || { tail -20 "$tmp/$spec.log"; exit 1; }
  jsons+=("$tmp/$spec.json")
  echo "$spec: $(tail -1 "$tmp/$spec.log")"
done
python -m pytest benchmarks/bench_e2e.py --benchmark-only -q -p no:cacheprovider \
  --benchmark-json="$tmp/e2e.json" >"$tmp/e2e.log" 2>&1 || { tail -20 "$tmp/e2e.log"; exit 1; }
jsons+=("$tmp/e2e.json")
echo "e2e: $(tail -1 "$tmp/e2e.log")"
python -m fastmi.bench report "${jsons[@]}" --out "$out" --command "bash benchmarks/run_cpu_suite.sh"
