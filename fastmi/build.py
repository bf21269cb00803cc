"""Builds fastmi's native kernels ahead of time: ``python -m fastmi.build``.

The kernels otherwise build with ninja on first use; building here first keeps that
minute out of a training run or a benchmark, and shows the compiler's output on failure
(``FASTMI_VERBOSE_BUILD=1``). For each library it prints where the cache holds it and
what its cache key is made of (``--key`` prints the whole key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .runtime import native_build


def describe_key(key: dict) -> str:
    """One line of what a cache key holds (the whole key is the folder's key.json)."""
    torch_ = key["torch"]
    compiler = key["compiler"]
    parts = [f"torch {torch_['version']} at {torch_['path']}", key["python"]["tag"],
             f"{compiler['command']} = {compiler['path']} ({compiler['version']})",
             f"ISA {key['isa']['cpu_capability']}", f"{len(key['files'])} source files"]
    if key.get("cuda"):
        nvcc = key["cuda"]["nvcc"]
        parts.append(f"nvcc {nvcc['path']} ({nvcc['version']}), sm {'/'.join(key['cuda']['device_capabilities'])}")
    return "; ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmi.build", description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="also build the CUDA kernels (needs nvcc)")
    parser.add_argument("--key", action="store_true", help="print each library's whole cache key (its key.json)")
    args = parser.parse_args(argv)
    from .runtime import cpu_extension

    targets = [("cpu", "fastmi_cpu", cpu_extension.extension)]
    if args.cuda:
        from .infogan import cuda
        targets.append(("cuda", "fastmi_cuda", cuda.extension))
    print(f"fastmi.build: cache {native_build.cache_root()} (FASTMI_CACHE_DIR moves it)")
    failed = False
    for target, name, build in targets:
        start = time.perf_counter()
        try:
            build()
        except Exception as exc:  # report every target, then fail
            print(f"fastmi.build: {target}: FAILED: {exc}", file=sys.stderr)
            failed = True
            continue
        folder, key = native_build.loaded(name)
        print(f"fastmi.build: {target}: ready in {time.perf_counter() - start:.1f} s: "
              f"{folder / (name + native_build.LIB_SUFFIX)}")
        print(f"fastmi.build: {target}: key {native_build.key_digest(key)} ({folder / native_build.KEY_FILE}): "
              f"{describe_key(key)}")
        if args.key:
            print(json.dumps(key, indent=1, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
