"""The fused CuPy kernels (tinygan/kernels.py) against the readable code they replace.

Each kernel does the readable code's operations in the same order, compiled without fused
multiply-adds, so the two must agree bit for bit: every test runs the same work once with
the kernels (``kernels.ENABLED``) and once without, and checks that the kernel really ran
in the first round and not in the second. CuPy only (on the stand-in, the kernels' C++ is
compiled by the host's compiler).
"""

import numpy as np
import pytest
from helpers import host_rng

from tinygan import backend, kernels, nn, optim
from tinygan.nn import conv

pytestmark = pytest.mark.skipif(backend.name() != "cupy",
                                reason="the fused kernels run on CuPy only")


def fused_and_readable(monkeypatch, work, *names):
    """{True: work() with the kernels, False: without}, checking that each kernel in
    ``names`` ran in the first round only."""
    launched = {name: 0 for name in names}
    for name in names:
        kernel = getattr(kernels, name)

        def spy(*args, _kernel=kernel, _name=name):
            launched[_name] += 1
            return _kernel(*args)

        monkeypatch.setattr(kernels, name, spy)
    results = {}
    for fused in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", fused)
        results[fused] = work()
        if fused:
            ran = dict(launched)
            assert all(ran.values()), f"kernels that did not run: {ran}"
    assert launched == ran, "a kernel ran in the readable round"
    return results


def forbid(monkeypatch, *names):
    """Make each kernel in ``names`` fail its test if it is launched."""
    def refuse(*args):
        raise AssertionError("a fused kernel ran where the readable code should")

    for name in names:
        monkeypatch.setattr(kernels, name, refuse)


