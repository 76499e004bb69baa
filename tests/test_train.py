"""tinygan.train: what one step of each family does to G, D and the targets D learns.

The trainer is tested by recording what it feeds the discriminator: the inputs of
D's forward, its raw outputs (logits) and the gradient handed to D's backward. From
those, every documented behaviour can be checked with a line of NumPy: for BCE on
logits L with targets t and mean over n scores, dL/dlogits = (sigmoid(L) - t) / n, so
the targets the trainer used are t = sigmoid(L) - n * grad.
"""

import contextlib
import dataclasses
import os
import re
import time
import warnings

import numpy as np
import pytest
from helpers import write_idx

from tinygan import backend, data, models, nn, runner, train
from tinygan.train import Trainer, Tricks, decay_scale

N = 64  # batch size for 2-D points
N_IMAGES = 4  # batch size for images (convolutions on the CPU are slow)


def host(a):
    return np.array(backend.to_host(a))  # a copy, so later in-place updates cannot change it


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def real_batch(gan, n):
    """A batch of real-looking data of the GAN's shape, with labels in [0, num_classes)."""
    rng = np.random.default_rng(5)
    if gan.data_shape == (2,):
        x, y = data.ring(n, rng)
    else:
        x = rng.uniform(-1, 1, (n, *gan.data_shape)).astype(np.float32)
        y = np.arange(n)
    return backend.to_device(x), backend.to_device(y % gan.num_classes)


def snapshot(module, store="params"):
    return {f"{prefix}{k}": host(v) for prefix, m in module.modules()
            for k, v in getattr(m, store).items()}


def changed(before, after):
    return {k for k in before if not np.array_equal(before[k], after[k])}


class Recorder:
    """Wraps D's forward and backward (on the instance) to record what the trainer passes.

    forward:  inputs (the x D sees, after instance noise), labels (the y a conditional D
              is given with it; None for the others) and outputs (raw logits);
    backward: grads, the dL/dlogits the trainer computed from its loss.
    """

    def __init__(self, discriminator):
        self.inputs, self.labels, self.outputs, self.grads = [], [], [], []
        forward, backward = discriminator.forward, discriminator.backward

        def recording_forward(x):
            out = forward(x)
            x, y = x if isinstance(x, tuple) else (x, None)
            self.inputs.append(host(x))
            self.labels.append(None if y is None else host(y))
            self.outputs.append(host(out))
            return out

        def recording_backward(dout):
            self.grads.append(host(dout))
            return backward(dout)

        discriminator.forward, discriminator.backward = recording_forward, recording_backward

    def targets(self, i):
        """The BCE targets of the i-th forward/backward pair: t = sigmoid(L) - n * dL/dL."""
        logits, grad = self.outputs[i], self.grads[i]
        return sigmoid(logits) - logits.size * grad.astype(np.float64)


TRAIN_CASES = [("gan", (2,)), ("cgan", (2,)), ("acgan", (2,)), ("wgan", (2,)),
               ("gan", (1, 28, 28)), ("dcgan", (1, 28, 28)), ("acgan", (1, 28, 28))]


def make(name, shape, **tricks):
    backend.seed(0)
    gan = models.build(name, shape, num_classes=8)
    return gan, Trainer(gan, tricks=Tricks(**tricks))


def batch_size(shape):
    return N if shape == (2,) else N_IMAGES


# -- which network each half of the step updates -------------------------------------------


@pytest.mark.parametrize("name, shape", TRAIN_CASES)
def test_generator_step_freezes_the_discriminator(name, shape):
    gan, trainer = make(name, shape)
    d = gan.discriminator
    for _, m in d.modules():  # sentinel grads: a frozen backward must neither add nor reset
        m.grads = {k: backend.xp.full_like(p, 7.0) for k, p in m.params.items()}
    d_params, d_grads, g_params = snapshot(d), snapshot(d, "grads"), snapshot(gan.generator)
    d_opt_state = {k: host(v) for k, v in trainer.d_opt.state_dict().items()}

    trainer.generator_step(batch_size(shape))

    assert changed(d_params, snapshot(d)) == set(), "D's params moved in the G step"
    assert changed(d_grads, snapshot(d, "grads")) == set(), "D's grads were touched"
    assert {k: host(v) for k, v in trainer.d_opt.state_dict().items()} == d_opt_state
    # every G param moved, except a Dense bias right before BatchNorm, whose exact gradient
    # is zero (BN subtracts the per-feature mean), so Adam's step on it is rounding noise
    moved = changed(g_params, snapshot(gan.generator))
    assert moved, "G did not learn"
    assert set(g_params) - moved <= {k for k in g_params if k.endswith("bias")}
    assert all(m.requires_grad for _, m in d.modules()), "D must be unfrozen afterwards"
    # BatchNorm in D (dcgan, acgan images) still updates its running statistics here, as
    # PyTorch does with D in train mode; only params and grads are frozen.


@pytest.mark.parametrize("name, shape", TRAIN_CASES)
def test_discriminator_step_leaves_generator_alone(name, shape):
    gan, trainer = make(name, shape)
    real, y = real_batch(gan, batch_size(shape))
    g_params, d_params = snapshot(gan.generator), snapshot(gan.discriminator)
    g_grads = snapshot(gan.generator, "grads")

    trainer.discriminator_step(real, y)

    assert changed(g_params, snapshot(gan.generator)) == set(), "G's params moved in the D step"
    assert changed(g_grads, snapshot(gan.generator, "grads")) == set(), "G got gradients"
    assert changed(d_params, snapshot(gan.discriminator)), "D did not learn"


