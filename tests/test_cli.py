"""The ``tinygan`` command: every model trains and samples; every expected failure is one line.

Commands run in-process through ``tinygan.cli.main([...])`` (fast, and capsys sees the
output); one test runs ``python -m tinygan`` in a subprocess to prove the entry point.
Downloads are pointed at a closed local port and the cache at an empty folder, so no
test can reach the network or pick up files from outside tmp_path.
"""

import argparse
import gzip
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import cupy_works, pythonpath_with, write_idx
from http_server import closed_port_url, serve_stalled_download

import tinygan
from tinygan import backend, checkpoint, cli, data, metrics, models, nn, runner
from tinygan.train import Trainer, Tricks

OUTPUTS = {"samples.png", "losses.png", "metrics.json", "checkpoint.npz"}
PNG = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Any download hits a closed local port, never the internet."""
    monkeypatch.setenv("TINYGAN_MIRROR", closed_port_url())


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty download cache, so only --data-dir can answer (request it after data_dir,
    which reads $TINYGAN_DATA to find the real data)."""
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path / "empty-cache"))


def run(capsys, *argv):
    """(exit code, stdout, stderr lines) of ``tinygan ARGV``."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def assert_one_line_error(capsys, *argv, match):
    code, _, err = run(capsys, *argv)
    assert code != 0
    assert len(err) == 1 and err[0].startswith("tinygan"), err
    assert match in err[0], err[0]


def assert_outputs(out):
    assert OUTPUTS <= set(os.listdir(out))
    assert (out / "samples.png").read_bytes().startswith(PNG)
    assert (out / "losses.png").read_bytes().startswith(PNG)
    return json.loads((out / "metrics.json").read_text())


def assert_samples(capsys, checkpoint, out, *extra):
    code, stdout, _ = run(capsys, "sample", "--checkpoint", checkpoint, "--out", out, "--n", 12,
                          *extra)
    assert code == 0 and f"wrote 12 samples to {out}" in stdout
    assert out.read_bytes().startswith(PNG)


# -- every model, a few steps ---------------------------------------------------------------


@pytest.mark.parametrize("model, toy", [("gan", "ring"), ("cgan", "grid"), ("acgan", "ring"),
                                        ("wgan", "grid")])
def test_train_and_sample_on_toy_data(tmp_path, capsys, model, toy):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--model", model, "--data", toy, "--steps", 5,
                          "--batch-size", 500, "--out", out, "--quiet")
    assert code == 0 and f"trained {model} on {toy}: 5 steps" in stdout
    metrics = assert_outputs(out)
    assert metrics["step"] == 5 and metrics["config"]["model"] == model
    assert [h["step"] for h in metrics["history"]] == [1, 2, 3, 4, 5]
    assert_samples(capsys, out / "checkpoint.npz", tmp_path / "s" / "all.png")
    if model in ("cgan", "acgan"):
        assert_samples(capsys, out / "checkpoint.npz", tmp_path / "one.png", "--label", 3)


def trained_checkpoint(tmp_path, capsys, kind):
    """(checkpoint of a cgan a step or two into training, its number of classes): on the
    ring's 2-D points (8 components) through the CLI, or on random 28x28 images."""
    path = tmp_path / "run" / "checkpoint.npz"
    if kind == "points":
        assert run(capsys, "train", "--model", "cgan", "--steps", 2, "--batch-size", 1000,
                   "--out", path.parent, "--quiet")[0] == 0
        return path, 8
    gan = models.build("cgan", (1, 28, 28), 10)
    trainer = Trainer(gan)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 1, 28, 28)).astype(np.float32)
    trainer.step(backend.to_device(images), backend.to_device(np.arange(4)))
    meta = {"config": asdict(runner.RunConfig(model="cgan", data="mnist")),
            "data_shape": [1, 28, 28], "model_options": gan.options, "step": 1}
    checkpoint.save(path, trainer, meta)
    return path, 10


@pytest.mark.parametrize("kind", ["points", "images"])
def test_sample_draws_from_the_saved_generator(tmp_path, capsys, monkeypatch, kind):
    """What sample plots is the checkpoint's generator on the noise and labels it drew:
    labels K with --label K, else 0, 1, ..., K-1, 0, ...; the same --seed, the same
    samples; another --seed, other samples."""
    saved, classes = trained_checkpoint(tmp_path, capsys, kind)
    gan, _ = metrics.load_generator(saved)
    generate, drawn, plotted = runner.generate, [], []

    def recording_generate(gan, z, y=None):
        drawn.append((backend.to_host(z), backend.to_host(y)))
        return generate(gan, z, y)

    def plot(path, samples, *args):
        plotted.append((samples, args))

    monkeypatch.setattr(cli.runner, "generate", recording_generate)
    monkeypatch.setattr(cli.plots, "save_scatter", plot)
    monkeypatch.setattr(cli.plots, "save_image_grid", plot)

    def in_eval_mode(z, y):
        """G on (z, y) with BatchNorm on its running statistics (and no dropout)."""
        gan.generator.eval()
        out = backend.to_host(gan.generate(backend.to_device(z), backend.to_device(y)))
        gan.generator.train()
        return out

    def sample(*extra):
        assert run(capsys, "sample", "--checkpoint", saved, "--out", tmp_path / "s.png",
                   "--n", 12, *extra)[0] == 0
        (z, y), (samples, args) = drawn[-1], plotted[-1]
        assert z.shape == (12, gan.z_dim)
        np.testing.assert_array_equal(samples, in_eval_mode(z, y))
        if kind == "images":
            assert args[0] == 3  # rows: the square root of n, rounded down
        return y, samples

    labels, first = sample("--label", 3, "--seed", 5)
    assert labels.tolist() == [3] * 12
    assert np.array_equal(sample("--label", 3, "--seed", 5)[1], first)
    assert not np.allclose(sample("--label", 3, "--seed", 6)[1], first)
    assert sample()[0].tolist() == [i % classes for i in range(12)]
    assert np.array_equal(sample()[1], sample("--seed", 0)[1])  # the default seed is 0
    assert sample("--label", 0)[0].tolist() == [0] * 12  # the first class is a class
    # sampling neither trains BatchNorm's statistics nor leaves G in eval mode
    statistics = {k: np.array(backend.to_host(v)) for k, v in gan.generator.state_dict().items()
                  if "running" in k}
    assert statistics or kind == "images"  # the CGAN's generator has BatchNorm on points
    z, y = drawn[-1]
    generate(gan, backend.to_device(z), backend.to_device(y))
    assert gan.generator.training
    for k, v in gan.generator.state_dict().items():
        if k in statistics:
            np.testing.assert_array_equal(backend.to_host(v), statistics[k], err_msg=k)


