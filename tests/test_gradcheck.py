"""Gradient checks: every layer's and every loss's hand-written backward against central
differences, in float64, over many random shapes and hyper-parameters.

Hypothesis draws the configurations with a fixed seed (``derandomize=True``), so the
sweep is the same on every run and a failure shrinks to a small reproducible example.
Inputs are drawn on the host and moved to the backend under test.
"""

import numpy as np
import pytest
from helpers import away_from_zero, host_rng, randn
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygan import backend, losses, nn
from tinygan.backend import xp
from tinygan.gradcheck import gradcheck, gradcheck_loss, relative_error

TOL = 1e-6
SWEEP = settings(derandomize=True, database=None, deadline=None, max_examples=25)
SMALL_SWEEP = settings(derandomize=True, database=None, deadline=None, max_examples=10)
CONV_SWEEP = settings(derandomize=True, database=None, deadline=None, max_examples=60)

seeds = st.integers(0, 2**16)


def assert_gradcheck(layer, x):
    errors = gradcheck(layer, x)
    assert errors, "gradcheck checked nothing"
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, f"{layer!r}: {errors}"


def int_or_pair(draw, low, high):
    """An int, or an (h, w) pair that may be non-square, as PyTorch's layers accept."""
    h, w = draw(st.integers(low, high)), draw(st.integers(low, high))
    return h if h == w and draw(st.booleans()) else (h, w)


def as_pair(value):
    return (value, value) if isinstance(value, int) else value


# -- Dense -------------------------------------------------------------------------------

@SWEEP
@given(n=st.integers(1, 4), fin=st.integers(1, 5), fout=st.integers(1, 4),
       bias=st.booleans(), seed=seeds)
def test_dense(n, fin, fout, bias, seed):
    assert_gradcheck(nn.Dense(fin, fout, bias=bias), randn(host_rng(seed), n, fin))


# -- convolutions ------------------------------------------------------------------------

@st.composite
def conv_configs(draw):
    kernel, stride = int_or_pair(draw, 1, 3), int_or_pair(draw, 1, 3)
    padding = int_or_pair(draw, 0, 2)
    (kh, kw), (ph, pw) = as_pair(kernel), as_pair(padding)
    h = draw(st.integers(max(1, kh - 2 * ph), 6))
    w = draw(st.integers(max(1, kw - 2 * pw), 6))
    return dict(kernel_size=kernel, stride=stride, padding=padding), (h, w)


@CONV_SWEEP
@given(cfg=conv_configs(), n=st.integers(1, 2), cin=st.integers(1, 3), cout=st.integers(1, 3),
       bias=st.booleans(), seed=seeds)
def test_conv2d(cfg, n, cin, cout, bias, seed):
    kwargs, (h, w) = cfg
    layer = nn.Conv2d(cin, cout, bias=bias, **kwargs)
    assert_gradcheck(layer, randn(host_rng(seed), n, cin, h, w))


@st.composite
def conv_transpose_configs(draw):
    kernel, stride = int_or_pair(draw, 1, 4), int_or_pair(draw, 1, 3)
    (kh, kw), (sh, sw) = as_pair(kernel), as_pair(stride)
    output_padding = (draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1)))
    padding = int_or_pair(draw, 0, 2)
    (ph, pw) = as_pair(padding)
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    # the output, (H - 1) * s - 2 p + k + output_padding, must not be empty
    out_h = (h - 1) * sh - 2 * ph + kh + output_padding[0]
    out_w = (w - 1) * sw - 2 * pw + kw + output_padding[1]
    if out_h < 1 or out_w < 1:
        padding = 0
    return dict(kernel_size=kernel, stride=stride, padding=padding,
                output_padding=output_padding), (h, w)


@CONV_SWEEP
@given(cfg=conv_transpose_configs(), n=st.integers(1, 2), cin=st.integers(1, 3),
       cout=st.integers(1, 3), bias=st.booleans(), seed=seeds)
def test_conv_transpose2d(cfg, n, cin, cout, bias, seed):
    kwargs, (h, w) = cfg
    layer = nn.ConvTranspose2d(cin, cout, bias=bias, **kwargs)
    assert_gradcheck(layer, randn(host_rng(seed), n, cin, h, w))


