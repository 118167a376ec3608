r"""The two published categorical-VAE protocols, as data: what the model, its ELBO, its data
and its optimiser are in each, and where each part comes from.

- ``coupled``: Dong, Mnih & Tucker (2021), "Coupled Gradient Estimators for Discrete Latent
  Variables", NeurIPS; the authors' code, google-research ``coupled_estimators``
  (``experiment_launcher.py``: flags and networks; ``networks.py``: ``CategoricalNetwork``,
  ``BinaryNetwork``, ``CategoricalVAE.categorical_call``). 20 variables × 10 categories;
  encoder 784 → 512 → 256 → 20·10 and decoder 200 → 256 → 512 → 784 with LeakyReLU(0.2)
  (``encoder_type=nonlinear``), Glorot-uniform weights; ``--demean_input`` (the encoder
  reads :math:`x - \bar x`, the decoder :math:`2z - 1`, the one-hot code) and
  ``--initialize_with_bias`` (the pixel logits' bias starts at
  :math:`\operatorname{logit}\operatorname{clip}(\bar x, 0.001, 0.999)`); a learned
  categorical prior (logits from zero); the single-sample ELBO
  :math:`\log p(x\mid z) + \log p(z) - \log q(z\mid x)`; batch 200; Adam at 1e-4 for the
  networks and SGD at 1e-2 for the prior's logits, unclipped; the 100-sample bound on the
  test set (``num_eval_samples``); trained by default with RLOO over as many samples as
  categories (``grad_type=reinforce_loo``, ``num_samples`` = ``num_categories``). The authors
  binarize MNIST dynamically (a fresh Bernoulli draw per batch); here the draw is made once,
  by the run's seed (:func:`~gvbench.experiments.images.load_images`, ``"static"``), since
  the training loop draws no noise into its data.
- ``reinmax``: Liu et al. (2023), "Bridging Discrete and Backpropagation: Straight-Through and
  Beyond", NeurIPS; the authors' code, github.com/microsoft/ReinMax ``mnist_vae``
  (``model/vae.py``, ``gumbel_softmax_vae.py``, ``reinmax_8_4.sh``, README). Their "8 × 4" is
  8 categories × 4 latent variables (``--categorical-dim 8 --latent-dim 4``; their exact
  gradient asserts fewer than 16,384 codes: 8⁴ = 4,096); encoder 784 → 512 → 256 → 4·8 and
  decoder 32 → 256 → 512 → 784 with ReLU, PyTorch's default initialisation; a uniform prior
  with the KL to it in closed form, :math:`-\mathrm{BCE}(x, z) - \mathrm{KL}(q \,\|\,
  \mathrm{Unif})`; MNIST intensities in [0, 1] as the BCE's targets (``ToTensor``, no
  binarization); batch 100; Adam at 5e-4 and τ = 1.3 (their ReinMax setting at 8 × 4); the
  analysed models trained with ReinMax (the README's bias-estimation command).
  Their gradient analysis (``VAE.analyze_gradient``) compares estimates with the exact
  gradient of the reconstruction term, enumerated over every code.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One protocol's choices. The sizes (latents, categories, hidden) are the published ones;
    a run may scale them (the ``tiny`` and ``cpu`` presets do), the rest is the protocol.

    Attributes:
        name: ``"coupled"`` or ``"reinmax"``.
        latents, categories: the published latent variables and their categories.
        hidden: the widths of the encoder's hidden layers (the decoder's, reversed).
        activation: ``"leaky_relu"`` (slope 0.2) or ``"relu"``.
        glorot: Glorot-uniform weights and zero biases (Keras' ``Dense``); otherwise
            PyTorch's ``nn.Linear`` default, U(±1/√fan-in) for both.
        centred: the encoder reads :math:`x - \\bar x`, the decoder :math:`2z - 1`, and the
            pixel logits' bias starts at the training mean's logit.
        learned_prior: a categorical prior with learned logits; otherwise uniform.
        analytic_kl: the ELBO's KL term in closed form; otherwise its one-sample estimate
            :math:`\\log q(z \\mid x) - \\log p(z)` at the drawn code.
        binarize: how images are binarized (``None``: intensities as targets).
        trainer, trainer_k: the estimator (and its K) of the protocol's own runs, which the
            harness task's checkpoints are trained with.
        batch_size: examples per step.
        lr: Adam's learning rate for the networks.
        prior_lr: plain SGD's learning rate for the prior's logits (with a learned prior).
        tau: the temperature the protocol trains its relaxed estimators at.
        test_samples: importance samples of the test bound.
        source: where it comes from, one line.
    """

    name: str
    latents: int
    categories: int
    hidden: tuple[int, int]
    activation: Literal["leaky_relu", "relu"]
    glorot: bool
    centred: bool
    learned_prior: bool
    analytic_kl: bool
    binarize: Literal["static"] | None
    trainer: str
    trainer_k: int
    batch_size: int
    lr: float
    prior_lr: float | None
    tau: float
    test_samples: int
    source: str


PROTOCOLS = {
    "coupled": Protocol(
        name="coupled",
        latents=20,
        categories=10,
        hidden=(512, 256),
        activation="leaky_relu",
        glorot=True,
        centred=True,
        learned_prior=True,
        analytic_kl=False,
        binarize="static",
        trainer="rloo",
        trainer_k=10,
        batch_size=200,
        lr=1e-4,
        prior_lr=1e-2,
        tau=1.0,
        test_samples=100,
        source=(
            "Dong, Mnih & Tucker 2021 (NeurIPS), google-research coupled_estimators "
            "experiment_launcher.py and networks.py"
        ),
    ),
    "reinmax": Protocol(
        name="reinmax",
        latents=4,
        categories=8,
        hidden=(512, 256),
        activation="relu",
        glorot=False,
        centred=False,
        learned_prior=False,
        analytic_kl=True,
        binarize=None,
        trainer="reinmax",
        trainer_k=1,
        batch_size=100,
        lr=5e-4,
        prior_lr=None,
        tau=1.3,
        test_samples=100,
        source=(
            "Liu et al. 2023 (NeurIPS), microsoft/ReinMax mnist_vae (model/vae.py, "
            "gumbel_softmax_vae.py, reinmax_8_4.sh)"
        ),
    ),
}

LEAKY_SLOPE = 0.2


def protocol(name: str) -> Protocol:
    """The protocol ``name``; a ``ValueError`` listing those there are."""
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}") from None
