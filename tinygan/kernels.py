"""Fused CuPy kernels: a chain of elementwise operations as one GPU launch.

On a GPU every array operation is a kernel launch, which costs microseconds of Python and
driver time however small the array; a DCGAN step's readable code makes 833 of them
(``benchmarks/count_ops.py``). Where a chain of elementwise operations runs for every
parameter or every layer, it is written once more here as one ``ElementwiseKernel``: Adam's
update, col2im, and BatchNorm's normalisation, input gradient and running statistics.

The NumPy code beside each call is the readable version and the reference. A kernel does
the same operations in the same order, and is compiled with ``--fmad=false`` (no fused
multiply-add), so each operation rounds as NumPy's does: the tests compare the two bit for
bit. Kernels run on CuPy only (``enabled()``); NumPy runs the readable code, where fusing
would save little (an operation costs NumPy about a microsecond of overhead).
"""

from tinygan import backend
from tinygan.backend import xp

ENABLED = True  # False: CuPy runs the readable code too (how the tests compare the two)
INDEX_LIMIT = 2**31  # col2im's kernel indexes with 32-bit ints: arrays of fewer values only
_compiled = {}  # name -> ElementwiseKernel, built on first use


def enabled(*arrays):
    """Whether a fused kernel replaces the readable code here and now: on CuPy, when the
    library in use can build kernels (tests that only take CuPy's name compute with NumPy),
    and when the ``arrays`` it would take share one dtype, its one element type (where they
    differ, the readable code runs, with the library's type promotions)."""
    return (ENABLED and backend.name() == "cupy" and hasattr(xp, "ElementwiseKernel")
            and len({a.dtype for a in arrays}) <= 1)


def _kernel(name, in_params, out_params, operation):
    if name not in _compiled:
        _compiled[name] = xp.ElementwiseKernel(in_params, out_params, operation,
                                               f"tinygan_{name}", options=("--fmad=false",))
    return _compiled[name]


def adam(param, grad, m, v, b1, b2, eps, step_size, bias2_sqrt):
    """Adam's update of one parameter in place, as one launch (``optim.Adam.update``):
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g g
        p -= step_size * m / (sqrt(v) / bias2_sqrt + eps)
    with step_size = lr / (1 - b1^t), bias2_sqrt = sqrt(1 - b2^t). Every scalar is rounded
    to the parameter's dtype first, as NumPy rounds a Python float it combines with an array.
    """
    update = _kernel(
        "adam",
        "T grad, T b1, T one_minus_b1, T b2, T one_minus_b2, T eps, T step_size, T bias2_sqrt",
        "T param, T m, T v",
        """
        m = m * b1 + grad * one_minus_b1;
        v = v * b2 + grad * one_minus_b2 * grad;
        param -= m * step_size / (sqrt(v) / bias2_sqrt + eps);
        """)
    update(grad, b1, 1 - b1, b2, 1 - b2, eps, step_size, bias2_sqrt, param, m, v)


def col2im(cols, x, kernel, stride, padding, out_size):
    """conv.col2im as one launch: each element of x (C, H, W, N) gathers what lands on it,
        x[c, y, z, b] = sum over (ki, kj) of cols[c, ki, kj, (y+ph-ki) / sh, (z+pw-kj) / sw, b]
    over the kernel offsets (ki, kj) whose quotients are whole and inside the (out_h, out_w)
    grid, added in the slice-adds' order (ki, then kj) from zero, so with their rounding.
    ``cols`` holds (C, kh, kw, out_h, out_w, N) in C order, flattened; x is written whole.
    Each has fewer than INDEX_LIMIT values: the index arithmetic is 32-bit.
    """
    gather = _kernel(
        "col2im",
        "raw T cols, int32 kh, int32 kw, int32 sh, int32 sw, int32 ph, int32 pw, "
        "int32 out_h, int32 out_w, int32 height, int32 width, int32 batch",
        "T x",
        """
        // i runs over x in C order: which (c, y, z, b) it is
        const int at = i, b = at % batch, pixel = at / batch;
        const int z = pixel % width, y = pixel / width % height, c = pixel / width / height;
        T sum = 0;
        // Offset ki reaches row y from output row oh = (y + ph - ki) / sh where that divides:
        // the first such ki is (y + ph) % sh, then every sh-th, with oh one less each time.
        for (int ki = (y + ph) % sh, oh = (y + ph) / sh; ki < kh && oh >= 0; ki += sh, --oh) {
            if (oh >= out_h) continue;
            for (int kj = (z + pw) % sw, ow = (z + pw) / sw; kj < kw && ow >= 0;
                 kj += sw, --ow) {
                if (ow >= out_w) continue;
                sum += cols[((((c * kh + ki) * kw + kj) * out_h + oh) * out_w + ow) * batch + b];
            }
        }
        x = sum;
        """)
    c, height, width, batch = x.shape
    (kh, kw), (sh, sw), (ph, pw), (out_h, out_w) = kernel, stride, padding, out_size
    gather(cols, kh, kw, sh, sw, ph, pw, out_h, out_w, height, width, batch, x)


def batchnorm_affine(xhat, inv_std, gamma, beta, out):
    """BatchNorm's forward after its statistics (norm._BatchNorm.forward), as one launch:
        xhat *= inv_std;   out = xhat * gamma + beta
    where xhat holds x - mean on entry, and inv_std, gamma, beta are per channel, shaped to
    broadcast over it."""
    _kernel("batchnorm_affine", "T inv_std, T gamma, T beta", "T xhat, T out",
            """
            xhat = xhat * inv_std;
            out = xhat * gamma + beta;
            """)(inv_std, gamma, beta, xhat, out)


def batchnorm_input_grad(dout, xhat, scale, sum_dout, sum_dout_xhat, count, dx):
    """BatchNorm's dx with batch statistics (norm._BatchNorm.backward), as one launch:
        dx = dout * scale - (xhat * (scale * sum_dout_xhat / m) + scale * sum_dout / m)
    with scale = gamma / sqrt(var + eps), the sums per channel (broadcast), and m = count,
    the values per channel."""
    _kernel("batchnorm_input_grad",
            "T dout, T xhat, T scale, T sum_dout, T sum_dout_xhat, T count", "T dx",
            """
            const T correction = xhat * (scale * sum_dout_xhat / count) + scale * sum_dout / count;
            dx = dout * scale - correction;
            """)(dout, xhat, scale, sum_dout, sum_dout_xhat, count, dx)


def running_average(running_mean, running_var, mean, var, correction, momentum):
    """BatchNorm's running statistics (norm._BatchNorm._update_running), as one launch:
        running = (1 - momentum) * running + momentum * stat
    for the mean, and for the variance made unbiased, var * correction = var * m / (m - 1)."""
    _kernel("running_average", "T mean, T var, T correction, T momentum, T one_minus_momentum",
            "T running_mean, T running_var",
            """
            running_mean = one_minus_momentum * running_mean + momentum * mean;
            running_var = one_minus_momentum * running_var + momentum * (var * correction);
            """)(mean, var, correction, momentum, 1 - momentum, running_mean, running_var)
