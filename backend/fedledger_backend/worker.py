"""The indexer on its own, as a process: ``python -m fedledger_backend.worker --rpc-url URL --contract
ADDR --db URL``.  It follows the contract into the database until stopped (or, with
``--until-synced``, until it reaches the confirmed head), one chunk per transaction.

Killing it at any moment is safe (each chunk commits with its checkpoint, or not at all); the
crash tests run exactly this with ``kill -9`` at random points.  Prints one line per commit.
"""

from __future__ import annotations

import argparse
import sys
import time

from fedledger.chain.ledger import Ledger, connect
from fedledger.errors import FedledgerError
from fedledger_backend.db import Database
from fedledger_backend.handlers import HANDLERS, rebuild
from fedledger_backend.indexer import Indexer, LedgerSource


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fedledger_backend.worker", description=__doc__)
    ap.add_argument("--rpc-url", required=True)
    ap.add_argument("--contract", required=True)
    ap.add_argument("--db", required=True, help="sqlite:///path or postgresql://…")
    ap.add_argument("--from-block", type=int, default=0)
    ap.add_argument("--confirmations", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=2000, help="blocks per transaction")
    ap.add_argument("--poll", type=float, default=1.0, help="seconds between passes when idle")
    ap.add_argument("--until-synced", action="store_true", help="exit at the confirmed head")
    args = ap.parse_args(argv)
    try:
        ledger = Ledger(connect(args.rpc_url), args.contract, from_block=args.from_block)
        indexer = Indexer(
            LedgerSource(ledger, chunk=args.chunk),
            Database(args.db).create(),
            HANDLERS,
            rebuild,
            start_block=args.from_block,
            confirmations=args.confirmations,
            chunk=args.chunk,
        )
        print("ready", flush=True)
        while True:
            n = indexer.run_once(max_chunks=1)
            last = indexer.last_indexed()
            print(f"checkpoint {last} events {n}", flush=True)
            if (args.from_block - 1 if last is None else last) >= indexer.confirmed_head():
                if args.until_synced:
                    return 0
                time.sleep(args.poll)
    except FedledgerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
