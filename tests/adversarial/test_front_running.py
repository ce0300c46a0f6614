"""Issue #14, class 6: front-running the relayer loses no acknowledged update.

Once the relayer's batch is in the mempool, every signature in it is public: anyone can copy
one entry and land it first.  Under ledger v1 the batch was all-or-nothing, so it reverted,
and the relayer marked all six entries ``failed``.  Ledger v2's ``submitBatch`` never reverts
for one entry: the copied entry is skipped with ``EntrySkipped(..., DuplicateSubmission)`` and
the other five land in the same transaction.  The relayer (fedledger.flows.relay.BatchRelayer)
finds the skipped entry's very update on chain and reports it ``submitted`` with its real
update id and the front-runner's tx.  Every 202 ends ``submitted`` or ``failed`` with a reason,
each update on chain once, and a front-runner costs the relayer no extra transaction.

Real anvil with automine off, so the front-runner really sees the relayer's pending
transaction and outbids it into the same block; the real contract; the relay on a real
uvicorn, followed through its status route; the front-runner uses raw web3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from pipeline_kit import Scenario, make_scenario
from relay_kit import (
    RelayNode,
    honest_update,
    outsider_web3,
    post,
    relay_node,
    send_raw,
    transact,
    wait_settled,
)
from web3 import Web3

from fedledger.chain.ledger import ENTRY_BYTES, Ledger, SignedUpdate
from fedledger.content.store import ContentStore
from fedledger_backend.relay_service import LANDED_BY_OTHER, RelayLimits, RelayPolicy

RELAYER, FRONT_RUNNER = 15, 16
ROOMY = RelayLimits(address_burst=50, address_per_s=50, ip_burst=1000, ip_per_s=1000)
LANDED_BY = LANDED_BY_OTHER.split("(")[0]  # "already on chain: another sender landed ... first "


@pytest.fixture
def sc(ledger: Ledger, store: ContentStore, dev_accounts: list[LocalAccount]) -> Scenario:
    """Six admitted contributors (dev accounts 2..7); the node validates the task."""
    return make_scenario(ledger, store, dev_accounts, n_contributors=6, min_updates=6)


@pytest.fixture
def node(ledger, store, dev_accounts, tmp_path, sc) -> Iterator[RelayNode]:
    """A relayer whose batch goes out when its sixth entry arrives, not before."""
    policy = RelayPolicy(validators=(sc.validators[0].address,))
    with relay_node(
        ledger,
        store,
        dev_accounts[RELAYER],
        tmp_path,
        policy=policy,
        limits=ROOMY,
        batch_size=6,
        max_wait_s=3600.0,
    ) as n:
        yield n


@contextmanager
def automine_off(w3: Web3) -> Iterator[None]:
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        yield
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        mine(w3)  # whatever is still pending


def mine(w3: Web3) -> None:
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def pending_from(w3: Web3, sender: str) -> dict[str, Any] | None:
    """The sender's oldest transaction in the mempool, as anyone can read it."""
    pool = w3.provider.make_request("txpool_content", [])["result"]["pending"]  # type: ignore[arg-type]
    txs = pool.get(sender.lower()) or pool.get(sender) or {}
    return txs[min(txs, key=int)] if txs else None


