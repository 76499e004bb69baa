"""2-D convolution and transposed convolution through im2col / col2im.

Notation: x (N, C, H, W) input, weight (F, C, kh, kw), stride (sh, sw), padding
(ph, pw), output (N, F, Ho, Wo) with Ho = (H + 2 ph - kh) // sh + 1.

Memory layout. The layers take and return (N, C, H, W) arrays, as PyTorch does, but
inside they compute in the "batch last" layout (C, H, W, N):

    a[c, h, w, n] = x[n, c, h, w],        to_chwn(x) = a,    to_nchw(a) = x

and what they return is ``to_nchw(a)``: an (N, C, H, W) *view* of (C, H, W, N) memory,
made without copying. NumPy's elementwise operations allocate their results in the
memory order of their inputs, so ReLU, BatchNorm, ... keep that order, and the next
convolution gets its (C, H, W, N) array back for free (``to_chwn`` of such a view is
again a view). CuPy allocates elementwise results C-ordered instead, so on a GPU the
convolution after such a layer reads its input through one transposing copy on the
device (correct either way; ``to_chwn`` copies only what is not batch last). Why batch last:

- a (C, H, W, N) array *is* the (C, H*W*N) matrix the products below multiply, so
  going between arrays and matrices is a reshape, never a transposing copy;
- im2col and col2im move, for every channel, kernel offset and pixel, a contiguous run
  of N values. In the (N, C, H, W) layout the runs are only Wo values long, each value
  sw apart (7 values, two apart, in the DCGAN), and the per-run overhead dominates;
- the (C, H, W, N) layout works as well for one channel (the image) as for many.

im2col unrolls every kh x kw window of the zero-padded input xpad (C, Hp, Wp, N) into
one column, batch included:

    cols[(c, i, j), (oh, ow, n)] = xpad[c, oh*sh + i, ow*sw + j, n]    (C*kh*kw, Ho*Wo*N)

after which the whole convolution, batch included, is ONE matrix product:

    out[f, (oh, ow, n)] = sum_(c,i,j) weight[f, (c, i, j)] * cols[(c, i, j), (oh, ow, n)]

and out, read as (F, Ho, Wo, N), is the output in the batch-last layout.

col2im is the adjoint (transpose) of pad-then-im2col: it sends every column entry back
to the pixel it was read from, *adds* where windows overlap, and drops what was read
from the zero padding (the adjoint of padding is cropping). It is a loop over the
kh*kw kernel offsets, each one strided slice-add over all pixels at once, in the dtype
of the columns (no add.at, no float64 temporary).

With TINYGAN_THREADS=N (tinygan/parallel.py), padding, im2col and col2im run on N
blocks of channels at once (channel c of the columns comes only from channel c of
the input, and goes back only there), and each product on N blocks of columns. An
image's one channel is not split: cutting its copies by the batch instead made them
slower (shorter runs, and a thread woken for work of a few hundred microseconds).

Scratch arrays are reused from call to call instead of reallocated: Conv2d's columns,
which live from forward to backward, in ``layer.workspace``; the padded inputs and the
columns that die within one call in a pool shared by all layers (``scratch``). Arrays
that a layer returns are always new. Every array allocated here, on NumPy, may leave a
small gap after each row (channel), so that neighbouring rows never start a multiple of
4096 bytes apart (``rows_apart``: such rows evict each other from the caches); the
layouts above hold for each channel, and reshapes between arrays and matrices stay views.
"""

import math

from tinygan import backend, kernels, parallel
from tinygan.backend import xp
from tinygan.nn import init
from tinygan.nn.module import Module, check_grad, check_input, check_sizes, is_int


