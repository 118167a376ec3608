"""I-MLE and AIMLE against the authors' wrappers on the same noise, and the Sum-of-Gamma noise
they perturb with: its quantiles and its law."""

from __future__ import annotations

import math

import pytest
import torch

import gvbench.estimators as E
from gvbench.estimators.sum_of_gamma import gamma_quantile, sum_of_gamma_noise
from tests.stats import assert_variance_not_above, assert_within_se
from tests.test_simple import bias2

# --- ports of uclnlp/torch-imle imle/wrapper.py and EdinburghNLP/torch-adaptive-imle
# imle/aimle.py, imle/target.py and imle/solvers.py, in torch, fed our noise ----------------


def authors_select_k(logits, k):
    """``solvers.select_k``: a mask on ``torch.topk``'s indices."""
    indices = torch.topk(logits, k, sorted=True).indices
    return torch.zeros_like(logits).scatter_(-1, indices, 1.0)


class AuthorsAdaptiveTarget:
    """``AdaptiveTargetDistribution`` (its defaults unless given)."""

    def __init__(self, beta=1.0, beta_update_step=0.0001):
        self.alpha, self.beta, self.grad_norm = 1.0, beta, 1.0
        self.beta_update_step, self.beta_update_momentum = beta_update_step, 0.0
        self.previous_beta_update, self.grad_norm_decay_rate, self.target_norm = 0.0, 0.9, 1.0

    def magnitude(self, theta, dy):
        norm_dy = torch.linalg.norm(dy).item() if dy is not None else 1.0
        return 0.0 if norm_dy <= 0.0 else self.beta * (torch.linalg.norm(theta) / norm_dy)

    def params(self, theta, dy):
        return self.alpha * theta - self.magnitude(theta, dy) * (dy if dy is not None else 0.0)

    def process(self, theta, dy, gradient_3d):
        batch_size, nb_samples = gradient_3d.shape[:2]
        pm = self.magnitude(theta, dy)
        grad_nnz = torch.count_nonzero(gradient_3d).float()
        self.grad_norm = self.grad_norm_decay_rate * self.grad_norm + (
            1.0 - self.grad_norm_decay_rate
        ) * (grad_nnz / (batch_size * nb_samples))
        step = (1.0 if self.grad_norm.item() < self.target_norm else -1.0) * self.beta_update_step
        beta_update = self.beta_update_momentum * self.previous_beta_update + step
        self.beta = max(self.beta + beta_update, 0.0)
        self.previous_beta_update = beta_update
        return gradient_3d / (pm if pm > 0.0 else 1.0)


def authors_layer(k, noise, lam=None, adaptive=None, symmetric=False, temperature=1.0):
    """The wrappers' autograd function with one noise sample (nb_samples = 1): I-MLE's
    ``TargetDistribution(alpha=1, beta=lam)`` when ``adaptive`` is None, else AIMLE."""

    class Wrapped(torch.autograd.Function):
        @staticmethod
        def forward(ctx, theta):
            z = authors_select_k(theta + noise * temperature, k)
            ctx.save_for_backward(theta, z)
            return z

        @staticmethod
        def backward(ctx, dy):
            theta, z = ctx.saved_tensors
            eps = noise * temperature
            if adaptive is None:
                return z - authors_select_k(theta - lam * dy + eps, k)
            right = authors_select_k(adaptive.params(theta, dy) + eps, k)
            left = authors_select_k(adaptive.params(theta, -dy if symmetric else None) + eps, k)
            gradient = left - right
            if symmetric:
                gradient = gradient / 2.0
            return adaptive.process(theta, dy, gradient[:, None])[:, 0]

    return Wrapped.apply


