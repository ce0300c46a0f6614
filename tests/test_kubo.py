"""Kubo RPC adapter (fedledger.content.kubo).

Two targets: a real Kubo daemon when ``FEDLEDGER_TEST_KUBO`` names its RPC URL (skipped, with the
reason, otherwise), and a fake Kubo endpoint — a real HTTP server on loopback answering with the
response shapes transcribed from the Kubo RPC reference (https://docs.ipfs.tech/reference/kubo/rpc/)
— that can also misbehave on purpose. The adapter's code is exercised unmodified over real HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from fedledger.content.cid import compute_cid, parse_cid
from fedledger.content.kubo import KuboStore
from fedledger.errors import ContentNotFoundError, IntegrityError, StoreError

# (bytes, CID) pairs from published vectors, so the fake never computes a CID with the code under
# test: js-ipfs's ``zb2rhiNed...`` for [0, 1, 2] (in base32) and Kubo's CID of the empty file.
HELLO = bytes([0, 1, 2])
HELLO_CID = "bafkreifojmzibzlof6xyh5auu3r5vpu5l67brf3fitaf73isdlglqw2t7q"
STORED_ONLY_REMOTELY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@dataclass
class FakeKubo:
    """State and failure switches of the fake endpoint."""

    known: dict[bytes, str] = field(
        default_factory=lambda: {HELLO: HELLO_CID, b"": STORED_ONLY_REMOTELY}
    )
    blocks: dict[str, bytes] = field(default_factory=dict)
    pins: set[str] = field(default_factory=set)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # statuses to answer before behaving
    wrong_cid: bool = False
    corrupt_cat: bool = False


def error(handler: BaseHTTPRequestHandler, message: str, status: int = 500) -> None:
    body = json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(handler.rfile.readline().strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return out
            out += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length", 0)))


def multipart_file(handler: BaseHTTPRequestHandler, body: bytes) -> bytes:
    boundary = handler.headers["Content-Type"].split("boundary=")[1].encode()
    part = body.split(b"--" + boundary)[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


def make_handler(state: FakeKubo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # Kubo answers 405 to anything but POST
            error(self, "405 - Method Not Allowed", 405)

        def json(self, obj: object) -> None:
            body = (json.dumps(obj) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            url = urlparse(self.path)
            q = parse_qs(url.query)
            state.requests.append((url.path, q))
            body = read_body(self)
            if state.fail_next:
                return error(self, "busy", state.fail_next.pop(0))
            arg = q.get("arg", [""])[0]
            path = url.path.removeprefix("/api/v0/")
            if path == "version":
                return self.json(
                    {
                        "Version": "0.22.0",
                        "Commit": "",
                        "Repo": "14",
                        "System": "amd64/linux",
                        "Golang": "go1.19.10",
                    }
                )
            if path == "add":
                content = multipart_file(self, body)
                cid = state.known.get(content)
                if cid is None:
                    return error(self, "fake kubo: unknown content")
                if state.wrong_cid:
                    cid = STORED_ONLY_REMOTELY if cid != STORED_ONLY_REMOTELY else HELLO_CID
                state.blocks[cid] = content
                if q.get("pin") == ["true"]:
                    state.pins.add(cid)
                return self.json({"Name": "file", "Hash": cid, "Size": str(len(content))})
            if path == "cat":
                if arg not in state.blocks:
                    return error(
                        self, f"block was not found locally (offline): ipld: could not find {arg}"
                    )
                data = state.blocks[arg]
                if state.corrupt_cat:
                    data = data[:-1] + bytes([data[-1] ^ 1]) if data else b"x"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("X-Stream-Output", "1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return None
            if path == "block/stat":
                if arg not in state.blocks:
                    return error(
                        self, f"block was not found locally (offline): ipld: could not find {arg}"
                    )
                return self.json({"Key": arg, "Size": len(state.blocks[arg])})
            if path == "pin/add":
                if arg not in state.blocks:
                    return error(self, f"ipld: could not find {arg}")
                state.pins.add(arg)
                return self.json({"Pins": [arg]})
            if path == "pin/rm":
                if arg not in state.pins:
                    return error(self, "not pinned or pinned indirectly")
                state.pins.discard(arg)
                return self.json({"Pins": [arg]})
            if path == "files/stat":
                cid = arg.removeprefix("/ipfs/")
                if cid not in state.blocks:
                    return error(self, f"ipld: could not find {cid}")
                n = len(state.blocks[cid])
                return self.json(
                    {"Hash": cid, "Size": n, "CumulativeSize": n, "Blocks": 0, "Type": "file"}
                )
            return error(self, f"unknown command {path}", 404)

    return Handler


@pytest.fixture
def fake() -> Iterator[tuple[FakeKubo, KuboStore]]:
    state = FakeKubo()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    store = KuboStore(f"http://127.0.0.1:{server.server_port}", timeout=5, backoff=0.01)
    yield state, store
    store.close()
    server.shutdown()
    server.server_close()


def test_fake_table_is_the_published_vector() -> None:
    assert parse_cid(HELLO_CID) == parse_cid("zb2rhiNedvrkpYhcrgtpmhKk5UPzcgizgSXaQLYXNY745BmYP")


def test_put_sends_kubos_add_parameters_and_returns_the_checked_cid(fake) -> None:  # type: ignore[no-untyped-def]
    state, store = fake
    assert store.put(HELLO) == HELLO_CID
    path, query = state.requests[-1]
    assert path == "/api/v0/add"
    assert query["cid-version"] == ["1"] and query["raw-leaves"] == ["true"]
    assert query["chunker"] == ["size-262144"] and query["pin"] == ["true"]
    assert HELLO_CID in state.pins


def test_get_has_pin_unpin_stat_version(fake) -> None:  # type: ignore[no-untyped-def]
    state, store = fake
    cid = store.put(HELLO, pin=False)
    assert store.get(cid) == HELLO
    assert store.get_hashed(cid) == (HELLO, "0x" + hashlib.sha256(HELLO).hexdigest())
    assert store.open(cid).read() == HELLO
    assert store.has(cid) and not store.has(compute_cid(b"absent"))
    store.pin(cid)
    assert cid in state.pins
    store.unpin(cid)
    store.unpin(cid)  # unpinning twice is not an error
    assert store.stat(cid).size == len(HELLO)
    assert store.version() == "0.22.0"


def test_a_node_returning_another_cid_is_an_integrity_error(fake) -> None:  # type: ignore[no-untyped-def]
    state, store = fake
    state.wrong_cid = True
    with pytest.raises(IntegrityError, match="returned CID"):
        store.put(HELLO)


def test_corrupted_cat_bytes_are_never_returned(fake) -> None:  # type: ignore[no-untyped-def]
    state, store = fake
    cid = store.put(HELLO)
    state.corrupt_cat = True
    with pytest.raises(IntegrityError):
        store.get(cid)
    with pytest.raises(IntegrityError):
        store.get_hashed(cid)
    with pytest.raises(IntegrityError):
        store.open(cid).read()


def test_unknown_cid_is_content_not_found(fake) -> None:  # type: ignore[no-untyped-def]
    _, store = fake
    with pytest.raises(ContentNotFoundError):
        store.get(compute_cid(b"absent"))


def test_transient_gateway_errors_are_retried(fake) -> None:  # type: ignore[no-untyped-def]
    state, store = fake
    state.fail_next = [503, 502]
    assert store.put(HELLO) == HELLO_CID
    state.fail_next = [503, 503, 503]
    with pytest.raises(StoreError, match="after 3 tries"):
        store.version()


def test_a_node_error_is_a_store_error_with_its_message(fake) -> None:  # type: ignore[no-untyped-def]
    _, store = fake
    with pytest.raises(StoreError, match="unknown content"):
        store.put(b"the fake has no CID for this")


def test_a_node_that_is_down_is_a_clear_store_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = KuboStore(f"http://127.0.0.1:{port}", timeout=1, retries=2, backoff=0.01)
    with pytest.raises(StoreError, match="unreachable"):
        store.version()
    with pytest.raises(StoreError, match="unreachable"):
        store.put(HELLO)


# --------------------------------------------------------------------------- real Kubo

KUBO_URL = os.environ.get("FEDLEDGER_TEST_KUBO")
real_kubo = pytest.mark.skipif(
    not KUBO_URL, reason="set FEDLEDGER_TEST_KUBO=http://host:5001 to test against a real Kubo"
)


@real_kubo
@pytest.mark.parametrize("size", [0, 1, 262144, 262145, 3_000_000])
def test_real_kubo_round_trip(size: int) -> None:
    assert KUBO_URL
    data = random.Random(size).randbytes(size)
    with KuboStore(KUBO_URL) as store:
        store.version()
        cid = store.put(data)
        assert cid == compute_cid(data)
        assert store.has(cid)
        assert store.get(cid) == data
        assert hashlib.sha256(store.open(cid).read()).digest() == hashlib.sha256(data).digest()
        assert store.stat(cid).size == size
        store.unpin(cid)
        store.pin(cid)
