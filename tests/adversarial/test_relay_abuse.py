"""Issue #14, class 5: the relay serves what its operator chose, and nobody else's abuse.

The relay pays gas and pins bytes.  It used to do so for any task on the contract, an
attacker's own open task included, for any throwaway key; it charged a contributor's bucket
before the duplicate check, so replaying a victim's public signed update locked the victim
out; and it believed ``X-Forwarded-For`` from anyone.  Now (fedledger_backend.relay_service.RelayPolicy)
it relays only for the tasks this node validates and the tasks its operator lists, only for
their admitted contributors (strangers to an open task within an explicit budget), within
per-contributor and per-task budgets, refuses duplicates before charging anything, and reads a
proxy header only from a configured proxy.

Real anvil, the real contract, the embedded store, a `fedledger serve --relay-key` style app
on a real uvicorn on loopback (and once the real `fedledger serve` in its own process); the
attacker uses raw httpx and raw web3.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from pipeline_kit import Scenario, make_scenario
from relay_kit import (
    RelayNode,
    create_open_task,
    honest_update,
    outsider_web3,
    post,
    relay_node,
    sign,
    status,
    throwaway,
    transact,
    wait_settled,
)

from fedledger.chain.devnet import dev_private_keys, free_port
from fedledger.chain.keys import DEV_SCRYPT_N, new_key
from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.content.cid import compute_cid
from fedledger.content.store import ContentStore
from fedledger_backend.relay_service import RelayLimits, RelayPolicy

RELAYER, ATTACKER = 15, 16
ROOMY = RelayLimits(address_burst=50, address_per_s=50, ip_burst=1000, ip_per_s=1000)


@pytest.fixture
def sc(ledger: Ledger, store: ContentStore, dev_accounts: list[LocalAccount]) -> Scenario:
    """The honest task this node validates: validator dev account 1, contributors 2..5."""
    return make_scenario(ledger, store, dev_accounts, n_contributors=4, min_updates=1)


def validated_by(sc: Scenario, **kw: Any) -> RelayPolicy:
    """`fedledger serve --key <sc's validator> --relay-key ...`, plus ``kw``."""
    return RelayPolicy(validators=(sc.validators[0].address,), **kw)


@pytest.fixture
def node(ledger, store, dev_accounts, tmp_path, sc) -> Iterator[RelayNode]:
    with relay_node(
        ledger, store, dev_accounts[RELAYER], tmp_path, policy=validated_by(sc), limits=ROOMY
    ) as n:
        yield n


def junk(n: int = 256 << 10, seed: int = 0) -> bytes:
    return os.urandom(n) if seed == 0 else bytes([seed % 256]) * n


# -- what is served ------------------------------------------------------------------------------


@pytest.mark.parametrize("open_budget", [0, 5], ids=["no-open-budget", "open-budget-5"])
def test_an_attackers_own_open_task_is_refused_and_costs_no_gas_and_no_disk(
    ledger, store, dev_accounts, tmp_path, sc, open_budget: int
) -> None:
    attacker = dev_accounts[ATTACKER]
    task = create_open_task(ledger, attacker)  # open, the attacker its own validator
    policy = validated_by(sc, open_budget=open_budget)
    with relay_node(ledger, store, dev_accounts[RELAYER], tmp_path, policy=policy) as node:
        nonce, balance = node.nonce(), node.balance()
        with node.http() as http:
            answers = []
            for i in range(5):
                data = junk(seed=i + 1)
                answers.append(post(http, sign(ledger, throwaway(), task, 0, data), data))
                assert not store.has(compute_cid(data))
        time.sleep(0.3)  # a batch would be due by now
        assert (node.nonce(), node.balance()) == (nonce, balance)
        assert node.service.relayer.pending() == 0
    for r in answers:
        assert r.status_code == 403, r.text
        detail = r.json()["detail"]
        assert f"does not serve task {task}" in detail and "--relay-task" in detail
    assert not ledger.is_validator(task, sc.validators[0].address)


def test_forty_throwaway_keys_not_admitted_are_refused_and_nothing_is_pinned(
    node: RelayNode, sc: Scenario, ledger: Ledger, store: ContentStore
) -> None:
    nonce, balance = node.nonce(), node.balance()
    with node.http() as http:
        codes = []
        cids = []
        for i in range(40):
            key = throwaway()
            su, data = honest_update(ledger, store, sc.task_id, key, seed=i)
            r = post(http, su, data)
            codes.append(r.status_code)
            cids.append(su.cid)
            assert "not an admitted contributor" in r.json()["detail"], r.text
            assert "add-contributor" in r.json()["detail"]
    assert codes == [403] * 40
    assert not any(store.has(cid) for cid in cids)
    assert (node.nonce(), node.balance()) == (nonce, balance)
    # ... and the task's budget was not touched by them: an admitted contributor is relayed
    su, data = honest_update(ledger, store, sc.task_id, sc.contributors[0], seed=99)
    with node.http() as http:
        assert post(http, su, data).status_code == 202
        assert wait_settled(http, su)["state"] == "submitted"


def test_an_allowlisted_task_is_served_without_validating_it(
    ledger, store, dev_accounts, tmp_path
) -> None:
    other = make_scenario(ledger, store, dev_accounts, n_contributors=4, min_updates=1)
    policy = RelayPolicy(tasks=frozenset({other.task_id}))  # --relay-task, no validator key
    with relay_node(ledger, store, dev_accounts[RELAYER], tmp_path, policy=policy) as node:
        su, data = honest_update(ledger, store, other.task_id, other.contributors[1], seed=3)
        with node.http() as http:
            assert post(http, su, data).status_code == 202
            assert wait_settled(http, su)["state"] == "submitted"


def test_strangers_to_a_served_open_task_are_relayed_only_within_its_round_budget(
    ledger, store, dev_accounts, tmp_path
) -> None:
    owner = dev_accounts[ATTACKER]  # a task owner with an open task this node validates
    task = create_open_task(ledger, owner)
    w3, contract = outsider_web3(ledger)
    validator = dev_accounts[1]
    transact(w3, owner, contract.functions.addValidator(task, validator.address))
    admitted = dev_accounts[2]
    transact(w3, owner, contract.functions.addContributor(task, admitted.address))
    policy = RelayPolicy(validators=(validator.address,), open_budget=2)
    with (
        relay_node(
            ledger, store, dev_accounts[RELAYER], tmp_path, policy=policy, limits=ROOMY
        ) as node,
        node.http() as http,
    ):
        strangers = [sign(ledger, throwaway(), task, 0, junk(4096, i + 1)) for i in range(3)]
        codes = [post(http, su, junk(4096, i + 1)) for i, su in enumerate(strangers)]
        mine = sign(ledger, admitted, task, 0, junk(4096, 9))
        own = post(http, mine, junk(4096, 9))
        assert [r.status_code for r in codes] == [202, 202, 429]
        assert "budget for contributors not admitted to open task" in codes[2].json()["detail"]
        assert int(codes[2].headers["Retry-After"]) >= 1
        assert not store.has(strangers[2].cid)
        assert own.status_code == 202, own.text  # an admitted contributor is not counted
        assert wait_settled(http, mine)["state"] == "submitted"


# -- budgets, and duplicates before any of them ------------------------------------------------


def test_replaying_a_victims_update_five_times_is_409_and_never_locks_the_victim_out(
    ledger, store, dev_accounts, tmp_path, sc
) -> None:
    """The contributor's bucket holds 2 updates and never refills in the test: with the old
    order (charge, then look for a duplicate) 5 replays left the victim 429 for good."""
    second = make_scenario(ledger, store, dev_accounts, n_contributors=4, min_updates=1)
    strict = RelayLimits(address_burst=2, address_per_s=1e-6, ip_burst=1000, ip_per_s=1000)
    victim = sc.contributors[0]
    with (
        relay_node(
            ledger, store, dev_accounts[RELAYER], tmp_path, policy=validated_by(sc), limits=strict
        ) as node,
        node.http() as http,
    ):
        su, data = honest_update(ledger, store, sc.task_id, victim, seed=1)
        assert post(http, su, data).status_code == 202
        queued = [post(http, su, data) for _ in range(5)]  # replayed while still queued ...
        done = wait_settled(http, su)
        submitted = [post(http, su, data) for _ in range(5)]  # ... and once on chain
        assert [r.status_code for r in queued + submitted] == [409] * 10
        assert all(r.json()["error"] == "DuplicateSubmission" for r in queued + submitted)
        assert "already submitted through this relay" in submitted[0].json()["detail"]
        assert done["state"] == "submitted"

        assert status(http, su).status_code == 200  # the victim's status query
        nxt, nxt_data = honest_update(ledger, store, second.task_id, victim, seed=2)
        r = post(http, nxt, nxt_data)  # the victim's next update
        assert r.status_code == 202, r.text
        assert wait_settled(http, nxt)["state"] == "submitted"


def test_replaying_an_update_already_on_chain_is_409_and_charges_nothing(
    ledger, store, dev_accounts, tmp_path, sc
) -> None:
    """The victim's signed update landed by someone else directly on chain (its signature is
    public once in a mempool); replaying it to the relay is the contract's 409."""
    strict = RelayLimits(address_burst=1, address_per_s=1e-6, task_updates_per_hour=2)
    victim = sc.contributors[1]
    su, data = honest_update(ledger, store, sc.task_id, victim, seed=4)
    w3, contract = outsider_web3(ledger)
    transact(w3, dev_accounts[ATTACKER], contract.functions.submitUpdateFor(*su.as_tuple()))
    assert ledger.has_submitted(sc.task_id, 0, victim.address)
    with (
        relay_node(
            ledger, store, dev_accounts[RELAYER], tmp_path, policy=validated_by(sc), limits=strict
        ) as node,
        node.http() as http,
    ):
        answers = [post(http, su, data) for _ in range(5)]
        assert [r.status_code for r in answers] == [409] * 5
        assert {r.json()["error"] for r in answers} == {"DuplicateSubmission"}
        assert node.service.by_address.wait(victim.address) == 0
        assert node.service.task_updates.wait(str(sc.task_id), 2.0) == 0
        assert not store.has(su.cid)


