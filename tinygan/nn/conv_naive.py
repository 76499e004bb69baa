"""Loop-by-loop reference convolutions, forward and backward: slow, obvious, and the
yardstick the fast im2col versions in conv.py are tested against (tests/test_conv_fast.py).
(N, C, H, W) arrays throughout, one output value (or one input pixel) per loop turn.
Work on the host (NumPy)."""

import numpy as np


def conv2d_naive(x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
    """out[n, f, oh, ow] = bias[f] + sum_{c,i,j} weight[f,c,i,j] * xpad[n, c, oh*sh+i, ow*sw+j]."""
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, f, out_h, out_w), dtype=np.result_type(x, weight))
    for b in range(n):
        for k in range(f):
            for oh in range(out_h):
                for ow in range(out_w):
                    window = xpad[b, :, oh * sh : oh * sh + kh, ow * sw : ow * sw + kw]
                    out[b, k, oh, ow] = np.sum(window * weight[k])
            if bias is not None:
                out[b, k] += bias[k]
    return out


def conv_transpose2d_naive(x, weight, bias=None, stride=(1, 1), padding=(0, 0),
                           output_padding=(0, 0)):
    """Each input pixel x[n, c, h, w] adds x * weight[c, :, :, :] onto the output window
    starting at (h*sh - ph, w*sw - pw); the parts that fall outside are dropped."""
    n, c, h, w = x.shape
    _, f, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    full_h, full_w = (h - 1) * sh + kh + oph, (w - 1) * sw + kw + opw
    full = np.zeros((n, f, full_h, full_w), dtype=np.result_type(x, weight))
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    full[b, :, i * sh : i * sh + kh, j * sw : j * sw + kw] += x[b, ch, i, j] * weight[ch]
    out = full[:, :, ph : full_h - ph, pw : full_w - pw]
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def conv2d_naive_backward(x, weight, dout, stride=(1, 1), padding=(0, 0)):
    """Gradients of conv2d_naive for the upstream gradient dout, returned as (dx, dweight, dbias).

    Output value out[n, k, oh, ow] = bias[k] + sum(window * weight[k]), so its gradient
    g = dout[n, k, oh, ow] flows to: dweight[k] += g * window, the window's pixels
    dxpad[n, :, window] += g * weight[k], and dbias[k] += g. Padding is cropped off dxpad."""
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxpad = np.zeros(xpad.shape, dtype=np.result_type(x, weight, dout))
    dweight = np.zeros(weight.shape, dtype=dxpad.dtype)
    dbias = np.zeros(f, dtype=dxpad.dtype)
    for b in range(n):
        for k in range(f):
            for oh in range(dout.shape[2]):
                for ow in range(dout.shape[3]):
                    g = dout[b, k, oh, ow]
                    rows, cols = slice(oh * sh, oh * sh + kh), slice(ow * sw, ow * sw + kw)
                    dweight[k] += g * xpad[b, :, rows, cols]
                    dxpad[b, :, rows, cols] += g * weight[k]
                    dbias[k] += g
    return dxpad[:, :, ph : ph + h, pw : pw + w], dweight, dbias


def conv_transpose2d_naive_backward(x, weight, dout, stride=(1, 1), padding=(0, 0),
                                    output_padding=(0, 0)):
    """Gradients of conv_transpose2d_naive for the upstream gradient dout: (dx, dweight, dbias).

    The forward added x[n, c, i, j] * weight[c] onto full[n, :, window(i, j)] and cropped
    full to the output, so the gradient of full is dout with the cropped border put back
    as zeros, and each input pixel gets dx[n, c, i, j] = sum(dfull[n, :, window] * weight[c]),
    dweight[c] += x[n, c, i, j] * dfull[n, :, window]; dbias sums dout over
    the batch and the output pixels."""
    n, c, h, w = x.shape
    _, f, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    full_h, full_w = (h - 1) * sh + kh + oph, (w - 1) * sw + kw + opw
    dtype = np.result_type(x, weight, dout)
    dfull = np.zeros((n, f, full_h, full_w), dtype=dtype)
    dfull[:, :, ph : full_h - ph, pw : full_w - pw] = dout
    dx = np.zeros(x.shape, dtype=dtype)
    dweight = np.zeros(weight.shape, dtype=dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    window = dfull[b, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    dx[b, ch, i, j] = np.sum(window * weight[ch])
                    dweight[ch] += x[b, ch, i, j] * window
    return dx, dweight, dout.sum(axis=(0, 2, 3))
