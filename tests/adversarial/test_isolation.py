"""Issue #14, class 3 (indexer and validator) and item 8's first part: isolation and leaks.

Any number in an event can be chosen by whoever sends the transaction on their own open task:
``numSamples = 2**64 - 1`` is legal on chain and overflowed the signed 64-bit SQLite column,
which stopped the indexer's checkpoint for every task, ``--reindex`` included.  One value, one
task or one update that cannot be processed must be stored exactly or isolated visibly, and
everything else indexed, judged and attested.  Public verdict reasons carry no local paths.

Real anvil, the real compiled contract, the embedded store, SQLite and a real uvicorn on
loopback; the attacker talks to the chain with raw web3 and writes into the store directly, as
the relay lets anyone do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from inspect import signature
from pathlib import Path
from typing import Any

import httpx
import pytest
from chain_kit import dump, fresh_dump, indexer
from eth_account.signers.local import LocalAccount
from pipeline_kit import Scenario, backend_for, make_scenario
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session
from web3 import Web3
from web3.logs import DISCARD

from fedledger.chain.ledger import Ledger, TaskConfig, to_checksum
from fedledger.chain.records import RoundResult
from fedledger.content.cid import compute_cid
from fedledger.content.store import ContentStore
from fedledger.errors import ContentNotFoundError, StoreError
from fedledger.flows.task import Published, create_task, load_task, publish
from fedledger.learning.models import build_model, state_to_numpy
from fedledger.protocol import verdicts
from fedledger.protocol.aggregation import RuleSpec
from fedledger.protocol.taskspec import TaskSpec
from fedledger_backend import quarantine
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import ContributionRow, Database, EventRow, QuarantineRow
from fedledger_backend.handlers import HANDLERS, SUBJECT
from fedledger_backend.service import Backend

U64_MAX = 2**32 - 1
"""The largest claim a task may allow in ledger v2 (``maxSamples`` is bounded to 2**32 - 1)."""


# -- the attacker, from outside ---------------------------------------------------------------


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _raw(ledger: Ledger) -> tuple[Web3, Any]:
    """A web3 of the attacker's own and the contract as anyone sees it (address + ABI)."""
    w3 = Web3(Web3.HTTPProvider(str(ledger.w3.provider.endpoint_uri)))  # type: ignore[attr-defined]
    return w3, w3.eth.contract(address=ledger.address, abi=ledger.contract.abi)