# -- batch norm --------------------------------------------------------------------------

def randomise_running_stats(layer, rng):
    """Eval mode normalises with the running statistics: make them non-trivial."""
    c = layer.num_features
    layer.buffers["running_mean"] = backend.to_device(rng.standard_normal(c))
    layer.buffers["running_var"] = backend.to_device(rng.uniform(0.5, 2.0, c))


@SWEEP
@given(shape=st.sampled_from([(3, 2), (4, 3), (5, 1), (2, 3, 2), (3, 2, 4), (1, 2, 3)]),
       training=st.booleans(), affine_seed=seeds, seed=seeds)
def test_batchnorm1d(shape, training, affine_seed, seed):
    rng = host_rng(seed)
    layer = nn.BatchNorm1d(shape[1], eps=10.0 ** -int(rng.integers(1, 6)), momentum=0.3)
    # non-trivial gamma and beta, so their gradients and the scaling are exercised
    layer.params["weight"] = randn(host_rng(affine_seed), shape[1])
    layer.params["bias"] = randn(host_rng(affine_seed + 1), shape[1])
    randomise_running_stats(layer, rng)
    layer.train(training)
    assert_gradcheck(layer, randn(rng, *shape))


@SWEEP
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(2, 3),
       training=st.booleans(), seed=seeds)
def test_batchnorm2d(n, c, h, w, training, seed):
    rng = host_rng(seed)
    layer = nn.BatchNorm2d(c)
    layer.params["weight"] = randn(rng, c)
    layer.params["bias"] = randn(rng, c)
    randomise_running_stats(layer, rng)
    layer.train(training)
    assert_gradcheck(layer, randn(rng, n, c, h, w))


# -- elementwise and shape layers --------------------------------------------------------

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@SWEEP
@given(make=st.sampled_from([nn.ReLU, nn.Tanh, nn.Sigmoid, lambda: nn.LeakyReLU(),
                             lambda: nn.LeakyReLU(0.2), lambda: nn.LeakyReLU(1.7)]),
       shape=shapes, seed=seeds)
def test_activations(make, shape, seed):
    # scaled so Tanh / Sigmoid also see their flat tails
    x = away_from_zero(host_rng(seed), *shape) * 3
    assert_gradcheck(make(), x)


@SWEEP
@given(p=st.sampled_from([0.0, 0.1, 0.5, 0.9]), training=st.booleans(),
       shape=shapes, seed=seeds)
def test_dropout(p, training, shape, seed):
    layer = nn.Dropout(p).train(training)
    assert_gradcheck(layer, randn(host_rng(seed), *shape))


@SMALL_SWEEP
@given(shape=st.lists(st.integers(1, 3), min_size=2, max_size=4).map(tuple), seed=seeds)
def test_flatten(shape, seed):
    assert_gradcheck(nn.Flatten(), randn(host_rng(seed), *shape))


@SMALL_SWEEP
@given(n=st.integers(1, 3), target=st.sampled_from([(6,), (2, 3), (3, 2), (1, 2, 3), (3, 1, 2)]),
       seed=seeds)
def test_reshape(n, target, seed):
    # the input arrives flat or in another shape with the same size
    source = (6,) if len(target) > 1 else (2, 3)
    assert_gradcheck(nn.Reshape(*target), randn(host_rng(seed), n, *source))


@SMALL_SWEEP
@given(num=st.integers(1, 5), dim=st.integers(1, 4), n=st.integers(1, 8), seed=seeds)
def test_embedding(num, dim, n, seed):
    # n may exceed num: repeated indices must add their gradients into one row
    idx = backend.to_device(host_rng(seed).integers(0, num, n))
    errors = gradcheck(nn.Embedding(num, dim), idx)
    assert set(errors) == {"weight"}  # integer indices have no input gradient
    assert errors["weight"] < TOL


# -- Sequential --------------------------------------------------------------------------

