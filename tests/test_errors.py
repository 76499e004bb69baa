"""Bad input: every mistake raises a one-line ValueError (KeyError for state-dict key
sets) that names the layer and what it expected, before any arithmetic goes wrong."""

import re

import numpy as np
import pytest
from helpers import host_rng

from tinygan import backend, losses, nn, optim
from tinygan.backend import xp


def device_zeros(*shape, dtype=np.float64):
    return backend.to_device(np.zeros(shape, dtype=dtype))


def raises_one_line(exc, *fragments):
    """pytest.raises that also checks the message is one line containing every fragment."""

    class Checker:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            suppressed = self.ctx.__exit__(*args)
            message = str(self.info.value)
            assert "\n" not in message, f"message is not one line: {message!r}"
            for fragment in fragments:
                assert fragment in message, f"{fragment!r} not in {message!r}"
            return suppressed

    return Checker()


# -- wrong rank and wrong channel count --------------------------------------------------

WRONG_INPUTS = [
    # (layer, bad input shape, fragments the message must contain)
    (lambda: nn.Dense(3, 4), (2, 3, 1), ["Dense(3, 4", "(N, 3)", "(2, 3, 1)"]),
    (lambda: nn.Dense(3, 4), (3,), ["Dense(3, 4", "(N, 3)", "(3,)"]),
    (lambda: nn.Dense(3, 4), (2, 5), ["Dense(3, 4", "(N, 3)", "(2, 5)"]),
    (lambda: nn.Conv2d(3, 8, 3), (2, 3, 5), ["Conv2d(3, 8", "(N, 3, H, W)", "(2, 3, 5)"]),
    (lambda: nn.Conv2d(3, 8, 3), (2, 1, 5, 5), ["Conv2d(3, 8", "(N, 3, H, W)", "(2, 1, 5, 5)"]),
    (lambda: nn.ConvTranspose2d(4, 2, 3), (4, 5, 5),
     ["ConvTranspose2d(4, 2", "(N, 4, H, W)", "(4, 5, 5)"]),
    (lambda: nn.ConvTranspose2d(4, 2, 3), (1, 2, 5, 5),
     ["ConvTranspose2d(4, 2", "(N, 4, H, W)", "(1, 2, 5, 5)"]),
    (lambda: nn.BatchNorm1d(4), (2, 3), ["BatchNorm1d(4", "(N, 4)", "(2, 3)"]),
    (lambda: nn.BatchNorm1d(4), (2, 3, 7), ["BatchNorm1d(4", "(N, 4, L)", "(2, 3, 7)"]),
    (lambda: nn.BatchNorm1d(4), (2, 4, 3, 3), ["BatchNorm1d(4", "(N, 4", "(2, 4, 3, 3)"]),
    (lambda: nn.BatchNorm2d(4), (2, 4, 3), ["BatchNorm2d(4", "(N, 4, H, W)", "(2, 4, 3)"]),
    (lambda: nn.BatchNorm2d(4), (2, 3, 3, 3), ["BatchNorm2d(4", "(N, 4, H, W)", "(2, 3, 3, 3)"]),
    (lambda: nn.Reshape(2, 3), (4, 5), ["Reshape(2, 3)", "N x 6", "(4, 5)"]),
    (lambda: nn.Flatten(), (5,), ["Flatten", "(N, ...)", "(5,)"]),
]


@pytest.mark.parametrize("make, shape, fragments", WRONG_INPUTS,
                         ids=[f"{frags[0]})-{shape}" for _, shape, frags in WRONG_INPUTS])
def test_wrong_input_shape_names_layer_and_expected_shape(make, shape, fragments):
    layer = make()
    with raises_one_line(ValueError, *fragments):
        layer.forward(device_zeros(*shape))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_needs_more_than_one_value_per_channel_in_training(training):
    """As torch: batch statistics of a single value are meaningless (the variance is 0)."""
    layer = nn.BatchNorm1d(3).train(training)
    x = device_zeros(1, 3)
    if training:
        with raises_one_line(ValueError, "BatchNorm1d(3", "more than one value per channel"):
            layer.forward(x)
    else:
        layer.forward(x)  # eval mode uses the running statistics: fine
    # two values per channel are enough: (N, C) with N = 2, or one sample of length 2
    for shape in ((2, 3), (1, 3, 2)):
        assert layer.train().forward(device_zeros(*shape)).shape == shape


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_batchnorm_momentum_may_be_zero_or_one(momentum):
    """The ends of [0, 1]: 0 keeps the running statistics, 1 replaces them by the batch's."""
    layer = nn.BatchNorm1d(2, momentum=momentum).astype(np.float64)
    x = np.array([[1.0, 4.0], [3.0, 8.0]])
    layer.forward(backend.to_device(x))
    mean, var = backend.to_host(layer.buffers["running_mean"]), layer.buffers["running_var"]
    expected = ([0.0, 0.0], [1.0, 1.0]) if momentum == 0 else ([2.0, 6.0], [2.0, 8.0])
    np.testing.assert_array_equal(mean, expected[0])
    np.testing.assert_array_equal(backend.to_host(var), expected[1])  # unbiased: / (m - 1)


