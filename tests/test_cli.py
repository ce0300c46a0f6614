"""The ``fedledger`` CLI end to end, as a user types it: a real anvil, the real contract, the
embedded store, a validator run by ``fedledger serve``; every command a subprocess with its
settings in the environment and no stdin.

One task is played through once per module (keys → deploy → task → two trainers, a submitted
file, a relayed signature → a validator finalises round 0); the tests then read what it left
and try bad input against it.  Bad input must be one ``error: …`` line on stderr with a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import Web3

from fedledger import __version__
from fedledger.chain import artifacts as contracts
from fedledger.chain.devnet import Devnet, dev_private_keys, free_port, start_anvil
from fedledger.chain.ledger import Ledger, as_chain_error, open_ledger
from fedledger.content.blockstore import Blockstore
from fedledger.content.cid import compute_cid, parse_cid
from fedledger.content.store import ContentStore, open_store
from fedledger.errors import ChainError
from fedledger.flows.contribute import ContributorOptions, make_update
from fedledger.flows.local_data import partition_share
from fedledger.protocol import codec

PASSWORD = "correct horse battery staple"
DEV_INDEX = {"owner": 0, "alice": 1, "bob": 2, "carol": 3, "dave": 4, "relayer": 5, "val": 6}
CONTRIBUTORS = ("alice", "bob", "carol", "dave")
N_PARTS = 4
DEV_BALANCE = Web3.to_wei(10_000, "ether")  # anvil's opening balance for each dev account


def _fedledger() -> list[str]:
    script = Path(sys.executable).with_name("fedledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedledger.cli.main"]


@dataclass
class Cli:
    """Runs ``fedledger`` like a user's shell would, and keeps everything it printed."""

    home: Path
    rpc_url: str
    transcript: list[str] = field(default_factory=list)

    def env(self, **changes: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
        env.update(
            FEDLEDGER_HOME=str(self.home),
            FEDLEDGER_RPC_URL=self.rpc_url,
            FEDLEDGER_PASSWORD=PASSWORD,
        )
        env.update(changes)
        return env

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run_all([list(args)], **env)[0]

    def run_all(
        self, commands: list[list[str]], **env: str
    ) -> list[subprocess.CompletedProcess[str]]:
        """Several commands at once, as several users would (they must not depend on each other)."""
        with ExitStack() as files:
            running = []
            for args in commands:
                # Files, not pipes: a chatty command cannot block while its sibling is awaited.
                out = files.enter_context(tempfile.TemporaryFile("w+"))
                err = files.enter_context(tempfile.TemporaryFile("w+"))
                proc = subprocess.Popen(
                    [*_fedledger(), *args],
                    env=self.env(**env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    text=True,
                )
                running.append((args, proc, out, err))
            done = []
            for args, proc, out, err in running:
                proc.wait(timeout=180)
                out.seek(0)
                err.seek(0)
                stdout, stderr = out.read(), err.read()
                self.transcript += [stdout, stderr]
                done.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
        return done

    def ok(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.ok_all([list(args)], **env)[0]

    def ok_all(
        self, commands: list[list[str]], **env: str
    ) -> list[subprocess.CompletedProcess[str]]:
        done = self.run_all(commands, **env)
        for r in done:
            assert r.returncode == 0, (
                f"fedledger {' '.join(r.args)} failed:\n{r.stdout}\n{r.stderr}"
            )
        return done

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "--json", **env).stdout)

    def json_all(self, commands: list[list[str]], **env: str) -> list[Any]:
        return [
            json.loads(r.stdout) for r in self.ok_all([[*c, "--json"] for c in commands], **env)
        ]


def assert_one_line_error(
    r: subprocess.CompletedProcess[str], *fragments: str, code: int | None = None
) -> str:
    """A non-zero exit with exactly one ``error: …`` line on stderr holding every fragment."""
    assert r.returncode != 0, r.stdout
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- the task, played once per module ----------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> Iterator[Devnet]:
    with start_anvil(accounts=10) as dn:
        yield dn


@pytest.fixture(scope="module")
def cli(chain: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(home=tmp_path_factory.mktemp("cli") / "home", rpc_url=chain.url)


@pytest.fixture(scope="module")
def keys(cli: Cli) -> dict[str, str]:
    """name → address, imported from the devnet accounts through `keys new --dev-index`."""
    made = cli.json_all(
        [["keys", "new", name, "--dev-index", str(i)] for name, i in DEV_INDEX.items()]
    )
    return {k["name"]: k["address"] for k in made}


@pytest.fixture(scope="module")
def deployment(cli: Cli, keys: dict[str, str]) -> dict[str, Any]:
    return dict(cli.json("deploy", "--key", "owner"))


@pytest.fixture(scope="module")
def task(cli: Cli, keys: dict[str, str], deployment: dict[str, Any]) -> int:
    """Task 1: every contributor's update is needed to close a round (min = max = 4)."""
    created = cli.json(
        *("task", "create", "--key", "owner", "--min-updates", "4", "--max-updates", "4"),
        *("--max-samples", "1000"),
    )
    tid = int(created["task_id"])
    contributors = [keys[name] for name in CONTRIBUTORS]
    cli.ok("task", "add-contributor", str(tid), *contributors, "--key", "owner")
    cli.ok("task", "add-validator", str(tid), keys["val"], "--key", "owner")
    return tid


@pytest.fixture(scope="module")
def sdk(chain: Devnet, cli: Cli, deployment: dict[str, Any]) -> tuple[Ledger, ContentStore]:
    """The SDK's view of the same chain and store (for making files and checking results)."""
    return open_ledger(chain.url, None, cli.home / "deployments"), open_store(None, cli.home)


@dataclass(frozen=True)
class UpdateFile:
    path: Path
    num_samples: int


@pytest.fixture(scope="module")
def update_files(
    sdk: tuple[Ledger, ContentStore],
    task: int,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, UpdateFile]:
    """Round-0 update files trained by the SDK for carol and dave (shares 2 and 3)."""
    ledger, store = sdk
    out = tmp_path_factory.mktemp("updates")
    files = {}
    for i, name in ((2, "carol"), (3, "dave")):
        work = make_update(
            ledger,
            store,
            task,
            partition_share("digits", i, N_PARTS, 0.0, 0),
            ContributorOptions(seed=i),
            contributor=keys[name],
        )
        path = out / f"{name}.safetensors"
        path.write_bytes(work.data)
        files[name] = UpdateFile(path, work.num_samples)
    return files


@dataclass(frozen=True)
class Round0:
    trained: dict[str, dict[str, Any]]
    submitted: dict[str, Any]
    relayed_ids: list[int]
    signed: dict[str, Any]


@pytest.fixture(scope="module")
def round0(
    cli: Cli,
    task: int,
    update_files: dict[str, UpdateFile],
    tmp_path_factory: pytest.TempPathFactory,
) -> Round0:
    """Round 0 through the CLI, four contributors at once: two `train`s, one `submit FILE`, one
    `submit --sign-only`; then a relayer sends the signed update with `relay`."""
    carol, dave = update_files["carol"], update_files["dave"]
    signed_path = tmp_path_factory.mktemp("signed") / "dave.json"
    alice_res, bob_res, submitted, _ = cli.json_all(
        [
            ["train", "--task", str(task), "--key", "alice", "--partition", f"0/{N_PARTS}"],
            ["train", "--task", str(task), "--key", "bob", "--partition", f"1/{N_PARTS}"],
            ["submit", str(carol.path), "--task", str(task), "--samples", str(carol.num_samples),
             "--key", "carol"],
            ["submit", str(dave.path), "--task", str(task), "--samples", str(dave.num_samples),
             "--key", "dave", "--sign-only", str(signed_path)],
        ]
    )  # fmt: skip
    trained = {"alice": alice_res, "bob": bob_res}
    relayed = cli.json("relay", str(signed_path), "--key", "relayer")
    return Round0(trained, submitted, relayed["update_ids"], json.loads(signed_path.read_text()))


@pytest.fixture(scope="module")
def final(cli: Cli, task: int, round0: Round0, sdk: tuple[Ledger, ContentStore]) -> Iterator[str]:
    """`fedledger serve --key val` in the background until round 0 is final and indexed; yields
    the REST API's URL."""
    ledger, _ = sdk
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = cli.home.parent / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_fedledger(), "serve", "--key", "val", "--port", str(port), "--no-eval-dataset"],
            env=cli.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def up() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        def judged() -> bool:
            items = httpx.get(
                f"{url}/contributions", params={"task_id": task, "limit": 500}, timeout=5
            ).json()["items"]
            return len(items) == 4 and all(i["status"] != "PENDING" for i in items)

        wait_for("the API to answer /health", up)
        wait_for("round 0 to be final", lambda: ledger.current_round(task) >= 1)
        wait_for("the API to show every verdict of round 0", judged)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        cli.transcript.append(log_path.read_text(errors="replace"))


@pytest.fixture(scope="module")
def chain_history(cli: Cli, final: str, task: int) -> list[dict[str, Any]]:
    """`history --task 1 --json` read from the chain alone, once round 0 is final."""
    return list(cli.json("history", "--task", str(task)))


def _submitted_events(ledger: Ledger, task: int) -> dict[int, dict[str, Any]]:
    return {r.update_id: r.columns() for r in ledger.update_records(task)}


# -- keys, deploy, tasks -------------------------------------------------------------------------


def test_version_prints_the_package_version(cli: Cli) -> None:
    assert cli.ok("--version").stdout.strip() == f"fedledger {__version__}"


def test_keys_list_json_shows_names_and_addresses_only(cli: Cli, keys: dict[str, str]) -> None:
    listed = cli.json("keys", "list")
    assert {k["name"]: k["address"] for k in listed} == keys
    assert all(set(k) == {"name", "address", "path"} for k in listed)
    dev = dev_private_keys(len(DEV_INDEX))
    assert keys["alice"] == Web3().eth.account.from_key(dev[DEV_INDEX["alice"]]).address


def test_keystore_file_is_encrypted_json(cli: Cli, keys: dict[str, str]) -> None:
    stored = json.loads((cli.home / "keystore" / "owner.json").read_text())
    assert stored["crypto"]["kdf"] == "scrypt" and stored["crypto"]["ciphertext"]
    assert Web3.to_checksum_address(stored["address"]) == keys["owner"]


def test_deploy_records_address_chain_block_and_abi_hash(
    cli: Cli, chain: Devnet, deployment: dict[str, Any]
) -> None:
    record = json.loads((cli.home / "deployments" / f"{chain.chain_id}.json").read_text())
    assert record["address"] == deployment["address"]
    assert record["chain_id"] == chain.chain_id == deployment["chain_id"]
    assert record["block"] == deployment["block"] >= 1
    assert record["abi_hash"] == contracts.load_artifact().abi_hash
    assert Web3(Web3.HTTPProvider(chain.url)).eth.get_code(record["address"])


def test_task_create_prints_the_new_task_id_as_json(task: int) -> None:
    assert task == 1


def test_task_owner_admits_contributors_and_validators(
    sdk: tuple[Ledger, ContentStore], task: int, keys: dict[str, str]
) -> None:
    ledger, _ = sdk
    assert all(ledger.is_contributor(task, keys[n]) for n in CONTRIBUTORS)
    assert ledger.is_validator(task, keys["val"])
    assert not ledger.is_contributor(task, keys["relayer"])


# -- contributing --------------------------------------------------------------------------------


def test_train_records_one_update_per_contributor(
    round0: Round0, sdk: tuple[Ledger, ContentStore], task: int, keys: dict[str, str]
) -> None:
    events = _submitted_events(sdk[0], task)
    for name, res in round0.trained.items():
        ev = events[res["update_id"]]
        assert ev["contributor"] == keys[name]
        assert ev["round"] == res["round"] == 0
        assert ev["num_samples"] == res["num_samples"] > 0
    assert round0.trained["alice"]["update_id"] != round0.trained["bob"]["update_id"]


def test_submit_records_an_update_file_made_by_the_sdk(
    round0: Round0,
    sdk: tuple[Ledger, ContentStore],
    task: int,
    keys: dict[str, str],
    update_files: dict[str, UpdateFile],
) -> None:
    data = update_files["carol"].path.read_bytes()
    res = round0.submitted
    assert res["content_hash"] == codec.sha256_hex(data)
    assert res["cid"] == compute_cid(data)
    ev = _submitted_events(sdk[0], task)[res["update_id"]]
    assert ev["contributor"] == keys["carol"]
    assert ev["num_samples"] == update_files["carol"].num_samples
    assert sdk[1].get(res["cid"]) == data


def test_relayed_update_counts_for_its_signer_who_pays_no_gas(
    round0: Round0, sdk: tuple[Ledger, ContentStore], task: int, keys: dict[str, str]
) -> None:
    ledger, _ = sdk
    (uid,) = round0.relayed_ids
    ev = _submitted_events(ledger, task)[uid]
    assert ev["contributor"] == keys["dave"] == round0.signed["contributor"]
    assert ev["cid"] == round0.signed["cid"]
    assert ledger.w3.eth.get_transaction_count(keys["dave"]) == 0
    assert ledger.w3.eth.get_balance(keys["dave"]) == DEV_BALANCE
    assert ledger.w3.eth.get_transaction_count(keys["relayer"]) == 1


# -- validating and reading ----------------------------------------------------------------------


def test_validator_service_finalises_the_round(
    final: str, sdk: tuple[Ledger, ContentStore], task: int
) -> None:
    ledger, _ = sdk
    assert ledger.current_round(task) == 1
    (fin,) = ledger.events("RoundFinalized", task_id=task)
    assert fin["args"]["round"] == 0


def test_history_from_the_chain_shows_every_update_with_its_verdict(
    chain_history: list[dict[str, Any]], round0: Round0
) -> None:
    expected = {r["update_id"] for r in round0.trained.values()}
    expected |= {round0.submitted["update_id"], *round0.relayed_ids}
    assert {r["update_id"] for r in chain_history} == expected
    assert all(r["status"] != "PENDING" for r in chain_history), chain_history


def test_history_from_the_api_matches_the_chain(
    cli: Cli, final: str, task: int, chain_history: list[dict[str, Any]]
) -> None:
    from_api = cli.json("history", "--task", str(task), "--api", final)
    assert [(r["update_id"], r["status"]) for r in from_api] == [
        (r["update_id"], r["status"]) for r in chain_history
    ]


def test_verify_exits_zero_when_chain_store_and_recomputation_agree(
    cli: Cli, final: str, task: int
) -> None:
    r = cli.ok("verify", "--task", str(task))
    assert "verified" in r.stdout


def test_verify_json_reports_each_round(cli: Cli, final: str, task: int) -> None:
    report = cli.json("verify", "--task", str(task), "--round", "0")
    assert report["ok"] is True and report["problems"] == []
    (rnd,) = report["rounds"]
    assert rnd["round"] == 0 and rnd["updates"] == 4 and rnd["aggregate_ok"] and rnd["root_ok"]


def test_history_filters_by_contributor_newest_first(
    cli: Cli, final: str, round0: Round0, keys: dict[str, str]
) -> None:
    (row,) = cli.json("history", "--contributor", keys["alice"].lower(), "--limit", "1")
    assert row["update_id"] == round0.trained["alice"]["update_id"]
    assert row["contributor"] == keys["alice"]


# -- bad input: one line, non-zero, no traceback -------------------------------------------------


def test_wrong_password_is_a_one_line_error(cli: Cli, task: int, keys: dict[str, str]) -> None:
    r = cli.run(
        "task", "add-validator", str(task), keys["relayer"], "--key", "owner",
        FEDLEDGER_PASSWORD="not the password",
    )  # fmt: skip
    assert_one_line_error(r, "wrong password", "owner", code=4)


def test_missing_update_file_is_a_one_line_error(cli: Cli, task: int, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.safetensors"
    r = cli.run("submit", str(missing), "--task", str(task), "--samples", "10", "--key", "carol")
    assert_one_line_error(r, str(missing), "does not exist", code=3)


def test_update_for_a_past_round_is_refused(
    cli: Cli, final: str, task: int, update_files: dict[str, UpdateFile], keys: dict[str, str]
) -> None:
    stale = update_files["carol"]
    r = cli.run(
        "submit", str(stale.path), "--task", str(task), "--samples", str(stale.num_samples),
        "--key", "carol",
    )  # fmt: skip
    assert_one_line_error(r, "round 0", "round 1", code=5)


def test_submitting_a_file_that_names_another_contributor_is_refused(
    cli: Cli,
    final: str,
    task: int,
    keys: dict[str, str],
    sdk: tuple[Ledger, ContentStore],
    tmp_path: Path,
) -> None:
    """carol's file for the current round names carol: sent with bob's key it would be judged
    COPIED, so the CLI refuses it before anything is stored or sent."""
    ledger, store = sdk
    work = make_update(
        ledger,
        store,
        task,
        partition_share("digits", 2, N_PARTS, 0.0, 0),
        ContributorOptions(seed=7),
        contributor=keys["carol"],
    )
    theirs = tmp_path / "carol-round1.safetensors"
    theirs.write_bytes(work.data)
    nonce = ledger.w3.eth.get_transaction_count(keys["bob"])
    r = cli.run(
        "submit", str(theirs), "--task", str(task), "--samples", str(work.num_samples),
        "--key", "bob",
    )  # fmt: skip
    assert_one_line_error(r, "names contributor", "COPIED", code=5)
    assert ledger.w3.eth.get_transaction_count(keys["bob"]) == nonce


def test_unknown_task_is_a_one_line_error(cli: Cli, deployment: dict[str, Any]) -> None:
    assert_one_line_error(cli.run("verify", "--task", "99"), "task 99 does not exist", code=3)


@pytest.mark.parametrize(
    "args",
    [["history"], ["deploy", "--key", "owner"]],
    ids=["read", "send"],
)
def test_unreachable_rpc_is_a_one_line_error(
    cli: Cli, keys: dict[str, str], args: list[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    r = cli.run(*args, FEDLEDGER_RPC_URL=down)
    assert_one_line_error(r, down, "FEDLEDGER_RPC_URL", code=6)


def test_transport_failure_after_connecting_becomes_a_chain_error() -> None:
    """What `main` reports when the node goes away mid-command (not only at the first probe)."""
    import requests

    err = as_chain_error(requests.exceptions.ConnectionError("connection reset by peer"))
    assert isinstance(err, ChainError) and "RPC endpoint" in str(err)
    assert as_chain_error(KeyError("a bug, not the network")) is None


def test_limit_zero_is_a_usage_error(cli: Cli) -> None:
    assert_one_line_error(cli.run("history", "--limit", "0"), "--limit", code=2)


def test_unknown_option_is_a_usage_error(cli: Cli) -> None:
    r = cli.run("history", "--no-such-option")
    assert_one_line_error(r, "--no-such-option", "fedledger history --help", code=2)


def test_non_integer_option_is_a_usage_error(cli: Cli) -> None:
    assert_one_line_error(cli.run("verify", "--task", "one"), "--task", code=2)


def test_invalid_address_is_a_one_line_error(cli: Cli, task: int) -> None:
    r = cli.run("task", "add-contributor", str(task), "0x1234", "--key", "owner")
    assert_one_line_error(r, "not an Ethereum address", "0x1234", code=2)


def test_malformed_update_file_is_refused_before_anything_is_sent(
    cli: Cli, task: int, keys: dict[str, str], sdk: tuple[Ledger, ContentStore], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    w3 = sdk[0].w3
    nonce = w3.eth.get_transaction_count(keys["carol"])
    r = cli.run("submit", str(bad), "--task", str(task), "--samples", "10", "--key", "carol")
    assert_one_line_error(r, code=5)
    assert w3.eth.get_transaction_count(keys["carol"]) == nonce


def test_tampered_stored_update_fails_verify_naming_it(
    cli: Cli, final: str, task: int, round0: Round0, tmp_path: Path
) -> None:
    # Tamper with a copy of the data dir, so the other tests keep the intact store.
    home = tmp_path / "home"
    shutil.copytree(cli.home, home, ignore=shutil.ignore_patterns("fedledger.db*"))
    uid, cid = round0.submitted["update_id"], round0.submitted["cid"]
    block = Blockstore(home / "blocks")._path(parse_cid(cid))
    raw = bytearray(block.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    block.write_bytes(bytes(raw))
    r = cli.run("verify", "--task", str(task), FEDLEDGER_HOME=str(home))
    line = assert_one_line_error(r, code=7)
    assert f"update {uid}" in line or cid in line, line


# -- the worker process ------------------------------------------------------------------------


def _worker_report(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/health", timeout=5).json()["indexer"])


def test_serve_runs_the_worker_in_its_own_process_and_restarts_it_after_a_kill(
    final: str, task: int
) -> None:
    """The indexer and validator run in a child of `fedledger serve` (fedledger_backend.worker_process):
    the key reaches it on stdin, never in its argv or environment; killed with SIGKILL, it is
    started again and the index goes on."""
    report = _worker_report(final)
    pid = report["worker_pid"]
    assert isinstance(pid, int) and pid != os.getpid()
    assert report["validator"] is not None  # the child validates with the key
    secret = dev_private_keys(len(DEV_INDEX))[DEV_INDEX["val"]].removeprefix("0x").lower()
    for what in ("cmdline", "environ"):
        raw = Path(f"/proc/{pid}/{what}").read_bytes().lower()
        assert secret.encode() not in raw, f"the validator key is in the worker's {what}"
    restarts = report["worker_restarts"]
    os.kill(pid, 9)

    def restarted() -> dict[str, Any] | None:
        r = _worker_report(final)
        fresh = r["worker_pid"] not in (None, pid) and r["worker_restarts"] == restarts + 1
        return r if fresh and r.get("passes", 0) > 0 else None

    after = wait_for("a new worker process that reports passes", restarted, timeout=60)
    assert after["last_error"] is None, after
    assert httpx.get(f"{final}/health", timeout=5).json()["status"] == "ok"
    items = httpx.get(f"{final}/contributions", params={"task_id": task}, timeout=5).json()["items"]
    assert items and all(i["status"] != "PENDING" for i in items)


# -- secrets -------------------------------------------------------------------------------------


def test_private_keys_never_appear_in_any_output_or_file(
    cli: Cli, final: str, keys: dict[str, str]
) -> None:
    secrets = [bytes.fromhex(k.removeprefix("0x")) for k in dev_private_keys(len(DEV_INDEX))]
    needles = [n for s in secrets for n in (s, s.hex().encode(), s.hex().upper().encode())]
    printed = "\n".join(cli.transcript).encode()
    assert printed, "the module ran no commands"
    for needle in needles:
        assert needle not in printed
    for path in cli.home.parent.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(n in content for n in needles), f"a private key is in {path}"