def _send(w3: Web3, acct: LocalAccount, fn: Any) -> Any:
    tx = fn.build_transaction(
        {
            "from": acct.address,
            "nonce": w3.eth.get_transaction_count(acct.address),
            "gas": 1_000_000,
            "chainId": w3.eth.chain_id,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def attacker_submits_max_samples(ledger: Ledger, attacker: LocalAccount) -> tuple[int, int]:
    """The attacker's open task, and one update on it declaring ``numSamples = 2**64 - 1``,
    sent as raw transactions; returns (task id, update id)."""
    w3, c = _raw(ledger)
    cfg = TaskConfig(
        model_hash="0x" + "ab" * 32,
        model_cid="bafkreiattackermodel",
        spec_cid="bafkreiattackerspec",
        max_updates=10,
        open=True,
        # the attacker's own task allows any claim (where tasks bound the claim at all)
        **({"max_samples": U64_MAX} if "max_samples" in _fields(TaskConfig) else {}),
    )
    created = _send(w3, attacker, c.functions.createTask(cfg.as_tuple()))
    task_id = c.events.TaskCreated().process_receipt(created)[0]["args"]["taskId"]
    fn = c.functions.submitUpdate(
        task_id, 0, "0x" + "cd" * 32, "0x" + "cd" * 32, b"\0" * 32, U64_MAX
    )
    submitted = _send(w3, attacker, fn)
    # an open task admits its first-time contributor first: ContributorAdded is log 0
    logs = c.events.UpdateSubmitted().process_receipt(submitted, errors=DISCARD)
    update_id = logs[0]["args"]["updateId"]
    return int(task_id), int(update_id)


def _pair(tag: str) -> tuple[str, str]:
    data = tag.encode()
    return "0x" + hashlib.sha256(data).hexdigest(), compute_cid(data)


def _result(
    led: Ledger, task_id: int, rnd: int, agg_hash: str, agg_cid: str, verdict_file: Published
) -> RoundResult:
    """A result naming ``verdict_file`` as the round's verdict file, bound to its records."""
    r = led.get_round(task_id, rnd)
    return RoundResult(
        "0x" + bytes(r["recordHash"]).hex(), int(r["updateCount"]), "0x" + "02" * 32,
        verdict_file.content_hash, verdict_file.cid, agg_hash, agg_cid,
    )  # fmt: skip


def honest_round(ledger: Ledger, store: ContentStore, accounts: list[LocalAccount]) -> Scenario:
    """An honest task whose round 0 holds two real trained updates."""
    sc = make_scenario(ledger, store, accounts, n_contributors=2)
    for i in range(2):
        sc.submit_bytes(i, *sc.honest_update(i))
    return sc


def passes(backend: Backend, n: int) -> None:
    for _ in range(n):
        backend.run_pass()


def quarantine_rows(db: Database) -> list[QuarantineRow]:
    with db.session() as s:
        return list(s.scalars(select(QuarantineRow).order_by(QuarantineRow.key)))


# -- numbers an event may carry ---------------------------------------------------------------


def test_a_uint64_max_sample_count_is_stored_exactly_and_every_task_is_indexed_and_judged(
    ledger, store, dev_accounts, tmp_path
):
    evil_task, evil_update = attacker_submits_max_samples(ledger, dev_accounts[10])
    sc = honest_round(ledger, store, dev_accounts)
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    passes(backend, 3)

    assert backend.indexer.last_indexed() == ledger.w3.eth.block_number
    assert ledger.current_round(sc.task_id) == 1  # judged, attested and final
    with backend.db.session() as s:
        assert s.get(ContributionRow, evil_update).num_samples == U64_MAX
        honest = s.scalars(select(ContributionRow).where(ContributionRow.task_id == sc.task_id))
        assert "PENDING" not in {c.status for c in honest}  # every honest update judged
    assert quarantine_rows(backend.db) == []  # stored, not quarantined

    with BackgroundServer(backend.app()) as srv:
        one = httpx.get(f"{srv.url}/contributions/{evil_update}")
        page = httpx.get(f"{srv.url}/contributions", params={"task_id": evil_task})
        task = httpx.get(f"{srv.url}/tasks/{evil_task}")
        health = httpx.get(f"{srv.url}/health").json()
    assert one.status_code == 200 and json.loads(one.content)["num_samples"] == U64_MAX
    assert json.loads(page.content)["items"][0]["num_samples"] == U64_MAX
    assert task.status_code == 200 and task.json()["status"] == "active"
    assert health["quarantine"]["quarantined"] == 0


def test_reindex_and_a_fresh_database_rebuild_the_same_index_with_the_huge_value(
    ledger, store, dev_accounts, tmp_path
):
    _, evil_update = attacker_submits_max_samples(ledger, dev_accounts[10])
    sc = honest_round(ledger, store, dev_accounts)
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    passes(backend, 3)
    before = dump(backend.db)

    backend.reindex()  # what `fedledger serve --reindex` runs
    assert backend.indexer.last_indexed() is None
    passes(backend, 2)
    assert dump(backend.db) == before

    rebuilt = fresh_dump(ledger, tmp_path / "fresh.db")
    got = {r[0]: r for r in rebuilt["contributions"]}
    want = {r[0]: r for r in before["contributions"]}
    assert got.keys() == want.keys()
    assert got[evil_update][6] == U64_MAX  # num_samples, exact in a new database too


# -- an event whose handler fails -------------------------------------------------------------


def main_update_submitted(s: Session, ev: EventRow) -> None:
    """The UpdateSubmitted handler as main had it: numSamples bound straight into the signed
    INTEGER column (raw SQL here).  Ledger v2 bounds claims to 2**32 - 1, so the value is
    widened by 2**32 to overflow exactly as a 2**64 - 1 claim did."""
    a = ev.args
    s.execute(
        text(
            "INSERT INTO contributions (update_id, task_id, round, contributor, content_hash, "
            "cid, num_samples, tensor_root, tx_hash, block_number, block_hash, log_index, "
            "submitted_at, status) VALUES (:u, :t, :r, :c, :h, :cid, :n, :root, :tx, :b, :bh, "
            ":li, :at, 'PENDING')"
        ),
        {
            "u": a["updateId"],
            "t": a["taskId"],
            "r": a["round"],
            "c": to_checksum(a["contributor"]),
            "h": a["contentHash"],
            "cid": a["cidDigest"],
            "n": int(a["numSamples"]) << 32,
            "root": a["tensorRoot"],
            "tx": ev.tx_hash,
            "b": ev.block_number,
            "bh": ev.block_hash,
            "li": ev.log_index,
            "at": ev.block_time,
        },
    )


def _main_indexer(ledger: Ledger, db: Database) -> Any:
    ix = indexer(ledger, db)
    ix.handlers = {**HANDLERS, "UpdateSubmitted": main_update_submitted}
    ix.subject = SUBJECT
    return ix


def test_an_event_whose_handler_fails_is_quarantined_and_the_checkpoint_moves_on(
    ledger, store, dev_accounts, tmp_path
):
    evil_task, evil_update = attacker_submits_max_samples(ledger, dev_accounts[10])
    sc = honest_round(ledger, store, dev_accounts)
    db = Database(f"sqlite:///{tmp_path / 'main.db'}")
    ix = _main_indexer(ledger, db)
    ix.run_once()

    assert ix.last_indexed() == ledger.w3.eth.block_number
    with db.session() as s:
        honest = list(
            s.scalars(select(ContributionRow).where(ContributionRow.task_id == sc.task_id))
        )
        assert len(honest) == 2  # indexed after the poison, in the same chunk
        assert s.get(ContributionRow, evil_update) is None
        bad = s.scalars(select(EventRow).where(EventRow.name == "UpdateSubmitted")).first()
        assert bad is not None and bad.args["numSamples"] == U64_MAX  # the event is kept
    (q,) = quarantine_rows(db)
    assert (q.stage, q.state, q.event) == ("index", "quarantined", "UpdateSubmitted")
    assert (q.task_id, q.update_id, q.round) == (evil_task, evil_update, 0)
    assert (q.block_number, q.log_index, q.tx_hash) == (
        bad.block_number,
        bad.log_index,
        bad.tx_hash,
    )
    assert "OverflowError" in q.reason

    ix.reset()  # a replay isolates the same event again
    ix.run_once()
    assert ix.last_indexed() == ledger.w3.eth.block_number
    assert [r.key for r in quarantine_rows(db)] == [q.key]

    backend = Backend(ledger=ledger, store=store, db=db, evaluate=False)
    with BackgroundServer(backend.app()) as srv:
        task = httpx.get(f"{srv.url}/tasks/{evil_task}").json()
        other = httpx.get(f"{srv.url}/tasks/{sc.task_id}").json()
        health = httpx.get(f"{srv.url}/health").json()
    assert task["status"] == "quarantined" and "UpdateSubmitted" in task["status_reason"]
    assert other["status"] == "active"
    assert health["quarantine"]["quarantined"] == 1
    assert "OverflowError" in health["quarantine"]["last_reason"]
    assert health["quarantine"]["last"]["block_number"] == bad.block_number


def test_a_locked_database_is_not_poison_the_chunk_is_retried_and_nothing_quarantined(
    ledger, store, dev_accounts, tmp_path
):
    attacker_submits_max_samples(ledger, dev_accounts[10])
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}")

    @event.listens_for(db.engine, "connect")
    def _short_wait(dbapi_conn, _rec):  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA busy_timeout = 200")

    ix = _main_indexer(ledger, db)
    ix.confirmations = 1
    ix.run_once()
    ix.confirmations = 0
    held = sqlite3.connect(path)
    held.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="refused a write"):
            ix.run_once()
    finally:
        held.rollback()
        held.close()
    assert ix.last_indexed() == ledger.w3.eth.block_number - 1
    assert quarantine_rows(db) == []
    ix.run_once()
    assert ix.last_indexed() == ledger.w3.eth.block_number
    assert [r.event for r in quarantine_rows(db)] == ["UpdateSubmitted"]  # only the poison


