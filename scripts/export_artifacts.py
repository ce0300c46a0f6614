#!/usr/bin/env python3
"""Copy TrainingLedger's and Court's ABI, bytecode and compiler settings from Hardhat's build
into client/fedledger/chain/abi/TrainingLedger.json and Court.json, the artifacts the Python
package ships and loads.

Run after `npx hardhat compile` (`make contracts` does both). `--check` exits 1 instead of
writing when the committed artifact differs from Hardhat's build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedledger.chain.artifacts import (  # noqa: E402
    ARTIFACT_PATH,
    COURT_ARTIFACT_PATH,
    COURT_NAME,
    COURT_SOURCE,
    artifact_from_hardhat,
    load_artifact,
    write_artifact,
)
from fedledger.errors import FedledgerError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    try:
        pairs = [
            (artifact_from_hardhat(ROOT), ARTIFACT_PATH),
            (
                artifact_from_hardhat(ROOT, source_name=COURT_SOURCE, contract_name=COURT_NAME),
                COURT_ARTIFACT_PATH,
            ),
        ]
        for built, path in pairs:
            if args.check:
                if not path.is_file() or load_artifact(path) != built:
                    print(f"{path} is stale: run `make contracts`", file=sys.stderr)
                    return 1
                print(f"{path} is up to date")
                continue
            out = write_artifact(built, path)
            print(f"wrote {out.relative_to(ROOT)} (abi {built.abi_hash[:18]}…)")
    except FedledgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