def wait_pending(w3: Web3, sender: str, timeout: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while (tx := pending_from(w3, sender)) is None:
        assert time.monotonic() < end, f"no pending transaction from {sender}"
        time.sleep(0.02)
    return tx


def copied_entries(contract: Any, tx: dict[str, Any]) -> tuple[int, int, list[bytes]]:
    """Task, round and the 176-byte packed entries of a pending ``submitBatch``."""
    fn, params = contract.decode_function_input(HexBytes(tx["input"]))
    assert fn.fn_name == "submitBatch", fn
    entries = bytes(params["entries"])
    assert len(entries) % ENTRY_BYTES == 0
    chunks = [entries[k : k + ENTRY_BYTES] for k in range(0, len(entries), ENTRY_BYTES)]
    return int(params["taskId"]), int(params["round"]), chunks


def front_run(
    w3: Web3, contract: Any, who: LocalAccount, tx: dict[str, Any], picks: Sequence[int]
) -> bytes:
    """Land entries ``picks`` of the pending batch ``tx`` first, in a batch of the
    front-runner's own (an entry names no contributor: its signer is one), outbidding ``tx``
    into the same block."""
    task_id, rnd, entries = copied_entries(contract, tx)
    copy = b"".join(entries[i] for i in picks)
    return send_raw(w3, who, contract.functions.submitBatch(task_id, rnd, copy), tip_gwei=50)


def updates_on_chain(ledger: Ledger, task_id: int) -> dict[str, list[int]]:
    """Update ids recorded per contributor in round 0 (single and batched records alike)."""
    out: dict[str, list[int]] = {}
    for rec in ledger.update_records(task_id, 0):
        out.setdefault(rec.contributor, []).append(rec.update_id)
    return out


def acknowledge_all(node: RelayNode, sc: Scenario) -> list[tuple[SignedUpdate, bytes]]:
    signed = [
        honest_update(node.ledger, node.store, sc.task_id, c, seed=i)
        for i, c in enumerate(sc.contributors)
    ]
    with node.http() as http:
        for su, data in signed:
            r = post(http, su, data)
            assert r.status_code == 202, r.text
    return signed


def assert_each_on_chain_once(
    ledger: Ledger, sc: Scenario, done: list[dict[str, Any]], signed: list[Any]
) -> None:
    chain = updates_on_chain(ledger, sc.task_id)
    assert sorted(chain) == sorted(c.address for c in sc.contributors)
    records = {rec.update_id: rec for rec in ledger.update_records(sc.task_id, 0)}
    for (su, _), d in zip(signed, done, strict=True):
        assert chain[su.contributor] == [d["updateId"]]  # exactly once, under the id reported
        rec = records[d["updateId"]]
        assert rec.tx_hash == d["txHash"]
        assert (rec.content_hash, rec.cid, rec.num_samples, rec.tensor_root) == (
            su.content_hash,
            su.cid,
            su.num_samples,
            su.tensor_root,
        )


def test_an_entry_front_run_in_the_mempool_is_skipped_reported_submitted_and_the_rest_land(
    node: RelayNode, sc: Scenario, ledger: Ledger, dev_accounts: list[LocalAccount]
) -> None:
    w3, contract = outsider_web3(ledger)
    front_runner = dev_accounts[FRONT_RUNNER]
    nonce = node.nonce()
    with automine_off(w3):
        signed = acknowledge_all(node, sc)  # the sixth 202 sends the batch
        batch = wait_pending(w3, node.relayer.address)
        assert len(copied_entries(contract, batch)[2]) == 6
        copied = front_run(w3, contract, front_runner, batch, [2])
        mine(w3)  # one block: the copy first (higher tip), then the batch
    relayed = w3.eth.get_transaction_receipt(batch["hash"])
    landed = w3.eth.get_transaction_receipt(copied)
    assert relayed["status"] == 1 and landed["status"] == 1  # v2: the batch does not revert
    assert relayed["blockNumber"] == landed["blockNumber"]
    assert landed["transactionIndex"] < relayed["transactionIndex"]
    (copy,) = ledger.records_in(landed)
    assert copy.contributor == signed[2][0].contributor  # recorded for its signer, not the thief
    skipped = ledger.skipped_in(relayed)
    assert [(s["entry"], s["signer"], s["reason"]) for s in skipped] == [
        (2, signed[2][0].contributor, "DuplicateSubmission")
    ]
    assert len(ledger.records_in(relayed)) == 5

    with node.http() as http:
        done = [wait_settled(http, su) for su, _ in signed]

    assert [d["state"] for d in done] == ["submitted"] * 6, done
    assert done[2]["txHash"] == "0x" + copied.hex()
    assert done[2]["updateId"] == copy.update_id
    assert LANDED_BY in done[2]["reason"] and front_runner.address in done[2]["reason"]
    rest = {d["txHash"] for i, d in enumerate(done) if i != 2}
    assert rest == {batch["hash"]}  # the other five landed in the very batch, not resent
    assert_each_on_chain_once(ledger, sc, done, signed)
    assert node.nonce() == nonce + 1  # one batch, nothing resent
    assert node.service.relayer.attempts_failed == 0
    journal = node.service.journal
    assert journal is not None and journal.queued() == []
    for (su, _), d in zip(signed, done, strict=True):
        kept = journal.get((su.contributor.lower(), su.task_id, su.round))
        assert kept is not None
        assert (kept.state, kept.update_id, kept.tx_hash) == (
            "submitted",
            d["updateId"],
            d["txHash"],
        )


def test_an_entry_landed_before_the_relayer_flushes_is_submitted_and_costs_nothing_more(
    ledger, store, dev_accounts, tmp_path, sc
) -> None:
    policy = RelayPolicy(validators=(sc.validators[0].address,))
    w3, contract = outsider_web3(ledger)
    with relay_node(
        ledger, store, dev_accounts[RELAYER], tmp_path, policy=policy, limits=ROOMY,
        batch_size=32, max_wait_s=3600.0,
    ) as node:  # fmt: skip
        signed = acknowledge_all(node, sc)  # queued; the batch is not due
        nonce = node.nonce()
        victim = signed[4][0]
        receipt = transact(
            w3, dev_accounts[FRONT_RUNNER], contract.functions.submitUpdateFor(*victim.as_tuple())
        )
        node.service.relayer.stop(drain=True)  # the batch goes out now
        with node.http() as http:
            done = [wait_settled(http, su) for su, _ in signed]
    assert [d["state"] for d in done] == ["submitted"] * 6, done
    assert done[4]["txHash"] == "0x" + bytes(receipt["transactionHash"]).hex()
    assert LANDED_BY in done[4]["reason"]
    assert_each_on_chain_once(ledger, sc, done, signed)
    assert node.nonce() == nonce + 1  # one batch: no revert, no resend
    assert node.service.relayer.attempts_failed == 0


@pytest.mark.parametrize(
    "picks",
    [[0], list(range(6))],
    ids=["one-entry", "every-entry"],
)
def test_a_front_runner_copying_every_relayer_transaction_costs_it_one_transaction(
    node: RelayNode,
    sc: Scenario,
    ledger: Ledger,
    dev_accounts: list[LocalAccount],
    picks: list[int],
) -> None:
    """The front-runner copies entries of every transaction the relayer sends (v1: three
    batches reverted, then the entries went alone).  In v2 the first batch lands whatever was
    copied, so there is no second transaction to copy; copied entries are ``submitted``."""
    w3, contract = outsider_web3(ledger)
    front_runner = dev_accounts[FRONT_RUNNER]
    nonce = node.nonce()
    copies: list[bytes] = []
    with automine_off(w3):
        signed = acknowledge_all(node, sc)
        end = time.monotonic() + 120
        while not all(
            (st := node.service.status(su.contributor, su.task_id, su.round)) is not None
            and st.state != "queued"
            for su, _ in signed
        ):
            assert time.monotonic() < end, "entries still queued"
            tx = pending_from(w3, node.relayer.address)
            if tx is None:
                time.sleep(0.02)
                continue
            copies.append(front_run(w3, contract, front_runner, tx, picks))
            mine(w3)
    with node.http() as http:
        done = [wait_settled(http, su) for su, _ in signed]

    assert [d["state"] for d in done] == ["submitted"] * 6, [d["reason"] for d in done]
    assert len(copies) == 1  # the relayer never had to send again
    by_front_runner = {"0x" + h.hex() for h in copies}
    landed_by_other = [i for i, d in enumerate(done) if d["txHash"] in by_front_runner]
    assert landed_by_other == picks
    assert all(LANDED_BY in done[i]["reason"] for i in picks)
    assert_each_on_chain_once(ledger, sc, done, signed)
    assert node.nonce() - nonce == 1
    assert node.service.relayer.attempts_failed == 0
