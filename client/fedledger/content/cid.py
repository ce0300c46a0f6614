"""Content identifiers exactly as Kubo computes them for ``ipfs add``.

This module owns the CID rules (SPEC "Update and model files": ``cid`` is the CID Kubo prints for
``ipfs add --cid-version=1``). References:

* CID — https://github.com/multiformats/cid (v0 = bare base58btc sha2-256 multihash, always
  dag-pb; v1 = ``<0x01><codec varint><multihash>``, text form multibase, base32 lowercase ``b``).
* multihash — https://github.com/multiformats/multihash (sha2-256 = ``0x12``, 32 bytes; the only
  hash fedledger accepts, since it is the only one a store here can check).
* multicodec — ``dag-pb`` = ``0x70``, ``raw`` = ``0x55``.
* UnixFS file importer — https://specs.ipfs.tech/unixfs/ and go-unixfs ``importer/balanced``:
  fixed-size chunks (``--chunker=size-262144``), *balanced* layout with at most 174 links per node
  (``helpers.DefaultLinksPerBlock``), a single chunk is its own root, and every inner node is a
  dag-pb node whose UnixFS ``Data`` is ``Type=File, filesize, blocksizes`` (see
  :mod:`fedledger.content.dagpb`).

Two profiles matter:

* :data:`FEDLEDGER` (= ``ipfs add --cid-version=1``): raw leaves (``bafk...`` for one chunk),
  dag-pb inner nodes, CIDv1 base32 (``bafy...``). fedledger's default.
* :data:`KUBO_V0` (= plain ``ipfs add``): leaves are UnixFS ``File`` nodes in dag-pb, CIDv0
  base58btc (``Qm...``).

:class:`DagBuilder` builds the DAG streaming: memory is bounded by one chunk plus at most 174
pending links per tree level, whatever the file size; it hands every block it makes to an
optional callback (the blockstore stores them from there). Each chunk is hashed exactly once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fedledger.content.dagpb import (
    PBLink,
    decode_varint,
    encode_pbnode,
    encode_unixfs,
    encode_varint,
)
from fedledger.errors import FormatError

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
DEFAULT_CHUNK_SIZE = 262144
DEFAULT_MAX_LINKS = 174
MAX_CHUNK_SIZE = 1024 * 1024  # Kubo refuses chunkers above 1 MiB (the bitswap block limit)

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_CODEC_NAMES = {DAG_PB: "dag-pb", RAW: "raw"}


# --------------------------------------------------------------------------- multibase


def b58encode(data: bytes) -> str:
    """base58btc (Bitcoin alphabet), leading zero bytes as ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; :class:`FormatError` on a character outside the alphabet."""
    num = 0
    for ch in text:
        idx = _B58_INDEX.get(ch)
        if idx is None:
            raise FormatError(f"invalid base58 character {ch!r}")
        num = num * 58 + idx
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lowercase, unpadded (multibase ``b``)."""
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")


def b32decode(text: str) -> bytes:
    """Inverse of :func:`b32encode` (case-insensitive)."""
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (ValueError, binascii.Error) as exc:
        raise FormatError(f"invalid base32: {exc}") from exc


# --------------------------------------------------------------------------- CID


@dataclass(frozen=True, slots=True)
class CID:
    """A sha2-256 CID. ``digest`` is the raw 32-byte sha256."""

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise FormatError(f"unsupported CID version {self.version}")
        if self.version == 0 and self.codec != DAG_PB:
            raise FormatError("a CIDv0 is always dag-pb")
        if len(self.digest) != 32:
            raise FormatError("sha2-256 digest must be 32 bytes")

    @property
    def multihash(self) -> bytes:
        return bytes((SHA2_256, 32)) + self.digest

    @property
    def codec_name(self) -> str:
        return _CODEC_NAMES.get(self.codec, hex(self.codec))

    def to_bytes(self) -> bytes:
        """Binary CID, as it appears in dag-pb links and CAR files."""
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.to_bytes())

    def to_v1(self) -> CID:
        return CID(1, self.codec, self.digest)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> CID:
        cid, end = read_cid(data, 0)
        if end != len(data):
            raise FormatError("trailing bytes after CID")
        return cid

    @classmethod
    def parse(cls, text: str | bytes | CID) -> CID:
        return parse_cid(text)


