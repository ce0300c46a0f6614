"""The Flower integration as a Flower user meets it: ``examples/flower_app`` run with ``flwr run``
on Flower's simulation engine (Ray backend), against a real anvil, the real contract, the
embedded store, and ``fedledger serve`` (validator and relayer) on loopback.

The SuperLink is started here, on a free port, with runtime dependency installation off (the
app runs in this environment, where fedledger is installed), and ``flwr run`` reaches it
through a Flower configuration in a temporary ``FLWR_HOME``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

import fedledger
from fedledger.chain.devnet import Devnet, dev_private_keys, free_port, start_anvil
from fedledger.chain.keys import DEV_SCRYPT_N, new_key
from fedledger.flows.task import model_for_round
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec, TrainingParams

pytest.importorskip("flwr")

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "flower_app"
sys.path.insert(0, str(APP))
from fedledger_flower_app.task import MODEL  # noqa: E402

PASSWORD = "flower test password"
CLIENTS = 3
OWNER, VALIDATOR, RELAYER = 0, 1, 2
BIN = Path(sys.executable).parent


@dataclass
class Node:
    """Everything a Flower user has running: the chain, `fedledger serve`, a SuperLink."""

    chain: Devnet
    home: Path
    env: dict[str, str]
    api: str
    owner: fedledger.Session
    clients: list[LocalAccount]
    validator: LocalAccount
    logs: Path

    def task(self, rounds: int) -> int:
        spec = TaskSpec(
            model=MODEL,
            dataset="digits",
            training=TrainingParams(lr=0.05),
            aggregation={"rule": "fedavg"},
            fetch_timeout_s=10,
        )
        t = self.owner.create_task(spec, max_samples=1000, min_updates=CLIENTS, max_updates=CLIENTS)
        self.owner.admit(
            t.id,
            contributors=[c.address for c in self.clients],
            validators=[self.validator.address],
        )
        return t.id

    def flwr_run(self, tmp: Path, **config: Any) -> dict[str, Any]:
        """``flwr run examples/flower_app`` with ``config`` over its run config; the ServerApp's
        result file."""
        result = tmp / "result.json"
        config["result-file"] = str(result)
        pairs = " ".join(
            f"{k}={json.dumps(v) if isinstance(v, str) else str(v).lower()}"
            for k, v in config.items()
        )
        cmd = [
            str(BIN / "flwr"), "run", str(APP), "sim", "--stream",
            "--federation-config", f"num-supernodes={CLIENTS}",
            "--run-config", pairs,
        ]  # fmt: skip
        done = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=300, cwd=tmp
        )
        assert result.exists(), (
            f"{shlex.join(cmd)} wrote no result ({done.returncode}):\n{done.stdout[-6000:]}\n"
            f"{done.stderr[-3000:]}\nserve: {(self.logs / 'serve.log').read_text()[-3000:]}"
        )
        return dict(json.loads(result.read_text()))


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not answer {url} within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    work = tmp_path_factory.mktemp("flower")
    home, flwr_home, logs = work / "home", work / "flwr", work / "logs"
    logs.mkdir()
    keys = dev_private_keys(3 + CLIENTS)
    accounts = [Account.from_key(k) for k in keys]
    with start_anvil(accounts=3 + CLIENTS) as chain:
        for i in range(CLIENTS):
            new_key(home / "keystore", f"client-{i}", PASSWORD, private_key=keys[3 + i],
                    scrypt_n=DEV_SCRYPT_N)  # fmt: skip
        for name, i in (("val", VALIDATOR), ("relayer", RELAYER)):
            new_key(home / "keystore", name, PASSWORD, private_key=keys[i], scrypt_n=DEV_SCRYPT_N)
        owner = fedledger.deploy(account=accounts[OWNER], rpc_url=chain.url, home=home)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDLEDGER_", "FLWR_"))}
        env.update(
            FEDLEDGER_HOME=str(home),
            FEDLEDGER_RPC_URL=chain.url,
            FEDLEDGER_PASSWORD=PASSWORD,
            FLWR_HOME=str(flwr_home),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        port, link = free_port(), free_port()
        flwr_home.mkdir()
        (flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\n'
            f'address = "127.0.0.1:{link}"\ninsecure = true\n'
        )
        with open(logs / "serve.log", "wb") as serve_log, open(logs / "link.log", "wb") as ll:
            serve = subprocess.Popen(
                [str(BIN / "fedledger"), "serve", "--key", "val", "--relay-key", "relayer",
                 "--port", str(port), "--no-eval-dataset"],
                env=env, stdin=subprocess.DEVNULL, stdout=serve_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            superlink = subprocess.Popen(
                [str(BIN / "flower-superlink"), "--insecure", "--simulation",
                 "--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(link),
                 "--disable-runtime-dependency-installation"],
                env=env, stdin=subprocess.DEVNULL, stdout=ll, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{port}"
            _wait_http(f"{api}/health", serve, "fedledger serve")
            _wait_http(f"http://127.0.0.1:{link}/health", superlink, "flower-superlink")
            yield Node(
                chain,
                home,
                env,
                api,
                owner,
                accounts[3:],
                accounts[VALIDATOR],
                logs,
            )
        finally:
            _stop(superlink)
            _stop(serve)


def _tensor_digests(tensors: dict[str, Any]) -> dict[str, str]:
    return {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in tensors.items()}


def test_in_ledger_mode_every_round_is_recorded_and_the_next_global_is_the_attested_aggregate(
    node: Node, tmp_path: Path
) -> None:
    """Relayed (the clients pay no gas); the Flower result is the last attested aggregate."""
    rounds = 2
    task_id = node.task(rounds)
    w3 = node.owner.ledger.w3
    nonces = [w3.eth.get_transaction_count(c.address) for c in node.clients]
    out = node.flwr_run(
        tmp_path,
        **{
            "fedledger-task-id": task_id,
            "fedledger-mode": "ledger",
            "fedledger-relay": node.api,
            "num-server-rounds": rounds,
        },
    )
    led, store = node.owner.ledger, node.owner.store
    assert led.current_round(task_id) == rounds
    recs = list(led.update_records(task_id))
    assert len(recs) == CLIENTS * rounds
    want = sorted(c.address for c in node.clients)
    for r in range(rounds):
        assert sorted(x.contributor for x in recs if x.round == r) == want
    assert [w3.eth.get_transaction_count(c.address) for c in node.clients] == nonces

    # each client's reply named its update: the ids the chain gave them, all ACCEPTED
    for r, rnd in enumerate(out["rounds"]):
        assert rnd["ledger_round"] == r
        ids = sorted(v["update_id"] for v in rnd["verdicts"])
        assert ids == sorted(x.update_id for x in recs if x.round == r)
        assert {v["verdict"] for v in rnd["verdicts"]} == {"ACCEPTED"}
        assert [v["reported_id"] for v in rnd["verdicts"]] == [
            v["update_id"] for v in rnd["verdicts"]
        ]
        assert out["train_metrics"][str(r + 1)]["fedledger-accepted"] == CLIENTS

    # Flower's final global model is the aggregate attested for the last round, hash checked
    final = model_for_round(led, store, task_id, rounds)
    assert codec.sha256_hex(final.data) == final.content_hash == out["rounds"][-1]["aggregate_hash"]
    attested = codec.decode(final.data, kind="model").tensors
    assert out["final_arrays_sha256"] == _tensor_digests(attested)
    assert node.owner.verify(task_id).ok


def test_in_record_mode_flower_aggregates_and_the_ledger_records_and_screens(
    node: Node, tmp_path: Path
) -> None:
    """Submitted directly (each client pays its gas); the update ids come back in the fit
    metrics; Flower's FedAvg makes the global model, the ledger judges every update."""
    task_id = node.task(1)
    out = node.flwr_run(
        tmp_path,
        **{"fedledger-task-id": task_id, "fedledger-mode": "record", "num-server-rounds": 1},
    )
    led = node.owner.ledger
    recs = {x.update_id: x for x in led.update_records(task_id)}
    assert len(recs) == CLIENTS and led.current_round(task_id) == 1
    (rnd,) = out["rounds"]
    for v in rnd["verdicts"]:
        assert v["verdict"] == "ACCEPTED"
        assert recs[v["update_id"]].contributor == v["contributor"]
        assert recs[v["update_id"]].cid == v["cid"]
        assert v["reported_id"] == v["update_id"]  # the client's fit metrics named it
    metrics = out["train_metrics"]["1"]
    assert metrics["fedledger-accepted"] == CLIENTS
    assert "fedledger-update-id" not in metrics  # not averaged into Flower's metrics
    assert {metrics[f"fedledger-verdict-{uid}"] for uid in recs} == {0}  # Verdict.ACCEPTED
    attested = model_for_round(led, node.owner.store, task_id, 1)
    assert set(out["final_arrays_sha256"]) == set(codec.decode(attested.data, kind="model").tensors)
