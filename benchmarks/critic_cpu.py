"""critic_bound's CPU targets (issue 13, "Benchmarks"), measured side by side in one run and
written as a report: symmetric InfoNCE (CLIP's loss), float32, forward + backward, 2 threads.

    python benchmarks/critic_cpu.py [--out benchmarks/results/critic] [--threads 2] [--quick]

    (a) B = 4,096, d = 256: fastmi faster than the reference and than torch.compile of it
    (b) B = 16,384, d = 128: fastmi's peak memory above the inputs <= 1/20 of the reference's
    (c) B = 65,536, d = 128: fastmi runs (the reference's matrix alone is 16 GiB): time per
        step and peak memory

Every point is one child process (fastmi/bench/critic.py: warm-up, then the timed steps;
peak memory = VmHWM - VmRSS around them, gradients included). OpenCLIP's ClipLoss rides
along where its wheel is in .whl/. Writes cpu_bench.md and cpu_bench.json to --out; the
counted GEMM FLOPs (8 B N d per step) are set against this machine's peak: the
theoretical one at the nominal clock (cores x clock x 32 float32 FLOPs per cycle:
AVX-512 on Zen 4, one 512-bit FMA per cycle) and torch.mm's, measured in the same run on
1 and on --threads threads (when the second is no faster, another process held a core,
and the report says so). ``--quick``: tiny sizes, to check
the script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from fastmi.bench import critic as C  # noqa: E402
from fastmi.bench.env import cpu_model, git_commit, versions  # noqa: E402

MIB, GIB = 1 << 20, 1 << 30
FLOPS_PER_CYCLE = 32  # float32, per core: one 512-bit (or two 256-bit) FMA per cycle on Zen 4


def points(quick: bool) -> list:
    """(target, rows, dim, provider, steps, warmup_rows)."""
    if quick:
        return [("a", 256, 32, p, 2, 0) for p in C.PROVIDERS] + [("b", 512, 16, p, 1, 0) for p in
                                                                 ("fastmi", "reference")] + [("c", 1024, 16,
                                                                                              "fastmi", 1, 64)]
    return ([("a", 4096, 256, p, 5, 0) for p in C.PROVIDERS]
            + [("b", 16384, 128, "fastmi", 3, 0), ("b", 16384, 128, "reference", 2, 0),
               ("b", 16384, 128, "openclip", 2, 0), ("b", 16384, 128, "compile", 2, 0)]
            + [("c", 65536, 128, "fastmi", 2, 1024), ("c", 65536, 128, "reference", 0, 0)])


def clock_ghz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return float("nan")


def measured_sgemm_gflops(threads: int, n: int = 4096) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(C.timed(lambda: torch.mm(a, b)) for _ in range(3))
    return 2 * n ** 3 / best / 1e9


def load_average() -> str:
    """/proc/loadavg's 1, 5 and 15 minute averages: the machine is shared."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def contention_note(env: dict) -> list:
    if env["threads"] > 1 and env["sgemm_gflops"] < 1.3 * env["sgemm_1_gflops"]:
        return [f"**The machine was shared during this run**: torch.mm on {env['threads']} threads was not faster "
                f"than on 1 ({env['sgemm_gflops']:.0f} vs {env['sgemm_1_gflops']:.0f} GFLOP/s), so another "
                "process held the other core, and every provider here ran on about one core's worth of time. "
                "The comparisons stand (the points of a target run back to back under the same load); the "
                "absolute times are about what one core gives.", ""]
    return []


def fmt_mib(value) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def verdicts(rows: list) -> list:
    def get(target, provider):
        return next((r for r in rows if r["target"] == target and r["provider"] == provider and "error" not in r
                     and not r.get("skipped")), None)
    out = []
    f, ref, comp = get("a", "fastmi"), get("a", "reference"), get("a", "compile")
    if f and ref and comp:
        ok = f["seconds"] < ref["seconds"] and f["seconds"] < comp["seconds"]
        out.append(("(a) B=4,096 d=256: faster than the reference and torch.compile", "PASS" if ok else "FAIL",
                    f"{f['seconds'] * 1e3:,.0f} ms vs {ref['seconds'] * 1e3:,.0f} ms (x{ref['seconds'] / f['seconds']:.2f})"
                    f" and {comp['seconds'] * 1e3:,.0f} ms (x{comp['seconds'] / f['seconds']:.2f})"))
    f, ref = get("b", "fastmi"), get("b", "reference")
    if f and ref and f["peak_above_inputs"] is not None and ref["peak_above_inputs"]:
        ratio = f["peak_above_inputs"] / ref["peak_above_inputs"]
        out.append(("(b) B=16,384 d=128: peak above inputs <= 1/20 of the reference's",
                    "PASS" if ratio <= 1 / 20 else "FAIL",
                    f"{fmt_mib(f['peak_above_inputs'])} MiB vs {fmt_mib(ref['peak_above_inputs'])} MiB " +
                    (f"(1/{1 / ratio:,.0f})" if ratio > 0 else "(none measurable)")))
    f = get("c", "fastmi")
    if f:
        out.append(("(c) B=65,536 d=128: runs", "PASS" if f["finite"] else "FAIL",
                    f"{f['seconds']:.1f} s per step, {fmt_mib(f['peak_above_inputs'])} MiB above the inputs "
                    f"({fmt_mib(f['inputs_bytes'])} MiB)"))
    return out


