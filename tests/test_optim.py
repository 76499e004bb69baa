"""Optimizers without the oracle: their formulas by hand, in-place updates, frozen layers,
resuming from a state dict, and weight clipping. (test_oracle_torch.py compares them
with torch.optim step by step.)"""

import numpy as np
import pytest
from helpers import host_rng

from tinygan import backend, nn, optim
from tinygan.backend import xp


def dense_with(weight, grad, lr_dtype=np.float64):
    """A bias-free Dense whose weight and gradient are given host arrays."""
    layer = nn.Dense(weight.shape[1], weight.shape[0], bias=False).astype(lr_dtype)
    layer.params["weight"] = backend.to_device(weight.astype(lr_dtype))
    layer.grads["weight"] = backend.to_device(grad.astype(lr_dtype))
    return layer


def weight_of(layer):
    return backend.to_host(layer.params["weight"])


P0 = np.array([[1.0, -2.0, 0.5]])
G1 = np.array([[0.3, -0.1, 2.0]])
G2 = np.array([[-1.0, 0.4, 0.0]])


def set_grad(layer, grad):
    layer.grads["weight"] = backend.to_device(grad)


def test_sgd_plain_and_with_momentum_and_weight_decay():
    layer = dense_with(P0, G1)
    optim.SGD(layer, lr=0.1).step()
    np.testing.assert_allclose(weight_of(layer), P0 - 0.1 * G1, rtol=1e-15)

    layer = dense_with(P0, G1)
    opt = optim.SGD(layer, lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()
    v1 = G1 + 0.01 * P0  # the first step's buffer is the (decayed) gradient itself
    p1 = P0 - 0.1 * v1
    np.testing.assert_allclose(weight_of(layer), p1, rtol=1e-15)
    set_grad(layer, G2)
    opt.step()
    v2 = 0.9 * v1 + G2 + 0.01 * p1
    np.testing.assert_allclose(weight_of(layer), p1 - 0.1 * v2, rtol=1e-14)


def test_adam_by_hand():
    b1, b2, eps, lr = 0.5, 0.999, 1e-8, 0.01
    layer = dense_with(P0, G1)
    opt = optim.Adam(layer, lr=lr, betas=(b1, b2), eps=eps)
    opt.step()
    # step 1: the bias corrections make the update lr * g / (|g| + eps), about lr * sign(g)
    p1 = P0 - lr * G1 / (np.abs(G1) + eps)
    np.testing.assert_allclose(weight_of(layer), p1, rtol=1e-14)
    set_grad(layer, G2)
    opt.step()
    m = b1 * (1 - b1) * G1 + (1 - b1) * G2
    v = b2 * (1 - b2) * G1**2 + (1 - b2) * G2**2
    p2 = p1 - lr / (1 - b1**2) * m / (np.sqrt(v) / np.sqrt(1 - b2**2) + eps)
    np.testing.assert_allclose(weight_of(layer), p2, rtol=1e-14)


def test_rmsprop_by_hand():
    alpha, eps, lr = 0.9, 1e-8, 0.01
    layer = dense_with(P0, G1)
    opt = optim.RMSprop(layer, lr=lr, alpha=alpha, eps=eps, momentum=0.5)
    opt.step()
    v1 = (1 - alpha) * G1**2
    b1 = G1 / (np.sqrt(v1) + eps)
    p1 = P0 - lr * b1
    np.testing.assert_allclose(weight_of(layer), p1, rtol=1e-14)
    set_grad(layer, G2)
    opt.step()
    v2 = alpha * v1 + (1 - alpha) * G2**2
    b2 = 0.5 * b1 + G2 / (np.sqrt(v2) + eps)
    np.testing.assert_allclose(weight_of(layer), p1 - lr * b2, rtol=1e-14)


OPTIMIZERS = {
    "sgd": lambda m: optim.SGD(m, lr=0.05, momentum=0.9),
    "adam": lambda m: optim.Adam(m, lr=5e-2, betas=(0.5, 0.999)),
    "rmsprop": lambda m: optim.RMSprop(m, lr=1e-2, momentum=0.3),
}


def small_net():
    return nn.Sequential(nn.Dense(4, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.2), nn.Dense(8, 1))


def host_params(net):
    return {name: backend.to_host(m.params[k]).copy() for name, m, k in net.parameters()}


def train_steps(net, opt, rng, steps):
    """A regression step: loss = mean((net(x) - y)^2) with fresh host-drawn batches."""
    losses = []
    for _ in range(steps):
        x = rng.standard_normal((16, 4))
        y = x @ np.array([[1.0], [-2.0], [0.5], [0.0]])
        out = net.forward(backend.to_device(x, xp.float32))
        diff = out - backend.to_device(y, xp.float32)
        losses.append(float((diff * diff).mean()))
        opt.zero_grad()
        net.backward(2 * diff / diff.size)
        opt.step()
    return losses


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_train_in_place_in_float32(name):
    net = nn.Sequential(nn.Dense(4, 1))  # linear regression: every optimizer must solve it
    arrays = {n: m.params[k] for n, m, k in net.parameters()}
    losses = train_steps(net, OPTIMIZERS[name](net), host_rng(0), 200)
    assert np.mean(losses[-10:]) < 0.05 * np.mean(losses[:10]), losses[::20]
    for n, m, k in net.parameters():
        assert m.params[k] is arrays[n]  # updated in place, never replaced
        assert m.params[k].dtype == np.float32


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_from_state_dict_equals_uninterrupted_run(name):
    """3 steps, snapshot the model and the optimizer through plain host arrays, 3 more:
    a fresh model and optimizer loaded from the snapshot take exactly the same 3 steps."""
    net = small_net()
    opt = OPTIMIZERS[name](net)
    train_steps(net, opt, host_rng(1), 3)
    model_state = {k: backend.to_host(v).copy() for k, v in net.state_dict().items()}
    opt_state = {k: backend.to_host(v).copy() if hasattr(v, "shape") else v
                 for k, v in opt.state_dict().items()}
    train_steps(net, opt, host_rng(2), 3)

    resumed = small_net()
    resumed.load_state_dict(model_state)
    resumed_opt = OPTIMIZERS[name](resumed)
    resumed_opt.load_state_dict(opt_state)
    assert resumed_opt.step_count == 3
    train_steps(resumed, resumed_opt, host_rng(2), 3)
    for k, v in host_params(net).items():
        np.testing.assert_array_equal(host_params(resumed)[k], v, err_msg=k)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_frozen_layers_are_not_updated(name):
    net = small_net()
    opt = OPTIMIZERS[name](net)
    train_steps(net, opt, host_rng(3), 2)
    before = host_params(net)
    net[0].requires_grad_(False)  # as the generator step freezes the discriminator
    train_steps(net, opt, host_rng(4), 2)
    after = host_params(net)
    for k in ("0.weight", "0.bias"):
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert not np.array_equal(after["3.weight"], before["3.weight"])


def test_a_weight_replaced_by_assignment_is_the_one_updated():
    layer = dense_with(P0, G1)
    opt = optim.SGD(layer, lr=1.0)
    layer.params["weight"] = backend.to_device(np.zeros((1, 3)))
    layer.grads["weight"] = backend.to_device(np.ones((1, 3)))
    opt.step()
    np.testing.assert_array_equal(weight_of(layer), -np.ones((1, 3)))


def test_a_replaced_weight_gets_a_gradient_of_its_own_dtype():
    """A weight replaced by one of another dtype (float32 -> float64) gets a fresh float64
    gradient in the next backward, not float64 values rounded into the old float32 array."""
    layer = nn.Dense(3, 1, bias=False)
    x = host_rng(8).standard_normal((5, 3))
    layer.params["weight"] = backend.to_device(np.full((1, 3), 1 / 3))
    layer.forward(backend.to_device(x))
    layer.backward(backend.to_device(np.ones((5, 1))))
    dweight = layer.grads["weight"]
    assert dweight.dtype == np.float64
    np.testing.assert_allclose(backend.to_host(dweight), x.sum(axis=0, keepdims=True),
                               rtol=1e-14)  # float32 rounding would be ~1e-7


def test_zero_grad_clears_every_gradient():
    net = small_net()
    opt = optim.Adam(net)
    train_steps(net, opt, host_rng(5), 1)
    net.forward(backend.to_device(host_rng(6).standard_normal((4, 4)), xp.float32))
    net.backward(backend.to_device(np.ones((4, 1)), xp.float32))
    opt.zero_grad()
    for name, module, key in net.parameters():
        assert not backend.to_host(module.grads[key]).any(), name


def test_clip_weights_clamps_every_param_in_place():
    net = small_net()
    net[1].params["weight"] = backend.to_device(np.full(8, 3.0, dtype=np.float32))
    arrays = {n: m.params[k] for n, m, k in net.parameters()}
    before = host_params(net)
    optim.clip_weights(net, 0.05)
    for name, module, key in net.parameters():
        assert module.params[key] is arrays[name]
        np.testing.assert_array_equal(backend.to_host(module.params[key]),
                                      np.clip(before[name], -0.05, 0.05), err_msg=name)


def test_load_state_dict_takes_copies_in_the_params_dtype():
    """Loaded moments become the optimizer's own arrays in the param's dtype: float64 ones
    are cast to float32, and stepping never writes into the dict that was loaded."""
    layer = dense_with(P0, G1, np.float32)
    opt = optim.Adam(layer, lr=0.1)
    opt.step()
    saved = {k: backend.to_host(v).copy() if hasattr(v, "shape") else v
             for k, v in opt.state_dict().items()}
    snapshot = {k: np.copy(v) for k, v in saved.items()}
    as_float64 = {k: v.astype(np.float64) if hasattr(v, "shape") else v for k, v in saved.items()}
    for flat in (saved, as_float64):
        resumed = optim.Adam(layer, lr=0.1)
        resumed.load_state_dict(flat)
        assert resumed.state["weight"]["exp_avg"].dtype == np.float32
        resumed.step()
    for k, v in snapshot.items():
        np.testing.assert_array_equal(saved[k], v, err_msg=k)


def test_adam_in_float32_rounds_as_its_formulas_evaluated_left_to_right():
    """The in-place update keeps the documented operation order, so float32 results equal
    the formulas' bit for bit (v = b2 v + ((1 - b2) g) g, as torch's addcmul); on CuPy the
    fused kernel (tinygan.kernels.adam) does too."""
    rng = host_rng(7)
    b1, b2, eps, lr = 0.5, 0.999, 1e-8, 2e-4
    p = rng.standard_normal((1, 300)).astype(np.float32)
    layer = dense_with(p, np.zeros_like(p), np.float32)
    opt = optim.Adam(layer, lr=lr, betas=(b1, b2), eps=eps)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t in (1, 2, 3):
        g = rng.standard_normal(p.shape).astype(np.float32)
        set_grad(layer, g)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * m / (np.sqrt(v) / (1 - b2**t) ** 0.5 + eps)
        assert p.dtype == np.float32
        state = opt.state["weight"]
        np.testing.assert_array_equal(backend.to_host(state["exp_avg"]), m, err_msg=f"m {t}")
        np.testing.assert_array_equal(backend.to_host(state["exp_avg_sq"]), v, err_msg=f"v {t}")
        np.testing.assert_array_equal(weight_of(layer), p, err_msg=f"step {t}")


def test_adam_hyperparameters_given_as_numpy_scalars_update_as_python_floats_do():
    """A NumPy float64 scalar is no weak Python float: combined with a float32 array it would
    make the update's temporaries float64 and change its rounding (and the fused kernel's
    dispatch). Adam keeps its hyperparameters as Python floats."""
    rng = host_rng(3)
    p0 = rng.standard_normal((2, 40)).astype(np.float32)
    grads = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(3)]
    weights = []
    for number in (float, np.float64):
        layer = dense_with(p0, np.zeros_like(p0), np.float32)
        opt = optim.Adam(layer, lr=number(1e-2), betas=(number(0.8), number(0.99)),
                         eps=number(1e-6))
        for g in grads:
            set_grad(layer, g)
            opt.step()
        weights.append(weight_of(layer))
        assert all(type(b) is float for b in opt.betas) and type(opt.eps) is float
    np.testing.assert_array_equal(weights[0], weights[1])