# -- a task whose judging fails ---------------------------------------------------------------


def attacker_task_that_breaks_judging(
    ledger: Ledger, store: ContentStore, attacker: LocalAccount, victim: str
) -> int:
    """An open task of the attacker's with the victim appointed validator, whose round 0 the
    attacker finalised alone with the verdict file of another task: judging its round 1
    raises (not one of fedledger's errors).  Returns the task id."""
    led = ledger.with_account(attacker)
    initial = state_to_numpy(build_model("mlp_digits", seed=0))
    bound = {"max_samples": 1000} if "max_samples" in signature(create_task).parameters else {}
    task_id = create_task(led, store, TaskSpec(fetch_timeout_s=2), initial, open_=True, **bound)
    led.add_validator(task_id, attacker.address)
    led.add_validator(task_id, victim)
    st = load_task(led, store, task_id)
    other = verdicts.build(
        task_id=task_id + 1000,
        round=0,
        rule=RuleSpec.parse({"rule": "fedavg"}),
        base_model_hash=st.global_hash,
        aggregate_hash=st.global_hash,
        aggregate_cid=st.global_cid,
        entries=[],
    )
    foreign = publish(store, other.to_bytes())
    led.submit_update(task_id, 0, *_pair("round0"), 1)
    led.attest_round(task_id, 0, _result(led, task_id, 0, st.global_hash, st.global_cid, foreign))
    assert ledger.current_round(task_id) == 1
    led.submit_update(task_id, 1, *_pair("round1"), 1)
    return task_id


