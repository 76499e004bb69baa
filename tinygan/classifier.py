"""A small LeNet-style classifier for MNIST / Fashion-MNIST: the eyes of the evaluation.

The metrics in ``tinygan.metrics`` judge generated images by what a classifier sees in
them: its penultimate features (for the Fréchet distance) and its class probabilities
(for the classifier score and class accuracy). This module builds that classifier from
tinygan's own layers, trains it with cross-entropy and Adam, and saves it as a checkpoint.

Network (28x28 inputs; each stride-2 4x4 convolution halves H and W, standing in for
LeNet's pooling, which tinygan does not have):

    Conv 3x3 (1 -> 32) -> BN -> ReLU -> Conv 4x4 s2 (32 -> 32) -> BN -> ReLU     28 -> 14
    Conv 3x3 (32 -> 64) -> BN -> ReLU -> Conv 4x4 s2 (64 -> 64) -> BN -> ReLU    14 -> 7
    Flatten -> Dropout -> Dense (64*7*7 -> 128) -> ReLU                          = features
    Dropout -> Dense (128 -> 10)                                                 = logits

Data: users here have only the *test* split of each dataset, so it is split in a fixed
way: the first 80% (rounded down to a multiple of 500) train the classifier and the rest
is held out. MNIST's 10,000 test images give 8,000 / 2,000; the 4,443 Fashion-MNIST
images of fashion-mnist-partial give 3,500 / 943. The accuracy we report is measured on
the held-out images only.
"""

import json
import math
import os
import sys
import time

import numpy as np

from tinygan import backend, checkpoint, data, files, losses, nn, optim

CHANNELS = (32, 64)  # feature maps at 28x28 -> 14x14, and at 14x14 -> 7x7
HIDDEN = 128  # width of the penultimate (feature) layer
DROPOUT = 0.4
BATCH_SIZE = 64
LR = 2e-3
DEFAULT_EPOCHS = {"mnist": 4, "fashion-mnist": 12}  # Fashion has fewer images and is harder
EVAL_BATCH = 500  # images per forward pass when only predicting


