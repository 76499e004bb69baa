"""PyTorch as the oracle: every layer, loss and optimizer against torch's, in float64.

Weights are copied from the torch module into tinygan's through a plain dict of NumPy
arrays (``load_state_dict``); inputs and upstream gradients are drawn on the host and fed
to both; forward outputs, input gradients, parameter gradients and buffers must agree
to 1e-7 relative error. tinygan computes on the backend under test and its results are
brought back to the host to compare. The whole module skips when torch is absent.
"""

import inspect
import math
import warnings

import numpy as np
import pytest
from helpers import assert_close, host_rng

from tinygan import backend, losses, nn, optim
from tinygan.backend import xp

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-7


# -- constructors: the same arguments, defaults and positions ----------------------------

LAYER_TWINS = [(nn.Dense, torch.nn.Linear), (nn.Conv2d, torch.nn.Conv2d),
               (nn.ConvTranspose2d, torch.nn.ConvTranspose2d),
               (nn.BatchNorm1d, torch.nn.BatchNorm1d), (nn.BatchNorm2d, torch.nn.BatchNorm2d),
               (nn.LeakyReLU, torch.nn.LeakyReLU), (nn.Dropout, torch.nn.Dropout),
               (nn.Embedding, torch.nn.Embedding), (nn.ReLU, torch.nn.ReLU),
               (nn.Tanh, torch.nn.Tanh), (nn.Sigmoid, torch.nn.Sigmoid),
               (nn.Flatten, torch.nn.Flatten)]


@pytest.mark.parametrize("ours, theirs", LAYER_TWINS, ids=lambda c: c.__name__)
def test_constructor_arguments_are_torchs(ours, theirs):
    """Every argument a layer takes is torch's, with torch's default; those that can be
    given by position stand where torch has them (torch's extra ones, such as Conv2d's
    dilation before bias, make the rest keyword-only here), so code moves between the two."""
    our_args = inspect.signature(ours).parameters
    their_args = inspect.signature(theirs).parameters
    positional = [name for name, a in our_args.items() if a.kind == a.POSITIONAL_OR_KEYWORD]
    assert positional == list(their_args)[:len(positional)]
    for name, argument in our_args.items():
        assert name in their_args, f"{ours.__name__}({name}=...) is not torch's"
        assert argument.default == their_args[name].default, name


# -- plumbing ----------------------------------------------------------------------------

def numpy_state(module):
    """A torch module's state_dict as a plain dict of host NumPy arrays."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def tinygan_state(module):
    """A tinygan module's state_dict as a plain dict of host NumPy arrays."""
    return {k: backend.to_host(v).copy() for k, v in module.state_dict().items()}


def twin(ours, theirs):
    """Make ``ours`` a float64 copy of the float64 torch module ``theirs``."""
    theirs.double()
    ours.astype(xp.float64)
    ours.load_state_dict(numpy_state(theirs))
    return ours, theirs


def grads_by_name(ours):
    return {name: module.grads[key] for name, module, key in ours.parameters()}


def forward_backward_both(ours, theirs, x, rng, input_grad=True):
    """Run one forward and backward pass through both with the same x and upstream
    gradient; return the upstream gradient (host) so callers can reuse it."""
    theirs.zero_grad()
    ours.zero_grad()
    xt = torch.from_numpy(x.copy())
    if input_grad:
        xt.requires_grad_(True)
    yt = theirs(xt)
    upstream = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(upstream))
    y = ours.forward(backend.to_device(x))
    dx = ours.backward(backend.to_device(upstream))
    assert_close(y, yt.detach().numpy(), TOL, "forward output")
    if input_grad:
        assert_close(dx, xt.grad.numpy(), TOL, "input gradient")
    return y


