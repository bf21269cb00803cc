"""One-call GPU validation and timing of the fused GPU backends (cuda and triton), for an
H100 / H200.

    python benchmarks/gpu_check.py [--out DIR] [--quick] [--budget SECONDS]
    bash benchmarks/gpu_check.sh [DIR]          (the wrapper: install, build, run this)

Sections, each reported PASS / FAIL / SKIP with its reason; a failure never stops the
run, the summary table is always written:

  env          GPU, SMs, memory, driver, torch / triton / nvcc versions, date
  build        the CUDA extension (ninja, cached) and the triton import
  checks       every GPU check of fastmi/infogan/checks.py and fastmi/critic/checks.py,
               the same code that ``python -m fastmi.validate`` and tests/test_gpu_checks.py
               run (the float64 oracle matrices and forced layouts, no host sync,
               determinism, invalid codes and zero rows, two streams and two graphs at
               once, graph replay, torch.compile, B x W > 2^31, critic_bound's O(B d)
               memory); when all pass, the validation record is written, as
               ``fastmi.validate`` does
  launches     kernels per forward and per backward (torch.profiler)
  timing       forward + backward of the MNIST spec (Cat(10) + 2 continuous, float32) at
               B = 64 and B = 1,048,576 for triton, cuda, eager reference and
               torch.compile(reference); a device-to-device copy's bandwidth; achieved
               GB/s = (inputs read once by the forward + inputs read once and gradients
               written once by the backward) / step time
  auto rule    the MEASURED entry for fastmi/runtime/gpu_rule.py from those timings

Writes gpu_check.md (the table) and gpu_check.json (everything) to --out (default: $OUT
when set, as on the device machine, else benchmarks/results/). Exit status: 0 when every
section passed, 1 when one failed, 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ensure_importable():
    """fastmi from this checkout; fastmi.csrc and fastmi.kernels are aliased to csrc/ and
    kernels/ when the package is not installed (pyproject maps them)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import fastmi

    for name in ("csrc", "kernels"):
        try:
            importlib.import_module(f"fastmi.{name}")
        except ImportError:
            spec = importlib.util.spec_from_file_location(f"fastmi.{name}", REPO / name / "__init__.py",
                                                          submodule_search_locations=[str(REPO / name)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[f"fastmi.{name}"] = module
            spec.loader.exec_module(module)
            setattr(fastmi, name, module)


ensure_importable()

import torch  # noqa: E402

import fastmi  # noqa: E402
from fastmi.bench import env as bench_env  # noqa: E402
from fastmi.bench import workloads as W  # noqa: E402
from fastmi.infogan.testing import MNIST, random_case, random_upstream  # noqa: E402
from fastmi.runtime import validation  # noqa: E402
from fastmi.validate import all_checks  # noqa: E402

BACKENDS = ("cuda", "triton")


def _leaves(case):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in case[:3]]


def _upstream():
    return random_upstream(0, device="cuda")


def _step(backend, spec, leaves, codes, up):
    """One forward + backward through the public API (torch.autograd.grad: no .grad
    accumulation kernels in the measurement)."""
    out = fastmi.infogan_loss(*leaves, codes, spec, backend=backend)
    torch.autograd.grad([out.discriminator, out.generator, out.info], [t for t in leaves if t is not None], up)


class Report:
    """Section results, printed as they come and kept for the summary."""

    def __init__(self, budget: float):
        self.sections = []
        self.data = {}
        self.start = time.perf_counter()
        self.budget = budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self) -> bool:
        return self.elapsed() > self.budget

    def add(self, section: str, name: str, status: str, detail: str = "", seconds: float = 0.0):
        self.sections.append({"section": section, "check": name, "status": status, "detail": detail,
                              "seconds": round(seconds, 2)})
        print(f"[{status:4s}] {section:11s} {name}: {detail} ({seconds:.1f} s)", flush=True)

    def run(self, section: str, name: str, fn, *args, **kwargs):
        """Runs one check: PASS with fn's return value as detail, FAIL with the exception."""
        if self.over_budget():
            self.add(section, name, "SKIP", f"time budget of {self.budget:.0f} s spent")
            return None
        t0 = time.perf_counter()
        try:
            detail = fn(*args, **kwargs)
        except validation.Skip as exc:
            self.add(section, name, "SKIP", str(exc), time.perf_counter() - t0)
            return None
        except Exception as exc:  # every failure is reported, and the run goes on
            tb = traceback.format_exc(limit=4).strip().splitlines()
            self.add(section, name, "FAIL", f"{type(exc).__name__}: {str(exc).strip()[:600]} | "
                     f"{' / '.join(line.strip() for line in tb[-3:])[:400]}", time.perf_counter() - t0)
            return None
        self.add(section, name, "PASS", str(detail or ""), time.perf_counter() - t0)
        return detail