def assert_bit_for_bit(results):
    for name, fused in results[True].items():
        readable = results[False][name]
        assert fused.dtype == readable.dtype, name
        np.testing.assert_array_equal(fused, readable, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam(dtype, monkeypatch):
    """4 steps with weight decay and bias correction."""
    rng = host_rng(11)
    p0 = rng.standard_normal((4, 50)).astype(dtype)
    grads = [rng.standard_normal(p0.shape).astype(dtype) for _ in range(4)]

    def work():
        layer = nn.Dense(50, 4, bias=False).astype(dtype)
        layer.params["weight"] = backend.to_device(p0)
        opt = optim.Adam(layer, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
        for g in grads:
            layer.grads["weight"] = backend.to_device(g)
            opt.step()
        state = opt.state["weight"]
        return {k: backend.to_host(v) for k, v in (("weight", layer.params["weight"]),
                                                    ("exp_avg", state["exp_avg"]),
                                                    ("exp_avg_sq", state["exp_avg_sq"]))}

    assert_bit_for_bit(fused_and_readable(monkeypatch, work, "adam"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, padding, size", [
    ((4, 4), (2, 2), (1, 1), (14, 14)),  # the DCGAN layers
    ((3, 3), (1, 1), (1, 1), (5, 6)),
    ((3, 5), (2, 1), (0, 2), (9, 7)),
    ((5, 5), (3, 3), (2, 2), (11, 11)),  # offsets that land nowhere on some rows
    ((1, 1), (1, 1), (0, 0), (3, 3)),
])
def test_col2im(dtype, kernel, stride, padding, size, monkeypatch):
    """The gather adds what lands on each element in the slice-adds' order, from zero;
    values that land in the padding are dropped."""
    c, n = 3, 5
    (kh, kw), (sh, sw), (ph, pw), (h, w) = kernel, stride, padding, size
    out_size = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    cols = host_rng(5).standard_normal((c * kh * kw, out_size[0] * out_size[1] * n))
    cols = backend.to_device(cols.astype(dtype))

    def work():
        return {"x": backend.to_host(conv.col2im(cols, (c, h, w, n), kernel, stride, padding,
                                                 out_size))}

    assert_bit_for_bit(fused_and_readable(monkeypatch, work, "col2im"))


def test_col2im_past_the_32_bit_index_limit_takes_the_readable_code(monkeypatch):
    """Arrays of 2^31 values or more would overflow the kernel's int index: the slice-adds
    run instead (a lower limit stands in for 2^31 here; the image counts too, since with a
    stride above the kernel size it is the larger of the two)."""
    cols = backend.to_device(host_rng(6).standard_normal((2 * 1 * 1, 3 * 3 * 4)))
    forbid(monkeypatch, "col2im")
    monkeypatch.setattr(kernels, "INDEX_LIMIT", cols.size + 1)  # the image: 2*6*6*4 values
    x = conv.col2im(cols, (2, 6, 6, 4), (1, 1), (2, 2), (0, 0), (3, 3))
    assert backend.to_host(x).sum() == pytest.approx(backend.to_host(cols).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, shape, batch_last", [
    (nn.BatchNorm1d, (16, 5), False),
    (nn.BatchNorm1d, (6, 4, 7), False),
    (nn.BatchNorm2d, (5, 3, 4, 6), False),
    (nn.BatchNorm2d, (5, 3, 4, 6), True),  # the (C, H, W, N) memory the conv layers hand on
])
@pytest.mark.parametrize("momentum", [0.1, None, 0, 1, np.float64(0.3)])
def test_batchnorm_training(cls, shape, batch_last, dtype, momentum, monkeypatch):
    """Two training steps (forward, backward) then an eval forward and backward: outputs,
    input and parameter gradients, running statistics."""
    rng = host_rng(9)
    xs = [rng.standard_normal(shape) * 3 + 1 for _ in range(2)]
    douts = [rng.standard_normal(shape) for _ in range(3)]

    def device(a):
        a = a.astype(dtype)
        if batch_last:  # the same values, laid out channel-major with the batch last
            return backend.to_device(np.moveaxis(a, 0, -1).copy()).transpose(3, 0, 1, 2)
        return backend.to_device(a)

    def work():
        layer = cls(shape[1], momentum=momentum).astype(dtype)
        layer.params["weight"] = backend.to_device(rng_params.astype(dtype))
        seen = {}
        for step, x in enumerate([*xs, xs[0]]):
            if step == 2:
                layer.eval()
            out = layer.forward(device(x))
            dx = layer.backward(device(douts[step]))
            seen |= {f"out{step}": out, f"dx{step}": dx}
        seen |= {k: layer.grads[k] for k in layer.grads}
        seen |= {k: v for k, v in layer.buffers.items() if k != "num_batches_tracked"}
        return {k: backend.to_host(v) for k, v in seen.items()}

    rng_params = host_rng(2).uniform(0.5, 1.5, shape[1])
    names = ("batchnorm_affine", "batchnorm_input_grad")
    if momentum is not None:  # None: the average of every batch, 1 / batches so far
        names += ("running_average",)
    assert_bit_for_bit(fused_and_readable(monkeypatch, work, *names))


@pytest.mark.parametrize("what, refused", [
    ("float64 input", ("batchnorm_affine", "running_average")),  # float32 gamma, statistics
    ("float64 bias", ("batchnorm_affine",)),
    ("float64 grad", ("adam",)),  # for a float32 weight and moments
])
def test_mixed_dtypes_take_the_readable_code(what, refused, monkeypatch):
    """A kernel has one element type: where the arrays it would take differ in dtype, the
    readable code runs (with the library's promotions) and that kernel is not launched. (The
    BatchNorm backward's arrays are all of the input's dtype: its kernel may run.)"""
    forbid(monkeypatch, *refused)
    x = backend.to_device(host_rng(4).standard_normal((6, 3)))  # float64
    if what == "float64 grad":
        layer = nn.Dense(3, 2)
        optim.Adam(layer).update(layer.params["weight"], x[:2], {})
        return
    layer = nn.BatchNorm1d(3)  # float32 parameters and statistics
    if what == "float64 bias":
        x = x.astype("float32")
        layer.params["bias"] = layer.params["bias"].astype("float64")
    layer.backward(layer.forward(x))
