"""Optimizers with PyTorch's update formulas, and weight clipping for WGAN critics.

An optimizer is built from a layer or a Sequential; ``step()`` updates every
param in place from its accumulated grad, ``zero_grad()`` clears the grads.
Per-parameter state (momentum, moment estimates) is keyed by the dotted name.
"""

import numbers

from tinygan import kernels
from tinygan.backend import xp


def check_range(owner, name, value, low, high=None):
    """One-line ValueError unless low <= value (< high), as torch checks its arguments."""
    if not isinstance(value, numbers.Real):  # an array (even 0-d) or a string is no number
        raise ValueError(f"{owner}: {name} must be a number, got {type(value).__name__} "
                         f"{value!r}")
    if not (low <= value and (high is None or value < high)):
        allowed = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{owner}: {name} must be {allowed}, got {value!r}")


class Optimizer:
    def __init__(self, module, lr, weight_decay=0.0):
        name = type(self).__name__
        if not hasattr(module, "parameters") or not hasattr(module, "zero_grad"):
            # torch's optimizers take net.parameters(); these take the network itself
            raise TypeError(f"{name}: expected a tinygan layer or Sequential (the network "
                            f"itself, not net.parameters()), got {type(module).__name__}")
        check_range(name, "lr", lr, 0)  # lr = 0 is allowed, as in torch (it freezes)
        check_range(name, "weight_decay", weight_decay, 0)
        self.module, self.lr, self.weight_decay = module, lr, weight_decay
        self.entries = list(module.parameters())  # (name, module, key)
        self.state = {}  # name -> dict of arrays (and Adam's int "step")
        self.step_count = 0

    def zero_grad(self):
        self.module.zero_grad()

    def step(self):
        self.step_count += 1
        for name, module, key in self.entries:
            if not module.requires_grad:
                continue
            param, grad = module.params[key], module.grads[key]
            self.update(param, grad, self.state.setdefault(name, {}))

    def update(self, param, grad, state):
        raise NotImplementedError

    def state_names(self):
        """The entries ``update`` keeps per param (after its first update), by torch's names;
        None (an optimizer that does not say) leaves load_state_dict's entry checks out."""
        return None

    def state_dict(self):
        flat = {"step_count": self.step_count}
        for name, entries in self.state.items():
            for k, v in entries.items():
                flat[f"{name}/{k}"] = v
        return flat

    def load_state_dict(self, flat):
        """Restore a ``state_dict()``: names, entries and shapes are checked against this
        optimizer's params and kind before anything changes; arrays take the param's dtype.
        (Another optimizer's state, Adam's loaded into RMSprop say, would otherwise be kept
        unused or restart the moments without a word.)"""
        owner = type(self).__name__ + ".load_state_dict"
        if "step_count" not in flat:
            raise KeyError(f"{owner}: no 'step_count' entry: not an optimizer state")
        params = {name: module.params[key] for name, module, key in self.entries}
        state = {}
        for key, value in flat.items():
            if key == "step_count":
                continue
            name, _, k = key.rpartition("/")
            if name not in params:
                raise KeyError(f"{owner}: state {key!r} belongs to no parameter of this "
                               f"model (its parameters: {sorted(params)})")
            param = params[name]
            names = self.state_names()
            if names is not None and k not in names:
                raise KeyError(f"{owner}: {key!r} is not a state entry of this optimizer, "
                               f"whose entries are {list(names)}")
            if k == "step":  # stays a Python int: reading a device scalar would sync the GPU
                value = int(value)
            elif not hasattr(value, "shape"):
                raise TypeError(f"{owner}: {key!r} must be an array, got {type(value).__name__}")
            elif tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{owner}: {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(param.shape)} like its parameter")
            else:
                value = xp.asarray(value).astype(param.dtype, copy=True)
            state.setdefault(name, {})[k] = value
        for name, entries in state.items():  # a param's entries come all together or not at all
            missing = [k for k in self.state_names() or () if k not in entries]
            if missing:
                raise KeyError(f"{owner}: the state of {name!r} lacks {missing}")
        self.step_count, self.state = int(flat["step_count"]), state


