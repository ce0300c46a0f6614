"""Committee encryption of an update file: the envelope format and its one reader and writer.

A private task's contributor seals each update file to the task's committee (its validators and
auditors, by their X25519 public keys); the chain records the envelope's sha256 and CID, and the
plaintext's sha256 and tensorRoot travel inside the envelope's authenticated header, so anyone
holding a committee key can check an update against the same commitments the verdicts use.

Construction (standard parts only, no new cryptography):

* a fresh random 256-bit content key ``K`` per envelope;
* the file is cut into :data:`SEGMENT_BYTES` (1 MiB) segments, each sealed with AES-256-GCM
  (``cryptography``, OpenSSL) under ``K``, nonce ``nonce_prefix || uint32 segment index``,
  associated data the sha256 of the header (so every segment is bound to every header field:
  task, round, contributor, the commitments, the recipient list);
* ``K`` is wrapped to each recipient with a libsodium sealed box (``crypto_box_seal``: an
  ephemeral X25519 key, XSalsa20-Poly1305; PyNaCl's :class:`nacl.public.SealedBox`).

Segments keep each AES-GCM call far below its per-call and per-nonce limits for any file the
codec accepts, and let the plaintext be hashed while it is hot in cache.  A segment cannot be
dropped, repeated or moved: its index is in its nonce and the header fixes the plaintext size.

AES-GCM is not key-committing: a dishonest contributor could wrap different keys to different
members so that one ciphertext opens to different plaintexts.  The committed plaintext sha256
closes that: :func:`open_envelope` refuses a plaintext that does not hash to it, so every member
who opens an envelope gets the same bytes.  (A contributor can still wrap a key that does not
open for some member; that member gets :class:`FormatError`, see docs/privacy.md.)

Format, version 1, all integers big-endian::

    magic            8   b"FLSEAL\\r\\n"
    version          1   1
    task_id         32   uint256
    round            8   uint64
    contributor     20   address, or 20 zero bytes for none
    plaintext_sha256 32
    tensor_root     32   the plaintext's tensorRoot, zero for a float update
    plaintext_size   8   uint64
    nonce_prefix     8   random
    recipients       4   uint32 n, 1 <= n <= MAX_RECIPIENTS
    n x (key_id 32, wrapped_key 80)   key_id = the recipient's X25519 public key;
                                      strictly increasing (canonical, no duplicates)
    ciphertext          max(1, ceil(size / SEGMENT_BYTES)) segments, each its bytes + 16-byte tag

Everything in an envelope is written by whoever uploaded it: :func:`read_header` checks every
field and the exact total length before anything is allocated or decrypted, and raises
:class:`~fedledger.errors.FormatError` with a hint.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from fedledger.errors import FormatError

__all__ = [
    "KEY_ID_BYTES",
    "MAGIC",
    "MAX_RECIPIENTS",
    "SEGMENT_BYTES",
    "VERSION",
    "Header",
    "NotRecipientError",
    "Opened",
    "Recipient",
    "envelope_size",
    "is_envelope",
    "is_usable_key",
    "open_envelope",
    "read_header",
    "seal",
]

MAGIC = b"FLSEAL\r\n"
VERSION = 1
SEGMENT_BYTES = 1 << 20
KEY_ID_BYTES = 32
CONTENT_KEY_BYTES = 32
TAG_BYTES = 16
WRAPPED_KEY_BYTES = CONTENT_KEY_BYTES + 48  # crypto_box_SEALBYTES: ephemeral key + MAC
MAX_RECIPIENTS = 256
"""A committee is a task's validators and auditors: hundreds at most.  The bound caps what a
header can make a reader parse (256 x 112 bytes), whatever count the header claims."""
DEFAULT_MAX_PLAINTEXT = 2 * 1024**3
"""The codec's own file-size bound (``fedledger.protocol.codec.DEFAULT_MAX_BYTES``)."""

_FIXED = struct.Struct(">8sB32sQ20s32s32sQ8sI")
_RECIPIENT_BYTES = KEY_ID_BYTES + WRAPPED_KEY_BYTES
_ZERO32 = bytes(32)
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NOT_ENVELOPE_HINT = "the stored bytes are not a committee envelope; is this task private?"


class NotRecipientError(FormatError):
    """The envelope is well formed but not encrypted to this key (a validator that joined after
    the update was sealed, or the wrong key file): not evidence against the update."""


