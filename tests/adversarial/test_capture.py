"""Issue #14, class 4: capture by self-declared numbers.

fedavg weighs each update by the ``numSamples`` its contributor states.  A label-flipped update
declaring ``numSamples = 2**29`` was accepted and was the whole aggregate (accuracy 0.438 ->
0.196), and rounds of fewer than four updates were not compared at all, so one boosted delta
walked in.  The rules shown here:

* the task fixes ``maxSamples``, the largest weight one update may claim; the contract refuses
  more (``TooManySamples``) and zero (``ZeroSamples``) on every submission path, and validators
  cap fedavg weights at it again (``min(rule's sample_cap, maxSamples)``), the same code path
  for ``fedledger verify``;
* every round is norm-bounded whatever its size: the task's absolute ``norm_bound``, the
  round's median norm, and the median accepted norm of the previous rounds (carried in the
  verdict file as ``normHistory``).

Real anvil, the real compiled contract, the embedded store, SQLite, a real validator backend;
the attacker talks to the chain with raw web3 and decodes reverts with eth_abi itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from pipeline_kit import Scenario, backend_for, make_scenario
from web3 import Web3
from web3.exceptions import ContractCustomError

from fedledger.chain.ledger import Ledger, to_hex
from fedledger.content.cid import compute_cid
from fedledger.errors import ConfigError, ContractRevert
from fedledger.flows.submit import submit
from fedledger.flows.verify import verify_task
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec, verdicts
from fedledger.protocol.rounds import UpdateRef, judge_round
from fedledger.protocol.verdicts import Verdict

CAP = 400  # each contributor of these scenarios holds about 337 digits (a quarter of 1347)
U64_MAX = 2**64 - 1


# -- the attacker, from outside -------------------------------------------------------------


ZERO32 = b"\0" * 32


def _pair(tag: str) -> tuple[str, str]:
    """(contentHash, cid) of the same bytes: the only pairs the SDK records."""
    data = tag.encode()
    return "0x" + hashlib.sha256(data).hexdigest(), compute_cid(data)


def _raw(ledger: Ledger) -> tuple[Web3, Any]:
    """A web3 of the attacker's own and the contract as anyone sees it (address + ABI)."""
    w3 = Web3(Web3.HTTPProvider(str(ledger.w3.provider.endpoint_uri)))  # type: ignore[attr-defined]
    return w3, w3.eth.contract(address=ledger.address, abi=ledger.contract.abi)


def _custom_error(fn: Any, sender: str, signature: str, types: list[str]) -> tuple[Any, ...]:
    """The arguments of the custom error ``signature`` that ``fn`` reverts with (decoded here,
    not by the SDK)."""
    with pytest.raises(ContractCustomError) as info:
        fn.call({"from": sender})
    data = bytes.fromhex(str(info.value.data)[2:])
    assert data[:4] == keccak(text=signature)[:4], f"reverted with another error: {data.hex()}"
    return tuple(abi_decode(types, data[4:]))


