"""The model/update file format: canonical safetensors with fedledger metadata (one owner).

SPEC "Update and model files": a model or an update is a safetensors file; serialisation is
canonical; ``contentHash`` is the sha256 of the file's bytes; compressed encodings are declared
in metadata. Pickle is never read or written.

File layout — safetensors (https://github.com/huggingface/safetensors#format)::

    [8 bytes: N, u64 little-endian][N bytes: JSON header, space-padded][data buffer]

    header = {"__metadata__": {str: str}, "<name>": {"data_offsets": [begin, end],
              "dtype": "F32", "shape": [d0, ...]}, ...}

Canonical form (what :func:`encode_model` / :func:`encode_update` write, byte for byte):

* header JSON with keys sorted at every level, no whitespace (``separators=(",", ":")``), ASCII
  only, padded with spaces so the data buffer starts at a multiple of 8;
* data buffer order: by element size descending, then dtype name, then tensor name (UTF-8 byte
  order) — every tensor is naturally aligned, as in the reference writer, which also orders by
  dtype first; offsets contiguous from 0, no gap, no trailing bytes;
* little-endian C-order tensor bytes; ``-0.0`` and NaN payloads kept as given.

Tensor order is therefore *not* information carried by a file: :class:`Decoded` returns tensors
sorted by name. Callers that need the torch ``state_dict`` order look the names up in it.

Parser (:func:`read_safetensors`, used by :func:`decode`) accepts any valid safetensors layout and
rejects everything else with :class:`~fedledger.errors.FormatError` (the ``MALFORMED`` verdict):
file and header size caps, header must be a UTF-8 JSON object with no duplicate keys, nested
at most :data:`MAX_HEADER_DEPTH` deep, numbers of at most :data:`MAX_HEADER_DIGITS` digits and
at most :data:`MAX_HEADER_VALUES` values (bounds checked before parsing: :mod:`fedledger.safejson`),
dtype in :data:`ALLOWED_DTYPES`, shapes of non-negative ints with at most :data:`MAX_NDIM` dims,
offsets matching ``shape × itemsize``, all tensors tiling ``[0, len(buffer))`` exactly (no
overlap, no gap, no trailing junk), names matching :data:`NAME_RE`. Every number a file
declares (dims, offsets, a top-k ``::shape``) is bounded before it is used in arithmetic, so
decoding costs CPU and memory in proportion to the file and the ``max_elements`` allowed.

fedledger metadata (all strings): ``fedledger.version`` (``"1"``), ``fedledger.kind``
(``model`` | ``update``), ``fedledger.task``, ``fedledger.round`` (decimal), ``fedledger.base``
(updates: ``0x`` sha256 of the base model file), ``fedledger.encoding`` (``fp32`` | ``fp16`` |
``int8`` | ``topk`` | ``int32``), ``fedledger.fixed_point`` (``int32`` updates only, and required
there: the fixed-point format, exactly ``{"coordinate":"int32","frac_bits":N}`` with ``N`` in
0..31, canonical JSON matched as a string, never parsed), ``fedledger.contributor`` (updates: the address that submits it on chain,
written ``0x`` + 40 lowercase hex and compared case-insensitively), plus any extra ``str → str``
keys (e.g. ``fedledger.dp.epsilon``).

The contributor binds an update to its author: ``contentHash`` covers it, so a copy of another's
pending update (its ``contentHash`` and ``cid`` landed first from another address) names someone
else, and validators judge it ``COPIED`` (:func:`fedledger.protocol.rounds.judge_round`); an update that
names no contributor is ``MALFORMED``. :func:`decode` reads the key, the judge requires it.

Encodings, per tensor ``<name>`` (``::`` is reserved for auxiliary tensors; model names never
contain it):

* ``fp32`` — ``<name>``: F32.
* ``fp16`` — ``<name>``: F16 (round to nearest even; decoded exactly back to float32).
* ``int8`` — ``<name>``: I8 in ``[-127, 127]`` and ``<name>::scale``: F32 scalar; symmetric,
  ``scale = max|x| / 127``, ``q = rint(x / scale)``; decoded as ``q * scale`` in float32.
* ``topk`` — ``<name>::indices``: I32 (I64 if the tensor has ≥ 2**31 elements) strictly
  increasing flat indices, ``<name>::values``: F32, ``<name>::shape``: I64 dense shape; the
  ``k = ceil(ratio × size)`` largest magnitudes, ties broken by lower index. Decoded densely with
  zeros elsewhere. Error feedback lives on the client in :class:`Residual`.
* ``int32`` (updates of a fixed-point task, :mod:`fedledger.protocol.fixedpoint`) — ``<name>``:
  I32, the delta quantized to the format ``fedledger.fixed_point`` names
  (``round_half_even(x * 2**frac_bits)``; a value out of the int32 range is refused, never
  wrapped).  Decoded as int32 tensors, not through float: :attr:`Decoded.fixed_point` says their
  scale.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from fedledger import safejson
from fedledger.content.digests import (
    sha256_file as sha256_file,  # re-exported: the format hashes its files
)
from fedledger.content.digests import sha256_hex as sha256_hex
from fedledger.errors import FormatError
from fedledger.protocol import fixedpoint
from fedledger.protocol.fixedpoint import FixedPointFormat

FORMAT_VERSION = "1"
KINDS = ("model", "update")
ENCODINGS = ("fp32", "fp16", "int8", "topk")
"""The float encodings: decoded to float32 tensors, taken by every task."""
FIXED_ENCODINGS = ("int32",)
"""The fixed-point encodings: decoded to int32 tensors, taken by fixed-point tasks only."""
UPDATE_ENCODINGS = ENCODINGS + FIXED_ENCODINGS
Kind = Literal["model", "update"]
Encoding = Literal["fp32", "fp16", "int8", "topk", "int32"]

DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 16 * 1024**2
MAX_TENSORS = 100_000
MAX_NDIM = 8
MAX_METADATA_KEYS = 1024
MAX_HEADER_DEPTH = 3
"""A header nests exactly this deep (object → tensor entry → shape list): deeper is invalid."""
MAX_HEADER_DIGITS = 19
"""Every number in a header is a dim or an offset, below 2**62: at most 19 digits."""
MAX_HEADER_VALUES = MAX_TENSORS * (6 + MAX_NDIM) + MAX_METADATA_KEYS + 2
"""Values a valid header can hold: per tensor its entry, dtype, shape, dims, offsets."""
DEFAULT_MAX_ELEMENTS = 2**28
"""Cap on the dense float32 elements a decoded file may expand to (top-k expands)."""
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,254}")
"""A tensor name in a fedledger file (a torch ``state_dict`` key); ``::`` suffixes are ours."""
_HASH_RE = re.compile(r"0x[0-9a-f]{64}")
_UINT_RE = re.compile(r"0|[1-9][0-9]{0,19}")

ALLOWED_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I8": np.dtype("i1"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}
_DTYPE_NAMES = {dt: name for name, dt in ALLOWED_DTYPES.items()}
_AUX = {"int8": ("scale",), "topk": ("indices", "values", "shape")}

MetaKey = str
K_VERSION: MetaKey = "fedledger.version"
K_KIND: MetaKey = "fedledger.kind"
K_TASK: MetaKey = "fedledger.task"
K_ROUND: MetaKey = "fedledger.round"
K_BASE: MetaKey = "fedledger.base"
K_ENCODING: MetaKey = "fedledger.encoding"
K_CONTRIBUTOR: MetaKey = "fedledger.contributor"
K_FIXED_POINT: MetaKey = "fedledger.fixed_point"
_RESERVED = (K_VERSION, K_KIND, K_TASK, K_ROUND, K_BASE, K_ENCODING, K_CONTRIBUTOR, K_FIXED_POINT)
_FIXED_POINT_RE = re.compile(r'\{"coordinate":"int32","frac_bits":(0|[1-9][0-9]?)\}')
"""The one spelling of ``fedledger.fixed_point`` (canonical JSON of the format): matched, not
parsed, so a file's metadata never reaches a JSON parser a second time."""
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
"""An address as ``fedledger.contributor`` holds it (written lowercase, read in any case)."""


