"""The whole machine learns: the vanilla GAN finds all eight modes of the ring.

The 8-Gaussian ring (std 0.01, centres on the unit circle, neighbours 0.77 apart) is the
standard mode-collapse benchmark: a GAN that settles on a few modes still fools its
discriminator locally. Passing means the hand-written backward passes, the losses, the
frozen-D generator step and Adam all work together, not merely one at a time.

Criterion (fixed before tuning anything): of 2000 samples from the trained generator,
  - a mode is *found* when at least 1% of the samples (20, an eighth of its fair 12.5%)
    lie within 0.1 of its centre (10 standard deviations; no sample can be near two);
  - all 8 modes must be found, and at least half of all samples must lie within 0.1 of
    some centre (so the samples are on the modes, not smeared between them).
Configuration: the defaults of ``models.build("gan", (2,))`` and of ``tinygan train`` on
toy data (10,000 points, batch 256, Adam lr 2e-4, betas (0.5, 0.999)), 2000 steps, seed 0,
at a constant learning rate (no --lr-decay: the test does not lean on the schedule).
With the BatchNorm generator, seeds 0-7 all passed during development, the weakest at
4.6% on its thinnest mode and 74% on modes (both seed 1); seed 0 has 9.0% and 86%.
The earlier generator without BatchNorm passed seeds 0-11 too, but more narrowly (seed 8:
1.5% on its thinnest mode; seed 7: 68% on modes).
"""

import numpy as np
import pytest

from tinygan import backend, data, models
from tinygan.train import Trainer

STEPS, BATCH, SAMPLES = 2000, 256, 2000
RADIUS, MIN_SHARE, MIN_ON_MODES = 0.1, 0.01, 0.5


def train_on_ring(seed, steps=STEPS):
    """Train the default vanilla GAN on 10,000 ring points; returns 2000 samples (host)."""
    backend.seed(seed)
    points, _ = data.TOY_DATASETS["ring"].sample(10_000, np.random.default_rng([seed, 1]))
    gan = models.build("gan", (2,))
    trainer = Trainer(gan)
    step, epoch = 0, 0
    while step < steps:
        for real, _ in data.batches(points, None, BATCH, np.random.default_rng([seed, 3, epoch])):
            trainer.step(real)
            step += 1
            if step == steps:
                break
        epoch += 1
    gan.generator.eval()
    z = np.random.default_rng([seed, 2]).standard_normal((SAMPLES, gan.z_dim))
    return backend.to_host(gan.generate(backend.to_device(z.astype(np.float32))))


def mode_coverage(samples):
    """(share of samples within RADIUS of each centre (8,), share within RADIUS of any)."""
    centres = data.TOY_DATASETS["ring"].centres
    dist = np.linalg.norm(samples[:, None, :] - centres[None], axis=2)
    near = dist.min(axis=1) < RADIUS
    counts = np.bincount(dist.argmin(axis=1)[near], minlength=len(centres))
    return counts / len(samples), near.mean()


def test_mode_coverage_counts_what_it_says():
    centres = data.TOY_DATASETS["ring"].centres
    samples = np.concatenate([centres[:3] + 0.05, centres[:1] + 0.5])  # 3 near, 1 far away
    shares, on_modes = mode_coverage(samples)
    np.testing.assert_allclose(shares, [0.25, 0.25, 0.25, 0, 0, 0, 0, 0])
    assert on_modes == 0.75


@pytest.mark.slow
def test_vanilla_gan_finds_all_eight_ring_modes():
    shares, on_modes = mode_coverage(train_on_ring(seed=0))
    report = f"share per mode {np.round(shares, 3).tolist()}, {on_modes:.0%} on modes"
    assert (shares >= MIN_SHARE).sum() == 8, report
    assert on_modes >= MIN_ON_MODES, report