@pytest.mark.parametrize("model", ["gan", "dcgan", "cgan", "acgan", "wgan"])
def test_train_and_sample_on_mnist(tmp_path, capsys, data_dir, empty_cache, model):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--model", model, "--data", "mnist", "--data-dir",
                            data_dir, "--steps", 2, "--batch-size", 8, "--out", out, "--quiet")
    assert code == 0, err
    # only the test split is in the shared folder: said once, in one line
    assert len(err) == 1 and err[0].startswith("tinygan: warning: mnist: no train files found")
    assert "trained" in stdout
    assert assert_outputs(out)["step"] == 2
    assert_samples(capsys, out / "checkpoint.npz", tmp_path / "samples.png")
    if model in ("cgan", "acgan"):
        assert_samples(capsys, out / "checkpoint.npz", tmp_path / "seven.png", "--label", 7)


def test_train_dcgan_on_partial_fashion_mnist(tmp_path, capsys, data_dir, empty_cache):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--model", "dcgan", "--data", "fashion-mnist",
                       "--data-dir", data_dir, "--steps", 2, "--batch-size", 8, "--out", out,
                       "--quiet")
    assert code == 0, err
    assert assert_outputs(out)["step"] == 2
    # the shared copy holds only part of the test split: both facts in one warning line
    assert len(err) == 1 and "partial copy" in err[0]


def capture_trainers(monkeypatch):
    """The list that every trainer ``runner.build_trainer`` builds is appended to."""
    built = []
    build_trainer = cli.runner.build_trainer
    monkeypatch.setattr(cli.runner, "build_trainer",
                        lambda *a: built.append(build_trainer(*a)) or built[-1])
    return built


def test_tricks_reach_the_run_config(tmp_path, capsys, monkeypatch):
    """The flags are saved with the run *and* reach the trainer that trains it: its tricks,
    both optimizers' rate, G's noise size and dropout."""
    built = capture_trainers(monkeypatch)
    out = tmp_path / "run"
    code, _, _ = run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", out, "--quiet",
                     "--label-smoothing", 0.1, "--label-noise", 0.05, "--flip-labels", 0.02,
                     "--instance-noise", 0.1, "--g-dropout", 0.2, "--minimax", "--lr", 3e-4,
                     "--z-dim", 3, "--seed", 7)
    assert code == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config == {**config, "label_smoothing": 0.1, "label_noise": 0.05, "flip_labels": 0.02,
                      "instance_noise": 0.1, "g_dropout": 0.2, "minimax": True, "lr": 3e-4,
                      "z_dim": 3, "seed": 7}
    (trainer,) = built
    assert trainer.tricks == Tricks(label_smoothing=0.1, label_noise=0.05, flip_labels=0.02,
                                    instance_noise=0.1, minimax=True)
    # one step of a run decaying over its second half: still the full rate
    assert trainer.base_lr == (3e-4, 3e-4) and trainer.g_opt.lr == trainer.d_opt.lr == 3e-4
    assert trainer.gan.z_dim == 3 and trainer.gan.generator[0].in_features == 3
    assert [m.p for _, m in trainer.gan.generator.modules()
            if isinstance(m, nn.Dropout)] == [0.2] * 4


def test_fake_class_loss_turns_on_the_papers_acgan(tmp_path, capsys, monkeypatch):
    """--fake-class-loss reaches the trainer and the saved settings; other models refuse it."""
    built = capture_trainers(monkeypatch)
    code, _, _ = run(capsys, "train", "--model", "acgan", "--steps", 1, "--batch-size", 500,
                     "--out", tmp_path / "on", "--quiet", "--fake-class-loss")
    assert code == 0 and built[-1].gan.d_class_loss_on_fake
    assert json.loads((tmp_path / "on" / "metrics.json").read_text())["config"]["fake_class_loss"]
    assert run(capsys, "train", "--model", "acgan", "--steps", 1, "--batch-size", 500,
               "--out", tmp_path / "off", "--quiet")[0] == 0
    assert not built[-1].gan.d_class_loss_on_fake
    assert_one_line_error(capsys, "train", "--model", "wgan", "--fake-class-loss", "--steps", 1,
                          "--out", tmp_path / "wgan", match="applies to acgan only")


def test_lr_decay_over_the_whole_run_is_accepted_and_used(tmp_path, capsys, monkeypatch):
    """--lr-decay takes [0, 1]: 1, its upper end, lowers the rate from the first step on,
    to 3/4, 1/2 and 1/4 of it over 4 steps (both networks)."""
    rates, step = [], cli.runner.Trainer.step

    def recording_step(trainer, *args):
        rates.append((trainer.g_opt.lr, trainer.d_opt.lr))
        return step(trainer, *args)

    monkeypatch.setattr(cli.runner.Trainer, "step", recording_step)
    assert run(capsys, "train", "--lr-decay", 1, "--lr", 1e-3, "--steps", 4, "--batch-size",
               1000, "--out", tmp_path, "--quiet")[0] == 0
    np.testing.assert_allclose(rates, [(1e-3, 1e-3), (7.5e-4, 7.5e-4), (5e-4, 5e-4),
                                       (2.5e-4, 2.5e-4)], rtol=1e-12)


def test_label_smoothing_of_one_is_refused(tmp_path, capsys):
    """Smoothing s makes the real targets 1 - s: s = 1 would make them the fake target 0."""
    assert_one_line_error(capsys, "train", "--label-smoothing", 1, "--steps", 1,
                          "--batch-size", 500, "--out", tmp_path,
                          match="argument --label-smoothing: must be in [0, 1), got 1")
    assert not (tmp_path / "metrics.json").exists()


