"""History queries: the indexed REST API against asking the chain with eth_getLogs.

1. Index: bulk-insert N realistic contributions (default 1,000,000) into a fresh SQLite file, the
   way the indexer's tables hold them (10 tasks × 100 updates per round, 10 % rejected by
   various verdicts, the newest round pending). Ledger v2 ids: ``updateId = (taskId << 32) |
   seq``, so update-id order is task by task; CIDs are the raw CIDs the chain's digests name.
2. REST: serve it with uvicorn (its own process, as in production) and time GET /contributions
   pages over one keep-alive httpx connection: first page, a deep cursor page, and the filters
   task_id+round, contributor, status. Target: p99 ≤ 20 ms.
3. Chain: start anvil, deploy TrainingLedger, emit UpdateSubmitted events from several keys
   (pipelined sends; each round attested with a RoundResult bound to its sealed records), and
   time eth_getLogs filtered by the contributor topic — what a client without the index would
   have to do. Then time the indexer ingesting those events. (In v2 a relayed batch logs one
   UpdatesRelayed event with packed records and no contributor topic: that query finds direct
   submissions only, so every update here is a direct submitUpdate.)

Prints a table; the LAST line is one JSON object (p50_ms, p99_ms, getlogs_ms,
ingest_events_per_s, …).

    .venv/bin/python benchmarks/history.py [--rows 1000000] [--events 2000] [--requests 800]
    .venv/bin/python benchmarks/history.py --quick   # 50,000 rows, 200 events, 100 requests
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fedledger_backend.db import (  # noqa: E402
    Checkpoint,
    ContributionRow,
    Database,
    MemberRow,
    RoundRow,
    TaskRow,
)

TASKS = 10
PER_ROUND = 100
CONTRIBUTORS_PER_TASK = 400
REJECTIONS = [  # (verdict, share of all updates); the rest are ACCEPTED
    ("OUTLIER", 0.03),
    ("NORM_BOUND", 0.02),
    ("LATE", 0.015),
    ("UNAVAILABLE", 0.01),
    ("HASH_MISMATCH", 0.005),
    ("MALFORMED", 0.005),
    ("SHAPE_MISMATCH", 0.005),
    ("NON_FINITE", 0.005),
    ("FREE_RIDER", 0.003),
    ("DUPLICATE", 0.002),
]
TARGET_P99_MS = 20.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- 1. the index -------------------------------------------------------------------------------


def _hex(rng: random.Random, nbytes: int) -> str:
    return f"0x{rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_RAW_CID = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes


def _cid(rng: random.Random) -> str:
    return "bafkrei" + "".join(rng.choices(_B32, k=52))


def _raw_cids(hashes: list[str]) -> list[str]:
    """The raw CIDv1 of each one-block file with sha256 ``hashes[i]`` (= ``recorded_cid(h, h)``),
    as the index stores a v2 record's CID: one base32 pass over 40-byte groups (36 bytes + 4
    zero bytes end on a 5-byte boundary, so each CID's 58 characters are its own)."""
    blob = b"".join(_RAW_CID + bytes.fromhex(h[2:]) + bytes(4) for h in hashes)
    text = base64.b32encode(blob).decode().lower()
    return ["b" + text[i * 64 : i * 64 + 58] for i in range(len(hashes))]


def _address(rng: random.Random) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(_hex(rng, 20)))


@dataclass
class Index:
    db: Database
    rows: int
    rounds: int
    seconds: float
    sample_contributor: str
    sample_task_round: tuple[int, int]
    deep_update_id: int  # 90 % through the history in update-id order
    contributor_deep_id: int  # 90 % through the sample contributor's task (its only one)