def small_dcgan_pair():
    """A miniature DCGAN generator and discriminator, every layer type in one graph."""
    g = nn.Sequential(
        nn.Dense(3, 2 * 2 * 2), nn.BatchNorm1d(8), nn.ReLU(), nn.Reshape(2, 2, 2),
        nn.ConvTranspose2d(2, 2, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0)),
        nn.BatchNorm2d(2), nn.LeakyReLU(0.2), nn.Conv2d(2, 1, 3, padding=1), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(1, 2, (2, 3), stride=(1, 2), padding=1), nn.LeakyReLU(0.2), nn.Dropout(0.3),
        nn.Flatten(), nn.Dense(20, 1), nn.Sigmoid(),
    )
    return g, d


@pytest.mark.parametrize("training", [True, False])
def test_sequential_generator_and_discriminator(training):
    rng = host_rng(7)
    g, d = small_dcgan_pair()
    g.train(training)
    d.train(training)
    assert_gradcheck(g, randn(rng, 3, 3))
    assert_gradcheck(d, randn(rng, 2, 1, 4, 3))
    # the whole GAN path: D(G(z)), gradients reaching G's weights through D
    assert_gradcheck(nn.Sequential(g, d), randn(rng, 3, 3))


def test_sequential_conditional_embedding():
    table = nn.Sequential(nn.Embedding(4, 3), nn.Dense(3, 2), nn.Tanh())
    idx = backend.to_device(np.array([0, 3, 3, 1, 0]))
    errors = gradcheck(table, idx)
    assert set(errors) == {"0.weight", "1.weight", "1.bias"}
    assert max(errors.values()) < TOL, errors


# -- losses ------------------------------------------------------------------------------

@SWEEP
@given(shape=shapes, kind=st.sampled_from(["hard", "soft", "scalar"]),
       scale=st.sampled_from([1.0, 5.0, 40.0]), seed=seeds)
def test_bce_with_logits(shape, kind, scale, seed):
    rng = host_rng(seed)
    logits = randn(rng, *shape) * scale
    if kind == "hard":
        target = backend.to_device(rng.integers(0, 2, shape).astype(float))
    elif kind == "soft":
        target = backend.to_device(rng.uniform(0, 1, shape))
    else:
        target = 0.9  # one-sided label smoothing passes a scalar
    assert gradcheck_loss(losses.bce_with_logits, logits, target) < TOL


def test_bce_with_logits_large_logits():
    """|x| in the hundreds: exp(|x|) would overflow in a naive formula; the gradient
    s(x) - t is then exactly 0 or +-1 and the finite differences must agree."""
    logits = backend.to_device(np.array([-800.0, -300.0, -30.0, 0.0, 30.0, 300.0, 800.0]))
    target = backend.to_device(np.array([0.0, 1.0, 0.3, 0.5, 1.0, 0.0, 0.7]))
    assert gradcheck_loss(losses.bce_with_logits, logits, target) < TOL


@SWEEP
@given(n=st.integers(1, 5), k=st.integers(1, 6), scale=st.sampled_from([1.0, 10.0, 100.0]),
       seed=seeds)
def test_cross_entropy(n, k, scale, seed):
    rng = host_rng(seed)
    logits = randn(rng, n, k) * scale
    labels = backend.to_device(rng.integers(0, k, n))
    assert gradcheck_loss(losses.cross_entropy, logits, labels) < TOL


@SMALL_SWEEP
@given(shape=shapes, real=st.booleans(), seed=seeds)
def test_wasserstein_critic(shape, real, seed):
    scores = randn(host_rng(seed), *shape)
    assert gradcheck_loss(losses.wasserstein_critic, scores, real) < TOL


@SMALL_SWEEP
@given(shape=shapes, seed=seeds)
def test_wasserstein_generator(shape, seed):
    scores = randn(host_rng(seed), *shape)
    assert gradcheck_loss(losses.wasserstein_generator, scores) < TOL


# -- the checker itself and the backward contract ----------------------------------------

class WrongTanh(nn.Tanh):
    """Tanh with the classic mistake f'(x) = 1 - x^2 instead of 1 - tanh(x)^2."""

    def forward(self, x):
        self.x = x
        return super().forward(x)

    def backward(self, dout):
        return dout * (1 - self.x * self.x)