def _row(db: Database, key: str) -> QuarantineRow | None:
    with db.session() as s:
        return s.get(QuarantineRow, key)


def test_a_task_whose_judging_raises_is_marked_and_the_honest_round_attests_in_the_same_pass(
    ledger, store, dev_accounts, tmp_path
):
    victim = dev_accounts[1]
    evil = attacker_task_that_breaks_judging(ledger, store, dev_accounts[10], victim.address)
    sc = honest_round(ledger, store, dev_accounts)
    assert evil < sc.task_id  # the attacker's task comes first in every pass
    backend = backend_for(sc, victim, tmp_path / "v.db")
    key = quarantine.task_key("validate", evil)
    backend.validator.retries.backoff_s = 0.0  # bounded retries, without waiting for them

    passes(backend, 1)  # both rounds sealed; the index catches up with the seals
    backend.run_pass()  # the pass that judges both
    assert [a.task_id for a in backend.attested] == [sc.task_id]
    row = _row(backend.db, key)
    assert row is not None and row.state == "retrying" and row.round == 1
    assert "verdict file" in row.reason  # the round-0 file the attacker attested is another's

    passes(backend, 6)
    row = _row(backend.db, key)
    assert row is not None and row.state == "quarantined"
    assert row.attempts == quarantine.MAX_ATTEMPTS
    passes(backend, 2)  # given up: not judged again while its round stands
    assert _row(backend.db, key).attempts == quarantine.MAX_ATTEMPTS

    with BackgroundServer(backend.app()) as srv:
        task = httpx.get(f"{srv.url}/tasks/{evil}").json()
        health = httpx.get(f"{srv.url}/health").json()
        pending = httpx.get(
            f"{srv.url}/contributions", params={"task_id": evil, "round": 1}
        ).json()["items"][0]
        why = httpx.get(f"{srv.url}/contributions/{pending['update_id']}").json()
    assert task["status"] == "quarantined" and "verdict file" in task["status_reason"]
    assert health["quarantine"]["quarantined"] == 1
    assert "verdict file" in health["quarantine"]["last_reason"]
    assert why["status"] == "PENDING" and "quarantined" in why["reason"]


