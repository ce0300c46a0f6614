"""Issue #14, classes 2, 3 (the decoder) and 8 (cursors): bounded parsing wherever untrusted
bytes enter.

A dependency of web3 raises Python's recursion limit to 100 000, so ``json.loads`` of 100 000
``[`` overflows the C stack and the process dies with SIGSEGV: no ``except`` helps. One
unauthenticated ``POST /relay/updates`` of such a body killed the API; one update file whose
safetensors header nests that deep killed the validator worker on every restart. A top-k file
whose ``::shape`` holds 80 000 dims near 2**62 multiplied them into a million-digit int (26 s of
CPU) and then raised ``ValueError`` out of the decoder, stalling its round; a pagination cursor
holding 2**70 answered 500.

The rules shown here: every JSON from outside is bounded (size, depth, number length, count)
before it is parsed (``fedledger.safejson``); every number a file declares is bounded before
arithmetic; a bad file is a ``MALFORMED`` verdict with a clear reason while the honest updates of
its round are judged; a bad body or cursor is a 4xx and the server answers the next request.

Real anvil, the real compiled contract, the embedded store, SQLite, a real uvicorn in its own
process (so that a crash shows as a dead process, not a dead test run), and the real validator
worker process (``fedledger_backend.worker_process``); the attacker uses raw httpx and the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api_data import populate
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_kit import Scenario, make_scenario

from fedledger import safejson
from fedledger.chain.devnet import dev_private_keys, start_anvil
from fedledger.chain.ledger import Ledger, SignedUpdate, connect
from fedledger.content.cid import compute_cid
from fedledger.content.store import ContentStore, open_store
from fedledger.errors import ConfigError, FormatError
from fedledger.protocol import codec, verdicts
from fedledger.protocol.screening import ScreeningSpec
from fedledger.protocol.taskspec import TaskSpec
from fedledger_backend.db import Database
from fedledger_backend.worker_process import WorkerConfig, WorkerProcess

REPO = Path(__file__).resolve().parents[2]
M = 16 * 1024**2
DEEP = 100_000


def _timed(label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn``; print how long it took (the tests assert outcomes, never times)."""
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        print(f"{label}: {time.perf_counter() - start:.3f}s")


