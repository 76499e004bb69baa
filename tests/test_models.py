"""tinygan.models: every family builds, has the documented shapes, and fails clearly.

Shapes are checked on the three kinds of data tinygan trains on: MNIST-sized images
(1, 28, 28), CIFAR-sized images (3, 32, 32) and 2-D points (2,). Batches are tiny
(N = 3) because only shapes and ranges matter here, not learning.
"""

import numpy as np
import pytest
from helpers import host_rng, randn

from tinygan import backend, models, nn, optim
from tinygan.gradcheck import gradcheck

N, K = 3, 10  # batch size, number of classes
SHAPES = [(1, 28, 28), (3, 32, 32), (2,)]
CASES = [(name, shape) for name in models.FAMILIES for shape in SHAPES
         if not (name == "dcgan" and shape == (2,))]  # dcgan is convolutional only


def labels(n=N, k=K):
    return backend.to_device(np.arange(n) % k)


def last_layer(network):
    """The final layer of D's Sequential (inside the conditional wrapper for cgan)."""
    net = network.net if isinstance(network, models.Conditional) else network
    assert isinstance(net, nn.Sequential)
    return net[len(net) - 1]


def last_layer_of_generator(gan):
    """G's last computing layer (Reshape only rearranges the output of the MLP)."""
    net = gan.generator.net if gan.conditional_g else gan.generator
    layers = [m for _, m in net.modules() if not isinstance(m, (nn.Sequential, nn.Reshape))]
    return layers[-1]


def layer_types(network):
    return [type(m) for _, m in network.modules()]


@pytest.mark.parametrize("name, shape", CASES)
def test_generator_and_discriminator_shapes(name, shape):
    gan = models.build(name, shape, num_classes=K)
    z = backend.rng().standard_normal((N, gan.z_dim), dtype=np.float32)
    y = labels() if gan.conditional_g else None
    x = gan.generate(z, y)
    assert x.shape == (N, *shape)
    assert x.dtype == np.float32
    if len(shape) == 3:  # images: tanh output, the range of the scaled data
        assert isinstance(last_layer_of_generator(gan), nn.Tanh)
        assert float(abs(x).max()) <= 1.0
    else:  # points: linear output, since the grid reaches +-4
        assert isinstance(last_layer_of_generator(gan), nn.Dense)
    scores = gan.discriminate(x, labels() if gan.conditional_d else None)
    assert scores.shape == ((N, 1 + K) if name == "acgan" else (N, 1))
    # every discriminator ends in a Dense: raw logits, the sigmoid lives in the loss
    assert isinstance(last_layer(gan.discriminator), nn.Dense)


@pytest.mark.parametrize("name, shape", CASES)
def test_family_fields(name, shape):
    gan = models.build(name, shape, num_classes=K)
    assert gan.name == name and gan.data_shape == shape
    assert gan.z_dim == (2 if shape == (2,) else 100)
    assert gan.conditional_g == (name in ("cgan", "acgan"))
    assert gan.conditional_d == (name == "cgan")
    assert gan.class_head == (name == "acgan")
    assert gan.objective == ("wasserstein" if name == "wgan" else "bce")
    assert (gan.n_critic, gan.clip) == ((5, 0.01) if name == "wgan" else (1, 0.0))
    assert gan.options == {"num_classes": K, "z_dim": gan.z_dim, "g_dropout": 0.0}
    convolutional = name in ("dcgan", "acgan", "wgan") and shape != (2,)
    assert (nn.Conv2d in layer_types(gan.discriminator)) == convolutional
    assert (nn.ConvTranspose2d in layer_types(gan.generator)) == convolutional


def test_z_dim_override():
    gan = models.build("cgan", (2,), num_classes=8, z_dim=5)
    z = backend.rng().standard_normal((N, 5), dtype=np.float32)
    assert gan.generate(z, labels(k=8)).shape == (N, 2)


def test_acgan_discriminator_ends_in_logits_for_both_heads():
    """One Dense with 1 + K outputs: no Sigmoid or softmax layer anywhere in D."""
    gan = models.build("acgan", (1, 28, 28), num_classes=K)
    d = gan.discriminator
    assert isinstance(d[len(d) - 1], nn.Dense) and d[len(d) - 1].out_features == 1 + K
    assert nn.Sigmoid not in layer_types(d)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["gan", "cgan", "acgan"])
def test_g_dropout_inserts_dropout_in_generator_only(name, shape):
    plain = models.build(name, shape, num_classes=K)
    dropped = models.build(name, shape, num_classes=K, g_dropout=0.3)
    assert nn.Dropout not in layer_types(plain.generator)
    ps = [m.p for _, m in dropped.generator.modules() if isinstance(m, nn.Dropout)]
    assert ps and all(p == 0.3 for p in ps)
    assert nn.Dropout not in layer_types(dropped.discriminator)
    assert dropped.options["g_dropout"] == 0.3


