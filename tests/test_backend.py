"""The array backend: switching, its error messages, seeding and host/device moves.

Tests that switch backends put back the one under test (``TINYGAN_BACKEND``) afterwards.
Without a GPU, a stand-in "cupy" module (NumPy behind a recording proxy) shows that the
switch reaches modules which imported ``xp`` before it happened.
"""

import json
import os
import platform
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import cupy_works, host_rng

from tinygan import backend, nn
from tinygan.backend import xp
from tinygan.nn import activations

needs_cupy = pytest.mark.skipif(not cupy_works(), reason="CuPy with a visible GPU not available")


@pytest.fixture
def restore_backend():
    """Switch back to the backend under test after a test that switches. Request it
    before ``monkeypatch``, so the stand-in cupy is gone when it switches back."""
    under_test = backend.name()
    yield
    backend.use(under_test)


def fake_cupy(device_count=1):
    """A module named cupy that computes with NumPy and records the names looked up."""
    module = types.ModuleType("cupy")
    module.looked_up = []

    def getattr_(name):
        module.looked_up.append(name)
        return getattr(np, name)

    module.__getattr__ = getattr_
    module.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: device_count))
    return module


# -- choosing a backend ------------------------------------------------------------------

def test_use_numpy(restore_backend):
    backend.use("numpy")
    assert backend.name() == "numpy"
    assert xp.zeros is np.zeros
    assert isinstance(backend.rng(), np.random.Generator)
    assert "numpy" in repr(xp)


def test_unknown_backend_lists_the_valid_ones(restore_backend):
    before = backend.name()
    with pytest.raises(ValueError, match="unknown tinygan backend 'nope'") as err:
        backend.use("nope")
    message = str(err.value)
    assert "numpy" in message and "cupy" in message and "\n" not in message
    assert backend.name() == before  # a failed switch changes nothing


def test_cupy_not_installed_gives_one_line_error(restore_backend, monkeypatch):
    before = backend.name()
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(RuntimeError, match="needs CuPy, which is not installed") as err:
        backend.use("cupy")
    assert "\n" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no traceback chain
    assert backend.name() == before


@pytest.mark.parametrize("runtime, expected", [
    (lambda: 0, "CuPy is installed but no GPU is visible"),
    (lambda: 1 / 0, "no usable GPU"),
], ids=["no_gpu", "broken_driver"])
def test_cupy_without_gpu_gives_one_line_error(restore_backend, monkeypatch, runtime, expected):
    module = fake_cupy()
    module.cuda.runtime.getDeviceCount = runtime
    monkeypatch.setitem(sys.modules, "cupy", module)
    with pytest.raises(RuntimeError, match=expected) as err:
        backend.use("cupy")
    assert "\n" not in str(err.value)


class StatusError(RuntimeError):
    """Built from a status code, not a message, as CuPy's CUDARuntimeError is."""

    def __init__(self, status):
        super().__init__(f"cudaErrorMemoryAllocation ({int(status)}): out of memory")


def cupy_whose_first_gpu_work_fails():
    module = fake_cupy()

    def default_rng(seed):
        xp.tanh(np.zeros(1))  # code that looks a name up in the new library before the GPU fails
        raise StatusError(2)

    module.random = types.SimpleNamespace(default_rng=default_rng)
    module.tanh = lambda x: np.tanh(x)  # its own, so a test can tell it from NumPy's
    return module


def test_a_switch_that_fails_on_the_gpu_changes_nothing(restore_backend, monkeypatch):
    """A visible GPU that fails at its first work (out of memory, busy): no half switch
    that pairs CuPy's name and arrays with the old backend's generator."""
    monkeypatch.setitem(sys.modules, "cupy", cupy_whose_first_gpu_work_fails())
    before, generator, tanh = backend.name(), backend.rng(), xp.tanh
    with pytest.raises(StatusError):
        backend.use("cupy")
    assert backend.name() == before and backend.rng() is generator
    assert xp.tanh is tanh  # not the one looked up in the failed library


def test_xp_looks_each_name_up_once_per_switch(restore_backend, monkeypatch):
    """xp keeps what it found (a lookup through the library costs a microsecond, and a
    small GAN's step makes hundreds), and forgets it when the library changes."""
    module = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", module)
    backend.use("cupy")
    for _ in range(3):
        xp.tanh(np.zeros(2))
    assert module.looked_up.count("tanh") == 1
    backend.use("numpy")
    assert xp.tanh is np.tanh
    backend.use("cupy")
    xp.tanh(np.zeros(2))
    assert module.looked_up.count("tanh") == 2


