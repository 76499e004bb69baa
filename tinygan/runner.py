"""A training run: data in, pictures, metrics and checkpoints out.

``run(RunConfig(...))`` is what ``tinygan train`` calls. It loads the data, builds
the model, calls ``Trainer.step`` once per batch, and at the end of every epoch
writes ``metrics.json`` and ``checkpoint.npz`` to ``out``, with two pictures: a
sample grid (one row per class for conditional models, a scatter over the real data
for 2-D points) and the loss curves. Drawing takes ~0.3 s, longer than a whole epoch
of 2-D points, so the pictures are redrawn at most every ``DRAW_EVERY_S`` seconds
(and always at the end of the run).

Resuming from a checkpoint continues the same run: on NumPy, 2N steps in one go
equal N steps + resume + N steps bit for bit, because batch order is a function of
(seed, epoch) and the generators' state is saved. On CuPy the device generator's state
cannot be saved, only a seed it restarts from (backend.get_rng_state), and the end of
every epoch restarts it so: a run resumed from an epoch's end is still bit for bit the
same, one resumed from the mid-epoch end of a shorter run (--steps) is not.
"""

import itertools
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from tinygan import backend, checkpoint, data, files, models, plots
from tinygan.nn.module import check_sizes, is_int
from tinygan.train import Trainer, Tricks, decay_scale

TOY_SIZE = 10_000  # points drawn once per run from a 2-D mixture, then batched like images
IMAGE_DATA = ("mnist", "fashion-mnist")
DRAW_EVERY_S = 10.0  # pictures at most this often; metrics.json and the checkpoint every epoch


