"""The relay as an outsider meets it: a `fedledger serve --relay-key` style app on a real uvicorn
on loopback, reached with raw httpx; and the chain reached with raw web3 (tests/adversarial)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.content.cid import compute_cid
from fedledger.content.store import ContentStore
from fedledger.flows.task import load_task
from fedledger.protocol import codec
from fedledger_backend.api import create_app
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import Database
from fedledger_backend.relay_service import RelayLimits, RelayPolicy, RelayService

JOURNAL = "relay-journal.sqlite3"


@dataclass
class RelayNode:
    """A running relay: its service (to look inside), its URL and the relayer's account."""

    service: RelayService
    url: str
    relayer: LocalAccount
    ledger: Ledger
    store: ContentStore

    def http(self, *, source: str | None = None) -> httpx.Client:
        """A client of the relay; ``source`` is the local address it connects from (any of
        127.0.0.0/8 on Linux), to be another peer than 127.0.0.1."""
        transport = httpx.HTTPTransport(local_address=source) if source else None
        return httpx.Client(base_url=self.url, timeout=30, transport=transport)

    def nonce(self) -> int:
        return int(self.ledger.w3.eth.get_transaction_count(self.relayer.address))

    def balance(self) -> int:
        return int(self.ledger.w3.eth.get_balance(self.relayer.address))


@contextmanager
def relay_node(
    ledger: Ledger,
    store: ContentStore,
    relayer: LocalAccount,
    tmp_path: Path,
    *,
    policy: RelayPolicy,
    limits: RelayLimits | None = None,
    batch_size: int = 1,
    max_wait_s: float = 0.05,
) -> Iterator[RelayNode]:
    service = RelayService(
        ledger.with_account(relayer),
        store,
        limits=limits or RelayLimits(),
        batch_size=batch_size,
        max_wait_s=max_wait_s,
        journal_path=tmp_path / JOURNAL,
        policy=policy,
    )
    db = Database(f"sqlite:///{tmp_path / 'relay-index.db'}").create()
    app = create_app(db, w3=ledger.w3, ledger_address=ledger.address, relayer=service)
    with BackgroundServer(app) as srv:
        yield RelayNode(service, srv.url, relayer, ledger, store)
    service.close()


def body(su: SignedUpdate, content: bytes) -> dict[str, Any]:
    return {"signed": su.to_json(), "content": base64.b64encode(content).decode()}


def post(http: httpx.Client, su: SignedUpdate, content: bytes, **headers: str) -> httpx.Response:
    return http.post("/relay/updates", json=body(su, content), headers=headers)


def status(http: httpx.Client, su: SignedUpdate) -> httpx.Response:
    return http.get(f"/relay/updates/{su.contributor}/{su.task_id}/{su.round}")


def wait_settled(http: httpx.Client, su: SignedUpdate, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the status route, as a contributor does, until the update leaves ``queued``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = status(http, su).json()
        if st["state"] != "queued":
            return dict(st)
        time.sleep(0.05)
    raise AssertionError(f"{su.contributor}'s update still queued after {timeout}s")


def sign(
    ledger: Ledger, who: LocalAccount, task_id: int, round_: int, data: bytes, samples: int = 100
) -> SignedUpdate:
    return ledger.sign_update(
        who,
        task_id,
        round_,
        codec.sha256_hex(data),
        compute_cid(data),
        samples,
        int(time.time()) + 3600,
    )


def honest_update(
    ledger: Ledger, store: ContentStore, task_id: int, who: LocalAccount, seed: int
) -> tuple[SignedUpdate, bytes]:
    """A well-formed update file of the task's current round, bound to and signed by ``who``."""
    st = load_task(ledger, store, task_id)
    rng = np.random.default_rng(seed)
    data = codec.encode_update(
        {"w": rng.standard_normal(16).astype(np.float32)},
        task_id=task_id,
        round=st.current_round,
        base_hash=st.global_hash,
        contributor=who.address,
    )
    return sign(ledger, who, task_id, st.current_round, data), data


# -- the chain as an outsider sees it ----------------------------------------------------------


def outsider_web3(ledger: Ledger) -> tuple[Web3, Any]:
    """A web3 of the outsider's own and the contract as anyone sees it (address + ABI)."""
    w3 = Web3(Web3.HTTPProvider(str(ledger.w3.provider.endpoint_uri)))  # type: ignore[attr-defined]
    return w3, w3.eth.contract(address=ledger.address, abi=ledger.contract.abi)


def send_raw(
    w3: Web3, who: LocalAccount, fn: Any, *, tip_gwei: int = 1, gas: int = 2_000_000
) -> bytes:
    """Sign ``fn`` with ``who``'s key and send it; the tx hash (not waited for)."""
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    tip = Web3.to_wei(tip_gwei, "gwei")
    tx = fn.build_transaction(
        {
            "from": who.address,
            "nonce": w3.eth.get_transaction_count(who.address, "pending"),
            "gas": gas,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": 2 * base + tip,
            "chainId": w3.eth.chain_id,
        }
    )
    return bytes(w3.eth.send_raw_transaction(who.sign_transaction(tx).raw_transaction))


def transact(w3: Web3, who: LocalAccount, fn: Any) -> Any:
    receipt = w3.eth.wait_for_transaction_receipt(send_raw(w3, who, fn), timeout=30)
    assert receipt["status"] == 1, receipt
    return receipt


def create_open_task(ledger: Ledger, attacker: LocalAccount) -> int:
    """The attacker's own open task, created and self-validated with raw web3: anyone may
    contribute to it, and its owner appoints itself its validator.  The CID strings are the
    attacker's to choose (the contract does not read them); the largest ``maxSamples`` and
    ``attestWindow`` ledger v2 allows."""
    w3, contract = outsider_web3(ledger)
    most = 2**32 - 1
    cfg = (
        b"\x11" * 32,
        "bafkreiattackermodel",
        "bafkreiattackerspec",
        1,
        64,
        1,
        0,
        True,
        most,
        most,
    )
    receipt = transact(w3, attacker, contract.functions.createTask(cfg))
    (created,) = contract.events.TaskCreated().process_receipt(receipt)
    task_id = int(created["args"]["taskId"])
    transact(w3, attacker, contract.functions.addValidator(task_id, attacker.address))
    return task_id


def throwaway() -> LocalAccount:
    """A fresh key without a wei."""
    return Account.create()
