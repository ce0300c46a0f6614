"""Scale: Flower's simulation engine (Ray backend) with 10, 100 and 1,000 virtual clients, every
update relayed to a fedledger ledger.

For each size, on a fresh local anvil: a task of the 64-16-10 MLP on digits with
``minUpdates = maxUpdates = clients`` (so a round closes when every client's update is
recorded), the clients' keys in the keystore and admitted, and ``fedledger serve --key
validator --relay-key relayer`` (REST API and relay in one process, the indexer and validator
in its worker process).  Then ``flwr run examples/flower_app`` on a SuperLink started here, in
``"ledger"`` mode: each virtual client trains on its own draw of digits, and its
:class:`fedledger.flower.LedgerMod` signs the update and posts it to the relayer (the client
pays no gas, does not wait for the relayer); the ServerApp's
:class:`fedledger.flower.LedgerStrategy` waits for the validator and takes the attested
aggregate as the next global model.  Meanwhile a reader process (``benchmarks/load.py``'s)
hammers ``GET /contributions``, ``/tasks`` and ``/health``, and the backend's RSS is sampled
every second (``load.RssSampler``).

Figures per size:

- ``relayed_per_second``: updates recorded on chain per second, from the ServerApp sending
  the round to the last update mined (training, signing, relaying, batching and mining:
  end to end);
- ``gas_per_update``: gas of the relayer's transactions over the updates they recorded;
- ``round_seconds``: from the round's last update mined to the round final (the validator
  seals, fetches and judges every update, aggregates and attests);
- ``validator_peak_rss_mb``: the peak RSS of ``fedledger serve`` (API and worker processes);
- ``rest_p99_ms``: p99 of the reader's REST requests during the run;
- ``lost``: updates the clients handed over that the API does not list; ``duplicated``: an
  update listed twice (both must be 0).

Prints a table; the last line is one JSON object for the largest size (``contributors``,
``relayed_per_second``, ``gas_per_update``, ``round_seconds``, ``validator_peak_rss_mb``,
``rest_p99_ms``, ``lost``, ``duplicated``).  Run: ``.venv/bin/python benchmarks/scale.py``
(sizes 10, 100, 1000); ``--quick`` is a smoke run (10 and 30 clients).  ``--client-cpus``
sets Ray's CPUs per virtual client (1: as many clients at once as cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "flower_app"))

from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402
from fedledger_flower_app.task import MODEL  # noqa: E402
from load import RssSampler, all_contributions, pct  # noqa: E402

import fedledger  # noqa: E402
from fedledger.chain.devnet import Devnet, dev_private_keys, free_port, start_anvil  # noqa: E402
from fedledger.chain.keys import DEV_SCRYPT_N, new_key  # noqa: E402
from fedledger.chain.ledger import NonceManager, wait_all  # noqa: E402
from fedledger.protocol.taskspec import TaskSpec, TrainingParams  # noqa: E402

PASSWORD = "scale benchmark password"
APP = ROOT / "examples" / "flower_app"
BIN = Path(sys.executable).parent
LOAD = ROOT / "benchmarks" / "load.py"


def client_key(i: int) -> str:
    """Virtual client i's private key (deterministic; relayed clients need no ether)."""
    return "0x" + hashlib.sha256(f"fedledger scale client {i}".encode()).hexdigest()


@dataclass
class Watch:
    """The task's round as the chain shows it, polled every 50 ms: when its last update was
    recorded and when it became final."""

    first_at: float = 0.0
    full_at: float = 0.0
    final_at: float = 0.0


def watch_round(
    session: fedledger.Session, task_id: int, n: int, w: Watch, stop: threading.Event
) -> None:
    led = session.ledger
    while not stop.is_set():
        t = led.get_task(task_id)
        now = time.time()
        if not w.first_at and (int(t["updateCount"]) > 0 or int(t["currentRound"]) > 0):
            w.first_at = now
        if not w.full_at and (int(t["updateCount"]) >= n or int(t["currentRound"]) > 0):
            w.full_at = now
        if int(t["currentRound"]) > 0:
            w.final_at = now
            return
        stop.wait(0.05)


