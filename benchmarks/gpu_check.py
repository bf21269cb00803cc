"""One-call GPU validation of the fused GPU backends (cuda and triton), for an H100 / H200.

    python benchmarks/gpu_check.py [--out DIR] [--quick] [--budget SECONDS]
    bash benchmarks/gpu_check.sh [DIR]          (the wrapper: install, build, run this)

Sections, each reported PASS / FAIL / SKIP with its reason; a failure never stops the
run, the summary table is always written:

  env          GPU, SMs, memory, driver, torch / triton / nvcc versions, date
  build        the CUDA extension (ninja, cached) and the triton import
  correctness  both backends against the float64 reference on the GPU (tests/helpers.py):
               several specs incl. K = 65536, fp32 / bf16 / fp16 / fp64, int32 codes,
               absent logits, Br != Bf, options; the cuda backend in each forced layout
  behaviour    no host sync (sync debug mode "error"), bitwise determinism, inputs
               untouched, invalid codes -> NaN without a fault, B x W > 2^31 (rows that
               repeat a small batch: losses equal, gradients scaled), the ticket counter
               back at 0
  graphs       capture forward + backward in one CUDA graph, replay on new data, compare
               with eager bit for bit (and a second replay)
  compile      torch.compile(fullgraph=True) of a loss + grad step, against eager
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
    """fastmi from this checkout, with tests/helpers.py; fastmi.csrc and fastmi.kernels are
    aliased to csrc/ and kernels/ when the package is not installed (pyproject maps them)."""
    for path in (REPO / "tests", REPO):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
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
from fastmi.bench.providers import capture_graph  # noqa: E402
from helpers import (CONT_ONLY, HUGE, MNIST, MULTI, RICH, TOLERANCES, WIDE, check_backend,  # noqa: E402
                     random_case, random_upstream)

BACKENDS = ("cuda", "triton")
F32, BF16, F16, F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64

# (name, spec, batch, dtype, options, random_case kwargs); quick: the first QUICK cases
CASES = [
    ("mnist", MNIST, 64, F32, {}, {}),
    ("mnist Br!=Bf", MNIST, 100_003, F32, {}, {"real_batch": 77_777}),
    ("mnist", MNIST, 65_536, BF16, {}, {}),
    ("huge-k", HUGE, 64, F32, {}, {}),
    ("rich int32", RICH, 4097, F32, {}, {"index_dtype": torch.int32}),
    ("wide", WIDE, 3000, BF16, {}, {}),
    ("rich", RICH, 1000, F16, {}, {}),
    ("rich", RICH, 1000, F64, {}, {}),
    ("rich minimax sum t=0.9", RICH, 999, F32,
     {"generator_loss": "minimax", "reduction": "sum", "real_label": 0.9, "lambda_cont": 2.0}, {}),
    ("multi", MULTI, 20_000, F32, {}, {}),
    ("huge-k many rows", HUGE, 2000, BF16, {}, {}),
    ("mnist no real", MNIST, 1000, F32, {}, {"with_real": False}),
    ("rich no fake", RICH, 1000, BF16, {}, {"with_fake": False}),
    ("continuous only", CONT_ONLY, 5000, F32, {}, {}),
]
QUICK = 6
# the cuda backend with each layout forced (infogan_cuda.h: 0 tile, 1 warp, 2 block)
LAYOUT_CASES = [
    ("tile", 0, RICH, 5000, F32), ("tile", 0, MNIST, 70_000, BF16),
    ("warp", 1, MNIST, 5000, F32), ("warp", 1, MULTI, 3000, BF16), ("warp", 1, HUGE, 300, F32),
    ("block", 2, RICH, 700, F32), ("block", 2, WIDE, 500, BF16),
]


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
        except Skip as exc:
            self.add(section, name, "SKIP", str(exc), time.perf_counter() - t0)
            return None
        except Exception as exc:  # every failure is reported, and the run goes on
            tb = traceback.format_exc(limit=4).strip().splitlines()
            self.add(section, name, "FAIL", f"{type(exc).__name__}: {str(exc).strip()[:600]} | "
                     f"{' / '.join(line.strip() for line in tb[-3:])[:400]}", time.perf_counter() - t0)
            return None
        self.add(section, name, "PASS", str(detail or ""), time.perf_counter() - t0)
        return detail


class Skip(Exception):
    pass


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


# ---- correctness and behaviour ----------------------------------------------------------------

def correctness(backend, spec, batch, dtype, options, kwargs):
    check_backend(backend, spec, batch, dtype, seed=batch % 1000, options=options, device="cuda", confident=True,
                  **kwargs)
    sync()
    return f"B={batch} W={spec.q_width} {str(dtype).split('.')[1]}"


def forced_layout(layout, spec, batch, dtype):
    from fastmi.infogan import cuda
    ext = cuda.extension()
    ext.set_override(layout, 0)
    try:
        case = random_case(spec, batch, dtype=dtype, device="cuda")
        plan = _describe(ext, case, spec)
        check_backend("cuda", spec, batch, dtype, seed=7, device="cuda", confident=True)
        sync()
    finally:
        ext.set_override(-1, 0)
    return f"B={batch} W={spec.q_width} {str(dtype).split('.')[1]}: forward plan {plan['forward']}"


def _describe(ext, case, spec):
    from fastmi.infogan.inputs import prepare_inputs
    from fastmi.infogan.problem import make_problem
    problem = make_problem(spec)
    inputs = prepare_inputs(case.real, case.fake, case.q, case.codes, problem)
    return ext.describe(*inputs, *problem.kernel_args())


def _leaves(case):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in case[:3]]


def _step(backend, spec, leaves, codes, up, **options):
    """One forward + backward; returns outputs and grads (torch.autograd.grad: no .grad
    accumulation kernels in the measurement)."""
    out = fastmi.infogan_loss(*leaves, codes, spec, backend=backend, **options)
    wrt = [t for t in leaves if t is not None]
    grads = torch.autograd.grad([out.discriminator, out.generator, out.info], wrt, up)
    return [out.discriminator, out.generator, out.info, out.stats.jsd_bound, out.stats.mi_categorical,
            out.stats.mi_bernoulli, out.stats.mi_continuous, *grads]


def _upstream():
    return random_upstream(0, device="cuda")


def no_host_sync(backend):
    case = random_case(RICH, 5000, device="cuda", confident=True)
    leaves, up = _leaves(case), _upstream()
    _step(backend, RICH, leaves, case.codes, up)  # builds, compiles, first-call allocations
    sync()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            _step(backend, RICH, leaves, case.codes, up)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    sync()
    return "forward + backward under torch.cuda.set_sync_debug_mode('error')"


def determinism_and_inputs(backend):
    case = random_case(MULTI, 300_001, device="cuda", real_batch=123_457)
    before = [t.clone() for t in (case.real, case.fake, case.q, *case.codes[:3])]
    leaves, up = _leaves(case), _upstream()
    first = _step(backend, MULTI, leaves, case.codes, up)
    second = _step(backend, MULTI, leaves, case.codes, up)
    sync()
    bad = [i for i, (a, b) in enumerate(zip(first, second)) if not torch.equal(a, b)]
    if bad:
        raise AssertionError(f"outputs {bad} differ between two identical calls")
    for leaf, src in zip(leaves, (case.real, case.fake, case.q)):
        if not torch.equal(leaf.detach(), src):
            raise AssertionError("an input was modified")
    for a, b in zip(before, (case.real, case.fake, case.q, *case.codes[:3])):
        if not torch.equal(a, b):
            raise AssertionError("an input was modified")
    return "two calls agree bit for bit; inputs untouched"


def invalid_codes(backend):
    case = random_case(RICH, 3000, device="cuda")
    cat = case.codes.categorical.clone()
    cat[10, 1] = 7
    cat[2999, 0] = -(2**40)
    codes = case.codes._replace(categorical=cat)
    leaves, up = _leaves(case), _upstream()
    out = _step(backend, RICH, leaves, codes, up)
    sync()  # a fault would surface here
    if not (torch.isnan(out[0]) and torch.isnan(out[1]) and torch.isnan(out[2])):
        raise AssertionError(f"losses should be NaN, got {out[:3]}")
    grad_q = out[-1]  # NaN somewhere in the bad code's block (cuda: all of it), other rows finite
    if not (torch.isnan(grad_q[10, 3:10]).any() and torch.isfinite(grad_q[11:2999]).all()):
        raise AssertionError("the invalid code's gradient block should hold NaN and the other rows be finite")
    _step(backend, RICH, _leaves(case), case.codes, up)  # the device is still healthy
    sync()
    return "NaN losses and NaN gradient block; no fault"


def large_offsets(backend):
    """B x W > 2^31 elements: a batch of n rows repeated; with mean reduction the losses
    equal the small batch's and each gradient row is the small one's times n / B."""
    n, reps = 1000, 160_000                 # B = 160,000,000 rows x W = 14 = 2.24e9 elements
    spec, dtype = MNIST, torch.bfloat16
    small = random_case(spec, n, dtype=dtype, device="cuda", seed=4, index_dtype=torch.int32)
    up = _upstream()
    want = _step(backend, spec, _leaves(small), small.codes, up)
    big_codes = small.codes._replace(categorical=small.codes.categorical.repeat(reps, 1),
                                     continuous=small.codes.continuous.repeat(reps, 1))
    big = small._replace(real=small.real.repeat(reps), fake=small.fake.repeat(reps), q=small.q.repeat(reps, 1),
                         codes=big_codes)
    assert big.q.numel() > 2**31
    got = _step(backend, spec, _leaves(big), big.codes, up)
    sync()
    for i, name in enumerate(("discriminator", "generator", "info")):
        torch.testing.assert_close(got[i], want[i], rtol=2e-3, atol=2e-3, msg=lambda m: f"{name}: {m}")
    scale = n / (n * reps)
    for name, g_big, g_small in (("grad_q", got[-1], want[-1]), ("grad_fake", got[-2], want[-2])):
        expected = g_small.float() * scale  # the last n rows hold the small batch again
        torch.testing.assert_close(g_big[-n:].float(), expected, rtol=2e-2, atol=1e-2 * expected.abs().max().item(),
                                   msg=lambda m: f"{name}'s last rows: {m}")
    del big, got
    torch.cuda.empty_cache()
    return f"B={n * reps:,} x W=14 = {n * reps * 14:,} elements (bf16)"


def ticket_counter():
    from fastmi.infogan import cuda
    sync()  # the read-back is a plain cudaMemcpyFromSymbol: every launch must be done
    total = cuda.extension().ticket_total()
    if total != 0:
        raise AssertionError(f"ticket counters sum to {total} after the runs; expected 0")
    return "every forward's last block reset its ticket"


# ---- graphs and compile -----------------------------------------------------------------------

def cuda_graph(backend, spec, batch, dtype):
    case = random_case(spec, batch, dtype=dtype, device="cuda", seed=1, confident=True)
    leaves, up = _leaves(case), _upstream()
    codes = case.codes

    def step():
        return _step(backend, spec, leaves, codes, up)

    graph, captured = capture_graph(step)
    new = random_case(spec, batch, dtype=dtype, device="cuda", seed=2, confident=True)
    with torch.no_grad():
        for leaf, src in zip(leaves, new[:3]):
            if leaf is not None:
                leaf.copy_(src)
        for dst, src in zip(codes[:3], new.codes[:3]):
            if dst is not None:
                dst.copy_(src)
    graph.replay()
    sync()
    replay1 = [t.clone() for t in captured]
    eager = step()
    graph.replay()
    sync()
    for i, (a, b, c) in enumerate(zip(replay1, eager, captured)):
        if not torch.equal(a, b):
            diff = (a.double() - b.double()).abs().nan_to_num(0).max().item()
            raise AssertionError(f"output {i}: graph replay != eager on the same data (max |diff| {diff:.3g})")
        if not torch.equal(a, c):
            raise AssertionError(f"output {i}: a second replay differs from the first")
    return f"B={batch} {str(dtype).split('.')[1]}: replay == eager, bit for bit, twice"


def compiled(backend, spec, batch, dtype):
    case = random_case(spec, batch, dtype=dtype, device="cuda", seed=3, confident=True)
    up = _upstream()

    def loss(real, fake, q):
        out = fastmi.infogan_loss(real, fake, q, case.codes, spec, backend=backend)
        return out.discriminator, out.generator, out.info, out.stats.jsd_bound, out.stats.mi_categorical

    fn = torch.compile(loss, fullgraph=True, dynamic=False)
    results = []
    for f in (loss, fn):
        leaves = _leaves(case)
        outs = f(*leaves)
        grads = torch.autograd.grad(outs[:3], leaves, up)
        results.append([*outs, *grads])
    sync()
    for i, (a, b) in enumerate(zip(*results)):
        torch.testing.assert_close(b, a, rtol=TOLERANCES[dtype][0], atol=TOLERANCES[dtype][1],
                                   msg=lambda m: f"output {i}: compiled vs eager: {m}")
    return f"B={batch} {str(dtype).split('.')[1]}: fullgraph, matches eager"


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
    if len(fk) != 1 or len(bk) != 1 or fo or bo:
        raise AssertionError(f"expected one kernel each way and nothing else: {text}; {detail['forward_names']} / "
                             f"{detail['backward_names']}")
    return text


def step_bytes(batch: int, spec=MNIST, dtype=torch.float32, index_bytes: int = 8) -> int:
    """Bytes of one forward + backward, each input read once per pass, grads written once."""
    s = torch.tensor([], dtype=dtype).element_size()
    acc = 8 if dtype == torch.float64 else 4
    inputs = batch * (s + s + spec.q_width * s + len(spec.categorical) * index_bytes
                      + (spec.bernoulli + spec.continuous) * acc)
    grads = batch * (s + s + spec.q_width * s)
    return 2 * inputs + grads


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
    case = random_case(MNIST, batch, device="cuda", seed=9)
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
    gbs = step_bytes(batch) / (ms * 1e-3) / 1e9
    REPORT.data.setdefault("timing", []).append({"provider": provider, "batch": batch, "ms": ms, "gb_per_s": gbs})
    return f"B={batch}: {ms * 1e3:.1f} us per forward+backward, {gbs:.0f} GB/s counted"


def copy_bandwidth():
    n = 1 << 28  # 1 GiB of float32
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = _time(lambda: dst.copy_(src), iters=20)
    gbs = 2 * n * 4 / (ms * 1e-3) / 1e9
    REPORT.data["copy_gb_per_s"] = gbs
    del src, dst
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
        raise Skip("no timings to build it from")
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
    parser.add_argument("--quick", action="store_true", help=f"only the first {QUICK} correctness cases")
    parser.add_argument("--budget", type=float, default=290.0,
                        help="seconds after which the remaining checks are skipped (default 290)")
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
            REPORT.add("correctness", b, "SKIP", "the backend is unavailable (see build)")

    for backend in backends:
        for name, spec, batch, dtype, options, kwargs in CASES[:QUICK] if args.quick else CASES:
            REPORT.run("correctness", f"{backend} {name}", correctness, backend, spec, batch, dtype, options, kwargs)
    if "cuda" in backends:
        for name, layout, spec, batch, dtype in LAYOUT_CASES[: 3 if args.quick else None]:
            REPORT.run("correctness", f"cuda forced {name} layout", forced_layout, layout, spec, batch, dtype)

    for backend in backends:
        REPORT.run("behaviour", f"{backend} no host sync", no_host_sync, backend)
        REPORT.run("behaviour", f"{backend} determinism, inputs untouched", determinism_and_inputs, backend)
        REPORT.run("behaviour", f"{backend} invalid codes", invalid_codes, backend)
        REPORT.run("behaviour", f"{backend} B x W > 2^31", large_offsets, backend)
    if "cuda" in backends:
        REPORT.run("behaviour", "cuda ticket counter", ticket_counter)

    for backend in backends:
        REPORT.run("graphs", f"{backend} MNIST", cuda_graph, backend, MNIST, 100_000, F32)
        REPORT.run("graphs", f"{backend} rich bf16", cuda_graph, backend, RICH, 3000, BF16)

    for backend in backends:
        for batch in (64, 1 << 20):
            REPORT.run("launches", f"{backend}", launches, backend, batch)

    REPORT.budget += 60.0  # the timings are the point of the run: they get a minute more
    REPORT.run("timing", "device-to-device copy", copy_bandwidth)
    for batch in (64, 1 << 20):
        for provider in (*backends, "eager reference"):
            REPORT.run("timing", provider, timing, provider, batch)
    REPORT.run("auto rule", "MEASURED entry", rule_entry)
    if "cuda" in backends:
        REPORT.run("behaviour", "cuda ticket counter after everything", ticket_counter)

    # last: each inductor compilation costs tens of seconds
    for backend in backends:
        REPORT.run("compile", f"{backend} MNIST", compiled, backend, MNIST, 4096, F32)
    for batch in (64, 1 << 20):
        REPORT.run("timing", "compile(reference)", timing, "compile(reference)", batch)

    write_outputs(out_dir)
    return 1 if any(r["status"] == "FAIL" for r in REPORT.sections) else 0


REPORT = Report(0)

if __name__ == "__main__":
    sys.exit(main())
