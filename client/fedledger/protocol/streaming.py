"""Judging and aggregating a fixed-point round in bounded memory, by coordinate ranges.

The in-memory judge (:func:`fedledger.protocol.rounds.judge_round`) holds every update of a
round at once: ``n x d`` coordinates.  This module reads each ``int32`` update straight from its
safetensors bytes, one coordinate range at a time, through a store that reads byte ranges
(:class:`fedledger.content.store.RangeReadable`), so memory stays ``O(n * block)`` plus the
``O(n**2)`` statistics, whatever ``d``; and any coordinate range can be computed alone, which is
what a sharded validator runs on each worker (``fedledger_backend.sharded``, docs/scaling.md).

Reading an update (:func:`inspect_update`), in the order the in-memory judge decides:

1. its whole file is streamed once through sha256: ``UNAVAILABLE`` if it cannot be read,
   ``HASH_MISMATCH`` unless it is the bytes the chain committed to (nothing is parsed before);
2. its header alone is parsed, by the format's own parser (:func:`fedledger.protocol.codec.parse_header`,
   bounded JSON through :mod:`fedledger.safejson`): a header whose offsets, shapes or sizes do not
   tile the file exactly is ``MALFORMED``, as is bad metadata; then the caller's file check
   (task, round, base model, contributor: ``MALFORMED`` or ``COPIED``);
3. tensors of other names or shapes than the model's are left to the screen (``SHAPE_MISMATCH``);
4. the tensor root is recomputed as the coordinates stream by (``TENSOR_ROOT_MISMATCH``).

What is left of the file is :class:`UpdateFile`: where each of the task's tensors lies in it, so
a :class:`ColumnReader` turns coordinates ``[a, b)`` (the task's flat order) into byte ranges.

Exactness
---------
Every number computed here is an exact integer, so a shard's part plus the others' is the
whole's, in any order and on any machine:

* squared norms and Gram matrices: :func:`fedledger.protocol.exact_rules.sq_norms` and
  :func:`~fedledger.protocol.exact_rules.gram` per block (16-bit limbs, float64 partial sums
  below 2**48), summed as Python ints;
* dot products with the coordinate-wise median of a set of updates (the screen's centre):
  the median is the exact rule's, block by block, and the dots are exact like the Gram;
* the aggregate: :func:`~fedledger.protocol.exact_rules.aggregate_columns` per block, given
  the round's :class:`~fedledger.protocol.exact_rules.Plan` (clip multipliers, Krum's choice)
  taken once from the summed statistics (:func:`plan_from_statistics`).  docs/aggregation.md
  section 9 proves any column split gives the whole's result bit for bit.

Float views (a norm, a cosine) are derived once from the exact sums (:class:`RoundStatistics`),
so they too are the same whatever the sharding; no float is ever summed across blocks.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedledger.errors import FormatError, StoreError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec, exact_rules
from fedledger.protocol import tensor_root as troot
from fedledger.protocol.exact_rules import ExactGram, ExactRule, Plan
from fedledger.protocol.fixedpoint import FixedPointFormat, Int32Vector
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


RangeOpener = Callable[[str], RangeSource]
"""A CID's :class:`RangeSource` (e.g. a store's ``open_range``)."""


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


def inspect_update(
    open_source: Callable[[], RangeSource],
    cid: str,
    *,
    content_hash: str,
    layout: agg.TensorLayout,
    max_bytes: int,
    check: FileCheck | None = None,
    expected_root: str | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Inspection:
    """Read one update's file and decide what can be decided from it alone (module docstring).

    ``expected_root`` (the ``tensorRoot`` the chain recorded, hex) turns on step 4.  Memory is
    a chunk of the file at a time.  A store that fails *after* the file was read once is not a
    verdict on the update: that :class:`~fedledger.errors.StoreError` propagates.
    """
    try:
        source = open_source()
        if source.size > max_bytes:
            raise StoreError(f"{cid} is larger than {max_bytes} bytes")
        whole = hashlib.sha256()
        for pos in range(0, source.size, HASH_CHUNK):
            whole.update(source.read(pos, min(HASH_CHUNK, source.size - pos)))
    except Exception as exc:  # noqa: BLE001 - any failure to fetch one is its verdict
        return Inspection(early=(Verdict.UNAVAILABLE, f"not retrievable: {public_reason(exc)}"))
    digest = "0x" + whole.hexdigest()
    if digest != content_hash.lower():
        reason = f"bytes hash to {digest}, the chain records {content_hash}"
        return Inspection(sha256=digest, early=(Verdict.HASH_MISMATCH, reason))
    try:
        header = read_header(source, max_bytes=max_bytes)
        encoding = header.metadata.get(codec.K_ENCODING)
        if encoding != "int32":
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
    found = update_file(cid, header, layout)
    if isinstance(found, str):
        return Inspection(sha256=digest, metadata=metadata, shape_problem=found)
    root = None
    if expected_root is not None:
        root = "0x" + streamed_tensor_root(ColumnReader(source, found), block_bytes).hex()
        if root != expected_root.lower():
            reason = (
                f"the file's fixed-point coordinates have tensor root {root}, the chain records "
                f"{expected_root}"
            )
            return Inspection(
                digest, (Verdict.TENSOR_ROOT_MISMATCH, reason), metadata, None, None, root
            )
    return Inspection(sha256=digest, metadata=metadata, file=found, tensor_root=root)


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


def streamed_tensor_root(reader: ColumnReader, block_bytes: int = DEFAULT_BLOCK_BYTES) -> bytes:
    """:func:`fedledger.protocol.tensor_root.tensor_root` of an update, leaf by leaf as its
    coordinates stream by (the leaves' hashes, 32 bytes per 1,024 coordinates, are all it keeps)."""
    size = reader.size
    if size == 0:
        raise FormatError("a tensor root needs at least one coordinate: the vector is empty")
    columns = block_columns(1, block_bytes)
    buf = np.empty(columns, dtype=np.int32)
    nodes = []
    for s in range(0, size, columns):
        e = min(s + columns, size)
        reader.read_into(s, e, buf[: e - s])
        rows = troot.leaves(buf[: e - s])
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
    level = np.concatenate(nodes)
    while level.shape[0] > 1:
        level = troot._next_level(level)
    return bytes(level[0])


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class ShardStatistics:
    """Exact sums over one coordinate range; shards' parts add up to the whole's (``+``).

    ``sq_norms[i] = sum_c q_i[c]**2``; ``gram`` (when asked) ``G_ij = sum_c q_i[c] q_j[c]``,
    both of the updates as clipped by the multipliers given (if any); ``center_dots[i] =
    sum_c q_i[c] m[c]`` and ``center_sq = sum_c m[c]**2`` for ``m`` the exact coordinate-wise
    median of the chosen members (when asked).
    """

    sq_norms: tuple[int, ...]
    gram: ExactGram | None = None
    center_dots: tuple[int, ...] | None = None
    center_sq: int | None = None

    def __add__(self, other: ShardStatistics) -> ShardStatistics:
        return ShardStatistics(
            _add(self.sq_norms, other.sq_norms),
            None if self.gram is None or other.gram is None else self.gram + other.gram,
            None
            if self.center_dots is None or other.center_dots is None
            else _add(self.center_dots, other.center_dots),
            None
            if self.center_sq is None or other.center_sq is None
            else self.center_sq + other.center_sq,
        )


def _add(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    if len(a) != len(b):
        raise ValueError(f"statistics of {len(a)} and {len(b)} updates cannot be added")
    return tuple(x + y for x, y in zip(a, b, strict=True))


def combine(parts: Sequence[ShardStatistics]) -> ShardStatistics:
    """The whole's statistics from its shards' (exact: any order gives the same)."""
    if not parts:
        raise ValueError("no shard statistics to combine")
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def exact_dots(rows: Sequence[npt.NDArray[np.int32]], v: npt.NDArray[np.int32]) -> list[int]:
    """``sum_c rows[i][c] * v[c]`` exactly, for blocks of at most 2**16 columns.

    16-bit limbs as :func:`fedledger.protocol.exact_rules.gram`: ``q = h 2**16 + l`` with
    ``|h| <= 2**15`` and ``0 <= l < 2**16``, so each limb product is below 2**32 and every
    partial sum of a float64 matrix-vector product over 2**16 columns below 2**48: exact.
    """
    m = v.size
    if m > MAX_BLOCK_COLUMNS:
        raise ValueError(f"exact_dots takes blocks of at most {MAX_BLOCK_COLUMNS} columns, got {m}")
    if not rows:
        return []
    q = np.stack(rows)
    h = (q >> 16).astype(np.float64)
    low = (q & 0xFFFF).astype(np.float64)
    hv = (v >> 16).astype(np.float64)
    lv = (v & 0xFFFF).astype(np.float64)
    hh, hl, lh, ll = h @ hv, h @ lv, low @ hv, low @ lv
    return [
        (int(hh[i]) << 32) + ((int(hl[i]) + int(lh[i])) << 16) + int(ll[i])
        for i in range(len(rows))
    ]


def shard_statistics(
    readers: Sequence[ColumnReader],
    a: int,
    b: int,
    *,
    gram: bool = False,
    multipliers: Sequence[int | None] | None = None,
    center_of: Sequence[int] | None = None,
    columns: int | None = None,
) -> ShardStatistics:
    """Exact statistics of coordinates ``[a, b)`` (see :class:`ShardStatistics`).

    ``multipliers``: clip the updates first (the plan's); ``gram``: the Gram matrix too (``n**2``
    Python ints, ``O(n**2 * (b - a))`` work); ``center_of``: indices whose exact
    coordinate-wise median the dots are taken with (the screen's centre).
    """
    n = len(readers)
    columns = columns or block_columns(n)
    norms = [0] * n
    g = np.zeros((n, n), dtype=object) if gram else None
    dots = [0] * n if center_of is not None else None
    center_sq = 0
    median = ExactRule("median")
    for _, _, rows in iter_blocks(readers, a, b, columns):
        if multipliers is not None:
            rows = exact_rules.clipped(rows, multipliers)
        if g is not None:
            g += np.array(exact_rules.gram(rows).ints, dtype=object)
        else:
            for i, x in enumerate(exact_rules.sq_norms(rows)):
                norms[i] += x
        if dots is not None and center_of:
            chosen = [rows[i] for i in center_of]
            m = exact_rules.aggregate_columns(median, chosen, [1] * len(chosen), None, threads=1)
            for i, x in enumerate(exact_dots(rows, m)):
                dots[i] += x
            center_sq += exact_dots([m], m)[0]
    gram_out = None
    if g is not None:
        gram_out = ExactGram(tuple(tuple(int(x) for x in row) for row in g.tolist()))
        norms = [gram_out.ints[i][i] for i in range(n)]
    return ShardStatistics(
        tuple(norms),
        gram_out,
        None if dots is None else tuple(dots),
        None if dots is None else center_sq,
    )


@dataclass(frozen=True)
class RoundStatistics:
    """A round's exact statistics and the float views the screen reads, derived once.

    Real values are ``q * 2**-frac_bits``: ``norm(i) = sqrt(S_i) * 2**-frac_bits`` and the Gram
    matrix as an :class:`~fedledger.protocol.aggregation.Gram` with every row's exponent
    ``-frac_bits``, whose ``cosine`` and ``sq_distance`` the screen's functions take
    (:func:`fedledger.protocol.screening.cosine_matrix`,
    :func:`fedledger.protocol.aggregation.krum_scores_from_gram`).
    """

    exact: ShardStatistics
    fmt: FixedPointFormat

    def norm(self, i: int) -> float:
        return math.ldexp(math.sqrt(self.exact.sq_norms[i]), -self.fmt.frac_bits)

    def norms(self) -> list[float]:
        return [self.norm(i) for i in range(len(self.exact.sq_norms))]

    def gram(self) -> agg.Gram:
        if self.exact.gram is None:
            raise ValueError("these statistics hold no Gram matrix (ask for gram=True)")
        ints = [list(row) for row in self.exact.gram.ints]
        return agg.Gram(ints, [-self.fmt.frac_bits] * len(ints))

    def center_cosines(self) -> list[float]:
        """Each update's cosine to the centre (0.0 when either is zero)."""
        dots, csq = self.exact.center_dots, self.exact.center_sq
        if dots is None or csq is None:
            raise ValueError("these statistics hold no centre (ask for center_of=...)")
        return [
            0.0 if s == 0 or csq == 0 else float(d) / (math.sqrt(s) * math.sqrt(csq))
            for d, s in zip(dots, self.exact.sq_norms, strict=True)
        ]

    def center_distances(self) -> list[float]:
        """Each update's L2 distance to the centre (real units), from the exact square."""
        dots, csq = self.exact.center_dots, self.exact.center_sq
        if dots is None or csq is None:
            raise ValueError("these statistics hold no centre (ask for center_of=...)")
        return [
            math.ldexp(math.sqrt(s + csq - 2 * d), -self.fmt.frac_bits)
            for d, s in zip(dots, self.exact.sq_norms, strict=True)
        ]


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


def aggregate_shard(
    readers: Sequence[ColumnReader],
    a: int,
    b: int,
    rule: ExactRule,
    num_samples: Sequence[int],
    plan: Plan | None,
    *,
    columns: int | None = None,
) -> Int32Vector:
    """Coordinates ``[a, b)`` of the round's exact aggregate, block by block.

    Krum and multi-Krum read only the updates the plan selected (the rest do not count).
    """
    if rule.rule in ("krum", "multi_krum") and plan is not None and plan.selected is not None:
        keep = list(plan.selected)
        readers = [readers[i] for i in keep]
        num_samples = [num_samples[i] for i in keep]
        mult = None if plan.multipliers is None else tuple(plan.multipliers[i] for i in keep)
        plan = Plan(mult, tuple(range(len(keep))))
    columns = columns or block_columns(len(readers))
    out = np.empty(b - a, dtype=np.int32)
    for s, e, rows in iter_blocks(readers, a, b, columns):
        out[s - a : e - a] = exact_rules.aggregate_columns(rule, rows, num_samples, plan, threads=1)
    return out


class ShardRunner(Protocol):
    """Runs the per-shard passes over a round's updates; in one process
    (:class:`LocalRunner`) or on a cluster (``fedledger_backend.sharded.RayRunner``)."""

    def statistics(
        self,
        shards: Sequence[tuple[int, int]],
        *,
        gram: bool,
        multipliers: Sequence[int | None] | None,
        center_of: Sequence[int] | None,
    ) -> list[ShardStatistics]: ...

    def aggregate(
        self,
        shards: Sequence[tuple[int, int]],
        rule: ExactRule,
        num_samples: Sequence[int],
        plan: Plan | None,
    ) -> list[Int32Vector]: ...


@dataclass
class LocalRunner:
    """Every shard in this process, one after the other (the single-process streaming path)."""

    opener: RangeOpener
    files: Sequence[UpdateFile]
    block_bytes: int = DEFAULT_BLOCK_BYTES
    _readers: list[ColumnReader] | None = field(default=None, repr=False)

    def readers(self) -> list[ColumnReader]:
        if self._readers is None:
            self._readers = [ColumnReader(self.opener(f.cid), f) for f in self.files]
        return self._readers

    def statistics(
        self,
        shards: Sequence[tuple[int, int]],
        *,
        gram: bool,
        multipliers: Sequence[int | None] | None,
        center_of: Sequence[int] | None = None,
    ) -> list[ShardStatistics]:
        cols = block_columns(len(self.files), self.block_bytes)
        return [
            shard_statistics(
                self.readers(),
                a,
                b,
                gram=gram,
                multipliers=multipliers,
                center_of=center_of,
                columns=cols,
            )
            for a, b in shards
        ]

    def aggregate(
        self,
        shards: Sequence[tuple[int, int]],
        rule: ExactRule,
        num_samples: Sequence[int],
        plan: Plan | None,
    ) -> list[Int32Vector]:
        kept = (
            len(plan.selected)
            if plan is not None and plan.selected is not None
            else len(self.files)
        )
        cols = block_columns(kept, self.block_bytes)
        return [
            aggregate_shard(self.readers(), a, b, rule, num_samples, plan, columns=cols)
            for a, b in shards
        ]


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
        return "0x" + hashlib.sha256(self.aggregate.astype("<i4").tobytes()).hexdigest()


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
    rule: ExactRule,
    num_samples: Sequence[int],
    size: int,
    shards: Sequence[tuple[int, int]],
) -> StreamedAggregate:
    """The exact aggregate of a round's accepted updates (updateId order), in passes over shards.

    1. clipping: every update's squared norm (sums over shards) gives the clip multipliers;
    2. Krum: the Gram matrix of the clipped updates gives the selection;
    3. every shard's part of the aggregate, concatenated in order.
    Equal, bit for bit, to ``exact_rules.aggregate_exact(rule, whole vectors, num_samples)``.
    """
    shards = _tiling(shards, size)
    stats = None
    multipliers = None
    if rule.clip_bound is not None:
        stats = combine(runner.statistics(shards, gram=False, multipliers=None, center_of=None))
        multipliers = clip_multipliers(rule, stats.sq_norms)
    clipped_gram = None
    if rule.rule in ("krum", "multi_krum"):
        gstats = combine(
            runner.statistics(shards, gram=True, multipliers=multipliers, center_of=None)
        )
        clipped_gram = gstats.gram
        stats = gstats if stats is None else ShardStatistics(stats.sq_norms, gstats.gram)
    plan = plan_from_statistics(rule, stats.sq_norms if stats is not None else None, clipped_gram)
    parts = runner.aggregate(shards, rule, num_samples, plan if rule.needs_plan else None)
    out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    return StreamedAggregate(out.astype(np.int32, copy=False), plan, stats, tuple(shards))


def round_statistics(
    runner: ShardRunner,
    shards: Sequence[tuple[int, int]],
    fmt: FixedPointFormat,
    *,
    gram: bool = True,
    center_of: Sequence[int] | None = None,
) -> RoundStatistics:
    """The screen's statistics of a round's updates (norms, Gram, centre dots), exact."""
    parts = runner.statistics(shards, gram=gram, multipliers=None, center_of=center_of)
    return RoundStatistics(combine(parts), fmt)


def stream_aggregate(
    opener: RangeOpener,
    files: Sequence[UpdateFile],
    rule: ExactRule,
    num_samples: Sequence[int] | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> StreamedAggregate:
    """:func:`aggregate_round` in this process, over one shard: the single-process reference."""
    size = check_files(files)
    ns = [1] * len(files) if num_samples is None else list(num_samples)
    return aggregate_round(LocalRunner(opener, files, block_bytes), rule, ns, size, [(0, size)])


__all__ = [
    "ColumnReader",
    "Inspection",
    "LocalRunner",
    "RangeOpener",
    "RangeSource",
    "RoundStatistics",
    "ShardRunner",
    "ShardStatistics",
    "StreamedAggregate",
    "UpdateFile",
    "aggregate_round",
    "aggregate_shard",
    "block_columns",
    "combine",
    "inspect_update",
    "open_update",
    "plan_from_statistics",
    "read_header",
    "round_statistics",
    "shard_statistics",
    "split",
    "stream_aggregate",
]