def test_progress_bar_without_a_terminal_prints_lines(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--steps", 20, "--batch-size", 500, "--out", tmp_path)
    assert code == 0
    assert err[-1].startswith("step 20/20 [########################]") and len(err) == 10


def test_progress_bar_on_a_terminal_redraws_one_line(monkeypatch):
    """On a terminal: each update returns to the line's start (\\r) and erases what a longer
    line left there (ESC [K), at most every 0.2 s but always for the last step, which
    ends the line."""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clock = iter([10.0, 10.1, 10.3, 10.35])  # the second update comes too soon after the first
    monkeypatch.setattr(runner, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    stream = Terminal()
    bar = runner.Progress(4, stream)
    for step in range(1, 5):
        bar.update(step, {"d_loss": step / 8}, 1000.0 * step)
    assert stream.getvalue() == (
        "\rstep 1/4 [######                  ] d_loss 0.1250 1,000 img/s\x1b[K"
        "\rstep 3/4 [##################      ] d_loss 0.3750 3,000 img/s\x1b[K"
        "\rstep 4/4 [########################] d_loss 0.5000 4,000 img/s\x1b[K\n")


def test_no_eval_skips_the_per_epoch_metrics(tmp_path, capsys, monkeypatch):
    """Two epochs of 10 steps: evaluated after each by default, never with --no-eval."""
    common = ["train", "--steps", 20, "--batch-size", 1000, "--quiet"]
    assert run(capsys, *common, "--out", tmp_path / "on")[0] == 0
    assert [e["step"] for e in json.loads((tmp_path / "on" / "metrics.json").read_text())[
        "eval"]] == [10, 20]
    monkeypatch.setattr(cli.metrics, "evaluate_for_training",
                        lambda *a: pytest.fail("evaluated with --no-eval"))
    assert run(capsys, *common, "--out", tmp_path / "off", "--no-eval")[0] == 0
    saved = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert saved["eval"] == [] and saved["step"] == 20


def test_eval_writes_beside_the_checkpoint_by_default(tmp_path, capsys, monkeypatch):
    """Not into the folder the command runs in."""
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", tmp_path / "run",
               "--quiet")[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, stdout, _ = run(capsys, "eval", "--checkpoint", tmp_path / "run" / "checkpoint.npz",
                          "--n", 100)
    report = tmp_path / "run" / "eval.json"
    assert code == 0 and f"wrote {report}" in stdout
    assert json.loads(report.read_text())["n"] == 100
    assert list(elsewhere.iterdir()) == []


def test_resume_of_an_image_run_finds_its_data_without_data_dir(tmp_path, capsys, data_dir,
                                                               empty_cache, monkeypatch):
    """The run saved its (absolute) data folder; resuming from another folder with no
    --data-dir and an empty cache reads the images from there again."""
    assert run(capsys, "train", "--data", "mnist", "--data-dir", data_dir, "--steps", 2,
               "--batch-size", 8, "--out", tmp_path / "run", "--quiet", "--no-eval")[0] == 0
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "train", "--resume", tmp_path / "run" / "checkpoint.npz",
                       "--steps", 3, "--quiet")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["step"] == 3 and saved["config"]["data_dir"] == os.path.abspath(data_dir)


def test_resume_with_a_new_length_replaces_the_saved_one(tmp_path, capsys):
    """The first run was given --steps; resuming with --epochs must not keep the old --steps."""
    common = ["--batch-size", 1000, "--quiet"]  # 10 steps an epoch on 10,000 toy points
    assert run(capsys, "train", "--steps", 3, "--out", tmp_path, *common)[0] == 0
    code, stdout, _ = run(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--epochs", 2,
                          "--quiet")
    assert code == 0 and "from step 3 to step 20 " in stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 20


def test_resume_reads_an_older_runs_settings_as_that_code_did():
    """Runs saved before RunConfig.check() existed may hold a 0 for "the default" and both
    epochs and steps (steps won): resuming them goes on as they ran, not with an error."""
    older = {**asdict(runner.RunConfig(steps=5)), "epochs": 1, "batch_size": 0,
             "z_dim": 0}
    fields = cli.resumed_fields(dict.fromkeys(cli.RUN_FLAGS), older)
    assert [fields[k] for k in ("epochs", "steps", "batch_size", "z_dim")] == [None, 5, None,
                                                                                None]
    runner.RunConfig(**fields).check()


def test_resume_refuses_settings_it_would_ignore(tmp_path, capsys):
    """Only the length, backend and data folder of a resumed run can change."""
    assert run(capsys, "train", "--steps", 2, "--batch-size", 1000, "--out", tmp_path,
               "--quiet")[0] == 0
    saved = tmp_path / "checkpoint.npz"
    assert_one_line_error(capsys, "train", "--resume", saved, "--model", "wgan",
                          match="--model wgan: the resumed run used gan, and a resumed run keeps")
    assert_one_line_error(capsys, "train", "--resume", saved, "--lr", "0.5",
                          match="--lr 0.5: the resumed run used the default (0.0002),")
    assert_one_line_error(capsys, "train", "--resume", saved, "--minimax",
                          match="--minimax: the resumed run ran without it,")
    assert_one_line_error(capsys, "train", "--resume", saved, "--z-dim", 3,
                          match="--z-dim 3: the resumed run used the default (2),")
    # the same values as saved are fine, and so are the values its defaults came to (they
    # were refused as "the resumed run used the default")
    assert run(capsys, "train", "--resume", saved, "--model", "gan", "--batch-size", 1000,
               "--steps", 3, "--lr", "0.0002", "--lr-decay", "0.5", "--z-dim", 2,
               "--quiet")[0] == 0


def test_resume_of_a_run_saved_before_a_setting_existed(tmp_path, capsys):
    """A checkpoint whose saved settings lack a newer field resumes with that field's default
    (what the run used), instead of failing with a KeyError."""
    assert run(capsys, "train", "--steps", 2, "--batch-size", 1000, "--out", tmp_path,
               "--quiet")[0] == 0
    saved = tmp_path / "checkpoint.npz"
    with np.load(saved) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays.pop("meta")))
    del meta["config"]["fake_class_loss"]
    checkpoint.save_npz_atomic(saved, arrays, meta)
    assert_one_line_error(capsys, "train", "--resume", saved, "--fake-class-loss",
                          match="--fake-class-loss: the resumed run ran without it")
    assert run(capsys, "train", "--resume", saved, "--steps", 3, "--quiet")[0] == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["fake_class_loss"] is False


