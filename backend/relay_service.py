"""The relay service behind ``POST /relay/updates``: gasless submission for contributors.

A contributor sends its EIP-712 signed update and the update file's bytes; the relayer checks
them, stores the bytes and submits the update on chain in a ``submitUpdatesFor`` batch, paying
the gas.  Checks run cheapest and safest first, and nothing is stored or sent until all pass:

1. rate limits: a token bucket per client IP, and one per contributor address (429);
2. the EIP-712 signature (:func:`client.relay.check_signed`: deadline, 65 bytes, low s, signer)
   — a forged, expired, malleable or foreign-chain signature costs one recovery, no I/O (422);
3. ``sha256(content) == contentHash`` and ``compute_cid(content) == cid`` (422);
4. the update is not already queued or submitted through this relayer (409);
5. the contract's own preconditions, by ``eth_call`` of ``submitUpdateFor`` (admitted, current
   round, not yet submitted, round not full or sealed…) — 409 with the contract's error name.

The address bucket is only *debited* once the signature verifies (it is checked before), so a
stranger cannot lock a contributor out by flooding forged requests in its name; those drain the
sender's IP bucket instead.

:class:`BatchRelayer` flushes a batch when it is full or its oldest entry has waited
``max_wait_s``.  ``submitUpdatesFor`` is all-or-nothing, so before sending a batch it is
simulated; if the simulation reverts (the round filled or was sealed since the entry was
checked), entries are re-simulated one by one and the ones that would revert are failed with
the contract's reason, so that one bad entry never sinks the others.

Durability: with a ``journal_path`` the service keeps a :class:`backend.relay_journal.RelayJournal`
(SQLite, WAL, ``synchronous=FULL``).  An update is committed there as ``queued`` before the
route answers 202, and marked ``submitted`` (tx hash, update id) or ``failed`` (reason) when its
batch is sent.  On start, every ``queued`` entry is queued again and goes through the same
simulation; one whose simulation reverts ``DuplicateSubmission`` is looked up among the
``UpdateSubmitted`` events, and if that very update is on chain (the process died after sending
its batch but before recording it) it becomes ``submitted`` instead of being sent twice.  A
relayer stopped without draining leaves its entries ``queued`` in the journal.  Statuses are
answered from memory, else from the journal, so they survive a restart.  Without a journal the
queue lives in memory only, and an acknowledged update is lost if the process dies.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.relay_journal import (
    EntryKey,
    JournalEntry,
    RelayJournal,
    RelayJournalError,
    RelayState,
    entry_key,
)
from client import codec
from client.chain import Ledger, SignedUpdate, decode_revert, encode_call, hex32, to_hex
from client.cid import compute_cid
from client.errors import ChainError, ContractRevert, FedledgerError
from client.relay import check_signed
from client.store import ContentStore

log = logging.getLogger("fedledger.relay")

ALREADY_ON_CHAIN = "already on chain: sent before the relayer restarted (not sent again)"


class RateLimited(FedledgerError):
    """Too many requests from one client or for one contributor; retry after ``retry_after``."""

    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ContentMismatch(FedledgerError):
    """The bytes sent are not the ones the signed update commits to."""

    http_status = 422


class AlreadyRelayed(ContractRevert):
    """This relayer already holds the update of this (task, round, contributor)."""

    def __init__(self, su: SignedUpdate) -> None:
        super().__init__(
            "DuplicateSubmission",
            {"taskId": su.task_id, "round": su.round, "contributor": su.contributor},
            f"DuplicateSubmission(taskId={su.task_id}, round={su.round}, "
            f"contributor={su.contributor}): this update is already queued or submitted",
        )


@dataclass(frozen=True)
class RelayLimits:
    """Request and rate limits of the relay endpoint (all configurable)."""

    max_body_bytes: int = 8 << 20
    """Largest ``POST /relay/updates`` body (JSON + base64 content); other routes keep 1 MiB."""
    address_burst: float = 4.0
    address_per_s: float = 0.5
    ip_burst: float = 120.0
    ip_per_s: float = 50.0
    max_tracked: int = 100_000
    """Most rate buckets and statuses kept in memory; the oldest idle ones are dropped."""


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens, refilled at ``per_s``; memory bounded."""

    def __init__(
        self,
        burst: float,
        per_s: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.per_s, self.max_keys, self.clock = burst, per_s, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.per_s)

    def _wait_for(self, level: float) -> float:
        return (1.0 - level) / self.per_s if self.per_s > 0 else math.inf

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0 if it has one now); takes nothing."""
        with self._lock:
            level = self._level(key, self.clock())
        return 0.0 if level >= 1.0 else self._wait_for(level)

    def take(self, key: str) -> float:
        """Take a token: 0 on success, else the seconds to wait (nothing taken)."""
        with self._lock:
            now = self.clock()
            level = self._level(key, now)
            if level < 1.0:
                return self._wait_for(level)
            self._buckets[key] = (level - 1.0, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return 0.0


@dataclass
class RelayStatus:
    """What became of one relayed update (``GET /relay/updates/{contributor}/{task}/{round}``)."""

    contributor: str
    task_id: int
    round: int
    cid: str
    state: RelayState = "queued"
    update_id: int | None = None
    tx_hash: str | None = None
    reason: str | None = None
    error: str | None = None


@dataclass
class _Entry:
    su: SignedUpdate
    status: RelayStatus


def status_of(entry: JournalEntry) -> RelayStatus:
    """The status the journal records for ``entry`` (after a restart)."""
    su = entry.update
    return RelayStatus(
        su.contributor,
        su.task_id,
        su.round,
        su.cid,
        state=entry.state,
        update_id=entry.update_id,
        tx_hash=entry.tx_hash,
        reason=entry.reason,
        error=entry.error,
    )


class BatchRelayer:
    """Queues checked signed updates and submits them in ``submitUpdatesFor`` batches.

    A worker thread flushes when ``batch_size`` entries wait or the oldest has waited
    ``max_wait_s``.  ``ledger`` must carry the relayer's key (it pays the gas).  With a
    ``journal``, :meth:`put` commits each entry there first and every outcome is recorded.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        batch_size: int = 32,
        max_wait_s: float = 1.0,
        on_done: Callable[[RelayStatus], None] | None = None,
        journal: RelayJournal | None = None,
    ) -> None:
        if not 1 <= batch_size <= 256:
            raise ValueError("relay batch size must be between 1 and 256")
        self.ledger = ledger
        self.sender = ledger._need_sender()
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.on_done = on_done
        self.journal = journal
        self.batches_sent = 0
        self._queue: list[_Entry] = []
        self._first_at: float | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return self.sender.address

    def put(self, su: SignedUpdate, status: RelayStatus) -> None:
        """Queue ``su``.  With a journal it is committed there first, so once this returns the
        update may be acknowledged; :class:`AlreadyRelayed` if the journal already holds it."""
        if self.journal is not None and not self.journal.add(su):
            raise AlreadyRelayed(su)
        with self._cond:
            self._append(_Entry(su, status))

    def requeue(self, su: SignedUpdate, status: RelayStatus) -> bool:
        """Queue an update the journal already holds (after a restart); False if it is queued."""
        key = entry_key(su)
        with self._cond:
            if any(entry_key(e.su) == key for e in self._queue):
                return False
            self._append(_Entry(su, status))
            return True

    def _append(self, entry: _Entry) -> None:
        """Append under ``self._cond``."""
        self._queue.append(entry)
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None

    def start(self) -> BatchRelayer:
        with self._cond:
            if self._thread is not None:
                return self
            self._stop = False
            self._thread = threading.Thread(target=self._run, daemon=True, name="relay-batcher")
        self._thread.start()
        return self

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the worker; with ``drain`` it first submits what is queued.  Without, queued
        entries are failed, or, with a journal, left ``queued`` there for the next start."""
        with self._cond:
            self._stop = True
            if not drain:
                if self.journal is None:
                    for e in self._queue:
                        self._fail(e, "relayer stopped before submitting", None)
                elif self._queue:
                    log.warning(
                        "relayer stopped with updates queued; they stay in the journal",
                        extra={"queued": len(self._queue), "journal": str(self.journal.path)},
                    )
                self._queue = []
                self._first_at = None
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _take_batch(self) -> list[_Entry] | None:
        """Block until a batch is due (or stop); None when stopped with nothing queued."""
        with self._cond:
            while True:
                if self._queue and (
                    self._stop
                    or len(self._queue) >= self.batch_size
                    or time.monotonic() - (self._first_at or 0.0) >= self.max_wait_s
                ):
                    batch = self._queue[: self.batch_size]
                    self._queue = self._queue[self.batch_size :]
                    self._first_at = time.monotonic() if self._queue else None
                    return batch
                if self._stop:
                    return None
                timeout = None
                if self._first_at is not None:
                    timeout = max(0.0, self._first_at + self.max_wait_s - time.monotonic())
                self._cond.wait(timeout)

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            try:
                self.flush(batch)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                log.exception("relay batch failed")
                for e in batch:
                    if e.status.state == "queued":
                        self._fail(e, f"relayer error: {type(exc).__name__}", None)

    def flush(self, batch: list[_Entry]) -> None:
        """Submit ``batch``: drop the entries that would revert, send the rest, record outcomes."""
        for attempt in range(2):
            batch = self._viable(batch)
            if not batch:
                return
            try:
                fn = self._batch_fn(batch)
                receipt = self.sender.wait(
                    self.sender.send(fn, label=f"submitUpdatesFor({len(batch)} updates)")
                )
            except ContractRevert as exc:
                if attempt == 0:  # the chain moved between simulation and mining: re-check
                    continue
                for e in batch:
                    self._fail(e, exc.message, exc.name)
                return
            except FedledgerError as exc:
                for e in batch:
                    self._fail(e, exc.message, None)
                return
            self.batches_sent += 1
            ids = self.ledger.update_ids(receipt)
            tx = to_hex(bytes(receipt["transactionHash"]))
            self._submitted(list(zip(batch, ids, strict=True)), tx)
            return

    def _batch_fn(self, batch: list[_Entry]) -> Any:
        return self.ledger.contract.functions.submitUpdatesFor([e.su.as_tuple() for e in batch])

    def _simulate(self, batch: list[_Entry]) -> ContractRevert | None:
        call = {
            "from": self.address,
            "to": self.ledger.address,
            "data": to_hex(encode_call(self._batch_fn(batch))),
        }
        return simulate(self.ledger, call)

    def _viable(self, batch: list[_Entry]) -> list[_Entry]:
        """The entries of ``batch`` that submit together without a revert, in order."""
        if self._simulate(batch) is None:
            return batch
        kept: list[_Entry] = []
        for e in batch:
            rev = self._simulate([*kept, e])
            if rev is None:
                kept.append(e)
            elif rev.name == "DuplicateSubmission" and (found := self._on_chain(e.su)):
                self._submitted([(e, found[0])], found[1], ALREADY_ON_CHAIN)
            else:
                self._fail(e, rev.message, rev.name)
        return kept

    def _on_chain(self, su: SignedUpdate) -> tuple[int, str] | None:
        """(update id, tx hash) if this very update (same contributor, hash, CID and samples)
        is recorded on chain, else None (nothing, or another update of the contributor)."""
        who, digest = su.contributor.lower(), hex32(su.content_hash)
        for ev in self.ledger.events("UpdateSubmitted", task_id=su.task_id, round_=su.round):
            a = ev["args"]
            if str(a["contributor"]).lower() != who:
                continue
            same = (bytes(a["contentHash"]), a["cid"], int(a["numSamples"])) == (
                digest,
                su.cid,
                su.num_samples,
            )
            return (int(a["updateId"]), str(ev["transactionHash"])) if same else None
        return None

    def _submitted(
        self, done: list[tuple[_Entry, int]], tx: str, reason: str | None = None
    ) -> None:
        """Record that each (entry, update id) of ``done`` is on chain in ``tx``."""
        journal = self.journal
        if journal is not None:
            outcomes = [(entry_key(e.su), uid) for e, uid in done]
            self._record(lambda: journal.mark_submitted(outcomes, tx, reason), tx=tx)
        for e, uid in done:
            e.status.update_id, e.status.tx_hash, e.status.state = uid, tx, "submitted"
            e.status.reason = reason
            if self.on_done:
                self.on_done(e.status)

    def _fail(self, e: _Entry, reason: str, error: str | None) -> None:
        journal = self.journal
        if journal is not None:
            key = entry_key(e.su)
            self._record(lambda: journal.mark_failed(key, reason, error), error=error)
        e.status.state, e.status.reason, e.status.error = "failed", reason, error
        if self.on_done:
            self.on_done(e.status)

    @staticmethod
    def _record(write: Callable[[], None], **context: str | None) -> None:
        """Write an outcome to the journal.  A failure here is logged, not raised: the entry
        stays ``queued`` there and is re-checked against the chain on the next start."""
        try:
            write()
        except RelayJournalError as exc:
            log.error(
                "relay journal write failed; the entry is re-checked on restart",
                extra={"error": exc.message, **context},
            )


def ledger_scope(ledger: Ledger) -> str:
    """The journal scope of ``ledger``: its chain id and contract address."""
    return f"{ledger.chain_id}:{ledger.address.lower()}"


def simulate(ledger: Ledger, call: dict[str, Any]) -> ContractRevert | None:
    """``eth_call`` ``call`` on the latest block: None if it would succeed, else the contract's
    named error.  Transport failures raise :class:`ChainError`."""
    try:
        res = ledger.w3.provider.make_request("eth_call", [call, "latest"])  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - transport failures of any kind
        raise ChainError(f"eth_call failed: {type(exc).__name__}") from exc
    err = res.get("error") if isinstance(res, dict) else None
    if not err:
        return None
    data = err.get("data") if isinstance(err, dict) else None
    if isinstance(data, dict):
        data = data.get("data")
    rev = decode_revert(data) if isinstance(data, str) else None
    if rev is None:
        message = err.get("message") if isinstance(err, dict) else err
        raise ChainError(f"eth_call failed: {message}")
    return rev


@dataclass
class RelayService:
    """The checks and bookkeeping of ``POST /relay/updates``; thread-safe.

    ``ledger`` carries the relayer's key; ``store`` keeps the update bytes for the validators.
    ``journal_path``, if given, is the SQLite file of :class:`RelayJournal` that makes an
    acknowledged update survive a crash (see the module docstring); None keeps everything in
    memory (tests and tools that do not need durability).
    """

    ledger: Ledger
    store: ContentStore
    limits: RelayLimits = field(default_factory=RelayLimits)
    batch_size: int = 32
    max_wait_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    journal_path: Path | None = None

    def __post_init__(self) -> None:
        self.by_ip = TokenBuckets(
            self.limits.ip_burst,
            self.limits.ip_per_s,
            max_keys=self.limits.max_tracked,
            clock=self.clock,
        )
        self.by_address = TokenBuckets(
            self.limits.address_burst,
            self.limits.address_per_s,
            max_keys=self.limits.max_tracked,
            clock=self.clock,
        )
        self.journal = (
            RelayJournal(self.journal_path, ledger_scope(self.ledger))
            if self.journal_path is not None
            else None
        )
        self.relayer = BatchRelayer(
            self.ledger,
            batch_size=self.batch_size,
            max_wait_s=self.max_wait_s,
            journal=self.journal,
        )
        self._statuses: OrderedDict[tuple[str, int, int], RelayStatus] = OrderedDict()
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def start(self) -> RelayService:
        """Start the batch worker, first queueing again what the journal holds as ``queued``."""
        if not self.relayer.running:
            self._recover()
        self.relayer.start()
        return self

    def stop(self) -> None:
        self.relayer.stop()

    def close(self) -> None:
        """Stop (draining the queue) and close the journal."""
        self.stop()
        if self.journal is not None:
            self.journal.close()

    def _recover(self) -> int:
        """Queue every entry the journal holds as ``queued``; the worker re-simulates each."""
        if self.journal is None:
            return 0
        n = 0
        for entry in self.journal.queued():
            su = entry.update
            status = RelayStatus(su.contributor, su.task_id, su.round, su.cid)
            if not self.relayer.requeue(su, status):
                continue  # already in this process's queue
            with self._lock:
                self._statuses[entry.key] = status
                self._statuses.move_to_end(entry.key)
                self._evict()
            n += 1
        if n:
            self._count("recovered", n)
            log.info(
                "relay journal: queued again the updates acknowledged before a restart",
                extra={"recovered": n, "journal": str(self.journal.path)},
            )
        return n

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + n

    @staticmethod
    def _key(contributor: str, task_id: int, round_: int) -> EntryKey:
        return (contributor.lower(), task_id, round_)

    def status(self, contributor: str, task_id: int, round_: int) -> RelayStatus | None:
        """What became of the update of this key: from memory, else from the journal."""
        key = self._key(contributor, task_id, round_)
        with self._lock:
            held = self._statuses.get(key)
        if held is not None or self.journal is None:
            return held
        entry = self.journal.get(key)
        return None if entry is None else status_of(entry)

    def check_rate(self, contributor: str, client_ip: str) -> None:
        """429 before any real work: the client IP pays a token, the address must have one."""
        wait = self.by_address.wait(contributor.lower())
        if wait > 0:
            self._count("rate_limited")
            raise RateLimited(f"too many relayed updates for {contributor}", wait)
        wait = self.by_ip.take(client_ip)
        if wait > 0:
            self._count("rate_limited")
            raise RateLimited(f"too many requests from {client_ip}", wait)

    def submit(self, su: SignedUpdate, content: bytes, client_ip: str) -> RelayStatus:
        """Check ``su`` and ``content`` (see the module docstring), store and queue them."""
        self.check_rate(su.contributor, client_ip)
        check_signed(self.ledger, su)
        wait = self.by_address.take(su.contributor.lower())
        if wait > 0:
            self._count("rate_limited")
            raise RateLimited(f"too many relayed updates for {su.contributor}", wait)
        if codec.sha256_hex(content) != su.content_hash.lower():
            raise ContentMismatch("sha256 of the content does not match the signed contentHash")
        if compute_cid(content) != su.cid:
            raise ContentMismatch("the content's CID does not match the signed cid")
        key = self._key(su.contributor, su.task_id, su.round)
        status = RelayStatus(su.contributor, su.task_id, su.round, su.cid)
        with self._lock:
            held = self._statuses.get(key)
            if held is not None and held.state != "failed":
                raise AlreadyRelayed(su)
            self._statuses[key] = status  # reserved: a concurrent twin now gets 409
            self._statuses.move_to_end(key)
            self._evict()
        try:
            rev = self._precheck(su)
            if rev is not None:
                raise rev
            self.store.put(content)
            self.relayer.put(su, status)  # committed to the journal, if any, before the 202
        except BaseException:
            with self._lock:
                if self._statuses.get(key) is status:
                    del self._statuses[key]
            raise
        self._count("queued")
        return status

    def _precheck(self, su: SignedUpdate) -> ContractRevert | None:
        fn = self.ledger.contract.functions.submitUpdateFor(*su.as_tuple())
        call = {
            "from": self.relayer.address,
            "to": self.ledger.address,
            "data": to_hex(encode_call(fn)),
        }
        return simulate(self.ledger, call)

    def _evict(self) -> None:
        """Drop the oldest finished statuses beyond ``max_tracked`` (queued ones stay)."""
        excess = len(self._statuses) - self.limits.max_tracked
        if excess <= 0:
            return
        for k in [k for k, s in self._statuses.items() if s.state != "queued"][:excess]:
            del self._statuses[k]
