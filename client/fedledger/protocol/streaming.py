"""Judging and aggregating a fixed-point round in bounded memory, by coordinate ranges.

The in-memory judge (:func:`fedledger.protocol.rounds.judge_round`) holds every update of a
round at once: ``n x d`` coordinates.  This module reads each ``int32`` update straight from its
safetensors bytes, one coordinate range at a time, through a store that reads byte ranges
(:class:`RangeStore`), so memory stays ``O(n * block + d)`` plus the ``O(n**2)`` statistics;
and each pass runs on coordinate ranges or on updates that can be computed alone, which is what
a sharded validator runs on each worker (``fedledger_backend.sharded``, docs/scaling.md).
:func:`judge_round_streamed` gives ``judge_round``'s :class:`~fedledger.protocol.rounds.Judgement`
to the byte.

Reading an update (:func:`inspect_update`), in the order the in-memory judge decides:

1. its whole file is streamed once through sha256, by the store's own walk: ``UNAVAILABLE`` if
   it cannot be read, ``HASH_MISMATCH`` unless it is the bytes the chain committed to (nothing is
   parsed before);
2. its header alone is parsed, by the format's own parser (:func:`fedledger.protocol.codec.parse_header`,
   bounded JSON through :mod:`fedledger.safejson`): a header whose offsets, shapes or sizes do not
   tile the file exactly is ``MALFORMED``, as is bad metadata; then the caller's file check
   (task, round, base model, contributor: ``MALFORMED`` or ``COPIED``);
3. tensors of other names or shapes than the model's are left to the screen (``SHAPE_MISMATCH``);
4. one pass over the coordinates (:func:`scan_update`) recomputes the tensor root
   (``TENSOR_ROOT_MISMATCH``) and the screen's norm and Gram scale of the dequantized vector.

What is left of the file is :class:`UpdateFile`: where each of the task's tensors lies in it, so
a :class:`ColumnReader` turns coordinates ``[a, b)`` (the task's flat order) into byte ranges.

Exactness
---------
* The screen's statistics are the very floats :mod:`fedledger.protocol.screening` computes on
  the whole dequantized vectors (section "screen statistics" below): folds per update, the
  19-bit Gram matrix as exact integer sums over coordinate ranges, the median by range.
* The exact rules: squared norms and Gram matrices (:func:`fedledger.protocol.exact_rules.sq_norms`,
  :func:`~fedledger.protocol.exact_rules.gram` per block) are summed as Python ints; the
  aggregate is :func:`~fedledger.protocol.exact_rules.aggregate_columns` per block, given the
  round's :class:`~fedledger.protocol.exact_rules.Plan` (clip multipliers, Krum's choice) taken
  once from the summed statistics (:func:`plan_from_statistics`).  docs/aggregation.md section 9
  proves any column split gives the whole's result bit for bit.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np
import numpy.typing as npt
from nacl.public import PrivateKey

from fedledger.content.store import ContentStore
from fedledger.errors import FormatError, StoreError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import (
    codec,
    exact_rules,
    fixed_deltas,
    fixedpoint,
    rounds,
    screening,
    verdicts,
)
from fedledger.protocol import tensor_root as troot
from fedledger.protocol.exact_rules import ExactGram, ExactRule, Plan
from fedledger.protocol.fixedpoint import FixedPointFormat, Int32Vector
from fedledger.protocol.taskspec import TaskSpec
from fedledger.protocol.verdicts import Verdict
from fedledger.redact import public_reason

DEFAULT_BLOCK_BYTES = 64 << 20
"""The ``n x block`` int32 buffer of one reader: the part of memory that grows with ``n``."""
MAX_BLOCK_COLUMNS = 1 << 16
MIN_BLOCK_COLUMNS = troot.LEAF_COORDINATES
HASH_CHUNK = 1 << 20
"""Bytes read at a time while hashing a whole file."""


class RangeSource(Protocol):
    """One stored file, read by byte range (:class:`fedledger.content.blockstore.FileRange`)."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class RangeStore(Protocol):
    """A content store as the streamed judge reads it (both of fedledger's stores are one):
    a whole file as a verified stream, through the walk the in-memory fetch takes, and any byte
    range of it (:class:`fedledger.content.blockstore.FileRange`)."""

    def open(self, cid: str) -> BinaryIO: ...

    def open_range(self, cid: str) -> RangeSource: ...


def block_columns(n: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Coordinates per block for ``n`` updates: ``n x block`` int32 within ``block_bytes``, a
    multiple of a tensor-root leaf, between :data:`MIN_BLOCK_COLUMNS` and :data:`MAX_BLOCK_COLUMNS`."""
    fit = block_bytes // (4 * max(n, 1)) // MIN_BLOCK_COLUMNS * MIN_BLOCK_COLUMNS
    return max(MIN_BLOCK_COLUMNS, min(MAX_BLOCK_COLUMNS, fit))


def split(size: int, parts: int, *, align: int = MIN_BLOCK_COLUMNS) -> list[tuple[int, int]]:
    """``parts`` contiguous coordinate ranges tiling ``[0, size)`` (boundaries on ``align``;
    fewer ranges when there are too few coordinates).  Any tiling gives the same results."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    cuts = sorted({k * size // parts // align * align for k in range(1, parts)} - {0})
    edges = [0, *cuts, size]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a] or [(0, size)]


# --------------------------------------------------------------------------- one update's file


@dataclass(frozen=True)
class UpdateFile:
    """Where an ``int32`` update's coordinates lie in its file.

    ``spans[k] = (offset, count)``: the ``k``-th tensor of the task's layout (state_dict order)
    starts at file byte ``offset`` and holds ``count`` little-endian int32 coordinates.  Small
    (one pair per tensor), so it travels to workers as an argument.
    """

    cid: str
    size: int
    spans: tuple[tuple[int, int], ...]

    @property
    def coordinates(self) -> int:
        return sum(count for _, count in self.spans)


@dataclass(frozen=True)
class Inspection:
    """What reading one update's file decided (see the module docstring for the order).

    ``early`` is a verdict decided before the screen (``UNAVAILABLE``, ``HASH_MISMATCH``,
    ``MALFORMED``, ``COPIED``, ``TENSOR_ROOT_MISMATCH``) with its reason; ``shape_problem`` is
    the screen's ``SHAPE_MISMATCH`` reason; ``file`` is set when neither applies.  ``streamable``
    is False for a float encoding (``fp32``, ...), which this module does not read: the caller
    judges it in memory (it is quantized there).
    """

    sha256: str | None = None
    early: tuple[Verdict, str] | None = None
    metadata: dict[str, str] | None = None
    shape_problem: str | None = None
    file: UpdateFile | None = None
    tensor_root: str | None = None
    streamable: bool = True
    norm: float | None = None
    """The screen's norm of the dequantized vector (:class:`UpdateScan`), with ``file``."""
    gram_exp: int | None = None
    """The screen's Gram scale of the dequantized vector (:func:`gram_exponent`), with ``file``."""


