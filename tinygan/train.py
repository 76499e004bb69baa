"""One training loop for every GAN family.

A step is one discriminator (critic) update on a real batch and a fake batch and,
every ``n_critic`` steps, one generator update:

  D step:  L_D = loss_D(D(x_real), real) + loss_D(D(G(z)), fake)     -> update D only
  G step:  L_G = loss_G(D(G(z)))                                      -> update G only

The G step back-propagates through D to reach G's output, but D is *frozen* for it
(``requires_grad_(False)``): D's backward returns dL/dx without computing or touching
its own weight gradients, and D's optimizer does not step. Conversely, in the D step
D's input is data (real, or fakes made without gradient) and G's input is noise in
both: nothing learns from those input gradients, so the networks skip them
(``no_input_grad``; conditional networks still compute theirs for the embedding).

The families differ only in the losses below (a small table), their networks and
their schedule (n_critic, weight clipping); this file does not branch on the family.
"""

import math
import numbers
from dataclasses import dataclass

from tinygan import backend, losses, optim
from tinygan.backend import xp
from tinygan.nn import frozen, no_input_grad
from tinygan.nn.module import check_array


@dataclass
class Tricks:
    """Stabilisation tricks (Salimans et al. 2016; Sønderby et al. 2016), all off by default.

    label_smoothing: real targets become 1 - s (one-sided: fake targets stay 0).
    label_noise:     targets move by a uniform draw of up to n towards the other class
                     (real 1 - s - n..1 - s, s being the smoothing; fake 0..n); s + n <= 1,
                     so that no target leaves [0, 1].
    flip_labels:     each D target t becomes 1 - t with this probability, after the
                     smoothing and noise (so a flipped smoothed real target is s, not 0).
    instance_noise:  Gaussian noise of this std is added to every input D sees.
    minimax:         G minimises log(1 - D(G(z))) (the paper's game) instead of the
                     non-saturating -log D(G(z)), whose gradient does not vanish early on.
    """

    label_smoothing: float = 0.0
    label_noise: float = 0.0
    flip_labels: float = 0.0
    instance_noise: float = 0.0
    minimax: bool = False

    def __post_init__(self):
        for name in ("label_smoothing", "label_noise", "flip_labels"):
            value = getattr(self, name)
            if not 0 <= value <= 1:  # nan fails it too
                raise ValueError(f"Tricks: {name} must be in [0, 1], got {value!r}")
        if not 0 <= self.instance_noise < math.inf:
            raise ValueError(f"Tricks: instance_noise must be a std >= 0, "
                             f"got {self.instance_noise!r}")
        if self.label_smoothing + self.label_noise > 1:  # a real target would go below 0
            raise ValueError(f"Tricks: label_smoothing + label_noise must be at most 1, got "
                             f"{self.label_smoothing} + {self.label_noise}")


def decay_scale(step, total, fraction):
    """Learning-rate multiplier for step ``step`` (0-based) of ``total``.

    1 for the first (1 - fraction) of the run, then falling linearly towards 0 over
    the last ``fraction`` of it (reaching 1/decay_steps on the last step, never 0).
    Late in training the updates stop overshooting, so samples settle onto the modes
    instead of jittering around them.
    """
    if not 0 <= step < total:  # at or past the end the multiplier would be 0 or negative
        raise ValueError(f"decay_scale: step {step} is outside the run's steps 0 to {total - 1}")
    decay_steps = fraction * total
    if decay_steps <= 0:
        return 1.0
    return min(1.0, (total - step) / decay_steps)


