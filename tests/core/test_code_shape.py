"""The shape issue 14 asked for, kept by a test: no function over 100 lines, no fallback for a
module of the package, no probing of our own modules, no unreferenced function in ``src/``.

The dead-code check runs vulture (a test-only dependency) over ``src``, ``tests`` and
``benchmarks`` together, so a function used only by a test or a benchmark counts as used.
Names that are called by a framework, not by our code, are listed with the reason.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "robustlens"
MAX_FUNCTION_LINES = 100

# Called by a framework, not by name in our code.
VULTURE_IGNORE_NAMES = {
    "forward": "nn.Module.__call__",
    "extra_repr": "nn.Module.__repr__",
    "find_class": "pickle.Unpickler (the CIFAR reader's restricted unpickler)",
    "__getattr__": "PEP 562 lazy attributes of robustlens.data / robustlens.probes",
    "best_checkpoint": "public attribute of TrainResult, beside .checkpoint",
}
VULTURE_IGNORE_DECORATORS = ("@register", "@*.register")  # registry members are reached by name


def _trees():
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(ROOT), ast.parse(path.read_text(), filename=str(path))


def test_no_function_is_longer_than_a_page():
    long = []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name} ({node.end_lineno - start + 1} lines)")
    assert not long, long


def _imports_robustlens(stmts) -> bool:
    for node in (n for s in stmts for n in ast.walk(s)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robustlens"):
            return True
        if isinstance(node, ast.Import) and any(a.name.startswith("robustlens") for a in node.names):
            return True
    return False


def test_no_import_fallback_for_our_own_modules():
    found = []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and _imports_robustlens(node.body):
                caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
                if "ImportError" in caught or "ModuleNotFoundError" in caught:
                    found.append(f"{rel}:{node.lineno}")
    assert not found, f"try: import robustlens... except ImportError at {found}"


def _module_names(tree) -> set[str]:
    """Names bound to a robustlens module (``import robustlens.x as m``, ``from robustlens import x``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("robustlens")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robustlens"):
            for a in node.names:
                if importlib.util.find_spec(f"{node.module}.{a.name}") if _is_package(node.module) else False:
                    names.add(a.asname or a.name)
    return names


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def test_no_probing_of_our_own_modules():
    found = []
    for rel, tree in _trees():
        modules = _module_names(tree)
        lazy = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "__getattr__" for n in ast.walk(f)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in modules and id(node) not in lazy):
                found.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
    assert not found, found


@pytest.mark.skipif(shutil.which("vulture") is None and importlib.util.find_spec("vulture") is None,
                    reason="vulture is not installed (pip install -e '.[test]')")
def test_no_unreferenced_function_in_src():
    cmd = [sys.executable, "-m", "vulture", "src", "tests", "benchmarks", "--min-confidence", "60",
           "--ignore-names", ",".join(VULTURE_IGNORE_NAMES), "--ignore-decorators", ",".join(VULTURE_IGNORE_DECORATORS)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    dead = [line for line in out if line.startswith("src/") and any(k in line for k in ("function", "method", "class", "property"))]
    assert not dead, "\n".join(dead)