FileCheck = Callable[[codec.Decoded], "tuple[Verdict, str] | None"]
"""The caller's check of a file's claims (:func:`fedledger.protocol.rounds.check_file` with the
round's task, round, base model and contributor bound); sees the metadata only."""


def read_header(source: RangeSource, *, max_bytes: int) -> codec.Header:
    """The validated safetensors header of a stored file, reading only its first ``8 + N``
    bytes; :class:`FormatError` for a header the format refuses (sizes, offsets, shapes, JSON)."""
    size = source.size
    if size > max_bytes:
        raise FormatError(f"file is {size} bytes, over the {max_bytes}-byte limit")
    if size < 8:
        raise FormatError("file shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", source.read(0, 8))
    if n > codec.MAX_HEADER_BYTES or 8 + n > size:
        raise FormatError(f"header length {n} is over the limit or past the end of the file")
    return codec.parse_header(source.read(0, 8 + n), size, max_bytes=max_bytes)


def interpret_header(header: codec.Header, layout: agg.TensorLayout) -> dict[str, str]:
    """Check an ``int32`` update's metadata and tensor set exactly as :func:`codec.decode` does
    (same function, same messages), without its tensor bytes; returns the metadata.

    The decoder's checks for this encoding look at dtypes and element counts only, so each
    tensor stands in as a zero-byte broadcast of its shape.
    """
    raw = codec.RawFile(
        {
            t.name: np.broadcast_to(np.zeros((), codec.ALLOWED_DTYPES[t.dtype]), t.shape)
            for t in header.tensors
        },
        header.metadata,
        header,
    )
    try:
        return codec._interpret(raw, "update", layout.size).metadata
    except (ValueError, OverflowError) as exc:
        raise codec._unforeseen(exc) from exc


