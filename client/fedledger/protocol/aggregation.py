"""Aggregation rules: pure functions from update vectors to one aggregate delta.

``global[r+1] = global[r] + rule(accepted deltas of round r)`` (SPEC "Aggregation"). The verifier
and ``fedledger verify`` call these same functions, so a re-verification is the same code path.

Bit-exact determinism
---------------------
Every validator must recompute the same ``aggregateHash``, on any CPU, BLAS and thread count.
Floating-point addition is not associative, so any reduction whose order an implementation may
choose (BLAS ``dot``/``gemv``, ``np.sum``'s pairwise/SIMD blocking, ``einsum``, FMA contraction)
can change the last bits between machines.  The rules therefore only use

* elementwise IEEE-754 operations (``+ - * /``, casts, ``rint``, ``min``/``max``), each correctly
  rounded, applied in a fixed, documented order (inputs in ``updateId`` order);
* sorting, whose output is unique up to the sign of zero (all outputs are normalised with
  ``x + 0.0`` so ``-0.0`` becomes ``+0.0``);
* float64 sums written as explicit elementwise folds (:func:`_fold`), never ``np.sum``;
* BLAS only on *integers* stored in float64 whose every partial sum is below 2**53
  (:func:`exact_gram`): those sums are exact, hence independent of order, blocking and FMA.

Inputs must be finite (screening rejects NaN/Inf before aggregation; the rules raise otherwise).

Memory
------
Rules work on flat float32 vectors (:func:`flatten`) in column blocks of a few hundred KiB, so
the working set stays in cache and the extra memory is a few blocks, not copies of the models.
:class:`FedAvgAccumulator` aggregates fedavg as updates stream in (one model at a time).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedledger.errors import ConfigError, FormatError
from fedledger.protocol.taskspec import parse_section

Vector = npt.NDArray[np.float32]
Tensors = dict[str, npt.NDArray[np.float32]]

MAX_SAMPLE_CAP = 2**29
"""Largest fedavg weight: float32 (24-bit significand) x weight < 2**53 stays exact in float64."""

_F32_BLOCK = 65536  # float32 columns per fedavg block: the block and its temporary fit in L2
_BLOCK = 32768  # columns per block: a float64 block (256 KiB) and its temporary fit in L2
_LANES = 1024  # width of the fixed fold tree used for float64 sums
_GRAM_BITS = 19  # fixed-point bits per coordinate for the exact Gram matrix
_GRAM_BLOCK = 16384  # 16384 * (2**19)**2 = 2**52 < 2**53: every partial sum is exact
_GRAM_FLUSH = 1024  # blocks summed in int64 before moving to Python ints (1024 * 2**52 < 2**63)


# --------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorLayout:
    """Names, shapes and offsets of a model's tensors inside its flat vector (state_dict order)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, tensors: Mapping[str, np.ndarray]) -> TensorLayout:
        names, shapes, offsets, size = [], [], [], 0
        for name, arr in tensors.items():
            names.append(name)
            shapes.append(tuple(int(s) for s in arr.shape))
            offsets.append(size)
            size += int(arr.size)
        return cls(tuple(names), tuple(shapes), tuple(offsets), size)

    def matches(self, tensors: Mapping[str, np.ndarray]) -> str | None:
        """``None`` if ``tensors`` has exactly these names and shapes (float32), else why not."""
        if set(tensors) != set(self.names):
            missing = sorted(set(self.names) - set(tensors))
            extra = sorted(set(tensors) - set(self.names))
            return f"tensor names differ (missing {missing[:3]}, unexpected {extra[:3]})"
        for name, shape in zip(self.names, self.shapes, strict=True):
            arr = tensors[name]
            if tuple(arr.shape) != shape:
                return f"tensor {name!r} has shape {tuple(arr.shape)}, expected {shape}"
            if arr.dtype != np.float32:
                return f"tensor {name!r} has dtype {arr.dtype}, expected float32"
        return None


def flatten(
    tensors: Mapping[str, np.ndarray], layout: TensorLayout | None = None
) -> tuple[Vector, TensorLayout]:
    """Concatenate tensors into one float32 vector in ``layout``'s order (default: dict order).

    Passing the global model's layout makes every update flatten in the same order, whatever order
    its file listed the tensors in.
    """
    layout = layout or TensorLayout.of(tensors)
    problem = layout.matches(tensors)
    if problem is not None:
        raise FormatError(f"tensors do not match the model layout: {problem}")
    adjacent = _adjacent(tensors, layout)
    if adjacent is not None:
        return adjacent, layout
    flat = np.empty(layout.size, dtype=np.float32)
    for name, off in zip(layout.names, layout.offsets, strict=True):
        arr = tensors[name]
        flat[off : off + arr.size] = arr.reshape(-1)
    return flat, layout