@dataclass(frozen=True)
class Recipient:
    """One committee member: its X25519 public key (the key id) and the content key sealed to it."""

    key_id: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class Header:
    """An envelope's authenticated header, readable without a key.

    ``plaintext_hash`` and ``tensor_root`` are ``0x`` hex as the chain and the verdicts write
    them; ``digest`` is the header's sha256, the associated data of every segment."""

    version: int
    task_id: int
    round: int
    contributor: str | None
    plaintext_hash: str
    tensor_root: str
    plaintext_size: int
    nonce_prefix: bytes
    recipients: tuple[Recipient, ...]
    header_size: int
    digest: bytes

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        return tuple(r.key_id for r in self.recipients)

    @property
    def segments(self) -> int:
        return _segments(self.plaintext_size)


@dataclass(frozen=True)
class Opened:
    """A decrypted envelope: the plaintext (checked against ``header.plaintext_hash``) and the
    header.  ``plaintext`` is a fresh buffer owned by the caller (no copy is made of it)."""

    plaintext: bytearray
    header: Header


def _segments(size: int) -> int:
    return max(1, -(-size // SEGMENT_BYTES))


def envelope_size(plaintext_size: int, recipients: int) -> int:
    """Bytes of an envelope of a ``plaintext_size``-byte file sealed to ``recipients`` members."""
    return (
        _FIXED.size
        + recipients * _RECIPIENT_BYTES
        + plaintext_size
        + _segments(plaintext_size) * TAG_BYTES
    )


def is_envelope(data: bytes | bytearray | memoryview) -> bool:
    """True if ``data`` starts with the envelope magic (a safetensors file never does: its first
    8 bytes are a little-endian header length far below this one)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def _bytes32(value: bytes | str, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        if len(value) != 32:
            raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
        return bytes(value)
    if isinstance(value, str) and _HEX32.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise ValueError(f"{what} must be 32 bytes or 0x + 64 hex digits, got {value!r}")


def _key_id(key: bytes | PublicKey) -> bytes:
    raw = bytes(key)
    if len(raw) != KEY_ID_BYTES:
        raise ValueError(f"an X25519 public key is {KEY_ID_BYTES} bytes, got {len(raw)}")
    return raw


def is_usable_key(key: bytes) -> bool:
    """Whether a content key can be sealed to ``key``: 32 bytes and not a low-order X25519
    point (zero, for one), for which libsodium refuses the key exchange.  Keys come from the
    chain, where any validator writes its own: a member's unusable key is left out of the
    committee, never a reason to refuse everyone's updates."""
    if len(key) != KEY_ID_BYTES:
        return False
    try:
        SealedBox(PublicKey(key)).encrypt(b"\0")
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def seal(
    plaintext: bytes | bytearray | memoryview,
    recipients: Iterable[bytes | PublicKey],
    *,
    task_id: int,
    round: int,
    plaintext_hash: bytes | str | None = None,
    tensor_root: bytes | str = _ZERO32,
    contributor: str | None = None,
) -> bytearray:
    """Encrypt ``plaintext`` (an update file) to every key in ``recipients``; the envelope.

    ``plaintext_hash``, when given (the sha256 the caller already holds), is checked against
    the plaintext's, which is computed anyway while encrypting: an envelope never commits to a
    hash its plaintext does not have.  ``tensor_root`` is the plaintext's tensorRoot (zero for a
    float update).  ``contributor`` (the submitting address) binds the envelope to its sender.
    Recipients are sorted and must be distinct.  The result is a bytearray so that an update's
    worth of bytes is not copied again; the store and hashlib take it as it is.
    """
    keys = sorted(_key_id(k) for k in recipients)
    if not keys:
        raise ValueError("an envelope needs at least one recipient")
    if len(keys) > MAX_RECIPIENTS:
        raise ValueError(f"at most {MAX_RECIPIENTS} recipients, got {len(keys)}")
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate recipient key")
    if not 0 <= task_id < 2**256 or not 0 <= round < 2**64:
        raise ValueError("task_id must be a uint256 and round a uint64")
    if contributor is not None and not _ADDRESS.fullmatch(contributor):
        raise ValueError(f"contributor must be 0x + 40 hex digits, got {contributor!r}")
    view = memoryview(plaintext).cast("B")
    size = len(view)
    if size > DEFAULT_MAX_PLAINTEXT:
        raise ValueError(f"plaintext of {size} bytes is over {DEFAULT_MAX_PLAINTEXT}")
    segments = _segments(size)

    # The content hash commits the header, so it is computed first, in one cache-friendly pass.
    h = hashlib.sha256()
    for i in range(segments):
        h.update(view[i * SEGMENT_BYTES : (i + 1) * SEGMENT_BYTES])
    digest = h.digest()
    if plaintext_hash is not None and _bytes32(plaintext_hash, "plaintext_hash") != digest:
        raise ValueError("plaintext_hash is not the sha256 of the plaintext")

    content_key = AESGCM.generate_key(bit_length=256)
    nonce_prefix = os.urandom(8)
    wrapped = []
    for key in keys:
        try:
            box = SealedBox(PublicKey(key)).encrypt(content_key)
        except CryptoError as exc:
            raise ValueError(f"recipient 0x{key.hex()} is not a usable X25519 public key") from exc
        wrapped.append(key + bytes(box))
    header = _FIXED.pack(
        MAGIC,
        VERSION,
        task_id.to_bytes(32, "big"),
        round,
        bytes.fromhex(contributor[2:]) if contributor is not None else bytes(20),
        digest,
        _bytes32(tensor_root, "tensor_root"),
        size,
        nonce_prefix,
        len(keys),
    ) + b"".join(wrapped)
    aad = hashlib.sha256(header).digest()
    out = bytearray(envelope_size(size, len(keys)))
    out[: len(header)] = header
    dst = memoryview(out)
    aead = AESGCM(content_key)
    pos = len(header)
    for i in range(segments):
        piece = view[i * SEGMENT_BYTES : (i + 1) * SEGMENT_BYTES]
        end = pos + len(piece) + TAG_BYTES
        aead.encrypt_into(_nonce(nonce_prefix, i), piece, aad, dst[pos:end])
        pos = end
    return out


def read_header(
    data: bytes | bytearray | memoryview, *, max_plaintext: int = DEFAULT_MAX_PLAINTEXT
) -> Header:
    """Parse and check an envelope's header (no key needed): who it is for and what it commits.

    Checks, before anything is allocated: the magic, the version, the recipient count (1 to
    :data:`MAX_RECIPIENTS`), canonical (strictly increasing) key ids, a plaintext size within
    ``max_plaintext``, and that the envelope is exactly as long as the header says."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n < _FIXED.size:
        if bytes(view[: len(MAGIC)]) == MAGIC[: min(n, len(MAGIC))]:
            raise FormatError(
                f"envelope truncated: {n} bytes, shorter than its {_FIXED.size}-byte fixed header",
                hint="the upload was cut short; fetch it again",
            )
        raise FormatError("not a committee envelope (bad magic)", hint=_NOT_ENVELOPE_HINT)
    (magic, version, task, round_, who, ptext_hash, root, size, prefix, count) = _FIXED.unpack(
        view[: _FIXED.size]
    )
    if magic != MAGIC:
        raise FormatError("not a committee envelope (bad magic)", hint=_NOT_ENVELOPE_HINT)
    if version != VERSION:
        raise FormatError(
            f"committee envelope version {version} is not supported (this reader knows {VERSION})",
            hint="upgrade fedledger to read newer envelopes",
        )
    if not 1 <= count <= MAX_RECIPIENTS:
        raise FormatError(
            f"envelope claims {count} recipients; 1 to {MAX_RECIPIENTS} are allowed",
            hint="the envelope is malformed or hostile",
        )
    header_size = _FIXED.size + count * _RECIPIENT_BYTES
    if n < header_size:
        raise FormatError(
            f"envelope truncated: {n} bytes, its header alone claims {header_size}",
            hint="the upload was cut short; fetch it again",
        )
    if size > max_plaintext:
        raise FormatError(
            f"envelope claims a {size}-byte plaintext, over the {max_plaintext}-byte limit",
            hint="the envelope is malformed or hostile, or raise the limit",
        )
    expected = header_size + size + _segments(size) * TAG_BYTES
    if n != expected:
        raise FormatError(
            f"envelope is {n} bytes but its header describes {expected}",
            hint="truncated or padded: fetch it again; the file is not the one committed",
        )
    recipients = []
    previous = b""
    for i in range(count):
        start = _FIXED.size + i * _RECIPIENT_BYTES
        key_id = bytes(view[start : start + KEY_ID_BYTES])
        if key_id <= previous:
            raise FormatError(
                f"recipient {i} is out of order or repeated",
                hint="a canonical envelope lists each key once, in increasing order",
            )
        previous = key_id
        wrapped = bytes(view[start + KEY_ID_BYTES : start + _RECIPIENT_BYTES])
        recipients.append(Recipient(key_id, wrapped))
    return Header(
        version=version,
        task_id=int.from_bytes(task, "big"),
        round=round_,
        contributor=None if who == bytes(20) else "0x" + who.hex(),
        plaintext_hash="0x" + ptext_hash.hex(),
        tensor_root="0x" + root.hex(),
        plaintext_size=size,
        nonce_prefix=prefix,
        recipients=tuple(recipients),
        header_size=header_size,
        digest=hashlib.sha256(view[:header_size]).digest(),
    )


def open_envelope(
    data: bytes | bytearray | memoryview,
    private_key: PrivateKey,
    *,
    task_id: int | None = None,
    round: int | None = None,
    contributor: str | None = None,
    max_plaintext: int = DEFAULT_MAX_PLAINTEXT,
) -> Opened:
    """Decrypt an envelope with a committee member's key; check it is what it commits to.

    ``task_id``, ``round`` and ``contributor``, when given, must be the header's (an envelope
    copied from another task, round or sender is refused before any decryption).  Raises
    :class:`NotRecipientError` if the key is not among the recipients and
    :class:`~fedledger.errors.FormatError` for everything else: a wrapped key or a segment that
    fails authentication, or a plaintext that does not hash to the committed sha256."""
    header = read_header(data, max_plaintext=max_plaintext)
    _check_context(header, task_id, round, contributor)
    me = bytes(private_key.public_key)
    mine = next((r for r in header.recipients if r.key_id == me), None)
    if mine is None:
        raise NotRecipientError(
            f"envelope is not encrypted to key 0x{me.hex()} ({len(header.recipients)} recipients)",
            hint="a member who joined after the update was sealed reads only later rounds",
        )
    try:
        content_key = SealedBox(private_key).decrypt(mine.wrapped_key)
    except CryptoError as exc:
        raise FormatError(
            "the content key wrapped to this member does not open",
            hint="the envelope was altered or sealed wrongly by its sender",
        ) from exc
    if len(content_key) != CONTENT_KEY_BYTES:
        raise FormatError(
            f"the wrapped content key is {len(content_key)} bytes, not {CONTENT_KEY_BYTES}",
            hint="the envelope was sealed wrongly by its sender",
        )
    view = memoryview(data).cast("B")
    aead = AESGCM(content_key)
    size = header.plaintext_size
    out = bytearray(size)  # read_header bounded size by len(data)
    dst = memoryview(out)
    h = hashlib.sha256()
    pos = header.header_size
    for i in range(header.segments):
        start = i * SEGMENT_BYTES
        length = min(SEGMENT_BYTES, size - start)
        end = pos + length + TAG_BYTES
        target = dst[start : start + length]
        try:
            aead.decrypt_into(_nonce(header.nonce_prefix, i), view[pos:end], header.digest, target)
        except InvalidTag as exc:
            raise FormatError(
                f"envelope segment {i} fails authentication",
                hint="the stored bytes were altered after sealing",
            ) from exc
        h.update(target)
        pos = end
    if "0x" + h.hexdigest() != header.plaintext_hash:
        raise FormatError(
            f"decrypted update does not hash to the committed {header.plaintext_hash}",
            hint="its sender committed a hash of other bytes: judge the update MALFORMED",
        )
    return Opened(plaintext=out, header=header)


def _check_context(
    header: Header, task_id: int | None, round_: int | None, contributor: str | None
) -> None:
    wrong = []
    if task_id is not None and header.task_id != task_id:
        wrong.append(f"task {header.task_id}, expected {task_id}")
    if round_ is not None and header.round != round_:
        wrong.append(f"round {header.round}, expected {round_}")
    if contributor is not None and (header.contributor or "") != contributor.lower():
        wrong.append(f"contributor {header.contributor}, expected {contributor.lower()}")
    if wrong:
        raise FormatError(
            "envelope was sealed for " + "; ".join(wrong),
            hint="a copied or misfiled envelope: judge it as another contributor's update",
        )