def test_a_tasks_budget_caps_what_its_contributors_together_get_relayed(
    ledger, store, dev_accounts, tmp_path, sc
) -> None:
    limits = RelayLimits(task_updates_per_hour=2, ip_burst=1000, ip_per_s=1000)
    with (
        relay_node(
            ledger, store, dev_accounts[RELAYER], tmp_path, policy=validated_by(sc), limits=limits
        ) as node,
        node.http() as http,
    ):
        sent = [
            honest_update(ledger, store, sc.task_id, c, seed=10 + i)
            for i, c in enumerate(sc.contributors[:3])
        ]
        codes = [post(http, su, data) for su, data in sent]
        assert [r.status_code for r in codes] == [202, 202, 429]
        assert (
            f"budget for task {sc.task_id} is spent: 2 updates per hour"
            in codes[2].json()["detail"]
        )
        assert not store.has(sent[2][0].cid)  # refused before it was pinned


def test_a_contributors_byte_budget_counts_what_is_pinned_for_it(
    ledger, store, dev_accounts, tmp_path, sc
) -> None:
    second = make_scenario(ledger, store, dev_accounts, n_contributors=4, min_updates=1)
    limits = RelayLimits(contributor_bytes_per_hour=300 << 10, ip_burst=1000, ip_per_s=1000)
    who = sc.contributors[2]
    with (
        relay_node(
            ledger, store, dev_accounts[RELAYER], tmp_path, policy=validated_by(sc), limits=limits
        ) as node,
        node.http() as http,
    ):
        big = junk(200 << 10, 7)
        first = post(http, sign(ledger, who, sc.task_id, 0, big), big)
        other = junk(200 << 10, 8)
        over = post(http, sign(ledger, who, second.task_id, 0, other), other)
    assert first.status_code == 202, first.text
    assert over.status_code == 429
    assert f"{who.address} has spent its relay budget of" in over.json()["detail"]
    assert not store.has(compute_cid(other))


