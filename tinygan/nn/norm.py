"""Batch normalisation over the batch (and spatial) axes, as torch.nn.BatchNorm1d/2d."""

from tinygan import kernels, parallel
from tinygan.backend import xp
from tinygan.nn.module import Module, check_floating, check_grad, check_input, check_sizes


class _BatchNorm(Module):
    """y = gamma * xhat + beta,  xhat = (x - mu) / sqrt(var + eps), per channel c.

    In training mode mu and var are the mean and biased variance of channel c over
    the m values it has in the batch (m = N*H*W for (N, C, H, W) inputs, N*L for
    (N, C, L), N for (N, C)), and the running statistics move as
    torch does: running = (1 - momentum) * running + momentum * batch_stat, with the
    *unbiased* variance (var * m / (m - 1)) going into running_var; momentum=None
    uses 1/k for the k-th batch, the cumulative average. In eval mode
    mu, var are the running statistics, constants.

    Backward, with G = dL/dy and sums over the m positions of one channel:
      dL/dbeta  = sum G
      dL/dgamma = sum G * xhat
      Eval mode (mu, var constant):  dx = G * gamma / sqrt(var + eps).
      Training mode, mu and var depend on x too. With dxhat = G * gamma and
      s = 1/sqrt(var + eps), differentiating xhat_i = (x_i - mu) s through mu and var
      (dmu/dx_i = 1/m, dvar/dx_i = 2 (x_i - mu)/m) collapses to
        dx_i = (s / m) * (m * dxhat_i - sum dxhat - xhat_i * sum(dxhat * xhat)).
    """

    layout = None  # "NC" / "NCL" / "NCHW", set by the subclasses

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        check_sizes(type(self).__name__, num_features=num_features)
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1] or None, "
                             f"got {momentum!r}")
        # a Python float: a NumPy float64 scalar would make NumPy update float32 statistics
        # in float64, rounding otherwise than torch and the fused kernel do
        momentum = None if momentum is None else float(momentum)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.params["weight"] = xp.ones(num_features, dtype=xp.float32)
        self.params["bias"] = xp.zeros(num_features, dtype=xp.float32)
        self.buffers["running_mean"] = xp.zeros(num_features, dtype=xp.float32)
        self.buffers["running_var"] = xp.ones(num_features, dtype=xp.float32)
        self.buffers["num_batches_tracked"] = xp.zeros((), dtype=xp.int64)
        self.zero_grad()

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def _check(self, x):
        check_floating(self, x)  # an integer x would round eps to 0 and break eval mode
        for layout in self.layouts[:-1]:
            if x.ndim == len(layout):
                return check_input(self, x, layout, self.num_features)
        check_input(self, x, self.layouts[-1], self.num_features)

    def forward(self, x):
        self._check(x)
        axes = (0,) + tuple(range(2, x.ndim))  # every axis but the channel axis
        shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcasts a per-channel vector over x
        channels, m = x.shape[1], x.size // x.shape[1]
        if self.training:
            if m < 2:  # as torch: one value has variance 0 and xhat would be all zeros
                raise ValueError(f"{self!r}: expected more than one value per channel in "
                                 f"training mode, got input of shape {tuple(x.shape)}")
            mean, var = xp.empty(channels, dtype=x.dtype), xp.empty(channels, dtype=x.dtype)
        else:
            mean = self.buffers["running_mean"].astype(x.dtype)
            var = self.buffers["running_var"].astype(x.dtype)
        inv_std = xp.empty(channels, dtype=x.dtype)
        gamma, beta = self.params["weight"], self.params["bias"]
        xhat = xp.empty_like(x)
        out = xp.empty_like(x, dtype=xp.result_type(x, gamma))
        fused = kernels.enabled(x, gamma, beta)

        def part(c):  # a block of channels: each channel's statistics are its own
            if self.training:
                mean[c] = x[:, c].mean(axis=axes)
            xhat_c = xhat[:, c]
            xp.subtract(x[:, c], mean[c].reshape(shape), out=xhat_c)  # centred once, for
            if self.training:                                          # var and xhat
                var[c] = xp.square(xhat_c).mean(axis=axes)
            inv_std[c] = 1 / xp.sqrt(var[c] + x.dtype.type(self.eps))
            if fused:  # on a GPU, the three lines below as one launch
                kernels.batchnorm_affine(xhat_c, inv_std[c].reshape(shape),
                                         gamma[c].reshape(shape), beta[c].reshape(shape),
                                         out[:, c])
                return
            xhat_c *= inv_std[c].reshape(shape)
            xp.multiply(xhat_c, gamma[c].reshape(shape), out=out[:, c])
            out[:, c] += beta[c].reshape(shape)

        parallel.run(part, channels, x.size)
        if self.training:
            self._update_running(mean, var, m / (m - 1))
        self.cache = (xhat, inv_std, axes, shape, self.training)
        return out

    def _update_running(self, mean, var, correction):
        """running = (1 - momentum) running + momentum stat, for the mean and for the
        unbiased variance var * correction, correction = m / (m - 1)."""
        # in place, as torch: a state_dict() taken earlier (an EMA copy's source) sees it
        self.buffers["num_batches_tracked"] += 1
        running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
        mom = self.momentum
        if mom is not None and kernels.enabled(mean, running_mean, running_var):
            # on a GPU, the loop below as one launch
            kernels.running_average(running_mean, running_var, mean, var, correction, mom)
            return
        if mom is None:  # as in torch: the plain average of every batch so far
            mom = 1 / self.buffers["num_batches_tracked"]  # stays on the device: no sync
        for running, stat in ((running_mean, mean), (running_var, var * correction)):
            running[...] = (1 - mom) * running + mom * stat

    def backward(self, dout):
        xhat, inv_std, axes, shape, batch_stats = self.cache
        check_grad(self, dout, xhat.shape)
        channels, m = dout.shape[1], dout.size // dout.shape[1]
        sum_dout = xp.empty(channels, dtype=dout.dtype)
        sum_dout_xhat = xp.empty(channels, dtype=xp.result_type(dout, xhat))
        # dxhat = G * gamma, so its sums are gamma times those of G: per channel, no pass
        scale = self.params["weight"] * inv_std  # gamma * s
        dx = xp.empty_like(dout, dtype=xp.result_type(dout, scale))

        fused = batch_stats and kernels.enabled(dout, xhat, scale)

        def part(c):  # a block of channels
            dout_c, xhat_c, dx_c = dout[:, c], xhat[:, c], dx[:, c]
            sum_dout[c] = dout_c.sum(axis=axes)
            sum_dout_xhat[c] = (dout_c * xhat_c).sum(axis=axes)
            if fused:  # on a GPU, the lines below as one launch
                kernels.batchnorm_input_grad(dout_c, xhat_c, scale[c].reshape(shape),
                                             sum_dout[c].reshape(shape),
                                             sum_dout_xhat[c].reshape(shape), m, dx_c)
                return
            xp.multiply(dout_c, scale[c].reshape(shape), out=dx_c)
            if batch_stats:
                # dx = (s/m) (m dxhat - sum dxhat - xhat sum(dxhat xhat))
                #    = (gamma s) G - xhat * (gamma s sum(G xhat) / m) - gamma s sum(G) / m
                correction = xhat_c * (scale[c] * sum_dout_xhat[c] / m).reshape(shape)
                correction += (scale[c] * sum_dout[c] / m).reshape(shape)
                dx_c -= correction

        parallel.run(part, channels, dout.size)
        if self.requires_grad:
            self.accumulate_grad("weight", sum_dout_xhat)
            self.accumulate_grad("bias", sum_dout)
        return dx


class BatchNorm1d(_BatchNorm):
    """Batch norm for (N, C) or (N, C, L) inputs."""

    layouts = ("NC", "NCL")


class BatchNorm2d(_BatchNorm):
    """Batch norm for (N, C, H, W) inputs, statistics over N, H and W."""

    layouts = ("NCHW",)