class Died(BaseException):
    """The worker process dies here (a crash no ``except`` catches, e.g. SIGSEGV)."""


def test_a_task_that_kills_the_worker_is_quarantined_after_a_few_restarts(
    ledger, store, dev_accounts, tmp_path, monkeypatch
):
    from fedledger.protocol import rounds as rounds_module

    victim = dev_accounts[1]
    evil = attacker_task_that_breaks_judging(ledger, store, dev_accounts[10], victim.address)
    sc = honest_round(ledger, store, dev_accounts)
    real = rounds_module.judge_round  # the judge each new validator takes (ShardedSettings.judge)

    def dies_on_the_attacker_task(*args: Any, **kw: Any) -> Any:
        if kw["task_id"] == evil:
            raise Died
        return real(*args, **kw)

    monkeypatch.setattr(rounds_module, "judge_round", dies_on_the_attacker_task)
    restarts = 0
    while ledger.current_round(sc.task_id) == 0:
        backend = backend_for(sc, victim, tmp_path / "v.db")  # a new worker process
        try:
            passes(backend, 3)
        except Died:
            restarts += 1
            assert restarts <= quarantine.MAX_ATTEMPTS, "the worker crash-loops"
    assert restarts == quarantine.MAX_ATTEMPTS  # the last death is counted by the next worker
    row = _row(backend.db, quarantine.task_key("validate", evil))
    assert row is not None and row.state == "quarantined"
    assert "died while judging" in row.reason


# -- no local paths in public reasons ---------------------------------------------------------


def test_an_unavailable_verdict_reason_carries_no_local_path(ledger, store, dev_accounts, tmp_path):
    sc = make_scenario(ledger, store, dev_accounts, n_contributors=3)
    for i in range(2):
        sc.submit_bytes(i, *sc.honest_update(i))
    data, n = sc.honest_update(2)
    gone = sc.submit_bytes(2, data, n, store_it=False)  # its bytes never reach the store
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    passes(backend, 3)
    assert ledger.current_round(sc.task_id) == 1

    local = str(store.root)  # type: ignore[attr-defined]
    with pytest.raises(ContentNotFoundError) as missing:
        store.get(list(ledger.update_records(sc.task_id))[-1].cid)
    assert local not in str(missing.value)

    final = ledger.last_finalized(sc.task_id)
    file_bytes = store.get(final["verdictCid"])
    entry = verdicts.parse(file_bytes).entry(gone)
    assert entry.verdict.name == "UNAVAILABLE" and entry.reason.startswith("not retrievable")
    for secret in (local, str(tmp_path), str(Path(local).parent)):
        assert secret.encode() not in file_bytes
    with BackgroundServer(backend.app()) as srv:
        body = httpx.get(f"{srv.url}/contributions/{gone}")
    assert body.json()["status"] == "UNAVAILABLE"
    assert local not in body.text and str(tmp_path) not in body.text


