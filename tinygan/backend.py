"""The one place that decides which array library tinygan computes with.

Every other module writes ``from tinygan.backend import xp`` and calls ``xp.zeros``,
``xp.exp``, ... . ``xp`` is a thin stand-in that forwards each attribute to the
library in use (NumPy by default, CuPy after ``use("cupy")`` or with
``TINYGAN_BACKEND=cupy``), so switching backends also switches modules that
imported ``xp`` earlier. It remembers each name it has looked up (a step of a small
GAN asks ``xp`` for about 500 names, each lookup through the library costing about a
microsecond) and forgets them all when ``use`` switches the library. The library is
chosen on first use, not on import, so that a ``TINYGAN_BACKEND`` that cannot run
(no GPU) fails where errors are reported (the CLI's one line), not inside some
``import tinygan...``.

Random numbers come from one seeded generator, ``rng()``, that lives on the same
device as the arrays; ``seed(n)`` re-seeds it (and the host generator used for
shuffling data, which lives in NumPy because the data does).
"""

import ctypes
import numbers
import os
import platform

import numpy

BACKENDS = ("numpy", "cupy")

_library = None  # the array module in use; None until first use (see _active)
_name = None
_rng = None  # the device generator, on _library
_device_seed = None  # the seed _rng was started from, until it is handed out (get_rng_state)
_host_rng = None  # NumPy's, for the data


class _ArrayNamespace:
    """Forwards ``xp.anything`` to the active array library (numpy or cupy)."""

    def __getattr__(self, attr):
        if attr.startswith("__"):  # introspection (inspect, copy, hasattr probes): it must
            raise AttributeError(attr)  # not choose the backend, nor fail when it cannot run
        value = getattr(_active(), attr)
        # kept as a plain attribute, which Python finds without calling __getattr__ again;
        # forget_names() clears them
        self.__dict__[attr] = value
        return value

    def __repr__(self):
        return f"<tinygan array namespace: {_name or 'chosen on first use'}>"


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
    library = numpy if name == "numpy" else _import_cupy()
    previous = _library, _name
    _library, _name = library, name
    forget_names()  # those looked up in the previous library
    try:
        seed(0)  # on CuPy the first work on the GPU, which can still fail (out of memory)
    except BaseException:
        _library, _name = previous  # a failed switch changes nothing, not even half
        forget_names()
        raise


def forget_names():
    """Make ``xp`` look every name up again in the library in use: after ``use``
    switched the library, or after a test replaced some of the library's functions."""
    vars(xp).clear()


def _active():
    """The array module in use; on first use, the one TINYGAN_BACKEND names (else NumPy)."""
    if _library is None:
        requested = os.environ.get("TINYGAN_BACKEND") or "numpy"  # set but empty: unset
        try:
            use(requested)
        except (ValueError, RuntimeError) as err:  # say where the name came from
            # as a plain ValueError or RuntimeError: CuPy's own errors (CUDARuntimeError)
            # are built from a status code, not from a message
            kind = ValueError if isinstance(err, ValueError) else RuntimeError
            raise kind(f"TINYGAN_BACKEND={requested}: {err}") from None
    return _library


def name():
    """The name of the backend in use: 'numpy' or 'cupy'."""
    _active()
    return _name


def seed(n):
    """Re-seed the device generator (weights, noise, dropout) and the host one (shuffling)."""
    global _host_rng
    _active()
    _seed_device(n)
    _host_rng = numpy.random.default_rng(n)


def _seed_device(n):
    global _rng, _device_seed
    _rng = _library.random.default_rng(n)
    # what a snapshot on CuPy records while no draw has been made: a plain int (JSON, and
    # set_rng_state tells seeds by it); a seed that is no single number (None, a list) is
    # not kept, so a snapshot draws a fresh seed instead
    _device_seed = int(n) if isinstance(n, numbers.Integral) else None


def rng():
    """The seeded random generator of the active backend."""
    global _device_seed
    _active()
    _device_seed = None  # handed out, so perhaps drawn from: its seed no longer says its state
    return _rng


def host_rng():
    """The seeded NumPy generator for host-side randomness (data shuffling)."""
    _active()
    return _host_rng


def get_rng_state():
    """A picklable snapshot of both generators, for checkpoints and gradient checks.

    NumPy generators expose their full state. CuPy's XORWOW generator does not (its state
    lives on the GPU), so on CuPy the snapshot holds a seed instead: if the device
    generator has been handed out since it was seeded, it is started afresh from a seed
    drawn from the host generator first (so taking a snapshot then moves the host stream
    on by one draw and restarts the device stream). Either way, restoring the snapshot
    replays exactly the draws that followed it.
    """
    if name() == "numpy":
        device = _rng.bit_generator.state
    else:
        if _device_seed is None:
            _seed_device(int(_host_rng.integers(2**63)))
        device = _device_seed
    return {"device": device, "host": _host_rng.bit_generator.state}


def set_rng_state(state):
    """Restore a snapshot taken by ``get_rng_state`` (on either backend)."""
    global _device_seed
    on_numpy = name() == "numpy"
    _host_rng.bit_generator.state = state["host"]
    device = state["device"]
    if isinstance(device, int):  # taken on CuPy: a seed
        if device != _device_seed:  # else the generator is fresh from it: nothing to redo
            _seed_device(device)  # (on CuPy that sets up 256,000 cuRAND states: not free)
    elif on_numpy and device is not None:  # a NumPy generator's full state
        _rng.bit_generator.state = device
        _device_seed = None  # no longer fresh from the seed it was started from
    else:  # a NumPy state cannot be carried over to CuPy: start from the host generator
        _seed_device(int(_host_rng.integers(2**63)))


def to_device(array, dtype=None):
    """Move a host (NumPy) array to the active backend, optionally casting it."""
    out = _active().asarray(array)
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
    if _freed_memory_kept or name() != "numpy" or platform.libc_ver()[0] != "glibc":
        return _freed_memory_kept
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's <malloc.h>
    _freed_memory_kept = bool(libc.mallopt(m_mmap_threshold, 32 << 20)
                              and libc.mallopt(m_trim_threshold, 1 << 30))
    return _freed_memory_kept

