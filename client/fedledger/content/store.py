"""The content-store interface and the one place that picks an implementation.

SPEC "Configuration": ``FEDLEDGER_IPFS`` — unset for the embedded store in the data dir,
``http://host:5001`` for a Kubo RPC endpoint. Both stores return the same CIDs for the same bytes
(``ipfs add --cid-version=1``, see :mod:`fedledger.content.cid`) and verify what they hand back.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from fedledger.content.blockstore import Blockstore, ContentStat, FileRange, RangeError, Source
from fedledger.errors import ConfigError

__all__ = [
    "ContentStat",
    "ContentStore",
    "FileRange",
    "RangeError",
    "RangeReadable",
    "Source",
    "open_store",
]


@runtime_checkable
class ContentStore(Protocol):
    """Content-addressed file storage keyed by CIDv1 (raw leaves, 256 KiB chunks).

    Errors: :class:`~fedledger.errors.ContentNotFoundError` for an unknown CID,
    :class:`~fedledger.errors.IntegrityError` when bytes do not match their CID,
    :class:`~fedledger.errors.StoreError` for everything else the store cannot do,
    :class:`~fedledger.errors.FormatError` for a string that is not a CID.
    """

    def put(self, data: Source, *, pin: bool = True) -> str:
        """Store a file (bytes, binary stream or path); return its CID."""
        ...

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """The whole file, verified against ``cid``."""
        ...

    def get_hashed(
        self, cid: str, *, max_bytes: int | None = None, expect: str | None = None
    ) -> tuple[bytes, str]:
        """:meth:`get` and the file's sha256 (``0x`` hex, as the chain records it), hashed as
        the bytes arrive where the store can. ``expect``, the sha256 the caller will hold the
        bytes to, lets a store skip checks that bytes with that hash cannot fail."""
        ...

    def open(self, cid: str) -> BinaryIO:
        """The file as a stream (verified as it is read)."""
        ...

    def has(self, cid: str) -> bool:
        """True if the store holds the root block of ``cid``."""
        ...

    def pin(self, cid: str) -> None:
        """Keep ``cid`` and its whole DAG (recursive pin)."""
        ...

    def unpin(self, cid: str) -> None:
        """Drop the recursive pin on ``cid``."""
        ...

    def stat(self, cid: str) -> ContentStat:
        """File size and DAG figures of ``cid``."""
        ...


@runtime_checkable
class RangeReadable(Protocol):
    """A store that reads any byte range of a file alone (both stores here do): what a
    validator streaming a round needs (:mod:`fedledger.protocol.streaming`).  Kept apart from
    :class:`ContentStore` so that a store that can only hand out whole files still is one."""

    def open_range(self, cid: str) -> FileRange:
        """Random access to the file behind ``cid`` (its ``size`` and ``read(offset, length)``),
        reading and verifying only the blocks that hold each range."""
        ...

    def read_range(self, cid: str, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the file; :class:`RangeError` outside it."""
        ...


def open_store(spec: str | None, home: Path, *, timeout: float = 30.0) -> ContentStore:
    """The content store named by ``spec`` (``FEDLEDGER_IPFS``).

    ``None``, ``""`` or ``"embedded"`` → :class:`~fedledger.content.blockstore.Blockstore` at
    ``home / "blocks"``; ``http(s)://host:port`` → :class:`~fedledger.content.kubo.KuboStore`; anything
    else → :class:`~fedledger.errors.ConfigError`.
    """
    text = (spec or "").strip()
    if text in ("", "embedded"):
        return Blockstore(Path(home) / "blocks")
    if text.startswith(("http://", "https://")):
        from fedledger.content.kubo import KuboStore

        return KuboStore(text, timeout=timeout)
    raise ConfigError(
        f"FEDLEDGER_IPFS={spec!r} is neither 'embedded' nor an http(s):// Kubo RPC URL",
        hint="unset it for the embedded store, or set it to e.g. http://127.0.0.1:5001",
    )
