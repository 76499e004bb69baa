"""The from-scratch NumPy peer of the benchmarks (benchmarks/scratch_peer.py) computes the
same convolutions as tinygan's layers, forward and every gradient, so that timing one
against the other compares two correct programs. float64, on the host: the peer is NumPy
code, tinygan's layers run on the backend under test."""

import numpy as np
import pytest
from helpers import benchmarks_module, host_rng

from tinygan import backend, nn

# (n, c_in, c_out, size, kernel, stride, padding)
CONFIGS = [(2, 3, 4, 8, 4, 2, 1), (3, 2, 5, 7, 3, 2, 1), (1, 3, 2, 6, 3, 1, 0),
           (2, 1, 3, 9, 5, 3, 2)]


def run_tinygan(layer, weight, bias, x, dout):
    layer.params["weight"], layer.params["bias"] = (backend.to_device(weight),
                                                    backend.to_device(bias))
    layer.zero_grad()
    out = backend.to_host(layer.forward(backend.to_device(x)))
    dx = backend.to_host(layer.backward(backend.to_device(dout)))
    return out, dx, backend.to_host(layer.grads["weight"]), backend.to_host(layer.grads["bias"])


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
@pytest.mark.parametrize("config", CONFIGS)
def test_the_peer_computes_what_tinygan_computes(config, transposed):
    scratch_peer = benchmarks_module("scratch_peer")
    n, cin, cout, size, k, s, p = config
    rng = host_rng(sum(config))
    name = "ConvTranspose2d" if transposed else "Conv2d"
    shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    weight, bias = rng.standard_normal(shape), rng.standard_normal(cout)
    x = rng.standard_normal((n, cin, size, size))
    peer = getattr(scratch_peer, name)(weight, bias, s, p)
    out = peer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = peer.backward(dout)
    expected = run_tinygan(getattr(nn, name)(cin, cout, k, s, p), weight, bias, x, dout)
    for got, want, what in zip((out, dx, peer.dweight, peer.dbias), expected,
                               ("output", "dx", "dweight", "dbias")):
        assert got.shape == want.shape, what
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=what)
