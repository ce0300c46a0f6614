"""Committee-encryption benchmark: seal / open throughput and the cost in a round's update path.

(1) ``seal`` and ``open_envelope`` (fedledger.protocol.committee: AES-256-GCM in 1 MiB segments,
    the content key sealed to 4 X25519 recipients; open includes the check of the committed
    sha256) on 64 MiB of random bytes and on the update file of a 5M-parameter model (20 MB);
    raw one-call AES-256-GCM and sha256 on the same bytes beside them.  GB/s are of plaintext.
(2) The round path of ``--updates`` (20) updates of a 1M-parameter model, through the real
    embedded store (``open_store(None, home)``, durable, as ``fedledger`` uses it), the steps a
    contributor and a validator take for each update:

        plain:     encode_update, sha256 (contentHash), put  |  get_hashed(expect), decode
        committee: encode_update, seal, sha256 (contentHash), put  |  get_hashed(expect),
                   open_envelope, decode

    measured in the same run on the same deltas, the two paths alternating update by update
    (so noise from other processes on a shared machine hits both alike), each path encoding its
    own file, each round in a fresh store (so that no file finds its blocks stored already);
    best of ``--repeat`` rounds.
    ``committee_update_path_overhead`` = committee path / plain path.  The same with the
    round's FedAvg of the decoded updates counted in (``..._with_aggregation``) is beside it.
(3) Whole rounds as users run them (``benchmarks/experiments.py``'s ``chain_rounds``: anvil,
    TrainingLedger, the embedded store, ``--clients`` contributors training ``--model`` and
    submitting, one validator ``Backend`` indexing, judging and attesting), a public task
    against the same task with ``privacy.encryption = "committee"`` (contributors seal to the
    validator's registered key, the validator opens every envelope), the two kinds of chain
    alternating ``--chains`` times each; seconds from the first contributor loading the task to
    the round final on chain, median over rounds after each chain's warm-up round.
    ``committee_round_overhead`` = committee round / public round.

Prints tables; the last line is one JSON object (``encrypt_gbps``, ``decrypt_gbps``,
``committee_round_overhead``, ...).  Run: ``.venv/bin/python benchmarks/privacy.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.public import PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedledger.content.digests import sha256_hex  # noqa: E402
from fedledger.content.store import ContentStore, open_store  # noqa: E402
from fedledger.protocol import aggregation as agg  # noqa: E402
from fedledger.protocol import codec  # noqa: E402
from fedledger.protocol.committee import open_envelope, seal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import SHAPES_5M  # noqa: E402

BASE = "0x" + "00" * 32
WHO = "0x" + "11" * 20
RECIPIENTS = 4


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each function, runs interleaved (as benchmarks/store.py does)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}


def random_delta(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (0.01 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def bench_throughput(
    label: str, data: bytes, keys: list[PrivateKey], repeat: int
) -> dict[str, float]:
    pubs = [k.public_key for k in keys]
    env = seal(data, pubs, task_id=1, round=0)
    aes = AESGCM(AESGCM.generate_key(bit_length=256))
    t = interleaved(
        {
            "seal": lambda: seal(data, pubs, task_id=1, round=0),
            "open": lambda: open_envelope(env, keys[-1]),
            "aes": lambda: aes.encrypt(bytes(12), data, None),
            "sha": lambda: hashlib.sha256(data).digest(),
        },
        repeat,
    )
    gb = len(data) / 1e9
    out = {name: gb / secs for name, secs in t.items()}
    print(
        f"{label:<26}{len(data) / 2**20:>8.1f}{out['seal']:>9.2f}{out['open']:>9.2f}"
        f"{out['aes']:>10.2f}{out['sha']:>9.2f}{t['seal'] * 1e3:>10.1f}{t['open'] * 1e3:>10.1f}",
        flush=True,
    )
    return {"mb": len(data) / 1e6, **{f"{k}_gbps": v for k, v in out.items()}}


SHAPES_1M = {"fc1.weight": (1000, 784), "fc1.bias": (1000,), "fc2.weight": (216, 1000)}


def _plain(store: ContentStore, delta: dict[str, np.ndarray], tag: str) -> dict[str, np.ndarray]:
    f = codec.encode_update(
        delta, task_id=1, round=0, base_hash=BASE, contributor=WHO, extra={"bench": tag}
    )
    h = sha256_hex(f)
    cid = store.put(f, pin=False)
    got, _ = store.get_hashed(cid, expect=h)
    return codec.decode(got, kind="update", copy=False).tensors


def _sealed(
    store: ContentStore,
    delta: dict[str, np.ndarray],
    tag: str,
    pubs: list[bytes],
    key: PrivateKey,
) -> dict[str, np.ndarray]:
    f = codec.encode_update(
        delta, task_id=1, round=0, base_hash=BASE, contributor=WHO, extra={"bench": tag}
    )
    env = seal(f, pubs, task_id=1, round=0, contributor=WHO)
    h = sha256_hex(env)
    cid = store.put(env, pin=False)
    got, _ = store.get_hashed(cid, expect=h)
    opened = open_envelope(got, key, task_id=1, round=0, contributor=WHO)
    return codec.decode(opened.plaintext, kind="update", copy=False).tensors


def bench_round(updates: int, repeat: int, keys: list[PrivateKey], home: Path) -> dict[str, float]:
    pubs = [bytes(k.public_key) for k in keys]
    deltas = [random_delta(SHAPES_1M, i) for i in range(updates)]
    layout = agg.TensorLayout.of(deltas[0])
    rule = agg.RuleSpec.parse({"rule": "fedavg"})
    totals: dict[str, list[float]] = {"plain": [], "committee": []}
    aggregate: list[float] = []
    for rep in range(repeat + 1):  # the first round warms caches and allocators; not counted
        # A fresh store per round: a plain file put again would find its blocks stored already
        # (a ciphertext never does), which is no part of a real round's cost.
        store = open_store(None, home / f"round-{rep}")
        paths: dict[str, Callable[[dict[str, np.ndarray], str], dict[str, np.ndarray]]] = {
            "plain": lambda d, tag, st=store: _plain(st, d, tag),
            "committee": lambda d, tag, st=store: _sealed(st, d, tag, pubs, keys[0]),
        }
        spent = {"plain": 0.0, "committee": 0.0}
        decoded: list[dict[str, np.ndarray]] = []
        for i, d in enumerate(deltas):
            order = ("plain", "committee") if (rep + i) % 2 == 0 else ("committee", "plain")
            for name in order:
                t = time.perf_counter()
                out = paths[name](d, f"{rep}-{i}-{name}")
                spent[name] += time.perf_counter() - t
                if name == "plain":
                    decoded.append(out)
        t = time.perf_counter()
        agg.aggregate_tensors(rule, decoded, [100] * len(decoded), layout)
        agg_s = time.perf_counter() - t
        if rep > 0:
            for name in totals:
                totals[name].append(spent[name])
            aggregate.append(agg_s)
    plain, sealed, fedavg = min(totals["plain"]), min(totals["committee"]), min(aggregate)
    return {
        "updates": updates,
        "update_mb": len(codec.write_safetensors(deltas[0], {})) / 1e6,
        "plain_s": plain,
        "committee_s": sealed,
        "aggregate_s": fedavg,
        "ratio": sealed / plain,
        "ratio_median": float(
            np.median([c / p for c, p in zip(totals["committee"], totals["plain"], strict=True)])
        ),
        "ratio_with_aggregation": (sealed + fedavg) / (plain + fedavg),
    }


def bench_chain_rounds(
    model: str, clients: int, rounds: int, chains: int, workdir: Path
) -> dict[str, float]:
    """(3): whole rounds of a public and a committee-encrypted task, chains alternating."""
    from experiments import chain_rounds  # the same round trip section (c) of experiments runs

    seconds: dict[str, list[float]] = {"public": [], "committee": []}
    for c in range(chains):
        order = ("public", "committee") if c % 2 == 0 else ("committee", "public")
        for kind in order:
            privacy = {"encryption": "committee"} if kind == "committee" else None
            done = chain_rounds(
                model, clients, rounds + 1, workdir, epochs=1, lr=0.05, privacy=privacy, seed=c
            )[1:]  # the first round pays one-time costs (imports, first allocations)
            seconds[kind] += [r.seconds for r in done]
            print(
                f"  chain {c} {kind:<10} rounds: "
                + " ".join(f"{r.seconds:.2f}" for r in done)
                + " s",
                flush=True,
            )
    public, sealed = float(np.median(seconds["public"])), float(np.median(seconds["committee"]))
    return {"public_s": public, "committee_s": sealed, "ratio": sealed / public}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="size of the random buffer in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (best is kept)")
    parser.add_argument("--updates", type=int, default=20, help="updates in the measured round")
    parser.add_argument("--model", default="mlp_wide", help="model of the whole rounds (3)")
    parser.add_argument("--clients", type=int, default=4, help="contributors of the rounds (3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per chain (3), + warm-up")
    parser.add_argument("--chains", type=int, default=2, help="chains of each kind (3)")
    args = parser.parse_args()
    print(
        f"# fedledger committee-encryption benchmark — "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    keys = [PrivateKey.generate() for _ in range(RECIPIENTS)]

    print(f"\n## Throughput, {RECIPIENTS} recipients (GB/s of plaintext, best of {args.repeat})")
    print(
        f"{'data':<26}{'MiB':>8}{'seal':>9}{'open':>9}{'raw AES':>10}{'sha256':>9}"
        f"{'seal ms':>10}{'open ms':>10}"
    )
    big = bench_throughput(f"random {args.mb} MiB", os.urandom(args.mb << 20), keys, args.repeat)
    file5m = codec.encode_update(
        random_delta(SHAPES_5M, 0),
        task_id=1,
        round=0,
        base_hash=BASE,
        contributor=WHO,
    )
    mid = bench_throughput("5M-param update file", file5m, keys, args.repeat)
    print(
        "open = unwrap + decrypt + sha256 check of the plaintext; seal = sha256 + encrypt + "
        "wrap (the committed hash has to be in the header before the first segment is sealed)"
    )

    with tempfile.TemporaryDirectory(prefix="fedledger-privacy-") as tmp:
        r = bench_round(args.updates, args.repeat, keys, Path(tmp) / "home")
        print(
            f"\n## Whole rounds: {args.clients} contributors train {args.model} and submit, one "
            "validator judges and attests (anvil, contract, embedded store); public task vs "
            "committee-encrypted task"
        )
        whole = bench_chain_rounds(
            args.model, args.clients, args.rounds, args.chains, Path(tmp) / "chains"
        )
    print(
        f"\n## A round's update path: {r['updates']} updates of a 1M-parameter model "
        f"({r['update_mb']:.1f} MB each), embedded store, best of {args.repeat} rounds"
    )
    print(f"{'path':<44}{'s/round':>9}{'ms/update':>11}{'ratio':>8}")
    n = r["updates"]
    print(
        f"{'plain (encode, put | get, decode)':<44}{r['plain_s']:>9.3f}{r['plain_s'] / n * 1e3:>11.2f}{1:>8.2f}"
    )
    print(
        f"{'committee (+ seal | + open)':<44}{r['committee_s']:>9.3f}"
        f"{r['committee_s'] / n * 1e3:>11.2f}{r['ratio']:>8.2f}"
    )
    print(
        f"{'... with the round FedAvg counted in':<44}{r['aggregate_s']:>9.3f}{'':>11}"
        f"{r['ratio_with_aggregation']:>8.2f}"
    )
    print(f"median ratio over rounds {r['ratio_median']:.2f}")
    print(f"\n{'whole round (median)':<44}{'s/round':>9}{'ratio':>8}")
    print(f"{'public task':<44}{whole['public_s']:>9.3f}{1:>8.2f}")
    print(f"{'committee-encrypted task':<44}{whole['committee_s']:>9.3f}{whole['ratio']:>8.2f}")

    summary = {
        "encrypt_gbps": round(big["seal_gbps"], 3),
        "decrypt_gbps": round(big["open_gbps"], 3),
        "committee_round_overhead": round(whole["ratio"], 3),
        "round_public_s": round(whole["public_s"], 3),
        "round_committee_encrypted_s": round(whole["committee_s"], 3),
        "committee_update_path_overhead": round(r["ratio"], 3),
        "committee_update_path_overhead_median": round(r["ratio_median"], 3),
        "committee_update_path_overhead_with_aggregation": round(r["ratio_with_aggregation"], 3),
        "encrypt_gbps_5m": round(mid["seal_gbps"], 3),
        "decrypt_gbps_5m": round(mid["open_gbps"], 3),
        "raw_aes_gcm_gbps": round(big["aes_gbps"], 3),
        "sha256_gbps": round(big["sha_gbps"], 3),
        "update_path_plain_s": round(r["plain_s"], 4),
        "update_path_committee_s": round(r["committee_s"], 4),
        "recipients": RECIPIENTS,
        "updates": n,
        "mb": args.mb,
        "model": args.model,
        "clients": args.clients,
        "machine": f"{os.cpu_count()}-core CPU",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
