"""Bad signatures and floods against the real contract on a real anvil node.

Every relayed update is authorised by its contributor's EIP-712 signature; the node must refuse
each bad one with the custom error that names the cause, decoded by
:func:`fedledger.chain.ledger.decode_revert`.  Each kind below is tried ``PER_KIND`` times (8 kinds, 1,200
signatures), through ``eth_call`` in JSON-RPC batches (the node executes the real bytecode
against the real state; a batch keeps the suite fast); a sample of every kind is also sent as
real transactions, which must fail on chain and leave no update behind.  Then a contributor
floods a round: one key sending many updates gets one recorded and ``DuplicateSubmission`` for
the rest, and a round that is full answers ``RoundFull``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from fedledger.chain.devnet import dev_private_keys, start_anvil
from fedledger.chain.ledger import (
    Ledger,
    NonceManager,
    Pending,
    SignedUpdate,
    TaskConfig,
    connect,
    decode_revert,
    encode_call,
    rpc_batch,
    to_hex,
)
from fedledger.content.cid import compute_cid
from fedledger.errors import ConfigError, ContractRevert

PER_KIND = 150
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ZERO = "0x" + "00" * 20


def content(tag: str) -> str:
    return "0x" + hashlib.sha256(tag.encode()).hexdigest()


def cid(tag: str) -> str:
    """The CID of the same bytes ``content(tag)`` hashes: the pairs the chain records."""
    return compute_cid(tag.encode())


@dataclass
class World:
    ledger: Ledger  # sender: the relayer (dev account 0, also the task owner)
    task: int  # open task: anyone may contribute, room for every replayed update
    signers: list[LocalAccount]  # contributors who only sign (never funded)
    funded: list[LocalAccount]
    replayable: list[SignedUpdate]  # valid signatures already used once

    def sign(
        self,
        who: LocalAccount,
        tag: str,
        *,
        task: int | None = None,
        deadline: int | None = None,
        chain_id: int | None = None,
        contract: str | None = None,
        key: LocalAccount | None = None,
    ) -> SignedUpdate:
        """``who``'s update; signed by ``who`` unless another ``key`` forges it."""
        task_id = self.task if task is None else task
        deadline = int(time.time()) + 86_400 if deadline is None else deadline
        typed = self.ledger.typed_update(
            task_id,
            0,
            content(tag),
            cid(tag),
            100,
            deadline,
            chain_id=chain_id,
            verifying_contract=contract,
        )
        sig = Account.sign_typed_data((key or who).key, full_message=typed).signature
        return SignedUpdate(
            task_id, 0, content(tag), cid(tag), 100, who.address, deadline, bytes(sig)
        )

    def now(self) -> int:
        return int(self.ledger.w3.eth.get_block("latest")["timestamp"])

    def last_update_id(self) -> int:
        """Updates recorded in the task so far (ledger v2 numbers them per task)."""
        return int(self.ledger.get_task(self.task)["updates"])


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with start_anvil(accounts=4) as dn:
        w3 = connect(dn.url)
        funded = [Account.from_key(k) for k in dev_private_keys(4)]
        ledger = Ledger.deploy(w3, funded[0])
        task = ledger.create_task(
            TaskConfig(
                content("model"),
                cid("model"),
                cid("model"),
                min_updates=1,
                max_updates=1000,
                open=True,
                max_samples=1000,
            )
        )
        signers = [Account.from_key(keccak(text=f"signer-{i}")) for i in range(PER_KIND)]
        w = World(ledger, task, signers, funded, [])
        w.replayable = [w.sign(a, f"used-{i}") for i, a in enumerate(signers)]
        for start in range(0, PER_KIND, 50):
            ledger.submit_updates_for(w.replayable[start : start + 50])
        yield w


def call_each(w: World, fns: Sequence[Any]) -> list[ContractRevert | None]:
    """eth_call every call in JSON-RPC batches; the decoded revert of each, None if it passed."""
    sender = w.ledger.sender
    assert sender is not None
    calls = [
        (
            "eth_call",
            [
                {"from": sender.address, "to": w.ledger.address, "data": to_hex(encode_call(fn))},
                "latest",
            ],
        )
        for fn in fns
    ]
    out: list[ContractRevert | None] = []
    for res in rpc_batch(w.ledger.w3, calls):
        err = res.get("error")
        if err is None:
            out.append(None)
            continue
        rev = decode_revert(err.get("data")) if isinstance(err.get("data"), str) else None
        assert rev is not None, f"revert without a named error: {err}"
        out.append(rev)
    return out


