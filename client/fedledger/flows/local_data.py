"""A contributor's local data for ``fedledger train``: an ``.npz`` of arrays, or (simulations) a
Dirichlet / IID share of a data set shipped with scikit-learn.

``.npz`` files are read with ``allow_pickle=False``: object arrays are refused, never unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedledger.errors import ConfigError, FormatError, NotFoundError
from fedledger.flows.contribute import LocalData
from fedledger.learning.data import load_dataset, partition_dirichlet, partition_iid


def load_npz(path: Path) -> LocalData:
    if not path.is_file():
        raise NotFoundError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z or "y" not in z:
                raise FormatError(f"{path} must hold arrays named X and y, found {sorted(z.files)}")
            X = np.ascontiguousarray(z["X"], dtype=np.float32)
            y = np.ascontiguousarray(z["y"], dtype=np.int64)
    except (ValueError, OSError) as exc:
        raise FormatError(f"{path} is not a readable .npz of numeric arrays: {exc}") from exc
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise FormatError(
            f"{path}: X must be (n, features) and y (n,), got {X.shape} and {y.shape}"
        )
    return LocalData(X, y)


def parse_partition(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError as exc:
        raise ConfigError(f"--partition must look like I/N (e.g. 0/5), got {text!r}") from exc
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--partition {text}: need 0 <= I < N")
    return i, n


def partition_share(dataset: str, index: int, n_clients: int, alpha: float, seed: int) -> LocalData:
    """Client ``index``'s share of the data set's training split (Dirichlet(alpha), 0 = IID)."""
    ds = load_dataset(dataset, seed=seed)
    if alpha > 0:
        parts = partition_dirichlet(ds.y_train, n_clients, alpha, seed)
    else:
        parts = partition_iid(ds.y_train, n_clients, seed)
    idx = parts[index]
    return LocalData(ds.X_train[idx], ds.y_train[idx])


def load_local_data(
    dataset: str, data: Path | None, partition: str | None, alpha: float, *, seed: int = 0
) -> LocalData:
    if data is not None and partition is not None:
        raise ConfigError("give either --data or --partition, not both")
    if data is not None:
        return load_npz(data)
    if partition is not None:
        i, n = parse_partition(partition)
        return partition_share(dataset, i, n, alpha, seed)
    raise ConfigError("no local data", hint="pass --data FILE.npz (arrays X, y) or --partition I/N")
