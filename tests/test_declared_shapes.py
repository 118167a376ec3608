"""A declared arity is checked at every sampler call: a category axis of another size (the
logits' categories in dim 1, sampled over the last dim) is one line naming the call's line in
the user's forward, the shape and the dim to use."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import gvbench.estimators as E
from gvbench.tasks import ModuleTask
from gvbench.tasks.module_sampler import ChoiceShapeError

LATENTS, ARITY, BATCH = 7, 16, 4


class CategoriesInDimOne(nn.Module):
    """An encoder whose logits are (B, categories, latents), as some VAEs' own code has them."""

    def __init__(self, dim: int = -1, arity: int | None = None) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, ARITY * LATENTS, dtype=torch.float64)
        self.decoder = nn.Linear(ARITY * LATENTS, 3, dtype=torch.float64)
        self.dim = dim
        if arity is not None:
            self.arity = arity

    def forward(self, x, sample):
        z = sample(self.encoder(x).view(len(x), ARITY, LATENTS), dim=self.dim)
        return ((self.decoder(z.flatten(1)) - x) ** 2).sum(-1)


def call_line() -> int:
    """The line of the sampler call in :meth:`CategoriesInDimOne.forward`."""
    lines, first = inspect.getsourcelines(CategoriesInDimOne.forward)
    return first + next(i for i, line in enumerate(lines) if "sample(" in line)


def inputs() -> torch.Tensor:
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def draw(task: ModuleTask, estimator: str = "reinforce") -> torch.Tensor:
    return task.gradients(E.get(estimator), 2, BATCH, torch.Generator().manual_seed(0))


def assert_one_line_naming_the_call(error: BaseException, origin: str) -> None:
    message = str(error)
    assert "\n" not in message and not getattr(error, "__notes__", None), message
    assert f"test_declared_shapes.py:{call_line()} in forward" in message, message
    assert f"({BATCH}, {ARITY}, {LATENTS})" in message and "dim=-1" in message, message
    assert f"{LATENTS} categories" in message and f"arity is {ARITY} ({origin})" in message
    assert message.endswith("use dim=1"), message


@pytest.mark.parametrize("batched", [True, False])
def test_a_declared_arity_on_another_axis_names_the_call_and_the_dim(batched):
    task = ModuleTask(CategoriesInDimOne(), inputs(), arity=ARITY, batched=batched)
    with pytest.raises(ChoiceShapeError) as caught:
        draw(task)
    assert isinstance(caught.value, ValueError)  # bad input, as everywhere else
    assert_one_line_naming_the_call(caught.value, f"arity={ARITY} on the ModuleTask")


def test_the_arity_is_read_from_the_module_when_not_declared():
    task = ModuleTask(CategoriesInDimOne(arity=ARITY), inputs(), batched=False)
    assert task.arity == ARITY
    with pytest.raises(ChoiceShapeError) as caught:
        draw(task, "st_gumbel_softmax")  # pathwise: no other check would ever see it
    assert_one_line_naming_the_call(caught.value, "CategoriesInDimOne.arity")
    assert ModuleTask(CategoriesInDimOne(), inputs()).arity is None  # nothing to read


def test_the_dim_it_names_is_the_one_that_works():
    task = ModuleTask(CategoriesInDimOne(dim=1), inputs(), arity=ARITY, batched=False)
    grads = draw(task)
    assert grads.shape == (2, sum(p.numel() for p in task.parameters().values()))
    assert torch.isfinite(grads).all()


def test_no_axis_of_the_declared_size_says_so():
    task = ModuleTask(CategoriesInDimOne(), inputs(), arity=5, batched=False)
    with pytest.raises(ChoiceShapeError, match=r"no axis has 5 categories$"):
        draw(task)
