"""Test helpers shared by the engine-core tests.

Inputs are drawn on the host with NumPy and moved to the backend under test with
``backend.to_device``; results come back with ``backend.to_host`` before comparing.
So every test that uses these helpers runs unchanged under ``TINYGAN_BACKEND=cupy``.
"""

import gzip
import importlib
import os
import sys

import numpy as np
from conftest import REPO

from tinygan import backend


def host_rng(seed):
    """A host NumPy generator for test data (independent of tinygan's own generator)."""
    return np.random.default_rng(seed)


def randn(rng, *shape):
    """Standard-normal float64 array of ``shape``, on the backend under test."""
    return backend.to_device(rng.standard_normal(shape))


def away_from_zero(rng, *shape, gap=0.1):
    """Float64 values with |v| >= gap, on the device: keeps finite differences off the
    kink of ReLU / LeakyReLU, where the two one-sided derivatives differ."""
    v = rng.standard_normal(shape)
    return backend.to_device(np.sign(v) * (gap + np.abs(v)))


def rel_error(actual, expected, floor=0.0):
    """Norm-wise relative error ||a - b|| / max(||a||, ||b||, floor), computed on the host.

    ``floor`` is for gradients that are zero in exact arithmetic (a bias followed by
    BatchNorm): both sides are then rounding noise and only an absolute scale makes sense.
    """
    a = np.asarray(backend.to_host(actual), dtype=np.float64)
    b = np.asarray(backend.to_host(expected), dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != expected {b.shape}"
    diff = float(np.linalg.norm((a - b).ravel()))
    scale = max(float(np.linalg.norm(a.ravel())), float(np.linalg.norm(b.ravel())), floor)
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def assert_close(actual, expected, tol, what="", floor=0.0):
    """Fail with the relative error in the message unless it is below ``tol``."""
    err = rel_error(actual, expected, floor)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol:g}"


def cupy_works():
    """Whether CuPy is installed *and* sees a GPU (CuPy imports without one)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pythonpath_with(folder):
    """PYTHONPATH for a child process: ``folder`` first, then what this one was given (so
    a run under the CuPy stand-in, tests/cupy_stand_in, keeps it in its children), made
    absolute, as the children run in other folders."""
    given = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return os.pathsep.join([str(folder), *(os.path.abspath(p) for p in given if p)])


def write_idx(path, array, magic=None):
    """Write ``array`` (uint8) as an IDX file, gzipped when the name ends in .gz."""
    magic = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    header = magic + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def benchmarks_module(name):
    """benchmarks.<name>, imported from the checkout (the scripts are not installed)."""
    sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module(f"benchmarks.{name}")
    finally:
        sys.path.remove(str(REPO))