def test_train_says_what_it_did_and_how_the_run_scores(tmp_path, capsys):
    """The last lines of `tinygan train`: the steps it took (none, for a finished run
    resumed as it was), and the run's last evaluation, as metrics.json holds it."""
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--epochs", 1, "--batch-size", 1000, "--out", out,
                          "--quiet")
    saved = json.loads((out / "metrics.json").read_text())
    steps, last = saved["step"], saved["eval"][-1]
    lines = stdout.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"trained gan on ring: {steps} steps in ")
    assert lines[1] == (f"at step {steps}: {last['modes']} of 8 modes covered, "
                        f"{last['hq_percent']:.1f}% of samples high quality")
    code, stdout, _ = run(capsys, "train", "--resume", out / "checkpoint.npz", "--quiet")
    assert code == 0 and stdout.startswith(f"gan on ring: already at step {steps}, nothing "
                                           "to train (ask for more --steps or --epochs)")
    code, stdout, _ = run(capsys, "train", "--resume", out / "checkpoint.npz", "--epochs", 2,
                          "--quiet")
    lines = stdout.splitlines()
    assert code == 0 and lines[0].startswith(f"trained gan on ring from step {steps} to step "
                                             f"{2 * steps} (")
    assert lines[1].startswith(f"at step {2 * steps}: ")


def test_resume_writes_beside_the_checkpoint(tmp_path, capsys):
    """A copy of a checkpoint resumed in another folder writes there: the run it was copied
    from is left alone."""
    assert run(capsys, "train", "--steps", 2, "--batch-size", 1000, "--out", tmp_path / "a",
               "--quiet")[0] == 0
    original = (tmp_path / "a" / "checkpoint.npz").read_bytes()
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "checkpoint.npz", tmp_path / "b" / "copy.npz")
    assert run(capsys, "train", "--resume", tmp_path / "b" / "copy.npz", "--steps", 4,
               "--quiet")[0] == 0
    assert (tmp_path / "a" / "checkpoint.npz").read_bytes() == original
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["step"] == 4


def test_resume_with_a_shorter_length_is_refused(tmp_path, capsys):
    assert run(capsys, "train", "--steps", 4, "--batch-size", 1000, "--out", tmp_path,
               "--quiet")[0] == 0
    assert_one_line_error(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--steps", 2,
                          match="the resumed run is at step 4, past the 2 steps asked for")


@pytest.mark.parametrize("stop_at, note", [
    (5, "stopped at step 4 of 30; no checkpoint yet (one is saved at the end of every epoch)"),
    (15, "stopped at step 14 of 30; the checkpoint of step 10 is {out}/checkpoint.npz "
         "(--resume it to go on)"),
])
def test_ctrl_c_says_where_training_stopped(tmp_path, capsys, monkeypatch, stop_at, note):
    """An epoch is 10 steps here; Ctrl-C comes during step ``stop_at``."""
    step, calls = cli.runner.Trainer.step, []

    def step_then_interrupt(trainer, *args):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return step(trainer, *args)

    monkeypatch.setattr(cli.runner.Trainer, "step", step_then_interrupt)
    code, _, err = run(capsys, "train", "--steps", 30, "--batch-size", 1000, "--out", tmp_path,
                       "--quiet")
    assert code == 130 and err == [f"tinygan: interrupted; {note.format(out=tmp_path)}"]


