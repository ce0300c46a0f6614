"""Data sets shipped on disk with scikit-learn, and partitions of them for simulations.

fedledger's demo, tests and benchmarks must run offline, so the only data sets are the ones
scikit-learn installs with itself (``load_digits``, ``load_breast_cancer``).  Everything here is
deterministic: the train/test split and every partition depend only on the seed given, through
numpy's ``PCG64`` generator, whose streams numpy keeps stable across releases.

Partitions follow the usual federated-learning benchmarks:

- :func:`partition_iid` deals a random permutation out in near-equal shares;
- :func:`partition_dirichlet` gives each class to the clients in proportions drawn from
  ``Dirichlet(alpha)`` (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical data
  distribution"); a small ``alpha`` gives each client few classes, a large one approaches IID.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import ConfigError

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

__all__ = [
    "DATASETS",
    "TabularDataset",
    "load_dataset",
    "partition_dirichlet",
    "partition_iid",
    "stratified_split",
]


@dataclass(frozen=True)
class TabularDataset:
    """A classification data set split once into train and test parts.

    ``X_*`` are float32 ``(n, n_features)`` C-contiguous arrays and ``y_*`` int64 labels in
    ``range(n_classes)``, the dtypes torch's ``Linear`` and ``cross_entropy`` take without a copy.
    """

    X_train: FloatArray
    y_train: IntArray
    X_test: FloatArray
    y_test: IntArray
    n_features: int
    n_classes: int
    name: str

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])


def stratified_split(
    y: NDArray[np.integer], test_fraction: float, seed: int
) -> tuple[IntArray, IntArray]:
    """Split indices into (train, test), keeping each class's share in both parts.

    Written out instead of calling ``sklearn.model_selection.train_test_split`` so that the split
    depends on numpy's stable generator only, not on scikit-learn's implementation details.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[IntArray] = []
    test: list[IntArray] = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls).astype(np.int64)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_digits() -> tuple[FloatArray, IntArray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel intensities are 0..16; dividing by 16 puts them in [0, 1] without using any
    # statistics of the data, so no information leaks from the test split.
    return np.asarray(bunch.data, dtype=np.float32) / 16.0, np.asarray(bunch.target, np.int64)


def _load_breast_cancer() -> tuple[FloatArray, IntArray]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, np.int64)


@dataclass(frozen=True)
class _Source:
    load: Callable[[], tuple[NDArray[np.floating], IntArray]]
    standardise: bool


_SOURCES: dict[str, _Source] = {
    "digits": _Source(_load_digits, standardise=False),
    "breast_cancer": _Source(_load_breast_cancer, standardise=True),
}

DATASETS: tuple[str, ...] = tuple(_SOURCES)
"""Names :func:`load_dataset` accepts."""


def load_dataset(name: str, *, test_fraction: float = 0.25, seed: int = 0) -> TabularDataset:
    """Load a data set that ships with scikit-learn and split it into train and test.

    ``digits``: 1797 8x8 images, 64 features scaled to [0, 1], 10 classes.
    ``breast_cancer``: 569 samples, 30 features standardised with the mean and standard deviation
    of the *training* split only (the test split must stay unseen), 2 classes.

    The split is stratified and fixed by ``seed``: every call, on every machine, yields the same
    arrays, so federated runs and the centralised baseline are compared on the same test set.
    """
    source = _SOURCES.get(name)
    if source is None:
        raise ConfigError(
            f"unknown data set {name!r}", hint=f"choose one of: {', '.join(DATASETS)}"
        )
    X, y = source.load()
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    X_train, X_test = X[train_idx], X[test_idx]
    if source.standardise:
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std[std == 0] = 1.0
        X_train = (X_train - mean) / std
        X_test = (X_test - mean) / std
    return TabularDataset(
        X_train=np.ascontiguousarray(X_train, dtype=np.float32),
        y_train=np.ascontiguousarray(y[train_idx], dtype=np.int64),
        X_test=np.ascontiguousarray(X_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y[test_idx], dtype=np.int64),
        n_features=int(X.shape[1]),
        n_classes=int(np.unique(y).size),
        name=name,
    )


def _check_clients(n_samples: int, n_clients: int, min_size: int) -> None:
    if n_clients < 1:
        raise ConfigError(f"n_clients must be at least 1, got {n_clients}")
    if min_size < 0:
        raise ConfigError(f"min_size must be non-negative, got {min_size}")
    if n_clients * min_size > n_samples:
        raise ConfigError(
            f"cannot give {n_clients} clients {min_size} samples each from {n_samples} samples",
            hint="use fewer clients or a smaller min_size",
        )


def partition_iid(y: NDArray[np.integer], n_clients: int, seed: int) -> list[IntArray]:
    """Deal the indices of ``y`` out to ``n_clients`` uniformly at random.

    Share sizes differ by at most one.  Every index appears in exactly one share; each share is
    sorted so that it does not leak the permutation's order into training.
    """
    n = int(np.asarray(y).shape[0])
    _check_clients(n, n_clients, 0)
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return [np.sort(part) for part in np.array_split(perm, n_clients)]


def partition_dirichlet(
    y: NDArray[np.integer],
    n_clients: int,
    alpha: float,
    seed: int,
    *,
    min_size: int = 10,
    max_tries: int = 100,
) -> list[IntArray]:
    """Split indices so that each client's label mix follows ``Dirichlet(alpha)``.

    For every class, proportions ``p ~ Dir(alpha, ..., alpha)`` over the clients decide how that
    class's samples are cut.  As in Hsu et al. (2019) and its common implementations, a client
    that already holds its fair share ``n / n_clients`` gets no more of the next class, which keeps
    sizes from running away.  Draws repeat (from the same generator, so still deterministic) until
    every client holds ``min_size`` samples; if ``max_tries`` draws all fail, the smallest clients
    are topped up with random samples taken from the largest, so the guarantee always holds.
    """
    labels = np.asarray(y)
    n = int(labels.shape[0])
    _check_clients(n, n_clients, min_size)
    if not alpha > 0.0:
        raise ConfigError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c).astype(np.int64) for c in classes]

    shares: list[list[int]] = []
    for _ in range(max_tries):
        shares = [[] for _ in range(n_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(n_clients, alpha))
            sizes = np.array([len(s) for s in shares])
            p = p * (sizes < n / n_clients)
            total = p.sum()
            p = np.full(n_clients, 1.0 / n_clients) if total == 0 else p / total
            cuts = (np.cumsum(p) * idx.size).astype(np.int64)[:-1]
            for share, part in zip(shares, np.split(idx, cuts), strict=True):
                share.extend(part.tolist())
        if min(len(s) for s in shares) >= min_size:
            break
    else:
        _top_up(shares, min_size, rng)
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shares]


def _top_up(shares: list[list[int]], min_size: int, rng: np.random.Generator) -> None:
    """Move random samples from the largest shares to those below ``min_size``, in place."""
    for i in range(len(shares)):
        while len(shares[i]) < min_size:
            donor = max(range(len(shares)), key=lambda j: len(shares[j]))
            k = int(rng.integers(len(shares[donor])))
            shares[i].append(shares[donor].pop(k))
