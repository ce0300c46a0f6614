"""Timing helpers and fixtures the benchmarks share (not a benchmark: `make bench` skips
``_*.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def best(fn: Callable[[], T], reps: int) -> tuple[float, T]:
    """The fastest of ``reps`` runs of ``fn`` (seconds) and the last result."""
    import time

    fastest, out, done = float("inf"), None, False
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        fastest = min(fastest, time.perf_counter() - t)
        done = True
    assert done, "reps must be at least 1"
    return fastest, out  # type: ignore[return-value]


def read_bandwidth(log2_floats: int = 28) -> float:
    """Bytes per second numpy reads from memory: a sum over 2**log2_floats float32 (1 GiB by
    default), one thread, best of 5."""
    big = np.ones(1 << log2_floats, dtype=np.float32)
    t, _ = best(lambda: np.asarray(big.sum()), 5)
    return big.nbytes / t


SHAPES_5M: dict[str, tuple[int, ...]] = {
    "embed.weight": (6000, 512),
    "block0.fc1.weight": (2048, 512),
    "block0.fc1.bias": (2048,),
    "block0.fc2.weight": (512, 2048),
    "block0.fc2.bias": (512,),
    "head.weight": (10, 512),
    "head.bias": (10,),
}
"""The benchmarks' 5M-parameter model (20 MB of float32): tensor names and shapes."""
