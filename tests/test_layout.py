"""The layout constants exist twice, once per language: where each partial sum and each
stat lives. csrc/infogan/math.h holds the C++ one (SumIndex, kFixedSums, StatIndex, for
the CPU and CUDA kernels), kernels/infogan/config.py the Python one (SUM_*, FIXED_SUMS,
STAT_*, STATS_FIXED, for the Triton kernels and the Python side). A mismatch would
silently read one loss term as another, so the header is parsed and compared here, name
by name: SumIndex's kRealNeg is SUM_REAL_NEG, StatIndex's kMiCat0 is STAT_MI_CAT0.

The layers, too: each op sits on fastmi/runtime, the kernels under both, and no package
imports one above it or another op (test_nothing_imports_upward).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from fastmi.kernels.infogan import config

MATH_H = Path(__file__).resolve().parents[1] / "csrc" / "infogan" / "math.h"


def _snake(name: str) -> str:
    """kRealNeg -> REAL_NEG, kMiCat0 -> MI_CAT0."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name[1:]).upper()


def parse_enum(text: str, enum: str) -> dict:
    """{name: value} of ``enum <enum> ... { ... };`` in C++ source, with C++'s rule for an
    entry without an initializer (one more than the entry before)."""
    match = re.search(rf"\benum\s+{enum}\b[^{{]*\{{(.*?)\}};", text, re.S)
    if match is None:
        raise ValueError(f"enum {enum} not found")
    body = re.sub(r"//[^\n]*|/\*.*?\*/", "", match.group(1), flags=re.S)
    values, nxt = {}, 0
    for entry in filter(None, (e.strip() for e in body.split(","))):
        name, _, init = (part.strip() for part in entry.partition("="))
        nxt = int(init, 0) if init else nxt
        values[name] = nxt
        nxt += 1
    return values


def parse_constant(text: str, name: str) -> int:
    match = re.search(rf"\bconstexpr\s+int\s+{name}\s*=\s*(\w+)\s*;", text)
    if match is None:
        raise ValueError(f"constexpr int {name} not found")
    return int(match.group(1), 0)


def cpp_layout(text: str) -> dict:
    """The header's constants under their Python names."""
    layout = {f"SUM_{_snake(k)}": v for k, v in parse_enum(text, "SumIndex").items()}
    layout.update({f"STAT_{_snake(k)}": v for k, v in parse_enum(text, "StatIndex").items()})
    layout["FIXED_SUMS"] = parse_constant(text, "kFixedSums")
    return layout


def python_layout(namespace) -> dict:
    """config.py's constants: every SUM_* and STAT_*, and FIXED_SUMS. STATS_FIXED has no
    C++ name: it is where mi_categorical starts, StatIndex's kMiCat0."""
    names = [n for n in vars(namespace) if n.startswith(("SUM_", "STAT_")) or n == "FIXED_SUMS"]
    layout = {n: getattr(namespace, n) for n in names}
    layout["STAT_MI_CAT0"] = namespace.STAT_MI_CAT0
    return layout


def mismatches(cpp: dict, py: dict, stats_fixed: int) -> list:
    """Every way the two sides disagree, as readable lines (empty: they agree)."""
    out = [f"{n}: math.h {cpp.get(n, 'missing')}, config.py {py.get(n, 'missing')}"
           for n in sorted(set(cpp) | set(py)) if cpp.get(n) != py.get(n)]
    if stats_fixed != cpp.get("STAT_MI_CAT0"):
        out.append(f"STATS_FIXED: config.py {stats_fixed}, math.h kMiCat0 {cpp.get('STAT_MI_CAT0')}")
    return out


def test_math_h_and_config_py_agree():
    cpp = cpp_layout(MATH_H.read_text())
    assert {"SUM_REAL_NEG", "SUM_CAT0", "STAT_JSD", "STAT_MI_CAT0", "FIXED_SUMS"} <= set(cpp)
    assert mismatches(cpp, python_layout(config), config.STATS_FIXED) == []


def test_the_sum_block_ends_where_the_categorical_sums_start():
    cpp = cpp_layout(MATH_H.read_text())
    assert cpp["FIXED_SUMS"] == cpp["SUM_CAT0"] == max(v for n, v in cpp.items() if n.startswith("SUM_"))
    assert config.STATS_FIXED == max(v for n, v in cpp.items() if n.startswith("STAT_"))


