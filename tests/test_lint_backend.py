"""The backend rule, enforced: array math goes through ``tinygan.backend.xp``.

No module in tinygan/ imports numpy except the backend itself and the few modules that
genuinely work on the host (listed below, with why). And no module imports torch at
all: PyTorch is a test oracle and a benchmark peer, never a dependency.
Imports are found with ``ast``, so ``import numpy as np`` inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinygan"

# Relative to tinygan/. Keep this list short: a module that computes on arrays belongs
# on the backend, or it will silently run on the CPU under TINYGAN_BACKEND=cupy.
HOST_MODULES = {
    "backend.py",  # decides between numpy and cupy
    "data.py",  # reads IDX files and generates toy data into host arrays
    "plots.py",  # matplotlib works on host arrays
    "checkpoint.py",  # .npz I/O, after backend.to_host
    "cli.py",  # host-side seeds and label arrays for sampling
    "runner.py",  # host-side bookkeeping of a run: metrics, samples for pictures
    "nn/conv_naive.py",  # loop-by-loop reference convolutions, a test yardstick
    "metrics.py",  # float64 statistics of samples already copied to the host
    "classifier.py",  # host-side results (to_host), .npz I/O, host shuffling generator
}


def imported_modules(path):
    """(line, top-level module name) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def package_files():
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no modules found under {PACKAGE}"
    return files


def offenders(banned, allowed=frozenset()):
    found = []
    for path in package_files():
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in allowed:
            continue
        for line, module in imported_modules(path):
            if module in banned:
                found.append(f"tinygan/{relative}:{line} imports {module}")
    return found


def test_only_host_modules_import_numpy():
    bad = offenders({"numpy"}, HOST_MODULES)
    assert not bad, ("use `from tinygan.backend import xp` for array math (or, for "
                     "genuinely host-side code, add the module to HOST_MODULES):\n"
                     + "\n".join(bad))


def test_no_module_imports_torch():
    bad = offenders({"torch", "torchvision"})
    assert not bad, "tinygan must not depend on PyTorch:\n" + "\n".join(bad)


def test_the_lint_sees_imports_in_every_form(tmp_path):
    """The detector itself: plain, aliased, dotted, from-imports and nested imports."""
    source = ("import numpy as np\n"
              "from numpy.lib import stride_tricks\n"
              "def f():\n"
              "    import numpy.random\n"
              "from tinygan.backend import xp\n"
              "from . import numpy_helpers\n")
    path = tmp_path / "example.py"
    path.write_text(source)
    found = [(line, name) for line, name in imported_modules(path)]
    assert sorted(found) == [(1, "numpy"), (2, "numpy"), (4, "numpy"), (5, "tinygan")]


def xp_attribute_chains(path):
    """(line, ("lib", "stride_tricks", "as_strided")) for every ``xp.a.b...`` in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id == "xp":
                yield node.lineno, tuple(reversed(chain))


def test_every_xp_name_tinygan_uses_exists_in_cupy():
    """A NumPy-only function behind ``xp`` would fail only on a GPU. CuPy imports without
    one, so its namespace can be checked here (skipped when CuPy is not installed)."""
    try:
        import cupy
    except ImportError:
        pytest.skip("CuPy is not installed")
    if getattr(cupy, "_FAKE", False):  # tests/cupy_stand_in forwards every NumPy name
        pytest.skip("the CuPy stand-in is on the path, not CuPy's own namespace")
    missing, checked = [], set()
    for path in package_files():
        for line, chain in xp_attribute_chains(path):
            checked.add(chain)
            target = cupy
            for name in chain:
                if not hasattr(target, name):
                    missing.append(f"tinygan/{path.relative_to(PACKAGE).as_posix()}:{line}: "
                                   f"xp.{'.'.join(chain)}")
                    break
                target = getattr(target, name)
    assert {("matmul",), ("lib", "stride_tricks", "as_strided")} <= checked  # the walk works
    assert not missing, "not in CuPy:\n" + "\n".join(missing)