class DenseWrongBias(nn.Dense):
    """Dense whose bias gradient forgets the sum over the batch (takes row 0 only)."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["bias"] = dout[0].copy()
        return dx


def test_gradcheck_catches_wrong_input_gradient():
    errors = gradcheck(WrongTanh(), randn(host_rng(0), 3, 4))
    assert errors["input"] > 1e-2


def test_gradcheck_catches_wrong_parameter_gradient():
    errors = gradcheck(DenseWrongBias(3, 2), randn(host_rng(0), 4, 3))
    assert errors["input"] < TOL and errors["weight"] < TOL
    assert errors["bias"] > 1e-2


def test_gradcheck_refuses_a_frozen_layer_and_leaves_the_grads_zero():
    """A frozen layer computes no parameter gradient: every error would read 1.0, which
    looks like a broken backward. After a check, the grads are zero, as before a step."""
    net = nn.Sequential(nn.Dense(3, 2), nn.Tanh(), nn.Dense(2, 1))
    net.layers[2].requires_grad_(False)
    with pytest.raises(ValueError, match=r"^gradcheck: Dense frozen \(requires_grad_\(False\)\) "
                                         r"computes no parameter gradients"):
        gradcheck(net, randn(host_rng(1), 4, 3))
    net.requires_grad_(True)
    assert max(gradcheck(net, randn(host_rng(1), 4, 3)).values()) < TOL
    for name, module, key in net.parameters():
        assert not backend.to_host(module.grads[key]).any(), name


def test_gradcheck_works_in_float64_whatever_the_input_dtype():
    """A float32 input is converted: in float32, h = 1e-6 would vanish in the rounding."""
    x = randn(host_rng(6), 4, 3).astype(xp.float32)
    errors = gradcheck(nn.Dense(3, 2), x)
    assert max(errors.values()) < TOL, errors


def test_gradcheck_loss_works_in_float64_whatever_the_logits_dtype():
    """float32 logits are converted: in float32, h = 1e-6 would vanish in the rounding."""
    rng = host_rng(8)
    logits = randn(rng, 4, 3).astype(xp.float32)
    labels = backend.to_device(rng.integers(0, 3, 4))
    assert gradcheck_loss(losses.cross_entropy, logits, labels) < TOL


def test_relative_error_is_symmetric_and_norm_wise():
    a, b = np.zeros(4), np.array([3.0, 0.0, 4.0, 0.0])
    assert relative_error(a, b) == relative_error(b, a) == 1.0  # ||b|| / ||b||
    assert relative_error(b, 2 * b) == pytest.approx(0.5)  # ||b|| / ||2b||
    assert relative_error(a, np.full(4, 1e-9)) == pytest.approx(2e-9 / 1e-6)  # the floor


def test_gradcheck_handles_non_contiguous_arrays():
    """A transposed input, or weights loaded from a Fortran-ordered array, are views
    whose reshape(-1) is a copy: the finite differences must still perturb the array."""
    x = backend.to_host(randn(host_rng(1), 3, 5)).T  # (5, 3), not C-contiguous
    layer = nn.Dense(3, 2)
    state = {k: np.asfortranarray(backend.to_host(v)) for k, v in layer.state_dict().items()}
    layer.load_state_dict({k: backend.to_device(v) for k, v in state.items()})
    errors = gradcheck(layer, backend.to_device(x))
    assert max(errors.values()) < TOL, errors


def test_gradcheck_leaves_input_unchanged():
    x = randn(host_rng(2), 2, 3)
    before = backend.to_host(x).copy()
    gradcheck(nn.Dense(3, 2), x)
    np.testing.assert_array_equal(backend.to_host(x), before)


def test_gradcheck_leaves_running_statistics_unchanged():
    """Its hundreds of training-mode forwards would otherwise move BatchNorm's buffers."""
    layer = nn.Sequential(nn.Dense(3, 4), nn.BatchNorm1d(4)).astype(xp.float64)
    before = {k: backend.to_host(v).copy() for k, v in layer.state_dict().items()}
    gradcheck(layer, randn(host_rng(4), 5, 3) + 2.0)
    after = {k: backend.to_host(v) for k, v in layer.state_dict().items()}
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_gradcheck_says_when_the_input_gradient_is_switched_off():
    layer = nn.Dense(3, 2).input_grad_(False)
    with pytest.raises(ValueError, match=r"input_grad_\(True\)"):
        gradcheck(layer, randn(host_rng(5), 2, 3))