def relay_one(w: World, su: SignedUpdate) -> Any:
    return w.ledger.contract.functions.submitUpdateFor(*su.as_tuple())


def relay_batch(w: World, batch: Sequence[SignedUpdate]) -> Any:
    return w.ledger.submit_batch_fn(batch)


def recorded_each(w: World, fns: Sequence[Any]) -> list[int]:
    """eth_call every ``submitBatch`` in JSON-RPC batches: how many entries each would record."""
    sender = w.ledger.sender
    assert sender is not None
    calls = [
        (
            "eth_call",
            [
                {"from": sender.address, "to": w.ledger.address, "data": to_hex(encode_call(fn))},
                "latest",
            ],
        )
        for fn in fns
    ]
    out = []
    for res in rpc_batch(w.ledger.w3, calls):
        assert "result" in res, res
        _first, recorded = abi_decode(["uint256", "uint256"], bytes.fromhex(res["result"][2:]))
        out.append(int(recorded))
    return out


def flip_s(sig: bytes) -> bytes:
    """The high-s twin of a signature: same signer for raw ecrecover, rejected by OZ ECDSA."""
    s = int.from_bytes(sig[32:64], "big")
    v = sig[64]
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


def garbage(i: int, good: bytes) -> bytes:
    """Truncated, padded, empty or random signatures (random r/s with every kind of v)."""
    rnd = keccak(text=f"garbage-r-{i}") + keccak(text=f"garbage-s-{i}")
    return [
        b"",
        good[:1],
        good[:63],  # one byte short of the EIP-2098 compact form
        good[:62],
        good + b"\x00",
        rnd + bytes([27 + i % 2]),
        rnd + bytes([i % 2]),  # v must be 27 or 28
        bytes(65),
        rnd[:32] + bytes(32) + bytes([27]),  # s = 0
        good[:64] + bytes([29]),
    ][i % 10]


def args(rev: ContractRevert) -> dict[str, Any]:
    """The error's arguments, addresses checksummed (eth_abi decodes them lowercase)."""
    return {
        k: to_checksum_address(v) if isinstance(v, str) and v.startswith("0x") else v
        for k, v in rev.args_.items()
    }


# Each kind: (make the bad signed update number i, check the decoded error).
def _bad_signature(
    w: World, su: SignedUpdate, rev: ContractRevert, *, recovered_zero: bool
) -> None:
    assert rev.name == "BadSignature", rev
    assert args(rev)["contributor"] == su.contributor
    recovered = args(rev)["recovered"]
    assert recovered != su.contributor
    if recovered_zero:
        assert recovered == ZERO


def make_expired(w: World, i: int) -> SignedUpdate:
    return w.sign(w.signers[i], f"expired-{i}", deadline=w.now() - 1 - i)


def make_forged(w: World, i: int) -> SignedUpdate:
    victim, forger = w.signers[i], w.signers[(i + 1) % PER_KIND]
    return w.sign(victim, f"forged-{i}", key=forger)


def make_high_s(w: World, i: int) -> SignedUpdate:
    su = w.sign(w.signers[i], f"high-s-{i}")
    return replace(su, signature=flip_s(su.signature))


def make_other_chain(w: World, i: int) -> SignedUpdate:
    chain_id = [1, 5, 10, 137, 8453, 11155111, 31338][i % 7]
    return w.sign(w.signers[i], f"chain-{i}", chain_id=chain_id)


def make_other_contract(w: World, i: int) -> SignedUpdate:
    other = to_hex(keccak(text=f"another-ledger-{i}")[:20])
    return w.sign(
        w.signers[i], f"contract-{i}", contract=Account.create().address if i % 2 else other
    )


def make_garbage(w: World, i: int) -> SignedUpdate:
    su = w.sign(w.signers[i], f"garbage-{i}")
    return replace(su, signature=garbage(i, su.signature))