# -- who the client is ---------------------------------------------------------------------------


def _forged(ledger: Ledger, sc: Scenario, i: int) -> tuple[SignedUpdate, bytes]:
    """A request that reaches the IP bucket and fails after it: a stranger's signature in an
    admitted contributor's name (422)."""
    data = junk(64, i + 1)
    su = sign(ledger, throwaway(), sc.task_id, 0, data)
    return replace(su, contributor=sc.contributors[3].address), data


@pytest.fixture
def proxied(ledger, store, dev_accounts, tmp_path, sc) -> Iterator[RelayNode]:
    """IP bucket of 3 requests that never refills; 127.0.0.2 is the one trusted proxy."""
    limits = RelayLimits(ip_burst=3, ip_per_s=1e-6)
    policy = validated_by(sc, trusted_proxies=(ipaddress.ip_network("127.0.0.2/32"),))
    with relay_node(
        ledger, store, dev_accounts[RELAYER], tmp_path, policy=policy, limits=limits
    ) as n:
        yield n


def test_x_forwarded_for_from_an_untrusted_peer_buys_no_fresh_bucket(
    proxied: RelayNode, ledger: Ledger, sc: Scenario
) -> None:
    with proxied.http() as http:  # from 127.0.0.1: not a trusted proxy
        codes = []
        for i in range(6):
            su, data = _forged(ledger, sc, i)
            forged = {"X-Forwarded-For": f"198.51.100.{i}", "Forwarded": f"for=198.51.100.{i}"}
            codes.append(post(http, su, data, **forged).status_code)
    assert codes == [422, 422, 422, 429, 429, 429]


