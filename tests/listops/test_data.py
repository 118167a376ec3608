"""The ListOps generator and the loader for the released TSV format."""

from __future__ import annotations

import random

import pytest
import torch

from gvbench.listops.data import (
    decode,
    evaluate,
    generate_expression,
    generate_splits,
    read_tsv,
    write_tsv,
)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MIN 3 [MAX 1 8 ] 5 ]", 3),
        ("[MED 1 2 3 4 ]", 2),  # median 2.5, integer part 2
        ("[MED 9 1 5 ]", 5),
        ("[SM 5 6 7 ]", 8),  # 18 mod 10
        ("[SM [MAX 9 9 ] [MIN 9 8 ] ]", 7),
        ("4", 4),
    ],
)
def test_evaluate(expression, value):
    assert evaluate(expression.split()) == value


@pytest.mark.parametrize("bad", ["[MAX 1 2", "1 ]", "[FOO 1 2 ]", "[MAX 12 3 ]"])
def test_evaluate_rejects_malformed_expressions(bad):
    with pytest.raises(ValueError):
        evaluate(bad.split())


def test_generated_expressions_follow_the_grammar():
    rng = random.Random(0)
    for _ in range(500):
        tokens = generate_expression(rng)
        assert tokens[0].startswith("[") and tokens[-1] == "]"
        assert tokens.count("]") == sum(t.startswith("[") for t in tokens)
        assert 0 <= evaluate(tokens) <= 9


@pytest.mark.parametrize("max_length", [10, 25])
def test_splits_evaluate_to_their_labels_respect_length_and_are_disjoint(max_length):
    splits = generate_splits(max_length, (400, 100, 100), seed=3)
    seen = {}
    for name, split in splits.items():
        assert int(split.lengths.max()) <= max_length
        for row in range(len(split)):
            tokens = decode(split, row)
            assert evaluate(tokens) == int(split.labels[row])
            key = " ".join(tokens)
            assert key not in seen, f"{key} in {seen.get(key)} and {name}"
            seen[key] = name
    assert len(splits["train"]) == 400 and len(splits["test"]) == 100


def test_splits_are_reproducible_and_depend_on_the_seed():
    a, b, c = (generate_splits(10, (100, 20, 20), seed=s) for s in (1, 1, 2))
    assert torch.equal(a["train"].tokens, b["train"].tokens)
    assert not torch.equal(a["train"].tokens, c["train"].tokens)


def test_too_many_short_expressions_is_a_clear_error():
    with pytest.raises(ValueError, match="distinct expressions"):
        generate_splits(4, (100_000, 0, 0), seed=0)


def test_released_tsv_format_round_trip(tmp_path):
    # The released files carry the reference parse in parentheses and may start with a header.
    path = tmp_path / "listops.tsv"
    path.write_text(
        "Target\tSource\n"
        "9\t( ( [MAX 2 ) ( 9 ( [MIN 4 7 ] ) ) 0 ] )\n"
        "8\t( [SM 5 6 7 ] )\n"
        "1\t( [MIN 1 ( [MAX 2 3 ] ) ] )\n"
    )
    split = read_tsv(path)
    assert split.labels.tolist() == [9, 8, 1]
    assert decode(split, 0) == "[MAX 2 9 [MIN 4 7 ] 0 ]".split()
    assert read_tsv(path, max_length=6).labels.tolist() == [8]
    out = tmp_path / "again.tsv"
    write_tsv(split, out)
    assert torch.equal(read_tsv(out).tokens, split.tokens)


def test_tsv_with_a_wrong_label_is_rejected(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("3\t[MAX 2 9 ]\n")
    with pytest.raises(ValueError, match="evaluates to 9"):
        read_tsv(path)


# -- the generator's statistics against the published description --------------------------
# Nangia & Bowman (2018): operators MAX, MIN, MED, SM drawn uniformly, 2–5 arguments
# uniformly, each argument an operator with probability 0.25 until depth 20, else a digit.
# The exact laws below follow from that description alone, by recursion over the depth.
ARGUMENTS = (2, 3, 4, 5)
BRANCH = 0.25
MAX_DEPTH = 20


def _expected_tokens_and_operators() -> tuple[float, float]:
    """E[tokens] and E[operator nodes] of an expression (root at depth 1)."""
    mean_args = sum(ARGUMENTS) / len(ARGUMENTS)
    tokens, operators = 2 + mean_args, 1.0  # a node at the last depth takes digits only
    for _ in range(MAX_DEPTH - 1):
        tokens = 2 + mean_args * (BRANCH * tokens + (1 - BRANCH))
        operators = 1 + mean_args * BRANCH * operators
    return tokens, operators


def _depth_law(deepest: int) -> list[float]:
    """P(the expression's depth is ≤ k) for k = 1 … deepest."""

    def at_most(k: int) -> float:
        # P(a subtree rooted at depth d stays within depth k), from d = k up to the root
        digit = 1.0 if k == MAX_DEPTH else 1 - BRANCH  # at depth k an argument must be a digit
        within = sum(digit**n for n in ARGUMENTS) / len(ARGUMENTS)
        for _ in range(k - 1):
            argument = 1 - BRANCH + BRANCH * within
            within = sum(argument**n for n in ARGUMENTS) / len(ARGUMENTS)
        return within

    return [at_most(k) for k in range(1, deepest + 1)]


def _depth(tokens: list[str]) -> int:
    depth = deepest = 0
    for token in tokens:
        depth += token.startswith("[")
        deepest = max(deepest, depth)
        depth -= token == "]"
    return deepest


def test_the_generator_s_statistics_match_the_published_description():
    rng = random.Random(0)
    n = 20_000
    expressions = [generate_expression(rng) for _ in range(n)]
    operators = [t for e in expressions for t in e if t.startswith("[")]
    # every operator equally often (binomial SE of a frequency of 1/4)
    for name in ("[MAX", "[MIN", "[MED", "[SM"):
        share = operators.count(name) / len(operators)
        assert abs(share - 0.25) < 5 * (0.25 * 0.75 / len(operators)) ** 0.5, name
    # 2–5 arguments, uniformly; and an argument is an operator with probability 0.25
    counts, branches = [], []
    for e in expressions:
        open_nodes: list[int] = []  # arguments so far of each open operator, root first
        for token in e:
            if token == "]":
                counts.append(open_nodes.pop())
                continue
            if open_nodes:
                open_nodes[-1] += 1
                if len(open_nodes) < MAX_DEPTH:  # below the last depth it may branch
                    branches.append(token.startswith("["))
            if token.startswith("["):
                open_nodes.append(0)
    for k in ARGUMENTS:
        share = counts.count(k) / len(counts)
        assert abs(share - 0.25) < 5 * (0.25 * 0.75 / len(counts)) ** 0.5, k
    assert abs(sum(branches) / len(branches) - BRANCH) < 5 * (0.25 * 0.75 / len(branches)) ** 0.5
    # mean length and operator count, against their exact values (SE from the sample)
    tokens, nodes = _expected_tokens_and_operators()
    for values, expected in (
        ([len(e) for e in expressions], tokens),
        ([sum(t.startswith("[") for t in e) for e in expressions], nodes),
    ):
        mean = sum(values) / n
        se = (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5
        assert abs(mean - expected) < 5 * se, (mean, expected, se)
    # the law of the depth, bucket by bucket
    depths = [_depth(e) for e in expressions]
    law = _depth_law(6)
    for k, cumulative in enumerate(law, start=1):
        share = sum(d <= k for d in depths) / n
        assert abs(share - cumulative) < 5 * (cumulative * (1 - cumulative) / n) ** 0.5 + 1e-12, k