def broken_backward(dout):
    raise RuntimeError("boom")


def test_discriminator_is_unfrozen_even_when_the_generator_step_fails():
    gan, trainer = make("gan", (2,))
    gan.discriminator.backward = broken_backward
    with pytest.raises(RuntimeError, match="boom"):
        trainer.generator_step(N)
    assert all(m.requires_grad for _, m in gan.discriminator.modules())


def test_step_returns_device_scalars_and_counts():
    gan, trainer = make("gan", (2,))
    real, _ = real_batch(gan, N)
    result = trainer.step(real)
    assert set(result) == {"d_loss", "g_loss"} and trainer.step_count == 1
    for value in result.values():
        # a backend scalar (0-d), not a Python float: converting would sync the GPU per step
        assert value.shape == () and value.dtype == np.float32
        assert np.isfinite(float(value))


def bce(logits, target):
    """BCE on logits, the mean over the scores, in float64: the loss's definition."""
    s = logits.astype(np.float64)
    return np.mean(np.maximum(s, 0) - s * target + np.log1p(np.exp(-np.abs(s))))


@pytest.mark.parametrize("name", ["gan", "wgan"])
def test_step_returns_the_losses_of_what_d_scored(name):
    """d_loss is the real half's loss plus the fake half's, g_loss the G step's, computed
    from the logits D gave: BCE(real, 1) + BCE(fake, 0) and BCE(G's fakes, 1), or for the
    WGAN critic -mean(real) + mean(fake) and -mean(G's fakes)."""
    gan, trainer = make(name, (2,))
    gan.n_critic = 1  # a G step in this call for the WGAN too
    real, _ = real_batch(gan, N)
    rec = Recorder(gan.discriminator)
    result = trainer.step(real)
    real_logits, fake_logits, g_logits = rec.outputs
    if name == "wgan":
        d_loss = -real_logits.mean(dtype=np.float64) + fake_logits.mean(dtype=np.float64)
        g_loss = -g_logits.mean(dtype=np.float64)
    else:
        d_loss, g_loss = bce(real_logits, 1.0) + bce(fake_logits, 0.0), bce(g_logits, 1.0)
    # the critic's d_loss is a difference of two means that may nearly cancel: its float32
    # rounding is relative to the terms, not to the difference
    terms = abs(real_logits.mean(dtype=np.float64)) + abs(fake_logits.mean(dtype=np.float64))
    np.testing.assert_allclose(float(result["d_loss"]), d_loss, rtol=1e-5, atol=1e-6 * terms)
    np.testing.assert_allclose(float(result["g_loss"]), g_loss, rtol=1e-5)


def test_runner_logs_the_mean_loss_of_each_stretch_of_steps(tmp_path, monkeypatch):
    """A run of 400 steps logs every 2 (total // 200): each history record is the mean of
    the losses Trainer.step returned for the two steps it covers."""
    returned, step = [], Trainer.step

    def recording_step(trainer, *args):
        result = step(trainer, *args)
        returned.append({k: float(v) for k, v in result.items()})
        return result

    monkeypatch.setattr(Trainer, "step", recording_step)
    meta = runner.run(runner.RunConfig(steps=400, batch_size=64, evaluate=False,
                                       out=str(tmp_path)), progress=False)
    assert meta["log_every"] == 2 and len(returned) == 400
    assert [r["step"] for r in meta["history"]] == list(range(2, 401, 2))
    for record in meta["history"]:
        covered = returned[record["step"] - 2:record["step"]]
        for key in ("d_loss", "g_loss"):
            np.testing.assert_allclose(record[key], np.mean([r[key] for r in covered]),
                                       rtol=1e-6, err_msg=f"{key} at step {record['step']}")


def test_lr_argument_overrides_the_family_default():
    gan = models.build("gan", (2,))
    trainer = Trainer(gan, lr=3e-5)
    assert trainer.g_opt.lr == trainer.d_opt.lr == 3e-5
    assert Trainer(gan).g_opt.lr == gan.lr == 2e-4