def read_cid(data: bytes | memoryview, pos: int) -> tuple[CID, int]:
    """Read a binary CID starting at ``pos``; return it and the position after it."""
    buf = memoryview(data)
    if len(buf) - pos >= 2 and buf[pos] == SHA2_256 and buf[pos + 1] == 32:
        end = pos + 34
        if end > len(buf):
            raise FormatError("truncated CIDv0")
        return CID(0, DAG_PB, bytes(buf[pos + 2 : end])), end
    version, pos = decode_varint(buf, pos, "CID version")
    if version != 1:
        raise FormatError(f"unsupported CID version {version}")
    codec, pos = decode_varint(buf, pos, "CID codec")
    if codec not in _CODEC_NAMES:
        raise FormatError(f"unsupported CID codec 0x{codec:x} (only dag-pb and raw)")
    code, pos = decode_varint(buf, pos, "multihash code")
    length, pos = decode_varint(buf, pos, "multihash length")
    if code != SHA2_256 or length != 32:
        raise FormatError(f"unsupported multihash 0x{code:x}/{length} (only sha2-256)")
    if pos + 32 > len(buf):
        raise FormatError("truncated multihash")
    return CID(1, codec, bytes(buf[pos : pos + 32])), pos + 32


def parse_cid(text: str | bytes | CID) -> CID:
    """Parse a CID from text (``Qm...``, multibase ``b``/``B``/``z``/``f``) or binary bytes.

    Raises :class:`FormatError` for anything that is not a sha2-256 dag-pb/raw CID.
    """
    if isinstance(text, CID):
        return text
    if isinstance(text, bytes | bytearray | memoryview):
        return CID.from_bytes(bytes(text))
    if not isinstance(text, str) or not text or len(text) > 200:
        raise FormatError(f"not a CID: {text!r}")
    if len(text) == 46 and text.startswith("Qm"):
        raw = b58decode(text)
        if len(raw) != 34 or raw[:2] != b"\x12\x20":
            raise FormatError(f"not a CIDv0: {text!r}")
        return CID(0, DAG_PB, raw[2:])
    prefix, body = text[0], text[1:]
    if prefix in ("b", "B"):
        raw = b32decode(body)
    elif prefix == "z":
        raw = b58decode(body)
    elif prefix in ("f", "F"):
        try:
            raw = bytes.fromhex(body)
        except ValueError as exc:
            raise FormatError(f"not a CID: {text!r}") from exc
    else:
        raise FormatError(f"not a CID (unknown multibase prefix {prefix!r}): {text!r}")
    cid = CID.from_bytes(raw)
    if cid.version == 0:
        raise FormatError(f"a CIDv0 is never multibase-encoded: {text!r}")
    return cid


def is_cid(text: object) -> bool:
    """True if ``text`` parses as a CID fedledger accepts."""
    try:
        parse_cid(text)  # type: ignore[arg-type]
    except FormatError:
        return False
    return True


# --------------------------------------------------------------------------- DAG builder


@dataclass(frozen=True)
class Profile:
    """How to chunk and encode a file: the parameters of ``ipfs add`` that change the CID."""

    cid_version: int = 1
    raw_leaves: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_links: int = DEFAULT_MAX_LINKS

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise ValueError("cid_version must be 0 or 1")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}")
        if self.max_links < 2:
            raise ValueError("max_links must be at least 2")

    def with_chunk_size(self, chunk_size: int) -> Profile:
        return Profile(self.cid_version, self.raw_leaves, chunk_size, self.max_links)