def test_batchnorm_momentum_given_as_a_numpy_scalar_updates_as_a_python_float():
    """A NumPy float64 momentum is no weak Python float: it would make NumPy update the
    float32 running statistics in float64, rounding otherwise. It is kept as a float."""
    x = backend.to_device(host_rng(1).standard_normal((50, 4)).astype(np.float32) * 3)
    stats = []
    for momentum in (0.3, np.float64(0.3)):
        layer = nn.BatchNorm1d(4, momentum=momentum)
        assert type(layer.momentum) is float
        for _ in range(3):
            layer.forward(x)
        stats.append([backend.to_host(layer.buffers[k]) for k in ("running_mean", "running_var")])
    np.testing.assert_array_equal(stats[0][0], stats[1][0])
    np.testing.assert_array_equal(stats[0][1], stats[1][1])



@pytest.mark.parametrize("make, shape", [
    (lambda: nn.LeakyReLU(0.2), (1, 2)),
    (lambda: nn.BatchNorm1d(2), (3, 2)),
    (lambda: nn.BatchNorm1d(2).eval(), (3, 2)),
    (lambda: nn.BatchNorm2d(2), (3, 2, 2, 2)),
], ids=["leaky_relu", "batchnorm_train", "batchnorm_eval", "batchnorm2d"])
@pytest.mark.parametrize("dtype", [np.int64, np.uint8])
def test_layers_with_constants_in_the_inputs_dtype_refuse_integer_input(make, shape, dtype):
    """Their slope and eps take x's dtype: int(0.2) = 0 turned [-5, 5] into [0, 5], eps
    became 0, and eval-mode BatchNorm failed inside a ufunc. PyTorch refuses these too."""
    layer = make()
    with raises_one_line(ValueError, repr(layer), "floating-point input", np.dtype(dtype).name):
        layer.forward(device_zeros(*shape, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.int64, "int32", bool, np.complex64])
def test_astype_refuses_a_dtype_that_is_not_floating_point(dtype):
    """Cast to int64, every weight (all in (-1, 1)) became 0, for good: astype casts only
    floating-point arrays, so astype(np.float32) afterwards left them int64."""
    net = nn.Sequential(nn.Dense(3, 4), nn.BatchNorm1d(4))
    before = {k: backend.to_host(v).copy() for k, v in net.state_dict().items()}
    with raises_one_line(TypeError, "Sequential.astype", "floating-point dtype"):
        net.astype(dtype)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(backend.to_host(v), before[k])
        assert v.dtype == before[k].dtype


def test_integer_input_to_other_layers_follows_numpys_promotion():
    """What the module docstring says: int64 makes a float32 Dense's output float64,
    uint8 leaves it float32; ReLU keeps integers integers."""
    dense = nn.Dense(3, 2)
    assert dense.forward(device_zeros(1, 3, dtype=np.int64)).dtype == np.float64
    assert dense.forward(device_zeros(1, 3, dtype=np.uint8)).dtype == np.float32
    x = backend.to_device(np.array([[-5, 5]]))
    np.testing.assert_array_equal(backend.to_host(nn.ReLU().forward(x)), [[0, 5]])


# -- a spatial size the kernel does not fit ---------------------------------------------

@pytest.mark.parametrize("kernel, padding, size, fits", [
    ((3, 5), (0, 1), (4, 2), (4, 3)),  # too narrow: 2 + 2 * 1 < 5
    (4, 1, (1, 5), (2, 5)),  # too short: 1 + 2 * 1 < 4, while 5 + 2 >= 4
    (4, 1, (5, 1), (5, 2))])  # too narrow, the other way round
def test_conv2d_input_smaller_than_kernel(kernel, padding, size, fits):
    """Either axis alone, counting the padding on both sides; one pixel more fits."""
    layer = nn.Conv2d(1, 2, kernel, padding=padding)
    kh, kw = layer.kernel_size
    with raises_one_line(ValueError, "Conv2d(1, 2", f"{size[0]}x{size[1]}", f"{kh}x{kw} kernel"):
        layer.forward(device_zeros(1, 1, *size))
    assert min(layer.forward(device_zeros(1, 1, *fits)).shape[2:]) == 1  # just fits


@pytest.mark.parametrize("padding", [2, (2, 0), (0, 2)])
def test_conv_transpose2d_empty_output(padding):
    """A 1x1 input through k3 gives 3x3 before cropping; cropping 2 on both sides of an
    axis leaves nothing there (torch refuses it too), whichever axis it is."""
    layer = nn.ConvTranspose2d(1, 2, 3, padding=padding)
    with raises_one_line(ValueError, "ConvTranspose2d(1, 2", "1x1", "empty output"):
        layer.forward(device_zeros(1, 1, 1, 1))
    assert nn.ConvTranspose2d(1, 2, 3, padding=1).forward(device_zeros(1, 1, 1, 1)).shape == (
        1, 2, 1, 1)


@pytest.mark.parametrize("make", [lambda: nn.ConvTranspose2d(1, 2, 3),
                                  lambda: nn.Conv2d(1, 2, 1, padding=1)],
                         ids=["transpose", "conv_padded"])
