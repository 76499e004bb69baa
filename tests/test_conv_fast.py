"""The fast im2col convolutions (tinygan/nn/conv.py) against the loop-by-loop references
(tinygan/nn/conv_naive.py) and against finite differences.

Forward and backward (dx, dweight, dbias) of Conv2d and ConvTranspose2d are compared
with the naive loops on many small random configurations in float64, where the two
must agree to rounding. The fast path also has behaviour the naive one has no notion
of, checked here: it computes in the batch-last (C, H, W, N) layout and hands back
views of it, it reuses scratch arrays (workspaces) between calls, and it accepts
inputs in any memory layout.

Inputs are drawn on the host and moved to the backend under test; the naive loops
run on the host.
"""

import numpy as np
import pytest
from helpers import assert_close, host_rng

from tinygan import backend, nn
from tinygan.backend import xp
from tinygan.gradcheck import gradcheck
from tinygan.nn.conv_naive import (
    conv2d_naive,
    conv2d_naive_backward,
    conv_transpose2d_naive,
    conv_transpose2d_naive_backward,
)

EXACT = 1e-12  # float64, same sums in a different order
FD_TOL = 1e-6  # central differences in float64 (as tests/test_gradcheck.py)


def as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def random_conv_config(rng):
    """Kernel, stride and padding up to 4 / 3 / 2, often non-square, and an input size the
    kernel fits in. Includes stride > kernel (pixels no window reads) and k4 s2 p1."""
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    ph, pw = (int(v) for v in rng.integers(0, 3, 2))
    h = int(rng.integers(max(1, kh - 2 * ph), 8))
    w = int(rng.integers(max(1, kw - 2 * pw), 8))
    return dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw)), (h, w)