def update_file(cid: str, header: codec.Header, layout: agg.TensorLayout) -> UpdateFile | str:
    """The spans of the task's tensors in the file, or the screen's ``SHAPE_MISMATCH`` reason
    (the one :meth:`~fedledger.protocol.aggregation.TensorLayout.matches` gives the in-memory
    screen for the same file)."""
    infos = {t.name: t for t in header.tensors}
    stand_ins = {
        t.name: np.broadcast_to(np.zeros((), codec.ALLOWED_DTYPES[t.dtype]), t.shape)
        for t in header.tensors
    }
    if set(infos) != set(layout.names) or any(
        infos[name].shape != shape or infos[name].dtype != "I32"
        for name, shape in zip(layout.names, layout.shapes, strict=True)
    ):
        return layout.matches(stand_ins) or "tensors do not match the model layout"
    spans = tuple(
        (header.data_start + infos[name].begin, (infos[name].end - infos[name].begin) // 4)
        for name in layout.names
    )
    return UpdateFile(cid, header.data_start + header.data_size, spans)


def open_update(
    source: RangeSource, cid: str, layout: agg.TensorLayout, *, max_bytes: int
) -> UpdateFile:
    """An already judged update's :class:`UpdateFile`, from its header alone; FormatError (naming
    the CID) if the header is refused or does not fit the layout."""
    try:
        header = read_header(source, max_bytes=max_bytes)
        interpret_header(header, layout)
        found = update_file(cid, header, layout)
    except FormatError as exc:
        raise FormatError(f"update {cid}: {exc.message}", hint=exc.hint) from exc
    if isinstance(found, str):
        raise FormatError(f"update {cid}: {found}")
    return found


def _read_hashed(store: RangeStore, cid: str, max_bytes: int) -> tuple[RangeSource, str]:
    """The sha256 of the file behind ``cid``, streamed a chunk at a time through the walk (and
    the errors, and the size limit) of the in-memory fetch; then the file, for range reads."""
    whole = hashlib.sha256()
    size = 0
    with store.open(cid) as stream:
        while chunk := stream.read(HASH_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise StoreError(f"{cid} is larger than {max_bytes} bytes")
            whole.update(chunk)
    return store.open_range(cid), "0x" + whole.hexdigest()


def inspect_update(
    store: RangeStore,
    cid: str,
    *,
    content_hash: str,
    layout: agg.TensorLayout,
    fmt: FixedPointFormat,
    max_bytes: int,
    check: FileCheck | None = None,
    expected_root: str | None = None,
) -> Inspection:
    """Read one update's file and decide what can be decided from it alone (module docstring).

    ``expected_root`` (the ``tensorRoot`` the chain recorded, hex) turns on step 4.  Memory is
    a chunk of the file at a time.  Like the in-memory fetch, a ``dag-pb`` CID that cannot be
    read is tried as the ``raw`` block of the same digest (:func:`~fedledger.protocol.rounds.raw_twin`),
    and the first failure is the one reported.  A store that fails *after* the file was read
    once is not a verdict on the update: that :class:`~fedledger.errors.StoreError` propagates.
    """
    used = cid
    try:
        source, digest = _read_hashed(store, cid, max_bytes)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch one is its verdict
        twin, got = rounds.raw_twin(cid), None
        if twin is not None:
            with contextlib.suppress(Exception):  # the first failure is the one to report
                got, used = _read_hashed(store, twin, max_bytes), twin
        if got is None:
            return Inspection(early=(Verdict.UNAVAILABLE, f"not retrievable: {public_reason(exc)}"))
        source, digest = got
    if digest != content_hash.lower():
        reason = f"bytes hash to {digest}, the chain records {content_hash}"
        return Inspection(sha256=digest, early=(Verdict.HASH_MISMATCH, reason))
    try:
        header = read_header(source, max_bytes=max_bytes)
        if header.metadata.get(codec.K_ENCODING) in codec.ENCODINGS:
            return Inspection(sha256=digest, metadata=header.metadata, streamable=False)
        metadata = interpret_header(header, layout)
        problem = check(codec.Decoded("update", {}, metadata)) if check is not None else None
    except StoreError:
        raise
    except FormatError as exc:
        return Inspection(sha256=digest, early=(Verdict.MALFORMED, str(exc)))
    except Exception as exc:  # noqa: BLE001 - whatever escapes the parser judges this update
        reason = f"not a valid update file: {public_reason(exc)}"
        return Inspection(sha256=digest, early=(Verdict.MALFORMED, reason))
    if problem is not None:
        return Inspection(sha256=digest, early=problem, metadata=metadata)
    found = update_file(used, header, layout)
    if isinstance(found, str):
        return Inspection(sha256=digest, metadata=metadata, shape_problem=found)
    scan = scan_update(ColumnReader(source, found), fmt)
    root = "0x" + scan.tensor_root.hex()
    if expected_root is not None and root != expected_root.lower():
        reason = (
            f"the file's fixed-point coordinates have tensor root {root}, the chain records "
            f"{expected_root}"
        )
        return Inspection(
            digest, (Verdict.TENSOR_ROOT_MISMATCH, reason), metadata, tensor_root=root
        )
    return Inspection(
        sha256=digest,
        metadata=metadata,
        file=found,
        tensor_root=root,
        norm=scan.norm,
        gram_exp=scan.gram_exp,
    )


class ColumnReader:
    """Coordinates ``[a, b)`` (the task's flat order) of one update, read from its file."""

    def __init__(self, source: RangeSource, file: UpdateFile) -> None:
        self.source = source
        self.file = file
        starts, pos = [], 0
        for _, count in file.spans:
            starts.append(pos)
            pos += count
        self._starts = starts
        self.size = pos

    def read_into(self, a: int, b: int, out: npt.NDArray[np.int32]) -> None:
        """Fill ``out`` (``b - a`` int32) with coordinates ``[a, b)``."""
        if not 0 <= a <= b <= self.size or out.shape != (b - a,):
            raise ValueError(f"coordinates [{a}, {b}) are not inside [0, {self.size})")
        k = max(bisect.bisect_right(self._starts, a) - 1, 0)
        pos = a
        while pos < b:
            offset, count = self.file.spans[k]
            first = self._starts[k]
            take = min(b, first + count) - pos
            if take > 0:
                raw = self.source.read(offset + 4 * (pos - first), 4 * take)
                out[pos - a : pos - a + take] = np.frombuffer(raw, dtype="<i4")
                pos += take
            k += 1


def iter_blocks(
    readers: Sequence[ColumnReader], a: int, b: int, columns: int
) -> Iterator[tuple[int, int, list[npt.NDArray[np.int32]]]]:
    """``(s, e, rows)`` over ``[a, b)`` in blocks of ``columns``: ``rows[i]`` is update ``i``'s
    coordinates ``[s, e)``.  One ``n x columns`` buffer, reused: a block is gone at the next."""
    buf = np.empty((len(readers), columns), dtype=np.int32)
    for s in range(a, b, columns):
        e = min(s + columns, b)
        m = e - s
        for i, r in enumerate(readers):
            r.read_into(s, e, buf[i, :m])
        yield s, e, [buf[i, :m] for i in range(len(readers))]


# --------------------------------------------------------------------------- exact-rule statistics


@dataclass(frozen=True)
class ShardStatistics:
    """Exact sums over one coordinate range; shards' parts add up to the whole's (``+``).

    ``sq_norms[i] = sum_c q_i[c]**2``; ``gram`` (when asked) ``G_ij = sum_c q_i[c] q_j[c]``,
    both of the updates as clipped by the multipliers given (if any).  What the exact rules'
    plan needs (:func:`plan_from_statistics`).
    """

    sq_norms: tuple[int, ...]
    gram: ExactGram | None = None

    def __add__(self, other: ShardStatistics) -> ShardStatistics:
        if len(self.sq_norms) != len(other.sq_norms):
            raise ValueError(
                f"statistics of {len(self.sq_norms)} and {len(other.sq_norms)} updates cannot "
                "be added"
            )
        return ShardStatistics(
            tuple(x + y for x, y in zip(self.sq_norms, other.sq_norms, strict=True)),
            None if self.gram is None or other.gram is None else self.gram + other.gram,
        )


def combine(parts: Sequence[ShardStatistics]) -> ShardStatistics:
    """The whole's statistics from its shards' (exact: any order gives the same)."""
    if not parts:
        raise ValueError("no shard statistics to combine")
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def shard_statistics(
    readers: Sequence[ColumnReader],
    a: int,
    b: int,
    *,
    gram: bool = False,
    multipliers: Sequence[int | None] | None = None,
    columns: int | None = None,
) -> ShardStatistics:
    """Exact statistics of coordinates ``[a, b)`` (see :class:`ShardStatistics`).

    ``multipliers``: clip the updates first (the plan's); ``gram``: the Gram matrix too (``n**2``
    Python ints, ``O(n**2 * (b - a))`` work).
    """
    n = len(readers)
    columns = columns or block_columns(n)
    norms = [0] * n
    g = ExactGram.zeros(n) if gram else None
    for _, _, rows in iter_blocks(readers, a, b, columns):
        if multipliers is not None:
            rows = exact_rules.clipped(rows, multipliers)
        if g is not None:
            g = g + exact_rules.gram(rows)
        else:
            for i, x in enumerate(exact_rules.sq_norms(rows)):
                norms[i] += x
    if g is not None:
        norms = [g.ints[i][i] for i in range(n)]
    return ShardStatistics(tuple(norms), g)


# --------------------------------------------------------------------------- screen statistics
#
# The screen (fedledger.protocol.screening) judges a fixed-point round on the dequantized
# float32 vectors, with aggregation's deterministic kernels: a fixed fold for norms, dots and
# distances, an exact Gram matrix of each vector re-scaled to 19 bits, the coordinate-wise
# median.  The functions below compute the very same floats from coordinate ranges, so a
# streamed or sharded validator reaches the in-memory verdicts, scores and reasons to the byte:
#
# * a fold (norm, dot with the centre, distance to it) is sequential over the vector: it is
#   taken per update, reading that update from coordinate 0 in the fold's own blocks;
# * the Gram matrix is an exact integer sum once each row's scale is known (from its peak,
#   found with the norm): a sum over coordinate shards;
# * the median is coordinate-wise: each shard computes its range of it.


class FoldLanes:
    """:func:`fedledger.protocol.aggregation.dot`'s fixed fold, fed one block at a time.

    Blocks are ``aggregation``'s (``_BLOCK`` columns from coordinate 0, the last one possibly
    shorter), and each is folded into the 1,024 lanes exactly as there, so :meth:`total` is
    ``aggregation.dot`` (or ``sq_distance``) of the whole vectors, bit for bit.
    """

    BLOCK = agg._BLOCK

    def __init__(self) -> None:
        self.lanes = np.zeros(agg._LANES)
        self._buf = np.zeros(agg._BLOCK)

    def _fold_in(self, m: int) -> None:
        if m < agg._BLOCK:
            self._buf[m:] = 0.0
        np.add(self.lanes, agg._fold(self._buf.reshape(-1, agg._LANES)), out=self.lanes)

    def products(self, a: agg.Vector, b: agg.Vector) -> None:
        """Fold in ``a * b`` (one block of each vector)."""
        np.multiply(a, b, out=self._buf[: a.size], dtype=np.float64)
        self._fold_in(a.size)

    def sq_differences(self, a: agg.Vector, b: agg.Vector) -> None:
        """Fold in ``(a - b)**2`` (one block of each vector)."""
        buf = self._buf[: a.size]
        np.subtract(a, b, out=buf, dtype=np.float64)
        np.multiply(buf, buf, out=buf)
        self._fold_in(a.size)

    def total(self) -> float:
        return agg._lanes_total(self.lanes)


@dataclass(frozen=True)
class UpdateScan:
    """What one pass over an update's coordinates gives: its tensor root, and the screen's
    norm and Gram scale of its dequantized vector (:func:`scan_update`)."""

    tensor_root: bytes
    norm: float
    gram_exp: int


def gram_exponent(peak: float) -> int:
    """:func:`fedledger.protocol.aggregation.exact_gram`'s scale of a row whose largest
    magnitude is ``peak``: its coordinates are ``rint(x * 2**-exp)``, at most 2**19."""
    return math.frexp(peak)[1] - agg._GRAM_BITS if peak > 0 else 0


def scan_update(reader: ColumnReader, fmt: FixedPointFormat) -> UpdateScan:
    """One update read from coordinate 0 to the end: :func:`fedledger.protocol.tensor_root.tensor_root`
    of its int32 vector (the leaves' hashes, 32 bytes per 1,024 coordinates, are all it keeps),
    and :func:`fedledger.protocol.aggregation.norm` and the Gram scale of its dequantized
    float32 vector, as the screen computes them on the whole vector."""
    size = reader.size
    if size == 0:
        raise FormatError("a tensor root needs at least one coordinate: the vector is empty")
    columns = FoldLanes.BLOCK  # a multiple of the tensor root's leaf
    buf = np.empty(columns, dtype=np.int32)
    nodes = []
    lanes = FoldLanes()
    peak = 0.0
    for s in range(0, size, columns):
        e = min(s + columns, size)
        q = buf[: e - s]
        reader.read_into(s, e, q)
        rows = troot.leaves(q)
        # leaves() numbers a block's leaves from 0 in a vector of the block's size: set the
        # dimension and leaf index words to the whole vector's (the layout of tensor_root.py)
        words = rows.view(">u4")
        index = np.arange(
            s // troot.LEAF_COORDINATES,
            s // troot.LEAF_COORDINATES + rows.shape[0],
            dtype=np.uint64,
        )
        words[:, 1] = size >> 32
        words[:, 2] = size & 0xFFFFFFFF
        words[:, 3] = index >> np.uint64(32)
        words[:, 4] = index & np.uint64(0xFFFFFFFF)
        nodes.append(troot.keccak_rows(rows))
        x = fixedpoint.dequantize(q, fmt)
        lanes.products(x, x)
        peak = max(peak, float(x.max()), -float(x.min()))
    level = np.concatenate(nodes)
    while level.shape[0] > 1:
        level = troot._next_level(level)
    return UpdateScan(bytes(level[0]), math.sqrt(lanes.total()), gram_exponent(peak))


def screen_gram_shard(
    readers: Sequence[ColumnReader],
    a: int,
    b: int,
    exps: Sequence[int],
    fmt: FixedPointFormat,
) -> list[list[int]]:
    """Coordinates ``[a, b)``'s part of :func:`fedledger.protocol.aggregation.exact_gram` of the
    dequantized vectors, given each row's scale (:attr:`UpdateScan.gram_exp`): exact integers,
    so the shards' parts add up to the whole's Gram matrix (:class:`~fedledger.protocol.aggregation.Gram`
    with ``exps``).  Blocks of ``_GRAM_BLOCK`` columns keep every partial sum below 2**53."""
    n = len(readers)
    total = [[0] * n for _ in range(n)]
    acc = np.zeros((n, n), dtype=np.int64)
    scales = [np.float64(math.ldexp(1.0, -e)) for e in exps]
    q = np.empty((n, agg._GRAM_BLOCK))
    raw = np.empty(agg._GRAM_BLOCK, dtype=np.int32)
    pending = 0
    for s in range(a, b, agg._GRAM_BLOCK):
        e = min(s + agg._GRAM_BLOCK, b)
        m = e - s
        for i, r in enumerate(readers):
            r.read_into(s, e, raw[:m])
            np.multiply(fixedpoint.dequantize(raw[:m], fmt), scales[i], out=q[i, :m])
        block = q[:, :m]
        np.rint(block, out=block)
        acc += (block @ block.T).astype(np.int64)
        pending += 1
        if pending == agg._GRAM_FLUSH:
            agg._flush(acc, total)
            pending = 0
    agg._flush(acc, total)
    return total


def center_shard(
    readers: Sequence[ColumnReader],
    a: int,
    b: int,
    fmt: FixedPointFormat,
    *,
    columns: int | None = None,
) -> agg.Vector:
    """Coordinates ``[a, b)`` of :func:`fedledger.protocol.aggregation.median` of the
    dequantized vectors (coordinate-wise, so any split gives the whole's)."""
    columns = columns or block_columns(len(readers))
    out = np.empty(b - a, dtype=np.float32)
    for s, e, rows in iter_blocks(readers, a, b, columns):
        out[s - a : e - a] = agg.median([fixedpoint.dequantize(r, fmt) for r in rows])
    return out


def center_folds(
    reader: ColumnReader, center: agg.Vector, fmt: FixedPointFormat
) -> tuple[float, float]:
    """``(aggregation.dot(x, center), aggregation.sq_distance(x, center))`` for ``x`` the
    update's dequantized vector, bit for bit, reading it from coordinate 0."""
    dots, dists = FoldLanes(), FoldLanes()
    buf = np.empty(FoldLanes.BLOCK, dtype=np.int32)
    for s in range(0, reader.size, FoldLanes.BLOCK):
        e = min(s + FoldLanes.BLOCK, reader.size)
        q = buf[: e - s]
        reader.read_into(s, e, q)
        x = fixedpoint.dequantize(q, fmt)
        dots.products(x, center[s:e])
        dists.sq_differences(x, center[s:e])
    return dots.total(), dists.total()


# --------------------------------------------------------------------------- plan and aggregate


def clip_multipliers(
    rule: ExactRule, sq_norms: Sequence[int] | None
) -> tuple[int | None, ...] | None:
    """The clip multiplier of every update from its exact squared norm (None: no clipping)."""
    if rule.clip_bound is None:
        return None
    if sq_norms is None:
        raise ValueError("a clipping rule needs the updates' squared norms")
    return tuple(exact_rules.clip_multiplier(s, rule.clip_bound) for s in sq_norms)


def plan_from_statistics(
    rule: ExactRule, sq_norms: Sequence[int] | None, clipped_gram: ExactGram | None
) -> Plan:
    """The round's :class:`~fedledger.protocol.exact_rules.Plan` from exact sums over all the
    coordinates: the same one :func:`~fedledger.protocol.exact_rules.plan_round` takes from
    whole vectors.  ``clipped_gram`` is the Gram matrix of the updates *after* clipping."""
    multipliers = clip_multipliers(rule, sq_norms)
    selected = None
    if rule.rule in ("krum", "multi_krum"):
        if clipped_gram is None:
            raise ValueError(f"{rule.rule} needs the Gram matrix of the (clipped) updates")
        selected = exact_rules.krum_selection(rule, clipped_gram)
    return Plan(multipliers, selected)


def _kept(
    readers: Sequence[ColumnReader], num_samples: Sequence[int], plan: Plan | None
) -> tuple[Sequence[ColumnReader], Sequence[int], Plan | None]:
    """Krum and multi-Krum read only the updates the plan selected (the rest do not count)."""
    if plan is None or plan.selected is None:
        return readers, num_samples, plan
    keep = list(plan.selected)
    mult = None if plan.multipliers is None else tuple(plan.multipliers[i] for i in keep)
    return (
        [readers[i] for i in keep],
        [num_samples[i] for i in keep],
        Plan(mult, tuple(range(len(keep)))),
    )


def aggregate_shard(
    readers: Sequence[ColumnReader],
    a: int,
    b: int,
    rule: ExactRule,
    num_samples: Sequence[int],
    plan: Plan | None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Int32Vector:
    """Coordinates ``[a, b)`` of the round's exact aggregate, block by block."""
    readers, num_samples, plan = _kept(readers, num_samples, plan)
    columns = block_columns(len(readers), block_bytes)
    out = np.empty(b - a, dtype=np.int32)
    for s, e, rows in iter_blocks(readers, a, b, columns):
        out[s - a : e - a] = exact_rules.aggregate_columns(rule, rows, num_samples, plan, threads=1)
    return out


# --------------------------------------------------------------------------- runners


@dataclass(frozen=True)
class RoundContext:
    """What every update file of one round is checked against (:func:`inspect_update`)."""

    task_id: int
    round: int
    base_hash: str
    layout: agg.TensorLayout
    fmt: FixedPointFormat

    @property
    def max_bytes(self) -> int:
        return rounds.max_update_bytes(self.layout)


def inspect_ref(store: RangeStore, ref: rounds.UpdateRef, ctx: RoundContext) -> Inspection:
    """:func:`inspect_update` of one update as the chain recorded it, with the round's
    :func:`~fedledger.protocol.rounds.check_file` and the recorded ``tensorRoot``."""
    check = functools.partial(
        rounds.check_file,
        task_id=ctx.task_id,
        round_=ctx.round,
        base_hash=ctx.base_hash,
        contributor=ref.contributor,
        fixed_point=ctx.fmt,
    )
    return inspect_update(
        store,
        ref.cid,
        content_hash=ref.content_hash,
        layout=ctx.layout,
        fmt=ctx.fmt,
        max_bytes=ctx.max_bytes,
        check=check,
        expected_root=ref.tensor_root,
    )


class ShardRunner(Protocol):
    """Runs a round's passes: per update (:meth:`inspect`, :meth:`center_folds`) or per
    coordinate shard (the rest); in one process (:class:`LocalRunner`) or on a cluster
    (``fedledger_backend.sharded.RayRunner``).  Every answer is in the order asked."""

    def inspect(self, refs: Sequence[rounds.UpdateRef], ctx: RoundContext) -> list[Inspection]: ...

    def statistics(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        *,
        gram: bool,
        multipliers: Sequence[int | None] | None,
    ) -> list[ShardStatistics]: ...

    def aggregate(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        rule: ExactRule,
        num_samples: Sequence[int],
        plan: Plan | None,
    ) -> list[Int32Vector]: ...

    def screen_gram(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        exps: Sequence[int],
        fmt: FixedPointFormat,
    ) -> list[list[list[int]]]: ...

    def center(
        self, files: Sequence[UpdateFile], shards: Sequence[tuple[int, int]], fmt: FixedPointFormat
    ) -> list[agg.Vector]: ...

    def center_folds(
        self, files: Sequence[UpdateFile], center: agg.Vector, fmt: FixedPointFormat
    ) -> list[tuple[float, float]]: ...


@dataclass
class LocalRunner:
    """Every pass in this process, one shard after the other (the single-process streaming
    path): memory is one reader's blocks, whatever the number of shards."""

    store: RangeStore
    block_bytes: int = DEFAULT_BLOCK_BYTES

    def _readers(self, files: Sequence[UpdateFile]) -> list[ColumnReader]:
        return [ColumnReader(self.store.open_range(f.cid), f) for f in files]

    def inspect(self, refs: Sequence[rounds.UpdateRef], ctx: RoundContext) -> list[Inspection]:
        return [inspect_ref(self.store, r, ctx) for r in refs]

    def statistics(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        *,
        gram: bool,
        multipliers: Sequence[int | None] | None,
    ) -> list[ShardStatistics]:
        readers, cols = self._readers(files), block_columns(len(files), self.block_bytes)
        return [
            shard_statistics(readers, a, b, gram=gram, multipliers=multipliers, columns=cols)
            for a, b in shards
        ]

    def aggregate(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        rule: ExactRule,
        num_samples: Sequence[int],
        plan: Plan | None,
    ) -> list[Int32Vector]:
        readers = self._readers(files)
        return [
            aggregate_shard(readers, a, b, rule, num_samples, plan, block_bytes=self.block_bytes)
            for a, b in shards
        ]

    def screen_gram(
        self,
        files: Sequence[UpdateFile],
        shards: Sequence[tuple[int, int]],
        exps: Sequence[int],
        fmt: FixedPointFormat,
    ) -> list[list[list[int]]]:
        readers = self._readers(files)
        return [screen_gram_shard(readers, a, b, exps, fmt) for a, b in shards]

    def center(
        self, files: Sequence[UpdateFile], shards: Sequence[tuple[int, int]], fmt: FixedPointFormat
    ) -> list[agg.Vector]:
        readers, cols = self._readers(files), block_columns(len(files), self.block_bytes)
        return [center_shard(readers, a, b, fmt, columns=cols) for a, b in shards]

    def center_folds(
        self, files: Sequence[UpdateFile], center: agg.Vector, fmt: FixedPointFormat
    ) -> list[tuple[float, float]]:
        return [center_folds(r, center, fmt) for r in self._readers(files)]


@dataclass(frozen=True)
class StreamedAggregate:
    """A round's exact aggregate and what it took: the plan and the statistics behind it."""

    aggregate: Int32Vector
    plan: Plan
    statistics: ShardStatistics | None
    shards: tuple[tuple[int, int], ...]

    @property
    def sha256(self) -> str:
        """``0x`` sha256 of the aggregate's little-endian int32 bytes (a fingerprint to compare
        runs by; the chain's ``aggregateHash`` is of the new model file)."""
        return aggregate_digest(self.aggregate)


def aggregate_digest(aggregate: Int32Vector) -> str:
    """``0x`` sha256 of an int32 vector's little-endian bytes."""
    return "0x" + hashlib.sha256(np.asarray(aggregate, dtype="<i4").tobytes()).hexdigest()


def check_files(files: Sequence[UpdateFile]) -> int:
    """The updates' common dimension; FormatError if they differ or there are none."""
    if not files:
        raise ValueError("no updates to aggregate")
    size = files[0].coordinates
    for f in files:
        if f.coordinates != size:
            raise FormatError(
                f"update {f.cid} has {f.coordinates} coordinates, {files[0].cid} has {size}"
            )
    return size


def _tiling(shards: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    pos = 0
    for a, b in shards:
        if a != pos or b < a:
            raise ValueError(f"shards must tile [0, {size}) in order; got [{a}, {b}) at {pos}")
        pos = b
    if pos != size:
        raise ValueError(f"shards end at {pos}, the updates have {size} coordinates")
    return [(int(a), int(b)) for a, b in shards]


def aggregate_round(
    runner: ShardRunner,
    files: Sequence[UpdateFile],
    rule: ExactRule,
    num_samples: Sequence[int],
    shards: Sequence[tuple[int, int]],
) -> StreamedAggregate:
    """The exact aggregate of a round's accepted updates (updateId order), in passes over shards.

    1. clipping: every update's squared norm (sums over shards) gives the clip multipliers;
    2. Krum: the Gram matrix of the clipped updates gives the selection;
    3. every shard's part of the aggregate, concatenated in order.
    Equal, bit for bit, to ``exact_rules.aggregate_exact(rule, whole vectors, num_samples)``.
    """
    shards = _tiling(shards, check_files(files))
    stats = None
    multipliers = None
    if rule.clip_bound is not None:
        stats = combine(runner.statistics(files, shards, gram=False, multipliers=None))
        multipliers = clip_multipliers(rule, stats.sq_norms)
    clipped_gram = None
    if rule.rule in ("krum", "multi_krum"):
        gstats = combine(runner.statistics(files, shards, gram=True, multipliers=multipliers))
        clipped_gram = gstats.gram
        stats = gstats if stats is None else ShardStatistics(stats.sq_norms, gstats.gram)
    plan = plan_from_statistics(rule, stats.sq_norms if stats is not None else None, clipped_gram)
    parts = runner.aggregate(files, shards, rule, num_samples, plan if rule.needs_plan else None)
    out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    return StreamedAggregate(out.astype(np.int32, copy=False), plan, stats, tuple(shards))


def stream_aggregate(
    store: RangeStore,
    files: Sequence[UpdateFile],
    rule: ExactRule,
    num_samples: Sequence[int] | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> StreamedAggregate:
    """:func:`aggregate_round` in this process, over one shard: the single-process reference."""
    size = check_files(files)
    ns = [1] * len(files) if num_samples is None else list(num_samples)
    return aggregate_round(LocalRunner(store, block_bytes), files, rule, ns, [(0, size)])


# --------------------------------------------------------------------------- judging a round


@dataclass(frozen=True)
class _Read:
    """One update as the screen meets it: ``cand`` (with its early verdict, if any), the
    screen's own verdict on its file (``SHAPE_MISMATCH``) once it is not a duplicate, or where
    its coordinates lie and their screen statistics."""

    cand: screening.Candidate
    problem: tuple[Verdict, str] | None = None
    file: UpdateFile | None = None
    norm: float = 0.0
    gram_exp: int = 0


_NO_VECTOR = np.empty(0, dtype=np.float32)
"""The vector of a :class:`fedledger.protocol.screening._Live` here: the screen's checks that
this module calls read an update's norm, never its coordinates, which stay in the store."""


def screen_streamed(
    reads: Sequence[_Read],
    runner: ShardRunner,
    shards: Sequence[tuple[int, int]],
    rule: agg.RuleSpec,
    fmt: FixedPointFormat,
    spec: screening.ScreeningSpec,
    standing: Mapping[str, float] | None = None,
    norm_history: Sequence[float] | None = None,
) -> list[screening.Decision]:
    """:func:`fedledger.protocol.screening.screen` of a fixed-point round whose vectors stay in
    the store: the same checks in the same order, the screen's own functions where they read
    statistics only, and every statistic computed from the coordinates exactly as the screen
    computes it from the whole vectors (the section above), so the decisions are the screen's,
    scores and reasons included."""
    prior = {k.lower(): v for k, v in (standing or {}).items()}
    ordered = sorted(reads, key=lambda r: r.cand.update_id)
    ids = [r.cand.update_id for r in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("two candidates share an updateId")
    decided: dict[int, screening.Decision] = {}
    seen_hashes: dict[str, int] = {}
    live: list[screening._Live] = []
    by_id = {r.cand.update_id: r for r in ordered}

    def reject(
        c: screening.Candidate, verdict: Verdict, reason: str, score: float | None = None
    ) -> None:
        decided[c.update_id] = screening.Decision(c.update_id, verdict, reason, score)

    for r in ordered:
        c = r.cand
        if c.early is not None:
            if c.early not in screening.EARLY_VERDICTS:
                raise ValueError(f"{c.early.name} is decided by the screen, not the caller")
            reject(c, c.early, c.early_reason or c.early.name.lower().replace("_", " "))
            continue
        first = seen_hashes.setdefault(c.content_hash.lower(), c.update_id)
        if first != c.update_id:
            reject(c, Verdict.DUPLICATE, f"same content hash as update {first}")
            continue
        if r.problem is not None:
            reject(c, *r.problem)
            continue
        live.append(screening._Live(len(live), c, _NO_VECTOR, r.norm))

    live = screening._free_riders(live, spec, reject)
    for pos, x in enumerate(live):
        x.index = pos
    gram = None
    if live:
        files = [_file_of(by_id[x.cand.update_id]) for x in live]
        exps = [by_id[x.cand.update_id].gram_exp for x in live]
        ints = np.zeros((len(live), len(live)), dtype=object)
        for part in runner.screen_gram(files, shards, exps, fmt):
            ints += np.array(part, dtype=object)
        gram = agg.Gram([[int(v) for v in row] for row in ints.tolist()], exps)
    live = screening._sybils(live, gram, spec, reject)
    live = screening._near_duplicates(live, gram, spec, reject)
    live = screening._norm_bound(live, spec, reject, norm_history or ())
    size = shards[-1][1] if shards else 0
    files = [_file_of(by_id[x.cand.update_id]) for x in live]
    for item, verdict, reason, score, now in _outliers(
        live, files, gram, runner, shards, rule, fmt, spec, size, prior
    ):
        uid = item.cand.update_id
        decided[uid] = screening.Decision(uid, verdict, reason, score, now, item.norm)
    return [decided[i] for i in ids]


def _file_of(r: _Read) -> UpdateFile:
    if r.file is None:
        raise ValueError(f"update {r.cand.update_id} reached the screen's statistics unread")
    return r.file


def _outliers(
    live: list[screening._Live],
    files: Sequence[UpdateFile],
    gram: agg.Gram | None,
    runner: ShardRunner,
    shards: Sequence[tuple[int, int]],
    rule: agg.RuleSpec,
    fmt: FixedPointFormat,
    spec: screening.ScreeningSpec,
    size: int,
    prior: Mapping[str, float],
) -> list[tuple[screening._Live, Verdict, str, float | None, float | None]]:
    """``screening._outliers`` with the centre's statistics taken from the store: the median
    by coordinate shards, each update's dot with it and distance to it by update."""
    out: list[tuple[screening._Live, Verdict, str, float | None, float | None]] = []
    if len(live) < spec.min_outlier_pool or gram is None:
        note = (
            f"accepted (within the norm bounds; only {len(live)} updates: too few to compare "
            "as outliers)"
        )
        for x in live:
            was = prior.get(x.cand.contributor.lower())
            if spec.min_standing is not None and was is not None and was < spec.min_standing:
                why = screening._bad_standing(was, spec.min_standing)
                out.append((x, Verdict.OUTLIER, why, None, was))
            else:
                out.append((x, Verdict.ACCEPTED, note, None, was))
        return out
    sub = screening._sub_gram(gram, [x.index for x in live])
    center = np.concatenate(runner.center(files, shards, fmt))
    center_norm = agg.norm(center)
    folds = runner.center_folds(files, center, fmt)
    del center
    to_median = [
        d / (x.norm * center_norm) if center_norm > 0 else 0.0
        for (d, _), x in zip(folds, live, strict=True)
    ]
    pair = screening.cosine_matrix(sub)
    priors = [prior.get(x.cand.contributor.lower()) for x in live]
    good = [spec.min_standing is None or p is None or p >= spec.min_standing for p in priors]
    cos = screening.consensus_cosines(pair, to_median, good)
    rms = screening.rms_cosines(pair)
    stats: list[tuple[str, list[float], float, float, float]]
    if rule.rule in ("krum", "multi_krum"):
        scores = agg.krum_scores_from_gram(sub, rule.f or 0)
        stats = [("sqrt krum score", [math.sqrt(s) for s in scores], 1.0, 0.25, 0.0)]
    else:
        stats = [("distance to median", [math.sqrt(sq) for _, sq in folds], 1.0, 0.25, 0.0)]
    k = spec.outlier_k
    noise = screening.noise_level(spec, size)
    floor = spec.min_cosine
    accepted_note = "passed all checks"
    strength = screening._median([c for c, g in zip(cos, good, strict=True) if g] or cos)
    consensus = strength >= spec.min_consensus
    if consensus:
        stats.append(("cosine to consensus", cos, -1.0, 0.0, 0.1))
    else:
        floor = None
        accepted_note = (
            f"passed all checks (no consensus this round: median cosine to it {strength:.3f} "
            f"< {spec.min_consensus:g}; cosine checks not applied, standings unchanged)"
        )
    robust = [
        (name, values, sign, *screening.robust_threshold(values, rel_floor=rel, abs_floor=absf))
        for name, values, sign, rel, absf in stats
    ]
    for i, x in enumerate(live):
        worst_z = -math.inf
        reasons = []
        for name, values, sign, med, sigma in robust:
            z = sign * (values[i] - med) / sigma
            worst_z = max(worst_z, z)
            if z > k:
                reasons.append(f"{name} {values[i]:.4g} is {z:.1f} robust sigmas from {med:.4g}")
        if floor is not None and cos[i] < floor:
            reasons.append(f"cosine to consensus {cos[i]:.4f} is below {floor:g}")
        before = priors[i]
        now = screening.updated_standing(spec, before, cos[i], strength) if consensus else before
        if spec.min_standing is not None and now is not None and now < spec.min_standing:
            reasons.append(screening._bad_standing(now, spec.min_standing))
        if rms[i] < noise:
            reasons.append(
                f"uncorrelated with every other update, like noise (rms cosine {rms[i]:.3g} "
                f"< {spec.noise_sigmas:g}/sqrt({size}))"
            )
        if reasons:
            out.append((x, Verdict.OUTLIER, "; ".join(reasons), worst_z, now))
        else:
            out.append((x, Verdict.ACCEPTED, accepted_note, worst_z, now))
    return out


def judge_round_streamed(
    store: ContentStore,
    runner: ShardRunner,
    *,
    task_id: int,
    round_: int,
    spec: TaskSpec,
    base_model: bytes,
    updates: Sequence[rounds.UpdateRef],
    max_samples: int,
    shards: int = 1,
    deadline: int | None = None,
    unavailable: Mapping[int, str] | None = None,
    fetch: rounds.Fetcher | None = None,
    previous: verdicts.VerdictFile | None = None,
    base_hash: str | None = None,
    max_fetch_s: float | None = None,
    committee_key: PrivateKey | None = None,
    required_recipients: Sequence[Any] = (),  # passed on to judge_round
) -> rounds.Judgement:
    """:func:`fedledger.protocol.rounds.judge_round` with memory independent of the number of
    updates: the same arguments and the same :class:`~fedledger.protocol.rounds.Judgement`, to
    the byte, for a fixed-point task whose updates are ``int32`` files.

    Every update is read from ``store`` by byte ranges (``runner``: in this process or on Ray)
    and judged by :func:`screen_streamed`; its coordinates are split into ``shards`` ranges
    for the passes over all the updates.  A float-encoded update (which a fixed-point task
    quantizes) is judged alone in memory and its vector stored for the passes (``O(d)`` at a
    time).  What it cannot stream is judged in memory by ``judge_round`` itself: a float task,
    a private task (envelopes are opened whole), a task requiring differential privacy, a
    task with a root data set, a round after the first while the screen's history checks are
    on (``stale_cosine`` / ``min_self_cosine``; the default), or a caller's own ``fetch``.  ``max_fetch_s`` and the spec's
    ``fetch_timeout_s`` do not apply: the store's own timeouts bound each block read.
    """
    fmt = spec.fixed_point_format()
    in_memory = functools.partial(
        rounds.judge_round,
        store,
        task_id=task_id,
        round_=round_,
        spec=spec,
        base_model=base_model,
        updates=updates,
        max_samples=max_samples,
        deadline=deadline,
        unavailable=unavailable,
        fetch=fetch,
        previous=previous,
        base_hash=base_hash,
        max_fetch_s=max_fetch_s,
        committee_key=committee_key,
        required_recipients=required_recipients,
    )
    privacy = spec.privacy_policy()
    if fmt is None or fetch is not None or privacy.committee or privacy.dp is not None:
        return in_memory()
    # The screen's history checks (STALE, INCONSISTENT: the previous round's updates) and the
    # root data set's signals (HARMFUL, the reference direction) are not streamed yet: such a
    # round is judged in memory, so a sharded validator never reaches another verdict.
    screen_spec = screening.ScreeningSpec.parse(spec.screening)
    if spec.root_data is not None or (previous is not None and screen_spec.uses_history()):
        return in_memory()
    if round_ > 0 and previous is None:
        raise ValueError(f"round {round_} needs round {round_ - 1}'s verdict file (its standing)")
    if previous is not None and (previous.task_id, previous.round) != (task_id, round_ - 1):
        raise ValueError(
            f"the previous verdict file is for task {previous.task_id} round {previous.round}, "
            f"not task {task_id} round {round_ - 1}"
        )
    prior = previous.standing if previous is not None else None
    prior_norms = previous.norm_history if previous is not None else None
    rule = agg.RuleSpec.parse(spec.aggregation).with_task_cap(max_samples)
    base_hash = (base_hash or codec.sha256_hex(base_model)).lower()
    global_model = codec.decode(base_model, kind="model", copy=False).tensors  # only read
    layout = agg.TensorLayout.of(global_model)
    refs = sorted(updates, key=lambda r: r.update_id)
    unavailable = dict(unavailable or {})

    reads: dict[int, _Read] = {}
    to_read = []
    for r in refs:
        if deadline is not None and r.submitted_at > deadline:
            why = f"submitted at {r.submitted_at}, after the deadline {deadline}"
            reads[r.update_id] = _stopped(r, Verdict.LATE, why)
        elif r.update_id in unavailable:
            reads[r.update_id] = _stopped(r, Verdict.UNAVAILABLE, unavailable[r.update_id])
        else:
            to_read.append(r)
    ctx = RoundContext(task_id, round_, base_hash, layout, fmt)
    for r, ins in zip(to_read, runner.inspect(to_read, ctx), strict=True):
        cand = screening.Candidate(r.update_id, r.contributor, r.content_hash, {})
        if not ins.streamable:
            reads[r.update_id] = _float_file(store, r, ctx)
        elif ins.early is not None:
            reads[r.update_id] = _stopped(r, *ins.early)
        elif ins.shape_problem is not None:
            reads[r.update_id] = _Read(cand, (Verdict.SHAPE_MISMATCH, ins.shape_problem))
        else:
            reads[r.update_id] = _Read(cand, None, ins.file, ins.norm or 0.0, ins.gram_exp or 0)

    cuts = split(layout.size, shards)
    decisions = screen_streamed(
        list(reads.values()), runner, cuts, rule, fmt, screen_spec, prior, prior_norms
    )
    ref_by_id = {r.update_id: r for r in refs}
    accepted = screening.accepted_ids(decisions)
    if accepted:
        exact = ExactRule.from_rule_spec(rule, fmt)
        weights = [ref_by_id[i].num_samples for i in accepted]
        files = [_file_of(reads[i]) for i in accepted]
        q = aggregate_round(runner, files, exact, weights, cuts).aggregate
    else:
        q = np.zeros(layout.size, dtype=np.int32)
    # From here on, judge_round's own tail: O(d), whatever the number of updates.
    return rounds.judgement_of(
        task_id=task_id,
        round_=round_,
        rule=rule,
        screen_spec=screen_spec,
        base_hash=base_hash,
        new_global=agg.apply_delta(global_model, fixed_deltas.dequantize_tensors(q, layout, fmt)),
        decisions=decisions,
        refs=refs,
        unavailable=unavailable,
        prior=prior,
        prior_norms=prior_norms,
        aggregate_tensor_root="0x" + troot.tensor_root(q).hex(),
    )


def _float_file(store: ContentStore, r: rounds.UpdateRef, ctx: RoundContext) -> _Read:
    """A float-encoded update of a fixed-point round, judged as ``judge_round`` judges it (its
    own candidate function), alone in memory: ``O(d)``.  Its quantized vector, when it has one,
    is stored as a plain int32 file (one span), which the passes then read like any update."""
    fetched: dict[int, tuple[bytes, str] | str] = {}
    try:
        fetched[r.update_id] = store.get_hashed(
            r.cid, max_bytes=ctx.max_bytes, expect=r.content_hash
        )
    except Exception as exc:  # noqa: BLE001 - read once already: a store failing now is not a verdict
        raise StoreError(f"update {r.cid} could not be read again: {public_reason(exc)}") from exc
    judged = rounds._Round(
        ctx.task_id, ctx.round, ctx.base_hash, ctx.layout, ctx.max_bytes, ctx.fmt
    )
    cand, q = rounds._candidate(r, {}, fetched, judged)
    del fetched
    if cand.early is not None:
        return _stopped(r, cand.early, cand.early_reason)
    if q is None:  # the screen's own checks of a delta it cannot quantize
        delta = cand.delta or {}
        problem = ctx.layout.matches(delta)
        if problem is not None:
            return _Read(cand, (Verdict.SHAPE_MISMATCH, problem))
        vec, _ = agg.flatten(delta, ctx.layout)
        bad = int(vec.size - np.count_nonzero(np.isfinite(vec)))
        return _Read(cand, (Verdict.NON_FINITE, f"{bad} values are NaN or Inf"))
    cid = store.put(q.astype("<i4").tobytes(), pin=False)
    x = fixedpoint.dequantize(q, ctx.fmt)
    peak = max(float(x.max()), -float(x.min()))
    file = UpdateFile(cid, 4 * q.size, ((0, q.size),))
    return _Read(cand, None, file, agg.norm(x), gram_exponent(peak))


def _stopped(r: rounds.UpdateRef, verdict: Verdict, reason: str) -> _Read:
    return _Read(
        screening.Candidate(r.update_id, r.contributor, r.content_hash, None, verdict, reason)
    )


__all__ = [
    "ColumnReader",
    "FoldLanes",
    "Inspection",
    "LocalRunner",
    "RangeStore",
    "RangeSource",
    "RoundContext",
    "ShardRunner",
    "ShardStatistics",
    "StreamedAggregate",
    "UpdateFile",
    "UpdateScan",
    "aggregate_digest",
    "aggregate_round",
    "aggregate_shard",
    "block_columns",
    "center_folds",
    "center_shard",
    "check_files",
    "combine",
    "gram_exponent",
    "inspect_ref",
    "inspect_update",
    "judge_round_streamed",
    "open_update",
    "plan_from_statistics",
    "read_header",
    "scan_update",
    "screen_gram_shard",
    "screen_streamed",
    "shard_statistics",
    "split",
    "stream_aggregate",
]
