"""Layer-wise ARM and DisARM (gvbench.estimators.layerwise) on sequential binary choices:
unbiased against the exact gradient of a three-layer belief net (enumerated), failing for a
wrong treatment of the layers above, DisARM's own gradient on one layer, and a row of the
sigmoid belief net's leaderboard column."""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import pytest
import torch

import gvbench.estimators as E
from gvbench.estimators import layerwise
from gvbench.estimators.streams import RunStream

UNITS = (2, 2, 2)  # three layers of two units: 2^6 joint outcomes
INPUTS = torch.tensor([[1.0, -0.5, 0.3], [-0.2, 0.8, 1.1]], dtype=torch.float64)
REPS = 20_000


def belief_net(reps: int) -> dict[str, torch.Tensor]:
    """Weights of a three-layer sigmoid belief net, one copy per replica (leading axis), so
    that one call gives ``reps`` independent gradients."""
    generator = torch.Generator().manual_seed(7)
    shapes = {"w1": (2, 3), "b1": (2,), "w2": (2, 2), "b2": (2,), "w3": (2, 2), "b3": (2,)}
    base = {k: torch.randn(s, generator=generator, dtype=torch.float64) for k, s in shapes.items()}
    return {k: v.expand(reps, *v.shape).clone().requires_grad_() for k, v in base.items()}


def objective(params: dict[str, torch.Tensor]):
    r"""Per (replica, example) loss ``(R, B)``: the layers' logits depend on the samples
    below; the loss depends on every layer and directly on a weight."""

    def loss(sample) -> torch.Tensor:
        logits = torch.einsum("rij,ej->rei", params["w1"], INPUTS) + params["b1"][:, None]
        z1 = sample(torch.stack([torch.zeros_like(logits), logits], -1))[..., 1]
        logits = torch.einsum("rij,rej->rei", params["w2"], z1) + params["b2"][:, None]
        z2 = sample(torch.stack([torch.zeros_like(logits), logits], -1))[..., 1]
        logits = torch.einsum("rij,rej->rei", params["w3"], z2) + params["b3"][:, None]
        z3 = sample(torch.stack([torch.zeros_like(logits), logits], -1))[..., 1]
        target = INPUTS[:, :2] + 0.3
        fit = ((2 * z3 - z1 - target) ** 2).sum(-1) + 1.5 * z2[..., 0] * z3[..., 1]
        return fit + 0.1 * params["b1"].sum(-1, keepdim=True) * z2.sum(-1)

    return loss


def exact_gradient() -> torch.Tensor:
    """Σ_z q(z) f(z) over the 2^6 joint outcomes, differentiated (one replica)."""
    params = belief_net(1)
    expected = 0
    for bits in itertools.product((0.0, 1.0), repeat=sum(UNITS)):
        values = torch.tensor(bits, dtype=torch.float64).split(UNITS)
        seen = []

        def play(logits, *, dim=-1, seen=seen, values=values):
            value = values[len(seen)].expand(logits.shape[:-1])
            seen.append((logits[..., 1] - logits[..., 0], value))
            return torch.stack([1 - value, value], -1)

        f = objective(params)(play)
        log_q = sum((v * phi - torch.nn.functional.softplus(phi)).sum(-1) for phi, v in seen)
        expected = expected + (log_q.exp() * f).sum()
    expected.backward()
    return torch.cat([p.grad.flatten() for p in params.values()])


def estimates(name: str, reps: int = REPS, **options) -> torch.Tensor:
    """``reps`` independent gradients ``(reps, parameters)`` of ``name`` on the belief net."""
    params = belief_net(reps)
    generator = torch.Generator().manual_seed(2026)
    E.get(name, **options)(objective(params), generator=generator).sum().backward()
    return torch.cat([p.grad.reshape(reps, -1) for p in params.values()], 1)


