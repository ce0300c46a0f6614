"""Isolation: what cannot be processed is marked, retried a bounded number of times, then
quarantined, and everything else goes on.

Every byte the worker handles may be an attacker's: an event field, a task spec, an update, a
verdict file.  One of them must never stop the index or the validation of anyone else.  The
worker's stages share one discipline:

* an **event** whose handler fails is quarantined at once (handlers are pure functions of the
  event, so trying again gives the same failure): :class:`fedledger_backend.indexer.Indexer` records it
  here, in the same transaction that moves its checkpoint past it;
* a **task** that fails in a stage (``validate``, ``verdicts``, ``evaluate``) is marked
  ``retrying`` and tried again after a backoff that doubles; after ``max_attempts`` failures
  of the same round it is ``quarantined`` until its round changes on chain (someone else
  finalised it) or the worker restarts;
* a **transient** failure (the database, the chain's RPC endpoint or the content store is
  unreachable) says nothing about the item: it backs off the same way but is never
  quarantined for it;
* a worker that dies while judging a task (a crash no ``except`` can catch) leaves that task
  ``running`` here; the next worker counts it as a failed attempt, so a task that kills the
  worker every time is quarantined after ``max_attempts`` restarts instead of looping.

Quarantine is visible: a structured log line, ``GET /health`` (counts and the last reason) and
``GET /tasks/{id}`` (``status``, ``status_reason``).  The table is a cache like every other:
``--reindex`` empties it and everything is tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from fedledger.errors import ChainError, ContractRevert, FedledgerError, IntegrityError, StoreError
from fedledger.redact import public_reason, public_text
from fedledger_backend.db import Database, EventRow, QuarantineRow

log = logging.getLogger("fedledger.quarantine")

RETRYING = "retrying"
RUNNING = "running"
QUARANTINED = "quarantined"

MAX_ATTEMPTS = 4
BACKOFF_S = 2.0
BACKOFF_CAP_S = 120.0

_DB_TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def is_transient_db(exc: BaseException) -> bool:
    """A database failure that says nothing about the data (locked, disk full, connection
    lost): retry the whole unit later, never quarantine for it."""
    return isinstance(exc, _DB_TRANSIENT)


def is_transient(exc: BaseException) -> bool:
    """A failure of something the node depends on rather than of the item: the database, the
    chain's RPC endpoint (not a contract's refusal) or the content store (not corrupted or
    malformed content), or the network."""
    if is_transient_db(exc):
        return True
    if isinstance(exc, ContractRevert | IntegrityError):
        return False
    if isinstance(exc, ChainError | StoreError):
        return True
    if isinstance(exc, FedledgerError):
        return False
    return isinstance(exc, ConnectionError | TimeoutError)


def describe(exc: BaseException) -> str:
    """The public reason recorded for ``exc`` (no local paths, bounded)."""
    return public_reason(exc)


# -- bounded retries, in memory -------------------------------------------------------------------


@dataclass
class Failing:
    """One key's failures in a row."""

    attempts: int
    reason: str
    round: int | None
    transient: bool
    quarantined: bool
    next_at: float


