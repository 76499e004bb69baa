"""Optimizers with PyTorch's update formulas, and weight clipping for WGAN critics.

An optimizer is built from a layer or a Sequential; ``step()`` updates every
param in place from its accumulated grad, ``zero_grad()`` clears the grads.
Per-parameter state (momentum, moment estimates) is keyed by the dotted name.
"""

from tinygan.backend import xp


class Optimizer:
    def __init__(self, module, lr):
        if lr <= 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive, got {lr}")
        self.module, self.lr = module, lr
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

    def state_dict(self):
        flat = {"step_count": self.step_count}
        for name, entries in self.state.items():
            for k, v in entries.items():
                flat[f"{name}/{k}"] = v
        return flat

    def load_state_dict(self, flat):
        self.step_count = int(flat["step_count"])
        self.state = {}
        for key, value in flat.items():
            if key != "step_count":
                name, k = key.rsplit("/", 1)
                # a step count stays a Python int: reading a device scalar would sync the GPU
                value = int(value) if k == "step" else xp.asarray(value)
                self.state.setdefault(name, {})[k] = value


class SGD(Optimizer):
    """v = momentum * v + g  (v = g on the first step);  p -= lr * v  (torch.optim.SGD)."""

    def __init__(self, module, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(module, lr)
        self.momentum, self.weight_decay = momentum, weight_decay

    def update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += grad
            grad = state["momentum_buffer"]
        param -= self.lr * grad


class Adam(Optimizer):
    """torch.optim.Adam, at step t:
        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    The (1 - b^t) factors undo the bias of m, v starting at zero; t counts the
    updates of each param (its state's "step"), as in torch."""

    def __init__(self, module, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(module, lr)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay

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
        denom /= (1 - b2**t) ** 0.5
        denom += self.eps
        xp.multiply(m, self.lr / (1 - b1**t), out=tmp)
        tmp /= denom
        param -= tmp


class RMSprop(Optimizer):
    """torch.optim.RMSprop (centered=False):
        v = alpha v + (1 - alpha) g^2;   p -= lr * g / (sqrt(v) + eps)
    with optional momentum: b = momentum b + g / (sqrt(v) + eps); p -= lr * b."""

    def __init__(self, module, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(module, lr)
        self.alpha, self.eps = alpha, eps
        self.momentum, self.weight_decay = momentum, weight_decay

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
    for _, owner, key in module.parameters():
        xp.clip(owner.params[key], -clip_value, clip_value, out=owner.params[key])