def sync():
    torch.cuda.synchronize()


# ---- env and build ----------------------------------------------------------------------------

def environment() -> dict:
    return {"date": bench_env.now(), **bench_env.versions(), "torch_cuda": torch.version.cuda,
            "fastmi_commit": bench_env.git_commit(REPO), "nvcc": bench_env.nvcc_version(), **bench_env.gpu()}


def build_cuda():
    from fastmi.infogan import cuda
    t0 = time.perf_counter()
    ext = cuda.extension()
    return f"{ext.__file__} (ready in {time.perf_counter() - t0:.1f} s)"


def build_triton():
    from fastmi.infogan.backends import REGISTRY
    reason = REGISTRY.unavailable_reason("triton", "cuda")
    if reason is not None:
        raise RuntimeError(reason)
    import triton
    return f"triton {triton.__version__}"


# ---- launches, timing, bandwidth ------------------------------------------------------------

def _gpu_events(fn):
    from torch.profiler import ProfilerActivity, profile
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = [e for e in events if not e.name.lower().startswith(("memcpy", "memset"))]
    return kernels, [e for e in events if e not in kernels]


def launches(backend, batch):
    case = random_case(MNIST, batch, device="cuda")
    leaves, up = _leaves(case), _upstream()
    for _ in range(2):
        _step(backend, MNIST, leaves, case.codes, up)
    holder = {}

    def forward():
        holder["out"] = fastmi.infogan_loss(*leaves, case.codes, MNIST, backend=backend)

    def backward():
        out = holder["out"]
        torch.autograd.grad([out.discriminator, out.generator, out.info], leaves, up)

    fk, fo = _gpu_events(forward)
    bk, bo = _gpu_events(backward)
    detail = {"forward_kernels": len(fk), "backward_kernels": len(bk), "forward_other": len(fo),
              "backward_other": len(bo), "forward_us": sum(e.device_time_total for e in fk),
              "backward_us": sum(e.device_time_total for e in bk), "forward_names": sorted({e.name[:60] for e in fk}),
              "backward_names": sorted({e.name[:60] for e in bk})}
    REPORT.data.setdefault("launches", {})[f"{backend} B={batch}"] = detail
    text = (f"B={batch}: forward {len(fk)} kernel(s) {detail['forward_us']:.1f} us, backward {len(bk)} kernel(s) "
            f"{detail['backward_us']:.1f} us; memcpy/memset {len(fo)}/{len(bo)}")
    # the forward is one launch, or two (partial sums, then their finalize) when the batch
    # needs several blocks / programs; the backward one
    forward_launches = 1 if batch <= 64 else 2
    if len(fk) != forward_launches or len(bk) != 1 or fo or bo:
        raise AssertionError(f"expected {forward_launches} forward kernel(s), one backward and nothing else: {text}; "
                             f"{detail['forward_names']} / {detail['backward_names']}")
    return text


