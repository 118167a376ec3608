r"""Gumbel Tree-LSTM (Choi, Yoo & Lee 2018) with the discrete merge choice made by any sampler.

Written as a pure function of a parameter dict whose tensors carry a leading *draw* axis R,
so the variance harness gets R independent gradient draws from one backward pass; the
``nn.Module`` is the same function with R = 1.

Leaves are :math:`(h, c) = W_{leaf} e + b`. While more than one node remains, every adjacent
pair is composed by a binary Tree-LSTM cell,
:math:`[i, f_l, f_r, o, g] = W[h_l; h_r] + b`,
:math:`c = \sigma(f_l + 1) c_l + \sigma(f_r + 1) c_r + \sigma(i)\tanh g`, :math:`h = \sigma(o)\tanh c`,
each candidate parent is scored by :math:`q^\top h`, and one is *chosen by the sampler*
(masked to the sequence's real nodes). With the one-hot choice :math:`s`, the next row is
:math:`(1 - \mathrm{cumsum}\,s)\odot\text{left} + s\odot\text{parent} + (\mathrm{cumsum}\,s - s)\odot\text{right}`.
The root's :math:`h` feeds an MLP over the 10 classes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gvbench.estimators import Sampler
from gvbench.listops.data import CLASSES, VOCABULARY

Parameters = dict[str, Tensor]


def init_parameters(
    d_hidden: int = 32, d_embed: int | None = None, d_mlp: int | None = None, seed: int = 0
) -> Parameters:
    """Fresh parameters (no draw axis), scaled by 1/sqrt(fan-in)."""
    d_embed = d_embed or d_hidden
    d_mlp = d_mlp or d_hidden
    generator = torch.Generator().manual_seed(seed)

    def weight(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator) / math.sqrt(shape[0])

    return {
        "embedding": torch.randn(len(VOCABULARY), d_embed, generator=generator),
        "leaf_w": weight(d_embed, 2 * d_hidden),
        "leaf_b": torch.zeros(2 * d_hidden),
        "compose_w": weight(2 * d_hidden, 5 * d_hidden),
        "compose_b": torch.zeros(5 * d_hidden),
        "query": weight(d_hidden),
        "mlp_w1": weight(d_hidden, d_mlp),
        "mlp_b1": torch.zeros(d_mlp),
        "mlp_w2": weight(d_mlp, CLASSES),
        "mlp_b2": torch.zeros(CLASSES),
    }


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x (R, …, i) @ w (R, i, o) + b (R, o)."""
    shape = x.shape
    y = torch.bmm(x.reshape(shape[0], -1, shape[-1]), w) + b[:, None]
    return y.reshape(*shape[:-1], w.shape[-1])


def classify(params: Parameters, tokens: Tensor, lengths: Tensor, sample: Sampler) -> Tensor:
    """Class logits, shape (R, B, 10), for token ids (B, L) of the given lengths.

    ``sample`` is called L − 2 times with merge logits of shape (R, B, n − 1) (the last merge
    has a single candidate); a sequence that is already a single node sees one valid
    candidate (a choice with probability 1).
    """
    r, (b, width) = params["embedding"].shape[0], tokens.shape
    embedded = params["embedding"][:, tokens]  # (R, B, L, e)
    h, c = _linear(embedded, params["leaf_w"], params["leaf_b"]).chunk(2, -1)
    positions = torch.arange(width, device=tokens.device)
    for step in range(width - 1):
        left_h, right_h, left_c, right_c = h[:, :, :-1], h[:, :, 1:], c[:, :, :-1], c[:, :, 1:]
        gates = _linear(torch.cat([left_h, right_h], -1), params["compose_w"], params["compose_b"])
        i, f_left, f_right, o, g = gates.chunk(5, -1)
        parent_c = (
            torch.sigmoid(f_left + 1) * left_c
            + torch.sigmoid(f_right + 1) * right_c
            + torch.sigmoid(i) * torch.tanh(g)
        )
        parent_h = torch.sigmoid(o) * torch.tanh(parent_c)
        nodes = (lengths - step).clamp_min(1)  # (B,)
        done = nodes <= 1
        candidates = width - step - 1
        valid = positions[None, :candidates] < (nodes - 1)[:, None]
        valid = valid | (done[:, None] & (positions[None, :candidates] == 0))
        if candidates > 1:
            scores = torch.einsum("rbnd,rd->rbn", parent_h, params["query"])
            select = sample(scores.masked_fill(~valid, -torch.inf))  # (R, B, n − 1)
        else:  # one pair left: merging it is certain, there is nothing to sample
            select = parent_h.new_ones(parent_h.shape[:-1])
        cumulative = select.cumsum(-1)
        left, right, select = (
            (1 - cumulative)[..., None],
            (cumulative - select)[..., None],
            select[..., None],
        )
        new_h = left * left_h + select * parent_h + right * right_h
        new_c = left * left_c + select * parent_c + right * right_c
        keep = done[None, :, None, None]
        h, c = torch.where(keep, left_h, new_h), torch.where(keep, left_c, new_c)
    root = h[:, :, 0]
    hidden = torch.relu(_linear(root, params["mlp_w1"], params["mlp_b1"]))
    return _linear(hidden, params["mlp_w2"], params["mlp_b2"]).reshape(r, b, CLASSES)


def per_example_loss(
    params: Parameters, tokens: Tensor, lengths: Tensor, labels: Tensor, sample: Sampler
) -> Tensor:
    """Cross-entropy of each example, shape (R, B)."""
    logits = classify(params, tokens, lengths, sample)
    r, b, _ = logits.shape
    return nn.functional.cross_entropy(
        logits.reshape(r * b, CLASSES), labels.repeat(r), reduction="none"
    ).reshape(r, b)


def greedy(logits: Tensor, *, dim: int = -1) -> Tensor:
    """The deterministic choice used for evaluation: the highest-scoring merge."""
    index = logits.argmax(dim, keepdim=True)
    return torch.zeros_like(logits).scatter_(dim, index, 1.0)


class GumbelTreeLSTM(nn.Module):
    """The model as a module (R = 1): ``model(tokens, lengths, sample) -> (B, 10)`` logits."""

    def __init__(self, d_hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.d_hidden = d_hidden
        self.weights = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in init_parameters(d_hidden, seed=seed).items()}
        )

    def parameters_with_draw_axis(self) -> Parameters:
        return {k: v[None] for k, v in self.weights.items()}

    def forward(self, tokens: Tensor, lengths: Tensor, sample: Sampler) -> Tensor:
        return classify(self.parameters_with_draw_axis(), tokens, lengths, sample)[0]

    def loss(self, tokens: Tensor, lengths: Tensor, labels: Tensor, sample: Sampler) -> Tensor:
        return per_example_loss(self.parameters_with_draw_axis(), tokens, lengths, labels, sample)[
            0
        ]
