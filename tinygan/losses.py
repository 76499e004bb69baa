"""Losses. Each returns (loss, dlogits): the mean loss and its gradient w.r.t. the
scores it was given, ready to feed into the network's backward pass."""

from tinygan import backend
from tinygan.backend import xp
from tinygan.nn.module import check_array


def check_scores(name, scores, what="logits"):
    """One-line errors unless ``scores`` is a floating-point array: with integer scores
    the gradient (fractions of 1/n) would be rounded to integers, mostly 0. An empty
    batch is let through: as in torch, its mean loss is NaN and its gradient empty."""
    check_array(name, scores, f"an array of {what}")
    if not xp.issubdtype(scores.dtype, xp.floating):
        raise ValueError(f"{name}: expected floating-point {what}, got {scores.dtype}")


def _check_same_shape(name, logits, target):
    if logits.shape != target.shape:
        raise ValueError(f"{name}: logits shape {tuple(logits.shape)} and target shape "
                         f"{tuple(target.shape)} must match")


def bce_with_logits(logits, target):
    """Binary cross-entropy on raw scores x with (soft) targets t in [0, 1].

    l = -[t log s(x) + (1 - t) log(1 - s(x))],  s = sigmoid. Using log s(x) = -softplus(-x)
    and log(1 - s(x)) = -softplus(x), and softplus(x) = max(x, 0) + log(1 + e^-|x|):
        l = max(x, 0) - x t + log(1 + e^-|x|)
    which never exponentiates a positive number, so it is stable for any x.
    Gradient: dl/dx = s(x) - t; with the mean over n elements, dL/dx = (s(x) - t) / n.
    """
    check_scores("bce_with_logits", logits)  # integer logits would cast the target to int
    target = xp.asarray(target, dtype=logits.dtype)
    if target.ndim == 0:
        target = xp.full(logits.shape, target, dtype=logits.dtype)
    _check_same_shape("bce_with_logits", logits, target)
    x, t, n = logits, target, logits.size
    e = xp.exp(-xp.abs(x))
    loss = (xp.maximum(x, 0) - x * t + xp.log1p(e)).mean()
    sigmoid = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return loss, (sigmoid - t) / n


def cross_entropy(logits, labels):
    """Softmax cross-entropy for (N, K) logits and integer labels in [0, K).

    l_n = -log softmax(x_n)[y_n] = logsumexp(x_n) - x_n[y_n], computed with the row
    maximum subtracted first so exp never overflows.
    Gradient: dl_n/dx_nk = softmax(x_n)_k - [k == y_n]; with the mean over N rows,
    dL/dx = (softmax(x) - onehot(y)) / N. This is the only softmax: models output logits.
    """
    check_scores("cross_entropy", logits)
    check_array("cross_entropy", labels, "an array of labels")
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: expected logits (N, K) and labels (N,), got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    if not xp.issubdtype(labels.dtype, xp.integer):  # float labels would index by accident
        raise ValueError(f"cross_entropy: expected integer class labels, got {labels.dtype}")
    n, k = logits.shape
    # As Embedding's: on CuPy this check would sync the GPU every step (labels are
    # validated when loaded); on NumPy a label of -1 would silently pick class K-1.
    if backend.name() == "numpy" and n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"cross_entropy: labels must be in [0, {k}), got values from "
                         f"{int(labels.min())} to {int(labels.max())}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z
    rows = xp.arange(n)
    loss = -log_probs[rows, labels].mean()
    dlogits = xp.exp(log_probs)
    dlogits[rows, labels] -= 1
    return loss, dlogits / n


def wasserstein_critic(scores, real):
    """The critic maximises E[D(real)] - E[D(fake)], i.e. minimises its negative:
    on a real batch L = -mean(D), dL/dD = -1/n; on a fake batch L = +mean(D), dL/dD = +1/n.
    The critic's loss is the sum of the two calls. ``real`` says which batch this is:
    True or False, not a target array as bce_with_logits takes."""
    if not isinstance(real, (bool, xp.bool_)):
        raise TypeError(f"wasserstein_critic: real must be True (a real batch) or False, "
                        f"got {type(real).__name__}")
    return signed_mean("wasserstein_critic", scores, -1 if real else 1)


def wasserstein_generator(scores):
    """The generator minimises -E[D(G(z))]: L = -mean(D), dL/dD = -1/n."""
    return signed_mean("wasserstein_generator", scores, -1)


def signed_mean(name, scores, sign):
    """(sign * mean(D), its gradient sign/n for each of the n scores)."""
    check_scores(name, scores, "scores")
    n = max(scores.size, 1)  # an empty batch: a NaN mean, as torch's, and an empty gradient
    return sign * scores.mean(), xp.full(scores.shape, sign / n, dtype=scores.dtype)