def assert_params_and_buffers_match(ours, theirs, zero_grads=None):
    """Every parameter gradient and every buffer of ``ours`` equals torch's.

    ``zero_grads`` maps the names of gradients that are zero in exact arithmetic to a
    gradient of the same layer whose norm sets their scale (see BIAS_BEFORE_BN)."""
    zero_grads = zero_grads or {}
    ours_grads = grads_by_name(ours)
    torch_grads = {name: p.grad.numpy() for name, p in theirs.named_parameters()}
    assert sorted(ours_grads) == sorted(torch_grads)
    for name, expected in torch_grads.items():
        scale_of = zero_grads.get(name)
        floor = float(np.linalg.norm(torch_grads[scale_of])) if scale_of else 0.0
        assert_close(ours_grads[name], expected, TOL, f"grad of {name}", floor=floor)
    ours_state = tinygan_state(ours)
    for name, buf in theirs.named_buffers():
        assert_close(ours_state[name], buf.numpy(), TOL, f"buffer {name}")


def check_layer(ours, theirs, x, seed=0):
    """Twin the layers, then compare one forward/backward and everything it touched."""
    twin(ours, theirs)
    forward_backward_both(ours, theirs, x, host_rng(seed))
    assert_params_and_buffers_match(ours, theirs)


# -- Dense and convolutions --------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_dense_matches_linear(seed):
    rng = host_rng(seed)
    n, fin, fout = rng.integers(1, 6, 3)
    bias = bool(seed % 2)
    check_layer(nn.Dense(fin, fout, bias=bias), torch.nn.Linear(fin, fout, bias=bias),
                rng.standard_normal((n, fin)), seed)


def random_int_or_pair(rng, low, high):
    h, w = (int(v) for v in rng.integers(low, high + 1, 2))
    return h if h == w else (h, w)


def pair_of(value):
    return (value, value) if isinstance(value, int) else value


@pytest.mark.parametrize("seed", range(12))
def test_conv2d_matches_torch(seed):
    rng = host_rng(100 + seed)
    kernel = random_int_or_pair(rng, 1, 5)
    stride = random_int_or_pair(rng, 1, 3)
    padding = random_int_or_pair(rng, 0, 2)
    (kh, kw), (ph, pw) = pair_of(kernel), pair_of(padding)
    n, cin, cout = (int(v) for v in rng.integers(1, 4, 3))
    h = int(rng.integers(max(1, kh - 2 * ph), 10))
    w = int(rng.integers(max(1, kw - 2 * pw), 10))
    bias = seed % 3 != 0
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, bias=bias)
    check_layer(nn.Conv2d(cin, cout, **kwargs), torch.nn.Conv2d(cin, cout, **kwargs),
                rng.standard_normal((n, cin, h, w)), seed)