def _time(step, iters: int, rounds: int = 5) -> float:
    """Median over rounds of the mean ms per step (CUDA events around `iters` steps)."""
    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def timing(provider, batch):
    work = W.Workload("mnist", batch, "float32", "cuda")
    case = W.make_inputs(work, seed=9)
    leaves, up = _leaves(case), _upstream()
    if provider == "compile(reference)":
        def loss(real, fake, q):
            out = fastmi.infogan_loss(real, fake, q, case.codes, MNIST, backend="reference")
            return out.discriminator, out.generator, out.info

        fn = torch.compile(loss, fullgraph=True, dynamic=False)

        def step():
            outs = fn(*leaves)
            torch.autograd.grad(outs, leaves, up)
    else:
        backend = "reference" if provider == "eager reference" else provider

        def step():
            _step(backend, MNIST, leaves, case.codes, up)
    ms = _time(step, iters=200 if batch <= 4096 else 50)
    gbs = W.io_bytes(case, MNIST)["fwd_bwd"] / (ms * 1e-3) / 1e9  # the suite's byte count
    REPORT.data.setdefault("timing", []).append({"provider": provider, "batch": batch, "ms": ms, "gb_per_s": gbs})
    return f"B={batch}: {ms * 1e3:.1f} us per forward+backward, {gbs:.0f} GB/s counted"


def copy_bandwidth():
    n = 1 << 28  # 1 GiB of float32
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = _time(lambda: dst.copy_(src), iters=20)
    gbs = 2 * n * 4 / (ms * 1e-3) / 1e9
    REPORT.data["copy_gb_per_s"] = gbs
    src = dst = None  # free the 2 GiB before empty_cache
    torch.cuda.empty_cache()
    return f"{gbs:.0f} GB/s (read + write of 1 GiB, {ms:.3f} ms)"


def rule_entry():
    rows = REPORT.data.get("timing", [])
    points = []
    for batch in sorted({r["batch"] for r in rows}):
        ms = {}
        for r in rows:
            if r["batch"] == batch and r["provider"] in ("triton", "cuda", "eager reference"):
                ms["reference" if r["provider"] == "eager reference" else r["provider"]] = round(r["ms"], 4)
        if ms:
            points.append({"batch": batch, "width": MNIST.q_width, "dtype": "float32", "ms": ms})
    if not points:
        raise validation.Skip("no timings to build it from")
    name = torch.cuda.get_device_name(0)
    REPORT.data["rule_entry"] = {name: points}
    from fastmi.runtime.gpu_rule import ranking
    return f"MEASURED[{name!r}] = {json.dumps(points)}  -> auto picks in order {ranking(points)}"


# ---- the run ------------------------------------------------------------------------------------

