"""POST /relay/updates on a real anvil, the real contract, the embedded store and real uvicorn.

A contributor without gas sends its signed update and the file's bytes; the relayer checks the
signature and the bytes before storing or sending anything, and submits in batches.  An
acknowledged update is committed to the relay journal first: it survives a crash of the relayer
(in-process, and a SIGKILLed server process) and is sent exactly once after a restart.
"""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pipeline_kit import Scenario, make_scenario

from fedledger.chain.ledger import Ledger, SignedUpdate, compact_signature
from fedledger.content.cid import compute_cid
from fedledger.content.store import ContentStore
from fedledger.errors import FedledgerError
from fedledger.flows.relay import SECP256K1_HALF_N
from fedledger.protocol import codec
from fedledger_backend.api import create_app
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import Database
from fedledger_backend.relay_journal import RelayJournal, RelayJournalError
from fedledger_backend.relay_service import (
    ALREADY_ON_CHAIN,
    RelayLimits,
    RelayPolicy,
    RelayService,
    ledger_scope,
)

SECP256K1_N = 2 * SECP256K1_HALF_N + 1
GENEROUS = RelayLimits(address_burst=50, address_per_s=50, ip_burst=500, ip_per_s=500)
JOURNAL = "relay-journal.sqlite3"


@dataclass
class Relay:
    sc: Scenario
    service: RelayService
    http: httpx.Client
    relayer: LocalAccount

    @property
    def ledger(self) -> Ledger:
        return self.sc.ledger

    def nonce(self) -> int:
        return int(self.ledger.w3.eth.get_transaction_count(self.relayer.address))

    def post(self, signed: dict[str, Any], content: bytes) -> httpx.Response:
        body = {"signed": signed, "content": base64.b64encode(content).decode()}
        return self.http.post("/relay/updates", json=body)

    def status(self, su: SignedUpdate) -> httpx.Response:
        return self.http.get(f"/relay/updates/{su.contributor}/{su.task_id}/{su.round}")

    def wait_done(self, su: SignedUpdate, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the status route (the client's view) until the update leaves the queue."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.status(su).json()
            if st["state"] != "queued":
                return dict(st)
            time.sleep(0.05)
        raise AssertionError(f"still queued after {timeout}s")


def update_bytes(sc: Scenario, seed: int, who: LocalAccount | None = None) -> bytes:
    """An update file bound to ``who`` (default: the first contributor), who signs it."""
    st = sc.state()
    rng = np.random.default_rng(seed)
    delta = {"w": rng.standard_normal(16).astype(np.float32)}
    return codec.encode_update(
        delta,
        task_id=sc.task_id,
        round=st.current_round,
        base_hash=st.global_hash,
        contributor=(who or sc.contributors[0]).address,
    )


def sign(
    sc: Scenario,
    who: LocalAccount,
    data: bytes,
    *,
    deadline: int | None = None,
    samples: int = 100,
) -> SignedUpdate:
    return sc.ledger.sign_update(
        who,
        sc.task_id,
        sc.state().current_round,
        codec.sha256_hex(data),
        compute_cid(data),
        samples,
        int(time.time()) + 3600 if deadline is None else deadline,
    )


def make_relay(
    ledger: Ledger,
    store: ContentStore,
    accounts: list[LocalAccount],
    tmp_path: Path,
    *,
    limits: RelayLimits = GENEROUS,
    batch_size: int = 1,
    max_wait_s: float = 0.05,
    max_updates: int | None = None,
    store_for_relay: Any = None,
    journal: bool = True,
) -> Iterator[Relay]:
    sc = make_scenario(
        ledger, store, accounts, n_contributors=4, min_updates=1, max_updates=max_updates
    )
    relayer = accounts[15]
    service = RelayService(
        ledger.with_account(relayer),
        store_for_relay or store,
        limits=limits,
        batch_size=batch_size,
        max_wait_s=max_wait_s,
        journal_path=tmp_path / JOURNAL if journal else None,
        policy=served_by(sc),
    )
    db = Database(f"sqlite:///{tmp_path / 'index.db'}").create()
    app = create_app(db, w3=ledger.w3, ledger_address=ledger.address, relayer=service)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        yield Relay(sc, service, http, relayer)


def served_by(sc: Scenario) -> RelayPolicy:
    """The policy of `fedledger serve --key <the task's validator> --relay-key ...`."""
    return RelayPolicy(validators=(sc.validators[0].address,))


@pytest.fixture
def relay(ledger, store, dev_accounts, tmp_path) -> Iterator[Relay]:
    yield from make_relay(ledger, store, dev_accounts, tmp_path)


# -- the happy path ---------------------------------------------------------------------------


def test_a_relayed_update_ends_on_chain_paid_by_the_relayer(relay: Relay) -> None:
    alice = relay.sc.contributors[0]
    data = update_bytes(relay.sc, 1)
    su = sign(relay.sc, alice, data)
    alice_nonce = relay.ledger.w3.eth.get_transaction_count(alice.address)

    r = relay.post(su.to_json(), data)

    assert r.status_code == 202, r.text
    assert r.json() == {
        "queued": True,
        "contributor": alice.address,
        "taskId": su.task_id,
        "round": su.round,
        "cid": su.cid,
    }
    done = relay.wait_done(su)
    assert done["state"] == "submitted", done
    assert done["txHash"].startswith("0x") and done["updateId"] >= 1
    assert done["updateId"] >> 32 == su.task_id  # ledger v2 ids: (taskId << 32) | seq
    assert_on_chain_once(relay.ledger, su, done["updateId"], tx_hash=done["txHash"])
    assert relay.sc.store.get(su.cid) == data
    assert relay.ledger.w3.eth.get_transaction_count(alice.address) == alice_nonce


def test_a_compact_64_byte_signature_is_relayed_like_a_65_byte_one(relay: Relay) -> None:
    """EIP-2098: (r, vs) is the same signature in 64 bytes; the relay and the chain take it."""
    bob = relay.sc.contributors[1]
    data = update_bytes(relay.sc, 13, bob)
    full = sign(relay.sc, bob, data)
    su = replace(full, signature=compact_signature(full.signature))
    assert len(su.signature) == 64

    r = relay.post(su.to_json(), data)

    assert r.status_code == 202, r.text
    done = relay.wait_done(su)
    assert done["state"] == "submitted", done
    assert_on_chain_once(relay.ledger, su, done["updateId"], tx_hash=done["txHash"])


def test_status_of_an_update_never_relayed_is_404(relay: Relay) -> None:
    su = sign(relay.sc, relay.sc.contributors[0], b"x")
    assert relay.status(su).status_code == 404


# -- bad signatures: 422, nothing stored, nothing sent ----------------------------------------


def _forged(sc: Scenario, data: bytes) -> dict[str, Any]:
    """Signed by a stranger but naming an admitted contributor."""
    stranger = Account.create()
    su = sign(sc, stranger, data)
    return {**su.to_json(), "contributor": sc.contributors[0].address}


def _expired(sc: Scenario, data: bytes) -> dict[str, Any]:
    return sign(sc, sc.contributors[0], data, deadline=int(time.time()) - 60).to_json()


def _high_s(sc: Scenario, data: bytes) -> dict[str, Any]:
    """The same signature in its malleable twin form (s → n − s, v flipped): still recovers."""
    su = sign(sc, sc.contributors[0], data)
    r, s, v = su.signature[:32], int.from_bytes(su.signature[32:64], "big"), su.signature[64]
    twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    return {**su.to_json(), "signature": "0x" + twin.hex()}


def _wrong_chain(sc: Scenario, data: bytes) -> dict[str, Any]:
    who = sc.contributors[0]
    su = sign(sc, who, data)
    typed = sc.ledger.typed_update(
        su.task_id,
        su.round,
        su.content_hash,
        su.cid,
        su.num_samples,
        su.deadline,
        chain_id=sc.ledger.chain_id + 1,
    )
    sig = Account.sign_typed_data(who.key, full_message=typed).signature
    return {**su.to_json(), "signature": "0x" + bytes(sig).hex()}


def _short(sc: Scenario, data: bytes) -> dict[str, Any]:
    """One byte short of the EIP-2098 compact form (64 bytes, which is accepted)."""
    su = sign(sc, sc.contributors[0], data)
    return {**su.to_json(), "signature": "0x" + su.signature[:63].hex()}


def _cut_to_64(sc: Scenario, data: bytes) -> dict[str, Any]:
    """A 65-byte signature cut to 64 bytes is read as (r, vs) with y parity 0 and recovers
    another key whenever the signature's v was 28: signed until it is (the relay must not
    take 64 bytes for a compact signature they are not)."""
    for seed in range(64):
        su = sign(sc, sc.contributors[0], data, samples=100 + seed)
        if su.signature[64] == 28:
            return {**su.to_json(), "signature": "0x" + su.signature[:64].hex()}
    raise AssertionError("no signature with v = 28 in 64 tries")


def _tampered(sc: Scenario, data: bytes) -> dict[str, Any]:
    """A valid signature over other samples: the signed message is not the one sent."""
    return {**sign(sc, sc.contributors[0], data).to_json(), "numSamples": 10**6}


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_forged, "not by the contributor"),
        (_expired, "expired"),
        (_high_s, "high s"),
        (_wrong_chain, "not by the contributor"),
        (_short, "64 or 65 bytes"),
        (_cut_to_64, "not by the contributor"),
        (_tampered, "not by the contributor"),
    ],
    ids=["forged", "expired", "high-s", "wrong-chain", "short", "cut-to-64", "tampered"],
)
def test_a_bad_signature_is_422_and_nothing_is_stored_or_sent(relay: Relay, make, why) -> None:
    data = update_bytes(relay.sc, 2)
    nonce = relay.nonce()

    r = relay.post(make(relay.sc, data), data)

    assert r.status_code == 422, r.text
    assert why in r.json()["detail"]
    assert not relay.sc.store.has(compute_cid(data))
    assert relay.service.relayer.pending() == 0
    assert relay.nonce() == nonce


