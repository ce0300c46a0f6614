"""Tensor commitments (fedledger.protocol.tensor_root): root speed, proof size, verify cost.

    .venv/bin/python benchmarks/tensor_root.py              # 5M int32 coordinates (20 MB)
    .venv/bin/python benchmarks/tensor_root.py --no-forge   # skip the on-chain gas figure

(a) speed: the tensor root of 5,000,000 int32 coordinates against hashlib.sha256 of the same
    20 MB, and against one keccak256 (pycryptodome) of the same bytes in one call -- the raw
    throughput the root's leaf hashing can at best reach. The three are timed interleaved,
    best of ``--reps``, one thread.
(b) proof: the leaf (4,116 bytes) plus the sibling path of a coordinate at 5M parameters, its
    verification time in Python, and its ABI-encoded calldata for
    ``verifyCoordinate(bytes32,uint256,bytes,bytes32[])``.
(c) gas: ``verify_gas`` is the execution gas of ``TensorRoot.verifyCoordinate`` at 5M
    coordinates (13 levels), read from ``forge test`` (contracts/test/TensorRoot.t.sol,
    test_gas_verifyCoordinate_5m); the calldata gas is computed here from the encoded call.

Prints tables; the LAST line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from Crypto.Hash import keccak  # noqa: E402
from eth_abi import encode  # noqa: E402

from fedledger.protocol import tensor_root as tr  # noqa: E402


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def speed(vec: np.ndarray, reps: int) -> dict[str, float]:
    data = memoryview(vec).cast("B")
    runs: dict[str, list[float]] = {"sha256": [], "keccak": [], "root": []}
    for _ in range(reps):  # interleaved, so that a noisy neighbour hits all three alike
        runs["sha256"].append(_timed(lambda: hashlib.sha256(data).digest()))
        runs["keccak"].append(_timed(lambda: keccak.new(digest_bits=256, data=data).digest()))
        runs["root"].append(_timed(lambda: tr.tensor_root(vec)))
    mb = vec.nbytes / 1e6
    return {k: mb / min(v) for k, v in runs.items()}


def calldata_gas(data: bytes) -> int:
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros)


def forge_verify_gas() -> int | None:
    forge = ROOT / "node_modules" / ".bin" / "forge"
    if not forge.exists() and shutil.which("forge") is None:
        return None
    cmd = [str(forge) if forge.exists() else "forge", "test", "--offline", "-vv"]
    cmd += ["--match-contract", "TensorRootTest", "--match-test", "test_gas_verifyCoordinate_5m"]
    # `forge lint` refreshes forge's cache with ABI-only artifacts, after which `forge test`
    # finds no test to run: then the tests are rebuilt once (--force)
    for extra in ([], ["--force"]):
        try:
            run = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(r"verifyCoordinate, 5M coordinates.*?:\s*(\d+)", run.stdout)
        if m:
            return int(m.group(1))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=5_000_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-forge", action="store_true", help="skip the forge gas figure")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(16)
    vec = rng.integers(-(2**31), 2**31, args.params, dtype=np.int64).astype(np.int32)
    mb = vec.nbytes / 1e6

    s = speed(vec, args.reps)
    print(f"(a) speed: {args.params:,} int32 coordinates ({mb:.0f} MB), best of {args.reps}")
    print(f"  {'hash':<44} {'MB/s':>8} {'vs sha256':>10}")
    rows = [
        ("hashlib.sha256, one call", s["sha256"]),
        ("keccak256 (pycryptodome), one call", s["keccak"]),
        ("tensor_root (4,883 leaves + tree)", s["root"]),
    ]
    for name, rate in rows:
        print(f"  {name:<44} {rate:>8.0f} {rate / s['sha256']:>9.2f}x")
    print(f"  tensor_root / raw keccak on the same bytes: {s['root'] / s['keccak']:.2f}")
    print(f"  (rows hashed through: {tr.KECCAK_PATH})")

    tree = tr.TensorTree(vec)
    depth = max(len(tree.proof(k * tr.LEAF_COORDINATES).proof) for k in (0, 1, 2048, 4095))
    index = 1_234_567
    p = tree.proof(index)
    proof_bytes = len(p.leaf) + 32 * len(p.proof)
    value = int(vec[index])
    reps = 200
    t = time.perf_counter()
    for _ in range(reps):
        ok = tr.verify_coordinate(tree.root, index, value, p.leaf, p.proof)
    verify_us = (time.perf_counter() - t) / reps * 1e6
    assert ok
    call = bytes.fromhex("00000000") + encode(
        ["bytes32", "uint256", "bytes", "bytes32[]"], [tree.root, index, p.leaf, p.proof]
    )
    cd_gas = calldata_gas(call)
    print(f"\n(b) proof at {args.params:,} coordinates ({tr.leaf_count(args.params):,} leaves)")
    print(f"  leaf {len(p.leaf):,} B + {len(p.proof)} siblings x 32 B = {proof_bytes:,} B")
    print(f"  proof depth (levels)                 {depth}")
    print(f"  verify_coordinate in Python          {verify_us:.0f} us")
    print(f"  ABI-encoded call                     {len(call):,} B, {cd_gas:,} calldata gas")

    figures: dict[str, Any] = {
        "tensor_root_vs_sha256": round(s["root"] / s["sha256"], 3),
        "tensor_root_mb_s": round(s["root"], 1),
        "sha256_mb_s": round(s["sha256"], 1),
        "keccak_mb_s": round(s["keccak"], 1),
        "tensor_root_vs_keccak": round(s["root"] / s["keccak"], 3),
        "proof_bytes_5m": proof_bytes,
        "proof_depth_5m": depth,
        "verify_us_python": round(verify_us, 1),
        "verify_calldata_bytes": len(call),
        "verify_calldata_gas": cd_gas,
    }
    gas = None if args.no_forge else forge_verify_gas()
    if gas is not None:
        figures["verify_gas"] = gas
        print("\n(c) gas of TensorRoot.verifyCoordinate at 5M coordinates (forge)")
        print(f"  execution                            {gas:,}")
        print(f"  + calldata                           {cd_gas:,}")
        print(f"  as its own transaction (+21,000)     {21_000 + gas + cd_gas:,}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
