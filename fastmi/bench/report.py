"""Tables and plots from pytest-benchmark JSON files of the fastmi suites.

    python -m fastmi.bench report RESULTS.json [MORE.json ...] --out DIR [--no-plots]

Reads one or more ``--benchmark-json`` files of ``pytest benchmarks/`` (several runs of
parts of the suite merge; a later file's result replaces an earlier one of the same
test) and writes to DIR:

    report.md                 every operation and dtype: the median time of each provider,
                              each fused provider's speedup x eager and x compile, and its
                              achieved GB/s; the training-step table; the machine
    summary.md                the README's table: forward + backward, float32, with the
                              machine, the date and the command that reproduces it
    results.json              the merged results without the per-round samples
    time_<op>_<dtype>.png     median time against batch size, one panel per spec, one line
                              per provider
    gbps_<op>_<dtype>.png     achieved GB/s against batch size, with the bandwidth of a
                              device memory copy measured in the same run as a line

Speedups: "x eager" is the eager reference's median over the provider's, "x compile"
the faster torch.compile mode's median over the provider's; a CUDA-graph provider is
compared with the eager reference and torch.compile replayed in a CUDA graph too. GB/s
counts the bytes of the contract (inputs read once by the forward; inputs read once and
gradients written once by the backward) over the median time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

from .workloads import OP_LABELS, SPEC_LABELS, SPECS

BASELINES = ("eager", "compile", "compile-max-autotune")
PROVIDER_ORDER = ("eager", "compile", "compile-max-autotune", "cpu", "triton", "cuda")
REPRODUCE = ("python -m pytest benchmarks/ --benchmark-only --fastmi-full --benchmark-json=results.json && "
             "python -m fastmi.bench report results.json --out benchmarks/results/cpu")


# ---- reading ----------------------------------------------------------------------------------

def read(paths) -> list:
    """The parsed pytest-benchmark JSON files."""
    return [json.loads(Path(path).read_text()) for path in paths]


def load(datas) -> dict:
    """The merged results of parsed files (see read): ``{"machine_info", "datetime", "rows":
    [extra_info + median ...]}``."""
    rows, machine, when, seen = [], {}, None, {}
    for data in datas:
        machine = machine or data.get("machine_info", {})
        when = when or data.get("datetime")
        for bench in data.get("benchmarks", []):
            info = dict(bench.get("extra_info") or {})
            stats = bench.get("stats") or {}
            if not info.get("kind") or "median" not in stats:
                continue
            info.update(median_s=stats["median"], min_s=stats.get("min"), rounds=stats.get("rounds"),
                        name=bench.get("fullname") or bench.get("name"))
            if info.get("bytes"):
                info["gb_per_s"] = info["bytes"] / stats["median"] / 1e9
            if info["name"] in seen:
                rows[seen[info["name"]]] = info
            else:
                seen[info["name"]] = len(rows)
                rows.append(info)
    return {"machine_info": machine, "datetime": when, "rows": rows}


def slim(datas) -> dict:
    """The parsed pytest-benchmark JSON merged, without the per-round samples (it edits
    ``datas``: call it after load)."""
    out = None
    for data in datas:
        for bench in data.get("benchmarks", []):
            (bench.get("stats") or {}).pop("data", None)
        if out is None:
            out = data
        else:
            names = {b.get("fullname"): i for i, b in enumerate(out["benchmarks"])}
            for bench in data.get("benchmarks", []):
                if bench.get("fullname") in names:
                    out["benchmarks"][names[bench["fullname"]]] = bench
                else:
                    out["benchmarks"].append(bench)
    return out or {"benchmarks": []}


# ---- formatting ---------------------------------------------------------------------------------

def fmt_time(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(x) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}×" if x < 100 else f"{x:.0f}×"


def fmt_gbps(x) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.0f}"


def _order(provider: str) -> tuple:
    base, _, graph = provider.partition("+")
    rank = PROVIDER_ORDER.index(base) if base in PROVIDER_ORDER else len(PROVIDER_ORDER)
    return (bool(graph), rank, provider)


def _spec_order(name: str) -> int:
    names = list(SPECS)
    return names.index(name) if name in names else len(names)


def copy_bandwidth(rows) -> float | None:
    values = [r["gb_per_s"] for r in rows if r.get("kind") == "copy" and r.get("gb_per_s")]
    return max(values) if values else None


def environment(results) -> dict:
    """The device name, versions and date that the results record."""
    for row in results["rows"]:
        if row.get("device_name"):
            keys = ("device", "device_name", "torch", "triton", "python", "fastmi", "fastmi_commit", "threads",
                    "omp_wait_policy", "torch_cuda", "nvcc", "driver", "date")
            return {k: row.get(k) for k in keys if row.get(k) is not None}
    return {}


def environment_line(env: dict, when) -> str:
    parts = [f"**{env.get('device_name', 'unknown device')}**"]
    if env.get("device") == "cpu":
        parts.append(f"{env.get('threads')} torch threads")
        if env.get("omp_wait_policy"):
            parts.append(f"OMP_WAIT_POLICY={env['omp_wait_policy']}")
    parts.append(f"torch {env.get('torch')}")
    parts.append(f"triton {env.get('triton')}")
    if env.get("torch_cuda"):
        parts.append(f"CUDA {env.get('torch_cuda')}")
    if env.get("driver"):
        parts.append(f"driver {env.get('driver')}")
    parts.append(f"Python {env.get('python')}")
    parts.append(f"fastmi {env.get('fastmi')} ({env.get('fastmi_commit')})")
    date = (env.get("date") or when or "")[:10]
    if date:
        parts.append(date)
    return ", ".join(parts)


# ---- tables -------------------------------------------------------------------------------------

def _index(rows):
    """{(op, dtype): {(spec, batch): {provider: row}}} for the loss results."""
    out = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("kind") == "loss":
            out[(r["op"], r["dtype"])][(r["spec"], r["batch"])][r["provider"]] = r
    return out


def speedups(cell: dict, provider: str) -> tuple:
    """(x eager, x compile) of ``provider`` in one workload's {provider: row}, each None
    when its baseline (with the same CUDA-graph setting) was not measured."""
    suffix = "+graph" if provider.endswith("+graph") else ""
    t = cell[provider]["median_s"]
    eager = cell.get("eager" + suffix)
    compiled = [cell[m + suffix]["median_s"] for m in ("compile", "compile-max-autotune") if m + suffix in cell]
    return (eager["median_s"] / t if eager else None, min(compiled) / t if compiled else None)


def loss_table(cells: dict, graph: bool) -> list:
    """Markdown lines: one row per (spec, batch), the median of every provider, then each
    fused provider's x eager, x compile and GB/s."""
    providers = sorted({p for cell in cells.values() for p in cell if p.endswith("+graph") == graph}, key=_order)
    if not providers:
        return []
    fused = [p for p in providers if p.split("+")[0] not in BASELINES]
    head = ["spec", "B"] + [f"{p}" for p in providers]
    for p in fused:
        head += [f"{p} ×eager", f"{p} ×compile", f"{p} GB/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for (spec, batch) in sorted(cells, key=lambda k: (_spec_order(k[0]), k[1])):
        cell = cells[(spec, batch)]
        row = [SPEC_LABELS.get(spec, spec), f"{batch:,}"]
        row += [fmt_time(cell[p]["median_s"]) if p in cell else "-" for p in providers]
        for p in fused:
            if p in cell:
                x_eager, x_compile = speedups(cell, p)
                row += [fmt_ratio(x_eager), fmt_ratio(x_compile), fmt_gbps(cell[p].get("gb_per_s"))]
            else:
                row += ["-", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def e2e_table(rows) -> list:
    steps = {r["provider"]: r for r in rows if r.get("kind") == "e2e"}
    if not steps:
        return []
    eager = steps.get("eager")
    compiled = [steps[m]["median_s"] for m in ("compile", "compile-max-autotune") if m in steps]
    lines = ["| provider | D step + G step | ×eager | ×compile |", "|---|---:|---:|---:|"]
    for p in sorted(steps, key=_order):
        t = steps[p]["median_s"]
        lines.append(f"| {p} | {fmt_time(t)} | {fmt_ratio(eager['median_s'] / t if eager else None)} | "
                     f"{fmt_ratio(min(compiled) / t if compiled else None)} |")
    return lines


def report_markdown(results, command: str) -> str:
    rows = results["rows"]
    env = environment(results)
    copy = copy_bandwidth(rows)
    lines = ["# fastmi benchmarks", "", environment_line(env, results.get("datetime")), "",
             f"Reproduce: `{command}`", "",
             "Median time per call. ×eager: the eager reference's time over the provider's; ×compile: the faster "
             "torch.compile mode's time over the provider's (a `+graph` provider, a CUDA-graph replay, is "
             "compared with the eager reference and torch.compile replayed the same way). GB/s: the contract's "
             "bytes (the forward reads every input once; the backward reads every input once and writes every "
             "gradient once) over the median time.", ""]
    lines.append(f"Memory copy (`Tensor.copy_`, read + write) on this device: **{fmt_gbps(copy)} GB/s**"
                 if copy else "Memory copy: not measured in these results")
    index = _index(rows)
    for op in ("fwd_bwd", "fwd", "bwd"):
        for dtype in ("float32", "bfloat16"):
            cells = index.get((op, dtype))
            if not cells:
                continue
            for graph in (False, True):
                table = loss_table(cells, graph)
                if table:
                    title = f"{OP_LABELS.get(op, op)}, {dtype}" + (", CUDA-graph replay" if graph else "")
                    lines += ["", f"## {title}", "", *table]
    e2e = e2e_table(rows)
    if e2e:
        spec = next(r for r in rows if r.get("kind") == "e2e")
        lines += ["", f"## Training step: D step + G step of the trainer's MNIST networks, B = {spec['batch']}", "",
                  f"Paper widths {spec.get('widths', '')}, {spec.get('spec_repr', '')}; the step includes G's "
                  f"forward, both backward passes and both Adam updates.", "", *e2e]
    return "\n".join(lines) + "\n"


def summary_markdown(results, command: str, op: str = "fwd_bwd", dtype: str = "float32") -> str:
    """The README's table: ``op`` at ``dtype`` without CUDA graphs, and the training step."""
    rows = results["rows"]
    env = environment(results)
    copy = copy_bandwidth(rows)
    cells = _index(rows).get((op, dtype), {})
    lines = [f"{OP_LABELS.get(op, op).capitalize()} of `fastmi.infogan_loss` (all three losses), {dtype}, "
             f"median time per call. Measured on {environment_line(env, results.get('datetime'))}"
             + (f"; memory copy: {fmt_gbps(copy)} GB/s." if copy else "."), "",
             *loss_table(cells, graph=False)]
    e2e = e2e_table(rows)
    if e2e:
        lines += ["", "One training step of the trainer's MNIST networks (paper widths, B = 64, D step + G step):",
                  "", *e2e]
    lines += ["", f"Reproduce: `{command}`"]
    return "\n".join(lines) + "\n"


# ---- plots --------------------------------------------------------------------------------------

def plot(results, out: Path) -> list:
    """Writes time_<op>_<dtype>.png and gbps_<op>_<dtype>.png; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    copy = copy_bandwidth(rows)
    env = environment(results)
    index = _index(rows)
    written = []
    providers = sorted({r["provider"] for r in rows if r.get("kind") == "loss"}, key=_order)
    colors = {p.split("+")[0]: plt.cm.tab10(i) for i, p in enumerate(sorted({p.split("+")[0] for p in providers},
                                                                               key=_order))}
    for (op, dtype), cells in sorted(index.items()):
        specs = sorted({s for s, _ in cells}, key=_spec_order)
        ncols = min(3, len(specs))
        nrows = math.ceil(len(specs) / ncols)
        for metric in ("time", "gbps"):
            fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.1 * nrows + 0.6), squeeze=False)
            for ax, spec in zip(axes.flat, specs):
                for p in providers:
                    points = sorted((b, cell[p]) for (s, b), cell in cells.items() if s == spec and p in cell)
                    if not points:
                        continue
                    xs = [b for b, _ in points]
                    ys = [r["median_s"] * 1e6 if metric == "time" else r.get("gb_per_s") for _, r in points]
                    ax.plot(xs, ys, marker="o", markersize=3, color=colors[p.split("+")[0]],
                            linestyle="--" if p.endswith("+graph") else "-", label=p)
                if metric == "gbps" and copy:
                    ax.axhline(copy, color="black", linewidth=1, linestyle=":", label=f"memory copy {copy:.0f} GB/s")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(SPEC_LABELS.get(spec, spec), fontsize=9)
                ax.set_xlabel("batch size", fontsize=8)
                ax.set_ylabel("median µs per call" if metric == "time" else "achieved GB/s", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(True, which="major", alpha=0.3)
            for ax in list(axes.flat)[len(specs):]:
                ax.axis("off")
            handles, labels = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
            what = "time" if metric == "time" else "achieved GB/s (contract bytes / median time)"
            fig.suptitle(f"fastmi.infogan_loss {OP_LABELS.get(op, op)}, {dtype}: {what}\n"
                         f"{env.get('device_name', '')}, torch {env.get('torch', '')}", fontsize=10)
            fig.tight_layout(rect=(0, 0.07, 1, 1))
            path = out / f"{metric}_{op}_{dtype}.png"
            fig.savefig(path, dpi=72)
            plt.close(fig)
            written.append(path)
    return written


# ---- command line -------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmi.bench report", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("results", nargs="+", help="pytest-benchmark JSON files (--benchmark-json)")
    parser.add_argument("--out", required=True, help="folder for the tables and plots")
    parser.add_argument("--command", default=REPRODUCE, help="the command the tables name to reproduce them")
    parser.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.results if Path(p).exists()]
    missing = [p for p in args.results if not Path(p).exists()]
    for p in missing:
        print(f"report: {p} does not exist; skipped", file=sys.stderr)
    if not paths:
        print("report: no results to read", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datas = read(paths)
    results = load(datas)
    if not results["rows"]:
        print("report: the files hold no fastmi benchmark results (run them with --benchmark-only)", file=sys.stderr)
        return 1
    (out / "results.json").write_text(json.dumps(slim(datas), indent=1) + "\n")
    (out / "report.md").write_text(report_markdown(results, args.command))
    summary = summary_markdown(results, args.command)
    (out / "summary.md").write_text(summary)
    written = [out / "results.json", out / "report.md", out / "summary.md"]
    if not args.no_plots:
        written += plot(results, out)
    print(summary)
    print("written: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