def _file(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


# -- fedledger.safejson: the one owner of untrusted JSON ----------------------------------------------


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_tricky_text = st.text(alphabet='[]{}"\\/,:u0aé\n', max_size=12)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_tricky_text, inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(value=_json_values, ascii_only=st.booleans())
def test_the_depth_scan_is_exact_on_every_valid_document(value: Any, ascii_only: bool) -> None:
    """Strings full of brackets, quotes and backslashes hide no structure and fake none."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    depth = _depth(value)
    assert safejson.loads(text, what="doc", max_bytes=M, max_depth=depth) == value
    if depth:
        with pytest.raises(FormatError, match=f"doc nests deeper than the {depth - 1}-level"):
            safejson.check(text, what="doc", max_bytes=M, max_depth=depth - 1)


_HIDING = [
    '"\\\\"',  # a string holding one backslash: the quote after it closes the string
    '"\\\\\\""',  # a backslash and a quote
    '["\\u005c"',  # a \u escape of a backslash is no escape of the quote
    '"\\"',  # unterminated: the brackets after it are inside the string
    '"',
    '\\"',  # a backslash outside a string: invalid
    '{"a":"]]]]"',
]


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    prefix=st.sampled_from(_HIDING) | st.text(alphabet='[]{}"\\,:0 ', max_size=8),
    opens=st.integers(0, 60),
    tail=st.text(alphabet='[]{}"\\,:0a ', max_size=40),
)
def test_no_document_the_scan_passes_makes_the_parser_nest_deeper(
    prefix: str, opens: int, tail: str
) -> None:
    """Sound on invalid input too: run json.loads under a recursion limit just above what the
    scan allowed; passing the scan, it never reaches that limit (a RecursionError here would
    be a segfault under web3's limit)."""
    text = prefix + "[" * opens + tail
    try:
        safejson.check(text, what="doc", max_bytes=M, max_depth=8)
    except FormatError:
        return
    frames, f = 0, sys._getframe()
    while f is not None:
        frames, f = frames + 1, f.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(frames + 8 + 25)
    try:
        json.loads(text)
    except ValueError:
        pass
    finally:
        sys.setrecursionlimit(old)


@pytest.mark.parametrize(
    ("name", "doc", "message"),
    [
        ("deep arrays", b"[" * M, "nests deeper than the 64-level limit"),
        ("deep objects", b'{"a":' * (M // 5), "nests deeper than the 64-level limit"),
        ("a huge number", b"[" + b"7" * (M - 2) + b"]", "number longer than the 80-digit"),
        ("many tiny values", b"[" + b"0," * (M // 2 - 2) + b"0]", "over the 1000000-value limit"),
    ],
)
def test_16_mib_of_hostile_json_is_refused_before_it_is_parsed(
    name: str, doc: bytes, message: str
) -> None:
    def refuse() -> None:
        with pytest.raises(FormatError, match=message):
            safejson.loads(doc, what="doc", max_bytes=M, max_items=1_000_000)

    _timed(name, refuse)


def test_a_16_mib_string_of_escaped_quotes_is_one_value_scanned_in_one_pass() -> None:
    """Escapes are where a naive string regex backtracks quadratically."""
    doc = b'["' + b'\\"' * (M // 2 - 2) + b'"]'
    value = _timed("escaped quotes", safejson.loads, doc, what="doc", max_bytes=M, max_items=2)
    assert value == ['"' * (M // 2 - 2)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b'{"a":1,"a":2}', "duplicate key 'a' in doc"),
        (b"[NaN]", "non-JSON number NaN"),
        (b"[-Infinity]", "non-JSON number -Infinity"),
        ('["x"]'.encode("utf-16"), "not UTF-8"),
        (b"[1]" + b" " * 100, "103 bytes, over the 100-byte limit"),
        (b"[1", "not valid JSON"),
    ],
)
def test_bad_json_is_a_format_error_that_names_the_document_and_the_limit(
    doc: bytes, message: str
) -> None:
    with pytest.raises(FormatError, match=message) as err:
        safejson.loads(doc, what="doc", max_bytes=100)
    assert err.value.hint


# -- update files (fedledger.protocol.codec): every number bounded before arithmetic ---------------------------


_DECODE_UNDER_WEB3 = textwrap.dedent(
    """
    import sys
    import web3  # raises the recursion limit, as in every fedledger process
    from fedledger.protocol import codec
    from fedledger.errors import FormatError
    assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()
    try:
        codec.decode(sys.stdin.buffer.read())
    except FormatError as exc:
        print("MALFORMED:", exc)
    """
)


@pytest.mark.parametrize(
    "header",
    [
        b"{" + b"[" * (2 * DEEP),
        b"{" + b'"a":{' * DEEP + b"}" * DEEP + b"}",
        b'{"w":{"dtype":"F32","shape":' + b"[" * DEEP + b"]" * DEEP + b',"data_offsets":[0,0]}}',
    ],
    ids=["arrays", "objects", "inside-an-entry"],
)
def test_a_header_nested_100k_deep_is_malformed_in_a_process_with_webs_recursion_limit(
    header: bytes,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _DECODE_UNDER_WEB3],
        input=_file(header),
        capture_output=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]  # -11 was SIGSEGV
    assert b"MALFORMED: safetensors header nests deeper than the 3-level limit" in out.stdout


def _update_meta(encoding: str = "topk") -> dict[str, str]:
    meta = codec.decode(
        codec.encode_update(
            {"w": np.zeros(4, np.float32)},
            task_id=1,
            round=0,
            base_hash="0x" + "cd" * 32,
            contributor="0x" + "11" * 20,
        )
    ).metadata
    return {**meta, codec.K_ENCODING: encoding}


def _topk(shape: np.ndarray, name: str = "w") -> dict[str, np.ndarray]:
    return {
        f"{name}::shape": shape,
        f"{name}::indices": np.zeros(0, "<i4"),
        f"{name}::values": np.zeros(0, "<f4"),
    }


def huge_shape_file(meta: dict[str, str]) -> bytes:
    """The issue's 640 KB variant: a ::shape of 80 000 dims near 2**62 (26 s of CPU, then a
    ValueError escaping the decoder)."""
    return codec.write_safetensors(_topk(np.full(80_000, 2**62 - 1, "<i8")), meta)


def test_a_top_k_shape_of_80000_huge_dims_is_malformed_at_once() -> None:
    data = huge_shape_file(_update_meta())
    assert len(data) > 640_000
    with pytest.raises(FormatError, match=r"::shape must be an I64 vector of at most 8 dims"):
        _timed("640 KB of huge dims", codec.decode, data)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (_topk(np.full(8, 2**62, "<i8")), "over the 268435455-element limit"),
        (_topk(np.array([2**63 - 1, 2**63 - 1], "<i8")), "over the 268435455-element limit"),
        (_topk(np.array([0, 2**63 - 1], "<i8")), "over the 268435455-element limit"),
        (_topk(np.array([-(2**63)], "<i8")), "bad dense shape"),
        (_topk(np.full(4, 1e30, "<f4")), "::shape must be an I64 vector"),
        (_topk(np.full((2, 2), 2, "<i8")), "::shape must be an I64 vector"),
        (
            {
                k: v
                for i in range(64)
                for k, v in _topk(np.array([2**22], "<i8"), name=f"w{i}").items()
            },
            "file expands to 268435456 elements",
        ),
    ],
    ids=["8-dims-of-2**62", "int64-max", "zero-and-huge", "negative", "float", "matrix", "many"],
)
def test_every_declared_dense_shape_is_bounded_before_arithmetic(
    tensors: dict, message: str
) -> None:
    data = codec.write_safetensors(tensors, _update_meta())
    with pytest.raises(FormatError, match=message):
        codec.decode(data, max_elements=2**28 - 1)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            b'{"w":{"dtype":"F32","shape":[' + b"9" * 600_000 + b'],"data_offsets":[0,0]}}',
            "header holds a number longer than the 19-digit limit",
        ),
        (
            b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,' + b"4" * 5000 + b"]}}",
            "header holds a number longer than the 19-digit limit",
        ),
        (
            b'{"w":{"dtype":"F32","shape":[' + b"1," * 300_000 + b'1],"data_offsets":[0,4]}}',
            "shape must be at most 8 non-negative ints",
        ),
        (
            b'{"__metadata__":{"x":' + b"1" * 100 + b"}}",
            "header holds a number longer than the 19-digit limit",
        ),
    ],
    ids=["a-600k-digit-dim", "a-5000-digit-offset", "300k-dims", "a-100-digit-metadata"],
)
def test_huge_numbers_and_counts_in_a_header_are_malformed_quickly(
    header: bytes, message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        _timed("hostile header", codec.decode, _file(header))


def test_a_16_mib_header_of_many_tiny_values_is_refused_before_it_is_parsed() -> None:
    header = b'{"a":[' + b"0," * (codec.MAX_HEADER_BYTES // 2 - 8) + b"0]}"
    data = _file(header[: codec.MAX_HEADER_BYTES - 2] + b"]}")
    with pytest.raises(FormatError, match="-value limit"):
        _timed("16 MiB of values", codec.decode, data)


# -- task specs, verdict files, signed updates -----------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        b"[" * (2 * DEEP),
        b'{"format":"fedledger.task/1","model_kwargs":' + b'{"a":' * DEEP,
        b'{"format":"fedledger.task/1","seed":' + b"9" * 5000 + b"}",
        b'{"format":"fedledger.task/1"}' + b" " * (1 << 20),
    ],
    ids=["deep", "deep-kwargs", "huge-seed", "over-1-MiB"],
)
def test_a_hostile_task_spec_is_a_format_error(doc: bytes) -> None:
    with pytest.raises(FormatError, match="task spec"):
        TaskSpec.from_bytes(doc)


def test_a_deep_section_given_as_json_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="screening spec nests deeper"):
        ScreeningSpec.parse("[" * (2 * DEEP))


