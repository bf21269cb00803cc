"""critic_bound's GPU benchmark: fastmi's Triton kernels against the fused peers and the
eager losses, forward + backward, bfloat16 features, for CLIP's and SigLIP's losses.

    python benchmarks/critic_gpu.py [--out DIR] [--budget SECONDS] [--batches B ...]
                                    [--dims D ...] [--losses clip siglip] [--providers P ...]
    python benchmarks/critic_gpu.py --dry-run --out DIR   (CPU: the host-side logic, tiny sizes)

Providers (each computes the loss and the gradients of both features, the log scale and,
for SigLIP, the bias; features are L2-normalised bfloat16 rows, the logit scale a float32
parameter exponentiated as CLIP does):

  clip    fastmi          critic_bound(estimator="infonce", symmetric=True, backend="triton")
          inf-cl          Inf-CL's cal_inf_loss, once per direction (it runs one per call)
          openclip        OpenCLIP 3.3.0's ClipLoss (the B x B logits, eager)
          openclip+compile  the same under torch.compile
  siglip  fastmi          critic_bound(estimator="siglip", backend="triton")
          siglip-kernel   siglip_kernel.fused_siglip_loss (its "auto" route)
          openclip        OpenCLIP 3.3.0's SigLipLoss (eager)
          openclip+compile  the same under torch.compile

B runs from 4,096 to 1,048,576 and d over {512, 1024}. Each point records the median time
of a forward + backward (CUDA events), ``torch.cuda.max_memory_allocated`` above what was
allocated before the step (the inputs: the gradients and every workspace count), and the
counted GEMM throughput: 2 B N d FLOPs for the forward and three times that for the
backward (recompute, dx, dy), 8 B N d per step with N = B, over the measured time, as a
share of the GPU's dense bfloat16 peak (989 TFLOP/s on an H100 / H200 SXM; --peak-tflops).
A provider that runs out of memory, or whose next point would take more than
--max-step-seconds per step (the time grows as B^2), is not run at larger B for that d.
The first point of each (loss, d) also compares every provider's loss and feature
gradients with fastmi's.

The points behind the issue's targets run first (CLIP at B = 32,768 and SigLIP at
B = 65,536 against every peer, fastmi's memory at B = 262,144, its throughput from
B = 65,536), then the sweep, while --budget lasts. Writes critic_gpu.md (the table and the
targets' verdicts) and critic_gpu.json to --out (default: $OUT when set, as on the device
machine, else benchmarks/results/critic-gpu).

The peers come from wheels in the repository's .whl/ (no network on the GPU machine):

    pip download --no-deps open-clip-torch==3.3.0 inf-cl==1.2.1 siglip-kernel==0.1.2 -d .whl

which are extracted to a temporary folder and imported from there (OpenCLIP's loss.py
alone, by path: the package's __init__ pulls torchvision). benchmarks/critic_gpu.sh runs
the validation and this script in one call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import types
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fastmi  # noqa: E402

WHEELS = REPO / ".whl"
PEER_WHEELS = {"inf_cl": "inf_cl-1.2.1-py3-none-any.whl", "siglip_kernel": "siglip_kernel-0.1.2-py3-none-any.whl",
               "open_clip": "open_clip_torch-3.3.0-py3-none-any.whl"}
BATCHES = (4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576)
DIMS = (512, 1024)
LOSSES = ("clip", "siglip")
PROVIDERS = {"clip": ("fastmi", "inf-cl", "openclip", "openclip+compile"),
             "siglip": ("fastmi", "siglip-kernel", "openclip", "openclip+compile")}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "B200": 2250.0, "A100": 312.0}
INIT_SCALE, INIT_BIAS = 1 / 0.07, -10.0
GIB = 1 << 30


def counted_flops(rows: int, cols: int, dim: int) -> float:
    """GEMM FLOPs of one forward + backward: 2 B N d forward, 3x that backward."""
    return 8.0 * rows * cols * dim


# ---- the peers ----------------------------------------------------------------------------

def _module_from_source(name: str, source: bytes, origin: str):
    module = types.ModuleType(name)
    module.__file__ = origin
    sys.modules[name] = module  # torch.compile looks a traced function's module up by name
    exec(compile(source, origin, "exec"), module.__dict__)
    return module


def load_peers(wheels: Path, device: str) -> dict:
    """{name: module, or the reason it is unavailable} for inf_cl, siglip_kernel and
    OpenCLIP's loss.py, from the wheels in ``wheels``."""
    peers = {}
    folder = Path(tempfile.mkdtemp(prefix="fastmi-peers-"))
    for name, wheel_name in PEER_WHEELS.items():
        wheel = wheels / wheel_name
        if not wheel.exists():
            peers[name] = f"{wheel} is missing (pip download --no-deps ... -d {wheels})"
            continue
        try:
            if name == "open_clip":
                peers[name] = _module_from_source("open_clip_loss", zipfile.ZipFile(wheel).read("open_clip/loss.py"),
                                                  f"{wheel}/open_clip/loss.py")
                continue
            if device != "cuda":
                peers[name] = "needs a CUDA device (it initialises CUDA when imported)"
                continue
            zipfile.ZipFile(wheel).extractall(folder / name)
            sys.path.insert(0, str(folder / name))
            peers[name] = __import__(name)
        except Exception as exc:  # a peer that does not load is reported, not fatal
            peers[name] = f"import failed: {type(exc).__name__}: {exc}"
    return peers