FEDLEDGER = Profile()
"""``ipfs add --cid-version=1`` (raw leaves, 256 KiB chunks): fedledger's ``cid``."""
KUBO_V0 = Profile(cid_version=0, raw_leaves=False)
"""Plain ``ipfs add`` (Kubo's default): CIDv0, UnixFS leaves."""


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a DAG: its CID and its exact bytes (a chunk view for raw leaves)."""

    cid: CID
    data: bytes | memoryview


@dataclass(slots=True)
class _Link:
    cid: CID
    tsize: int  # cumulative serialised size of the subtree (dag-pb Tsize)
    filesize: int  # file bytes under the subtree (UnixFS blocksizes entry)


class DagBuilder:
    """Streaming UnixFS file importer (balanced layout) producing Kubo's exact DAG.

    Feed bytes with :meth:`write` (any piece sizes; re-chunked to ``profile.chunk_size``) or whole
    chunks with :meth:`add_chunk`, then call :meth:`finish` for the root CID. ``on_block`` sees
    every block as it is made, leaves first, root last; a raw leaf is handed over as a view of
    the caller's buffer, so it must be consumed before the callback returns.

    Balanced layout as a stack of levels: ``levels[k]`` holds the pending links to finished
    subtrees of height ``k``; a level is closed into a parent node only when it is full and one
    more link arrives, or at :meth:`finish`. That reproduces go-unixfs ``balanced.Layout``,
    which grows the root one level at a time and fills each new subtree depth-first.
    """

    def __init__(
        self,
        profile: Profile = FEDLEDGER,
        on_block: Callable[[Block], None] | None = None,
    ) -> None:
        self.profile = profile
        self._on_block = on_block
        self._levels: list[list[_Link]] = [[]]
        self._pending = bytearray()
        self._size = 0
        self._chunks = 0
        self._root: CID | None = None

    @property
    def size(self) -> int:
        """File bytes consumed so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append file bytes; whole chunks are hashed straight from ``data`` without copying."""
        if self._root is not None:
            raise RuntimeError("DagBuilder already finished")
        view = memoryview(data).cast("B")
        size = self.profile.chunk_size
        pos = 0
        if self._pending:
            take = min(size - len(self._pending), len(view))
            self._pending += view[:take]
            pos = take
            if len(self._pending) < size:
                return
            self._add_leaf(bytes(self._pending))
            self._pending.clear()
        end = len(view)
        while end - pos >= size:
            self._add_leaf(view[pos : pos + size])
            pos += size
        if pos < end:
            self._pending += view[pos:]

    def add_chunk(self, chunk: bytes | memoryview) -> None:
        """Append one whole chunk (only the last may be shorter than ``chunk_size``)."""
        if self._pending:
            raise RuntimeError("add_chunk after a partial write()")
        if len(chunk) > self.profile.chunk_size:
            raise ValueError("chunk larger than chunk_size")
        self._add_leaf(chunk)

    def finish(self) -> CID:
        """Flush the last chunk and close every level; return the root CID."""
        if self._root is not None:
            return self._root
        if self._pending or self._chunks == 0:
            self._add_leaf(bytes(self._pending))
            self._pending.clear()
        levels = self._levels
        k = 0
        while True:
            top = len(levels) - 1
            if k == top and len(levels[k]) == 1:
                self._root = levels[k][0].cid
                return self._root
            if levels[k]:
                links, levels[k] = levels[k], []
                self._push(k + 1, self._make_node(links))
            k += 1

    # -- internals

    def _add_leaf(self, chunk: bytes | memoryview) -> None:
        if self._chunks and self._last_leaf_short:
            raise RuntimeError("only the last chunk may be short")
        self._last_leaf_short = len(chunk) < self.profile.chunk_size
        self._chunks += 1
        self._size += len(chunk)
        profile = self.profile
        if profile.raw_leaves:
            cid = CID(1, RAW, hashlib.sha256(chunk).digest())
            block: bytes | memoryview = chunk
        else:
            block = encode_pbnode((), encode_unixfs(2, bytes(chunk), len(chunk)))
            cid = CID(profile.cid_version, DAG_PB, hashlib.sha256(block).digest())
        if self._on_block is not None:
            self._on_block(Block(cid, block))
        self._push(0, _Link(cid, len(block), len(chunk)))

    _last_leaf_short = False

    def _push(self, level: int, link: _Link) -> None:
        levels = self._levels
        if level == len(levels):
            levels.append([])
        if len(levels[level]) == self.profile.max_links:
            links, levels[level] = levels[level], []
            self._push(level + 1, self._make_node(links))
        levels[level].append(link)

    def _make_node(self, links: list[_Link]) -> _Link:
        sizes = tuple(link.filesize for link in links)
        filesize = sum(sizes)
        data = encode_unixfs(2, b"", filesize, sizes)
        block = encode_pbnode([PBLink(link.cid.to_bytes(), link.tsize) for link in links], data)
        cid = CID(self.profile.cid_version, DAG_PB, hashlib.sha256(block).digest())
        if self._on_block is not None:
            self._on_block(Block(cid, block))
        return _Link(cid, len(block) + sum(link.tsize for link in links), filesize)


def compute_cid(data: bytes | bytearray | memoryview, profile: Profile = FEDLEDGER) -> str:
    """The CID Kubo prints for ``ipfs add`` of ``data`` under ``profile``."""
    builder = DagBuilder(profile)
    builder.write(data)
    return str(builder.finish())


def cid_of_chunks(chunks: Iterable[bytes | memoryview], profile: Profile = FEDLEDGER) -> str:
    """CID of a stream given as consecutive pieces of any size."""
    builder = DagBuilder(profile)
    for piece in chunks:
        builder.write(piece)
    return str(builder.finish())


def cid_of_stream(stream: BinaryIO, profile: Profile = FEDLEDGER) -> str:
    """CID of a binary stream, read one chunk at a time (memory bounded by one chunk)."""
    builder = DagBuilder(profile)
    size = profile.chunk_size
    while True:
        piece = stream.read(size)
        if not piece:
            break
        builder.write(piece)
    return str(builder.finish())


def cid_of_file(path: str | Path, profile: Profile = FEDLEDGER) -> str:
    """CID of a file on disk, streamed."""
    with open(path, "rb") as f:
        return cid_of_stream(f, profile)


# --------------------------------------------------------------------------- CIDs on chain


def recorded_digest(cid: str | CID, content_hash: bytes) -> bytes:
    """The 32 bytes the ledger records for ``cid``, the CID of a file whose sha256 is
    ``content_hash``: its sha2-256 digest.

    The ledger rebuilds the CID from these bytes alone (:func:`recorded_cid`), so only a CID
    that rule gives back can be recorded: a ``raw`` CID is the file's single block (its digest
    *is* the file's sha256), anything larger a ``dag-pb`` root.  Raises :class:`FormatError`
    naming the mismatch otherwise."""
    parsed = parse_cid(cid)
    if len(content_hash) != 32:
        raise FormatError("a content hash is 32 bytes (sha256)")
    rebuilt = recorded_cid(parsed.digest, content_hash)
    if rebuilt != str(parsed.to_v1()):
        raise FormatError(
            f"CID {cid} cannot be recorded for this file: a {parsed.codec_name} CID of a file "
            f"{'is' if parsed.codec == RAW else 'is not'} its single block, so its digest must "
            f"{'equal' if parsed.codec == RAW else 'differ from'} the file's sha256",
            hint="add the file with fedledger's store or `ipfs add --cid-version=1` "
            "(raw leaves, sha2-256) and record the CID it prints",
        )
    return parsed.digest


def recorded_cid(digest: bytes, content_hash: bytes) -> str:
    """The CIDv1 (base32) the ledger's ``cidDigest`` stands for: codec ``raw`` when the digest
    is the file's own sha256 (a single-block file), else ``dag-pb``; sha2-256 always."""
    if len(digest) != 32:
        raise FormatError("a CID digest is 32 bytes (sha2-256)")
    return str(CID(1, RAW if digest == content_hash else DAG_PB, bytes(digest)))
