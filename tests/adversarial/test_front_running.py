"""Issue #14, class 6: front-running the relayer loses no acknowledged update.

Once the relayer's ``submitUpdatesFor`` batch is in the mempool, every signature in it is
public: anyone can copy one entry and land it first with ``submitUpdateFor``.  The batch is
all-or-nothing, so it reverted, and the relayer marked all six entries ``failed`` — five
updates acknowledged with 202 never reached the chain.  Now (fedledger.flows.relay.BatchRelayer) the
relayer checks the entries again, records the landed one as ``submitted`` with its real update
id and the front-runner's tx, and resends the rest; after bounded retries it sends entries
alone.  Every 202 ends ``submitted`` or ``failed`` with a reason, each update on chain once.

Real anvil with automine off, so the front-runner really sees the relayer's pending
transaction and outbids it into the same block; the real contract; the relay on a real
uvicorn, followed through its status route; the front-runner uses raw web3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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

from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.content.store import ContentStore
from fedledger_backend.relay_service import LANDED_BY_OTHER, RelayLimits, RelayPolicy

RELAYER, FRONT_RUNNER = 15, 16
ROOMY = RelayLimits(address_burst=50, address_per_s=50, ip_burst=1000, ip_per_s=1000)
LANDED_BY = LANDED_BY_OTHER.split("(")[0]  # "already on chain: another sender landed ... first "
ENTRY_FIELDS = ("taskId", "round", "contentHash", "cid", "numSamples", "contributor", "deadline")


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


def copied_entries(contract: Any, tx: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The signed updates in a pending ``submitUpdatesFor``, as ``submitUpdateFor`` arguments."""
    _fn, params = contract.decode_function_input(HexBytes(tx["input"]))
    out = []
    for e in params["updates"]:
        if isinstance(e, dict):
            out.append((*(e[k] for k in ENTRY_FIELDS), e["signature"]))
        else:
            out.append(tuple(e))
    return out


def front_run(w3: Web3, contract: Any, who: LocalAccount, tx: dict[str, Any], i: int) -> bytes:
    """Land entry ``i`` of the pending batch ``tx`` first: outbid it into the same block."""
    entry = copied_entries(contract, tx)[i]
    return send_raw(w3, who, contract.functions.submitUpdateFor(*entry), tip_gwei=50)


def updates_on_chain(ledger: Ledger, task_id: int) -> dict[str, list[int]]:
    """Update ids recorded per contributor in round 0."""
    out: dict[str, list[int]] = {}
    for ev in ledger.events("UpdateSubmitted", task_id=task_id, round_=0):
        out.setdefault(ev["args"]["contributor"], []).append(int(ev["args"]["updateId"]))
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
    for (su, _), d in zip(signed, done, strict=True):
        assert chain[su.contributor] == [d["updateId"]]  # exactly once, under the id reported
        assert ledger.get_update_digest(d["updateId"]) == ledger.update_digest(
            su.task_id, su.round, su.contributor, su.content_hash, su.cid, su.num_samples
        )


def test_an_entry_front_run_in_the_mempool_is_submitted_with_its_id_and_the_rest_resent(
    node: RelayNode, sc: Scenario, ledger: Ledger, dev_accounts: list[LocalAccount]
) -> None:
    w3, contract = outsider_web3(ledger)
    front_runner = dev_accounts[FRONT_RUNNER]
    nonce = node.nonce()
    with automine_off(w3):
        signed = acknowledge_all(node, sc)  # the sixth 202 sends the batch
        batch = wait_pending(w3, node.relayer.address)
        assert len(copied_entries(contract, batch)) == 6
        copied = front_run(w3, contract, front_runner, batch, 2)
        mine(w3)  # one block: the copy first (higher tip), then the batch, which reverts
    reverted = w3.eth.get_transaction_receipt(batch["hash"])
    landed = w3.eth.get_transaction_receipt(copied)
    assert reverted["status"] == 0 and landed["status"] == 1
    assert reverted["blockNumber"] == landed["blockNumber"]
    (ev,) = contract.events.UpdateSubmitted().process_receipt(landed)

    with node.http() as http:
        done = [wait_settled(http, su) for su, _ in signed]

    assert [d["state"] for d in done] == ["submitted"] * 6, done
    assert done[2]["txHash"] == "0x" + copied.hex()
    assert done[2]["updateId"] == ev["args"]["updateId"]
    assert LANDED_BY in done[2]["reason"] and front_runner.address in done[2]["reason"]
    resent = {d["txHash"] for i, d in enumerate(done) if i != 2}
    assert len(resent) == 1 and resent != {batch["hash"]}  # the other five: one new batch
    assert_each_on_chain_once(ledger, sc, done, signed)
    assert node.nonce() == nonce + 2  # the reverted batch and its resend, nothing more
    assert node.service.relayer.attempts_failed == 1
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


def test_an_entry_landed_before_the_relayer_flushes_is_submitted_and_never_sent(
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
    assert_each_on_chain_once(ledger, sc, done, signed)
    assert node.nonce() == nonce + 1  # the landed entry was left out: no revert, no gas lost
    assert node.service.relayer.attempts_failed == 0


def test_a_relayer_front_run_on_every_try_settles_every_entry_within_bounded_sends(
    node: RelayNode, sc: Scenario, ledger: Ledger, dev_accounts: list[LocalAccount]
) -> None:
    """The front-runner copies an entry of each of the relayer's next four transactions: three
    batches revert (max_attempts), then the entries go alone and only one more is sunk."""
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
            if len(copies) < 4:
                copies.append(front_run(w3, contract, front_runner, tx, 0))
            mine(w3)
    with node.http() as http:
        done = [wait_settled(http, su) for su, _ in signed]

    assert [d["state"] for d in done] == ["submitted"] * 6, done
    by_front_runner = {"0x" + h.hex() for h in copies}
    landed_by_other = [d for d in done if d["txHash"] in by_front_runner]
    assert len(landed_by_other) == 4
    assert all(LANDED_BY in d["reason"] for d in landed_by_other)
    assert_each_on_chain_once(ledger, sc, done, signed)
    sent = node.nonce() - nonce
    assert sent == 6  # 3 reverted batches, 1 reverted single, 2 singles that landed
    assert sent <= node.service.relayer.max_attempts + 2 * len(signed)