class Readers(threading.Thread):
    """``load.py --reader`` processes back to back (each reads for ``window_s``) until stopped:
    REST latencies during the whole run."""

    def __init__(self, api: str, task_id: int, addresses: list[str], window_s: float = 10.0):
        super().__init__(daemon=True)
        self.api, self.task_id, self.addresses, self.window_s = api, task_id, addresses, window_s
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        seed = 0
        while not self.stop.is_set():
            proc = subprocess.Popen(
                [sys.executable, str(LOAD), "--reader", self.api, "--seed", str(seed),
                 "--task-ids", str(self.task_id), "--addresses", ",".join(self.addresses[:200])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdout is not None and proc.stdin is not None
            if proc.stdout.readline().strip() != "READY":
                proc.kill()
                return
            proc.stdin.write(f"{time.time() + self.window_s!r}\n")
            proc.stdin.flush()
            out, _ = proc.communicate(timeout=self.window_s + 120)
            if not out.strip():  # the API went away (the run ended badly)
                return
            one = json.loads(out.strip().splitlines()[-1])
            self.latencies += one["latencies"]
            self.errors += one["errors"]
            seed += 1


def relayer_gas(session: fedledger.Session, relayer: str, first_block: int) -> tuple[int, int]:
    """Gas used by ``relayer``'s transactions from ``first_block`` on, and how many."""
    w3 = session.ledger.w3
    gas = txs = 0
    for b in range(first_block, int(w3.eth.block_number) + 1):
        block = w3.eth.get_block(b, full_transactions=True)
        for tx in block["transactions"]:
            if str(tx["from"]).lower() == relayer.lower():  # type: ignore[index]
                gas += int(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])  # type: ignore[index]
                txs += 1
    return gas, txs


def setup(
    chain: Devnet, home: Path, n: int
) -> tuple[fedledger.Session, int, list[LocalAccount], list[LocalAccount]]:
    """Deploy, create the task, write the clients' keys and admit them; (owner session, task
    id, [owner, validator, relayer], clients)."""
    staff = [Account.from_key(k) for k in dev_private_keys(3)]
    owner = fedledger.deploy(account=staff[0], rpc_url=chain.url, home=home)
    spec = TaskSpec(
        model=MODEL,
        dataset="digits",
        training=TrainingParams(lr=0.05),
        aggregation={"rule": "fedavg"},
        fetch_timeout_s=30,
    )
    task = owner.create_task(spec, max_samples=1000, min_updates=n, max_updates=n)
    for name, acct in (("validator", staff[1]), ("relayer", staff[2])):
        new_key(home / "keystore", name, PASSWORD, private_key=acct.key, scrypt_n=DEV_SCRYPT_N)
    clients = []
    for i in range(n):
        info = new_key(
            home / "keystore",
            f"client-{i}",
            PASSWORD,
            private_key=client_key(i),
            scrypt_n=DEV_SCRYPT_N,
        )
        clients.append(Account.from_key(client_key(i)))
        assert info.address == clients[-1].address
    led = owner.ledger.with_account(staff[0], NonceManager(owner.ledger.w3))
    assert led.sender is not None
    fns = [led.contract.functions.addContributor(task.id, c.address) for c in clients]
    fns.append(led.contract.functions.addValidator(task.id, staff[1].address))
    pend = [led.sender.send(fn, label="admit", gas=200_000) for fn in fns]
    wait_all(led.sender, pend)
    return owner, task.id, staff, clients


def wait_health(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + 90
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise SystemExit(f"{url} did not answer: see {log}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_size(
    n: int, work: Path, link: int, env: dict[str, str], client_cpus: int
) -> dict[str, Any]:
    home = work / f"home-{n}"
    with start_anvil(accounts=3) as chain:
        t0 = time.time()
        owner, task_id, staff, clients = setup(chain, home, n)
        setup_s = time.time() - t0
        env = {**env, "FEDLEDGER_HOME": str(home), "FEDLEDGER_RPC_URL": chain.url}
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        log = open(work / f"serve-{n}.log", "wb")  # noqa: SIM115 - closed below
        serve = subprocess.Popen(
            [str(BIN / "fedledger"), "serve", "--key", "validator", "--relay-key", "relayer",
             "--port", str(port), "--no-eval-dataset"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        # the simulation runs in the SuperLink's subprocesses: they take its environment
        link_log = open(work / f"superlink-{n}.log", "wb")  # noqa: SIM115 - closed below
        superlink = subprocess.Popen(
            [str(BIN / "flower-superlink"), "--insecure", "--simulation",
             "--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(link),
             "--disable-runtime-dependency-installation"],
            env=env, stdin=subprocess.DEVNULL, stdout=link_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_health(f"{api}/health", serve, Path(log.name))
            wait_health(f"http://127.0.0.1:{link}/health", superlink, Path(link_log.name))
            rss = RssSampler(serve.pid)
            rss.start()
            readers = Readers(api, task_id, [c.address for c in clients])
            readers.start()
            first_block = int(owner.ledger.w3.eth.block_number) + 1
            watch, stop = Watch(), threading.Event()
            watcher = threading.Thread(target=watch_round, args=(owner, task_id, n, watch, stop))
            watcher.start()
            result = work / f"result-{n}.json"
            run_config = " ".join(
                [
                    f"fedledger-task-id={task_id}",
                    'fedledger-mode="ledger"',
                    f'fedledger-relay="{api}"',
                    "fedledger-wait-relayed=false",
                    "num-server-rounds=1",
                    "samples-per-client=32",
                    f'result-file="{result}"',
                ]
            )
            started = time.time()
            with open(work / f"flwr-{n}.log", "w") as flog:
                done = subprocess.run(
                    [str(BIN / "flwr"), "run", str(APP), "sim", "--stream",
                     "--federation-config", f"num-supernodes={n}",
                     "--federation-config", f"client-resources-num-cpus={client_cpus}",
                     "--run-config", run_config],
                    env=env, stdout=flog, stderr=subprocess.STDOUT, timeout=3600, cwd=work,
                )  # fmt: skip
            flwr_s = time.time() - started
            stop.set()
            watcher.join()
            if not result.exists():
                raise SystemExit(f"flwr run wrote no result ({done.returncode}): see {flog.name}")
            out = json.loads(result.read_text())
            (rnd,) = out["rounds"]
            handed = [v for v in rnd["verdicts"]]
            # drain: every update the clients handed over, listed with its verdict
            drain_end = time.time() + 120
            rows: list[dict[str, Any]] = []
            while time.time() < drain_end:
                rows = all_contributions(api, task_id)
                if len(rows) >= len(handed) and all(r["status"] != "PENDING" for r in rows):
                    break
                time.sleep(0.5)
            readers.stop.set()
            readers.join(timeout=180)
            rss.stop.set()
            gas, txs = relayer_gas(owner, staff[2].address, first_block)
        finally:
            stop_process(superlink)
            stop_process(serve)
            log.close()
            link_log.close()
    ids = [r["update_id"] for r in rows]
    listed = {r["contributor"].lower() for r in rows}
    lost = sum(1 for v in handed if v["contributor"].lower() not in listed)
    duplicated = (len(ids) - len(set(ids))) + (len(rows) - len(listed))
    recorded = len(set(ids))
    relay_s = watch.full_at - rnd["sent_at"]
    lat_ms = [x * 1000 for x in readers.latencies]
    return {
        "contributors": n,
        "relayed_per_second": round(recorded / relay_s, 2) if relay_s > 0 else 0.0,
        "gas_per_update": round(gas / recorded) if recorded else None,
        "round_seconds": round(watch.final_at - watch.full_at, 2),
        "validator_peak_rss_mb": round(max(m for _, m in rss.samples), 1) if rss.samples else None,
        "rest_p99_ms": round(pct(lat_ms, 99), 2),
        "lost": lost,
        "duplicated": duplicated,
        # context
        "handed_over": len(handed),
        "failures": rnd["failures"],
        "recorded": recorded,
        "accepted": sum(1 for v in handed if v["verdict"] == "ACCEPTED"),
        "relay_txs": txs,
        "relay_window_s": round(relay_s, 2),
        "first_update_after_s": round(watch.first_at - rnd["sent_at"], 2),
        "relayed_per_second_after_first": round(
            (recorded - 1) / (watch.full_at - watch.first_at), 2
        )
        if watch.full_at > watch.first_at
        else None,
        "flwr_run_s": round(flwr_s, 1),
        "setup_s": round(setup_s, 1),
        "rest_requests": len(lat_ms),
        "rest_errors": readers.errors,
        "rest_p50_ms": round(pct(lat_ms, 50), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="virtual clients per run")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 and 30 clients")
    parser.add_argument("--client-cpus", type=int, default=1, help="Ray CPUs per client")
    args = parser.parse_args()
    sizes = [10, 30] if args.quick else [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="fedledger-scale-"))
    flwr_home = work / "flwr"
    flwr_home.mkdir()
    link = free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{link}"\n'
        "insecure = true\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDLEDGER_", "FLWR_"))}
    env.update(
        FEDLEDGER_PASSWORD=PASSWORD,
        FLWR_HOME=str(flwr_home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        # one host posts every client's update: the relay's per-IP limit is for the internet
        FEDLEDGER_RELAY_IP_BURST="1000000",
        FEDLEDGER_RELAY_IP_PER_S="1000000",
    )
    results = []
    for n in sizes:
        print(f"scale: {n} virtual clients ...", flush=True)
        results.append(run_size(n, work, link, env, args.client_cpus))
        print(json.dumps(results[-1]), flush=True)

    cols = [
        ("contributors", "clients"),
        ("relayed_per_second", "relayed/s"),
        ("gas_per_update", "gas/update"),
        ("round_seconds", "round s"),
        ("validator_peak_rss_mb", "RSS MB"),
        ("rest_p99_ms", "REST p99 ms"),
        ("lost", "lost"),
        ("duplicated", "dup"),
        ("accepted", "accepted"),
        ("flwr_run_s", "flwr run s"),
    ]
    print(f"\nscale: Flower simulation (Ray), relayed, {os.cpu_count()} cores ({work})")
    print("  " + "  ".join(f"{h:>11}" for _, h in cols))
    for r in results:
        print("  " + "  ".join(f"{r[k]!s:>11}" for k, _ in cols))
    top = results[-1]
    keys = ("contributors", "relayed_per_second", "gas_per_update", "round_seconds",
            "validator_peak_rss_mb", "rest_p99_ms", "lost", "duplicated")  # fmt: skip
    print(json.dumps({k: top[k] for k in keys}))


if __name__ == "__main__":
    main()