def test_dcgan_dropout_after_each_upsampling_block():
    gan = models.build("dcgan", (3, 32, 32), g_dropout=0.5)
    # three 2x upsamplings from 4x4; dropout follows the two inner ConvT -> BN -> ReLU blocks
    assert layer_types(gan.generator).count(nn.Dropout) == 2


def test_dcgan_init_follows_radford_et_al():
    """Every conv, transposed conv and dense weight ~ N(0, 0.02), biases 0, BatchNorm's
    gamma ~ N(1, 0.02) and beta 0. The layers hold n = 64 to 627,200 values; the sample
    mean of n draws has standard error 0.02 / sqrt(n) and the sample std a relative one of
    about 1 / sqrt(2n), so each is checked to within 5 of its standard errors (the default
    initialisations, e.g. U(-1/4, 1/4) with std 0.14 in D's first conv, are far outside)."""
    gan = models.build("dcgan", (1, 28, 28))
    seen = set()
    for network in (gan.generator, gan.discriminator):
        for _, layer in network.modules():
            if isinstance(layer, (nn.Dense, nn.Conv2d, nn.ConvTranspose2d)):
                mean = 0.0
            elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mean = 1.0
            else:
                continue
            seen.add(type(layer))
            w = backend.to_host(layer.params["weight"]).astype(np.float64).ravel()
            n = w.size
            assert abs(w.mean() - mean) < 5 * 0.02 / np.sqrt(n), (layer, w.mean())
            assert abs(w.std() / 0.02 - 1) < 5 / np.sqrt(2 * n), (layer, w.std())
            assert not np.any(backend.to_host(layer.params["bias"])), layer
    assert seen == {nn.Dense, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d}


def test_learning_rates():
    for name in ("gan", "cgan", "acgan"):
        assert models.build(name, (2,)).lr == models.build(name, (1, 28, 28)).lr == 2e-4
    wgan = models.build("wgan", (2,))
    assert (wgan.optimizer, wgan.lr) == ("rmsprop", 5e-4)
    assert models.build("wgan", (1, 28, 28)).lr == 5e-5


@pytest.mark.parametrize("name, shape, num_classes, match", [
    ("vae", (2,), 10, "unknown model 'vae'; choose one of: gan, dcgan, cgan, acgan, wgan"),
    ("dcgan", (2,), 10, "dcgan is convolutional and needs images"),
    ("dcgan", (1, 30, 30), 10, "image size must be 28 or 32, got 30"),
    ("wgan", (1, 64, 64), 10, "image size must be 28 or 32, got 64"),
    ("dcgan", (1, 28, 32), 10, "square images"),
    ("dcgan", (28, 28), 10, r"images of shape \(C, H, W\)"),
    ("cgan", (2,), 0, "cgan needs labelled data with at least 2 classes"),
    ("acgan", (1, 28, 28), 1, "acgan needs labelled data with at least 2 classes"),
])
def test_bad_arguments_raise_one_clear_line(name, shape, num_classes, match):
    with pytest.raises(ValueError, match=match) as info:
        models.build(name, shape, num_classes=num_classes)
    assert "\n" not in str(info.value)


# -- the conditional wrappers' backward (split of a concat, product rule) -------------------


class WithLabels(nn.Module):
    """Feeds fixed labels alongside x, so gradcheck can treat (x, y) -> out as x -> out."""

    def __init__(self, wrapped, y):
        super().__init__()
        self.wrapped, self.y = wrapped, y

    def children(self):
        return [("wrapped", self.wrapped)]

    def forward(self, x):
        return self.wrapped.forward((x, self.y))

    def backward(self, dout):
        return self.wrapped.backward(dout)


def test_conditional_generator_gradients():
    rng = host_rng(1)
    # z_dim 3 and embed_dim 2: the net sees 5 inputs
    g = models.Conditional(nn.Sequential(nn.Dense(3 + 2, 4), nn.Tanh()), 4, 2)
    errors = gradcheck(WithLabels(g, backend.to_device(np.array([0, 3, 1, 3]))), randn(rng, 4, 3))
    assert set(errors) == {"input", "wrapped.embed.weight", "wrapped.net.0.weight",
                           "wrapped.net.0.bias"}
    assert max(errors.values()) < 1e-6, errors


