"""torch.profiler run of N training-like steps per provider: kernel launches per step,
CUDA time per step, and a Chrome trace of each.

    python benchmarks/profile_steps.py [--out DIR] [--spec mnist] [--batch 65536]
        [--dtype float32] [--steps 10] [--providers triton cuda eager compile ...]

A step is the training step's use of the loss: ``fastmi.infogan_loss`` on inputs that
require grad, then the backward of all three losses (the fwd_bwd operation of
benchmarks/bench_loss.py, built by fastmi.bench.providers; a ``+graph`` provider replays
it from a CUDA graph). Each provider is warmed up first (builds, Triton JIT,
torch.compile and graph capture stay outside the profile), then N steps run under
torch.profiler, synchronized after each.

Per provider it prints and writes to DIR/profile.json:

    kernels/step     GPU kernels that ran (CUDA activity; memcpy / memset counted apart)
    launches/step    host launch calls: cudaLaunchKernel, cuLaunchKernel(Ex),
                     cudaLaunchKernelExC, cudaGraphLaunch (a graph replay is one launch)
    CUDA us/step     the summed device time of those kernels
    wall us/step     host time per step, synchronized

and writes DIR/trace_<provider>.json.gz, a Chrome trace (open it in chrome://tracing or
https://ui.perfetto.dev). On a CPU (``--device cpu``) the CUDA columns are replaced by
the number of operators per step (outermost aten:: and fastmi:: calls) and CPU time.

``--no-profiler`` runs the same warm-up and steps without torch.profiler, inside NVTX
ranges named after the providers: benchmarks/ncu_kernels.sh runs it under Nsight
Compute, which cannot share CUPTI with torch.profiler.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from fastmi.bench import env as bench_env
from fastmi.bench import providers as P
from fastmi.bench import workloads as W

LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def count_events(events, steps: int, device: str) -> dict:
    """Per-step counts and times from a profile's FunctionEvents."""
    out = {}
    if device == "cuda":
        gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels = [e for e in gpu if not e.name.lower().startswith(("memcpy", "memset"))]
        launches = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.name in LAUNCH_CALLS]
        out.update(kernels_per_step=len(kernels) / steps, launches_per_step=len(launches) / steps,
                   memcpy_memset_per_step=(len(gpu) - len(kernels)) / steps,
                   cuda_us_per_step=sum(e.device_time_total for e in kernels) / steps,
                   kernel_names=sorted({e.name[:80] for e in kernels})[:40])
    else:
        def is_op(e):
            return e.name.startswith(("aten::", "fastmi::"))

        ops = [e for e in events if is_op(e) and not (e.cpu_parent is not None and is_op(e.cpu_parent))]
        out.update(ops_per_step=len(ops) / steps, op_names=sorted({e.name for e in ops})[:40])
    return out


def profile_provider(provider: str, work: W.Workload, steps: int, out: Path, use_profiler: bool) -> dict:
    inputs = W.make_inputs(work)
    runner = P.make_runner(provider, "fwd_bwd", work, inputs)
    P.warm_up(runner)
    device = work.device
    if not use_profiler:
        if device == "cuda":
            torch.cuda.nvtx.range_push(provider)
        start = time.perf_counter()
        for _ in range(steps):
            runner.target()
        _sync(device)
        wall = (time.perf_counter() - start) / steps
        if device == "cuda":
            torch.cuda.nvtx.range_pop()
        return {"provider": provider, "wall_us_per_step": wall * 1e6}

    from torch.profiler import ProfilerActivity, profile, record_function
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    _sync(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for i in range(steps):
            with record_function(f"step {i}"):
                runner.target()
            _sync(device)
        wall = (time.perf_counter() - start) / steps
    trace = out / f"trace_{provider.replace('+', '_')}.json.gz"
    prof.export_chrome_trace(str(trace))
    row = {"provider": provider, "wall_us_per_step": wall * 1e6, "trace": trace.name,
           **count_events(prof.events(), steps, device)}
    return row


def print_table(rows, device: str) -> None:
    if device == "cuda":
        print(f"{'provider':<28} {'kernels/step':>12} {'launches/step':>14} {'memcpy/set':>10} "
              f"{'CUDA us/step':>13} {'wall us/step':>13}")
        for r in rows:
            if "error" in r:
                print(f"{r['provider']:<28} {r['error']}")
            elif "kernels_per_step" in r:
                print(f"{r['provider']:<28} {r['kernels_per_step']:>12.1f} {r['launches_per_step']:>14.1f} "
                      f"{r['memcpy_memset_per_step']:>10.1f} {r['cuda_us_per_step']:>13.1f} "
                      f"{r['wall_us_per_step']:>13.1f}")
            else:
                print(f"{r['provider']:<28} {'':>12} {'':>14} {'':>10} {'':>13} {r['wall_us_per_step']:>13.1f}")
    else:
        print(f"{'provider':<28} {'ops/step':>9} {'CPU us/step':>12}")
        for r in rows:
            if "error" in r:
                print(f"{r['provider']:<28} {r['error']}")
            else:
                ops = f"{r['ops_per_step']:>9.1f}" if "ops_per_step" in r else f"{'':>9}"
                print(f"{r['provider']:<28} {ops} {r['wall_us_per_step']:>12.1f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--spec", choices=tuple(W.SPECS), default="mnist")
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--dtype", choices=tuple(W.DTYPES), default="float32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--providers", nargs="+", help="default: every provider of the device (fastmi.bench.providers)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results/profile",
                        help="folder for the traces and profile.json (default: $OUT, else benchmarks/results/profile)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-profiler", action="store_true",
                        help="no torch.profiler: warm-up and steps in NVTX ranges (for ncu)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    torch.set_num_threads(args.threads)
    P.configure_compile()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = W.Workload(args.spec, args.batch, args.dtype, args.device)
    names = args.providers or P.providers(args.device)
    unknown = [p for p in names if p not in P.providers(args.device)]
    if unknown:
        parser.error(f"unknown or unavailable providers on {args.device}: {unknown}; "
                     f"choose from {P.providers(args.device)}")
    env = bench_env.describe(args.device)
    print(f"fastmi profile: {env['device_name']}, torch {env['torch']}, triton {env['triton']}; {work.id}, "
          f"{args.steps} steps of forward + backward per provider", flush=True)
    rows = []
    for provider in names:
        try:
            rows.append(profile_provider(provider, work, args.steps, out, not args.no_profiler))
        except P.Unsupported as exc:
            rows.append({"provider": provider, "error": f"unsupported: {exc}"})
        except Exception as exc:  # one provider's failure must not lose the others' numbers
            rows.append({"provider": provider, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        print(f"  {provider}: done", flush=True)
    print_table(rows, args.device)
    result = {"env": env, "workload": work._asdict(), "steps": args.steps, "profiler": not args.no_profiler,
              "providers": rows}
    (out / "profile.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"written: {out / 'profile.json'}" + ("" if args.no_profiler else f" and {len(rows)} traces in {out}"))
    return result


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any("error" in r and not r["error"].startswith("unsupported") for r in result["providers"]) else 0)