# --------------------------------------------------------------------------- raw safetensors


@dataclass(frozen=True)
class TensorInfo:
    """One header entry."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed and validated safetensors header; ``data_start`` is where the buffer begins."""

    tensors: tuple[TensorInfo, ...]  # in data-buffer order
    metadata: dict[str, str]
    data_start: int
    data_size: int


def parse_header(
    prefix: bytes | memoryview, total_size: int, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Header:
    """Validate a safetensors header given the file's first ``8 + N`` bytes and its total size.

    ``prefix`` may be longer than the header (e.g. the whole file).
    """
    if total_size > max_bytes:
        raise FormatError(f"file is {total_size} bytes, over the {max_bytes}-byte limit")
    if total_size < 8 or len(prefix) < 8:
        raise FormatError("file shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack_from("<Q", prefix, 0)
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if 8 + n > total_size or 8 + n > len(prefix):
        raise FormatError(f"header length {n} runs past the end of the file")
    raw = bytes(prefix[8 : 8 + n]).rstrip(b" ")
    if not raw.startswith(b"{"):
        raise FormatError("header is not a JSON object")
    obj = safejson.loads(
        raw,
        what="safetensors header",
        max_bytes=MAX_HEADER_BYTES,
        max_depth=MAX_HEADER_DEPTH,
        max_number_digits=MAX_HEADER_DIGITS,
        max_items=MAX_HEADER_VALUES,
    )
    if not isinstance(obj, dict):
        raise FormatError("header is not a JSON object")

    metadata = _parse_metadata(obj.pop("__metadata__", {}))
    if len(obj) > MAX_TENSORS:
        raise FormatError(f"more than {MAX_TENSORS} tensors")
    data_start = 8 + n
    data_size = total_size - data_start
    infos = sorted(
        (_parse_entry(name, entry, max_bytes) for name, entry in obj.items()),
        key=lambda t: (t.begin, t.end),
    )
    pos = 0
    for info in infos:
        if info.begin != pos:
            what = "overlaps the previous tensor" if info.begin < pos else "leaves a gap"
            raise FormatError(f"tensor {info.name!r} at offset {info.begin} {what}")
        pos = info.end
    if pos != data_size:
        if pos > data_size:
            raise FormatError(f"tensor data ends at {pos}, past the {data_size}-byte buffer")
        raise FormatError(f"{data_size - pos} trailing bytes after the last tensor")
    return Header(tuple(infos), metadata, data_start, data_size)


def _parse_metadata(meta: object) -> dict[str, str]:
    if not isinstance(meta, dict):
        raise FormatError("__metadata__ is not an object")
    if len(meta) > MAX_METADATA_KEYS:
        raise FormatError(f"more than {MAX_METADATA_KEYS} metadata keys")
    for key, value in meta.items():
        if not isinstance(value, str):
            raise FormatError(f"metadata value for {_shown(key)} is not a string")
    return dict(meta)


def _parse_entry(name: str, entry: object, max_bytes: int) -> TensorInfo:
    if not _valid_name(name):
        raise FormatError(f"invalid tensor name {_shown(name)}")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"tensor {name!r}: entry must hold exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise FormatError(f"tensor {name!r}: dtype {_shown(dtype)} not allowed ({_allowed()})")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_uint(d) for d in shape):
        raise FormatError(f"tensor {name!r}: shape must be at most {MAX_NDIM} non-negative ints")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
        raise FormatError(f"tensor {name!r}: data_offsets must be two non-negative ints")
    begin, end = offsets
    itemsize = ALLOWED_DTYPES[dtype].itemsize
    if math.prod(d for d in shape if d) * itemsize > max_bytes:
        # an empty tensor may still declare huge other dims, e.g. [0, 2**62]: numpy refuses
        # to shape even zero bytes that way, so the parser must refuse it first
        raise FormatError(f"tensor {name!r}: shape {shape} is larger than any allowed file")
    nbytes = math.prod(shape) * itemsize
    if end < begin or end - begin != nbytes:
        raise FormatError(
            f"tensor {name!r}: offsets [{begin}, {end}] do not hold {shape} × {dtype} "
            f"({nbytes} bytes)"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def _valid_name(name: str) -> bool:
    base, sep, suffix = name.partition("::")
    if not NAME_RE.fullmatch(base):
        return False
    return not sep or suffix in ("scale", "indices", "values", "shape")


def _shown(value: object, limit: int = 80) -> str:
    """``repr`` of a value read from a file, cut short: a reason must not carry megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _allowed() -> str:
    return ", ".join(ALLOWED_DTYPES)


@dataclass(frozen=True)
class RawFile:
    """A parsed safetensors file: tensors in their stored dtype, in file order."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    header: Header


def read_safetensors(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    copy: bool = True,
) -> RawFile:
    """Parse a whole safetensors file held in memory; tensors are fresh, writable copies, or
    with ``copy=False`` read-only views of ``data`` itself (which they keep alive).

    The data section is copied once, and each tensor is a view of its own bytes in that copy:
    tensors stored end to end stay end to end in memory, so :func:`fedledger.protocol.aggregation.flatten`
    can take them as one vector without copying again."""
    view = memoryview(data).cast("B")
    header = parse_header(view, len(view), max_bytes=max_bytes)
    section = np.frombuffer(view, dtype=np.uint8, count=header.data_size, offset=header.data_start)
    if copy:
        section = section.copy()
    else:
        section.flags.writeable = False
    tensors: dict[str, np.ndarray] = {}
    for info in header.tensors:
        dt = ALLOWED_DTYPES[info.dtype]
        piece = section[info.begin : info.end]
        if info.begin % dt.itemsize:  # unaligned for its dtype (legal, never ours): its own copy
            piece = piece.copy()
        tensors[info.name] = piece.view(dt).reshape(info.shape)
    return RawFile(tensors, header.metadata, header)


def read_safetensors_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> RawFile:
    """Like :func:`read_safetensors` but streams from a file: never holds more than one tensor
    beyond the result, and checks the size before reading anything."""
    with open(path, "rb") as f:
        return read_safetensors_stream(f, os.fstat(f.fileno()).st_size, max_bytes=max_bytes)


def read_safetensors_stream(
    f: BinaryIO, total_size: int, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> RawFile:
    """Parse a safetensors file from a binary stream of known size."""
    if total_size > max_bytes:
        raise FormatError(f"file is {total_size} bytes, over the {max_bytes}-byte limit")
    head = f.read(8)
    if len(head) < 8:
        raise FormatError("file shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or 8 + n > total_size:
        raise FormatError(f"header length {n} is over the limit or past the end of the file")
    body = f.read(n)
    header = parse_header(head + body, total_size, max_bytes=max_bytes)
    tensors: dict[str, np.ndarray] = {}
    for info in header.tensors:
        dt = ALLOWED_DTYPES[info.dtype]
        arr = np.empty(info.shape, dtype=dt)
        want = info.end - info.begin
        got = f.readinto(memoryview(arr.reshape(-1)).cast("B")) if want else 0  # type: ignore[attr-defined,arg-type]
        if got != want:
            raise FormatError(f"file truncated inside tensor {info.name!r}")
        tensors[info.name] = arr
    if f.read(1):
        raise FormatError("file is longer than its declared size")
    return RawFile(tensors, header.metadata, header)


def write_safetensors_parts(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> list[bytes | memoryview]:
    """Canonical safetensors file as a list of buffers (join them or write them in order).

    Tensors must already have an allowed dtype; they are written in canonical order.
    """
    entries = []
    for name, arr in tensors.items():
        if not _valid_name(name):
            raise ValueError(f"invalid tensor name {name!r} (must match {NAME_RE.pattern})")
        dt = np.dtype(arr.dtype).newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        if dt not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {arr.dtype} not allowed ({_allowed()})")
        if arr.ndim > MAX_NDIM:
            raise ValueError(f"tensor {name!r}: more than {MAX_NDIM} dimensions")
        entries.append((name, _DTYPE_NAMES[dt], np.require(arr, dtype=dt, requirements="C")))
    entries.sort(key=_canonical_key)
    header_obj: dict[str, Any] = {"__metadata__": dict(metadata)}
    pos = 0
    for name, dtype, arr in entries:
        header_obj[name] = {
            "data_offsets": [pos, pos + arr.nbytes],
            "dtype": dtype,
            "shape": list(arr.shape),
        }
        pos += arr.nbytes
    header = _header_json(header_obj)
    parts: list[bytes | memoryview] = [struct.pack("<Q", len(header)), header]
    for _, _, arr in entries:
        if arr.nbytes:
            parts.append(memoryview(arr).cast("B"))  # type: ignore[arg-type]
    return parts


def _canonical_key(entry: tuple[str, str, np.ndarray]) -> tuple[int, str, bytes]:
    name, dtype, _ = entry
    return (-ALLOWED_DTYPES[dtype].itemsize, dtype, name.encode("utf-8"))


def _header_json(obj: Mapping[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    raw = text.encode("ascii")
    return raw + b" " * (-(8 + len(raw)) % 8)


def write_safetensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """Canonical safetensors bytes (one copy of the tensor data)."""
    return b"".join(write_safetensors_parts(tensors, metadata))


def is_canonical(data: bytes | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bool:
    """True if ``data`` is exactly what the canonical writer produces for its own content."""
    raw = read_safetensors(data, max_bytes=max_bytes)
    return write_safetensors(raw.tensors, raw.metadata) == bytes(data)


# --------------------------------------------------------------------------- fedledger files


def fixed_point_metadata(fmt: FixedPointFormat) -> str:
    """``fedledger.fixed_point`` for ``fmt``: its canonical JSON, e.g.
    ``{"coordinate":"int32","frac_bits":24}``."""
    return json.dumps(fmt.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def parse_fixed_point_metadata(value: str | None) -> FixedPointFormat:
    """The format an ``int32`` file declares; FormatError unless ``value`` is exactly what
    :func:`fixed_point_metadata` writes for some ``frac_bits`` in 0..31."""
    m = _FIXED_POINT_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) > fixedpoint.MAX_FRAC_BITS:
        raise FormatError(
            f"{K_FIXED_POINT} is {_shown(value)}, expected "
            f'{{"coordinate":"int32","frac_bits":N}} with N in 0..{fixedpoint.MAX_FRAC_BITS}',
            hint="encode the update with this fedledger (task.submit, codec.encode_update)",
        )
    return FixedPointFormat(frac_bits=int(m.group(1)))


@dataclass(frozen=True)
class Decoded:
    """A decoded fedledger file: dense float32 tensors (int32 ones for the ``int32`` encoding,
    in the scale :attr:`fixed_point` names) and the file's metadata."""

    kind: Kind
    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]

    @property
    def task_id(self) -> int:
        return int(self.metadata[K_TASK])

    @property
    def round(self) -> int:
        return int(self.metadata[K_ROUND])

    @property
    def encoding(self) -> Encoding:
        return self.metadata[K_ENCODING]  # type: ignore[return-value]

    @property
    def base_hash(self) -> str | None:
        return self.metadata.get(K_BASE)

    @property
    def contributor(self) -> str | None:
        """The address the file names as its contributor (lowercased), ``None`` if it names none;
        whether it is an address at all is the judge's check (:mod:`fedledger.protocol.rounds`)."""
        named = self.metadata.get(K_CONTRIBUTOR)
        return None if named is None else named.lower()

    @property
    def fixed_point(self) -> FixedPointFormat | None:
        """The fixed-point format of an ``int32`` file's tensors; ``None`` for float encodings."""
        value = self.metadata.get(K_FIXED_POINT)
        return None if value is None else parse_fixed_point_metadata(value)

    @property
    def extra(self) -> dict[str, str]:
        return {k: v for k, v in self.metadata.items() if k not in _RESERVED}


@dataclass
class Residual:
    """Client-side error feedback for lossy encodings (top-k sparsification above all).

    Pass the same instance to every :func:`encode_update` call of one contributor: the part of
    each delta that the encoding dropped is added to the next delta before it is encoded.
    """

    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def apply(self, delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name, arr in delta.items():
            r = self.tensors.get(name)
            out[name] = arr + r if r is not None and r.shape == arr.shape else arr
        return out

    def update(self, corrected: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> None:
        self.tensors = {name: corrected[name] - sent[name] for name in corrected}


TopKResidual = Residual


def encode_model(
    tensors: Mapping[str, np.ndarray],
    *,
    task_id: int,
    round: int,
    encoding: Encoding = "fp32",
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """A model file (global weights of ``round``); ``fp32`` unless asked (``fp16`` allowed)."""
    if encoding not in ("fp32", "fp16"):
        raise ValueError("a model is stored as fp32 or fp16")
    meta = _metadata("model", task_id, round, None, encoding, extra)
    return write_safetensors(_encode_tensors(tensors, encoding, 0.0), meta)


def encode_update(
    delta: Mapping[str, np.ndarray],
    *,
    task_id: int,
    round: int,
    base_hash: str,
    contributor: str,
    encoding: Encoding = "fp32",
    extra: Mapping[str, str] | None = None,
    residual: Residual | None = None,
    topk_ratio: float = 0.01,
    fixed_point: FixedPointFormat | None = None,
) -> bytes:
    """An update file holding ``delta = trained − global`` for ``round``.

    ``base_hash`` is the ``0x`` sha256 of the global model file the delta is relative to.
    ``contributor`` is the address that will submit it (any case; written lowercase): the file
    is bound to it, and submitted by anyone else it is judged ``COPIED``. With ``residual``,
    error feedback is applied before encoding and the residual updated after.
    ``fixed_point`` is the task's format, for the ``int32`` encoding only (default
    ``FixedPointFormat()``, frac_bits 24; :func:`fedledger.flows.submit.encode` passes the
    task's): each tensor is quantized to it, and a value out of range raises
    :class:`~fedledger.protocol.fixedpoint.FixedPointRangeError` naming the tensor and element.
    """
    if not (isinstance(base_hash, str) and _HASH_RE.fullmatch(base_hash)):
        raise ValueError("base_hash must be 0x followed by 64 lowercase hex digits")
    if not (isinstance(contributor, str) and ADDRESS_RE.fullmatch(contributor)):
        raise ValueError(f"contributor must be an address, 0x + 40 hex digits, got {contributor!r}")
    if encoding == "topk" and not 0.0 < topk_ratio <= 1.0:
        raise ValueError("topk_ratio must be in (0, 1]")
    if fixed_point is not None and encoding != "int32":
        raise ValueError(f"fixed_point is the int32 encoding's format; {encoding} takes none")
    if encoding == "int32" and fixed_point is None:
        fixed_point = FixedPointFormat()  # the documented default, frac_bits 24
    meta = _metadata("update", task_id, round, base_hash, encoding, extra, contributor.lower())
    if fixed_point is not None:
        meta[K_FIXED_POINT] = fixed_point_metadata(fixed_point)
    corrected = residual.apply(_check_float32(delta)) if residual is not None else delta
    stored = _encode_tensors(corrected, encoding, topk_ratio, fixed_point)
    if residual is not None:
        residual.update(corrected, _sent(stored, encoding, fixed_point))
    return write_safetensors(stored, meta)


def _sent(
    stored: Mapping[str, np.ndarray], encoding: str, fmt: FixedPointFormat | None
) -> dict[str, np.ndarray]:
    """What validators will read of ``stored``, as float32 (for error feedback)."""
    if fmt is None:
        return _decode_tensors(stored, encoding)
    return {name: fixedpoint.dequantize(arr, fmt) for name, arr in stored.items()}


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    kind: Kind | None = None,
    canonical: bool = False,
    copy: bool = True,
) -> Decoded:
    """Parse and validate a fedledger file; tensors come back dense float32 (int32 for an
    ``int32`` update: :attr:`Decoded.fixed_point` is their format).

    With ``copy=False`` fp32 tensors are read-only views of ``data`` (no copy of a model's
    worth of bytes), for a reader that only reads them, like a validator's screen.

    Raises :class:`FormatError` for anything that is not a valid fedledger file, or not of
    ``kind`` when given, or (with ``canonical=True``) not in canonical form.
    """
    try:
        raw = read_safetensors(data, max_bytes=max_bytes, copy=copy)
        decoded = _interpret(raw, kind, max_elements)
        rewritten = write_safetensors(raw.tensors, raw.metadata) if canonical else None
    except (ValueError, OverflowError) as exc:
        raise _unforeseen(exc) from exc
    if rewritten is not None and rewritten != bytes(data):
        raise FormatError("file is valid but not in canonical form")
    return decoded


def decode_file(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    kind: Kind | None = None,
) -> Decoded:
    """:func:`decode` streamed from a file (no in-memory copy of the whole file)."""
    try:
        return _interpret(read_safetensors_file(path, max_bytes=max_bytes), kind, max_elements)
    except (ValueError, OverflowError) as exc:
        raise _unforeseen(exc) from exc


def _unforeseen(exc: Exception) -> FormatError:
    """A file that slipped past every check above into numpy or int arithmetic is still only a
    bad file: a verdict (MALFORMED), never an exception that stalls its round. (None is known;
    the fuzzers in tests/test_codec_fuzz.py and benchmarks/fuzz_codec.py look for them.)"""
    return FormatError(f"file cannot be decoded: {type(exc).__name__}: {_shown(str(exc), 160)}")


def _metadata(
    kind: str,
    task_id: int,
    round: int,
    base_hash: str | None,
    encoding: str,
    extra: Mapping[str, str] | None,
    contributor: str | None = None,
) -> dict[str, str]:
    if encoding not in UPDATE_ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r} (one of {', '.join(UPDATE_ENCODINGS)})")
    for what, number in (("task_id", task_id), ("round", round)):
        if not (isinstance(number, int) and not isinstance(number, bool) and 0 <= number < 2**64):
            raise ValueError(f"{what} must be a non-negative integer below 2**64")
    meta = {
        K_VERSION: FORMAT_VERSION,
        K_KIND: kind,
        K_TASK: str(task_id),
        K_ROUND: str(round),
        K_ENCODING: encoding,
    }
    if base_hash is not None:
        meta[K_BASE] = base_hash
    if contributor is not None:
        meta[K_CONTRIBUTOR] = contributor
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError("extra metadata must map str to str")
        if key in _RESERVED:
            raise ValueError(f"extra metadata may not set {key!r}")
        meta[key] = value
    if len(meta) > MAX_METADATA_KEYS:
        raise ValueError(f"more than {MAX_METADATA_KEYS} metadata keys")
    return meta


def _check_float32(tensors: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    for name, arr in tensors.items():
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
            got = getattr(arr, "dtype", type(arr).__name__)
            raise TypeError(f"tensor {name!r} must be a float32 numpy array, got {got}")
        if "::" in name or not NAME_RE.fullmatch(name):
            raise ValueError(f"invalid tensor name {name!r} (must match {NAME_RE.pattern})")
    return tensors


def _encode_tensors(
    tensors: Mapping[str, np.ndarray],
    encoding: str,
    topk_ratio: float,
    fmt: FixedPointFormat | None = None,
) -> dict[str, np.ndarray]:
    tensors = _check_float32(tensors)
    if encoding == "fp32":
        return dict(tensors)
    if encoding == "fp16":
        return {name: arr.astype("<f2") for name, arr in tensors.items()}
    if encoding == "int32":
        assert fmt is not None  # encode_update checked it
        return {name: _quantize_int32(name, arr, fmt) for name, arr in tensors.items()}
    out: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        if not np.isfinite(arr).all():
            raise ValueError(
                f"tensor {name!r} holds non-finite values; {encoding} cannot hold them"
            )
        if encoding == "int8":
            q, scale = _quantize_int8(arr)
            out[name] = q
            out[f"{name}::scale"] = scale
        else:
            idx, vals = _topk(arr, topk_ratio)
            out[f"{name}::indices"] = idx
            out[f"{name}::values"] = vals
            out[f"{name}::shape"] = np.asarray(arr.shape, dtype="<i8")
    return out


def _quantize_int32(name: str, arr: np.ndarray, fmt: FixedPointFormat) -> np.ndarray:
    """``arr`` quantized to ``fmt`` in its own shape; the range error names the tensor."""
    try:
        return fixedpoint.quantize(arr, fmt).reshape(arr.shape)
    except fixedpoint.FixedPointRangeError as exc:
        at = list(np.unravel_index(exc.index, arr.shape)) if arr.ndim else []
        where = f" (tensor {name!r} element {[int(i) for i in at]})"
        raise fixedpoint.FixedPointRangeError(exc.index, exc.value, fmt, where) from None


def _quantize_int8(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    peak = np.float32(np.abs(arr).max()) if arr.size else np.float32(0)
    scale = np.float32(peak / np.float32(127))
    if scale == 0:
        return np.zeros(arr.shape, dtype="i1"), np.asarray(scale, dtype="<f4")
    q = np.clip(np.rint(arr / scale), -127, 127).astype("i1")
    return q, np.asarray(scale, dtype="<f4")


def _topk(arr: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    flat = arr.reshape(-1)
    n = flat.size
    k = min(n, math.ceil(ratio * n)) if n else 0
    index_dtype = "<i4" if n < 2**31 else "<i8"
    if k == 0:
        return np.zeros(0, dtype=index_dtype), np.zeros(0, dtype="<f4")
    mag = np.abs(flat)
    threshold = np.partition(mag, n - k)[n - k]
    above = np.flatnonzero(mag > threshold)
    ties = np.flatnonzero(mag == threshold)[: k - above.size]
    idx = np.sort(np.concatenate([above, ties]))
    return idx.astype(index_dtype), flat[idx].astype("<f4")


def _decode_tensors(stored: Mapping[str, np.ndarray], encoding: str) -> dict[str, np.ndarray]:
    """Dense float32 tensors from the stored ones (already validated for ``encoding``); an
    ``int32`` file's tensors as they are (int32: never through float)."""
    if encoding == "int32":
        return dict(stored)
    if encoding in ("fp32", "fp16"):
        return {name: arr.astype(np.float32, copy=False) for name, arr in stored.items()}
    out: dict[str, np.ndarray] = {}
    for name, arr in stored.items():
        base, _, suffix = name.partition("::")
        if encoding == "int8" and not suffix:
            scale = stored[f"{base}::scale"]
            out[base] = arr.astype(np.float32) * np.float32(scale)
        elif encoding == "topk" and suffix == "shape":
            dense = np.zeros(int(math.prod(arr.tolist())), dtype=np.float32)
            dense[stored[f"{base}::indices"]] = stored[f"{base}::values"]
            out[base] = dense.reshape(tuple(arr.tolist()))
    return out


def _declared_size(base: str, shape: np.ndarray, max_elements: int) -> int:
    """The dense size a top-k ``<base>::shape`` tensor declares, once it is known to be a shape:
    an I64 vector of at most :data:`MAX_NDIM` non-negative dims whose non-zero ones multiply
    to at most ``max_elements`` (``[0, 2**62]`` holds nothing, yet numpy cannot shape it).

    The file chooses these numbers, so they are bounded before any Python int arithmetic: a
    ``::shape`` of 80 000 dims near 2**62 would otherwise multiply into a million-digit int
    (seconds of CPU, then a ValueError from the int digit limit when printed)."""
    if shape.dtype != ALLOWED_DTYPES["I64"] or shape.ndim != 1 or shape.size > MAX_NDIM:
        raise FormatError(
            f"topk tensor {base!r}: ::shape must be an I64 vector of at most {MAX_NDIM} dims, "
            f"got {_DTYPE_NAMES.get(shape.dtype, shape.dtype)} of shape {list(shape.shape)}"
        )
    dims = [int(d) for d in shape.tolist()]
    if any(d < 0 for d in dims):
        raise FormatError(f"topk tensor {base!r}: bad dense shape {dims}")
    if math.prod(d for d in dims if d) > max_elements:
        raise FormatError(
            f"topk tensor {base!r}: dense shape {dims} is over the {max_elements}-element limit"
        )
    return math.prod(dims)


def _interpret(raw: RawFile, kind: Kind | None, max_elements: int) -> Decoded:
    meta = raw.metadata
    version = meta.get(K_VERSION)
    if version != FORMAT_VERSION:
        raise FormatError(f"{K_VERSION} is {version!r}, expected {FORMAT_VERSION!r}")
    file_kind = meta.get(K_KIND)
    if file_kind not in KINDS:
        raise FormatError(f"{K_KIND} is {file_kind!r}, expected model or update")
    if kind is not None and file_kind != kind:
        raise FormatError(f"expected a {kind} file, got a {file_kind} file")
    for key in (K_TASK, K_ROUND):
        if not _UINT_RE.fullmatch(meta.get(key, "")) or int(meta[key]) >= 2**64:
            raise FormatError(f"{key} must be a decimal integer, got {meta.get(key)!r}")
    encoding = meta.get(K_ENCODING)
    if encoding not in UPDATE_ENCODINGS or (
        file_kind == "model" and encoding not in ("fp32", "fp16")
    ):
        raise FormatError(f"{K_ENCODING} {encoding!r} not allowed for a {file_kind}")
    if file_kind == "update":
        if not _HASH_RE.fullmatch(meta.get(K_BASE, "")):
            raise FormatError(f"{K_BASE} must be 0x + 64 lowercase hex digits")
    elif K_BASE in meta:
        raise FormatError(f"a model file has no {K_BASE}")
    if encoding == "int32":
        parse_fixed_point_metadata(meta.get(K_FIXED_POINT))
    elif K_FIXED_POINT in meta:
        raise FormatError(f"a {encoding} file has no {K_FIXED_POINT} (only int32 updates do)")
    _check_layout(raw, encoding, max_elements)
    tensors = dict(sorted(_decode_tensors(raw.tensors, encoding).items()))
    return Decoded(file_kind, tensors, dict(meta))  # type: ignore[arg-type]


def _check_layout(raw: RawFile, encoding: str, max_elements: int) -> None:
    """Each encoding's tensor set and dtypes, exactly (see the module docstring)."""
    dtypes = {info.name: info.dtype for info in raw.header.tensors}
    t = raw.tensors
    dense = sum(arr.size for n, arr in t.items() if "::" not in n)
    if encoding == "topk":  # (in any other encoding a ::shape tensor is refused below)
        dense += sum(
            _declared_size(n.partition("::")[0], t[n], max_elements)
            for n in dtypes
            if n.endswith("::shape")
        )
    if dense > max_elements:
        raise FormatError(f"file expands to {dense} elements, over the {max_elements} limit")
    if encoding in ("fp32", "fp16", "int32"):
        want = {"fp32": "F32", "fp16": "F16", "int32": "I32"}[encoding]
        for name, dtype in dtypes.items():
            if "::" in name or dtype != want:
                raise FormatError(f"{encoding} file holds {name!r} as {dtype}")
        return
    groups: dict[str, dict[str, str]] = {}
    for name, dtype in dtypes.items():
        base, _, suffix = name.partition("::")
        groups.setdefault(base, {})[suffix] = dtype
    for base, parts in groups.items():
        if encoding == "int8":
            if parts != {"": "I8", "scale": "F32"} or t[f"{base}::scale"].shape != ():
                raise FormatError(f"int8 tensor {base!r} needs I8 values and an F32 scalar scale")
            if (t[base] == -128).any():
                raise FormatError(f"int8 tensor {base!r} holds -128 (range is -127..127)")
            continue
        if set(parts) != {"indices", "values", "shape"} or parts["values"] != "F32":
            raise FormatError(f"topk tensor {base!r} needs ::indices, ::values (F32) and ::shape")
        if parts["indices"] not in ("I32", "I64") or parts["shape"] != "I64":
            raise FormatError(f"topk tensor {base!r}: indices must be I32/I64, shape I64")
        idx, vals = t[f"{base}::indices"], t[f"{base}::values"]
        size = _declared_size(base, t[f"{base}::shape"], max_elements)
        if idx.ndim != 1 or vals.shape != idx.shape:
            raise FormatError(f"topk tensor {base!r}: indices and values differ in shape")
        # every index in range first: np.diff of int32 wraps, so [1, -2**31] would look
        # increasing; in range, the differences of int64 cannot overflow
        in_range = idx.size == 0 or (int(idx.min()) >= 0 and int(idx.max()) < size)
        if not in_range or (np.diff(idx.astype(np.int64)) <= 0).any():
            raise FormatError(f"topk tensor {base!r}: indices not strictly increasing in range")
