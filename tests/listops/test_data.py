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