def quadratic_objective(n, seed=0):
    """A non-linear f of the k-hot z, so the upstream gradient depends on the sample."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, dtype=torch.float64, generator=generator)
    c = torch.randn(n, dtype=torch.float64, generator=generator)
    return lambda z: torch.einsum("...i,ij,...j->...", z, w, z) / 2 + z @ c


@pytest.mark.parametrize(("tau", "lam"), [(1.0, 1.0), (0.5, 3.0), (2.0, 10.0)])
def test_imle_is_the_authors_on_the_same_noise(tau, lam):
    """Measured: the same samples, and the same gradients to the bit (largest difference 0)."""
    n, k, rows = 8, 3, 400
    theta = torch.randn(rows, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = quadratic_objective(n)
    largest, nonzero = 0.0, 0
    for seed in range(5):
        leaf = theta.clone().requires_grad_()
        ours = E.imle(leaf, k, tau, lam=lam, generator=torch.Generator().manual_seed(seed))
        f(ours).sum().backward()
        noise = sum_of_gamma_noise(theta.shape, k, theta, 10, torch.Generator().manual_seed(seed))
        peer_leaf = theta.clone().requires_grad_()
        theirs = authors_layer(k, noise, lam=lam, temperature=tau)(peer_leaf)
        f(theirs).sum().backward()
        assert torch.equal(ours, theirs)
        largest = max(largest, float((leaf.grad - peer_leaf.grad).abs().max()))
        nonzero += int(leaf.grad.ne(0).any(-1).sum())
    assert largest < 1e-12
    assert nonzero > 100  # rows whose gradient is not zero: the comparison compared something


@pytest.mark.parametrize("symmetric", [True, False])
def test_aimle_is_the_authors_row_by_row_on_the_same_noise(symmetric):
    """λ held at 1.5; the authors' code on each of the 64 rows alone, with its row of the
    noise (gvbench's norms are each row's; theirs, their minibatch's, the same for one row)
    (measured: largest gradient difference 2.2e-16 symmetric, 4.4e-16 one-sided)."""
    n, k, rows = 8, 2, 64
    theta = torch.randn(rows, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = quadratic_objective(n, seed=3)
    largest, nonzero = 0.0, 0
    for seed in range(5):
        leaf = theta.clone().requires_grad_()
        sample = E.aimle(
            leaf, k, lam=1.5, symmetric=symmetric, generator=torch.Generator().manual_seed(seed)
        )
        f(sample).sum().backward()
        noise = sum_of_gamma_noise(theta.shape, k, theta, 10, torch.Generator().manual_seed(seed))
        for row in range(rows):
            peer = AuthorsAdaptiveTarget(beta=1.5, beta_update_step=0.0)
            peer_leaf = theta[row : row + 1].clone().requires_grad_()
            layer = authors_layer(k, noise[row : row + 1], adaptive=peer, symmetric=symmetric)
            f(layer(peer_leaf)).sum().backward()
            largest = max(largest, float((leaf.grad[row] - peer_leaf.grad[0]).abs().max()))
        nonzero += int(leaf.grad.ne(0).any(-1).sum())
    assert largest < 1e-12
    assert nonzero > 50


@pytest.mark.parametrize("symmetric", [True, False])
def test_aimle_adapts_lambda_as_the_authors_call_after_call(symmetric):
    """Forty calls in a row, one row each: the gradients and λ after each (measured: largest
    gradient difference 2.2e-16 and 4.4e-16; λ equal to the bit, 1 → 0.9964 symmetric,
    0.9988 one-sided)."""
    n, k = 8, 2
    theta = torch.randn(1, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = quadratic_objective(n, seed=3)
    estimator = E.get("aimle", symmetric=symmetric)
    peer = AuthorsAdaptiveTarget()
    largest = 0.0
    for seed in range(40):
        leaf = theta.clone().requires_grad_()
        generator = torch.Generator().manual_seed(seed)
        estimator(
            lambda sample, leaf=leaf: f(sample(leaf, k)), generator=generator
        ).sum().backward()
        noise = sum_of_gamma_noise(theta.shape, k, theta, 10, torch.Generator().manual_seed(seed))
        peer_leaf = theta.clone().requires_grad_()
        f(authors_layer(k, noise, adaptive=peer, symmetric=symmetric)(peer_leaf)).sum().backward()
        largest = max(largest, float((leaf.grad - peer_leaf.grad).abs().max()))
        assert estimator.summary()["lambda"] == peer.beta
    assert largest < 1e-12
    assert peer.beta != 1.0  # λ moved, in both


def test_aimle_without_state_holds_lambda():
    theta = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    state = E.AdaptiveLambda(2.0)
    frozen = state.frozen()
    leaf = theta.clone().requires_grad_()
    (E.aimle(leaf, 2, lam=frozen) * torch.arange(6.0)).sum().backward()
    assert frozen.lam == 2.0 and frozen.adaptation == "fixed"
    assert state.adaptation == "within_call"
    with pytest.raises(ValueError, match="decay must lie in"):
        E.AdaptiveLambda(decay=1.0)


# --- the noise ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [1.0, 0.5, 0.1, 0.01])
def test_gamma_quantile_inverts_the_cdf(shape):
    """P(a, x(u)) = u in relative terms, tails included (measured: at most 1.2e-14)."""
    u = torch.rand(20_000, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    tails = [1e-300, 1e-12, 0.5, 0.5 + 1e-12, 0.632, 1 - 1e-12, 1 - 2**-53]
    u = torch.cat([u, torch.tensor(tails, dtype=torch.float64)])
    x = gamma_quantile(u, shape)
    a = torch.full_like(x, shape)
    lower = u <= 0.5
    found = torch.where(lower, torch.special.gammainc(a, x), torch.special.gammaincc(a, x))
    wanted = torch.where(lower, u, 1 - u)
    error = ((found - wanted).abs() / wanted).masked_fill(x < 1e-17, 0.0)  # x underflows
    assert torch.isfinite(x).all() and error.max() < 1e-12


@pytest.mark.parametrize(("size", "iterations"), [(1, 10), (3, 10), (10, 100)])
def test_sum_of_gamma_noise_has_its_law(size, iterations):
    """Mean (H_s − log s)/κ, variance Σ 1/(κ i²), and the authors' sampler (torch's Gamma)
    gives the same mean and variance within 5 SE."""
    draws = 1_000_000 // iterations  # a million quantiles each
    ours = sum_of_gamma_noise((draws,), size, torch.zeros(1, dtype=torch.float64), iterations)
    harmonic = sum(1 / i for i in range(1, iterations + 1))
    variance = sum(1 / i**2 for i in range(1, iterations + 1)) / size
    assert_within_se(ours[:, None], torch.tensor([(harmonic - math.log(iterations)) / size]))
    squares = (ours - ours.mean()) ** 2
    assert_within_se(squares[:, None], torch.tensor([variance]))
    torch.manual_seed(6)
    theirs = torch.zeros(draws, dtype=torch.float64)
    for i in range(1, iterations + 1):
        gamma = torch.distributions.Gamma(torch.tensor(1 / size), torch.tensor(i / size))
        theirs += gamma.sample((draws,)).double()
    theirs = (theirs - math.log(iterations)) / size
    assert_within_se(ours[:, None], theirs.mean().reshape(1), extra_se=theirs.std() / draws**0.5)
    assert_within_se(squares[:, None], theirs.var().reshape(1), extra_se=squares.std() / draws**0.5)
    # a Gumbel (the limit of κ = 1 as s → ∞) has variance π²/6 = 1.64, not 1.55 at s = 10
    if size == 1 and iterations == 10:
        with pytest.raises(AssertionError):
            assert_within_se(squares[:, None], torch.tensor([math.pi**2 / 6]))


def test_noise_is_the_same_from_a_noise_stream():
    """Drawn from uniforms alone: a RunStream holding the generator's uniforms gives the
    same noise, which is what lets runs trained as one under vmap keep their own draws."""
    pool = torch.rand(10 * 12, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    stream = E.RunStream(pool)
    like = torch.zeros(1, dtype=torch.float64)
    from_stream = sum_of_gamma_noise((3, 4), 2, like, 10, stream)
    from_generator = sum_of_gamma_noise((3, 4), 2, like, 10, torch.Generator().manual_seed(7))
    assert torch.equal(from_stream, from_generator)


# --- AIMLE's claim for its central difference: against the gradient of the k-subset law
# (exact by enumeration), less bias and less variance than the one-sided difference ---------


def test_the_central_difference_has_less_bias_and_variance_than_the_one_sided():
    """λ held at the default 1; 2 of 6 items, a softplus objective with interactions
    (measured: bias² 0.042 ± 0.002 against 0.241 ± 0.009, 22 SE apart; variance 0.95 against
    2.77, 27 SE apart)."""
    n, k, draws = 6, 2, 10_000
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(n, dtype=torch.float64, generator=generator)
    w = torch.randn(n, n, dtype=torch.float64, generator=generator) / 2
    c = torch.randn(n, dtype=torch.float64, generator=generator)

    def f(z):
        quadratic = torch.einsum("...i,ij,...j->...", z, w, z)
        return torch.nn.functional.softplus(quadratic / 3 + z @ c) + (z @ c) ** 2 / 4

    leaf = theta[None].clone().requires_grad_()
    E.exact(lambda sample: f(sample(leaf, k))).sum().backward()
    exact = leaf.grad[0]
    found = {}
    for symmetric in (True, False):
        leaf = theta.expand(draws, -1).clone().requires_grad_()
        estimator = E.get("aimle", lam=1.0, symmetric=symmetric)
        estimator(
            lambda sample, leaf=leaf: f(sample(leaf, k)),
            generator=torch.Generator().manual_seed(1),
        ).sum().backward()
        found[symmetric] = leaf.grad
    (central, se_central), (one_sided, se_one_sided) = (
        bias2(found[True], exact),
        bias2(found[False], exact),
    )
    assert (one_sided - central) / math.hypot(se_central, se_one_sided) > 5
    assert assert_variance_not_above(found[True], found[False]) < -5
    with pytest.raises(AssertionError, match="above the baseline"):
        assert_variance_not_above(found[False], found[True])
