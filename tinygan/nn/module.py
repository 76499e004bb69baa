"""The layer contract shared by every tinygan layer, and ``Sequential``.

A layer owns three dictionaries of arrays:

- ``params``  — what the optimizer trains (``weight``, ``bias``, ...);
- ``grads``   — same keys as ``params``; ``backward`` *adds* into them, so gradients
                from several backward passes accumulate until ``zero_grad()``;
- ``buffers`` — state that is saved but not trained (``running_mean``, ...).

``forward(x)`` computes the output and keeps in ``self.cache`` what ``backward``
needs; ``backward(dout)`` takes dL/d(output) and returns dL/d(input). Inputs are
checked (``check_input``), and so is dout (``check_grad``: it must have the output's
shape), and a backward before any forward is named as such (``Module.cache``). A layer
keeps what its *last* forward needs, so forward and backward go in pairs (PyTorch keeps
a graph per forward instead); ``Sequential`` refuses a second backward for one forward.
The cache holds references, not copies (copies would cost memory and time every step):
Dense keeps its input x, Tanh and Sigmoid their output y. Changing those arrays in place
between forward and backward (``y += noise``) changes the gradients without a word,
where PyTorch raises; write ``y = y + noise`` instead, as tinygan's trainer does.
Inputs are not cast: a layer computes in the dtype NumPy's promotion gives its input
and params (a float64, int32 or int64 input makes a float32 layer's output float64; uint8
or int16 leave it float32), where PyTorch refuses mixed dtypes; keep data and layers
float32 for training (``astype``). LeakyReLU and BatchNorm, whose constants (the slope,
eps) take the input's dtype, refuse integer input, as PyTorch's do (``check_floating``),
and so does Dropout in training (x / (1 - p) is no integer).
``requires_grad_(False)`` freezes a layer: its backward still returns the input
gradient (the generator step needs it) but skips the parameter gradients.
``input_grad_(False)`` is the other half: for a network whose input is data or noise,
nothing upstream learns from dL/dx, so its first layer with parameters, when that is a
Dense, Conv2d or ConvTranspose2d, skips that product and the network's backward returns
None (PyTorch skips it likewise for inputs that do not require grad). Conditional
networks keep it: their first layer's dL/dh also feeds the label embedding.
``frozen(net)`` and ``no_input_grad(net)`` apply the two switches for the length of a
``with`` block.
"""

import numbers
from contextlib import contextmanager

from tinygan.backend import xp


class NothingCached:
    """A layer's cache before its first forward (a class, so copies of a layer know it too)."""