@pytest.mark.parametrize("size", [(0, 5), (5, 0)])
def test_conv_layers_refuse_an_empty_spatial_input(make, size):
    """A 0x5 input made a 2x7 transposed-conv output of bias values only, and a padded
    Conv2d one of the padding alone; torch refuses both."""
    layer = make()
    with raises_one_line(ValueError, repr(layer), f"{size[0]}x{size[1]}", "is empty",
                         "at least 1x1"):
        layer.forward(device_zeros(1, 1, *size))


# -- bad constructor arguments ----------------------------------------------------------

BAD_CONV_ARGUMENTS = [
    dict(kernel_size=(3,)),
    dict(kernel_size=(3, 3, 3)),
    dict(kernel_size="3"),
    dict(kernel_size=2.5),
    dict(kernel_size=(2, 1.5)),
    dict(kernel_size=0),
    dict(kernel_size=(3, -1)),
    dict(kernel_size=3, stride=0),
    dict(kernel_size=3, stride=(1, -2)),
    dict(kernel_size=3, stride=1.0),
    dict(kernel_size=3, padding=-1),
    dict(kernel_size=3, padding=(0, 0.5)),
]


@pytest.mark.parametrize("cls", [nn.Conv2d, nn.ConvTranspose2d])
@pytest.mark.parametrize("kwargs", BAD_CONV_ARGUMENTS,
                         ids=[",".join(f"{k}={v!r}" for k, v in kw.items())
                              for kw in BAD_CONV_ARGUMENTS])
def test_bad_conv_arguments(cls, kwargs):
    """Sizes must be positive ints (padding: non-negative), an int or a pair of them; the
    message names the layer and the argument (the last one given is the bad one)."""
    with raises_one_line(ValueError, cls.__name__, list(kwargs)[-1]):
        cls(2, 3, **kwargs)


@pytest.mark.parametrize("cls", [nn.Conv2d, nn.ConvTranspose2d])
def test_numpy_integer_conv_arguments_are_accepted(cls):
    """As torch: sizes computed with NumPy (np.int64) are ints too."""
    layer = cls(1, 1, np.int64(3), stride=np.int64(1), padding=(np.int64(1), 1))
    assert layer.kernel_size == (3, 3) and layer.padding == (1, 1)


@pytest.mark.parametrize("stride, output_padding", [
    (1, 1), (2, 2), ((2, 1), (0, 1)), (2, (3, 0)), (2, -1),
])
def test_output_padding_must_be_between_zero_and_stride(stride, output_padding):
    with raises_one_line(ValueError, "ConvTranspose2d", "output_padding"):
        nn.ConvTranspose2d(2, 3, 3, stride=stride, output_padding=output_padding)


def test_dropout_probability_out_of_range():
    for p in (-0.1, 1.5):
        with raises_one_line(ValueError, "Dropout", "[0, 1]"):
            nn.Dropout(p)


def test_dropout_takes_float16_and_refuses_integers():
    """float16 failed inside NumPy's generator (it draws float32 or float64 only);
    integers cannot hold x / (1 - p), and torch refuses them too."""
    layer = nn.Dropout(0.5)
    x = backend.to_device(np.ones((50, 40), np.float16))
    y = backend.to_host(layer.forward(x))
    assert y.dtype == np.float16 and set(np.unique(y)) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    np.testing.assert_array_equal(backend.to_host(layer.backward(x)), y)  # dx = dout * mask
    with raises_one_line(ValueError, "Dropout(p=0.5)", "floating-point input", "int64"):
        layer.forward(device_zeros(2, 3, dtype=np.int64))
    ints = backend.to_device(np.arange(6).reshape(2, 3))  # the identity, as torch: any dtype
    assert layer.eval().forward(ints) is ints and nn.Dropout(0.0).forward(ints) is ints


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.RMSprop])
def test_optimizer_learning_rate_must_not_be_negative(cls):
    """As torch: lr < 0 is refused, lr = 0 is allowed (the optimizer then changes nothing)."""
    with raises_one_line(ValueError, cls.__name__, "lr must be >= 0, got -0.001"):
        cls(nn.Dense(2, 2), lr=-1e-3)
    for lr, kind in (("0.1", "str"), (None, "NoneType")):
        with raises_one_line(ValueError, cls.__name__, f"lr must be a number, got {kind}"):
            cls(nn.Dense(2, 2), lr=lr)
    cls(nn.Dense(2, 2), lr=0.0)


