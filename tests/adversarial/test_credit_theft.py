"""Issue #14, class 7: credit theft.  Copying an honest contributor's pending ``submitUpdate``
(its ``contentHash`` and ``cid``, public in the mempool) and landing it first earned the copier
ACCEPTED and the honest contributor DUPLICATE: an update file did not say whose it was.

Now every update file names its contributor (``fedledger.contributor``, covered by
``contentHash``), and the judge (:func:`fedledger.protocol.rounds.judge_round`, the validators' and
``fedledger verify``'s one function) gives a copy its own verdict, ``COPIED``, while the
contributor the file names is judged on its merits, whoever landed first.  A file that names no
contributor is ``MALFORMED`` and says how to fix it.

Real anvil, the real compiled contract, the embedded store, SQLite, the real validator pipeline
and a real uvicorn on loopback; the attackers read the mempool and send with raw web3.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pipeline_kit import Scenario, backend_for, make_scenario
from web3 import Web3

from fedledger.chain.devnet import Devnet, start_anvil
from fedledger.chain.ledger import Ledger, connect
from fedledger.chain.records import RoundResult
from fedledger.content.blockstore import Blockstore
from fedledger.content.cid import compute_cid, parse_cid
from fedledger.content.store import ContentStore, open_store
from fedledger.errors import FormatError
from fedledger.flows.submit import sign, submit
from fedledger.flows.task import create_task
from fedledger.flows.verify import verify_task
from fedledger.learning.models import build_model, state_to_numpy
from fedledger.protocol import codec, verdicts
from fedledger.protocol.rounds import UpdateRef, judge_round
from fedledger.protocol.taskspec import TaskSpec, TrainingParams
from fedledger.protocol.verdicts import Verdict
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.service import Backend

HONEST = 4  # contributors 0..3 train honestly
COPIER, GRIEFER, OLD_CLIENT = 4, 5, 6


# -- the attacker, from outside ---------------------------------------------------------------


def _raw(ledger: Ledger) -> tuple[Web3, Any]:
    """A web3 of the attacker's own and the contract as anyone sees it (address + ABI)."""
    w3 = Web3(Web3.HTTPProvider(str(ledger.w3.provider.endpoint_uri)))  # type: ignore[attr-defined]
    return w3, w3.eth.contract(address=ledger.address, abi=ledger.contract.abi)


def _pending_submissions(w3: Web3, contract: Any) -> dict[str, dict[str, Any]]:
    """sender (lowercase) → the arguments of its pending ``submitUpdate``, read from the
    mempool as any node's peer sees it."""
    pool = w3.provider.make_request("txpool_content", [])["result"]["pending"]  # type: ignore[arg-type]
    out = {}
    for sender, by_nonce in pool.items():
        for tx in by_nonce.values():
            if (tx.get("to") or "").lower() != contract.address.lower():
                continue
            fn, args = contract.decode_function_input(tx["input"])
            if fn.fn_name == "submitUpdate":
                out[sender.lower()] = dict(args)
    return out


def _front_run(w3: Web3, contract: Any, thief: LocalAccount, args: dict[str, Any]) -> bytes:
    """``thief`` sends ``submitUpdate`` with ``args`` and a tip above the victim's, so the block
    holds it first."""
    fn = contract.functions.submitUpdate(
        args["taskId"],
        args["round"],
        args["contentHash"],
        args["cidDigest"],
        args["tensorRoot"],
        args["numSamples"],
    )
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    tx = fn.build_transaction(
        {
            "from": thief.address,
            "nonce": w3.eth.get_transaction_count(thief.address, "pending"),
            "gas": 500_000,
            "maxPriorityFeePerGas": 50 * 10**9,
            "maxFeePerGas": base * 2 + 50 * 10**9,
            "chainId": w3.eth.chain_id,
        }
    )
    return bytes(w3.eth.send_raw_transaction(thief.sign_transaction(tx).raw_transaction))


def _update_id(ledger: Ledger, tx_hash: bytes) -> int:
    receipt = ledger.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    assert receipt["status"] == 1, receipt
    (uid,) = ledger.update_ids(receipt)
    return uid


def _unbound(data: bytes) -> bytes:
    """The same update as an older fedledger wrote it: no ``fedledger.contributor``."""
    raw = codec.read_safetensors(data)
    meta = {k: v for k, v in raw.metadata.items() if k != codec.K_CONTRIBUTOR}
    return codec.write_safetensors(raw.tensors, meta)


def _run_until_final(backend: Backend, ledger: Ledger, task_id: int, rnd: int = 0) -> None:
    for _ in range(20):
        backend.run_pass()
        if ledger.current_round(task_id) > rnd:
            backend.run_pass()
            return
    raise AssertionError(f"round {rnd} not final: {backend.status()}")


# -- one round, front-run twice, on a real chain ----------------------------------------------