def _adjacent(tensors: Mapping[str, np.ndarray], layout: TensorLayout) -> Vector | None:
    """A read-only view of the tensors as one vector when they already lie end to end in
    ``layout``'s order in one buffer (a decoded fp32 file, :func:`fedledger.protocol.codec.decode`); else
    ``None``. Read-only, so the vector can never change the tensors it shares memory with."""
    arrays = [tensors[name] for name in layout.names]
    if not arrays or any(a.size == 0 or not a.flags.c_contiguous for a in arrays):
        return None
    owner = _owner(arrays[0])
    start = arrays[0].__array_interface__["data"][0]
    for a, off in zip(arrays, layout.offsets, strict=True):
        if a.__array_interface__["data"][0] != start + 4 * off or _owner(a) is not owner:
            return None
    if isinstance(owner, np.ndarray):
        if owner.dtype != np.uint8 or owner.ndim != 1:
            return None
        buffer = owner
    else:  # views straight into the file's bytes (fedledger.protocol.codec.decode(copy=False))
        try:
            buffer = np.frombuffer(owner, dtype=np.uint8)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return None
    begin = start - buffer.__array_interface__["data"][0]
    if begin < 0 or begin + 4 * layout.size > buffer.size:
        return None
    flat = buffer[begin : begin + 4 * layout.size].view(np.float32)
    flat.flags.writeable = False
    return flat


def _owner(a: np.ndarray) -> object:
    """The object that owns ``a``'s memory (the end of its chain of views)."""
    base: object = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base


def unflatten(flat: Vector, layout: TensorLayout) -> Tensors:
    """Split a flat vector back into named C-contiguous float32 tensors (copies, safe to keep)."""
    if flat.shape != (layout.size,):
        raise FormatError(f"flat vector has shape {flat.shape}, layout needs ({layout.size},)")
    out: Tensors = {}
    for name, shape, off in zip(layout.names, layout.shapes, layout.offsets, strict=True):
        n = math.prod(shape)
        out[name] = np.array(flat[off : off + n], dtype=np.float32).reshape(shape)
    return out