def test_a_first_use_that_fails_on_the_gpu_is_a_one_line_runtime_error(restore_backend,
                                                                       monkeypatch):
    """TINYGAN_BACKEND's name is added to the message of any error, CuPy's too; the next
    use tries again instead of running on a backend left half chosen."""
    monkeypatch.setitem(sys.modules, "cupy", cupy_whose_first_gpu_work_fails())
    monkeypatch.setattr(backend, "_library", None)
    monkeypatch.setattr(backend, "_name", None)
    monkeypatch.setenv("TINYGAN_BACKEND", "cupy")
    for _ in range(2):
        with pytest.raises(RuntimeError) as err:
            backend.rng()
        assert type(err.value) is RuntimeError and str(err.value) == (
            "TINYGAN_BACKEND=cupy: cudaErrorMemoryAllocation (2): out of memory")
        assert backend._library is None


def test_switching_makes_fresh_generators_from_the_new_library(restore_backend, monkeypatch):
    """The device generator must come from the library now in use (a NumPy generator
    left behind would hand host arrays to CuPy code), and both restart from seed 0."""
    module = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", module)
    backend.seed(5)
    backend.rng().random(3)
    backend.use("cupy")
    assert "random" in module.looked_up
    np.testing.assert_array_equal(backend.rng().random(3), np.random.default_rng(0).random(3))
    np.testing.assert_array_equal(backend.host_rng().permutation(5),
                                  np.random.default_rng(0).permutation(5))


def test_xp_follows_the_switch_into_modules_that_imported_it(restore_backend, monkeypatch):
    module = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", module)
    backend.use("cupy")
    assert backend.name() == "cupy" and "cupy" in repr(xp)
    # activations did `from tinygan.backend import xp` long before the switch
    y = nn.Tanh().forward(np.array([0.0, 1.0]))
    assert "tanh" in module.looked_up
    assert activations.xp is xp
    np.testing.assert_allclose(y, np.tanh([0.0, 1.0]))
    backend.use("numpy")
    module.looked_up.clear()
    nn.Tanh().forward(np.array([0.0, 1.0]))
    assert module.looked_up == [] and backend.name() == "numpy"


def test_forget_names_makes_xp_see_a_replaced_function(monkeypatch):
    """A test that replaces one of the library's functions (the GPU transfer guard does)
    must make xp look it up again, before and after."""
    library, real = backend._active(), xp.tanh

    def replaced(x):
        return x

    monkeypatch.setattr(library, "tanh", replaced)
    assert xp.tanh is real  # remembered from before
    backend.forget_names()
    assert xp.tanh is replaced
    monkeypatch.undo()
    backend.forget_names()
    assert xp.tanh is real


@pytest.mark.parametrize("value, picked", [("numpy", "numpy"), ("", "numpy"), ("nope", None)],
                         ids=["numpy", "set-but-empty", "nope"])
def test_environment_variable_picks_the_backend(value, picked):
    """An empty TINYGAN_BACKEND (``TINYGAN_BACKEND= cmd``, or cleared in a script) is unset."""
    env = dict(os.environ, TINYGAN_BACKEND=value)
    code = "from tinygan import backend; print(backend.name())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).parents[1])
    if picked:
        assert result.returncode == 0 and result.stdout.strip() == picked
    else:
        assert result.returncode != 0
        assert ("TINYGAN_BACKEND=nope: unknown tinygan backend 'nope'; valid backends: numpy, "
                "cupy") in result.stderr