@pytest.mark.parametrize(
    "doc",
    [b"[" * (2 * DEEP), b'{"format":' + b"1" * 5000 + b"}", b'{"a":1,"a":1}'],
    ids=["deep", "huge-number", "duplicate-key"],
)
def test_a_hostile_verdict_file_is_a_format_error(doc: bytes) -> None:
    with pytest.raises(FormatError, match="verdict file"):
        verdicts.parse(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"round": 2**64}, r"round must be an integer in \[0, 2\*\*64\)"),
        ({"numSamples": -1}, "numSamples must be an integer"),
        ({"taskId": 1.5}, "taskId must be an integer"),
        ({"deadline": "1"}, "deadline must be an integer"),
    ],
)
def test_a_signed_update_file_holds_only_numbers_its_solidity_types_hold(
    change: dict, message: str
) -> None:
    data = b"an update"
    good = {
        "taskId": 1,
        "round": 0,
        "contentHash": "0x" + hashlib.sha256(data).hexdigest(),
        "cid": compute_cid(data),
        "numSamples": 10,
        "contributor": "0x" + "11" * 20,
        "deadline": 2**40,
        "signature": "0x" + "22" * 65,
    }
    assert SignedUpdate.from_bytes(json.dumps(good)).num_samples == 10
    with pytest.raises(ConfigError, match=message):
        SignedUpdate.from_bytes(json.dumps({**good, **change}))
    with pytest.raises(ConfigError, match="signed update nests deeper"):
        SignedUpdate.from_bytes(b"[" * 60_000)