def _send_reverts(w3: Web3, acct: LocalAccount, fn: Any) -> None:
    """Mine ``fn`` as a real transaction (fixed gas: estimation would refuse) and check that
    it failed on chain."""
    tx = fn.build_transaction(
        {
            "from": acct.address,
            "nonce": w3.eth.get_transaction_count(acct.address),
            "gas": 500_000,
            "chainId": w3.eth.chain_id,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(h)["status"] == 0


TOO_MANY = ("TooManySamples(uint256,uint64,uint64)", ["uint256", "uint64", "uint64"])
ZERO = ("ZeroSamples(uint256,address)", ["uint256", "address"])


@pytest.fixture
def capped(ledger: Ledger, store, dev_accounts: list[LocalAccount]) -> Scenario:
    """A closed task of three contributors whose maxSamples is CAP."""
    return make_scenario(
        ledger, store, dev_accounts, n_contributors=3, rule={"rule": "fedavg"}, max_samples=CAP
    )


def test_the_task_reports_its_max_samples(capped: Scenario) -> None:
    _w3, c = _raw(capped.ledger)
    assert c.functions.getTask(capped.task_id).call()[10] == CAP  # TaskView.maxSamples
    assert capped.state().config.max_samples == CAP
    created = list(capped.ledger.events("TaskCreated", task_id=capped.task_id))[0]["args"]
    assert created["maxSamples"] == CAP


@pytest.mark.parametrize("claimed", [CAP + 1, 2**29, U64_MAX])
def test_a_direct_submission_claiming_more_than_max_samples_reverts_TooManySamples(
    capped: Scenario, claimed: int
) -> None:
    w3, c = _raw(capped.ledger)
    alice = capped.contributors[0]
    fn = c.functions.submitUpdate(capped.task_id, 0, b"\xab" * 32, b"\xab" * 32, ZERO32, claimed)
    assert _custom_error(fn, alice.address, *TOO_MANY) == (capped.task_id, claimed, CAP)
    _send_reverts(w3, alice, fn)
    assert capped.ledger.get_task(capped.task_id)["updates"] == 0
    # the cap itself is a legal claim
    ok = c.functions.submitUpdate(capped.task_id, 0, b"\xab" * 32, b"\xab" * 32, ZERO32, CAP)
    assert ok.call({"from": alice.address}) == (capped.task_id << 32) | 1


def test_a_submission_claiming_zero_samples_reverts_ZeroSamples(capped: Scenario) -> None:
    _w3, c = _raw(capped.ledger)
    alice = capped.contributors[0]
    fn = c.functions.submitUpdate(capped.task_id, 0, b"\xab" * 32, b"\xab" * 32, ZERO32, 0)
    assert _custom_error(fn, alice.address, *ZERO) == (capped.task_id, alice.address.lower())


def test_a_relayed_submission_claiming_more_than_max_samples_reverts_TooManySamples(
    capped: Scenario, dev_accounts: list[LocalAccount]
) -> None:
    """The signature is valid (the contributor signed the claim); the claim is still refused,
    alone (submitUpdateFor reverts) or inside a batch (submitBatch skips that entry, naming
    TooManySamples, and records the others)."""
    w3, c = _raw(capped.ledger)
    relayer = dev_accounts[-1]  # any account pays the gas
    bob = capped.contributors[1]
    su = capped.ledger.sign_update(bob, capped.task_id, 0, *_pair("claim"), 2**29, 2**40)
    one = c.functions.submitUpdateFor(*su.as_tuple())
    assert _custom_error(one, relayer.address, *TOO_MANY) == (capped.task_id, 2**29, CAP)
    _send_reverts(w3, relayer, one)
    fine = capped.ledger.sign_update(
        capped.contributors[2], capped.task_id, 0, *_pair("ok"), CAP, 2**40
    )
    out = capped.ledger.with_account(relayer).submit_batch([fine, su])
    assert [r.contributor for r in out.records] == [capped.contributors[2].address]
    assert [(s["entry"], s["reason"]) for s in out.skipped] == [(1, "TooManySamples")]


def test_the_sdk_refuses_a_claim_above_max_samples_before_sending_anything(
    capped: Scenario,
) -> None:
    data, _n = capped.honest_update(0)
    led = capped.as_(capped.contributors[0])
    with pytest.raises(ConfigError, match=f"maxSamples {CAP}") as info:
        submit(led, capped.store, capped.state(), data, CAP + 1)
    assert f"claim at most {CAP}" in (info.value.hint or "")
    assert capped.ledger.w3.eth.get_transaction_count(capped.contributors[0].address) == 0


def test_a_task_without_max_samples_cannot_be_created(capped: Scenario) -> None:
    from fedledger.chain.ledger import TaskConfig

    cfg = TaskConfig("0x" + "11" * 32, "bafkreim", "bafkreis", max_samples=0)
    with pytest.raises(ContractRevert) as info:
        capped.ledger.create_task(cfg)
    assert (info.value.name, info.value.args_) == (
        "InvalidConfig",
        {"reason": "maxSamples is zero"},
    )


# -- validators -------------------------------------------------------------------------------


def _finalise(sc: Scenario, tmp_path: Path, rnd: int, name: str = "v.db") -> Any:
    backend = backend_for(sc, sc.validators[0], tmp_path / name)
    for _ in range(20):
        backend.run_pass()
        if sc.ledger.current_round(sc.task_id) > rnd:
            return backend
    raise AssertionError(f"round {rnd} not final: {backend.status()}")


def _verdict_file(sc: Scenario, rnd: int) -> verdicts.VerdictFile:
    fin = sc.ledger.last_finalized(sc.task_id, rnd)
    assert fin is not None
    return verdicts.parse(sc.store.get(str(fin["verdictCid"])), canonical=True)


def _by_contributor(sc: Scenario, vf: verdicts.VerdictFile) -> list[Verdict]:
    got = {e.contributor: e.verdict for e in vf.entries}
    return [got[c.address.lower()] for c in sc.contributors if c.address.lower() in got]


def test_a_x1000_delta_in_a_round_of_three_is_norm_bound(capped: Scenario, tmp_path: Path) -> None:
    for i in (0, 1):
        capped.submit_bytes(i, *capped.honest_update(i))
    capped.submit_bytes(2, *capped.honest_update(2, attack="scaling", factor=1000.0))
    _finalise(capped, tmp_path, 0)
    vf = _verdict_file(capped, 0)
    assert _by_contributor(capped, vf) == [Verdict.ACCEPTED, Verdict.ACCEPTED, Verdict.NORM_BOUND]
    assert verify_task(capped.ledger, capped.store, capped.task_id).ok


def test_one_update_alone_in_its_round_is_held_to_the_tasks_absolute_norm_bound(
    ledger: Ledger, store, dev_accounts: list[LocalAccount], tmp_path: Path
) -> None:
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=1,
        rule={"rule": "fedavg"},
        screening={"norm_bound": 5.0},
        max_samples=CAP,
    )
    sc.submit_bytes(0, *sc.honest_update(0, attack="scaling", factor=1000.0))
    _finalise(sc, tmp_path, 0)
    (entry,) = _verdict_file(sc, 0).entries
    assert entry.verdict == Verdict.NORM_BOUND and "the task's bound" in entry.reason


def _tensors(store, cid: str, kind: str) -> dict[str, np.ndarray]:
    return codec.decode(store.get(cid), kind=kind).tensors  # type: ignore[arg-type]


def _accuracy(tensors: dict[str, np.ndarray]) -> float:
    from fedledger.learning.data import load_dataset
    from fedledger.learning.models import build_model
    from fedledger.learning.train import evaluate

    ds = load_dataset("digits", seed=0)
    return evaluate(build_model("mlp_digits", seed=0), tensors, ds.X_test, ds.y_test)[0]


def test_a_label_flipper_claiming_the_cap_cannot_dominate_fedavg(
    capped: Scenario, tmp_path: Path
) -> None:
    """The attack of the issue: its 2**29 claim is refused; the most it can claim is the cap,
    which weighs like one honest contributor's data, not like the whole federation."""
    sc = capped
    base_cid = sc.state().global_cid
    honest = [sc.honest_update(i) for i in (0, 1)]
    flipped, _n = sc.honest_update(2, attack="label_flip")
    with pytest.raises(ContractRevert) as info:
        sc.submit_bytes(2, flipped, 2**29)
    assert info.value.name == "TooManySamples"
    ids = [sc.submit_bytes(i, data, n) for i, (data, n) in enumerate(honest)]
    ids.append(sc.submit_bytes(2, flipped, CAP))
    _finalise(sc, tmp_path, 0)

    vf = _verdict_file(sc, 0)
    assert [e.verdict for e in vf.entries] == [Verdict.ACCEPTED] * 3  # too few to compare
    assert vf.rule.sample_cap == CAP  # the file names the weight cap the aggregate used
    weights = [e.num_samples for e in vf.entries]
    assert weights[2] == CAP and weights[2] / sum(weights) < 0.5

    base = _tensors(sc.store, base_cid, "model")
    layout = agg.TensorLayout.of(base)
    deltas = [agg.flatten(_tensors(sc.store, e.cid, "update"), layout)[0] for e in vf.entries]
    new = agg.flatten(_tensors(sc.store, sc.state().global_cid, "model"), layout)[0]
    expected = agg.flatten(
        agg.apply_delta(base, agg.unflatten(agg.fedavg(deltas, weights), layout)), layout
    )[0]
    np.testing.assert_array_equal(new, expected)  # bit for bit: these weights, no others

    def with_weights(ws: list[int]) -> float:
        return _accuracy(agg.apply_delta(base, agg.unflatten(agg.fedavg(deltas, ws), layout)))

    captured = with_weights([weights[0], weights[1], 2**29])  # what the 2**29 claim would do
    honest_only = with_weights([weights[0], weights[1], 0])
    got = _accuracy(agg.unflatten(new, layout))
    assert got > captured + 0.05, (got, captured, honest_only)
    assert got > honest_only - 0.2, (got, captured, honest_only)


def test_validators_cap_fedavg_weights_at_max_samples_even_where_the_chain_did_not(
    capped: Scenario, tmp_path: Path
) -> None:
    """judge_round (validators and ``fedledger verify``) caps the weight again: the same
    updates with one claim raised to 2**29 aggregate to the very bytes of the cap."""
    sc = capped
    state0 = sc.state()
    for i in (0, 1):
        sc.submit_bytes(i, *sc.honest_update(i))
    sc.submit_bytes(2, sc.honest_update(2)[0], CAP)
    _finalise(sc, tmp_path, 0)
    fin = sc.ledger.last_finalized(sc.task_id, 0)
    assert fin is not None
    refs = [
        UpdateRef(
            r.update_id,
            r.contributor,
            r.content_hash,
            r.cid,
            2**29 if r.num_samples == CAP else r.num_samples,
        )
        for r in sc.ledger.update_records(sc.task_id)
    ]
    j = judge_round(
        sc.store,
        task_id=sc.task_id,
        round_=0,
        spec=state0.spec,
        base_model=sc.store.get(state0.global_cid),
        updates=refs,
        max_samples=CAP,
    )
    assert j.aggregate_hash == to_hex(fin["aggregateHash"])
    assert j.verdict_file.rule.sample_cap == CAP


def test_in_a_round_of_two_a_delta_50x_the_previous_rounds_median_accepted_norm_is_rejected(
    ledger: Ledger, store, dev_accounts: list[LocalAccount], tmp_path: Path
) -> None:
    sc = make_scenario(
        ledger, store, dev_accounts, n_contributors=2, rule={"rule": "fedavg"}, max_samples=CAP
    )
    for i in (0, 1):
        sc.submit_bytes(i, *sc.honest_update(i))
    _finalise(sc, tmp_path, 0)
    history = _verdict_file(sc, 0).norm_history
    assert history is not None and len(history) == 1  # round 0's median accepted norm

    honest_data, _n = sc.honest_update(1)  # training is deterministic: the same delta again
    plain = agg.norm(agg.flatten(codec.decode(honest_data, kind="update").tensors)[0])
    factor = 50.0 * history[0] / plain
    boosted, n = sc.honest_update(1, attack="scaling", factor=factor)
    ratio = agg.norm(agg.flatten(codec.decode(boosted, kind="update").tensors)[0]) / history[0]
    assert ratio == pytest.approx(50.0, rel=1e-3)
    sc.submit_bytes(0, *sc.honest_update(0))
    sc.submit_bytes(1, boosted, n)
    _finalise(sc, tmp_path, 1)

    vf = _verdict_file(sc, 1)
    assert _by_contributor(sc, vf) == [Verdict.ACCEPTED, Verdict.NORM_BOUND]
    assert "median accepted norm of the last 1 rounds" in vf.entries[1].reason
    assert vf.norm_history is not None and len(vf.norm_history) == 2
    report = verify_task(sc.ledger, sc.store, sc.task_id)  # the same code path, from the files
    assert report.ok, report.problems