def test_content_that_is_not_what_was_signed_is_422_and_not_stored(relay: Relay) -> None:
    data = update_bytes(relay.sc, 3)
    other = update_bytes(relay.sc, 4)
    nonce = relay.nonce()

    r = relay.post(sign(relay.sc, relay.sc.contributors[0], data).to_json(), other)

    assert r.status_code == 422
    assert "sha256" in r.json()["detail"]
    assert not relay.sc.store.has(compute_cid(other))
    assert not relay.sc.store.has(compute_cid(data))
    assert relay.nonce() == nonce


def test_a_signed_copy_of_another_contributors_update_is_422_and_not_stored(
    relay: Relay,
) -> None:
    """contributor 1 signs contributor 0's file (its contentHash and cid): validators would
    judge it COPIED, so the relay spends neither gas nor disk on it."""
    victim, thief = relay.sc.contributors[0], relay.sc.contributors[1]
    data = update_bytes(relay.sc, 12, victim)
    nonce = relay.nonce()

    r = relay.post(sign(relay.sc, thief, data).to_json(), data)

    assert r.status_code == 422, r.text
    assert f"names contributor {victim.address.lower()}" in r.json()["detail"]
    assert "COPIED" in r.json()["detail"]
    assert not relay.sc.store.has(compute_cid(data))
    assert relay.nonce() == nonce


