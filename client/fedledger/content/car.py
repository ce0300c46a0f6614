"""CAR v1 export and import, so DAGs move between the embedded store and a real node.

Spec: https://ipld.io/specs/transport/car/carv1/ ::

    car     = varint(len(header)) header section*
    header  = dag-cbor {"roots": [CID, ...], "version": 1}      (CID = CBOR tag 42, bytes 0x00‖cid)
    section = varint(len(cid) + len(block)) cid block

``ipfs dag export <cid>`` writes one and ``ipfs dag import`` reads one (pinning its roots).
Export walks the DAG depth-first, parents before children, each block once — the order Kubo
writes. Import verifies every block against its CID before storing it
(:class:`~fedledger.errors.IntegrityError` otherwise) and rejects malformed CARs with
:class:`~fedledger.errors.FormatError`. Only the tiny slice of dag-cbor the header needs is written
and read here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fedledger.content.blockstore import MAX_BLOCK_SIZE, Blockstore
from fedledger.content.cid import CID, DAG_PB, parse_cid, read_cid
from fedledger.content.dagpb import decode_pbnode, encode_varint
from fedledger.errors import FormatError, IntegrityError

MAX_HEADER_SIZE = 1 << 20
_CID_TAG = 42


@dataclass(frozen=True)
class ImportResult:
    roots: tuple[str, ...]
    blocks: int


# --------------------------------------------------------------------------- header (dag-cbor)


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + value.to_bytes(size, "big")
    raise ValueError("CBOR integer too large")


def encode_header(roots: list[CID]) -> bytes:
    """dag-cbor ``{"roots": [...], "version": 1}`` (keys in dag-cbor's length-first order)."""
    out = _cbor_head(5, 2) + _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for root in roots:
        raw = b"\x00" + root.to_bytes()
        out += _cbor_head(6, _CID_TAG) + _cbor_head(2, len(raw)) + raw
    return out + _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)


class _Cbor:
    """Just enough of a strict CBOR reader for a CAR header."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def head(self) -> tuple[int, int]:
        if self.pos >= len(self.data):
            raise FormatError("CAR header: truncated CBOR")
        byte = self.data[self.pos]
        self.pos += 1
        major, info = byte >> 5, byte & 31
        if info < 24:
            return major, info
        sizes = {24: 1, 25: 2, 26: 4, 27: 8}
        if info not in sizes:
            raise FormatError("CAR header: indefinite or reserved CBOR length")
        n = sizes[info]
        if self.pos + n > len(self.data):
            raise FormatError("CAR header: truncated CBOR")
        value = int.from_bytes(self.data[self.pos : self.pos + n], "big")
        self.pos += n
        return major, value

    def item(self, depth: int = 0) -> object:
        if depth > 8:
            raise FormatError("CAR header: CBOR nested too deeply")
        major, value = self.head()
        if major == 0:
            return value
        if major in (2, 3):
            if self.pos + value > len(self.data):
                raise FormatError("CAR header: truncated CBOR string")
            raw = self.data[self.pos : self.pos + value]
            self.pos += value
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError("CAR header: invalid UTF-8") from exc
        if major == 4:
            if value > 1024:
                raise FormatError("CAR header: too many roots")
            return [self.item(depth + 1) for _ in range(value)]
        if major == 5:
            if value > 16:
                raise FormatError("CAR header: map too large")
            out: dict[object, object] = {}
            for _ in range(value):
                key = self.item(depth + 1)
                if not isinstance(key, str) or key in out:
                    raise FormatError("CAR header: bad or duplicate map key")
                out[key] = self.item(depth + 1)
            return out
        if major == 6 and value == _CID_TAG:
            inner = self.item(depth + 1)
            if not isinstance(inner, bytes) or not inner.startswith(b"\x00"):
                raise FormatError("CAR header: tag 42 must wrap 0x00-prefixed bytes")
            return CID.from_bytes(inner[1:])
        raise FormatError(f"CAR header: unsupported CBOR item (major type {major})")


def decode_header(data: bytes) -> list[CID]:
    """Roots of a CAR v1 header; :class:`FormatError` for anything else."""
    reader = _Cbor(data)
    obj = reader.item()
    if reader.pos != len(data):
        raise FormatError("CAR header: trailing bytes")
    if not isinstance(obj, dict) or obj.get("version") != 1:
        raise FormatError("not a CAR v1 header (version must be 1)")
    roots = obj.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise FormatError("CAR header: roots must be a list of CIDs")
    return list(roots)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- export / import


def iter_car(store: Blockstore, root: str | CID) -> Iterator[bytes]:
    """The CAR v1 of the DAG under ``root`` as a stream of byte strings (bounded memory)."""
    root_cid = parse_cid(root)
    header = encode_header([root_cid])
    yield encode_varint(len(header)) + header
    seen: set[bytes] = set()
    for cid, block in store.walk(root_cid):
        key = cid.to_bytes()
        if cid.multihash in seen:
            continue
        seen.add(cid.multihash)
        yield encode_varint(len(key) + len(block)) + key
        yield block


def export_car(store: Blockstore, root: str | CID, out: BinaryIO) -> int:
    """Write the CAR of ``root`` to ``out``; return the bytes written."""
    total = 0
    for piece in iter_car(store, root):
        out.write(piece)
        total += len(piece)
    return total


def read_car(stream: BinaryIO) -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """Parse a CAR v1 stream: its roots and an iterator of verified ``(cid, block)`` sections."""
    length = _read_varint(stream, allow_eof=False) or 0
    if length == 0 or length > MAX_HEADER_SIZE:
        raise FormatError(f"CAR header length {length} out of range")
    roots = decode_header(_read_exact(stream, length))

    def sections() -> Iterator[tuple[CID, bytes]]:
        while True:
            size = _read_varint(stream, allow_eof=True)
            if size is None:
                return
            if size == 0 or size > MAX_BLOCK_SIZE + 64:
                raise FormatError(f"CAR section length {size} out of range")
            body = _read_exact(stream, size)
            cid, pos = read_cid(body, 0)
            block = body[pos:]
            if hashlib.sha256(block).digest() != cid.digest:
                raise IntegrityError(f"CAR block {cid} does not hash to its CID")
            if cid.codec == DAG_PB:
                decode_pbnode(block)
            yield cid, block

    return roots, sections()


def import_car(store: Blockstore, stream: BinaryIO, *, pin: bool = True) -> ImportResult:
    """Store every block of a CAR (each verified first); pin its roots (whose DAGs must then be
    complete, as ``ipfs dag import`` requires)."""
    roots, sections = read_car(stream)
    count = 0
    for cid, block in sections:
        store.put_block(cid, block)
        count += 1
    if pin:
        for root in roots:
            store.pin(str(root))
    return ImportResult(tuple(str(r) for r in roots), count)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise FormatError("CAR truncated")
    return data


def _read_varint(stream: BinaryIO, *, allow_eof: bool) -> int | None:
    value = shift = 0
    first = True
    while True:
        byte = stream.read(1)
        if not byte:
            if first and allow_eof:
                return None
            raise FormatError("CAR truncated inside a varint")
        first = False
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise FormatError("CAR varint too long")
