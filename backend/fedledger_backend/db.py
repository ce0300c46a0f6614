"""The backend's database: a cache of the chain and the content store, through SQLAlchemy 2.

SQLite in the data dir by default; Postgres when ``FEDLEDGER_DB`` is a ``postgresql://`` URL.
Nothing lives only here: ``events`` is a copy of the contract's logs, every other table is a
projection of those events (plus immutable, content-addressed verdict files), so the whole
database can be dropped and rebuilt from the chain and the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from fedledger.errors import ConfigError, StoreError

# Which chain numbers can be large.  Every number in an event is attacker-chosen on the
# attacker's own (open) task unless the contract derives it, and one value a column cannot hold
# must never stop the index (see backend.indexer, "Isolation"):
#
# * derived by the contract, so bounded by the number of transactions ever sent (far below
#   2**63): task ids and update ids (counters), rounds (the contract takes only the current
#   round, which counts finalisations), updateCount (at most one per submission): ``Id``,
#   a signed 64-bit integer;
# * chosen by whoever sends the transaction: numSamples (uint64, any value), roundDuration
#   (uint64 in the event; the contract refuses more than 2**32 - 1, but the event type is
#   wider), minUpdates / maxUpdates (uint32, beyond Postgres' 32-bit INTEGER): ``Uint64``,
#   which stores every uint64 exactly;
# * anything else out of range (a uint256 where an Id is expected) fails that event's handler
#   and quarantines that one event, visibly.
# Hashes and addresses are hex text.
Id = BigInteger().with_variant(Integer(), "sqlite")

_TWO_63 = 1 << 63
_TWO_64 = 1 << 64


class Uint64(TypeDecorator[int]):
    """An unsigned 64-bit integer, stored exactly in a signed 64-bit column.

    SQLite's INTEGER and Postgres' BIGINT are signed, so ``2**64 - 1`` (a legal ``numSamples``)
    overflowed the write.  The value is stored as the int64 with the same 64 bits (two's
    complement: values from 2**63 up are stored negative), which leaves every value below 2**63
    (all rows written before this type) as it was, and reads back exactly.  SQL that compares
    or sums the column sees the stored int64: nothing does (the column is only read)."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _TWO_64:
            raise ValueError(f"{value!r} is not an unsigned 64-bit integer")
        return value - _TWO_64 if value >= _TWO_63 else value

    def process_result_value(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        v = int(value)
        return v + _TWO_64 if v < 0 else v


class Base(DeclarativeBase):
    pass


class Checkpoint(Base):
    """How far the indexer has read: the last block whose events are all in ``events``."""

    __tablename__ = "checkpoint"
    contract: Mapped[str] = mapped_column(String(42), primary_key=True)
    chain_id: Mapped[int] = mapped_column(Id)
    block_number: Mapped[int] = mapped_column(Id)
    block_hash: Mapped[str] = mapped_column(String(66))


class BlockSeen(Base):
    """Hashes of recently indexed blocks, to find where a reorganised chain forked."""

    __tablename__ = "blocks"
    number: Mapped[int] = mapped_column(Id, primary_key=True)
    hash: Mapped[str] = mapped_column(String(66))


class EventRow(Base):
    """One decoded contract log, exactly as the chain holds it."""

    __tablename__ = "events"
    block_number: Mapped[int] = mapped_column(Id, primary_key=True)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    block_hash: Mapped[str] = mapped_column(String(66))
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_time: Mapped[int] = mapped_column(Id, default=0)
    name: Mapped[str] = mapped_column(String(32), index=True)
    args: Mapped[dict] = mapped_column(JSON)


class TaskRow(Base):
    __tablename__ = "tasks"
    task_id: Mapped[int] = mapped_column(Id, primary_key=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    model_hash: Mapped[str] = mapped_column(String(66))
    model_cid: Mapped[str] = mapped_column(String(128))
    spec_cid: Mapped[str] = mapped_column(String(128))
    min_updates: Mapped[int] = mapped_column(Uint64)
    max_updates: Mapped[int] = mapped_column(Uint64)
    quorum: Mapped[int] = mapped_column(Integer)
    round_duration: Mapped[int] = mapped_column(Uint64)
    open: Mapped[bool] = mapped_column(Boolean)
    max_samples: Mapped[int] = mapped_column(Uint64)  # the largest numSamples one update claims
    attest_window: Mapped[int] = mapped_column(Uint64, default=0)  # seconds an attempt lasts
    current_round: Mapped[int] = mapped_column(Id, default=0)
    global_hash: Mapped[str] = mapped_column(String(66))
    global_cid: Mapped[str] = mapped_column(String(128))
    created_block: Mapped[int] = mapped_column(Id)
    created_tx: Mapped[str] = mapped_column(String(66))
    created_at: Mapped[int] = mapped_column(Id, default=0)


class MemberRow(Base):
    __tablename__ = "members"
    task_id: Mapped[int] = mapped_column(Id, ForeignKey("tasks.task_id"), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    block_number: Mapped[int] = mapped_column(Id)


class RoundRow(Base):
    __tablename__ = "rounds"
    task_id: Mapped[int] = mapped_column(Id, ForeignKey("tasks.task_id"), primary_key=True)
    round: Mapped[int] = mapped_column(Id, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | sealed | finalized
    started_block: Mapped[int] = mapped_column(Id, default=0)
    started_at: Mapped[int] = mapped_column(Id, default=0)
    submitted: Mapped[int] = mapped_column(Integer, default=0)
    sealed_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sealed_block: Mapped[int | None] = mapped_column(Id, nullable=True)
    aggregate_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    aggregate_cid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    verdict_root: Mapped[str | None] = mapped_column(String(66), nullable=True)
    verdict_cid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    finalized_block: Mapped[int | None] = mapped_column(Id, nullable=True)
    finalized_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    verdicts_applied: Mapped[bool] = mapped_column(Boolean, default=False)
    conflicts: Mapped[int] = mapped_column(Integer, default=0)
    record_hash: Mapped[str | None] = mapped_column(String(58), nullable=True)  # at the seal
    sealed_at: Mapped[int | None] = mapped_column(Id, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # the latest attempt attested in
    digest: Mapped[str | None] = mapped_column(String(66), nullable=True)  # the final resultDigest
    verdict_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    aggregate_tensor_root: Mapped[str | None] = mapped_column(String(66), nullable=True)


class ContributionRow(Base):
    __tablename__ = "contributions"
    update_id: Mapped[int] = mapped_column(Id, primary_key=True)
    task_id: Mapped[int] = mapped_column(Id, ForeignKey("tasks.task_id"))
    round: Mapped[int] = mapped_column(Id)
    contributor: Mapped[str] = mapped_column(String(42))
    content_hash: Mapped[str] = mapped_column(String(66))
    cid: Mapped[str] = mapped_column(String(128))
    num_samples: Mapped[int] = mapped_column(Uint64)
    tensor_root: Mapped[str] = mapped_column(String(66), default="0x" + "00" * 32)
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(Id)
    block_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[int] = mapped_column(Id, default=0)
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    dp_epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index("ix_contrib_task_round", "task_id", "round", "update_id"),
        Index("ix_contrib_task", "task_id", "update_id"),  # /contributions?task_id= (API)
        Index("ix_contrib_contributor", "contributor", "update_id"),
        Index("ix_contrib_status", "status", "update_id"),
    )


class AttestationRow(Base):
    """One validator's attestation of a round, per attempt (``RoundAttested``)."""

    __tablename__ = "attestations"
    task_id: Mapped[int] = mapped_column(Id, primary_key=True)
    round: Mapped[int] = mapped_column(Id, primary_key=True)
    validator: Mapped[str] = mapped_column(String(42), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(66))
    count: Mapped[int] = mapped_column(Integer)  # attestations of this digest so far
    block_number: Mapped[int] = mapped_column(Id)
    tx_hash: Mapped[str] = mapped_column(String(66))


class ResultRow(Base):
    """A result a validator proposed for a round (``ResultProposed``), by its digest."""

    __tablename__ = "results"
    task_id: Mapped[int] = mapped_column(Id, primary_key=True)
    round: Mapped[int] = mapped_column(Id, primary_key=True)
    digest: Mapped[str] = mapped_column(String(66), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    record_hash: Mapped[str] = mapped_column(String(58))
    update_count: Mapped[int] = mapped_column(Integer)
    verdict_root: Mapped[str] = mapped_column(String(66))
    verdict_hash: Mapped[str] = mapped_column(String(66))
    verdict_cid: Mapped[str] = mapped_column(String(128))
    aggregate_hash: Mapped[str] = mapped_column(String(66))
    aggregate_cid: Mapped[str] = mapped_column(String(128))
    aggregate_tensor_root: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(Id)


class QuarantineRow(Base):
    """Something that could not be processed, and what became of it (:mod:`fedledger_backend.quarantine`).

    ``stage`` says which part of the worker met it: ``index`` (an event whose handler failed:
    its block, log index and transaction are kept, the event stays in ``events``), or a
    per-task stage (``validate``, ``verdicts``, ``evaluate``).  ``state`` is ``retrying`` (a
    later pass tries again, after a backoff), ``running`` (being worked on now: still there
    after a restart means the worker died on it) or ``quarantined`` (given up).  Like every
    other table, a cache: rebuilt with the index."""

    __tablename__ = "quarantine"
    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    stage: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    task_id: Mapped[int | None] = mapped_column(Id, nullable=True, index=True)
    round: Mapped[int | None] = mapped_column(Id, nullable=True)
    update_id: Mapped[int | None] = mapped_column(Id, nullable=True)
    event: Mapped[str | None] = mapped_column(String(32), nullable=True)
    block_number: Mapped[int | None] = mapped_column(Id, nullable=True)
    log_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[float] = mapped_column(Float)


class TaskNodeStatusRow(Base):
    """Whether this node builds a task's model (:mod:`fedledger_backend.projections`): ``ok``, or
    ``skipped`` with the reason (a factory its operator did not allow, a pin mismatch, an
    invalid description).  The node's own judgement of the spec at ``spec_cid``, under its own
    allow list: rewritten by every worker process, ignored when the task's spec differs."""

    __tablename__ = "task_node_status"
    task_id: Mapped[int] = mapped_column(Id, primary_key=True)
    spec_cid: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)  # ok | skipped
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class VerdictFileRow(Base):
    """A verdict file fetched from the store (immutable: keyed by its CID)."""

    __tablename__ = "verdict_files"
    cid: Mapped[str] = mapped_column(String(128), primary_key=True)
    body: Mapped[dict] = mapped_column(JSON)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so readers never block the indexer."""
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://") :]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the database directory {path.parent}: {exc}") from exc
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _rec):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith(("postgresql+psycopg://", "sqlite://")):
        return create_engine(url, pool_pre_ping=True)
    raise ConfigError(
        f"unsupported database URL {url.split(':', 1)[0]}://…",
        hint="use sqlite:///path or postgresql://user:pass@host/db",
    )


class Database:
    """Engine plus session factory; ``create()`` makes the schema if missing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.in_process = self.engine.dialect.name == "sqlite"
        """Whether a query is answered in this process (SQLite) rather than across a network."""

    def create(self) -> Database:
        """Make the schema where missing; a database an older version made, whose tables
        lack columns this version reads, is refused with what to do (never half-used)."""
        try:
            Base.metadata.create_all(self.engine)
            stale = self.missing_columns()
        except OperationalError as exc:  # unwritable directory or file, full disk, no server
            raise ConfigError(
                f"cannot open the database {_shown(self.url)}: {exc.orig}",
                hint="check that the data dir exists, is writable and has free space",
            ) from exc
        if stale:
            raise ConfigError(
                f"the database {_shown(self.url)} was made by an older fedledger: it lacks "
                f"{', '.join(stale[:5])}{' …' if len(stale) > 5 else ''}",
                hint="rebuild it from the chain with `fedledger serve --reindex` (the database "
                "is a cache of the chain: nothing is lost)",
            )
        return self

    def missing_columns(self) -> list[str]:
        """``table.column`` for each column this version defines that an existing table
        lacks."""
        from sqlalchemy import inspect

        insp = inspect(self.engine)
        missing: list[str] = []
        for table in Base.metadata.sorted_tables:
            if not insp.has_table(table.name):
                continue
            have = {c["name"] for c in insp.get_columns(table.name)}
            missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
        return missing

    def drop(self) -> None:
        Base.metadata.drop_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s:
            yield s

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits together or not at all.  A database that refuses the
        write (read-only, disk full) raises :class:`StoreError`; nothing of it is kept."""
        try:
            with self.sessions() as s, s.begin():
                yield s
        except OperationalError as exc:
            raise StoreError(
                f"the database {_shown(self.url)} refused a write: {exc.orig}",
                hint="check that the data dir is writable and has free space",
            ) from exc


def _shown(url: str) -> str:
    """A database URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"