@pytest.fixture(scope="module")
def net() -> Iterator[Devnet]:
    with start_anvil(accounts=20) as dn:
        yield dn


@pytest.fixture(scope="module")
def mstore(tmp_path_factory: pytest.TempPathFactory) -> ContentStore:
    return open_store(None, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def mledger(
    net: Devnet, dev_accounts: list[LocalAccount], tmp_path_factory: pytest.TempPathFactory
) -> Ledger:
    return Ledger.deploy(connect(net.url), dev_accounts[0], tmp_path_factory.mktemp("dep"))


@dataclass
class Theft:
    sc: Scenario
    backend: Backend
    ids: dict[str, int]  # who → update id
    statuses: dict[int, dict[str, Any]]  # update id → its contribution over REST
    proof: dict[str, Any]  # the honest victim's proof, over REST


@pytest.fixture(scope="module")
def theft(
    mledger: Ledger,
    mstore: ContentStore,
    dev_accounts: list[LocalAccount],
    tmp_path_factory: pytest.TempPathFactory,
) -> Theft:
    """Seven admitted contributors: four honest, a copier that lands honest 0's pending
    ``(contentHash, cid)`` first, a griefer that lands honest 1's ``contentHash`` first with
    other bytes' cid, and one whose file names no contributor.  One validator judges."""
    sc = make_scenario(mledger, mstore, dev_accounts, n_contributors=7)
    honest = [sc.honest_update(i) for i in range(HONEST)]
    w3, contract = _raw(mledger)
    ids: dict[str, int] = {}
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        pending = {}
        for i in (0, 1):  # the two victims' transactions wait in the mempool
            data, n = honest[i]
            led = sc.as_(sc.contributors[i])
            st = sc.state()
            cid = mstore.put(data)  # published before its transaction, as `submit` does
            fn = led.submit_update_fn(sc.task_id, st.current_round, codec.sha256_hex(data), cid, n)
            assert led.sender is not None
            pending[f"honest{i}"] = led.sender.send(fn, label="submitUpdate", gas=500_000).tx_hash
        seen = _pending_submissions(w3, contract)
        victim0 = seen[sc.contributors[0].address.lower()]
        victim1 = seen[sc.contributors[1].address.lower()]
        pending["copier"] = _front_run(w3, contract, sc.contributors[COPIER], victim0)
        other = mstore.put(b"some other bytes, stored by the griefer")
        pending["griefer"] = _front_run(
            w3,
            contract,
            sc.contributors[GRIEFER],
            {**victim1, "cidDigest": parse_cid(other).digest},
        )
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    ids = {who: _update_id(mledger, h) for who, h in pending.items()}
    for i in (2, 3):
        ids[f"honest{i}"] = sc.submit_bytes(i, *honest[i])
    old, n = sc.honest_update(OLD_CLIENT)
    ids["old_client"] = sc.submit_bytes(OLD_CLIENT, _unbound(old), n)

    backend = backend_for(sc, sc.validators[0], tmp_path_factory.mktemp("v") / "v.db")
    _run_until_final(backend, mledger, sc.task_id)
    with BackgroundServer(backend.app()) as srv:
        statuses = {uid: httpx.get(f"{srv.url}/contributions/{uid}").json() for uid in ids.values()}
        proof = httpx.get(f"{srv.url}/contributions/{ids['honest0']}/proof").json()
    return Theft(sc, backend, ids, statuses, proof)


def test_the_front_runners_landed_before_their_victims(theft: Theft) -> None:
    assert theft.ids["copier"] < theft.ids["honest0"]
    assert theft.ids["griefer"] < theft.ids["honest1"]


def test_a_copier_that_lands_an_honest_pending_update_first_is_judged_copied(
    theft: Theft,
) -> None:
    got = theft.statuses[theft.ids["copier"]]
    assert got["status"] == "COPIED", got
    victim = theft.sc.contributors[0].address.lower()
    assert f"names contributor {victim}" in got["reason"]


def test_the_contributor_whose_update_was_copied_is_accepted_not_duplicate(theft: Theft) -> None:
    got = theft.statuses[theft.ids["honest0"]]
    assert got["status"] == "ACCEPTED", got


def test_the_copied_contributor_proves_its_acceptance_on_chain(theft: Theft) -> None:
    p = theft.proof
    assert p["verdict"] == "ACCEPTED"
    leaf = bytes.fromhex(p["leaf"][2:])
    result = RoundResult.from_event(p["result"])
    assert theft.sc.ledger.verify_verdict(
        theft.sc.task_id, 0, result, leaf, [bytes.fromhex(x[2:]) for x in p["proof"]]
    )


def test_landing_an_honest_content_hash_first_with_other_bytes_leaves_the_honest_update_accepted(
    theft: Theft,
) -> None:
    assert theft.statuses[theft.ids["griefer"]]["status"] == "HASH_MISMATCH"
    assert theft.statuses[theft.ids["honest1"]]["status"] == "ACCEPTED"


def test_an_update_file_that_names_no_contributor_is_malformed_and_says_what_to_do(
    theft: Theft,
) -> None:
    got = theft.statuses[theft.ids["old_client"]]
    assert got["status"] == "MALFORMED", got
    assert "names no contributor" in got["reason"]
    assert "rebuild it with this fedledger" in got["reason"]


def test_the_honest_updates_are_all_accepted_and_the_copy_counts_nowhere(theft: Theft) -> None:
    accepted = {uid for uid, c in theft.statuses.items() if c["status"] == "ACCEPTED"}
    assert accepted == {theft.ids[f"honest{i}"] for i in range(HONEST)}
    attested = _attested_verdicts(theft.sc)
    assert {e.update_id for e in attested.entries if e.verdict == Verdict.ACCEPTED} == accepted


def test_fedledger_verify_reaches_the_validators_verdicts(theft: Theft) -> None:
    report = verify_task(theft.sc.ledger, theft.sc.store, theft.sc.task_id)
    assert report.ok, report.problems  # same verdict root: the same verdict for every update
    assert report.rounds[0].root_ok and report.rounds[0].accepted == HONEST
    by_id = {e.update_id: e.verdict for e in _attested_verdicts(theft.sc).entries}
    assert by_id[theft.ids["copier"]] == Verdict.COPIED


def test_the_sdk_refuses_to_submit_a_file_that_names_another_contributor(theft: Theft) -> None:
    """A copy is refused before it is stored or sent: its sender would pay gas for COPIED."""
    sc = theft.sc
    state = sc.state()
    victim, thief = sc.contributors[0], sc.contributors[COPIER]
    data = _bound_update(state, victim.address)
    led = sc.as_(thief)
    nonce = led.w3.eth.get_transaction_count(thief.address)
    with pytest.raises(FormatError, match="names contributor .* COPIED"):
        submit(led, sc.store, state, data, 10)
    with pytest.raises(FormatError, match="names contributor .* COPIED"):
        sign(led, thief, sc.store, state, data, 10)
    with pytest.raises(FormatError, match="names no contributor"):
        submit(led, sc.store, state, _unbound(_bound_update(state, thief.address)), 10)
    assert led.w3.eth.get_transaction_count(thief.address) == nonce
    assert not sc.store.has(compute_cid(data))


def _bound_update(state: Any, who: str) -> bytes:
    rng = np.random.default_rng(7)
    glob = codec.decode(
        codec.encode_model(state_to_numpy(build_model("mlp_digits", seed=0)), task_id=1, round=0)
    ).tensors
    delta = {k: rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in glob.items()}
    return codec.encode_update(
        delta,
        task_id=state.task_id,
        round=state.current_round,
        base_hash=state.global_hash,
        contributor=who,
    )


def _attested_verdicts(sc: Scenario, rnd: int = 0) -> verdicts.VerdictFile:
    final = sc.ledger.last_finalized(sc.task_id, rnd)
    assert final is not None
    return verdicts.parse(sc.store.get(final["verdictCid"]), canonical=True)


# -- an open task: a stranger with raw web3 -----------------------------------------------------


def test_a_stranger_copying_on_an_open_task_is_copied_and_the_honest_contributor_accepted(
    mledger: Ledger,
    mstore: ContentStore,
    dev_accounts: list[LocalAccount],
    tmp_path: Path,
) -> None:
    owner, validator = dev_accounts[0], dev_accounts[15]
    honest = dev_accounts[16:19]
    stranger = Account.create()  # never admitted: the task is open; funded like any address
    mledger.w3.provider.make_request(  # type: ignore[arg-type]
        "anvil_setBalance", [stranger.address, hex(10**18)]
    )
    spec = TaskSpec(
        model="mlp_digits",
        dataset="digits",
        training=TrainingParams(epochs=1, lr=0.1),
        aggregation={"rule": "median"},
        fetch_timeout_s=5,
    )
    task_id = create_task(
        mledger,
        mstore,
        spec,
        state_to_numpy(build_model("mlp_digits", seed=0)),
        max_samples=1000,
        min_updates=4,
        max_updates=4,
        open_=True,
    )
    mledger.add_validator(task_id, validator.address)
    sc = Scenario(mledger, mstore, task_id, owner, [*honest, stranger], [validator], 4)
    w3, contract = _raw(mledger)

    updates = [sc.honest_update(i) for i in range(3)]
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        data, n = updates[0]
        led = sc.as_(honest[0])
        fn = led.submit_update_fn(task_id, 0, codec.sha256_hex(data), mstore.put(data), n)
        assert led.sender is not None
        victim_tx = led.sender.send(fn, label="submitUpdate", gas=500_000).tx_hash
        seen = _pending_submissions(w3, contract)[honest[0].address.lower()]
        thief_tx = _front_run(w3, contract, stranger, seen)
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    thief_id, victim_id = _update_id(mledger, thief_tx), _update_id(mledger, victim_tx)
    assert thief_id < victim_id
    others = [sc.submit_bytes(i, *updates[i]) for i in (1, 2)]

    backend = backend_for(sc, validator, tmp_path / "v.db")
    _run_until_final(backend, mledger, task_id)
    got = {e.update_id: e.verdict for e in _attested_verdicts(sc).entries}
    assert got[thief_id] == Verdict.COPIED
    assert got[victim_id] == Verdict.ACCEPTED
    assert all(got[u] == Verdict.ACCEPTED for u in others)
    assert verify_task(mledger, mstore, task_id).ok


# -- the rule itself, as every judge applies it -----------------------------------------------


A, B = "0x" + "a1" * 20, "0x" + "b2" * 20


def _judge(tmp_path: Path, submissions: list[tuple[str, bytes]]) -> list[Verdict]:
    """Judge round 0 of task 1 holding ``submissions`` (submitter, file bytes), in order."""
    store = Blockstore(tmp_path / "blocks")
    spec = TaskSpec(model="mlp_digits", dataset="digits", aggregation={"rule": "median"})
    base = codec.encode_model(state_to_numpy(build_model("mlp_digits", seed=0)), task_id=1, round=0)
    refs = [
        UpdateRef(i + 1, who, codec.sha256_hex(f), store.put(f), 10)
        for i, (who, f) in enumerate(submissions)
    ]
    j = judge_round(
        store, task_id=1, round_=0, spec=spec, base_model=base, updates=refs, max_samples=10
    )
    return [e.verdict for e in j.verdict_file.entries]


def _file(named: str, seed: int = 0) -> bytes:
    model = state_to_numpy(build_model("mlp_digits", seed=0))
    base = codec.sha256_hex(codec.encode_model(model, task_id=1, round=0))
    rng = np.random.default_rng(seed)
    delta = {k: rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in model.items()}
    return codec.encode_update(delta, task_id=1, round=0, base_hash=base, contributor=named)


def test_of_the_same_bytes_from_two_addresses_only_the_one_the_file_names_is_accepted(
    tmp_path: Path,
) -> None:
    f = _file(A)
    assert _judge(tmp_path / "a", [(B, f), (A, f)]) == [Verdict.COPIED, Verdict.ACCEPTED]
    assert _judge(tmp_path / "b", [(A, f), (B, f)]) == [Verdict.ACCEPTED, Verdict.COPIED]


def test_the_same_bytes_naming_neither_submitter_are_all_copied(tmp_path: Path) -> None:
    f = _file("0x" + "c3" * 20)
    assert _judge(tmp_path, [(A, f), (B, f)]) == [Verdict.COPIED, Verdict.COPIED]


def test_the_contributor_is_compared_case_insensitively(tmp_path: Path) -> None:
    checksummed = Web3.to_checksum_address(A)
    raw = codec.read_safetensors(_file(A))
    mixed = codec.write_safetensors(raw.tensors, {**raw.metadata, codec.K_CONTRIBUTOR: checksummed})
    assert _judge(tmp_path, [(checksummed, mixed)]) == [Verdict.ACCEPTED]


def test_a_contributor_that_is_not_an_address_is_malformed(tmp_path: Path) -> None:
    raw = codec.read_safetensors(_file(A))
    bad = codec.write_safetensors(raw.tensors, {**raw.metadata, codec.K_CONTRIBUTOR: "/etc/x"})
    assert _judge(tmp_path, [(A, bad)]) == [Verdict.MALFORMED]


def test_an_update_file_names_its_contributor_in_lowercase() -> None:
    meta = codec.decode(_file(Web3.to_checksum_address(A))).metadata
    assert meta[codec.K_CONTRIBUTOR] == A
    assert codec.decode(_file(A)).contributor == A


def test_encoding_an_update_needs_a_real_address_and_extra_cannot_override_it() -> None:
    with pytest.raises(ValueError, match="contributor must be an address"):
        _file("alice")
    with pytest.raises(ValueError, match="may not set"):
        codec.encode_update(
            {"w": np.zeros(2, np.float32)},
            task_id=1,
            round=0,
            base_hash="0x" + "00" * 32,
            contributor=A,
            extra={codec.K_CONTRIBUTOR: B},
        )


def test_copied_is_appended_so_no_earlier_code_or_leaf_changes() -> None:
    assert Verdict.COPIED == 11  # later verdicts are appended after it (OUT_OF_RANGE = 12)
    assert [v.value for v in Verdict] == list(range(len(Verdict)))