@dataclass
class Retries:
    """Per key (a task id, a (task, round)): how often it failed in a row, when to try it
    again, and whether it was given up.  Failures of a new round start the count again."""

    max_attempts: int = MAX_ATTEMPTS
    backoff_s: float = BACKOFF_S
    cap_s: float = BACKOFF_CAP_S
    clock: Callable[[], float] = time.monotonic
    failing: dict[Hashable, Failing] = field(default_factory=dict)

    def due(self, key: Hashable) -> bool:
        """Whether ``key`` may be tried now (never failed, or its backoff is over; a
        quarantined key comes back every ``cap_s`` only for its owner to check whether its
        round moved: see :meth:`parole`)."""
        f = self.failing.get(key)
        return f is None or self.clock() >= f.next_at

    def parole(self, key: Hashable) -> None:
        """A quarantined key was checked and stays quarantined: look again in ``cap_s``."""
        f = self.failing.get(key)
        if f is not None:
            f.next_at = self.clock() + self.cap_s

    def failed(
        self,
        key: Hashable,
        reason: str,
        *,
        transient: bool = False,
        round: int | None = None,
        attempts: int | None = None,
    ) -> Failing:
        """Record one more failure (``attempts`` sets the count, e.g. from a crashed worker)."""
        prev = self.failing.get(key)
        same = prev is not None and (round is None or prev.round == round)
        n = attempts if attempts is not None else (prev.attempts + 1 if same and prev else 1)
        given_up = not transient and n >= self.max_attempts
        delay = self.cap_s if given_up else min(self.cap_s, self.backoff_s * 2 ** (n - 1))
        f = Failing(n, reason, round, transient, given_up, self.clock() + delay)
        self.failing[key] = f
        return f

    def succeeded(self, key: Hashable) -> bool:
        """Forget ``key``'s failures; True if it had any."""
        return self.failing.pop(key, None) is not None

    def get(self, key: Hashable) -> Failing | None:
        return self.failing.get(key)

    def given_up(self, key: Hashable) -> bool:
        f = self.failing.get(key)
        return f is not None and f.quarantined

    def attempts(self, key: Hashable, round: int | None = None) -> int:
        """Failures so far of ``key`` (of ``round``, when given)."""
        f = self.failing.get(key)
        if f is None or (round is not None and f.round is not None and f.round != round):
            return 0
        return f.attempts


# -- the table ------------------------------------------------------------------------------------


def event_key(block_number: int, log_index: int) -> str:
    return f"index:{block_number}:{log_index}"


def task_key(stage: str, task_id: int, round: int | None = None) -> str:
    return f"{stage}:{task_id}" if round is None else f"{stage}:{task_id}:{round}"