def test_resume_works_from_another_folder(tmp_path, capsys, monkeypatch):
    """The output folder is saved as an absolute path, so a relative --out still resolves."""
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "train", "--steps", 2, "--batch-size", 1000, "--out", "rel",
               "--quiet")[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run(capsys, "train", "--resume", tmp_path / "rel" / "checkpoint.npz", "--steps", 4,
               "--quiet")[0] == 0
    assert json.loads((tmp_path / "rel" / "metrics.json").read_text())["step"] == 4
    assert not (elsewhere / "rel").exists()


def test_resuming_a_finished_run_into_a_new_folder_writes_its_outputs(tmp_path, capsys):
    assert run(capsys, "train", "--steps", 2, "--batch-size", 1000, "--out", tmp_path / "a",
               "--quiet")[0] == 0
    assert run(capsys, "train", "--resume", tmp_path / "a" / "checkpoint.npz", "--out",
               tmp_path / "b", "--quiet")[0] == 0
    assert assert_outputs(tmp_path / "b")["step"] == 2


def test_an_unwritable_output_fails_before_training(tmp_path, capsys, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be\n")
    started = []
    monkeypatch.setattr(cli.runner, "Trainer", lambda *a, **k: started.append(1))
    assert_one_line_error(capsys, "train", "--steps", 2, "--out", blocked / "run",
                          match=f"output folder {blocked / 'run'}: {blocked} is a file, "
                                "not a folder")
    assert not started


def test_sample_out_must_be_a_png_file(tmp_path, capsys):
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", tmp_path / "run",
               "--quiet")[0] == 0
    for out in (tmp_path, tmp_path / "noext", tmp_path / "s.jpg"):
        assert_one_line_error(capsys, "sample", "--checkpoint", tmp_path / "run" / "checkpoint.npz",
                              "--out", out, match="expected the path of a .png file")
    code, stdout, _ = run(capsys, "sample", "--checkpoint", tmp_path / "run" / "checkpoint.npz",
                          "--out", tmp_path / "new" / "s.png")
    assert code == 0 and f"to {tmp_path / 'new' / 's.png'}" in stdout
    assert (tmp_path / "new" / "s.png").read_bytes().startswith(PNG)


def test_a_checkpoint_from_elsewhere_is_named_as_such(tmp_path, capsys):
    """A .npz with tinygan's layout but no run settings (e.g. a classifier, or
    checkpoint.save called by hand) is refused in one line, not with a KeyError."""
    import numpy as np

    np.savez(tmp_path / "foreign.npz", meta=np.array("{}"))
    np.savez(tmp_path / "list.npz", meta=np.array("[1, 2]"))
    assert_one_line_error(capsys, "sample", "--checkpoint", tmp_path / "foreign.npz",
                          match="has no 'config' in its meta: it was not written by a training")
    assert_one_line_error(capsys, "sample", "--checkpoint", tmp_path / "list.npz",
                          match="its 'meta' entry is not a JSON object")


def test_outputs_and_checkpoints_get_the_usual_file_mode(tmp_path, capsys):
    """Written through temporary files (mode 0600), renamed: the result must be readable
    by whoever may read the folder, like any file the user creates."""
    old = os.umask(0o022)
    try:
        assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", tmp_path,
                   "--quiet")[0] == 0
    finally:
        os.umask(old)
    for name in OUTPUTS:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_a_failed_write_keeps_the_previous_metrics(tmp_path, capsys, monkeypatch):
    assert run(capsys, "train", "--steps", 2, "--batch-size", 1000, "--out", tmp_path,
               "--quiet")[0] == 0
    before = (tmp_path / "metrics.json").read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli.runner.json, "dump", disk_full)
    assert_one_line_error(capsys, "train", "--resume", tmp_path / "checkpoint.npz", "--steps", 4,
                          "--quiet", match="No space left on device")
    assert (tmp_path / "metrics.json").read_text() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_help_exits_zero(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--model" in capsys.readouterr().out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"tinygan {tinygan.__version__}\n"


# -- expected failures: one line on stderr, non-zero exit ----------------------------------------


@pytest.mark.parametrize("argv, match", [
    ([], "the following arguments are required: command"),
    (["fit"], "invalid choice: 'fit'"),
    (["train", "--model", "vae"], "argument --model: invalid choice: 'vae'"),
    (["train", "--data", "cifar"], "argument --data: invalid choice: 'cifar'"),
    (["train", "--steps", "0"], "must be a positive integer, got 0"),
    (["train", "--steps", "ten"], "argument --steps: must be a positive integer, got 'ten'"),
    (["train", "--seed", "-1"], "argument --seed: must be a non-negative integer, got -1"),
    (["sample", "--checkpoint", "c.npz", "--seed", "-2"], "argument --seed: must be a non-"),
    (["train", "--lr", "inf"], "argument --lr: must be a positive number, got inf"),
    (["train", "--instance-noise", "nan"], "argument --instance-noise: must be a non-negative"),
    (["train", "--instance-noise", "-1"], "argument --instance-noise: must be a non-negative"),
    (["train", "--steps", "2", "--epochs", "1"], "not allowed with argument"),
    (["train", "--label-smoothing", "1.5"], "must be in [0, 1), got 1.5"),
    (["train", "--lr-decay", "2"], "must be in [0, 1], got 2"),
    (["train", "--batch-size", "-4"], "must be a positive integer, got -4"),
    (["train", "--lr", "0"], "argument --lr: must be a positive number, got 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a positive number, got nan"),
    (["train", "--backend", "tpu"], "invalid choice: 'tpu'"),
    (["sample"], "the following arguments are required: --checkpoint"),
    (["eval"], "the following arguments are required: --checkpoint"),
    (["classifier"], "tinygan classifier: error: the following arguments are required: {train}"),
    (["train", "--instance-noise", "inf"], "argument --instance-noise: must be a non-negative "
                                           "number, got inf"),
    (["train", "--label-noise", "1"], "argument --label-noise: must be in [0, 1), got 1"),
    # an empty path (an unset shell variable) fell back to the default: --resume "" started
    # a fresh run over the old one, --data-dir "" searched the current folder
    (["train", "--resume", ""], "argument --resume: must be a path, got an empty string"),
    (["train", "--out", " "], "argument --out: must be a path, got an empty string"),
    (["train", "--data-dir", ""], "argument --data-dir: must be a path, got an empty string"),
    (["sample", "--checkpoint", ""], "argument --checkpoint: must be a path"),
    (["eval", "--checkpoint", "c.npz", "--classifier", ""], "argument --classifier: must be a"),
    (["classifier", "train", "--data", "mnist", "--out", ""], "argument --out: must be a path"),
    (["eval", "--checkpoint", "c.npz", "--n", "1"], "argument --n: must be an integer >= 2, got 1"),
    # a misspelt flag is reported by its command, whose --help lists the right ones
    (["train", "--stpes", "5"], "tinygan train: error: unrecognized arguments: --stpes 5 "
                                "(see tinygan train --help)"),
    (["classifier", "train", "--data", "mnist", "--epohcs", "2"],
     "tinygan classifier train: error: unrecognized arguments: --epohcs 2 "
     "(see tinygan classifier train --help)"),
])
def test_bad_arguments(capsys, argv, match):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tinygan"), err
    assert match in err[0]


@pytest.mark.parametrize("kind, accepted, refused", [
    (cli.positive_int, "1", "0"), (cli.at_least_two, "2", "1"),
    (cli.non_negative_int, "0", "-1"), (cli.positive_float, "1e-300", "0"),
    (cli.non_negative_float, "0", "-1e-300"), (cli.probability, "0", "1"),
    (cli.probability, "0.999", "-0.001"), (cli.fraction, "1", "1.001"), (cli.fraction, "0", "-0.1"),
])
def test_argument_types_at_their_edges(kind, accepted, refused):
    """Each flag type accepts the edge value its message names and refuses the next one out."""
    assert kind(accepted) == float(accepted)
    with pytest.raises(argparse.ArgumentTypeError, match=f"^must be .*, got {refused}$"):
        kind(refused)


def test_classifier_train_hands_its_flags_and_defaults_on(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.classifier, "train_command", lambda *args: calls.append(args))
    assert cli.main(["classifier", "train", "--data", "mnist"]) == 0
    assert cli.main(["classifier", "train", "--data", "fashion-mnist", "--epochs", "3",
                     "--out", "c.npz", "--seed", "7"]) == 0
    # (data, data_dir, epochs, out, seed): seed 0 and the per-dataset epochs by default
    assert calls == [("mnist", None, None, None, 0), ("fashion-mnist", None, 3, "c.npz", 7)]


def test_bad_values_found_while_running(tmp_path, capsys):
    out = tmp_path / "run"
    assert_one_line_error(capsys, "train", "--batch-size", 20000, "--out", out,
                          match="batch size 20000 is larger than the 10000 training samples")
    assert_one_line_error(capsys, "train", "--model", "dcgan", "--steps", 1, "--out", out,
                          match="dcgan is convolutional and needs images")


def test_missing_data_dir(tmp_path, capsys):
    assert_one_line_error(capsys, "train", "--data", "mnist", "--data-dir", tmp_path / "nowhere",
                          "--out", tmp_path / "run",
                          match=f"--data-dir {tmp_path / 'nowhere'}: no such folder")


def test_corrupt_data_file(tmp_path, capsys, data_dir, empty_cache):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images, labels = data.FILES["test"]
    good = gzip.decompress((data_dir / "mnist" / images).read_bytes())
    (folder / images).write_bytes(gzip.compress(good[: len(good) // 2]))  # half the pixels
    (folder / labels).write_bytes((data_dir / "mnist" / labels).read_bytes())
    code, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", tmp_path, "--steps", 1,
                       "--out", tmp_path / "run")
    assert code == 1
    errors = [line for line in err if "error" in line]  # the "test split only" warning aside
    assert len(errors) == 1 and errors[0].startswith(f"tinygan train: error: {folder / images}:")
    assert "truncated" in errors[0]
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_damaged_gzip_stream(tmp_path, capsys, empty_cache):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images, labels = data.FILES["train"]
    raw = gzip.compress(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big")
                                                       for d in (2, 28, 28)) + bytes(2 * 784))
    (folder / images).write_bytes(raw[:-12])  # the gzip trailer cut off
    (folder / labels).write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2])))
    assert_one_line_error(capsys, "train", "--data", "mnist", "--data-dir", tmp_path,
                          "--steps", 1, "--out", tmp_path / "run",
                          match=f"tinygan train: error: {folder / images}: truncated gzip stream")


