"""The public SDK (``import fedledger``) as a PyTorch user and a task owner meet it: a real anvil,
the real contract, the embedded store, a real validator (``fedledger_backend.service.Backend``)
closing rounds, and a real relayer on a uvicorn on loopback.

The local check (``fedledger.flows.submit.check_update``) is held to the validators' rules here:
an update the validators would reject whatever the round holds is refused before anything is
stored or sent, with an error that names the verdict it avoids and what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from relay_kit import relay_node
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fedledger
from fedledger.chain.devnet import Devnet, dev_private_keys, start_anvil
from fedledger.chain.keys import DEV_SCRYPT_N, new_key
from fedledger.content.cid import compute_cid
from fedledger.errors import ConfigError, FedledgerError, FormatError, KeystoreError
from fedledger.flows.submit import submit as flow_submit
from fedledger.learning.data import load_dataset, partition_iid
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec, TrainingParams
from fedledger.protocol.verdicts import Verdict

PASSWORD = "sdk test password"
MLP = {"kind": "mlp", "in_features": 64, "hidden": [16], "out_features": 10}
OWNER, ALICE, BOB, VALIDATOR, RELAYER = range(5)


@pytest.fixture(scope="module")
def chain() -> Iterator[Devnet]:
    with start_anvil(accounts=6) as dn:
        yield dn


@pytest.fixture(scope="module")
def accounts() -> list[LocalAccount]:
    return [Account.from_key(k) for k in dev_private_keys(6)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdk") / "home"


@pytest.fixture(scope="module")
def owner(chain: Devnet, accounts: list[LocalAccount], home: Path) -> fedledger.Session:
    """The consortium's session: it deployed the ledger (recorded under ``home``)."""
    return fedledger.deploy(account=accounts[OWNER], rpc_url=chain.url, home=home)


def session_of(chain: Devnet, home: Path, account: LocalAccount | None = None) -> fedledger.Session:
    return fedledger.connect(account=account, rpc_url=chain.url, home=home)


@pytest.fixture
def task(owner: fedledger.Session, accounts: list[LocalAccount]) -> fedledger.Task:
    """A fresh task per test: a described 64-16-10 MLP on digits, alice and bob admitted, one
    update closes a round."""
    spec = TaskSpec(
        model=MLP, dataset="digits", training=TrainingParams(lr=0.01), fetch_timeout_s=5
    )
    t = owner.create_task(spec, max_samples=500, min_updates=1, max_updates=4)
    owner.admit(
        t.id,
        contributors=[accounts[ALICE].address, accounts[BOB].address],
        validators=[accounts[VALIDATOR].address],
    )
    return t


@pytest.fixture
def alice(chain: Devnet, home: Path, accounts: list[LocalAccount]) -> fedledger.Session:
    return session_of(chain, home, accounts[ALICE])


def loader(index: int = 0, parts: int = 4) -> DataLoader[tuple[torch.Tensor, ...]]:
    ds = load_dataset("digits")
    idx = partition_iid(ds.y_train, parts, seed=0)[index]
    data = TensorDataset(torch.from_numpy(ds.X_train[idx]), torch.from_numpy(ds.y_train[idx]))
    return DataLoader(data, batch_size=32, shuffle=True)


