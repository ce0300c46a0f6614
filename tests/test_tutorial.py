"""docs/tutorial.md, run as a user runs it: its shell blocks, in order, in one bash, in an empty
directory with no ``FEDLEDGER_*`` settings, ``fedledger`` and ``python`` from this venv.

Only the documented placeholders change: the tutorial's ports (8545 for the devnet, 8000 for
the validator; "use another port everywhere it appears") become free ones.  The blocks run
under ``set -euo pipefail``, so a command that fails fails the test, with the block it was in.
Before the last block (which stops the devnet and the validator) the test checks what the
tutorial said would happen against the live chain, store and REST API; the last block then
runs in a second bash given the variables the tutorial set (``SERVER``, ``DEVNET``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from safetensors.numpy import load_file
from test_cli import wait_for

from fedledger.chain.devnet import free_port
from fedledger.chain.keys import list_keys
from fedledger.chain.ledger import open_ledger, to_hex
from fedledger.content.store import open_store
from fedledger.flows.task import load_task

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial.md"
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
RUN = ("bash", "console")  # the fences that are commands to run
PORTS = ("8545", "8000")  # the devnet's and the validator's, as the tutorial documents them
ASSIGNED = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", re.M)
MARK = "@@tutorial"
TIMEOUT_S = 240
TRAINED = re.compile(
    r"^trained on (\d+) samples \(local loss ([0-9.]+), accuracy ([0-9.]+)% on your data\); "
    r"update (\d+) recorded for task 1 round (\d+)$",
    re.M,
)
HOSPITALS = {"HOSPITAL_A": "hospital-a", "HOSPITAL_B": "hospital-b", "HOSPITAL_C": "hospital-c"}


# -- reading the tutorial ------------------------------------------------------------------------


def console_commands(body: str) -> str:
    """The commands of a ```console block: its ``$ `` lines and their ``\\`` continuations."""
    commands: list[str] = []
    continued = False
    for line in body.splitlines():
        if continued or line.startswith("$ "):
            commands.append(line if continued else line[2:])
            continued = line.endswith("\\")
    return "".join(f"{c}\n" for c in commands)


def shell_blocks(markdown: str) -> list[str]:
    """The tutorial's commands, one string per ```bash or ```console block, in order."""
    blocks = []
    for lang, body in FENCE.findall(markdown):
        if lang in RUN:
            blocks.append(body if lang == "bash" else console_commands(body))
    return blocks


def test_shell_blocks_and_console_prompts_are_read_as_commands() -> None:
    doc = (
        "text\n```bash\nexport A=1\necho $A\n```\nmore\n```text\nnot run\n```\n"
        '```console\n$ fedledger task show 1 \\\n  --json\n{"task_id": 1}\n$ echo done\ndone\n```\n'
    )
    assert shell_blocks(doc) == ["export A=1\necho $A\n", "fedledger task show 1 \\\n  --json\necho done\n"]  # fmt: skip


def test_every_shell_example_in_the_tutorial_is_one_the_test_runs() -> None:
    """A block fenced ```sh or ```shell would be skipped silently: the tutorial uses none."""
    langs = [lang for lang, _ in FENCE.findall(TUTORIAL.read_text())]
    assert not {"sh", "shell", "zsh", ""} & set(langs), langs
    assert langs.count("bash") + langs.count("console") >= 6


# -- running it ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What the tutorial's blocks printed, block by block, and the variables they set."""

    cwd: Path
    home: Path
    rpc_url: str
    api_url: str
    blocks: list[str]
    printed: dict[int, str]
    variables: dict[str, str]


def _substitute(blocks: list[str], ports: dict[str, int]) -> list[str]:
    text = "\0".join(blocks)
    for placeholder, port in ports.items():
        pattern = rf"(?<![0-9]){placeholder}(?![0-9])"
        assert re.search(pattern, text), f"the tutorial no longer uses port {placeholder}"
        text = re.sub(pattern, str(port), text)
    return text.split("\0")


def _script(blocks: list[str], names: list[str]) -> str:
    lines = ["set -euo pipefail"]
    for i, block in enumerate(blocks):
        lines += [f"echo '{MARK} {i} start'", block.rstrip("\n"), f"echo '{MARK} {i} done'"]
    lines += [f"printf '{MARK} var %s=%s\\n' {n} \"${{{n}-}}\"" for n in names]
    return "\n".join(lines) + "\n"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(none)"


def _bash(script: str, cwd: Path, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    (cwd / f"{name}.sh").write_text(script)
    with open(cwd / f"{name}.out", "wb") as out, open(cwd / f"{name}.err", "wb") as err:
        return subprocess.Popen(
            ["bash", f"{name}.sh"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its background jobs share its process group
        )


def _report(cwd: Path, name: str, blocks: list[str]) -> str:
    out = (cwd / f"{name}.out").read_text(errors="replace")
    done = [int(i) for i in re.findall(rf"^{MARK} (\d+) done$", out, re.M)]
    failed = max(done, default=-1) + 1
    block = blocks[failed] if failed < len(blocks) else "(after the last block)"
    return (
        f"tutorial block {failed} did not finish:\n{block}\n--- stdout\n{out[-3000:]}\n"
        f"--- stderr\n{_tail(cwd / f'{name}.err')}\n--- devnet.log\n{_tail(cwd / 'devnet.log')}\n"
        f"--- validator.log\n{_tail(cwd / 'validator.log')}"
    )


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to everything the first bash started (the devnet stops its anvil on it)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Every block but the last (stop) run; yields while the devnet and validator are up,
    then runs the last block and checks that it stopped them."""
    cwd = tmp_path_factory.mktemp("tutorial")
    ports = {PORTS[0]: free_port(), PORTS[1]: free_port()}
    blocks = _substitute(shell_blocks(TUTORIAL.read_text()), ports)
    *run_first, stop = blocks
    names = sorted(set(ASSIGNED.findall("\n".join(run_first))))
    env = _env()
    first = _bash(_script(run_first, names), cwd, "tutorial", env)
    try:
        try:
            rc = first.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"timed out after {TIMEOUT_S}s: " + _report(cwd, "tutorial", run_first))
        assert rc == 0, _report(cwd, "tutorial", run_first)
        out = (cwd / "tutorial.out").read_text()
        printed = {
            int(i): text
            for i, text in re.findall(
                rf"^{MARK} (\d+) start\n(.*?)^{MARK} \1 done$", out, re.M | re.S
            )
        }
        assert sorted(printed) == list(range(len(run_first))), out
        variables = dict(re.findall(rf"^{MARK} var (\w+)=(.*)$", out, re.M))
        home = Path(variables["FEDLEDGER_HOME"])
        assert home == cwd / "consortium"
        yield Run(
            cwd=cwd,
            home=home,
            rpc_url=f"http://127.0.0.1:{ports[PORTS[0]]}",
            api_url=f"http://127.0.0.1:{ports[PORTS[1]]}",
            blocks=run_first,
            printed=printed,
            variables=variables,
        )
        # The last block, with the variables the tutorial set (SERVER, DEVNET, ...).
        last = _bash(stop, cwd, "stop", {**env, **variables})
        assert last.wait(timeout=60) == 0, _report(cwd, "stop", [stop])
        wait_for("the devnet to stop", lambda: not (home / "devnet.json").exists(), timeout=30)
        for url in (f"http://127.0.0.1:{ports[PORTS[0]]}", f"http://127.0.0.1:{ports[PORTS[1]]}"):
            wait_for(f"{url} to close", lambda u=url: not _answers(u), timeout=30)
    finally:
        _stop_group(first)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def _block(run: Run, *needles: str) -> str:
    """What the one block that holds every needle printed."""
    (i,) = [i for i, b in enumerate(run.blocks) if all(n in b for n in needles)]
    return run.printed[i]


# -- what the tutorial says happens --------------------------------------------------------------


def test_the_devnet_addresses_the_tutorial_gives_are_the_keys_it_made(tutorial: Run) -> None:
    made = {k.name: k.address for k in list_keys(tutorial.home / "keystore")}
    assert set(made) == {"owner", "validator", *HOSPITALS.values()}
    for var, name in HOSPITALS.items():
        assert tutorial.variables[var] == made[name], var
    assert tutorial.variables["VALIDATOR"] == made["validator"]


def test_the_task_is_the_consortiums_model_and_data_with_its_parties_admitted(
    tutorial: Run,
) -> None:
    ledger = open_ledger(tutorial.rpc_url, None, tutorial.home / "deployments")
    state = load_task(ledger, open_store(None, tutorial.home), 1)
    assert state.spec.dataset == "breast_cancer"
    assert isinstance(state.spec.model, dict) and state.spec.model["in_features"] == 30
    assert (state.config.min_updates, state.config.max_updates) == (3, 3)
    for var in HOSPITALS:
        assert ledger.is_contributor(1, tutorial.variables[var])
    assert ledger.is_validator(1, tutorial.variables["VALIDATOR"])
    shown = _block(tutorial, "fedledger task show 1")
    assert "breast_cancer" in shown and "mlp 30-16-2" in shown, shown


def test_each_hospital_trained_every_round_and_saw_its_local_accuracy(tutorial: Run) -> None:
    ledger = open_ledger(tutorial.rpc_url, None, tutorial.home / "deployments")
    assert ledger.current_round(1) == 3
    finals = sorted(int(e["args"]["round"]) for e in ledger.events("RoundFinalized", task_id=1))
    assert finals == [0, 1, 2]
    events = {r.update_id: r.columns() for r in ledger.update_records(1)}
    printed = TRAINED.findall(_block(tutorial, "fedledger train"))
    hospitals = {tutorial.variables[v] for v in HOSPITALS}
    seen = set()
    for samples, _loss, accuracy, uid, rnd in printed:
        ev = events[int(uid)]
        assert ev["round"] == int(rnd) and ev["num_samples"] == int(samples)
        assert 0 <= float(accuracy) <= 100
        seen.add((ev["contributor"], int(rnd)))
    assert seen == {(h, r) for h in hospitals for r in range(3)}
    assert len(printed) == len(events) == 9


def test_the_owner_sees_every_round_over_rest_and_verifies_it(tutorial: Run) -> None:
    watched = _block(tutorial, "/tasks/1/rounds")
    rounds, _ = json.JSONDecoder().raw_decode(watched.lstrip())
    items = rounds["items"]
    assert [r["round"] for r in items] == [0, 1, 2, 3]  # three final, the next one open
    *final, next_round = items
    for r in final:
        assert r["status"] == "finalized" and r["accepted"] + r["rejected"] == 3, r
        assert r["accuracy"] is not None and 0 <= r["accuracy"] <= 1
    assert final[-1]["accuracy"] >= 0.8, final  # the consortium's model learnt the task
    assert (next_round["status"], next_round["submitted"]) == ("open", 0)
    history = {  # update_id → status, from the rows of `history`'s table
        int(cells[0]): cells[5]
        for ln in watched.splitlines()
        if len(cells := [c.strip() for c in ln.strip("│ ").split("│")]) == 7
        and cells[3].startswith("0x")
    }
    assert sorted(history) == [(1 << 32) | i for i in range(1, 10)], watched
    assert sum(r["accepted"] for r in final) == list(history.values()).count("ACCEPTED")
    assert "verified 3 round(s) of task 1" in watched
    # The live API agrees with what the owner printed.
    live = httpx.get(f"{tutorial.api_url}/tasks/1/rounds", timeout=5).json()
    assert live["items"] == items


def test_the_pulled_model_is_the_last_rounds_aggregate(tutorial: Run) -> None:
    path = tutorial.cwd / "consortium-model.safetensors"
    ledger = open_ledger(tutorial.rpc_url, None, tutorial.home / "deployments")
    (last,) = [
        ledger.finalized_args(e)
        for e in ledger.events("RoundFinalized", task_id=1)
        if e["args"]["round"] == 2
    ]
    assert "0x" + hashlib.sha256(path.read_bytes()).hexdigest() == to_hex(last["aggregateHash"])
    shapes = {k: v.shape for k, v in load_file(str(path)).items()}
    assert sorted(shapes.values()) == sorted([(16, 30), (16,), (2, 16), (2,)])