def apply_delta(global_: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> Tensors:
    """``global + delta`` per tensor in float32, in the global model's tensor order."""
    problem = TensorLayout.of(global_).matches(delta)
    if problem is not None:
        raise FormatError(f"delta does not fit the global model: {problem}")
    out: Tensors = {}
    for name, g in global_.items():
        out[name] = np.ascontiguousarray(np.add(g, delta[name], dtype=np.float32), dtype=np.float32)
    return out


# --------------------------------------------------------------------------- deterministic sums


def _fold(buf: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Sum the rows of a 2-D float64 array into row 0 with a fixed halving tree; returns row 0.

    Row ``i`` is added to row ``i - h`` for the lower half ``h``; an odd last row goes into row 0.
    Every step is an elementwise add, so the result is the same on every machine.
    """
    rows = buf.shape[0]
    while rows > 1:
        half = rows // 2
        np.add(buf[:half], buf[half : 2 * half], out=buf[:half])
        if rows % 2:
            np.add(buf[0], buf[2 * half], out=buf[0])
        rows = half
    return buf[0]


def _lanes_total(lanes: npt.NDArray[np.float64]) -> float:
    return float(_fold(lanes.reshape(-1, 1).copy())[0])


def _check_finite(x: np.ndarray, what: str) -> None:
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or Inf; screening must reject it first")


def dot(a: Vector, b: Vector) -> float:
    """Deterministic float64 dot product (fixed fold order; see the module docstring)."""
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in shape: {a.shape} vs {b.shape}")
    lanes = np.zeros(_LANES)
    buf = np.zeros(_BLOCK)
    for s in range(0, a.size, _BLOCK):
        e = min(s + _BLOCK, a.size)
        m = e - s
        np.multiply(a[s:e], b[s:e], out=buf[:m], dtype=np.float64)
        if m < _BLOCK:
            buf[m:] = 0.0
        np.add(lanes, _fold(buf.reshape(-1, _LANES)), out=lanes)
    return _lanes_total(lanes)


def sq_norm(a: Vector) -> float:
    """Deterministic float64 squared L2 norm."""
    return dot(a, a)


def norm(a: Vector) -> float:
    """Deterministic L2 norm (``sqrt`` is correctly rounded)."""
    return math.sqrt(sq_norm(a))


def sq_distance(a: Vector, b: Vector) -> float:
    """Deterministic float64 squared L2 distance ``|a - b|^2``."""
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in shape: {a.shape} vs {b.shape}")
    lanes = np.zeros(_LANES)
    buf = np.zeros(_BLOCK)
    for s in range(0, a.size, _BLOCK):
        e = min(s + _BLOCK, a.size)
        m = e - s
        np.subtract(a[s:e], b[s:e], out=buf[:m], dtype=np.float64)
        np.multiply(buf[:m], buf[:m], out=buf[:m])
        if m < _BLOCK:
            buf[m:] = 0.0
        np.add(lanes, _fold(buf.reshape(-1, _LANES)), out=lanes)
    return _lanes_total(lanes)


# --------------------------------------------------------------------------- exact Gram matrix


@dataclass(frozen=True)
class Gram:
    """Exact inner products of the fixed-point images of n vectors.

    Row ``i`` is represented as integers ``q_i = rint(x_i * 2**-exp_i)`` with ``|q_i| <= 2**19``
    (a per-row power-of-two scale, so an attacker's huge update cannot coarsen anyone else's).
    ``ints[i][j] = sum_k q_i[k] q_j[k]`` exactly, as Python ints, so every quantity derived here
    is a deterministic function of the inputs, with relative resolution 2**-19 of each row's
    largest coordinate -- ample for ranking distances and cosines.
    """

    ints: list[list[int]]
    exps: list[int]

    @property
    def n(self) -> int:
        return len(self.exps)

    def sq_distance(self, i: int, j: int) -> float:
        """``|x_i - x_j|^2`` of the fixed-point images, correctly rounded from the exact value."""
        return _ldexp_exact(self.sq_distance_exact(i, j))

    def sq_distance_exact(self, i: int, j: int) -> tuple[int, int]:
        """The exact squared distance as ``(mantissa, exponent)`` (value = m * 2**e)."""
        ei, ej = self.exps[i], self.exps[j]
        base = 2 * min(ei, ej)
        m = (
            (self.ints[i][i] << (2 * ei - base))
            + (self.ints[j][j] << (2 * ej - base))
            - (2 * self.ints[i][j] << (ei + ej - base))
        )
        return m, base

    def cosine(self, i: int, j: int) -> float:
        """Cosine similarity; 0.0 when either vector is zero."""
        gii, gjj = self.ints[i][i], self.ints[j][j]
        if gii == 0 or gjj == 0:
            return 0.0
        return float(self.ints[i][j]) / (math.sqrt(float(gii)) * math.sqrt(float(gjj)))


def _ldexp_exact(value: tuple[int, int]) -> float:
    m, e = value
    try:
        return math.ldexp(float(m), e)  # int -> float is correctly rounded (round-half-even)
    except OverflowError:
        return math.inf


def exact_gram(vectors: Sequence[Vector]) -> Gram:
    """Inner products of all pairs with BLAS, made exact (hence order-independent).

    Each block holds integers ``|q| <= 2**19`` in float64; a block of 2**14 columns sums products
    ``<= 2**38`` so every partial sum of ``Q @ Q.T`` is an integer below 2**53 and exact whatever
    order, blocking, threading or FMA the BLAS uses.  Blocks are summed exactly in int64, then in
    Python ints.
    """
    n = len(vectors)
    size = int(vectors[0].size) if n else 0
    exps = []
    for v in vectors:
        # max/min are exact in any order, and NaN/Inf show up in them: no |v| copy, no mask
        peak = max(float(v.max()), -float(v.min())) if size else 0.0
        if not math.isfinite(peak):
            raise ValueError("an update contains NaN or Inf; screening must reject it first")
        exps.append(math.frexp(peak)[1] - _GRAM_BITS if peak > 0 else 0)
    scales = [np.float64(math.ldexp(1.0, -e)) for e in exps]
    total = [[0] * n for _ in range(n)]
    acc = np.zeros((n, n), dtype=np.int64)
    q = np.empty((n, _GRAM_BLOCK))
    pending = 0
    for s in range(0, size, _GRAM_BLOCK):
        e = min(s + _GRAM_BLOCK, size)
        m = e - s
        for i, v in enumerate(vectors):
            np.multiply(v[s:e], scales[i], out=q[i, :m], dtype=np.float64)
        block = q[:, :m]
        np.rint(block, out=block)
        acc += (block @ block.T).astype(np.int64)
        pending += 1
        if pending == _GRAM_FLUSH:
            _flush(acc, total)
            pending = 0
    _flush(acc, total)
    return Gram(total, exps)


def _flush(acc: npt.NDArray[np.int64], total: list[list[int]]) -> None:
    rows = acc.tolist()
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            total[i][j] += value
    acc[...] = 0


# --------------------------------------------------------------------------- rules


def _as_vectors(updates: Sequence[Vector] | npt.NDArray[np.float32]) -> list[Vector]:
    vecs = [np.ascontiguousarray(u, dtype=np.float32).reshape(-1) for u in updates]
    if not vecs:
        raise ValueError("no updates to aggregate")
    size = vecs[0].size
    for i, v in enumerate(vecs):
        if v.size != size:
            raise ValueError(f"update {i} has {v.size} values, update 0 has {size}")
    return vecs


def _normalise_zero(out: Vector) -> Vector:
    np.add(out, np.float32(0.0), out=out)  # -0.0 + 0.0 == +0.0 under round-to-nearest
    return out


def _capped_weights(num_samples: Sequence[int], sample_cap: int | None) -> list[int]:
    cap = MAX_SAMPLE_CAP if sample_cap is None else min(int(sample_cap), MAX_SAMPLE_CAP)
    return [min(max(int(ns), 0), cap) for ns in num_samples]


def fedavg(
    updates: Sequence[Vector], num_samples: Sequence[int], *, sample_cap: int | None = None
) -> Vector:
    """Mean weighted by ``min(numSamples, sample_cap)`` (contributors state their own counts).

    Computed as ``(sum_i w_i * x_i) / sum_i w_i`` in float32, ``i`` in input order, in
    cache-sized column blocks, with separate elementwise multiplies and adds (numpy never fuses
    them), so every value is rounded by the same IEEE-754 single-precision operations in the same
    order on every machine -- the same bits as :class:`FedAvgAccumulator`.  float32 keeps it
    memory-bound (one read of each update, no widening pass); with at most a few hundred updates
    the accumulated rounding stays far below the noise of training.
    """
    vecs = _as_vectors(updates)
    if len(num_samples) != len(vecs):
        raise ValueError(f"{len(vecs)} updates but {len(num_samples)} sample counts")
    weights = _capped_weights(num_samples, sample_cap)
    total = sum(weights)
    if total == 0:
        raise ValueError("every update has zero weight (numSamples 0)")
    used = [(np.float32(w), v) for w, v in zip(weights, vecs, strict=True) if w > 0]
    size = vecs[0].size
    out = np.zeros(size, dtype=np.float32)
    denom = np.float32(total)

    def columns(lo: int, hi: int) -> None:
        tmp = np.empty(_F32_BLOCK, dtype=np.float32)
        for s in range(lo, hi, _F32_BLOCK):
            e = min(s + _F32_BLOCK, hi)
            a, t = out[s:e], tmp[: e - s]
            for w, v in used:
                np.multiply(v[s:e], w, out=t)
                np.add(a, t, out=a)
            np.divide(a, denom, out=a)

    _over_column_ranges(columns, size)
    _check_finite(out, "fedavg result")
    return _normalise_zero(out)


_PARALLEL_MIN = 1 << 20  # below this many columns one thread is faster than two


def _over_column_ranges(work: Callable[[int, int], None], size: int) -> None:
    """Run ``work(lo, hi)`` over disjoint column ranges on the machine's cores.

    Each column is computed by exactly one thread with the same operations in the same order,
    so the result does not depend on the number of threads (numpy releases the GIL in ufuncs).
    """
    threads = min(os.cpu_count() or 1, 8) if size >= _PARALLEL_MIN else 1
    if threads == 1:
        work(0, size)
        return
    step = -(-size // threads)
    step += -step % _F32_BLOCK
    bounds = [(lo, min(lo + step, size)) for lo in range(0, size, step)]
    with ThreadPoolExecutor(max_workers=len(bounds)) as pool:
        for f in [pool.submit(work, lo, hi) for lo, hi in bounds]:
            f.result()


def mean(updates: Sequence[Vector]) -> Vector:
    """Unweighted mean (fedavg with equal weights), same determinism as :func:`fedavg`."""
    vecs = _as_vectors(updates)
    return fedavg(vecs, [1] * len(vecs))


_NETWORK_MAX = 8  # up to this many updates, sort each column with a min/max network


def sorted_columns(
    vecs: Sequence[np.ndarray],
    lo: int,
    hi: int,
    *,
    dtype: type[np.generic],
    tile: int,
    check: Callable[[np.ndarray], None] | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, end, t)`` over columns ``lo..hi`` of ``vecs``, ``tile`` columns at a
    time, with ``t[c, :]`` the n values of column ``start + c`` in increasing order (``check``
    sees each tile's raw values first).

    Sorted values are unique up to the sign of zero, so the sorting method cannot change any
    result.  Up to :data:`_NETWORK_MAX` updates (every round of a small federation) the columns
    are sorted by an odd-even transposition network of vectorised ``minimum``/``maximum`` over
    whole rows, ~10x faster than numpy's per-row small sorts; beyond, rows of n contiguous values
    are sorted by numpy.  The float rules and the exact integer rules
    (:mod:`fedledger.protocol.exact_rules`) both sort through here.
    """
    n = len(vecs)
    if n <= _NETWORK_MAX:
        rows = np.empty((n, tile), dtype=dtype)
        low = np.empty(tile, dtype=dtype)
        for s in range(lo, hi, tile):
            e = min(s + tile, hi)
            r, lw = rows[:, : e - s], low[: e - s]
            for i, v in enumerate(vecs):
                r[i] = v[s:e]
            if check is not None:
                check(r)
            for phase in range(n):  # n phases of odd-even transposition sort n values
                for i in range(phase % 2, n - 1, 2):
                    np.minimum(r[i], r[i + 1], out=lw)
                    np.maximum(r[i], r[i + 1], out=r[i + 1])
                    r[i] = lw
            yield s, e, r.T
        return
    buf = np.empty((tile, n), dtype=dtype)
    for s in range(lo, hi, tile):
        e = min(s + tile, hi)
        t = buf[: e - s]
        for i, v in enumerate(vecs):
            t[:, i] = v[s:e]
        if check is not None:
            check(t)
        t.sort(axis=1)
        yield s, e, t


def _sorted_blocks(vecs: list[Vector]) -> Iterable[tuple[int, int, npt.NDArray[np.float32]]]:
    """The float rules' sorted columns, every value checked finite."""
    return sorted_columns(
        vecs,
        0,
        vecs[0].size,
        dtype=np.float32,
        tile=_BLOCK,
        check=lambda r: _check_finite(r, "an update"),
    )


def median(updates: Sequence[Vector]) -> Vector:
    """Coordinate-wise median; for even n the mean of the two middle values (in float64)."""
    vecs = _as_vectors(updates)
    n = len(vecs)
    out = np.empty(vecs[0].size, dtype=np.float32)
    for s, e, t in _sorted_blocks(vecs):
        if n % 2:
            out[s:e] = t[:, n // 2]
        else:
            mid = np.add(t[:, n // 2 - 1], t[:, n // 2], dtype=np.float64)
            out[s:e] = mid * 0.5
    return _normalise_zero(out)


def trimmed_mean(updates: Sequence[Vector], *, beta: float) -> Vector:
    """Coordinate-wise mean after dropping the ``floor(beta * n)`` lowest and highest values.

    The kept values are summed in float64 in sorted order (a fixed order), then divided once.
    """
    vecs = _as_vectors(updates)
    n = len(vecs)
    k = int(math.floor(beta * n))
    if n - 2 * k < 1:
        raise ValueError(f"beta={beta} trims all {n} updates")
    out = np.empty(vecs[0].size, dtype=np.float32)
    acc = np.empty(_BLOCK)
    denom = np.float64(n - 2 * k)
    for s, e, t in _sorted_blocks(vecs):
        a = acc[: e - s]
        a[...] = 0.0
        for j in range(k, n - k):
            np.add(a, t[:, j], out=a, dtype=np.float64)
        np.divide(a, denom, out=a)
        out[s:e] = a
    return _normalise_zero(out)


def krum_neighbours(n: int, f: int) -> int:
    """Number of nearest neighbours in a Krum score: ``n - f - 2``, at least 1 (as Flower)."""
    return max(1, n - f - 2)


def _exact_scores(gram: Gram, f: int) -> tuple[list[int], int]:
    """Krum scores as exact integers on the common scale ``2**base``."""
    n = gram.n
    if n == 1:
        return [0], 0
    k = min(krum_neighbours(n, f), n - 1)
    exact = {(i, j): gram.sq_distance_exact(i, j) for i in range(n) for j in range(i + 1, n)}
    base = min(e for _, e in exact.values())
    dist = [[0] * n for _ in range(n)]
    for (i, j), (m, e) in exact.items():
        dist[i][j] = dist[j][i] = m << (e - base)
    scores = [sum(sorted(dist[i][j] for j in range(n) if j != i)[:k]) for i in range(n)]
    return scores, base


def krum_scores_from_gram(gram: Gram, f: int) -> list[float]:
    """Krum score of each vector: the sum of its ``n - f - 2`` smallest squared distances.

    Distances and sums are exact (Python ints on a common power-of-two scale), so the ranking is
    a mathematical function of the inputs, not of the machine.
    """
    scores, base = _exact_scores(gram, f)
    return [_ldexp_exact((sc, base)) for sc in scores]


def krum_order_from_gram(gram: Gram, f: int) -> list[int]:
    """Indices by increasing Krum score; ties go to the earlier index (earlier updateId)."""
    scores, _ = _exact_scores(gram, f)
    return sorted(range(gram.n), key=lambda i: (scores[i], i))


def krum_scores(updates: Sequence[Vector], f: int) -> list[float]:
    """Krum scores of ``updates`` (see :func:`krum_scores_from_gram`)."""
    return krum_scores_from_gram(exact_gram(_as_vectors(updates)), f)


def krum_select(updates: Sequence[Vector], *, f: int, m: int = 1) -> list[int]:
    """Indices of the ``m`` updates with the lowest Krum scores, best first (ties by order)."""
    return krum_order_from_gram(exact_gram(_as_vectors(updates)), f)[: max(1, m)]


def krum(updates: Sequence[Vector], *, f: int) -> Vector:
    """Krum (Blanchard et al. 2017): the update closest to its ``n - f - 2`` nearest neighbours."""
    vecs = _as_vectors(updates)
    best = krum_select(vecs, f=f, m=1)[0]
    return _normalise_zero(vecs[best].copy())


def multi_krum(updates: Sequence[Vector], *, f: int, m: int | None = None) -> Vector:
    """Unweighted mean of the ``m`` best Krum-scored updates (default ``m = n - f``).

    Unweighted as in the paper: self-reported sample counts are exactly what a robust rule must
    not trust.
    """
    vecs = _as_vectors(updates)
    keep = len(vecs) - f if m is None else m
    chosen = sorted(krum_select(vecs, f=f, m=max(1, min(keep, len(vecs)))))
    return mean([vecs[i] for i in chosen])


def clip_scale(norm_: float, clip_norm: float | None) -> float:
    """Factor that brings an update of L2 norm ``norm_`` within ``clip_norm`` (1.0 if inside)."""
    if clip_norm is None or norm_ <= clip_norm:
        return 1.0
    return clip_norm / norm_


def clip(update: Vector, clip_norm: float | None) -> Vector:
    """``update`` scaled to L2 norm at most ``clip_norm`` (float64 product, one cast to float32)."""
    scale = clip_scale(norm(update), clip_norm)
    if scale == 1.0:
        return update
    return np.multiply(update, np.float64(scale), dtype=np.float64).astype(np.float32)


# --------------------------------------------------------------------------- rule spec


RuleName = Literal["fedavg", "median", "trimmed_mean", "krum", "multi_krum"]
_PARAMS: dict[str, set[str]] = {
    "fedavg": {"sample_cap"},
    "median": set(),
    "trimmed_mean": {"beta"},
    "krum": {"f"},
    "multi_krum": {"f", "m"},
}


class RuleSpec(BaseModel):
    """The aggregation part of a task spec, e.g.
    ``{"rule": "trimmed_mean", "beta": 0.2, "clip_norm": 5.0}``.

    ``clip_norm`` applies to every rule (before it); other parameters only to their rule and are
    rejected elsewhere, so a typo or a misplaced parameter fails loudly instead of being ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: RuleName
    beta: Annotated[float, Field(ge=0.0, lt=0.5)] | None = None
    f: Annotated[int, Field(ge=0)] | None = None
    m: Annotated[int, Field(ge=1)] | None = None
    clip_norm: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    sample_cap: Annotated[int, Field(ge=1, le=MAX_SAMPLE_CAP)] | None = None

    @model_validator(mode="after")
    def _params_fit_rule(self) -> RuleSpec:
        given = {k for k in ("beta", "f", "m", "sample_cap") if getattr(self, k) is not None}
        stray = given - _PARAMS[self.rule]
        if stray:
            raise ValueError(f"{', '.join(sorted(stray))} does not apply to rule {self.rule!r}")
        if self.rule == "trimmed_mean" and self.beta is None:
            raise ValueError(
                "trimmed_mean needs beta (fraction trimmed at each end, 0 <= beta < 0.5)"
            )
        if self.rule in ("krum", "multi_krum") and self.f is None:
            raise ValueError(f"{self.rule} needs f (the number of attackers to tolerate)")
        return self

    @classmethod
    def parse(cls, obj: Mapping[str, Any] | str | bytes) -> RuleSpec:
        """Validate a rule spec (a mapping, or JSON text). Raises ConfigError with the reasons.

        Accepts the rule object itself or a whole task spec (its ``"aggregation"`` section).
        Unknown keys are errors, so a typo such as ``clip_nrom`` cannot silently do nothing.
        """
        return parse_section(
            cls,
            obj,
            "aggregation",
            "aggregation rule spec",
            hint="see client/fedledger/protocol/aggregation.py RuleSpec for the rules and their parameters",
        )

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object with unset parameters left out (used in verdict files)."""
        return self.model_dump(exclude_none=True)

    def with_task_cap(self, max_samples: int) -> RuleSpec:
        """This rule as a task with ``maxSamples = max_samples`` runs it: fedavg's weight cap
        becomes ``min(sample_cap, max_samples)`` (each update's weight is its own claim, and the
        task bounds the claim; the chain refuses more, validators cap again here).  The rule is
        returned unchanged when the task's bound is not the tighter one, and for the rules that
        do not weigh updates.  :func:`fedledger.protocol.rounds.judge_round` judges with this rule and
        writes it into the verdict file, so the file names the cap the aggregate used.
        """
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ConfigError(f"a task's maxSamples is at least 1, got {max_samples!r}")
        if self.rule != "fedavg":
            return self
        current = MAX_SAMPLE_CAP if self.sample_cap is None else self.sample_cap
        if max_samples >= current:
            return self
        return self.model_copy(update={"sample_cap": max_samples})


# --------------------------------------------------------------------------- registry

RuleFn = Callable[[Sequence[Vector], Sequence[int], RuleSpec], Vector]
RULES: dict[str, RuleFn] = {}


def register(name: str) -> Callable[[RuleFn], RuleFn]:
    """Register an aggregation rule under ``name`` (what ``RuleSpec.rule`` names)."""

    def deco(fn: RuleFn) -> RuleFn:
        RULES[name] = fn
        return fn

    return deco


@register("fedavg")
def _fedavg_rule(updates: Sequence[Vector], ns: Sequence[int], spec: RuleSpec) -> Vector:
    return fedavg(updates, ns, sample_cap=spec.sample_cap)


@register("median")
def _median_rule(updates: Sequence[Vector], ns: Sequence[int], spec: RuleSpec) -> Vector:
    return median(updates)


@register("trimmed_mean")
def _trimmed_rule(updates: Sequence[Vector], ns: Sequence[int], spec: RuleSpec) -> Vector:
    assert spec.beta is not None
    return trimmed_mean(updates, beta=spec.beta)


@register("krum")
def _krum_rule(updates: Sequence[Vector], ns: Sequence[int], spec: RuleSpec) -> Vector:
    return krum(updates, f=spec.f or 0)


@register("multi_krum")
def _multi_krum_rule(updates: Sequence[Vector], ns: Sequence[int], spec: RuleSpec) -> Vector:
    return multi_krum(updates, f=spec.f or 0, m=spec.m)


def aggregate(
    spec: RuleSpec, updates: Sequence[Vector], num_samples: Sequence[int] | None = None
) -> Vector:
    """Clip (if ``spec.clip_norm``) then apply ``spec.rule``; inputs in updateId order."""
    vecs = _as_vectors(updates)
    ns = list(num_samples) if num_samples is not None else [1] * len(vecs)
    if len(ns) != len(vecs):
        raise ValueError(f"{len(vecs)} updates but {len(ns)} sample counts")
    if spec.clip_norm is not None:
        vecs = [clip(v, spec.clip_norm) for v in vecs]
    return RULES[spec.rule](vecs, ns, spec)


def aggregate_tensors(
    spec: RuleSpec,
    deltas: Sequence[Mapping[str, np.ndarray]],
    num_samples: Sequence[int] | None,
    layout: TensorLayout,
) -> Tensors:
    """Aggregate named tensors; with no accepted update the delta is zero (model unchanged)."""
    if not deltas:
        return unflatten(np.zeros(layout.size, dtype=np.float32), layout)
    flats = [flatten(d, layout)[0] for d in deltas]
    return unflatten(aggregate(spec, flats, num_samples), layout)


# --------------------------------------------------------------------------- streaming fedavg


class FedAvgAccumulator:
    """fedavg as a running weighted sum, for updates read from the store one at a time.

    Holds one float32 sum (one model's worth of memory) in separately allocated blocks, so
    :meth:`result` frees each block as it writes the output: the peak stays near one model plus
    the update being added.  Adds in the order called (callers go by updateId) and
    gives the same bits as :func:`fedavg` on the same inputs.
    """

    def __init__(
        self,
        size: int,
        *,
        sample_cap: int | None = None,
        clip_norm: float | None = None,
        block: int = 1 << 20,
    ) -> None:
        self.size = size
        self.sample_cap = sample_cap
        self.clip_norm = clip_norm
        self._block = block
        self._blocks: list[npt.NDArray[np.float32]] | None = [
            np.zeros(min(block, size - s), dtype=np.float32) for s in range(0, size, block)
        ]
        self._tmp = np.empty(_F32_BLOCK, dtype=np.float32)
        self.total_weight = 0
        self.count = 0

    @classmethod
    def for_spec(cls, spec: RuleSpec, size: int) -> FedAvgAccumulator:
        if spec.rule != "fedavg":
            raise ConfigError(f"a running sum only computes fedavg, not {spec.rule!r}")
        return cls(size, sample_cap=spec.sample_cap, clip_norm=spec.clip_norm)

    def add(
        self,
        update: Vector | Mapping[str, np.ndarray],
        num_samples: int,
        layout: TensorLayout | None = None,
    ) -> None:
        """Add one update (flat vector, or tensors flattened in ``layout`` order)."""
        if isinstance(update, Mapping):
            if layout is None:
                raise ValueError("adding named tensors needs the model layout")
            update = flatten(update, layout)[0]
        vec = np.ascontiguousarray(update, dtype=np.float32).reshape(-1)
        if vec.size != self.size:
            raise ValueError(f"update has {vec.size} values, expected {self.size}")
        _check_finite(vec, "an update")
        if self.clip_norm is not None:
            vec = clip(vec, self.clip_norm)
        self.add_chunks(
            (vec[s : s + self._block] for s in range(0, self.size, self._block)), num_samples
        )

    def add_chunks(self, chunks: Iterable[Vector], num_samples: int) -> None:
        """Add one update given as consecutive float32 pieces (e.g. read from a file in parts).

        Clipping needs the whole update's norm first, so it is refused here.
        """
        if self.clip_norm is not None:
            raise ConfigError("clip_norm needs the whole update; use add() instead")
        blocks = self._live()
        w = _capped_weights([num_samples], self.sample_cap)[0]
        pos = 0
        weight = np.float32(w)
        for chunk in chunks:
            c = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
            if pos + c.size > self.size:
                raise ValueError(f"update longer than {self.size} values")
            if w > 0:
                self._add_piece(blocks, pos, c, weight)
            pos += c.size
        if pos != self.size:
            raise ValueError(f"update has {pos} values, expected {self.size}")
        self.total_weight += w
        self.count += 1

    def _add_piece(
        self, blocks: list[npt.NDArray[np.float32]], pos: int, c: Vector, w: np.float32
    ) -> None:
        done = 0
        while done < c.size:
            b, off = divmod(pos + done, self._block)
            target = blocks[b]
            n = min(c.size - done, target.size - off)
            for s in range(0, n, _F32_BLOCK):
                e = min(s + _F32_BLOCK, n)
                t = self._tmp[: e - s]
                np.multiply(c[done + s : done + e], w, out=t)
                seg = target[off + s : off + e]
                np.add(seg, t, out=seg)
            done += n

    def _live(self) -> list[npt.NDArray[np.float32]]:
        if self._blocks is None:
            raise RuntimeError("result() was already taken from this accumulator")
        return self._blocks

    def result(self) -> Vector:
        """The weighted mean as float32; the accumulator is spent afterwards."""
        blocks = self._live()
        if self.total_weight == 0:
            raise ValueError("every update has zero weight (numSamples 0)")
        out = np.empty(self.size, dtype=np.float32)
        denom = np.float32(self.total_weight)
        pos = 0
        while blocks:
            blk = blocks.pop(0)
            np.divide(blk, denom, out=blk)
            out[pos : pos + blk.size] = blk
            pos += blk.size
            del blk
        self._blocks = None
        _check_finite(out, "fedavg result")
        return _normalise_zero(out)
