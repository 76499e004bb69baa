"""The tinygan command: tinygan train, sample, eval and classifier train.

Every expected failure (bad arguments, missing or damaged data, a broken checkpoint,
an unavailable backend) ends as one line on stderr and a non-zero exit status.
"""

import argparse
import dataclasses
import math
import os
import signal
import sys
import threading
import warnings

import numpy as np

from tinygan import (
    __version__,
    backend,
    checkpoint,
    classifier,
    data,
    files,
    metrics,
    models,
    plots,
    runner,
)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (the full usage is one --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(text, kind, ok, expected):
    """argparse type: ``kind(text)`` when ``ok`` of it holds, else a one-line error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if not ok(value):  # nan and inf fail every test below
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
    return value


def path(text):
    """argparse type for file and folder flags: an empty one (``--out ""``, an unset shell
    variable) is an error, not a silent fall-back to the default or the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return text


def positive_int(text):
    return number(text, int, lambda v: v >= 1, "a positive integer")


def at_least_two(text):  # a covariance needs two samples
    return number(text, int, lambda v: v >= 2, "an integer >= 2")


def non_negative_int(text):
    return number(text, int, lambda v: v >= 0, "a non-negative integer")


def positive_float(text):
    return number(text, float, lambda v: 0 < v < math.inf, "a positive number")


def non_negative_float(text):
    return number(text, float, lambda v: 0 <= v < math.inf, "a non-negative number")


def probability(text):
    return number(text, float, lambda v: 0 <= v < 1, "in [0, 1)")


def fraction(text):
    return number(text, float, lambda v: 0 <= v <= 1, "in [0, 1]")


def add_backend_argument(parser):
    # no default here: see chosen_backend
    parser.add_argument("--backend", choices=backend.BACKENDS,
                        help="array library (default: $TINYGAN_BACKEND, else numpy)")


def chosen_backend(flag):
    """--backend if given, else the backend in use (TINYGAN_BACKEND's, else numpy), looked
    up when the command runs, so that a TINYGAN_BACKEND that cannot run is one line."""
    return flag or backend.name()


def add_train_parser(sub):
    p = sub.add_parser("train", help="train a GAN",
                       description="Train a GAN; with no arguments, the vanilla GAN on the ring.")
    p.set_defaults(parser=p)  # for errors found after parsing (run_command)
    # The run's settings default to None here and take RunConfig's defaults later, so that
    # with --resume a flag given explicitly can be told from one left out.
    p.add_argument("--model", choices=models.FAMILIES, help="default: gan")
    p.add_argument("--data", choices=list(data.TOY_DATASETS) + list(runner.IMAGE_DATA),
                   help="default: ring")
    p.add_argument("--data-dir", type=path,
                   help="folder with the IDX .gz files (or mnist/ etc. inside)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int)
    length.add_argument("--steps", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float,
                   help="learning rate of both networks (default: the model's)")
    p.add_argument("--lr-decay", type=fraction, metavar="FRACTION",
                   help="lower the learning rate linearly to 0 over this last share of the run "
                        "(default: 0.5 for 2-D data, 0 for images)")
    add_backend_argument(p)
    p.add_argument("--seed", type=non_negative_int, help="default: 0")
    p.add_argument("--out", type=path, help="output folder (default: runs/MODEL-DATA)")
    p.add_argument("--resume", type=path, metavar="FILE",
                   help="continue the run saved in this checkpoint, with its settings")
    p.add_argument("--z-dim", type=positive_int)
    tricks = p.add_argument_group("stabilisation tricks")
    tricks.add_argument("--label-smoothing", type=probability,
                        help="one-sided: real targets become 1 - s")
    tricks.add_argument("--label-noise", type=probability)
    tricks.add_argument("--flip-labels", type=probability)
    tricks.add_argument("--instance-noise", type=non_negative_float,
                        help="std of Gaussian noise added to D's inputs")
    tricks.add_argument("--g-dropout", type=probability)
    tricks.add_argument("--minimax", action="store_true", default=None,
                        help="G minimises log(1 - D(G(z))) instead of the non-saturating loss")
    tricks.add_argument("--fake-class-loss", action="store_true", default=None,
                        help="acgan: D's class head also fits fakes to the labels they were "
                             "drawn for (the paper's L_C; default: real images only)")
    p.add_argument("--no-eval", action="store_true", help="skip per-epoch evaluation metrics")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_sample_parser(sub):
    p = sub.add_parser("sample", help="draw samples from a trained generator")
    p.set_defaults(parser=p)  # for errors found after parsing (run_command)
    p.add_argument("--checkpoint", type=path, required=True, metavar="FILE")
    p.add_argument("--n", type=positive_int, default=64)
    p.add_argument("--label", type=int, help="class to draw (conditional models)")
    p.add_argument("--out", type=path, default="samples.png", metavar="FILE.png",
                   help="default: samples.png in the current folder (the run's own "
                        "samples.png beside the checkpoint is left alone)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    add_backend_argument(p)


def add_eval_parser(sub):
    p = sub.add_parser("eval", help="score a trained generator (FD, classifier score, coverage)",
                       description="Print the metrics that apply to a trained model and write "
                                   "them to JSON: mode coverage on 2-D data; on images FD on "
                                   "a classifier's features and logits, its classifier score "
                                   "and, for conditional models, class accuracy.")
    p.set_defaults(parser=p)  # for errors found after parsing (run_command)
    p.add_argument("--checkpoint", type=path, required=True, metavar="FILE")
    p.add_argument("--classifier", type=path, metavar="FILE",
                   help="classifier checkpoint (default: the one `tinygan classifier train` "
                        "saved in the cache folder)")
    p.add_argument("--n", type=at_least_two,
                   help=f"samples per set, >= 2 (default: {metrics.IMAGE_SAMPLES} for images, "
                        f"{metrics.TOY_SAMPLES} for 2-D data as in VEEGAN/PacGAN)")
    p.add_argument("--out", type=path, metavar="FILE.json",
                   help="default: eval.json beside the checkpoint")
    p.add_argument("--data-dir", type=path,
                   help="folder with the real images (default: the run's)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the generator's noise")
    add_backend_argument(p)


def add_classifier_parser(sub):
    p = sub.add_parser("classifier", help="the classifier that image metrics are measured with")
    actions = p.add_subparsers(dest="action", metavar="{train}", required=True)
    t = actions.add_parser("train", help="train it on the test split and report its accuracy",
                           description="Train the evaluation classifier on the first 80% of "
                                       "the test split (rounded down to a multiple of 500) "
                                       "and report its accuracy on the rest.")
    t.set_defaults(parser=t)  # for errors found after parsing (run_command)
    t.add_argument("--data", choices=data.DATASETS, required=True)
    t.add_argument("--data-dir", type=path,
                   help="folder with the IDX .gz files (or mnist/ etc. inside)")
    t.add_argument("--epochs", type=positive_int,
                   help=", ".join(f"{k}: {v}" for k, v in classifier.DEFAULT_EPOCHS.items()))
    t.add_argument("--out", type=path, metavar="FILE.npz",
                   help="default: classifier-DATA.npz in the cache folder, where eval looks")
    t.add_argument("--seed", type=non_negative_int, default=0)
    add_backend_argument(t)


# RunConfig fields that the train command's flags set, and those a resumed run may change
RUN_FLAGS = ("model", "data", "data_dir", "epochs", "steps", "batch_size", "lr", "lr_decay",
             "backend", "seed", "z_dim", "g_dropout", "label_smoothing", "label_noise",
             "flip_labels", "instance_noise", "minimax", "fake_class_loss")
CHANGEABLE_ON_RESUME = ("epochs", "steps", "backend", "data_dir")


def check_data_dir(folder):
    """A --data-dir that does not exist fails at once, not after trying other places."""
    if folder and not os.path.isdir(folder):
        raise ValueError(f"--data-dir {folder}: no such folder")


def resumed_fields(given, saved_config, used=None):
    """The saved run's settings, with the length, backend and data folder as given.

    Any other flag that disagrees with the saved run is refused rather than ignored: the
    weights, optimizer state and schedule in the checkpoint belong to those settings.
    A setting the run left to its default agrees with the value that default came to
    (``used``: the batch size, lr, lr_decay and z_dim the run recorded it ran with).
    """
    used = used or {}
    # a setting added after the run was saved takes its default, which is what the run used
    # (not RunConfig(): its backend default would look up TINYGAN_BACKEND, set below anyway)
    defaults = {f.name: f.default for f in dataclasses.fields(runner.RunConfig)
                if f.default is not dataclasses.MISSING}
    saved = {**defaults, **saved_config}
    # runs saved before RunConfig.check() existed: read their settings as that code did
    for name in ("epochs", "batch_size", "z_dim"):
        if saved[name] == 0:  # 0 fell back to the default
            saved[name] = None
    if saved["epochs"] is not None and saved["steps"] is not None:  # steps won
        saved["epochs"] = None
    if saved["data"] in data.TOY_DATASETS:  # an ignored --data-dir that older runs saved
        saved["data_dir"] = None
    for name, value in given.items():
        if value is None or name in CHANGEABLE_ON_RESUME or value == saved[name]:
            continue
        if saved[name] is None and name in used and value == used[name]:
            continue  # --batch-size 256 for a run on points that took the default 256
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):  # a switch, given as on
            given_text, saved_text = flag, "ran without it"
        else:
            was = saved[name]
            if was is None:
                was = f"the default ({used[name]})" if name in used else "the default"
            given_text, saved_text = f"{flag} {value}", f"used {was}"
        raise ValueError(f"{given_text}: the resumed run {saved_text}, and a resumed run "
                         "keeps its settings (start a new run to change them)")
    fields = {k: v for k, v in saved.items() if k in RUN_FLAGS}
    if given["epochs"] or given["steps"]:  # a new length replaces both saved fields
        fields["epochs"], fields["steps"] = given["epochs"], given["steps"]
    fields["backend"] = chosen_backend(given["backend"])  # not the saved one: this machine's
    fields["data_dir"] = given["data_dir"] or saved["data_dir"]
    return fields


def train(args):
    given = {f: getattr(args, f) for f in RUN_FLAGS}
    out = args.out
    first = 0  # the step training starts from
    if args.resume:
        saved = checkpoint.load_run(args.resume, checkpoint.RESUME_KEYS)[1]
        fields = resumed_fields(given, saved["config"], saved.get("settings_used"))
        first = saved["step"]
        # beside the checkpoint: a copy resumed elsewhere must not overwrite the original run
        out = out or os.path.dirname(os.path.abspath(args.resume))
    else:
        fields = {k: v for k, v in given.items() if v is not None}  # RunConfig's defaults
        model, data_name = (fields.get(k, getattr(runner.RunConfig, k)) for k in ("model", "data"))
        out = out or os.path.join("runs", f"{model}-{data_name}")
    saved_dir = fields.get("data_dir") if args.resume and not given["data_dir"] else None
    if saved_dir and not os.path.isdir(saved_dir):  # not a flag the user gave: say whose it is
        raise ValueError(f"the run's data folder {saved_dir} no longer exists; pass --data-dir "
                         "with the real images")
    check_data_dir(fields.get("data_dir"))
    if fields.get("data_dir"):  # absolute: a resumed run may start in another folder
        fields["data_dir"] = os.path.abspath(fields["data_dir"])
    config = runner.RunConfig(**fields, out=os.path.abspath(out), evaluate=not args.no_eval)
    meta = runner.run(config, resume=args.resume, progress=not args.quiet)
    outputs = f"samples, curves, metrics.json and checkpoint.npz in {out}"
    what = f"{config.model} on {config.data}"
    if meta["step"] == first:
        print(f"{what}: already at step {first}, nothing to train (ask for more --steps or "
              f"--epochs); {outputs}")
    elif first:
        print(f"trained {what} from step {first} to step {meta['step']} ({meta['time_s']:.1f} s "
              f"of training in all); {outputs}")
    else:
        print(f"trained {what}: {meta['step']} steps in {meta['time_s']:.1f} s; {outputs}")
    if meta["eval"]:  # the last end-of-epoch evaluation
        last = meta["eval"][-1]
        print(f"at step {last['step']}: {metrics.training_summary(last, config.data)}")


def sample(args):
    backend.use(chosen_backend(args.backend))
    files.check_output_file(args.out, ".png")
    files.check_writable(os.path.dirname(os.path.abspath(args.out)), "--out folder")
    states, meta = checkpoint.load_run(args.checkpoint)
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
    title = f"{gan.name} samples" + (f", label {args.label}" if args.label is not None else "")
    if len(gan.data_shape) == 1:
        real, _ = data.TOY_DATASETS[config["data"]].sample(2500, np.random.default_rng(0))
        plots.save_scatter(args.out, samples, real, title)
    else:
        rows = max(1, int(np.sqrt(args.n)))
        plots.save_image_grid(args.out, samples, rows, title)
    print(f"wrote {args.n} samples to {args.out}")


def evaluate(args):
    check_data_dir(args.data_dir)
    backend.use(chosen_backend(args.backend))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "eval.json")
    files.check_output_file(out, ".json")  # before the evaluation; never over a checkpoint
    files.check_writable(os.path.dirname(os.path.abspath(out)), "folder of the report")
    report = metrics.evaluate_checkpoint(args.checkpoint, args.classifier, args.n,
                                         args.data_dir, args.seed)
    metrics.write_json(out, report)
    print("\n".join(metrics.format_report(report)))
    print(f"wrote {out}")


def classifier_command(args):
    check_data_dir(args.data_dir)
    backend.use(chosen_backend(args.backend))
    classifier.train_command(args.data, args.data_dir, args.epochs, args.out, args.seed)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings (e.g. "only the test split was found") as one line, without source code."""
    print(f"tinygan: warning: {message}", file=sys.stderr)


COMMANDS = {"train": train, "sample": sample, "eval": evaluate, "classifier": classifier_command}


class Terminated(BaseException):
    """Raised by SIGTERM, like KeyboardInterrupt by Ctrl-C: a BaseException, so no ``except
    Exception`` swallows it, and the stack unwinds through every ``finally``."""


def raise_terminated(signum, frame):
    raise Terminated


def main(argv=None):
    """Run the command; SIGTERM (``kill``, a job scheduler's stop) ends it as Ctrl-C does,
    so a half-downloaded or half-written file is removed instead of left behind."""
    if threading.current_thread() is not threading.main_thread():  # only it gets signals
        return run_command(argv)
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return run_command(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(argv):
    parser = Parser(prog="tinygan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tinygan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_sample_parser(sub)
    add_eval_parser(sub)
    add_classifier_parser(sub)
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the command's own parser, whose --help lists its flags
            args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as stop:  # --help (0), or a usage error already reported (2)
        return stop.code
    warnings.showwarning = show_warning
    try:
        COMMANDS[args.command](args)
    except EXPECTED_ERRORS as err:
        print(f"tinygan {args.command}: {one_line(err)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as stop:
        print(f"tinygan: {one_line(stop)}", file=sys.stderr)
        return 130 if isinstance(stop, KeyboardInterrupt) else 128 + signal.SIGTERM
    return 0


# what bad input, missing files or a lack of memory raise; anything else is a bug
EXPECTED_ERRORS = (ValueError, KeyError, RuntimeError, OSError, MemoryError)


def one_line(err):
    """How an expected error, Ctrl-C or kill is reported: one line, after "PROG: "."""
    if isinstance(err, (KeyboardInterrupt, Terminated)):
        how = "interrupted" if isinstance(err, KeyboardInterrupt) else "terminated"
        return "; ".join([how, *getattr(err, "__notes__", [])])  # training says where
    message = files.first_line(err)
    if isinstance(err, MemoryError):
        message = f"out of memory ({message}); ask for less, e.g. a smaller --n or batch"
    return f"error: {message}"


def one_line_errors(prog):
    """Make a script (the demos) end as the tinygan command does: an expected error, Ctrl-C
    or kill as one line on stderr, each warning as one line. A bug keeps its traceback."""
    def report(kind, err, traceback):
        if isinstance(err, (*EXPECTED_ERRORS, KeyboardInterrupt, Terminated)):
            print(f"{prog}: {one_line(err)}", file=sys.stderr)
        else:
            sys.__excepthook__(kind, err, traceback)

    sys.excepthook = report
    warnings.showwarning = show_warning
    if threading.current_thread() is threading.main_thread():  # only it gets signals
        signal.signal(signal.SIGTERM, raise_terminated)
