"""The CPU kernels are plain C++: every torch-free source of the CPU library
(``fastmi.runtime.cpu_extension.KERNEL_SOURCES``, with the csrc/common and csrc/<op>
headers they include) compiles with ``-O2 -fopenmp -c`` and no torch include path, for
the host and for aarch64, and the objects hold the forward and backward kernel of every
storage dtype and index type: infogan's (float, double, bf16_t, f16_t) and critic's
(float, double: the glue converts 16-bit inputs to float32).

The aarch64 build needs the cross compiler (Debian / Ubuntu: ``apt-get install -y
g++-aarch64-linux-gnu``); without it that test skips and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fastmi.runtime import cpu_extension, native_build

CSRC = native_build.SOURCE_DIR
CROSS = "aarch64-linux-gnu-g++"
DTYPES = ("float", "double", "fastmi::bf16_t", "fastmi::f16_t")
CRITIC_DTYPES = ("float", "double")


def compile_kernels(compiler: str, flags: list, tmp_path) -> list:
    """Compiles each kernel source to an object in tmp_path; returns the objects."""
    objects = []
    for source in cpu_extension.KERNEL_SOURCES:
        obj = tmp_path / (source.replace("/", "_") + ".o")
        cmd = [compiler, "-std=c++17", "-O2", "-fopenmp", "-Wno-psabi", *flags, f"-I{CSRC}", "-c",
               str(CSRC / source), "-o", str(obj)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr[-4000:]}"
        objects.append(obj)
    return objects


def kernel_symbols(nm: str, objects: list) -> str:
    result = subprocess.run([nm, "-C", "--defined-only", *map(str, objects)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_every_instantiation(symbols: str):
    for kernel in ("forward_kernel", "backward_kernel"):
        for dtype in DTYPES:
            found = re.findall(rf"^\S+ [TW] void fastmi::infogan::{kernel}<{re.escape(dtype)}, (int|long), "
                               rf"(float|double)>\(", symbols, re.M)
            assert sorted(i for i, _ in found) == ["int", "long"], f"{kernel}<{dtype}, ...>: {found}"
        for dtype in CRITIC_DTYPES:
            assert re.search(rf"^\S+ [TW] void fastmi::critic::{kernel}<{dtype}>\(", symbols, re.M), \
                f"fastmi::critic::{kernel}<{dtype}> is not in the kernel objects"


def host_compiler() -> str:
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no host C++ compiler (c++ / g++) on PATH")
    return compiler


@pytest.mark.parametrize("isa", ["baseline", "library"])
def test_kernels_compile_for_the_host_without_torch(isa, tmp_path):
    """baseline: the compiler's default target (x86-64: SSE2, the non-AVX paths);
    library: the vector-ISA flags the library itself is built with on this CPU."""
    flags = native_build.host_isa_flags() if isa == "library" else []
    objects = compile_kernels(host_compiler(), flags, tmp_path)
    if shutil.which("nm"):
        assert_every_instantiation(kernel_symbols("nm", objects))


def test_kernels_compile_for_aarch64(tmp_path):
    if shutil.which(CROSS) is None:
        pytest.skip(f"{CROSS} not found: the aarch64 cross compiler is not installed "
                    "(apt-get install -y g++-aarch64-linux-gnu)")
    objects = compile_kernels(CROSS, [], tmp_path)
    header = objects[0].read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, "not an aarch64 object"
    nm = shutil.which("aarch64-linux-gnu-nm") or shutil.which("nm")
    if nm:
        assert_every_instantiation(kernel_symbols(nm, objects))
