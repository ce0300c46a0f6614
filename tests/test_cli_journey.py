"""The new user's journey through the ``fedledger`` CLI (issue #15), end to end: a real anvil,
the real contract, the embedded store and a validator run by ``fedledger serve``; every
command a subprocess, as in ``tests/test_cli.py`` (whose helpers this module uses).

Two tasks are created once per module: task 1 (a 64-1024-10 MLP given as a description, so its
model file spans several blocks; the median rule; two contributors, both needed to close a
round) validated by ``fedledger serve --key val``; and task 2 (one update per round, no
validator) whose round fills up.  The tests read tasks (``task list | show``), pull global
models (``model pull``), train several rounds (``train --rounds``), move content between stores
(``store export | import``) and try the mistakes a new user makes: each must be one ``error: …``
line with what to do, a non-zero exit code and no traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from test_cli import Cli, _fedledger, assert_one_line_error, wait_for
from web3 import Web3

from fedledger.chain.devnet import Devnet, free_port, start_anvil
from fedledger.chain.ledger import Ledger, open_ledger, to_hex
from fedledger.content.cid import compute_cid
from fedledger.content.store import ContentStore, open_store
from fedledger.flows.contribute import ContributorOptions, make_update
from fedledger.flows.local_data import partition_share
from fedledger.protocol import codec

REPO = Path(__file__).resolve().parents[1]
IPFS_CAR = REPO / "node_modules" / ".bin" / "ipfs-car"
KEYS = {"owner": 0, "alice": 1, "bob": 2, "val": 3, "idle": 4, "carol": 5}
WIDE = {"kind": "mlp", "in_features": 64, "hidden": [1024], "out_features": 10}
WIDE_LABEL = "mlp 64-1024-10 (76,810 parameters)"
WIDE_SHAPES = {
    "net.0.weight": (1024, 64),
    "net.0.bias": (1024,),
    "net.2.weight": (10, 1024),
    "net.2.bias": (10,),
}
ROUNDS = 2
TRAINED_LINE = re.compile(
    r"^trained on (\d+) samples \(local loss ([0-9.]+), accuracy ([0-9.]+)% on your data\); "
    r"update (\d+) recorded for task 1 round (\d+)$"
)


@pytest.fixture(scope="module")
def chain() -> Iterator[Devnet]:
    with start_anvil(accounts=len(KEYS)) as dn:
        yield dn


@pytest.fixture(scope="module")
def cli(chain: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(home=tmp_path_factory.mktemp("journey") / "home", rpc_url=chain.url)


@pytest.fixture(scope="module")
def keys(cli: Cli) -> dict[str, str]:
    made = cli.json_all([["keys", "new", n, "--dev-index", str(i)] for n, i in KEYS.items()])
    return {k["name"]: k["address"] for k in made}


@pytest.fixture(scope="module")
def ledger(chain: Devnet, cli: Cli, keys: dict[str, str]) -> Ledger:
    """The SDK's read-only view of the contract `fedledger deploy` put on the chain."""
    cli.ok("deploy", "--key", "owner")
    return open_ledger(chain.url, None, cli.home / "deployments")


@pytest.fixture(scope="module")
def tasks(cli: Cli, keys: dict[str, str], ledger: Ledger) -> tuple[int, int]:
    """Task 1 (validated by val; alice, bob and carol may contribute; two updates close a
    round) and task 2 (alice and bob; one update fills a round; no validator)."""
    journey = cli.json(
        "task", "create", "--key", "owner", "--model", json.dumps(WIDE), "--dataset", "digits",
        "--rule", "median", "--min-updates", "2", "--max-updates", "2", "--max-samples", "500",
    )  # fmt: skip
    full = cli.json(
        "task", "create", "--key", "owner", "--max-updates", "1", "--max-samples", "1000"
    )
    assert (journey["task_id"], full["task_id"]) == (1, 2)
    owner = ("--key", "owner")
    cli.ok("task", "add-contributor", "1", keys["alice"], keys["bob"], keys["carol"], *owner)
    cli.ok("task", "add-validator", "1", keys["val"], *owner)
    cli.ok("task", "add-contributor", "2", keys["alice"], keys["bob"], *owner)
    assert ledger.task_count() == 2
    return 1, 2


