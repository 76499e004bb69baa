"""The one place that decides which array library tinygan computes with.

Every other module writes ``from tinygan.backend import xp`` and calls ``xp.zeros``,
``xp.exp``, ... . ``xp`` is a thin stand-in that forwards each attribute to the
library in use (NumPy by default, CuPy after ``use("cupy")`` or with
``TINYGAN_BACKEND=cupy``), so switching backends also switches modules that
imported ``xp`` earlier.

Random numbers come from one seeded generator, ``rng()``, that lives on the same
device as the arrays; ``seed(n)`` re-seeds it (and the host generator used for
shuffling data, which lives in NumPy because the data does).
"""

import ctypes
import os
import platform

import numpy

BACKENDS = ("numpy", "cupy")

_library = numpy  # the array module in use
_name = "numpy"
_rng = numpy.random.default_rng(0)
_host_rng = numpy.random.default_rng(0)


class _ArrayNamespace:
    """Forwards ``xp.anything`` to the active array library (numpy or cupy)."""

    def __getattr__(self, attr):
        return getattr(_library, attr)

    def __repr__(self):
        return f"<tinygan array namespace: {_name}>"


xp = _ArrayNamespace()


def _import_cupy():
    """Import CuPy and check that a GPU is visible; one-line errors otherwise."""
    try:
        import cupy
    except ImportError:
        raise RuntimeError(
            "tinygan backend 'cupy' needs CuPy, which is not installed: "
            "pip install 'tinygan[cuda12]' (or [cuda13])"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise RuntimeError(f"tinygan backend 'cupy': no usable GPU ({err})") from None
    if count == 0:
        raise RuntimeError("tinygan backend 'cupy': CuPy is installed but no GPU is visible")
    return cupy


def use(name):
    """Switch the array library: ``use("numpy")`` or ``use("cupy")``."""
    global _library, _name
    if name not in BACKENDS:
        raise ValueError(f"unknown tinygan backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    _library = numpy if name == "numpy" else _import_cupy()
    _name = name
    seed(0)


def name():
    """The name of the backend in use: 'numpy' or 'cupy'."""
    return _name


def seed(n):
    """Re-seed the device generator (weights, noise, dropout) and the host one (shuffling)."""
    global _rng, _host_rng
    _rng = _library.random.default_rng(n)
    _host_rng = numpy.random.default_rng(n)


def rng():
    """The seeded random generator of the active backend."""
    return _rng


def host_rng():
    """The seeded NumPy generator for host-side randomness (data shuffling)."""
    return _host_rng


def get_rng_state():
    """A picklable snapshot of both generators, for checkpoints and gradient checks.

    NumPy generators expose their full state. CuPy's XORWOW generator does not, so on
    CuPy the device part is ``None`` and restoring it re-seeds from the host generator.
    """
    device = getattr(_rng.bit_generator, "state", None) if _name == "numpy" else None
    return {"device": device, "host": _host_rng.bit_generator.state}


def set_rng_state(state):
    """Restore a snapshot taken by ``get_rng_state``."""
    global _rng
    _host_rng.bit_generator.state = state["host"]
    if state["device"] is not None and _name == "numpy":
        _rng.bit_generator.state = state["device"]
    else:
        _rng = _library.random.default_rng(int(_host_rng.integers(2**63)))


def to_device(array, dtype=None):
    """Move a host (NumPy) array to the active backend, optionally casting it."""
    out = _library.asarray(array)
    return out if dtype is None else out.astype(dtype, copy=False)


def to_host(array):
    """Return a NumPy array, copying from the GPU when the array lives there."""
    if isinstance(array, numpy.ndarray):
        return array
    if hasattr(array, "get"):  # cupy.ndarray
        return array.get()
    return numpy.asarray(array)


_freed_memory_kept = False


def keep_freed_memory():
    """Let the C allocator keep freed memory for reuse; returns whether it applied.

    A training step allocates and frees the same large arrays every time (activations,
    their gradients, temporaries: 3.2 MB each in a DCGAN at batch 64). glibc's malloc
    serves such sizes with fresh mmap()s or shrinks its heap once they are freed, so
    each new array is page-faulted in again, 4 KiB at a time: 3,400-3,800 faults and
    4 ms of kernel time per 120 ms DCGAN step. Two ``mallopt`` settings stop that: requests
    below 32 MiB come from the heap (M_MMAP_THRESHOLD), and the heap gives back its free
    top only beyond 1 GiB (M_TRIM_THRESHOLD), so freed arrays are reused without faults.
    The cost: the process keeps its peak heap after training instead of shrinking.
    The NumPy backend on glibc (Linux) only; elsewhere it does nothing. Idempotent.
    """
    global _freed_memory_kept
    if _freed_memory_kept or _name != "numpy" or platform.libc_ver()[0] != "glibc":
        return _freed_memory_kept
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's <malloc.h>
    _freed_memory_kept = bool(libc.mallopt(m_mmap_threshold, 32 << 20)
                              and libc.mallopt(m_trim_threshold, 1 << 30))
    return _freed_memory_kept


if os.environ.get("TINYGAN_BACKEND", "numpy") != "numpy":
    use(os.environ["TINYGAN_BACKEND"])
