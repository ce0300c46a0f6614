"""Load test: many contributors submitting while readers hammer the REST API of a running backend.

On a local anvil: ``--tasks`` open tasks with ``minUpdates = maxUpdates = --contributors``, so
each round is ready as soon as every contributor has submitted, and a validator running in the
backend seals, judges and attests it at once: rounds keep turning.  The backend runs as
``fedledger serve`` does: REST API and relay (with its journal) in one process, the worker
(indexer + validator) in a supervised child (``--in-process``: a thread of the API process).
Each round, half of the contributors submit through the SDK's pipelined path (``Sender.send``,
receipts awaited together) and half through ``POST /relay/updates`` (EIP-712, batched
``submitBatch``: ledger v2 records a relayed batch as one ``UpdatesRelayed`` event of packed
records, update ids ``(taskId << 32) | seq``; the owner admits the relayed half, since the relay
serves only admitted contributors of an open task).  Meanwhile ``--readers`` processes (one
client each) hammer ``GET /contributions`` (pages, filters, cursors), ``/tasks`` and
``/health``.  The backend's RSS (API process and worker) is sampled every second.

When ``--seconds`` (default 60) are up, submission stops, the backend drains, and every update
sent is compared with the API's contributions: ``lost`` = mined but missing from the API,
``duplicated`` = an update id listed twice, or more rows than updates sent; ``mismatched`` =
a row whose contributor, round or content hash differs from what was sent.

Targets: lost = 0, duplicated = 0, REST p99 <= 50 ms under load.  Prints a table; the last line
is one JSON object (``accepted_per_s``, ``rest_p50_ms``, ``rest_p99_ms``, ``lost``,
``duplicated``, ``rss_*``...).  Run: ``.venv/bin/python benchmarks/load.py [--seconds 60]``;
``--quick`` is a smoke run (20 s, 1 task, 8 contributors, 2 readers).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402

from fedledger.chain.devnet import dev_private_keys, free_port, start_anvil  # noqa: E402
from fedledger.chain.ledger import Ledger, NonceManager, connect  # noqa: E402
from fedledger.content.cid import compute_cid  # noqa: E402
from fedledger.content.store import open_store  # noqa: E402
from fedledger.flows.task import create_task, load_task  # noqa: E402
from fedledger.protocol import codec  # noqa: E402
from fedledger.protocol.taskspec import TaskSpec, TrainingParams  # noqa: E402

# -- the backend, in its own process -----------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """``--serve``: Backend (indexer + validator) + REST API + relay on ``--port``."""
    import logging

    import uvicorn

    from fedledger_backend.api.app import freeze_startup_heap
    from fedledger_backend.db import Database
    from fedledger_backend.relay_service import RelayLimits, RelayPolicy, RelayService
    from fedledger_backend.service import Backend
    from fedledger_backend.worker_process import WorkerConfig, WorkerProcess

    logging.basicConfig(level=logging.WARNING)
    w3 = connect(args.rpc)
    ledger = Ledger(w3, args.contract, from_block=args.from_block)
    store = open_store(None, Path(args.home))
    ledger.log_chunk = 2000
    backend = Backend(ledger=ledger, store=store, db=Database(f"sqlite:///{args.db}"))
    if args.in_process:
        worker: Backend | WorkerProcess = Backend(
            ledger=ledger,
            store=store,
            db=backend.db,
            account=Account.from_key(args.validator_key),
            evaluate=False,
            poll_s=0.1,
        )
    else:
        worker = WorkerProcess(
            WorkerConfig(
                rpc_url=args.rpc,
                contract=args.contract,
                from_block=args.from_block,
                db_url=f"sqlite:///{args.db}",
                home=args.home,
                evaluate=False,
                poll_s=0.1,
                log_level="WARNING",
            ),
            private_key=bytes.fromhex(args.validator_key.removeprefix("0x")),
        )
    worker.start()
    relayer = RelayService(
        Ledger(w3, args.contract, from_block=args.from_block).with_account(
            Account.from_key(args.relayer_key)
        ),
        store,
        limits=RelayLimits(address_burst=100, address_per_s=100, ip_burst=10_000, ip_per_s=10_000),
        batch_size=64,
        max_wait_s=0.2,
        journal_path=Path(args.home) / "relay-journal.sqlite3",  # as `fedledger serve` runs it
        # as `fedledger serve --key <validator> --relay-key ...`: the tasks it validates
        policy=RelayPolicy(validators=(Account.from_key(args.validator_key).address,)),
    )
    app = backend.app(relayer, worker.status)
    freeze_startup_heap()  # as `fedledger serve` does
    print("READY", flush=True)
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        worker.stop()


# -- readers, in their own process -------------------------------------------------------------


def reader(url: str, seed: int, tasks: list[int], addresses: list[str]) -> None:
    """``--reader``: one REST client in its own process (so no client shares a GIL with another
    and the latencies measured are the server's, not the client's).  Prints ``READY`` once its
    imports are done, reads the time to stop at (``time.time()``) from stdin, reads until then,
    and prints one JSON line of latencies, request kinds and errors.  (The driver starts the
    submission clock only when every reader is ready: on a loaded 2-core machine a reader's
    imports took longer than a 20 s run.)

    The client is the standard library's keep-alive ``http.client``, and a body is parsed only
    when the reader follows its cursor: the readers share the cores with the backend, and a
    remote client's own CPU would not come out of the server's (httpx plus parsing every page
    cost about 1.2 ms of CPU a request here, this about a quarter of that)."""
    print("READY", flush=True)
    stop_at = float(sys.stdin.readline())
    rng = random.Random(seed)
    lat: list[float] = []
    kinds: list[str] = []
    bad = 0
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def get(path: str, params: dict[str, Any]) -> tuple[int, bytes]:
        target = f"{path}?{urllib.parse.urlencode(params)}" if params else path
        t0 = time.perf_counter()
        conn.request("GET", target)
        r = conn.getresponse()
        body = r.read()
        lat.append(time.perf_counter() - t0)
        kinds.append(_kind(path, params))
        return r.status, body

    while time.time() < stop_at:
        pick = rng.random()
        params: dict[str, Any] = {"limit": rng.choice([10, 50, 200])}
        if pick < 0.1:
            path, params = "/health", {}
        elif pick < 0.2:
            path = "/tasks"
        else:
            path = "/contributions"
            if rng.random() < 0.6:
                params["task_id"] = rng.choice(tasks)
            if rng.random() < 0.3:
                params["contributor"] = rng.choice(addresses)
            if rng.random() < 0.2:
                params["status"] = rng.choice(["ACCEPTED", "PENDING", "OUTLIER"])
            if rng.random() < 0.2:
                params["order"] = "desc"
        status, body = get(path, params)
        if status != 200:
            bad += 1
        elif path == "/contributions" and rng.random() < 0.3:
            nxt = json.loads(body).get("next_cursor")
            if nxt:
                params["cursor"] = nxt
                status, _ = get(path, params)
                bad += status != 200
    conn.close()
    print(json.dumps({"latencies": lat, "kinds": kinds, "errors": bad}), flush=True)


def _kind(path: str, params: dict[str, Any]) -> str:
    if path != "/contributions":
        return path
    return f"/contributions limit={params['limit']}" + (" +cursor" if "cursor" in params else "")


# -- the driver --------------------------------------------------------------------------------


@dataclass
class Sent:
    task_id: int
    round: int
    contributor: str
    content_hash: str
    path: str  # "sdk" | "relay"
    update_id: int | None = None
    failed: str | None = None


class RssSampler(threading.Thread):
    """The backend's RSS every second: the API process plus its children (the worker)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (t, MiB)
        self.stop = threading.Event()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        out = [pid]
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            for kid in kids:
                with contextlib.suppress(OSError):
                    out += RssSampler._tree(int(kid))
        return out

    @staticmethod
    def _rss_kib(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            try:
                total = sum(self._rss_kib(p) for p in self._tree(self.pid))
            except OSError:
                return
            self.samples.append((time.monotonic() - t0, total / 1024))
            self.stop.wait(1.0)


def make_update(
    template: dict[str, np.ndarray], task_id: int, round_: int, base: str, seed: int, who: str
) -> bytes:
    """A delta near the round's common direction (so the screen accepts it), with its own noise,
    bound to ``who``, its submitter."""
    common = np.random.default_rng((task_id, round_))
    rng = np.random.default_rng(seed)
    delta = {
        k: (common.standard_normal(v.shape) * 1e-2 + rng.standard_normal(v.shape) * 1e-3).astype(
            np.float32
        )
        for k, v in template.items()
    }
    return codec.encode_update(
        delta, task_id=task_id, round=round_, base_hash=base, contributor=who
    )


def drive_task(
    ledger: Ledger,
    store: Any,
    api: str,
    task_id: int,
    sdk: list[Ledger],
    relay: list[LocalAccount],
    template: dict[str, np.ndarray],
    stop_at: float,
    sent: list[Sent],
    lock: threading.Lock,
) -> None:
    """Round after round: every contributor submits once, then wait for the round to turn."""
    http = httpx.Client(base_url=api, timeout=30)
    pool = ThreadPoolExecutor(max_workers=8)
    round_ = ledger.current_round(task_id)
    while time.time() < stop_at:
        # v2's getTask names no global model: the last final round's result does
        base = load_task(ledger, store, task_id).global_hash
        mine: list[Sent] = []
        pendings = []
        for i, c in enumerate(sdk):
            assert c.sender is not None
            seed = hash((task_id, round_, i)) % 2**32
            data = make_update(template, task_id, round_, base, seed, c.sender.address)
            cid = store.put(data)
            h = codec.sha256_hex(data)
            fn = c.submit_update_fn(task_id, round_, h, cid, 100)
            pendings.append((c, c.sender.send(fn, label="submitUpdate", gas=400_000)))
            mine.append(Sent(task_id, round_, c.sender.address, h, "sdk"))

        def relay_one(j: int, acct: LocalAccount, round_: int = round_, base: str = base) -> Sent:
            seed = hash((task_id, round_, 1000 + j)) % 2**32
            data = make_update(template, task_id, round_, base, seed, acct.address)
            h = codec.sha256_hex(data)
            su = ledger.sign_update(
                acct, task_id, round_, h, compute_cid(data), 100, int(time.time()) + 3600
            )
            body = {"signed": su.to_json(), "content": base64.b64encode(data).decode()}
            r = http.post("/relay/updates", json=body)
            s = Sent(task_id, round_, acct.address, h, "relay")
            if r.status_code != 202:
                s.failed = f"{r.status_code} {r.text[:120]}"
            return s

        mine += list(pool.map(lambda a: relay_one(*a), enumerate(relay)))
        for (c, p), s in zip(pendings, mine, strict=False):
            assert c.sender is not None
            receipt = c.sender.wait(p)
            s.update_id = ledger.update_ids(receipt)[0]
        with lock:
            sent.extend(mine)
        # wait for the round to turn (the validator finalises it)
        deadline = time.time() + 120
        while ledger.current_round(task_id) == round_ and time.time() < deadline:
            time.sleep(0.05)
        round_ += 1
    http.close()


def server_latency(metrics: str) -> dict[str, float]:
    """From the API's own histogram (/metrics): GET requests, as the server timed them (from the
    ASGI call to the last body byte: no queueing in the kernel or the client)."""
    buckets: dict[float, float] = {}
    for line in metrics.splitlines():
        if line.startswith("fedledger_http_request_duration_seconds_bucket{") and (
            'method="GET"' in line
        ):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return {}
    p99 = min(b for b, n in buckets.items() if n >= 0.99 * total)
    return {
        "server_get_requests": total,
        "server_p99_bucket_ms": p99 * 1000,
        "server_share_le_50ms": round(buckets.get(0.05, 0.0) / total, 4),
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def all_contributions(api: str, task_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=api, timeout=30) as http:
        while True:
            params: dict[str, Any] = {"task_id": task_id, "limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/contributions", params=params).json()
            rows += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="submission time")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--contributors", type=int, default=16, help="per round, per task")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--drain-s", type=float, default=90.0, help="wait for the last rounds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 20 s, 1 task, 8 contributors, 2 readers, 60 s drain at most",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the worker as a thread of the API process (the old layout) instead of in its own",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="CPU niceness of the load generators (this driver and the readers), which share the "
        "machine's cores with the backend (a niced reader also times its own waits for the CPU)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--task-ids", help=argparse.SUPPRESS)
    parser.add_argument("--addresses", help=argparse.SUPPRESS)
    for name in ("rpc", "contract", "db", "home", "validator-key", "relayer-key"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--from-block", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.tasks, args.contributors, args.readers = 20.0, 1, 8, 2
        args.drain_s = min(args.drain_s, 60.0)
    if args.serve:
        serve(args)
        return
    if args.reader:
        tasks = [int(t) for t in args.task_ids.split(",")]
        reader(args.reader, args.seed, tasks, args.addresses.split(","))
        return

    # torch only here: the reader processes import this module too, and start faster without it
    from fedledger.learning.models import build_model, state_to_numpy

    n_acc = args.contributors + 3
    keys = dev_private_keys(n_acc)
    owner, validator, relayer = (Account.from_key(k) for k in keys[:3])
    contributors = [Account.from_key(k) for k in keys[3:]]
    work = Path(tempfile.mkdtemp(prefix="fedledger-load-"))
    with start_anvil(accounts=n_acc) as dn:
        w3 = connect(dn.url)
        ledger = Ledger.deploy(w3, owner)
        store = open_store(None, work / "home")
        spec = TaskSpec(
            model="mlp_digits",
            dataset="digits",
            training=TrainingParams(epochs=1, lr=0.1),
            aggregation={"rule": "fedavg"},
            fetch_timeout_s=10,
        )
        initial = state_to_numpy(build_model("mlp_digits", seed=0))
        task_ids = []
        for _ in range(args.tasks):
            tid = create_task(
                ledger,
                store,
                spec,
                initial,
                max_samples=1000,  # every update below claims 100
                min_updates=args.contributors,
                max_updates=args.contributors,
                open_=True,
            )
            ledger.add_validator(tid, validator.address)
            # The relay serves the tasks its validator validates, but of an open task only the
            # admitted contributors (outside a --relay-open-budget): admit the relayed half.
            for c in contributors[args.contributors // 2 :]:
                ledger.add_contributor(tid, c.address)
            task_ids.append(tid)

        port = free_port()
        api = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--rpc", dn.url,
                "--contract", ledger.address,
                "--from-block", str(ledger.from_block),
                "--db", str(work / "index.db"),
                "--home", str(work / "home"),
                "--validator-key", keys[1],
                "--relayer-key", keys[2],
                "--port", str(port),
                *(["--in-process"] if args.in_process else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            rss = RssSampler(proc.pid)
            rss.start()
            if args.client_nice:  # after anvil and the backend started: they keep niceness 0
                os.nice(args.client_nice)

            half = args.contributors // 2
            nonces = NonceManager(w3)
            sdk = [ledger.with_account(c, nonces) for c in contributors[:half]]
            relay = contributors[half:]
            reader_procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--reader", api,
                        "--seed", str(i),
                        "--task-ids", ",".join(map(str, task_ids)),
                        "--addresses", ",".join(c.address for c in contributors),
                        "--client-nice", "0",  # inherited from this driver
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(args.readers)
            ]  # fmt: skip
            for rp in reader_procs:
                assert rp.stdout is not None and rp.stdout.readline().strip() == "READY"
            start = time.time()
            stop_at = start + args.seconds
            for rp in reader_procs:
                assert rp.stdin is not None
                rp.stdin.write(f"{stop_at!r}\n")
                rp.stdin.flush()  # communicate() closes it
            sent: list[Sent] = []
            lock = threading.Lock()
            drivers = [
                threading.Thread(
                    target=drive_task,
                    args=(
                        Ledger(w3, ledger.address, from_block=ledger.from_block),
                        store,
                        api,
                        tid,
                        sdk,
                        relay,
                        initial,
                        stop_at,
                        sent,
                        lock,
                    ),
                )
                for tid in task_ids
            ]
            for d in drivers:
                d.start()
            for d in drivers:
                d.join()
            submit_end = time.time()
            reads: dict[str, Any] = {"latencies": [], "kinds": [], "errors": 0}
            for rp in reader_procs:
                out, _ = rp.communicate(timeout=120)
                one = json.loads(out.strip().splitlines()[-1])
                for key in ("latencies", "kinds"):
                    reads[key] += one[key]
                reads["errors"] += one["errors"]

            # relayed updates: their ids from the relay status route
            with httpx.Client(base_url=api, timeout=30) as http:
                for s in sent:
                    if s.path == "relay" and s.failed is None:
                        end = time.time() + 30
                        while time.time() < end:
                            st = http.get(
                                f"/relay/updates/{s.contributor}/{s.task_id}/{s.round}"
                            ).json()
                            if st["state"] == "submitted":
                                s.update_id = st["updateId"]
                                break
                            if st["state"] == "failed":
                                s.failed = st["reason"]
                                break
                            time.sleep(0.1)
            mined = {s.update_id: s for s in sent if s.update_id is not None}

            # drain: wait until the API lists every mined update with a verdict
            drain_end = time.time() + args.drain_s
            judged_at = None
            while time.time() < drain_end:
                rows = [r for t in task_ids for r in all_contributions(api, t)]
                seen = {r["update_id"]: r for r in rows}
                if all(uid in seen and seen[uid]["status"] != "PENDING" for uid in mined):
                    judged_at = time.time()
                    break
                time.sleep(0.5)
            rows = [r for t in task_ids for r in all_contributions(api, t)]
            server = server_latency(httpx.get(f"{api}/metrics", timeout=30).text)
            rss.stop.set()
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    ids = [r["update_id"] for r in rows]
    by_id = {r["update_id"]: r for r in rows}
    lost = sum(1 for uid in mined if uid not in by_id)
    duplicated = (len(ids) - len(set(ids))) + max(0, len(set(ids)) - len(mined))
    mismatched = sum(
        1
        for uid, s in mined.items()
        if uid in by_id
        and (
            by_id[uid]["contributor"].lower() != s.contributor.lower()
            or by_id[uid]["round"] != s.round
            or by_id[uid]["content_hash"] != s.content_hash
        )
    )
    judged = [uid for uid in mined if uid in by_id and by_id[uid]["status"] != "PENDING"]
    accepted = [uid for uid in mined if uid in by_id and by_id[uid]["status"] == "ACCEPTED"]
    window = (judged_at or time.time()) - start
    failed = [s for s in sent if s.failed]
    lat_ms = [x * 1000 for x in reads["latencies"]]
    samples = rss.samples
    steady = [m for t, m in samples if t >= min(10.0, args.seconds / 3)]
    rounds_done = len({(s.task_id, s.round) for s in sent})

    summary = {
        "benchmark": "load",
        "seconds": args.seconds,
        "tasks": args.tasks,
        "contributors": args.contributors,
        "readers": args.readers,
        "sent": len(sent),
        "mined": len(mined),
        "relay_failed": len(failed),
        "rounds": rounds_done,
        "judged": len(judged),
        "accepted": len(accepted),
        "accepted_per_s": round(len(judged) / window, 2) if window > 0 else 0.0,
        "verdict_accepted_per_s": round(len(accepted) / window, 2) if window > 0 else 0.0,
        "submit_window_s": round(submit_end - start, 1),
        "end_to_end_s": round(window, 1),
        "rest_requests": len(lat_ms),
        "rest_errors": reads["errors"],
        "rest_rps": round(len(lat_ms) / max(1e-9, args.seconds), 1),
        "rest_p50_ms": round(pct(lat_ms, 50), 2),
        "rest_p99_ms": round(pct(lat_ms, 99), 2),
        "rest_max_ms": round(max(lat_ms), 2) if lat_ms else None,
        "rss_start_mib": round(samples[0][1], 1) if samples else None,
        "rss_steady_mib": round(steady[0], 1) if steady else None,
        "rss_end_mib": round(samples[-1][1], 1) if samples else None,
        "rss_max_mib": round(max(m for _, m in samples), 1) if samples else None,
        "rss_growth_after_steady_mib": round(steady[-1] - steady[0], 1) if steady else None,
        # RSS at each quarter of the steady period, and its growth over the second half: caches
        # (SQLite pages, the allocator's arenas) fill early; a leak keeps growing to the end.
        "rss_quarters_mib": [round(steady[(len(steady) - 1) * q // 4], 1) for q in (1, 2, 3, 4)]
        if steady
        else None,
        "rss_growth_second_half_mib": round(steady[-1] - steady[(len(steady) - 1) // 2], 1)
        if steady
        else None,
        **server,
        "lost": lost,
        "duplicated": duplicated,
        "mismatched": mismatched,
        "targets_met": lost == 0 and duplicated == 0 and pct(lat_ms, 99) <= 50.0,
        "cpu_count": os.cpu_count(),
    }
    rows_out = [
        ("updates sent / mined", f"{len(sent)} / {len(mined)}"),
        ("relay requests refused/failed", f"{len(failed)}"),
        ("rounds driven", f"{rounds_done}"),
        ("judged / ACCEPTED in the API", f"{len(judged)} / {len(accepted)}"),
        ("judged updates per second", f"{summary['accepted_per_s']}"),
        ("REST requests (errors)", f"{len(lat_ms)} ({reads['errors']})"),
        (
            "REST p50 / p99 / max (ms)",
            f"{summary['rest_p50_ms']} / {summary['rest_p99_ms']} / {summary['rest_max_ms']}",
        ),
        (
            "backend RSS start/steady/end (MiB)",
            f"{summary['rss_start_mib']} / {summary['rss_steady_mib']} / {summary['rss_end_mib']}",
        ),
        ("RSS growth once steady (MiB)", f"{summary['rss_growth_after_steady_mib']}"),
        (
            "RSS at each quarter once steady (MiB)",
            " / ".join(str(x) for x in summary["rss_quarters_mib"] or []),
        ),
        ("RSS growth over its second half (MiB)", f"{summary['rss_growth_second_half_mib']}"),
        (
            "server-side GET: p99 bucket / share <= 50 ms",
            f"<= {server.get('server_p99_bucket_ms')} ms / {server.get('server_share_le_50ms')}",
        ),
        ("lost / duplicated / mismatched", f"{lost} / {duplicated} / {mismatched}"),
    ]
    width = max(len(k) for k, _ in rows_out)
    print(
        f"\nload: {args.tasks} tasks × {args.contributors} contributors, {args.readers} readers, {args.seconds:g}s"
    )
    for k, v in rows_out:
        print(f"  {k:<{width}}  {v}")
    kinds = reads.get("kinds") or []
    if kinds:
        print(f"  {'REST by request':<{width}}  {'n':>6} {'p50':>7} {'p99':>7} (ms)")
        for kind in sorted(set(kinds)):
            xs = [ms for ms, k in zip(lat_ms, kinds, strict=True) if k == kind]
            print(f"  {kind:<{width}}  {len(xs):>6} {pct(xs, 50):7.1f} {pct(xs, 99):7.1f}")
    for s in failed[:5]:
        print(f"  failed: task {s.task_id} round {s.round} {s.contributor}: {s.failed}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