@pytest.mark.parametrize("seed", range(12))
def test_conv_transpose2d_matches_torch(seed):
    rng = host_rng(200 + seed)
    kernel = random_int_or_pair(rng, 1, 5)
    stride = random_int_or_pair(rng, 1, 3)
    (kh, kw), (sh, sw) = pair_of(kernel), pair_of(stride)
    output_padding = (int(rng.integers(0, sh)), int(rng.integers(0, sw)))
    # padding up to what still leaves a non-empty output for a 1x1 input
    padding = (int(rng.integers(0, (kh + output_padding[0] + 1) // 2)),
               int(rng.integers(0, (kw + output_padding[1] + 1) // 2)))
    n, cin, cout = (int(v) for v in rng.integers(1, 4, 3))
    h, w = (int(v) for v in rng.integers(1, 6, 2))
    bias = seed % 3 != 0
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding,
                  output_padding=output_padding, bias=bias)
    check_layer(nn.ConvTranspose2d(cin, cout, **kwargs),
                torch.nn.ConvTranspose2d(cin, cout, **kwargs),
                rng.standard_normal((n, cin, h, w)), seed)


def test_dcgan_upsampling_conv_transpose_matches_torch():
    """The exact shape the DCGAN generator uses: 7x7 -> 14x14 with k=4, s=2, p=1."""
    rng = host_rng(5)
    check_layer(nn.ConvTranspose2d(6, 3, 4, 2, 1), torch.nn.ConvTranspose2d(6, 3, 4, 2, 1),
                rng.standard_normal((2, 6, 7, 7)))


# -- batch norm --------------------------------------------------------------------------

BATCHNORM_CASES = [
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (6, 4)),
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (3, 4, 5)),
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (3, 4, 2, 3)),
]


@pytest.mark.parametrize("ours_cls, torch_cls, shape", BATCHNORM_CASES)
@pytest.mark.parametrize("eps, momentum", [(1e-5, 0.1), (1e-3, 0.5), (1e-5, None)])
def test_batchnorm_training_and_running_statistics_match_torch(
        ours_cls, torch_cls, shape, eps, momentum):
    rng = host_rng(len(shape))
    c = shape[1]
    theirs = torch_cls(c, eps=eps, momentum=momentum)
    with torch.no_grad():  # non-trivial gamma and beta
        theirs.weight.copy_(torch.from_numpy(rng.standard_normal(c)))
        theirs.bias.copy_(torch.from_numpy(rng.standard_normal(c)))
    ours, theirs = twin(ours_cls(c, eps=eps, momentum=momentum), theirs)
    for step in range(4):  # several training batches, with different means and scales
        shift = rng.standard_normal((1, c) + (1,) * (len(shape) - 2))
        x = rng.standard_normal(shape) * (step + 1) + shift
        forward_backward_both(ours, theirs, x, rng)
        assert_params_and_buffers_match(ours, theirs)
    state = tinygan_state(ours)
    assert int(state["num_batches_tracked"]) == 4
    # eval mode: normalise with the running statistics, which must not move any more
    ours.eval()
    theirs.eval()
    forward_backward_both(ours, theirs, rng.standard_normal(shape) * 3 + 1, rng)
    assert_params_and_buffers_match(ours, theirs)
    assert int(tinygan_state(ours)["num_batches_tracked"]) == 4


# -- elementwise and shape layers --------------------------------------------------------

def edge_values(rng, shape):
    """Random values with exact zeros (where ReLU's derivative is a convention) and
    large magnitudes (where tanh and sigmoid saturate) mixed in."""
    x = rng.standard_normal(shape) * 3
    flat = x.reshape(-1)
    flat[:: 5] = 0.0
    flat[1:: 7] = 40.0 * np.sign(flat[1:: 7])
    return x


@pytest.mark.parametrize("ours_factory, torch_factory", [
    (nn.ReLU, torch.nn.ReLU),
    (nn.LeakyReLU, torch.nn.LeakyReLU),
    (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    (lambda: nn.LeakyReLU(1.5), lambda: torch.nn.LeakyReLU(1.5)),
    (nn.Tanh, torch.nn.Tanh),
    (nn.Sigmoid, torch.nn.Sigmoid),
    (nn.Flatten, torch.nn.Flatten),
    (lambda: nn.Reshape(3, 2, 2), lambda: torch.nn.Unflatten(1, (3, 2, 2))),
], ids=["relu", "leaky_default", "leaky_0.2", "leaky_1.5", "tanh", "sigmoid", "flatten",
        "reshape"])
@pytest.mark.parametrize("training", [True, False])
def test_stateless_layers_match_torch(ours_factory, torch_factory, training):
    ours, theirs = ours_factory().train(training), torch_factory().train(training)
    shape = (4, 12) if isinstance(ours, nn.Reshape) else (3, 2, 4, 5)
    check_layer(ours, theirs, edge_values(host_rng(9), shape))


def test_relu_of_infinities_matches_torch():
    """max(x, 0), not x * [x > 0], which gives NaN at -inf."""
    x = np.array([[-np.inf, -1.0, 0.0, 2.0, np.inf]])
    layer = nn.ReLU()
    y = backend.to_host(layer.forward(backend.to_device(x)))
    np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(x)).numpy())  # [0 0 0 2 inf]
    dx = backend.to_host(layer.backward(backend.to_device(np.full_like(x, 3.0))))
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0, 3.0, 3.0]])


