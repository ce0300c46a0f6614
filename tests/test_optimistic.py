"""Optimistic verification end to end on a real anvil, the compiled TrainingLedger and Court, and
the embedded content store.

A fixed-point fedavg task is handed to a court: four bonded validators, quorum 2, a challenge
window.  A bought quorum judges round 0 with the validators' own code, then attests an aggregate
with one coordinate changed (and publishes it, as the court's validators do).  The watcher
re-verifies the attested round, finds the coordinate, challenges it, stages every record with
its proofs and resolves: round 0 and the round built on it are voided, the liars' bonds slashed
(half to the challenger, half to the reward pool), and the task resumes from the initial model.
Two honest validators attest the resumed round with rewards in the verdict leaves; the watcher
finds nothing; the window passes; the round settles and every honest contributor claims its
reward, once, within the pool.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from chain_kit import rpc, url_of
from eth_account.signers.local import LocalAccount
from pipeline_kit import Scenario, make_scenario

from fedledger.chain.court import Court, RoundStatus, Rule, Terms
from fedledger.chain.ledger import Ledger, to_hex
from fedledger.chain.records import RoundResult, record_hash
from fedledger.content.store import ContentStore
from fedledger.errors import ContractRevert
from fedledger.flows import rewards, watch
from fedledger.flows.task import fetch_verified, load_task
from fedledger.protocol import codec, fixed_deltas, verdicts
from fedledger.protocol.aggregation import TensorLayout
from fedledger.protocol.rounds import UpdateRef, judge_round
from fedledger.protocol.tensor_root import tensor_root

WINDOW = 3600
BOND = 10**18
CHALLENGER_BOND = 10**17
BUDGET = 10**15


def _advance(ledger: Ledger, seconds: int) -> None:
    rpc(url_of(ledger), "evm_increaseTime", [seconds])
    rpc(url_of(ledger), "evm_mine", [])


def _judge(
    sc: Scenario, rnd: int, *, tamper: int | None = None, budget: int = 0
) -> tuple[RoundResult, verdicts.VerdictFile]:
    """Judge the sealed round with the validators' code, rewards in the leaves, the int32
    aggregate published; ``tamper`` adds one unit to that coordinate of the aggregate."""
    st = load_task(sc.ledger, sc.store, sc.task_id)
    base = fetch_verified(sc.store, st.global_cid, st.global_hash)
    records = list(sc.ledger.update_records(sc.task_id, rnd))
    refs = [
        UpdateRef(
            r.update_id, r.contributor, r.content_hash, r.cid, r.num_samples, 0, r.tensor_root
        )
        for r in records
    ]
    previous = None
    if st.last_verdict_cid is not None:
        previous = verdicts.parse(sc.store.get(st.last_verdict_cid))
    elif rnd > 0:  # resumed on the initial model after a court voided every round: as round 0
        previous = verdicts.build(
            task_id=sc.task_id,
            round=rnd - 1,
            rule=verdicts.RuleSpec(rule="fedavg"),
            base_model_hash=st.global_hash,
            aggregate_hash=st.global_hash,
            aggregate_cid=st.global_cid,
            entries=[],
        )
    j = judge_round(
        sc.store,
        previous=previous,
        task_id=sc.task_id,
        round_=rnd,
        spec=st.spec,
        base_model=base,
        updates=refs,
        max_samples=st.config.max_samples,
        base_hash=st.global_hash,
    )
    layout = TensorLayout.of(codec.decode(base, kind="model").tensors)
    inputs = {e.update_id: e for e in j.verdict_file.entries}
    accepted = [r for r in records if inputs[r.update_id].verdict is verdicts.Verdict.ACCEPTED]
    vecs = [
        fixed_deltas.flatten_fixed(codec.decode(sc.store.get(r.cid)).tensors, layout)
        for r in accepted
    ]
    q = watch.expected_aggregate(
        {"rule": int(Rule.FEDAVG), "weightCap": st.config.max_samples},
        vecs,  # type: ignore[arg-type]
        [r.num_samples for r in accepted],
        [verdicts.UNCLIPPED] * len(accepted),
    )
    assert to_hex(tensor_root(q)) == j.aggregate_tensor_root  # the court's rule is the validators'
    if tamper is not None:
        q = q.copy()
        q[tamper] += 1
    delta_cid = sc.store.put(watch.delta_bytes(q), pin=True)
    vf = verdicts.with_rewards(j.verdict_file, budget, st.config.max_samples)
    vf = verdicts.build(
        task_id=vf.task_id,
        round=vf.round,
        rule=vf.rule,
        base_model_hash=vf.base_model_hash,
        aggregate_hash=vf.aggregate_hash,
        aggregate_cid=vf.aggregate_cid,
        entries=vf.entries,
        metrics={watch.DELTA_KEY: delta_cid},
        standing=vf.standing,
        norm_history=vf.norm_history,
    )
    vbytes = vf.to_bytes()
    verdict_cid = sc.store.put(vbytes, pin=True)
    sc.store.put(j.aggregate, pin=True)
    chained, count = record_hash(sc.task_id, rnd, records)
    result = RoundResult(
        record_hash=to_hex(chained),
        update_count=count,
        verdict_root=to_hex(vf.root()),
        verdict_hash=codec.sha256_hex(vbytes),
        verdict_cid=verdict_cid,
        aggregate_hash=j.aggregate_hash,
        aggregate_cid=j.aggregate_cid,
        aggregate_tensor_root=to_hex(tensor_root(q)),
    )
    return result, vf


def _submit_round(sc: Scenario) -> None:
    for i in range(len(sc.contributors)):
        sc.submit_bytes(i, *sc.honest_update(i))


def _attest(sc: Scenario, who: list[LocalAccount], rnd: int, result: RoundResult) -> None:
    for v in who:
        sc.as_(v).attest_round(sc.task_id, rnd, result)


def test_a_bought_quorum_is_overturned_by_the_watcher_and_honest_contributors_are_paid(
    ledger: Ledger, store: ContentStore, dev_accounts: list[LocalAccount]
) -> None:
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=4,
        n_validators=4,
        quorum=2,
        rule={"rule": "fedavg"},
        fixed_point={"frac_bits": 24},
    )
    owner = ledger.with_account(sc.owner)
    court = Court.deploy(ledger.w3, sc.owner, ledger)
    court.set_terms(
        sc.task_id,
        Terms(
            bond=BOND,
            challenger_bond=CHALLENGER_BOND,
            challenge_window=WINDOW,
            unbonding_delay=2 * WINDOW,
            challenger_share_bps=5000,
            rule=Rule.FEDAVG,
            weight_cap=1000,  # the task's maxSamples: the validators' fedavg cap
        ),
    )
    owner.set_court(sc.task_id, court.address)
    assert ledger.court_of(sc.task_id) == court.address
    liars, honest = sc.validators[:2], sc.validators[2:]
    for v in sc.validators:
        court.with_account(v).bond(sc.task_id)
    challenger = court.with_account(dev_accounts[9])
    court.fund(sc.task_id, 2 * BUDGET)

    # an unbonded validator cannot attest: the court refuses it through the ledger
    outsider = dev_accounts[9]
    owner.add_validator(sc.task_id, outsider.address)

    # round 0: honest updates, a bought quorum attests an aggregate with coordinate 5 changed
    _submit_round(sc)
    sc.as_(liars[0]).seal_round(sc.task_id, 0)
    wrong, _ = _judge(sc, 0, tamper=5, budget=BUDGET)
    try:
        sc.as_(outsider).attest_round(sc.task_id, 0, wrong)
        raise AssertionError("an unbonded validator attested")
    except ContractRevert as exc:
        assert exc.name == "NotBonded"
    _attest(sc, liars, 0, wrong)
    attested_at = time.monotonic()
    assert court.round_status(sc.task_id, 0)[0] is RoundStatus.ATTESTED
    assert ledger.current_round(sc.task_id) == 1  # the next round starts on attestation

    # the watcher proves it within the window
    challenger_before = ledger.w3.eth.get_balance(dev_accounts[9].address)
    findings = watch.watch_once(ledger, challenger, store, sc.task_id)
    overturn_seconds = time.monotonic() - attested_at
    assert [f.status for f in findings] == ["overturned"], findings
    assert "coordinate 5" in findings[0].detail
    print(f"overturn_seconds={overturn_seconds:.2f} gas={findings[0].gas}")
    assert court.round_status(sc.task_id, 0)[0] is RoundStatus.VOIDED
    assert ledger.current_round(sc.task_id) == 2  # round 1 was voided unfinished
    for v in liars:
        assert court.bond_of(sc.task_id, v.address)["amount"] == 0
    for v in honest:
        assert court.bond_of(sc.task_id, v.address)["amount"] == BOND
    gained = ledger.w3.eth.get_balance(dev_accounts[9].address) - challenger_before
    assert gained > BOND - 10**16  # half of two bonds, less the gas
    assert court.pool(sc.task_id) == 2 * BUDGET + BOND
    totals = court.totals()
    assert totals["deposited"] == (
        totals["held"] + totals["slashed"] + totals["refunded"] + totals["withdrawn"]
    )

    # the task resumes from the initial model; two honest validators attest the new round
    st = load_task(ledger, store, sc.task_id)
    assert st.global_hash == st.config.model_hash
    _submit_round(sc)
    sc.as_(honest[0]).seal_round(sc.task_id, 2)
    right, vf = _judge(sc, 2, budget=BUDGET)
    _attest(sc, honest, 2, right)
    assert [f.status for f in watch.watch_once(ledger, challenger, store, sc.task_id)] == ["ok"]

    # the window passes: the round settles and every accepted contributor claims, once
    try:
        rewards.settle(ledger, court, sc.task_id, 2)
        raise AssertionError("settled inside the window")
    except ContractRevert as exc:
        assert exc.name == "Window"
    _advance(ledger, WINDOW)
    paid: dict[str, Any] = {}
    for c in sc.contributors:
        claims = rewards.claim(ledger, court.with_account(c), store, sc.task_id, 2, c.address)
        paid[c.address] = sum(x.amount for x in claims)
        assert rewards.claim(ledger, court.with_account(c), store, sc.task_id, 2, c.address) == []
    want = {e.contributor: e.reward for e in vf.entries}
    assert {a.lower(): v for a, v in paid.items()} == want
    assert 0 < sum(paid.values()) <= BUDGET
    assert court.round_status(sc.task_id, 2)[0] is RoundStatus.SETTLED
    assert court.pool(sc.task_id) == 2 * BUDGET + BOND - sum(paid.values())


def test_reward_leaves_keep_the_four_field_leaf_when_nothing_is_committed() -> None:
    e = verdicts.VerdictEntry(
        update_id=(1 << 32) | 1,
        contributor="0x" + "ab" * 20,
        content_hash="0x" + "11" * 32,
        cid="bafkreiexample",
        num_samples=10,
        verdict=verdicts.Verdict.ACCEPTED,
    )
    from dataclasses import replace

    from fedledger.protocol import merkle

    assert e.leaf() == merkle.leaf(e.update_id, e.contributor, e.content_hash, 0)
    paid = replace(e, reward=7)
    assert paid.leaf() == verdicts.court_leaf(
        e.update_id, e.contributor, e.content_hash, 0, verdicts.UNCLIPPED, 7
    )
    assert paid.leaf() != e.leaf()
    vf = verdicts.build(
        task_id=1,
        round=0,
        rule=verdicts.RuleSpec(rule="fedavg"),
        base_model_hash="0x" + "22" * 32,
        aggregate_hash="0x" + "33" * 32,
        aggregate_cid="bafkreiagg",
        entries=[paid, replace(e, update_id=e.update_id + 1, num_samples=30, clip=5)],
    )
    back = verdicts.parse(vf.to_bytes(), canonical=True)
    assert back == vf
    split = verdicts.with_rewards(vf, 100, None)
    assert [x.reward for x in split.entries] == [25, 75]
    assert np.isclose(sum(x.reward for x in split.entries), 100)