# ---- the steps ----------------------------------------------------------------------------

class Inputs(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    log_scale: torch.Tensor
    bias: torch.Tensor


def make_inputs(rows: int, dim: int, device: str, dtype=torch.bfloat16, seed: int = 0) -> Inputs:
    """Paired unit rows (y = x + noise, normalised), as two CLIP towers emit them."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(rows, dim, generator=g, device=device, dtype=torch.float32)
    y = x + torch.randn(rows, dim, generator=g, device=device, dtype=torch.float32)
    x, y = (F.normalize(t, dim=-1).to(dtype).requires_grad_() for t in (x, y))
    log_scale = torch.tensor(math.log(INIT_SCALE), device=device, requires_grad=True)
    bias = torch.tensor(INIT_BIAS, device=device, requires_grad=True)
    return Inputs(x, y, log_scale, bias)


def loss_fn(loss: str, provider: str, peers: dict, fastmi_backend: str) -> Callable:
    """``fn(inputs) -> loss`` of a provider (ValueError with the reason when unavailable)."""
    if provider == "fastmi":
        if loss == "clip":
            return lambda i: fastmi.critic_bound(i.x, i.y, estimator="infonce", symmetric=True,
                                                 scale=i.log_scale.exp(), backend=fastmi_backend).loss
        return lambda i: fastmi.critic_bound(i.x, i.y, estimator="siglip", scale=i.log_scale.exp(), bias=i.bias,
                                             backend=fastmi_backend).loss
    peer = {"inf-cl": "inf_cl", "siglip-kernel": "siglip_kernel"}.get(provider, "open_clip")
    module = peers.get(peer)
    if not isinstance(module, types.ModuleType):
        raise ValueError(module or f"{peer} was not loaded")
    if provider == "inf-cl":
        # scale=None: with a scale tensor its GradientGather all-reduces the scale's
        # gradient, which needs torch.distributed; scaling q first is what it does anyway
        def clip_inf_cl(i):
            scale = i.log_scale.exp()
            return (module.cal_inf_loss(scale * i.x, i.y) + module.cal_inf_loss(scale * i.y, i.x)) / 2
        return clip_inf_cl
    if provider == "siglip-kernel":
        return lambda i: module.fused_siglip_loss(i.x, i.y, i.log_scale, i.bias)
    if loss == "clip":
        criterion = module.ClipLoss()
        fn = lambda i: criterion(i.x, i.y, i.log_scale.exp())  # noqa: E731
    else:
        criterion = module.SigLipLoss()
        fn = lambda i: criterion(i.x, i.y, i.log_scale.exp(), i.bias)  # noqa: E731
    if provider == "openclip+compile":
        compiled = torch.compile(lambda x, y, s, b: fn(Inputs(x, y, s, b)), dynamic=False)
        return lambda i: compiled(*i)
    return fn


def wrt(loss: str, inputs: Inputs) -> list:
    return [inputs.x, inputs.y, inputs.log_scale] + ([inputs.bias] if loss == "siglip" else [])


def step(fn, loss: str, inputs: Inputs) -> tuple:
    """One forward + backward: (loss, gradients), by torch.autograd.grad."""
    value = fn(inputs)
    return value.detach(), torch.autograd.grad(value, wrt(loss, inputs))


# ---- measuring --------------------------------------------------------------------------------

class Clock:
    """Wall time of a closure: CUDA events on a GPU, perf_counter on the CPU (dry run)."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, body: Callable, iters: int) -> float:
        """Seconds per call of ``body``, ``iters`` calls back to back."""
        if not self.cuda:
            start = time.perf_counter()
            for _ in range(iters):
                body()
            return (time.perf_counter() - start) / iters
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            body()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / iters


def measure(fn, loss: str, inputs: Inputs, clock: Clock, *, target_seconds: float, rounds: int) -> dict:
    """Median seconds per forward + backward and the peak memory above the inputs."""
    clock.sync()
    t0 = time.perf_counter()
    step(fn, loss, inputs)          # warm-up: compiles, first-call allocations
    clock.sync()
    first = time.perf_counter() - t0
    above = None
    if clock.cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(fn, loss, inputs)
        torch.cuda.synchronize()
        above = torch.cuda.max_memory_allocated() - base
    one = clock.time(lambda: step(fn, loss, inputs), 1)
    iters = max(1, min(50, int(target_seconds / max(one, 1e-6))))
    times = [clock.time(lambda: step(fn, loss, inputs), iters) for _ in range(rounds)]
    return {"seconds": statistics.median(times), "first_call_seconds": first, "memory_above_inputs": above,
            "iters": iters, "rounds": rounds}


def compare(fn, reference_fn, loss: str, inputs: Inputs) -> dict:
    """A provider's loss and feature gradients against fastmi's on the same inputs."""
    ours_value, ours_grads = step(reference_fn, loss, inputs)
    value, grads = step(fn, loss, inputs)
    rel = lambda a, b: float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))  # noqa
    return {"loss": float(value), "fastmi_loss": float(ours_value), "loss_rel_diff": rel(value, ours_value),
            "grad_x_rel_diff": rel(grads[0], ours_grads[0]), "grad_y_rel_diff": rel(grads[1], ours_grads[1])}