def write_outputs(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    env = REPORT.data.get("env", {})
    counts = {s: sum(1 for r in REPORT.sections if r["status"] == s) for s in ("PASS", "FAIL", "SKIP")}
    lines = [f"# fastmi GPU check: {env.get('gpu', 'no GPU')}", "",
             f"{env.get('date', '')}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
             f"triton {env.get('triton')}, {env.get('nvcc')}, driver {env.get('driver', '?')}, "
             f"fastmi {env.get('fastmi_commit')}, {REPORT.elapsed():.0f} s", "",
             f"**{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped**", "",
             "| section | check | status | detail |", "| --- | --- | --- | --- |"]
    for r in REPORT.sections:
        detail = r["detail"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['section']} | {r['check']} | {r['status']} | {detail[:300]} |")
    rows = REPORT.data.get("timing", [])
    if rows:
        copy = REPORT.data.get("copy_gb_per_s")
        lines += ["", "## forward + backward, MNIST spec (Cat(10) + 2 continuous), float32", "",
                  f"device-to-device copy: {copy:.0f} GB/s" if copy else "device-to-device copy: not measured", "",
                  "| provider | B | us / step | GB/s counted | % of copy |", "| --- | --- | --- | --- | --- |"]
        for r in rows:
            pct = f"{100 * r['gb_per_s'] / copy:.0f}%" if copy else "-"
            lines.append(f"| {r['provider']} | {r['batch']:,} | {r['ms'] * 1e3:.1f} | {r['gb_per_s']:.0f} | {pct} |")
    if REPORT.data.get("rule_entry"):
        lines += ["", "## entry for fastmi/runtime/gpu_rule.py MEASURED['infogan']", "", "```python"]
        for name, points in REPORT.data["rule_entry"].items():
            lines.append(f"MEASURED[{name!r}] = {json.dumps(points, indent=4)}")
        lines.append("```")
    text = "\n".join(lines) + "\n"
    (out_dir / "gpu_check.md").write_text(text)
    (out_dir / "gpu_check.json").write_text(json.dumps({"sections": REPORT.sections, **REPORT.data}, indent=2,
                                                       default=str))
    print("\n" + text)
    print(f"written: {out_dir / 'gpu_check.md'}, {out_dir / 'gpu_check.json'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    default_out = os.environ.get("FASTMI_RESULTS_DIR") or os.environ.get("OUT") or str(REPO / "benchmarks" / "results")
    parser.add_argument("--out", default=default_out, help=f"output folder (default: {default_out})")
    parser.add_argument("--quick", action="store_true",
                        help="the quick checks of python -m fastmi.validate instead of the standard set and B x W > 2^31")
    parser.add_argument("--budget", type=float, default=290.0,
                        help="seconds after which the remaining checks are skipped (default 290; the timings "
                             "get a minute more)")
    args = parser.parse_args(argv)
    global REPORT
    REPORT = Report(args.budget)
    out_dir = Path(args.out)

    env = environment()
    REPORT.data["env"] = env
    if not torch.cuda.is_available():
        reason = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                  else "torch.cuda.is_available() is False")
        REPORT.add("env", "CUDA device", "FAIL", f"no CUDA device: {reason}")
        write_outputs(out_dir)
        return 2
    REPORT.add("env", "CUDA device", "PASS", f"{env['gpu']} (sm_{env['capability'].replace('.', '')}, "
               f"{env['sms']} SMs, {env['memory_gib']} GiB); torch {env['torch']}, triton {env['triton']}, "
               f"{env['nvcc']}")

    ready = {b: REPORT.run("build", b, f) is not None for b, f in (("cuda", build_cuda), ("triton", build_triton))}
    backends = [b for b in BACKENDS if ready[b]]
    for b in BACKENDS:
        if not ready[b]:
            REPORT.add("checks", b, "SKIP", "the backend is unavailable (see build)")

    # the GPU checks: the code python -m fastmi.validate runs (fastmi/infogan/checks.py,
    # fastmi/critic/checks.py: each op takes its own fused GPU backends of these)
    identity = validation.gpu_identity()
    outcomes = validation.run_checks(
        all_checks(backends, "cuda", quick=args.quick, full=not args.quick), budget=args.budget,
        report=lambda o: REPORT.add("checks", o.name, o.status, o.detail, o.seconds))
    if backends and all(o.status != "FAIL" for o in outcomes):
        REPORT.data["validation_record"] = str(validation.write_record(identity, outcomes))

    for backend in backends:
        for batch in (64, 1 << 20):
            REPORT.run("launches", f"{backend}", launches, backend, batch)

    REPORT.budget += 60.0  # the timings are the point of the run: they get a minute more
    REPORT.run("timing", "device-to-device copy", copy_bandwidth)
    for batch in (64, 1 << 20):
        for provider in (*backends, "eager reference"):
            REPORT.run("timing", provider, timing, provider, batch)
    REPORT.run("auto rule", "MEASURED entry", rule_entry)
    # last: each inductor compilation costs tens of seconds
    for batch in (64, 1 << 20):
        REPORT.run("timing", "compile(reference)", timing, "compile(reference)", batch)

    write_outputs(out_dir)
    return 1 if any(r["status"] == "FAIL" for r in REPORT.sections) else 0


REPORT = Report(0)

if __name__ == "__main__":
    sys.exit(main())
