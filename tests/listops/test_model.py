"""The Gumbel Tree-LSTM: tree construction, masking, and estimators through sequential choices."""

from __future__ import annotations

import pytest
import torch

import gvbench.estimators as E
from gvbench.listops.data import encode, generate_splits
from gvbench.listops.model import _linear, classify, greedy, init_parameters, per_example_loss

PARAMS = {k: v.double()[None] for k, v in init_parameters(8, seed=0).items()}


def leftmost(logits, *, dim=-1):
    """Always merge the first pair: a left-branching tree."""
    out = torch.zeros_like(logits)
    out[..., 0] = 1.0
    return out


def compose(h_left, c_left, h_right, c_right):
    gates = _linear(
        torch.cat([h_left, h_right], -1)[None], PARAMS["compose_w"], PARAMS["compose_b"]
    )[0]
    i, f_l, f_r, o, g = gates.chunk(5, -1)
    c = (
        torch.sigmoid(f_l + 1) * c_left
        + torch.sigmoid(f_r + 1) * c_right
        + torch.sigmoid(i) * torch.tanh(g)
    )
    return torch.sigmoid(o) * torch.tanh(c), c


def test_left_branching_choices_build_the_left_branching_tree():
    batch = encode([["[SM", "1", "2", "]"]], [3])
    leaves = _linear(PARAMS["embedding"][:, batch.tokens], PARAMS["leaf_w"], PARAMS["leaf_b"])[0, 0]
    h, c = leaves.chunk(2, -1)
    root_h, root_c = h[0], c[0]
    for j in range(1, 4):
        root_h, root_c = compose(root_h, root_c, h[j], c[j])
    hidden = torch.relu(root_h @ PARAMS["mlp_w1"][0] + PARAMS["mlp_b1"][0])
    expected = hidden @ PARAMS["mlp_w2"][0] + PARAMS["mlp_b2"][0]
    torch.testing.assert_close(
        classify(PARAMS, batch.tokens, batch.lengths, leftmost)[0, 0], expected
    )


def test_padding_does_not_change_a_sequence_and_masks_reach_the_sampler():
    short, long = ["[MAX", "1", "7", "]"], ["[MIN", "3", "[MAX", "1", "2", "]", "5", "]"]
    seen = []

    def recording_greedy(logits, *, dim=-1):
        seen.append(logits.detach())
        return greedy(logits, dim=dim)

    together = encode([short, long], [7, 2])
    alone = encode([short], [7])
    both = classify(PARAMS, together.tokens, together.lengths, recording_greedy)
    single = classify(PARAMS, alone.tokens, alone.lengths, greedy)
    torch.testing.assert_close(both[0, 0], single[0, 0])
    # Step 0: the short row has 3 valid merges of 7 candidates; once it is a single node,
    # exactly one candidate stays valid (probability one, no gradient from its score).
    assert torch.isfinite(seen[0][0, 0]).tolist() == [True, True, True, False, False, False, False]
    assert torch.isfinite(seen[5][0, 0]).tolist() == [True, False]


@pytest.mark.parametrize(
    "name", ["st_gumbel_softmax", "gumbel_rao", "reinforce", "rloo", "straight_through", "reinmax"]
)
def test_every_one_hot_estimator_trains_through_sequential_choices(name):
    split = generate_splits(10, (20, 5, 5), seed=0)["train"].subset(slice(0, 6))
    params = {k: v.clone().requires_grad_() for k, v in init_parameters(8, seed=1).items()}
    with_axis = {k: v[None] for k, v in params.items()}
    surrogate = E.get(name)(
        lambda sample: per_example_loss(
            with_axis, split.tokens, split.lengths, split.labels, sample
        ),
        generator=torch.Generator().manual_seed(0),
    )
    assert surrogate.shape == (1, 6)
    surrogate.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    assert params["query"].grad.abs().sum() > 0  # the merge scores get a gradient