# ---- the run ----------------------------------------------------------------------------------

class Point(NamedTuple):
    loss: str
    provider: str
    dim: int
    batch: int


def plan(losses, providers, dims, batches) -> list:
    """The points in run order: the targets' points first, then the sweep by (loss, d, B)."""
    everything = [Point(loss, p, d, b) for loss in losses for d in dims for b in batches for p in PROVIDERS[loss]
                  if p in providers]
    first = [Point("clip", p, 512, 32768) for p in PROVIDERS["clip"]]
    first += [Point("siglip", p, 512, 65536) for p in PROVIDERS["siglip"]]
    first += [Point(loss, "fastmi", 512, b) for b in (65536, 131072, 262144) for loss in ("clip", "siglip")]
    first = [p for p in dict.fromkeys(first) if p in everything]  # in order, once each
    return first + [p for p in everything if p not in first]


def peak_tflops(device: str, override: Optional[float]) -> Optional[float]:
    if override:
        return override
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def targets(rows: list, peak: Optional[float]) -> list:
    """The issue's targets on an H200 (bf16, d = 512, forward + backward), judged from the
    measured rows: (target, verdict PASS / FAIL / n/a, what was measured)."""
    def find(loss, provider, batch, dim=512):
        for r in rows:
            if (r["loss"], r["provider"], r["batch"], r["dim"]) == (loss, provider, batch, dim) and r.get("seconds"):
                return r
        return None

    out = []
    for loss in LOSSES:
        r = find(loss, "fastmi", 262144)
        out.append((f"{loss}: memory above the inputs at B = 262,144 under 1 GiB",) + (
            ("n/a", "not measured") if r is None or r["memory_above_inputs"] is None else
            ("PASS" if r["memory_above_inputs"] < GIB else "FAIL", f"{r['memory_above_inputs'] / GIB:.2f} GiB")))
    ours, clip = find("clip", "fastmi", 32768), find("clip", "openclip", 32768)
    out.append(("clip B = 32,768: at least 1.5x faster than OpenCLIP's ClipLoss",) + (
        ("n/a", "not measured") if ours is None or clip is None else
        ("PASS" if clip["seconds"] >= 1.5 * ours["seconds"] else "FAIL",
         f"{clip['seconds'] / ours['seconds']:.2f}x ({ours['seconds'] * 1e3:.1f} vs {clip['seconds'] * 1e3:.1f} ms)")))
    infcl = find("clip", "inf-cl", 32768)
    out.append(("clip B = 32,768: faster than Inf-CL's two calls",) + (
        ("n/a", "not measured") if ours is None or infcl is None else
        ("PASS" if infcl["seconds"] > ours["seconds"] else "FAIL",
         f"{infcl['seconds'] / ours['seconds']:.2f}x ({ours['seconds'] * 1e3:.1f} vs {infcl['seconds'] * 1e3:.1f} ms)")))
    ours, kernel = find("siglip", "fastmi", 65536), find("siglip", "siglip-kernel", 65536)
    out.append(("siglip B = 65,536: at least as fast as siglip-kernel",) + (
        ("n/a", "not measured") if ours is None or kernel is None else
        ("PASS" if kernel["seconds"] >= ours["seconds"] else "FAIL",
         f"{kernel['seconds'] / ours['seconds']:.2f}x ({ours['seconds'] * 1e3:.1f} vs {kernel['seconds'] * 1e3:.1f} ms)")))
    big = [r for r in rows if r["provider"] == "fastmi" and r["batch"] >= 65536 and r.get("seconds")]
    if not big or peak is None:
        out.append(("B >= 65,536: counted GEMM FLOPs at least 50% of the dense bf16 peak", "n/a",
                    "not measured" if not big else "unknown peak (--peak-tflops)"))
    else:
        worst = min(big, key=lambda r: r["tflops"])
        out.append(("B >= 65,536: counted GEMM FLOPs at least 50% of the dense bf16 peak",
                    "PASS" if worst["tflops"] >= 0.5 * peak else "FAIL",
                    f"lowest {worst['tflops']:.0f} TFLOP/s = {100 * worst['tflops'] / peak:.0f}% of {peak:.0f} "
                    f"({worst['loss']}, B={worst['batch']}, d={worst['dim']})"))
    return out


