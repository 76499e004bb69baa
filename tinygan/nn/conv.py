"""2-D convolution and transposed convolution through im2col / col2im.

Notation: x (N, C, H, W) input, weight (F, C, kh, kw), stride (sh, sw), padding
(ph, pw), output (N, F, Ho, Wo) with Ho = (H + 2 ph - kh) // sh + 1.

im2col unrolls every kh x kw window of the (padded) input into one column:

    cols[(c, i, j), (n, oh, ow)] = x[n, c, oh*sh + i, ow*sw + j]       (C*kh*kw, N*Ho*Wo)

after which the whole convolution, batch included, is ONE matrix product:

    out[f, (n, oh, ow)] = sum_(c,i,j) weight[f, (c, i, j)] * cols[(c, i, j), (n, oh, ow)]

col2im is the adjoint (transpose) of im2col: it sends every column entry back to
the pixel it was read from and *adds* where windows overlap. It is a loop over
the kh*kw kernel offsets, each a strided slice-add over all pixels at once.
"""

from tinygan.backend import xp
from tinygan.nn import init
from tinygan.nn.module import Module, check_input


def pair(value, what):
    """An int or a pair of ints -> a pair of ints (PyTorch's convention)."""
    pair_ = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair_) != 2 or not all(isinstance(v, int) for v in pair_):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return pair_


def im2col(x, kernel, stride, out_size):
    """(N, C, Hp, Wp) padded input -> (C*kh*kw, N*Ho*Wo) columns, one copy.

    as_strided builds the 6-D view windows[c, i, j, n, oh, ow] = x[n, c, oh*sh+i, ow*sw+j]
    without copying: moving one step along oh moves sh rows in memory.
    """
    (kh, kw), (sh, sw), (out_h, out_w) = kernel, stride, out_size
    n, c = x.shape[:2]
    step_n, step_c, step_h, step_w = x.strides
    windows = xp.lib.stride_tricks.as_strided(
        x,
        shape=(c, kh, kw, n, out_h, out_w),
        strides=(step_c, step_h, step_w, step_n, step_h * sh, step_w * sw),
    )
    return windows.reshape(c * kh * kw, n * out_h * out_w)


def col2im(cols, padded_shape, kernel, stride, out_size):
    """Adjoint of im2col: x[n, c, oh*sh+i, ow*sw+j] += cols[(c, i, j), (n, oh, ow)].

    For each kernel offset (i, j), the columns hold one value per output pixel;
    they land on a strided grid of the input, so one slice-add places them all.
    """
    (kh, kw), (sh, sw), (out_h, out_w) = kernel, stride, out_size
    n, c = padded_shape[:2]
    cols = cols.reshape(c, kh, kw, n, out_h, out_w)
    x = xp.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            x[:, :, i : i + sh * out_h : sh, j : j + sw * out_w : sw] += cols[:, i, j].transpose(
                1, 0, 2, 3
            )
    return x


def pad_hw(x, padding):
    """Zero-pad the two spatial axes of an (N, C, H, W) array."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def channels_first(a):
    """(N, C, H, W) -> (C, N*H*W): the matrix layout the products below use."""
    return a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)


def batch_first(a, n, h, w):
    """(C, N*H*W) -> (N, C, H, W), the inverse of channels_first."""
    return a.reshape(a.shape[0], n, h, w).transpose(1, 0, 2, 3)


class Conv2d(Module):
    """out = weight * x + bias (cross-correlation, as torch.nn.Conv2d).

    Forward, with W2 = weight.reshape(F, C*kh*kw) and cols = im2col(pad(x)):
        out2 = W2 @ cols + bias                  (F, N*Ho*Wo)
    Backward, with G2 = dL/dout in the same (F, N*Ho*Wo) layout:
        dweight = G2 @ cols^T                    (F, C*kh*kw) -> (F, C, kh, kw)
        dbias   = G2.sum(axis=1)                 (F,)
        dcols   = W2^T @ G2                      (C*kh*kw, N*Ho*Wo)
        dx      = col2im(dcols), padding cropped  (N, C, H, W)
    The first two are the Dense rule with the columns as inputs; dcols flows back to
    every pixel a column copied, so dx is col2im of it (the adjoint of the copy).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "Conv2d kernel_size")
        self.stride = pair(stride, "Conv2d stride")
        self.padding = pair(padding, "Conv2d padding")
        kh, kw = self.kernel_size
        bound = init.fan_in_bound(in_channels * kh * kw)
        self.params["weight"] = init.uniform((out_channels, in_channels, kh, kw), bound)
        if bias:
            self.params["bias"] = init.uniform((out_channels,), bound)
        self.zero_grad()

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")

    def output_size(self, h, w):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self!r}: input of spatial size {h}x{w} (padded by {ph}, {pw}) "
                             f"is smaller than the {kh}x{kw} kernel")
        return out

    def forward(self, x):
        check_input(self, x, "NCHW", self.in_channels)
        n, _, h, w = x.shape
        out_size = self.output_size(h, w)
        x_padded = pad_hw(x, self.padding)
        cols = im2col(x_padded, self.kernel_size, self.stride, out_size)
        out = self.params["weight"].reshape(self.out_channels, -1) @ cols
        if "bias" in self.params:
            out += self.params["bias"][:, None]
        self.cache = (cols, x_padded.shape, out_size)
        return batch_first(out, n, *out_size)

    def backward(self, dout):
        cols, padded_shape, out_size = self.cache
        weight = self.params["weight"]
        dout2 = channels_first(dout)
        if self.requires_grad:
            self.accumulate_grad("weight", (dout2 @ cols.T).reshape(weight.shape))
            if "bias" in self.params:
                self.accumulate_grad("bias", dout2.sum(axis=1))
        dcols = weight.reshape(self.out_channels, -1).T @ dout2
        dx_padded = col2im(dcols, padded_shape, self.kernel_size, self.stride, out_size)
        (ph, pw), (hp, wp) = self.padding, padded_shape[2:]
        return dx_padded[:, :, ph : hp - ph, pw : wp - pw]


