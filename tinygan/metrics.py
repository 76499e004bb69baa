"""How good is a generator? Metrics for images and for the 2-D mixtures.

Images are judged through a small classifier trained on the real data
(``tinygan.classifier``), as the Inception network is used for FID and the Inception
score on natural images:

- **Fréchet distance (FD)** between real and generated samples, in the classifier's
  penultimate features and in its logits. Each set is summarised by a Gaussian with the
  mean mu and covariance S of its vectors, and
      FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)),
  the squared 2-Wasserstein distance between the two Gaussians. 0 means the same
  statistics; it grows as samples drift away from the real data or lose variety. Its
  estimate depends on the number of samples n, so every model is scored with the same n.
- **Classifier score** (the Inception score's analogue): exp(E_x KL(p(y|x) || p(y))).
  High when each sample is confidently one class (p(y|x) peaked) and all classes appear
  (p(y) flat); 1 for a generator that always draws the same image, at most the number of
  classes. Its value on real images is the ceiling to quote beside a model's.
- **Class accuracy** (CGAN, AC-GAN): the share of samples generated for label y that the
  classifier assigns to y.

The 2-D mixtures use the VEEGAN / PacGAN protocol (Srivastava et al. 2017, Lin et al.
2018): draw 2,500 samples; a sample is *high quality* when it lies within 3 sigma of its
nearest centre; a mode is *covered* when it is the nearest centre of at least one
high-quality sample. We report the modes covered and the percentage of high-quality samples.

Everything is computed on the host in float64; only the networks run on the backend.
"""

import json
import os
import shlex

import numpy as np

from tinygan import backend, checkpoint, classifier, data, files, models, runner

TOY_SAMPLES = 2500  # the VEEGAN / PacGAN protocol
IMAGE_SAMPLES = 2000  # default n for `tinygan eval` on images
TRAINING_SAMPLES = 1000  # n for the per-epoch metrics during training (keeps epochs cheap)
REAL_SUBSET_SEED = 0  # the same real images are the reference for every model
GENERATE_BATCH = 250  # samples per generator forward pass


# -------------------------------------------------------------------------- Fréchet distance


def feature_statistics(features):
    """Mean (d,) and unbiased covariance (d, d) of (n, d) feature vectors, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors of shape (n, d), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def sqrtm_psd(a):
    """The symmetric square root of a symmetric positive semi-definite matrix.

    With the eigendecomposition a = V diag(w) V^T (eigh: w real, V orthogonal),
    a^(1/2) = V diag(sqrt(w)) V^T, since (V D V^T)(V D V^T) = V D^2 V^T. Rounding can make
    the smallest eigenvalues of a singular matrix slightly negative; they are clipped to 0.
    """
    a = (a + a.T) / 2
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1, s2):
    """tr (S1 S2)^(1/2) for symmetric PSD S1, S2, without ever taking the root of a
    non-symmetric matrix.

    S1 S2 is not symmetric, but it has the eigenvalues of M = S1^(1/2) S2 S1^(1/2): with
    X = S1^(1/2) and Y = S1^(1/2) S2, S1 S2 = XY and M = YX, and XY and YX always share
    their eigenvalues (even when S1 is singular, as with dead classifier features). M is
    symmetric PSD, so eigh applies. The trace of the square root is the sum of the square
    roots of those eigenvalues.
    """
    r = sqrtm_psd(s1)
    m = r @ s2 @ r
    eigenvalues = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1, s1, mu2, s2):
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr (S1 S2)^(1/2), in float64.

    The true value is never negative; a rounding error of ~1e-12 below 0 is returned as 0.
    Statistics holding NaN or inf (a diverged generator's) give NaN: the distance is
    undefined, and a training run's curves should show the gap rather than stop on it.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    if not all(np.isfinite(a).all() for a in (mu1, s1, mu2, s2)):
        return float("nan")
    d2 = float(np.sum((mu1 - mu2) ** 2))
    value = d2 + float(np.trace(s1) + np.trace(s2)) - 2 * trace_sqrt_product(s1, s2)
    return max(value, 0.0)


def fd(features_a, features_b):
    """The Fréchet distance between two sets of feature vectors, (n, d) and (m, d);
    NaN when either holds NaN or inf (see ``frechet_distance``; checked here as well, since
    the covariance of such features would first warn of invalid values)."""
    if not (np.isfinite(features_a).all() and np.isfinite(features_b).all()):
        return float("nan")
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


# ---------------------------------------------------------------------- scores from logits


def softmax(logits):
    """Row-wise softmax in float64, with the row maximum subtracted so exp never overflows."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classifier_score(logits):
    """exp(E_x KL(p(y|x) || p(y))) with p(y) = E_x p(y|x), over all n rows at once.

    KL(p || q) = sum_k p_k (log p_k - log q_k); terms with p_k = 0 contribute 0.
    Logits holding NaN or inf (a diverged generator's) give NaN, not a score.
    """
    logits = check_logits("classifier_score", logits)
    if not np.isfinite(logits).all():
        return float("nan")
    p = softmax(logits)
    p_y = p.mean(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(p_y)), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def class_accuracy(logits, labels):
    """Share of samples whose most likely class is the label they were generated for
    (NaN when a row of logits holds NaN: its most likely class is undefined)."""
    logits, labels = check_logits("class_accuracy", logits), np.asarray(labels)
    if labels.shape != logits.shape[:1]:  # (n, 1) labels would broadcast to (n, n)
        raise ValueError(f"class_accuracy: expected labels of shape ({len(logits)},), one per "
                         f"row of logits, got {labels.shape}")
    if np.isnan(logits).any():
        return float("nan")
    return float(np.mean(logits.argmax(axis=1) == labels))


