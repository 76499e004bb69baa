"""cupyx.allow_synchronize(False) support: device->host copies raise DeviceSynchronized."""
import threading

_state = threading.local()


class DeviceSynchronized(RuntimeError):
    pass


def allowed():
    return getattr(_state, "allowed", True)


def set_allowed(value):
    _state.allowed = value


def check(what):
    if not allowed():
        raise DeviceSynchronized(f"Device synchronization was detected while disallowed ({what})")