def test_x_forwarded_for_from_a_configured_proxy_names_the_client(
    proxied: RelayNode, ledger: Ledger, sc: Scenario
) -> None:
    with proxied.http(source="127.0.0.2") as http:  # the trusted proxy
        fresh = []
        for i in range(6):  # six clients behind the proxy: one request each
            su, data = _forged(ledger, sc, i)
            hdr = {"X-Forwarded-For": f"203.0.113.{i}"}
            fresh.append(post(http, su, data, **hdr).status_code)
        one = []
        for i in range(4):  # one client behind the proxy, prepending forged hops of its own
            su, data = _forged(ledger, sc, 10 + i)
            xff = f"192.0.2.{i}, 203.0.113.77"
            one.append(post(http, su, data, **{"X-Forwarded-For": xff}).status_code)
    assert fresh == [422] * 6
    assert one == [422, 422, 422, 429]


def test_only_the_configured_proxy_header_is_read(
    ledger, store, dev_accounts, tmp_path, sc
) -> None:
    """A proxy that sets RFC 7239 Forwarded passes the client's own X-Forwarded-For through:
    reading that one too would let the client pick its address."""
    limits = RelayLimits(ip_burst=3, ip_per_s=1e-6)
    policy = validated_by(
        sc,
        trusted_proxies=(ipaddress.ip_network("127.0.0.2/32"),),
        proxy_header="forwarded",
    )
    with (
        relay_node(
            ledger, store, dev_accounts[RELAYER], tmp_path, policy=policy, limits=limits
        ) as node,
        node.http(source="127.0.0.2") as http,
    ):
        honoured = []
        for i in range(4):
            su, data = _forged(ledger, sc, i)
            hdr = {"Forwarded": f'for="[2001:db8:{i}::1]:4711";proto=https'}
            honoured.append(post(http, su, data, **hdr).status_code)
        ignored = []
        for i in range(4):  # Forwarded names one client; its own X-Forwarded-For is not read
            su, data = _forged(ledger, sc, 20 + i)
            hdr = {"Forwarded": "for=203.0.113.9", "X-Forwarded-For": f"198.51.100.{i}"}
            ignored.append(post(http, su, data, **hdr).status_code)
    assert honoured == [422] * 4
    assert ignored == [422, 422, 422, 429]


