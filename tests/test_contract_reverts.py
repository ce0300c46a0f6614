"""Every custom error of TrainingLedger, provoked through a real anvil and decoded by the SDK
into a readable ContractRevert that names the error and carries its arguments."""

from __future__ import annotations

import hashlib
import random

import pytest
from chain_kit import made_up_result
from eth_account import Account

from fedledger.chain.ledger import Ledger, TaskConfig
from fedledger.content.cid import compute_cid
from fedledger.errors import ContractRevert

H = "0x" + hashlib.sha256(b"model").hexdigest()
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def cfg(**kw) -> TaskConfig:
    base = {
        "model_hash": H,
        "model_cid": CID,
        "spec_cid": CID,
        "min_updates": 1,
        "max_updates": 2,
        "quorum": 1,
        "max_samples": 1000,
    }
    base.update(kw)
    return TaskConfig(**base)


@pytest.fixture
def world(ledger: Ledger, dev_accounts):
    owner, alice, bob, carol, val, outsider = dev_accounts[:6]
    tid = ledger.create_task(cfg())
    ledger.add_contributor(tid, alice.address)
    ledger.add_contributor(tid, bob.address)
    ledger.add_contributor(tid, carol.address)
    ledger.add_validator(tid, val.address)
    return (
        ledger,
        tid,
        {
            "owner": owner,
            "alice": alice,
            "bob": bob,
            "carol": carol,
            "val": val,
            "outsider": outsider,
        },
    )


def revert_of(fn, *args, **kw) -> ContractRevert:
    with pytest.raises(ContractRevert) as info:
        fn(*args, **kw)
    return info.value


def h(i: int) -> str:
    return "0x" + hashlib.sha256(str(i).encode()).hexdigest()


def u(i: int) -> tuple[str, str]:
    """An update's (contentHash, cid): the sha256 and the CID of the same bytes."""
    return h(i), compute_cid(str(i).encode())


def test_unknown_task_is_named(world):
    led, _tid, a = world
    e = revert_of(led.with_account(a["alice"]).submit_update, 99, 0, *u(1), 1)
    assert e.name == "UnknownTask" and e.args_["taskId"] == 99
    assert "UnknownTask(taskId=99)" in str(e)


def test_unknown_round_is_named(world):
    led, tid, _a = world
    e = revert_of(led.get_round, tid, 7)
    assert e.name == "UnknownRound" and e.args_["current"] == 0


def test_only_the_owner_admits(world):
    led, tid, a = world
    e = revert_of(led.with_account(a["outsider"]).add_contributor, tid, a["outsider"].address)
    assert e.name == "NotTaskOwner" and e.args_["caller"] == a["outsider"].address


def test_admitting_twice_and_the_zero_address_are_refused(world):
    led, tid, a = world
    assert revert_of(led.add_contributor, tid, a["alice"].address).name == "AlreadyAdded"
    assert revert_of(led.add_validator, tid, "0x" + "00" * 20).name == "ZeroAddress"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("max_updates", 0, "maxUpdates is zero"),
        ("min_updates", 0, "minUpdates is zero"),
        ("quorum", 0, "quorum is zero"),
        ("min_updates", 5, "minUpdates exceeds maxUpdates"),
        ("model_hash", "0x" + "00" * 32, "modelHash is zero"),
    ],
)
def test_invalid_configs_say_why(ledger, field, value, reason):
    e = revert_of(ledger.create_task, cfg(**{field: value}))
    assert e.name == "InvalidConfig" and e.args_["reason"] == reason


def test_outsiders_cannot_submit_or_attest(world):
    led, tid, a = world
    e = revert_of(led.with_account(a["outsider"]).submit_update, tid, 0, *u(1), 1)
    assert e.name == "NotContributor" and e.args_["account"] == a["outsider"].address
    led.with_account(a["alice"]).submit_update(tid, 0, *u(1), 1)
    fake = made_up_result(led, tid, 0, random.Random(1))
    e = revert_of(led.with_account(a["outsider"]).attest_round, tid, 0, fake)
    assert e.name == "NotValidator"


