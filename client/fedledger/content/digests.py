"""Content digests: the ``0x``-prefixed sha256 that the chain records as ``contentHash``.

One owner, below both the stores (which hash what they read) and the file formats (which hash
what they write)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """``0x``-prefixed lowercase sha256 of ``data`` (the on-chain ``contentHash``)."""
    return "0x" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, *, block: int = 1 << 20) -> str:
    """:func:`sha256_hex` of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(block):
            h.update(piece)
    return "0x" + h.hexdigest()
