"""Updates submitted per second on anvil: a naive ``transact`` + wait loop against the SDK's
pipelined path (local signing, its own nonces, receipts awaited together), from one key and from
many keys, in the same run.

Ledger v2: each update is ``submitUpdate(taskId, round, contentHash, cidDigest, tensorRoot,
numSamples)`` for real bytes (``contentHash`` their sha256, ``cidDigest`` the digest of their
CID, a raw CID for these one-block files), a zero tensor root, and no storage slot per update.

    python benchmarks/submit.py [--updates 200] [--keys 8]   # --quick: 40 updates, 4 keys

Last line: JSON with ``speedup`` (pipelined one-key rate / naive one-key rate) and the rates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402

from fedledger.chain.devnet import dev_private_keys, start_anvil  # noqa: E402
from fedledger.chain.ledger import (  # noqa: E402
    ZERO32,
    Ledger,
    NonceManager,
    Sender,
    TaskConfig,
    connect,
    hex32,
)
from fedledger.content.cid import compute_cid, recorded_digest  # noqa: E402

ZERO = hex32(ZERO32)  # no tensor root: these tasks have no fixed-point format


def update(i: int, salt: str) -> tuple[str, str]:
    """(contentHash, CID) of update file ``i``: a few bytes, so a one-block ``raw`` CID."""
    data = f"update {salt} {i}".encode()
    return "0x" + hashlib.sha256(data).hexdigest(), compute_cid(data)


def make_tasks(led: Ledger, n: int) -> list[int]:
    """n open tasks (anyone may contribute), created pipelined; their ids (consecutive)."""
    sender = led.sender
    assert sender is not None
    cfg = TaskConfig(
        "0x" + hashlib.sha256(b"model").hexdigest(),
        compute_cid(b"model"),
        compute_cid(b"spec"),
        min_updates=1,
        max_updates=1000,
        quorum=1,
        open=True,
        max_samples=1000,
    )
    fn = led.contract.functions.createTask(cfg.as_tuple())
    gas = int(fn.estimate_gas({"from": sender.address}) * 1.3)
    before = led.task_count()  # this key alone creates tasks: ids are consecutive
    pend = [sender.send(fn, label="createTask", gas=gas) for _ in range(n)]
    for p in pend:
        sender.wait(p)
    assert led.task_count() == before + n
    return list(range(before + 1, before + n + 1))


def naive(led: Ledger, acct_addr: str, tasks: list[int], salt: str) -> float:
    """The raw contract call, one ``transact`` (the node signs) and one receipt at a time."""
    files = [update(i, salt) for i in range(len(tasks))]
    t0 = time.perf_counter()
    for tid, (content_hash, cid) in zip(tasks, files, strict=True):
        tx = led.contract.functions.submitUpdate(
            tid, 0, hex32(content_hash), recorded_digest(cid, hex32(content_hash)), ZERO, 10
        ).transact({"from": acct_addr})
        led.w3.eth.wait_for_transaction_receipt(tx)
    return len(tasks) / (time.perf_counter() - t0)


def pipelined(led: Ledger, senders: list[Sender], tasks: list[int], salt: str) -> float:
    """Each sender submits one update to every task (one per contributor per round)."""
    fn0 = led.submit_update_fn(tasks[0], 0, *update(0, salt), 10)
    gas = int(fn0.estimate_gas({"from": senders[0].address}) * 1.5) + 20_000
    files = [[update(i * 1000 + k, salt) for i in range(len(tasks))] for k in range(len(senders))]
    t0 = time.perf_counter()
    pend = []
    for k, s in enumerate(senders):
        fns = [
            led.submit_update_fn(tid, 0, content_hash, cid, 10)
            for tid, (content_hash, cid) in zip(tasks, files[k], strict=True)
        ]
        pend.append((s, s.send_many(fns, label="submitUpdate", gas=gas)))
    total = 0
    for s, ps in pend:
        total += len(s.wait_many(ps))
    return total / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=200, help="updates per measurement")
    ap.add_argument("--keys", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 40 updates, 4 keys")
    args = ap.parse_args()
    if args.quick:
        args.updates, args.keys = 40, 4
    keys = dev_private_keys(args.keys + 2)
    with start_anvil(accounts=args.keys + 2) as dn:
        w3 = connect(dn.url)
        owner = Account.from_key(keys[0])
        led = Ledger.deploy(w3, owner)
        n = args.updates
        tasks_a = make_tasks(led, n)
        tasks_b = make_tasks(led, n)
        per_key = max(1, n // args.keys)
        tasks_c = make_tasks(led, per_key)
        one = Account.from_key(keys[1])
        naive_rate = naive(led, one.address, tasks_a, "naive")
        nm = NonceManager(w3)
        s_one = Sender(w3, Account.from_key(keys[1]), nm)
        pipe_one = pipelined(led, [s_one], tasks_b, "pipe1")
        many = [Sender(w3, Account.from_key(k), nm) for k in keys[2 : 2 + args.keys]]
        pipe_many = pipelined(led, many, tasks_c, "pipeN")
    rows = [
        ("naive transact + wait, 1 key", naive_rate),
        ("SDK pipelined, 1 key", pipe_one),
        (f"SDK pipelined, {args.keys} keys", pipe_many),
    ]
    print(f"{'path':<34} {'updates/s':>10}")
    for name, rate in rows:
        print(f"{name:<34} {rate:>10.1f}")
    figures = {
        "naive_per_s": round(naive_rate, 1),
        "pipelined_one_key_per_s": round(pipe_one, 1),
        "pipelined_many_keys_per_s": round(pipe_many, 1),
        "speedup": round(pipe_one / naive_rate, 2),
        "speedup_many": round(pipe_many / naive_rate, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