def random_transpose_config(rng):
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    oph, opw = int(rng.integers(0, sh)), int(rng.integers(0, sw))
    h, w = (int(v) for v in rng.integers(1, 5, 2))
    # keep the output non-empty: (H - 1) s - 2 p + k + output_padding >= 1
    ph = min(int(rng.integers(0, 3)), ((h - 1) * sh + kh + oph - 1) // 2)
    pw = min(int(rng.integers(0, 3)), ((w - 1) * sw + kw + opw - 1) // 2)
    return dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                output_padding=(oph, opw)), (h, w)


def run_fast(layer, x, dout):
    """forward + backward of the fast layer on host arrays; everything back on the host."""
    layer.zero_grad()
    out = layer.forward(backend.to_device(x))
    dx = layer.backward(backend.to_device(dout))
    grads = {k: backend.to_host(v) for k, v in layer.grads.items()}
    return backend.to_host(out), backend.to_host(dx), grads


def host_params(layer):
    return {k: backend.to_host(v) for k, v in layer.params.items()}


def check_conv2d(layer, x, rng, tol):
    p = host_params(layer)
    kwargs = dict(stride=layer.stride, padding=layer.padding)
    expected = conv2d_naive(x, p["weight"], p.get("bias"), **kwargs)
    dout = rng.standard_normal(expected.shape).astype(x.dtype)
    out, dx, grads = run_fast(layer, x, dout)
    dx_ref, dw_ref, db_ref = conv2d_naive_backward(x, p["weight"], dout, **kwargs)
    assert out.dtype == dx.dtype == x.dtype, "Conv2d computed in another dtype"
    assert_close(out, expected, tol, "Conv2d forward")
    assert_close(dx, dx_ref, tol, "Conv2d dx")
    assert_close(grads["weight"], dw_ref, tol, "Conv2d dweight")
    if "bias" in grads:
        assert_close(grads["bias"], db_ref, tol, "Conv2d dbias")


def check_conv_transpose2d(layer, x, rng, tol):
    p = host_params(layer)
    kwargs = dict(stride=layer.stride, padding=layer.padding,
                  output_padding=layer.output_padding)
    expected = conv_transpose2d_naive(x, p["weight"], p.get("bias"), **kwargs)
    dout = rng.standard_normal(expected.shape).astype(x.dtype)
    out, dx, grads = run_fast(layer, x, dout)
    dx_ref, dw_ref, db_ref = conv_transpose2d_naive_backward(x, p["weight"], dout, **kwargs)
    assert out.dtype == dx.dtype == x.dtype, "ConvTranspose2d computed in another dtype"
    assert_close(out, expected, tol, "ConvTranspose2d forward")
    assert_close(dx, dx_ref, tol, "ConvTranspose2d dx")
    assert_close(grads["weight"], dw_ref, tol, "ConvTranspose2d dweight")
    if "bias" in grads:
        assert_close(grads["bias"], db_ref, tol, "ConvTranspose2d dbias")


# -- fast == naive, forward and backward, float64 --------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_conv2d_matches_naive(seed):
    rng = host_rng(seed)
    kwargs, (h, w) = random_conv_config(rng)
    n, cin, cout = (int(v) for v in rng.integers(1, 4, 3))
    layer = nn.Conv2d(cin, cout, bias=bool(seed % 2), **kwargs).astype(xp.float64)
    check_conv2d(layer, rng.standard_normal((n, cin, h, w)), rng, EXACT)


@pytest.mark.parametrize("seed", range(40))
def test_conv_transpose2d_matches_naive(seed):
    rng = host_rng(seed)
    kwargs, (h, w) = random_transpose_config(rng)
    n, cin, cout = (int(v) for v in rng.integers(1, 4, 3))
    layer = nn.ConvTranspose2d(cin, cout, bias=bool(seed % 2), **kwargs).astype(xp.float64)
    check_conv_transpose2d(layer, rng.standard_normal((n, cin, h, w)), rng, EXACT)


@pytest.mark.parametrize("cls, cin, cout, size", [
    (nn.Conv2d, 1, 8, 28), (nn.Conv2d, 8, 16, 14),                     # D's two convs
    (nn.ConvTranspose2d, 16, 8, 7), (nn.ConvTranspose2d, 8, 1, 14),    # G's two
])
def test_dcgan_shapes_match_naive_in_float32(cls, cin, cout, size):
    """The k4 s2 p1 layers of the DCGAN (fewer channels), float32 as in training."""
    rng = host_rng(size + cin)
    layer = cls(cin, cout, 4, 2, 1)
    x = rng.standard_normal((3, cin, size, size)).astype(np.float32)
    check = check_conv2d if cls is nn.Conv2d else check_conv_transpose2d
    check(layer, x, rng, 1e-5)


# -- fast == finite differences ---------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_conv2d_finite_differences(seed):
    rng = host_rng(100 + seed)
    kwargs, (h, w) = random_conv_config(rng)
    layer = nn.Conv2d(2, 3, **kwargs)
    x = backend.to_device(rng.standard_normal((2, 2, h, w)))
    errors = gradcheck(layer, x)
    assert max(errors.values()) < FD_TOL, errors


@pytest.mark.parametrize("seed", range(6))
def test_conv_transpose2d_finite_differences(seed):
    rng = host_rng(200 + seed)
    kwargs, (h, w) = random_transpose_config(rng)
    layer = nn.ConvTranspose2d(2, 3, **kwargs)
    x = backend.to_device(rng.standard_normal((2, 2, h, w)))
    errors = gradcheck(layer, x)
    assert max(errors.values()) < FD_TOL, errors


# -- layouts: batch-last views out, any layout in ---------------------------------------

def layer_pair():
    conv = nn.Conv2d(3, 4, 4, 2, 1).astype(xp.float64)
    convt = nn.ConvTranspose2d(3, 4, 4, 2, 1).astype(xp.float64)
    return conv, convt


@pytest.mark.parametrize("which", [0, 1])
def test_outputs_and_input_gradients_are_batch_last_views(which):
    """What a layer returns is an (N, C, H, W) view of (C, H, W, N) memory, so the next
    layer's to_chwn is free; a layer fed such a view reads it without copying."""
    layer = layer_pair()[which]
    x = backend.to_device(host_rng(0).standard_normal((2, 3, 6, 6)))
    out = layer.forward(x)
    assert nn.conv.is_batch_last(out)
    dx = layer.backward(xp.ones_like(out))
    assert dx.shape == x.shape and nn.conv.is_batch_last(dx)
    assert xp.shares_memory(nn.conv.to_chwn(out), out)  # no copy on the way in


@pytest.mark.skipif(backend.name() == "cupy", reason="CuPy allocates elementwise results "
                    "C-ordered, whatever its inputs' order (cupy/cupy#7342): this zero-copy "
                    "property is NumPy's")
@pytest.mark.parametrize("make", [nn.ReLU, lambda: nn.LeakyReLU(0.2), nn.Tanh,
                                  lambda: nn.Dropout(0.5), lambda: nn.BatchNorm2d(4)])
def test_layers_between_convolutions_keep_the_batch_last_layout(make):
    """An activation, Dropout or BatchNorm between two convolutions returns (and sends
    back) arrays in the layout it was given, so neither convolution has to copy."""
    layer = make().astype(xp.float64)
    a = backend.to_device(host_rng(4).standard_normal((4, 3, 3, 5)))  # (C, H, W, N) memory
    out = layer.forward(nn.conv.to_nchw(a))
    dx = layer.backward(nn.conv.to_nchw(xp.ones_like(a)))
    assert xp.shares_memory(nn.conv.to_chwn(out), out)
    assert xp.shares_memory(nn.conv.to_chwn(dx), dx)


def test_flatten_sends_the_gradient_back_in_the_layout_of_its_input():
    """Flatten after a convolution (D's last conv -> Flatten -> Dense) is given a batch-last
    view; the gradient it gets back from the Dense is (N, C*H*W) C-contiguous, and what it
    returns must again be a batch-last view, so the conv's backward reads it without a
    copy. The values are dout's, reshaped."""
    rng = host_rng(11)
    a = backend.to_device(rng.standard_normal((4, 3, 3, 5)))  # (C, H, W, N) memory
    layer = nn.Flatten()
    out = layer.forward(nn.conv.to_nchw(a))
    assert out.shape == (5, 36)
    dout = backend.to_device(rng.standard_normal((5, 36)))
    dx = layer.backward(dout)
    assert dx.shape == (5, 4, 3, 3)
    assert xp.shares_memory(nn.conv.to_chwn(dx), dx)
    np.testing.assert_array_equal(backend.to_host(dx), backend.to_host(dout).reshape(5, 4, 3, 3))
    # an (N, C, H, W) C-contiguous input gets its gradient back in that order
    layer.forward(xp.ascontiguousarray(nn.conv.to_nchw(a)))
    assert layer.backward(dout).flags.c_contiguous


@pytest.mark.parametrize("which", [0, 1])
def test_any_input_layout_gives_the_same_result(which):
    layer = layer_pair()[which]
    rng = host_rng(1)
    host = rng.standard_normal((3, 3, 7, 6))
    x = backend.to_device(host)
    dout = None
    results = []
    every_other = xp.zeros((3, 3, 7, 12))
    every_other[..., ::2] = x
    chwn = x.transpose(1, 2, 3, 0)
    gapped = nn.conv.rows_apart(chwn.shape, chwn.dtype)  # channels apart, as conv outputs
    gapped[...] = chwn
    flipped = xp.ascontiguousarray(chwn[::-1])[::-1]  # channels in reverse memory order
    every_other_channel = xp.zeros((6, 7, 6, 3))
    every_other_channel[::2] = chwn
    to_nchw = nn.conv.to_nchw
    variants = [
        x,                                                                    # NCHW
        to_nchw(xp.ascontiguousarray(chwn)),                                  # batch last
        xp.asfortranarray(x),                                                 # axes reversed
        every_other[..., ::2],                                                # strided view
        backend.to_device(np.pad(host, ((0, 0), (0, 0), (0, 0), (0, 3))))[..., :6],  # slice
        to_nchw(gapped),                                      # batch last, gaps between channels
        to_nchw(flipped),                                     # batch last, channels reversed
        to_nchw(every_other_channel[::2]),                    # batch last, every other channel
    ]
    for v in variants:
        out = layer.forward(v)
        if dout is None:
            dout = backend.to_device(rng.standard_normal(out.shape))
        layer.zero_grad()
        dx = layer.backward(dout)
        results.append((backend.to_host(out), backend.to_host(dx),
                        backend.to_host(layer.grads["weight"])))
    for out, dx, dw in results[1:]:
        assert_close(out, results[0][0], EXACT, "output")
        assert_close(dx, results[0][1], EXACT, "dx")
        assert_close(dw, results[0][2], EXACT, "dweight")


def test_gradient_in_any_layout():
    """backward takes dL/dout in any layout too (e.g. C-contiguous from a Flatten)."""
    layer = nn.Conv2d(2, 3, 3, 1, 1).astype(xp.float64)
    rng = host_rng(2)
    x = backend.to_device(rng.standard_normal((2, 2, 5, 5)))
    out = layer.forward(x)
    g = backend.to_device(rng.standard_normal(out.shape))
    dx1 = backend.to_host(layer.backward(g))
    dx2 = backend.to_host(layer.backward(xp.ascontiguousarray(g.transpose(1, 2, 3, 0))
                                         .transpose(3, 0, 1, 2)))
    assert_close(dx2, dx1, EXACT, "dx")


# -- workspaces: reused, but never visible ---------------------------------------------

@pytest.mark.parametrize("which", [0, 1])
def test_returned_arrays_survive_later_calls(which):
    """Scratch arrays are reused between calls; what a call returned must not change."""
    layer = layer_pair()[which]
    rng = host_rng(3)
    x1, x2 = (backend.to_device(rng.standard_normal((2, 3, 6, 6))) for _ in range(2))
    out1 = layer.forward(x1)
    g = xp.ones_like(out1)
    dx1 = layer.backward(g)
    saved = backend.to_host(out1).copy(), backend.to_host(dx1).copy()
    layer.forward(x2)
    layer.backward(g * 2)
    assert np.array_equal(backend.to_host(out1), saved[0])
    assert np.array_equal(backend.to_host(dx1), saved[1])


@pytest.mark.parametrize("which", [0, 1])
def test_workspaces_follow_batch_size_and_dtype(which):
    """A new batch size or dtype (or both) reallocates the scratch arrays; results stay
    right and in the input's dtype."""
    rng = host_rng(4)
    layer = layer_pair()[which]
    check = check_conv2d if which == 0 else check_conv_transpose2d
    for n, dtype, tol in [(2, np.float64, EXACT), (3, np.float64, EXACT), (1, np.float64, EXACT),
                          (1, np.float32, 1e-5), (2, np.float32, 1e-5), (2, np.float64, EXACT),
                          (3, np.float32, 1e-5)]:
        layer.astype(dtype)
        check(layer, rng.standard_normal((n, 3, 5, 6)).astype(dtype), rng, tol)


def test_padding_border_stays_zero_across_calls():
    """The padded-input workspace is zeroed once; only its interior is ever written."""
    layer = nn.Conv2d(1, 1, 3, 1, 2).astype(xp.float64)
    rng = host_rng(5)
    for _ in range(3):
        check_conv2d(layer, rng.standard_normal((2, 1, 4, 4)) * 100, rng, EXACT)


# -- gradient bookkeeping -----------------------------------------------------------------

@pytest.mark.parametrize("which", [0, 1])
def test_frozen_layer_gives_input_gradient_only(which):
    rng = host_rng(6)
    layer = layer_pair()[which]
    x = backend.to_device(rng.standard_normal((2, 3, 6, 6)))
    out = layer.forward(x)
    g = backend.to_device(rng.standard_normal(out.shape))
    dx = backend.to_host(layer.backward(g))
    layer.zero_grad()
    layer.requires_grad_(False)
    layer.forward(x)
    dx_frozen = backend.to_host(layer.backward(g))
    assert np.array_equal(dx, dx_frozen)
    assert all(not xp.any(v) for v in layer.grads.values())


@pytest.mark.parametrize("which", [0, 1])
def test_weight_gradients_accumulate(which):
    rng = host_rng(7)
    layer = layer_pair()[which]
    x = backend.to_device(rng.standard_normal((2, 3, 6, 6)))
    out = layer.forward(x)
    g = backend.to_device(rng.standard_normal(out.shape))
    layer.zero_grad()
    layer.backward(g)
    once = {k: backend.to_host(v).copy() for k, v in layer.grads.items()}
    layer.backward(g)
    for k, v in layer.grads.items():
        assert_close(backend.to_host(v), 2 * once[k], EXACT, k)


@pytest.mark.parametrize("which", [0, 1])
def test_float32_stays_float32(which):
    """No silent float64 upcast anywhere in the fast path: not in what comes out, nor in
    the scratch arrays inside (Conv2d's own columns; the padded inputs and gradients and
    the transient columns that both layers take from the shared pool), where an upcast
    would only cost memory and time, invisibly."""
    layer = layer_pair()[which].astype(xp.float32)
    x = backend.to_device(host_rng(8).standard_normal((2, 3, 6, 6)).astype(np.float32))
    nn.conv.free_scratch()  # the pool then holds this layer's arrays only
    out = layer.forward(x)
    dx = layer.backward(xp.ones_like(out))
    assert out.dtype == dx.dtype == xp.float32
    assert all(v.dtype == xp.float32 for v in layer.grads.values())
    assert all(v.dtype == xp.float32 for v in getattr(layer, "workspace", {}).values())
    pool = list(nn.conv._shared.values())
    # padding 1: a padded input (Conv2d forward) or gradient (ConvTranspose2d backward),
    # and columns in the other direction
    assert len(pool) >= 2 and all(v.dtype == xp.float32 for v in pool)


def test_shared_scratch_between_different_paddings():
    """Layers share padded scratch buffers by shape; different paddings of the same buffer
    shape (different zero borders) must not share one."""
    rng = host_rng(9)
    a = nn.Conv2d(1, 2, 3, 1, 1).astype(xp.float64)   # 4x4 input -> 6x6 padded
    b = nn.Conv2d(1, 2, 5, 1, 2).astype(xp.float64)   # 2x2 input -> 6x6 padded
    for _ in range(2):
        check_conv2d(a, rng.standard_normal((2, 1, 4, 4)), rng, EXACT)
        check_conv2d(b, rng.standard_normal((2, 1, 2, 2)), rng, EXACT)
        b.padding = (1, 1)  # same 6x6 buffer shape from a 4x4 input, border 1 again
        check_conv2d(b, rng.standard_normal((2, 1, 4, 4)), rng, EXACT)
        b.padding = (2, 2)


def test_interleaved_layers_sharing_scratch():
    """A conv and a transposed conv whose transient columns have the same shape, called
    forward, forward, backward, backward (as a generator feeding a discriminator)."""
    rng = host_rng(10)
    g = nn.ConvTranspose2d(4, 3, 4, 2, 1).astype(xp.float64)  # (n, 4, 3, 3) -> (n, 3, 6, 6)
    d = nn.Conv2d(3, 4, 4, 2, 1).astype(xp.float64)           # (n, 3, 6, 6) -> (n, 4, 3, 3)
    x = rng.standard_normal((2, 4, 3, 3))
    pg, pd = host_params(g), host_params(d)
    y = conv_transpose2d_naive(x, pg["weight"], pg["bias"], (2, 2), (1, 1))
    z = conv2d_naive(y, pd["weight"], pd["bias"], (2, 2), (1, 1))
    dz = rng.standard_normal(z.shape)
    dy, dwd, _ = conv2d_naive_backward(y, pd["weight"], dz, (2, 2), (1, 1))
    dx, dwg, _ = conv_transpose2d_naive_backward(x, pg["weight"], dy, (2, 2), (1, 1))
    z_fast = d.forward(g.forward(backend.to_device(x)))
    dx_fast = g.backward(d.backward(backend.to_device(dz)))
    assert_close(backend.to_host(z_fast), z, EXACT, "z")
    assert_close(backend.to_host(dx_fast), dx, EXACT, "dx")
    assert_close(backend.to_host(d.grads["weight"]), dwd, EXACT, "d weight")
    assert_close(backend.to_host(g.grads["weight"]), dwg, EXACT, "g weight")


@pytest.mark.parametrize("shape", [(64, 14, 14, 256), (16, 50176), (3, 16), (5, 7, 3),
                                   (4, 1), (2, 0, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_neighbouring_rows_apart_start_an_odd_number_of_lines_apart(shape, dtype):
    """rows_apart: a zero array of the shape and dtype asked for, whose first-axis slices
    start an odd number of 64-byte lines apart on NumPy (so 64 neighbouring rows start at
    64 different offsets within a 4096-byte page: the (64, 14, 14, 256) float32 case is
    exactly 49 pages per channel when contiguous), each slice contiguous, writes landing
    in the array itself; plain on CuPy."""
    a = nn.conv.rows_apart(shape, dtype, zeros=True)
    assert a.shape == shape and a.dtype == xp.dtype(dtype) and not xp.any(a)
    if backend.name() != "numpy" or a.size == 0:
        assert a.flags.c_contiguous
        return
    row_bytes = a[0].nbytes
    assert a[0].flags.c_contiguous and a.strides[0] >= row_bytes
    assert a.strides[0] % 64 == 0 and (a.strides[0] // 64) % 2 == 1
    assert a.strides[0] - row_bytes < 128  # at most two lines of gap
    a[-1].reshape(-1)[-1] = 1  # the last element of the last row: a view, not a copy
    assert a.sum() == 1


def test_rows_apart_only_pads_when_a_row_is_an_even_number_of_lines():
    assert nn.conv.rows_apart((4, 16), "float32").strides[0] == 64  # one line: as it is
    if backend.name() == "numpy":
        assert nn.conv.rows_apart((4, 32), "float32").strides[0] == 3 * 64


def test_is_batch_last_accepts_channel_blocks_in_order_only():
    """(C, H, W, N) memory, with or without gaps after each channel, is batch last; NCHW
    memory, channels in reverse order and overlapping channels are not."""
    chwn = xp.zeros((3, 4, 5, 2), dtype=xp.float32)
    to_nchw, is_batch_last = nn.conv.to_nchw, nn.conv.is_batch_last
    assert is_batch_last(to_nchw(chwn))
    assert is_batch_last(to_nchw(nn.conv.rows_apart(chwn.shape, chwn.dtype)))
    assert not is_batch_last(to_nchw(chwn).copy())  # (N, C, H, W) memory
    assert not is_batch_last(to_nchw(chwn[::-1]))
    overlapping = xp.lib.stride_tricks.as_strided(chwn, chwn.shape,
                                                  (chwn.strides[0] // 2, *chwn.strides[1:]))
    assert not is_batch_last(to_nchw(overlapping))

