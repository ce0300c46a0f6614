"""The relay's durable journal: every update acknowledged by ``POST /relay/updates``.

:class:`RelayJournal` keeps one row per (ledger, contributor, task, round) in a SQLite file:
the whole signed update (enough to send it again after a restart), its state (``queued``,
``submitted``, ``failed``), the transaction hash and update id once it is on chain, the reason
and the contract's error name if it failed, and when it was added and last changed.

An entry is committed before the relay answers 202, in WAL mode with ``synchronous=FULL``, so
an acknowledged update survives a crash of the process or a power loss.  The relayer marks it
``submitted`` or ``failed`` when its batch is sent; on start it sends the ``queued`` ones again.

Rows are scoped by ledger (chain id and contract address), so a journal kept in a data dir
that later serves another deployment never mixes the two.  One connection behind one lock
serves the relayer's thread and the request threads.  Every SQLite failure is raised as
:class:`RelayJournalError`, naming the file and what to do.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from fedledger.chain.ledger import SignedUpdate
from fedledger.errors import FedledgerError
from fedledger.flows.relay import RELAY_STATES as STATES
from fedledger.flows.relay import EntryKey, RelayState, entry_key

log = logging.getLogger("fedledger.relay")

SCHEMA_VERSION = 1

__all__ = [
    "EntryKey",
    "JournalEntry",
    "RelayJournal",
    "RelayJournalError",
    "RelayState",
    "entry_key",
]

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS relay_entries_v2 (
    ledger       TEXT NOT NULL,
    contributor  TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    round        TEXT NOT NULL,
    address      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    cid          TEXT NOT NULL,
    num_samples  TEXT NOT NULL,
    deadline     TEXT NOT NULL,
    signature    BLOB NOT NULL,
    tensor_root  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'submitted', 'failed')),
    update_id    TEXT,
    tx_hash      TEXT,
    reason       TEXT,
    error        TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (ledger, contributor, task_id, round)
)""",
    "CREATE INDEX IF NOT EXISTS relay_entries_v2_state ON relay_entries_v2 (ledger, state, created_at)",
)
# uint256/uint64 values do not fit SQLite's 64-bit integers: they are stored as decimal text.
# ``_v2``: the entries of ledger v2 (tensor roots, compact signatures); a v1 journal's table is
# left as it was, unread (its ledger is another contract).

_COLUMNS = (
    "address, task_id, round, content_hash, cid, num_samples, deadline, signature, "
    "tensor_root, state, update_id, tx_hash, reason, error, created_at, updated_at"
)


class RelayJournalError(FedledgerError):
    """The relay journal cannot be opened, read or written (unwritable path, corrupt file)."""

    exit_code = 2
    http_status = 503


@dataclass(frozen=True)
class JournalEntry:
    """One relayed update as the journal holds it."""

    update: SignedUpdate
    state: RelayState
    update_id: int | None
    tx_hash: str | None
    reason: str | None
    error: str | None
    created_at: float
    updated_at: float

    @property
    def key(self) -> EntryKey:
        return entry_key(self.update)


def _hint_for(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc).lower()
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"the file is corrupt: move {path} aside and restart (the relayer then starts an "
            "empty journal; contributors can re-send updates whose signatures are still valid)"
        )
    if "readonly" in text or "unable to open" in text or "disk i/o" in text:
        return f"make {path} and its directory writable, or give the relayer another journal path"
    if "locked" in text or "busy" in text:
        return f"another process holds {path}; run one relayer per journal"
    return f"check the disk and the permissions of {path}"