def make_tampered(w: World, i: int) -> SignedUpdate:
    """A valid signature whose relayer changed one signed field."""
    su = w.sign(w.signers[i], f"tampered-{i}")
    return [
        replace(su, num_samples=su.num_samples + 1),
        replace(su, content_hash=content(f"other-{i}"), cid=cid(f"other-{i}")),
        replace(su, tensor_root="0x" + "11" * 32),
        replace(su, deadline=su.deadline + 1),
    ][i % 4]


def make_replayed(w: World, i: int) -> SignedUpdate:
    return w.replayable[i]


def check_expired(w: World, su: SignedUpdate, rev: ContractRevert) -> None:
    assert rev.name == "Expired", rev
    assert args(rev)["deadline"] == su.deadline
    assert args(rev)["nowTs"] > su.deadline


def check_replayed(w: World, su: SignedUpdate, rev: ContractRevert) -> None:
    assert rev.name == "DuplicateSubmission", rev
    assert args(rev) == {"taskId": su.task_id, "round": 0, "contributor": su.contributor}


def check_bad_signature(w: World, su: SignedUpdate, rev: ContractRevert) -> None:
    _bad_signature(w, su, rev, recovered_zero=False)


def check_recovers_nobody(w: World, su: SignedUpdate, rev: ContractRevert) -> None:
    _bad_signature(w, su, rev, recovered_zero=True)


def check_forged(w: World, su: SignedUpdate, rev: ContractRevert) -> None:
    _bad_signature(w, su, rev, recovered_zero=False)
    i = next(k for k, a in enumerate(w.signers) if a.address == su.contributor)
    assert args(rev)["recovered"] == w.signers[(i + 1) % PER_KIND].address


Maker = Callable[[World, int], SignedUpdate]
Checker = Callable[[World, SignedUpdate, ContractRevert], None]
KINDS: dict[str, tuple[Maker, Checker]] = {
    "replayed": (make_replayed, check_replayed),
    "expired": (make_expired, check_expired),
    "forged_by_another_key": (make_forged, check_forged),
    "high_s_malleable": (make_high_s, check_recovers_nobody),
    "signed_for_another_chain": (make_other_chain, check_bad_signature),
    "signed_for_another_contract": (make_other_contract, check_bad_signature),
    "truncated_or_garbage": (make_garbage, check_bad_signature),
    "field_changed_after_signing": (make_tampered, check_bad_signature),
}


STRANGER_KINDS = frozenset(
    {
        "signed_for_another_chain",
        "signed_for_another_contract",
        "field_changed_after_signing",
        "truncated_or_garbage",
    }
)
"""Kinds whose signature, put in a batch, recovers an address that is not the contributor."""


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_signatures_are_rejected_with_the_named_error(world: World, kind: str) -> None:
    make, check = KINDS[kind]
    bad = [make(world, i) for i in range(PER_KIND)]
    before = world.last_update_id()
    # each alone (the named error), and each after a valid entry in a batch: the batch records
    # the valid one and skips the bad one (ledger v2 batches never revert for one entry)
    singles = call_each(world, [relay_one(world, su) for su in bad])
    for su, rev in zip(bad, singles, strict=True):
        assert rev is not None, f"{kind}: a bad signature was accepted: {su}"
        check(world, su, rev)
    good = world.sign(world.funded[1], f"good-{kind}")
    packable = []
    for su in bad:
        try:
            su.entry()
        except ConfigError:
            continue  # no 64-byte form: it cannot even be put in a batch
        packable.append(su)
    # high s has no EIP-2098 form; garbage mostly none
    assert packable or kind in ("truncated_or_garbage", "high_s_malleable")
    recorded = recorded_each(world, [relay_batch(world, [good, su]) for su in packable])
    if kind in STRANGER_KINDS:
        # a batch entry names no contributor: its signer is one.  A signature over other data
        # recovers a stranger's address, never the contributor's, and in this open task the
        # stranger may be recorded under its own address (a closed task skips it).
        assert all(n in (1, 2) for n in recorded), kind
    else:
        assert recorded == [1] * len(packable), kind
    assert world.last_update_id() == before


def test_garbage_signature_of_every_shape_recovers_nobody(world: World) -> None:
    """The malformed shapes (wrong length, bad v, s = 0) report recovered = 0, not a guess."""
    shapes = [0, 1, 2, 3, 4, 6, 7, 8, 9]
    bad = [make_garbage(world, i) for i in shapes]
    for su, rev in zip(bad, call_each(world, [relay_one(world, su) for su in bad]), strict=True):
        assert rev is not None
        check_recovers_nobody(world, su, rev)