# -- the real `fedledger serve --relay-key` ------------------------------------------------------


def _fedledger() -> list[str]:
    script = Path(sys.executable).with_name("fedledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedledger.cli.main"]


def test_fedledger_serve_relays_by_its_flags_and_ignores_forged_proxy_headers(
    ledger, store, dev_accounts, tmp_path, sc
) -> None:
    """`fedledger serve --key val --relay-key relayer --relay-task T --trusted-proxy 127.0.0.2`:
    the validated task and T are served, the attacker's open task is not; X-Forwarded-For is
    believed from 127.0.0.2 only (uvicorn's own proxy handling, which believes 127.0.0.1, off).
    The IP bucket is 3 requests that never refill (FEDLEDGER_RELAY_IP_BURST / _PER_S)."""
    listed = make_scenario(ledger, store, dev_accounts, n_contributors=4, min_updates=1)
    attacker_task = create_open_task(ledger, dev_accounts[ATTACKER])
    home = tmp_path  # the ledger fixture deployed into tmp_path/deployments: found from home
    password = "relay test"
    keys = dev_private_keys(RELAYER + 1)
    for name, index in (("val", 1), ("relayer", RELAYER)):
        new_key(home / "keystore", name, password, private_key=keys[index], scrypt_n=DEV_SCRYPT_N)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
    env.update(
        FEDLEDGER_HOME=str(home),
        FEDLEDGER_RPC_URL=str(ledger.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
        FEDLEDGER_PASSWORD=password,
        FEDLEDGER_DB=f"sqlite:///{tmp_path / 'serve.db'}",
        FEDLEDGER_RELAY_IP_BURST="3",
        FEDLEDGER_RELAY_IP_PER_S="0.0001",
    )
    args = ["serve", "--key", "val", "--relay-key", "relayer", "--port", str(port),
            "--relay-task", str(listed.task_id), "--trusted-proxy", "127.0.0.2",
            "--no-worker-process", "--no-eval-dataset"]  # fmt: skip
    log_path = tmp_path / "serve.log"
    relayer = dev_accounts[RELAYER].address
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_fedledger(), *args], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, "fedledger serve did not start"
            time.sleep(0.3)
        node = RelayNode(None, url, dev_accounts[RELAYER], ledger, store)  # type: ignore[arg-type]
        with node.http() as attacker:
            nonce = ledger.w3.eth.get_transaction_count(relayer)
            data = junk(4096, 5)
            refused = post(attacker, sign(ledger, throwaway(), attacker_task, 0, data), data)
            assert refused.status_code == 403, refused.text
            assert f"does not serve task {attacker_task}" in refused.json()["detail"]
            assert ledger.w3.eth.get_transaction_count(relayer) == nonce
        with node.http(source="127.0.0.3") as honest:
            for scen in (sc, listed):
                su, body = honest_update(ledger, store, scen.task_id, scen.contributors[0], 7)
                assert post(honest, su, body).status_code == 202
                assert wait_settled(honest, su)["state"] == "submitted"
        with node.http(source="127.0.0.4") as forger:  # forged headers: one bucket still
            codes = []
            for i in range(5):
                hdr = {"X-Forwarded-For": f"10.1.0.{i}", "Forwarded": f"for=10.1.1.{i}"}
                codes.append(post(forger, *_forged(ledger, sc, i), **hdr).status_code)
        with node.http(source="127.0.0.2") as proxy:  # the trusted proxy: one bucket each
            behind = []
            for i in range(5):
                hdr = {"X-Forwarded-For": f"10.2.0.{i}"}
                behind.append(post(proxy, *_forged(ledger, sc, 10 + i), **hdr).status_code)
        assert codes == [422, 422, 422, 429, 429]
        assert behind == [422] * 5
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