# -- schema and size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"signed": {}, "content": ""},
        {"signed": {"taskId": "1"}, "content": "AA=="},
        "not an object",
    ],
)
def test_a_malformed_request_is_422_without_echoing_the_input(relay: Relay, body: Any) -> None:
    r = relay.http.post("/relay/updates", json=body)
    assert r.status_code == 422
    assert all("input" not in e for e in r.json()["detail"])


def test_content_that_is_not_base64_is_422(relay: Relay) -> None:
    su = sign(relay.sc, relay.sc.contributors[0], b"abc")
    r = relay.http.post("/relay/updates", json={"signed": su.to_json(), "content": "not*b64"})
    assert r.status_code == 422
    assert "base64" in r.json()["detail"]


def test_a_body_over_the_relay_cap_is_413_before_it_is_read(relay: Relay) -> None:
    """A Content-Length over the cap is answered 413 from the headers alone: the client sends
    none of the body and still gets the whole answer.  (Sending the body as well races the
    server's close against the unread bytes: a TCP reset can eat the 413 on the way back.)"""
    cap = relay.service.limits.max_body_bytes
    url = httpx.URL(str(relay.http.base_url))
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /relay/updates HTTP/1.1\r\nHost: relay\r\n"
            b"Content-Type: application/json\r\n" + f"Content-Length: {cap + 1}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b'"detail":"request body larger than' in body


