"""Ledger v2 behaviours on a real anvil and the real contract, through the SDK.

* EIP-2098: a 64-byte compact signature records the same update a 65-byte one does.
* A relayed batch never reverts for one entry: a bad entry in the middle is skipped with
  ``EntrySkipped`` naming its reason, the entries around it are recorded with consecutive ids.
* The record hash the contract chains is the one :func:`fedledger.chain.records.record_hash`
  recomputes from the events (single and batched records alike), before and after the seal.
* Attempts: a 2-of-2 quorum split in attempt 0 cannot finalise; once ``attestWindow`` has
  passed (``evm_increaseTime``) attempt 1 opens, ``getRound`` shows it, and the two validators
  agreeing there finalise the round in attempt 1.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, replace

import pytest
from chain_kit import made_up_result
from eth_account import Account
from eth_account.signers.local import LocalAccount

from fedledger.chain.ledger import (
    Ledger,
    NonceManager,
    SignedUpdate,
    TaskConfig,
    compact_signature,
    full_signature,
)
from fedledger.chain.records import record_hash, record_seed, update_id
from fedledger.content.cid import compute_cid
from fedledger.errors import ChainError, ContractRevert

ATTEST_WINDOW = 120


def blob(tag: str) -> tuple[str, str]:
    """(contentHash, CID) of the bytes of ``tag``: a pair the chain can record."""
    data = tag.encode()
    return "0x" + hashlib.sha256(data).hexdigest(), compute_cid(data)


@dataclass
class World:
    ledger: Ledger  # the task owner (dev account 0), also the relayer
    task: int  # closed: contributors dev accounts 3..9, validators 1 and 2, quorum 2
    contributors: list[LocalAccount]
    validators: list[Ledger]

    def sign(self, who: LocalAccount, tag: str, *, deadline: int | None = None) -> SignedUpdate:
        content, cid = blob(tag)
        deadline = int(time.time()) + 3600 if deadline is None else deadline
        rnd = self.ledger.current_round(self.task)
        return self.ledger.sign_update(who, self.task, rnd, content, cid, 10, deadline)

    def now(self) -> int:
        return int(self.ledger.w3.eth.get_block("latest")["timestamp"])


@pytest.fixture
def world(ledger: Ledger, dev_accounts: list[LocalAccount]) -> World:
    content, cid = blob("model")
    task = ledger.create_task(
        TaskConfig(
            content,
            cid,
            cid,
            min_updates=1,
            max_updates=16,
            quorum=2,
            max_samples=1000,
            attest_window=ATTEST_WINDOW,
        )
    )
    contributors = dev_accounts[3:10]
    for c in contributors:
        ledger.add_contributor(task, c.address)
    nonces = NonceManager(ledger.w3)
    validators = [ledger.with_account(v, nonces) for v in dev_accounts[1:3]]
    for v in dev_accounts[1:3]:
        ledger.add_validator(task, v.address)
    return World(ledger, task, list(contributors), validators)


# -- EIP-2098 compact signatures ----------------------------------------------------------------


def test_a_64_byte_compact_signature_is_accepted_and_records_the_update(world: World) -> None:
    who = world.contributors[0]
    full = world.sign(who, "compact")
    compact = replace(full, signature=compact_signature(full.signature))
    assert len(compact.signature) == 64
    assert full_signature(compact.signature) == full.signature  # the same signature
    assert SignedUpdate.from_json(compact.to_json()) == compact  # and it travels as 64 bytes

    uid = world.ledger.submit_update_for(compact)

    assert uid == update_id(world.task, 1)
    (rec,) = world.ledger.update_records(world.task, 0)
    assert (rec.update_id, rec.contributor, rec.content_hash, rec.cid, rec.num_samples) == (
        uid,
        who.address,
        full.content_hash,
        full.cid,
        10,
    )
    # the 65-byte form of the same signature is now a replay, whatever its length
    with pytest.raises(ContractRevert) as err:
        world.ledger.submit_update_for(full)
    assert err.value.name == "DuplicateSubmission"


def test_a_compact_signature_over_other_data_recovers_a_stranger_not_the_contributor(
    world: World,
) -> None:
    who = world.contributors[1]
    su = world.sign(who, "compact-tampered")
    bad = replace(su, signature=compact_signature(su.signature), num_samples=11)
    with pytest.raises(ContractRevert) as err:
        world.ledger.submit_update_for(bad)
    assert err.value.name == "BadSignature"
    assert err.value.args_["contributor"].lower() == who.address.lower()
    assert err.value.args_["recovered"].lower() != who.address.lower()


# -- batches skip, never revert, for one entry --------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["expired", "not-admitted", "forged", "duplicate", "too-many-samples"],
)
def test_a_batch_with_one_bad_entry_in_the_middle_records_the_others_and_reports_the_skip(
    world: World, kind: str
) -> None:
    c = world.contributors
    if kind == "duplicate":  # c[2] is already recorded in this round
        world.ledger.submit_update_for(world.sign(c[2], "first"))
    before = int(world.ledger.get_task(world.task)["updates"])
    good = [world.sign(c[0], "a"), world.sign(c[1], "b"), world.sign(c[3], "d")]
    stranger = Account.create()
    bad, signer, reason = {
        "expired": (world.sign(c[2], "x", deadline=world.now() - 5), c[2].address, "Expired"),
        "not-admitted": (world.sign(stranger, "x"), stranger.address, "NotContributor"),
        # signed by a stranger in c[2]'s name: a batch entry's contributor is its signer
        "forged": (
            replace(world.sign(c[2], "x"), signature=world.sign(stranger, "x").signature),
            stranger.address,
            "NotContributor",
        ),
        "duplicate": (world.sign(c[2], "second"), c[2].address, "DuplicateSubmission"),
        "too-many-samples": (
            world.ledger.sign_update(
                c[2], world.task, 0, *blob("x"), 1001, int(time.time()) + 3600
            ),
            c[2].address,
            "TooManySamples",
        ),
    }[kind]
    batch = [good[0], good[1], bad, good[2]]

    out = world.ledger.submit_batch(batch)

    assert out.receipt["status"] == 1
    assert [(s["entry"], s["signer"], s["reason"]) for s in out.skipped] == [(2, signer, reason)]
    assert [r.contributor for r in out.records] == [su.contributor for su in good]
    first = update_id(world.task, before + 1)
    assert [r.update_id for r in out.records] == [first, first + 1, first + 2]
    for r, su in zip(out.records, good, strict=True):
        assert (r.content_hash, r.cid, r.num_samples, r.tensor_root) == (
            su.content_hash,
            su.cid,
            su.num_samples,
            su.tensor_root,
        )
    assert int(world.ledger.get_task(world.task)["updates"]) == before + 3
    assert world.ledger.records_in(out.receipt) == out.records


def test_submit_updates_for_raises_naming_the_skipped_entry_after_the_others_landed(
    world: World,
) -> None:
    c = world.contributors
    stranger = Account.create()
    batch = [world.sign(c[0], "a"), world.sign(stranger, "s"), world.sign(c[1], "b")]
    with pytest.raises(ChainError) as err:
        world.ledger.submit_updates_for(batch)
    assert "1 of 3 entries skipped" in err.value.message
    assert "NotContributor" in err.value.message and stranger.address in err.value.message
    recorded = [r.contributor for r in world.ledger.update_records(world.task, 0)]
    assert recorded == [c[0].address, c[1].address]


def test_a_batch_of_only_bad_entries_lands_and_records_nothing(world: World) -> None:
    c = world.contributors
    batch = [world.sign(c[0], "late", deadline=world.now() - 1), world.sign(Account.create(), "s")]
    out = world.ledger.submit_batch(batch)
    assert out.records == []
    assert [s["reason"] for s in out.skipped] == ["Expired", "NotContributor"]
    assert world.ledger.get_round(world.task, 0)["updateCount"] == 0


# -- the record hash ----------------------------------------------------------------------------


def test_the_record_hash_recomputed_from_the_events_equals_get_round_and_the_seal(
    world: World,
) -> None:
    led, task, c = world.ledger, world.task, world.contributors
    r0 = led.get_round(task, 0)
    assert bytes(r0["recordHash"]) == record_seed(task, 0)  # no records yet
    # singles and a batch, interleaved: one chain of records in chain order
    led.with_account(c[0]).submit_update(task, 0, *blob("single-0"), 7)
    led.submit_batch([world.sign(c[1], "batch-1"), world.sign(c[2], "batch-2")])
    led.with_account(c[3]).submit_update(task, 0, *blob("single-3"), 9, "0x" + "ab" * 32)
    led.submit_update_for(world.sign(c[4], "relayed-4"))

    records = list(led.update_records(task, 0))
    h, n = record_hash(task, 0, records)
    r = led.get_round(task, 0)
    assert (bytes(r["recordHash"]), int(r["updateCount"])) == (h, n) == (h, 5)
    assert [rec.seq for rec in records] == [1, 2, 3, 4, 5]

    world.validators[0].seal_round(task, 0)
    (sealed,) = led.events("RoundSealed", task_id=task, round_=0)
    assert (bytes(sealed["args"]["recordHash"]), sealed["args"]["updateCount"]) == (h, 5)
    s = led.get_round(task, 0)
    assert s["state"] == "sealed" and bytes(s["recordHash"]) == h
    # an attestation bound to other records is refused with both sets named
    wrong = replace(made_up_result(led, task, 0, random.Random(1)), update_count=4)
    with pytest.raises(ContractRevert) as err:
        world.validators[0].attest_round(task, 0, wrong)
    assert err.value.name == "RecordsMismatch"
    assert (err.value.args_["sealedCount"], err.value.args_["givenCount"]) == (5, 4)


# -- attempts -----------------------------------------------------------------------------------


def test_a_split_2_of_2_quorum_recovers_in_attempt_1_after_the_attest_window(
    world: World,
) -> None:
    led, task = world.ledger, world.task
    v1, v2 = world.validators
    led.submit_batch([world.sign(c, f"u-{i}") for i, c in enumerate(world.contributors[:3])])
    rng = random.Random(7)
    mine, theirs = made_up_result(led, task, 0, rng), made_up_result(led, task, 0, rng)

    v1.attest_round(task, 0, mine)  # seals the round (it is ready) and proposes
    v2.attest_round(task, 0, theirs)  # a different result: 1 + 1 of quorum 2, no final
    r = led.get_round(task, 0)
    assert (r["state"], r["attempt"]) == ("sealed", 0)
    assert r["attemptEndsAt"] == r["sealedAt"] + ATTEST_WINDOW
    assert led.current_round(task) == 0
    with pytest.raises(ContractRevert) as err:  # once per validator per attempt
        v2.attest_round(task, 0, mine)
    assert err.value.name == "AlreadyAttested" and err.value.args_["attempt"] == 0

    led.w3.provider.make_request("evm_increaseTime", [ATTEST_WINDOW + 1])  # type: ignore[arg-type]
    led.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    r = led.get_round(task, 0)
    assert (r["state"], r["attempt"]) == ("sealed", 1)
    assert r["attemptEndsAt"] == r["sealedAt"] + 2 * ATTEST_WINDOW
    assert not led.has_attested(task, 0, v1.sender.address)  # type: ignore[union-attr]
    assert led.attestation_count(task, 0, mine.digest(task, 0)) == 0  # a fresh tally

    v2.attest_round(task, 0, mine)  # v2 comes round: proposes mine in attempt 1
    v1.attest_round(task, 0, mine)  # confirms it by digest: 2 of 2

    assert led.current_round(task) == 1
    assert led.get_round(task, 0)["state"] == "final"
    assert led.round_digest(task, 0) == mine.digest(task, 0)
    (fin,) = led.events("RoundFinalized", task_id=task, round_=0)
    assert (fin["args"]["attempt"], bytes(fin["args"]["digest"])) == (1, mine.digest(task, 0))
    last = led.last_finalized(task)
    assert last is not None
    assert (last["attempt"], last["aggregateHash"], last["verdictRoot"]) == (
        1,
        mine.aggregate_hash,
        mine.verdict_root,
    )
    kinds = [
        (e["args"]["attempt"], e["args"]["count"])
        for e in led.events("RoundAttested", task_id=task, round_=0)
    ]
    assert kinds == [(0, 1), (0, 1), (1, 1), (1, 2)]
