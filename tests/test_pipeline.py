"""End to end on a real anvil, the real contract, the embedded store, SQLite and real uvicorn:
contributors submit honest and bad updates; a validator judges, aggregates and attests; the REST
history shows every verdict; anyone re-verifies the round from chain and store alone."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from pipeline_kit import backend_for, make_scenario, zero_like

from fedledger.chain.records import RoundResult
from fedledger.flows.verify import verify_task
from fedledger.protocol import codec, merkle
from fedledger_backend.api.server import BackgroundServer


def _run_until_final(backend, ledger, task_id: int, rnd: int, passes: int = 20) -> None:
    for _ in range(passes):
        backend.run_pass()
        if ledger.current_round(task_id) > rnd:
            backend.run_pass()
            return
    raise AssertionError(f"round {rnd} not final after {passes} passes: {backend.status()}")


@pytest.fixture
def every_verdict(ledger, store, dev_accounts, tmp_path: Path):
    """One round holding an update for (almost) every verdict."""
    sc = make_scenario(ledger, store, dev_accounts, n_contributors=12, rule={"rule": "median"})
    st = sc.state()
    honest = [sc.honest_update(i) for i in range(4)]
    ids = {}
    for i, (data, n) in enumerate(honest):
        ids[f"honest{i}"] = sc.submit_bytes(i, data, n)
    flipped, n = sc.honest_update(4, attack="sign_flip", scale=1.0)
    ids["OUTLIER"] = sc.submit_bytes(4, flipped, n)
    boosted, n = sc.honest_update(11, attack="scaling", factor=50.0)
    ids["NORM_BOUND"] = sc.submit_bytes(11, boosted, n)
    ids["HASH_MISMATCH"] = sc.submit_bytes(5, honest[0][0], 100, claimed_hash="0x" + "ab" * 32)
    ids["UNAVAILABLE"] = sc.submit_bytes(6, b"never stored anywhere", 100, store_it=False)
    ids["MALFORMED"] = sc.submit_bytes(7, b"this is not a safetensors file", 100)
    glob = codec.decode(store.get(st.global_cid)).tensors
    bad_shape = {k: np.zeros((3,) + v.shape[1:], np.float32) for k, v in glob.items()}
    ids["SHAPE_MISMATCH"] = sc.submit_bytes(
        8,
        codec.encode_update(
            bad_shape,
            task_id=sc.task_id,
            round=0,
            base_hash=st.global_hash,
            contributor=sc.contributors[8].address,
        ),
        100,
    )
    nan = {k: np.full_like(v, np.nan) for k, v in glob.items()}
    ids["NON_FINITE"] = sc.submit_bytes(
        9,
        codec.encode_update(
            nan,
            task_id=sc.task_id,
            round=0,
            base_hash=st.global_hash,
            contributor=sc.contributors[9].address,
        ),
        100,
    )
    ids["FREE_RIDER"] = sc.submit_bytes(
        10,
        codec.encode_update(
            zero_like(glob),
            task_id=sc.task_id,
            round=0,
            base_hash=st.global_hash,
            contributor=sc.contributors[10].address,
        ),
        100,
    )
    backend = backend_for(sc, sc.validators[0], tmp_path / "v1.db")
    _run_until_final(backend, ledger, sc.task_id, 0)
    return sc, backend, ids


def test_every_update_gets_exactly_one_verdict_visible_over_rest(every_verdict):
    sc, backend, ids = every_verdict
    with BackgroundServer(backend.app()) as srv:
        items = httpx.get(
            f"{srv.url}/contributions", params={"task_id": sc.task_id, "limit": 500}
        ).json()["items"]
        assert sorted(i["update_id"] for i in items) == sorted(ids.values())
        by_id = {i["update_id"]: i for i in items}
        for name, uid in ids.items():
            expected = "ACCEPTED" if name.startswith("honest") else name
            assert by_id[uid]["status"] == expected, (name, by_id[uid])
        one = httpx.get(f"{srv.url}/contributions/{ids['HASH_MISMATCH']}").json()
        assert one["contributor"] == sc.contributors[5].address
        assert one["reason"]


def test_a_contributor_proves_its_verdict_against_the_on_chain_root(every_verdict):
    sc, backend, ids = every_verdict
    with BackgroundServer(backend.app()) as srv:
        p = httpx.get(f"{srv.url}/contributions/{ids['honest0']}/proof").json()
    leaf = bytes.fromhex(p["leaf"][2:])
    proof = [bytes.fromhex(x[2:]) for x in p["proof"]]
    result = RoundResult.from_event(p["result"])
    assert sc.ledger.verify_verdict(sc.task_id, 0, result, leaf, proof)
    assert merkle.verify(p["root"], leaf, proof)


def test_anyone_re_verifies_the_round_from_chain_and_store(every_verdict):
    sc, _backend, _ids = every_verdict
    report = verify_task(sc.ledger, sc.store, sc.task_id)
    assert report.ok, report.problems
    assert report.rounds[0].accepted == 4


def test_verify_names_an_update_whose_stored_bytes_were_tampered(every_verdict, tmp_path):
    sc, _backend, ids = every_verdict
    records = sc.ledger.update_records(sc.task_id)
    target = next(r for r in records if r.update_id == ids["honest1"])
    _corrupt_root_block(sc.store, target.cid)
    report = verify_task(sc.ledger, sc.store, sc.task_id)
    assert not report.ok
    assert any(f"update {ids['honest1']}" in p for p in report.problems), report.problems


def _corrupt_root_block(store, cid: str) -> None:
    """Flip a byte of the block file on disk (what a bad disk or an intruder does)."""
    from fedledger.content.cid import parse_cid

    path = store._path(parse_cid(cid))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(raw))


def test_the_new_global_model_applies_the_accepted_deltas(every_verdict):
    sc, _backend, _ids = every_verdict
    st = sc.state()
    assert st.current_round == 1
    new = codec.decode(sc.store.get(st.global_cid), kind="model")
    assert new.round == 1 and codec.sha256_hex(sc.store.get(st.global_cid)) == st.global_hash


def test_an_update_after_the_round_deadline_is_late(ledger, store, dev_accounts, tmp_path):
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=5,
        min_updates=1,
        max_updates=10,
        round_duration=60,
    )
    on_time = [sc.submit_bytes(i, *sc.honest_update(i)) for i in range(4)]
    ledger.w3.provider.make_request("evm_increaseTime", [120])
    late = sc.submit_bytes(4, *sc.honest_update(4))
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    _run_until_final(backend, ledger, sc.task_id, 0)
    with BackgroundServer(backend.app()) as srv:
        got = {
            uid: httpx.get(f"{srv.url}/contributions/{uid}").json()["status"]
            for uid in on_time + [late]
        }
    assert got[late] == "LATE"
    assert all(got[u] == "ACCEPTED" for u in on_time), got
    assert verify_task(sc.ledger, sc.store, sc.task_id).ok
