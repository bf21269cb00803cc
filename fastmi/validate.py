"""Validates fastmi's fused GPU kernels on this machine's GPU: ``python -m fastmi.validate``.

Runs the GPU checks of every op (fastmi/infogan/checks.py: the float64 oracle over specs
and dtypes, no host sync, determinism, invalid codes, two streams and two CUDA graphs at
once, CUDA-graph replay, torch.compile; fastmi/critic/checks.py: the same for
critic_bound's Triton kernels, every estimator against the float64 oracle, a zero row
without a sync, and its O(B d) memory), prints a PASS / FAIL / SKIP table and, when
every check passed, records the pass for this GPU model, driver and torch / triton /
fastmi versions in fastmi's cache folder: ``backend="auto"`` then uses the fused GPU
backends on this GPU (fastmi/runtime/validation.py). About a minute on an H200.

Exit status: 0 when every check passed, 1 when one failed, 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .runtime import validation


# the fused GPU backends of each op (the critic's "tiled" runs on CUDA tensors too, but it
# is the pure-PyTorch specification, not a GPU kernel to validate)
GPU_BACKENDS = {"infogan": ("triton", "cuda"), "critic": ("triton",)}


def _registry(op: str):
    if op == "infogan":
        from .infogan.backends import REGISTRY
    else:
        from .critic.backends import REGISTRY
    return REGISTRY


def available_gpu_backends() -> list:
    """The fused GPU backends (of any op) that can run on CUDA tensors here."""
    names = []
    for op, backends in GPU_BACKENDS.items():
        names += [b for b in backends if b not in names and _registry(op).unavailable_reason(b, "cuda") is None]
    return names


def all_checks(backends, device="cuda", *, quick=True, full=False, ops=tuple(GPU_BACKENDS)) -> list:
    """The GPU checks of ``ops`` for ``backends`` (each op takes those of its fused GPU
    backends)."""
    from .critic import checks as critic_checks
    from .infogan import checks as infogan_checks

    modules = {"infogan": infogan_checks, "critic": critic_checks}
    out = []
    for op in ops:
        ours = [b for b in backends if b in GPU_BACKENDS[op]]
        out += modules[op].checks(ours, device, quick=quick, full=full)
    return out


def table(outcomes) -> str:
    """The outcomes as a markdown table with a count line."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "FAIL", "SKIP")}
    lines = [f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped", "",
             "| op | check | status | detail | s |", "| --- | --- | --- | --- | ---: |"]
    for o in outcomes:
        detail = o.detail.replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {o.op} | {o.name} | {o.status} | {detail} | {o.seconds:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmi.validate", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standard", action="store_true",
                        help="the whole correctness matrix and every forced layout (a few minutes), not the quick set")
    parser.add_argument("--full", action="store_true", help="also B x W > 2^31 elements (needs ~20 GB of GPU memory)")
    parser.add_argument("--backends", nargs="+", choices=("triton", "cuda"),
                        help="the GPU backends to check (default: every one that runs here)")
    parser.add_argument("--ops", nargs="+", choices=tuple(GPU_BACKENDS), default=list(GPU_BACKENDS),
                        help="the ops whose checks run (default: all; a record needs all of them)")
    parser.add_argument("--json", type=Path, help="also write the outcomes and the GPU's identity to this file")
    parser.add_argument("--no-record", action="store_true", help="do not record a pass in the cache folder")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        reason = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                  else "torch.cuda.is_available() is False")
        print(f"fastmi.validate: no CUDA device: {reason}; nothing to validate", file=sys.stderr)
        print(table([validation.Outcome("-", "CUDA device", "FAIL", f"no CUDA device: {reason}", 0.0)]))
        return 2
    identity = validation.gpu_identity()
    print(f"fastmi.validate: {identity['gpu']} (sm_{identity['capability'].replace('.', '')}), driver "
          f"{identity['driver']}, torch {identity['torch']} (CUDA {identity['cuda']}), triton {identity['triton']}, "
          f"fastmi {identity['fastmi']}", flush=True)
    backends = args.backends or available_gpu_backends()
    if not backends:
        print("fastmi.validate: no fused GPU backend runs here (see fastmi.available_backends('cuda'))",
              file=sys.stderr)
        return 1

    def report(o):
        print(f"[{o.status}] {o.op} | {o.name}: {o.detail} ({o.seconds:.1f} s)", flush=True)

    outcomes = validation.run_checks(all_checks(backends, quick=not args.standard, full=args.full, ops=args.ops),
                                     report=report)
    print("\n" + table(outcomes))
    passed = all(o.status != "FAIL" for o in outcomes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"identity": identity, "backends": backends,
                                         "outcomes": [o._asdict() for o in outcomes]}, indent=1))
    if passed and not args.no_record and set(args.ops) == set(GPU_BACKENDS):
        path = validation.write_record(identity, outcomes)
        validation.forget()
        print(f"\nfastmi.validate: recorded in {path}: backend='auto' now uses {backends} on this GPU")
    elif not passed:
        print("\nfastmi.validate: FAILED: backend='auto' keeps the reference on this GPU")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
