"""PyTorch's default initialisations, drawn from tinygan's seeded generator."""

import math

from tinygan import backend
from tinygan.backend import xp


def uniform(shape, bound):
    """U(-bound, bound) in float32: what torch's kaiming_uniform_(a=sqrt(5)) reduces to for
    Linear/Conv weights (bound = 1/sqrt(fan_in)), and its rule for their biases."""
    return (backend.rng().random(shape, dtype=xp.float32) * 2 - 1) * xp.float32(bound)


def fan_in_bound(fan_in):
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def normal(shape, mean=0.0, std=1.0):
    """N(mean, std^2) in float32."""
    f32 = xp.float32
    return backend.rng().standard_normal(shape, dtype=f32) * f32(std) + f32(mean)