@pytest.fixture
def bad_checkpoints(tmp_path, capsys):
    """A real checkpoint cut in half, a text file, and a path that does not exist."""
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", tmp_path / "ok",
               "--quiet")[0] == 0
    raw = (tmp_path / "ok" / "checkpoint.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npz").write_text("hello\n")
    return [tmp_path / "half.npz", tmp_path / "text.npz", tmp_path / "missing.npz"]


def test_corrupt_checkpoint(tmp_path, capsys, bad_checkpoints):
    for path in bad_checkpoints:
        assert_one_line_error(capsys, "sample", "--checkpoint", path, "--out", tmp_path / "s.png",
                              match=f"tinygan sample: error: checkpoint {path}")
        assert_one_line_error(capsys, "train", "--resume", path,
                              match=f"tinygan train: error: checkpoint {path}")
    assert not (tmp_path / "s.png").exists()


def test_checkpoint_mistakes_are_named(tmp_path, capsys):
    """A folder, a text file, a classifier: each is named for what it is."""
    folder = tmp_path / "run"
    folder.mkdir()
    assert_one_line_error(capsys, "train", "--resume", folder,
                          match=f"checkpoint {folder} is a folder; expected the .npz file "
                                f"(e.g. {folder / 'checkpoint.npz'})")
    text = tmp_path / "text.npz"
    text.write_text("hello\n")
    code, _, err = run(capsys, "sample", "--checkpoint", text, "--out", tmp_path / "s.png")
    assert code == 1 and "(not a zip archive)" in err[0] and "pickle" not in err[0], err
    other = tmp_path / "classifier.npz"
    checkpoint.save_npz_atomic(other, {"net/body.0.weight": np.zeros(2)},
                               {"kind": "tinygan-classifier"})
    assert_one_line_error(capsys, "sample", "--checkpoint", other, "--out", tmp_path / "s.png",
                          match="this is a tinygan-classifier file, not a GAN checkpoint")


def test_sample_and_eval_check_their_output_before_working(tmp_path, capsys, monkeypatch):
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", tmp_path / "run",
               "--quiet")[0] == 0
    saved = tmp_path / "run" / "checkpoint.npz"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be\n")
    monkeypatch.setattr(cli.runner, "generate", lambda *a: pytest.fail("sampled first"))
    assert_one_line_error(capsys, "sample", "--checkpoint", saved, "--out", blocked / "s.png",
                          match=f"--out folder {blocked} is a file, not a folder")
    monkeypatch.setattr(cli.metrics, "evaluate_checkpoint", lambda *a: pytest.fail("scored first"))
    assert_one_line_error(capsys, "eval", "--checkpoint", saved, "--out", blocked / "e.json",
                          match=f"folder of the report {blocked} is a file, not a folder")


def test_classifier_names_the_cache_when_no_out_was_given(tmp_path, capsys, data_dir,
                                                          monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be\n")
    monkeypatch.setenv("TINYGAN_DATA", str(blocked))
    assert_one_line_error(capsys, "classifier", "train", "--data", "mnist", "--data-dir", data_dir,
                          match=f"cache folder {blocked} is a file, not a folder")


@pytest.mark.parametrize("name", ["clf.pt", "folder.npz"])
def test_classifier_train_wants_an_npz_file_to_write(tmp_path, capsys, data_dir, monkeypatch,
                                                     name):
    (tmp_path / "folder.npz").mkdir()
    monkeypatch.setattr(cli.classifier, "train", lambda *a, **k: pytest.fail("trained first"))
    assert_one_line_error(capsys, "classifier", "train", "--data", "mnist", "--data-dir", data_dir,
                          "--out", tmp_path / name,
                          match=f"--out {tmp_path / name}: expected the path of a .npz file")


def test_eval_refuses_a_classifier_for_points(tmp_path, capsys):
    """2-D runs are scored by mode coverage; a --classifier is refused, not ignored."""
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", tmp_path,
               "--quiet")[0] == 0
    assert_one_line_error(capsys, "eval", "--checkpoint", tmp_path / "checkpoint.npz",
                          "--classifier", tmp_path / "c.npz", match="a classifier scores images")


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """E.g. sample --n 100000000 asks NumPy for 48 GiB."""
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", tmp_path,
               "--quiet")[0] == 0

    def allocate(*args):
        raise MemoryError("Unable to allocate 47.7 GiB for an array")

    monkeypatch.setattr(cli.runner, "generate", allocate)
    assert_one_line_error(capsys, "sample", "--checkpoint", tmp_path / "checkpoint.npz",
                          "--out", tmp_path / "s.png",
                          match="out of memory (Unable to allocate 47.7 GiB for an array); ask")