def receipts(w: World, pendings: Sequence[Pending]) -> list[dict[str, Any]]:
    """Receipts of sent transactions, failed ones included (wait_many raises on those)."""
    deadline = time.monotonic() + 60
    while True:
        got = rpc_batch(
            w.ledger.w3, [("eth_getTransactionReceipt", [to_hex(p.tx_hash)]) for p in pendings]
        )
        if all(r.get("result") for r in got):
            return [r["result"] for r in got]
        assert time.monotonic() < deadline, "no receipts within 60 s"
        time.sleep(0.02)


def failures(w: World, recs: Sequence[dict[str, Any]]) -> list[ContractRevert | None]:
    """Why each transaction failed: its revert data from the node's call tracer, exact even
    when several of the transactions share a block."""
    traces = rpc_batch(
        w.ledger.w3,
        [
            ("debug_traceTransaction", [r["transactionHash"], {"tracer": "callTracer"}])
            for r in recs
        ],
    )
    out: list[ContractRevert | None] = []
    for t in traces:
        data = t.get("result", {}).get("output")
        out.append(decode_revert(data) if isinstance(data, str) else None)
    return out


def test_bad_signatures_sent_as_transactions_fail_on_chain(world: World) -> None:
    sender = world.ledger.sender
    assert sender is not None
    bad = [(kind, make(world, i)) for kind, (make, _) in KINDS.items() for i in range(12)]
    before = world.last_update_id()
    sent = sender.send_many(
        [relay_one(world, su) for _, su in bad], label="bad signatures", gas=300_000
    )
    recs = receipts(world, sent)
    assert [int(r["status"], 16) for r in recs] == [0] * len(bad)
    for (kind, su), rev in zip(bad, failures(world, recs), strict=True):
        assert rev is not None, kind
        KINDS[kind][1](world, su, rev)
    assert world.last_update_id() == before


def test_one_key_flooding_a_round_gets_one_update_and_DuplicateSubmission(world: World) -> None:
    flooder = world.ledger.with_account(world.funded[2], NonceManager(world.ledger.w3))
    sender = flooder.sender
    assert sender is not None
    fns = [
        flooder.submit_update_fn(world.task, 0, content(f"flood-{i}"), cid(f"flood-{i}"), 10)
        for i in range(120)
    ]
    before = world.last_update_id()
    recs = receipts(world, sender.send_many(fns, label="flood", gas=200_000))
    statuses = [int(r["status"], 16) for r in recs]
    assert statuses == [1] + [0] * (len(fns) - 1)
    for rev in failures(world, recs[1:]):
        assert rev is not None
        assert rev.name == "DuplicateSubmission"
        assert args(rev) == {"taskId": world.task, "round": 0, "contributor": sender.address}
    assert world.last_update_id() == before + 1
    assert flooder.has_submitted(world.task, 0, sender.address)


def test_a_full_round_answers_RoundFull(world: World) -> None:
    owner = world.ledger
    cap = 16
    task = owner.create_task(
        TaskConfig(
            content("model"),
            cid("model"),
            cid("model"),
            min_updates=1,
            max_updates=cap,
            open=True,
            max_samples=1000,
        )
    )
    crowd = [world.sign(a, f"crowd-{i}", task=task) for i, a in enumerate(world.signers[:40])]
    sender = owner.sender
    assert sender is not None
    recs = receipts(
        world, sender.send_many([relay_one(world, su) for su in crowd], label="crowd", gas=300_000)
    )
    assert [int(r["status"], 16) for r in recs] == [1] * cap + [0] * (len(crowd) - cap)
    for rev in failures(world, recs[cap:]):
        assert rev is not None
        assert rev.name == "RoundFull"
        assert args(rev) == {"taskId": task, "round": 0, "maxUpdates": cap}
    assert owner.get_task(task)["updateCount"] == cap
    # capacity is checked first: whoever comes next, a newcomer or a repeat, hears RoundFull
    late = [
        relay_one(world, world.sign(world.funded[3], "late", task=task)),
        relay_one(world, crowd[0]),
    ]
    for rev in call_each(world, late):
        assert rev is not None
        assert rev.name == "RoundFull"