@dataclass
class RunConfig:
    model: str = "gan"
    data: str = "ring"
    data_dir: str | None = None
    epochs: int | None = None  # either epochs or steps; neither: a default per data kind
    steps: int | None = None
    batch_size: int | None = None  # default: 256 for 2-D points, 64 for images
    lr: float | None = None  # default: the family's (models.build)
    lr_decay: float | None = None  # share of the run over which lr falls linearly to 0
    backend: str = field(default_factory=lambda: backend.name())  # TINYGAN_BACKEND, else numpy
    seed: int = 0
    out: str = "runs/gan-ring"
    z_dim: int | None = None
    g_dropout: float = 0.0
    label_smoothing: float = 0.0
    label_noise: float = 0.0
    flip_labels: float = 0.0
    instance_noise: float = 0.0
    minimax: bool = False
    fake_class_loss: bool = False  # AC-GAN only: D's class head also fits fakes (the paper's L_C)
    evaluate: bool = True  # per-epoch metrics (tinygan.metrics) when available

    def decay_fraction(self, sample_shape):
        """--lr-decay, by default 0.5 for 2-D points (the second half) and 0 for images."""
        if self.lr_decay is not None:
            if not 0 <= self.lr_decay <= 1:
                raise ValueError(f"lr_decay must be a fraction in [0, 1], got {self.lr_decay}")
            return self.lr_decay
        return 0.5 if len(sample_shape) == 1 else 0.0

    def tricks(self):
        return Tricks(**{f.name: getattr(self, f.name) for f in fields(Tricks)})

    def check(self):
        """One-line ValueErrors for settings out of range, before training starts. The
        CLI's parser checks each flag; this checks the Python API's settings too, and what
        the flags cannot check alone (label_smoothing + label_noise, epochs with steps)."""
        # None means "the default"; a 0 must not fall back to it without a word
        check_sizes("RunConfig", **{name: getattr(self, name) for name in
                                    ("epochs", "steps", "batch_size", "z_dim")
                                    if getattr(self, name) is not None})
        if self.data_dir and self.data in data.TOY_DATASETS:  # say so rather than ignore it
            raise ValueError(f"RunConfig: data_dir (--data-dir) applies to image data "
                             f"({', '.join(IMAGE_DATA)}); {self.data} is drawn, not read")
        if self.epochs is not None and self.steps is not None:
            raise ValueError(f"RunConfig: give epochs or steps, not both (got epochs="
                             f"{self.epochs}, steps={self.steps})")
        if not (is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"RunConfig: seed must be an int >= 0, got {self.seed!r}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise ValueError(f"RunConfig: lr must be a positive number, got {self.lr!r}")
        self.decay_fraction(sample_shape=(2,))  # raises for an lr_decay outside [0, 1]
        self.tricks()  # Tricks checks its own fields


def load_training_data(config):
    """(samples, labels, num_classes): host arrays, labels being classes or mixture components."""
    if config.data in data.TOY_DATASETS:
        rng = np.random.default_rng([config.seed, 1])
        points, components = data.TOY_DATASETS[config.data].sample(TOY_SIZE, rng)
        return points, components, int(components.max()) + 1
    if config.data in IMAGE_DATA:
        images, labels = data.load_dataset(config.data, config.data_dir, split="train")
        return images, labels, int(labels.max()) + 1
    choices = ", ".join(list(data.TOY_DATASETS) + list(IMAGE_DATA))
    raise ValueError(f"unknown data {config.data!r}; choose one of: {choices}")


def build_trainer(config, data_shape, num_classes):
    gan = models.build(config.model, data_shape, num_classes, config.z_dim, config.g_dropout)
    if config.fake_class_loss:
        if not gan.class_head:
            raise ValueError(f"fake_class_loss (--fake-class-loss) applies to acgan only, whose "
                             f"discriminator has a class head; got model {config.model!r}")
        gan.d_class_loss_on_fake = True
    return Trainer(gan, lr=config.lr, tricks=config.tricks())


def fixed_inputs(trainer, seed, n=64):
    """The noise (and labels) every sample grid of a run is drawn from, so epochs compare.

    Drawn from a host generator of its own so that plotting never shifts the
    training generator's stream. Conditional models: one row of 10 per class.
    """
    gan = trainer.gan
    rng = np.random.default_rng([seed, 2])
    if gan.conditional_g:
        rows = gan.num_classes
        y = np.repeat(np.arange(rows), 10)
        n = len(y)
    else:
        y = None
    z = rng.standard_normal((n, gan.z_dim)).astype(np.float32)
    return backend.to_device(z), (None if y is None else backend.to_device(y))


def generate(gan, z, y=None):
    """Samples from G in eval mode (BatchNorm uses running statistics), as a host array."""
    gan.generator.eval()
    try:
        return backend.to_host(gan.generate(z, y))
    finally:
        gan.generator.train()


class Progress:
    """A one-line progress bar on a terminal; a line every 10% otherwise (logs, CI)."""

    def __init__(self, total, stream=None):
        # sys.stderr looked up now, not at import: it may have been redirected since
        self.total, self.stream = total, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_print = 0.0
        self.next_fraction = 0.1

    def update(self, step, losses, images_per_second):
        now = time.perf_counter()
        fraction = step / self.total
        if self.tty and now - self.last_print < 0.2 and step < self.total:
            return
        if not self.tty and fraction < self.next_fraction and step < self.total:
            return
        self.last_print = now
        self.next_fraction = math.floor(fraction * 10 + 1) / 10
        bar = "#" * int(24 * fraction)
        text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        line = f"step {step}/{self.total} [{bar:<24}] {text} {images_per_second:,.0f} img/s"
        # on a terminal: back to the line's start, and erase what a longer line left there
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        if self.tty and step >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def epoch_metrics(gan, config, real, labels):
    """Evaluation metrics for the end of an epoch; {} when tinygan.metrics is absent."""
    if not config.evaluate:
        return {}
    try:
        from tinygan import metrics
    except ImportError:
        return {}
    return metrics.evaluate_for_training(gan, config, real, labels)


def draw(out, gan, config, meta, real, z, y):
    """Write samples.png and losses.png for the current step."""
    samples = generate(gan, z, y)
    title = f"{config.model} on {config.data}, step {meta['step']}"
    if len(gan.data_shape) == 1:
        plots.save_scatter(os.path.join(out, "samples.png"), samples, real[:2500], title)
    else:
        rows = gan.num_classes if gan.conditional_g else 8
        row_labels = list(range(rows)) if gan.conditional_g else None
        plots.save_image_grid(os.path.join(out, "samples.png"), samples, rows, title, row_labels)
    plots.save_curves(os.path.join(out, "losses.png"), meta["history"], meta["eval"])


def save_outputs(out, trainer, meta):
    """Write the checkpoint and metrics.json for the current step.

    The checkpoint first: stopped between the two (Ctrl-C), metrics.json lags one save
    behind the checkpoint, which a resumed run rewrites, rather than running ahead of it."""
    checkpoint.save(os.path.join(out, "checkpoint.npz"), trainer, meta)
    with files.written_atomically(os.path.join(out, "metrics.json")) as tmp, open(tmp, "w") as f:
        json.dump({k: meta[k] for k in ("config", "step", "epoch", "time_s", "images_per_second",
                                        "eval", "history")}, f, indent=1)


def plan(config, n_samples, sample_shape):
    """(batch size, steps per epoch, total steps) from the config and the data size."""
    batch = config.batch_size or (256 if len(sample_shape) == 1 else 64)
    if batch > n_samples:
        raise ValueError(f"batch size {batch} is larger than the {n_samples} training samples")
    steps_per_epoch = n_samples // batch
    if config.steps is not None:
        total = config.steps
    else:
        # 2-D points: 80 epochs of 39 batches (~3,100 steps, seconds on a CPU); at 30 the
        # ring's modes are found but samples still sit far outside 3 sigma of their centres
        total = (config.epochs or (80 if len(sample_shape) == 1 else 5)) * steps_per_epoch
    return batch, steps_per_epoch, total


def check_resumable(config, resume, saved, n_samples):
    """One-line ValueErrors, before any work, for a resumed run that would go on with other
    data than it started with (its epochs and batch order count those samples), or would
    write over a checkpoint of a later step (a backup copy resumed inside its run folder)."""
    if saved.get("n_samples", n_samples) != n_samples:  # runs saved before: not recorded
        where = f" in {config.data_dir}" if config.data_dir else ""
        raise ValueError(f"the resumed run trained on {saved['n_samples']:,} samples, but the "
                         f"{config.data} data found now{where} has {n_samples:,}; resume "
                         "it with the same data (--data-dir)")
    target = os.path.join(config.out, "checkpoint.npz")
    if os.path.isfile(target) and not os.path.samefile(target, resume):
        try:
            later = checkpoint.load_run(target, ("step",))[1]["step"]
        except (ValueError, TypeError):  # unreadable: nothing to keep
            return
        if later > saved["step"]:
            raise ValueError(f"resuming step {saved['step']} would overwrite {target}, which is "
                             f"at step {later}; write elsewhere (--out)")


def warn_diverged(record):
    """A run whose losses turned NaN or inf goes on (as a PyTorch loop would), but says so
    once, instead of ending with NaN weights and metrics without a word."""
    losses = ", ".join(f"{k} {v}" for k, v in record.items() if k != "step")
    warnings.warn(f"training diverged: the losses are not finite at step {record['step']} "
                  f"({losses}); a smaller learning rate (--lr) may help", RuntimeWarning,
                  stacklevel=3)  # the caller of run()


def note_on(exception, text):
    """``exception.add_note(text)`` (PEP 678), also on Python 3.10, which lacks the method."""
    exception.__notes__ = [*getattr(exception, "__notes__", []), text]


def run(config, resume=None, progress=True):
    """Train as ``config`` says (continuing ``resume`` if given); returns the final meta dict."""
    config.check()
    files.check_writable(config.out, "output folder")  # before the work, not after it
    backend.use(config.backend)
    backend.seed(config.seed)
    real, labels, num_classes = load_training_data(config)
    batch, steps_per_epoch, total = plan(config, len(real), real.shape[1:])
    trainer = build_trainer(config, real.shape[1:], num_classes)
    gan = trainer.gan
    meta = {"config": asdict(config), "data_shape": list(real.shape[1:]),
            "n_samples": len(real), "model_options": gan.options, "step": 0, "epoch": 0,
            "time_s": 0.0, "images_per_second": 0.0, "history": [], "eval": []}
    if resume:
        states, saved = checkpoint.load_run(resume, checkpoint.RESUME_KEYS)
        check_resumable(config, resume, saved, len(real))
        checkpoint.restore(trainer, states, saved)
        meta.update({k: saved[k] for k in ("step", "epoch", "time_s", "history", "eval")})
    z, y = fixed_inputs(trainer, config.seed)
    bar = Progress(total) if progress else None
    log_every = max(1, total // 200)  # keep ~200 points of loss history
    if resume:  # an extended run goes on at the interval its history was logged at
        log_every = saved.get("log_every", log_every)
    meta["log_every"] = log_every
    sums, counts = {}, {}  # device-side loss sums since the last log point
    if resume:  # the checkpoint's unlogged sums: the next record is an uninterrupted run's
        for k, (loss_sum, count) in saved.get("pending_losses", {}).items():
            sums[k], counts[k] = loss_sum, count  # a float holds the float32 sum exactly
    needs_labels = gan.conditional_d or gan.class_head
    decay = config.decay_fraction(real.shape[1:])
    # what the defaults (None in config) came to: a resumed run may be given them explicitly
    meta["settings_used"] = {"batch_size": batch, "lr": trainer.base_lr[0], "lr_decay": decay,
                             "z_dim": gan.z_dim}
    done = meta["step"]
    if done > total:
        raise ValueError(f"the resumed run is at step {done}, past the {total} steps asked for: "
                         "ask for more steps or epochs to go on")
    nothing_to_do = done == total
    start, first_step = time.perf_counter(), done
    last_drawn = -math.inf
    diverged = False

    last_saved = (done, resume) if resume else None  # (step, checkpoint path) to point to

    def where_stopped():
        text = f"stopped at step {done} of {total}"
        if last_saved is None:
            return text + "; no checkpoint yet (one is saved at the end of every epoch)"
        return (f"{text}; the checkpoint of step {last_saved[0]} is {last_saved[1]} "
                f"(--resume it to go on)")

    try:
        while done < total:
            epoch, skip = divmod(done, steps_per_epoch)
            # an epoch's batch order depends only on (seed, epoch), so a run resumes mid-epoch
            order_rng = np.random.default_rng([config.seed, 3, epoch])
            epoch_batches = data.batches(real, labels, batch, order_rng)
            for x, y_batch in itertools.islice(epoch_batches, skip, None):
                # the rate is a function of the step alone, so a resumed run gets it right
                trainer.scale_lr(decay_scale(done, total, decay))
                for k, v in trainer.step(x, y_batch if needs_labels else None).items():
                    sums[k], counts[k] = sums.get(k, 0) + v, counts.get(k, 0) + 1
                done += 1
                if done % log_every == 0 or done == total:
                    record = {"step": done, **{k: float(v) / counts[k] for k, v in sums.items()}}
                    sums, counts = {}, {}
                    if not diverged and not all(map(math.isfinite, record.values())):
                        diverged = True  # said once: every later loss is NaN too
                        warn_diverged(record)
                    meta["history"].append(record)
                    speed = (done - first_step) * batch / max(time.perf_counter() - start, 1e-9)
                    meta["images_per_second"] = speed
                    if bar:
                        bar.update(done, {k: v for k, v in record.items() if k != "step"}, speed)
                if done == total:
                    break
            # the end of an epoch (or of the run): evaluate, save, and draw when it is time
            meta["step"], meta["epoch"] = done, done / steps_per_epoch
            meta["time_s"] += time.perf_counter() - start
            rng_state = backend.get_rng_state()  # evaluation must not shift training's stream
            scores = epoch_metrics(gan, config, real, labels)
            backend.set_rng_state(rng_state)
            if scores:
                meta["eval"].append({"step": done, "epoch": meta["epoch"], **scores})
            meta["pending_losses"] = {k: [float(v), counts[k]] for k, v in sums.items()}
            save_outputs(config.out, trainer, meta)
            last_saved = (done, os.path.join(config.out, "checkpoint.npz"))
            if done == total or time.perf_counter() - last_drawn >= DRAW_EVERY_S:
                draw(config.out, gan, config, meta, real, z, y)
                last_drawn = time.perf_counter()
            start, first_step = time.perf_counter(), done  # evaluation and saving are not timed
    except BaseException as stop:
        if not isinstance(stop, Exception):  # Ctrl-C, or kill through the CLI: say where
            note_on(stop, where_stopped())
        raise
    if nothing_to_do:  # resumed at its end: no step to take, but config.out gets the outputs
        save_outputs(config.out, trainer, meta)
        draw(config.out, gan, config, meta, real, z, y)
    return meta