def markdown(env: dict, rows: list, verdicts: list, notes: list, elapsed: float) -> str:
    lines = [f"# critic_bound on {env.get('gpu', 'the CPU (dry run)')}", "",
             f"{env['date']}; torch {env['torch']}, triton {env.get('triton')}, fastmi {env.get('commit')}; "
             f"{elapsed:.0f} s. Forward + backward, bfloat16 features; memory is max_memory_allocated above "
             f"the inputs; TFLOP/s counts 8 B N d GEMM FLOPs per step"
             + (f" ({env['peak_tflops']:.0f} = dense bf16 peak)" if env.get("peak_tflops") else "") + ".", "",
             "## targets", "", "| target | verdict | measured |", "| --- | --- | --- |"]
    lines += [f"| {t} | {v} | {m} |" for t, v, m in verdicts]
    lines += ["", "## points", "", "| loss | d | B | provider | ms | MiB above inputs | TFLOP/s | status |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for r in sorted(rows, key=lambda r: (r["loss"], r["dim"], r["batch"], r["provider"])):
        ms = f"{r['seconds'] * 1e3:.2f}" if r.get("seconds") else "-"
        mem = f"{r['memory_above_inputs'] / 2**20:.0f}" if r.get("memory_above_inputs") is not None else "-"
        tf = f"{r['tflops']:.3g}" if r.get("tflops") else "-"
        lines.append(f"| {r['loss']} | {r['dim']} | {r['batch']:,} | {r['provider']} | {ms} | {mem} | {tf} | "
                     f"{r['status']} |")
    if notes:
        lines += ["", "## against fastmi (first point of each loss and d)", "",
                  "| loss | d | B | provider | loss | rel. diff loss | rel. diff grad x | rel. diff grad y |",
                  "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {n['loss_name']} | {n['dim']} | {n['batch']:,} | {n['provider']} | {n['loss']:.6g} | "
                  f"{n['loss_rel_diff']:.2e} | {n['grad_x_rel_diff']:.2e} | {n['grad_y_rel_diff']:.2e} |"
                  for n in notes]
    return "\n".join(lines) + "\n"


def environment(device: str) -> dict:
    from fastmi.bench import env as bench_env
    env = {"date": bench_env.now(), "torch": torch.__version__, "commit": bench_env.git_commit(REPO)}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    default_out = os.environ.get("OUT") or str(REPO / "benchmarks" / "results" / "critic-gpu")
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--budget", type=float, default=360.0, help="seconds; later points are skipped (default 360)")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--dims", type=int, nargs="+", default=None)
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--providers", nargs="+", default=None, help="default: every provider")
    parser.add_argument("--max-step-seconds", type=float, default=6.0,
                        help="a provider is not run at a B whose step would take longer (default 6)")
    parser.add_argument("--target-seconds", type=float, default=0.3, help="timed seconds per round (default 0.3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU, tiny sizes, fastmi's tiled backend: checks the host-side logic")
    args = parser.parse_args(argv)

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("critic_gpu: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    batches = args.batches or ((48, 96) if args.dry_run else BATCHES)
    dims = args.dims or ((32,) if args.dry_run else DIMS)
    providers = args.providers or sorted({p for loss in args.losses for p in PROVIDERS[loss]})
    fastmi_backend = "tiled" if args.dry_run else "triton"
    clock = Clock(device)
    peak = peak_tflops(device, args.peak_tflops)
    env = dict(environment(device), peak_tflops=peak, device=device, fastmi_backend=fastmi_backend)
    peers = load_peers(args.wheels, device)
    for name, peer in peers.items():
        print(f"peer {name}: {peer if isinstance(peer, str) else peer.__file__}", flush=True)

    start = time.perf_counter()
    rows, notes = [], []
    stopped: dict = {}      # (loss, provider, d) -> why larger B are not run
    compared: set = set()
    for point in plan(args.losses, providers, dims, batches):
        loss, provider, dim, batch = point
        row = dict(point._asdict(), seconds=None, memory_above_inputs=None, tflops=None, status="")
        rows.append(row)
        key = (loss, provider, dim)
        if time.perf_counter() - start > args.budget:
            row["status"] = f"skipped: time budget of {args.budget:.0f} s spent"
            continue
        previous = stopped.get(key)
        if previous and previous[0] <= batch:
            row["status"] = f"skipped: {previous[1]}"
            continue
        try:
            fn = loss_fn(loss, provider, peers, fastmi_backend)
        except ValueError as exc:
            row["status"] = f"unavailable: {exc}"
            continue
        inputs = None
        try:
            inputs = make_inputs(batch, dim, device, seed=batch + dim)
            result = measure(fn, loss, inputs, clock, target_seconds=args.target_seconds, rounds=args.rounds)
            row.update(result, status="ok", tflops=counted_flops(batch, batch, dim) / result["seconds"] / 1e12)
            predicted = result["seconds"] * 4  # the next B doubles: four times the pairs
            if predicted > args.max_step_seconds:
                stopped[key] = (2 * batch, f"a step at B={2 * batch} would take about {predicted:.0f} s")
            if provider != "fastmi" and (loss, dim) not in compared:
                compared.add((loss, dim))
                reference = loss_fn(loss, "fastmi", peers, fastmi_backend)
                notes.append(dict(compare(fn, reference, loss, inputs), loss_name=loss, provider=provider, dim=dim,
                                  batch=batch))
        except torch.OutOfMemoryError:
            row["status"] = "OOM"
            stopped[key] = (batch, f"out of memory at B={batch}")
        except Exception as exc:  # a failing provider is reported, and the run goes on
            row["status"] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
            stopped[key] = (batch, f"failed at B={batch}")
            traceback.print_exc()
        finally:
            del inputs
            if device == "cuda":
                torch.cuda.empty_cache()
        shown = (f"{row['seconds'] * 1e3:.2f} ms, {row['tflops']:.1f} TFLOP/s" if row["seconds"] else row["status"])
        print(f"[{time.perf_counter() - start:6.0f} s] {loss} {provider} d={dim} B={batch}: {shown}", flush=True)

    verdicts = targets(rows, peak)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    elapsed = time.perf_counter() - start
    text = markdown(env, rows, verdicts, notes, elapsed)
    (out / "critic_gpu.md").write_text(text)
    (out / "critic_gpu.json").write_text(json.dumps({"env": env, "rows": rows, "targets": verdicts,
                                                     "compared": notes,
                                                     "peers": {k: v if isinstance(v, str) else v.__file__
                                                               for k, v in peers.items()}}, indent=1, default=str))
    print("\n" + text)
    print(f"written: {out / 'critic_gpu.md'}, {out / 'critic_gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
