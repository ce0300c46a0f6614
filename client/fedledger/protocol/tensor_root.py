"""Tensor commitments: a keccak256 Merkle root over an update's int32 fixed-point coordinates.

docs/tensor_commitments.md is the specification; ``contracts/TensorRoot.sol`` checks the proofs
on chain.  In short:

* the vector is the flat int32 vector of :mod:`fedledger.protocol.fixedpoint`, in the task's
  tensor order; it is cut into leaves of :data:`LEAF_COORDINATES` (1,024) coordinates;
* a leaf is :data:`LEAF_BYTES` (4,116) bytes: ``"FTR1"`` (4 bytes), the vector's dimension
  (uint64), the leaf index (uint64), then 1,024 int32 coordinates of 4 bytes each (two's
  complement), all big-endian -- ``abi.encodePacked(bytes4, uint64, uint64)`` followed by the
  packed encoding of 1,024 int32 *scalars* (not of an ``int32[]``, which pads each element to
  32 bytes), so a contract reads coordinate ``j`` as ``bytes4(leaf[20 + 4j:24 + 4j])``.  The
  last leaf is padded with zero coordinates, so every leaf has the same length;
* the leaf's node is ``keccak256(leaf)``: one hash, because a leaf is never 64 bytes long and so
  can never be read as an inner node (OpenZeppelin's double hash guards variable-length leaves);
* the tree above the leaf nodes is the verdict tree's (:mod:`fedledger.protocol.merkle`): pairs
  of neighbours, sorted-pair keccak (OpenZeppelin ``_hashPair``), an odd last node carried up.
  A proof is the plain list of siblings that ``MerkleProof.verify`` takes; the position of a
  coordinate is bound by the index and dimension inside its leaf, not by the path.

The leaves are laid out by one numpy pass and hashed in place, three C calls each
(pycryptodome's keccak, one state reset between rows), and each level of the tree is sorted and
paired by numpy, so building a root runs close to keccak's own throughput on the same bytes
(benchmarks/tensor_root.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from fedledger.errors import FormatError
from fedledger.protocol import merkle

LEAF_COORDINATES = 1024
"""Coordinates per leaf (4 KiB of int32)."""

LEAF_TAG = b"FTR1"
"""The first four bytes of every leaf: fedledger tensor root, layout version 1."""

HEADER_BYTES = 20
"""Tag (4) + dimension (uint64, 8) + leaf index (uint64, 8)."""

LEAF_BYTES = HEADER_BYTES + 4 * LEAF_COORDINATES
"""Every leaf's length: 4,116 bytes."""

_HEADER_WORDS = HEADER_BYTES // 4
_TAG_WORD = int.from_bytes(LEAF_TAG, "big")
_MAX_DIMENSION = 2**64 - 1


class CoordinateProof(NamedTuple):
    """What proves one coordinate against a tensor root: its leaf, the leaf's index, the siblings.

    ``MerkleProof.verify(proof, root, keccak256(leaf))`` accepts it, and ``TensorRoot.sol``'s
    ``verifyCoordinate(root, index, leaf, proof)`` returns the coordinate from it.
    """

    leaf: bytes
    leaf_index: int
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        """The proof as JSON-ready ``0x`` hex (what a REST endpoint returns)."""
        return {
            "leaf": merkle.to_hex(self.leaf),
            "leafIndex": self.leaf_index,
            "proof": [merkle.to_hex(p) for p in self.proof],
        }


# ------------------------------------------------------------------------------------ hashing


def _raw_keccak_rows() -> Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None:
    """keccak256 of each row through pycryptodome's C library (its cffi backend): one state per
    call, reset between rows, the rows read and the digests written in place -- three C calls
    per row, against the public API's new object per hash (~2 us less per hash, which is most
    of the cost of a 64-byte inner node).  A state is never shared between calls, so threads
    may hash at once.  None when the library is not laid out as this expects; the public API
    is then used (the same digests, only slower)."""
    try:
        from Crypto.Hash.keccak import _raw_keccak_lib as lib  # type: ignore[attr-defined]
        from Crypto.Util import _raw_api

        if _raw_api.backend != "cffi":
            return None
        ffi = _raw_api.ffi
        reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest

        def rows(buf: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
            count, width = buf.shape
            out = np.empty((count, 32), dtype=np.uint8)
            src = ffi.cast("uint8_t *", ffi.from_buffer(buf))
            dst = ffi.cast("uint8_t *", ffi.from_buffer(out))
            holder = ffi.new("void **")
            if lib.keccak_init(holder, 64, 24):  # capacity 512 bits, 24 rounds: Keccak-256
                raise MemoryError("keccak_init failed")
            state = holder[0]
            try:
                for k in range(count):
                    reset(state)
                    absorb(state, src + k * width, width)
                    digest(state, dst + 32 * k, 32, 0x01)  # 0x01: Keccak padding (SHA-3: 0x06)
            finally:
                lib.keccak_destroy(state)
            return out

        probe = np.frombuffer(b"abc", dtype=np.uint8).reshape(1, 3)
        if not np.array_equal(rows(probe), _public_keccak_rows(probe)):
            return None
        return rows
    except Exception:  # noqa: BLE001 -- any surprise in a private API means "use the public one"
        return None


def _public_keccak_rows(buf: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """keccak256 of each row, through pycryptodome's public API."""
    from Crypto.Hash import keccak

    digests = b"".join(keccak.new(digest_bits=256, data=memoryview(row)).digest() for row in buf)
    return np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32)


_hash_rows: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] = (
    _raw_keccak_rows() or _public_keccak_rows
)
KECCAK_PATH = (
    "pycryptodome C, one state per call"
    if _hash_rows is not _public_keccak_rows
    else ("pycryptodome public API")
)
"""Which keccak path hashes the rows here (the benchmark prints it)."""


