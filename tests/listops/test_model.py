"""The Gumbel Tree-LSTM: tree construction, masking, and estimators through sequential choices."""

from __future__ import annotations

import pytest
import torch

import gvbench.estimators as E
from gvbench.listops.data import encode, generate_splits
from gvbench.listops.experiment import LISTOPS, GumbelTreeLSTM, greedy

MODEL = GumbelTreeLSTM(8, seed=0).double()


def leftmost(logits, *, dim=-1):
    """Always merge the first pair: a left-branching tree."""
    out = torch.zeros_like(logits)
    out[..., 0] = 1.0
    return out


def compose(h_left, c_left, h_right, c_right):
    i, f_l, f_r, o, g = MODEL.compose(torch.cat([h_left, h_right], -1)).chunk(5, -1)
    c = (
        torch.sigmoid(f_l + 1) * c_left
        + torch.sigmoid(f_r + 1) * c_right
        + torch.sigmoid(i) * torch.tanh(g)
    )
    return torch.sigmoid(o) * torch.tanh(c), c


def test_left_branching_choices_build_the_left_branching_tree():
    batch = encode([["[SM", "1", "2", "]"]], [3])
    with torch.no_grad():
        h, c = MODEL.leaf(MODEL.embedding(batch.tokens[0])).chunk(2, -1)
        root_h, root_c = h[0], c[0]
        for j in range(1, 4):
            root_h, root_c = compose(root_h, root_c, h[j], c[j])
        expected = MODEL.classes(torch.relu(MODEL.hidden(root_h)))
        torch.testing.assert_close(MODEL(batch.tokens, batch.lengths, sample=leftmost)[0], expected)


def test_padding_does_not_change_a_sequence_and_masks_reach_the_sampler():
    short, long = ["[MAX", "1", "7", "]"], ["[MIN", "3", "[MAX", "1", "2", "]", "5", "]"]
    seen = []

    def recording_greedy(logits, *, dim=-1):
        seen.append(logits.detach())
        return greedy(logits, dim=dim)

    together = encode([short, long], [7, 2])
    alone = encode([short], [7])
    with torch.no_grad():
        both = MODEL(together.tokens, together.lengths, sample=recording_greedy)
        single = MODEL(alone.tokens, alone.lengths, sample=greedy)
    torch.testing.assert_close(both[0], single[0])
    # Step 0: the short row has 3 valid merges of 7 candidates; once it is a single node,
    # exactly one candidate stays valid (probability one, no gradient from its score).
    assert torch.isfinite(seen[0][0]).tolist() == [True, True, True, False, False, False, False]
    assert torch.isfinite(seen[5][0]).tolist() == [True, False]


def test_labels_are_the_loss_s_not_the_model_s():
    """A ModuleTask hands every input to the model and the loss: the labels change nothing."""
    batch = encode([["[MAX", "1", "7", "]"]], [7])
    with torch.no_grad():
        without = MODEL(batch.tokens, batch.lengths, sample=greedy)
        with_labels = MODEL(batch.tokens, batch.lengths, batch.labels + 1, sample=greedy)
    assert torch.equal(without, with_labels)


def test_a_seed_alone_fixes_the_initial_weights():
    a, b = GumbelTreeLSTM(8, seed=3), GumbelTreeLSTM(8, seed=3)
    torch.manual_seed(123)  # the global generator plays no part
    c = GumbelTreeLSTM(8, seed=3)
    for (name, x), y, z in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y) and torch.equal(x, z), name
    assert not torch.equal(a.query, GumbelTreeLSTM(8, seed=4).query)


@pytest.mark.parametrize(
    "name", ["st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo", "straight_through", "reinmax"]
)
def test_every_one_hot_estimator_trains_through_sequential_choices(name):
    split = generate_splits(10, (20, 5, 5), seed=0)["train"].subset(slice(0, 6))
    model = GumbelTreeLSTM(8, seed=1)
    inputs = (split.tokens, split.lengths, split.labels)
    surrogate = E.get(name)(
        lambda sample: LISTOPS.loss(model(*inputs, sample=sample), *inputs),
        generator=torch.Generator().manual_seed(0),
    )
    assert surrogate.shape == (6,)
    surrogate.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.query.grad.abs().sum() > 0  # the merge scores get a gradient
