"""tinygan.metrics and tinygan.classifier: each metric on inputs whose answer is known,
the classifier's accuracy bar on real MNIST, and the `tinygan eval` / `tinygan classifier
train` commands.

The tests on real data share one classifier trained with the shipped defaults (about
30 s of one CPU core); they skip when MNIST is absent, like every real-data test.
"""

import json
from dataclasses import asdict

import numpy as np
import pytest
from conftest import data_root
from helpers import write_idx

from tinygan import backend, checkpoint, classifier, cli, data, metrics, models, nn, optim, runner
from tinygan.train import Trainer

# ----------------------------------------------------------------- Fréchet distance: algebra


def random_covariance(rng, d, rank=None):
    """A random symmetric PSD (d, d) matrix, singular when rank < d."""
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


def test_sqrtm_psd_squares_back_also_when_singular():
    rng = np.random.default_rng(0)
    for rank in (6, 3):
        s = random_covariance(rng, 6, rank)
        r = metrics.sqrtm_psd(s)
        np.testing.assert_allclose(r, r.T, atol=1e-12)
        np.testing.assert_allclose(r @ r, s, atol=1e-10)
        assert np.linalg.eigvalsh(r).min() > -1e-10  # the PSD root, not another one


def test_fd_of_diagonal_covariances_matches_the_closed_form():
    """Diagonal S1, S2 commute, so (S1 S2)^(1/2) = diag(sqrt(a b)) and
    FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)


def test_trace_sqrt_product_of_non_commuting_2x2_matches_the_closed_form():
    """For a 2x2 matrix M with positive eigenvalues l1, l2:
    tr M^(1/2) = sqrt(l1) + sqrt(l2) = sqrt(tr M + 2 sqrt(det M)). With M ~ S1 S2:
    tr M = tr(S1 S2) and det M = det S1 det S2."""
    rng = np.random.default_rng(2)
    for _ in range(5):
        s1, s2 = random_covariance(rng, 2), random_covariance(rng, 2)
        assert not np.allclose(s1 @ s2, s2 @ s1)  # the case the diagonal test cannot see
        expected = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
        assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-10)


def test_fd_is_zero_for_the_same_samples_and_symmetric():
    """FD subtracts 2 tr(S1 S2)^(1/2) from tr(S1) + tr(S2), so its rounding error scales with
    those traces; and a singular covariance has eigenvalues at rounding level (~1e-16 of the
    largest), whose square roots (~1e-8) add up. Hence a tolerance relative to the traces."""
    rng = np.random.default_rng(3)
    low_rank = rng.standard_normal((32, 20)) @ rng.standard_normal((20, 32))
    features = np.maximum(rng.standard_normal((500, 32)), 0) @ low_rank  # rank 20 of 32
    other = features + rng.standard_normal(features.shape)
    scale = np.trace(np.cov(features, rowvar=False)) + np.trace(np.cov(other, rowvar=False))
    assert metrics.fd(features, features) < 1e-8 * scale
    assert abs(metrics.fd(features, other) - metrics.fd(other, features)) < 1e-8 * scale
    assert metrics.fd(features, other) > 1e-3 * scale


def test_fd_of_a_collapsed_generator_is_the_spread_it_missed():
    """One point x0 repeated: S2 = 0, so FD = |mu - x0|^2 + tr(S1), exactly."""
    rng = np.random.default_rng(4)
    real = rng.standard_normal((1000, 16)) * 2
    collapsed = np.repeat(real[:1], 1000, axis=0)
    mu, s = real.mean(axis=0), np.cov(real, rowvar=False)  # unbiased: divided by n - 1
    expected = np.sum((mu - real[0]) ** 2) + np.trace(s)
    assert metrics.fd(real, collapsed) == pytest.approx(expected, rel=1e-9)
    assert metrics.fd(real, collapsed) > 50 * metrics.fd(real[:500], real[500:])


def test_feature_statistics_by_hand():
    """Rows (1, 2), (3, 2), (2, 5): mean (2, 3), deviations (-1, -1), (1, -1), (0, 2), whose
    outer products sum to [[2, 0], [0, 6]]; divided by n - 1 = 2 (unbiased), not by n."""
    mu, s = metrics.feature_statistics([[1, 2], [3, 2], [2, 5]])
    np.testing.assert_array_equal(mu, [2.0, 3.0])
    np.testing.assert_array_equal(s, [[1.0, 0.0], [0.0, 3.0]])
    assert mu.dtype == s.dtype == np.float64
    # one feature: still a (1, 1) matrix (np.cov alone returns a 0-d array)
    assert metrics.feature_statistics([[1.0], [3.0]])[1].tolist() == [[2.0]]
    for few in ([[1.0, 2.0]], [1.0, 2.0, 3.0]):  # one vector; a flat list is not (n, d)
        with pytest.raises(ValueError, match=r"need at least 2 feature vectors of shape "
                                             rf"\(n, d\), got \({np.shape(few)[0]},"):
            metrics.feature_statistics(few)


def test_fd_of_gaussian_samples_approaches_the_true_distance():
    rng = np.random.default_rng(5)
    s1, s2 = random_covariance(rng, 4), random_covariance(rng, 4)
    mu2 = np.array([1.0, 0.0, -1.0, 0.5])
    x = rng.multivariate_normal(np.zeros(4), s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    truth = metrics.frechet_distance(np.zeros(4), s1, mu2, s2)
    assert metrics.fd(x, y) == pytest.approx(truth, rel=0.02)


# ------------------------------------------------------------ classifier score and accuracy


def test_classifier_score_is_k_for_confident_balanced_and_1_for_collapsed():
    k = 10
    confident = 50.0 * np.eye(k)[np.arange(1000) % k]
    assert metrics.classifier_score(confident) == pytest.approx(k, rel=1e-6)
    one_image = np.tile(np.random.default_rng(6).standard_normal(k), (1000, 1))
    assert metrics.classifier_score(one_image) == pytest.approx(1.0, abs=1e-12)
    uncertain = np.zeros((1000, k))  # p(y|x) uniform: no information
    assert metrics.classifier_score(uncertain) == pytest.approx(1.0, abs=1e-12)
    three_classes = 50.0 * np.eye(k)[np.arange(999) % 3]
    assert metrics.classifier_score(three_classes) == pytest.approx(3, rel=1e-6)


def test_classifier_score_by_hand_and_for_extreme_logits():
    """Two samples with p(y|x) = (1/4, 3/4) and (3/4, 1/4): p(y) = (1/2, 1/2), and each
    KL(p(y|x) || p(y)) = 1/4 log(1/2) + 3/4 log(3/2). Logits 1000 apart give probabilities
    of exactly 0 and 1 (no overflow, and 0 log 0 counts as 0): two sure, different classes."""
    log3 = np.log(3.0)
    kl = 0.25 * np.log(0.5) + 0.75 * np.log(1.5)
    assert metrics.classifier_score(np.array([[0.0, log3], [log3, 0.0]])) == pytest.approx(
        np.exp(kl), rel=1e-12)
    assert metrics.classifier_score(np.array([[0.0, 1000.0], [1000.0, 0.0]])) == 2.0


def test_class_accuracy_counts_argmax_hits():
    logits = np.eye(4)[[0, 1, 2, 3, 0]]
    assert metrics.class_accuracy(logits, [0, 1, 2, 0, 0]) == pytest.approx(0.8)


@pytest.mark.parametrize("labels", [np.arange(4)[:, None], np.array([0]), np.arange(5)])
def test_class_accuracy_refuses_labels_that_are_not_one_per_row(labels):
    """(4, 1) labels broadcast against (4,) argmaxes to a (4, 4) table: 0.25, not 1.0."""
    with pytest.raises(ValueError, match=r"class_accuracy: expected labels of shape \(4,\)"):
        metrics.class_accuracy(np.eye(4) * 5, labels)


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((0, 3))])
def test_scores_refuse_logits_that_are_not_n_by_k(bad):
    for score in (metrics.classifier_score, lambda x: metrics.class_accuracy(x, [])):
        with pytest.raises(ValueError, match=r"expected logits of shape \(n, K\) with n >= 1"):
            score(bad)


def test_metrics_of_a_diverged_generator_are_nan_not_a_score_or_a_crash():
    """NaN logits used to score 1.0 (every p > 0 test false); NaN features made eigh raise
    LinAlgError, stopping a training run at its end-of-epoch evaluation."""
    rng = np.random.default_rng(0)
    good = rng.normal(size=(20, 3))
    broken = good.copy()
    broken[3, 1] = np.nan
    assert np.isnan(metrics.classifier_score(broken))
    assert np.isnan(metrics.classifier_score(np.array([[np.inf, 0.0], [0.0, 1.0]])))
    assert np.isnan(metrics.class_accuracy(broken, np.zeros(20, dtype=int)))
    infinite = good.copy()
    infinite[0, 0] = np.inf
    for a, b in ((broken, good), (good, broken), (infinite, good)):
        assert np.isnan(metrics.fd(a, b))
    assert np.isnan(metrics.frechet_distance(np.zeros(2), np.full((2, 2), np.nan),
                                             np.zeros(2), np.eye(2)))
    assert np.isfinite(metrics.classifier_score(good)) and np.isfinite(metrics.fd(good, good))


# --------------------------------------------------------------------------- mode coverage


def test_coverage_on_hand_placed_samples():
    ring = data.TOY_DATASETS["ring"]
    c, s = ring.centres, ring.sigma
    samples = np.array([
        c[0] + [0.5 * s, 0],  # high quality, mode 0
        c[0] + [0, -2 * s],  # high quality, mode 0 again
        c[1] + [2.9 * s, 0],  # high quality, mode 1
        c[2] + [0, 3.1 * s],  # just outside 3 sigma: low quality, mode 2 not covered
        c[3] + [2 * s, 2 * s],  # 2.83 sigma away: high quality, mode 3
        [0.0, 0.0],  # the centre of the ring: far from every mode
    ])
    result = metrics.mode_coverage(samples, c, s)
    assert result == {"modes": 3, "modes_total": 8, "hq_percent": pytest.approx(100 * 4 / 6)}
    # centres without the ring's symmetry (c and -c both centres): distances are to c itself
    lopsided = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 1.0]])
    near_second = np.array([[1.05, 0.0], [0.95, 0.1], [2.0, 2.0]])
    assert metrics.mode_coverage(near_second, lopsided, 0.1) == {
        "modes": 1, "modes_total": 3, "hq_percent": pytest.approx(100 * 2 / 3)}


@pytest.mark.parametrize("shape", [(4, 1), (4, 3), (8,)])
def test_coverage_refuses_samples_of_another_dimension(shape):
    """(n, 1) samples broadcast against (K, 2) centres and scored 0 modes without a word."""
    with pytest.raises(ValueError, match=r"mode_coverage: expected samples of shape \(n, 2\)"):
        metrics.mode_coverage(np.zeros(shape), data.TOY_DATASETS["ring"].centres, 0.1)


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_coverage_of_perfect_and_collapsed_generators(name):
    mixture = data.TOY_DATASETS[name]
    k = len(mixture.centres)
    perfect, _ = mixture.sample(metrics.TOY_SAMPLES, np.random.default_rng(7))
    result = metrics.mode_coverage(perfect, mixture.centres, mixture.sigma)
    # a 2-D Gaussian puts 1 - exp(-9/2) = 98.9% of its mass within 3 sigma
    assert result["modes"] == k and result["hq_percent"] > 97
    collapsed = np.repeat(mixture.centres[:1] + mixture.sigma, metrics.TOY_SAMPLES, axis=0)
    assert metrics.mode_coverage(collapsed, mixture.centres, mixture.sigma) == {
        "modes": 1, "modes_total": k, "hq_percent": 100.0}
    between = np.repeat((mixture.centres[:1] + mixture.centres[1:2]) / 2, 10, axis=0)
    assert metrics.mode_coverage(between, mixture.centres, mixture.sigma)["modes"] == 0


# ------------------------------------------------------------------------ sampling a model


def test_generate_samples_uses_its_own_noise_and_balanced_labels():
    gan = models.build("cgan", (2,), num_classes=8)
    state = backend.get_rng_state()
    samples, labels = metrics.generate_samples(gan, 600, seed=3)
    assert backend.get_rng_state() == state  # tinygan's training generator untouched
    assert samples.shape == (600, 2) and isinstance(samples, np.ndarray)
    assert np.bincount(labels).tolist() == [75] * 8
    again, _ = metrics.generate_samples(gan, 600, seed=3)
    np.testing.assert_array_equal(samples, again)
    assert gan.generator.training  # back in training mode afterwards


class LabelPainter:
    """A conditional "generator" whose sample for label k is an image of value k / 10
    (plus noise from z), painting the label ``shift`` classes on from the one asked."""

    z_dim, num_classes, conditional_g = 3, 10, True

    def __init__(self, shift=0):
        self.shift, self.generator = shift, nn.Flatten()  # something with train/eval

    def generate(self, z, y):
        k = (backend.to_host(y) + self.shift) % 10
        noise = backend.to_host(z)[:, :1, None, None] * 0.01
        return backend.to_device((k[:, None, None, None] / 10 + noise
                                  + np.zeros((1, 1, 28, 28))).astype(np.float32))


class ValueReader:
    """A "classifier" that reads the class off an image's mean value (LabelPainter's code):
    its features are the first pixels, its logits a confident one-hot."""

    def predict(self, images):
        k = np.clip(np.rint(images.mean(axis=(1, 2, 3)) * 10), 0, 9).astype(int)
        return images.reshape(len(images), -1)[:, :2].astype(np.float64), 20.0 * np.eye(10)[k]


def test_class_accuracy_scores_the_generated_samples_against_their_labels():
    """evaluate_images: the class accuracy is that of the fakes against the labels they
    were drawn for: 100% for a generator that paints the asked class, 0% for one that
    paints the next class; the real images (all of class 0 here) play no part in it."""
    real = np.zeros((300, 1, 28, 28), np.float32)
    right = metrics.evaluate_images(LabelPainter(), ValueReader(), real, n=200)
    wrong = metrics.evaluate_images(LabelPainter(shift=1), ValueReader(), real, n=200)
    assert right["class_accuracy"] == 1.0 and wrong["class_accuracy"] == 0.0
    assert right["score"] == pytest.approx(10.0)  # confident and balanced: K classes
    assert right["real_score"] == pytest.approx(1.0)  # every real image is of class 0


def test_real_subset_is_a_fixed_random_choice():
    """n of the real images, each at most once, drawn at random (not the first n, which in
    a file sorted by class would be one class) and the same for every call; n may be all
    of them, not more."""
    real = np.arange(1000)[:, None]
    subset = metrics.real_subset(real, 100)
    picked = subset[:, 0]
    assert len(np.unique(picked)) == 100 and np.all(np.diff(picked) > 0)
    assert picked.max() > 500  # the first 100 would all be below 100
    np.testing.assert_array_equal(metrics.real_subset(real, 100), subset)
    np.testing.assert_array_equal(metrics.real_subset(real, 1000), real)
    with pytest.raises(ValueError, match="asked for n=1001 samples but only 1000 real images "
                                         "are available; use --n 1000 or less"):
        metrics.real_subset(real, 1001)


def test_evaluate_for_training_on_toy_data():
    """The run's own mixture, the protocol's 2,500 samples, the noise of the run's seed. G
    here is x = 2 z, which lands samples near many grid centres and some ring ones: the
    numbers tell the two mixtures apart."""
    config = runner.RunConfig(model="gan", data="grid", seed=2)
    gan = models.build("gan", (2,))
    gan.generator = nn.Sequential(nn.Dense(2, 2))
    gan.generator[0].params["weight"][...] = backend.to_device(2 * np.eye(2))
    gan.generator[0].params["bias"][...] = 0
    result = metrics.evaluate_for_training(gan, config, None, None)
    assert set(result) == {"modes", "hq_percent"}
    assert all(isinstance(v, (int, float)) for v in result.values())
    json.dumps(result)
    samples, _ = metrics.generate_samples(gan, metrics.TOY_SAMPLES, seed=2)
    grid = data.TOY_DATASETS["grid"]
    expected = metrics.mode_coverage(samples, grid.centres, grid.sigma)
    assert result == {"modes": expected["modes"], "hq_percent": expected["hq_percent"]}
    ring = data.TOY_DATASETS["ring"]
    assert result != {k: v for k, v in metrics.mode_coverage(samples, ring.centres, ring.sigma)
                      .items() if k != "modes_total"}
    assert result["modes"] > 5


def test_evaluate_for_training_on_images_without_a_classifier_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path))  # an empty cache: no classifier there
    gan = models.build("dcgan", (1, 28, 28))
    images = np.zeros((10, 1, 28, 28), np.float32)
    assert metrics.evaluate_for_training(gan, runner.RunConfig(data="mnist"), images, None) == {}
    # nor with a classifier of the other dataset there (FD through it would mean nothing)
    classifier.save(classifier.default_path("mnist"), classifier.Classifier(),
                    {"data": "fashion-mnist"})
    assert metrics.evaluate_for_training(gan, runner.RunConfig(data="mnist"), images, None) == {}


# --------------------------------------------------------------------------- `tinygan eval`


def save_untrained_checkpoint(path, model, data_name, data_shape, **settings):
    """A trainer checkpoint as the runner writes it, without training (no data needed)."""
    gan = models.build(model, data_shape, 10)
    config = runner.RunConfig(model=model, data=data_name, **settings)
    meta = {"config": asdict(config), "data_shape": list(data_shape),
            "model_options": gan.options, "step": 0, "epoch": 0, "history": [], "eval": []}
    checkpoint.save(path, Trainer(gan), meta)
    return path


def test_cli_eval_on_a_tiny_toy_run(tmp_path, capsys):
    config = runner.RunConfig(model="gan", data="ring", steps=3, batch_size=64,
                              out=str(tmp_path / "run"))
    meta = runner.run(config, progress=False)
    assert set(meta["eval"][-1]) == {"step", "epoch", "modes", "hq_percent"}
    out = tmp_path / "scores.json"
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "modes covered (n=2500)" in printed and "high-quality samples" in printed
    report = json.loads(out.read_text())
    assert report["n"] == 2500 and report["modes_total"] == 8 and report["step"] == 3
    # the per-epoch metric and the command see the same samples (same seed, same noise)
    assert report["modes"] == meta["eval"][-1]["modes"]


def test_cli_eval_without_a_classifier_says_how_to_train_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path / "cache"))
    path = save_untrained_checkpoint(tmp_path / "ckpt.npz", "gan", "mnist", (1, 28, 28))
    assert cli.main(["eval", "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no classifier at" in err and "tinygan classifier train --data mnist`" in err
    # given the images' folder (or a run that saved one), the suggested command has it too:
    # offline, the classifier cannot be trained without it
    data_dir = tmp_path / "my data"
    data_dir.mkdir()
    assert cli.main(["eval", "--checkpoint", str(path), "--data-dir", str(data_dir)]) == 1
    assert (f"run `tinygan classifier train --data mnist --data-dir '{data_dir}'` first"
            in capsys.readouterr().err)


def test_eval_of_a_run_whose_data_folder_is_gone_asks_for_data_dir(tmp_path):
    gone = tmp_path / "moved-away"
    path = save_untrained_checkpoint(tmp_path / "dcgan.npz", "dcgan", "mnist", (1, 28, 28),
                                     data_dir=str(gone))
    with pytest.raises(ValueError, match=f"the run's data folder {gone} no longer exists; "
                                         r"pass data_dir \(--data-dir\)"):
        metrics.evaluate_checkpoint(path)


def test_a_classifier_of_the_other_dataset_is_refused(tmp_path):
    """FD and scores measured through a Fashion-MNIST classifier mean nothing for MNIST."""
    path = tmp_path / "clf.npz"
    classifier.save(path, classifier.Classifier(), {"data": "fashion-mnist"})
    with pytest.raises(ValueError, match=f"classifier {path} was trained on fashion-mnist, but "
                                         "the model was trained on mnist"):
        metrics.find_classifier("mnist", path)
    assert metrics.find_classifier("fashion-mnist", path)[1:] == (
        classifier.load(path)[1], str(path))


@pytest.mark.parametrize("command", [["eval", "--checkpoint", "x.npz"],
                                     ["classifier", "train", "--data", "mnist"]])
def test_cli_missing_data_dir_fails_at_once(tmp_path, capsys, command):
    assert cli.main([*command, "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "no such folder" in capsys.readouterr().err


# ------------------------------------------------------------- `tinygan classifier train`


def test_cli_classifier_train_on_a_small_synthetic_set(tmp_path, monkeypatch, capsys):
    """1,000 images, label k a bright square at a place of its own: 500 train, 500 held out."""
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path / "cache"))
    rng = np.random.default_rng(8)
    labels = np.arange(1000) % 10
    images = rng.integers(0, 60, (1000, 28, 28))
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 5)
        images[i, 4 + 12 * r : 12 + 12 * r, 2 + 5 * c : 6 + 5 * c] = 255
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "clf.npz"
    args = ["classifier", "train", "--data", "mnist", "--data-dir", str(tmp_path),
            "--epochs", "2", "--out", str(out), "--seed", "1"]
    assert cli.main(args) == 0
    printed, log = capsys.readouterr()
    assert [line.split("  ")[0] for line in log.splitlines()][-2:] == ["epoch 1/2", "epoch 2/2"]
    assert "trained on the first 500 of the 1,000 test-split images" in printed
    assert "held-out accuracy on the last 500" in printed
    model, meta = classifier.load(out)
    assert (meta["data"], meta["n_train"], meta["n_heldout"], meta["seed"], meta["epochs"]) == (
        "mnist", 500, 500, 1, 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # atomic write
    accuracy = model.accuracy(images[500:, None] / 127.5 - 1, labels[500:])
    assert accuracy == pytest.approx(meta["heldout_accuracy"])
    assert accuracy > 0.5  # an easy task; chance is 0.1


def test_classifier_load_rejects_other_files(tmp_path):
    path = save_untrained_checkpoint(tmp_path / "gan.npz", "gan", "ring", (2,))
    with pytest.raises(ValueError, match="not a tinygan classifier"):
        classifier.load(path)
    with pytest.raises(FileNotFoundError, match=r"classifier .*missing\.npz does not exist"):
        classifier.load(tmp_path / "missing.npz")


def test_classifier_training_replaces_classifiers_and_damaged_files_only(tmp_path, monkeypatch):
    """A damaged classifier at the default path could not be replaced by retraining it;
    another file (a GAN checkpoint, someone's .npz) must not be replaced."""
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"half a zip file")
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    gan = save_untrained_checkpoint(tmp_path / "gan.npz", "gan", "ring", (2,))
    trained = tmp_path / "clf.npz"
    classifier.save(trained, classifier.Classifier(), {"data": "mnist"})
    assert classifier.replaceable(damaged) and classifier.replaceable(trained)
    assert not classifier.replaceable(other) and not classifier.replaceable(gan)
    monkeypatch.setattr(classifier, "default_path", lambda name: gan)
    with pytest.raises(ValueError, match=f"^classifier path {gan}: that file is not a tinygan "
                                         "classifier; refusing to overwrite it"):
        classifier.train_command("mnist")