def markdown(env: dict, rows: list, elapsed: float, command: str) -> str:
    lines = [
        "# critic_bound on the CPU: the issue's targets, one run", "",
        f"`{command}` ({env['date']}, {elapsed / 60:.0f} min). CLIP's loss: "
        "`critic_bound(x, y, estimator=\"infonce\", symmetric=True, scale=log_scale.exp())`, "
        "forward + backward (gradients of x, y and the log scale), float32, L2-normalised rows, "
        f"{env['threads']} threads, OMP_WAIT_POLICY={env['omp_wait_policy']}.", "",
        f"Machine: {env['cpu']}, {env['cores']} cores at {env['clock_ghz']:.2f} GHz, 24 GiB; "
        f"torch {env['torch']}, fastmi {env['fastmi']} ({env['commit']}), Python {env['python']}, "
        f"OpenCLIP {env['openclip']}. Load average (1, 5, 15 min) at the start {env['load_start']}, at the "
        f"end {env['load_end']}: the machine's 2 cores are shared with other sessions' processes, which "
        "slow every provider of a run alike but not evenly; the points of a target run back to back.", "",
        f"GEMM peak: {env['peak_gflops']:.0f} GFLOP/s theoretical at the nominal clock ({env['cores']} cores x "
        f"{env['clock_ghz']:.2f} GHz x {FLOPS_PER_CYCLE} float32 FLOP/cycle); measured in this run, torch.mm "
        f"4,096^3: {env['sgemm_gflops']:.0f} GFLOP/s on {env['threads']} threads, {env['sgemm_1_gflops']:.0f} on 1 "
        f"(one core above its nominal {env['peak_gflops'] / env['cores']:.0f}: the cores boost). "
        "Counted FLOPs per step: 2 B N d forward + 6 B N d backward (recompute, dx, dy) = 8 B N d, N = B; "
        "the reference, OpenCLIP and torch.compile store the scores and do 6 B N d.", "",
        *contention_note(env),
        "| target | verdict | measured |", "| --- | --- | --- |"]
    lines += [f"| {a} | **{b}** | {c} |" for a, b, c in verdicts(rows)]
    lines += ["", "| point | provider | B | d | time / step | steps | peak above inputs (MiB) | inputs (MiB) "
                  "| counted GFLOP/s | % of sgemm | % of peak | note |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        flops = C.counted_flops(r["rows"], r["rows"], r["dim"])
        if r.get("skipped") or "error" in r:
            lines.append(f"| ({r['target']}) | {r['provider']} | {r['rows']:,} | {r['dim']} | - | - | - | - | - | - | - "
                         f"| {r.get('skipped') or r['error']} |")
            continue
        gflops = flops / r["seconds"] / 1e9
        lines.append(f"| ({r['target']}) | {r['provider']} | {r['rows']:,} | {r['dim']} | "
                     f"{r['seconds'] * 1e3:,.0f} ms | {len(r['times'])} | {fmt_mib(r['peak_above_inputs'])} | "
                     f"{fmt_mib(r['inputs_bytes'])} | {gflops:.0f} | {100 * gflops / env['sgemm_gflops']:.0f}% | "
                     f"{100 * gflops / env['peak_gflops']:.0f}% | "
                     f"warm-up {r['warmup_s']:.1f} s |")
    lines += ["", "Time per step: the median of the timed steps after a warm-up (the warm-up includes the "
              "native build's load and torch.compile's compilation; fastmi at B = 65,536 warms up at B = 1,024). "
              "Peak above inputs: the child process's resident-set high-water mark during a timed step "
              "(reset before it) minus its resident set before it, the largest over the steps; gradients and every temporary "
              "count, glibc returns every buffer of 64 KiB or more to the kernel on free "
              "(MALLOC_MMAP_THRESHOLD_=65536), fastmi's gradient pool is emptied first.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "critic"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    started = time.time()
    openclip = C.load_openclip()
    env = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": os.cpu_count(),
           "clock_ghz": clock_ghz(), "threads": args.threads, "commit": git_commit(REPO),
           "omp_wait_policy": C.child_env()["OMP_WAIT_POLICY"], "platform": platform.platform(),
           "openclip": C.OPENCLIP_VERSION if not isinstance(openclip, str) else "missing", **versions()}
    env["load_start"] = load_average()
    env["peak_gflops"] = env["cores"] * env["clock_ghz"] * FLOPS_PER_CYCLE
    env["sgemm_1_gflops"] = measured_sgemm_gflops(1)
    env["sgemm_gflops"] = measured_sgemm_gflops(args.threads)
    print(f"sgemm: {env['sgemm_gflops']:.0f} GFLOP/s measured, {env['peak_gflops']:.0f} theoretical", flush=True)
    rows = []
    for target, n, dim, provider, steps, warm in points(args.quick):
        spec = dict(target=target, loss="clip", provider=provider, rows=n, dim=dim, dtype="float32",
                    threads=args.threads, steps=steps, warmup_rows=warm)
        reason = C.skip_reason(provider, n) or (openclip if provider == "openclip" and isinstance(openclip, str)
                                                else None)
        row = {**spec, "skipped": reason} if reason else C.measure_in_child(spec, timeout_s=1800)
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("target", "provider", "rows", "dim", "seconds",
                                                  "peak_above_inputs", "skipped", "error")}), flush=True)
    env["load_end"] = load_average()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/critic_cpu.py" + (" --quick" if args.quick else "")
    name = "cpu_bench_quick" if args.quick else "cpu_bench"
    (out / f"{name}.md").write_text(markdown(env, rows, time.time() - started, command))
    (out / f"{name}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out / name}.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
