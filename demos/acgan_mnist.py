"""AC-GAN (Odena et al. 2017) on MNIST: a discriminator that also classifies.

    python demos/acgan_mnist.py --data-dir ../shared/data        # 300 steps, ~40 s on a core
    python demos/acgan_mnist.py --steps 3000 --out runs/acgan-mnist

Only G sees the label: G([z, e(y)]). D sees the image alone and answers twice, from one
Dense layer with 1 + 10 outputs: column 0 is the real/fake logit (BCE), columns 1..10 are
class logits (softmax cross-entropy, the only softmax: it lives inside the loss). D's class
head learns from real images only (the paper also fits it to fakes: --fake-class-loss in
`tinygan train`), and G minimises the class loss of its fakes, so it learns to draw
digits D can recognise.
Writes OUT/digits.png (one row per digit) and prints how well D's class head classifies.
After the default 300 steps the samples are stroke-like scribbles, while D's class head
already reads most held-out digits: classifying is easier than drawing.
"""

import argparse
import os

import numpy as np

from tinygan import backend, data, files, models, plots
from tinygan.cli import Parser, non_negative_int, one_line_errors, positive_int
from tinygan.train import Trainer

parser = Parser(description="AC-GAN on MNIST",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--steps", type=positive_int, default=300, help="training steps")
parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
parser.add_argument("--data-dir", help="folder with the IDX .gz files; if none, tinygan's cache "
                                       "and then a download")
parser.add_argument("--seed", type=non_negative_int, default=0, help="fixes every random draw")
parser.add_argument("--out", default="runs/demo-acgan-mnist", help="folder for the picture")
args = parser.parse_args()
one_line_errors(parser.prog)  # a bad path or Ctrl-C: one line, as `tinygan` says it
files.check_writable(args.out, "--out folder")  # now, not after the training

backend.seed(args.seed)
images, labels = data.load_dataset("mnist", args.data_dir, split="train")
held_out = slice(len(images) - 1000, None)  # kept out of training to test D's class head
train_images, train_labels = images[: held_out.start], labels[: held_out.start]

# DCGAN-style networks; D's last Dense has 11 outputs: the two heads side by side.
gan = models.build("acgan", data_shape=images.shape[1:], num_classes=10)
trainer = Trainer(gan)

step = 0
while step < args.steps:
    for real, y in data.batches(train_images, train_labels, args.batch_size):
        # y goes to D's class loss on the real batch; G's class loss uses the labels it drew
        losses = trainer.step(real, y)
        step += 1
        if step % 10 == 0:
            print(f"step {step}: d_loss {float(losses['d_loss']):.3f} "
                  f"g_loss {float(losses['g_loss']):.3f}")
        if step == args.steps:
            break

# D's class head as a classifier: argmax of columns 1..10 (softmax would not change it).
gan.discriminator.eval()  # BatchNorm on running statistics, as for G below
logits = backend.to_host(gan.discriminate(backend.to_device(images[held_out])))
accuracy = (logits[:, 1:].argmax(axis=1) == labels[held_out]).mean()
print(f"D's class head on 1000 held-out digits: {accuracy:.1%} correct")

y = backend.to_device(np.repeat(np.arange(10), 10))  # row r: ten samples of digit r
z = backend.rng().standard_normal((100, gan.z_dim), dtype=np.float32)
gan.generator.eval()
samples = backend.to_host(gan.generate(z, y))
path = os.path.join(args.out, "digits.png")
plots.save_image_grid(path, samples, rows=10, title=f"AC-GAN, step {step}",
                      row_labels=list(range(10)))
print(f"wrote {path}")
