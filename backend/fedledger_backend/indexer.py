"""A reorg-safe, crash-safe event indexer.  It knows nothing of fedledger's events.

The framework part, written once (after Ponder / The Graph):

* reads logs in bounded ``eth_getLogs`` chunks up to ``head - confirmations``, and the headers
  of the blocks it needs in JSON-RPC batches (one round trip per few hundred blocks);
* keeps the hashes of the last ``KEEP_BLOCK_HASHES`` blocks below its checkpoint, and of the
  start block (the anchor); every stored event keeps its own block's hash too;
* before each pass compares its checkpoint's hash with the chain's; on a mismatch it walks back
  through the recorded hashes (then through the events' hashes) to the fork point, deletes every
  event above it and replays the remaining events into freshly emptied projections;
* refuses to guess when no recorded block survives at all (a restarted devnet, or an RPC URL that
  now points at another chain): :class:`ChainReplaced`, and the index is left as it was;
* writes the events, their projections and the new checkpoint in ONE database transaction, and
  checks that the chunk still hangs off the checkpoint's block, so a crash or a reorg at any
  point leaves either all of a chunk or none of it: nothing lost, nothing twice;
* isolates each event (see :mod:`fedledger_backend.quarantine`): an event whose handler fails, on any
  value an attacker can put in an event, is quarantined -- its projection changes undone (a
  SAVEPOINT), a ``quarantine`` row with its block, log index, transaction, subject (task,
  round, update, when its args name them) and reason, a structured log line -- and the chunk
  goes on and commits with its checkpoint.  Handlers are pure functions of the event, so a
  second try would fail the same way.  A transient database error (locked, disk full) is not
  the event's fault: it fails the chunk, which the next pass retries.  The same isolation
  applies when events are replayed after a reorg or ``--reindex``.

What the events mean lives in the handlers passed in (see :mod:`fedledger_backend.handlers`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.orm import Session

from fedledger.chain.ledger import rpc_batch
from fedledger.errors import ChainError, ConfigError
from fedledger_backend import quarantine
from fedledger_backend.db import BlockSeen, Checkpoint, Database, EventRow, QuarantineRow

log = logging.getLogger("fedledger.indexer")

Handler = Callable[[Session, EventRow], None]
Header = tuple[str, int]
"""(block hash, timestamp)"""

KEEP_BLOCK_HASHES = 256
"""Contiguous block hashes kept below the checkpoint; deeper forks are found via the events."""
FORK_SEARCH_PAGE = 256
REPLAY_PAGE = 1000
INDEX_STAGE = "index"
"""The quarantine stage of events whose handler failed."""


class LogSource(Protocol):
    """What the indexer needs from a chain."""

    @property
    def address(self) -> str: ...

    @property
    def chain_id(self) -> int: ...

    def head(self) -> int: ...

    def headers(self, numbers: Iterable[int]) -> dict[int, Header | None]:
        """(hash, timestamp) of each block; None for a block the chain does not have."""
        ...

    def logs(self, from_block: int, to_block: int) -> list[dict[str, Any]]: ...


@dataclass
class LedgerSource:
    """A :class:`LogSource` over a :class:`fedledger.chain.ledger.Ledger`."""

    ledger: Any
    chunk: int = 2000

    @property
    def address(self) -> str:
        return str(self.ledger.address)

    @property
    def chain_id(self) -> int:
        try:
            return int(self.ledger.chain_id)
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"cannot read the chain id: {exc}") from exc

    def head(self) -> int:
        try:
            return int(self.ledger.w3.eth.block_number)
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"cannot read the chain head: {exc}") from exc

    def headers(self, numbers: Iterable[int]) -> dict[int, Header | None]:
        wanted = sorted(set(numbers))
        if not wanted:
            return {}
        try:
            answers = rpc_batch(
                self.ledger.w3, [("eth_getBlockByNumber", [hex(n), False]) for n in wanted]
            )
        except ConfigError:  # not an HTTP provider: one call per block
            return {n: self._one(n) for n in wanted}
        out: dict[int, Header | None] = {}
        for n, ans in zip(wanted, answers, strict=True):
            if "error" in ans:
                raise ChainError(f"cannot read block {n}: {ans['error'].get('message')}")
            b = ans.get("result")
            out[n] = None if b is None else (str(b["hash"]), int(b["timestamp"], 16))
        return out

    def _one(self, number: int) -> Header | None:
        from web3.exceptions import BlockNotFound

        try:
            b = self.ledger.w3.eth.get_block(number)
        except BlockNotFound:
            return None
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"cannot read block {number}: {exc}") from exc
        return "0x" + bytes(b["hash"]).hex(), int(b["timestamp"])

    def logs(self, from_block: int, to_block: int) -> list[dict[str, Any]]:
        return list(self.ledger.iter_logs(from_block, to_block, chunk=self.chunk))


class ReorgDuringRead(ChainError):
    """The chain moved while a chunk was being read; the next pass rolls back and retries."""


class ChainReplaced(ChainError):
    """No block the index recorded is on the chain any more: not a reorg but another chain."""


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
    subject: Mapping[str, str] = field(default_factory=dict)
    """Which event args name what a quarantined event was about: ``{"task_id": "taskId",
    "round": "round", "update_id": "updateId"}`` (the quarantine row's columns)."""
    quarantined: int = 0
    """Events this indexer quarantined since it started."""

    # -- state --------------------------------------------------------------------------------

    def checkpoint(self, s: Session) -> Checkpoint | None:
        return s.get(Checkpoint, self.source.address)

    def last_indexed(self) -> int | None:
        with self.db.session() as s:
            cp = self.checkpoint(s)
            return None if cp is None else cp.block_number

    def confirmed_head(self) -> int:
        """The highest block this indexer treats as final now."""
        return self.source.head() - self.confirmations

    # -- one pass -----------------------------------------------------------------------------

    def run_once(self, max_chunks: int | None = None) -> int:
        """Index what is confirmed now; return how many events were ingested."""
        self._check_reorg()
        target = self.confirmed_head()
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
        # The end block's hash before and after reading the logs pins the logs to one chain:
        # a block hash commits to all its ancestors.
        before = self._header(end)
        logs = self.source.logs(start, end)
        wanted = {int(lg["blockNumber"]) for lg in logs}
        wanted |= set(range(max(start, end - KEEP_BLOCK_HASHES + 1), end + 1))
        wanted.add(start)  # the anchor when start is start_block; harmless otherwise
        if start - 1 >= self.start_block:
            wanted.add(start - 1)  # the checkpoint's block: does this chunk hang off it?
        got = self.source.headers(wanted)
        missing = sorted(n for n, h in got.items() if h is None)
        if missing:
            raise ReorgDuringRead(f"block {missing[0]} vanished while reading; will retry")
        headers: dict[int, Header] = {n: h for n, h in got.items() if h is not None}
        if headers[end][0] != before[0]:
            raise ReorgDuringRead(f"block {end} changed while reading logs; will retry")
        for lg in logs:
            if headers[int(lg["blockNumber"])][0] != lg["blockHash"]:
                raise ReorgDuringRead(
                    f"block {lg['blockNumber']} changed while reading logs; will retry"
                )
        rows = [
            {
                "block_number": int(lg["blockNumber"]),
                "log_index": int(lg["logIndex"]),
                "block_hash": lg["blockHash"],
                "block_time": headers[int(lg["blockNumber"])][1],
                "tx_hash": lg["transactionHash"],
                "name": lg["event"],
                "args": jsonable(lg["args"]),
            }
            for lg in logs
        ]
        with self.db.transaction() as s:
            cp = self.checkpoint(s)
            expected = self.start_block if cp is None else cp.block_number + 1
            if start != expected:  # another process moved the checkpoint: don't double count
                raise ChainError(
                    f"checkpoint moved under the indexer (expected {expected}, got {start})"
                )
            if cp is not None and headers[cp.block_number][0] != cp.block_hash:
                raise ReorgDuringRead(f"block {cp.block_number} was reorganised; will roll back")
            if rows:
                s.execute(insert(EventRow), rows)
                self._apply(s, [EventRow(**r) for r in rows])
            keep_from = max(start, end - KEEP_BLOCK_HASHES + 1)
            s.execute(delete(BlockSeen).where(BlockSeen.number >= start))
            recorded = [(n, headers[n][0]) for n in range(keep_from, end + 1)]
            if cp is None and start < keep_from:
                recorded.insert(0, (start, headers[start][0]))
            s.execute(insert(BlockSeen), [{"number": n, "hash": h} for n, h in recorded])
            s.execute(
                delete(BlockSeen).where(
                    BlockSeen.number <= end - KEEP_BLOCK_HASHES,
                    BlockSeen.number != self.start_block,
                )
            )
            if cp is None:
                s.add(
                    Checkpoint(
                        contract=self.source.address,
                        chain_id=self.source.chain_id,
                        block_number=end,
                        block_hash=headers[end][0],
                    )
                )
            else:
                cp.block_number = end
                cp.block_hash = headers[end][0]
        if logs:
            log.info("indexed", extra={"from": start, "to": end, "events": len(logs)})
        return len(logs)

    def _header(self, number: int) -> Header:
        h = self.source.headers([number]).get(number)
        if h is None:
            raise ReorgDuringRead(f"block {number} vanished while reading; will retry")
        return h

    # -- reorgs -------------------------------------------------------------------------------

    def _check_reorg(self) -> None:
        with self.db.session() as s:
            cp = self.checkpoint(s)
            if cp is None:
                return
            number, stored, chain_id = cp.block_number, cp.block_hash, cp.chain_id
        if chain_id != self.source.chain_id:
            raise self._replaced(f"the index holds chain {chain_id}, the RPC serves another")
        got = self.source.headers([number]).get(number)
        if got is not None and got[0] == stored:
            return
        fork, fork_hash = self._find_fork(number)
        self.rollback_to(fork, fork_hash)

    def _recorded(self, above: int) -> Iterator[list[tuple[int, str]]]:
        """Recorded (number, hash) pairs at or below ``above``, highest first, in pages: the
        kept window first, then the blocks of stored events, then the anchor."""
        with self.db.session() as s:
            window = list(
                s.execute(
                    select(BlockSeen.number, BlockSeen.hash)
                    .where(BlockSeen.number <= above)
                    .order_by(BlockSeen.number.desc())
                ).tuples()
            )
        anchor = [(n, h) for n, h in window if n == self.start_block]
        window = [(n, h) for n, h in window if n != self.start_block]
        for i in range(0, len(window), FORK_SEARCH_PAGE):
            yield window[i : i + FORK_SEARCH_PAGE]
        below = min((n for n, _ in window), default=above + 1)
        while True:
            with self.db.session() as s:
                page = list(
                    s.execute(
                        select(EventRow.block_number, EventRow.block_hash)
                        .where(EventRow.block_number < below)
                        .group_by(EventRow.block_number, EventRow.block_hash)
                        .order_by(EventRow.block_number.desc())
                        .limit(FORK_SEARCH_PAGE)
                    ).tuples()
                )
            if not page:
                break
            yield page
            below = page[-1][0]
        if anchor:
            yield anchor

    def _find_fork(self, above: int) -> tuple[int, str]:
        """The highest recorded block whose hash the chain still has, with that hash."""
        for page in self._recorded(above):
            chain = self.source.headers(n for n, _ in page)
            for n, h in page:
                got = chain.get(n)
                if got is not None and got[0] == h:
                    return n, h
        raise self._replaced("none of the blocks it recorded is on the chain any more")

    def _replaced(self, why: str) -> ChainReplaced:
        url = self.db.url
        where = url if url.startswith("sqlite") else url.split("://", 1)[0] + "://…"
        return ChainReplaced(
            f"the chain was replaced under the index of {self.source.address}: {why} "
            f"(a restarted devnet, or an RPC URL that points at another chain); the index is "
            f"left as it was",
            hint=f"point the RPC URL at the original chain, or delete the database {where} "
            f"to re-index this one",
        )

    def reset(self) -> None:
        """Forget everything and index again from ``start_block`` (after :class:`ChainReplaced`,
        once the operator has decided the new chain is the right one)."""
        self.rollback_to(self.start_block - 1)

    def rollback_to(self, fork: int, fork_hash: str | None = None) -> None:
        """Forget everything above ``fork`` and rebuild the projections, in one transaction."""
        self.reorgs += 1
        log.warning("reorg", extra={"fork_block": fork})
        if fork >= self.start_block and fork_hash is None:
            fork_hash = self._header(fork)[0]
        with self.db.transaction() as s:
            s.execute(delete(EventRow).where(EventRow.block_number > fork))
            s.execute(delete(BlockSeen).where(BlockSeen.number > fork))
            s.execute(  # the replay below quarantines again whatever still fails
                delete(QuarantineRow).where(QuarantineRow.stage == INDEX_STAGE)
            )
            cp = self.checkpoint(s)
            if cp is not None:
                if fork < self.start_block:
                    s.delete(cp)
                else:
                    assert fork_hash is not None
                    cp.block_number = fork
                    cp.block_hash = fork_hash
            s.flush()
            self.rebuild(s)
            self._replay(s)

    # -- isolation ------------------------------------------------------------------------------

    def _apply(self, s: Session, events: Sequence[EventRow]) -> None:
        """Run ``events`` through their handlers, quarantining any that fails (module docstring).

        All of them first go in one SAVEPOINT (the common case costs one); only if that fails
        are they applied again one SAVEPOINT each, to find the one that failed."""
        todo = [(ev, h) for ev in events if (h := self.handlers.get(ev.name)) is not None]
        if not todo:
            return
        try:
            with s.begin_nested():  # flushed on exit: a value a column refuses fails here
                for ev, handler in todo:
                    handler(s, ev)
            return
        except Exception as exc:
            if quarantine.is_transient_db(exc):
                raise
            s.info.clear()  # handlers' per-session caches may hold rows the rollback discarded
        for ev, handler in todo:
            try:
                with s.begin_nested():
                    handler(s, ev)
            except Exception as exc:
                if quarantine.is_transient_db(exc):
                    raise
                s.info.clear()
                self._quarantine(s, ev, exc)

    def _quarantine(self, s: Session, ev: EventRow, exc: Exception) -> None:
        args = ev.args if isinstance(ev.args, Mapping) else {}

        def about(column: str) -> int | None:
            value = args.get(self.subject.get(column, ""))
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        reason = (
            f"event {ev.name} (block {ev.block_number}, log {ev.log_index}, tx {ev.tx_hash}) "
            f"could not be indexed: {quarantine.describe(exc)}"
        )
        with s.begin_nested():
            quarantine.put(
                s,
                quarantine.event_key(ev.block_number, ev.log_index),
                stage=INDEX_STAGE,
                state=quarantine.QUARANTINED,
                reason=reason,
                event=ev,
                task_id=about("task_id"),
                round=about("round"),
                update_id=about("update_id"),
            )
        self.quarantined += 1
        log.warning(
            "event quarantined",
            extra={
                "event_name": ev.name,
                "block": ev.block_number,
                "log_index": ev.log_index,
                "tx": ev.tx_hash,
                "task": about("task_id"),
                "update": about("update_id"),
                "error": quarantine.describe(exc),
            },
            exc_info=exc,
        )

    def _replay(self, s: Session) -> None:
        """Run every stored event through its handler again, in chain order, page by page."""
        last: tuple[int, int] = (-1, -1)
        while True:
            page = list(
                s.scalars(
                    select(EventRow)
                    .where(tuple_(EventRow.block_number, EventRow.log_index) > last)
                    .order_by(EventRow.block_number, EventRow.log_index)
                    .limit(REPLAY_PAGE)
                )
            )
            if not page:
                return
            self._apply(s, page)
            last = (page[-1].block_number, page[-1].log_index)
            for row in page:
                s.expunge(row)


def jsonable(value: Any) -> Any:
    """Event args as JSON: bytes → 0x-hex, tuples → lists, big ints kept as ints."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


__all__: Sequence[str] = [
    "ChainReplaced",
    "Indexer",
    "LedgerSource",
    "LogSource",
    "ReorgDuringRead",
    "jsonable",
]
