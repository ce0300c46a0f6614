"""Built-in data sets and the partitions simulations deal out to contributors."""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.errors import ConfigError
from fedledger.learning.data import DATASETS, load_dataset, partition_dirichlet, partition_iid


def test_digits_has_64_features_in_unit_range_and_10_classes() -> None:
    ds = load_dataset("digits")
    assert (ds.n_features, ds.n_classes) == (64, 10)
    assert ds.X_train.shape == (ds.n_train, 64) and ds.X_test.shape == (ds.n_test, 64)
    assert ds.n_train + ds.n_test == 1797
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.X_train.min() >= 0.0 and ds.X_train.max() <= 1.0
    assert set(np.unique(ds.y_test)) == set(range(10))


def test_breast_cancer_is_standardised_with_training_statistics_only() -> None:
    ds = load_dataset("breast_cancer")
    assert (ds.n_features, ds.n_classes) == (30, 2)
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1.0, atol=1e-4)
    # Test statistics were not used, so the test split is not exactly centred.
    assert np.abs(ds.X_test.mean(axis=0)).max() > 1e-3


def test_split_is_fixed_by_seed_and_disjoint() -> None:
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    c = load_dataset("digits", seed=4)
    assert not np.array_equal(a.y_train, c.y_train)
    train_rows = {row.tobytes() + bytes([y]) for row, y in zip(a.X_train, a.y_train, strict=True)}
    overlap = sum(
        row.tobytes() + bytes([y]) in train_rows for row, y in zip(a.X_test, a.y_test, strict=True)
    )
    assert overlap < 5  # digits has a few duplicate images; a shared index would give hundreds


def test_split_is_stratified() -> None:
    ds = load_dataset("digits")
    train_share = np.bincount(ds.y_train) / ds.n_train
    test_share = np.bincount(ds.y_test) / ds.n_test
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_unknown_dataset_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="digits"):
        load_dataset("mnist")
    assert DATASETS == ("digits", "breast_cancer")


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert joined.size == n
    assert np.array_equal(np.sort(joined), np.arange(n))


def test_iid_partition_covers_every_index_once_in_near_equal_shares() -> None:
    y = load_dataset("digits").y_train
    parts = partition_iid(y, 7, seed=1)
    _assert_exact_cover(parts, y.size)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_partition_covers_every_index_once_with_min_size(alpha: float) -> None:
    y = load_dataset("digits").y_train
    parts = partition_dirichlet(y, 10, alpha, seed=0, min_size=20)
    _assert_exact_cover(parts, y.size)
    assert min(p.size for p in parts) >= 20


def test_dirichlet_partition_min_size_holds_even_when_draws_keep_failing() -> None:
    y = np.repeat(np.arange(3), 40)
    parts = partition_dirichlet(y, 12, 0.01, seed=0, min_size=10, max_tries=1)
    _assert_exact_cover(parts, y.size)
    assert all(p.size == 10 for p in parts)


def _mean_top_class_share(y: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(y[p]).max() / p.size for p in parts]))


def test_small_alpha_concentrates_labels_and_large_alpha_approaches_iid() -> None:
    y = load_dataset("digits").y_train
    skewed = _mean_top_class_share(y, partition_dirichlet(y, 10, 0.1, seed=0))
    mild = _mean_top_class_share(y, partition_dirichlet(y, 10, 1.0, seed=0))
    near_iid = _mean_top_class_share(y, partition_dirichlet(y, 10, 1000.0, seed=0))
    iid = _mean_top_class_share(y, partition_iid(y, 10, seed=0))
    assert skewed > 0.5 > mild > near_iid
    assert near_iid < 0.2 and iid < 0.2  # one class of ten holds ~10% under IID


def test_partitions_are_deterministic_per_seed() -> None:
    y = load_dataset("digits").y_train
    a = partition_dirichlet(y, 5, 0.3, seed=9)
    b = partition_dirichlet(y, 5, 0.3, seed=9)
    c = partition_dirichlet(y, 5, 0.3, seed=10)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))
    assert all(
        np.array_equal(p, q)
        for p, q in zip(partition_iid(y, 5, 2), partition_iid(y, 5, 2), strict=True)
    )


def test_impossible_partition_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="min_size"):
        partition_dirichlet(np.zeros(50, dtype=np.int64), 10, 1.0, seed=0, min_size=6)
    with pytest.raises(ConfigError):
        partition_dirichlet(np.zeros(50, dtype=np.int64), 2, 0.0, seed=0)
    with pytest.raises(ConfigError):
        partition_iid(np.zeros(5, dtype=np.int64), 0, seed=0)
