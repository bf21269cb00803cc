"""The native build (fastmi/runtime/native_build.py, build_lock.py): a build killed midway
never blocks the next use; the cache key holds everything the binary depends on; two
processes that need one build share it; a wait for another's build is bounded and says
what it waits for.

Most tests build a tiny extension (a few lines of the Python C API, compiled in a second)
through the same ``build`` as fastmi's libraries, each into its own cache folder; one
checks ``python -m fastmi.build`` against the real CPU library, which the test session has
built already.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from fastmi.runtime import build_lock, native_build

NAME = "fastmi_tiny"
TINY_CPP = textwrap.dedent("""\
    // a Python extension of one function, answer(), named by TORCH_EXTENSION_NAME as a
    // PYBIND11_MODULE is; TINY_VALUE comes from a header, to show headers are in the key
    #include <Python.h>
    #include "value.h"
    #define TINY_CAT2(a, b) a##b
    #define TINY_CAT(a, b) TINY_CAT2(a, b)
    #define TINY_STR2(a) #a
    #define TINY_STR(a) TINY_STR2(a)
    #ifdef TINY_FAIL
    #error TINY_FAIL: this build is meant to fail
    #endif
    static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(TINY_VALUE); }
    static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, nullptr}, {nullptr, nullptr, 0, nullptr}};
    static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, TINY_STR(TORCH_EXTENSION_NAME), nullptr, -1, methods};
    PyMODINIT_FUNC TINY_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module_def); }
    """)

# A child process that builds (or loads) the tiny extension and prints its answer.
CHILD = textwrap.dedent("""\
    import sys, time
    start = time.perf_counter()
    from fastmi.runtime import native_build
    module = native_build.build(sys.argv[1], ["tiny.cpp"], what="the tiny test extension", source_dir=sys.argv[2])
    print("answer", module.answer(), "after", round(time.perf_counter() - start, 1), "s", flush=True)
    """)

# A C++ compiler for the tests: it logs every compile step (not the link), and a step
# with FASTMI_TEST_HOLD=<file> set touches that file and stalls until FASTMI_TEST_RELEASE
# exists (or for 120 s): a build that is reliably midway while the test acts.
HOLD_CXX = textwrap.dedent("""\
    #!/bin/sh
    case " $* " in
      *" -c "*)
        echo "$$" >> "{log}"
        if [ -n "$FASTMI_TEST_HOLD" ]; then
          touch "$FASTMI_TEST_HOLD"
          i=0
          while [ $i -lt 1200 ] && [ ! -e "${{FASTMI_TEST_RELEASE:-/nonexistent}}" ]; do sleep 0.1; i=$((i + 1)); done
        fi;;
    esac
    exec "{cxx}" "$@"
    """)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("FASTMI_CACHE_DIR", str(root))
    return root


@pytest.fixture
def src(tmp_path):
    """The tiny extension's include root: tiny.cpp and the value.h it includes."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "tiny.cpp").write_text(TINY_CPP)
    (root / "value.h").write_text("#define TINY_VALUE 42\n")
    return root


@pytest.fixture
def hold_cxx(tmp_path, monkeypatch):
    """CXX = the logging, stalling compiler; returns its log of compile steps."""
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    log = tmp_path / "compiles.log"
    log.touch()
    # the name ends in g++ so that torch's compiler check accepts it without asking it
    wrapper = tmp_path / "bin" / "hold-g++"
    wrapper.parent.mkdir()
    wrapper.write_text(HOLD_CXX.format(log=log, cxx=os.path.realpath(cxx)))
    wrapper.chmod(0o755)
    monkeypatch.setenv("CXX", str(wrapper))
    return log


def build_tiny(src, **kwargs):
    return native_build.build(NAME, ["tiny.cpp"], what="the tiny test extension", source_dir=src, **kwargs)


def tiny_key(src, **kwargs):
    return native_build.build_key(NAME, ["tiny.cpp"], source_dir=src, **kwargs)


def start_child(src, stderr_path, **env):
    """A child process building the tiny extension, in its own process group (so that
    the test can reap what a killed build leaves running)."""
    return subprocess.Popen([sys.executable, "-c", CHILD, NAME, str(src)], stdout=subprocess.PIPE,
                            stderr=open(stderr_path, "w"), text=True, env={**os.environ, **env},
                            start_new_session=True)


