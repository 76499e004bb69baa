"""The PyTorch peers: the same networks as tinygan.models.build("dcgan"/"gan", (1, 28, 28))
and a hand-written training step that does what tinygan.train.Trainer.step does.

Imported only by benchmark workers that measure PyTorch; tinygan never imports torch.
"""

import torch
from torch import nn


def dcgan(z_dim=100):
    """G: z -> Dense 128*7*7 -> BN -> ReLU -> ConvT(128,64,4,2,1) -> BN -> ReLU ->
    ConvT(64,1,4,2,1) -> tanh;  D: Conv(1,64,4,2,1) -> LeakyReLU -> Conv(64,128,4,2,1) ->
    BN -> LeakyReLU -> Dense(6272, 1)."""
    g = nn.Sequential(
        nn.Linear(z_dim, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(),
        nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 1),
    )
    return g, d


def mlp_gan(z_dim=100):
    """G: z -> 256 -> 512 -> 1024 -> 784 -> tanh, D: 784 -> 512 -> 256 -> 1, LeakyReLU(0.2)."""
    def leaky():
        return nn.LeakyReLU(0.2)

    g = nn.Sequential(
        nn.Linear(z_dim, 256), leaky(), nn.Linear(256, 512), leaky(),
        nn.Linear(512, 1024), leaky(), nn.Linear(1024, 784), nn.Tanh(),
        nn.Unflatten(1, (1, 28, 28)),
    )
    d = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), leaky(), nn.Linear(512, 256), leaky(),
                      nn.Linear(256, 1))
    return g, d


class TorchTrainer:
    """One D update on a real and a fake batch, then one G update through a frozen D,
    Adam(lr 2e-4, betas (0.5, 0.999)) and BCE on logits: tinygan's Trainer.step."""

    def __init__(self, model, device="cpu", z_dim=100):
        g, d = {"dcgan": dcgan, "gan": mlp_gan}[model](z_dim)
        self.g, self.d = g.to(device), d.to(device)
        self.z_dim, self.device = z_dim, device
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.bce = nn.BCEWithLogitsLoss()

    def step(self, real):
        n = real.shape[0]
        with torch.no_grad():  # tinygan's D step runs G forward only
            fake = self.g(torch.randn(n, self.z_dim, device=self.device))
        self.d_opt.zero_grad()
        out = self.d(real)
        loss_real = self.bce(out, torch.ones_like(out))
        loss_real.backward()
        out = self.d(fake)
        loss_fake = self.bce(out, torch.zeros_like(out))
        loss_fake.backward()
        self.d_opt.step()

        self.g_opt.zero_grad()
        fake = self.g(torch.randn(n, self.z_dim, device=self.device))
        self.d.requires_grad_(False)  # frozen: input gradients only
        out = self.d(fake)
        loss_g = self.bce(out, torch.ones_like(out))
        loss_g.backward()
        self.d.requires_grad_(True)
        self.g_opt.step()
        return {"d_loss": (loss_real + loss_fake).detach(), "g_loss": loss_g.detach()}
