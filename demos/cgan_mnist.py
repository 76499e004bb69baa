"""Conditional GAN (Mirza & Osindero 2014) on MNIST: ask for a digit, get that digit.

    python demos/cgan_mnist.py --data-dir ../shared/data        # 1500 steps, ~30 s on a core
    python demos/cgan_mnist.py --epochs 20 --out runs/cgan-mnist

Both networks see the label: G(z, y) and D(x, y). Each label goes through an Embedding
and is concatenated to G's noise and to D's flattened image, so D judges "is this a real
image *of this digit*?", and G must draw the digit it was asked for to fool it.
Writes OUT/digits.png: one row per digit 0..9, ten samples each. The default 1500 steps
are a quick look, not a result: the rows already differ, but the digits are noisy blobs;
this MLP needs many more epochs before they are readable.
"""

import argparse
import os

import numpy as np

from tinygan import backend, data, files, models, plots
from tinygan.cli import Parser, non_negative_int, one_line_errors, positive_int
from tinygan.train import Trainer

parser = Parser(description="conditional GAN on MNIST",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
length = parser.add_mutually_exclusive_group()
length.add_argument("--steps", type=positive_int, default=1500, help="training steps")
length.add_argument("--epochs", type=positive_int, help="passes over the data, instead of --steps")
parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
parser.add_argument("--data-dir", help="folder with the IDX .gz files; if none, tinygan's cache "
                                       "and then a download")
parser.add_argument("--seed", type=non_negative_int, default=0, help="fixes every random draw")
parser.add_argument("--out", default="runs/demo-cgan-mnist", help="folder for the picture")
args = parser.parse_args()
one_line_errors(parser.prog)  # a bad path or Ctrl-C: one line, as `tinygan` says it
files.check_writable(args.out, "--out folder")  # now, not after the training

backend.seed(args.seed)
images, labels = data.load_dataset("mnist", args.data_dir, split="train")
steps_per_epoch = len(images) // args.batch_size
total = args.epochs * steps_per_epoch if args.epochs else args.steps

# MLPs (G: [z, e(y)] -> 256 -> 512 -> 1024 -> 784 -> tanh; D: [x, e(y)] -> 512 -> 256 -> 1)
# each wrapped in a models.Conditional, which does the concatenation
# forward and split the gradient back to the image and the embedding in backward.
gan = models.build("cgan", data_shape=images.shape[1:], num_classes=10)
trainer = Trainer(gan)

step = 0
while step < total:
    for real, y in data.batches(images, labels, args.batch_size):
        # D sees (real, y) and (G(z, y_fake), y_fake), with y_fake drawn uniformly
        losses = trainer.step(real, y)
        step += 1
        if step % 100 == 0:
            print(f"step {step}/{total}: d_loss {float(losses['d_loss']):.3f} "
                  f"g_loss {float(losses['g_loss']):.3f}")
        if step == total:
            break

# Ten samples of each digit: row r asks for digit r, with different noise in each column.
y = backend.to_device(np.repeat(np.arange(10), 10))
z = backend.rng().standard_normal((100, gan.z_dim), dtype=np.float32)
gan.generator.eval()  # the habit before sampling (this MLP has no BatchNorm or Dropout)
samples = backend.to_host(gan.generate(z, y))

path = os.path.join(args.out, "digits.png")
plots.save_image_grid(path, samples, rows=10, title=f"CGAN, step {step}",
                      row_labels=list(range(10)))
print(f"wrote {path}")