def test_bad_sample_labels(tmp_path, capsys):
    for model in ("gan", "cgan"):
        assert run(capsys, "train", "--model", model, "--steps", 1, "--batch-size", 500,
                   "--out", tmp_path / model, "--quiet")[0] == 0
    assert_one_line_error(capsys, "sample", "--checkpoint", tmp_path / "gan" / "checkpoint.npz",
                          "--label", 1, "--out", tmp_path / "s.png",
                          match="--label applies to conditional models (cgan, acgan), not gan")
    assert_one_line_error(capsys, "sample", "--checkpoint", tmp_path / "cgan" / "checkpoint.npz",
                          "--label", 8, "--out", tmp_path / "s.png",
                          match="--label must be in [0, 8), got 8")
    assert_one_line_error(capsys, "sample", "--checkpoint", tmp_path / "cgan" / "checkpoint.npz",
                          "--label", -1, "--out", tmp_path / "s.png",
                          match="--label must be in [0, 8), got -1")


@pytest.mark.skipif(cupy_works(), reason="CuPy runs on a GPU here")
def test_unavailable_backend(tmp_path, capsys):
    """Without CuPy, or with CuPy but no GPU (as in CI), --backend cupy says which."""
    if importlib.util.find_spec("cupy") is None:
        expected = "tinygan backend 'cupy' needs CuPy, which is not installed"
    else:  # "...: no usable GPU (the CUDA error)" or "...: CuPy is installed but no GPU..."
        expected = "tinygan backend 'cupy': "
    assert_one_line_error(capsys, "train", "--backend", "cupy", "--steps", 1,
                          "--out", tmp_path / "run", match=expected)


# -- the entry point ---------------------------------------------------------------------------


def test_python_dash_m_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO), "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tinygan", "train", "--steps", "5", "--batch-size", "500",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "trained gan on ring: 5 steps" in result.stdout
    assert_outputs(tmp_path / "run")
    bad = subprocess.run([sys.executable, "-m", "tinygan", "train", "--model", "vae"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


def test_an_unusable_tinygan_backend_variable_is_a_one_line_error(tmp_path):
    """The backend is chosen on first use, inside the command, so a TINYGAN_BACKEND that
    cannot run is reported like any other bad input, not as a traceback from an import."""
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO), "TINYGAN_BACKEND": "nope"}
    result = subprocess.run([sys.executable, "-m", "tinygan", "train", "--steps", "1",
                             "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "tinygan train: error: TINYGAN_BACKEND=nope: unknown tinygan backend 'nope'; "
        "valid backends: numpy, cupy"]
    assert not (tmp_path / "run").exists()


def test_commands_run_on_the_backend_in_use_unless_told(tmp_path, capsys, monkeypatch):
    """Without --backend, train (new or resumed) and sample use the backend in use, which is
    TINYGAN_BACKEND's: `TINYGAN_BACKEND=cupy tinygan train` trains on the GPU, and a run saved
    on a GPU resumes on this machine's backend. --backend still wins."""
    asked = []
    real_use = backend.use
    monkeypatch.setattr(backend, "name", lambda: "cupy")  # as if TINYGAN_BACKEND=cupy
    monkeypatch.setattr(backend, "use", lambda name: asked.append(name) or real_use("numpy"))
    saved = tmp_path / "run" / "checkpoint.npz"
    quiet = ("--quiet", "--no-eval")
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", saved.parent,
               *quiet)[0] == 0
    assert run(capsys, "train", "--resume", saved, "--steps", 2, *quiet)[0] == 0
    assert run(capsys, "sample", "--checkpoint", saved, "--out", tmp_path / "s.png")[0] == 0
    assert run(capsys, "sample", "--checkpoint", saved, "--out", tmp_path / "s.png",
               "--backend", "numpy")[0] == 0
    assert asked == ["cupy", "cupy", "cupy", "numpy"]


def test_backend_flag_wins_over_an_unusable_tinygan_backend_on_resume_too(tmp_path, capsys,
                                                                          monkeypatch):
    """`--backend numpy` needs no TINYGAN_BACKEND: neither for a new run nor for a resumed
    one (whose saved settings are completed from RunConfig's defaults)."""
    saved = tmp_path / "run" / "checkpoint.npz"
    quiet = ("--quiet", "--no-eval", "--backend", "numpy")
    # as before first use (only _library: the conftest fixture then sees the switch to numpy)
    monkeypatch.setattr(backend, "_library", None)
    backend.forget_names()  # so that any xp.<name> before --backend chooses, and fails
    monkeypatch.setenv("TINYGAN_BACKEND", "nope")
    assert run(capsys, "train", "--steps", 1, "--batch-size", 500, "--out", saved.parent,
               *quiet)[0] == 0
    monkeypatch.setattr(backend, "_library", None)
    backend.forget_names()
    assert run(capsys, "train", "--resume", saved, "--steps", 2, *quiet)[0] == 0
    assert checkpoint.load(saved)[1]["step"] == 2


def test_sigterm_during_a_download_leaves_no_partial_file(tmp_path):
    """``kill`` ends the command like Ctrl-C: one line, exit status 143, and the half-fetched
    file in the cache is removed (by default SIGTERM would end Python without unwinding)."""
    cache = tmp_path / "cache"
    with serve_stalled_download() as url:
        env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO), "TINYGAN_DATA": str(cache),
               "TINYGAN_MIRROR": url, "OPENBLAS_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "tinygan", "classifier", "train",
                                 "--data", "mnist"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while not list(cache.glob("mnist/.*.part")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1] == "tinygan: terminated"
    assert list((cache / "mnist").iterdir()) == []


# -- outputs that must not land on other files --------------------------------------------


