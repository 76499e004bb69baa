"""The from-scratch NumPy peer: convolution as most NumPy tutorials and course notes write it.

Issue 4 measures tinygan against "well-known NumPy implementations" of Conv2d and the
transposed convolution. This module is that textbook approach, written here so that it
runs on the same machine as tinygan (the issue's 0.2 s / 2.7 s came from another one):

- (N, C, H, W) layout throughout, padded with ``np.pad``;
- im2col by *fancy indexing*: three integer index arrays (channel, row, column) pick every
  window element of the padded input at once, ``xpad[:, channel, row, column]``, a gather
  of (N, C*k*k, Ho*Wo) values, then a transposing copy to the (C*k*k, Ho*Wo*N) columns;
- col2im, its adjoint, by ``np.add.at`` with the same index arrays (an unbuffered
  scatter-add, because the windows overlap), then a crop of the padding;
- one matrix product per pass, the batch folded in, as in tinygan.

So the peer does the same arithmetic as tinygan's layers (same products, same shapes); what
differs is how the data is moved around them. tinygan never imports this module; a test
checks its results against tinygan's layers, so the comparison is between two correct
convolutions.
"""

import numpy as np


def out_size(size, kernel, stride, padding):
    """Windows along one axis: (size + 2 padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def window_indices(channels, height, width, kernel, stride, padding):
    """Index arrays (channel, row, column), each broadcasting to (C*k*k, Ho*Wo): entry
    [(c, i, j), (oh, ow)] points at xpad[:, c, oh*stride + i, ow*stride + j]."""
    out_h, out_w = (out_size(side, kernel, stride, padding) for side in (height, width))
    offset_row = np.tile(np.repeat(np.arange(kernel), kernel), channels)  # i of (c, i, j)
    offset_col = np.tile(np.arange(kernel), kernel * channels)  # j of (c, i, j)
    window_row = stride * np.repeat(np.arange(out_h), out_w)  # oh*stride of (oh, ow)
    window_col = stride * np.tile(np.arange(out_w), out_h)  # ow*stride of (oh, ow)
    channel = np.repeat(np.arange(channels), kernel * kernel)[:, None]
    return (channel, offset_row[:, None] + window_row[None, :],
            offset_col[:, None] + window_col[None, :])


def im2col(x, kernel, stride, padding):
    """(N, C, H, W) -> (C*k*k, Ho*Wo*N) columns, by fancy indexing."""
    n, c, h, w = x.shape
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    xpad = np.pad(x, pad)
    index = window_indices(c, h, w, kernel, stride, padding)
    windows = xpad[(slice(None), *index)]  # (N, C*k*k, Ho*Wo)
    return windows.transpose(1, 2, 0).reshape(c * kernel * kernel, -1)


def col2im(columns, shape, kernel, stride, padding):
    """Adjoint of im2col: (C*k*k, Ho*Wo*N) -> (N, C, H, W), overlaps added by np.add.at."""
    n, c, h, w = shape
    xpad = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=columns.dtype)
    index = window_indices(c, h, w, kernel, stride, padding)
    windows = columns.reshape(c * kernel * kernel, -1, n).transpose(2, 0, 1)
    np.add.at(xpad, (slice(None), *index), windows)
    return xpad[:, :, padding:padding + h, padding:padding + w]


class _Conv:
    """weight, bias, stride and padding (square kernels, one stride and padding for both axes)."""

    def __init__(self, weight, bias, stride, padding):
        self.weight, self.bias, self.stride, self.padding = weight, bias, stride, padding


class Conv2d(_Conv):
    """out = W2 @ im2col(x) + b; backward: dW = G2 @ cols^T, db = sum G, dx = col2im(W2^T G2)."""

    def forward(self, x):
        f, _, k, _ = self.weight.shape
        n, _, h, w = x.shape
        self.x_shape = x.shape
        self.cols = im2col(x, k, self.stride, self.padding)
        out = self.weight.reshape(f, -1) @ self.cols + self.bias[:, None]
        ho, wo = (out_size(side, k, self.stride, self.padding) for side in (h, w))
        return out.reshape(f, ho, wo, n).transpose(3, 0, 1, 2)

    def backward(self, dout):
        f, _, k, _ = self.weight.shape
        dout2 = dout.transpose(1, 2, 3, 0).reshape(f, -1)
        self.dweight = (dout2 @ self.cols.T).reshape(self.weight.shape)
        self.dbias = dout.sum(axis=(0, 2, 3))
        dcols = self.weight.reshape(f, -1).T @ dout2
        return col2im(dcols, self.x_shape, k, self.stride, self.padding)


class ConvTranspose2d(_Conv):
    """The adjoint of Conv2d, weight (C_in, C_out, k, k): out = col2im(W2^T @ x2) + b;
    backward: dcols = im2col(dout), dW = x2 @ dcols^T, db = sum dout, dx = W2 @ dcols."""

    def forward(self, x):
        c_in, c_out, k, _ = self.weight.shape
        n, _, h, w = x.shape
        self.x_shape = x.shape
        self.x2 = x.transpose(1, 2, 3, 0).reshape(c_in, -1)
        cols = self.weight.reshape(c_in, -1).T @ self.x2
        ho = (h - 1) * self.stride - 2 * self.padding + k
        wo = (w - 1) * self.stride - 2 * self.padding + k
        out = col2im(cols, (n, c_out, ho, wo), k, self.stride, self.padding)
        return out + self.bias[None, :, None, None]

    def backward(self, dout):
        c_in, _, k, _ = self.weight.shape
        n, _, h, w = self.x_shape
        dcols = im2col(dout, k, self.stride, self.padding)
        self.dweight = (self.x2 @ dcols.T).reshape(self.weight.shape)
        self.dbias = dout.sum(axis=(0, 2, 3))
        dx2 = self.weight.reshape(c_in, -1) @ dcols
        return dx2.reshape(c_in, h, w, n).transpose(3, 0, 1, 2)