class Module:
    """Base class: parameter bookkeeping, modes, and PyTorch-style state dicts."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.cache = NothingCached()
        self.forwards = 0  # how many caches forward has stored: see Sequential.backward
        self.training = True
        self.requires_grad = True
        self.needs_input_grad = True

    # -- the two methods every layer writes -------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    @property
    def cache(self):
        """What the last forward kept for backward. Read before any forward, it is a
        one-line error rather than a TypeError from deep inside the layer's arithmetic
        (an AttributeError, so that hasattr and getattr(layer, "cache", None) still work)."""
        if isinstance(self._cache, NothingCached):
            name = type(self).__name__ if self.children() else repr(self)  # one line
            raise AttributeError(f"{name}: backward() called before forward(): there is "
                                 "nothing to differentiate yet")
        return self._cache

    @cache.setter
    def cache(self, value):
        self._cache = value
        if not isinstance(value, NothingCached):
            self.forwards += 1

    # -- tree structure: a layer with sub-layers lists them here ----------------------
    def children(self):
        """(name, module) pairs of direct sub-layers; leaves have none."""
        return []

    def modules(self, prefix=""):
        """Yield (dotted_prefix, module) for this module and every descendant."""
        yield prefix, self
        for name, child in self.children():
            yield from child.modules(f"{prefix}{name}.")

    def parameters(self):
        """Yield (dotted_name, module, key) for every trained array in the tree.

        The optimizer keeps (module, key) rather than the array itself, so a weight
        replaced by assignment (``layer.params["weight"] = w``) is the one it updates.
        """
        seen = set()  # a module reached twice (shared) is trained once, as in torch
        for prefix, module in self.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            for key in module.params:
                yield prefix + key, module, key

    # -- gradients ---------------------------------------------------------------------
    def accumulate_grad(self, key, grad):
        """grads[key] += grad, (re)allocating when the param's shape or dtype changed."""
        if not self.requires_grad:
            return
        param, current = self.params[key], self.grads.get(key)
        if current is None or current.shape != param.shape or current.dtype != param.dtype:
            self.grads[key] = grad.astype(param.dtype, copy=True)
        else:
            current += grad

    def zero_grad(self):
        for _, module in self.modules():
            module.grads = {k: xp.zeros_like(p) for k, p in module.params.items()}

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) the parameter gradients of the whole tree."""
        for _, module in self.modules():
            module.requires_grad = flag
        return self

    def input_grad_(self, flag=True):
        """Whether backward must return dL/dx. Layers whose dx costs a matrix product
        (Dense, Conv2d, ConvTranspose2d) skip it when False and return None; others
        ignore the flag. ``Sequential`` hands it on (see there)."""
        self.needs_input_grad = flag
        return self

    def has_params(self):
        return any(True for _ in self.parameters())

    # -- modes and dtype ---------------------------------------------------------------
    def train(self, mode=True):
        for _, module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def astype(self, dtype):
        """Cast every floating-point param and buffer (float32 to train, float64 to check).

        The dtype must be a floating-point one, as torch's ``Module.to`` requires: cast to
        integers, the weights (all in (-1, 1)) would become 0, and no later astype could
        bring them back (only floating-point arrays are cast)."""
        if not xp.issubdtype(xp.dtype(dtype), xp.floating):
            raise TypeError(f"{type(self).__name__}.astype: expected a floating-point dtype "
                            f"(float32 to train, float64 to check gradients), got {dtype!r}")
        for _, module in self.modules():
            for store in (module.params, module.buffers):
                for k, v in store.items():
                    if xp.issubdtype(v.dtype, xp.floating):
                        store[k] = v.astype(dtype)
            module.grads = {k: xp.zeros_like(p) for k, p in module.params.items()}
        return self

    # -- state dicts with PyTorch's dotted names --------------------------------------
    def state_dict(self):
        """{'0.weight': array, '3.running_mean': array, ...}: params then buffers per layer.

        The arrays are the layers' own, as torch's tensors share the module's storage:
        training updates them in place, so a state_dict taken once stays current (copy
        the arrays for a snapshot)."""
        state = {}
        for prefix, module in self.modules():
            for k, v in module.params.items():
                state[prefix + k] = v
            for k, v in module.buffers.items():
                state[prefix + k] = v
        return state

    def load_state_dict(self, state):
        """Copy arrays in by name, into the arrays the layers already hold (as torch's
        ``copy_``), cast to their dtypes; missing or unexpected names and shape mismatches
        raise before anything changes."""
        targets = {}
        for prefix, module in self.modules():
            for store in (module.params, module.buffers):
                for k in store:
                    targets[prefix + k] = (store, k)
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        # Check every shape before copying anything, so a bad entry leaves no half-loaded model.
        for name, (store, k) in targets.items():
            check_array(f"{type(self).__name__}.load_state_dict: {name!r}", state[name])
            shape = tuple(state[name].shape)
            if shape != tuple(store[k].shape):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {name!r} has shape "
                    f"{shape}, expected {tuple(store[k].shape)}"
                )
        for name, (store, k) in targets.items():
            store[k][...] = xp.asarray(state[name]).astype(store[k].dtype, copy=False)

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self):
        return ""


def check_array(owner, value, what="an array"):
    """Raise a one-line TypeError unless ``value`` is an array: a list or a float given
    where an array belongs is named, instead of an AttributeError from deep inside."""
    if not hasattr(value, "shape"):
        raise TypeError(f"{owner}: expected {what}, got {type(value).__name__}")


def check_input(layer, x, layout, channels=None):
    """Raise a one-line ValueError unless x has one axis per letter of ``layout``.

    ``layout`` reads like PyTorch's docs ("NC", "NCL", "NCHW"); ``channels`` pins axis 1.
    """
    check_array(repr(layer), x)
    shape = tuple(x.shape)
    if len(shape) != len(layout) or (channels is not None and shape[1] != channels):
        dims = [str(channels) if d == "C" and channels is not None else d for d in layout]
        raise ValueError(f"{layer!r}: expected input of shape ({', '.join(dims)}), got {shape}")


def check_floating(layer, x):
    """Raise a one-line ValueError unless x holds floating-point numbers: a layer that
    casts its constants to x's dtype would round them (a slope of 0.2 to 0, eps to 0)."""
    check_array(repr(layer), x)
    if not xp.issubdtype(x.dtype, xp.floating):
        raise ValueError(f"{layer!r}: expected floating-point input, got {x.dtype} "
                         "(cast it, e.g. x.astype(np.float32))")