def test_conditional_discriminator_gradients():
    rng = host_rng(2)
    d = models.Conditional(nn.Sequential(nn.Dense(2 * 3 * 3 + 2, 1)), 3, 2)
    errors = gradcheck(WithLabels(d, backend.to_device(np.array([2, 0, 1]))),
                       randn(rng, 3, 2, 3, 3))
    assert set(errors) == {"input", "wrapped.embed.weight", "wrapped.net.0.weight",
                           "wrapped.net.0.bias"}
    assert max(errors.values()) < 1e-6, errors


def test_conditional_networks_name_inputs_that_are_not_a_matching_pair():
    """Without the pair, x was unpacked into rows (N = 2: rows 0 and 1 as x and y); labels
    of another length failed inside NumPy's concatenate, naming neither."""
    g = models.build("cgan", (2,), num_classes=3).generator
    z = backend.to_device(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match=r"^Conditional: expected the pair \(x, y\).*ndarray"):
        g.forward(z)
    with pytest.raises(ValueError, match=r"^Conditional: expected one label per row of x "
                                         r"\(2\), got labels of shape \(3,\)$"):
        g.forward((z, backend.to_device(np.zeros(3, np.int64))))
    with pytest.raises(TypeError, match=r"^Conditional: expected an array of labels for y, "
                                        r"got list$"):
        g.forward((z, [0, 1]))


def test_conditional_discriminator_input_gradient_has_image_shape():
    gan = models.build("cgan", (1, 28, 28), num_classes=K)
    x = randn(host_rng(3), N, 1, 28, 28).astype(np.float32)
    out = gan.discriminate(x, labels())
    dx = gan.discriminator.backward(backend.xp.ones_like(out))
    assert dx.shape == x.shape
    # the label's share of the gradient went to the embedding, not into dx
    assert float(abs(gan.discriminator.embed.grads["weight"]).sum()) > 0


def layer_names(net):
    return [type(layer).__name__ for layer in net.layers]


def test_dcgan_is_the_architecture_the_benchmarks_compare():
    """Issue 4's DCGAN, layer by layer: G z100 -> Dense 128*7*7 -> BN -> ReLU -> ConvT(128,
    64,4,2,1) -> BN -> ReLU -> ConvT(64,1,4,2,1) -> tanh; D Conv(1,64,4,2,1) -> LeakyReLU(0.2)
    -> Conv(64,128,4,2,1) -> BN -> LeakyReLU(0.2) -> Dense(6272, 1). The torch peer of the
    benchmarks builds the same, so a width changed here would make the comparison unfair."""
    gan = models.build("dcgan", (1, 28, 28))
    g, d = gan.generator, gan.discriminator
    assert layer_names(g) == ["Dense", "BatchNorm1d", "ReLU", "Reshape", "ConvTranspose2d",
                              "BatchNorm2d", "ReLU", "ConvTranspose2d", "Tanh"]
    assert layer_names(d) == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU",
                              "Flatten", "Dense"]
    shapes = {k: tuple(v.shape) for k, v in g.state_dict().items() if k.endswith("weight")}
    assert shapes == {"0.weight": (6272, 100), "1.weight": (6272,), "4.weight": (128, 64, 4, 4),
                      "5.weight": (64,), "7.weight": (64, 1, 4, 4)}
    shapes = {k: tuple(v.shape) for k, v in d.state_dict().items() if k.endswith("weight")}
    assert shapes == {"0.weight": (64, 1, 4, 4), "2.weight": (128, 64, 4, 4), "3.weight": (128,),
                      "6.weight": (1, 6272)}
    for conv in (g[4], g[7], d[0], d[2]):
        assert (conv.stride, conv.padding) == ((2, 2), (1, 1))
    assert [m.negative_slope for m in d.layers if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2]


def test_toy_mlps_have_an_activation_after_every_hidden_layer():
    gan = models.build("gan", (2,))
    assert layer_names(gan.generator) == ["Dense", "BatchNorm1d", "ReLU"] * 4 + ["Dense"]
    assert layer_names(gan.discriminator) == ["Dense", "LeakyReLU"] * 3 + ["Dense"]
    assert {m.negative_slope for m in gan.discriminator.layers
            if isinstance(m, nn.LeakyReLU)} == {0.2}


@pytest.mark.parametrize("name, kind", [("gan", optim.Adam), ("dcgan", optim.Adam),
                                        ("wgan", optim.RMSprop)])
def test_each_family_gets_its_papers_optimizer(name, kind):
    """Adam(beta1 = 0.5) for the GANs (Radford et al.), RMSprop for the WGAN (Arjovsky)."""
    gan = models.build(name, (1, 28, 28))
    for opt in gan.make_optimizers():
        assert type(opt) is kind and opt.lr == gan.lr
        if kind is optim.Adam:
            assert opt.betas == (0.5, 0.999)
