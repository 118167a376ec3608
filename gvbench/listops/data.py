"""ListOps data (Nangia & Bowman 2018): a seeded generator and a loader for the released TSV.

Expressions are prefix lists such as ``[MAX 2 9 [MIN 4 7 ] 0 ]`` over the operators MAX, MIN,
MED (the integer part of the median) and SM (sum modulo 10), with 2–5 arguments each; the
label is the value (10 classes). Tokens are ``[MAX``-style operator openers, digits and ``]``;
the sequence length L counts tokens.
"""

from __future__ import annotations

import dataclasses
import os
import random
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
VOCABULARY = ("<pad>", *map(str, range(10)), *OPERATORS, "]")
TOKEN_INDEX = {token: i for i, token in enumerate(VOCABULARY)}
PAD = 0
CLASSES = 10


def apply(operator: str, values: Sequence[int]) -> int:
    """The value of one operator node."""
    if operator == "[MAX":
        return max(values)
    if operator == "[MIN":
        return min(values)
    if operator == "[MED":
        return int(statistics.median(values))
    if operator == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {operator!r}")


def evaluate(tokens: Sequence[str]) -> int:
    """The value of a tokenised expression (a digit, or an operator with its arguments)."""
    stack: list[tuple[str, list[int]]] = []
    value = None
    for token in tokens:
        if token in OPERATORS:
            stack.append((token, []))
        elif token == "]":
            if not stack:
                raise ValueError("unbalanced ']' in ListOps expression")
            operator, values = stack.pop()
            value = apply(operator, values)
            if stack:
                stack[-1][1].append(value)
        elif token.isdigit() and len(token) == 1:
            value = int(token)
            if stack:
                stack[-1][1].append(value)
        else:
            raise ValueError(f"unknown ListOps token {token!r}")
    if stack or value is None:
        raise ValueError("incomplete ListOps expression")
    return value


def generate_expression(
    rng: random.Random, max_depth: int = 20, operator_probability: float = 0.25
) -> list[str]:
    """One random expression, as the original generator makes them: the root is an operator;
    each argument is an operator with ``operator_probability`` (else a digit) until ``max_depth``."""

    def node(depth: int) -> list[str]:
        operator = rng.choice(OPERATORS)
        tokens = [operator]
        for _ in range(rng.randint(2, 5)):
            if depth < max_depth and rng.random() < operator_probability:
                tokens += node(depth + 1)
            else:
                tokens.append(str(rng.randint(0, 9)))
        return [*tokens, "]"]

    return node(1)


@dataclasses.dataclass
class Split:
    """Tokenised expressions padded to a common length, with labels and lengths."""

    tokens: Tensor  # (N, L) long, PAD after each expression
    lengths: Tensor  # (N,) long
    labels: Tensor  # (N,) long

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor | slice) -> Split:
        lengths = self.lengths[index]
        width = int(lengths.max()) if len(lengths) else 0
        return Split(self.tokens[index][:, :width], lengths, self.labels[index])


def encode(expressions: Sequence[Sequence[str]], labels: Sequence[int]) -> Split:
    """Pack token lists into a :class:`Split`."""
    if len(expressions) != len(labels):
        raise ValueError("expressions and labels must have the same length")
    width = max((len(e) for e in expressions), default=0)
    tokens = torch.full((len(expressions), width), PAD, dtype=torch.long)
    for row, expression in enumerate(expressions):
        tokens[row, : len(expression)] = torch.tensor([TOKEN_INDEX[t] for t in expression])
    lengths = torch.tensor([len(e) for e in expressions], dtype=torch.long)
    return Split(tokens, lengths, torch.tensor(list(labels), dtype=torch.long))


def decode(split: Split, row: int) -> list[str]:
    """The tokens of one row of a split."""
    return [VOCABULARY[int(i)] for i in split.tokens[row, : int(split.lengths[row])]]


def generate_splits(
    max_length: int,
    sizes: tuple[int, int, int] = (10_000, 1_000, 1_000),
    seed: int = 0,
    min_length: int = 4,
) -> dict[str, Split]:
    """Disjoint, reproducible train/valid/test splits of expressions with at most ``max_length`` tokens.

    Expressions are drawn by the original generator, kept if their length lies in
    [``min_length``, ``max_length``], and deduplicated, so no expression is in two splits.
    Short lengths have few distinct expressions: asking for more than exist raises.
    """
    if max_length < min_length:
        raise ValueError(f"max_length must be >= {min_length}, got {max_length}")
    rng = random.Random(seed)
    wanted = sum(sizes)
    seen: dict[str, list[str]] = {}
    stale = 0  # draws since the last new expression: the supply is exhausted when it is large
    while len(seen) < wanted:
        expression = generate_expression(rng)
        key = " ".join(expression)
        if min_length <= len(expression) <= max_length and key not in seen:
            seen[key] = expression
            stale = 0
        else:
            stale += 1
            if stale > 20_000:
                raise ValueError(
                    f"could not find {wanted} distinct expressions of length <= {max_length} "
                    f"(found {len(seen)}); ask for fewer or allow longer ones"
                )
    expressions = list(seen.values())
    splits = {}
    start = 0
    for name, size in zip(("train", "valid", "test"), sizes, strict=True):
        chunk = expressions[start : start + size]
        splits[name] = encode(chunk, [evaluate(e) for e in chunk])
        start += size
    return splits


def read_tsv(path: str | os.PathLike[str], max_length: int | None = None) -> Split:
    """Load the released ListOps format: ``label<TAB>expression`` per line.

    The released files bracket the reference parse with ``(`` and ``)``; they are dropped (the
    model must find its own tree). A header line (a first field that is not a digit) is
    skipped, and so are expressions longer than ``max_length`` tokens. Each label is checked
    against the expression's value.
    """
    expressions, labels = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, source = line.partition("\t")
        if not sep:
            raise ValueError(f"{path}:{number}: expected 'label<TAB>expression'")
        if not label.strip().isdigit():
            if number == 1:
                continue
            raise ValueError(f"{path}:{number}: label {label!r} is not a digit")
        tokens = [t for t in source.split() if t not in ("(", ")")]
        if max_length is not None and len(tokens) > max_length:
            continue
        value = evaluate(tokens)
        if value != int(label):
            raise ValueError(
                f"{path}:{number}: label {label} but the expression evaluates to {value}"
            )
        expressions.append(tokens)
        labels.append(int(label))
    return encode(expressions, labels)


def write_tsv(split: Split, path: str | os.PathLike[str]) -> None:
    """Write a split in the released format (without the reference-parse parentheses)."""
    lines: Iterable[str] = (
        f"{int(split.labels[i])}\t{' '.join(decode(split, i))}" for i in range(len(split))
    )
    Path(path).write_text("\n".join(lines) + "\n")
