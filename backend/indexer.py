"""A reorg-safe, crash-safe event indexer.  It knows nothing of fedledger's events.

The framework part, written once (after Ponder / The Graph):

* reads logs in bounded ``eth_getLogs`` chunks up to ``head - confirmations``;
* records the hash of every block it indexed logs from, and of each chunk's last block;
* before each pass compares its checkpoint's hash with the chain's; on a mismatch it walks back
  through the recorded hashes to the fork point, deletes every event above it and rebuilds the
  projections from the events that remain;
* writes the events, their projections and the new checkpoint in ONE database transaction, so a
  crash at any point leaves either all of a chunk or none of it: nothing lost, nothing twice.

What the events mean lives in the handlers passed in (see :mod:`backend.handlers`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.db import BlockSeen, Checkpoint, Database, EventRow
from client.errors import ChainError

log = logging.getLogger("fedledger.indexer")

Handler = Callable[[Session, EventRow], None]
KEEP_BLOCK_HASHES = 1024


class LogSource(Protocol):
    """What the indexer needs from a chain."""

    @property
    def address(self) -> str: ...

    @property
    def chain_id(self) -> int: ...

    def head(self) -> int: ...

    def block(self, number: int) -> tuple[str, int]:
        """(hash, timestamp) of a block."""
        ...

    def logs(self, from_block: int, to_block: int) -> list[dict[str, Any]]: ...


@dataclass
class LedgerSource:
    """A :class:`LogSource` over a :class:`client.chain.Ledger`."""

    ledger: Any
    chunk: int = 2000

    @property
    def address(self) -> str:
        return str(self.ledger.address)

    @property
    def chain_id(self) -> int:
        return int(self.ledger.chain_id)

    def head(self) -> int:
        try:
            return int(self.ledger.w3.eth.block_number)
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"cannot read the chain head: {exc}") from exc

    def block(self, number: int) -> tuple[str, int]:
        try:
            b = self.ledger.w3.eth.get_block(number)
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"cannot read block {number}: {exc}") from exc
        return "0x" + bytes(b["hash"]).hex(), int(b["timestamp"])

    def logs(self, from_block: int, to_block: int) -> list[dict[str, Any]]:
        return list(self.ledger.iter_logs(from_block, to_block, chunk=self.chunk))


class ReorgDuringRead(ChainError):
    """A log's block hash disagreed with the header read right after: the chain moved; retry."""