def test_grads_accumulate_until_zero_grad():
    rng = host_rng(3)
    layer = nn.Sequential(nn.Conv2d(2, 3, 2), nn.BatchNorm2d(3), nn.Flatten(), nn.Dense(12, 2))
    layer.astype(xp.float64)
    x, g = randn(rng, 2, 2, 3, 3), randn(rng, 2, 2)
    layer.forward(x)
    layer.backward(g)
    once = {k: backend.to_host(m.grads[key]).copy() for k, m, key in layer.parameters()}
    layer.forward(x)
    layer.backward(g)
    for name, module, key in layer.parameters():
        np.testing.assert_allclose(backend.to_host(module.grads[key]), 2 * once[name],
                                   rtol=1e-12, atol=1e-15, err_msg=name)
    layer.zero_grad()
    for name, module, key in layer.parameters():
        assert not backend.to_host(module.grads[key]).any(), name


def test_frozen_layer_returns_input_gradient_but_keeps_grads():
    """requires_grad_(False) is how the generator step freezes the discriminator."""
    rng = host_rng(4)
    layer = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                          nn.Dense(8, 1)).astype(xp.float64)
    x, g = randn(rng, 3, 1, 2, 2), randn(rng, 3, 1)
    layer.forward(x)
    dx_trainable = backend.to_host(layer.backward(g))
    layer.zero_grad()
    layer.requires_grad_(False)
    layer.forward(x)
    np.testing.assert_array_equal(backend.to_host(layer.backward(g)), dx_trainable)
    for name, module, key in layer.parameters():
        assert not backend.to_host(module.grads[key]).any(), name


INPUT_GRAD_CASES = {
    "dense": (lambda: nn.Dense(5, 3), (4, 5)),
    "conv2d": (lambda: nn.Conv2d(2, 3, 4, 2, 1), (2, 2, 6, 6)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(2, 3, 4, 2, 1), (2, 2, 3, 3)),
    "sequential": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.2),
                                         nn.Flatten(), nn.Dense(8, 1)), (3, 1, 2, 2)),
}


@pytest.mark.parametrize("case", sorted(INPUT_GRAD_CASES))
def test_input_grad_off_skips_dx_but_not_weight_grads(case):
    """input_grad_(False) is how the D step treats D's input (data) and the G step G's
    input (noise): backward returns None, the weight gradients are the same bits."""
    make, shape = INPUT_GRAD_CASES[case]
    rng = host_rng(8)
    layer = make().astype(xp.float64)
    x = randn(rng, *shape)
    g = randn(rng, *layer.forward(x).shape)
    assert layer.backward(g) is not None
    grads = {name: backend.to_host(m.grads[k]).copy() for name, m, k in layer.parameters()}
    layer.zero_grad()
    assert layer.input_grad_(False) is layer
    layer.forward(x)
    assert layer.backward(g) is None
    for name, module, key in layer.parameters():
        np.testing.assert_array_equal(backend.to_host(module.grads[key]), grads[name], name)
    layer.input_grad_(True)
    assert all(m.needs_input_grad for _, m in layer.modules())
    layer.forward(x)
    assert layer.backward(g) is not None


def test_sequential_passes_input_grad_up_to_its_first_layer_with_params():
    net = nn.Sequential(nn.Dense(4, 4), nn.ReLU(), nn.Dense(4, 1))
    net.input_grad_(False)
    assert [m.needs_input_grad for m in net.layers] == [False, True, True]
    # an MLP discriminator on images: Flatten has nothing to learn, the Dense skips dx
    net = nn.Sequential(nn.Flatten(), nn.Dense(4, 3), nn.LeakyReLU(0.2), nn.Dense(3, 1))
    net.input_grad_(False)
    assert [m.needs_input_grad for m in net.layers] == [False, False, True, True]
    out = net.forward(backend.to_device(np.ones((2, 1, 2, 2), np.float32)))
    assert net.backward(xp.ones_like(out)) is None
    net.input_grad_(True)
    out = net.forward(backend.to_device(np.ones((2, 1, 2, 2), np.float32)))  # one backward each
    assert net.backward(xp.ones_like(out)).shape == (2, 1, 2, 2)