def test_sigmoid_does_not_overflow_like_torch():
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    check_layer(nn.Sigmoid(), torch.nn.Sigmoid(), x)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8])
def test_dropout_matches_torch(p):
    """torch's random mask cannot be reproduced, so: eval mode is the identity exactly as
    torch's; in training each output is 0 or x / (1 - p) as in torch, the gradient uses
    the same mask and scale, and the kept fraction is 1 - p like torch's."""
    rng = host_rng(11)
    x = rng.standard_normal((40, 50)) + 5.0  # no zeros in x, so a zero output means dropped
    check_layer(nn.Dropout(p).eval(), torch.nn.Dropout(p).eval(), x)

    layer = nn.Dropout(p).train()
    y = backend.to_host(layer.forward(backend.to_device(x)))
    dy = rng.standard_normal(x.shape)
    dx = backend.to_host(layer.backward(backend.to_device(dy)))
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - p), 0.0), rtol=1e-15)

    y_torch = torch.nn.Dropout(p).train()(torch.from_numpy(x)).numpy()
    kept_torch = y_torch != 0
    np.testing.assert_allclose(y_torch[kept_torch], x[kept_torch] / (1 - p), rtol=1e-15)
    # both kept fractions within 5 binomial standard deviations of 1 - p
    sd = math.sqrt(p * (1 - p) / x.size)
    for fraction in (kept.mean(), kept_torch.mean()):
        assert abs(fraction - (1 - p)) <= 5 * sd + 1e-12


def test_dropout_of_everything_matches_torch():
    """p = 1 drops every value, in both passes (torch allows it too)."""
    x = host_rng(13).standard_normal((4, 5))
    layer = nn.Dropout(1.0)
    y = backend.to_host(layer.forward(backend.to_device(x)))
    dx = backend.to_host(layer.backward(backend.to_device(np.ones_like(x))))
    np.testing.assert_array_equal(y, torch.nn.Dropout(1.0)(torch.from_numpy(x)).numpy())
    assert not y.any() and not dx.any()


def test_embedding_matches_torch():
    rng = host_rng(12)
    idx = np.array([3, 0, 3, 3, 6, 1, 0])  # repeated rows must sum their gradients
    ours, theirs = twin(nn.Embedding(7, 4), torch.nn.Embedding(7, 4))
    y_torch = theirs(torch.from_numpy(idx))
    upstream = rng.standard_normal(tuple(y_torch.shape))
    y_torch.backward(torch.from_numpy(upstream))
    y = ours.forward(backend.to_device(idx))
    assert ours.backward(backend.to_device(upstream)) is None
    assert_close(y, y_torch.detach().numpy(), TOL, "forward output")
    assert_params_and_buffers_match(ours, theirs)


# -- losses ------------------------------------------------------------------------------

def check_loss(ours_fn, torch_fn, logits, *args, torch_args=None):
    """(loss, dlogits) from tinygan against torch's loss value and autograd gradient."""
    logits_t = torch.from_numpy(logits.copy()).requires_grad_(True)
    loss_t = torch_fn(logits_t, *(torch_args if torch_args is not None else args))
    loss_t.backward()
    device_args = [backend.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    loss, dlogits = ours_fn(backend.to_device(logits), *device_args)
    assert_close(np.asarray(backend.to_host(loss)), loss_t.detach().numpy(), TOL, "loss")
    assert_close(dlogits, logits_t.grad.numpy(), TOL, "dlogits")


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3, 1e5])
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_bce_with_logits_matches_torch(kind, scale):
    rng = host_rng(13)
    logits = rng.standard_normal((8, 3)) * scale
    if kind == "hard":
        target = rng.integers(0, 2, (8, 3)).astype(float)
    else:
        target = rng.uniform(0, 1, (8, 3))
    check_loss(losses.bce_with_logits, F.binary_cross_entropy_with_logits, logits, target,
               torch_args=[torch.from_numpy(target)])