def own_loop(model: nn.Module, data: DataLoader[tuple[torch.Tensor, ...]]) -> nn.Module:
    """A user's own loop: Adam, their DataLoader, a step count of their choosing."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def validate(
    owner: fedledger.Session, accounts: list[LocalAccount], tmp_path: Path, task_id: int
) -> None:
    """A real validator's passes (index, seal, judge, attest) until the task's round is final."""
    from fedledger_backend.db import Database
    from fedledger_backend.service import Backend

    led = owner.ledger.with_account(accounts[VALIDATOR])
    start = led.current_round(task_id)
    backend = Backend(
        ledger=led,
        store=owner.store,
        db=Database(f"sqlite:///{tmp_path / 'validator.db'}"),
        account=accounts[VALIDATOR],
        evaluate=False,
    )
    for _ in range(10):
        backend.run_pass()
        if led.current_round(task_id) > start:
            return
    raise AssertionError(f"the validator did not close round {start}: {backend.last_error}")


def nonce(session: fedledger.Session, who: LocalAccount) -> int:
    return int(session.ledger.w3.eth.get_transaction_count(who.address))


# -- the package ---------------------------------------------------------------------------


def test_import_fedledger_loads_neither_torch_nor_web3() -> None:
    code = (
        "import sys, fedledger\n"
        "heavy = [m for m in ('torch', 'web3', 'eth_account', 'httpx', 'sklearn') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert issubclass(fedledger.FormatError, fedledger.FedledgerError)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_every_public_name_resolves_and_nothing_else_is_offered() -> None:
    for name in fedledger.__all__:
        assert getattr(fedledger, name) is not None, name
    assert sorted(dir(fedledger)) == sorted(fedledger.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Ledger'"):
        fedledger.Ledger  # noqa: B018 - an internal, not the public surface


# -- sessions ------------------------------------------------------------------------------


def test_connect_finds_the_deployment_the_owner_recorded(
    chain: Devnet, home: Path, owner: fedledger.Session
) -> None:
    reader = session_of(chain, home)
    assert reader.contract == owner.contract and reader.address is None


def test_connect_unlocks_a_keystore_key_with_the_password_from_the_environment(
    chain: Devnet,
    home: Path,
    owner: fedledger.Session,
    accounts: list[LocalAccount],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FEDLEDGER_PASSWORD", raising=False)
    new_key(
        home / "keystore", "bob", PASSWORD, private_key=accounts[BOB].key, scrypt_n=DEV_SCRYPT_N
    )
    s = fedledger.connect(key="bob", rpc_url=chain.url, home=home, password=PASSWORD)
    assert s.address == accounts[BOB].address
    with pytest.raises(KeystoreError, match="no password for key 'bob'") as err:
        fedledger.connect(key="bob", rpc_url=chain.url, home=home)
    assert "FEDLEDGER_PASSWORD" in str(err.value)
    monkeypatch.setenv("FEDLEDGER_PASSWORD", PASSWORD)
    assert fedledger.connect(key="bob", rpc_url=chain.url, home=home).address == s.address


def test_a_session_without_a_key_cannot_submit(
    chain: Devnet, home: Path, task: fedledger.Task
) -> None:
    reader = session_of(chain, home).task(task.id)
    with pytest.raises(ConfigError, match="no key to submit") as err:
        reader.submit(reader.model(), num_samples=10)
    assert "connect(key=" in str(err.value)


# -- a contributor's own loop -------------------------------------------------------------


def test_task_model_is_the_described_architecture_holding_the_global_weights(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    t = alice.task(task.id)
    model = t.model()
    assert isinstance(model, nn.Module)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    glob = t.global_tensors()
    assert set(state) == set(glob)
    assert all(np.array_equal(state[k], glob[k]) for k in glob)


def test_own_loop_on_a_dataloader_contributes_and_the_round_verifies(
    owner: fedledger.Session,
    alice: fedledger.Session,
    task: fedledger.Task,
    accounts: list[LocalAccount],
    tmp_path: Path,
) -> None:
    """The whole contributor journey in the public API: model, own loop, submit, wait, verdict,
    re-verification."""
    t = alice.task(task.id)
    data = loader()
    model = own_loop(t.model(), data)
    receipt = t.submit(model, num_samples=len(data.dataset))  # type: ignore[arg-type]

    assert isinstance(receipt, fedledger.Receipt) and receipt.update_id is not None
    assert (receipt.task_id, receipt.round, receipt.contributor) == (
        task.id,
        0,
        accounts[ALICE].address,
    )
    stored = alice.store.get(receipt.cid)
    assert codec.sha256_hex(stored) == receipt.content_hash
    (rec,) = alice.ledger.update_records(task.id)
    assert rec.update_id == receipt.update_id
    assert rec.num_samples == receipt.num_samples == len(data.dataset)  # type: ignore[arg-type]

    validate(owner, accounts, tmp_path, task.id)
    assert t.wait_for_round(1, timeout_s=30, poll_s=0.1).round == 1
    verdict = t.verdict(receipt)
    assert verdict is not None and verdict.verdict == Verdict.ACCEPTED
    assert owner.verify(task.id).ok


def test_a_users_own_module_with_the_tasks_names_takes_the_global_weights(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    t = alice.task(task.id)
    net = t.global_model(as_torch=Net())
    assert torch.equal(net.net[0].weight, torch.from_numpy(t.global_tensors()["net.0.weight"]))
    receipt = t.submit(own_loop(net, loader(1)), num_samples=100)
    assert receipt.update_id is not None


def test_a_module_with_other_names_is_refused_naming_them(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    t = alice.task(task.id)
    other = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(FormatError, match="does not fit task") as err:
        t.global_model(as_torch=other)
    assert "net.0.weight" in str(err.value) and "task.model()" in str(err.value)


def test_a_trained_model_of_another_shape_is_refused_before_anything_is_sent(
    alice: fedledger.Session, task: fedledger.Task, accounts: list[LocalAccount]
) -> None:
    t = alice.task(task.id)
    wider = {**t.global_tensors(), "net.0.bias": np.zeros(17, dtype=np.float32)}
    before = nonce(alice, accounts[ALICE])
    with pytest.raises(FormatError, match="SHAPE_MISMATCH") as err:
        t.submit(wider, num_samples=10)
    assert "net.0.bias" in str(err.value) and "(17,)" in str(err.value)
    assert nonce(alice, accounts[ALICE]) == before


def test_nan_weights_are_refused_as_non_finite_before_anything_is_sent(
    alice: fedledger.Session, task: fedledger.Task, accounts: list[LocalAccount]
) -> None:
    t = alice.task(task.id)
    model = t.model()
    with torch.no_grad():
        model.net[2].weight[0, 0] = float("nan")  # type: ignore[index]
    before = nonce(alice, accounts[ALICE])
    with pytest.raises(FormatError, match="NON_FINITE") as err:
        t.submit(model, num_samples=10)
    assert "net.2.weight" in str(err.value) and "GradScaler" in str(err.value)
    assert nonce(alice, accounts[ALICE]) == before
    assert alice.ledger.get_task(task.id)["updateCount"] == 0


def test_half_precision_or_a_state_dict_gives_the_same_file_as_the_module(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    """Tensors are moved to CPU float32 before encoding: the file depends on the weights only."""
    t = alice.task(task.id)
    model = own_loop(t.model(), loader(2))
    contributor = alice.address
    assert contributor is not None
    as_module = codec.encode_update(
        t.delta(model),
        task_id=t.id,
        round=t.round,
        base_hash=t.state.global_hash,
        contributor=contributor,
    )
    as_state = codec.encode_update(
        t.delta(model.state_dict()),
        task_id=t.id,
        round=t.round,
        base_hash=t.state.global_hash,
        contributor=contributor,
    )
    assert as_module == as_state
    assert set(t.delta(model.half())) == set(t.global_tensors())


def test_more_samples_than_the_task_allows_is_refused_with_the_cap(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    t = alice.task(task.id)
    with pytest.raises(ConfigError, match="maxSamples 500") as err:
        t.submit(t.model(), num_samples=501)
    assert "claim at most 500" in str(err.value)


def test_an_update_made_for_a_past_round_is_refused_with_what_to_do(
    owner: fedledger.Session,
    alice: fedledger.Session,
    task: fedledger.Task,
    accounts: list[LocalAccount],
    tmp_path: Path,
    chain: Devnet,
    home: Path,
) -> None:
    stale = alice.task(task.id)
    bob = session_of(chain, home, accounts[BOB]).task(task.id)
    bob.submit(own_loop(bob.model(), loader(3)), num_samples=50)
    validate(owner, accounts, tmp_path, task.id)
    with pytest.raises(FedledgerError, match="moved on to round 1") as err:
        stale.submit(stale.model(), num_samples=10)
    assert "task.refresh()" in str(err.value)


def test_waiting_for_a_round_nobody_closes_names_the_round_and_what_to_check(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    t = alice.task(task.id)
    with pytest.raises(FedledgerError, match="still in round 0") as err:
        t.wait_for_round(1, timeout_s=0.3, poll_s=0.1)
    assert "fedledger serve" in str(err.value) and "0 update(s)" in str(err.value)


def test_the_verdict_of_a_round_not_final_is_none(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    t = alice.task(task.id)
    receipt = t.submit(own_loop(t.model(), loader(0)), num_samples=100)
    assert t.verdict(receipt) is None


# -- the local check, as the CLI's `submit FILE` meets it ----------------------------------


def _file(t: fedledger.Task, tensors: dict[str, np.ndarray], who: str) -> bytes:
    return codec.encode_update(
        tensors, task_id=t.id, round=t.round, base_hash=t.state.global_hash, contributor=who
    )


def _refused(
    session: fedledger.Session, t: fedledger.Task, data: bytes, who: LocalAccount
) -> FormatError:
    """Submit ``data`` through the flow `fedledger submit FILE` runs; it must be refused with
    no transaction sent and nothing stored."""
    before = nonce(session, who)
    with pytest.raises(FormatError) as err:
        flow_submit(session.ledger, session.store, t.state, data, 10)
    assert nonce(session, who) == before
    assert not session.store.has(compute_cid(data))
    return err.value


def test_an_update_file_with_a_wrong_shape_is_refused_as_shape_mismatch(
    alice: fedledger.Session, task: fedledger.Task, accounts: list[LocalAccount]
) -> None:
    t = alice.task(task.id)
    delta = {k: np.zeros_like(v) for k, v in t.global_tensors().items()}
    delta["net.2.weight"] = np.zeros((10, 15), dtype=np.float32)
    err = _refused(alice, t, _file(t, delta, accounts[ALICE].address), accounts[ALICE])
    assert "SHAPE_MISMATCH" in str(err) and "'net.2.weight'" in str(err)
    assert "task.model()" in str(err)


def test_an_update_file_with_a_missing_tensor_is_refused_naming_it(
    alice: fedledger.Session, task: fedledger.Task, accounts: list[LocalAccount]
) -> None:
    t = alice.task(task.id)
    delta = {k: np.zeros_like(v) for k, v in t.global_tensors().items() if k != "net.0.bias"}
    err = _refused(alice, t, _file(t, delta, accounts[ALICE].address), accounts[ALICE])
    assert "SHAPE_MISMATCH" in str(err) and "missing ['net.0.bias']" in str(err)


def test_an_update_file_holding_inf_is_refused_as_non_finite(
    alice: fedledger.Session, task: fedledger.Task, accounts: list[LocalAccount]
) -> None:
    t = alice.task(task.id)
    delta = {k: np.full_like(v, 1e-3) for k, v in t.global_tensors().items()}
    delta["net.0.weight"][3, 3] = np.inf
    delta["net.0.weight"][4, 4] = np.nan
    err = _refused(alice, t, _file(t, delta, accounts[ALICE].address), accounts[ALICE])
    assert "NON_FINITE" in str(err) and "2 NaN or Inf values, in net.0.weight (2)" in str(err)


def test_an_update_file_larger_than_validators_read_is_refused_unread(
    alice: fedledger.Session, task: fedledger.Task, accounts: list[LocalAccount]
) -> None:
    t = alice.task(task.id)
    delta = {k: np.zeros_like(v) for k, v in t.global_tensors().items()}
    delta["padding"] = np.zeros(1 << 19, dtype=np.float32)  # 2 MiB: over 2 x 4 B x size + 1 MiB
    err = _refused(alice, t, _file(t, delta, accounts[ALICE].address), accounts[ALICE])
    assert "MALFORMED" in str(err) and "more than the" in str(err) and "bytes" in str(err)


def test_a_file_that_is_not_an_update_says_so_and_what_to_submit(
    alice: fedledger.Session, task: fedledger.Task, accounts: list[LocalAccount]
) -> None:
    t = alice.task(task.id)
    for junk in (
        b"PK\x03\x04 a zip, not an update" * 10,
        codec.encode_model(t.global_tensors(), task_id=t.id, round=0),
    ):
        err = _refused(alice, t, junk, accounts[ALICE])
        assert "not a fedledger update file" in str(err) and "MALFORMED" in str(err)
        assert "task.submit" in str(err)


def test_an_update_file_for_another_task_is_refused_as_malformed(
    owner: fedledger.Session,
    alice: fedledger.Session,
    task: fedledger.Task,
    accounts: list[LocalAccount],
) -> None:
    t = alice.task(task.id)
    delta = {k: np.zeros_like(v) for k, v in t.global_tensors().items()}
    data = codec.encode_update(
        delta,
        task_id=t.id + 1000,
        round=0,
        base_hash=t.state.global_hash,
        contributor=accounts[ALICE].address,
    )
    err = _refused(alice, t, data, accounts[ALICE])
    assert f"task {t.id + 1000}" in str(err) and "MALFORMED" in str(err)


# -- gasless, through a relayer ------------------------------------------------------------


def test_a_relayed_update_counts_for_its_contributor_who_pays_no_gas(
    owner: fedledger.Session,
    task: fedledger.Task,
    accounts: list[LocalAccount],
    chain: Devnet,
    home: Path,
    tmp_path: Path,
) -> None:
    from fedledger_backend.relay_service import RelayPolicy

    bob = session_of(chain, home, accounts[BOB])
    before = nonce(bob, accounts[BOB])
    t = bob.task(task.id)
    policy = RelayPolicy(tasks=frozenset({task.id}))
    with relay_node(owner.ledger, owner.store, accounts[RELAYER], tmp_path, policy=policy) as node:
        receipt = t.submit(own_loop(t.model(), loader(1)), num_samples=80, relay=node.url)
        assert receipt.update_id is None and receipt.relay == node.url
        done = t.wait_relayed(receipt, timeout_s=30, poll_s=0.1)
        assert t.relay_status(receipt).state == "submitted"
    (rec,) = [r for r in bob.ledger.update_records(task.id) if r.update_id == done.update_id]
    assert rec.contributor == accounts[BOB].address
    assert rec.cid == receipt.cid
    assert nonce(bob, accounts[BOB]) == before


def test_a_relayer_that_is_down_is_named_with_what_to_do(
    alice: fedledger.Session, task: fedledger.Task
) -> None:
    from fedledger.chain.devnet import free_port

    t = alice.task(task.id)
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(FedledgerError, match=f"relay {down} did not answer") as err:
        t.submit(t.model(), num_samples=10, relay=down)
    assert "--relay-key" in str(err.value)


def test_a_task_whose_model_does_not_take_its_data_set_is_refused_before_anything_is_sent(
    owner: fedledger.Session,
) -> None:
    """A 64-input MLP on breast_cancer (30 features): no contributor could train it."""
    before = owner.ledger.task_count()
    nonce = owner.ledger.w3.eth.get_transaction_count(owner.address)
    with pytest.raises(ConfigError, match="30 features") as err:
        owner.create_task(TaskSpec(model=MLP, dataset="breast_cancer"), max_samples=100)
    assert "64" in str(err.value) or "inputs" in str(err.value)
    assert owner.ledger.task_count() == before
    assert owner.ledger.w3.eth.get_transaction_count(owner.address) == nonce


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"[" * 200_000, "answer from relay"),  # nested past any parser's stack
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"state": "submitted"}', "malformed status"),
        (b"x" * (2 << 20), "answer from relay"),  # larger than a status ever is
    ],
)
def test_a_hostile_relayers_answer_is_a_clear_error_never_a_crash(answer: bytes, says: str) -> None:
    """The relayer is another party: whatever it answers, the SDK raises one of its errors."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from fedledger.flows import relay_client

    class Hostile(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(FormatError, match=says):
            relay_client.status(url, "0x" + "11" * 20, 1, 0)
    finally:
        server.shutdown()