class SGD(Optimizer):
    """torch.optim.SGD: with g = grad + weight_decay * p,
        b = g on the first step, then b = momentum * b + (1 - dampening) * g
        p -= lr * b                      (or lr * (g + momentum * b) with nesterov)
    and p -= lr * g when momentum is 0."""

    def __init__(self, module, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(module, lr, weight_decay)
        check_range("SGD", "momentum", momentum, 0)
        check_range("SGD", "dampening", dampening, 0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs a momentum > 0 and dampening 0")
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov

    def state_names(self):
        return ("momentum_buffer",) if self.momentum else ()

    def update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            buf = state["momentum_buffer"]
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad


class Adam(Optimizer):
    """torch.optim.Adam, at step t:
        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g g
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    The (1 - b^t) factors undo the bias of m, v starting at zero; t counts the
    updates of each param (its state's "step"), as in torch. Products are evaluated
    left to right, ((1 - b2) g) g, in the order torch's ``addcmul`` multiplies: in
    float32 the order changes the last bit of about a third of the entries. The results
    still differ from torch's in the last bit here and there, because torch fuses the
    add into the product (addcmul) and updates m with ``lerp``: equal formulas, other
    roundings (the tests compare with torch within a tolerance, not bit for bit)."""

    def __init__(self, module, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(module, lr, weight_decay)
        betas = tuple(betas)
        if len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair (b1, b2), got {betas!r}")
        for i, beta in enumerate(betas):  # b = 1 would divide by 1 - b^t = 0
            check_range("Adam", f"betas[{i}]", beta, 0, 1)
        check_range("Adam", "eps", eps, 0)
        # Python floats: with a NumPy float64 scalar, NumPy would compute float32 updates in
        # float64, rounding otherwise than torch and the fused kernel do
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)

    def state_names(self):
        return ("step", "exp_avg", "exp_avg_sq")

    def update(self, param, grad, state):
        b1, b2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if "exp_avg" not in state:
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
            state["step"] = 0
        # t counts this param's own updates, as torch does: a layer frozen for some steps
        # (skipped by step()) must not have its bias correction advanced meanwhile.
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        step_size, bias2_sqrt = float(self.lr) / (1 - b1**t), (1 - b2**t) ** 0.5
        if kernels.enabled(param, grad, m, v):  # on a GPU, the lines below as one launch
            kernels.adam(param, grad, m, v, b1, b2, self.eps, step_size, bias2_sqrt)
            return
        # In place, with two temporaries instead of eight, in the same operation order
        # (so the same rounding) as the formulas above.
        tmp = xp.multiply(grad, 1 - b1)
        m *= b1
        m += tmp
        xp.multiply(grad, 1 - b2, out=tmp)
        tmp *= grad
        v *= b2
        v += tmp
        denom = xp.sqrt(v)
        denom /= bias2_sqrt
        denom += self.eps
        xp.multiply(m, step_size, out=tmp)
        tmp /= denom
        param -= tmp


class RMSprop(Optimizer):
    """torch.optim.RMSprop (centered=False):
        v = alpha v + (1 - alpha) g^2;   p -= lr * g / (sqrt(v) + eps)
    with optional momentum: b = momentum b + g / (sqrt(v) + eps); p -= lr * b."""

    def __init__(self, module, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0):
        super().__init__(module, lr, weight_decay)
        check_range("RMSprop", "alpha", alpha, 0)
        check_range("RMSprop", "eps", eps, 0)
        check_range("RMSprop", "momentum", momentum, 0)
        self.alpha, self.eps, self.momentum = alpha, eps, momentum

    def state_names(self):
        return ("square_avg", "momentum_buffer") if self.momentum else ("square_avg",)

    def update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if "square_avg" not in state:
            state["square_avg"] = xp.zeros_like(param)
        v = state["square_avg"]
        v *= self.alpha
        v += (1 - self.alpha) * grad * grad
        step = grad / (xp.sqrt(v) + self.eps)
        if self.momentum:
            buf = state.setdefault("momentum_buffer", xp.zeros_like(param))
            buf *= self.momentum
            buf += step
            step = buf
        param -= self.lr * step


def clip_weights(module, clip_value):
    """WGAN's Lipschitz constraint: clamp every param of the critic to [-c, c], in place."""
    check_range("clip_weights", "clip_value", clip_value, 0)
    for _, owner, key in module.parameters():
        xp.clip(owner.params[key], -clip_value, clip_value, out=owner.params[key])