def z_scores(draws: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    se = draws.std(0) / math.sqrt(len(draws))
    return (draws.mean(0) - exact) / se


@pytest.mark.parametrize(
    ("name", "shared_randomness"),
    [
        ("disarm_layerwise", False),
        ("disarm_layerwise", True),
        ("arm_layerwise", False),
        ("arm_layerwise", True),
    ],
)
def test_layerwise_estimators_are_unbiased_on_a_three_layer_belief_net(name, shared_randomness):
    exact = exact_gradient()
    draws = estimates(name, shared_randomness=shared_randomness)
    z = z_scores(draws, exact)
    assert z.abs().max() < 5, (z, exact)
    assert (draws.std(0) > 0).all()  # every weight, in every layer, gets a noisy estimate


def test_drawing_the_layers_above_from_the_wrong_law_is_caught(monkeypatch):
    """The same test fails for a variant whose runs draw the layers above their pair at
    probability ½ instead of from their conditionals given the pair's value."""

    def at_one_half(uniforms, shared_randomness, generator):
        return lambda call, phi: (uniforms[call] < 0.5).to(phi.dtype)

    monkeypatch.setattr(layerwise, "_upper_draws", at_one_half)
    z = z_scores(estimates("disarm_layerwise"), exact_gradient())
    assert z.abs().max() > 10, z


@pytest.mark.parametrize("name", ["arm_layerwise", "disarm_layerwise"])
def test_shared_randomness_draws_both_runs_of_a_pair_from_the_same_uniforms(name):
    """With logits that do not depend on the samples below, the two runs of a layer's pair
    draw the same layers above it where ``shared_randomness`` is on, and (with 64 fair
    units a layer) different ones where it is off."""
    layers, units = 3, 64

    def recorded(runs):
        def loss(sample):
            logits = torch.zeros(1, units, dtype=torch.float64)
            drawn = [sample(torch.stack([logits, logits], -1))[..., 1] for _ in range(layers)]
            runs.append(drawn)
            return sum(z.sum(-1) for z in drawn)

        return loss

    for shared_randomness in (True, False):
        runs = []
        estimator = E.get(name, shared_randomness=shared_randomness)
        estimator(recorded(runs), generator=torch.Generator().manual_seed(3))
        assert len(runs) == 1 + 2 * layers
        for layer in range(layers - 1):
            first, second = runs[1 + 2 * layer], runs[2 + 2 * layer]
            for above in range(layer + 1, layers):
                same = torch.equal(first[above], second[above])
                assert same == shared_randomness, (shared_randomness, layer, above)


def test_disarm_layerwise_is_disarm_on_one_layer_at_the_same_uniforms():
    """One layer: the logits' gradient is DisARM's at the same u; the layer-wise value is
    the loss at its shared sample (the first uniforms of its stream)."""
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)

    def loss(logits):
        def f(sample):
            b = sample(torch.stack([torch.zeros_like(logits), logits], -1))[..., 1]
            return torch.sin(b @ weights) + (b[..., 0] * b[..., 3])

        return f

    for seed in range(8):
        pool = torch.rand(
            2, 3 * 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        shared, pair = pool
        gradients = []
        for name, stream in (
            ("disarm", RunStream(pair)),
            ("disarm_layerwise", RunStream(torch.cat([shared, pair]))),
        ):
            logits = torch.linspace(-2, 2, 12, dtype=torch.float64).reshape(3, 4).requires_grad_()
            surrogate = E.get(name)(loss(logits), generator=stream)
            surrogate.sum().backward()
            gradients.append(logits.grad)
        torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=1e-15)
        b = (shared.reshape(3, 4) < torch.sigmoid(logits.detach())).double()
        expected = torch.sin(b @ weights) + b[:, 0] * b[:, 3]
        torch.testing.assert_close(surrogate.detach(), expected, rtol=0, atol=0)


def test_costs_one_run_and_a_pair_per_layer():
    choices = E.Choices(((200, 2),) * 4)
    assert E.info("disarm_layerwise").evaluations_per_draw({}, choices) == 9
    runs = []

    def counted(sample):
        runs.append(1)
        return objective(belief_net(1))(sample)

    E.get("arm_layerwise")(counted, generator=torch.Generator().manual_seed(0))
    assert len(runs) == 1 + 2 * len(UNITS)


def test_an_objective_whose_logits_are_not_a_function_of_the_samples_is_refused():
    drift = iter(range(100))

    def restless(sample):
        logits = torch.full((2, 3), float(next(drift)), dtype=torch.float64)
        return sample(torch.stack([torch.zeros_like(logits), logits], -1))[..., 1].sum(-1)

    with pytest.raises(ValueError, match="deterministic function of the samples"):
        E.get("disarm_layerwise")(restless, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="shared_randomness"):
        E.get("disarm_layerwise", shared_randomness=1)(objective(belief_net(1)))


def test_the_sigmoid_belief_net_trains_with_the_layerwise_estimators():
    from gvbench.experiments.binary_vae.config import BinaryVAEConfig

    for name in ("disarm_layerwise", "arm_layerwise"):
        assert BinaryVAEConfig(estimator=name, model="sbn", layers=4).layers == 4
    with pytest.raises(ValueError, match="disarm_layerwise"):
        BinaryVAEConfig(estimator="disarm", model="sbn", layers=4)


def test_the_sbn_column_fills_its_layerwise_disarm_row(tmp_path, monkeypatch):
    """The sigmoid belief net's column (at the tiny preset's sizes or below, with the sbn
    model in place of its linear one) measures and trains DisARM's layer-wise form."""
    from gvbench.experiments.binary_vae import presets
    from gvbench.leaderboard.fill import fill

    # the tiny sizes, smaller still: what is checked is that the row fills, not its value
    tiny = dataclasses.replace(
        presets.PRESETS["tiny"],
        models=(presets.SBN,),
        steps=2,
        checkpoint_steps=2,
        gradient_reps=4,
        reference_reps=8,
        search_trials=1,
        iw_samples=1,
        valid_iw_samples=1,
    )
    monkeypatch.setitem(presets.PRESETS, "tiny", tiny)
    # The brief checkpoint is cached under the board's folder (OUT/columns/NAME/checkpoints);
    # run from tmp_path, so that anything written to the working directory shows.
    monkeypatch.chdir(tmp_path)
    row = "disarm_layerwise"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sampled reference's sizing notes
        board = fill("tiny", tmp_path / "board", estimators=[row], columns=["sbn"], progress=False)
    measured = board.entries[board.entries.estimator == row].set_index("measure")
    variance = measured.loc["variance"]
    assert math.isfinite(variance.value) and variance.value > 0 and variance.se > 0, variance
    assert not variance.note, variance
    outcome = measured.loc["outcome"]
    assert math.isfinite(outcome.value) and not outcome.note, outcome
    assert outcome.n == tiny.seeds and outcome.over == "seeds", outcome
    assert [path.name for path in tmp_path.iterdir()] == ["board"]
    assert any((tmp_path / "board" / "columns" / "sbn" / "checkpoints").iterdir())
