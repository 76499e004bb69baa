"""On CuPy, a training step keeps everything on the GPU: no host<->device copies.

A copy to the host inside ``Trainer.step`` (a ``float()`` of a loss, a ``.get()``, a
NumPy call on a device array) makes the CPU wait for the GPU every step, and a copy
to the device (``cupy.asarray`` of host data) stalls the stream; either one silently
costs more than the small layers of a GAN. The guard below turns both into errors:

- device -> host: ``cupy.ndarray.get`` / ``__array__`` / ``item`` / ``tolist`` and
  ``cupy.asnumpy`` raise; and, where CuPy still has it, ``cupyx.allow_synchronize(False)``
  catches every synchronising copy CuPy makes internally (``float()``, ``bool()``, ...
  all end in ``ndarray.get``, which declares a synchronisation);
- host -> device: ``cupy.asarray`` / ``array`` / ``asanyarray`` / ``ascontiguousarray`` of
  anything that is not already a device array, and ``cupy.ndarray.set``, raise.

Runs only when CuPy and a GPU are available (skipped otherwise); it switches the
backend to CuPy itself, so a plain ``pytest`` on a GPU machine runs it.
"""

import contextlib
import warnings

import numpy as np
import pytest
from helpers import cupy_works

from tinygan import backend
from tinygan.models import FAMILIES, build
from tinygan.train import Trainer

pytestmark = [pytest.mark.cupy,
              pytest.mark.skipif(not cupy_works(), reason="CuPy with a visible GPU not available")]


class TransferError(AssertionError):
    """A host<->device copy happened where none is allowed."""


@contextlib.contextmanager
def no_host_device_transfers(monkeypatch):
    import cupy
    import cupyx

    def forbidden(what):
        def fail(*args, **kwargs):
            raise TransferError(f"host<->device transfer inside a training step: {what}")
        return fail

    def patch(owner, name, value):
        try:
            monkeypatch.setattr(owner, name, value)
        except (TypeError, AttributeError):  # an extension type: allow_synchronize covers it
            pass

    for name in ("get", "__array__", "item", "tolist", "set"):
        patch(cupy.ndarray, name, forbidden(f"cupy.ndarray.{name}"))
    patch(cupy, "asnumpy", forbidden("cupy.asnumpy"))
    for name in ("asarray", "array", "asanyarray", "ascontiguousarray"):
        real = getattr(cupy, name)

        def device_only(a, *args, _real=real, _name=name, **kwargs):
            if not isinstance(a, cupy.ndarray):
                raise TransferError(f"host->device transfer inside a training step: "
                                    f"cupy.{_name} of a {type(a).__name__}")
            return _real(a, *args, **kwargs)

        patch(cupy, name, device_only)
    backend.forget_names()  # xp kept the real functions from the warm-up step
    try:
        with contextlib.ExitStack() as stack:
            guard = getattr(cupyx, "allow_synchronize", None)  # deprecated since CuPy 10
            if guard is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    stack.enter_context(guard(False))
            yield
    finally:
        monkeypatch.undo()
        backend.forget_names()  # and must not keep the forbidding ones


@pytest.fixture
def on_cupy():
    under_test = backend.name()
    backend.use("cupy")
    yield
    backend.use(under_test)


def test_the_guard_catches_transfers(on_cupy, monkeypatch):
    """The guard is only worth something if it fires: a float() of a device value and a
    cupy.asarray of host data must both raise inside it."""
    import cupy

    x = cupy.ones(3, dtype=cupy.float32)
    with pytest.raises((TransferError, RuntimeError)):  # RuntimeError: DeviceSynchronized
        with no_host_device_transfers(monkeypatch):
            float(x.sum())
    with pytest.raises(TransferError):
        with no_host_device_transfers(monkeypatch):
            cupy.asarray(np.ones(3))
    # outside the guard everything works again
    assert float(x.sum()) == 3.0


@pytest.mark.parametrize("family", FAMILIES)
def test_training_step_stays_on_the_device(family, on_cupy, monkeypatch):
    import cupy

    gan = build(family, (1, 28, 28))
    trainer = Trainer(gan)
    rng = np.random.default_rng(0)
    batch = 8
    real = backend.to_device(rng.uniform(-1, 1, (batch, 1, 28, 28)).astype(np.float32))
    labels = backend.to_device(rng.integers(0, 10, batch)) if gan.num_classes else None
    trainer.step(real, labels)  # first step outside: kernel compilation, memory pool
    steps = gan.n_critic  # at least one G update
    with no_host_device_transfers(monkeypatch):
        results = [trainer.step(real, labels) for _ in range(steps)]
    assert any("g_loss" in r for r in results)
    for r in results:
        for loss in r.values():
            assert isinstance(loss, cupy.ndarray)
            assert np.isfinite(float(loss))  # the host copy, now outside the step
