"""Several validators on one round, on a real anvil, the embedded store, SQLite and uvicorn:
honest ones agree to the bit and reach quorum, a lying one cannot finalise alone and shows up in
the API, anyone recomputes the aggregate, and a validator that crashes at any step and restarts
never attests twice."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from chain_kit import made_up_result
from pipeline_kit import Scenario, backend_for, make_scenario

from fedledger.chain.devnet import Devnet, start_anvil
from fedledger.chain.ledger import Ledger, connect, result_fields
from fedledger.content.store import ContentStore, open_store
from fedledger.errors import ContentNotFoundError, ContractRevert
from fedledger.flows.verify import verify_task
from fedledger.protocol import codec
from fedledger.protocol.verdicts import parse as parse_verdicts
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.service import Backend
from fedledger_backend.validator import Validator


@pytest.fixture(scope="module")
def net() -> Iterator[Devnet]:
    with start_anvil(accounts=20) as dn:
        yield dn


@pytest.fixture(scope="module")
def mstore(tmp_path_factory) -> ContentStore:
    return open_store(None, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def mledger(net, dev_accounts, tmp_path_factory) -> Ledger:
    return Ledger.deploy(connect(net.url), dev_accounts[0], tmp_path_factory.mktemp("dep"))


def _round_of_four(ledger, store, accounts, *, validators: int) -> Scenario:
    sc = make_scenario(ledger, store, accounts, n_contributors=4, n_validators=validators, quorum=2)
    for i in range(4):
        sc.submit_bytes(i, *sc.honest_update(i))
    return sc


def _attestations(sc: Scenario, rnd: int = 0) -> dict[str, dict]:
    """Each validator's latest attestation of the round: its digest and the result's fields."""
    out = {}
    for e in sc.ledger.events("RoundAttested", task_id=sc.task_id, round_=rnd):
        digest = bytes(e["args"]["digest"])
        result = sc.ledger.proposed_result(sc.task_id, rnd, digest)
        assert result is not None
        out[e["args"]["validator"]] = {"digest": digest, **result_fields(result)}
    return out


def _hx(b: bytes | str) -> str:
    return b.lower() if isinstance(b, str) else "0x" + bytes(b).hex()


def _passes(backend: Backend, n: int = 3) -> None:
    for _ in range(n):
        backend.run_pass()


@pytest.fixture(scope="module")
def contested(mledger, mstore, dev_accounts, tmp_path_factory):
    """Three validators, quorum 2: the third lies first, then the honest two attest."""
    sc = _round_of_four(mledger, mstore, dev_accounts, validators=3)
    tmp = tmp_path_factory.mktemp("dbs")
    liar = sc.as_(sc.validators[2])
    liar.attest_round(sc.task_id, 0, made_up_result(sc.ledger, sc.task_id, 0, random.Random(7)))
    honest = [backend_for(sc, v, tmp / f"v{i}.db") for i, v in enumerate(sc.validators[:2])]
    _passes(honest[0])
    after_one = sc.ledger.current_round(sc.task_id)
    _passes(honest[1])
    _passes(honest[0], 1)
    return sc, honest, after_one


def test_two_honest_validators_reach_quorum_with_bit_identical_results(contested):
    sc, (b1, b2), _ = contested
    assert sc.ledger.current_round(sc.task_id) == 1
    atts = _attestations(sc)
    a1, a2 = atts[sc.validators[0].address], atts[sc.validators[1].address]
    for field in ("digest", "aggregateHash", "verdictRoot", "aggregateCid", "verdictCid"):
        assert a1[field] == a2[field], field
    assert b1.attested[0].aggregate_cid == b2.attested[0].aggregate_cid
    assert b1.attested[0].verdict_cid == b2.attested[0].verdict_cid
    final = sc.ledger.last_finalized(sc.task_id)
    assert final is not None and final["aggregateHash"] == a1["aggregateHash"]
    assert sc.store.get(a1["aggregateCid"]) == sc.store.get(a2["aggregateCid"])


def test_the_last_finalisation_is_found_searching_back_one_block_at_a_time(contested):
    """last_finalized searches backwards from the head in log_chunk ranges: with 1-block
    chunks it still finds the same event a forward scan of the whole history finds, and
    None for a round that is not final."""
    sc, _, _ = contested
    last = list(sc.ledger.events("RoundFinalized", task_id=sc.task_id))[-1]
    forward = sc.ledger.finalized_args(last)
    chunk = sc.ledger.log_chunk
    try:
        sc.ledger.log_chunk = 1
        assert sc.ledger.last_finalized(sc.task_id) == dict(forward)
        assert sc.ledger.last_finalized(sc.task_id, 5) is None
    finally:
        sc.ledger.log_chunk = chunk


def test_a_lying_validator_cannot_finalise_alone(contested):
    sc, _, after_one = contested
    assert after_one == 0  # liar + one honest validator: two digests, no quorum
    liar = _attestations(sc)[sc.validators[2].address]
    assert liar["aggregateHash"] != sc.ledger.last_finalized(sc.task_id)["aggregateHash"]


def test_the_lie_is_visible_in_the_round_over_rest(contested):
    sc, (b1, _), _ = contested
    with BackgroundServer(b1.app()) as srv:
        body = httpx.get(f"{srv.url}/tasks/{sc.task_id}/rounds/0").json()
    assert body["status"] == "finalized"
    by_validator = {a["validator"]: a for a in body["attestations"]}
    assert len(by_validator) == 3
    assert by_validator[sc.validators[2].address]["agrees"] is False
    liar = _attestations(sc)[sc.validators[2].address]
    assert by_validator[sc.validators[2].address]["aggregate_cid"] == liar["aggregateCid"]
    assert by_validator[sc.validators[0].address]["agrees"] is True
    assert sorted(d["attestations"] for d in body["digests"]) == [1, 2]


def test_anyone_recomputes_the_aggregate(contested):
    sc, _, _ = contested
    report = verify_task(sc.ledger, sc.store, sc.task_id)
    assert report.ok, report.problems


def test_the_aggregate_equals_a_plain_numpy_median_of_the_accepted_deltas(contested):
    sc, _, _ = contested
    final = sc.ledger.last_finalized(sc.task_id)
    assert final is not None
    spec_state = sc.state()
    created = next(iter(sc.ledger.events("TaskCreated", task_id=sc.task_id)))["args"]
    base = codec.decode(sc.store.get(created["modelCid"]), kind="model").tensors
    vf = parse_verdicts(sc.store.get(final["verdictCid"]))
    by_id = {r.update_id: r for r in sc.ledger.update_records(sc.task_id, 0)}
    accepted = [e.update_id for e in vf.entries if e.verdict.name == "ACCEPTED"]
    assert len(accepted) >= 3
    deltas = [codec.decode(sc.store.get(by_id[uid].cid), kind="update").tensors for uid in accepted]
    got = codec.decode(sc.store.get(final["aggregateCid"]), kind="model").tensors
    assert spec_state.global_hash == _hx(final["aggregateHash"])
    for name, g in base.items():
        stacked = np.stack([d[name] for d in deltas]).astype(np.float64)
        want = (g + np.median(stacked, axis=0).astype(np.float32)).astype(np.float32)
        np.testing.assert_array_equal(got[name], want, err_msg=name)


class Crash(BaseException):
    """The process dies here (not an error anything would catch)."""


def _crash_after(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if step == "seal":
        monkeypatch.setattr(Validator, "_publish", lambda self, j: _raise())
    elif step == "publish":
        monkeypatch.setattr(Ledger, "attest_round", lambda self, *a: _raise())
    else:
        real = Ledger.attest_round

        def attest_then_die(self, *a):  # type: ignore[no-untyped-def]
            real(self, *a)
            raise Crash

        monkeypatch.setattr(Ledger, "attest_round", attest_then_die)


def _raise() -> None:
    raise Crash


@pytest.mark.parametrize("step", ["seal", "publish", "attest"])
def test_a_validator_restarted_after_a_crash_never_attests_twice(
    step, mledger, mstore, dev_accounts, tmp_path: Path
):
    sc = _round_of_four(mledger, mstore, dev_accounts, validators=2)
    v1, v2 = sc.validators
    with pytest.MonkeyPatch.context() as mp:
        _crash_after(step, mp)
        with pytest.raises(Crash):
            _passes(backend_for(sc, v1, tmp_path / "v1.db"))
    t = sc.ledger.get_task(sc.task_id)
    assert t["isSealed"]
    assert sc.ledger.has_attested(sc.task_id, 0, v1.address) == (step == "attest")

    restarted = backend_for(sc, v1, tmp_path / "v1.db")
    _passes(restarted)
    assert sc.ledger.has_attested(sc.task_id, 0, v1.address)
    with pytest.raises(ContractRevert) as again:
        sc.as_(v1).attest_round(
            sc.task_id, 0, made_up_result(sc.ledger, sc.task_id, 0, random.Random(3))
        )
    assert again.value.name == "AlreadyAttested"

    _passes(backend_for(sc, v2, tmp_path / "v2.db"))
    assert sc.ledger.current_round(sc.task_id) == 1
    events = list(sc.ledger.events("RoundAttested", task_id=sc.task_id, round_=0))
    assert [e["args"]["validator"] for e in events].count(v1.address) == 1
    assert len(events) == 2
    assert verify_task(sc.ledger, sc.store, sc.task_id).ok


def test_a_round_is_not_attested_when_a_reorg_removed_what_was_judged(
    ledger, store, dev_accounts, tmp_path: Path
):
    from chain_kit import reorg

    sc = make_scenario(ledger, store, dev_accounts, n_contributors=4, quorum=1)
    work = [sc.honest_update(i) for i in range(4)]
    for i, (data, n) in enumerate(work):
        sc.submit_bytes(i, data, n)
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    real_publish = Validator._publish

    def publish_then_reorg(self, j):  # type: ignore[no-untyped-def]
        real_publish(self, j)
        reorg(sc.ledger, 2)  # drops the seal and the last update after they were judged

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Validator, "_publish", publish_then_reorg)
        _passes(backend, 2)
    assert backend.validator is not None
    assert not sc.ledger.has_attested(sc.task_id, 0, sc.validators[0].address)
    assert "reorganised" in backend.validator.skipped[(sc.task_id, 0)]
    assert sc.ledger.get_task(sc.task_id)["updateCount"] == 3

    sc.ledger.sender.nonces.resync(sc.contributors[3].address)  # its update was dropped
    last = sc.submit_bytes(3, *work[3])
    _passes(backend, 4)
    assert sc.ledger.current_round(sc.task_id) == 1
    final = sc.ledger.last_finalized(sc.task_id)
    judged = parse_verdicts(sc.store.get(final["verdictCid"]))
    assert last in [e.update_id for e in judged.entries]
    assert verify_task(sc.ledger, sc.store, sc.task_id).ok


def test_a_validator_judges_the_next_round_from_the_aggregate_it_published(
    mledger, dev_accounts, tmp_path
):
    """The global model a validator published itself is in its hands: the next round is judged
    from those bytes (checked against the chain's hash), not read back from the store. Here the
    store loses them between the rounds, and the round is judged all the same."""
    store = open_store(None, tmp_path / "own")
    sc = make_scenario(mledger, store, dev_accounts, n_contributors=4, n_validators=1, quorum=1)
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    for i in range(4):
        sc.submit_bytes(i, *sc.honest_update(i))
    _passes(backend)
    st = sc.state()
    assert st.current_round == 1
    updates = [sc.honest_update(i) for i in range(4)]  # trained on the new global model
    store.unpin(st.global_cid)
    store.gc()  # type: ignore[attr-defined]
    with pytest.raises(ContentNotFoundError):
        store.get(st.global_cid)
    for i, (data, samples) in enumerate(updates):
        sc.submit_bytes(i, data, samples)
    _passes(backend)
    assert sc.state().current_round == 2
    final = _attestations(sc, 1)[sc.validators[0].address]
    assert final["aggregateHash"] == sc.state().global_hash


def test_a_validator_keeps_its_newest_aggregates_within_a_byte_cap():
    from collections import OrderedDict

    from fedledger_backend.validator import remember

    kept: OrderedDict[int, tuple[str, str, bytes]] = OrderedDict()
    for task in (1, 2, 3):
        remember(kept, task, (f"cid{task}", f"h{task}", b"x" * 100), cap=250)
    assert list(kept) == [2, 3]  # task 1's, the oldest, went over the cap
    remember(kept, 2, ("cid2b", "h2b", b"y" * 100), cap=250)
    assert list(kept) == [3, 2] and kept[2][0] == "cid2b"  # republished: the newest
    remember(kept, 4, ("cid4", "h4", b"z" * 1000), cap=250)
    assert list(kept) == [4]  # alone over the cap, the newest is still kept
