"""The vanilla GAN (Goodfellow et al. 2014) on the 8-Gaussian ring, the whole loop on one page.

    python demos/gan_ring.py                      # 2000 steps, a few seconds to a minute
    python demos/gan_ring.py --steps 4000 --out runs/ring

The ring is the classic test of mode collapse: eight tight clusters (std 0.01) on the unit
circle. A generator that found only some of them would still fool a weak discriminator
locally, so we count at the end how many of the eight modes the samples actually reach.
Writes OUT/ring.png: generated points (orange) over the real data (blue).
"""

import argparse
import os

import numpy as np

from tinygan import backend, data, files, metrics, models, plots
from tinygan.cli import Parser, non_negative_int, one_line_errors, positive_int
from tinygan.train import Trainer, decay_scale

parser = Parser(description="vanilla GAN on the 8-Gaussian ring",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--steps", type=positive_int, default=2000, help="training steps")
parser.add_argument("--batch-size", type=positive_int, default=256, help="points per batch")
parser.add_argument("--seed", type=non_negative_int, default=0, help="fixes every random draw")
parser.add_argument("--out", default="runs/demo-gan-ring", help="folder for the picture")
args = parser.parse_args()
one_line_errors(parser.prog)  # a bad path or Ctrl-C: one line, as `tinygan` says it
files.check_writable(args.out, "--out folder")  # now, not after the training

# One seed fixes everything random: the initial weights, the noise z, the shuffling.
backend.seed(args.seed)

# A fixed "dataset" of 10,000 points, batched and shuffled like images would be.
ring = data.TOY_DATASETS["ring"]
points, _ = ring.sample(10_000, np.random.default_rng(args.seed))

# G: z (2-D noise) -> MLP with BatchNorm -> a point; D: a point -> MLP -> one raw score
# (a logit). The sigmoid is inside the BCE loss, so D itself ends in a plain Dense layer.
gan = models.build("gan", data_shape=(2,))
trainer = Trainer(gan)  # Adam for both networks, the family's learning rate
print(gan.generator, gan.discriminator, sep="\n")

step = 0
while step < args.steps:
    # data.batches gives one epoch in a fresh random order; loop over epochs until done
    for real, _ in data.batches(points, None, args.batch_size):
        # the learning rate falls linearly towards 0 over the second half, so the samples
        # settle onto the modes instead of jittering around them
        trainer.scale_lr(decay_scale(step, args.steps, 0.5))
        # one D update on a real and a fake batch, then one G update through a frozen D
        losses = trainer.step(real)
        step += 1
        if step % 250 == 0:  # losses are device scalars; float() only when printing
            print(f"step {step}: " + ", ".join(f"{k} {float(v):.3f}" for k, v in losses.items()))
        if step == args.steps:
            break

# Sample in eval mode: G's BatchNorm then uses its running statistics, so a sample does
# not depend on the others drawn with it.
gan.generator.eval()
z = backend.rng().standard_normal((2500, gan.z_dim), dtype=np.float32)  # as eval's n
fake = backend.to_host(gan.generate(z))

# The VEEGAN / PacGAN count, as `tinygan eval` reports it: a sample is "high quality" when
# it lies within 3 standard deviations (0.03) of its nearest centre, and a mode is found
# when at least one high-quality sample is nearest to it.
coverage = metrics.mode_coverage(fake, ring.centres, ring.sigma)
print(f"modes found: {coverage['modes']} of {coverage['modes_total']}; "
      f"{coverage['hq_percent']:.0f}% of samples within 3 sigma of a centre")

path = os.path.join(args.out, "ring.png")
plots.save_scatter(path, fake, points[:2500], f"GAN on the ring, step {step}")
print(f"wrote {path}")