class RelayJournal:
    """The durable record of relayed updates in the SQLite file ``path``, for one ``ledger``
    (e.g. ``"31337:0xabc…"``); thread-safe."""

    def __init__(self, path: Path, ledger: str) -> None:
        self.path = Path(path)
        self.ledger = ledger
        self._lock = threading.Lock()
        self._conn = self._open()

    # -- opening ------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if isinstance(exc, FileExistsError | NotADirectoryError):
                why = "a file is in the way of the directory"
            raise RelayJournalError(
                f"cannot create the relay journal's directory {self.path.parent}: {why}",
                hint="make it writable, or give the relayer another journal path",
            ) from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._prepare(conn)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("open", exc) from None
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RelayJournalError(
                f"relay journal {self.path} has schema version {version}, newer than this "
                f"fedledger's {SCHEMA_VERSION}",
                hint="upgrade fedledger, or give the relayer another journal path",
            )
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        if mode != "wal":  # e.g. a filesystem without shared memory: still durable, slower
            log.warning(
                "relay journal is not in WAL mode", extra={"journal": str(self.path), "mode": mode}
            )
        conn.execute("PRAGMA synchronous=FULL")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # also proves we can write
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _error(self, action: str, exc: sqlite3.Error) -> RelayJournalError:
        return RelayJournalError(
            f"relay journal {self.path}: cannot {action}: {exc}", hint=_hint_for(exc, self.path)
        )

    @contextmanager
    def _tx(self, action: str) -> Iterator[sqlite3.Connection]:
        """One committed (durable) transaction under the lock; SQLite errors become
        :class:`RelayJournalError`."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._error(action, exc) from None

    def _read(self, action: str, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise self._error(action, exc) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writes -------------------------------------------------------------------------------

    def add(self, su: SignedUpdate) -> bool:
        """Record ``su`` as ``queued``, committed to disk.  False (nothing written) if this
        ledger's journal already holds a queued or submitted update for its key; a failed one
        is replaced."""
        contributor, task_id, round_ = entry_key(su)
        now = time.time()
        row = (
            self.ledger,
            contributor,
            str(task_id),
            str(round_),
            su.contributor,
            su.content_hash,
            su.cid,
            str(su.num_samples),
            str(su.deadline),
            bytes(su.signature),
            su.tensor_root,
            now,
            now,
        )
        with self._tx("record a relayed update") as conn:
            cur = conn.execute(
                "INSERT INTO relay_entries_v2 (ledger, contributor, task_id, round, address, "
                "content_hash, cid, num_samples, deadline, signature, tensor_root, state, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?) "
                "ON CONFLICT (ledger, contributor, task_id, round) DO UPDATE SET "
                "address = excluded.address, content_hash = excluded.content_hash, "
                "cid = excluded.cid, num_samples = excluded.num_samples, "
                "deadline = excluded.deadline, signature = excluded.signature, "
                "tensor_root = excluded.tensor_root, state = 'queued', "
                "update_id = NULL, tx_hash = NULL, reason = NULL, error = NULL, "
                "created_at = excluded.created_at, updated_at = excluded.updated_at "
                "WHERE relay_entries_v2.state = 'failed'",
                row,
            )
            return cur.rowcount == 1

    def mark_submitted(
        self, outcomes: list[tuple[EntryKey, int]], tx_hash: str, reason: str | None = None
    ) -> None:
        """Record that each (key, update id) of ``outcomes`` is on chain, in one transaction."""
        now = time.time()
        with self._tx("record submitted updates") as conn:
            conn.executemany(
                "UPDATE relay_entries_v2 SET state = 'submitted', update_id = ?, tx_hash = ?, "
                "reason = ?, error = NULL, updated_at = ? "
                "WHERE ledger = ? AND contributor = ? AND task_id = ? AND round = ?",
                [
                    (str(uid), tx_hash, reason, now, self.ledger, c, str(t), str(r))
                    for (c, t, r), uid in outcomes
                ],
            )

    def mark_failed(self, key: EntryKey, reason: str, error: str | None) -> None:
        """Record that the update of ``key`` will not be sent, and why."""
        c, t, r = key
        with self._tx("record a failed update") as conn:
            conn.execute(
                "UPDATE relay_entries_v2 SET state = 'failed', reason = ?, error = ?, "
                "updated_at = ? WHERE ledger = ? AND contributor = ? AND task_id = ? AND round = ?",
                (reason, error, time.time(), self.ledger, c, str(t), str(r)),
            )

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: EntryKey) -> JournalEntry | None:
        c, t, r = key
        rows = self._read(
            "read a relayed update",
            f"SELECT {_COLUMNS} FROM relay_entries_v2 "
            "WHERE ledger = ? AND contributor = ? AND task_id = ? AND round = ?",
            (self.ledger, c.lower(), str(t), str(r)),
        )
        return self._entry(rows[0]) if rows else None

    def queued(self) -> list[JournalEntry]:
        """Every update still to send, oldest first."""
        rows = self._read(
            "read the queued updates",
            f"SELECT {_COLUMNS} FROM relay_entries_v2 WHERE ledger = ? AND state = 'queued' "
            "ORDER BY created_at, rowid",
            (self.ledger,),
        )
        return [self._entry(row) for row in rows]

    def _entry(self, row: tuple[object, ...]) -> JournalEntry:
        """A row as a :class:`JournalEntry`; a row that does not parse is corruption."""
        try:
            (
                addr,
                task,
                rnd,
                h,
                cid,
                n,
                deadline,
                sig,
                root,
                state,
                uid,
                tx,
                reason,
                err,
                ca,
                ua,
            ) = row
            if state not in STATES or not isinstance(sig, bytes):
                raise ValueError(f"bad state or signature in row for {addr}")
            su = SignedUpdate(
                task_id=int(str(task)),
                round=int(str(rnd)),
                content_hash=str(h),
                cid=str(cid),
                num_samples=int(str(n)),
                contributor=str(addr),
                deadline=int(str(deadline)),
                signature=sig,
                tensor_root=str(root),
            )
            return JournalEntry(
                update=su,
                state=cast(RelayState, state),
                update_id=None if uid is None else int(str(uid)),
                tx_hash=None if tx is None else str(tx),
                reason=None if reason is None else str(reason),
                error=None if err is None else str(err),
                created_at=float(cast(float, ca)),
                updated_at=float(cast(float, ua)),
            )
        except (ValueError, TypeError) as exc:
            raise RelayJournalError(
                f"relay journal {self.path} holds an unreadable entry: {exc}",
                hint=f"the file is corrupt: move {self.path} aside and restart",
            ) from None
