"""The ``tinygan`` command: ``tinygan train``, ``sample``, ``eval`` and ``classifier train``.

Every expected failure (bad arguments, missing or damaged data, a broken checkpoint,
an unavailable backend) ends as one line on stderr and a non-zero exit status.
"""

import argparse
import os
import sys
import warnings

import numpy as np

from tinygan import backend, checkpoint, classifier, data, metrics, models, plots, runner


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (the full usage is one --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def probability(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def fraction(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_train_parser(sub):
    p = sub.add_parser("train", help="train a GAN",
                       description="Train a GAN; with no arguments, the vanilla GAN on the ring.")
    p.add_argument("--model", choices=models.FAMILIES, default="gan")
    p.add_argument("--data", choices=list(data.TOY_DATASETS) + list(runner.IMAGE_DATA),
                   default="ring")
    p.add_argument("--data-dir", help="folder with the IDX .gz files (or mnist/ etc. inside)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int)
    length.add_argument("--steps", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="learning rate of both networks (default: the model's)")
    p.add_argument("--lr-decay", type=fraction, metavar="FRACTION",
                   help="lower the learning rate linearly to 0 over this last share of the run "
                        "(default: 0.5 for 2-D data, 0 for images)")
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default: runs/MODEL-DATA)")
    p.add_argument("--resume", metavar="FILE", help="continue the run saved in this checkpoint")
    p.add_argument("--z-dim", type=positive_int)
    tricks = p.add_argument_group("stabilisation tricks")
    tricks.add_argument("--label-smoothing", type=probability, default=0.0,
                        help="one-sided: real targets become 1 - s")
    tricks.add_argument("--label-noise", type=probability, default=0.0)
    tricks.add_argument("--flip-labels", type=probability, default=0.0)
    tricks.add_argument("--instance-noise", type=float, default=0.0,
                        help="std of Gaussian noise added to D's inputs")
    tricks.add_argument("--g-dropout", type=probability, default=0.0)
    tricks.add_argument("--minimax", action="store_true",
                        help="G minimises log(1 - D(G(z))) instead of the non-saturating loss")
    p.add_argument("--no-eval", action="store_true", help="skip per-epoch evaluation metrics")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_sample_parser(sub):
    p = sub.add_parser("sample", help="draw samples from a trained generator")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("--n", type=positive_int, default=64)
    p.add_argument("--label", type=int, help="class to draw (conditional models)")
    p.add_argument("--out", default="samples.png", metavar="FILE.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")


def add_eval_parser(sub):
    p = sub.add_parser("eval", help="score a trained generator (FD, classifier score, coverage)",
                       description="Print the metrics that apply to a trained model and write "
                                   "them to JSON: mode coverage on 2-D data; on images FD on "
                                   "a classifier's features and logits, its classifier score "
                                   "and, for conditional models, class accuracy.")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("--classifier", metavar="FILE",
                   help="classifier checkpoint (default: the one `tinygan classifier train` "
                        "saved in the cache folder)")
    p.add_argument("--n", type=positive_int,
                   help=f"samples per set (default: {metrics.IMAGE_SAMPLES} for images, "
                        f"{metrics.TOY_SAMPLES} for 2-D data as in VEEGAN/PacGAN)")
    p.add_argument("--out", metavar="FILE.json", help="default: eval.json beside the checkpoint")
    p.add_argument("--data-dir", help="folder with the real images (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator's noise")
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")


def add_classifier_parser(sub):
    p = sub.add_parser("classifier", help="the classifier that image metrics are measured with")
    actions = p.add_subparsers(dest="action", metavar="{train}", required=True)
    t = actions.add_parser("train", help="train it on the test split and report its accuracy",
                           description="Train the evaluation classifier on the first 80% of "
                                       "the test split (rounded down to a multiple of 500) "
                                       "and report its accuracy on the rest.")
    t.add_argument("--data", choices=data.DATASETS, required=True)
    t.add_argument("--data-dir", help="folder with the IDX .gz files (or mnist/ etc. inside)")
    t.add_argument("--epochs", type=positive_int,
                   help=", ".join(f"{k}: {v}" for k, v in classifier.DEFAULT_EPOCHS.items()))
    t.add_argument("--out", metavar="FILE.npz",
                   help="default: classifier-DATA.npz in the cache folder, where eval looks")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backend", choices=backend.BACKENDS, default="numpy")


def train(args):
    fields = {f: getattr(args, f) for f in (
        "model", "data", "data_dir", "epochs", "steps", "batch_size", "lr", "lr_decay", "backend",
        "seed", "z_dim", "g_dropout", "label_smoothing", "label_noise", "flip_labels",
        "instance_noise", "minimax")}
    if args.resume:
        # a resumed run keeps its saved configuration; only its length and output may change
        _, meta = checkpoint.load(args.resume)
        saved = {k: v for k, v in meta["config"].items() if k not in ("out", "evaluate")}
        # a new --epochs or --steps replaces the saved length, both fields (they exclude each other)
        length = ("epochs", "steps") if fields["epochs"] or fields["steps"] else ()
        fields = {**saved, **{k: fields[k] for k in (*length, "backend")}}
        if args.out is None:
            args.out = meta["config"]["out"]
    if fields["data_dir"] and not os.path.isdir(fields["data_dir"]):
        raise ValueError(f"--data-dir {fields['data_dir']}: no such folder")
    out = args.out or os.path.join("runs", f"{fields['model']}-{fields['data']}")
    config = runner.RunConfig(**fields, out=out, evaluate=not args.no_eval)
    meta = runner.run(config, resume=args.resume, progress=not args.quiet)
    print(f"trained {config.model} on {config.data}: {meta['step']} steps in "
          f"{meta['time_s']:.1f} s; samples, curves, metrics.json and checkpoint.npz in {out}")


def sample(args):
    backend.use(args.backend)
    states, meta = checkpoint.load(args.checkpoint)
    config = meta["config"]
    gan = models.build(config["model"], meta["data_shape"], **meta["model_options"])
    gan.generator.load_state_dict(states["generator"])
    if args.label is not None and not gan.conditional_g:
        raise ValueError(f"--label applies to conditional models (cgan, acgan), not {gan.name}")
    if args.label is not None and not 0 <= args.label < gan.num_classes:
        raise ValueError(f"--label must be in [0, {gan.num_classes}), got {args.label}")
    rng = np.random.default_rng(args.seed)
    z = backend.to_device(rng.standard_normal((args.n, gan.z_dim)).astype(np.float32))
    y = None
    if gan.conditional_g:
        labels = (np.full(args.n, args.label) if args.label is not None
                  else np.arange(args.n) % gan.num_classes)
        y = backend.to_device(labels)
    samples = runner.generate(gan, z, y)
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    title = f"{gan.name} samples" + (f", label {args.label}" if args.label is not None else "")
    if len(gan.data_shape) == 1:
        real, _ = data.TOY_DATASETS[config["data"]].sample(2500, np.random.default_rng(0))
        plots.save_scatter(args.out, samples, real, title)
    else:
        rows = max(1, int(np.sqrt(args.n)))
        plots.save_image_grid(args.out, samples, rows, title)
    print(f"wrote {args.n} samples to {args.out}")


def check_data_dir(folder):
    """A --data-dir that does not exist fails at once, not after trying other places."""
    if folder and not os.path.isdir(folder):
        raise ValueError(f"--data-dir {folder}: no such folder")


def evaluate(args):
    check_data_dir(args.data_dir)
    backend.use(args.backend)
    report = metrics.evaluate_checkpoint(args.checkpoint, args.classifier, args.n,
                                         args.data_dir, args.seed)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "eval.json")
    metrics.write_json(out, report)
    print("\n".join(metrics.format_report(report)))
    print(f"wrote {out}")


def classifier_command(args):
    check_data_dir(args.data_dir)
    backend.use(args.backend)
    classifier.train_command(args.data, args.data_dir, args.epochs, args.out, args.seed)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings (e.g. "only the test split was found") as one line, without source code."""
    print(f"tinygan: warning: {message}", file=sys.stderr)


COMMANDS = {"train": train, "sample": sample, "eval": evaluate, "classifier": classifier_command}


def main(argv=None):
    parser = Parser(prog="tinygan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_sample_parser(sub)
    add_eval_parser(sub)
    add_classifier_parser(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0), or a usage error already reported (2)
        return stop.code
    warnings.showwarning = show_warning
    try:
        COMMANDS[args.command](args)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"tinygan {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tinygan: interrupted", file=sys.stderr)
        return 130
    return 0