def test_round_rules_are_named(world):
    led, tid, a = world
    alice = led.with_account(a["alice"])
    e = revert_of(alice.submit_update, tid, 3, *u(1), 1)
    assert e.name == "WrongRound" and (e.args_["given"], e.args_["current"]) == (3, 0)
    alice.submit_update(tid, 0, *u(1), 1)
    e = revert_of(alice.submit_update, tid, 0, *u(2), 1)
    assert e.name == "DuplicateSubmission" and e.args_["contributor"] == a["alice"].address
    led.with_account(a["bob"]).submit_update(tid, 0, *u(3), 1)
    e = revert_of(led.with_account(a["carol"]).submit_update, tid, 0, *u(4), 1)
    assert e.name == "RoundFull" and e.args_["maxUpdates"] == 2


def test_sealing_rules_are_named(ledger, dev_accounts):
    owner, alice, bob, val = dev_accounts[:4]
    tid = ledger.create_task(cfg(min_updates=2, max_updates=3, quorum=2))
    ledger.add_contributor(tid, alice.address)
    ledger.add_contributor(tid, bob.address)
    ledger.add_validator(tid, val.address)
    ledger.add_validator(tid, owner.address)
    ledger.with_account(alice).submit_update(tid, 0, *u(1), 1)
    v = ledger.with_account(val)
    e = revert_of(v.seal_round, tid, 0)
    assert e.name == "RoundNotReady" and (e.args_["updateCount"], e.args_["needed"]) == (1, 2)
    ledger.with_account(bob).submit_update(tid, 0, *u(2), 1)
    v.seal_round(tid, 0)
    assert revert_of(v.seal_round, tid, 0).name == "RoundAlreadySealed"
    e = revert_of(ledger.with_account(alice).submit_update, tid, 0, *u(3), 1)
    assert e.name == "RoundAlreadySealed"
    fake = made_up_result(ledger, tid, 0, random.Random(2))
    v.attest_round(tid, 0, fake)
    e = revert_of(v.attest_round, tid, 0, fake)
    assert e.name == "AlreadyAttested" and e.args_["validator"] == val.address
    wrong = type(fake)(**{**fake.__dict__, "update_count": 1})
    e = revert_of(ledger.with_account(owner).attest_round, tid, 0, wrong)
    assert e.name == "RecordsMismatch" and (e.args_["sealedCount"], e.args_["givenCount"]) == (2, 1)


def test_signature_errors_are_named(world):
    led, tid, a = world
    relayer = led.with_account(a["outsider"])
    su = led.sign_update(a["alice"], tid, 0, *u(1), 1, deadline=1)
    e = revert_of(relayer.submit_update_for, su)
    assert e.name == "Expired" and e.args_["deadline"] == 1
    forged = led.sign_update(a["bob"], tid, 0, *u(1), 1, deadline=2**40)
    forged = type(forged)(**{**forged.__dict__, "contributor": a["alice"].address})
    e = revert_of(relayer.submit_update_for, forged)
    assert e.name == "BadSignature" and e.args_["contributor"] == a["alice"].address
    assert e.args_["recovered"] != a["alice"].address
    empty = relayer.contract.functions.submitBatch(tid, 0, b"")
    assert revert_of(relayer.sender.transact, empty, label="empty batch").name == "BadBatch"


def test_a_relayed_signature_works_once(world):
    led, tid, a = world
    relayer = led.with_account(a["outsider"])
    su = led.sign_update(a["alice"], tid, 0, *u(1), 1, deadline=2**40)
    relayer.submit_update_for(su)
    assert revert_of(relayer.submit_update_for, su).name == "DuplicateSubmission"


def test_a_signature_for_another_chain_is_refused(world):
    led, tid, a = world
    typed = led.typed_update(tid, 0, *u(1), 1, 2**40, chain_id=1)
    sig = Account.sign_typed_data(a["alice"].key, full_message=typed).signature
    su = led.sign_update(a["alice"], tid, 0, *u(1), 1, deadline=2**40)
    su = type(su)(**{**su.__dict__, "signature": bytes(sig)})
    assert revert_of(led.with_account(a["outsider"]).submit_update_for, su).name == "BadSignature"
