"""Issue #14, class 1: no code from chain content.

A task spec is written by whoever creates the task: on an open chain, a stranger.  A spec that
names code (``subprocess:run``, ``os:system``, or a factory whose module does something at
import time) must never make a node run it: not the validator worker that holds the validator
key, not the metrics projection, not ``fedledger train`` on a contributor's machine.  The node
skips such a task visibly (REST, /health, logs) and keeps judging every round, and only an
operator who allowed that exact factory by name runs it, and only the pinned source.

Real anvil, the real compiled contract, the embedded store, SQLite, a real uvicorn on loopback
and the real ``fedledger`` command in a subprocess; the attacker talks to the chain and the
store directly, as anyone can.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from eth_account.signers.local import LocalAccount

from fedledger.chain.devnet import Devnet
from fedledger.chain.keys import DEV_SCRYPT_N, new_key
from fedledger.chain.ledger import Ledger, TaskConfig
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, ModelNotAllowed, ModelPinMismatch
from fedledger.flows.contribute import ContributorOptions, contribute
from fedledger.flows.local_data import partition_share
from fedledger.flows.submit import encode, submit
from fedledger.flows.task import create_task, load_task, publish
from fedledger.learning import architecture
from fedledger.learning.models import build_model, build_task_model, state_to_numpy
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import Database
from fedledger_backend.service import Backend

PASSWORD = "correct horse battery staple"
MAX_SAMPLES = 10_000
EVIL_MODULE = "fedledger_evil_model"
CUSTOM_MODULE = "fedledger_custom_net"
CUSTOM = f"{CUSTOM_MODULE}:make_model"

EVIL_SOURCE = """
import pathlib
pathlib.Path({imported!r}).write_text("the module ran at import time")


def make_model(**kwargs):
    pathlib.Path({called!r}).write_text("the factory ran")
    raise SystemExit("the attacker's factory ran")
"""

CUSTOM_SOURCE = """
from torch import nn


