"""Regenerate the CID vectors in tests/test_cid.py from an independent implementation.

The oracle is the IPFS JavaScript importer (``ipfs-unixfs-importer``, the one Helia uses), run
with Kubo's parameters (balanced layout, 174 links, fixed-size chunks). It is not a project
dependency; install it in a scratch directory and point ``--oracle-dir`` at it::

    mkdir /tmp/oracle && (cd /tmp/oracle && npm init -y && npm install ipfs-unixfs-importer)
    cp scripts/cid_oracle.mjs /tmp/oracle/ && .venv/bin/python scripts/cid_vectors.py /tmp/oracle

Prints the ``VECTORS`` table to paste into tests/test_cid.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

C = 262144


def stream(seed: int, n: int) -> bytes:
    """Deterministic test bytes: sha256(seed ‖ counter) blocks (same as tests/test_cid.py)."""
    out = b"".join(
        hashlib.sha256(seed.to_bytes(8, "little") + i.to_bytes(8, "little")).digest()
        for i in range((n + 31) // 32)
    )
    return out[:n]


def cases() -> list[tuple[int, int]]:
    out = []
    for n in (
        0,
        1,
        63,
        64,
        65,
        174 * 64 - 1,
        174 * 64,
        174 * 64 + 1,
        5000,
        123457,
        174 * 174 * 64 - 1,
        174 * 174 * 64,
        174 * 174 * 64 + 1,
    ):
        out.append((n, 64))
    for n in (999, 1000, 1001, 174000, 174001, 2_000_000):
        out.append((n, 1000))
    for n in (0, 1, 3, C - 1, C, C + 1, 2 * C + 17, 10_000_000):
        out.append((n, C))
    return out


def main() -> None:
    oracle_dir = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for n, cs in cases():
            path = Path(tmp) / f"d_{n}_{cs}"
            path.write_bytes(stream(n + cs, n))
            for prof in ("v1", "v0"):
                lines.append(f"{path} {cs} {prof}")
        out = subprocess.run(
            ["node", str(oracle_dir / "cid_oracle.mjs")],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            check=True,
            cwd=oracle_dir,
        ).stdout
    for line in out.splitlines():
        path, cs, prof, cid = line.split()
        n = int(Path(path).name.split("_")[1])
        print(f"    ({n}, {cs}, {prof!r}, {cid!r}),")


if __name__ == "__main__":
    main()