def test_decay_scale_is_flat_then_linear_to_zero():
    # 10 steps, decaying over the last half: 1 for steps 0-4, then 5/5, 4/5, ... 1/5
    scales = [decay_scale(step, 10, 0.5) for step in range(10)]
    np.testing.assert_allclose(scales, [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    assert [decay_scale(step, 10, 0.0) for step in range(10)] == [1.0] * 10
    np.testing.assert_allclose(decay_scale(0, 4, 1.0), 1.0)
    np.testing.assert_allclose(decay_scale(3, 4, 1.0), 0.25)


def test_scale_lr_scales_both_optimizers_from_their_initial_rates():
    trainer = Trainer(models.build("wgan", (2,)), lr=1e-3)
    trainer.scale_lr(0.5)
    trainer.scale_lr(0.25)  # relative to the initial rate, not compounding
    assert trainer.g_opt.lr == trainer.d_opt.lr == 2.5e-4
    for bad in (-0.5, float("inf"), float("nan"), None):  # -0.5 made both rates negative
        with pytest.raises(ValueError, match=r"^scale_lr: scale must be a finite number >= 0"):
            trainer.scale_lr(bad)
    assert trainer.g_opt.lr == trainer.d_opt.lr == 2.5e-4
    trainer.scale_lr(0)  # a rate of 0 freezes, as an optimizer built with lr=0
    assert trainer.g_opt.lr == trainer.d_opt.lr == 0


@pytest.mark.parametrize("step", [-1, 10, 11])
def test_decay_scale_refuses_a_step_outside_the_run(step):
    """decay_scale(11, 10, 0.5) was -0.2: a negative learning rate without a word."""
    with pytest.raises(ValueError, match=f"^decay_scale: step {step} is outside the run's "
                                         "steps 0 to 9$"):
        decay_scale(step, 10, 0.5)


def test_trainer_step_names_real_samples_that_are_not_an_array():
    trainer = Trainer(models.build("gan", (2,)))
    with pytest.raises(TypeError, match=r"^Trainer.step: expected an array of real samples, "
                                        "got list$"):
        trainer.step([[0.0, 1.0], [1.0, 0.0]])
    assert trainer.step_count == 0


@pytest.mark.parametrize("shape, expected", [((2,), 0.5), ((1, 28, 28), 0.0)])
def test_lr_decay_defaults_to_the_second_half_for_points_only(shape, expected):
    assert runner.RunConfig().decay_fraction(shape) == expected
    assert runner.RunConfig(lr_decay=0.25).decay_fraction(shape) == 0.25
    with pytest.raises(ValueError, match="lr_decay must be a fraction in"):
        runner.RunConfig(lr_decay=1.5).decay_fraction(shape)


def test_plan_of_a_run_from_its_config_and_the_data_size():
    """Batch size, steps per epoch, total steps."""
    plan = runner.plan
    assert plan(runner.RunConfig(), 10_000, (2,)) == (256, 39, 80 * 39)
    assert plan(runner.RunConfig(), 10_000, (1, 28, 28)) == (64, 156, 5 * 156)
    assert plan(runner.RunConfig(epochs=2, batch_size=1000), 10_500, (2,)) == (1000, 10, 20)
    assert plan(runner.RunConfig(steps=7, batch_size=1000), 10_500, (2,)) == (1000, 10, 7)
    with pytest.raises(ValueError, match="batch size 512 is larger than the 100 training"):
        plan(runner.RunConfig(batch_size=512), 100, (2,))
    assert plan(runner.RunConfig(batch_size=100), 100, (2,)) == (100, 1, 80)  # one full batch


def test_run_config_defaults_and_unknown_data():
    config = runner.RunConfig()
    assert (config.model, config.data, config.seed, config.evaluate) == ("gan", "ring", 0, True)
    with pytest.raises(ValueError, match="^unknown data 'cifar'; choose one of: ring, grid, "
                                         "mnist, fashion-mnist$"):
        runner.load_training_data(runner.RunConfig(data="cifar"))


def test_each_save_writes_the_checkpoint_before_metrics_json(tmp_path, monkeypatch):
    """Stopped between the two writes, metrics.json must not be ahead of the checkpoint
    that a resumed run starts from (it was, once in 15 Ctrl-Cs)."""
    written, atomically = [], runner.files.written_atomically

    def recording(path):
        written.append(os.path.basename(path))
        return atomically(path)

    monkeypatch.setattr(runner.files, "written_atomically", recording)
    runner.run(runner.RunConfig(epochs=2, batch_size=5000, evaluate=False, out=str(tmp_path)),
               progress=False)
    saves = [name for name in written if name in ("checkpoint.npz", "metrics.json")]
    assert saves == ["checkpoint.npz", "metrics.json"] * 2


def test_a_run_whose_losses_turn_nan_says_so_once(tmp_path):
    """lr 1e300 ended with NaN weights and a NaN metrics.json without a word."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.run(runner.RunConfig(steps=30, batch_size=1000, lr=1e300, evaluate=False,
                                    out=str(tmp_path)), progress=False)
    said = [str(w.message) for w in caught if "diverged" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("training diverged: the losses are not "
                                                 "finite at step ")
    assert said[0].endswith("a smaller learning rate (--lr) may help")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy run says nothing
        runner.run(runner.RunConfig(steps=3, batch_size=1000, evaluate=False,
                                    out=str(tmp_path / "fine")), progress=False)


def test_image_data_has_as_many_classes_as_labels_run_to(tmp_path):
    """num_classes is the largest label + 1: a CGAN on it gets one embedding row per class."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((30, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(30) % 7)
    with pytest.warns(UserWarning, match="holds 30 of the official"):
        images, labels, num_classes = runner.load_training_data(
            runner.RunConfig(data="mnist", data_dir=str(tmp_path)))
    assert num_classes == 7 and images.shape == (30, 1, 28, 28) and labels.shape == (30,)


def test_a_run_on_points_takes_their_default_batch_and_decay(tmp_path, monkeypatch):
    """No batch_size or lr_decay given: batches of 256 (64 are for images) and the rate
    falling over the second half (images: no decay), as plan and decay_fraction say."""
    seen, step = [], Trainer.step

    def recording_step(trainer, x, *args):
        seen.append((x.shape[0], trainer.g_opt.lr, trainer.d_opt.lr))
        return step(trainer, x, *args)

    monkeypatch.setattr(Trainer, "step", recording_step)
    runner.run(runner.RunConfig(steps=4, evaluate=False, out=str(tmp_path)), progress=False)
    scales = [1.0, 1.0, 1.0, 0.5]  # decay_scale(step, 4, 0.5)
    assert seen == [(256, 2e-4 * s, 2e-4 * s) for s in scales]


PROGRESS_LINE = re.compile(r"^step (\d+)/300 \[(#*) *\] d_loss \d+\.\d{4} g_loss \d+\.\d{4} "
                           r"[\d,]+ img/s$")


def test_a_run_records_its_history_time_epoch_and_speed(tmp_path, capsys):
    """300 steps: a history record every step (300 // 200 = 1), the time the steps took,
    the fraction of an epoch done, images per second, and (not on a terminal, progress
    on by default) a progress line at every tenth of the run. Extended to 450 steps, the
    speed counts the steps since it resumed, over the time since then."""
    config = runner.RunConfig(steps=300, batch_size=8, evaluate=False, out=str(tmp_path))
    start = time.perf_counter()
    meta = runner.run(config)
    elapsed = time.perf_counter() - start
    assert [r["step"] for r in meta["history"]] == list(range(1, 301))
    assert 0 < meta["time_s"] <= elapsed
    assert meta["epoch"] == 300 / (runner.TOY_SIZE // 8)
    assert meta["images_per_second"] == pytest.approx(300 * 8 / meta["time_s"], rel=0.3)
    lines = [PROGRESS_LINE.match(line) for line in capsys.readouterr().err.splitlines()]
    assert all(lines) and [int(m[1]) for m in lines] == list(range(30, 301, 30))
    assert [len(m[2]) for m in lines] == [int(24 * k / 10) for k in range(1, 11)]

    more = runner.run(dataclasses.replace(config, steps=450),
                      resume=str(tmp_path / "checkpoint.npz"), progress=False)
    assert more["images_per_second"] == pytest.approx(
        150 * 8 / (more["time_s"] - meta["time_s"]), rel=0.3)


BAD_SETTINGS = [(dict(epochs=0), "epochs must be a positive int, got 0"),
                (dict(steps=-3), "steps must be a positive int, got -3"),
                (dict(batch_size=2.5), "batch_size must be a positive int, got 2.5"),
                (dict(z_dim=0), "z_dim must be a positive int, got 0"),
                (dict(epochs=1, steps=5), "give epochs or steps, not both"),
                (dict(seed=-1), "seed must be an int >= 0, got -1"),
                (dict(lr=0.0), "lr must be a positive number, got 0.0"),
                (dict(lr=float("inf")), "lr must be a positive number, got inf"),
                (dict(data_dir="."), r"data_dir \(--data-dir\) applies to image data"),
                (dict(lr_decay=1.5), "lr_decay must be a fraction in"),
                (dict(label_smoothing=1.5), r"label_smoothing must be in \[0, 1\], got 1.5"),
                (dict(flip_labels=-1.0), r"flip_labels must be in \[0, 1\], got -1.0"),
                (dict(label_noise=float("nan")), r"label_noise must be in \[0, 1\], got nan"),
                (dict(instance_noise=-0.1), "instance_noise must be a std >= 0, got -0.1"),
                (dict(label_smoothing=0.6, label_noise=0.5),
                 r"label_smoothing \+ label_noise must be at most 1, got 0.6 \+ 0.5")]


@pytest.mark.parametrize("settings, message", BAD_SETTINGS,
                         ids=lambda v: "-".join(v) if isinstance(v, dict) else None)
def test_a_setting_out_of_range_is_refused_before_any_work(settings, message, tmp_path):
    """Through the Python API as through the CLI's parser: a 0 is not taken for "the
    default" (None is that), and nothing is written."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        runner.run(runner.RunConfig(out=str(out), **settings), progress=False)
    assert not out.exists()


def test_tricks_and_models_check_their_own_settings():
    with pytest.raises(ValueError, match=r"Tricks: flip_labels must be in \[0, 1\], got 2"):
        Tricks(flip_labels=2)
    with pytest.raises(ValueError, match=r"build\('gan'\): z_dim must be a positive int, got 0"):
        models.build("gan", (2,), z_dim=0)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        models.build("gan", (2,), num_classes=0)


def record_learning_rates(monkeypatch):
    """The list of (G's lr, D's lr) that every Trainer.step from now on is called with."""
    rates, step = [], Trainer.step

    def recording_step(trainer, *args):
        rates.append((trainer.g_opt.lr, trainer.d_opt.lr))
        return step(trainer, *args)

    monkeypatch.setattr(Trainer, "step", recording_step)
    return rates


def test_runner_decays_the_rate_over_the_last_share_of_the_run(tmp_path, monkeypatch):
    """20 steps (two epochs of 10) decaying over the last half: the full rate up to step 10
    (0-based), then (20 - step) / 10 of it, down to 1/10 on the last step, for both networks.
    The rate is set from the step alone, so the second epoch continues the line."""
    rates = record_learning_rates(monkeypatch)
    runner.run(runner.RunConfig(steps=20, batch_size=1000, lr_decay=0.5, evaluate=False,
                                out=str(tmp_path)), progress=False)
    expected = 2e-4 * np.array([1.0] * 11 + [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose([g for g, _ in rates], expected, rtol=1e-12)
    np.testing.assert_allclose([d for _, d in rates], expected, rtol=1e-12)


def batch_orders(tmp_path, monkeypatch, seed, model="gan", steps=20):
    """The indices of the points in every batch of a run on 10,000 points whose first
    coordinate is its index / 10,000 (batch 1000: 10 steps an epoch), as (steps, 1000)."""
    points = np.stack([np.arange(10_000) / 10_000, np.zeros(10_000)], axis=1)
    seen, step = [], Trainer.step

    def recording_step(trainer, x, *args):
        seen.append(np.rint(host(x)[:, 0] * 10_000).astype(int))
        return step(trainer, x, *args)

    with monkeypatch.context() as patch:
        patch.setattr(runner, "load_training_data",
                      lambda config: (points.astype(np.float32), np.arange(10_000) % 8, 8))
        patch.setattr(Trainer, "step", recording_step)
        runner.run(runner.RunConfig(model=model, steps=steps, batch_size=1000, seed=seed,
                                    evaluate=False, out=str(tmp_path / f"{model}-{seed}")),
                   progress=False)
    return np.array(seen)


def test_every_epoch_is_a_new_shuffle_fixed_by_seed_and_epoch(tmp_path, monkeypatch):
    """Each epoch visits every point once, in an order of its own; the orders depend only
    on the seed and the epoch, not on what training drew from the random generators (a
    WGAN draws 5 critic batches' noise per generator step, a GAN 1) nor on the length."""
    orders = batch_orders(tmp_path, monkeypatch, seed=3)
    epochs = orders.reshape(2, 10_000)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(10_000))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(10_000))  # shuffled, not in file order
    np.testing.assert_array_equal(batch_orders(tmp_path, monkeypatch, seed=3, model="wgan",
                                               steps=30)[:20], orders)
    other_seed = batch_orders(tmp_path, monkeypatch, seed=4)
    assert not np.array_equal(other_seed[:10], orders[:10])
    assert not np.array_equal(other_seed[10:], orders[10:])


def test_sample_grid_of_a_conditional_model_has_a_row_per_class():
    """runner.fixed_inputs: labels 0..K-1, one row of 10 each; unconditional models get 64
    samples and no labels. Drawn from a generator of their own, not training's."""
    trainer = runner.build_trainer(runner.RunConfig(model="cgan"), (1, 28, 28), 10)
    state = backend.get_rng_state()
    z, y = runner.fixed_inputs(trainer, seed=0)
    assert backend.get_rng_state() == state
    assert host(y).tolist() == [k for k in range(10) for _ in range(10)]
    assert z.shape == (100, 100) and z.dtype == np.float32
    z, y = runner.fixed_inputs(runner.build_trainer(runner.RunConfig(), (2,), 8), seed=0)
    assert z.shape == (64, 2) and y is None


# -- AC-GAN: two heads on one set of logits, exactly one softmax ---------------------------


def log_softmax(x):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("shape", [(2,), (1, 28, 28)])
def test_acgan_class_loss_is_one_softmax_on_raw_logits(shape):
    gan, trainer = make("acgan", shape)
    real, y = real_batch(gan, batch_size(shape))
    rec = Recorder(gan.discriminator)
    trainer.discriminator_step(real, y)

    logits, grad = rec.outputs[0], rec.grads[0]  # the real batch
    n, k = logits.shape[0], gan.num_classes
    assert logits.shape == grad.shape == (n, 1 + k)  # both heads' gradients side by side
    onehot = np.eye(k)[host(y)]
    # class head: softmax cross-entropy on the raw class logits, softmax applied once
    expected_class_grad = (np.exp(log_softmax(logits[:, 1:])) - onehot) / n
    np.testing.assert_allclose(grad[:, 1:], expected_class_grad, rtol=1e-4, atol=1e-7)
    # real/fake head: BCE on the raw logit, target 1 for the real batch
    np.testing.assert_allclose(grad[:, :1], (sigmoid(logits[:, :1]) - 1) / n, rtol=1e-4,
                               atol=1e-7)

    # and the loss value: BCE(column 0, real) + cross_entropy(columns 1.., y) from raw logits
    loss, _ = trainer._loss(backend.to_device(logits), y, True, False)
    cross_entropy = -np.mean(log_softmax(logits[:, 1:])[np.arange(n), host(y)])
    np.testing.assert_allclose(float(loss), bce(logits[:, 0], 1.0) + cross_entropy, rtol=1e-5)


def test_acgan_generator_is_trained_on_the_class_of_its_labels():
    """In the G step the class loss uses the labels G was asked to draw."""
    gan, trainer = make("acgan", (2,))
    asked, _ = record_drawn_inputs(trainer, gan)  # the (z, y) drawn for each fake batch
    rec = Recorder(gan.discriminator)
    trainer.generator_step(N)
    logits, grad = rec.outputs[0], rec.grads[0]
    onehot = np.eye(gan.num_classes)[host(asked[0][1])]
    np.testing.assert_allclose(grad[:, 1:], (np.exp(log_softmax(logits[:, 1:])) - onehot) / N,
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("on_fake", [False, True])
def test_acgan_discriminator_class_loss_on_fakes_only_when_asked(on_fake):
    """D's class head learns from the fake batch only with d_class_loss_on_fake."""
    gan, trainer = make("acgan", (2,))
    gan.d_class_loss_on_fake = on_fake
    asked, _ = record_drawn_inputs(trainer, gan)  # the (z, y) drawn for each fake batch
    real, y = real_batch(gan, N)
    rec = Recorder(gan.discriminator)
    trainer.discriminator_step(real, y)
    logits, grad = rec.outputs[1], rec.grads[1]  # the fake batch
    np.testing.assert_allclose(grad[:, :1], sigmoid(logits[:, :1]) / N, rtol=1e-4, atol=1e-7)
    if on_fake:  # cross-entropy towards the labels the fakes were drawn for
        onehot = np.eye(gan.num_classes)[host(asked[0][1])]
        expected = (np.exp(log_softmax(logits[:, 1:])) - onehot) / N
        np.testing.assert_allclose(grad[:, 1:], expected, rtol=1e-4, atol=1e-7)
    else:
        assert not grad[:, 1:].any()
    assert rec.grads[0][:, 1:].any()  # the real batch always trains the class head


# -- WGAN: clipping and the critic schedule ------------------------------------------------


@pytest.mark.parametrize("shape", [(2,), (1, 28, 28)])
def test_wgan_clips_every_critic_param(shape):
    gan, trainer = make("wgan", shape)
    real, _ = real_batch(gan, batch_size(shape))
    initial = snapshot(gan.discriminator)
    assert max(float(abs(v).max()) for v in initial.values()) > 0.01  # so clipping has work
    trainer.step(real)
    for name, value in snapshot(gan.discriminator).items():
        assert np.abs(value).max() <= np.float32(0.01), name


def test_wgan_updates_generator_every_fifth_step():
    gan, trainer = make("wgan", (2,))
    real, _ = real_batch(gan, N)
    g_updates = []
    for step in range(1, 11):
        before = snapshot(gan.generator)
        result = trainer.step(real)
        moved = bool(changed(before, snapshot(gan.generator)))
        assert ("g_loss" in result) == moved
        if moved:
            g_updates.append(step)
    assert g_updates == [5, 10]
    assert trainer.g_opt.step_count == 2 and trainer.d_opt.step_count == 10


def test_a_step_that_raises_does_not_count_towards_the_critic_cycle():
    """A caller that catches a bad batch and goes on still gets a G update after every
    fifth *successful* critic update."""
    gan, trainer = make("wgan", (2,))
    real, _ = real_batch(gan, N)
    g_updates = []
    for step in range(1, 11):
        batch = real[:, :1] if step == 2 else real  # (N, 1): D's first layer refuses it
        try:
            result = trainer.step(batch)
        except ValueError:
            continue
        if "g_loss" in result:
            g_updates.append(step)
    assert g_updates == [6]  # steps 1, 3, 4, 5, 6 are the five critic updates
    assert trainer.step_count == 9 and trainer.d_opt.step_count == 9


@pytest.mark.parametrize("trick", [dict(label_smoothing=0.1), dict(label_noise=0.05),
                                   dict(flip_labels=0.1), dict(minimax=True)],
                         ids=lambda t: next(iter(t)))
def test_wgan_refuses_tricks_that_it_would_ignore(trick):
    with pytest.raises(ValueError, match=f"{next(iter(trick))}.*WGAN critic"):
        Trainer(models.build("wgan", (2,)), tricks=Tricks(**trick))
    Trainer(models.build("wgan", (2,)), tricks=Tricks(instance_noise=0.1))  # this one applies


def test_sampled_labels_cover_every_class_uniformly():
    """sample_inputs draws a conditional G's labels uniformly from 0..K-1 (K = 8 here)."""
    gan, trainer = make("cgan", (2,))
    _, y = trainer.sample_inputs(8000)
    counts = np.bincount(host(y), minlength=9)
    assert counts[8] == 0 and counts[:8].min() > 850  # 1000 expected per class
    assert trainer.sample_inputs(5)[0].shape == (5, gan.z_dim)


def test_noise_takes_the_models_dtype():
    gan = models.build("gan", (2,))
    gan.generator.astype(np.float64)
    gan.discriminator.astype(np.float64)
    z, _ = Trainer(gan).sample_inputs(3)
    assert z.dtype == np.float64


def test_wgan_critic_gradients_are_plus_minus_one_over_n():
    gan, trainer = make("wgan", (2,))
    real, _ = real_batch(gan, N)
    rec = Recorder(gan.discriminator)
    trainer.discriminator_step(real)
    np.testing.assert_array_equal(rec.grads[0], np.full((N, 1), -1 / N, np.float32))  # real
    np.testing.assert_array_equal(rec.grads[1], np.full((N, 1), 1 / N, np.float32))  # fake


def test_wgan_generator_gradient_is_minus_one_over_n():
    """L_G = -mean(D(G(z))): G descends it, so D's scores of its fakes go up."""
    gan, trainer = make("wgan", (2,))
    rec = Recorder(gan.discriminator)
    loss = trainer.generator_step(N)
    np.testing.assert_array_equal(rec.grads[0], np.full((N, 1), -1 / N, np.float32))
    np.testing.assert_allclose(float(loss), -rec.outputs[0].mean(dtype=np.float64), rtol=1e-6)


def record_drawn_inputs(trainer, gan):
    """The (z, y) the trainer draws with sample_inputs, and the y each generate call got."""
    drawn, generated = [], []
    sample_inputs, generate = trainer.sample_inputs, gan.generate

    def recording_sample_inputs(n):
        drawn.append(sample_inputs(n))
        return drawn[-1]

    def recording_generate(z, y=None):
        generated.append(host(y))
        return generate(z, y)

    trainer.sample_inputs, gan.generate = recording_sample_inputs, recording_generate
    return drawn, generated


def test_conditional_discriminator_sees_each_batch_with_its_own_labels():
    """CGAN: D scores the real batch with the real labels and every fake batch with the
    labels G drew it for, the ones sample_inputs drew (D step and G step alike)."""
    gan, trainer = make("cgan", (2,))
    real, y = real_batch(gan, N)
    drawn, generated = record_drawn_inputs(trainer, gan)
    rec = Recorder(gan.discriminator)
    trainer.step(real, y)
    assert len(drawn) == len(generated) == 2 and len(rec.labels) == 3
    np.testing.assert_array_equal(rec.labels[0], host(y))
    for (_, fake_labels), given_to_g, seen_by_d in zip(drawn, generated, rec.labels[1:]):
        assert not np.array_equal(host(fake_labels), host(y))  # so a mix-up would show
        np.testing.assert_array_equal(given_to_g, host(fake_labels))
        np.testing.assert_array_equal(seen_by_d, host(fake_labels))


# -- stabilisation tricks: what each does to D's targets and inputs ------------------------


def d_step_targets(**tricks):
    """Targets of D's real and fake halves in one D step of the vanilla GAN on points."""
    gan, trainer = make("gan", (2,), **tricks)
    real, _ = real_batch(gan, 1000)
    rec = Recorder(gan.discriminator)
    trainer.discriminator_step(real)
    return rec.targets(0), rec.targets(1)


ATOL = 1e-4  # recovering t from float32 logits and gradients


def test_default_targets_are_one_and_zero():
    real, fake = d_step_targets()
    np.testing.assert_allclose(real, 1.0, atol=ATOL)
    np.testing.assert_allclose(fake, 0.0, atol=ATOL)


def test_label_smoothing_is_one_sided():
    real, fake = d_step_targets(label_smoothing=0.1)
    np.testing.assert_allclose(real, 0.9, atol=ATOL)
    np.testing.assert_allclose(fake, 0.0, atol=ATOL)


def test_label_noise_jitters_targets_inward():
    real, fake = d_step_targets(label_noise=0.2)
    assert real.min() >= 0.8 - ATOL and real.max() <= 1 + ATOL
    assert fake.min() >= -ATOL and fake.max() <= 0.2 + ATOL
    for t, centre in ((real, 0.9), (fake, 0.1)):  # uniform over the interval, not constant
        assert t.std() > 0.04 and abs(t.mean() - centre) < 0.01


def test_flip_labels_swaps_a_fraction_of_targets():
    real, fake = d_step_targets(flip_labels=0.25)
    for t, kept, flipped in ((real, 1.0, 0.0), (fake, 0.0, 1.0)):
        is_flipped = np.abs(t - flipped) < ATOL
        assert np.all(is_flipped | (np.abs(t - kept) < ATOL))
        assert 0.2 < is_flipped.mean() < 0.3  # 1000 draws at p = 0.25


def test_flip_applies_after_smoothing():
    real, _ = d_step_targets(label_smoothing=0.1, flip_labels=0.5)
    assert np.all((np.abs(real - 0.9) < ATOL) | (np.abs(real - 0.1) < ATOL))


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_instance_noise_is_added_to_everything_d_sees(sigma):
    gan, trainer = make("gan", (2,), instance_noise=sigma)
    real, _ = real_batch(gan, 2000)
    fakes = []
    generate = gan.generate
    gan.generate = lambda z, y=None: fakes.append(generate(z, y)) or fakes[-1]
    rec = Recorder(gan.discriminator)
    trainer.discriminator_step(real)
    trainer.generator_step(2000)
    # what D saw minus what it was given: real (D step), fake (D step), fake (G step)
    for seen, given in zip(rec.inputs, [real, fakes[0], fakes[1]]):
        noise = seen - host(given)
        if sigma == 0:
            assert np.array_equal(noise, np.zeros_like(noise))
        else:
            assert abs(noise.std() - sigma) < 0.03 and abs(noise.mean()) < 0.03
    assert len(rec.inputs) == 3


LABEL_TRICKS = dict(label_smoothing=0.1, label_noise=0.2, flip_labels=0.5)


@pytest.mark.parametrize("label_tricks", [{}, LABEL_TRICKS], ids=["plain", "label-tricks"])
@pytest.mark.parametrize("minimax", [False, True])
def test_generator_loss_sign(minimax, label_tricks):
    """Non-saturating: L_G = -log s(x), dL/dx = (s - 1)/n. Minimax: L_G = log(1 - s(x)),
    dL/dx = -s/n. Both push D's score up, but the minimax gradient vanishes as s -> 0.
    The label tricks change D's targets only: G's stay exactly 1 (or 0 for minimax)."""
    gan, trainer = make("gan", (2,), minimax=minimax, **label_tricks)
    rec = Recorder(gan.discriminator)
    loss = float(trainer.generator_step(N))
    logits, grad = rec.outputs[0], rec.grads[0]
    s = sigmoid(logits)
    if minimax:
        np.testing.assert_allclose(loss, np.mean(np.log1p(-s)), rtol=1e-5)
        np.testing.assert_allclose(grad, -s / N, rtol=1e-4, atol=1e-8)
        assert loss < 0
    else:
        np.testing.assert_allclose(loss, np.mean(-np.log(s)), rtol=1e-5)
        np.testing.assert_allclose(grad, (s - 1) / N, rtol=1e-4, atol=1e-8)
        assert loss > 0
    assert np.all(grad < 0)


def test_g_dropout_is_active_while_training():
    gan = models.build("gan", (2,), g_dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for _, m in gan.generator.modules())
    z = backend.rng().standard_normal((N, gan.z_dim), dtype=np.float32)
    a, b = host(gan.generate(z)), host(gan.generate(z))
    assert not np.array_equal(a, b)  # a different mask each forward
    gan.generator.eval()
    np.testing.assert_array_equal(host(gan.generate(z)), host(gan.generate(z)))


# -- input gradients nobody uses are not computed -------------------------------------------


def first_layer_with_params(net):
    """The first layer with weights on the input's way in (inside a conditional wrapper
    too): the one whose dL/dx is skipped. An MLP on images starts with Flatten."""
    while hasattr(net, "net") or hasattr(net, "layers"):
        net = net.net if hasattr(net, "net") else next(m for m in net.layers if m.has_params())
    return net


@pytest.mark.parametrize("name, shape", TRAIN_CASES)
def test_step_skips_only_the_input_gradients_nobody_uses(name, shape):
    """D's dL/dx is skipped in the D step (its input is data) but computed in the G step
    (it is G's output gradient); G's dL/dz is never needed. Flags are restored after."""
    gan, trainer = make(name, shape)
    real, y = real_batch(gan, batch_size(shape))
    seen = {"D": [], "G": []}
    for tag, net in (("D", gan.discriminator), ("G", gan.generator)):
        layer = first_layer_with_params(net)

        def recording_backward(dout, layer=layer, backward=layer.backward, tag=tag):
            dx = backward(dout)
            seen[tag].append((layer.needs_input_grad, dx is None))
            return dx

        layer.backward = recording_backward
    trainer.step(real, y)
    # a conditional net feeds [input, embedding] to its first layer, which needs that dx
    # for the embedding: D is conditional in a CGAN, G in a CGAN and an AC-GAN
    d_flag, g_flag = name == "cgan", name in ("cgan", "acgan")
    if name == "wgan":  # the G update comes every 5th step
        assert seen["D"] == [(d_flag, not d_flag)] * 2 and seen["G"] == []
    else:
        assert seen["D"] == [(d_flag, not d_flag)] * 2 + [(True, False)]
        assert seen["G"] == [(g_flag, not g_flag)]
    for net in (gan.discriminator, gan.generator):
        assert all(m.needs_input_grad for _, m in net.modules())


@pytest.mark.parametrize("name, shape", TRAIN_CASES)
def test_skipping_input_gradients_changes_no_result(name, shape, monkeypatch):
    """The same steps with every input gradient computed end with the same bits."""
    results = []
    for skip in (True, False):
        if not skip:
            monkeypatch.setattr(train, "no_input_grad", contextlib.nullcontext)
        gan, trainer = make(name, shape)
        real, y = real_batch(gan, batch_size(shape))
        losses = [host(v) for _ in range(2) for v in trainer.step(real, y).values()]
        results.append((losses, snapshot(gan.generator), snapshot(gan.discriminator)))
    (losses, g, d), (losses_all, g_all, d_all) = results
    assert losses == losses_all
    assert changed(g, g_all) == set() and changed(d, d_all) == set()


def test_a_step_leaves_layers_the_user_froze_frozen():
    """frozen() and no_input_grad() restore each flag as it was, not to True."""
    gan, trainer = make("dcgan", (1, 28, 28))
    gan.discriminator[0].requires_grad_(False)
    gan.generator[0].requires_grad_(False)
    gan.generator.input_grad_(False)  # as the step itself does, but for good
    trainer.step(*real_batch(gan, N_IMAGES))
    assert not gan.discriminator[0].requires_grad and not gan.generator[0].requires_grad
    assert not gan.generator[0].needs_input_grad and gan.discriminator[0].needs_input_grad
    assert sum(not m.requires_grad for _, m in gan.discriminator.modules()) == 1


def test_input_gradients_are_restored_when_the_discriminator_step_fails():
    gan, trainer = make("gan", (2,))
    gan.discriminator.backward = broken_backward
    with pytest.raises(RuntimeError, match="boom"):
        trainer.discriminator_step(real_batch(gan, N)[0])
    assert all(m.needs_input_grad for _, m in gan.discriminator.modules())
