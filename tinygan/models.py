"""Generator / discriminator pairs for the five GAN families.

``build(name, data_shape, num_classes)`` returns a ``GAN``: the two networks plus
everything that makes the family what it is — its objective ("bce" or
"wasserstein"), whether G and D see the class label, whether D has a class head,
and its optimizers and schedule. The one training loop in ``tinygan.train`` reads
these fields; nothing else differs between families.

Shapes: images are (N, C, H, W) in [-1, 1]; 2-D points are (N, 2). Every
discriminator returns raw scores (logits): the sigmoid lives inside the BCE loss,
and the WGAN critic has none at all.
"""

import math
from dataclasses import dataclass, field

from tinygan import nn, optim
from tinygan.backend import xp
from tinygan.nn import init
from tinygan.nn.module import check_array, check_sizes, is_int

FAMILIES = ("gan", "dcgan", "cgan", "acgan", "wgan")


# --- conditioning: networks that take (input, label) --------------------------------


class Conditional(nn.Module):
    """net([flatten(x), e(y)]): the label y, through an Embedding e(y), joins the input x.

    As a generator, G(z, y) = net([z, e(y)]) (Mirza & Osindero 2014 for CGAN; Odena et
    al. 2016 likewise feed AC-GAN's G the noise and the class side by side); as a
    discriminator, D(x, y) = net([flatten(x), e(y)]). h = [flatten(x), e(y)] has shape
    (N, D + embed_dim), with D = x's size per sample (z_dim for the noise).
    Backward: the gradient of a concatenation is a split,
      dL/dx = dL/dh[:, :D].reshape(x.shape),   dL/de = dL/dh[:, D:]
    dL/de goes on into the Embedding (which has no input gradient: y is an integer),
    and backward returns dL/dx.
    """

    def __init__(self, net, num_classes, embed_dim):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = net

    def children(self):
        return [("embed", self.embed), ("net", self.net)]

    def forward(self, inputs):
        if not (isinstance(inputs, (tuple, list)) and len(inputs) == 2):
            raise TypeError(f"Conditional: expected the pair (x, y), an input batch and its "
                            f"labels, got {type(inputs).__name__}")
        x, y = inputs
        check_array("Conditional", x, "an array for x")
        check_array("Conditional", y, "an array of labels for y")
        if tuple(y.shape[:1]) != tuple(x.shape[:1]):  # concatenate would name neither
            raise ValueError(f"Conditional: expected one label per row of x ({x.shape[0]}), "
                             f"got labels of shape {tuple(y.shape)}")
        self.cache = x.shape
        flat = x.reshape(x.shape[0], -1)
        return self.net.forward(xp.concatenate([flat, self.embed.forward(y)], axis=1))

    def backward(self, dout):
        shape = self.cache
        dh = self.net.backward(dout)
        width = math.prod(shape[1:])
        self.embed.backward(dh[:, width:])
        return dh[:, :width].reshape(shape)


# --- the family description the trainer reads ------------------------------------------


@dataclass
class GAN:
    name: str
    generator: nn.Module
    discriminator: nn.Module
    data_shape: tuple  # one sample: (C, H, W) or (2,)
    z_dim: int
    num_classes: int = 0
    conditional_g: bool = False  # G takes (z, y)
    conditional_d: bool = False  # D takes (x, y)
    class_head: bool = False  # D outputs [real/fake logit, K class logits] (AC-GAN)
    # AC-GAN's D also fits its class head to fakes with the labels they were drawn for, as in
    # Odena et al.'s L_C. Off by default: D then learns that a fake "6" drawn for label 4 is a
    # 4, and G keeps drawing 6s in row 4. A class head of real images only rejects that.
    d_class_loss_on_fake: bool = False
    objective: str = "bce"  # "bce" or "wasserstein"
    optimizer: str = "adam"
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    n_critic: int = 1  # D steps per G step
    clip: float = 0.0  # WGAN weight clipping (0: off)
    options: dict = field(default_factory=dict)  # builder arguments, for checkpoints

    def generate(self, z, y=None):
        return self.generator.forward((z, y) if self.conditional_g else z)

    def discriminate(self, x, y=None):
        return self.discriminator.forward((x, y) if self.conditional_d else x)

    def make_optimizers(self, lr=None):
        lr = self.lr if lr is None else lr  # not `lr or`: an explicit 0 must fail, not vanish
        if self.optimizer == "rmsprop":
            return optim.RMSprop(self.generator, lr=lr), optim.RMSprop(self.discriminator, lr=lr)
        return (optim.Adam(self.generator, lr=lr, betas=self.betas),
                optim.Adam(self.discriminator, lr=lr, betas=self.betas))