BAD_OPTIMIZER_ARGUMENTS = [
    # (optimizer, keyword arguments, fragments of the message), each refused by torch too
    (optim.SGD, dict(momentum=-0.5), ["SGD", "momentum", ">= 0", "-0.5"]),
    (optim.SGD, dict(weight_decay=-1e-4), ["SGD", "weight_decay", ">= 0"]),
    (optim.SGD, dict(dampening=-0.1), ["SGD", "dampening", ">= 0", "-0.1"]),
    (optim.SGD, dict(nesterov=True), ["SGD", "nesterov", "momentum > 0"]),
    (optim.SGD, dict(momentum=0.9, dampening=0.1, nesterov=True), ["SGD", "nesterov",
                                                                   "dampening 0"]),
    (optim.Adam, dict(betas=(1.0, 0.999)), ["Adam", "betas[0]", "[0, 1)", "1.0"]),
    (optim.Adam, dict(betas=(0.9, 1.5)), ["Adam", "betas[1]", "[0, 1)", "1.5"]),
    (optim.Adam, dict(betas=(0.9,)), ["Adam", "betas", "pair"]),
    (optim.Adam, dict(eps=-1e-3), ["Adam", "eps", ">= 0"]),
    (optim.RMSprop, dict(alpha=-0.1), ["RMSprop", "alpha", ">= 0"]),
    (optim.RMSprop, dict(momentum=-1), ["RMSprop", "momentum", ">= 0"]),
]


@pytest.mark.parametrize("cls, kwargs, fragments", BAD_OPTIMIZER_ARGUMENTS,
                         ids=[f"{c.__name__}-{list(k)[0]}" for c, k, _ in BAD_OPTIMIZER_ARGUMENTS])
def test_bad_optimizer_arguments(cls, kwargs, fragments):
    with raises_one_line(ValueError, *fragments):
        cls(nn.Dense(2, 2), lr=1e-3, **kwargs)


def test_optimizer_arguments_that_are_no_number_are_named_as_such():
    """A 0-d array lr was refused as "lr must be >= 0, got array(0.001)": true of its value."""
    with raises_one_line(ValueError, "Adam: lr must be a number, got ndarray array(0.001)"):
        optim.Adam(nn.Dense(2, 2), lr=np.array(1e-3))
    with raises_one_line(ValueError, "RMSprop: eps must be a number, got str '1e-8'"):
        optim.RMSprop(nn.Dense(2, 2), eps="1e-8")


def test_clip_value_must_not_be_negative():
    with raises_one_line(ValueError, "clip_weights", "clip_value", ">= 0"):
        optim.clip_weights(nn.Dense(2, 2), -0.01)


def test_optimizer_state_from_another_model_is_refused():
    """Names and shapes are checked before anything changes, as Module.load_state_dict's."""
    rng = host_rng(3)
    trained = optim.Adam(nn.Sequential(nn.Dense(3, 4), nn.Dense(4, 2)), lr=1e-3)
    for _, module, key in trained.entries:
        module.grads[key] = backend.to_device(rng.standard_normal(module.params[key].shape))
    trained.step()
    state = trained.state_dict()
    wider = optim.Adam(nn.Sequential(nn.Dense(3, 5), nn.Dense(5, 2)), lr=1e-3)
    with raises_one_line(ValueError, "Adam.load_state_dict", "'0.weight/exp_avg'", "(4, 3)",
                         "(5, 3)"):
        wider.load_state_dict(state)
    assert wider.state == {} and wider.step_count == 0  # nothing half-loaded
    other = optim.Adam(nn.Dense(3, 4), lr=1e-3)
    with raises_one_line(KeyError, "Adam.load_state_dict", "'0.weight/exp_avg'", "weight"):
        other.load_state_dict(state)
    with raises_one_line(KeyError, "Adam.load_state_dict", "step_count"):
        other.load_state_dict({})


def stepped(make_optimizer):
    """An optimizer over a fresh Dense(3, 2) after one step on random gradients."""
    rng = host_rng(5)
    opt = make_optimizer(nn.Dense(3, 2))
    for _, module, key in opt.entries:
        module.grads[key] = backend.to_device(rng.standard_normal(module.params[key].shape))
    opt.step()
    return opt


OPTIMIZER_KINDS = {
    "sgd": lambda net: optim.SGD(net, lr=0.1),
    "sgd_momentum": lambda net: optim.SGD(net, lr=0.1, momentum=0.9),
    "adam": lambda net: optim.Adam(net, lr=0.1),
    "rmsprop": lambda net: optim.RMSprop(net, lr=0.1),
    "rmsprop_momentum": lambda net: optim.RMSprop(net, lr=0.1, momentum=0.9),
}


@pytest.mark.parametrize("source", OPTIMIZER_KINDS)
@pytest.mark.parametrize("target", OPTIMIZER_KINDS)
def test_optimizer_state_of_another_kind_is_refused(source, target):
    """Adam given SGD's state used to restart its moments at t = 1 without a word, and
    SGD kept RMSprop's momentum_buffer as its own; each kind keeps only its own entries."""
    state = stepped(OPTIMIZER_KINDS[source]).state_dict()
    opt = OPTIMIZER_KINDS[target](nn.Dense(3, 2))
    if source == target or source == "sgd":  # plain SGD keeps nothing: any kind's fresh state
        opt.load_state_dict(state)
        assert opt.state_dict().keys() == state.keys()
        return
    owner = f"{type(opt).__name__}.load_state_dict"
    with raises_one_line(KeyError, owner, "weight"):
        opt.load_state_dict(state)
    assert opt.state == {}  # nothing half-loaded


