"""Numerical gradient checking: the proof that a hand-written backward is right.

For a layer f and a fixed random upstream gradient G, the scalar
    L(x, params) = sum(f(x) * G)
has dL/dx = backward(G) and dL/dparam = grads[param]. Central differences
    dL/dv_i ~ (L(v + h e_i) - L(v - h e_i)) / (2h)
approximate the same numbers with error O(h^2), so in float64 with h = 1e-6 the two
agree to ~1e-8 or better when the math is right, and differ grossly when it is not.

The error reported for each array is ||analytic - numeric|| / max(||analytic||, ||numeric||, floor),
a norm-wise relative error that does not blow up on individual near-zero entries. The
floor matters only when the true gradient is zero, e.g. a conv bias followed by
BatchNorm, which subtracts any per-channel constant: there both sides are rounding noise
(~1e-10 for h = 1e-6), and dividing noise by noise would report a meaningless 1.0. The
noise is absolute, so the floor must be too large for it to matter next to a 1e-6
tolerance: ``gradcheck`` uses 1e-3 of the largest gradient norm in the same check (and
at least 1e-6), so a zero gradient reports its noise relative to the problem's scale.
"""

import itertools

from tinygan import backend
from tinygan.backend import xp

# A gradient whose norm is below this fraction of the largest one in the same check is
# measured against that fraction: below it, finite differences cannot tell it from zero.
ZERO_GRADIENT_FRACTION = 1e-3


def relative_error(a, b, floor=1e-6):
    a, b = backend.to_host(a), backend.to_host(b)
    scale = max(float((a * a).sum()) ** 0.5, float((b * b).sum()) ** 0.5, floor)
    return float(((a - b) ** 2).sum()) ** 0.5 / scale


def numeric_gradient(f, v, h=1e-6):
    """Central differences of the scalar function f() with respect to array v, in place."""
    grad = xp.zeros_like(v)
    # Index v itself rather than v.reshape(-1): for a non-contiguous v (a transposed
    # input, a weight loaded from a Fortran-ordered array) that reshape is a copy, and
    # perturbing the copy would leave f() unchanged and the numeric gradient zero.
    for i in itertools.product(*(range(d) for d in v.shape)):
        old = v[i].item()
        v[i] = old + h
        up = f()
        v[i] = old - h
        down = f()
        v[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def gradcheck(layer, x, h=1e-6):
    """Compare layer.backward with central differences for the input and every param.

    The layer is cast to float64 and x converted to float64 (integer inputs, like
    Embedding indices, are left alone and get no input check). Randomness (Dropout)
    is replayed identically on every forward by restoring the generator state.
    Returns {"input": err, "weight": err, ...}: the relative error of each gradient.
    The many forward passes leave the buffers (BatchNorm's running statistics) as
    they were before the check, in float64, and the grads zero (in float64 too).
    """
    layer.astype(xp.float64)
    frozen = [type(module).__name__ for _, module in layer.modules()
              if module.params and not module.requires_grad]
    if frozen:  # its weights would get no gradient, and every error would read 1.0
        raise ValueError(f"gradcheck: {', '.join(frozen)} frozen (requires_grad_(False)) "
                         "computes no parameter gradients; call requires_grad_(True) to check "
                         "them")
    saved = [(module, {k: v.copy() for k, v in module.buffers.items()})
             for _, module in layer.modules()]
    try:
        return _gradcheck(layer, x, h)
    finally:  # forward updated the running statistics in place: copy the saved values back
        for module, buffers in saved:
            for k, value in buffers.items():
                module.buffers[k][...] = value
        layer.zero_grad()


def _gradcheck(layer, x, h):
    x = xp.asarray(x)
    check_input = xp.issubdtype(x.dtype, xp.floating)
    if check_input:
        x = x.astype(xp.float64)
    rng_state = backend.get_rng_state()
    backend.set_rng_state(rng_state)
    out = layer.forward(x)
    upstream = backend.rng().standard_normal(out.shape, dtype=xp.float64)

    def loss():
        backend.set_rng_state(rng_state)
        return float((layer.forward(x) * upstream).sum())

    layer.zero_grad()
    backend.set_rng_state(rng_state)
    layer.forward(x)
    dx = layer.backward(upstream)
    pairs = {}  # name -> (analytic, numeric)
    if check_input:
        if dx is None:
            raise ValueError(f"gradcheck: {type(layer).__name__} skips its input gradient "
                             "(input_grad_(False)); call input_grad_(True) to check it")
        pairs["input"] = (dx, numeric_gradient(loss, x, h))
    for name, module, key in layer.parameters():
        pairs[name] = (module.grads[key], numeric_gradient(loss, module.params[key], h))
    # The scale of the problem: the largest gradient norm of any array checked here.
    scale = max((_norm(g) for pair in pairs.values() for g in pair), default=0.0)
    floor = max(1e-6, ZERO_GRADIENT_FRACTION * scale)
    return {name: relative_error(a, n, floor) for name, (a, n) in pairs.items()}


def _norm(a):
    a = backend.to_host(a)
    return float((a * a).sum()) ** 0.5


def gradcheck_loss(loss_fn, logits, *args, h=1e-6):
    """Relative error of a loss's dlogits against central differences of its value."""
    logits = xp.asarray(logits, dtype=xp.float64)
    _, dlogits = loss_fn(logits, *args)
    numeric = numeric_gradient(lambda: float(loss_fn(logits, *args)[0]), logits, h)
    return relative_error(dlogits, numeric)