def test_bce_with_logits_of_confident_right_scores_keeps_full_precision():
    """|x| from 20 to 40 on the right side: each loss is log1p(e^-|x|), 2e-9 down to 4e-18.
    torch's log(1 + e^-|x|) keeps only ~7 digits of it here (and rounds it to 0 beyond
    |x| = 37), so the reference is math.log1p; the gradient is checked against torch."""
    logits = np.linspace(20.0, 40.0, 12).reshape(4, 3) * np.array([1.0, -1.0, 1.0])
    target = (logits > 0).astype(float)
    loss, dlogits = losses.bce_with_logits(backend.to_device(logits), backend.to_device(target))
    expected = sum(math.log1p(math.exp(-abs(v))) for v in logits.ravel()) / logits.size
    assert float(loss) == pytest.approx(expected, rel=1e-12, abs=0)
    logits_t = torch.from_numpy(logits).requires_grad_(True)
    F.binary_cross_entropy_with_logits(logits_t, torch.from_numpy(target)).backward()
    assert_close(dlogits, logits_t.grad.numpy(), TOL, "dlogits")


def test_bce_with_logits_scalar_target_matches_torch():
    logits = host_rng(14).standard_normal((16, 1)) * 4
    check_loss(losses.bce_with_logits, F.binary_cross_entropy_with_logits, logits, 0.9,
               torch_args=[torch.full((16, 1), 0.9, dtype=torch.float64)])


@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4])
def test_cross_entropy_matches_torch(scale):
    rng = host_rng(15)
    logits = rng.standard_normal((9, 5)) * scale
    labels = rng.integers(0, 5, 9)
    check_loss(losses.cross_entropy, F.cross_entropy, logits, labels,
               torch_args=[torch.from_numpy(labels)])


def test_cross_entropy_of_an_empty_batch_is_nan_like_torch():
    """No rows: a NaN mean and an empty gradient, not an error from the label range check."""
    logits, labels = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's "mean of empty slice"
        loss, dlogits = losses.cross_entropy(backend.to_device(logits), backend.to_device(labels))
    assert math.isnan(float(loss)) and math.isnan(expected.item())
    assert dlogits.shape == (0, 4)


@pytest.mark.parametrize("loss", [losses.wasserstein_generator,
                                  lambda d: losses.wasserstein_critic(d, False)])
def test_wasserstein_of_an_empty_batch_is_nan_like_torch(loss):
    """It used to raise a bare ZeroDivisionError (the gradient's 1/n)."""
    expected = -torch.zeros((0, 1), dtype=torch.float64).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's "mean of empty slice"
        value, dscores = loss(backend.to_device(np.zeros((0, 1))))
    assert math.isnan(float(value)) and math.isnan(expected.item())
    assert dscores.shape == (0, 1)


@pytest.mark.parametrize("real", [True, False])
def test_wasserstein_critic_matches_torch(real):
    scores = host_rng(16).standard_normal((10, 1))
    sign = -1.0 if real else 1.0
    check_loss(losses.wasserstein_critic, lambda d, _: sign * d.mean(), scores, real)


def test_wasserstein_generator_matches_torch():
    scores = host_rng(17).standard_normal((10, 1))
    check_loss(losses.wasserstein_generator, lambda d: -d.mean(), scores)


# -- a whole DCGAN -----------------------------------------------------------------------

