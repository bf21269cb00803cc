"""The CUDA kernels compile for sm_90 (H100 / H200) without spilling, in every CI run.

No GPU is needed: nvcc compiles csrc/infogan/cuda/launch.cu (the kernels' one translation
unit, which includes the .cuh files and no torch header) with the backend's own flags and
``-Xptxas -v``; the test parses ptxas's report and asserts that every kernel the launchers can pick (forward and backward x float32,
float64, bfloat16, float16 x the tile, warp and block layouts) was compiled, with no
spill stores or loads and no local-memory stack frame. Alongside, g++ checks that the
torch binding (csrc/infogan/cuda/binding.cpp) compiles against this torch's CUDA headers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from fastmi.infogan import cuda
from fastmi.runtime.native_build import SOURCE_DIR

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH (CI has nvcc 13.0)")

HEADER = SOURCE_DIR / "infogan" / "cuda" / "infogan_cuda.h"
# C++ storage type of each FASTMI_* dtype code (launch.cu's kernel_for)
KERNEL_TYPES = {"FASTMI_F32": "float", "FASTMI_F64": "double", "FASTMI_BF16": "bf16_t", "FASTMI_F16": "f16_t"}


def expected_kernels() -> set:
    """(direction, type, layout value) of every kernel, from the header's enums."""
    header = HEADER.read_text()
    layouts = {int(v) for v in re.findall(r"FASTMI_LAYOUT_(?:TILE|WARP|BLOCK) = (\d+)", header)}
    dtypes = set(re.findall(r"(FASTMI_(?:F32|F64|BF16|F16)) = \d+", header))
    assert layouts == {0, 1, 2} and dtypes == set(KERNEL_TYPES), (layouts, dtypes)
    layered = {(d, KERNEL_TYPES[t], layout) for d in ("forward", "backward") for t in dtypes for layout in layouts}
    return layered | {("finalize", "float", None), ("finalize", "double", None)}  # templated on the acc type


def parse_ptxas(text: str) -> dict:
    """{demangled entry name: {"registers", "stack", "spill_stores", "spill_loads"}}."""
    entries, current = {}, None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for 'sm_90'", line)
        if m:
            current = m.group(1)
            entries[current] = {}
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current:
            entries[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m and current:
            entries[current]["registers"] = int(m.group(1))
    demangled = subprocess.run(["c++filt"], input="\n".join(entries), capture_output=True, text=True).stdout.split("\n")
    return {name: entries[mangled] for mangled, name in zip(entries, demangled)}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Runs nvcc on the kernels and g++ on the binding at once (each takes most of a minute)."""
    out = tmp_path_factory.mktemp("nvcc")
    nvcc = subprocess.Popen(
        [NVCC, "-c", "-arch=sm_90", "-Xptxas", "-v", *cuda.NVCC_FLAGS, "-I", str(SOURCE_DIR),
         str(SOURCE_DIR / "infogan" / "cuda" / "launch.cu"), "-o", str(out / "launch.o")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    binding = None
    try:
        from torch.utils import cpp_extension

        cuda_include = cuda.find_cuda_home() / "include"
        gxx = shutil.which("g++") or shutil.which("c++")
        if gxx is not None:
            # C10_CUDA_NO_CMAKE_CONFIGURE_FILE: a CPU wheel lacks the generated
            # cuda_cmake_macros.h, which only sets a Windows export macro
            binding = subprocess.Popen(
                [gxx, "-fsyntax-only", "-std=c++20", "-w", *(f"-I{p}" for p in cpp_extension.include_paths()),
                 f"-I{sysconfig.get_paths()['include']}", f"-I{cuda_include}", f"-I{SOURCE_DIR}",
                 "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", "-DTORCH_EXTENSION_NAME=fastmi_cuda",
                 "-DTORCH_API_INCLUDE_EXTENSION_H", str(SOURCE_DIR / "infogan" / "cuda" / "binding.cpp")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except RuntimeError:
        pass
    nvcc_out, _ = nvcc.communicate(timeout=600)
    binding_result = None
    if binding is not None:
        text, _ = binding.communicate(timeout=600)
        binding_result = (binding.returncode, text)
    return {"nvcc": (nvcc.returncode, nvcc_out), "binding": binding_result}


def test_kernels_compile_for_sm90_without_spills(builds):
    returncode, text = builds["nvcc"]
    assert returncode == 0, f"nvcc failed:\n{text[-6000:]}"
    entries = parse_ptxas(text)
    report = "\n".join(f"  {name}: {info}" for name, info in sorted(entries.items()))
    print(f"ptxas, sm_90, flags {' '.join(cuda.NVCC_FLAGS)}:\n{report}", file=sys.stderr)

    compiled = set()
    for name, info in entries.items():
        m = re.fullmatch(r"void fastmi::cuda::(forward|backward|finalize)_kernel<(?:fastmi::(?:cuda::)?)?(\w+)"
                         r"(?:, (\d+))?>\(.*\)", name)
        assert m, f"unexpected entry {name!r}"
        compiled.add((m.group(1), m.group(2), None if m.group(3) is None else int(m.group(3))))
        assert set(info) == {"registers", "stack", "spill_stores", "spill_loads"}, f"{name}: ptxas said {info}"
        assert info["spill_stores"] == 0 and info["spill_loads"] == 0, f"{name} spills: {info}"
        assert info["stack"] == 0, f"{name} uses local memory: {info}"
    missing = expected_kernels() - compiled
    assert not missing, f"kernels the launchers pick were not compiled: {sorted(missing)}"
    assert len(entries) == len(expected_kernels())


def test_binding_compiles_against_torch_cuda_headers(builds):
    if builds["binding"] is None:
        pytest.skip("no host C++ compiler or CUDA include directory for the binding's syntax check")
    returncode, text = builds["binding"]
    assert returncode == 0, f"binding.cpp does not compile against torch's CUDA headers:\n{text[-6000:]}"


def test_ptxas_report_parser_sees_spills():
    """The parser reads the numbers it gates on (a report with spills is caught)."""
    sample = ("ptxas info    : Compiling entry function '_ZN6fastmi4cuda14forward_kernelIfLi0EEEvNS0_4ArgsE' "
              "for 'sm_90'\n"
              "ptxas info    : Function properties for _ZN6fastmi4cuda14forward_kernelIfLi0EEEvNS0_4ArgsE\n"
              "    16 bytes stack frame, 20 bytes spill stores, 24 bytes spill loads\n"
              "ptxas info    : Used 48 registers, used 1 barriers\n")
    parsed = parse_ptxas(sample)
    assert parsed == {"void fastmi::cuda::forward_kernel<float, 0>(fastmi::cuda::Args)":
                      {"stack": 16, "spill_stores": 20, "spill_loads": 24, "registers": 48}}