# --- building blocks -------------------------------------------------------------------


def mlp(sizes, activation, out_activation=None, dropout=0.0, batchnorm=False):
    """Dense layers through ``sizes``, ``activation`` (after BatchNorm if asked) between them."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Dense(a, b))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
    if out_activation is not None:
        layers.append(out_activation())
    return layers


def leaky():
    return nn.LeakyReLU(0.2)


def dcgan_init(module):
    """Radford et al.: every weight ~ N(0, 0.02^2), biases 0, BatchNorm gamma ~ N(1, 0.02^2)
    (standard deviation 0.02, in init.normal's N(mean, std^2) notation)."""
    for _, layer in module.modules():
        if isinstance(layer, (nn.Dense, nn.Conv2d, nn.ConvTranspose2d)):
            w = layer.params["weight"]
            layer.params["weight"] = init.normal(w.shape, 0.0, 0.02)
            if "bias" in layer.params:
                layer.params["bias"] = xp.zeros_like(layer.params["bias"])
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layer.params["weight"] = init.normal(layer.params["weight"].shape, 1.0, 0.02)
        layer.zero_grad()
    return module


def dcgan_networks(data_shape, z_dim, g_in=None, d_out=1, g_dropout=0.0):
    """DCGAN for 28x28 (two 2x upsamplings from 7x7) or 32x32 (three from 4x4) images.

    G: z -> Dense -> BN -> ReLU -> [ConvT(k4, s2, p1) -> BN -> ReLU]* -> ConvT -> tanh
    D: Conv(k4, s2, p1) -> LeakyReLU -> [Conv -> BN -> LeakyReLU]* -> Flatten -> Dense
    Each ConvT doubles H and W ((H-1)*2 - 2 + 4 = 2H); each Conv halves them.
    """
    if len(data_shape) != 3:
        raise ValueError(f"dcgan: needs images of shape (C, H, W), got {data_shape}")
    channels, size, width = data_shape
    if size != width:
        raise ValueError(f"dcgan: needs square images, got {size}x{width}")
    if size not in (28, 32):
        raise ValueError(f"dcgan: image size must be 28 or 32, got {size}")
    start = 7 if size == 28 else 4
    widths = [128, 64] if size == 28 else [256, 128, 64]  # G's feature maps, coarse to fine
    base = widths[0] * start * start
    g = [nn.Dense(g_in or z_dim, base), nn.BatchNorm1d(base), nn.ReLU(),
         nn.Reshape(widths[0], start, start)]
    for a, b in zip(widths[:-1], widths[1:]):
        g += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
        if g_dropout:
            g.append(nn.Dropout(g_dropout))
    g += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
    d_widths = widths[::-1]  # D mirrors G: fine to coarse
    d = [nn.Conv2d(channels, d_widths[0], 4, 2, 1), leaky()]
    for a, b in zip(d_widths[:-1], d_widths[1:]):
        d += [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), leaky()]
    d += [nn.Flatten(), nn.Dense(d_widths[-1] * start * start, d_out)]
    return dcgan_init(nn.Sequential(*g)), dcgan_init(nn.Sequential(*d))