def pair(value, what, minimum=1):
    """An int or a pair of ints, each >= minimum -> a pair of ints (PyTorch's convention)."""
    pair_ = (value, value) if is_int(value) else value
    if (not isinstance(pair_, (tuple, list)) or len(pair_) != 2
            or not all(is_int(v) and v >= minimum for v in pair_)):
        raise ValueError(f"{what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return tuple(int(v) for v in pair_)


def check_not_empty(layer, h, w):
    """As torch: an input with no rows or columns has nothing to convolve (padding alone
    would otherwise make up an output of bias values)."""
    if h < 1 or w < 1:
        raise ValueError(f"{layer!r}: input of spatial size {h}x{w} is empty; expected at "
                         "least 1x1")


def is_batch_last(x):
    """Whether (N, C, H, W) x lies in memory as (C, H, W, N): each channel one contiguous
    (H, W, N) block, the blocks in order and not overlapping (rows_apart may leave a gap
    after each)."""
    a = x.transpose(1, 2, 3, 0)
    return a[0].flags.c_contiguous and a.strides[0] >= a[0].nbytes


def to_chwn(x):
    """(N, C, H, W) -> (C, H, W, N) with each channel one contiguous block. A view when
    x is batch last (it came from ``to_nchw``, or from elementwise work on such an
    array), else one transposing copy."""
    a = x.transpose(1, 2, 3, 0)
    return a if is_batch_last(x) else xp.ascontiguousarray(a)


def to_nchw(a):
    """(C, H, W, N) -> (N, C, H, W), always a view."""
    return a.transpose(3, 0, 1, 2)


def rows_apart(shape, dtype, zeros=False):
    """A new (empty or zero) array of ``shape`` whose slices along the first axis (the
    rows of a matrix, the channels of a (C, H, W, N) array) start an odd number of
    64-byte cache lines apart: any 64 neighbouring rows start at 64 different offsets
    within a 4096-byte page (two rows share one only when 64 divides their distance).

    Addresses a multiple of 4096 bytes apart fall into the same few sets of the CPU's
    caches. A product that walks 64 such rows at once evicts its own lines: at batch
    256, a (64, 14*14*256) float32 matrix has rows exactly 49 * 4096 bytes apart, and
    the 1->64 conv's forward product into it took 2.7 ms; 16 floats more per row (never
    read) made it 1.4 ms. A row already an odd number of lines long gets no gap. On
    CuPy the array is plainly contiguous.
    """
    row = math.prod(shape[1:])
    allocate = xp.zeros if zeros else xp.empty
    if len(shape) < 2 or row == 0 or backend.name() != "numpy":
        return allocate(shape, dtype=dtype)
    itemsize = xp.dtype(dtype).itemsize
    lines = -(-row * itemsize // 64)  # whole cache lines per row, rounded up ...
    lines += 1 - lines % 2  # ... to an odd number of them
    return allocate((shape[0], lines * 64 // itemsize), dtype=dtype)[:, :row].reshape(shape)


def workspace(layer, name, shape, like):
    """A scratch array owned by ``layer`` and kept across calls (Conv2d's columns, which
    live from forward to backward). Zero-filled when created; re-created when the shape,
    the dtype or the array library changed since the last call."""
    buf = layer.workspace.get(name)
    if (buf is None or buf.shape != shape or buf.dtype != like.dtype
            or not isinstance(buf, xp.ndarray)):  # the backend changed
        buf = rows_apart(shape, like.dtype, zeros=True)
        layer.workspace[name] = buf
    return buf


_shared = {}  # (purpose, shape, dtype, backend) -> array; see scratch()


def scratch(purpose, shape, dtype):
    """A zero-filled scratch array shared by all conv layers and kept across calls.

    For values that die inside the call that writes them: the padded copy of an input,
    the columns that a product writes and col2im consumes. Every layer asking for the
    same purpose, shape and dtype gets the same array, so a DCGAN at batch 256 keeps one
    51 MB column buffer instead of allocating it several times a step (above glibc's
    32 MB mmap threshold each allocation is fresh memory, page-faulted in again).
    Because the array starts at zero, a padded buffer whose interior alone is ever
    written keeps a zero border; ``purpose`` names the padding for that reason.
    ``free_scratch()`` releases them all.
    """
    key = (purpose, tuple(shape), xp.dtype(dtype).str, backend.name())
    buf = _shared.get(key)
    if buf is None:
        buf = _shared[key] = rows_apart(shape, dtype, zeros=True)
    return buf


def product(a, b, into=None):
    """a @ b, split over the threads (parallel.matmul), written into a new matrix with
    its rows apart (a layer's result), or into the shared scratch array for purpose
    ``into`` (columns that col2im consumes within the same call)."""
    shape, dtype = (a.shape[0], b.shape[1]), xp.result_type(a, b)
    out = rows_apart(shape, dtype) if into is None else scratch(into, shape, dtype)
    return parallel.matmul(a, b, out)


def free_scratch():
    """Release the shared scratch arrays; they are re-created when next needed."""
    _shared.clear()


def pad_into(buf, x, padding):
    """Write (N, C, H, W) x into the interior of the zero-bordered (C, Hp, Wp, N) buf.

    Hp = H + 2 ph, Wp = W + 2 pw. One copy, no xp.pad: the border is never written.
    (Like im2col and col2im, it runs in blocks of channels over the threads.)
    """
    (ph, pw), (_, c, h, w) = padding, x.shape
    x_chwn, interior = x.transpose(1, 2, 3, 0), buf[:, ph : ph + h, pw : pw + w, :]

    def part(channels):
        interior[channels] = x_chwn[channels]

    parallel.run(part, c, x.size)
    return buf


def im2col(xpad, kernel, stride, out_size, out):
    """(C, Hp, Wp, N) padded input -> (C*kh*kw, Ho*Wo*N) columns, written into ``out``.

    as_strided builds the 6-D view windows[c, i, j, oh, ow, n] = xpad[c, oh*sh+i, ow*sw+j, n]
    without copying (one step along oh moves sh rows in memory); the only copy is the
    one into the columns, in runs of N contiguous values.
    """
    (kh, kw), (sh, sw), (out_h, out_w) = kernel, stride, out_size
    c, _, _, n = xpad.shape
    step_c, step_h, step_w, step_n = xpad.strides
    shape = (c, kh, kw, out_h, out_w, n)
    windows = xp.lib.stride_tricks.as_strided(
        xpad, shape=shape, strides=(step_c, step_h, step_w, step_h * sh, step_w * sw, step_n)
    )
    out6 = out.reshape(shape)

    def part(channels):
        out6[channels] = windows[channels]

    parallel.run(part, c, out.size)
    return out


def _span(offset, stride, count, size):
    """Which k in range(count) have 0 <= k*stride + offset < size, as a pair of slices:
    (those k, the positions k*stride + offset they land on). None when there are none."""
    first = max(0, -(offset // stride))  # smallest k with k*stride + offset >= 0
    last = min(count - 1, (size - 1 - offset) // stride)
    if last < first:
        return None
    return slice(first, last + 1), slice(first * stride + offset, last * stride + offset + 1,
                                         stride)


def col2im(cols, shape, kernel, stride, padding, out_size):
    """Adjoint of pad-then-im2col: x[c, oh*sh+i-ph, ow*sw+j-pw, n] += cols[(c, i, j), (oh, ow, n)].

    For each kernel offset (i, j), the columns hold one value per output pixel;
    they land on a strided grid of x, so one slice-add places them all. Values that
    land in the padding are dropped (the adjoint of padding is cropping), so the result
    is a new (C, H, W, N) array of ``shape`` (rows_apart), in the dtype of ``cols``.
    """
    (kh, kw), (sh, sw), (ph, pw), (out_h, out_w) = kernel, stride, padding, out_size
    c, h, w, n = shape
    cols = cols.reshape(c, kh, kw, out_h, out_w, n)
    x = rows_apart(shape, cols.dtype)
    # on a GPU: the K*K slice-adds below (and the zeroing) as one launch
    if kernels.enabled() and max(cols.size, math.prod(shape)) < kernels.INDEX_LIMIT:
        flat = xp.ascontiguousarray(cols).reshape(-1)
        kernels.col2im(flat, x, kernel, stride, padding, out_size)
        return x

    def part(channels):  # channels of x, reached only by the same channels of the columns
        x_block, cols_block = x[channels], cols[channels]
        x_block[...] = 0
        for i in range(kh):
            rows = _span(i - ph, sh, out_h, h)
            for j in range(kw):
                columns = _span(j - pw, sw, out_w, w)
                if rows and columns:
                    (src_r, dst_r), (src_c, dst_c) = rows, columns
                    x_block[:, dst_r, dst_c, :] += cols_block[:, i, j, src_r, src_c, :]

    parallel.run(part, c, cols.size)
    return x


def add_bias(out, bias):
    """out[f, :] += bias[f] for the (F, Ho*Wo*N) output, blocks of rows over the threads."""
    def part(rows):
        out[rows] += bias[rows, None]

    parallel.run(part, out.shape[0], out.size)


def row_sums(matrix):
    """matrix.sum(axis=1), as the product matrix @ 1 with a vector of ones: the
    transposed convolution's dbias, dL/dout summed over each output channel's pixels.

    A bias is the weight of an input that is always 1, so its gradient is a product
    like the weight's (Conv2d computes it inside dweight's product itself): BLAS, with
    the same float32 accumulation as dweight's. NumPy's own ``sum`` (pairwise, a little
    more accurate) is 2.5-4x slower on these (F, Ho*Wo*N) rows.
    """
    return matrix @ xp.ones(matrix.shape[1], dtype=matrix.dtype)


class Conv2d(Module):
    """out = weight * x + bias (cross-correlation, as torch.nn.Conv2d).

    Forward, with W2 = weight.reshape(F, C*kh*kw) and cols = im2col(pad(x)):
        out2 = W2 @ cols + bias                  (F, Ho*Wo*N) = (F, Ho, Wo, N) batch last
    Backward, with G2 = dL/dout in the same (F, Ho*Wo*N) layout:
        dweight = G2 @ cols^T                    (F, C*kh*kw) -> (F, C, kh, kw)
        dbias   = G2 @ 1 = G2.sum(axis=1)        (F,)
        dcols   = W2^T @ G2                      (C*kh*kw, Ho*Wo*N)
        dx      = col2im(dcols)                  (C, H, W, N) batch last
    out2[f, p] = sum_k W2[f, k] cols[k, p] + bias[f] is the Dense rule with the columns
    as inputs and the (pixel, sample) pairs p as the batch, which gives the first two
    lines. Each cols[k, p] is a copy of one input pixel, so its gradient dcols[k, p] =
    sum_f W2[f, k] G2[f, p] flows back to that pixel and adds up over the windows that
    copied it: dx is col2im (the adjoint of the copy) of dcols. A frozen layer
    (requires_grad_(False)) skips dweight and dbias; after input_grad_(False) (the
    input is data) dcols and col2im are skipped. The parameter gradients and the input
    gradient depend only on G2, cols and W2, not on each other, so with two threads,
    when both are wanted, they are computed at the same time.

    The bias is computed as one more weight, on an input that is always 1: the columns
    get a last row of ones and W2 a last column, bias. Then the forward product adds
    the bias, and dweight's product gives dbias = G2 @ 1 as its last column: no
    separate pass over the (F, Ho*Wo*N) output in either direction (for the 1-channel
    first layer, whose products are short, K = 16, those passes cost as much as a
    product).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *, bias=True):
        # bias is keyword-only: torch's 6th positional argument is dilation, which this
        # layer does not have, and Conv2d(1, 8, 4, 2, 1, False) must not mean two things
        super().__init__()
        check_sizes("Conv2d", in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "Conv2d kernel_size")
        self.stride = pair(stride, "Conv2d stride")
        self.padding = pair(padding, "Conv2d padding", minimum=0)
        kh, kw = self.kernel_size
        bound = init.fan_in_bound(in_channels * kh * kw)
        self.params["weight"] = init.uniform((out_channels, in_channels, kh, kw), bound)
        if bias:
            self.params["bias"] = init.uniform((out_channels,), bound)
        self.workspace = {}
        self.zero_grad()

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")

    def output_size(self, h, w):
        check_not_empty(self, h, w)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self!r}: input of spatial size {h}x{w} (padded by {ph}, {pw}) "
                             f"is smaller than the {kh}x{kw} kernel")
        return out

    def forward(self, x):
        check_input(self, x, "NCHW", self.in_channels)
        n, c, h, w = x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        out_h, out_w = self.output_size(h, w)
        if ph or pw:
            xpad = scratch(("padded", self.padding), (c, h + 2 * ph, w + 2 * pw, n), x.dtype)
            pad_into(xpad, x, self.padding)
        else:  # im2col reads any strides: no copy at all
            xpad = x.transpose(1, 2, 3, 0)
        k, biased = c * kh * kw, "bias" in self.params
        cols = workspace(self, "cols", (k + 1 if biased else k, out_h * out_w * n), x)
        im2col(xpad, self.kernel_size, self.stride, (out_h, out_w), cols[:k])
        w2 = self.params["weight"].reshape(self.out_channels, k)
        if biased:  # the bias as W2's last column, weighing a row of ones
            cols[k] = 1
            bias = self.params["bias"].astype(w2.dtype, copy=False)  # not promoting w2
            w2 = xp.concatenate([w2, bias[:, None]], axis=1)
        out = product(w2, cols)
        self.cache = (cols, (c, h, w, n), (out_h, out_w))
        return to_nchw(out.reshape(self.out_channels, out_h, out_w, n))

    def backward(self, dout):
        cols, in_shape, out_size = self.cache
        check_grad(self, dout, (in_shape[3], self.out_channels, *out_size))  # in_shape: C,H,W,N
        weight = self.params["weight"]
        dout2 = to_chwn(dout).reshape(self.out_channels, -1)
        k = weight[0].size  # C*kh*kw

        def parameter_gradients():
            if self.requires_grad:
                dw2 = parallel.matmul_sum(dout2, cols.T)  # (F, k), or (F, k + 1) with bias
                self.accumulate_grad("weight", dw2[:, :k].reshape(weight.shape))
                if "bias" in self.params:
                    self.accumulate_grad("bias", dw2[:, k])  # G2 @ (the row of ones)

        def input_gradient():
            if not self.needs_input_grad:
                return None
            w2 = weight.reshape(self.out_channels, k)
            dcols = product(w2.T, dout2, into="columns")
            dx = col2im(dcols, in_shape, self.kernel_size, self.stride, self.padding, out_size)
            return to_nchw(dx)

        if self.requires_grad and self.needs_input_grad:  # neither needs the other: on
            return parallel.together(parameter_gradients, input_gradient, cols.size)[1]
        parameter_gradients()  # only one of them (a frozen layer, or data as input):
        return input_gradient()  # its operations split over the threads instead


class ConvTranspose2d(Module):
    """The transposed convolution (torch.nn.ConvTranspose2d): the adjoint of Conv2d.

    weight has shape (C_in, C_out, kh, kw). Take a Conv2d with this weight that maps
    C_out channels to C_in channels; its backward-data pass sends a gradient G
    (C_in, H, W, N) back to its input as col2im(W2^T @ G2). That map, applied to x
    instead of G, *is* the transposed convolution's forward:
        cols = W2^T @ x2       W2 = weight.reshape(C_in, C_out*kh*kw), x2 (C_in, H*W*N)
        out  = col2im(cols) + bias
    so each input pixel stamps a weighted kh x kw kernel onto a stride-spaced output
    grid. That grid has Hp = (H-1)*sh + kh + output_padding rows; col2im drops
    `padding` rows on each side (a crop), leaving Ho = (H-1)*sh - 2*ph + kh + output_padding.

    Backward runs the same Conv2d forward: with dcols = im2col(pad(dL/dout)),
        dx      = W2 @ dcols            (C_in, H*W*N) = (C_in, H, W, N) batch last
        dweight = x2 @ dcols^T          (C_in, C_out*kh*kw)
        dbias   = dL/dout summed over N, Ho, Wo.
    (cols = W2^T x2 is the Dense rule again, with gradient dcols = im2col(pad(dL/dout))
    because im2col is the adjoint of col2im and padding the adjoint of cropping; then
    dx2 = W2 dcols and dW2 = x2 dcols^T.) The costs mirror Conv2d's: one im2col and
    two products backward, one product and one col2im forward. Only the bias differs:
    it is added to the output pixels after col2im, not to the columns, so it costs a
    pass of its own forward (add_bias) and a row sum backward (row_sums). As there,
    requires_grad_(False) skips dweight and input_grad_(False) skips dx. Unlike there,
    the two gradients are not run as two tasks on two threads: backward here is two
    products and no col2im, which split about as well as they overlap (as tasks, mostly
    1-5% faster for the 64->1 layer at batch 64, and no faster elsewhere).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, *, bias=True):  # torch's 7th positional is groups
        super().__init__()
        check_sizes("ConvTranspose2d", in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "ConvTranspose2d kernel_size")
        self.stride = pair(stride, "ConvTranspose2d stride")
        self.padding = pair(padding, "ConvTranspose2d padding", minimum=0)
        self.output_padding = pair(output_padding, "ConvTranspose2d output_padding",
                                   minimum=0)
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
        check_not_empty(self, h, w)
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
        x2 = to_chwn(x).reshape(self.in_channels, -1)
        w2 = self.params["weight"].reshape(self.in_channels, -1)
        cols = product(w2.T, x2, into="columns")
        ph, pw = self.padding
        out = col2im(cols, (self.out_channels, hp - 2 * ph, wp - 2 * pw, n), self.kernel_size,
                     self.stride, self.padding, (h, w))
        if "bias" in self.params:
            add_bias(out.reshape(self.out_channels, -1), self.params["bias"])
        self.cache = (x2, (n, h, w), (hp, wp))
        return to_nchw(out)

    def backward(self, dout):
        x2, (n, h, w), (hp, wp) = self.cache
        (ph, pw) = self.padding
        check_grad(self, dout, (n, self.out_channels, hp - 2 * ph, wp - 2 * pw))
        weight = self.params["weight"]
        kh, kw = self.kernel_size
        dpad = scratch(("padded", self.padding), (self.out_channels, hp, wp, n), dout.dtype)
        pad_into(dpad, dout, self.padding)
        dcols = im2col(dpad, self.kernel_size, self.stride, (h, w),
                       scratch("columns", (self.out_channels * kh * kw, h * w * n), dout.dtype))
        if self.requires_grad:
            self.accumulate_grad("weight", parallel.matmul_sum(x2, dcols.T).reshape(weight.shape))
            if "bias" in self.params:  # the zero border adds nothing
                self.accumulate_grad("bias", row_sums(dpad.reshape(self.out_channels, -1)))
        if not self.needs_input_grad:
            return None
        w2 = weight.reshape(self.in_channels, -1)
        dx2 = product(w2, dcols)
        return to_nchw(dx2.reshape(self.in_channels, h, w, n))