def test_an_optimizer_that_names_no_state_entries_still_loads_its_state():
    """A reader's own optimizer (state_names not written) keeps the name and shape checks."""

    class Momentum(optim.Optimizer):
        def update(self, param, grad, state):
            velocity = state.setdefault("velocity", xp.zeros_like(param))
            velocity *= 0.9
            velocity += grad
            param -= self.lr * velocity

    opt = stepped(lambda net: Momentum(net, lr=0.1))
    fresh = Momentum(nn.Dense(3, 2), lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state_dict().keys() == opt.state_dict().keys()


def test_optimizer_state_with_a_missing_or_unknown_entry_is_refused():
    state = stepped(OPTIMIZER_KINDS["adam"]).state_dict()
    opt = optim.Adam(nn.Dense(3, 2), lr=0.1)
    partial = {k: v for k, v in state.items() if k != "weight/step"}
    with raises_one_line(KeyError, "Adam.load_state_dict", "'weight'", "lacks ['step']"):
        opt.load_state_dict(partial)  # used to fail at the next step() with KeyError: 'step'
    with raises_one_line(KeyError, "Adam.load_state_dict", "'weight/bogus'",
                         "['step', 'exp_avg', 'exp_avg_sq']"):
        opt.load_state_dict({**state, "weight/bogus": state["weight/exp_avg"]})
    with raises_one_line(TypeError, "Adam.load_state_dict", "'weight/exp_avg'", "array", "list"):
        opt.load_state_dict({**state, "weight/exp_avg": [[0.0] * 3] * 2})
    assert opt.state == {}


@pytest.mark.parametrize("make, fragments", [
    (lambda: nn.Dense(-1, 3), ["Dense", "in_features", "positive int", "-1"]),
    (lambda: nn.Dense(3, 2.0), ["Dense", "out_features", "2.0"]),
    (lambda: nn.Conv2d(0, 3, 3), ["Conv2d", "in_channels", "0"]),
    (lambda: nn.ConvTranspose2d(2, -3, 3), ["ConvTranspose2d", "out_channels", "-3"]),
    (lambda: nn.BatchNorm2d(0), ["BatchNorm2d", "num_features", "0"]),
    (lambda: nn.BatchNorm1d(3, momentum=1.5), ["BatchNorm1d", "momentum", "1.5"]),
    (lambda: nn.Embedding(10, 0), ["Embedding", "embedding_dim", "0"]),
    (lambda: nn.Reshape(-1, 2), ["Reshape", "positive int", "-1"]),
    (lambda: nn.Reshape(), ["Reshape", "shape after N"]),
], ids=["dense-in", "dense-float", "conv", "convT", "bn2d", "bn-momentum", "embedding",
        "reshape-minus-one", "reshape-empty"])
def test_bad_layer_sizes(make, fragments):
    with raises_one_line(ValueError, *fragments):
        make()


def test_conv_bias_is_keyword_only():
    """torch's 6th positional argument of Conv2d is dilation (7th of ConvTranspose2d:
    groups); tinygan has neither, so a positional bias is refused instead of misread."""
    with pytest.raises(TypeError):
        nn.Conv2d(1, 8, 4, 2, 1, False)
    with pytest.raises(TypeError):
        nn.ConvTranspose2d(8, 1, 4, 2, 1, 0, False)
    assert "bias" not in nn.Conv2d(1, 8, 4, 2, 1, bias=False).params


EVERY_LAYER = [
    lambda: nn.Dense(3, 2), lambda: nn.Conv2d(1, 2, 3), lambda: nn.ConvTranspose2d(1, 2, 3),
    lambda: nn.BatchNorm1d(2), lambda: nn.BatchNorm2d(2), lambda: nn.ReLU(),
    lambda: nn.LeakyReLU(), lambda: nn.Tanh(), lambda: nn.Sigmoid(), lambda: nn.Dropout(),
    lambda: nn.Flatten(), lambda: nn.Reshape(2), lambda: nn.Embedding(3, 2),
    lambda: nn.Sequential(nn.Dense(3, 2), nn.ReLU()),
]


@pytest.mark.parametrize("make", EVERY_LAYER, ids=lambda make: type(make()).__name__)
def test_layers_given_a_list_name_what_they_expected(make):
    """Not an AttributeError on .ndim or a TypeError on '>' from inside the layer."""
    layer = make()
    first = layer[0] if isinstance(layer, nn.Sequential) else layer  # the one that checks
    what = "integer array" if isinstance(layer, nn.Embedding) else "expected an array"
    with raises_one_line(TypeError, repr(first).split("\n")[0], what, "got list"):
        layer.forward([[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("make", EVERY_LAYER, ids=lambda make: type(make()).__name__)
def test_backward_before_forward_is_named(make):
    """Not "cannot unpack non-iterable NoneType" from inside the layer; a deep copy (an
    EMA of the generator, say) knows it has not run forward either."""
    import copy

    for layer in (make(), copy.deepcopy(make())):
        with raises_one_line(AttributeError, "backward() called before forward()"):
            layer.backward(device_zeros(1, 2))


# (layer, input, a gradient of the wrong shape that NumPy would broadcast or reshape)
WRONG_GRADIENTS = [
    (lambda: nn.ReLU(), (4, 1), (4,)),
    (lambda: nn.LeakyReLU(0.2), (4, 3), (1, 3)),
    (lambda: nn.LeakyReLU(-1.5), (4, 3), (4, 1)),
    (lambda: nn.Tanh(), (4, 3), (4, 1)),
    (lambda: nn.Sigmoid(), (4, 3), (3,)),
    (lambda: nn.Dropout(0.5), (4, 3), (1, 3)),
    (lambda: nn.Flatten(), (2, 2, 2, 2), (8, 2)),
    (lambda: nn.Reshape(2, 2), (2, 4), (4, 2)),
    (lambda: nn.Dense(3, 1), (4, 3), (4,)),
    (lambda: nn.BatchNorm1d(3), (4, 3), (1, 3)),
    (lambda: nn.BatchNorm2d(2), (3, 2, 2, 2), (1, 2, 2, 2)),
    (lambda: nn.Conv2d(1, 2, 3), (2, 1, 5, 5), (1, 2, 3, 3)),
    (lambda: nn.ConvTranspose2d(1, 2, 4, 2, 1), (2, 1, 5, 5), (2, 2, 9, 9)),
    (lambda: nn.Embedding(5, 3), None, (2, 4)),
]


@pytest.mark.parametrize("make, in_shape, bad", WRONG_GRADIENTS,
                         ids=[f"{type(make()).__name__}-{bad}" for make, _, bad in WRONG_GRADIENTS])
def test_backward_with_a_gradient_of_the_wrong_shape_is_named(make, in_shape, bad):
    """dL/dout must have the output's shape, as in torch's backward: a (N,) gradient for a
    (N, 1) output would otherwise come back from ReLU as an (N, N) 'gradient'."""
    layer = make()
    if in_shape is None:  # Embedding: integer indices in
        out = layer.forward(backend.to_device(np.array([1, 2])))
    else:
        out = layer.forward(backend.to_device(host_rng(0).standard_normal(in_shape)))
    with raises_one_line(ValueError, repr(layer), "backward expected dL/dout of the output's "
                         f"shape {tuple(out.shape)}, got {bad}"):
        layer.backward(device_zeros(*bad))
    layer.backward(device_zeros(*out.shape))  # the right shape still goes through


def test_a_network_differentiates_its_last_forward_once():
    """Two forwards then two backwards (the natural first D step) would give the first
    backward the second forward's inputs: the second backward, how it shows, is refused.
    PyTorch keeps one graph per forward instead."""
    net = nn.Sequential(nn.Dense(3, 2), nn.ReLU())
    x = device_zeros(4, 3) + 1
    net.forward(x)
    net.forward(x + 1)
    net.backward(device_zeros(4, 2))
    with raises_one_line(RuntimeError, "Sequential: a second backward() for one forward()",
                         "run forward and backward in pairs"):
        net.backward(device_zeros(4, 2))
    net.forward(x)  # a new forward: a new backward
    net.backward(device_zeros(4, 2))


def test_what_the_second_backward_check_leaves_alone():
    """A backward that raised may be retried; a slice of a network, or a network run
    layer by layer, may be differentiated; a subclass may keep its own cache (a residual
    block); hasattr and getattr(..., default) do not raise before a forward."""
    net = nn.Sequential(nn.Dense(3, 5), nn.ReLU(), nn.Dense(5, 2))
    x = device_zeros(4, 3) + 1
    net.forward(x)
    with pytest.raises(ValueError, match="output's shape"):
        net.backward(device_zeros(4))
    assert net.backward(device_zeros(4, 2)).shape == (4, 3)  # the retry goes through
    net.forward(x)
    assert net[2:].backward(device_zeros(4, 2)).shape == (4, 5)
    h = x
    for layer in net.layers:
        h = layer.forward(h)
    assert net.backward(device_zeros(4, 2)).shape == (4, 3)

    class Residual(nn.Sequential):
        def forward(self, x):
            self.cache = x
            return super().forward(x) + x

        def backward(self, dout):
            return super().backward(dout) + dout

    block = Residual(nn.Dense(3, 3), nn.Tanh())
    for _ in range(2):
        block.forward(x)
        assert block.backward(device_zeros(4, 3) + 1).shape == (4, 3)
    fresh = nn.Dense(3, 2)
    assert not hasattr(fresh, "cache") and getattr(fresh, "cache", None) is None
    fresh.forward(x)
    assert hasattr(fresh, "cache")


def test_backward_names_a_gradient_that_is_none_or_not_an_array():
    """None: what a layer after it hands back when it skips dL/dx (input_grad_(False))."""
    layer = nn.Dense(3, 2)
    layer.forward(device_zeros(4, 3))
    with raises_one_line(TypeError, "Dense(3, 2", "backward got None for dL/dout",
                         "input_grad_(False)"):
        layer.backward(None)
    with raises_one_line(TypeError, "Dense(3, 2", "expected an array for dL/dout, got list"):
        layer.backward([[0.0, 0.0]] * 4)


def test_optimizers_take_the_network_not_its_parameters():
    net = small_net()
    for cls in (optim.SGD, optim.Adam, optim.RMSprop):
        with raises_one_line(TypeError, cls.__name__, "not net.parameters()", "generator"):
            cls(net.parameters(), lr=0.1)


def test_losses_name_arguments_that_are_not_arrays():
    scores = device_zeros(4, 1)
    with raises_one_line(TypeError, "bce_with_logits: expected an array of logits, got list"):
        losses.bce_with_logits([[0.0]] * 4, 1.0)
    with raises_one_line(TypeError, "cross_entropy: expected an array of labels, got list"):
        losses.cross_entropy(device_zeros(2, 3), [0, 1])
    with raises_one_line(TypeError, "wasserstein_critic: expected an array of scores"):
        losses.wasserstein_critic([0.0, 1.0], True)
    assert float(losses.wasserstein_critic(scores, np.bool_(True))[0]) == 0.0  # NumPy's bool
    # a target array, by analogy with bce_with_logits: real is which batch this is
    with raises_one_line(TypeError, "wasserstein_critic: real must be True", "ndarray"):
        losses.wasserstein_critic(scores, xp.ones_like(scores))


def test_backward_after_forward_in_eval_mode_still_works_for_dropout():
    """Dropout's forward in eval mode caches None (the identity): that is not 'nothing'."""
    layer = nn.Dropout(0.5).eval()
    x = device_zeros(2, 3) + 1
    layer.forward(x)
    assert backend.to_host(layer.backward(x)).tolist() == [[1.0] * 3] * 2


# -- one instance in two places ----------------------------------------------------------

def test_sequential_refuses_a_layer_instance_used_twice():
    """A layer keeps one forward cache for its backward: a second use would overwrite the
    first's and give wrong gradients silently. torch allows it (its autograd keeps every
    use); here it is refused when the network is built."""
    act = nn.LeakyReLU(0.2)
    with raises_one_line(ValueError, "Sequential", "layer 3", "LeakyReLU", "layer 1"):
        nn.Sequential(nn.Dense(4, 4), act, nn.Dense(4, 4), act)
    dense = nn.Dense(3, 3)
    with raises_one_line(ValueError, "Sequential", "layer 1", "Dense", "layer 0"):
        nn.Sequential(nn.Sequential(dense, nn.Tanh()), dense)
    with raises_one_line(TypeError, "Sequential", "layer 1", "function"):
        nn.Sequential(nn.Dense(3, 3), lambda x: x)


def test_a_module_shared_outside_sequential_is_trained_once():
    """As torch's parameters(): a module reached twice in the tree counts once."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = self.b = nn.Dense(2, 2)

        def children(self):
            return [("a", self.a), ("b", self.b)]

    assert [name for name, _, _ in Tied().parameters()] == ["a.weight", "a.bias"]


# -- Embedding indices -------------------------------------------------------------------

@pytest.mark.parametrize("idx", [
    np.array([0.0, 1.0]), np.array([[0, 1]]), np.array([True, False]),
], ids=["float", "2d", "bool"])
def test_embedding_rejects_non_integer_or_non_vector_indices(idx):
    with raises_one_line(ValueError, "Embedding(5, 3)", "1-D integer array"):
        nn.Embedding(5, 3).forward(backend.to_device(idx))


@pytest.mark.skipif(backend.name() != "numpy", reason="range is checked on NumPy only (a "
                    "check on CuPy would sync the GPU every step)")
@pytest.mark.parametrize("bad", [-1, 5])
def test_embedding_rejects_out_of_range_indices(bad):
    with raises_one_line(ValueError, "Embedding(5, 3)", "[0, 5)"):
        nn.Embedding(5, 3).forward(backend.to_device(np.array([0, bad])))


# -- losses ------------------------------------------------------------------------------

@pytest.mark.parametrize("logits_shape, target_shape", [((4, 1), (4,)), ((4,), (5,)),
                                                         ((2, 3), (3, 2))])
def test_bce_with_logits_mismatched_shapes(logits_shape, target_shape):
    with raises_one_line(ValueError, "bce_with_logits", str(logits_shape), str(target_shape)):
        losses.bce_with_logits(device_zeros(*logits_shape), device_zeros(*target_shape))


@pytest.mark.parametrize("logits_shape, labels_shape", [((4, 3), (5,)), ((4,), (4,)),
                                                         ((4, 3), (4, 1)), ((2, 3, 4), (2,))])
def test_cross_entropy_mismatched_shapes(logits_shape, labels_shape):
    labels = device_zeros(*labels_shape, dtype=np.int64)
    with raises_one_line(ValueError, "cross_entropy", "(N, K)", str(labels_shape)):
        losses.cross_entropy(device_zeros(*logits_shape), labels)


def test_cross_entropy_rejects_non_integer_labels():
    with raises_one_line(ValueError, "cross_entropy", "integer"):
        losses.cross_entropy(device_zeros(3, 4), device_zeros(3))


@pytest.mark.skipif(backend.name() != "numpy", reason="range is checked on NumPy only (a "
                    "check on CuPy would sync the GPU every step)")
@pytest.mark.parametrize("bad", [-1, 4])
def test_cross_entropy_rejects_out_of_range_labels(bad):
    """-1 would silently read class K-1 (NumPy's negative index); torch refuses both."""
    labels = backend.to_device(np.array([0, 1, bad]))
    with raises_one_line(ValueError, "cross_entropy", "[0, 4)", str(bad)):
        losses.cross_entropy(device_zeros(3, 4), labels)


def test_bce_with_logits_rejects_integer_logits():
    """The target would be cast to the logits' integer dtype: 0.5 would become 0."""
    with raises_one_line(ValueError, "bce_with_logits", "floating-point", "int64"):
        losses.bce_with_logits(backend.to_device(np.array([1, 2])), 0.5)


@pytest.mark.parametrize("loss, name", [
    (losses.wasserstein_generator, "wasserstein_generator"),
    (lambda d: losses.wasserstein_critic(d, False), "wasserstein_critic"),
    (lambda d: losses.cross_entropy(d, backend.to_device(np.zeros(2, dtype=np.int64))),
     "cross_entropy"),
])
def test_other_losses_reject_integer_scores(loss, name):
    """The Wasserstein gradient, +-1/n, was cast to the scores' integer dtype: all zeros."""
    with raises_one_line(ValueError, name, "floating-point", "int64"):
        loss(backend.to_device(np.array([[3, -1], [2, 5]])))


# -- state dicts -------------------------------------------------------------------------

def small_net():
    return nn.Sequential(nn.Dense(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dense(4, 2))


def host_state(module):
    return {k: backend.to_host(v).copy() for k, v in module.state_dict().items()}


def test_load_state_dict_missing_key():
    state = host_state(small_net())
    del state["1.running_var"]
    with raises_one_line(KeyError, "Sequential", "missing keys ['1.running_var']"):
        small_net().load_state_dict(state)


def test_load_state_dict_unexpected_key():
    state = host_state(small_net())
    state["4.weight"] = np.zeros((2, 2), dtype=np.float32)
    with raises_one_line(KeyError, "Sequential", "unexpected keys ['4.weight']"):
        small_net().load_state_dict(state)


def test_load_state_dict_shape_mismatch_names_key_and_expected_shape():
    state = host_state(small_net())
    state["3.weight"] = np.zeros((2, 5), dtype=np.float32)
    with raises_one_line(ValueError, "Sequential", "'3.weight'", "(2, 5)", "expected (2, 4)"):
        small_net().load_state_dict(state)


def test_failed_load_state_dict_changes_nothing():
    """A bad entry is found before anything is copied: no half-loaded model."""
    net = small_net()
    before = host_state(net)
    state = {k: v + 1 for k, v in host_state(small_net()).items()}
    state["3.bias"] = np.zeros(7, dtype=np.float32)  # the last entry is the bad one
    with pytest.raises(ValueError, match=r"'3\.bias' has shape \(7,\), expected \("):
        net.load_state_dict(state)
    for k, v in host_state(net).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_load_state_dict_accepts_its_own_state_and_keeps_dtypes():
    source, target = small_net(), small_net().astype(xp.float64)
    target.load_state_dict(host_state(source))
    for k, v in host_state(target).items():
        np.testing.assert_array_equal(v, host_state(source)[k].astype(v.dtype), err_msg=k)
    assert target[0].params["weight"].dtype == np.float64  # copied into the existing dtype
    assert target[1].buffers["num_batches_tracked"].dtype == np.int64


def test_load_state_dict_names_a_value_that_is_not_an_array():
    state = host_state(small_net())
    state["0.bias"] = state["0.bias"].tolist()
    with raises_one_line(TypeError, "Sequential.load_state_dict: '0.bias': expected an array, "
                         "got list"):
        small_net().load_state_dict(state)


def test_state_dict_arrays_are_the_networks_own_as_in_torch():
    """Taken once, a state_dict stays current (an EMA copy reads its source through it):
    training updates params and BatchNorm's running statistics in place, and
    load_state_dict copies into the arrays the layers hold (torch's copy_)."""
    net, other = small_net(), small_net()
    live = net.state_dict()
    net.forward(backend.to_device(host_rng(0).standard_normal((8, 3)).astype(np.float32)))
    assert int(live["1.num_batches_tracked"]) == 1
    assert float(abs(backend.to_host(live["1.running_mean"])).sum()) > 0  # moved off zero
    held = {k: v for k, v in live.items()}
    net.load_state_dict(host_state(other))
    for k, v in net.state_dict().items():
        assert v is held[k], k  # the same arrays, now holding other's values
        np.testing.assert_array_equal(backend.to_host(v), host_state(other)[k], err_msg=k)
    optimizer = optim.SGD(net, lr=0.1)
    net.zero_grad()
    rng = host_rng(1)
    net.forward(backend.to_device(rng.standard_normal((8, 3)).astype(np.float32)))
    net.backward(backend.to_device(rng.standard_normal((8, 2)).astype(np.float32)))
    before = backend.to_host(live["0.weight"]).copy()
    optimizer.step()
    assert not np.array_equal(backend.to_host(live["0.weight"]), before)


def test_messages_are_one_line_even_for_long_shapes():
    layer = nn.Dense(1000, 10)
    x = backend.to_device(host_rng(0).standard_normal((2, 999)))
    with pytest.raises(ValueError) as err:
        layer.forward(x)
    assert re.fullmatch(r"[^\n]+", str(err.value))