def mlp_networks(data_shape, z_dim, g_in=None, d_in=None, d_out=1, g_dropout=0.0):
    """Goodfellow et al. 2014 with multilayer perceptrons, LeakyReLU(0.2) inside.

    Images: G z -> 256 -> 512 -> 1024 -> C*H*W -> tanh -> reshape; D C*H*W -> 512 -> 256
    -> logit (two hidden layers, narrowing as G's widen).
    2-D points, after PacGAN's toy networks (narrower, for speed): G has four 128-wide
    hidden layers with BatchNorm and ReLU, D three 128-wide ones with LeakyReLU, and G's
    output is linear because the toy mixtures reach +-4 (the grid), beyond tanh. The
    BatchNorm matters: without it (LeakyReLU instead), seeds 0 and 1 on the ring kept 4.5
    of 8 modes with 38% of samples within 3 sigma of a centre; with it, 8 and 84%, both
    after the default 3,120 steps.
    """
    width = math.prod(data_shape)
    if len(data_shape) == 1:
        g = nn.Sequential(*mlp([g_in or z_dim, *[128] * 4, width], nn.ReLU,
                               dropout=g_dropout, batchnorm=True))
        d = nn.Sequential(*mlp([d_in or width, *[128] * 3, d_out], leaky))
        return g, d
    g = nn.Sequential(*mlp([g_in or z_dim, 256, 512, 1024, width], leaky, nn.Tanh, g_dropout),
                      nn.Reshape(*data_shape))
    d_layers = mlp([d_in or width, 512, 256, d_out], leaky)
    d = nn.Sequential(*([] if d_in else [nn.Flatten()]), *d_layers)
    return g, d


# --- the five families ----------------------------------------------------------------


def build(name, data_shape, num_classes=10, z_dim=None, g_dropout=0.0):
    """Build family ``name`` for samples of shape ``data_shape`` ((C, H, W) or (2,))."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(FAMILIES)}")
    data_shape = tuple(data_shape)
    points = len(data_shape) == 1
    z_dim = (2 if points else 100) if z_dim is None else z_dim  # a 0 is refused, not replaced
    options = {"num_classes": num_classes, "z_dim": z_dim, "g_dropout": g_dropout}
    common = dict(name=name, data_shape=data_shape, z_dim=z_dim, options=options)
    if name in ("cgan", "acgan") and not (is_int(num_classes) and num_classes >= 2):
        raise ValueError(f"{name} needs labelled data with at least 2 classes, "
                         f"got num_classes={num_classes!r}")
    check_sizes(f"build({name!r})", num_classes=num_classes, z_dim=z_dim)
    if name == "dcgan" and points:
        raise ValueError("dcgan is convolutional and needs images; for 2-D data use gan, "
                         "cgan, acgan or wgan")
    convolutional = name in ("dcgan", "acgan", "wgan") and not points

    if name == "gan" or (name == "wgan" and points):
        g, d = mlp_networks(data_shape, z_dim, g_dropout=g_dropout)
    elif name in ("dcgan", "wgan"):
        g, d = dcgan_networks(data_shape, z_dim, g_dropout=g_dropout)
    elif name == "cgan":
        embed = num_classes
        g_net, d_net = mlp_networks(data_shape, z_dim, g_in=z_dim + embed,
                                    d_in=math.prod(data_shape) + embed, g_dropout=g_dropout)
        g = Conditional(g_net, num_classes, embed)
        d = Conditional(d_net, num_classes, embed)
    else:  # acgan: G([z, e(y)]); D's last Dense has 1 + K outputs: the two heads side by side
        # (G(z * e(y)), as some ports do, conditions only the per-dimension scale of z, since
        # z is symmetric: after 30 MNIST epochs 71% of its samples were of their class; with
        # [z, e(y)] and D's class head fitted to real images only, 99.9%)
        make = dcgan_networks if convolutional else mlp_networks
        g_net, d = make(data_shape, z_dim, g_in=z_dim + num_classes, d_out=1 + num_classes,
                        g_dropout=g_dropout)
        g = Conditional(g_net, num_classes, num_classes)

    gan = GAN(generator=g, discriminator=d, num_classes=num_classes, **common)
    gan.conditional_g = name in ("cgan", "acgan")
    gan.conditional_d = name == "cgan"
    gan.class_head = name == "acgan"
    # 2-D points keep Adam's lr 2e-4: at 1e-3 the toy GAN drops and re-finds ring modes for
    # thousands of steps; at 2e-4 it holds all eight from ~1000 steps on (test_learning.py)
    if name == "wgan":
        # Arjovsky et al.: RMSprop, lr 5e-5, clip 0.01, five critic steps per G step
        gan.objective, gan.optimizer, gan.lr = "wasserstein", "rmsprop", 5e-5
        gan.n_critic, gan.clip = 5, 0.01
        if points:
            gan.lr = 5e-4  # the toy critic is tiny; 5e-5 needs ~10x more steps
    return gan
