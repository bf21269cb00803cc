"""The markdown table of benchmarks/bench_critic.py's pytest-benchmark JSON files.

    python benchmarks/critic_table.py RESULTS.json [MORE.json ...] > table.md

One row per case (loss, B, d, dtype, provider), a later file's case replacing an
earlier one's (a rerun of a few cases); the columns are the ones bench_critic.py records:
the median time of a forward + backward, the peak memory above the inputs (a child
process's high-water mark) and the counted GEMM FLOPs (8 B N d) over the median.
"""

from __future__ import annotations

import json
import sys

ORDER = {"fastmi": 0, "compile": 1, "reference": 2, "openclip": 3}


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def table(paths: list) -> str:
    rows = {}
    for path in paths:
        for bench in json.load(open(path))["benchmarks"]:
            info = bench["extra_info"]
            if info.get("kind") == "critic" and "median_s" in info:
                rows[bench["name"]] = info
    lines = ["| loss | dtype | B | d | provider | median | peak above inputs | counted GFLOP/s |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in sorted(rows.values(), key=lambda r: (r["loss"], r["dtype"], r["dim"], r["batch"],
                                                  ORDER.get(r["provider"], 9))):
        memory = r.get("peak_above_inputs")
        lines.append(f"| {r['loss']} | {r['dtype']} | {r['batch']:,} | {r['dim']} | {r['provider']} | "
                     f"{_time(r['median_s'])} | {'-' if memory is None else f'{memory / 2**20:,.1f} MiB'} | "
                     f"{r['counted_flops'] / r['median_s'] / 1e9:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(table(sys.argv[1:]))
