"""Helpers for the indexer's fault tests: a busy chain, reorgs on anvil, and table dumps."""

from __future__ import annotations

import random
from collections.abc import Sequence
from hashlib import sha256
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from fedledger.chain.ledger import Ledger, NonceManager, TaskConfig, to_hex
from fedledger.chain.records import RoundResult
from fedledger.content.cid import compute_cid
from fedledger_backend.db import Base, Database
from fedledger_backend.handlers import HANDLERS, rebuild
from fedledger_backend.indexer import Indexer, LedgerSource


def rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    body = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    ).json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


def url_of(ledger: Ledger) -> str:
    return str(ledger.w3.provider.endpoint_uri)  # type: ignore[attr-defined]


def busy_chain(
    ledger: Ledger,
    accounts: Sequence[LocalAccount],
    *,
    rounds: int,
    contributors: int = 6,
    seed: int = 1,
) -> int:
    """An open task whose rounds each get ``contributors`` updates and two validators' attestations
    (one of them sometimes disagreeing); returns the task id.  Every event type appears."""
    rng = random.Random(seed)
    owner, v1, v2 = accounts[0], accounts[1], accounts[2]
    members = accounts[3 : 3 + contributors]
    task = ledger.create_task(
        TaskConfig(
            model_hash=_h(rng),
            model_cid="bafkreimodel",
            spec_cid="bafkreispec",
            min_updates=contributors,
            max_updates=contributors,
            quorum=2,
            open=False,
            max_samples=1000,
        )
    )
    nonces = NonceManager(ledger.w3)
    owner_l = ledger.with_account(owner, nonces)
    for m in members:
        owner_l.add_contributor(task, m.address)
    for v in (v1, v2, accounts[-1]):
        owner_l.add_validator(task, v.address)
    subs = [ledger.with_account(m, nonces) for m in members]
    vals = [ledger.with_account(v, nonces) for v in (v1, v2, accounts[-1])]
    for rnd in range(rounds):
        pend = []
        for c in subs:
            assert c.sender is not None
            data = rng.getrandbits(256).to_bytes(32, "big")
            fn = c.submit_update_fn(
                task, rnd, "0x" + sha256(data).hexdigest(), compute_cid(data), 100
            )
            pend.append((c.sender, c.sender.send(fn, label="submit", gas=400_000)))
        for sender, p in pend:
            sender.wait(p)
        agreed = made_up_result(ledger, task, rnd, rng)
        if rng.random() < 0.5:  # a dissenting validator first
            vals[2].attest_round(task, rnd, made_up_result(ledger, task, rnd, rng))
        vals[0].attest_round(task, rnd, agreed)
        vals[1].attest_round(task, rnd, agreed)
    return task


def made_up_result(ledger: Ledger, task: int, rnd: int, rng: random.Random) -> RoundResult:
    """A result with the round's own records (the contract binds every attestation to them)
    and made-up hashes and CIDs: what a lying or careless validator could attest."""
    r = ledger.get_round(task, rnd)
    return RoundResult(
        record_hash="0x" + bytes(r["recordHash"]).hex(),
        update_count=int(r["updateCount"]),
        verdict_root=_h(rng),
        verdict_hash=_h(rng),
        verdict_cid=_cid(rng),
        aggregate_hash=_h(rng),
        aggregate_cid=_cid(rng),
    )


def _cid(rng: random.Random) -> str:
    return compute_cid(rng.getrandbits(256).to_bytes(32, "big"))


def _h(rng: random.Random) -> str:
    return "0x" + rng.getrandbits(256).to_bytes(32, "big").hex()


def reorg(ledger: Ledger, depth: int, replacement: Sequence[tuple[LocalAccount, Any]] = ()) -> None:
    """Replace the last ``depth`` blocks with new ones holding ``replacement`` (account, bound
    contract call) transactions, all in the first new block (anvil_reorg)."""
    w3 = ledger.w3
    fork = int(w3.eth.block_number) - depth
    nonce: dict[str, int] = {}
    raws = []
    for acct, fn in replacement:
        n = nonce.setdefault(acct.address, w3.eth.get_transaction_count(acct.address, fork))
        nonce[acct.address] = n + 1
        tx = fn.build_transaction(
            {
                "from": acct.address,
                "nonce": n,
                "gas": 500_000,
                "chainId": ledger.chain_id,
                "maxFeePerGas": 10**11,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        raws.append([to_hex(acct.sign_transaction(tx).raw_transaction), 0])
    rpc(url_of(ledger), "anvil_reorg", [depth, raws])


def indexer(ledger: Ledger, db: Database, *, confirmations: int = 0, chunk: int = 2000) -> Indexer:
    return Indexer(
        LedgerSource(ledger, chunk=chunk),
        db.create(),
        HANDLERS,
        rebuild,
        start_block=ledger.from_block,
        confirmations=confirmations,
        chunk=chunk,
    )


def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, all columns, in a stable order (the schema has no autoincrement ids).

    Of the quarantine table only what the events decide: the quarantined events, without the
    wall-clock time they were met at (the other stages record this node's work, not the chain).
    """
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.session() as s:
        for table in Base.metadata.sorted_tables:
            q = select(table)
            if table.name == "quarantine":
                q = select(*(c for c in table.columns if c.name != "updated_at")).where(
                    table.c.stage == "index"
                )
            rows = s.execute(q).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def fresh_dump(ledger: Ledger, path: Any, *, confirmations: int = 0) -> dict[str, Any]:
    """The tables of a brand-new index of the same chain up to the same confirmed head."""
    db = Database(f"sqlite:///{path}")
    indexer(ledger, db, confirmations=confirmations).run_once()
    return dump(db)


def assert_same_tables(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], f"table {name} differs from a fresh rebuild"
