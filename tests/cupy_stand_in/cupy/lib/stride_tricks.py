import numpy as _np


def as_strided(x, shape=None, strides=None):
    from cupy._core_ref import ndarray
    if not isinstance(x, ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    return ndarray._from(_np.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))
