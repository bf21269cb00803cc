"""Just-in-time builds of fastmi's native code with ninja, cached on disk.

A library is cached in ``cache_root()/<name>-<digest>/`` (``FASTMI_CACHE_DIR``, else
``$XDG_CACHE_HOME/fastmi``, else ``~/.cache/fastmi``), where ``digest`` hashes the *key*:
everything the binary depends on, written next to it as ``key.json`` (:func:`build_key`
lists it). A change to any of it builds afresh in a new folder; two environments that
share the cache folder but differ in any of it (another torch, Python, compiler) never
share, nor rebuild, each other's binary.

A build runs ninja (through torch.utils.cpp_extension's build-file writer) in a private
folder ``<name>-<digest>/build-<host>-<pid>-<random>/`` and moves the finished library to
``<name>-<digest>/<name>.so`` with one ``os.replace``: a reader sees the whole file or
none, and a killed build leaves only its private folder, which the next build removes.
One process builds a key at a time (build_lock.py: a lock that dies with its holder, a
bounded wait); the others wait for it and load its result.

``FASTMI_VERBOSE_BUILD=1`` shows the compiler's output; ``FASTMI_BUILD_LOCK_TIMEOUT`` bounds
the wait for another process's build (seconds, default 900).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import torch

import fastmi.csrc

from . import build_lock

SOURCE_DIR = Path(fastmi.csrc.__file__).resolve().parent

# Bumped when the key's layout or the cache folder's layout changes, so that an older
# fastmi's folders are never mistaken for this one's.
KEY_FORMAT = 2
KEY_FILE = "key.json"
# torch.utils.cpp_extension names the library <name>.so (.pyd on Windows), and its build
# file compiles with -DTORCH_EXTENSION_NAME=<name>, which PYBIND11_MODULE takes as the
# module's name: the name we import it under must be that same <name>.
LIB_SUFFIX = ".pyd" if sys.platform == "win32" else ".so"
# Environment variables that torch's build file reads and that change the binary
# (CXX is covered by the compiler entry).
_BUILD_ENV = ("CC", "TORCH_CUDA_ARCH_LIST", "PYTORCH_NVCC", "CUDA_INC_PATH", "CUDNN_HOME", "CUDNN_PATH")
_CUDA_SUFFIXES = (".cu", ".cuh")

_loaded: dict = {}          # library path -> module, so a process imports each library once
_loaded_by_name: dict = {}  # name -> (folder, key) of what this process loaded, for fastmi.build
_load_lock = threading.RLock()


def cache_root() -> Path:
    if os.environ.get("FASTMI_CACHE_DIR"):
        return Path(os.environ["FASTMI_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastmi"


def _ensure_ninja_on_path() -> None:
    # pip's ninja package puts the binary in its own folder, which is on PATH only in an
    # activated environment; torch's builder looks it up on PATH.
    try:
        import ninja
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


@functools.lru_cache(maxsize=None)
def _version_text(path: str, mtime_ns: int, size: int) -> str:
    """``path --version``, cached per binary (mtime and size in the cache key: an upgraded
    compiler in place is asked again)."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError) as exc:
        return f"<{path} --version failed: {exc}>"
    return (done.stdout + done.stderr).strip()