def test_a_final_round_whose_verdict_file_is_not_one_is_quarantined_and_others_are_applied(
    ledger, store, dev_accounts, tmp_path
):
    attacker = dev_accounts[10]
    led = ledger.with_account(attacker)
    initial = state_to_numpy(build_model("mlp_digits", seed=0))
    bound = {"max_samples": 1000} if "max_samples" in signature(create_task).parameters else {}
    evil = create_task(led, store, TaskSpec(), initial, open_=True, **bound)
    led.add_validator(evil, attacker.address)
    st = load_task(led, store, evil)
    led.submit_update(evil, 0, *_pair("round0"), 1)
    # finalised alone, naming the model file (not JSON at all) as the round's verdict file
    model = Published(st.global_hash, st.global_cid, 0)
    led.attest_round(evil, 0, _result(led, evil, 0, st.global_hash, st.global_cid, model))
    sc = honest_round(ledger, store, dev_accounts)
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    backend.verdict_retries.backoff_s = 0.0

    passes(backend, 3 + quarantine.MAX_ATTEMPTS)
    row = _row(backend.db, quarantine.task_key("verdicts", evil, 0))
    assert row is not None and row.state == "quarantined"
    assert row.attempts == quarantine.MAX_ATTEMPTS and "JSON" in row.reason
    with backend.db.session() as s:
        honest = s.scalars(select(ContributionRow).where(ContributionRow.task_id == sc.task_id))
        assert "PENDING" not in {c.status for c in honest}


def test_updates_whose_bytes_never_come_cost_the_round_one_timeout_not_one_each(
    tmp_path: Path,
) -> None:
    """A task creator picks ``fetch_timeout_s`` (up to an hour), a contributor picks its CID:
    twenty updates that hang must not hold the validator for twenty timeouts, nor queue the
    honest update behind them."""
    import threading
    import time

    from fedledger.content.store import open_store
    from fedledger.protocol import codec, rounds

    release = threading.Event()
    honest = b"honest update bytes"

    def fetch(r: rounds.UpdateRef) -> bytes:
        if r.update_id == 99:
            return honest
        release.wait(60)  # an IPFS fetch that never answers
        raise TimeoutError("never answered")

    def ref(uid: int) -> rounds.UpdateRef:
        return rounds.UpdateRef(uid, "0x" + "11" * 20, "00" * 32, "bafy-never", 1)

    refs = [ref(uid) for uid in range(1, 21)] + [ref(99)]
    t0 = time.monotonic()
    try:
        got = rounds._fetch_all(open_store(None, tmp_path), refs, 1.0, 1 << 20, fetch)
    finally:
        release.set()
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"{elapsed:.1f}s for 20 hanging fetches of a 1 s timeout"
    assert got[99] == (honest, codec.sha256_hex(honest))
    assert all(got[uid] == "not retrievable within 1s" for uid in range(1, 21))


def test_a_validator_waits_its_own_bound_not_the_hour_a_task_spec_asks(tmp_path: Path) -> None:
    import threading
    import time

    import numpy as np

    from fedledger.content.store import open_store
    from fedledger.protocol import codec, rounds
    from fedledger.protocol.taskspec import TaskSpec
    from fedledger.protocol.verdicts import Verdict

    release = threading.Event()

    def fetch(r: rounds.UpdateRef) -> bytes:
        release.wait(60)
        raise TimeoutError("never answered")

    base = codec.encode_model({"w": np.zeros((2, 2), np.float32)}, task_id=0, round=0)
    spec = TaskSpec(fetch_timeout_s=3600)
    ref = rounds.UpdateRef(1, "0x" + "11" * 20, "0x" + "00" * 32, "bafy-never", 1)
    t0 = time.monotonic()
    try:
        j = rounds.judge_round(
            open_store(None, tmp_path),
            task_id=1,
            round_=0,
            spec=spec,
            base_model=base,
            updates=[ref],
            max_samples=10,
            fetch=fetch,
            max_fetch_s=0.5,
        )
    finally:
        release.set()
    assert time.monotonic() - t0 < 30
    (entry,) = j.verdict_file.entries
    assert entry.verdict == Verdict.UNAVAILABLE and "0.5s" in entry.reason
