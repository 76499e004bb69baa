"""Fully connected layer."""

from tinygan import parallel
from tinygan.backend import xp
from tinygan.nn import init
from tinygan.nn.module import Module, check_grad, check_input, check_sizes


class Dense(Module):
    """y = x W^T + b, like torch.nn.Linear.

    Shapes: x (N, in), W (out, in), b (out,), y (N, out).

    Backward, with G = dL/dy of shape (N, out):
      y_nj = sum_i x_ni W_ji + b_j, so
      dL/dW_ji = sum_n G_nj x_ni          ->  dweight = G^T x       (out, in)
      dL/db_j  = sum_n G_nj               ->  dbias   = G.sum(0)    (out,)
      dL/dx_ni = sum_j G_nj W_ji          ->  dx      = G W         (N, in)
    (dx is skipped, and backward returns None, after ``input_grad_(False)``.)
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        check_sizes("Dense", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        bound = init.fan_in_bound(in_features)
        self.params["weight"] = init.uniform((out_features, in_features), bound)
        if bias:
            self.params["bias"] = init.uniform((out_features,), bound)
        self.zero_grad()

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"

    def forward(self, x):
        check_input(self, x, "NC", self.in_features)
        self.cache = x
        y = parallel.matmul(x, self.params["weight"].T)
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dout):
        x = self.cache
        check_grad(self, dout, (x.shape[0], self.out_features))
        weight = self.params["weight"]
        if self.requires_grad:
            self.accumulate_grad("weight", parallel.matmul(dout.T, x))
            if "bias" in self.params:
                self.accumulate_grad("bias", dout.sum(axis=0))
        if not self.needs_input_grad:
            return None
        if self.out_features == 1:
            # dot, not matmul: NumPy's matmul falls back to a slow loop when the inner
            # dimension is 1, as it is for a discriminator's single output (7x slower at
            # 64 x 6272)
            return xp.dot(dout, weight)
        return parallel.matmul(dout, weight)
