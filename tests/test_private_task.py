"""A private task end to end, on a real devnet, the compiled contract, the embedded store and two
validator backends: contributors seal updates to the validators' registered keys; an outsider
with the store and the chain reads nothing; validators judge, attest and finalise; an auditor
re-verifies; sealing tricks are verdicts; a member who joined later abstains.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.public import PrivateKey
from pipeline_kit import Scenario, backend_for, make_scenario

from fedledger.content.cid import compute_cid
from fedledger.errors import ConfigError, FormatError
from fedledger.flows import submit as submit_flow
from fedledger.flows.task import committee_keys, load_task, required_recipients
from fedledger.flows.verify import verify_task
from fedledger.protocol import codec, committee
from fedledger.protocol.committee import NotRecipientError

PRIVATE = {"encryption": "committee"}


def _run_until_final(backends, sc: Scenario, rnd: int, passes: int = 30) -> None:
    for _ in range(passes):
        for b in backends:
            b.run_pass()
        if sc.ledger.current_round(sc.task_id) > rnd:
            for b in backends:
                b.run_pass()
            return
    why = [(b.validator.skipped if b.validator else None) for b in backends]
    raise AssertionError(f"round {rnd} not final: {why}")


@pytest.fixture
def private(ledger, store, dev_accounts, tmp_path: Path):
    """A private task with two validators (quorum 2) and their committee keys registered."""
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=6,
        n_validators=2,
        quorum=2,
        min_updates=4,
        max_updates=6,
        rule={"rule": "median"},
        privacy=PRIVATE,
    )
    keys = [PrivateKey.generate() for _ in sc.validators]
    backends = [
        backend_for(sc, v, tmp_path / f"v{i}.db", committee_key=k)
        for i, (v, k) in enumerate(zip(sc.validators, keys, strict=True))
    ]
    return sc, keys, backends


def _submit(sc: Scenario, i: int) -> tuple[int, bytes]:
    """Contributor i trains and submits through the SDK (which seals); (update id, plaintext)."""
    data, n = sc.honest_update(i)
    led = sc.as_(sc.contributors[i])
    st = load_task(led, sc.store, sc.task_id)
    done = submit_flow.submit(led, sc.store, st, data, n)
    return done.update_id, data


def test_nobody_can_submit_before_a_validator_registered_a_key(private) -> None:
    sc, _, _ = private
    data, n = sc.honest_update(0)
    led = sc.as_(sc.contributors[0])
    with pytest.raises(ConfigError, match="registered an encryption key"):
        submit_flow.submit(led, sc.store, load_task(led, sc.store, sc.task_id), data, n)


def test_validators_register_keys_and_contributors_seal_to_them(private) -> None:
    sc, keys, backends = private
    for b in backends:
        b.run_pass()
    registered = committee_keys(sc.ledger, sc.task_id)
    assert registered == {
        v.address: bytes(k.public_key) for v, k in zip(sc.validators, keys, strict=True)
    }
    assert set(load_task(sc.ledger, sc.store, sc.task_id).committee) == set(registered.values())


def test_an_outsider_with_store_and_chain_reads_nothing_and_the_round_is_judged(private) -> None:
    sc, keys, backends = private
    for b in backends:
        b.run_pass()
    sent = [_submit(sc, i) for i in range(4)]
    for uid, plain in sent:
        rec = next(r for r in sc.ledger.update_records(sc.task_id, 0) if r.update_id == uid)
        stored = sc.store.get(rec.cid)
        # the outsider: the chain's record and the store's bytes
        assert committee.is_envelope(stored) and codec.sha256_hex(stored) == rec.content_hash
        with pytest.raises(FormatError):
            codec.decode(stored, kind="update")
        assert plain not in stored and plain[-4096:] not in stored
        assert not sc.store.has(compute_cid(plain)), "the plaintext must never reach the store"
        with pytest.raises(NotRecipientError):
            committee.open_envelope(stored, PrivateKey.generate())
    _run_until_final(backends, sc, 0)
    fin = sc.ledger.last_finalized(sc.task_id, 0)
    assert fin is not None
    # the aggregate is public: anyone decodes the new global model
    glob = codec.decode(sc.store.get(str(fin["aggregateCid"])), kind="model")
    assert glob.tensors
    # an auditor (here a validator's key) re-verifies every verdict and the aggregate
    report = verify_task(sc.ledger, sc.store, sc.task_id, committee_key=keys[0])
    assert report.ok, report.to_json()
    rnd = report.rounds[0]
    assert rnd.accepted == 4 and rnd.aggregate_ok and rnd.root_ok
    # without a key, a private task cannot be re-verified, and says so
    with pytest.raises(ConfigError, match="committee key"):
        verify_task(sc.ledger, sc.store, sc.task_id)


def test_plaintext_and_envelopes_missing_a_member_are_malformed(private, tmp_path) -> None:
    sc, keys, backends = private
    for b in backends:
        b.run_pass()
    _submit(sc, 0)
    _submit(sc, 1)
    _submit(sc, 2)
    st = sc.state()
    # contributor 3 sends its update in plaintext, as if the task were public
    plain3, n3 = sc.honest_update(3)
    uid_plain = sc.submit_bytes(3, plain3, n3)
    # contributor 4 seals to validator 0 only: validator 1 could not read it
    plain4, n4 = sc.honest_update(4)
    env = committee.seal(
        plain4,
        [keys[0].public_key],
        task_id=sc.task_id,
        round=st.current_round,
        contributor=sc.contributors[4].address,
    )
    uid_partial = sc.submit_bytes(4, bytes(env), n4, tensor_root="0x" + "00" * 32)
    # contributor 5 replays contributor 0's envelope under its own name (a copy)
    rec0 = next(iter(sc.ledger.update_records(sc.task_id, 0)))
    uid_copy = sc.submit_bytes(5, sc.store.get(rec0.cid), 100)
    _run_until_final(backends, sc, 0)
    with backends[0].db.session() as s:
        from fedledger_backend.db import ContributionRow

        rows = {r.update_id: r for r in s.query(ContributionRow).all()}
    assert rows[uid_plain].status == "MALFORMED"
    assert "not an envelope" in (rows[uid_plain].reason or "")
    assert rows[uid_partial].status == "MALFORMED"
    assert "not sealed to committee key" in (rows[uid_partial].reason or "")
    assert f"0x{bytes(keys[1].public_key).hex()}" in (rows[uid_partial].reason or "")
    assert rows[uid_copy].status == "MALFORMED"
    assert "sealed for contributor" in (rows[uid_copy].reason or "")
    accepted = [r for r in rows.values() if r.status == "ACCEPTED"]
    assert len(accepted) == 3


def test_a_member_who_joined_after_the_round_opened_abstains(private, tmp_path) -> None:
    sc, keys, backends = private
    for b in backends:
        b.run_pass()
    for i in range(4):
        _submit(sc, i)
    late = sc.contributors[5]  # any funded account: made a validator now
    sc.ledger.add_validator(sc.task_id, late.address)
    late_key = PrivateKey.generate()
    late_backend = backend_for(sc, late, tmp_path / "late.db", committee_key=late_key)
    late_backend.run_pass()  # registers its key; the round's envelopes do not name it
    st = sc.state()
    assert bytes(late_key.public_key) in st.committee  # later updates are sealed to it
    required = dict(
        (keys, since) for since, keys in required_recipients(sc.ledger, st.spec, sc.task_id)
    )
    assert frozenset({bytes(late_key.public_key)}) in required  # of updates after its block
    late_backend.run_pass()
    v = late_backend.validator
    assert v is not None
    why = v.skipped.get((sc.task_id, 0), "")
    assert why.startswith("abstaining"), v.skipped
    assert not sc.ledger.has_attested(sc.task_id, 0, late.address)
    _run_until_final(backends, sc, 0)  # the two members who can read it finalise it


def test_a_relayed_private_update_is_sealed_and_a_misaddressed_envelope_is_refused(
    private,
) -> None:
    from fedledger_backend.relay_service import unbound_reason

    sc, _, backends = private
    for b in backends:
        b.run_pass()
    signed = []
    for i in range(4):  # gasless contributors: the SDK seals, signs; a relayer pays
        data, n = sc.honest_update(i)
        led = sc.as_(sc.contributors[i])
        st = load_task(led, sc.store, sc.task_id)
        su = submit_flow.sign(led, sc.contributors[i], sc.store, st, data, n)
        content = sc.store.get(su.cid)
        assert committee.is_envelope(content)
        assert unbound_reason(content, sc.contributors[i].address) is None
        other = sc.contributors[(i + 1) % 6].address
        assert "sealed for contributor" in (unbound_reason(content, other) or "")
        signed.append(su)
    sc.as_(sc.owner).submit_updates_for(signed)
    _run_until_final(backends, sc, 0)
    with backends[1].db.session() as s:
        from fedledger_backend.db import ContributionRow

        statuses = [r.status for r in s.query(ContributionRow).all()]
    assert statuses == ["ACCEPTED"] * 4


def test_a_validator_registering_an_unusable_key_breaks_nobodys_sealing(private) -> None:
    sc, keys, backends = private
    backends[0].run_pass()  # validator 0 registers its real key
    # validator 1 (anyone the owner made a validator) registers the zero key instead of its own
    sc.as_(sc.validators[1]).set_encryption_key(sc.task_id, bytes(32))
    st = sc.state()
    assert st.committee == (bytes(keys[0].public_key),)  # the zero key is left out
    required = required_recipients(sc.ledger, st.spec, sc.task_id)
    assert [k for _, k in required] == [frozenset(st.committee)]  # nobody must seal to zero
    uid, _ = _submit(sc, 0)  # sealing still works, to the usable key
    rec = next(r for r in sc.ledger.update_records(sc.task_id, 0) if r.update_id == uid)
    assert committee.read_header(sc.store.get(rec.cid)).key_ids == st.committee