def _uint(value: Any, top: int = 2**63 - 1) -> int | None:
    """``value`` if it is an integer a signed 64-bit column holds, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        return None
    return value


def put(
    s: Session,
    key: str,
    *,
    stage: str,
    state: str,
    reason: str,
    attempts: int = 1,
    task_id: int | None = None,
    round: int | None = None,
    update_id: int | None = None,
    event: EventRow | None = None,
) -> QuarantineRow:
    """Insert or replace the entry ``key`` (in the caller's transaction)."""
    row = s.get(QuarantineRow, key)
    if row is None:
        row = QuarantineRow(key=key)
        s.add(row)
    row.stage, row.state, row.reason, row.attempts = stage, state, public_text(reason), attempts
    row.task_id, row.round, row.update_id = _uint(task_id), _uint(round), _uint(update_id)
    if event is not None:
        row.event, row.block_number = event.name, event.block_number
        row.log_index, row.tx_hash = event.log_index, event.tx_hash
    row.updated_at = time.time()
    return row


def clear(s: Session, key: str) -> None:
    s.execute(delete(QuarantineRow).where(QuarantineRow.key == key))


def record(db: Database, key: str, **fields: Any) -> None:
    """:func:`put` in a transaction of its own; a database that refuses is logged, not raised
    (marking an item must never be what stops the worker)."""
    try:
        with db.transaction() as s:
            put(s, key, **fields)
    except Exception as exc:  # noqa: BLE001 - the mark is best effort; the log keeps it
        log.warning("cannot record a quarantine entry", extra={"key": key, "error": str(exc)})


def forget(db: Database, key: str) -> None:
    """:func:`clear` in a transaction of its own (best effort, like :func:`record`)."""
    try:
        with db.transaction() as s:
            clear(s, key)
    except Exception as exc:  # noqa: BLE001
        log.warning("cannot clear a quarantine entry", extra={"key": key, "error": str(exc)})


def entries(db: Database, stage: str, state: str | None = None) -> list[QuarantineRow]:
    with db.session() as s:
        q = select(QuarantineRow).where(QuarantineRow.stage == stage)
        if state is not None:
            q = q.where(QuarantineRow.state == state)
        return list(s.scalars(q))


def drop_all(s: Session, *, stages: Iterable[str] | None = None) -> None:
    q = delete(QuarantineRow)
    if stages is not None:
        q = q.where(QuarantineRow.stage.in_(list(stages)))
    s.execute(q)


# -- one stage's items ------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskItem:
    """One task's round in one per-task stage: what such a stage retries and quarantines."""

    stage: str
    task_id: int
    round: int | None = None

    @property
    def key(self) -> str:
        return task_key(self.stage, self.task_id, self.round)


def due(retries: Retries, item: TaskItem) -> bool:
    """Whether ``item`` may be tried now (not backing off, not given up)."""
    return retries.due(item) and not retries.given_up(item)


def failed(
    db: Database, retries: Retries, item: TaskItem, exc: BaseException, what: str = ""
) -> Failing:
    """Count, record and log one failure of ``item`` (``what``: what was being done)."""
    reason = (f"{what}: " if what else "") + describe(exc)
    transient = is_transient(exc)
    f = retries.failed(item, reason, transient=transient, round=item.round)
    until = ", quarantined" if f.quarantined else ""
    record(
        db,
        item.key,
        stage=item.stage,
        state=QUARANTINED if f.quarantined else RETRYING,
        reason=f"{reason} (attempt {f.attempts}{until})",
        attempts=f.attempts,
        task_id=item.task_id,
        round=item.round,
    )
    log.warning(
        f"{item.stage} quarantined" if f.quarantined else f"{item.stage} failed; will retry",
        extra={
            "stage": item.stage,
            "task": item.task_id,
            "round": item.round,
            "attempts": f.attempts,
            "transient": transient,
            "error": reason,
        },
        exc_info=None if transient else exc,
    )
    return f


def succeeded(db: Database, retries: Retries, item: TaskItem) -> None:
    """``item`` went through: clear its earlier failures, if any."""
    if retries.succeeded(item):
        forget(db, item.key)


# -- what REST shows ------------------------------------------------------------------------------


def summary(s: Any) -> dict[str, Any]:
    """Counts per state and the latest entry, for /health (``s``: a Session or Connection)."""
    counts = dict(
        s.execute(select(QuarantineRow.state, func.count()).group_by(QuarantineRow.state)).all()
    )
    last = s.execute(
        select(
            QuarantineRow.stage,
            QuarantineRow.task_id,
            QuarantineRow.round,
            QuarantineRow.event,
            QuarantineRow.block_number,
            QuarantineRow.log_index,
            QuarantineRow.reason,
            QuarantineRow.updated_at,
        )
        .where(QuarantineRow.state == QUARANTINED)
        .order_by(QuarantineRow.updated_at.desc())
        .limit(1)
    ).first()
    return {
        "quarantined": int(counts.get(QUARANTINED, 0)),
        "retrying": int(counts.get(RETRYING, 0)) + int(counts.get(RUNNING, 0)),
        "last": None if last is None else dict(last._mapping),
        "last_reason": None if last is None else last.reason,
    }


def task_status(s: Session, task_id: int) -> tuple[str, str | None]:
    """``(status, reason)`` of a task: ``quarantined`` if any of its entries is, else
    ``retrying`` if any is, else ``active``."""
    rows = s.execute(
        select(QuarantineRow.state, QuarantineRow.stage, QuarantineRow.reason)
        .where(QuarantineRow.task_id == task_id)
        .order_by(QuarantineRow.updated_at.desc())
    ).all()
    for wanted in (QUARANTINED, RETRYING, RUNNING):
        for state, stage, reason in rows:
            if state == wanted:
                return (QUARANTINED if state == QUARANTINED else RETRYING), f"{stage}: {reason}"
    return "active", None


__all__ = [
    "QUARANTINED",
    "RETRYING",
    "RUNNING",
    "Failing",
    "Retries",
    "clear",
    "describe",
    "drop_all",
    "entries",
    "event_key",
    "TaskItem",
    "due",
    "failed",
    "forget",
    "succeeded",
    "is_transient",
    "is_transient_db",
    "put",
    "record",
    "summary",
    "task_key",
    "task_status",
]