def dcgan_generator_pair():
    ours = nn.Sequential(
        nn.Dense(100, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(),
        nn.Reshape(128, 7, 7),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Linear(100, 128 * 7 * 7), torch.nn.BatchNorm1d(128 * 7 * 7), torch.nn.ReLU(),
        torch.nn.Unflatten(1, (128, 7, 7)),
        torch.nn.ConvTranspose2d(128, 64, 4, 2, 1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(64, 1, 4, 2, 1), torch.nn.Tanh(),
    )
    return ours, theirs


def dcgan_discriminator_pair():
    ours = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Dense(128 * 7 * 7, 1),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 4, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(64, 128, 4, 2, 1), torch.nn.BatchNorm2d(128), torch.nn.LeakyReLU(0.2),
        torch.nn.Flatten(), torch.nn.Linear(128 * 7 * 7, 1),
    )
    return ours, theirs


# A bias followed by BatchNorm (in training mode) has a zero gradient in exact arithmetic:
# BN subtracts any per-channel constant. Both sides are then rounding noise (~1e-13), so
# that noise is measured against the size of the same layer's weight gradient instead
# of against itself.
G_BIAS_BEFORE_BN = {"0.bias": "0.weight", "4.bias": "4.weight"}
D_BIAS_BEFORE_BN = {"2.bias": "2.weight"}


def assert_states_equal(actual, expected):
    assert list(actual) == list(expected)
    for k, v in expected.items():
        assert actual[k].dtype == v.dtype, k
        np.testing.assert_array_equal(actual[k], v, err_msg=k)


@pytest.mark.parametrize("make_pair, input_shape", [
    (dcgan_generator_pair, (3, 100)), (dcgan_discriminator_pair, (3, 1, 28, 28)),
], ids=["generator", "discriminator"])
def test_dcgan_state_dict_round_trips_both_ways(make_pair, input_shape):
    ours, theirs = make_pair()
    # the same names in the same order: params then buffers, layer by layer
    assert list(ours.state_dict()) == list(theirs.state_dict())

    # torch -> plain dict of numpy arrays -> tinygan
    ours.load_state_dict(numpy_state(theirs))
    assert_states_equal(tinygan_state(ours), numpy_state(theirs))

    # tinygan -> plain dict of numpy arrays -> a fresh torch model (strict loading), from
    # a model whose running statistics have moved away from their initial values
    trained, fresh_torch = make_pair()
    trained.forward(backend.to_device(host_rng(21).standard_normal(input_shape), xp.float32))
    fresh_torch.load_state_dict({k: torch.from_numpy(v) for k, v in tinygan_state(trained).items()})
    assert_states_equal(numpy_state(fresh_torch), tinygan_state(trained))


@pytest.mark.slow
@pytest.mark.parametrize("training", [True, False])
def test_dcgan_forward_backward_match_torch(training):
    rng = host_rng(18)
    g, g_torch = twin(*dcgan_generator_pair())
    d, d_torch = twin(*dcgan_discriminator_pair())
    for model in (g, g_torch, d, d_torch):
        model.train(training)
    z, images = rng.standard_normal((4, 100)), np.tanh(rng.standard_normal((4, 1, 28, 28)))

    forward_backward_both(g, g_torch, z, rng)
    assert_params_and_buffers_match(g, g_torch, G_BIAS_BEFORE_BN if training else None)
    forward_backward_both(d, d_torch, images, rng)
    assert_params_and_buffers_match(d, d_torch, D_BIAS_BEFORE_BN if training else None)

    # The generator step: bce(D(G(z)), 1), back through D into G.
    for model in (g_torch, d_torch):
        model.zero_grad()
    z_t = torch.from_numpy(z)
    loss_t = F.binary_cross_entropy_with_logits(d_torch(g_torch(z_t)), torch.ones(4, 1,
                                                dtype=torch.float64))
    loss_t.backward()
    g.zero_grad()
    d.zero_grad()
    scores = d.forward(g.forward(backend.to_device(z)))
    loss, dscores = losses.bce_with_logits(scores, 1.0)
    g.backward(d.backward(dscores))
    assert_close(np.asarray(backend.to_host(loss)), loss_t.detach().numpy(), TOL, "G loss")
    assert_params_and_buffers_match(g, g_torch, G_BIAS_BEFORE_BN if training else None)
    assert_params_and_buffers_match(d, d_torch, D_BIAS_BEFORE_BN if training else None)


# -- optimizers --------------------------------------------------------------------------

def small_net_pair():
    ours = nn.Sequential(nn.Dense(5, 4), nn.BatchNorm1d(4), nn.LeakyReLU(0.2), nn.Dense(4, 2))
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4),
                                 torch.nn.LeakyReLU(0.2), torch.nn.Linear(4, 2))
    return twin(ours, theirs)


