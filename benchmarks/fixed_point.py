"""Exact fixed-point aggregation (fedledger.protocol.exact_rules) against the float32 rules.

    .venv/bin/python benchmarks/fixed_point.py            # 30 updates x 1M params, 3 seeds
    .venv/bin/python benchmarks/fixed_point.py --small    # 12 updates x 200k, 1 seed (a check)

(a) speed: fedavg, median, trimmed mean, krum and multi-krum on the same realistic deltas, as
    float32 (``aggregation.py``) and as exact int32 rules on their quantized images (frac_bits
    24); also quantize's speed, one thread's memory-read bandwidth (numpy sum), and the largest
    difference between the two results, in units of the scale (2**-24).
(b) accuracy: a short federated run on non-IID load_digits (Dirichlet alpha 0.5, the demo's
    recipe: mlp_digits, SGD lr 0.5, 3 local epochs, 5 rounds) with the same seeds, aggregated
    once with float32 fedavg and once with quantize -> exact fedavg -> dequantize.
    ``fixed_point_acc_drop`` = float32 final accuracy - fixed-point final accuracy, mean over
    the seeds (target <= 0.002); the robust rules' drops are printed beside it.

Prints tables; the LAST line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from _timing import best, read_bandwidth  # noqa: E402

from fedledger.learning.data import load_dataset, partition_dirichlet  # noqa: E402
from fedledger.learning.models import build_model, state_to_numpy  # noqa: E402
from fedledger.learning.train import LocalTrainer, evaluate  # noqa: E402
from fedledger.protocol import aggregation as A  # noqa: E402
from fedledger.protocol import exact_rules as X  # noqa: E402
from fedledger.protocol.fixedpoint import FixedPointFormat, dequantize, quantize  # noqa: E402

FMT = FixedPointFormat(frac_bits=24)
CAP = 10_000
BETA = Fraction(1, 5)


# --------------------------------------------------------------------------- (a) speed


def speed(n: int, d: int, reps: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    common = rng.standard_normal(d).astype(np.float32)
    xs = [(common + rng.standard_normal(d, dtype=np.float32)) * np.float32(0.01) for _ in range(n)]
    ns = [int(v) for v in rng.integers(100, 20_000, n)]
    f = max(1, (n - 3) // 4)
    t_quant, _ = best(lambda: quantize(xs[0], FMT), reps)
    qs = [quantize(x, FMT) for x in xs]
    cases: list[tuple[str, Callable[[], np.ndarray], Callable[[], np.ndarray], int]] = [
        (
            "fedavg",
            lambda: A.fedavg(xs, ns, sample_cap=CAP),
            lambda: X.fedavg(qs, ns, weight_cap=CAP),
            reps,
        ),
        ("median", lambda: A.median(xs), lambda: X.median(qs), reps),
        (
            "trimmed_mean",
            lambda: A.trimmed_mean(xs, beta=float(BETA)),
            lambda: X.trimmed_mean(qs, beta=BETA),
            reps,
        ),
        ("krum", lambda: A.krum(xs, f=f), lambda: X.krum(qs, f=f), 1),
        ("multi_krum", lambda: A.multi_krum(xs, f=f), lambda: X.multi_krum(qs, f=f), 1),
    ]
    print(f"\n(a) speed — {n} updates x {d:,} parameters ({n * d * 4 / 2**20:.0f} MiB per round)")
    print(
        f"{'rule':14s} {'float32 (s)':>12s} {'exact (s)':>10s} {'exact/float32':>14s} "
        f"{'max |diff| (units)':>19s}"
    )
    out: dict[str, Any] = {}
    for name, float_fn, exact_fn, r in cases:
        tf, yf = best(float_fn, r)
        te, ye = best(exact_fn, r)
        diff = float(np.max(np.abs(dequantize(ye, FMT, np.float64) - yf.astype(np.float64))))
        units = diff / FMT.ulp
        out[name] = {"float32_s": tf, "exact_s": te, "diff_units": units}
        print(f"{name:14s} {tf:12.4f} {te:10.4f} {te / tf:13.2f}x {units:19.2f}")
    bw = read_bandwidth(26)
    nbytes = n * d * 4
    exact_bw = nbytes / out["fedavg"]["exact_s"]
    float_bw = nbytes / out["fedavg"]["float32_s"]
    print(f"quantize: {d * 4 / t_quant / 1e9:.1f} GB/s of float32 input")
    print(f"memory-read bandwidth (numpy sum, 1 thread): {bw / 1e9:.1f} GB/s")
    print(
        f"fedavg input bandwidth: exact {exact_bw / 1e9:.2f} GB/s ({exact_bw / bw:.0%} of it), "
        f"float32 {float_bw / 1e9:.2f} GB/s ({float_bw / bw:.0%})"
    )
    out.update(
        read_bandwidth_gbps=bw / 1e9,
        fedavg_exact_gbps=exact_bw / 1e9,
        fedavg_float32_gbps=float_bw / 1e9,
        quantize_gbps=d * 4 / t_quant / 1e9,
    )
    return out


# --------------------------------------------------------------------------- (b) accuracy


def _rules(clients: int) -> dict[str, A.RuleSpec]:
    f = max(1, clients // 5)
    return {
        "fedavg": A.RuleSpec(rule="fedavg", sample_cap=CAP),
        "median": A.RuleSpec(rule="median"),
        "trimmed_mean": A.RuleSpec(rule="trimmed_mean", beta=float(BETA)),
        "multi_krum": A.RuleSpec(rule="multi_krum", f=f),
    }


def federated(
    seed: int, spec: A.RuleSpec, exact: bool, *, clients: int, rounds: int, alpha: float
) -> list[float]:
    """Test accuracy after each round; ``exact`` aggregates quantize -> exact rule -> dequantize."""
    torch.set_num_threads(1)
    ds = load_dataset("digits", seed=seed)
    parts = partition_dirichlet(ds.y_train, clients, alpha, seed)
    model = build_model("mlp_digits", seed=seed)
    global_t = state_to_numpy(model)
    layout = A.TensorLayout.of(global_t)
    trainers = [LocalTrainer(model, ds.X_train[p], ds.y_train[p]) for p in parts]
    rule = X.ExactRule.from_rule_spec(spec, FMT)
    accs = []
    for rnd in range(rounds):
        deltas, ns = [], []
        for i, tr in enumerate(trainers):
            r = tr.train(global_t, epochs=3, lr=0.5, batch_size=32, seed=(i + 1) * 1_000_003 + rnd)
            deltas.append(A.flatten(r.delta, layout)[0])
            ns.append(r.num_samples)
        if exact:
            q = X.aggregate_exact(rule, [quantize(d, FMT) for d in deltas], ns)
            agg = dequantize(q, FMT)
        else:
            agg = A.aggregate(spec, deltas, ns)
        global_t = A.apply_delta(global_t, A.unflatten(agg, layout))
        acc, _ = evaluate(model, global_t, ds.X_test, ds.y_test)
        accs.append(float(acc))
    return accs


def accuracy(
    seeds: Sequence[int], clients: int, rounds: int, alpha: float
) -> dict[str, list[float]]:
    print(
        f"\n(b) accuracy — non-IID load_digits, {clients} clients (Dirichlet α={alpha}), "
        f"{rounds} rounds x 3 local epochs, SGD lr 0.5; same seeds for both"
    )
    print(
        f"{'rule':14s} {'seed':>4s} {'float32':>8s} {'fixed':>8s} {'drop':>8s}   fixed-point curve"
    )
    drops: dict[str, list[float]] = {}
    for name, spec in _rules(clients).items():
        for seed in seeds:
            fl, fx = (
                federated(seed, spec, exact, clients=clients, rounds=rounds, alpha=alpha)
                for exact in (False, True)
            )
            drop = fl[-1] - fx[-1]
            drops.setdefault(name, []).append(drop)
            curve = " ".join(f"{a:.3f}" for a in fx)
            print(f"{name:14s} {seed:4d} {fl[-1]:8.4f} {fx[-1]:8.4f} {drop:+8.4f}   {curve}")
    print("drop = float32 final accuracy - fixed-point final accuracy (positive: fixed is worse)")
    return drops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30, help="updates per round (default 30)")
    ap.add_argument("--params", type=int, default=1_000_000, help="parameters per update")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the accuracy runs")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="12 x 200k, one seed")
    args = ap.parse_args()
    if args.small:
        args.n, args.params, args.seeds = 12, 200_000, 1
    t0 = time.perf_counter()
    sp = speed(args.n, args.params, args.reps)
    drops = accuracy(range(args.seeds), args.clients, args.rounds, alpha=0.5)
    fedavg_drop = float(np.mean(drops["fedavg"]))
    print(
        f"\nfixed_point_acc_drop (fedavg, mean over {args.seeds} seeds): {fedavg_drop:+.4f} "
        f"(target <= 0.002); {time.perf_counter() - t0:.0f} s in all"
    )
    figures: dict[str, Any] = {
        "fixed_point_acc_drop": round(fedavg_drop, 4),
        "fixed_point_acc_drop_worst_seed": round(max(drops["fedavg"]), 4),
        "fedavg_exact_gbps": round(sp["fedavg_exact_gbps"], 2),
        "fedavg_float32_gbps": round(sp["fedavg_float32_gbps"], 2),
        "read_bandwidth_gbps": round(sp["read_bandwidth_gbps"], 2),
        "fedavg_exact_bandwidth_fraction": round(
            sp["fedavg_exact_gbps"] / sp["read_bandwidth_gbps"], 3
        ),
        "quantize_gbps": round(sp["quantize_gbps"], 2),
        "n": args.n,
        "params": args.params,
        "frac_bits": FMT.frac_bits,
    }
    for name in ("fedavg", "median", "trimmed_mean", "krum", "multi_krum"):
        figures[f"{name}_exact_over_float32_time"] = round(
            sp[name]["exact_s"] / sp[name]["float32_s"], 2
        )
        figures[f"{name}_max_diff_units"] = round(sp[name]["diff_units"], 2)
    for name, ds in drops.items():
        if name != "fedavg":
            figures[f"{name}_acc_drop"] = round(float(np.mean(ds)), 4)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