def make_model(n_features: int = 64, n_classes: int = 10, hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
"""


def _fedledger() -> list[str]:
    script = Path(sys.executable).with_name("fedledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedledger.cli.main"]


def _sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Hostile:
    """Modules an attacker's specs name, importable on this machine (so that only fedledger's
    refusal stands between a spec and its code), and the files their code would write."""

    path: Path
    sentinels: dict[str, Path]

    def written(self) -> list[str]:
        return [name for name, p in self.sentinels.items() if p.exists()]


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    mods = tmp_path / "importable"
    mods.mkdir()
    sentinels = {
        name: tmp_path / f"SENTINEL-{name}"
        for name in ("imported", "called", "subprocess", "os_system")
    }
    (mods / f"{EVIL_MODULE}.py").write_text(
        EVIL_SOURCE.format(imported=str(sentinels["imported"]), called=str(sentinels["called"]))
    )
    (mods / f"{CUSTOM_MODULE}.py").write_text(CUSTOM_SOURCE)
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")]))
    yield Hostile(mods, sentinels)
    for name in (EVIL_MODULE, CUSTOM_MODULE):
        sys.modules.pop(name, None)


def hostile_specs(h: Hostile) -> dict[str, dict[str, Any]]:
    """Spec fields naming code, each correctly pinned (so only the allow list refuses them)."""
    import subprocess as sp

    return {
        "import-time module": {
            "model": f"{EVIL_MODULE}:make_model",
            "model_sha256": _sha256_file(h.path / f"{EVIL_MODULE}.py"),
        },
        "subprocess:run": {
            "model": "subprocess:run",
            "model_kwargs": {"args": f"echo ran > {h.sentinels['subprocess']}", "shell": True},
            "model_sha256": _sha256_file(sp.__file__),
        },
        "os:system": {
            "model": "os:system",
            "model_kwargs": {"command": f"echo ran > {h.sentinels['os_system']}"},
            "model_sha256": _sha256_file(os.__file__),
        },
    }


def initial_model() -> dict[str, np.ndarray]:
    return state_to_numpy(build_model("mlp_digits", seed=0))


def stranger_creates_task(
    ledger: Ledger, store: ContentStore, stranger: LocalAccount, fields: dict[str, Any]
) -> int:
    """An open task whose spec bytes the stranger wrote itself (not through fedledger's SDK)."""
    spec = {**json.loads(TaskSpec().to_bytes()), **fields}
    spec_pub = publish(store, json.dumps(spec, sort_keys=True).encode())
    model_pub = publish(store, codec.encode_model(initial_model(), task_id=0, round=0))
    led = ledger.with_account(stranger)
    return led.create_task(
        TaskConfig(
            model_pub.content_hash,
            model_pub.cid,
            spec_pub.cid,
            1,
            10,
            1,
            0,
            True,
            max_samples=MAX_SAMPLES,
        )
    )


def submit_small_update(
    ledger: Ledger, store: ContentStore, who: LocalAccount, task_id: int, seed: int
) -> None:
    led = ledger.with_account(who)
    state = load_task(led, store, task_id)
    rng = np.random.default_rng(seed)
    delta = {k: rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in initial_model().items()}
    submit(led, store, state, encode(state, delta, contributor=who.address), 100)


def add_key(home: Path, name: str, account: LocalAccount) -> None:
    new_key(home / "keystore", name, PASSWORD, private_key=account.key, scrypt_n=DEV_SCRYPT_N)


def run_cli(
    anvil: Devnet, ledger: Ledger, home: Path, *args: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
    env.update(
        FEDLEDGER_HOME=str(home),
        FEDLEDGER_RPC_URL=anvil.url,
        FEDLEDGER_CONTRACT=ledger.address,
        FEDLEDGER_PASSWORD=PASSWORD,
        **settings,
    )
    return subprocess.run(
        [*_fedledger(), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def hint_for(ref: str) -> str:
    return (
        f"model {ref} is not allowed on this node: allow it with --allow-model {ref} "
        f"or FEDLEDGER_ALLOW_MODELS={ref}"
    )


# -- the validator node -------------------------------------------------------------------------


def test_a_strangers_task_naming_code_is_skipped_by_the_validator_which_runs_none_of_it(
    anvil: Devnet,
    ledger: Ledger,
    store: ContentStore,
    dev_accounts: list[LocalAccount],
    hostile: Hostile,
    tmp_path: Path,
) -> None:
    """The stranger makes the victim validator of its own tasks (a task owner needs nobody's
    consent) and fills their rounds, so that the victim's worker, which holds the validator
    key, judges them and its metrics projection would build their models."""
    stranger, victim, contributor = dev_accounts[7], dev_accounts[1], dev_accounts[2]
    evil: dict[str, int] = {}
    for i, (name, fields) in enumerate(hostile_specs(hostile).items()):
        tid = stranger_creates_task(ledger, store, stranger, fields)
        ledger.with_account(stranger).add_validator(tid, victim.address)
        submit_small_update(ledger, store, stranger, tid, seed=i)
        evil[name] = tid
    honest = create_task(
        ledger,
        store,
        TaskSpec(),
        initial_model(),
        min_updates=1,
        max_updates=1,
        max_samples=MAX_SAMPLES,
    )
    ledger.add_contributor(honest, contributor.address)
    ledger.add_validator(honest, victim.address)
    contribute(
        ledger.with_account(contributor),
        store,
        honest,
        partition_share("digits", 0, 4, 0.0, 0),
        ContributorOptions(),
    )

    backend = Backend(
        ledger=Ledger(ledger.w3, ledger.address, from_block=ledger.from_block),
        store=store,
        db=Database(f"sqlite:///{tmp_path / 'victim.db'}"),
        account=victim,
        evaluate=True,  # the metrics projection builds each task's model
    )
    tasks = [*evil.values(), honest]
    for _ in range(30):
        backend.run_pass()
        if all(ledger.current_round(t) >= 1 for t in tasks):
            break
    backend.run_pass()  # index the last attestations, evaluate, record every task's status

    assert hostile.written() == []
    assert EVIL_MODULE not in sys.modules
    assert backend.last_error is None and backend.validator is not None
    assert backend.validator.last_error is None
    assert all(ledger.current_round(t) == 1 for t in tasks), "every round is still judged"

    with BackgroundServer(backend.app()) as srv, httpx.Client(base_url=srv.url) as http:
        for ref, tid in zip(
            (f"{EVIL_MODULE}:make_model", "subprocess:run", "os:system"), evil.values(), strict=True
        ):
            got = http.get(f"/tasks/{tid}").json()
            assert got["node_status"] == "skipped"
            assert got["skip_reason"] == hint_for(ref)
            assert http.get(f"/tasks/{tid}/rounds/0").json()["status"] == "finalized"
        good = http.get(f"/tasks/{honest}").json()
        assert good["node_status"] == "ok" and good["skip_reason"] is None
        assert http.get(f"/tasks/{honest}/rounds/0").json()["accuracy"] is not None
        health = http.get("/health").json()
    assert health["skipped_tasks_count"] == 3
    assert {s["task_id"]: s["reason"] for s in health["skipped_tasks"]} == {
        evil["import-time module"]: hint_for(f"{EVIL_MODULE}:make_model"),
        evil["subprocess:run"]: hint_for("subprocess:run"),
        evil["os:system"]: hint_for("os:system"),
    }
    assert hostile.written() == []


def test_the_skip_is_logged_once_as_a_structured_record(
    ledger: Ledger,
    store: ContentStore,
    dev_accounts: list[LocalAccount],
    hostile: Hostile,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fedledger_backend.projections import Evaluator

    tid = stranger_creates_task(
        ledger, store, dev_accounts[7], hostile_specs(hostile)["import-time module"]
    )
    backend = Backend(
        ledger=Ledger(ledger.w3, ledger.address, from_block=ledger.from_block),
        store=store,
        db=Database(f"sqlite:///{tmp_path / 'node.db'}"),
        evaluate=False,
    )
    backend.run_pass()
    evaluator = Evaluator(store)
    with caplog.at_level("WARNING", logger="fedledger.projections"):
        evaluator.run(backend.db)
        evaluator.run(backend.db)
    skips = [r for r in caplog.records if getattr(r, "status", None) == "skipped"]
    assert len(skips) == 1
    assert skips[0].task_id == tid  # type: ignore[attr-defined]
    assert skips[0].reason == hint_for(f"{EVIL_MODULE}:make_model")  # type: ignore[attr-defined]
    assert hostile.written() == []


# -- the contributor's machine ------------------------------------------------------------------


def test_fedledger_train_refuses_a_task_naming_code_before_running_anything(
    anvil: Devnet,
    ledger: Ledger,
    store: ContentStore,
    dev_accounts: list[LocalAccount],
    hostile: Hostile,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"  # the embedded store's home, shared with the `store` fixture
    add_key(home, "alice", dev_accounts[3])
    for fields in hostile_specs(hostile).values():
        tid = stranger_creates_task(ledger, store, dev_accounts[7], fields)
        r = run_cli(anvil, ledger, home, "train", "--task", str(tid), "--key", "alice",
                    "--partition", "0/4")  # fmt: skip
        assert one_line_error(r, ModelNotAllowed.exit_code) == f"error: {hint_for(fields['model'])}"
        assert hostile.written() == []
    assert list(ledger.events("UpdateSubmitted")) == [], "alice submitted nothing"


def test_an_operator_who_allows_a_factory_trains_with_it_and_a_changed_source_is_refused(
    anvil: Devnet,
    ledger: Ledger,
    store: ContentStore,
    dev_accounts: list[LocalAccount],
    hostile: Hostile,
    tmp_path: Path,
) -> None:
    alice, bob = dev_accounts[3], dev_accounts[4]
    spec = TaskSpec(model=CUSTOM)
    initial = state_to_numpy(build_model(CUSTOM, allow=[CUSTOM], seed=spec.seed))
    tid = create_task(
        ledger, store, spec, initial, min_updates=2, max_updates=2, max_samples=MAX_SAMPLES
    )
    pinned = load_task(ledger, store, tid).spec
    assert pinned.model_sha256 == _sha256_file(hostile.path / f"{CUSTOM_MODULE}.py")
    for who in (alice, bob):
        ledger.add_contributor(tid, who.address)
    home = tmp_path / "home"
    add_key(home, "alice", alice)
    add_key(home, "bob", bob)
    train = ("train", "--task", str(tid), "--partition", "0/4", "--json")

    refused = run_cli(anvil, ledger, home, *train, "--key", "alice")
    assert one_line_error(refused, ModelNotAllowed.exit_code) == f"error: {hint_for(CUSTOM)}"

    allowed = run_cli(anvil, ledger, home, *train, "--key", "alice", "--allow-model", CUSTOM)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["update_id"] >= 1

    source = hostile.path / f"{CUSTOM_MODULE}.py"
    source.write_text(source.read_text() + "\n# a changed line\n")
    changed = run_cli(anvil, ledger, home, *train, "--key", "bob", "--allow-model", CUSTOM)
    line = one_line_error(changed, ModelPinMismatch.exit_code)
    assert f"{CUSTOM} is pinned to source sha256 {pinned.model_sha256}" in line
    by_env = run_cli(anvil, ledger, home, *train, "--key", "bob", FEDLEDGER_ALLOW_MODELS=CUSTOM)
    assert f"{CUSTOM} is pinned to source sha256" in one_line_error(
        by_env, ModelPinMismatch.exit_code
    )
    assert len(list(ledger.events("UpdateSubmitted", task_id=tid))) == 1


def test_the_allow_list_also_comes_from_the_environment(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedledger.config import load_settings

    monkeypatch.setenv("FEDLEDGER_ALLOW_MODELS", f" {CUSTOM} ,other_pkg.nets:build")
    assert load_settings().allowed_models == (CUSTOM, "other_pkg.nets:build")
    spec = TaskSpec(model=CUSTOM, model_sha256=architecture.pin(CUSTOM, {}))
    build_task_model(spec, allow=load_settings().allowed_models)


# -- descriptions: data, built by fedledger, bounded, pinned ------------------------------------

CONV = {
    "kind": "sequential",
    "layers": [
        {"type": "unflatten", "shape": [1, 8, 8]},
        {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "dropout", "p": 0.1},
        {"type": "linear", "in_features": 36, "out_features": 10},
    ],
}


@pytest.mark.parametrize(
    "model",
    [
        "mlp_digits",
        {
            "kind": "mlp",
            "in_features": 64,
            "hidden": [32, 16],
            "out_features": 10,
            "activation": "tanh",
        },
        CONV,
    ],  # fmt: skip
)
def test_a_described_model_builds_the_same_weights_on_every_call(model: Any) -> None:
    spec = TaskSpec(model=model, model_sha256=architecture.pin(model, {}), seed=3)
    a, b = state_to_numpy(build_task_model(spec)), state_to_numpy(build_task_model(spec))
    assert list(a) == list(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    what = architecture.describe(model, {})
    assert isinstance(what, architecture.Described)
    assert {k: v.shape for k, v in a.items()} == architecture.tensor_shapes(what.description)


def test_a_built_in_name_and_its_description_are_the_same_pinned_model() -> None:
    as_data = {"kind": "mlp", "in_features": 64, "hidden": [64], "out_features": 10}
    assert architecture.pin("mlp_digits", {}) == architecture.pin(as_data, {})
    named = state_to_numpy(build_model("mlp_digits", seed=1))
    described = state_to_numpy(build_model(as_data, seed=1))
    assert all(named[k].tobytes() == described[k].tobytes() for k in named)


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        (
            {"kind": "mlp", "in_features": 64, "hidden": [65_536] * 3, "out_features": 10},
            {},
            "more than the 20,000,000 allowed",
        ),
        (
            {"kind": "mlp", "in_features": 64, "hidden": [8] * 10_000, "out_features": 10},
            {},
            "at most 64",
        ),
        ({"kind": "sequential", "layers": [{"type": "relu"}] * 65}, {}, "at most 64"),
        ({"kind": "mlp", "in_features": 10**9, "out_features": 10}, {}, "less than or equal"),
        (
            {
                "kind": "sequential",
                "layers": [
                    {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 99}
                ],
            },
            {},
            "less than or equal",
        ),
        (
            {
                "kind": "sequential",
                "layers": [
                    {"type": "linear", "in_features": 4, "out_features": 4},
                    {"type": "linear", "in_features": 5, "out_features": 2},
                ],
            },
            {},
            "layer 1: linear takes 5 features, the layer before gives 4",
        ),
        ({"kind": "sequential", "layers": [{"type": "eval", "code": "1"}]}, {}, "does not match"),
        ({"kind": "mlp", "in_features": True, "out_features": 10}, {}, "valid integer"),
        ({"kind": "mlp", "in_features": 64, "out_features": 10}, {"hidden": 3}, "model_kwargs"),
        ("mlp_wide", {"depth": 10**12}, "depth must be between 0 and 64"),
        ("mlp_wide", {"hidden": 65_536, "depth": 2}, "more than the 20,000,000 allowed"),
        ("mlp_digits", {"hidden": "64"}, "integers only"),
        ("mlp_digits", {"__class__": 1}, "rejected"),
    ],  # fmt: skip
)
def test_oversize_or_malformed_descriptions_are_refused_before_any_tensor_exists(
    model: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        architecture.pin(model, kwargs)
    spec = TaskSpec(model=model, model_kwargs=kwargs)
    with pytest.raises(ConfigError, match=message):
        build_task_model(spec)


def test_a_pin_that_does_not_match_the_description_is_refused() -> None:
    spec = TaskSpec(model="mlp_digits", model_sha256="0" * 64)
    with pytest.raises(ModelPinMismatch, match="describes 'mlp_digits' as"):
        build_task_model(spec)


def test_an_allowed_factory_without_a_pin_is_refused(hostile: Hostile) -> None:
    with pytest.raises(ModelPinMismatch, match="not pinned"):
        build_task_model(TaskSpec(model=CUSTOM), allow=[CUSTOM])
    assert CUSTOM_MODULE not in sys.modules


def test_a_model_named_by_file_path_is_refused_with_the_importable_name_to_use() -> None:
    with pytest.raises(ConfigError, match="names a file") as err:
        build_task_model(TaskSpec(model="examples/m2.py:make_model"))
    assert err.value.hint is not None and "'m2:make_model'" in err.value.hint


def test_an_allow_list_entry_must_name_a_factory() -> None:
    with pytest.raises(ConfigError, match="FEDLEDGER_ALLOW_MODELS entry"):
        architecture.allow_list(["rm -rf /"])