def keccak_rows(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """keccak256 of each row of a C-contiguous ``(n, width)`` uint8 array, as ``(n, 32)``."""
    buf = np.ascontiguousarray(rows, dtype=np.uint8)
    if buf.ndim != 2:
        raise ValueError(f"keccak_rows takes a 2-D array, got shape {buf.shape}")
    if buf.shape[0] == 0:
        return np.empty((0, 32), dtype=np.uint8)
    return _hash_rows(buf)


# ------------------------------------------------------------------------------------ leaves


def _check_vector(vector: npt.ArrayLike) -> npt.NDArray[np.int32]:
    arr = np.asarray(vector)
    if arr.dtype != np.int32:
        raise FormatError(
            f"a tensor root is over an int32 vector, got dtype {arr.dtype}",
            hint="quantize the delta first (fedledger.protocol.fixedpoint.quantize)",
        )
    if arr.ndim != 1:
        raise FormatError(
            f"a tensor root is over a flat vector in the task's tensor order, got shape {arr.shape}",
            hint="flatten the tensors in the task's order (reshape(-1) of each, concatenated)",
        )
    if arr.size == 0:
        raise FormatError(
            "a tensor root needs at least one coordinate: the vector is empty",
            hint="an update or model has at least one parameter; check how it was decoded",
        )
    if arr.size > _MAX_DIMENSION:  # pragma: no cover -- 64 EiB of coordinates
        raise FormatError(f"a vector of {arr.size} coordinates does not fit a uint64 dimension")
    return arr


def leaf_count(dimension: int) -> int:
    """Leaves of a vector of ``dimension`` (>= 1) coordinates."""
    return -(-dimension // LEAF_COORDINATES)


def leaves(vector: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Every leaf of ``vector``, as a ``(leaf_count, LEAF_BYTES)`` uint8 array (one numpy pass)."""
    vec = _check_vector(vector)
    n = vec.size
    count = leaf_count(n)
    words = np.zeros((count, _HEADER_WORDS + LEAF_COORDINATES), dtype=">u4")
    words[:, 0] = _TAG_WORD
    words[:, 1] = n >> 32
    words[:, 2] = n & 0xFFFFFFFF
    index = np.arange(count, dtype=np.uint64)
    words[:, 3] = index >> np.uint64(32)
    words[:, 4] = index & np.uint64(0xFFFFFFFF)
    coords = words[:, _HEADER_WORDS:].view(">i4")
    full = n // LEAF_COORDINATES
    coords[:full] = vec[: full * LEAF_COORDINATES].reshape(full, LEAF_COORDINATES)
    if full < count:
        coords[full, : n - full * LEAF_COORDINATES] = vec[full * LEAF_COORDINATES :]
    return words.view(np.uint8).reshape(count, LEAF_BYTES)


def leaf(vector: npt.ArrayLike, leaf_index: int) -> bytes:
    """The bytes of one leaf of ``vector`` (what a proof carries and a contract reads)."""
    vec = _check_vector(vector)
    if not 0 <= leaf_index < leaf_count(vec.size):
        raise IndexError(f"leaf {leaf_index} out of range for {leaf_count(vec.size)} leaves")
    lo = leaf_index * LEAF_COORDINATES
    return _leaf_bytes(vec.size, leaf_index, vec[lo : lo + LEAF_COORDINATES])


def _leaf_bytes(dimension: int, leaf_index: int, coords: npt.NDArray[np.int32]) -> bytes:
    padded = np.zeros(LEAF_COORDINATES, dtype=">i4")
    padded[: coords.size] = coords
    return (
        LEAF_TAG + dimension.to_bytes(8, "big") + leaf_index.to_bytes(8, "big") + padded.tobytes()
    )


class DecodedLeaf(NamedTuple):
    """A leaf's header and its coordinates (the padding of the last leaf dropped)."""

    dimension: int
    leaf_index: int
    coordinates: npt.NDArray[np.int32]


def decode_leaf(leaf_: bytes) -> DecodedLeaf:
    """Read a leaf; FormatError when it is not one (length, tag, index beyond the dimension, or
    non-zero padding)."""
    if len(leaf_) != LEAF_BYTES:
        raise FormatError(f"a tensor leaf is {LEAF_BYTES} bytes, got {len(leaf_)}")
    if leaf_[:4] != LEAF_TAG:
        raise FormatError(f"a tensor leaf starts with {LEAF_TAG!r}, got {bytes(leaf_[:4])!r}")
    dimension = int.from_bytes(leaf_[4:12], "big")
    leaf_index = int.from_bytes(leaf_[12:20], "big")
    if dimension == 0 or leaf_index >= leaf_count(dimension):
        raise FormatError(
            f"leaf index {leaf_index} is beyond the {leaf_count(dimension)} leaves of a "
            f"{dimension}-coordinate vector"
        )
    coords = np.frombuffer(leaf_, dtype=">i4", offset=HEADER_BYTES).astype(np.int32)
    used = min(LEAF_COORDINATES, dimension - leaf_index * LEAF_COORDINATES)
    if np.any(coords[used:]):
        raise FormatError(f"the padding after coordinate {used} of the last leaf is not zero")
    return DecodedLeaf(dimension, leaf_index, coords[:used])


# ------------------------------------------------------------------------------------ the tree


def _next_level(nodes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Parents of one level: sorted-pair keccak of neighbours, an odd last node carried up."""
    pairs = nodes.shape[0] // 2
    a, b = nodes[0 : 2 * pairs : 2], nodes[1 : 2 * pairs : 2]
    differ = a != b
    first = differ.argmax(axis=1)  # first differing byte (0 when equal: either order is right)
    rows = np.arange(pairs)
    a_first = (a[rows, first] <= b[rows, first])[:, None]
    joined = np.concatenate([np.where(a_first, a, b), np.where(a_first, b, a)], axis=1)
    parents = keccak_rows(joined)
    if nodes.shape[0] % 2:
        parents = np.concatenate([parents, nodes[-1:]])
    return parents


class TensorTree:
    """The whole tree of one vector: its root and the proof of any coordinate.

    Build it once to serve many proofs (an API); :func:`tensor_root` and
    :func:`coordinate_proof` are the one-shot forms.
    """

    def __init__(self, vector: npt.ArrayLike) -> None:
        self.vector = _check_vector(vector)
        self.dimension = int(self.vector.size)
        self.levels: list[npt.NDArray[np.uint8]] = [keccak_rows(leaves(self.vector))]
        while self.levels[-1].shape[0] > 1:
            self.levels.append(_next_level(self.levels[-1]))

    @property
    def root(self) -> bytes:
        """The tensor root (bytes32)."""
        return bytes(self.levels[-1][0])

    @property
    def leaf_nodes(self) -> list[bytes]:
        """``keccak256(leaf)`` of every leaf, in leaf order (the verdict tree's input form)."""
        return [bytes(row) for row in self.levels[0]]

    def proof(self, index: int) -> CoordinateProof:
        """The leaf holding coordinate ``index``, the leaf's index and its sibling path."""
        if not 0 <= index < self.dimension:
            raise IndexError(f"coordinate {index} out of range for {self.dimension} coordinates")
        leaf_index = index // LEAF_COORDINATES
        lo = leaf_index * LEAF_COORDINATES
        leaf_ = _leaf_bytes(self.dimension, leaf_index, self.vector[lo : lo + LEAF_COORDINATES])
        path: list[bytes] = []
        position = leaf_index
        for level in self.levels[:-1]:
            sibling = position ^ 1
            if sibling < level.shape[0]:
                path.append(bytes(level[sibling]))
            position //= 2
        return CoordinateProof(leaf_, leaf_index, path)


def tensor_root(vector: npt.ArrayLike) -> bytes:
    """The tensor root (bytes32) of a flat int32 vector; FormatError if it is empty or not int32."""
    return TensorTree(vector).root


def coordinate_proof(vector: npt.ArrayLike, index: int) -> CoordinateProof:
    """``(leaf, leaf_index, proof)`` proving coordinate ``index`` of ``vector`` against its root."""
    return TensorTree(vector).proof(index)


def leaf_node(leaf_: bytes) -> bytes:
    """The tree node of a leaf: ``keccak256(leaf)``."""
    return bytes(keccak_rows(np.frombuffer(leaf_, dtype=np.uint8).reshape(1, -1))[0])


def verify_coordinate(
    root: bytes | str,
    index: int,
    value: int,
    leaf_: bytes,
    proof: Sequence[bytes | str],
    *,
    dimension: int | None = None,
) -> bool:
    """True when ``leaf_`` and ``proof`` prove that coordinate ``index`` of the vector committed
    by ``root`` is ``value`` (and, when given, that the vector has ``dimension`` coordinates).

    The same checks as ``TensorRoot.verifyCoordinate``: the leaf is well formed, it is the leaf
    of ``index`` in a vector long enough to hold it, it holds ``value`` there, and
    ``MerkleProof.processProof(proof, keccak256(leaf)) == root``.
    """
    try:
        decoded = decode_leaf(bytes(leaf_))
        if dimension is not None and decoded.dimension != dimension:
            return False
        if not 0 <= index < decoded.dimension or index // LEAF_COORDINATES != decoded.leaf_index:
            return False
        if int(decoded.coordinates[index % LEAF_COORDINATES]) != value:
            return False
        return merkle.process_proof(leaf_node(leaf_), proof) == merkle.as_bytes32(root, "root")
    except (FormatError, ValueError):
        return False
