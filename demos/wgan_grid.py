"""WGAN (Arjovsky et al. 2017) on the 25-Gaussian grid: a critic instead of a classifier.

    python demos/wgan_grid.py                      # 5000 steps (1000 G updates), under a minute
    python demos/wgan_grid.py --steps 20000 --out runs/wgan-grid

The critic D outputs an unbounded score, not a probability. It maximises
E[D(real)] - E[D(fake)], which, for a D that is 1-Lipschitz, estimates the Wasserstein
distance between the two distributions; G minimises -E[D(fake)]. WGAN keeps D Lipschitz
the crude way: after every update each weight is clipped to [-0.01, 0.01]. And since G
learns from D's gradient, D is trained more: five critic steps per G step (n_critic).
Writes OUT/grid.png: generated points (orange) over the real data (blue). Expect a cloud
over the grid's square rather than 25 tight clusters: a critic whose weights are all within
+-0.01 is a weak, blunt judge, the weakness that led to WGAN-GP's gradient penalty.
"""

import argparse
import os

import numpy as np

from tinygan import backend, data, files, models, plots
from tinygan.cli import Parser, non_negative_int, one_line_errors, positive_int
from tinygan.train import Trainer

parser = Parser(description="WGAN on the 25-Gaussian grid",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--steps", type=positive_int, default=5000,
                    help="critic steps (G: one in five)")
parser.add_argument("--batch-size", type=positive_int, default=256, help="points per batch")
parser.add_argument("--seed", type=non_negative_int, default=0, help="fixes every random draw")
parser.add_argument("--out", default="runs/demo-wgan-grid", help="folder for the picture")
args = parser.parse_args()
one_line_errors(parser.prog)  # a bad path or Ctrl-C: one line, as `tinygan` says it
files.check_writable(args.out, "--out folder")  # now, not after the training

backend.seed(args.seed)
points, _ = data.grid(10_000, np.random.default_rng(args.seed))  # 5 x 5 modes, std 0.05

gan = models.build("wgan", data_shape=(2,))
print(f"objective {gan.objective}, {gan.optimizer} lr {gan.lr}, "
      f"n_critic {gan.n_critic}, clip {gan.clip}")
trainer = Trainer(gan)  # RMSprop: the paper found momentum-based Adam unstable here

step = 0
while step < args.steps:
    for real, _ in data.batches(points, None, args.batch_size):
        losses = trainer.step(real)  # a critic step; "g_loss" appears every fifth call
        step += 1
        if step % 500 == 0:
            # the critic's loss is E[D(fake)] - E[D(real)]: minus its distance estimate
            print(f"step {step}: critic's Wasserstein estimate {-float(losses['d_loss']):.2e}"
                  f", G updates so far {trainer.g_opt.step_count}")
        if step == args.steps:
            break

gan.generator.eval()
z = backend.rng().standard_normal((2000, gan.z_dim), dtype=np.float32)
fake = backend.to_host(gan.generate(z))
path = os.path.join(args.out, "grid.png")
plots.save_scatter(path, fake, points[:2500], f"WGAN on the grid, step {step}")
print(f"wrote {path}")
