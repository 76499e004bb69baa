"""Layers that move or mask values: Dropout, Flatten, Reshape, Embedding."""

import math

from tinygan import backend
from tinygan.backend import xp
from tinygan.nn import init
from tinygan.nn.module import Module, check_array, check_floating, check_grad, check_sizes


class Dropout(Module):
    """Inverted dropout: y = x * mask / (1 - p), mask_i ~ Bernoulli(1 - p), in training.

    Scaling by 1/(1-p) keeps E[y] = x, so eval mode is the identity.
    Backward: y is linear in x with the same mask, so dx = dout * mask / (1 - p).
    p = 1 (allowed, as in torch) drops every value: y = 0 and dx = 0.
    """

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        if not self.training or self.p == 0:  # the identity, for any x (as torch)
            self.cache = None
            return x
        check_floating(self, x)  # as torch: an integer x cannot hold x / (1 - p)
        # the generator draws float32 or float64 only: a float16 x gets float32 draws
        draw_dtype = x.dtype if x.dtype in (xp.float32, xp.float64) else xp.float32
        draws = backend.rng().random(x.shape, dtype=draw_dtype)
        # the mask takes x's memory order (empty_like), so y and dx keep the batch-last
        # layout a convolution handed over (tinygan.nn.conv) instead of coming back NCHW
        mask = xp.greater_equal(draws, self.p, out=xp.empty_like(x))  # 1 = keep, 0 = drop
        # p = 1 drops everything (as torch): the mask is all zero, with nothing to rescale
        mask *= x.dtype.type(1 / (1 - self.p) if self.p < 1 else 0)
        self.cache = mask
        return x * mask

    def backward(self, dout):
        if self.cache is None:  # eval mode (or p = 0): the identity
            return dout
        check_grad(self, dout, self.cache.shape)
        return dout * self.cache


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...); backward reshapes the gradient back.

    The gradient goes back in the memory order the input had: a convolution hands
    over an (N, C, H, W) view of (C, H, W, N) memory (see tinygan.nn.conv), and the
    layers between it and this one then work on arrays of one layout in both passes.
    """

    def forward(self, x):
        check_array(repr(self), x)
        if x.ndim < 2:  # as torch: a bare (N,) vector has no axes to flatten
            raise ValueError(f"{self!r}: expected input of shape (N, ...) with at least 2 "
                             f"axes, got {tuple(x.shape)}")
        # axes from the slowest-varying in memory to the fastest (stable for ties)
        order = tuple(sorted(range(x.ndim), key=lambda axis: -x.strides[axis]))
        self.cache = (x.shape, order)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: N may be 0

    def backward(self, dout):
        shape, order = self.cache
        check_grad(self, dout, (shape[0], math.prod(shape[1:])))
        dx = dout.reshape(shape)
        if order == tuple(range(len(shape))):
            return dx
        inverse = tuple(order.index(axis) for axis in range(len(shape)))
        return xp.ascontiguousarray(dx.transpose(order)).transpose(inverse)


class Reshape(Module):
    """(N, ...) -> (N, *shape), e.g. Reshape(128, 7, 7) after a Dense(100, 6272)."""

    def __init__(self, *shape):
        super().__init__()
        if not shape:
            raise ValueError("Reshape: give the shape after N, e.g. Reshape(128, 7, 7)")
        check_sizes("Reshape", **{f"size {i}": d for i, d in enumerate(shape)})
        self.shape = shape

    def extra_repr(self):
        return ", ".join(map(str, self.shape))

    def forward(self, x):
        check_array(repr(self), x)
        self.cache = x.shape
        size = math.prod(self.shape)
        if x.ndim < 1 or x.size != x.shape[0] * size:
            raise ValueError(
                f"{self!r}: expected input with N x {size} values, got shape {tuple(x.shape)}"
            )
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, dout):
        check_grad(self, dout, (self.cache[0], *self.shape))
        return dout.reshape(self.cache)


class Embedding(Module):
    """y_n = W[idx_n]: row lookup, like torch.nn.Embedding (W ~ N(0, 1)).

    Shapes: idx (N,) integers in [0, num_embeddings), W (num_embeddings, dim), y (N, dim).

    A lookup is a product with a one-hot matrix: y = onehot(idx) W, with onehot of
    shape (N, num_embeddings). So dL/dW = onehot(idx)^T G: each row W[k] collects the
    gradients of every sample whose index is k. The indices are integers, so there
    is no input gradient (backward returns None).
    """

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        check_sizes("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.params["weight"] = init.normal((num_embeddings, embedding_dim))
        self.zero_grad()

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"

    def forward(self, idx):
        check_array(repr(self), idx, "an integer array of indices")
        if idx.ndim != 1 or not xp.issubdtype(idx.dtype, xp.integer):
            raise ValueError(f"{self!r}: expected a 1-D integer array of indices, got "
                             f"{idx.dtype} array of shape {tuple(idx.shape)}")
        # On CuPy this check would sync the GPU every step; labels are validated when loaded.
        if backend.name() == "numpy" and idx.size and (
            int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings
        ):
            raise ValueError(f"{self!r}: indices must be in [0, {self.num_embeddings})")
        self.cache = idx
        return self.params["weight"][idx]

    def backward(self, dout):
        check_grad(self, dout, (len(self.cache), self.embedding_dim))
        if self.requires_grad:
            weight = self.params["weight"]
            onehot = (self.cache[:, None] == xp.arange(self.num_embeddings)).astype(weight.dtype)
            self.accumulate_grad("weight", onehot.T @ dout)
        return None