def test_a_body_over_the_cap_streamed_without_length_is_413(relay: Relay) -> None:
    cap = relay.service.limits.max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(cap // (1 << 20) + 2):
            yield b"x" * (1 << 20)

    r = relay.http.post(
        "/relay/updates", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_the_relay_route_takes_bodies_over_the_global_1_mib_cap(relay: Relay) -> None:
    data = b"\0" * (2 << 20)  # a 2 MiB update: over 1 MiB, under the relay's 8 MiB
    su = sign(relay.sc, relay.sc.contributors[1], data)
    assert relay.post(su.to_json(), data).status_code == 202
    assert relay.wait_done(su)["state"] == "submitted"


# -- rate limits ------------------------------------------------------------------------------


@pytest.fixture
def strict_relay(ledger, store, dev_accounts, tmp_path) -> Iterator[Relay]:
    limits = RelayLimits(address_burst=3, address_per_s=0.01, ip_burst=8, ip_per_s=0.01)
    yield from make_relay(ledger, store, dev_accounts, tmp_path, limits=limits)


def test_a_replayed_update_is_409_and_never_charges_its_contributor(strict_relay: Relay) -> None:
    data = update_bytes(strict_relay.sc, 5)
    body = sign(strict_relay.sc, strict_relay.sc.contributors[0], data).to_json()
    codes = [strict_relay.post(body, data).status_code for _ in range(5)]
    assert codes == [202, 409, 409, 409, 409]
    assert strict_relay.service.by_address.wait(strict_relay.sc.contributors[0].address) == 0


def test_updates_for_one_address_beyond_its_burst_are_429_with_retry_after(
    strict_relay: Relay, ledger, store, dev_accounts
) -> None:
    """address_burst is 3: the contributor's updates to three tasks pass, the fourth waits."""
    who = strict_relay.sc.contributors[0]
    tasks = [strict_relay.sc] + [
        make_scenario(ledger, store, dev_accounts, n_contributors=4, min_updates=1)
        for _ in range(3)
    ]
    codes = []
    for i, sc in enumerate(tasks):
        data = update_bytes(sc, 80 + i, who)
        codes.append(strict_relay.post(sign(sc, who, data).to_json(), data))
    assert [r.status_code for r in codes] == [202, 202, 202, 429]
    assert f"too many relayed updates for {who.address}" in codes[-1].json()["detail"]
    assert int(codes[-1].headers["Retry-After"]) >= 1


def test_forged_requests_in_a_contributors_name_drain_the_senders_ip_not_the_address(
    strict_relay: Relay,
) -> None:
    data = update_bytes(strict_relay.sc, 6)
    forged = _forged(strict_relay.sc, data)
    codes = [strict_relay.post(forged, data).status_code for _ in range(9)]
    assert codes == [422] * 8 + [429]
    # the victim's own address bucket is untouched: only the IP is out of tokens
    assert strict_relay.service.by_address.wait(strict_relay.sc.contributors[0].address) == 0


# -- on-chain preconditions: 409 with the contract's error ------------------------------------


def test_a_replay_is_409_duplicate_submission(relay: Relay) -> None:
    data = update_bytes(relay.sc, 7)
    su = sign(relay.sc, relay.sc.contributors[0], data)
    assert relay.post(su.to_json(), data).status_code == 202
    relay.wait_done(su)
    nonce = relay.nonce()

    r = relay.post(su.to_json(), data)

    assert r.status_code == 409
    assert r.json()["error"] == "DuplicateSubmission"
    assert relay.nonce() == nonce


def test_an_update_already_on_chain_is_409_from_the_contract(relay: Relay) -> None:
    who = relay.sc.contributors[2]
    data = update_bytes(relay.sc, 8, who)
    su = sign(relay.sc, who, data)
    relay.sc.as_(who).submit_update(su.task_id, su.round, su.content_hash, su.cid, 100)

    r = relay.post(su.to_json(), data)

    assert r.status_code == 409
    assert r.json()["error"] == "DuplicateSubmission"
    assert "TrainingLedger reverted" in r.json()["detail"]


def test_a_contributor_not_admitted_is_403_and_nothing_is_stored(relay: Relay) -> None:
    outsider = Account.create()
    data = update_bytes(relay.sc, 9, outsider)
    r = relay.post(sign(relay.sc, outsider, data).to_json(), data)
    assert r.status_code == 403
    assert "not an admitted contributor" in r.json()["detail"]
    assert not relay.sc.store.has(compute_cid(data))


def test_a_signature_for_another_round_is_409_wrong_round(relay: Relay) -> None:
    who = relay.sc.contributors[0]
    data = update_bytes(relay.sc, 10)
    good = sign(relay.sc, who, data)
    su = relay.ledger.sign_update(
        who, good.task_id, good.round + 1, good.content_hash, good.cid, 100, good.deadline
    )
    r = relay.post(su.to_json(), data)
    assert r.status_code == 409
    assert r.json()["error"] == "WrongRound"


# -- batching ---------------------------------------------------------------------------------


@pytest.fixture
def batching_relay(ledger, store, dev_accounts, tmp_path) -> Iterator[Relay]:
    yield from make_relay(
        ledger, store, dev_accounts, tmp_path, batch_size=3, max_wait_s=10.0, max_updates=2
    )


def test_an_entry_that_would_revert_fails_alone_and_the_batch_goes_through(
    batching_relay: Relay,
) -> None:
    sc = batching_relay.sc
    signed = []
    for i in range(3):  # maxUpdates is 2: each passes its own check, the third cannot fit
        data = update_bytes(sc, 20 + i, sc.contributors[i])
        su = sign(sc, sc.contributors[i], data)
        assert batching_relay.post(su.to_json(), data).status_code == 202
        signed.append(su)

    done = [batching_relay.wait_done(su) for su in signed]

    assert [d["state"] for d in done] == ["submitted", "submitted", "failed"]
    assert done[0]["txHash"] == done[1]["txHash"]  # one batch
    assert done[2]["error"] == "RoundFull"
    assert batching_relay.service.relayer.batches_sent == 1


# -- no internals leak ------------------------------------------------------------------------


class _BrokenStore:
    def put(self, data: bytes, *, pin: bool = True) -> str:
        raise RuntimeError("disk on fire at /secret/path")

    def has(self, cid: str) -> bool:
        return False


def test_an_unexpected_failure_is_a_bare_500_without_internals(
    ledger, store, dev_accounts, tmp_path
) -> None:
    for relay in make_relay(ledger, store, dev_accounts, tmp_path, store_for_relay=_BrokenStore()):
        data = update_bytes(relay.sc, 11)
        r = relay.post(sign(relay.sc, relay.sc.contributors[0], data).to_json(), data)
        assert r.status_code == 500
        assert r.json() == {"detail": "internal server error"}
        # the reservation is released: the contributor may retry once the store is back
        su = sign(relay.sc, relay.sc.contributors[0], data)
        assert relay.status(su).status_code == 404


# -- durability: the relay journal ------------------------------------------------------------


def restarted(relay: Relay, tmp_path: Path, *, max_wait_s: float = 0.05) -> RelayService:
    """A new relay service, as after a restart: fresh memory, the same journal file."""
    return RelayService(
        relay.ledger.with_account(relay.relayer),
        relay.sc.store,
        limits=GENEROUS,
        batch_size=32,
        max_wait_s=max_wait_s,
        journal_path=tmp_path / JOURNAL,
        policy=served_by(relay.sc),
    )


def wait_settled(service: RelayService, su: SignedUpdate, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = service.status(su.contributor, su.task_id, su.round)
        if st is not None and st.state != "queued":
            return st
        time.sleep(0.05)
    raise AssertionError(f"still queued after {timeout}s")


def queue_updates(relay: Relay, n: int, seed: int) -> list[tuple[SignedUpdate, bytes]]:
    """``n`` updates from different contributors, each acknowledged with 202."""
    out = []
    for i in range(n):
        data = update_bytes(relay.sc, seed + i, relay.sc.contributors[i])
        su = sign(relay.sc, relay.sc.contributors[i], data)
        r = relay.post(su.to_json(), data)
        assert r.status_code == 202, r.text
        out.append((su, data))
    return out


def assert_on_chain_once(
    ledger: Ledger, su: SignedUpdate, update_id: int, *, tx_hash: str | None = None
) -> None:
    """``su`` is recorded once under ``update_id``, exactly as signed (ledger v2 keeps no slot
    per update: the record is in its event, single or batched)."""
    assert ledger.has_submitted(su.task_id, su.round, su.contributor)
    mine = [
        rec
        for rec in ledger.update_records(su.task_id, su.round)
        if rec.contributor == su.contributor
    ]
    assert len(mine) == 1, mine
    (rec,) = mine
    assert rec.update_id == update_id
    assert (rec.content_hash, rec.cid, rec.num_samples, rec.tensor_root) == (
        su.content_hash,
        su.cid,
        su.num_samples,
        su.tensor_root,
    )
    if tx_hash is not None:
        assert rec.tx_hash == tx_hash


@pytest.fixture
def stalled_relay(ledger, store, dev_accounts, tmp_path) -> Iterator[Relay]:
    """A relayer whose batch is never due on its own: what it acknowledges stays queued."""
    yield from make_relay(ledger, store, dev_accounts, tmp_path, batch_size=32, max_wait_s=3600.0)


def test_an_acknowledged_update_survives_a_relayer_crash_and_is_sent_after_restart(
    stalled_relay: Relay, tmp_path: Path
) -> None:
    queued = queue_updates(stalled_relay, 2, seed=30)
    nonce = stalled_relay.nonce()
    stalled_relay.service.relayer.stop(drain=False)  # dies before its batch is due
    assert stalled_relay.nonce() == nonce
    assert not any(
        stalled_relay.ledger.has_submitted(su.task_id, su.round, su.contributor) for su, _ in queued
    )

    service = restarted(stalled_relay, tmp_path)
    try:
        su0 = queued[0][0]
        assert service.status(su0.contributor, su0.task_id, su0.round).state == "queued"
        service.start()
        done = [wait_settled(service, su) for su, _ in queued]
    finally:
        service.close()

    assert [d.state for d in done] == ["submitted", "submitted"], done
    assert done[0].tx_hash == done[1].tx_hash  # one batch
    assert stalled_relay.nonce() == nonce + 1
    assert service.counts["recovered"] == 2
    for (su, data), d in zip(queued, done, strict=True):
        assert_on_chain_once(stalled_relay.ledger, su, d.update_id)
        assert stalled_relay.sc.store.get(su.cid) == data


def test_an_update_sent_before_the_crash_but_not_recorded_is_not_sent_again(
    stalled_relay: Relay, tmp_path: Path
) -> None:
    (su, _), (other, _) = queue_updates(stalled_relay, 2, seed=40)
    stalled_relay.service.relayer.stop(drain=False)
    # The dead relayer had sent the first update; the journal still says queued.
    sender = stalled_relay.ledger.with_account(stalled_relay.relayer)
    assert sender.sender is not None
    sent = sender.submit_batch([su])
    assert sent.skipped == []
    (sent_id,) = [rec.update_id for rec in sent.records]
    sent_tx = "0x" + bytes(sent.receipt["transactionHash"]).hex()
    journal = RelayJournal(tmp_path / JOURNAL, ledger_scope(stalled_relay.ledger))
    assert journal.get((su.contributor.lower(), su.task_id, su.round)).state == "queued"
    nonce = stalled_relay.nonce()

    service = restarted(stalled_relay, tmp_path)
    try:
        service.start()
        st, st_other = wait_settled(service, su), wait_settled(service, other)
    finally:
        service.close()

    assert (st.state, st.update_id, st.tx_hash, st.reason) == (
        "submitted",
        sent_id,
        sent_tx,
        ALREADY_ON_CHAIN,
    )
    assert st.error is None
    assert st_other.state == "submitted"
    assert stalled_relay.nonce() == nonce + 1  # only the other update's batch was sent
    assert_on_chain_once(stalled_relay.ledger, su, sent_id)
    assert_on_chain_once(stalled_relay.ledger, other, st_other.update_id)
    kept = journal.get((su.contributor.lower(), su.task_id, su.round))
    assert (kept.state, kept.update_id, kept.tx_hash) == ("submitted", sent_id, sent_tx)
    assert journal.queued() == []
    journal.close()


def test_the_status_route_answers_from_the_journal_after_a_restart(
    relay: Relay, tmp_path: Path
) -> None:
    (su, _), (late, _) = queue_updates(relay, 2, seed=50)
    before = relay.wait_done(su)
    relay.wait_done(late)
    assert before["state"] == "submitted"

    service = restarted(relay, tmp_path)
    db = Database(f"sqlite:///{tmp_path / 'index2.db'}").create()
    app = create_app(db, w3=relay.ledger.w3, ledger_address=relay.ledger.address, relayer=service)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        assert service.status(su.contributor, su.task_id, su.round) is not None
        after = http.get(f"/relay/updates/{su.contributor}/{su.task_id}/{su.round}")
        unknown = sign(relay.sc, relay.sc.contributors[3], b"never sent")
        missing = http.get(f"/relay/updates/{unknown.contributor}/{su.task_id}/{su.round}")
    service.close()

    assert after.status_code == 200
    assert after.json() == before
    assert missing.status_code == 404
    assert service.counts.get("recovered", 0) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SERVE = """
import sys
from pathlib import Path

import uvicorn
from eth_account import Account

from fedledger_backend.api import create_app
from fedledger_backend.db import Database
from fedledger_backend.relay_service import RelayLimits, RelayPolicy, RelayService
from fedledger.chain.ledger import Ledger, connect
from fedledger.content.store import open_store

rpc, contract, key, home, journal, db, port, validator = sys.argv[1:]
ledger = Ledger(connect(rpc), contract).with_account(Account.from_key(key))
service = RelayService(
    ledger,
    open_store(None, Path(home)),
    limits=RelayLimits(address_burst=50, address_per_s=50, ip_burst=500, ip_per_s=500),
    batch_size=32,
    max_wait_s=3600.0,
    journal_path=Path(journal),
    policy=RelayPolicy(validators=(validator,)),
)
app = create_app(Database(f"sqlite:///{db}").create(), relayer=service)
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
"""


def test_a_relay_server_killed_with_sigkill_after_the_202_loses_nothing(
    ledger, store, dev_accounts, tmp_path
) -> None:
    sc = make_scenario(ledger, store, dev_accounts, n_contributors=4, min_updates=1)
    relayer = dev_accounts[15]
    port = _free_port()
    args = [
        str(ledger.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
        ledger.address,
        relayer.key.hex(),
        str(tmp_path / "home"),
        str(tmp_path / JOURNAL),
        str(tmp_path / "index.db"),
        str(port),
        sc.validators[0].address,
    ]
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, *args], cwd=Path(__file__).parent.parent)
    queued: list[tuple[SignedUpdate, bytes]] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            end = time.monotonic() + 90
            while True:
                try:
                    http.get("/health")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < end, "server did not start"
                    time.sleep(0.2)
            for i in range(3):
                data = update_bytes(sc, 60 + i, sc.contributors[i])
                su = sign(sc, sc.contributors[i], data)
                body = {"signed": su.to_json(), "content": base64.b64encode(data).decode()}
                assert http.post("/relay/updates", json=body).status_code == 202
                queued.append((su, data))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not any(ledger.has_submitted(su.task_id, su.round, su.contributor) for su, _ in queued)

    service = RelayService(
        ledger.with_account(relayer),
        store,
        limits=GENEROUS,
        max_wait_s=0.05,
        journal_path=tmp_path / JOURNAL,
    ).start()
    try:
        done = [wait_settled(service, su) for su, _ in queued]
    finally:
        service.close()

    assert [d.state for d in done] == ["submitted"] * 3, done
    for (su, data), d in zip(queued, done, strict=True):
        assert_on_chain_once(ledger, su, d.update_id)
        assert store.get(su.cid) == data


def test_a_replay_after_a_restart_is_still_409(relay: Relay, tmp_path: Path) -> None:
    ((su, data),) = queue_updates(relay, 1, seed=70)
    relay.wait_done(su)
    service = restarted(relay, tmp_path)
    try:
        with pytest.raises(FedledgerError) as err:
            service.submit(su, data, "127.0.0.1")
    finally:
        service.close()
    assert getattr(err.value, "name", None) == "DuplicateSubmission"


@pytest.mark.parametrize("kind", ["corrupt", "blocked-dir"])
def test_an_unusable_journal_path_is_a_clear_error(
    ledger, store, dev_accounts, tmp_path, kind: str
) -> None:
    if kind == "corrupt":
        path = tmp_path / JOURNAL
        path.write_bytes(b"this is not a sqlite database\n" * 200)
        why, hint = "file is not a database", "move"
    else:
        (tmp_path / "data").write_text("a file where the data dir should be")
        path = tmp_path / "data" / JOURNAL
        why, hint = "a file is in the way", "another journal path"

    with pytest.raises(RelayJournalError) as err:
        RelayService(ledger.with_account(dev_accounts[15]), store, journal_path=path)

    assert isinstance(err.value, FedledgerError)
    text = str(err.value)
    assert str(path.parent) in text and why in text and hint in text
    assert "Traceback" not in text and "\n" not in text
    assert err.value.__suppress_context__  # raised `from None`: no chained SQLite traceback


def test_the_journal_keeps_every_field_of_a_signed_update(tmp_path: Path) -> None:
    su = SignedUpdate(
        task_id=2**256 - 1,
        round=2**64 - 1,
        content_hash="0x" + "ab" * 32,
        cid="bafkreiexample",
        num_samples=2**64 - 1,
        contributor="0x" + "Cd" * 20,
        deadline=2**256 - 1,
        signature=bytes(range(65)),
    )
    key = (su.contributor.lower(), su.task_id, su.round)
    journal = RelayJournal(tmp_path / JOURNAL, "31337:0xabc")
    assert journal.add(su) and not journal.add(su)  # one live entry per key
    journal.close()

    reopened = RelayJournal(tmp_path / JOURNAL, "31337:0xabc")
    (entry,) = reopened.queued()
    assert entry.update == su and entry.state == "queued"
    assert RelayJournal(tmp_path / JOURNAL, "1:0xother").get(key) is None  # scoped by ledger
    reopened.mark_failed(key, "round full", "RoundFull")
    assert reopened.add(su)  # a failed update may be relayed again
    reopened.mark_submitted([(key, 7)], "0x" + "12" * 32)
    got = reopened.get(key)
    assert got is not None
    assert (got.state, got.update_id, got.error, got.reason) == ("submitted", 7, None, None)
    assert reopened.queued() == []
    reopened.close()
