"""A ModuleTask's two ways of making draws, vmapped (``batched=True``) and one plain pass at a
time (``batched=False``), draw the same noise, bit for bit, for every registered estimator:
``batched="auto"`` chooses between them by a timing, which must not change the draws.

The draws themselves agree to rounding: vmap's kernels over R draws (a batched matmul, a
vectorised sigmoid whose last elements one draw alone would compute by the scalar path)
round in other places than one draw's. Where both ways run the same kernels (a module vmap
cannot run) they agree bit for bit. A different stream would differ at the size of the draws.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import vmap

import gvbench
import gvbench.estimators as E
from gvbench.estimators.sampling import randint, uniform
from gvbench.estimators.streams import DrawAxis
from gvbench.harness.draws import adapt, gradient_draws
from gvbench.tasks import ModuleTask
from tests.conftest import CATEGORICAL_ESTIMATORS


class TwoChoices(nn.Module):
    """Two sampler calls per forward: every draw asks for noise at least twice, which is
    where drawing one pass at a time and drawing under vmap would part ways."""

    def __init__(self, branch_on_values: bool = False):
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.second = nn.Linear(3, 2)
        self.decoder = nn.Linear(6, 3)
        self.branch_on_values = branch_on_values

    def forward(self, x, sample):
        z = torch.cat(
            [
                sample(self.first(x).view(len(x), 2, 2)).flatten(1),
                sample(self.second(x).view(len(x), 1, 2)).flatten(1),
            ],
            -1,
        )
        out = self.decoder(z)
        if self.branch_on_values and bool(out.sum() > 1e9):  # vmap cannot take this branch
            out = out * 0
        return ((out - x) ** 2).sum(-1)


def two_choice_task(batched: bool, **options) -> ModuleTask:
    torch.manual_seed(0)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = TwoChoices(**options).double()
    # A cap of 3 draws per pass: 8 draws are passes of 3, 3 and 2, so rows, blocks and a
    # shorter last pass are all exercised.
    task = ModuleTask(model, x, arity=2, relaxed_inputs=True, batched=batched, max_draws_per_pass=3)
    task.enumerable = lambda batch_size: True  # 2^3 outcomes an example: exact applies too
    return task


def sweep_in(batched: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the estimators that fall back from vmap say so
        return gvbench.sweep(
            two_choice_task(batched),
            estimators=CATEGORICAL_ESTIMATORS,
            tau=[0.7],
            k=[2],
            batch_size=[3],
            reps=8,
            warmup=4,
            progress=False,
        )


# Float64 rounding, a few units in the last place of each draw: a draw from another stream
# would differ by the draw's own size.
ROUNDING = dict(rtol=1e-12, atol=1e-14)


def test_every_registered_estimator_gives_the_same_metrics_either_way():
    batched, looped = sweep_in(True), sweep_in(False)
    status = batched.status.squeeze().to_series()
    assert (status == "done").all(), status[status != "done"]
    assert (looped.status == batched.status).all()
    assert set(batched.estimator.values) == set(CATEGORICAL_ESTIMATORS)
    compared = 0
    for name, values in batched.data_vars.items():
        if values.dtype.kind != "f" or "second" in name or "time" in name:
            continue  # the cost of a draw is what the two ways differ in
        np.testing.assert_allclose(values.values, looped[name].values, **ROUNDING, err_msg=name)
        compared += 1
    assert {"variance", "bias2", "mse", "cosine"} <= set(batched.data_vars) and compared > 4


@pytest.mark.parametrize(
    ("name", "options", "seeded"),
    [
        ("gumbel_rao", {"tau": 0.5, "k": 3}, True),
        ("rloo", {"k": 3}, True),
        ("reinforce", {}, True),
        ("rloo", {"k": 3}, False),
    ],
)
def test_draws_and_adapted_state_are_the_same_either_way(name, options, seeded):
    """GR-MCK draws in its backward pass, RLOO once per sample, REINFORCE moves a baseline
    after each pass: each part ways with a plain loop drawing from the generator in turn.
    Without a generator, both ways draw from torch's global one."""
    found = []
    for batched in (True, False):
        torch.manual_seed(7)
        generator = torch.Generator().manual_seed(3) if seeded else None
        task = two_choice_task(batched)
        estimator = adapt(task, E.get(name, **options), 3, 2, generator)
        found.append((gradient_draws(task, estimator, 8, 2, generator), estimator.summary()))
    (batched_draws, batched_state), (looped_draws, looped_state) = found
    torch.testing.assert_close(batched_draws, looped_draws, **ROUNDING)
    assert batched_state == pytest.approx(looped_state, rel=1e-12)
    assert batched_draws.std(0).gt(0).any()  # the draws are draws, not one repeated


def test_a_module_vmap_cannot_run_gives_the_same_draws_either_way():
    """Both ways then make one plain pass per draw, from the generator in turn: bit for bit."""
    found = []
    for batched in (True, False):
        task = two_choice_task(batched, branch_on_values=True)
        generator = torch.Generator().manual_seed(3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            estimator = adapt(task, E.get("reinforce"), 2, 2, generator)
            found.append(gradient_draws(task, E.get("rloo", k=3), 7, 2, generator))
        assert "reinforce" in task._unbatchable and "rloo" in task._unbatchable
        # Only the batched task tried vmap on the cell's draws and says what it cost.
        assert any("one draw per pass" in str(w.message) for w in caught) == batched
        found.append(estimator.summary())
    assert torch.equal(found[0], found[2]) and found[1] == found[3]


def test_a_draw_axis_hands_out_vmaps_noise_row_by_row():
    def requests(stream):
        return (
            uniform((2, 3), torch.float64, torch.device("cpu"), stream),
            uniform((4,), torch.float32, torch.device("cpu"), stream),
            randint(5, (3,), torch.device("cpu"), stream),
        )

    generator = torch.Generator().manual_seed(11)
    under_vmap = vmap(lambda _: requests(generator), randomness="different")(torch.zeros(4))
    axis = DrawAxis(torch.Generator().manual_seed(11), 4)
    rows = [requests(axis.row(r)) for r in range(4)]
    for index, block in enumerate(under_vmap):
        assert torch.equal(torch.stack([row[index] for row in rows]), block)
    # A draw's request unlike the block's has no vmapped counterpart: it draws its own
    # noise, from where the stream stands.
    cpu = torch.device("cpu")
    axis = DrawAxis(torch.Generator().manual_seed(11), 2)
    first, second = axis.row(0), axis.row(1)
    uniform((3,), torch.float64, cpu, first)
    uniform((5,), torch.float64, cpu, first)
    uniform((3,), torch.float64, cpu, second)
    own = uniform((4,), torch.float64, cpu, second)
    expected = torch.Generator().manual_seed(11)
    torch.rand(2, 3, dtype=torch.float64, generator=expected)
    torch.rand(2, 5, dtype=torch.float64, generator=expected)
    assert torch.equal(own, torch.rand(4, dtype=torch.float64, generator=expected))
