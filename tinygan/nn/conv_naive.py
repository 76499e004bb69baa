"""Loop-by-loop reference convolutions: slow, obvious, and the yardstick the fast
im2col versions in conv.py are tested against. Work on the host (NumPy)."""

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