@pytest.mark.parametrize("edit", [
    ("kFakePos = 2", "kFakePos = 3"),                  # a sum moves
    ("kMiCont = 2", "kMiCont = 1"),                    # a stat moves
    ("kMiCont = 2,", "kMiCont = 2, kMiExtra = 3,"),   # a stat on one side only
    ("kFixedSums = 6", "kFixedSums = 7"),
], ids=["sum", "stat", "extra-entry", "fixed-sums"])
def test_a_change_to_the_header_is_caught(edit):
    text = MATH_H.read_text()
    assert edit[0] in text, f"the test's edit no longer applies to math.h: {edit[0]!r}"
    cpp = cpp_layout(text.replace(edit[0], edit[1], 1))
    assert mismatches(cpp, python_layout(config), config.STATS_FIXED) != []


def test_entries_without_initializer_count_as_cpp_counts_them():
    assert parse_enum("enum E : int { kA = 4, kB, /* gap */ kC = 9, // x\n kD };", "E") == \
        {"kA": 4, "kB": 5, "kC": 9, "kD": 10}
    text = MATH_H.read_text()
    assert "kFakeNeg = 3" in text
    implicit = cpp_layout(text.replace("kFakeNeg = 3", "kFakeNeg", 1))   # still 3 after kFakePos = 2
    assert mismatches(implicit, python_layout(config), config.STATS_FIXED) == []


@pytest.mark.parametrize("name, value", [("SUM_BERN", 5), ("STAT_MI_BERN", 2), ("FIXED_SUMS", 7),
                                         ("SUM_EXTRA", 9)])
def test_a_change_to_config_py_is_caught(name, value):
    class Edited:
        pass
    edited = Edited()
    vars(edited).update(python_layout(config))
    setattr(edited, name, value)
    cpp = cpp_layout(MATH_H.read_text())
    assert mismatches(cpp, python_layout(edited), config.STATS_FIXED) != []


def test_a_change_to_stats_fixed_is_caught():
    cpp = cpp_layout(MATH_H.read_text())
    assert mismatches(cpp, python_layout(config), config.STATS_FIXED + 1) != []


# ---- nothing imports upward -------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
# package -> the fastmi packages it must not import: the ops sit on the runtime, the
# kernels under both; an op never reaches into another op, the trainer or the benchmarks.
FORBIDDEN = {
    "fastmi.runtime": ("fastmi.infogan", "fastmi.critic", "fastmi.train", "fastmi.bench", "fastmi.examples"),
    "fastmi.kernels": ("fastmi.infogan", "fastmi.critic", "fastmi.runtime", "fastmi.train", "fastmi.bench"),
    "fastmi.infogan": ("fastmi.critic", "fastmi.train", "fastmi.bench", "fastmi.examples"),
    "fastmi.critic": ("fastmi.infogan", "fastmi.train", "fastmi.bench", "fastmi.examples"),
}


def _module_imports(path: Path, module: str) -> list:
    """The absolute names ``path`` (module ``module``) imports, relative imports resolved."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".")[:len(module.split(".")) - node.level] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names += [target] + [f"{target}.{alias.name}" for alias in node.names]
    return names


def _package_files():
    for folder, package in ((ROOT / "fastmi", "fastmi"), (ROOT / "kernels", "fastmi.kernels")):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            yield path, ".".join((package, *parts[:-1], *(() if parts[-1] == "__init__" else parts[-1:])))


def test_nothing_imports_upward():
    wrong = []
    for path, module in _package_files():
        for package, forbidden in FORBIDDEN.items():
            if module == package or module.startswith(package + "."):
                wrong += [f"{module} imports {name}" for name in _module_imports(path, module)
                          if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert not wrong, "\n".join(wrong)


def test_the_import_rule_sees_a_planted_upward_import(tmp_path):
    planted = tmp_path / "registry.py"
    planted.write_text("from ..infogan import api\n")
    names = _module_imports(planted, "fastmi.runtime.registry")
    assert "fastmi.infogan.api" in names and any(n.startswith(FORBIDDEN["fastmi.runtime"][0]) for n in names)