class Classifier(nn.Module):
    """logits = head(body(x)); ``body(x)`` are the penultimate features.

    Backward is the chain rule through the two halves: dL/dx = body'^T(head'^T(dL/dlogits)).
    """

    def __init__(self, num_classes=10, channels=CHANNELS, hidden=HIDDEN, dropout=DROPOUT):
        super().__init__()
        a, b = channels
        self.num_classes, self.channels, self.hidden = num_classes, tuple(channels), hidden
        self.body = nn.Sequential(
            nn.Conv2d(1, a, 3, 1, 1), nn.BatchNorm2d(a), nn.ReLU(),
            nn.Conv2d(a, a, 4, 2, 1), nn.BatchNorm2d(a), nn.ReLU(),
            nn.Conv2d(a, b, 3, 1, 1), nn.BatchNorm2d(b), nn.ReLU(),
            nn.Conv2d(b, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU(),
            nn.Flatten(), nn.Dropout(dropout), nn.Dense(b * 7 * 7, hidden), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Dense(hidden, num_classes))

    def children(self):
        return [("body", self.body), ("head", self.head)]

    def forward(self, x):
        return self.head.forward(self.body.forward(x))

    def backward(self, dout):
        return self.body.backward(self.head.backward(dout))

    def input_grad_(self, flag=True):
        self.needs_input_grad = flag
        self.body.input_grad_(flag)  # the images enter through the body
        return self

    def predict(self, images):
        """(features, logits) of host images (N, 1, 28, 28), as float64 host arrays.

        Runs in eval mode (BatchNorm's running statistics, no dropout) and in batches,
        so it draws no random numbers and its memory does not grow with N.
        """
        was_training = self.training
        self.eval()
        features, logits = [], []
        try:
            for start in range(0, len(images), EVAL_BATCH):
                x = backend.to_device(images[start : start + EVAL_BATCH], np.float32)
                h = self.body.forward(x)
                features.append(backend.to_host(h).astype(np.float64))
                logits.append(backend.to_host(self.head.forward(h)).astype(np.float64))
        finally:
            self.train(was_training)
        return np.concatenate(features), np.concatenate(logits)

    def accuracy(self, images, labels):
        """Share of images whose largest logit is their label."""
        _, logits = self.predict(images)
        return float(np.mean(logits.argmax(axis=1) == np.asarray(labels)))


# ------------------------------------------------------------------------- data and training


def heldout_split(n):
    """Number of training images when n are available: 80% rounded down to a multiple of 500."""
    n_train = (8 * n // 10) // 500 * 500
    if n_train < 500 or n_train >= n:
        raise ValueError(f"need at least 625 labelled images to train and hold out, got {n}")
    return n_train


def load_split(name, data_dir=None):
    """((train images, labels), (held-out images, labels)) from the test split of ``name``."""
    images, labels = data.load_dataset(name, data_dir, split="test")
    n_train = heldout_split(len(images))
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def cosine_lr(lr, step, total):
    """Cosine decay from lr to 0 over ``total`` steps: lr * (1 + cos(pi * step / total)) / 2."""
    return lr * (1 + math.cos(math.pi * step / total)) / 2


def train(images, labels, epochs, seed=0, batch_size=BATCH_SIZE, lr=LR, log=None):
    """Train a fresh classifier on host arrays; returns it in eval mode.

    Minimises the mean cross-entropy with Adam, the learning rate decaying along a
    cosine to 0. ``seed`` fixes the initial weights, dropout masks and batch order.
    ``log(epoch, mean_loss, seconds)`` is called after every epoch when given.
    """
    backend.seed(seed)
    backend.keep_freed_memory()  # the same arrays every step: reuse, no page faults
    model = Classifier()
    opt = optim.Adam(model, lr=lr)
    order_rng = np.random.default_rng([seed, 5])
    steps_per_epoch = len(images) // batch_size
    total, step, start = epochs * steps_per_epoch, 0, time.perf_counter()
    for epoch in range(epochs):
        loss_sum = 0.0
        for x, y in data.batches(images, labels, batch_size, order_rng, dtype=np.float32):
            opt.lr = cosine_lr(lr, step, total)
            opt.zero_grad()
            loss, dlogits = losses.cross_entropy(model.forward(x), y)
            with nn.no_input_grad(model):  # nothing learns from dL/d(images)
                model.backward(dlogits)
            opt.step()
            loss_sum += float(loss)
            step += 1
        if log:
            log(epoch + 1, loss_sum / steps_per_epoch, time.perf_counter() - start)
    return model.eval()


# ------------------------------------------------------------------------------- checkpoints


def default_path(name):
    """Where ``tinygan classifier train`` saves, and evaluation looks, by default."""
    return data.cache_dir() / f"classifier-{name}.npz"


def save(path, model, meta):
    """Write the weights (``net/<name>``) and ``meta`` (JSON) atomically: temp file + rename."""
    arrays = {f"net/{k}": backend.to_host(v) for k, v in model.state_dict().items()}
    meta = dict(meta, kind="tinygan-classifier", num_classes=model.num_classes,
                channels=list(model.channels), hidden=model.hidden)
    checkpoint.save_npz_atomic(path, arrays, meta)


def replaceable(path):
    """Whether training may write over the file at ``path``: a classifier, or a file no
    one can read (a damaged one); not a readable .npz of another kind (a GAN checkpoint)."""
    try:
        arrays = checkpoint.read_npz(path, "file")
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except ValueError:  # CheckpointError and JSONDecodeError are ValueErrors
        return True
    return isinstance(meta, dict) and meta.get("kind") == "tinygan-classifier"


def load(path):
    """Read a classifier checkpoint: returns (model in eval mode, meta)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"classifier {path} does not exist")
    arrays = checkpoint.read_npz(path, "classifier")
    try:
        meta = json.loads(str(arrays.pop("meta", "{}")))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("kind") != "tinygan-classifier":
        raise ValueError(f"{path} is not a tinygan classifier (train one with "
                         "`tinygan classifier train`)")
    try:
        model = Classifier(meta["num_classes"], meta["channels"], meta["hidden"])
        model.load_state_dict({k.removeprefix("net/"): v for k, v in arrays.items()})
    except (KeyError, TypeError, ValueError) as err:  # a damaged or hand-edited file
        raise ValueError(f"classifier {path} cannot be read back ({files.first_line(err)}); "
                         "train it again with `tinygan classifier train`") from None
    return model.eval(), meta



# ------------------------------------------------------------------------- the CLI's command


def train_command(name, data_dir=None, epochs=None, out=None, seed=0, stream=None):
    """``tinygan classifier train``: train on the fixed split, report, save; returns meta.
    The per-epoch log goes to ``stream``, by default sys.stderr as it is when called."""
    stream = stream or sys.stderr  # not bound at import: it may have been redirected since
    folder_name = "--out folder" if out else "cache folder"  # where the default path lies
    out = str(out or default_path(name))
    what = "--out" if folder_name == "--out folder" else "classifier path"
    files.check_output_file(out, ".npz", what)
    if os.path.isfile(out) and not replaceable(out):
        raise ValueError(f"{what} {out}: that file is not a tinygan classifier; refusing to "
                         "overwrite it (choose another path)")
    files.check_writable(os.path.dirname(os.path.abspath(out)), folder_name)
    (x_train, y_train), (x_held, y_held) = load_split(name, data_dir)  # may download: after
    epochs = epochs or DEFAULT_EPOCHS[name]
    n_total = len(x_train) + len(x_held)

    def log(epoch, loss, seconds):
        print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  {seconds:.1f} s", file=stream, flush=True)

    start = time.perf_counter()
    model = train(x_train, y_train, epochs, seed=seed, log=log)
    seconds = time.perf_counter() - start
    accuracy = model.accuracy(x_held, y_held)
    meta = {"data": name, "seed": seed, "epochs": epochs, "batch_size": BATCH_SIZE, "lr": LR,
            "n_train": len(x_train), "n_heldout": len(x_held),
            "heldout_accuracy": accuracy, "train_time_s": seconds}
    save(out, model, meta)
    print(f"classifier on {name}: trained on the first {len(x_train):,} of the {n_total:,} "
          f"test-split images ({epochs} epochs, seed {seed}) in {seconds:.1f} s")
    print(f"held-out accuracy on the last {len(x_held):,} test-split images "
          f"(never trained on): {100 * accuracy:.2f}%")
    print(f"saved to {out}")
    return meta