def test_a_classifier_file_with_damaged_settings_is_one_line(tmp_path):
    path = tmp_path / "clf.npz"
    classifier.save(path, classifier.Classifier(), {"data": "mnist"})
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays.pop("meta")))
    checkpoint.save_npz_atomic(path, arrays, {**meta, "num_classes": "ten"})
    with pytest.raises(ValueError, match=f"^classifier {path} cannot be read back "):
        classifier.load(path)


def test_predict_runs_in_eval_mode_and_restores_the_mode():
    """Called on a model left in training mode, predict still uses BatchNorm's running
    statistics and no dropout (so it draws no random numbers), and leaves training mode on."""
    model = classifier.Classifier()
    images = np.random.default_rng(10).uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)
    model.forward(backend.to_device(images))  # moves the running statistics off 0 and 1
    model.eval()
    h = model.body.forward(backend.to_device(images))
    expected = backend.to_host(h), backend.to_host(model.head.forward(h))
    model.train()
    state = backend.get_rng_state()
    features, logits = model.predict(images)
    assert backend.get_rng_state() == state and model.training
    np.testing.assert_array_equal(features, expected[0])
    np.testing.assert_array_equal(logits, expected[1])
    assert features.dtype == logits.dtype == np.float64
    model.eval()
    one_features, one_logits = model.predict(images[:1])  # a single image is a batch too
    assert not model.training  # a model in eval mode stays in it
    np.testing.assert_allclose(one_logits, expected[1][:1], rtol=1e-5)  # other BLAS rounding
    assert one_features.shape == (1, classifier.HIDDEN)


