r"""The digit classifier of MNIST addition and its loss on the sum.

The classifier is the authors' LeNet (``ML-KULeuven/catlog``, ``ADDITION/network.py``,
``DigitSamplerNet``): conv 6@5×5, ReLU, max-pool 2; conv 16@5×5, ReLU, max-pool 2; dense 120,
ReLU; dense 84, ReLU; dense 10 — Keras layers, so Glorot-uniform weights and zero biases. It
maps each of the N images of an example to the logits :math:`\theta_i` of a categorical
digit :math:`d_i \sim \mathrm{Cat}(\mathrm{softmax}\,\theta_i)`, and the model calls the
sampler once on the ``(B, N, 10)`` logits.

The authors' objective is :math:`-\log P_\theta(\sum_i d_i = y)`, the negative
log-likelihood of the label sum, with :math:`P` estimated by the mean of the indicator
:math:`\mathbb{1}[\sum_i d_i = y]` of K sampled digit tuples (``ADDITION/losses.py``,
``prob_loss``; ``network.py``, ``rloo_grads``: ``-log(P̂ + 1e-8)``), so each example's gradient
is the estimate of :math:`\nabla P` divided by :math:`\hat P`. gvbench's estimators estimate the
gradient of an expectation, and the log of one is not one; but the digits are independent given
the images, so P is known in closed form (the law of the sum is the convolution of the N digit
laws). The loss on one sample of the digits is therefore the error weighted by the exact
:math:`1/P`, held constant:

.. math::
    f(d) = \frac{1 - \mathbb{1}[\sum_i d_i = y]}{\mathrm{sg}(P_\theta(\sum_i d_i = y)) + 10^{-8}},
    \qquad \nabla_\theta \mathbb{E}[f] = -\frac{\nabla_\theta P}{P + 10^{-8}}
    = \nabla_\theta\big(-\log(P + 10^{-8})\big),

the authors' gradient with :math:`\hat P` replaced by P: every estimator estimates
:math:`\nabla P` from the indicator alone, and all share one exact scale. The expected loss,
:math:`(1 - P)/\mathrm{sg}(P)`, is exact, so the harness measures bias² against the exact
gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gvbench.estimators import Sampler

CATEGORIES = 10
EPSILON = 1e-8  # added to P, as the authors' -log(P̂ + 1e-8)


def greedy(logits: Tensor, *, dim: int = -1) -> Tensor:
    """Each digit's most probable class, one-hot: how the authors' ``mnist_sum_test``
    (``ADDITION/evaluate.py``) reads the classifier."""
    return torch.zeros_like(logits).scatter(dim, logits.argmax(dim, keepdim=True), 1.0)


class DigitClassifier(nn.Module):
    """LeNet: ``(n, 784)`` images in [0, 1] → ``(n, 10)`` digit logits."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.hidden1 = nn.Linear(16 * 4 * 4, 120)
        self.hidden2 = nn.Linear(120, 84)
        self.digits = nn.Linear(84, CATEGORIES)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.hidden1, self.hidden2, self.digits):
                # Keras's glorot_uniform: fan-in and fan-out count the kernel's receptive field.
                receptive = layer.weight[0, 0].numel() if layer.weight.dim() > 2 else 1
                fan_in = layer.weight.shape[1] * receptive
                fan_out = layer.weight.shape[0] * receptive
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                layer.weight.copy_(
                    torch.rand(layer.weight.shape, generator=generator) * 2 * limit - limit
                )
                layer.bias.zero_()

    def forward(self, images: Tensor) -> Tensor:
        x = images.reshape(-1, 1, 28, 28)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.hidden1(x.flatten(1)))
        return self.digits(F.relu(self.hidden2(x)))


class DigitAdder(nn.Module):
    """``model(images, sums, labels, sample=…) -> (digits, law)``: ``(B, N, 10)`` one-hot
    digits sampled from the classifier's logits of the ``(B, N, 784)`` images, and the law of
    their sum ``(B, 9N + 1)`` (:func:`sum_law`), which the loss weighs by. ``sums`` and
    ``labels`` are read by the loss and the diagnostics, not here (a harness task hands every
    input to both)."""

    arity = CATEGORIES

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.classifier = DigitClassifier(seed)

    def logits(self, images: Tensor) -> Tensor:
        """``(B, N, 10)`` digit logits."""
        return self.classifier(images).reshape(*images.shape[:-1], CATEGORIES)

    def forward(
        self,
        images: Tensor,
        sums: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        sample: Sampler,
    ) -> tuple[Tensor, Tensor]:
        logits = self.logits(images)
        return sample(logits), sum_law(logits)


def sum_law(logits: Tensor) -> Tensor:
    r"""The law of :math:`\sum_i d_i` for independent digits with ``logits`` ``(B, N, 10)``:
    ``(B, 9N + 1)``, entry s the probability that the digits sum to s, differentiable.

    The convolution of the N digit laws as a product of their discrete Fourier transforms,
    in float64 (whose round-off, ~1e-16, stays far below the 1e-8 added to P).
    """
    p = torch.softmax(logits.double(), -1)
    length = (CATEGORIES - 1) * p.shape[-2] + 1
    spectra = torch.fft.rfft(p, n=length, dim=-1)
    return torch.fft.irfft(spectra.prod(-2), n=length, dim=-1).to(logits.dtype)


def sum_probability(law: Tensor, sums: Tensor) -> Tensor:
    """``(B,)`` :math:`P(\\sum_i d_i = y)` from the sum's ``law`` ``(B, 9N + 1)``: 0 for a sum
    N digits cannot reach, and never below 0 (the transform's round-off)."""
    inside = (sums >= 0) & (sums < law.shape[-1])
    index = sums.clamp(0, law.shape[-1] - 1).to(torch.int64)[..., None]
    return law.gather(-1, index)[..., 0].clamp_min(0.0) * inside


def sum_hit(digits: Tensor, sums: Tensor) -> Tensor:
    r"""Per-example :math:`\mathbb{1}[\sum_i d_i = y]` for one-hot digits ``(B, N, 10)`` and
    label sums ``(B,)``, in the digits' dtype."""
    values = torch.arange(CATEGORIES, dtype=digits.dtype, device=digits.device)
    predicted = (digits * values).sum((-2, -1)).round()
    return (predicted == sums.to(digits.dtype)).to(digits.dtype)


def weighted_sum_error(digits: Tensor, law: Tensor, sums: Tensor) -> Tensor:
    r"""Per-example :math:`(1 - \mathbb{1}[\sum_i d_i = y]) / (\mathrm{sg}(P) + 10^{-8})` for
    one-hot digits ``(B, N, 10)``, the sum's ``law`` and label sums ``(B,)``."""
    return (1.0 - sum_hit(digits, sums)) / (sum_probability(law, sums).detach() + EPSILON)


def expected_weighted_sum_error(logits: Tensor, sums: Tensor) -> Tensor:
    r"""The exact :math:`\mathbb{E}[f] = (1 - P) / (\mathrm{sg}(P) + 10^{-8})`, per example
    ``(B,)``, differentiable in ``logits``: its gradient is that of :math:`-\log(P + 10^{-8})`."""
    probability = sum_probability(sum_law(logits), sums)
    return (1.0 - probability) / (probability.detach() + EPSILON)