@pytest.fixture(scope="module")
def store(cli: Cli) -> ContentStore:
    return open_store(None, cli.home)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _start_serve(cli: Cli, key: str, log: Path, **env: str) -> Server:
    port = free_port()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [*_fedledger(), "serve", "--key", key, "--port", str(port), "--no-eval-dataset"],
            env=cli.env(**env),
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", proc, log)


def _wait_up(server: Server) -> None:
    def up() -> bool:
        assert server.proc.poll() is None, server.log.read_text()
        try:
            return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the API to answer /health", up)


def _stop(server: Server, cli: Cli) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    cli.transcript.append(server.log.read_text(errors="replace"))


@pytest.fixture(scope="module")
def validator(cli: Cli, tasks: tuple[int, int]) -> Iterator[Server]:
    """`fedledger serve --key val` in the background for the whole module."""
    server = _start_serve(cli, "val", cli.home.parent / "serve-val.log")
    try:
        _wait_up(server)
        yield server
    finally:
        _stop(server, cli)


@dataclass(frozen=True)
class Trained:
    alice: subprocess.CompletedProcess[str]
    bob: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def trained(cli: Cli, tasks: tuple[int, int], validator: Server, ledger: Ledger) -> Trained:
    """alice and bob each run `train --rounds 2` at once on task 1 (alice's table output, bob's
    JSON lines); round 0 closes only with both, so each waits for it before round 1."""
    alice, bob = cli.run_all(
        [
            ["train", "--task", "1", "--key", "alice", "--partition", "0/2", "--alpha", "0",
             "--rounds", str(ROUNDS), "--device", "cpu", "--round-timeout", "120"],
            ["train", "--task", "1", "--key", "bob", "--partition", "1/2", "--alpha", "0",
             "--rounds", str(ROUNDS), "--round-timeout", "120", "--json"],
        ]
    )  # fmt: skip
    for r in (alice, bob):
        assert r.returncode == 0, f"{r.args}:\n{r.stdout}\n{r.stderr}"
    wait_for(f"round {ROUNDS - 1} to be final", lambda: ledger.current_round(1) >= ROUNDS)
    return Trained(alice, bob)


def _nonce(ledger: Ledger, address: str) -> int:
    return int(ledger.w3.eth.get_transaction_count(Web3.to_checksum_address(address)))


# -- task list | show ----------------------------------------------------------------------------


def test_task_list_json_shows_each_task_newest_first(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger
) -> None:
    listed = cli.json("task", "list")
    assert [t["task_id"] for t in listed] == [2, 1]
    full, journey = listed
    on_chain = ledger.get_task(1)
    assert journey["model"] == WIDE_LABEL
    assert (journey["dataset"], journey["rule"]) == ("digits", "median")
    assert journey["current_round"] == ledger.current_round(1)
    assert (journey["min_updates"], journey["max_updates"]) == (2, 2)
    assert (journey["max_samples"], journey["quorum"], journey["open"]) == (500, 1, False)
    assert journey["model_hash"] == to_hex(on_chain["modelHash"])
    assert journey["model_cid"] == on_chain["modelCid"]
    assert journey["spec_error"] is None
    assert full["model"] == "mlp_digits: mlp 64-64-10 (4,810 parameters)"
    assert (full["rule"], full["min_updates"], full["max_updates"]) == ("fedavg", 1, 1)
    assert full["max_samples"] == 1000
    assert cli.json("task", "list", "--limit", "1") == [full]


def test_task_list_table_shows_every_value_whole_when_piped(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger
) -> None:
    """Printed to a pipe (no terminal to fit), no cell is cut short with '…'."""
    out = cli.ok("task", "list").stdout
    assert "…" not in out, out
    rows = {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := [c.strip() for c in line.strip("│ ").split("│")])[0].isdigit()
    }
    assert set(rows) == {"1", "2"}, out
    rnd = ledger.current_round(1)
    assert rows["1"] == [
        "1", WIDE_LABEL, "digits", "median", str(rnd), f"{ledger.get_task(1)['updateCount']}/2 "
        "(closes at 2)", "no", "1", "500", "no",
    ]  # fmt: skip