def test_a_backend_that_cannot_run_fails_on_first_use_not_on_import():
    """Importing tinygan never fails for TINYGAN_BACKEND's sake; the first array does, with
    the variable named (the CLI turns that into its one-line error)."""
    env = dict(os.environ, TINYGAN_BACKEND="nope")
    code = ("import tinygan.cli, tinygan.nn; print('imported')\n"
            "from tinygan.backend import xp; xp.zeros(1)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert result.stdout == "imported\n" and result.returncode != 0
    assert result.stderr.splitlines()[-1] == ("ValueError: TINYGAN_BACKEND=nope: unknown tinygan "
                                              "backend 'nope'; valid backends: numpy, cupy")


def test_probing_xp_for_dunder_names_does_not_choose_the_backend(monkeypatch):
    """inspect.unwrap, copy, pytest's collection ask hasattr(xp, "__wrapped__") and the like:
    a plain False, not the choice of a backend (nor TINYGAN_BACKEND's error)."""
    monkeypatch.setattr(backend, "_library", None)
    monkeypatch.setenv("TINYGAN_BACKEND", "nope")
    assert not hasattr(xp, "__wrapped__")
    assert backend._library is None


# -- seeding -----------------------------------------------------------------------------

def draw_everything():
    """Numbers from every consumer of the seeded generators."""
    layer = nn.Conv2d(2, 3, 3)
    mask = nn.Dropout(0.5).forward(backend.to_device(np.ones((4, 4))))
    return [backend.to_host(a) for a in (backend.rng().standard_normal(5),
                                         layer.params["weight"], mask)] + [
        backend.host_rng().permutation(10)]


def test_seed_makes_everything_reproducible():
    backend.seed(123)
    first = draw_everything()
    backend.seed(123)
    second = draw_everything()
    backend.seed(124)
    third = draw_everything()
    for a, b, c in zip(first, second, third, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_rng_state_round_trip():
    backend.seed(5)
    state = backend.get_rng_state()
    first = (backend.to_host(backend.rng().random(4)), backend.host_rng().random(4))
    backend.rng().random(100)  # move both generators on
    backend.host_rng().random(100)
    backend.set_rng_state(state)
    second = (backend.to_host(backend.rng().random(4)), backend.host_rng().random(4))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rng_snapshot_under_cupys_rules_is_a_seed_that_replays(monkeypatch):
    """CuPy's generator state cannot be read, so there a snapshot is a seed: the one the
    device generator was started from if nothing was drawn since, else a fresh one drawn
    from the host generator (which moves it on once). Checked here with NumPy's generator
    standing in for CuPy's: only the bookkeeping is under test."""
    monkeypatch.setattr(backend, "_name", "cupy")
    backend.seed(5)
    assert backend.get_rng_state()["device"] == 5  # nothing drawn since seed(5)

    def draws():
        return backend.to_host(backend.rng().random(4)), backend.host_rng().random(4)

    backend.rng().random(3)
    state = backend.get_rng_state()
    assert isinstance(state["device"], int) and state["device"] != 5
    assert backend.get_rng_state() == state  # nothing handed out since: the same snapshot
    first = draws()
    draws()
    backend.set_rng_state(state)
    assert backend.get_rng_state() == state  # a restored snapshot is the state again
    for a, b in zip(first, draws(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_restoring_a_seed_snapshot_keeps_a_generator_nothing_was_drawn_from(monkeypatch):
    """A gradient check restores the snapshot before every evaluation; on CuPy a new
    generator sets up 256,000 cuRAND states, so one that is still fresh from the
    snapshot's seed is kept, and only one that was handed out is started again."""
    monkeypatch.setattr(backend, "_name", "cupy")
    backend.rng()
    state = backend.get_rng_state()
    fresh = backend._rng
    backend.set_rng_state(state)
    assert backend._rng is fresh
    first = backend.to_host(backend.rng().random(4))
    backend.set_rng_state(state)
    assert backend._rng is not fresh
    np.testing.assert_array_equal(backend.to_host(backend.rng().random(4)), first)


def test_a_seed_snapshot_is_a_plain_int_whatever_int_type_seeded(monkeypatch):
    """A checkpoint's meta is JSON, which has no numpy.int64; and set_rng_state tells a
    seed snapshot by its being an int."""
    monkeypatch.setattr(backend, "_name", "cupy")
    backend.seed(np.int64(5))
    state = backend.get_rng_state()
    assert type(state["device"]) is int and state["device"] == 5
    assert json.loads(json.dumps(state)) == state


def test_a_restored_full_state_is_not_mistaken_for_a_fresh_seed():
    """On NumPy: after a full-state restore the generator is no longer fresh from its seed,
    so restoring a seed snapshot (a CuPy checkpoint) with that same seed must restart it."""
    backend.seed(5)
    backend.rng().random(7)
    drawn_from = backend.get_rng_state()
    backend.seed(5)
    backend.set_rng_state(drawn_from)
    backend.set_rng_state({"device": 5, "host": backend.host_rng().bit_generator.state})
    np.testing.assert_array_equal(backend.to_host(backend.rng().random(3)),  # seed 5's stream
                                  backend.to_host(xp.random.default_rng(5).random(3)))


def test_rng_snapshot_of_one_backend_restores_under_the_others_rules(monkeypatch):
    """A checkpoint moves between backends: a NumPy snapshot restored on CuPy starts the
    device generator from the host one (the same way every time), and a CuPy snapshot
    (a seed) restored on NumPy seeds it."""
    backend.seed(7)
    backend.rng().random(3)
    numpy_state = backend.get_rng_state()
    monkeypatch.setattr(backend, "_name", "cupy")
    backend.set_rng_state(numpy_state)
    first = backend.to_host(backend.rng().random(4))
    backend.set_rng_state(numpy_state)
    np.testing.assert_array_equal(backend.to_host(backend.rng().random(4)), first)
    cupy_state = backend.get_rng_state()
    after_cupy_state = backend.to_host(backend.rng().random(4))
    monkeypatch.setattr(backend, "_name", "numpy")
    backend.set_rng_state(cupy_state)
    np.testing.assert_array_equal(backend.to_host(backend.rng().random(4)), after_cupy_state)


# -- host <-> device ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_to_device_to_host_round_trip(dtype):
    host = (host_rng(0).standard_normal((3, 4)) * 10).astype(dtype)
    device = backend.to_device(host)
    assert isinstance(device, np.ndarray) == (backend.name() == "numpy")
    back = backend.to_host(device)
    assert isinstance(back, np.ndarray) and back.dtype == dtype
    np.testing.assert_array_equal(back, host)


def test_to_device_casts_and_to_host_accepts_scalars():
    device = backend.to_device(np.arange(4), dtype=xp.float32)
    assert device.dtype == np.float32
    np.testing.assert_array_equal(backend.to_host(device), [0, 1, 2, 3])
    assert backend.to_host(3.5) == 3.5 and isinstance(backend.to_host(3.5), np.ndarray)


@needs_cupy
@pytest.mark.cupy
def test_real_cupy_round_trip(restore_backend):
    import cupy

    backend.use("cupy")
    host = host_rng(1).standard_normal((5, 2))
    device = backend.to_device(host)
    assert isinstance(device, cupy.ndarray)
    assert isinstance(backend.rng().standard_normal(3), cupy.ndarray)
    np.testing.assert_array_equal(backend.to_host(device), host)
    layer = nn.Dense(2, 3).astype(xp.float64)
    y = backend.to_host(layer.forward(device))
    w, b = (backend.to_host(layer.params[k]) for k in ("weight", "bias"))
    np.testing.assert_allclose(y, host @ w.T + b, rtol=1e-12)


ALLOCATE_AND_FREE = """
import resource, sys
import numpy as np
from tinygan import backend
if sys.argv[1] == "keep":
    assert backend.keep_freed_memory() and backend.keep_freed_memory()  # idempotent
def cycle():  # a training step's pattern: several large arrays alive, then all freed
    arrays = [np.ones(3 << 18, np.float32) for _ in range(4)]
    del arrays
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory tunes glibc's malloc only")
def test_keep_freed_memory_stops_page_faults_on_reused_arrays():
    """With glibc's defaults, freeing 12 MiB of arrays shrinks the heap and the next ones
    are page-faulted in again (768 faults per 3 MiB array); after keep_freed_memory the
    freed memory is reused. Each variant runs in a fresh interpreter: mallopt is global."""
    env = {k: v for k, v in os.environ.items()  # no allocator settings from outside
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["TINYGAN_BACKEND"] = "numpy"
    faults = {}
    for mode in ("default", "keep"):
        result = subprocess.run([sys.executable, "-c", ALLOCATE_AND_FREE, mode], env=env,
                                capture_output=True, text=True, check=True)
        faults[mode] = int(result.stdout)
    assert faults["default"] > 10 * 768, faults  # the problem is real here...
    assert faults["keep"] < 100, faults  # ...and gone: nearly no faults


def test_keep_freed_memory_does_nothing_on_cupy(monkeypatch):
    monkeypatch.setattr(backend, "_name", "cupy")
    monkeypatch.setattr(backend, "_freed_memory_kept", False)
    assert backend.keep_freed_memory() is False