def check_grad(layer, dout, shape):
    """Raise a one-line ValueError unless dout, dL/d(output), has the output's ``shape``.

    Without it an elementwise layer would broadcast a wrong one ((N,) against (N, 1))
    into a gradient of the wrong shape, and a reshaping layer would fold it into the
    input's shape: wrong answers without a word.
    """
    if dout is None:  # what a layer after it returns when it skips dL/dx
        raise TypeError(f"{layer!r}: backward got None for dL/dout: the layer after it "
                        "skipped its input gradient (input_grad_(False))")
    check_array(f"{layer!r}: backward", dout, "an array for dL/dout")
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(f"{layer!r}: backward expected dL/dout of the output's shape "
                         f"{tuple(shape)}, got {tuple(dout.shape)}")


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # np.int64 too


def check_sizes(owner, **sizes):
    """One-line ValueError unless every size (in_features=..., ...) is an int >= 1."""
    for name, value in sizes.items():
        if not (is_int(value) and value >= 1):
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


class Sequential(Module):
    """Layers applied in order: y = f_n(...f_2(f_1(x))).

    Backward is the chain rule read right to left: dL/dx = f_1'^T(... f_n'^T(dL/dy)),
    so each layer's backward gets the gradient of the layer after it.
    Sub-layers are named "0", "1", ... as in torch.nn.Sequential.
    """

    def __init__(self, *layers):
        super().__init__()
        owner = {}  # id(module) -> the position of the layer it belongs to
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} must be a tinygan Module, "
                                f"got {type(layer).__name__}")
            for _, module in layer.modules():
                if id(module) in owner:
                    # one forward cache per layer: a second use would overwrite what the
                    # first use's backward needs, and give wrong gradients without a word
                    raise ValueError(f"Sequential: layer {i} uses the same {type(module).__name__} "
                                     f"instance as layer {owner[id(module)]}; give each "
                                     "position its own instance")
                owner[id(module)] = i
        self.layers = list(layers)
        self.differentiated = None  # the layers' forward counts at the last backward

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        # Each layer keeps what its *last* forward needs, so a network differentiates its
        # last forward: after forward(a), forward(b), a backward for a would use b's
        # inputs. PyTorch keeps a graph per forward (and, by default, refuses a second
        # backward through it); here forward and backward alternate, and a second
        # backward with no forward since the last one (how that mistake shows) is refused.
        forwards = [module.forwards for _, module in self.modules()]
        if forwards == self.differentiated:
            raise RuntimeError(f"{type(self).__name__}: a second backward() for one forward(): "
                               "each layer keeps what its last forward needs, so run forward "
                               "and backward in pairs (or add the two gradients and call "
                               "backward once)")
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
            if dout is None:  # it skipped dL/dx: the layers before it have no params
                break
        self.differentiated = forwards  # only now: a backward that raised may be retried
        return dout

    def input_grad_(self, flag=True):
        """dL/dx leaves the network through its layers up to the first one with
        parameters; when no dL/dx is wanted, that layer skips it and those before it
        (Flatten, say) have nothing to learn, so backward stops there."""
        self.needs_input_grad = flag
        for layer in self.layers:
            layer.input_grad_(flag)
            if layer.has_params():
                break
        return self

    def __getitem__(self, i):
        if isinstance(i, slice):  # as torch: a slice of a Sequential is a Sequential
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


@contextmanager
def _switched_off(net, flag, switch_off):
    """Within: switch_off(); afterwards every module's ``flag`` is as it was, even when
    an error escapes (a sub-layer the user froze stays frozen)."""
    saved = [(module, getattr(module, flag)) for _, module in net.modules()]
    switch_off()
    try:
        yield net
    finally:
        for module, value in saved:
            setattr(module, flag, value)


def frozen(net):
    """Within the block: net's backward returns dL/dx but computes no weight gradients."""
    return _switched_off(net, "requires_grad", lambda: net.requires_grad_(False))


def no_input_grad(net):
    """Within the block: net's backward skips dL/dx (its input is data or noise)."""
    return _switched_off(net, "needs_input_grad", lambda: net.input_grad_(False))