def _tool(command) -> dict:
    """Where a tool resolves to and what its ``--version`` says: the first line to read, a
    digest of the whole text (clang's target and install folder, nvcc's build) to compare."""
    found = shutil.which(command) if command else None
    if found is None:
        return {"command": command, "path": None, "version": None, "version_sha256": None}
    path = os.path.realpath(found)
    stat = os.stat(path)
    text = _version_text(path, stat.st_mtime_ns, stat.st_size)
    lines = text.splitlines() or [""]
    # gcc and clang name their version on the first line, nvcc on its fourth
    shown = next((line for line in lines if re.search(r"\d+\.\d+", line)), lines[0])
    return {"command": command, "path": path, "version": shown,
            "version_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def _cxx_command() -> str:
    # what torch.utils.cpp_extension.get_cxx_compiler() returns, without importing it
    return os.environ.get("CXX", "cl" if sys.platform == "win32" else "c++")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source_files(root: Path, sources) -> dict:
    """Every file under the include root (a file #included by another, such as
    emulated.cpp's .cu, is covered without parsing includes) plus the listed sources,
    each with its sha256, by path relative to the root."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[path.relative_to(root).as_posix()] = _file_digest(path)
    for path in sources:
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = str(path.resolve())
        files.setdefault(rel, _file_digest(path))
    return files


def _cuda_key() -> dict:
    from torch.utils import cpp_extension

    # torch reads CUDA_HOME at import; fastmi/infogan/cuda.py sets it before building
    home = getattr(cpp_extension, "CUDA_HOME", None)
    nvcc = os.environ.get("PYTORCH_NVCC") or (os.path.join(home, "bin", "nvcc") if home else None)
    capabilities = []
    if torch.cuda.is_available():
        capabilities = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return {"home": home, "nvcc": _tool(nvcc), "torch_cuda": torch.version.cuda, "device_capabilities": capabilities}


def build_key(name: str, sources, *, cflags=(), ldflags=(), cuda_cflags=None, source_dir=None) -> dict:
    """Everything the library ``name`` built from ``sources`` depends on: what its cache
    folder's name hashes and what ``key.json`` holds."""
    root = Path(source_dir) if source_dir is not None else SOURCE_DIR
    srcs = [root / s for s in sources]
    with_cuda = any(s.suffix in _CUDA_SUFFIXES for s in srcs)
    key = {
        "format": KEY_FORMAT,
        "name": name,
        "sources": [Path(s).as_posix() for s in sources],
        "files": _source_files(root, srcs),
        "flags": {"cflags": list(cflags), "ldflags": list(ldflags),
                  "cuda_cflags": None if cuda_cflags is None else list(cuda_cflags)},
        # the install's path, not only its version: two environments with the same version
        # string can hold different builds (a nightly, a local build), and the build file
        # bakes in the include and library paths of the torch that built it
        "torch": {"version": torch.__version__, "git": getattr(torch.version, "git_version", None),
                  "path": str(Path(torch.__file__).resolve().parent), "cuda": torch.version.cuda,
                  "hip": getattr(torch.version, "hip", None),
                  "cxx11_abi": bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))},
        "python": {"abi": sysconfig.get_config_var("EXT_SUFFIX"), "tag": sys.implementation.cache_tag,
                   "include": sysconfig.get_paths()["include"]},
        "compiler": _tool(_cxx_command()),
        # what torch detected on this CPU, which host_isa_flags() turns into -m flags: a
        # cache shared by machines with different CPUs keeps one binary per ISA
        "isa": {"machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "cuda": _cuda_key() if with_cuda else None,
        "env": {var: os.environ[var] for var in _BUILD_ENV if var in os.environ},
    }
    return key


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def library_dir(name: str, key: dict) -> Path:
    """The cache folder of the library ``name`` under ``key``."""
    return cache_root() / f"{name}-{key_digest(key)}"