def test_task_show_json_matches_the_list_and_the_table(cli: Cli, tasks: tuple[int, int]) -> None:
    shown = cli.json("task", "show", "1")
    (listed,) = [t for t in cli.json("task", "list") if t["task_id"] == 1]
    assert shown == listed
    table = cli.ok("task", "show", "1").stdout
    assert "…" not in table, table
    fields = {
        parts[0]: parts[1]
        for line in table.splitlines()
        if len(parts := [c.strip() for c in line.strip("│ ").split("│")]) == 2
    }
    for name in ("model", "dataset", "rule", "current_round", "min_updates", "max_updates",
                 "max_samples", "quorum", "model_cid", "model_hash", "spec_cid"):  # fmt: skip
        assert fields[name] == str(shown[name]), (name, table)


def test_task_show_of_an_unknown_task_says_how_to_list_them(
    cli: Cli, tasks: tuple[int, int]
) -> None:
    r = cli.run("task", "show", "99")
    assert_one_line_error(r, "task 99 does not exist", "fedledger task list", code=3)


# -- model pull ----------------------------------------------------------------------------------


def _pull(cli: Cli, path: Path, *args: str) -> dict[str, Any]:
    return dict(cli.json("model", "pull", "--task", "1", *args, "-o", str(path)))


def test_model_pull_writes_the_initial_model_the_chain_commits_to(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "round0.safetensors"
    got = _pull(cli, path, "--round", "0")
    data = path.read_bytes()
    on_chain = ledger.get_task(1)
    assert "0x" + hashlib.sha256(data).hexdigest() == to_hex(on_chain["modelHash"])
    assert got["content_hash"] == to_hex(on_chain["modelHash"])
    assert compute_cid(data) == got["cid"] == on_chain["modelCid"]
    assert got["bytes"] == len(data) and got["round"] == 0
    # The official safetensors library reads it: the task's architecture, float32.
    tensors = load_file(str(path))
    assert {k: v.shape for k, v in tensors.items()} == WIDE_SHAPES
    assert all(v.dtype == np.float32 for v in tensors.values())
    with safe_open(str(path), "numpy") as f:
        assert f.metadata()[codec.K_KIND] == "model"


def test_model_pull_of_a_later_round_is_the_aggregate_attested_before_it(
    cli: Cli, trained: Trained, ledger: Ledger, tmp_path: Path
) -> None:
    finals = {
        int(e["args"]["round"]): ledger.finalized_args(e)
        for e in ledger.events("RoundFinalized", task_id=1)
    }
    pulled = {}
    for rnd in range(ROUNDS + 1):
        path = tmp_path / f"round{rnd}.safetensors"
        got = _pull(cli, path, "--round", str(rnd))
        digest = "0x" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert got["content_hash"] == digest
        if rnd > 0:
            assert digest == to_hex(finals[rnd - 1]["aggregateHash"]), rnd
        pulled[rnd] = load_file(str(path))
    current = tmp_path / "current.safetensors"
    got = _pull(cli, current)  # no --round: the round the task is in
    assert got["round"] == ledger.current_round(1) == ROUNDS
    assert current.read_bytes() == (tmp_path / f"round{ROUNDS}.safetensors").read_bytes()
    # Training moved the weights: each round's model differs from the one before.
    for rnd in range(1, ROUNDS + 1):
        before, after = pulled[rnd - 1]["net.0.weight"], pulled[rnd]["net.0.weight"]
        assert not np.array_equal(before, after), rnd


def test_model_pull_of_a_round_not_reached_says_which_round_there_is(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "future.safetensors"
    r = cli.run("model", "pull", "--task", "1", "--round", "99", "-o", str(path))
    now = ledger.current_round(1)
    assert_one_line_error(r, "no global model for round 99", f"in round {now}", code=3)
    assert not path.exists() and not list(tmp_path.iterdir())  # no partial file left


# -- train --rounds ------------------------------------------------------------------------------


def test_train_rounds_trains_each_round_and_prints_local_loss_and_accuracy(
    trained: Trained, ledger: Ledger, keys: dict[str, str]
) -> None:
    events = {r.update_id: r for r in ledger.update_records(1)}
    # alice: one sentence per round, on one line each.
    lines = trained.alice.stdout.strip().splitlines()
    assert len(lines) == ROUNDS, trained.alice.stdout
    for rnd, line in enumerate(lines):
        m = TRAINED_LINE.match(line)
        assert m, line
        samples, loss, acc, uid, got_round = m.groups()
        assert int(got_round) == rnd
        assert 0.0 < float(loss) < 10 and 0.0 <= float(acc) <= 100
        ev = events[int(uid)]
        assert (ev.contributor, ev.round, ev.num_samples) == (
            keys["alice"], rnd, int(samples),
        )  # fmt: skip
    # bob: one JSON object per line per round.
    rows = [json.loads(line) for line in trained.bob.stdout.strip().splitlines()]
    assert [r["round"] for r in rows] == list(range(ROUNDS))
    for r in rows:
        assert 0.0 <= r["local_accuracy"] <= 1.0
        assert math.isfinite(r["local_loss"]) and r["local_loss"] > 0
        assert math.isfinite(r["train_loss"])
        ev = events[r["update_id"]]
        assert (ev.contributor, ev.round) == (keys["bob"], r["round"])
        assert ev.content_hash == r["content_hash"] and ev.cid == r["cid"]


def test_train_rounds_waits_for_each_round_to_be_final_before_training_it(
    trained: Trained, ledger: Ledger
) -> None:
    """Every round-r update landed after round r-1 was finalised on chain."""
    final_block = {
        int(e["args"]["round"]): int(e["blockNumber"])
        for e in ledger.events("RoundFinalized", task_id=1)
    }
    submitted = list(ledger.update_records(1))
    assert sorted(r.round for r in submitted) == [0, 0, 1, 1]
    for r in submitted:
        if r.round > 0:
            assert r.block_number > final_block[r.round - 1], (r.round, final_block)


@pytest.mark.parametrize(
    ("device", "fragments"),
    [
        ("gpu", ["unknown device 'gpu'", "use cpu, cuda, cuda:N or mps"]),
        ("cuda:7", ["device 'cuda:7' is not available", "--device cpu"]),
    ],
    ids=["unknown", "absent"],
)
def test_train_on_a_device_this_machine_lacks_says_what_to_use(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, keys: dict[str, str],
    device: str, fragments: list[str],
) -> None:  # fmt: skip
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    nonce = _nonce(ledger, keys["carol"])
    r = cli.run("train", "--task", "1", "--key", "carol", "--partition", "0/2", "--device", device)
    assert_one_line_error(r, *fragments, code=2)
    assert _nonce(ledger, keys["carol"]) == nonce


# -- store export | import -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """The initial model of task 1 (several blocks: over 256 KiB) exported as a CAR file."""
    cid = str(ledger.get_task(1)["modelCid"])
    car = tmp_path_factory.mktemp("car") / "model.car"
    got = cli.json("store", "export", cid, "-o", str(car))
    assert got == {"cid": cid, "bytes": car.stat().st_size, "path": str(car)}
    return cid, car


def test_store_export_then_import_into_a_fresh_home_moves_the_same_bytes(
    cli: Cli, exported: tuple[str, Path], store: ContentStore, ledger: Ledger, tmp_path: Path
) -> None:
    cid, car = exported
    original = store.get(cid)
    assert len(original) > 256 * 1024  # more than one block: the DAG, not one raw block
    fresh = tmp_path / "fresh-home"
    assert not open_store(None, fresh).has(cid)
    got = cli.json("store", "import", str(car), FEDLEDGER_HOME=str(fresh))
    assert got["roots"] == [cid]
    assert got["blocks"] == got["checked_blocks"] >= 3  # two leaves and their root at least
    there = open_store(None, fresh)
    assert there.has(cid) and cid in there.pins()
    data = there.get(cid)
    assert data == original and compute_cid(data) == cid
    assert "0x" + hashlib.sha256(data).hexdigest() == to_hex(ledger.get_task(1)["modelHash"])
    # Exported again from the fresh home, the CAR file is the same bytes.
    again = tmp_path / "again.car"
    cli.ok("store", "export", cid, "-o", str(again), FEDLEDGER_HOME=str(fresh))
    assert again.read_bytes() == car.read_bytes()


def test_store_import_of_a_truncated_car_adds_nothing(
    cli: Cli, exported: tuple[str, Path], tmp_path: Path
) -> None:
    cid, car = exported
    cut = tmp_path / "cut.car"
    cut.write_bytes(car.read_bytes()[: car.stat().st_size // 2])
    fresh = tmp_path / "fresh-home"
    r = cli.run("store", "import", str(cut), FEDLEDGER_HOME=str(fresh))
    assert_one_line_error(r, "not a valid CAR v1 file", "export it again", code=5)
    assert not open_store(None, fresh).has(cid)


@pytest.mark.skipif(not IPFS_CAR.exists(), reason="ipfs-car is not in node_modules/.bin")
def test_exported_car_reads_in_ipfs_car(
    exported: tuple[str, Path], store: ContentStore, tmp_path: Path
) -> None:
    """Interop: the JavaScript ipfs-car lists the same root and unpacks the same bytes."""
    cid, car = exported
    roots = subprocess.run(
        [str(IPFS_CAR), "roots", str(car)], capture_output=True, text=True, check=True, timeout=60
    )
    assert roots.stdout.split() == [cid]
    out = tmp_path / "unpacked"
    subprocess.run(
        [str(IPFS_CAR), "unpack", str(car), "--output", str(out)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.read_bytes() == store.get(cid)


# -- a new user's mistakes -----------------------------------------------------------------------


def test_training_data_with_the_wrong_feature_count_says_the_counts(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, keys: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "thirty.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X=rng.normal(size=(40, 30)).astype(np.float32), y=rng.integers(0, 10, 40))
    nonce = _nonce(ledger, keys["carol"])
    r = cli.run("train", "--task", "1", "--key", "carol", "--data", str(data))
    line = assert_one_line_error(
        r, "30 features per sample", "takes 64 features per sample", "X of shape (n, 64)", code=2
    )
    assert "mat1" not in line and "torch" not in line, line
    assert _nonce(ledger, keys["carol"]) == nonce


def _png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\xff\x00\x00" * 2 + b"\x00" + b"\x00\xff\x00" * 2)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _npz() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, X=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    return buf.getvalue()


NOT_UPDATES = {
    "png": (_png(), ["it is a PNG image", "fedledger train"]),
    "random": (
        np.random.default_rng(7).bytes(4096),
        ["not a safetensors header", "fedledger train"],
    ),
    "npz": (_npz(), ["zip archive", ".npz"]),
    "signed-json": (json.dumps({"signature": "0x00"}).encode(), ["JSON", "fedledger relay"]),
}


@pytest.mark.parametrize("kind", list(NOT_UPDATES))
def test_submitting_a_file_that_is_not_an_update_says_so(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, keys: dict[str, str], tmp_path: Path,
    kind: str,
) -> None:  # fmt: skip
    content, fragments = NOT_UPDATES[kind]
    path = tmp_path / f"upload.{kind}"
    path.write_bytes(content)
    nonce = _nonce(ledger, keys["carol"])
    r = cli.run("submit", str(path), "--task", "1", "--samples", "10", "--key", "carol")
    line = assert_one_line_error(r, f"{path} is not an update file", *fragments, code=5)
    assert "header length" not in line and not re.search(r"\d{12,}", line), line
    assert _nonce(ledger, keys["carol"]) == nonce


def test_task_create_with_a_misspelt_data_set_is_refused_before_anything_is_sent(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, keys: dict[str, str], store: ContentStore
) -> None:
    count, nonce, pins = ledger.task_count(), _nonce(ledger, keys["owner"]), set(store.pins())
    r = cli.run(
        "task", "create", "--key", "owner", "--dataset", "digts", "--max-samples", "100",
        FEDLEDGER_PASSWORD="not even the password",  # refused before the key is unlocked
    )  # fmt: skip
    assert_one_line_error(
        r, "unknown data set 'digts'", "did you mean 'digits'?", "breast_cancer", code=2
    )
    assert ledger.task_count() == count and _nonce(ledger, keys["owner"]) == nonce
    assert set(store.pins()) == pins  # no initial model or spec published either


def test_serve_with_a_key_that_validates_no_task_warns_and_keeps_serving(
    cli: Cli, tasks: tuple[int, int], validator: Server, keys: dict[str, str], tmp_path: Path
) -> None:
    idle = _start_serve(
        cli, "idle", tmp_path / "serve-idle.log", FEDLEDGER_DB=f"sqlite:///{tmp_path / 'idle.db'}"
    )
    try:
        _wait_up(idle)
        log = idle.log.read_text()
        warnings = [line for line in log.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 1, log
        (warning,) = warnings
        assert f"key idle ({keys['idle']}) validates none of the 2 task(s)" in warning
        assert f"fedledger task add-validator ID {keys['idle']}" in warning
        assert idle.proc.poll() is None  # a warning, not an error: it indexes and serves
    finally:
        _stop(idle, cli)
    # The key that validates task 1 gets no such warning.
    assert "validates no" not in validator.log.read_text()
    assert not any(ln.startswith("warning: ") for ln in validator.log.read_text().splitlines())


def test_a_round_that_fills_up_says_to_wait_for_its_validators(
    cli: Cli, tasks: tuple[int, int], ledger: Ledger, store: ContentStore,
    keys: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    """Task 2 takes one update per round. alice and bob each check that round 0 takes theirs,
    then send it: the chain mines both in one block and refuses the second (RoundFull). Then
    a third try is refused before anything is sent."""
    files = {}
    for i, name in enumerate(("alice", "bob")):
        work = make_update(
            ledger, store, 2, partition_share("digits", i, 4, 0.0, 0),
            ContributorOptions(seed=i), contributor=keys[name],
        )  # fmt: skip
        files[name] = (tmp_path / f"{name}.safetensors", work.num_samples)
        files[name][0].write_bytes(work.data)

    def submit(name: str) -> subprocess.Popen[str]:
        path, samples = files[name]
        return subprocess.Popen(
            [*_fedledger(), "submit", str(path), "--task", "2", "--samples", str(samples),
             "--key", name],
            env=cli.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def pending(name: str) -> bool:
        who = keys[name]
        eth = ledger.w3.eth
        return eth.get_transaction_count(who, "pending") > eth.get_transaction_count(who)

    procs: dict[str, subprocess.Popen[str]] = {}
    rpc = ledger.w3.provider
    rpc.make_request("evm_setAutomine", [False])
    try:
        for name in ("alice", "bob"):
            procs[name] = proc = submit(name)
            wait_for(
                f"{name}'s submitUpdate", lambda n=name, p=proc: pending(n) or p.poll() is not None
            )
    finally:
        rpc.make_request("evm_setAutomine", [True])
        rpc.make_request("evm_mine", [])
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        cli.transcript += [out, err]
    ok = [n for n, r in done.items() if r.returncode == 0]
    assert len(ok) == 1, {n: (r.returncode, r.stderr) for n, r in done.items()}
    (loser,) = set(done) - set(ok)
    assert_one_line_error(
        done[loser], "RoundFull", "wait for its validators", "fedledger serve", code=6
    )
    t = ledger.get_task(2)
    assert (int(t["currentRound"]), int(t["updateCount"])) == (0, 1)

    # Tried again, the full round is refused before anything is sent.
    nonce = _nonce(ledger, keys[loser])
    path, samples = files[loser]
    r = cli.run("submit", str(path), "--task", "2", "--samples", str(samples), "--key", loser)
    assert_one_line_error(
        r, "task 2 round 0 is full", "1 of 1 updates", "wait for its validators", "fedledger serve"
    )
    assert _nonce(ledger, keys[loser]) == nonce


def test_no_command_printed_a_traceback(cli: Cli, trained: Trained) -> None:
    printed = "\n".join(cli.transcript)
    assert printed and "Traceback" not in printed
