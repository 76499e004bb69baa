"""tinygan.checkpoint and resuming: save/load round trips, bit-exact resume, damaged files,
atomic writes.

"Bit for bit" is literal here: a run of 2N steps and a run of N steps resumed for N more
must end with identical checkpoints, every array compared with ``np.array_equal``.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from tinygan import backend, checkpoint, cli, files, models, runner
from tinygan.train import Trainer, Tricks


def host(a):
    return np.array(backend.to_host(a))


def trained(name, shape, steps=3, seed=0):
    """A trainer after a few steps on random data, so the optimizers have state."""
    backend.seed(seed)
    gan = models.build(name, shape, num_classes=4, g_dropout=0.2)
    label_noise = 0.0 if name == "wgan" else 0.1  # the critic has no labels to jitter
    trainer = Trainer(gan, tricks=Tricks(label_noise=label_noise, instance_noise=0.05))
    rng = np.random.default_rng(seed)
    x = backend.to_device(rng.uniform(-1, 1, (8, *shape)).astype(np.float32))
    y = backend.to_device(np.arange(8) % 4)
    for _ in range(steps):
        trainer.step(x, y if gan.conditional_d or gan.class_head else None)
    return trainer, x, y


def states(trainer):
    gan = trainer.gan
    return {"generator": gan.generator.state_dict(),
            "discriminator": gan.discriminator.state_dict(),
            "g_opt": trainer.g_opt.state_dict(), "d_opt": trainer.d_opt.state_dict()}


def assert_same_states(a, b):
    assert a.keys() == b.keys()
    for group in a:
        assert a[group].keys() == b[group].keys(), group
        for name in a[group]:
            assert np.array_equal(host(a[group][name]), host(b[group][name])), f"{group}/{name}"


def read_arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_same_checkpoints(whole, split, split_at):
    """Every array equal; of meta, everything but the timings and the output folder.

    The split run also saved (and, when tinygan.metrics is present, evaluated) where it
    stopped, at step ``split_at``: its evaluation list may hold that one extra entry
    (None: the split run saved nowhere the whole run did not).
    """
    a, b = read_arrays(whole), read_arrays(split)
    meta_a, meta_b = json.loads(str(a.pop("meta"))), json.loads(str(b.pop("meta")))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    for meta in (meta_a, meta_b):
        for key in ("time_s", "images_per_second"):
            meta.pop(key)
        meta["config"].pop("out")
    assert meta_a.pop("eval") == [e for e in meta_b.pop("eval") if e["step"] != split_at]
    assert meta_a == meta_b


# -- save / load / restore ---------------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("gan", (2,)), ("wgan", (2,)), ("acgan", (1, 28, 28))])
def test_round_trip_restores_networks_optimizers_and_random_state(tmp_path, name, shape):
    trainer, x, y = trained(name, shape)
    path = tmp_path / "ck.npz"
    checkpoint.save(path, trainer, {"step": 3, "note": "hello"})

    fresh, _, _ = trained(name, shape, steps=1, seed=1)  # different weights and moments
    saved_states, meta = checkpoint.load(path)
    assert meta["step"] == 3 and meta["note"] == "hello" and meta["trainer_step"] == 3
    checkpoint.restore(fresh, saved_states, meta)
    assert_same_states(states(fresh), states(trainer))
    assert fresh.step_count == trainer.step_count == 3
    assert fresh.g_opt.step_count == trainer.g_opt.step_count

    # the restored trainer continues exactly as the original: same RNG stream, same update
    labels = y if trainer.gan.class_head else None
    backend.set_rng_state(meta["rng"])
    expected = trainer.step(x, labels)
    backend.set_rng_state(meta["rng"])
    got = fresh.step(x, labels)
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in expected.items()}
    assert_same_states(states(fresh), states(trainer))


def snapshot(trainer):
    return {group: {k: host(v).copy() for k, v in state.items()}
            for group, state in states(trainer).items()}


@pytest.mark.parametrize("bad_group", ["discriminator", "g_opt", "d_opt"])
def test_a_restore_that_fails_part_way_leaves_the_trainer_as_it_was(tmp_path, bad_group):
    """A damaged later part (D's state, an optimizer's) used to fail after G's weights
    had been overwritten: 30 of 30 arrays changed in a trainer the error left behind."""
    trainer, _, _ = trained("gan", (2,))
    checkpoint.save(tmp_path / "ck.npz", trainer, {"step": 3})
    saved_states, meta = checkpoint.load(tmp_path / "ck.npz")
    first = next(k for k, v in saved_states[bad_group].items() if v.ndim)  # not step_count
    saved_states[bad_group][first] = saved_states[bad_group][first][..., :1]  # a wrong shape
    fresh, _, _ = trained("gan", (2,), steps=1, seed=1)
    before, step_count = snapshot(fresh), fresh.step_count
    with pytest.raises(ValueError, match="load_state_dict"):
        checkpoint.restore(fresh, saved_states, meta)
    assert_same_states(snapshot(fresh), before)
    assert fresh.step_count == step_count


def test_a_random_state_that_tinygan_did_not_save_is_refused_and_rolled_back(tmp_path):
    """A dict with the wrong content got past the meta type check: a bare TypeError from
    the generator, after G, D and both optimizers had been loaded."""
    trainer, _, _ = trained("gan", (2,))
    checkpoint.save(tmp_path / "ck.npz", trainer, {"step": 3})
    saved_states, meta = checkpoint.load(tmp_path / "ck.npz")
    fresh, _, _ = trained("gan", (2,), steps=1, seed=1)
    before = snapshot(fresh)
    with pytest.raises(checkpoint.CheckpointError, match="random state .* is not one tinygan"):
        checkpoint.restore(fresh, saved_states, {**meta, "rng": {"device": 1}})
    assert_same_states(snapshot(fresh), before)


def test_checkpoint_layout_is_flat_and_on_the_host(tmp_path):
    trainer, _, _ = trained("gan", (2,), steps=1)
    checkpoint.save(tmp_path / "ck.npz", trainer, {})
    names = read_arrays(tmp_path / "ck.npz").keys()
    assert "meta" in names and "generator/0.weight" in names and "d_opt/step_count" in names
    assert {n.partition("/")[0] for n in names} == {"meta", *checkpoint.GROUPS}


# -- damaged checkpoints: one line, CheckpointError -------------------------------------------


def damaged_files(tmp_path):
    trainer, _, _ = trained("gan", (2,), steps=1)
    good = tmp_path / "good.npz"
    checkpoint.save(good, trainer, {})
    raw = good.read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # inside an array's data: the zip CRC catches it
    np.savez(tmp_path / "no-meta.npz", weights=np.zeros(3))
    np.savez(tmp_path / "foreign.npz", meta=np.array("{}"), **{"encoder/w": np.zeros(2)})
    np.savez(tmp_path / "meta-not-json.npz", meta=np.array("{step: 1"))
    np.savez(tmp_path / "meta-a-list.npz", meta=np.array("[1, 2]"))
    with open(tmp_path / "one-array.npz", "wb") as f:  # np.save's format under an .npz name
        np.save(f, np.zeros(3))
    files = {"truncated.npz": raw[: len(raw) // 2], "header-only.npz": raw[:100],
             "empty.npz": b"", "text.npz": b"not a checkpoint\n", "flipped.npz": bytes(flipped)}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return [*files, "no-meta.npz", "foreign.npz", "meta-not-json.npz", "meta-a-list.npz",
            "one-array.npz", "missing.npz"]


def test_damaged_checkpoints_raise_one_line_checkpoint_error(tmp_path):
    for name in damaged_files(tmp_path):
        with pytest.raises(checkpoint.CheckpointError) as info:
            checkpoint.load(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and name in message, (name, message)
    with pytest.raises(checkpoint.CheckpointError, match="missing.npz does not exist$"):
        checkpoint.load(tmp_path / "missing.npz")
    with pytest.raises(checkpoint.CheckpointError, match=r"one-array.npz is not a readable .npz "
                       r"file \(it holds one array, as np.save writes"):
        checkpoint.load(tmp_path / "one-array.npz")


RUN_KEYS = ("config", "data_shape", "model_options", "trainer_step")


@pytest.mark.parametrize("missing", RUN_KEYS)
def test_load_run_needs_every_setting_of_a_training_run(tmp_path, missing):
    path = tmp_path / "ck.npz"
    meta = dict(RUN_META)
    checkpoint.save_npz_atomic(path, {}, meta)
    assert checkpoint.load_run(path)[1] == meta
    del meta[missing]
    checkpoint.save_npz_atomic(path, {}, meta)
    with pytest.raises(checkpoint.CheckpointError, match=f"has no '{missing}' in its meta"):
        checkpoint.load_run(path)


RUN_META = {"config": {}, "data_shape": [2], "model_options": {"z_dim": 2},
            "trainer_step": 0}


@pytest.mark.parametrize("key, value, message", [
    ("config", [1, 2], "its meta entry 'config' is list, expected dict"),
    ("data_shape", "2", "its meta entry 'data_shape' is str, expected list"),
    ("trainer_step", 1.5, "its meta entry 'trainer_step' is float, expected int"),
    ("model_options", {"z_dim": 2, "width": 3}, r"unknown model options \['width'\]"),
    ("step", True, "its meta entry 'step' is bool, expected int"),  # a JSON true
    ("epoch", "1", "its meta entry 'epoch' is str, expected int or float"),
    ("rng", "x", "its meta entry 'rng' is str, expected dict"),
    ("n_samples", "10", "its meta entry 'n_samples' is str, expected int"),
])
def test_load_run_names_meta_entries_of_the_wrong_kind(tmp_path, key, value, message):
    """A damaged or hand-edited file: tracebacks came from models.build or the runner."""
    path = tmp_path / "ck.npz"
    checkpoint.save_npz_atomic(path, {}, {**RUN_META, key: value})
    with pytest.raises(checkpoint.CheckpointError, match=f"^checkpoint {path}: {message}"):
        checkpoint.load_run(path)


RESUME_ONLY = ("step", "epoch", "time_s", "history", "eval", "rng")


def test_resume_keys_are_the_run_keys_and_where_the_run_stopped():
    assert checkpoint.RUN_KEYS == RUN_KEYS
    assert checkpoint.RESUME_KEYS == RUN_KEYS + RESUME_ONLY


@pytest.mark.parametrize("missing", RESUME_ONLY)
def test_resuming_needs_where_the_run_stopped(tmp_path, capsys, missing):
    """A checkpoint without what resuming reads is a one-line error naming the entry, from
    the runner and the CLI alike (it was a bare KeyError: "error: rng"); sampling from it,
    which needs none of them, still works."""
    config = runner.RunConfig(steps=2, batch_size=1000, out=str(tmp_path / "run"))
    runner.run(config, progress=False)
    arrays = read_arrays(tmp_path / "run" / "checkpoint.npz")
    meta = json.loads(str(arrays.pop("meta")))
    del meta[missing]
    path = tmp_path / "cut.npz"
    checkpoint.save_npz_atomic(path, arrays, meta)
    message = f"checkpoint {path} has no '{missing}' in its meta"
    with pytest.raises(checkpoint.CheckpointError, match=message):
        runner.run(dataclasses.replace(config, steps=4), resume=str(path), progress=False)
    assert cli.main(["train", "--resume", str(path), "--steps", "4", "--quiet"]) == 1
    assert capsys.readouterr().err == f"tinygan train: error: {message}: it was not written " \
                                      "by a training run\n"
    assert cli.main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "s.png")]) == 0


# -- atomic writes -------------------------------------------------------------------------


def test_save_leaves_no_temporary_files(tmp_path):
    trainer, _, _ = trained("gan", (2,), steps=1)
    for _ in range(2):  # a first write and an overwrite
        checkpoint.save(tmp_path / "ck.npz", trainer, {})
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_an_unwritable_destination_is_named_not_the_temporary_file(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be\n")
    with pytest.raises(OSError, match=f"^cannot write {blocked / 'ck.npz'}: "):
        with files.written_atomically(blocked / "ck.npz"):
            pass


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_check_writable_tries_a_file_not_just_the_folder(tmp_path):
    """/proc exists but takes no new file, even for root (who may write any chmod-ed folder)."""
    files.check_writable(tmp_path / "new" / "deeper", "output folder")
    assert os.listdir(tmp_path) == []  # nothing made: a command that fails leaves no folders
    with pytest.raises(OSError, match="^output folder /proc: not writable "):
        files.check_writable("/proc", "output folder")
    with pytest.raises(OSError, match="^output folder /proc/new/run: not writable "):
        files.check_writable("/proc/new/run", "output folder")  # /proc is where they'd go


def test_check_writable_names_a_file_where_the_folder_should_be(tmp_path):
    """Not "not writable (File exists)": what is wrong is that the path is a file."""
    afile = tmp_path / "run.npz"
    afile.write_text("a file\n")
    with pytest.raises(OSError, match=f"^output folder {afile} is a file, not a folder$"):
        files.check_writable(afile, "output folder")
    with pytest.raises(OSError, match=f"^output folder {afile / 'run' / 'x'}: {afile} is a "
                                      "file, not a folder$"):
        files.check_writable(afile / "run" / "x", "output folder")  # a file further up


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_atomically_written_files_get_the_mode_open_would_give(tmp_path, umask):
    """Not mkstemp's private 0600: 0666 less the umask, which is left as it was."""
    previous = os.umask(umask)
    try:
        with files.written_atomically(tmp_path / "out.json") as tmp:
            with open(tmp, "w") as f:
                f.write("{}")
        assert os.umask(umask) == umask
    finally:
        os.umask(previous)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.json"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch, error):
    trainer, _, _ = trained("gan", (2,), steps=1)
    path = tmp_path / "ck.npz"
    checkpoint.save(path, trainer, {"step": 1})
    before = path.read_bytes()

    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")  # some bytes reach the temporary file first
        raise error

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(type(error)):
        checkpoint.save(path, trainer, {"step": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]
    monkeypatch.undo()
    assert checkpoint.load(path)[1]["step"] == 1


# -- resume: 2N steps == N steps + resume + N steps, bit for bit ------------------------------

# batch 1000 on the 10,000 toy points: 10 steps an epoch, so N = 13 resumes mid-epoch and,
# for the WGAN, mid-way through a 5-step critic cycle. The tricks draw random numbers every
# step, so any slip in the saved generator state shows up.
# Extending a run (N, then resume to 2N) is exact at a constant learning rate, so these
# runs set lr_decay=0: a decaying schedule is planned over the run's length, and an N-step
# run decays over N steps. Resuming an *interrupted* run of the same length is exact with
# the decay on too (test_interrupted_run_with_lr_decay_resumes_bit_exact).
RESUME_CASES = [
    dict(model="gan", data="ring", g_dropout=0.2, flip_labels=0.1, instance_noise=0.05),
    dict(model="wgan", data="grid"),
    dict(model="acgan", data="ring", label_noise=0.1),
]
N = 13


numpy_only_extension = pytest.mark.skipif(
    backend.name() == "cupy", reason="extending a finished N-step run is exact on NumPy only: on "
    "CuPy its last snapshot (mid-epoch) restarted the device stream from a seed, which the "
    "2N-step run draws on unbroken (see tinygan/runner.py)")


@numpy_only_extension
@pytest.mark.parametrize("options", RESUME_CASES, ids=lambda o: o["model"])
def test_runner_resume_is_bit_exact(tmp_path, options):
    def config(steps, out):
        return runner.RunConfig(steps=steps, batch_size=1000, out=str(tmp_path / out), seed=3,
                                lr_decay=0.0, **options)

    whole = runner.run(config(2 * N, "whole"), progress=False)
    runner.run(config(N, "split"), progress=False)
    resumed = runner.run(config(2 * N, "split"), resume=str(tmp_path / "split" / "checkpoint.npz"),
                         progress=False)
    assert whole["step"] == resumed["step"] == 2 * N
    assert whole["history"] == resumed["history"]
    assert_same_checkpoints(tmp_path / "whole" / "checkpoint.npz",
                            tmp_path / "split" / "checkpoint.npz", split_at=N)


def interrupted_and_resumed(tmp_path, monkeypatch, config, stop_at):
    """Run ``config("whole")`` through; run ``config("split")`` until Ctrl-C just before
    step ``stop_at`` and resume it from its last (epoch-end) checkpoint.
    Returns (the whole run's meta, the resumed run's meta, the step the checkpoint held)."""
    whole = runner.run(config("whole"), progress=False)
    real_step = Trainer.step

    def step_then_interrupt(trainer, *args):
        if trainer.step_count == stop_at:
            raise KeyboardInterrupt
        return real_step(trainer, *args)

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(Trainer, "step", step_then_interrupt)
        runner.run(config("split"), progress=False)
    saved = str(tmp_path / "split" / "checkpoint.npz")
    saved_step = checkpoint.load(saved)[1]["step"]
    return whole, runner.run(config("split"), resume=saved, progress=False), saved_step


def assert_interrupted_at_n_resumes_bit_exact(tmp_path, monkeypatch, config):
    """Stopped after step N, a ``config`` run resumes from its epoch-end checkpoint (step
    10) and ends exactly where the uninterrupted run ends: history, weights, optimizers."""
    whole, resumed, saved_step = interrupted_and_resumed(tmp_path, monkeypatch, config, N)
    assert saved_step == 10
    assert whole["history"] == resumed["history"]
    assert_same_checkpoints(tmp_path / "whole" / "checkpoint.npz",
                            tmp_path / "split" / "checkpoint.npz", split_at=None)


def test_interrupted_run_with_lr_decay_resumes_bit_exact(tmp_path, monkeypatch):
    """A run stopped by Ctrl-C after step N resumes from its last epoch-end checkpoint
    (step 10) and, with the same length, ends exactly where the uninterrupted run ends."""
    def config(out):
        return runner.RunConfig(model="gan", data="ring", steps=2 * N, batch_size=1000,
                                lr_decay=0.5, seed=3, out=str(tmp_path / out))

    assert_interrupted_at_n_resumes_bit_exact(tmp_path, monkeypatch, config)


def test_interrupted_run_resumes_bit_exact_under_cupys_generator_rules(tmp_path, monkeypatch):
    """CuPy's generator state cannot be read, so there a snapshot is a seed the generator
    restarts from (backend.get_rng_state), and every epoch end takes one (around the
    evaluation). A run resumed from its epoch-end checkpoint must still end exactly where
    the uninterrupted run does, with the draws that need the generator (dropout, label
    flips, instance noise) on. NumPy's generator stands in for CuPy's: only the
    bookkeeping is under test. (Extending a finished run is not exact on CuPy: its last
    snapshot, mid-epoch, restarted a stream that the longer run draws on unbroken.)"""
    monkeypatch.setattr(backend, "_name", "cupy")
    monkeypatch.setattr(backend, "use", lambda name: backend.seed(0))  # stay on NumPy

    def config(out):
        return runner.RunConfig(steps=2 * N, batch_size=1000, lr_decay=0.0, seed=3,
                                out=str(tmp_path / out), **RESUME_CASES[0])

    assert_interrupted_at_n_resumes_bit_exact(tmp_path, monkeypatch, config)


def test_resume_between_history_records_keeps_the_history(tmp_path, monkeypatch):
    """A run of 400 steps records the mean loss every 2 steps; with batch 90 (111 steps an
    epoch) its checkpoint at step 111 falls between two records. The loss of step 111 must
    still count in the record at step 112 after resuming."""
    def config(out):
        return runner.RunConfig(model="gan", data="ring", steps=400, batch_size=90,
                                seed=3, evaluate=False, out=str(tmp_path / out))

    whole, resumed, saved_step = interrupted_and_resumed(tmp_path, monkeypatch, config, 115)
    assert saved_step == 111
    assert [r["step"] for r in whole["history"][55:57]] == [112, 114]
    assert whole["history"] == resumed["history"]



def test_an_extended_run_keeps_logging_its_history_at_the_same_interval(tmp_path):
    """A 200-step run records every step (200 // 200); extended to 400 steps it goes on
    recording every step, not every second one as a fresh 400-step run would."""
    def config(steps):
        return runner.RunConfig(model="gan", data="ring", steps=steps, batch_size=100, seed=3,
                                evaluate=False, out=str(tmp_path / "run"))

    runner.run(config(200), progress=False)
    extended = runner.run(config(400), resume=str(tmp_path / "run" / "checkpoint.npz"),
                          progress=False)
    assert [r["step"] for r in extended["history"]] == list(range(1, 401))


@numpy_only_extension
def test_cli_resume_is_bit_exact(tmp_path, capsys):
    common = ["train", "--model", "cgan", "--data", "grid", "--batch-size", "1000", "--seed", "1",
              "--quiet", "--label-smoothing", "0.1", "--lr-decay", "0"]
    assert cli.main([*common, "--steps", str(2 * N), "--out", str(tmp_path / "whole")]) == 0
    assert cli.main([*common, "--steps", str(N), "--out", str(tmp_path / "split")]) == 0
    saved = str(tmp_path / "split" / "checkpoint.npz")
    # the resumed run keeps its saved configuration and output folder; only its length changes
    assert cli.main(["train", "--resume", saved, "--steps", str(2 * N), "--quiet"]) == 0
    assert f"{2 * N} steps" in capsys.readouterr().out
    assert_same_checkpoints(tmp_path / "whole" / "checkpoint.npz", saved, split_at=N)


def test_resume_past_the_end_does_no_more_steps(tmp_path):
    config = runner.RunConfig(steps=N, batch_size=1000, out=str(tmp_path))
    runner.run(config, progress=False)
    before = read_arrays(tmp_path / "checkpoint.npz")
    meta = runner.run(config, resume=str(tmp_path / "checkpoint.npz"), progress=False)
    assert meta["step"] == N
    after = read_arrays(tmp_path / "checkpoint.npz")
    assert all(np.array_equal(before[k], after[k]) for k in before if k != "meta")


@pytest.mark.parametrize("interval, drawn_at", [(0.0, [10, 20, 30, 40]), (float("inf"), [10, 40])])
def test_checkpoint_every_epoch_pictures_at_most_every_interval(tmp_path, monkeypatch, interval,
                                                                 drawn_at):
    """4 epochs of 10 steps: metrics.json and the checkpoint at every epoch's end; the
    pictures at the first epoch, then only once DRAW_EVERY_S has passed, and at the end."""
    saved, drawn = [], []
    real_save, real_draw = runner.save_outputs, runner.draw

    def save_outputs(out, trainer, meta):
        saved.append(meta["step"])
        real_save(out, trainer, meta)

    def draw(out, gan, config, meta, *rest):
        drawn.append(meta["step"])
        real_draw(out, gan, config, meta, *rest)

    monkeypatch.setattr(runner, "DRAW_EVERY_S", interval)
    monkeypatch.setattr(runner, "save_outputs", save_outputs)
    monkeypatch.setattr(runner, "draw", draw)
    runner.run(runner.RunConfig(epochs=4, batch_size=1000, out=str(tmp_path)), progress=False)
    assert saved == [10, 20, 30, 40] and drawn == drawn_at
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 40
    assert {"samples.png", "losses.png", "checkpoint.npz"} <= set(os.listdir(tmp_path))
