"""DCGAN (Radford et al. 2016) on Fashion-MNIST: convolutions, BatchNorm and eval-mode sampling.

    python demos/dcgan_fashion_mnist.py --data-dir ../shared/data     # 300 steps, ~30 s on a core
    python demos/dcgan_fashion_mnist.py --steps 2000 --out runs/dcgan-fashion

--data-dir is the folder holding the IDX .gz files (or a fashion-mnist/ or
fashion-mnist-partial/ folder inside); without it tinygan looks in its cache and downloads.
Every --every steps the generator draws the same 64 noise vectors into OUT/samples.png
(overwritten each time: open it again to watch the same garments take shape).
The default 300 steps give rough, noisy garment silhouettes; train longer for detail.
"""

import argparse
import os

import numpy as np

from tinygan import backend, data, files, models, plots
from tinygan.cli import Parser, non_negative_int, one_line_errors, positive_int
from tinygan.train import Trainer

parser = Parser(description="DCGAN on Fashion-MNIST",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--steps", type=positive_int, default=300, help="training steps")
parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
parser.add_argument("--every", type=positive_int, default=100, help="save samples every N steps")
parser.add_argument("--data-dir", help="folder with the IDX .gz files; if none, tinygan's cache "
                                       "and then a download")
parser.add_argument("--seed", type=non_negative_int, default=0, help="fixes every random draw")
parser.add_argument("--out", default="runs/demo-dcgan-fashion-mnist", help="folder for the picture")
args = parser.parse_args()
one_line_errors(parser.prog)  # a bad path or Ctrl-C: one line, as `tinygan` says it
files.check_writable(args.out, "--out folder")  # now, not after the training

backend.seed(args.seed)
# float32 images (N, 1, 28, 28) scaled to [-1, 1]: the range of G's final tanh.
images, _ = data.load_dataset("fashion-mnist", args.data_dir, split="train")
print(f"{len(images)} images of shape {images.shape[1:]}")

# G: z (100) -> Dense -> 128x7x7 -> ConvT -> 64x14x14 -> ConvT -> 1x28x28 -> tanh.
# D mirrors it with strided convolutions. Weights ~ N(0, 0.02^2), Adam lr 2e-4, beta1 0.5:
# the paper's recipe, without which this architecture often fails to train.
gan = models.build("dcgan", data_shape=images.shape[1:])
trainer = Trainer(gan)

# Fixed noise, drawn once: the same 64 z at every snapshot show how G changes.
fixed_z = backend.to_device(np.random.default_rng(args.seed).standard_normal(
    (64, gan.z_dim)).astype(np.float32))


def save_samples(step):
    # eval(): BatchNorm normalises with its running statistics instead of this batch's, so
    # a sample does not depend on the others drawn with it. Then back to training mode.
    gan.generator.eval()
    samples = backend.to_host(gan.generate(fixed_z))
    gan.generator.train()
    path = os.path.join(args.out, "samples.png")
    plots.save_image_grid(path, samples, rows=8, title=f"DCGAN, step {step}")
    print(f"step {step}: wrote {path}")


step = 0
while step < args.steps:
    for real, _ in data.batches(images, None, args.batch_size):  # one shuffled epoch
        losses = trainer.step(real)  # D on real + fake, then G through the frozen D
        step += 1
        if step % 10 == 0:  # float() copies the loss to the host: only when printing
            print(f"step {step}: d_loss {float(losses['d_loss']):.3f} "
                  f"g_loss {float(losses['g_loss']):.3f}")
        if step % args.every == 0 or step == args.steps:
            save_samples(step)
        if step == args.steps:
            break
