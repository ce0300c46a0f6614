"""dag-pb nodes and their UnixFS payload: the only protobuf fedledger speaks, hand-written.

Specs:

* dag-pb — https://ipld.io/specs/codecs/dag-pb/spec/ ::

      message PBLink { optional bytes Hash = 1; optional string Name = 2;
                       optional uint64 Tsize = 3; }
      message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

  Canonical form: the ``Links`` come *before* ``Data`` on the wire (field order 2 then 1).
  Kubo (go-merkledag) always writes ``Name``, as an empty string for file chunks.
* UnixFS — https://specs.ipfs.tech/unixfs/ ::

      message Data { required DataType Type = 1; optional bytes Data = 2;
                     optional uint64 filesize = 3; repeated uint64 blocksizes = 4;
                     optional uint64 hashType = 5; optional uint64 fanout = 6;
                     optional uint32 mode = 7; optional UnixTime mtime = 8; }

  proto2: ``blocksizes`` is *not* packed (one ``0x20 varint`` per entry).

Only what the file importer needs is written; the parser reads any well-formed node and raises
:class:`~fedledger.errors.FormatError` on anything that is not one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedledger.errors import FormatError

# UnixFS DataType values.
UNIXFS_RAW = 0
UNIXFS_DIRECTORY = 1
UNIXFS_FILE = 2
UNIXFS_METADATA = 3
UNIXFS_SYMLINK = 4
UNIXFS_HAMT_SHARD = 5

_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 varint (protobuf, multiformats unsigned-varint)."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int, what: str = "varint") -> tuple[int, int]:
    """Read a varint at ``pos``; return ``(value, next_pos)``. At most 9 bytes (63 bits)."""
    value = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise FormatError(f"truncated {what}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift > 0:
                raise FormatError(f"non-minimal {what}")
            return value, pos
        shift += 7
        if shift >= 63:
            raise FormatError(f"{what} too long")


def _len_field(field_no: int, payload: bytes) -> bytes:
    return encode_varint(field_no << 3 | _WIRE_LEN) + encode_varint(len(payload)) + payload


def _varint_field(field_no: int, value: int) -> bytes:
    return encode_varint(field_no << 3 | _WIRE_VARINT) + encode_varint(value)


def _fields(buf: bytes | memoryview, what: str) -> list[tuple[int, int, int | memoryview]]:
    """Split a protobuf message into ``(field_no, wire_type, value)``; skips nothing silently."""
    mv = memoryview(buf)
    pos = 0
    out: list[tuple[int, int, int | memoryview]] = []
    while pos < len(mv):
        key, pos = decode_varint(mv, pos, f"{what} field key")
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise FormatError(f"{what}: field number 0")
        if wire == _WIRE_VARINT:
            value, pos = decode_varint(mv, pos, f"{what} field {field_no}")
            out.append((field_no, wire, value))
        elif wire == _WIRE_LEN:
            length, pos = decode_varint(mv, pos, f"{what} length")
            if pos + length > len(mv):
                raise FormatError(f"{what}: field {field_no} runs past the end")
            out.append((field_no, wire, mv[pos : pos + length]))
            pos += length
        elif wire in (_WIRE_I64, _WIRE_I32):
            size = 8 if wire == _WIRE_I64 else 4
            if pos + size > len(mv):
                raise FormatError(f"{what}: field {field_no} runs past the end")
            out.append((field_no, wire, int.from_bytes(mv[pos : pos + size], "little")))
            pos += size
        else:
            raise FormatError(f"{what}: unsupported wire type {wire}")
    return out


@dataclass(frozen=True)
class PBLink:
    """A dag-pb link: the child's CID bytes, its name and its cumulative size (``Tsize``)."""

    cid: bytes
    tsize: int
    name: str = ""


@dataclass(frozen=True)
class PBNode:
    """A decoded dag-pb node."""

    links: tuple[PBLink, ...]
    data: bytes | None


@dataclass(frozen=True)
class UnixFSData:
    """The UnixFS ``Data`` message carried in a dag-pb node's ``Data`` field."""

    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default_factory=tuple)


def encode_pbnode(links: list[PBLink] | tuple[PBLink, ...], data: bytes | None) -> bytes:
    """Serialise a dag-pb node canonically (links, in order, then data)."""
    parts: list[bytes] = []
    for link in links:
        body = (
            _len_field(1, link.cid)
            + _len_field(2, link.name.encode("utf-8"))
            + _varint_field(3, link.tsize)
        )
        parts.append(_len_field(2, body))
    if data is not None:
        parts.append(_len_field(1, data))
    return b"".join(parts)


def decode_pbnode(block: bytes | memoryview) -> PBNode:
    """Parse a dag-pb block, rejecting what the spec forbids (unknown fields, bad order)."""
    links: list[PBLink] = []
    data: bytes | None = None
    for field_no, wire, value in _fields(block, "dag-pb node"):
        if field_no == 2 and wire == _WIRE_LEN:
            if data is not None:
                raise FormatError("dag-pb node: link after data")
            assert isinstance(value, memoryview)
            links.append(_decode_link(value))
        elif field_no == 1 and wire == _WIRE_LEN:
            if data is not None:
                raise FormatError("dag-pb node: duplicate data field")
            assert isinstance(value, memoryview)
            data = bytes(value)
        else:
            raise FormatError(f"dag-pb node: unexpected field {field_no}")
    return PBNode(tuple(links), data)


def _decode_link(buf: memoryview) -> PBLink:
    cid: bytes | None = None
    name = ""
    tsize = 0
    for field_no, wire, value in _fields(buf, "dag-pb link"):
        if field_no == 1 and wire == _WIRE_LEN:
            assert isinstance(value, memoryview)
            cid = bytes(value)
        elif field_no == 2 and wire == _WIRE_LEN:
            assert isinstance(value, memoryview)
            try:
                name = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError("dag-pb link: name is not UTF-8") from exc
        elif field_no == 3 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            tsize = value
        else:
            raise FormatError(f"dag-pb link: unexpected field {field_no}")
    if cid is None:
        raise FormatError("dag-pb link without a hash")
    return PBLink(cid, tsize, name)


def encode_unixfs(
    type_: int, data: bytes = b"", filesize: int | None = None, blocksizes: tuple[int, ...] = ()
) -> bytes:
    """Serialise a UnixFS ``Data`` message the way go-unixfs does (empty data is omitted)."""
    out = _varint_field(1, type_)
    if data:
        out += _len_field(2, data)
    if filesize is not None:
        out += _varint_field(3, filesize)
    for size in blocksizes:
        out += _varint_field(4, size)
    return out


def decode_unixfs(buf: bytes | memoryview) -> UnixFSData:
    """Parse a UnixFS ``Data`` message (fields 5..8 are accepted and ignored)."""
    type_: int | None = None
    data = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for field_no, wire, value in _fields(buf, "UnixFS data"):
        if field_no == 1 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            type_ = value
        elif field_no == 2 and wire == _WIRE_LEN:
            assert isinstance(value, memoryview)
            data = bytes(value)
        elif field_no == 3 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            filesize = value
        elif field_no == 4 and wire == _WIRE_VARINT:
            assert isinstance(value, int)
            blocksizes.append(value)
        elif field_no in (5, 6, 7, 8):
            continue
        else:
            raise FormatError(f"UnixFS data: unexpected field {field_no}")
    if type_ is None:
        raise FormatError("UnixFS data without a Type")
    return UnixFSData(type_, data, filesize, tuple(blocksizes))