def build_index(path: Path, rows: int, seed: int = 7) -> Index:
    """A fresh index with ``rows`` contributions, inserted through executemany in one go."""
    from fedledger.content.cid import recorded_cid

    probe = hashlib.sha256(b"probe").digest()
    assert _raw_cids(["0x" + probe.hex()]) == [recorded_cid(probe, probe)]
    rng = random.Random(seed)
    db = Database(f"sqlite:///{path}").create()
    rounds = -(-rows // (TASKS * PER_ROUND))
    pools = {t: [_address(rng) for _ in range(CONTRIBUTORS_PER_TASK)] for t in range(1, TASKS + 1)}
    verdict_cut: list[tuple[float, str]] = []
    acc = 0.0
    for verdict, share in REJECTIONS:
        acc += share
        verdict_cut.append((acc, verdict))

    def verdict_of(x: float) -> str:
        for cut, verdict in verdict_cut:
            if x < cut:
                return verdict
        return "ACCEPTED"

    t0 = time.perf_counter()
    contribution_cols = [c.name for c in ContributionRow.__table__.columns]
    batch: list[tuple[Any, ...]] = []
    round_rows: list[dict[str, Any]] = []
    block = 1000
    uid = 0  # rows so far
    seqs = dict.fromkeys(pools, 0)  # each task's seq: updateId = (taskId << 32) | seq
    middle_contributor, middle_task = "", 1
    with db.engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        # A bulk load may lose everything on a crash (it is rebuilt from scratch anyway), and a
        # page cache big enough for the indexes' working set keeps their B-trees in memory.
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("PRAGMA cache_size=-262144")
        conn.execute(
            insert(TaskRow),
            [
                dict(
                    task_id=t,
                    owner=_address(rng),
                    model_hash=_hex(rng, 32),
                    model_cid=_cid(rng),
                    spec_cid=_cid(rng),
                    min_updates=PER_ROUND // 2,
                    max_updates=PER_ROUND,
                    quorum=2,
                    round_duration=0,
                    open=False,
                    max_samples=5000,
                    attest_window=600,
                    current_round=rounds - 1,
                    global_hash=_hex(rng, 32),
                    global_cid=_cid(rng),
                    created_block=block,
                    created_tx=_hex(rng, 32),
                    created_at=1_700_000_000,
                )
                for t in pools
            ],
        )
        conn.execute(
            insert(MemberRow),
            [
                dict(task_id=t, address=a, role="contributor", block_number=block)
                for t, pool in pools.items()
                for a in pool
            ],
        )
        sql = (
            f"INSERT INTO contributions ({', '.join(contribution_cols)}) "
            f"VALUES ({', '.join('?' * len(contribution_cols))})"
        )
        cur = raw.cursor()
        for rnd in range(rounds):
            pending = rnd == rounds - 1
            for task in pools:
                if uid >= rows:
                    break
                block += 3
                block_hash = _hex(rng, 32)
                n = min(PER_ROUND, rows - uid)
                accepted = 0
                hashes = [_hex(rng, 32) for _ in range(n)]
                for k, (who, content_hash, cid) in enumerate(
                    zip(rng.sample(pools[task], n), hashes, _raw_cids(hashes), strict=True)
                ):
                    uid += 1
                    seqs[task] += 1
                    if uid == rows // 2:
                        middle_contributor, middle_task = who, task
                    status = "PENDING" if pending else verdict_of(rng.random())
                    accepted += status == "ACCEPTED"
                    record = {
                        "update_id": (task << 32) | seqs[task],
                        "task_id": task,
                        "round": rnd,
                        "contributor": who,
                        "content_hash": content_hash,
                        "cid": cid,
                        "num_samples": rng.randrange(200, 5000),
                        "tensor_root": "0x" + "00" * 32,
                        "tx_hash": _hex(rng, 32),
                        "block_number": block,
                        "block_hash": block_hash,
                        "log_index": k,
                        "submitted_at": 1_700_000_000 + block * 2,
                        "status": status,
                        "reason": None
                        if status in ("ACCEPTED", "PENDING")
                        else f"screened: {status.lower()}",
                        "score": None if pending else round(rng.random(), 6),
                        "dp_epsilon": None,
                    }
                    batch.append(tuple(record[c] for c in contribution_cols))
                round_rows.append(
                    dict(
                        task_id=task,
                        round=rnd,
                        status="open" if pending else "finalized",
                        started_block=block - 2,
                        started_at=0,
                        submitted=n,
                        sealed_count=None if pending else n,
                        accepted=accepted,
                        rejected=0 if pending else n - accepted,
                        verdicts_applied=not pending,
                        conflicts=0,
                        accuracy=None if pending else min(0.95, 0.3 + rnd * 0.001),
                    )
                )
            if len(batch) >= 50_000:
                cur.executemany(sql, batch)
                batch.clear()
        if batch:
            cur.executemany(sql, batch)
        conn.execute(insert(RoundRow), round_rows)
        conn.execute(
            insert(Checkpoint),
            [
                dict(
                    contract=_address(rng),
                    chain_id=31337,
                    block_number=block,
                    block_hash=_hex(rng, 32),
                )
            ],
        )
    seconds = time.perf_counter() - t0
    sample_task = 3
    # 90 % of the way through the history in update-id order (task by task in v2)
    deep, before, deep_update_id = int(uid * 0.9), 0, 0
    for task, count in seqs.items():
        if before + count > deep:
            deep_update_id = (task << 32) | (deep - before)
            break
        before += count
    return Index(
        db=db,
        rows=uid,
        rounds=rounds,
        seconds=seconds,
        sample_contributor=middle_contributor,
        sample_task_round=(sample_task, rounds // 2),
        deep_update_id=deep_update_id,
        contributor_deep_id=(middle_task << 32) | int(seqs[middle_task] * 0.9),
    )


# -- 2. REST over loopback ----------------------------------------------------------------------


class UvicornProcess:
    """``uvicorn --factory fedledger_backend.api.app:from_settings`` on a free port, its own process."""

    def __init__(self, db_path: Path, home: Path) -> None:
        from fedledger.chain.devnet import free_port

        self.port = free_port()
        env = dict(os.environ, FEDLEDGER_DB=f"sqlite:///{db_path}", FEDLEDGER_HOME=str(home))
        env.pop("FEDLEDGER_RPC_URL", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "fedledger_backend.api.app:from_settings",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "info",
            ],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stderr is not None
        # Await uvicorn's own "startup complete" line instead of polling the port.
        for line in self.proc.stderr:
            if "Application startup complete" in line:
                break
        else:
            raise RuntimeError(f"uvicorn exited with {self.proc.wait()} before serving")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def timed(
    client: httpx.Client, scenarios: list[tuple[str, dict[str, Any]]], n: int, budget_s: float
) -> list[tuple[str, list[float]]]:
    """Latencies (ms) of up to ``n`` GET /contributions per scenario within ``budget_s`` seconds.

    The scenarios take turns request by request, so a burst of load from elsewhere on the
    machine lands on all of them alike rather than on whichever ran at that moment.
    """
    for _, params in scenarios:  # warm-up: connection, page cache, the server's code paths
        for _ in range(20):
            client.get("/contributions", params=params).raise_for_status()
    out: list[list[float]] = [[] for _ in scenarios]
    stop = time.perf_counter() + budget_s
    for _ in range(n):
        if time.perf_counter() > stop:
            break
        for lat, (_, params) in zip(out, scenarios, strict=True):
            t = time.perf_counter()
            r = client.get("/contributions", params=params)
            lat.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
    return [(name, lat) for (name, _), lat in zip(scenarios, out, strict=True)]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def rest_scenarios(idx: Index) -> Iterator[tuple[str, dict[str, Any]]]:
    # A cursor deep in the history, made the way the API makes its own.
    from fedledger_backend.api.deps import encode_cursor

    task, rnd = idx.sample_task_round
    yield "first page", {}
    yield "deep cursor page", {"cursor": encode_cursor("contributions.asc", idx.deep_update_id)}
    yield "newest first", {"order": "desc"}
    yield "task_id + round", {"task_id": task, "round": rnd}
    yield "contributor", {"contributor": idx.sample_contributor.lower()}
    yield (
        "contributor, deep",
        {
            "contributor": idx.sample_contributor,
            "cursor": encode_cursor("contributions.asc", idx.contributor_deep_id),
        },
    )
    yield "status=OUTLIER", {"status": "OUTLIER"}
    yield "status=PENDING", {"status": "PENDING"}


# -- 3. the chain -------------------------------------------------------------------------------


@dataclass
class ChainFigures:
    events: int
    emit_s: float
    getlogs_ms: list[float]
    getlogs_matches: int
    ingest_events: int
    ingest_s: float


def chain_part(n_events: int, workdir: Path) -> ChainFigures:
    from eth_account import Account
    from eth_utils import keccak

    from fedledger.chain.devnet import dev_private_keys, start_anvil
    from fedledger.chain.ledger import Ledger, NonceManager, TaskConfig, wait_all
    from fedledger.chain.records import RoundResult
    from fedledger.content.cid import compute_cid
    from fedledger_backend.handlers import HANDLERS, rebuild
    from fedledger_backend.indexer import Indexer, LedgerSource

    senders = 20
    rounds = -(-n_events // senders)
    with start_anvil(accounts=senders + 1) as net:
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(net.url, request_kwargs={"timeout": 60}))
        keys = [Account.from_key(k) for k in dev_private_keys(senders + 1)]
        owner = keys[0]
        ledger = Ledger.deploy(w3, owner)
        task = ledger.create_task(
            TaskConfig(
                model_hash="0x" + hashlib.sha256(b"model").hexdigest(),
                model_cid=compute_cid(b"model"),
                spec_cid=compute_cid(b"spec"),
                min_updates=senders,
                max_updates=senders,
                quorum=1,
                open=True,
                max_samples=5000,  # the submissions below claim 200 to 4999
            )
        )
        ledger.add_validator(task, owner.address)
        nonces = NonceManager(w3)
        contributors = [ledger.with_account(k, nonces) for k in keys[1:]]
        rng = random.Random(3)
        t0 = time.perf_counter()
        emitted = 0
        for rnd in range(rounds):
            pend = []
            for c in contributors[: min(senders, n_events - emitted)]:
                assert c.sender is not None
                data = rng.getrandbits(256).to_bytes(32, "big")  # the update file, one block
                content_hash = "0x" + hashlib.sha256(data).hexdigest()
                fn = c.submit_update_fn(
                    task, rnd, content_hash, compute_cid(data), rng.randrange(200, 5000)
                )
                pend.append((c.sender, c.sender.send(fn, label="submitUpdate", gas=400_000)))
            for sender, p in pend:
                wait_all(sender, [p])
            emitted += len(pend)
            if emitted >= n_events:
                break
            # the round is full: attesting seals it, bound to its records (quorum 1 finalises)
            sealed = ledger.get_round(task, rnd)
            verdicts, aggregate = (rng.getrandbits(256).to_bytes(32, "big") for _ in range(2))
            result = RoundResult(
                record_hash="0x" + bytes(sealed["recordHash"]).hex(),
                update_count=int(sealed["updateCount"]),
                verdict_root="0x" + "22" * 32,
                verdict_hash="0x" + hashlib.sha256(verdicts).hexdigest(),
                verdict_cid=compute_cid(verdicts),
                aggregate_hash="0x" + hashlib.sha256(aggregate).hexdigest(),
                aggregate_cid=compute_cid(aggregate),
            )
            ledger.attest_round(task, rnd, result)
        emit_s = time.perf_counter() - t0

        topic0 = (
            "0x"
            + keccak(
                text="UpdateSubmitted(uint256,uint64,address,uint256,bytes32,bytes32,bytes32,uint64)"
            ).hex()
        )
        who = keys[5].address
        filt = {
            "address": ledger.address,
            "fromBlock": ledger.from_block,
            "toBlock": "latest",
            "topics": [topic0, None, None, "0x" + "00" * 12 + who[2:].lower()],
        }
        times: list[float] = []
        matches = 0
        for _ in range(60):
            t = time.perf_counter()
            logs = w3.eth.get_logs(filt)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t) * 1000)
            matches = len(logs)

        db = Database(f"sqlite:///{workdir / 'ingest.db'}").create()
        indexer = Indexer(
            LedgerSource(ledger, chunk=2000),  # type: ignore[arg-type]  # Protocol's address
            db,
            HANDLERS,
            rebuild,
            start_block=ledger.from_block,
            chunk=2000,
        )
        t = time.perf_counter()
        ingested = indexer.run_once()
        ingest_s = time.perf_counter() - t
    return ChainFigures(emitted, emit_s, times, matches, ingested, ingest_s)


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=800, help="per scenario")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds for all requests at most")
    ap.add_argument("--no-chain", action="store_true", help="skip the anvil part")
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run: 50,000 rows, 200 events, 100 requests"
    )
    args = ap.parse_args()
    if args.quick:
        args.rows, args.events, args.requests, args.budget = 50_000, 200, 100, 30.0

    with tempfile.TemporaryDirectory(prefix="fedledger-bench-") as tmp:
        work = Path(tmp)
        log(f"building an index of {args.rows:,} contributions …")
        idx = build_index(work / "history.db", args.rows)
        size_mb = (work / "history.db").stat().st_size / 1e6
        log(
            f"  {idx.rows:,} rows in {idx.seconds:.1f}s "
            f"({idx.rows / idx.seconds:,.0f} rows/s), {size_mb:,.0f} MB"
        )

        server = UvicornProcess(work / "history.db", work)
        scenarios = [(name, {"limit": 50, **params}) for name, params in rest_scenarios(idx)]
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                results = timed(client, scenarios, args.requests, args.budget)
            for name, lat in results:
                log(f"  {name:<20} p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms")
        finally:
            server.stop()

        chain: ChainFigures | None = None
        if not args.no_chain:
            log(f"emitting {args.events:,} UpdateSubmitted events on anvil …")
            chain = chain_part(args.events, work)

    every = [x for _, lat in results for x in lat]
    print()
    print(
        f"History of {idx.rows:,} contributions ({TASKS} tasks × {idx.rounds:,} rounds × "
        f"{PER_ROUND}), SQLite, uvicorn on loopback, limit=50"
    )
    print(f"bulk insert: {idx.seconds:.1f} s ({idx.rows / idx.seconds:,.0f} rows/s)")
    print()
    print(f"{'query':<22}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, lat in results:
        print(f"{name:<22}{len(lat):>9}{pct(lat, 50):>9.2f}{pct(lat, 99):>9.2f}{max(lat):>9.2f}")
    print(
        f"{'all':<22}{len(every):>9}{pct(every, 50):>9.2f}{pct(every, 99):>9.2f}{max(every):>9.2f}"
    )
    worst = max(pct(lat, 99) for _, lat in results)
    print(
        f"target p99 ≤ {TARGET_P99_MS:g} ms: {'met' if worst <= TARGET_P99_MS else 'NOT met'} "
        f"(worst scenario p99 {worst:.2f} ms)"
    )
    summary: dict[str, Any] = {
        "rows": idx.rows,
        "insert_s": round(idx.seconds, 2),
        "p50_ms": round(pct(every, 50), 3),
        "p99_ms": round(pct(every, 99), 3),
        "worst_p99_ms": round(worst, 3),
        "scenarios": {
            n: {"p50_ms": round(pct(v, 50), 3), "p99_ms": round(pct(v, 99), 3)} for n, v in results
        },
        "getlogs_ms": None,
        "ingest_events_per_s": None,
    }
    if chain is not None:
        print()
        print(
            f"chain: {chain.events:,} UpdateSubmitted events emitted in {chain.emit_s:.1f} s "
            f"(anvil, pipelined sends from 20 keys)"
        )
        print(
            f"eth_getLogs by contributor topic ({chain.getlogs_matches} matches): "
            f"p50 {pct(chain.getlogs_ms, 50):.2f} ms, p99 {pct(chain.getlogs_ms, 99):.2f} ms"
        )
        rate = chain.ingest_events / chain.ingest_s
        print(
            f"indexer run_once: {chain.ingest_events:,} events in {chain.ingest_s:.2f} s "
            f"= {rate:,.0f} events/s"
        )
        summary.update(
            chain_events=chain.events,
            getlogs_ms=round(pct(chain.getlogs_ms, 50), 3),
            getlogs_p99_ms=round(pct(chain.getlogs_ms, 99), 3),
            ingest_events_per_s=round(rate, 1),
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