def test_outputs_are_checked_before_the_work_and_never_replace_a_checkpoint(tmp_path, capsys,
                                                                          monkeypatch):
    """eval --out r/checkpoint.npz replaced the checkpoint with JSON; --out FOLDER failed
    only after the evaluation; sample --out d/.png wrote an empty file and left the picture
    under a temporary name; classifier train --out replaced a GAN checkpoint."""
    saved, _ = trained_checkpoint(tmp_path, capsys, "points")
    before = saved.read_bytes()
    monkeypatch.setattr(cli.metrics, "evaluate_checkpoint", lambda *a: pytest.fail("evaluated"))
    for out in (saved, tmp_path / "report.txt", tmp_path):
        assert_one_line_error(capsys, "eval", "--checkpoint", saved, "--out", out,
                              match=f"--out {out}: expected the path of a .json file to write")
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert_one_line_error(capsys, "sample", "--checkpoint", saved, "--out", folder / ".png",
                          match="expected the path of a .png file to write")
    assert os.listdir(folder) == []
    assert_one_line_error(capsys, "classifier", "train", "--data", "mnist", "--out", saved,
                          match=f"--out {saved}: that file is not a tinygan classifier; "
                                "refusing to overwrite it")
    assert saved.read_bytes() == before


def test_a_command_that_fails_leaves_no_empty_folders(tmp_path, capsys):
    """The output folders were made before the work that then failed."""
    missing = tmp_path / "missing.npz"
    assert_one_line_error(capsys, "train", "--model", "dcgan", "--out", tmp_path / "a" / "run",
                          match="dcgan is convolutional and needs images")
    assert_one_line_error(capsys, "eval", "--checkpoint", missing, "--out",
                          tmp_path / "b" / "c" / "e.json", match="does not exist")
    assert_one_line_error(capsys, "sample", "--checkpoint", missing, "--out",
                          tmp_path / "d" / "s.png", match="does not exist")
    assert os.listdir(tmp_path) == []


def test_an_older_run_on_points_that_saved_a_data_dir_still_resumes(tmp_path, capsys):
    """Before --data-dir was refused for 2-D data, runs saved the folder they were given
    (and ignored it); resuming one must not now ask for it, or refuse it."""
    out = tmp_path / "run"
    assert run(capsys, "train", "--steps", 2, "--batch-size", 1000, "--no-eval", "--out", out,
               "--quiet")[0] == 0
    arrays = dict(np.load(out / "checkpoint.npz"))
    meta = json.loads(str(arrays.pop("meta")))
    meta["config"]["data_dir"] = str(tmp_path / "gone")  # as the older code saved it
    checkpoint.save_npz_atomic(out / "checkpoint.npz", arrays, meta)
    assert run(capsys, "train", "--resume", out / "checkpoint.npz", "--steps", 3,
               "--quiet")[0] == 0


def test_data_dir_is_refused_for_points_rather_than_ignored(tmp_path, capsys):
    saved, _ = trained_checkpoint(tmp_path, capsys, "points")
    assert_one_line_error(capsys, "train", "--data", "ring", "--data-dir", tmp_path, "--steps", 1,
                          "--out", tmp_path / "r2", match="data_dir (--data-dir) applies to "
                                                          "image data (mnist, fashion-mnist)")
    assert_one_line_error(capsys, "eval", "--checkpoint", saved, "--data-dir", tmp_path,
                          match="data_dir (--data-dir) holds real images; ")


def small_image_folder(folder, n):
    """n random 28x28 images labelled i % 10, as MNIST's test split in folder/mnist."""
    (folder / "mnist").mkdir(parents=True)
    images = np.random.default_rng(n).integers(0, 256, (n, 28, 28))
    write_idx(folder / "mnist" / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def test_a_resumed_run_goes_on_with_its_own_data(tmp_path, capsys, empty_cache):
    """Resumed on a folder with other images, it trained on them without a word (its
    epochs and batch order count the samples); with the run's folder gone, the message
    named a --data-dir flag the user never gave."""
    first, other = small_image_folder(tmp_path / "a", 30), small_image_folder(tmp_path / "b", 40)
    out = tmp_path / "run"
    assert run(capsys, "train", "--data", "mnist", "--data-dir", first, "--steps", 2,
               "--batch-size", 10, "--no-eval", "--out", out, "--quiet")[0] == 0
    resume = ("train", "--resume", out / "checkpoint.npz", "--steps", 4, "--quiet")
    code, _, err = run(capsys, *resume, "--data-dir", other)  # after the test-split warning
    assert code == 1 and err[-1] == (
        "tinygan train: error: the resumed run trained on 30 samples, but the mnist data found "
        f"now in {other} has 40; resume it with the same data (--data-dir)")
    first.rename(tmp_path / "moved")
    assert_one_line_error(capsys, *resume, match=f"the run's data folder {first} no longer "
                                                 "exists; pass --data-dir with the real images")
    assert run(capsys, *resume, "--data-dir", tmp_path / "moved")[0] == 0


def test_resuming_a_backup_does_not_overwrite_the_later_checkpoint_beside_it(tmp_path, capsys):
    out = tmp_path / "run"
    train = ("train", "--batch-size", 1000, "--no-eval", "--quiet")
    assert run(capsys, *train, "--steps", 2, "--out", out)[0] == 0
    shutil.copy(out / "checkpoint.npz", out / "step2.npz")
    assert run(capsys, *train, "--resume", out / "checkpoint.npz", "--steps", 6)[0] == 0
    later = (out / "checkpoint.npz").read_bytes()
    assert_one_line_error(capsys, *train, "--resume", out / "step2.npz", "--steps", 4,
                          match=f"resuming step 2 would overwrite {out / 'checkpoint.npz'}, "
                                "which is at step 6; write elsewhere (--out)")
    assert (out / "checkpoint.npz").read_bytes() == later
    assert run(capsys, *train, "--resume", out / "step2.npz", "--steps", 4,
               "--out", tmp_path / "elsewhere")[0] == 0


def test_ctrl_c_while_the_program_loads_is_one_line(monkeypatch, capsys):
    """``tinygan`` imports NumPy and Matplotlib before main() can catch anything."""
    import types

    import tinygan.__main__ as entry

    class Interrupted(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "tinygan.cli", Interrupted("tinygan.cli"))
    assert entry.run() == 130
    assert capsys.readouterr().err == "tinygan: interrupted\n"