def wait_for(condition, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def reap(child):
    """Kills what a child left running: the child, its ninja, and ninja's compile jobs,
    which ninja starts in process groups of their own, inside the child's session."""
    pids = [child.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
        except (OSError, IndexError):
            continue
        if int(fields[3]) == child.pid:
            pids.append(int(stat.parent.name))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.wait()


def build_dirs(folder: Path):
    return sorted(p.name for p in folder.glob("build-*"))


# ---- cache hits and the key ------------------------------------------------------------------

def test_builds_once_then_loads_from_the_cache(cache, src, capfd):
    module = build_tiny(src)
    assert module.answer() == 42
    folder = native_build.library_dir(NAME, tiny_key(src))
    assert "fastmi: building the tiny test extension" in capfd.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["build.lock", "fastmi_tiny.so", "key.json"]
    assert json.loads((folder / "key.json").read_text()) == tiny_key(src)
    assert native_build.loaded(NAME) == (folder, tiny_key(src))
    assert build_tiny(src) is module  # once per process
    # a fresh process loads the cached library without building
    done = subprocess.run([sys.executable, "-c", CHILD, NAME, str(src)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("answer 42") and "building" not in done.stderr


def test_an_edited_header_builds_a_new_library(cache, src, capfd):
    assert build_tiny(src).answer() == 42
    (src / "value.h").write_text("#define TINY_VALUE 43\n")  # tiny.cpp #includes it; it is not listed
    assert build_tiny(src).answer() == 43
    assert capfd.readouterr().err.count("fastmi: building") == 2
    assert len(list(cache.glob(f"{NAME}-*"))) == 2


def test_a_faked_torch_version_builds_and_keeps_its_own_library(cache, src, monkeypatch, capfd):
    """Two torch versions sharing one cache folder each get their own library, and
    switching back loads the first one again instead of rebuilding it."""
    first = native_build.library_dir(NAME, tiny_key(src))
    build_tiny(src)
    with monkeypatch.context() as patch:
        patch.setattr(torch, "__version__", torch.__version__ + ".fake")
        second = native_build.library_dir(NAME, tiny_key(src))
        assert second != first
        assert build_tiny(src).answer() == 42
    assert (first / "fastmi_tiny.so").exists() and (second / "fastmi_tiny.so").exists()
    assert json.loads((second / "key.json").read_text())["torch"]["version"].endswith(".fake")
    native_build._loaded.clear()  # as a new process would: from the cache, not this process's copy
    build_tiny(src)
    assert capfd.readouterr().err.count("fastmi: building") == 2


def _fake_compiler(tmp_path, name, version):
    """A tool that prints ``version`` (lines) for --version."""
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{version}\nEOF\n")
    path.chmod(0o755)
    return path


# Each case changes one thing the binary depends on (and nothing else): the key must change.
KEY_CHANGES = {
    "a header": lambda src, tmp_path, mp: (src / "value.h").write_text("#define TINY_VALUE 7\n"),
    "a new file under the include root": lambda src, tmp_path, mp: (src / "sub").mkdir()
    or (src / "sub" / "extra.inc").write_text("int x;\n"),
    "the torch version": lambda src, tmp_path, mp: mp.setattr(torch, "__version__", "2.99.0"),
    "the torch install": lambda src, tmp_path, mp: mp.setattr(torch, "__file__", "/elsewhere/torch/__init__.py"),
    "the torch build": lambda src, tmp_path, mp: mp.setattr(torch.version, "git_version", "0" * 40),
    "the Python ABI": lambda src, tmp_path, mp: mp.setattr(
        native_build.sysconfig, "get_config_var",
        lambda var, real=native_build.sysconfig.get_config_var: ".cpython-399-x86_64-linux-gnu.so"
        if var == "EXT_SUFFIX" else real(var)),
    "the compiler": lambda src, tmp_path, mp: mp.setenv("CXX", str(_fake_compiler(tmp_path, "g++", "g++ 99.1"))),
    "the ISA": lambda src, tmp_path, mp: mp.setattr(torch.backends.cpu, "get_cpu_capability",
                                                    lambda: "NO AVX"),
    "a build variable": lambda src, tmp_path, mp: mp.setenv("CC", "/opt/other/gcc"),
}


@pytest.mark.parametrize("change", sorted(KEY_CHANGES))
def test_the_key_changes_with_what_the_binary_depends_on(change, src, tmp_path, monkeypatch):
    before = native_build.key_digest(tiny_key(src))
    assert native_build.key_digest(tiny_key(src)) == before  # stable while nothing changes
    KEY_CHANGES[change](src, tmp_path, monkeypatch)
    assert native_build.key_digest(tiny_key(src)) != before


def test_the_key_changes_with_the_compilers_version_at_one_path(src, tmp_path, monkeypatch):
    """An upgraded compiler in place (same path, new --version) is a new key, also when
    only a later line of --version changes (clang's target or install folder)."""
    compiler = _fake_compiler(tmp_path, "g++", "clang version 17.0.6\nTarget: x86_64-pc-linux-gnu")
    monkeypatch.setenv("CXX", str(compiler))
    keys = [tiny_key(src)]
    assert keys[0]["compiler"]["version"] == "clang version 17.0.6"
    # each text a different length: the process asks a binary again when its size or
    # mtime changes, and two writes can share an mtime tick
    _fake_compiler(tmp_path, "g++", "clang version 18.1.10\nTarget: x86_64-pc-linux-gnu")
    keys.append(tiny_key(src))
    _fake_compiler(tmp_path, "g++", "clang version 18.1.10\nTarget: aarch64-unknown-linux-gnu")
    keys.append(tiny_key(src))
    assert len({key["compiler"]["path"] for key in keys}) == 1
    assert len({native_build.key_digest(key) for key in keys}) == 3


def test_a_cuda_key_holds_the_toolkit_and_nvccs_version(src, tmp_path, monkeypatch):
    """A library with a .cu source keys by the toolkit torch will build with (its CUDA_HOME),
    nvcc's --version and the GPU architecture settings; one without has no CUDA entry."""
    from torch.utils import cpp_extension

    (src / "kernel.cu").write_text("// a kernel\n")
    home = tmp_path / "cuda"
    nvcc = _fake_compiler(tmp_path, "nvcc", "Cuda compilation tools, release 12.4, V12.4.131")
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc").symlink_to(nvcc)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(home))
    assert tiny_key(src)["cuda"] is None
    cuda_key = lambda: native_build.build_key(NAME, ["tiny.cpp", "kernel.cu"], source_dir=src)  # noqa: E731
    key = cuda_key()
    assert key["cuda"]["home"] == str(home)
    assert key["cuda"]["nvcc"]["version"] == "Cuda compilation tools, release 12.4, V12.4.131"
    digests = {native_build.key_digest(key)}
    _fake_compiler(tmp_path, "nvcc", "Cuda compilation tools, release 12.8, V12.8.93 (newer)")
    digests.add(native_build.key_digest(cuda_key()))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    digests.add(native_build.key_digest(cuda_key()))
    assert len(digests) == 3


@pytest.mark.parametrize("flag", ["cflags", "ldflags", "cuda_cflags"])
def test_the_key_changes_with_the_flags(flag, src):
    assert native_build.key_digest(tiny_key(src)) != native_build.key_digest(tiny_key(src, **{flag: ["-DX"]}))


@pytest.mark.parametrize("kernel_file", ["launch.cu", "forward.cuh"])
def test_the_emulation_key_covers_the_kernel_files_it_includes(tmp_path, kernel_file):
    """emulated.cpp #includes launch.cu, which includes the .cuh files; none of them is in
    the emulation build's source list: an edit to any one must still change the key (the
    key hashes every file under csrc/)."""
    copy = tmp_path / "csrc"
    shutil.copytree(native_build.SOURCE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    sources = ["infogan/cuda/binding.cpp", "infogan/cuda/emulated.cpp"]
    flags = ["-O2", "-DFASTMI_CUDA_EMULATION"]
    before = native_build.key_digest(native_build.build_key("emu", sources, cflags=flags, source_dir=copy))
    edited = copy / "infogan" / "cuda" / kernel_file
    assert edited.exists()
    with open(edited, "a") as f:
        f.write("\n// an edit\n")
    after = native_build.key_digest(native_build.build_key("emu", sources, cflags=flags, source_dir=copy))
    assert after != before


# ---- killed builds, concurrent builds, bounded waits -------------------------------------------

def test_a_build_killed_midway_does_not_block_the_next_use(cache, src, hold_cxx, tmp_path):
    """The issue's reproduction: SIGKILL a process while its compiler runs; the next use
    builds and loads within a bounded time, with no manual step."""
    folder = native_build.library_dir(NAME, tiny_key(src))
    marker = tmp_path / "compiling"
    killed = start_child(src, tmp_path / "killed.err", FASTMI_TEST_HOLD=str(marker))
    try:
        wait_for(marker.exists, "the first build's compile step")
        owner = json.loads((folder / "build.lock").read_text())
        assert owner["pid"] == killed.pid
        assert not (folder / "fastmi_tiny.so").exists() and len(build_dirs(folder)) == 1
        os.kill(killed.pid, signal.SIGKILL)  # the python process only: its ninja and compiler live on
        killed.wait()
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-c", CHILD, NAME, str(src)], capture_output=True, text=True,
                              timeout=120)
        elapsed = time.monotonic() - start
    finally:
        reap(killed)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("answer 42")
    assert "waiting" not in done.stderr  # the dead holder's lock did not hold anyone up
    assert elapsed < 120
    assert build_dirs(folder) == []  # the killed build's private folder is gone
    assert (folder / "build.lock").read_text() == ""  # no holder named once the build is done


def test_two_processes_needing_one_build_both_load_it_and_build_once(cache, src, hold_cxx, tmp_path):
    marker, release = tmp_path / "compiling", tmp_path / "release"
    first = start_child(src, tmp_path / "first.err", FASTMI_TEST_HOLD=str(marker), FASTMI_TEST_RELEASE=str(release))
    second = None
    try:
        wait_for(marker.exists, "the first build's compile step")
        second = start_child(src, tmp_path / "second.err")
        # the second process has found the build under way before the first one finishes
        wait_for(lambda: "waiting for the tiny test extension" in (tmp_path / "second.err").read_text(),
                 "the second process to wait")
        release.touch()
        outputs = [child.communicate(timeout=120)[0] for child in (first, second)]
    finally:
        for child in (first, second):
            if child is not None:
                reap(child)
    assert [child.returncode for child in (first, second)] == [0, 0], (tmp_path / "second.err").read_text()
    assert all(out.startswith("answer 42") for out in outputs)
    assert len(hold_cxx.read_text().split()) == 1  # one compile step in all
    errs = [(tmp_path / f"{n}.err").read_text() for n in ("first", "second")]
    assert "fastmi: building" in errs[0] and "fastmi: building" not in errs[1]
    assert f"pid {first.pid} on " in errs[1]  # the waiter names the build it waits for


def test_the_wait_for_a_live_holder_is_bounded_and_says_how_to_clear_it(cache, src, monkeypatch):
    folder = native_build.library_dir(NAME, tiny_key(src))
    monkeypatch.setenv(build_lock.TIMEOUT_ENV, "0.5")
    result = {}

    def waiter():
        try:
            build_tiny(src)
        except Exception as exc:  # handed to the test thread below
            result["error"] = exc

    # another open file of the lock, locked: flock excludes it as it would another process
    with build_lock.hold(folder / "build.lock", what="a build that never ends", timeout=0):
        thread = threading.Thread(target=waiter, daemon=True)
        start = time.monotonic()
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the wait did not stop at its limit"
    assert time.monotonic() - start < 30
    error = result.get("error")
    assert isinstance(error, build_lock.BuildLockTimeout), error
    message = str(error)
    assert str(folder / "build.lock") in message and f"pid {os.getpid()}" in message
    assert build_lock.TIMEOUT_ENV in message and "fuser" in message
    assert not (folder / "fastmi_tiny.so").exists()


def test_a_dead_holder_releases_the_lock_at_once(tmp_path):
    lock = tmp_path / "build.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(build_lock.BuildLockTimeout, match="still holds"):
            with build_lock.hold(lock, what="x", timeout=0.2):
                pass
        holder.kill()  # SIGKILL: no chance to unlock or clean up
        holder.wait()
        start = time.monotonic()
        with build_lock.hold(lock, what="x", timeout=30) as locked:
            assert locked
        assert time.monotonic() - start < 2
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_build_leaves_nothing_behind(cache, src, monkeypatch):
    flags = ["-DTINY_FAIL"]
    folder = native_build.library_dir(NAME, tiny_key(src, cflags=flags))
    with pytest.raises(RuntimeError, match="TINY_FAIL"):
        build_tiny(src, cflags=flags)
    assert sorted(p.name for p in folder.iterdir()) == ["build.lock"]
    with build_lock.hold(folder / "build.lock", what="x", timeout=0) as locked:
        assert locked


def test_a_bad_timeout_setting_is_named(monkeypatch):
    monkeypatch.setenv(build_lock.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="FASTMI_BUILD_LOCK_TIMEOUT='soon'"):
        build_lock.timeout_s()


# ---- the real library ------------------------------------------------------------------------

def test_fastmi_build_reports_the_cache_path_and_key():
    """End to end with the real CPU library (the session built it; this loads it)."""
    from fastmi.runtime import cpu_extension

    if cpu_extension.is_available() is not None:
        pytest.skip(f"the CPU library does not build here: {cpu_extension.is_available()}")
    folder, key = native_build.loaded("fastmi_cpu")
    assert json.loads((folder / "key.json").read_text()) == key
    assert key["torch"]["version"] == torch.__version__ and key["files"][cpu_extension.SOURCES[0]]
    done = subprocess.run([sys.executable, "-m", "fastmi.build"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"fastmi.build: cache {native_build.cache_root()}" in done.stdout
    assert f"{folder / 'fastmi_cpu.so'}" in done.stdout
    assert f"key {native_build.key_digest(key)} ({folder / 'key.json'})" in done.stdout
    assert f"torch {torch.__version__}" in done.stdout
    assert "fastmi: building" not in done.stderr