def test_classifier_round_trip_keeps_a_non_default_architecture(tmp_path):
    model = classifier.Classifier(num_classes=4, channels=(4, 8), hidden=16)
    classifier.save(tmp_path / "clf.npz", model, {"data": "mnist"})
    loaded, meta = classifier.load(tmp_path / "clf.npz")
    assert (loaded.num_classes, loaded.channels, loaded.hidden) == (4, (4, 8), 16)
    images = np.random.default_rng(12).uniform(-1, 1, (3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(images)[1], model.predict(images)[1])


def test_classifier_training_follows_the_cosine_schedule_and_its_seed(monkeypatch):
    """Step s of T runs at cosine_lr(lr, s, T); log gets epochs 1 and 2 with their mean
    loss; the seed alone fixes the weights, whatever the generators held before; the model
    comes back in eval mode."""
    lrs, logged = [], []
    step = optim.Adam.step
    monkeypatch.setattr(optim.Adam, "step", lambda self: lrs.append(self.lr) or step(self))
    rng = np.random.default_rng(11)
    images = rng.uniform(-1, 1, (64, 1, 28, 28)).astype(np.float32)
    labels = np.arange(64) % 10
    first = classifier.train(images, labels, epochs=2, batch_size=32, lr=0.01, seed=3,
                             log=lambda epoch, loss, seconds: logged.append((epoch, loss)))
    assert lrs == [classifier.cosine_lr(0.01, s, 4) for s in range(4)]
    assert [epoch for epoch, _ in logged] == [1, 2]
    assert all(np.isfinite(loss) and loss > 0 for _, loss in logged)
    assert not first.training
    backend.seed(99)
    second = classifier.train(images, labels, epochs=2, batch_size=32, lr=0.01, seed=3)
    for name, value in first.state_dict().items():
        np.testing.assert_array_equal(backend.to_host(second.state_dict()[name]),
                                      backend.to_host(value), err_msg=name)


def test_cosine_lr_falls_from_lr_to_zero():
    """lr (1 + cos(pi t / T)) / 2: lr at t = 0, (1 + 1/sqrt 2) / 2 of it at T/4, half at T/2,
    0 at T."""
    assert classifier.cosine_lr(0.1, 0, 100) == 0.1
    assert classifier.cosine_lr(0.1, 25, 100) == pytest.approx(0.1 * (1 + 0.5**0.5) / 2)
    assert classifier.cosine_lr(0.1, 50, 100) == pytest.approx(0.05)
    assert classifier.cosine_lr(0.1, 100, 100) == pytest.approx(0.0, abs=1e-17)


def test_heldout_split_sizes():
    assert classifier.heldout_split(10_000) == 8_000
    assert classifier.heldout_split(4_443) == 3_500
    with pytest.raises(ValueError, match="need at least 625 labelled images .*, got 600"):
        classifier.heldout_split(600)


# ---------------------------------------------------------------- on real MNIST (slow)


@pytest.fixture(scope="module")
def mnist():
    """(classifier trained with the shipped defaults, its meta, MNIST test images, labels)."""
    root = data_root()
    if root is None or not (root / "mnist").is_dir():
        pytest.skip("real data not found: set TINYGAN_DATA to the folder holding mnist/")
    (x_train, y_train), (x_held, y_held) = classifier.load_split("mnist", root)
    epochs = classifier.DEFAULT_EPOCHS["mnist"]
    model = classifier.train(x_train, y_train, epochs, seed=0)
    images = np.concatenate([x_train, x_held])
    labels = np.concatenate([y_train, y_held])
    meta = {"data": "mnist", "seed": 0, "epochs": epochs,
            "heldout_accuracy": model.accuracy(x_held, y_held)}
    return model, meta, images, labels


@pytest.mark.slow
def test_classifier_reaches_98_percent_on_held_out_mnist(mnist):
    model, meta, _, _ = mnist
    assert meta["heldout_accuracy"] >= 0.98


def gaussian_blur(images, sigma):
    """Blur (N, 1, 28, 28) images with a Gaussian of std ``sigma`` pixels: B X B^T per image,
    B the 28x28 matrix whose row i holds the (renormalised) kernel centred on pixel i."""
    if sigma == 0:
        return images
    offsets = np.arange(28)[:, None] - np.arange(28)[None, :]
    b = np.exp(-(offsets**2) / (2 * sigma**2))
    b /= b.sum(axis=1, keepdims=True)
    return np.einsum("ij,ncjk,lk->ncil", b, images, b).astype(np.float32)


@pytest.mark.slow
def test_fd_is_near_zero_for_real_halves_and_grows_with_noise_and_blur(mnist):
    model, _, images, _ = mnist
    rng = np.random.default_rng(9)
    order = rng.permutation(len(images))
    reference, other = images[order[:1000]], images[order[1000:2000]]
    ref_features, ref_logits = model.predict(reference)

    def fds(corrupted):
        features, logits = model.predict(corrupted)
        return metrics.fd(ref_features, features), metrics.fd(ref_logits, logits)

    noise_images = rng.uniform(-1, 1, other.shape).astype(np.float32)
    real_vs_noise = fds(noise_images)
    halves = fds(other)
    assert halves[0] < 0.02 * real_vs_noise[0] and halves[1] < 0.02 * real_vs_noise[1]

    noisy = [fds(np.clip(other + s * rng.standard_normal(other.shape), -1, 1).astype(np.float32))
             for s in (0.0, 0.2, 0.4, 0.7, 1.0)]
    blurred = [fds(gaussian_blur(other, s)) for s in (0.0, 0.6, 1.0, 1.5, 2.5)]
    for series in (noisy, blurred):
        for which in (0, 1):  # features, logits
            values = [v[which] for v in series]
            assert all(a < b for a, b in zip(values, values[1:])), values


@pytest.mark.slow
def test_scores_of_real_and_collapsed_samples(mnist):
    model, _, images, labels = mnist
    _, logits = model.predict(images[:2000])
    assert metrics.classifier_score(logits) > 8.5  # the real-data ceiling, at most 10
    assert metrics.class_accuracy(logits, labels[:2000]) > 0.98  # partly seen in training
    _, one_logits = model.predict(np.repeat(images[:1], 500, axis=0))
    assert metrics.classifier_score(one_logits) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.slow
def test_cli_eval_on_an_image_checkpoint(mnist, tmp_path, monkeypatch, capsys):
    model, meta, _, _ = mnist
    root = data_root()
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path / "cache"))
    clf = tmp_path / "clf.npz"
    classifier.save(clf, model, meta)
    path = save_untrained_checkpoint(tmp_path / "acgan.npz", "acgan", "mnist", (1, 28, 28))
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--checkpoint", str(path), "--classifier", str(clf), "--n", "200",
                     "--data-dir", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for line in ("FD features (n=200)", "FD logits   (n=200)", "classifier score (n=200)",
                 "real data:", "class accuracy (n=200)",
                 f"classifier: {clf} (held-out accuracy {100 * meta['heldout_accuracy']:.2f}%)"):
        assert line in printed
    report = json.loads(out.read_text())
    assert report["n"] == 200 and report["classifier"]["path"] == str(clf)
    # an untrained generator: far from the data, near-chance class accuracy
    assert report["fd_features"] > 10 and report["fd_logits"] > 10
    assert report["score"] < report["real_score"]
    assert report["class_accuracy"] < 0.5

    # the default location is where training-time evaluation finds it
    classifier.save(classifier.default_path("mnist"), model, meta)
    gan, _ = metrics.load_generator(path)
    real, _ = data.load_dataset("mnist", root, "test")
    scores = metrics.evaluate_for_training(gan, runner.RunConfig(model="acgan", data="mnist"),
                                           real, None)
    assert set(scores) == {"fd_features", "fd_logits", "score", "class_accuracy"}
    json.dumps(scores)
    assert metrics.training_summary(scores, "mnist") == (
        f"FD features {scores['fd_features']:.1f}, FD logits {scores['fd_logits']:.2f}, "
        f"classifier score {scores['score']:.2f}, "
        f"class accuracy {100 * scores['class_accuracy']:.1f}%")


def test_classifier_training_skips_the_image_gradient_and_restores_it(monkeypatch):
    """train() needs no dL/d(images): the first conv skips it while training, and the
    returned model computes it again (for anyone who wants saliency or attacks)."""
    flags = []
    first = classifier.Classifier.__init__

    def recording_init(self, *args, **kwargs):
        first(self, *args, **kwargs)
        conv, backward = self.body[0], self.body[0].backward

        def recording_backward(dout):
            dx = backward(dout)
            flags.append((conv.needs_input_grad, dx is None))
            return dx

        conv.backward = recording_backward

    monkeypatch.setattr(classifier.Classifier, "__init__", recording_init)
    rng = np.random.default_rng(9)
    images = rng.uniform(-1, 1, (64, 1, 28, 28)).astype(np.float32)
    model = classifier.train(images, np.arange(64) % 10, epochs=1, batch_size=32)
    assert flags == [(False, True)] * 2
    model.train()
    out = model.forward(backend.to_device(images[:4]))
    assert model.backward(backend.xp.ones_like(out)).shape == (4, 1, 28, 28)