OPTIMIZER_CASES = {
    "sgd": (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    "sgd_momentum": (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    "sgd_momentum_decay": (optim.SGD, torch.optim.SGD,
                           dict(lr=0.05, momentum=0.5, weight_decay=0.01)),
    "sgd_dampening": (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    "sgd_nesterov": (optim.SGD, torch.optim.SGD,
                     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "sgd_default_lr": (optim.SGD, torch.optim.SGD, {}),
    "rmsprop_default_lr": (optim.RMSprop, torch.optim.RMSprop, {}),
    "adam": (optim.Adam, torch.optim.Adam, dict(lr=1e-3)),
    "adam_dcgan": (optim.Adam, torch.optim.Adam, dict(lr=2e-4, betas=(0.5, 0.999))),
    "adam_decay": (optim.Adam, torch.optim.Adam,
                   dict(lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
    "rmsprop": (optim.RMSprop, torch.optim.RMSprop, dict(lr=5e-5)),
    "rmsprop_momentum": (optim.RMSprop, torch.optim.RMSprop,
                         dict(lr=1e-2, alpha=0.9, eps=1e-6, momentum=0.7, weight_decay=0.05)),
}


def set_same_grads(ours, theirs, rng, scale=1.0):
    grads = grads_by_name(ours)
    for name, p in theirs.named_parameters():
        g = rng.standard_normal(tuple(p.shape)) * scale
        p.grad = torch.from_numpy(g)
        grads[name][...] = backend.to_device(g)


def assert_params_match(ours, theirs, what):
    params = {name: module.params[key] for name, module, key in ours.parameters()}
    for name, p in theirs.named_parameters():
        assert_close(params[name], p.detach().numpy(), TOL, f"{what}: {name}")


@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_optimizer_matches_torch(case):
    ours_cls, torch_cls, kwargs = OPTIMIZER_CASES[case]
    ours, theirs = small_net_pair()
    opt, opt_torch = ours_cls(ours, **kwargs), torch_cls(theirs.parameters(), **kwargs)
    rng = host_rng(19)
    for step in range(6):
        # gradients of varying size, some tiny: Adam's and RMSprop's eps then matter
        set_same_grads(ours, theirs, rng, scale=10.0 ** -(step % 4))
        opt.step()
        opt_torch.step()
        assert_params_match(ours, theirs, f"{case} after step {step + 1}")


@pytest.mark.parametrize("ours_cls, torch_cls", [(optim.SGD, torch.optim.SGD),
                                               (optim.Adam, torch.optim.Adam),
                                               (optim.RMSprop, torch.optim.RMSprop)])
def test_optimizer_arguments_come_in_torchs_order_with_its_defaults(ours_cls, torch_cls):
    """So that a positional call (SGD(net, 0.1, 0.9)) means the same in both; tinygan's
    arguments are a prefix of torch's (it has no amsgrad, centered, maximize, ...)."""
    import inspect

    ours = list(inspect.signature(ours_cls).parameters.values())[1:]  # after the module
    theirs = list(inspect.signature(torch_cls).parameters.values())[1:]  # after params
    assert [p.name for p in ours] == [p.name for p in theirs[: len(ours)]]
    for p, q in zip(ours, theirs, strict=False):
        assert p.default == q.default, (p.name, p.default, q.default)


@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "rmsprop_momentum"])
def test_optimizer_skips_frozen_layers_like_torch(case):
    """A frozen sub-layer (torch: requires_grad False, grad None) is left alone, and its
    state does not advance, so when it is unfrozen its updates continue as torch's."""
    ours_cls, torch_cls, kwargs = OPTIMIZER_CASES[case]
    ours, theirs = small_net_pair()
    opt, opt_torch = ours_cls(ours, **kwargs), torch_cls(theirs.parameters(), **kwargs)
    rng = host_rng(20)
    for step in range(6):
        frozen = 2 <= step < 4
        ours[0].requires_grad_(not frozen)
        theirs[0].requires_grad_(not frozen)
        set_same_grads(ours, theirs, rng)
        if frozen:
            for p in theirs[0].parameters():
                p.grad = None
        opt.step()
        opt_torch.step()
        assert_params_match(ours, theirs, f"{case} after step {step + 1}")


def test_clip_weights_matches_torch_clamp():
    ours, theirs = small_net_pair()
    optim.clip_weights(ours, 0.01)
    with torch.no_grad():
        for p in theirs.parameters():
            p.clamp_(-0.01, 0.01)
    assert_params_match(ours, theirs, "clip_weights")


# -- default initialisation --------------------------------------------------------------

INIT_CASES = [
    ("Dense", lambda: nn.Dense(300, 40), lambda: torch.nn.Linear(300, 40)),
    ("Dense_narrow", lambda: nn.Dense(3, 500), lambda: torch.nn.Linear(3, 500)),
    ("Conv2d", lambda: nn.Conv2d(16, 32, (3, 5)), lambda: torch.nn.Conv2d(16, 32, (3, 5))),
    ("ConvTranspose2d", lambda: nn.ConvTranspose2d(24, 8, 4, 2, 1),
     lambda: torch.nn.ConvTranspose2d(24, 8, 4, 2, 1)),
    ("ConvTranspose2d_wide", lambda: nn.ConvTranspose2d(4, 64, (2, 3)),
     lambda: torch.nn.ConvTranspose2d(4, 64, (2, 3))),
]


@pytest.mark.parametrize("name, make_ours, make_torch", INIT_CASES, ids=[c[0] for c in INIT_CASES])
def test_default_init_matches_torch_kaiming_uniform(name, make_ours, make_torch):
    """Weights and biases ~ U(-b, b) with b = 1/sqrt(fan_in) and torch's fan_in (for
    ConvTranspose2d that is weight.shape[1] * kh * kw, i.e. out_channels * kh * kw)."""
    ours, theirs = make_ours(), make_torch()
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
    bound = 1 / math.sqrt(fan_in)
    for key in ("weight", "bias"):
        mine = backend.to_host(ours.params[key])
        reference = getattr(theirs, key).detach().numpy()
        assert mine.shape == reference.shape and mine.dtype == reference.dtype == np.float32
        assert np.abs(reference).max() <= bound  # the bound is torch's
        assert np.abs(mine).max() <= bound
    # the weights (over 1000 of them) fill the whole interval uniformly: extremes near
    # +-b, mean 0 within 5 standard errors, std b / sqrt(3) within 5%
    weight = backend.to_host(ours.params["weight"])
    assert weight.size > 1000
    assert weight.max() > 0.95 * bound and weight.min() < -0.95 * bound
    assert abs(weight.mean()) < 5 * bound / math.sqrt(3 * weight.size)
    assert abs(weight.std() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3)


def test_default_init_of_batchnorm_and_embedding_matches_torch():
    ours, theirs = nn.BatchNorm2d(5), torch.nn.BatchNorm2d(5)
    for k, v in numpy_state(theirs).items():
        mine = tinygan_state(ours)[k]
        np.testing.assert_array_equal(mine, v, err_msg=k)
        assert mine.dtype == v.dtype, k
    weight = backend.to_host(nn.Embedding(100, 50).params["weight"])
    assert weight.dtype == np.float32
    assert abs(weight.mean()) < 0.03 and abs(weight.std() - 1) < 0.03  # N(0, 1), as torch