@dataclass
class Indexer:
    """Follows one contract into the database through the given handlers."""

    source: LogSource
    db: Database
    handlers: Mapping[str, Handler]
    rebuild: Callable[[Session], None]
    start_block: int = 0
    confirmations: int = 0
    chunk: int = 2000
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    reorgs: int = 0

    # -- state --------------------------------------------------------------------------------

    def checkpoint(self, s: Session) -> Checkpoint | None:
        return s.get(Checkpoint, self.source.address)

    def last_indexed(self) -> int | None:
        with self.db.session() as s:
            cp = self.checkpoint(s)
            return None if cp is None else cp.block_number

    # -- one pass -----------------------------------------------------------------------------

    def run_once(self, max_chunks: int | None = None) -> int:
        """Index what is confirmed now; return how many events were ingested."""
        self._check_reorg()
        target = self.source.head() - self.confirmations
        with self.db.session() as s:
            cp = self.checkpoint(s)
            start = self.start_block if cp is None else cp.block_number + 1
        total = 0
        chunks = 0
        while start <= target:
            end = min(target, start + self.chunk - 1)
            total += self._ingest(start, end)
            start = end + 1
            chunks += 1
            if max_chunks is not None and chunks >= max_chunks:
                break
        for hook in self.after_commit:
            hook()
        return total

    def _ingest(self, start: int, end: int) -> int:
        logs = self.source.logs(start, end)
        headers: dict[int, tuple[str, int]] = {}
        for n in sorted({int(lg["blockNumber"]) for lg in logs} | {end}):
            headers[n] = self.source.block(n)
        for lg in logs:
            if headers[int(lg["blockNumber"])][0] != lg["blockHash"]:
                raise ReorgDuringRead(
                    f"block {lg['blockNumber']} changed while reading logs; will retry"
                )
        with self.db.transaction() as s:
            cp = self.checkpoint(s)
            expected = self.start_block if cp is None else cp.block_number + 1
            if start != expected:  # another process moved the checkpoint: don't double count
                raise ChainError(
                    f"checkpoint moved under the indexer (expected {expected}, got {start})"
                )
            for lg in logs:
                row = EventRow(
                    block_number=int(lg["blockNumber"]),
                    log_index=int(lg["logIndex"]),
                    block_hash=lg["blockHash"],
                    block_time=headers[int(lg["blockNumber"])][1],
                    tx_hash=lg["transactionHash"],
                    name=lg["event"],
                    args=jsonable(lg["args"]),
                )
                s.add(row)
                s.flush()
                handler = self.handlers.get(row.name)
                if handler is not None:
                    handler(s, row)
            for n, (h, _t) in headers.items():
                s.merge(BlockSeen(number=n, hash=h))
            end_hash = headers[end][0]
            if cp is None:
                s.add(
                    Checkpoint(
                        contract=self.source.address,
                        chain_id=self.source.chain_id,
                        block_number=end,
                        block_hash=end_hash,
                    )
                )
            else:
                cp.block_number = end
                cp.block_hash = end_hash
            s.execute(delete(BlockSeen).where(BlockSeen.number < end - KEEP_BLOCK_HASHES))
        if logs:
            log.info("indexed", extra={"from": start, "to": end, "events": len(logs)})
        return len(logs)

    # -- reorgs -------------------------------------------------------------------------------

    def _check_reorg(self) -> None:
        with self.db.session() as s:
            cp = self.checkpoint(s)
            if cp is None:
                return
            number, stored = cp.block_number, cp.block_hash
        if self._chain_hash(number) == stored:
            return
        fork = self._find_fork(number)
        self.rollback_to(fork)

    def _chain_hash(self, number: int) -> str | None:
        try:
            return self.source.block(number)[0]
        except ChainError:
            if number > self.source.head():
                return None  # the chain got shorter (a restarted devnet or a deep reorg)
            raise

    def _find_fork(self, above: int) -> int:
        """The highest recorded block whose hash the chain still has (start_block - 1 if none)."""
        with self.db.session() as s:
            rows = s.scalars(
                select(BlockSeen).where(BlockSeen.number <= above).order_by(BlockSeen.number.desc())
            ).all()
            for b in rows:
                if self._chain_hash(b.number) == b.hash:
                    return b.number
        return self.start_block - 1

    def rollback_to(self, fork: int) -> None:
        """Forget everything above ``fork`` and rebuild the projections, in one transaction."""
        self.reorgs += 1
        log.warning("reorg", extra={"fork_block": fork})
        with self.db.transaction() as s:
            s.execute(delete(EventRow).where(EventRow.block_number > fork))
            s.execute(delete(BlockSeen).where(BlockSeen.number > fork))
            cp = self.checkpoint(s)
            if cp is not None:
                if fork < self.start_block:
                    s.delete(cp)
                else:
                    cp.block_number = fork
                    kept = s.get(BlockSeen, fork)
                    cp.block_hash = kept.hash if kept else self.source.block(fork)[0]
            s.flush()
            self.rebuild(s)
            for row in s.scalars(
                select(EventRow).order_by(EventRow.block_number, EventRow.log_index)
            ):
                handler = self.handlers.get(row.name)
                if handler is not None:
                    handler(s, row)


def jsonable(value: Any) -> Any:
    """Event args as JSON: bytes → 0x-hex, tuples → lists, big ints kept as ints."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
