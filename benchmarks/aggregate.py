"""Aggregation rules against Flower's (``flwr.server.strategy.aggregate``) on identical inputs.

    .venv/bin/python benchmarks/aggregate.py            # 30 updates x 5M parameters
    .venv/bin/python benchmarks/aggregate.py --small    # 12 updates x 200k (a quick check)

Flower pins versions of fastapi/starlette/typer/rich that differ from the project's, so it lives
in its own venv (`make bench-venv` creates `.venv-bench` with flwr 1.42 and numpy; `make bench` does it first, the
``bench`` extra); its side runs there in a subprocess on the same ``.npy`` files.  Also measured:
the machine's memory-read bandwidth (numpy sum over 1 GiB, one thread), fedavg's share of it,
and fedavg's peak memory over 50 updates read from files one at a time, in model sizes.

Prints a table; the LAST line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _timing import best, read_bandwidth  # noqa: E402

from fedledger.protocol import aggregation as A  # noqa: E402

BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"

FLOWER_SIDE = r"""
import json, sys, time, numpy as np
from flwr.server.strategy.aggregate import (aggregate, aggregate_krum, aggregate_median,
                                            aggregate_trimmed_avg)
d = json.loads(sys.argv[1])
flats = [np.load(p) for p in d["files"]]
cuts = np.cumsum(d["layer_sizes"])[:-1]
results = [(np.split(f, cuts), n) for f, n in zip(flats, d["num_samples"])]
def timed(fn, reps):
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t)
    flat = np.concatenate([np.ravel(x) for x in out]).astype(np.float32)
    np.save(d["out"] + "_" + name + ".npy", flat)
    return best
times = {}
for name, fn, reps in (
    ("fedavg", lambda: aggregate(results), d["reps"]),
    ("median", lambda: aggregate_median(results), d["reps"]),
    ("trimmed_mean", lambda: aggregate_trimmed_avg(results, d["beta"]), d["reps"]),
    ("krum", lambda: aggregate_krum(results, d["f"], 0), 1),
):
    times[name] = timed(fn, reps)
print(json.dumps(times))
"""

PEAK_SIDE = r"""
import json, sys, numpy as np
sys.path.insert(0, sys.argv[2])
from fedledger.protocol import aggregation as A
d = json.loads(sys.argv[1])
def status(key):
    # VmHWM belongs to this address space; ru_maxrss would carry the parent's peak over exec
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)
def chunks(path, size, chunk=1 << 18):
    with open(path, "rb") as f:
        np.lib.format.read_magic(f); np.lib.format.read_array_header_1_0(f)
        buf = np.empty(chunk, np.float32)
        left = size
        while left:
            n = min(chunk, left)
            f.readinto(memoryview(buf[:n]).cast("B"))
            yield buf[:n]
            left -= n
size = d["size"]
base = status("VmRSS")
acc = A.FedAvgAccumulator(size, sample_cap=d["cap"])
for p, n in zip(d["files"], d["num_samples"]):
    if d["mode"] == "stream":
        acc.add_chunks(chunks(p, size), n)
    else:
        acc.add(np.load(p), n)