def check_logits(owner, logits):
    """logits as a host array, after a one-line ValueError unless they are (n, K), n >= 1."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"{owner}: expected logits of shape (n, K) with n >= 1, "
                         f"got {logits.shape}")
    return logits


# ------------------------------------------------------------------------ 2-D mode coverage


def mode_coverage(samples, centres, sigma):
    """The VEEGAN / PacGAN protocol on (n, 2) samples of a mixture with these centres.

    Returns {"modes": covered modes, "modes_total": number of centres,
             "hq_percent": 100 * share of samples within 3 sigma of their nearest centre}.
    """
    samples = np.asarray(samples, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1:] != centres.shape[1:]:  # (n, 1) would broadcast
        raise ValueError(f"mode_coverage: expected samples of shape (n, {centres.shape[1]}) "
                         f"like the centres, got {samples.shape}")
    distances = np.linalg.norm(samples[:, None, :] - centres[None, :, :], axis=2)  # (n, K)
    nearest = distances.argmin(axis=1)
    high_quality = distances.min(axis=1) <= 3 * sigma
    return {"modes": int(len(np.unique(nearest[high_quality]))),
            "modes_total": int(len(centres)),
            "hq_percent": float(100 * high_quality.mean())}


# ------------------------------------------------------------------------------- sampling


def generate_samples(gan, n, seed):
    """n samples from G in eval mode, as a host array, and the labels they were asked for.

    The noise comes from a host generator of its own (``seed``), so evaluating never
    draws from tinygan's training generator. Conditional models get balanced labels
    0, 1, ..., K-1, 0, 1, ...; unconditional ones get labels None.
    """
    rng = np.random.default_rng([seed, 4])
    z = rng.standard_normal((n, gan.z_dim)).astype(np.float32)
    labels = np.arange(n) % gan.num_classes if gan.conditional_g else None
    parts = []
    for start in range(0, n, GENERATE_BATCH):
        stop = min(start + GENERATE_BATCH, n)
        y = None if labels is None else backend.to_device(labels[start:stop])
        parts.append(runner.generate(gan, backend.to_device(z[start:stop]), y))
    return np.concatenate(parts), labels


def real_subset(real, n):
    """The same n real images for every model: a fixed random choice without replacement."""
    if n > len(real):
        raise ValueError(f"asked for n={n} samples but only {len(real)} real images are "
                         f"available; use --n {len(real)} or less")
    pick = np.random.default_rng(REAL_SUBSET_SEED).choice(len(real), n, replace=False)
    return real[np.sort(pick)]


# ----------------------------------------------------------------------------- evaluations


def evaluate_toy(gan, mixture, n=TOY_SAMPLES, seed=0):
    """Mode coverage of n generated points on a ``data.ToyMixture``."""
    samples, _ = generate_samples(gan, n, seed)
    return mode_coverage(samples, mixture.centres, mixture.sigma)


def evaluate_images(gan, model, real, n=IMAGE_SAMPLES, seed=0):
    """FD on features and logits, classifier score, (class accuracy), all with n samples.

    ``model`` is a trained ``classifier.Classifier``; ``real`` the real images (N, 1, 28, 28).
    Also returns "real_score", the classifier score of the n real images: the ceiling.
    """
    real_features, real_logits = model.predict(real_subset(real, n))
    fake, labels = generate_samples(gan, n, seed)
    fake_features, fake_logits = model.predict(fake)
    result = {"fd_features": fd(real_features, fake_features),
              "fd_logits": fd(real_logits, fake_logits),
              "score": classifier_score(fake_logits),
              "real_score": classifier_score(real_logits)}
    if labels is not None:
        result["class_accuracy"] = class_accuracy(fake_logits, labels)
    return result


def evaluate_for_training(gan, config, real, labels):
    """Per-epoch metrics for ``tinygan.runner``: a dict of numbers, or {} when none apply.

    2-D data: mode coverage with the protocol's 2,500 samples. Images: FD, classifier
    score and class accuracy with n = 1,000, only when a classifier for the dataset has
    been trained into the default location (``tinygan classifier train``). The noise is
    the same every epoch (seeded from the run's seed), so the curves compare like with like.
    """
    if config.data in data.TOY_DATASETS:
        return {k: v for k, v in evaluate_toy(gan, data.TOY_DATASETS[config.data],
                                              seed=config.seed).items() if k != "modes_total"}
    path = classifier.default_path(config.data)
    if not path.is_file():
        return {}
    model, meta = classifier.load(path)
    if meta.get("data") != config.data:
        return {}
    result = evaluate_images(gan, model, real, min(TRAINING_SAMPLES, len(real)), config.seed)
    result.pop("real_score")  # a constant: it belongs in the report, not on the curves
    return result


def training_summary(entry, data_name):
    """One line for the end of ``tinygan train``: an ``evaluate_for_training`` record."""
    if "modes" in entry:
        total = len(data.TOY_DATASETS[data_name].centres)
        return (f"{entry['modes']} of {total} modes covered, {entry['hq_percent']:.1f}% of "
                f"samples high quality")
    parts = [f"FD features {entry['fd_features']:.1f}", f"FD logits {entry['fd_logits']:.2f}",
             f"classifier score {entry['score']:.2f}"]
    if "class_accuracy" in entry:
        parts.append(f"class accuracy {100 * entry['class_accuracy']:.1f}%")
    return ", ".join(parts)


# --------------------------------------------------------------------- `tinygan eval`


def load_generator(path):
    """(gan with its trained generator, checkpoint meta) from a training checkpoint."""
    states, meta = checkpoint.load_run(path)
    gan = models.build(meta["config"]["model"], meta["data_shape"], **meta["model_options"])
    gan.generator.load_state_dict(states["generator"])
    return gan, meta


def find_classifier(name, path=None, data_dir=None):
    """The classifier to judge ``name`` images with: ``path``, else the default location.
    ``data_dir``, where the images are, goes into the command the error suggests."""
    path = path or classifier.default_path(name)
    if not os.path.isfile(path):
        where = f" --data-dir {shlex.quote(str(data_dir))}" if data_dir else ""
        raise FileNotFoundError(f"no classifier at {path}: run `tinygan classifier train "
                                f"--data {name}{where}` first, or pass --classifier FILE")
    model, meta = classifier.load(path)
    if meta.get("data") != name:
        raise ValueError(f"classifier {path} was trained on {meta.get('data')}, "
                         f"but the model was trained on {name}")
    return model, meta, str(path)


def evaluate_checkpoint(path, classifier_path=None, n=None, data_dir=None, seed=0):
    """Everything ``tinygan eval`` reports, as a JSON-able dict."""
    gan, meta = load_generator(path)
    config = meta["config"]
    report = {"checkpoint": str(path), "model": config["model"], "data": config["data"],
              "step": meta.get("step"), "seed": seed}
    if config["data"] in data.TOY_DATASETS:
        if classifier_path is not None:  # say so rather than ignore it
            raise ValueError(f"a classifier scores images; {path} was trained on 2-D points "
                             f"({config['data']}), which are scored by mode coverage")
        if data_dir is not None:
            raise ValueError(f"data_dir (--data-dir) holds real images; {path} was trained on "
                             f"2-D points ({config['data']}), which are drawn, not read")
        report["n"] = n or TOY_SAMPLES
        report.update(evaluate_toy(gan, data.TOY_DATASETS[config["data"]], report["n"], seed))
        return report
    saved_dir = config.get("data_dir")
    if data_dir is None and saved_dir and not os.path.isdir(saved_dir):
        raise ValueError(f"the run's data folder {saved_dir} no longer exists; pass data_dir "
                         "(--data-dir) with the real images")
    data_dir = data_dir or saved_dir
    model, model_meta, model_path = find_classifier(config["data"], classifier_path, data_dir)
    real, _ = data.load_dataset(config["data"], data_dir, "train")
    report["n"] = n or IMAGE_SAMPLES
    report["classifier"] = {"path": model_path,
                            "heldout_accuracy": model_meta["heldout_accuracy"]}
    report.update(evaluate_images(gan, model, real, report["n"], seed))
    return report


def format_report(report):
    """The lines ``tinygan eval`` prints."""
    n = report["n"]
    lines = [f"{report['model']} on {report['data']}, step {report['step']} "
             f"({report['checkpoint']})"]
    if "modes" in report:
        mixture = data.TOY_DATASETS[report["data"]]
        lines += [f"modes covered (n={n}): {report['modes']} / {report['modes_total']}",
                  f"high-quality samples (within 3 sigma = {3 * mixture.sigma:g} of a centre, "
                  f"n={n}): {report['hq_percent']:.1f}%"]
        return lines
    accuracy = 100 * report["classifier"]["heldout_accuracy"]
    lines += [f"classifier: {report['classifier']['path']} (held-out accuracy {accuracy:.2f}%)",
              f"FD features (n={n}): {report['fd_features']:.3f}",
              f"FD logits   (n={n}): {report['fd_logits']:.3f}",
              f"classifier score (n={n}): {report['score']:.3f}   "
              f"(real data: {report['real_score']:.3f})"]
    if "class_accuracy" in report:
        lines.append(f"class accuracy (n={n}): {100 * report['class_accuracy']:.1f}%")
    return lines


def write_json(path, report):
    """Write the report as JSON (creating the folder), whole or not at all."""
    with files.written_atomically(path) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=1)
