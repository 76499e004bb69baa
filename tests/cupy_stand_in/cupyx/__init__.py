"""Fake cupyx: allow_synchronize (device->host copies raise inside allow_synchronize(False))."""
import contextlib

from cupy import _sync

DeviceSynchronized = _sync.DeviceSynchronized


@contextlib.contextmanager
def allow_synchronize(allow):
    previous = _sync.allowed()
    _sync.set_allowed(allow)
    try:
        yield
    finally:
        _sync.set_allowed(previous)