# -- the API: a real uvicorn in its own process ----------------------------------------------------


_SERVE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import uvicorn
    from eth_account import Account

    from fedledger_backend.api import create_app
    from fedledger_backend.db import Database
    from fedledger_backend.relay_service import RelayService
    from fedledger.chain.ledger import Ledger, connect
    from fedledger.content.store import open_store

    rpc, contract, key, home, db, port = sys.argv[1:]
    ledger = Ledger(connect(rpc), contract).with_account(Account.from_key(key))
    service = RelayService(ledger, open_store(None, Path(home)))
    app = create_app(Database(f"sqlite:///{db}"), w3=ledger.w3, relayer=service)
    assert sys.getrecursionlimit() >= 100_000  # web3's: json.loads of 100k [ would SIGSEGV
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
    """
)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    http: httpx.Client

    def alive(self) -> bool:
        """The process runs and answers its next request."""
        return self.proc.poll() is None and self.http.get("/health").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("api")
    populate(Database(f"sqlite:///{tmp / 'index.db'}").create())  # task 1 has rounds
    keys = dev_private_keys(2)
    with start_anvil(accounts=2) as dn:
        ledger = Ledger.deploy(connect(dn.url), Account.from_key(keys[0]))
        port = _free_port()
        args = [dn.url, ledger.address, keys[1], str(tmp / "home"), str(tmp / "index.db")]
        log = tmp / "api.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVE, *args, str(port)], cwd=REPO, stderr=err
            )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                end = time.monotonic() + 90
                while True:
                    try:
                        http.get("/health")
                        break
                    except httpx.TransportError:
                        if proc.poll() is not None or time.monotonic() > end:
                            why = log.read_text(errors="replace")[-2000:]
                            raise RuntimeError(f"the API did not start: {why}") from None
                        time.sleep(0.2)
                yield Server(proc, http)
        finally:
            proc.terminate()
            proc.wait(30)


def test_100k_open_brackets_on_the_relay_are_422_and_the_server_answers_the_next_request(
    server: Server,
) -> None:
    r = server.http.post(
        "/relay/updates", content=b"[" * DEEP, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert "request body nests deeper than the 32-level limit" in r.json()["detail"]
    assert server.alive(), "the API process died"
    # the route still parses honest JSON: a body of the wrong shape gets FastAPI's own 422
    shaped = server.http.post("/relay/updates", json={"signed": {}, "content": ""})
    assert shaped.status_code == 422 and isinstance(shaped.json()["detail"], list)


_BODIES = {
    "arrays": b"[" * (2 * DEEP),
    "objects": b'{"a":' * (DEEP // 2),
    "inside-a-relay-envelope": b'{"signed":{"taskId":1},"content":' + b"[" * DEEP,
    "a-100k-digit-number": b'{"signed":{"taskId":' + b"1" * DEEP + b"}}",
}


@pytest.mark.parametrize("body", sorted(_BODIES))
@pytest.mark.parametrize(
    "path", ["/relay/updates", "/tasks", "/contributions", "/health", "/no/such/route"]
)
def test_a_hostile_json_body_on_any_route_is_refused_before_parsing(
    server: Server, path: str, body: str
) -> None:
    r = server.http.post(path, content=_BODIES[body], headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "request body" in r.json()["detail"]
    assert server.alive(), "the API process died"


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "text/plain"}, {"content-type": "application/merge-patch+json"}],
    ids=["no-content-type", "text-plain", "json-suffix"],
)
def test_a_deep_body_is_refused_whatever_content_type_it_claims(
    server: Server, headers: dict[str, str]
) -> None:
    r = server.http.post("/relay/updates", content=b"[" * DEEP, headers=headers)
    assert r.status_code == 422, r.text
    assert server.alive()


def test_a_deep_body_sent_in_chunks_without_a_length_is_refused(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"[" * (DEEP // 10)

    r = server.http.post(
        "/relay/updates", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert server.alive()


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/contributions", "contributions.asc"), ("/tasks", "tasks"), ("/tasks/1/rounds", "rounds.1")],
)
@pytest.mark.parametrize(
    "key",
    [str(2**70), str(2**63), str(2**64 - 1), "-1", "1" * 4000, "1" * 5000, "0x10", "+5", " 5"],
)
def test_a_cursor_holding_a_number_no_id_can_be_is_422(
    server: Server, path: str, kind: str, key: str
) -> None:
    r = server.http.get(path, params={"cursor": _cursor(f"{kind}:{key}")})
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": "invalid cursor"}


@pytest.mark.parametrize("token", ["A" * 10_000, "%" * 100, "=" * 3, "🙂"])
def test_a_garbage_cursor_is_422(server: Server, token: str) -> None:
    r = server.http.get("/contributions", params={"cursor": token})
    assert r.status_code == 422, r.text
    assert server.alive()


def test_the_largest_cursor_an_id_can_hold_is_still_a_cursor(server: Server) -> None:
    r = server.http.get(
        "/contributions", params={"cursor": _cursor(f"contributions.asc:{2**63 - 1}")}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "next_cursor": None}


# -- the validator worker: a real child process judging a real round ----------------------------


@dataclass
class Judged:
    sc: Scenario
    ids: dict[str, int]
    entries: dict[int, verdicts.VerdictEntry]
    restarts: int


def _deep_header_file() -> bytes:
    return _file(b"{" + b'"a":[' * DEEP + b"]" * DEEP + b"}")


@pytest.fixture(scope="module")
def judged(dev_accounts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judged]:
    """One round of four: two honest updates, one whose header nests 100 000 deep, one whose
    top-k ``::shape`` holds 80 000 huge dims; judged by the worker process (the child of
    ``fedledger serve``) holding the validator key."""
    tmp = tmp_path_factory.mktemp("worker")
    with start_anvil(accounts=20) as dn:
        ledger = Ledger.deploy(connect(dn.url), dev_accounts[0], tmp / "deployments")
        store: ContentStore = open_store(None, tmp / "home")
        sc = make_scenario(ledger, store, dev_accounts, n_contributors=4)
        honest = [sc.honest_update(i) for i in range(2)]
        meta = {**codec.decode(honest[0][0]).metadata, codec.K_ENCODING: "topk"}
        if "fedledger.contributor" in meta:  # the file names who submits it
            meta["fedledger.contributor"] = sc.contributors[3].address.lower()
        ids = {
            "honest-0": sc.submit_bytes(0, *honest[0]),
            "honest-1": sc.submit_bytes(1, *honest[1]),
            "deep-header": sc.submit_bytes(2, _deep_header_file()),
            "huge-shape": sc.submit_bytes(3, huge_shape_file(meta)),
        }
        worker = WorkerProcess(
            WorkerConfig(
                rpc_url=dn.url,
                contract=ledger.address,
                from_block=ledger.from_block,
                db_url=f"sqlite:///{tmp / 'worker.db'}",
                home=str(tmp / "home"),
                evaluate=False,
                nice=0,
            ),
            private_key=bytes(sc.validators[0].key),
        ).start()
        try:
            end = time.monotonic() + 240
            while ledger.current_round(sc.task_id) == 0:
                assert worker.restarts == 0, f"the worker process died: {worker.status()}"
                assert time.monotonic() < end, f"round 0 never finalised: {worker.status()}"
                time.sleep(0.5)
            restarts = worker.restarts
        finally:
            worker.stop()
        final = ledger.last_finalized(sc.task_id)
        assert final is not None
        vf = verdicts.parse(store.get(final["verdictCid"]))
        yield Judged(sc, ids, {e.update_id: e for e in vf.entries}, restarts)


def test_the_worker_judges_a_round_holding_hostile_files_without_dying(judged: Judged) -> None:
    assert judged.restarts == 0
    assert set(judged.entries) == set(judged.ids.values())


def test_an_update_whose_header_nests_100k_deep_is_malformed_with_its_reason(
    judged: Judged,
) -> None:
    e = judged.entries[judged.ids["deep-header"]]
    assert e.verdict == verdicts.Verdict.MALFORMED
    assert "safetensors header nests deeper than the 3-level limit" in e.reason


def test_an_update_whose_top_k_shape_holds_80000_huge_dims_is_malformed_with_its_reason(
    judged: Judged,
) -> None:
    e = judged.entries[judged.ids["huge-shape"]]
    assert e.verdict == verdicts.Verdict.MALFORMED
    assert "::shape must be an I64 vector of at most 8 dims" in e.reason
    assert len(e.reason) < 400


def test_the_honest_updates_of_that_round_are_judged_and_accepted(judged: Judged) -> None:
    for name in ("honest-0", "honest-1"):
        assert judged.entries[judged.ids[name]].verdict == verdicts.Verdict.ACCEPTED, name
