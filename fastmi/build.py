"""Builds fastmi's native kernels ahead of time: ``python -m fastmi.build``.

The kernels otherwise build with ninja on first use; building here first keeps that
minute out of a training run or a benchmark, and shows the compiler's output on failure
(``FASTMI_VERBOSE_BUILD=1``).
"""

from __future__ import annotations

import argparse
import sys
import time

from .runtime import native_build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmi.build", description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="also build the CUDA kernels (needs nvcc)")
    args = parser.parse_args(argv)
    from .runtime import cpu_extension

    targets = [("cpu", cpu_extension.extension)]
    if args.cuda:
        from .infogan import cuda
        targets.append(("cuda", cuda.extension))
    failed = False
    for name, build in targets:
        start = time.perf_counter()
        try:
            build()
        except Exception as exc:  # report every target, then fail
            print(f"fastmi.build: {name}: FAILED: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"fastmi.build: {name}: ready in {time.perf_counter() - start:.1f} s "
              f"(cache: {native_build.cache_root()})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
