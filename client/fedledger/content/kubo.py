"""Kubo RPC adapter: the :class:`~fedledger.content.store.ContentStore` interface over a Kubo node's HTTP RPC.

SPEC "Configuration": ``FEDLEDGER_IPFS=http://host:5001`` selects it. Endpoints used (Kubo RPC
v0, https://docs.ipfs.tech/reference/kubo/rpc/; every call is a POST):

* ``/api/v0/add?cid-version=1&raw-leaves=true&chunker=size-262144&pin=true`` (multipart ``file``)
  → one JSON line per added entry, ``{"Name": ..., "Hash": ..., "Size": ...}``;
* ``/api/v0/cat?arg=<cid>`` → the file's bytes;
* ``/api/v0/block/get?arg=<cid>`` → one block's bytes (range reads walk the DAG with it);
* ``/api/v0/pin/add?arg=<cid>`` / ``/api/v0/pin/rm?arg=<cid>`` → ``{"Pins": [...]}``;
* ``/api/v0/block/stat?arg=<cid>&offline=true`` → ``{"Key": ..., "Size": ...}`` (``has``);
* ``/api/v0/files/stat?arg=/ipfs/<cid>`` → ``{"Size", "CumulativeSize", ...}`` (``stat``);
* ``/api/v0/version`` → ``{"Version": ...}`` (reachability check);
* errors: a non-2xx status with ``{"Message": ..., "Code": ..., "Type": "error"}``.

The node is not trusted: the CID Kubo returns from ``add`` must equal the one computed here
(:mod:`fedledger.content.cid`), and bytes from ``cat`` are re-imported locally and must hash to the CID asked
for (content added with other chunking parameters cannot be checked this way and is refused).
Either mismatch raises :class:`~fedledger.errors.IntegrityError`; a node that is down, slow or
answering garbage raises :class:`~fedledger.errors.StoreError` after bounded retries with backoff.

``ipfshttpclient`` is deliberately not used: its 0.7 release refuses, in ``connect()``, every
daemon newer than 0.8, and it is unmaintained.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from fedledger import safejson
from fedledger.content.blockstore import MAX_BLOCK_SIZE, ContentStat, FileRange, Source
from fedledger.content.cid import CID, FEDLEDGER, KUBO_V0, DagBuilder, Profile, parse_cid
from fedledger.content.digests import sha256_hex
from fedledger.errors import ContentNotFoundError, FormatError, IntegrityError, StoreError

RETRY_STATUS = (502, 503, 504)
MAX_ANSWER_BYTES = 1 << 20
"""Largest JSON answer read from the node (they are a few hundred bytes: a CID, sizes)."""


class KuboStore:
    """Content store backed by a Kubo node's RPC API."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        chunk_size: int = FEDLEDGER.chunk_size,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = max(1, retries)
        self.backoff = backoff
        self.profile = FEDLEDGER.with_chunk_size(chunk_size)
        self._client = client or httpx.Client(
            base_url=self.url + "/api/v0",
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        )

    def __repr__(self) -> str:
        return f"KuboStore({self.url!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> KuboStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ ContentStore

    def version(self) -> str:
        """The node's Kubo version (also a reachability check)."""
        body = self._json("version")
        version = body.get("Version")
        if not isinstance(version, str):
            raise StoreError(f"Kubo at {self.url} answered /version without a Version: {body}")
        return version

    def put(self, data: Source, *, pin: bool = True) -> str:
        """``ipfs add --cid-version=1`` through the node; the returned CID is checked locally."""
        params = {
            "cid-version": "1",
            "raw-leaves": "true",
            "chunker": f"size-{self.profile.chunk_size}",
            "pin": "true" if pin else "false",
            "progress": "false",
        }
        opener = _reopener(data)
        last: Exception | None = None
        for attempt in range(self.retries):
            builder = DagBuilder(self.profile)
            stream = _HashingReader(opener(), builder)
            try:
                files = {"file": ("file", stream, "application/octet-stream")}
                response = self._client.post("add", params=params, files=files)  # type: ignore[arg-type]
            except httpx.TransportError as exc:
                last = exc
                self._sleep(attempt)
                continue
            finally:
                stream.close()
            if response.status_code in RETRY_STATUS:
                last = StoreError(f"HTTP {response.status_code}")
                self._sleep(attempt)
                continue
            self._raise_for_status(response, "add")
            remote = _last_hash(response, self.url)
            local = str(builder.finish())
            if remote != local:
                raise IntegrityError(
                    f"Kubo at {self.url} returned CID {remote} for content whose CID is {local}",
                    hint="the node is misconfigured or misbehaving; do not trust its CIDs",
                )
            return local
        raise StoreError(f"Kubo at {self.url} is unreachable after {self.retries} tries: {last}")

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """``ipfs cat``; the bytes are returned only if they re-import to ``cid``."""
        profile = self._profile_for(cid)
        response = self._request("cat", {"arg": cid})
        data = response.content
        if max_bytes is not None and len(data) > max_bytes:
            raise StoreError(f"{cid} is larger than {max_bytes} bytes")
        builder = DagBuilder(profile)
        builder.write(data)
        got = str(builder.finish())
        if got != str(parse_cid(cid)):
            raise IntegrityError(
                f"Kubo at {self.url} served bytes for {cid} that hash to {got}",
                hint="the node's data is corrupted, or the content was added with other settings",
            )
        return data

    def get_hashed(
        self, cid: str, *, max_bytes: int | None = None, expect: str | None = None
    ) -> tuple[bytes, str]:
        """:meth:`get` and the file's sha256 (``0x`` hex); ``expect`` changes nothing here."""
        data = self.get(cid, max_bytes=max_bytes)
        return data, sha256_hex(data)

    def open(self, cid: str) -> BinaryIO:
        """A stream of the file; the last read raises :class:`IntegrityError` on a mismatch."""
        profile = self._profile_for(cid)
        return io.BufferedReader(_VerifyingStream(self, cid, profile))  # type: ignore[return-value]

    def open_range(self, cid: str | CID) -> FileRange:
        """Random access to the file behind ``cid``: only the blocks holding a range are
        fetched (``block/get``), each checked against its CID here (:class:`FileRange`)."""
        return FileRange(self.get_block, parse_cid(cid))

    def read_range(self, cid: str | CID, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the file behind ``cid``, verified block by
        block; :class:`~fedledger.content.blockstore.RangeError` for a range not inside it."""
        return self.open_range(cid).read(offset, length)

    def get_block(self, cid: str | CID) -> bytes:
        """One block through ``block/get``, returned only if it hashes to ``cid``."""
        c = parse_cid(cid)
        data = self._request("block/get", {"arg": str(c)}).content
        if len(data) > MAX_BLOCK_SIZE or hashlib.sha256(data).digest() != c.digest:
            raise IntegrityError(
                f"Kubo at {self.url} served a block for {c} that does not hash to it",
                hint="the node's data is corrupted or it is misbehaving",
            )
        return data

    def has(self, cid: str) -> bool:
        """True if the node holds the root block locally (no network lookup)."""
        parse_cid(cid)
        response = self._request("block/stat", {"arg": cid, "offline": "true"}, check=False)
        if response.status_code == 200:
            return True
        message = _error_message(response)
        if "not found" in message.lower():
            return False
        raise StoreError(f"Kubo at {self.url} failed block/stat {cid}: {message}")

    def pin(self, cid: str) -> None:
        parse_cid(cid)
        self._json("pin/add", {"arg": cid, "recursive": "true"})

    def unpin(self, cid: str) -> None:
        parse_cid(cid)
        response = self._request("pin/rm", {"arg": cid}, check=False)
        if response.status_code == 200 or "not pinned" in _error_message(response):
            return
        self._raise_for_status(response, "pin/rm")

    def stat(self, cid: str) -> ContentStat:
        parse_cid(cid)
        body = self._json("files/stat", {"arg": f"/ipfs/{cid}"})
        try:
            size, dag_size = int(body["Size"]), int(body["CumulativeSize"])
            blocks = int(body.get("Blocks", 0)) + 1
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"Kubo at {self.url} answered files/stat oddly: {body}") from exc
        return ContentStat(str(parse_cid(cid)), size, blocks, dag_size)

    # ------------------------------------------------------------------ HTTP

    def _profile_for(self, cid: str) -> Profile:
        c = parse_cid(cid)
        return self.profile if c.version == 1 else KUBO_V0

    def _sleep(self, attempt: int) -> None:
        if attempt + 1 < self.retries:
            time.sleep(self.backoff * 2**attempt)

    def _request(
        self, path: str, params: dict[str, str] | None = None, *, check: bool = True
    ) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                response = self._client.post(path, params=params)
            except httpx.TransportError as exc:
                last = exc
                self._sleep(attempt)
                continue
            if response.status_code in RETRY_STATUS:
                last = StoreError(f"HTTP {response.status_code}")
                self._sleep(attempt)
                continue
            if check:
                self._raise_for_status(response, path, params)
            return response
        raise StoreError(
            f"Kubo at {self.url} is unreachable after {self.retries} tries ({path}): {last}",
            hint="check that the daemon runs and FEDLEDGER_IPFS points at its RPC port (5001)",
        )

    def _json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        response = self._request(path, params)
        try:
            body = _answer(response.content, path)
        except FormatError as exc:
            raise StoreError(f"Kubo at {self.url} answered {path} oddly: {exc.message}") from exc
        if not isinstance(body, dict):
            raise StoreError(f"Kubo at {self.url} answered {path} with {body!r}")
        return body

    def _raise_for_status(
        self, response: httpx.Response, path: str, params: dict[str, str] | None = None
    ) -> None:
        if response.status_code == 200:
            return
        message = _error_message(response)
        arg = (params or {}).get("arg", "")
        if path in ("cat", "block/get", "files/stat", "pin/add") and _is_not_found(message):
            raise ContentNotFoundError(f"Kubo at {self.url} does not have {arg}: {message}")
        raise StoreError(
            f"Kubo at {self.url} failed {path} {arg} (HTTP {response.status_code}): {message}"
        )


def _is_not_found(message: str) -> bool:
    low = message.lower()
    return "not found" in low or "could not find" in low or "no link named" in low


def _error_message(response: httpx.Response) -> str:
    try:
        body = _answer(response.content, "an error")
        if isinstance(body, dict) and isinstance(body.get("Message"), str):
            return str(body["Message"])[:500]
    except FormatError:
        pass
    return response.text[:200] or f"HTTP {response.status_code}"


def _answer(data: bytes | str, path: str) -> Any:
    """One JSON answer of the node, parsed within bounds (fedledger.safejson): the node is not
    trusted, and a deeply nested answer would crash this process, not just this call."""
    return safejson.loads(
        data, what=f"Kubo's answer to {path}", max_bytes=MAX_ANSWER_BYTES, max_depth=8
    )


def _last_hash(response: httpx.Response, url: str) -> str:
    last = None
    for line in response.text.splitlines():
        if not line.strip():
            continue
        try:
            entry = _answer(line, "add")
        except FormatError as exc:
            raise StoreError(f"Kubo at {url} answered add oddly: {exc.message}") from exc
        if isinstance(entry, dict) and isinstance(entry.get("Hash"), str):
            last = entry["Hash"]
    if last is None:
        raise StoreError(f"Kubo at {url} answered add without a Hash")
    return last


def _reopener(data: Source) -> Any:
    """A function returning a fresh binary stream of ``data`` for each attempt."""
    if isinstance(data, bytes | bytearray | memoryview):
        payload = bytes(data)
        return lambda: io.BytesIO(payload)
    if isinstance(data, Path):
        return lambda: open(data, "rb")  # noqa: SIM115 - closed by _HashingReader
    if data.seekable():
        start = data.tell()

        def rewind() -> BinaryIO:
            data.seek(start)
            return _Unclosable(data)  # type: ignore[return-value]

        return rewind
    payload = data.read()
    return lambda: io.BytesIO(payload)


class _Unclosable(io.RawIOBase):
    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        return self._inner.read(size)


class _HashingReader:
    """File-like wrapper feeding everything httpx reads into a :class:`DagBuilder`."""

    def __init__(self, inner: Any, builder: DagBuilder) -> None:
        self._inner = inner
        self._builder = builder

    def read(self, size: int = -1) -> bytes:
        piece: bytes = self._inner.read(size)
        self._builder.write(piece)
        return piece

    def close(self) -> None:
        self._inner.close()


class _VerifyingStream(io.RawIOBase):
    """Streams ``cat`` and checks the CID once the body is exhausted."""

    def __init__(self, store: KuboStore, cid: str, profile: Profile) -> None:
        self._store = store
        self._cid = str(parse_cid(cid))
        self._builder = DagBuilder(profile)
        self._pieces: Iterator[bytes] | None = None
        self._buf = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _iter(self) -> Iterator[bytes]:
        client = self._store._client
        try:
            with client.stream("POST", "cat", params={"arg": self._cid}) as response:
                if response.status_code != 200:
                    response.read()
                    self._store._raise_for_status(response, "cat", {"arg": self._cid})
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise StoreError(f"Kubo at {self._store.url} dropped cat {self._cid}: {exc}") from exc

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pieces is None:
            self._pieces = self._iter()
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                if not self._done:
                    self._done = True
                    got = str(self._builder.finish())
                    if got != self._cid:
                        raise IntegrityError(
                            f"Kubo at {self._store.url} served bytes for {self._cid} "
                            f"that hash to {got}"
                        )
                return 0
            self._builder.write(piece)
            self._buf = memoryview(piece)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