out = acc.result()
peak = status("VmHWM")
print(json.dumps({"peak_models": (peak - base) / (size * 4), "sha": hash(out.tobytes())}))
"""


def peak_models(files: list[str], ns: list[int], size: int, cap: int, mode: str) -> float:
    spec = json.dumps({"files": files, "num_samples": ns, "size": size, "cap": cap, "mode": mode})
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SIDE, spec, str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_models"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30, help="updates per round (default 30)")
    ap.add_argument("--params", type=int, default=5_000_000, help="parameters per update")
    ap.add_argument("--small", action="store_true", help="12 updates x 200k parameters")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-updates", type=int, default=50)
    args = ap.parse_args()
    if args.small:
        args.n, args.params, args.peak_updates = 12, 200_000, 20
    n, d = args.n, args.params
    beta, f, cap = 0.2, max(1, (n - 3) // 4), 10_000
    rng = np.random.default_rng(0)
    # a few layers of uneven sizes, like a real model; Flower gets them as a list per update
    layer_sizes = [d // 2, d // 4, d // 8, d - d // 2 - d // 4 - d // 8]
    ns = [int(x) for x in rng.integers(100, 20_000, size=max(n, args.peak_updates))]

    with tempfile.TemporaryDirectory(prefix="fedledger-bench-") as tmp:
        files = []
        common = rng.standard_normal(d).astype(np.float32)
        for i in range(max(n, args.peak_updates)):
            u = (common + rng.standard_normal(d, dtype=np.float32)) * np.float32(0.01)
            path = os.path.join(tmp, f"u{i:03d}.npy")
            np.save(path, u)
            files.append(path)
        round_files = files[:n]
        ups = [np.load(p) for p in round_files]

        ours = {
            "fedavg": best(lambda: A.fedavg(ups, ns[:n], sample_cap=cap), args.reps),
            "median": best(lambda: A.median(ups), args.reps),
            "trimmed_mean": best(lambda: A.trimmed_mean(ups, beta=beta), args.reps),
            "krum": best(lambda: A.krum(ups, f=f), 1),
        }

        flower: dict[str, float] = {}
        flower_err = ""
        if BENCH_PY.exists():
            spec = {
                "files": round_files,
                "num_samples": [min(x, cap) for x in ns[:n]],
                "layer_sizes": layer_sizes,
                "beta": beta,
                "f": f,
                "reps": args.reps,
                "out": os.path.join(tmp, "flwr"),
            }
            proc = subprocess.run(
                [str(BENCH_PY), "-c", FLOWER_SIDE, json.dumps(spec)], capture_output=True, text=True
            )
            if proc.returncode == 0:
                flower = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                flower_err = proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"
        else:
            flower_err = f"{BENCH_PY} missing (run `make bench-venv`)"

        agree = {}
        for name in ours:
            p = os.path.join(tmp, f"flwr_{name}.npy")
            if os.path.exists(p):
                ref = np.load(p)
                agree[name] = float(np.max(np.abs(ref - ours[name][1])))

        bw = read_bandwidth()
        fedavg_bytes = n * d * 4
        frac = fedavg_bytes / ours["fedavg"][0] / bw
        peak_stream = peak_models(
            files[: args.peak_updates], ns[: args.peak_updates], d, cap, "stream"
        )
        peak_whole = peak_models(
            files[: args.peak_updates], ns[: args.peak_updates], d, cap, "whole"
        )

    print(f"{n} updates x {d:,} parameters (float32, {fedavg_bytes / 2**20:.0f} MiB per round)")
    print(f"{'rule':14s} {'ours (s)':>10s} {'flower (s)':>11s} {'speedup':>8s} {'max |diff|':>11s}")
    figures: dict[str, float | str | None] = {}
    for name, (t, _) in ours.items():
        ft = flower.get(name)
        sp = ft / t if ft else None
        figures[f"{name}_speedup"] = round(sp, 2) if sp else None
        figures[f"{name}_seconds"] = round(t, 4)
        figures[f"{name}_flower_seconds"] = round(ft, 4) if ft else None
        print(
            f"{name:14s} {t:10.3f} {ft if ft else float('nan'):11.3f} "
            f"{sp if sp else float('nan'):7.1f}x {agree.get(name, float('nan')):11.2e}"
        )
    if flower_err:
        print(f"Flower side unavailable: {flower_err}")
    print(f"memory-read bandwidth (numpy sum, 1 thread): {bw / 1e9:.1f} GB/s")
    print(
        f"fedavg effective input bandwidth: {fedavg_bytes / ours['fedavg'][0] / 1e9:.1f} GB/s "
        f"= {frac:.0%} of it"
    )
    print(
        f"fedavg peak over {args.peak_updates} updates read one at a time: "
        f"{peak_stream:.2f} models streamed in chunks, {peak_whole:.2f} models loaded whole"
    )
    figures.update(
        n=n,
        params=d,
        read_bandwidth_gbps=round(bw / 1e9, 2),
        fedavg_bandwidth_fraction=round(frac, 3),
        fedavg_peak_models=round(peak_stream, 2),
        fedavg_peak_models_whole_update=round(peak_whole, 2),
    )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