class ConvTranspose2d(Module):
    """The transposed convolution (torch.nn.ConvTranspose2d): the adjoint of Conv2d.

    weight has shape (C_in, C_out, kh, kw). Take a Conv2d with this weight that maps
    C_out channels to C_in channels; its backward-data pass sends a gradient G
    (N, C_in, H, W) back to its input as col2im(W2^T @ G2). That map, applied to x
    instead of G, *is* the transposed convolution's forward:
        cols = W2^T @ x2                 W2 = weight.reshape(C_in, C_out*kh*kw), x2 (C_in, N*H*W)
        out  = crop(col2im(cols)) + bias
    so each input pixel stamps a weighted kh x kw kernel onto a stride-spaced output
    grid. The uncropped output has (H-1)*sh + kh + output_padding rows; cropping
    `padding` from each side gives Ho = (H-1)*sh - 2*ph + kh + output_padding.

    Backward runs the same Conv2d forward: with dcols = im2col(pad(dL/dout)),
        dx      = W2 @ dcols            (C_in, N*H*W)  -> (N, C_in, H, W)
        dweight = x2 @ dcols^T          (C_in, C_out*kh*kw)
        dbias   = dL/dout summed over N, H, W.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "ConvTranspose2d kernel_size")
        self.stride = pair(stride, "ConvTranspose2d stride")
        self.padding = pair(padding, "ConvTranspose2d padding")
        self.output_padding = pair(output_padding, "ConvTranspose2d output_padding")
        if any(op >= s for op, s in zip(self.output_padding, self.stride, strict=False)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be "
                             f"smaller than stride {self.stride}")
        kh, kw = self.kernel_size
        # torch computes fan_in from weight.shape[1] * kh * kw, i.e. from out_channels
        bound = init.fan_in_bound(out_channels * kh * kw)
        self.params["weight"] = init.uniform((in_channels, out_channels, kh, kw), bound)
        if bias:
            self.params["bias"] = init.uniform((out_channels,), bound)
        self.zero_grad()

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}")

    def padded_size(self, h, w):
        """Size of the uncropped output: (H-1)*s + k + output_padding per axis."""
        (kh, kw), (sh, sw), (oph, opw) = self.kernel_size, self.stride, self.output_padding
        hp, wp = (h - 1) * sh + kh + oph, (w - 1) * sw + kw + opw
        ph, pw = self.padding
        if hp - 2 * ph < 1 or wp - 2 * pw < 1:
            raise ValueError(f"{self!r}: input of spatial size {h}x{w} gives an empty output")
        return hp, wp

    def forward(self, x):
        check_input(self, x, "NCHW", self.in_channels)
        n, _, h, w = x.shape
        hp, wp = self.padded_size(h, w)
        x2 = channels_first(x)
        cols = self.params["weight"].reshape(self.in_channels, -1).T @ x2
        out = col2im(cols, (n, self.out_channels, hp, wp), self.kernel_size, self.stride, (h, w))
        ph, pw = self.padding
        out = out[:, :, ph : hp - ph, pw : wp - pw]
        if "bias" in self.params:
            out += self.params["bias"].reshape(1, -1, 1, 1)
        self.cache = (x2, (n, h, w))
        return out

    def backward(self, dout):
        x2, (n, h, w) = self.cache
        weight = self.params["weight"]
        dcols = im2col(pad_hw(dout, self.padding), self.kernel_size, self.stride, (h, w))
        if self.requires_grad:
            self.accumulate_grad("weight", (x2 @ dcols.T).reshape(weight.shape))
            if "bias" in self.params:
                self.accumulate_grad("bias", dout.sum(axis=(0, 2, 3)))
        dx2 = weight.reshape(self.in_channels, -1) @ dcols
        return batch_first(dx2, n, h, w)
