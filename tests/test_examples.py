"""The scripts in examples/ run as a user runs them: each a subprocess with its settings in the
environment, against a real anvil, the real contract, the embedded store and a validator run by
``fedledger serve`` on loopback.

``owner_script.py`` deploys, creates a task and admits its parties; ``fedledger serve`` then
validates it while two contributors run ``own_training_loop.py`` for two rounds (one with its
own ``nn.Module`` and Adam, one with ``task.model()`` under bfloat16 autocast); the owner
script watches the rounds over REST and exits once they are final and verified.
``custom_model.py`` is used as its docstring says.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest
from test_cli import Cli, assert_one_line_error, wait_for

from fedledger.chain.devnet import Devnet, free_port, start_anvil
from fedledger.chain.ledger import open_ledger
from fedledger.content.store import open_store
from fedledger.flows.task import load_task

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
KEYS = {"owner": 0, "alice": 1, "bob": 2, "val": 3}
ROUNDS = 2


@pytest.fixture(scope="module")
def chain() -> Iterator[Devnet]:
    with start_anvil(accounts=5) as dn:
        yield dn


@pytest.fixture(scope="module")
def cli(chain: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(home=tmp_path_factory.mktemp("examples") / "home", rpc_url=chain.url)


@pytest.fixture(scope="module")
def keys(cli: Cli) -> dict[str, str]:
    made = cli.json_all([["keys", "new", n, "--dev-index", str(i)] for n, i in KEYS.items()])
    return {k["name"]: k["address"] for k in made}


@dataclass
class Script:
    """An example running in the background, its output in files (never a full pipe)."""

    proc: subprocess.Popen[str]
    out: IO[str]
    err: IO[str]

    def stdout(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.err.seek(0)
        done = subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, self.stdout(), self.err.read()
        )
        self.out.close()
        self.err.close()
        return done


def start(cli: Cli, script: str, *args: str, **env: str) -> Script:
    out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by Script.finish
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by Script.finish
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=REPO,
        env=cli.env(**env),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        text=True,
    )
    return Script(proc, out, err)


@dataclass(frozen=True)
class Owner:
    script: Script
    api: str
    contract: str
    task_id: int


@pytest.fixture(scope="module")
def owner(cli: Cli, keys: dict[str, str]) -> Iterator[Owner]:
    """owner_script.py running: once it printed the task, `fedledger serve --key val` starts."""
    api = f"http://127.0.0.1:{free_port()}"
    script = start(
        cli, "owner_script.py", "--key", "owner",
        "--contributor", keys["alice"], "--contributor", keys["bob"],
        "--validator", keys["val"], "--api", api, "--rounds", str(ROUNDS),
        "--max-samples", "1000", "--timeout", "120",
    )  # fmt: skip
    try:
        line = wait_for(
            "owner_script.py to print its task",
            lambda: script.proc.poll() is None and script.stdout().partition("\n")[0],
            timeout=60,
        )
        created = json.loads(line)
        serve_log = cli.home.parent / "serve.log"
        with open(serve_log, "wb") as log:
            serve = subprocess.Popen(
                [*_fedledger(), "serve", "--key", "val", "--port", api.rsplit(":", 1)[1]],
                env=cli.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            yield Owner(script, api, created["contract"], int(created["task_id"]))
        finally:
            serve.terminate()
            try:
                serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
    finally:
        if script.proc.poll() is None:
            script.proc.kill()
            script.proc.wait()


def _fedledger() -> list[str]:
    script = Path(sys.executable).with_name("fedledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedledger.cli.main"]


@dataclass(frozen=True)
class Trained:
    alice: subprocess.CompletedProcess[str]
    bob: subprocess.CompletedProcess[str]
    owner: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def trained(cli: Cli, owner: Owner) -> Trained:
    """Two contributors run own_training_loop.py for every round at once; then the owner
    script, which watched the rounds, finishes."""
    task = ["--task", str(owner.task_id), "--rounds", str(ROUNDS), "--timeout", "90"]
    alice = start(cli, "own_training_loop.py", *task, "--key", "alice", "--share", "0/2",
                  "--own-module", "--device", "cpu")  # fmt: skip
    bob = start(cli, "own_training_loop.py", *task, "--key", "bob", "--share", "1/2", "--amp")
    return Trained(alice.finish(), bob.finish(), owner.script.finish())


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


# -- owner_script.py -------------------------------------------------------------------------


def test_owner_script_deploys_the_ledger_and_records_it_for_later_sessions(
    cli: Cli, chain: Devnet, owner: Owner
) -> None:
    record = json.loads((cli.home / "deployments" / f"{chain.chain_id}.json").read_text())
    assert record["address"] == owner.contract


def test_owner_script_creates_a_described_task_with_its_cap_and_parties(
    cli: Cli, chain: Devnet, owner: Owner, keys: dict[str, str]
) -> None:
    led = open_ledger(chain.url, None, cli.home / "deployments")
    state = load_task(led, open_store(None, cli.home), owner.task_id)
    assert state.spec.model == {
        "kind": "mlp",
        "in_features": 64,
        "hidden": [32],
        "out_features": 10,
    }
    assert state.spec.model_sha256 is not None  # the description's pin
    assert state.config.max_samples == 1000
    assert (state.config.min_updates, state.config.max_updates) == (2, 2)
    assert led.is_contributor(owner.task_id, keys["alice"])
    assert led.is_contributor(owner.task_id, keys["bob"])
    assert led.is_validator(owner.task_id, keys["val"])


def test_owner_script_watches_every_round_over_rest_and_verifies(
    trained: Trained, owner: Owner
) -> None:
    out = _ok(trained.owner)
    for r in range(ROUNDS):
        assert f"round {r} finalized: 2 accepted, 0 rejected" in out, out
    assert out.rstrip().endswith("verified")
    rounds = httpx.get(f"{owner.api}/tasks/{owner.task_id}/rounds", timeout=10).json()["items"]
    assert [x["status"] for x in rounds[:ROUNDS]] == ["finalized"] * ROUNDS


# -- own_training_loop.py --------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_own_training_loop_contributes_every_round_and_verifies(trained: Trained, who: str) -> None:
    out = _ok(getattr(trained, who))
    for r in range(ROUNDS):
        assert f"round {r}: ACCEPTED" in out, out
    assert out.rstrip().endswith("verified")


def test_own_training_loop_says_what_is_wrong_with_an_unknown_task(cli: Cli, owner: Owner) -> None:
    r = start(cli, "own_training_loop.py", "--task", "99", "--key", "alice").finish(60)
    assert_one_line_error(r, "task 99 does not exist", code=3)


# -- custom_model.py, as its docstring says --------------------------------------------------


def test_custom_model_runs_only_where_its_operator_allowed_it(
    cli: Cli, owner: Owner, chain: Devnet, keys: dict[str, str]
) -> None:
    allow = ["--allow-model", "custom_model:make_model"]
    env = {"PYTHONPATH": str(EXAMPLES)}  # `export PYTHONPATH=examples` in the repository
    created = cli.json(
        "task", "create", "--key", "owner", "--max-samples", "1000",
        "--model", "custom_model:make_model", *allow, **env,
    )  # fmt: skip
    tid = str(created["task_id"])
    cli.ok("task", "add-contributor", tid, keys["alice"], "--key", "owner")
    led = open_ledger(chain.url, None, cli.home / "deployments")
    spec = load_task(led, open_store(None, cli.home), int(tid)).spec
    pin = hashlib.sha256((EXAMPLES / "custom_model.py").read_bytes()).hexdigest()
    assert (spec.model, spec.model_sha256) == ("custom_model:make_model", pin)

    train = ["train", "--task", tid, "--key", "alice", "--partition", "0/4"]
    refused = cli.run(*train, **env)
    assert_one_line_error(
        refused,
        "model custom_model:make_model is not allowed on this node: allow it with --allow-model",
        code=10,
    )
    done = cli.json(*train, *allow, **env)
    assert done["round"] == 0 and done["update_id"] >= 1