class Trainer:
    """Trains one GAN built by ``models.build``: ``step(real[, labels])`` is one D update
    and, every ``gan.n_critic``-th call, one G update, as the module docstring spells out.
    The optimizers are the family's (``gan.make_optimizers``; ``lr`` replaces its rate);
    ``tricks`` are the optional stabilisation tricks (``Tricks``)."""

    def __init__(self, gan, lr=None, tricks=None):
        backend.keep_freed_memory()  # the same arrays every step: reuse, no page faults
        self.gan, self.tricks = gan, tricks or Tricks()
        target_tricks = [name for name in ("label_smoothing", "label_noise", "flip_labels",
                                           "minimax") if getattr(self.tricks, name)]
        if gan.objective == "wasserstein" and target_tricks:
            raise ValueError(f"{', '.join(target_tricks)}: these change the BCE targets or "
                             "loss, and the WGAN critic has neither (instance_noise applies)")
        self.g_opt, self.d_opt = gan.make_optimizers(lr)
        self.base_lr = (self.g_opt.lr, self.d_opt.lr)
        self.step_count = 0
        _, module, key = next(gan.generator.parameters())
        self.dtype = module.params[key].dtype  # of the noise: float32, or float64 to check

    def scale_lr(self, scale):
        """Set both optimizers' learning rates to ``scale`` times their initial values."""
        if not (isinstance(scale, numbers.Real) and 0 <= scale < math.inf):
            raise ValueError(f"scale_lr: scale must be a finite number >= 0, got {scale!r}")
        self.g_opt.lr, self.d_opt.lr = (lr * scale for lr in self.base_lr)

    # -- losses: the only place where families differ --------------------------------
    def _adversarial(self, scores, real, for_generator):
        """(loss, dscores) for the real/fake score column."""
        if self.gan.objective == "wasserstein":
            if for_generator:
                return losses.wasserstein_generator(scores)
            return losses.wasserstein_critic(scores, real)
        if for_generator:
            if self.tricks.minimax:  # minimise log(1 - D(G(z))) = -BCE(scores, 0)
                loss, d = losses.bce_with_logits(scores, xp.zeros_like(scores))
                return -loss, -d
            return losses.bce_with_logits(scores, xp.ones_like(scores))
        return losses.bce_with_logits(scores, self._targets(scores, real))

    def _targets(self, scores, real):
        """D's BCE targets with the label tricks applied."""
        t = self.tricks
        rng = backend.rng()
        target = xp.full(scores.shape, 1.0 - t.label_smoothing if real else 0.0, scores.dtype)
        if t.label_noise:
            jitter = rng.random(scores.shape, dtype=scores.dtype) * scores.dtype.type(t.label_noise)
            target = target - jitter if real else target + jitter
        if t.flip_labels:
            flip = rng.random(scores.shape, dtype=scores.dtype) < t.flip_labels
            target = xp.where(flip, 1 - target, target)
        return target

    def _loss(self, out, labels, real, for_generator):
        """Adversarial loss, plus AC-GAN's class loss when D has a class head.

        AC-GAN's D output is [s, c_1..c_K]: column 0 is the real/fake logit, the rest
        are class logits (one softmax, inside cross_entropy). Both G and D minimise
        the class loss; the gradient is the two heads' gradients side by side.
        D learns its class head on fakes too only if ``gan.d_class_loss_on_fake``
        (the paper's L_C); otherwise the class head stays a classifier of real images.
        """
        if not self.gan.class_head:
            return self._adversarial(out, real, for_generator)
        adv_loss, dadv = self._adversarial(out[:, :1], real, for_generator)
        if not (real or for_generator or self.gan.d_class_loss_on_fake):
            return adv_loss, xp.concatenate([dadv, xp.zeros_like(out[:, 1:])], axis=1)
        cls_loss, dcls = losses.cross_entropy(out[:, 1:], labels)
        return adv_loss + cls_loss, xp.concatenate([dadv, dcls], axis=1)

    # -- helpers ------------------------------------------------------------------------
    def sample_inputs(self, n):
        """Noise z ~ N(0, I) and, for conditional models, uniformly drawn labels."""
        rng = backend.rng()
        z = rng.standard_normal((n, self.gan.z_dim), dtype=self.dtype)
        y = rng.integers(0, self.gan.num_classes, n) if self.gan.conditional_g else None
        return z, y

    def _noisy(self, x):
        sigma = self.tricks.instance_noise
        if not sigma:
            return x
        return x + backend.rng().standard_normal(x.shape, dtype=x.dtype) * x.dtype.type(sigma)

    # -- the step -----------------------------------------------------------------------
    def discriminator_step(self, real, labels=None):
        gan, n = self.gan, real.shape[0]
        z, fake_labels = self.sample_inputs(n)
        fake = gan.generate(z, fake_labels)  # no G backward in this step
        self.d_opt.zero_grad()
        with no_input_grad(gan.discriminator):
            out_real = gan.discriminate(self._noisy(real), labels)
            loss_real, d = self._loss(out_real, labels, True, False)
            gan.discriminator.backward(d)
            out_fake = gan.discriminate(self._noisy(fake), fake_labels)
            loss_fake, d = self._loss(out_fake, fake_labels, False, False)
            gan.discriminator.backward(d)
        self.d_opt.step()
        if gan.clip:
            optim.clip_weights(gan.discriminator, gan.clip)
        return loss_real + loss_fake

    def generator_step(self, n):
        gan = self.gan
        z, labels = self.sample_inputs(n)
        self.g_opt.zero_grad()
        fake = gan.generate(z, labels)
        with frozen(gan.discriminator):
            loss, d = self._loss(gan.discriminate(self._noisy(fake), labels), labels, True, True)
            dfake = gan.discriminator.backward(d)
        with no_input_grad(gan.generator):
            gan.generator.backward(dfake)
        self.g_opt.step()
        return loss

    def step(self, real, labels=None):
        """One D update; a G update every n_critic-th call.

        Returns the losses as 0-d backend arrays: converting them to Python floats here
        would make the GPU wait and copy to the host every step, so callers convert
        only when they log.
        """
        check_array("Trainer.step", real, "an array of real samples")
        result = {"d_loss": self.discriminator_step(real, labels)}
        self.step_count += 1  # after the D update: a step that raised does not count
        if self.step_count % self.gan.n_critic == 0:
            result["g_loss"] = self.generator_step(real.shape[0])
        return result