def _import(name: str, path: Path):
    """Imports the extension module ``name`` from the file ``path`` (as torch does)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _remove_stale_builds(folder: Path) -> None:
    """Removes the private folders of builds that died (called under the key's lock, so
    no live build of this key can own one)."""
    for stale in folder.glob("build-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _run_ninja(name, sources, build_dir, *, cflags, ldflags, cuda_cflags, include_dir, with_cuda, verbose):
    """Writes torch's build file into ``build_dir`` and runs ninja there.

    torch.utils.cpp_extension.load would also do this, but it holds a FileBaton lock in the
    build folder (a file that outlives a killed holder and makes every later load wait
    forever), renames the module to <name>_v<N> when called twice in a process with other
    arguments, and imports the library from the build folder. Its build step alone is
    _write_ninja_file_and_build_library: the same flags, include and library paths as load.
    """
    from torch.utils import cpp_extension

    write_and_build = cpp_extension._write_ninja_file_and_build_library
    kwargs = dict(name=name, sources=[str(s) for s in sources], extra_cflags=list(cflags),
                  extra_cuda_cflags=list(cuda_cflags or ()), extra_sycl_cflags=[], extra_ldflags=list(ldflags),
                  extra_include_paths=[str(include_dir)], build_directory=str(build_dir), verbose=verbose,
                  with_cuda=with_cuda, with_sycl=False, is_standalone=False)
    accepted = inspect.signature(write_and_build).parameters
    write_and_build(**{k: v for k, v in kwargs.items() if k in accepted})  # older torch: no sycl arguments


def _build_into(folder: Path, name: str, key: dict, srcs, *, what, cflags, ldflags, cuda_cflags, include_dir):
    library = folder / f"{name}{LIB_SUFFIX}"
    print(f"fastmi: building {what} with ninja (first use; cached in {folder}) ...", file=sys.stderr, flush=True)
    _ensure_ninja_on_path()
    build_dir = folder / f"build-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    build_dir.mkdir(parents=True)
    try:
        _run_ninja(name, srcs, build_dir, cflags=cflags, ldflags=ldflags, cuda_cflags=cuda_cflags,
                   include_dir=include_dir, with_cuda=key["cuda"] is not None,
                   verbose=os.environ.get("FASTMI_VERBOSE_BUILD") == "1")
        built = build_dir / library.name
        # on disk before it is visible under its final name: a crash right after the
        # rename cannot leave a truncated library there
        with open(built, "rb") as f:
            os.fsync(f.fileno())
        key_tmp = build_dir / KEY_FILE
        key_tmp.write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")
        os.replace(key_tmp, folder / KEY_FILE)
        os.replace(built, library)  # last: the library's presence means the entry is whole
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def build(name: str, sources, *, what: str, cflags=(), ldflags=(), cuda_cflags=None, source_dir=None):
    """Builds (or loads from the cache) the extension ``name`` from ``sources`` (paths
    relative to csrc/, or to ``source_dir``, the include root, when given), printing one
    line while a build runs and one while it waits for another process's build."""
    root = Path(source_dir) if source_dir is not None else SOURCE_DIR
    key = build_key(name, sources, cflags=cflags, ldflags=ldflags, cuda_cflags=cuda_cflags, source_dir=root)
    folder = library_dir(name, key)
    library = folder / f"{name}{LIB_SUFFIX}"
    with _load_lock:
        if library in _loaded:
            return _loaded[library]
        if not library.exists():
            folder.mkdir(parents=True, exist_ok=True)
            with build_lock.hold(folder / "build.lock", what=what) as locked:
                if not library.exists():  # not built by the process we waited for
                    if locked:
                        _remove_stale_builds(folder)
                    _build_into(folder, name, key, [root / s for s in sources], what=what, cflags=cflags,
                                ldflags=ldflags, cuda_cflags=cuda_cflags, include_dir=root)
        try:
            module = _import(name, library)
        except ImportError as exc:
            raise ImportError(f"{library} does not load ({exc}); delete {folder} to rebuild it") from exc
        _loaded[library] = module
        _loaded_by_name[name] = (folder, key)
        return module


def loaded(name: str):
    """``(folder, key)`` of the library ``name`` this process has loaded, or None."""
    return _loaded_by_name.get(name)


def host_isa_flags() -> list:
    """Vector-ISA flags for the host compiler, from what torch detected on this CPU (the
    cache key includes them, so a shared home directory never hands an AVX-512 build to
    an AVX2 machine)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]
    if capability == "AVX2":
        return ["-mavx2", "-mfma", "-mf16c"]
    return []


def unavailable_reason(extension):
    """None when ``extension()`` loads (building it if needed), else its RuntimeError's text."""
    try:
        extension()
    except RuntimeError as exc:
        return str(exc)
    return None
