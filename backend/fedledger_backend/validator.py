"""The validator: judges each ready round of the tasks it validates and attests the result.

For each task where this key is an admitted validator, when the current round is ready
(full, past its deadline, or holding ``minUpdates`` with no deadline) the validator

1. seals the round on chain if nobody has (so every validator judges the same set of updates),
2. waits until its indexer holds exactly the sealed updates,
3. judges them with :func:`fedledger.protocol.rounds.judge_round` — the very function ``fedledger verify``
   uses to re-check the round later,
4. stores the new global model and the verdict file, and attests their hashes on chain.

A crash between any two steps is safe: sealing and attesting are idempotent on chain (the
validator checks ``hasAttested`` first, and the contract refuses a second attestation with
``AlreadyAttested``), and judging is deterministic, so a restarted validator recomputes the same
result and stores the same files under the same CIDs.

Reorgs.  The validator judges only what its indexer holds, and the indexer holds only blocks at
least ``confirmations`` deep: the seal and every update must be confirmed before a round is
judged.  Right before attesting it checks, against the chain, that the indexer's checkpoint
block is still canonical (its hash commits to every block below, so every indexed update and
the seal are still there) and that the round is still sealed with the same number of updates.
If a reorg removed anything, it attests nothing this pass; the indexer rolls back on its next
pass and the round is judged again on what the chain now holds.  What no client-side check can
close is a reorg *after* the attestation is mined that drops the seal but keeps the attestation
transaction: that is what ``confirmations`` is for, and why it should exceed the chain's
practical reorg depth.

Isolation (:mod:`fedledger_backend.quarantine`).  Tasks are processed one by one, and an exception of any
type from one of them (reading it, fetching its files, judging, publishing, attesting) marks
that task ``retrying`` (``GET /tasks/{id}``, ``/health``, a log line) and the pass goes on with
the next task.  The task is tried again after a doubling backoff; after ``max_attempts``
failures on the same round it is quarantined until its round moves on chain (or the index is
rebuilt).  Unreachable infrastructure (RPC endpoint, store, database) backs off the same way
but never quarantines.  Judging is first marked ``running`` in the database, so a task whose
round kills the worker process outright counts an attempt on every restart and is quarantined
instead of crash-looping the worker.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from nacl.public import PrivateKey
from sqlalchemy import select

from fedledger.chain.ledger import Ledger, to_hex
from fedledger.chain.records import RoundResult, UpdateRecord, record_hash
from fedledger.content.store import ContentStore
from fedledger.errors import ContractRevert, FedledgerError
from fedledger.flows.task import (
    committee_keys,
    fetch_verified,
    load_task,
    read_spec,
    required_recipients,
)
from fedledger.protocol import codec, verdicts
from fedledger.protocol.committee import NotRecipientError
from fedledger.protocol.rounds import Judgement, UpdateRef
from fedledger_backend import quarantine
from fedledger_backend.db import Checkpoint, ContributionRow, Database, MemberRow, RoundRow
from fedledger_backend.sharded import ShardedSettings

log = logging.getLogger("fedledger.validator")

STAGE = "validate"
"""This stage's name in the quarantine table."""

KEEP_PUBLISHED_BYTES = 256 << 20
"""How many bytes of its own last aggregates (one per task, the newest) a validator keeps to
judge the next round from, instead of reading them back from the store."""


def remember(
    kept: OrderedDict[int, tuple[str, str, bytes]],
    task_id: int,
    entry: tuple[str, str, bytes],
    cap: int,
) -> None:
    """Keep ``entry`` (CID, sha256, bytes) as ``task_id``'s newest; drop the oldest tasks'
    entries while they hold more than ``cap`` bytes in all (the newest is always kept)."""
    kept.pop(task_id, None)
    kept[task_id] = entry
    held = sum(len(data) for _, _, data in kept.values())
    while held > cap and len(kept) > 1:
        _, (_, _, dropped) = kept.popitem(last=False)
        held -= len(dropped)


MAX_FETCH_S = 120.0
"""The longest a validator waits for one round's update bytes, whatever the task's spec asks
(``fetch_timeout_s`` is the task creator's to choose, up to an hour, and tasks are judged one
after another): a hostile task costs the others at most this per pass."""


@dataclass(frozen=True)
class Attested:
    task_id: int
    round: int
    updates: int
    accepted: int
    aggregate_cid: str
    verdict_cid: str
    gas_used: int


class Validator:
    def __init__(
        self,
        ledger: Ledger,
        store: ContentStore,
        db: Database,
        committee_key: PrivateKey | None = None,
    ) -> None:
        if ledger.sender is None:
            raise FedledgerError("a validator needs a key")
        self.ledger = ledger
        self.committee_key = committee_key
        """This validator's X25519 key for private tasks (registered on chain for each private
        task it validates, :meth:`_register_key`); ``None``: it judges public tasks only."""
        self.judge = ShardedSettings.from_env().judge()
        """``judge_round``, or the same judgement sharded on Ray when ``FEDLEDGER_SHARDED_WORKERS``
        is above 0 (:class:`fedledger_backend.sharded.ShardedSettings`, docs/scaling.md)."""
        self._private: dict[int, bool] = {}  # task id -> private, once its key is registered
        self.store = store
        self.db = db
        self.address = ledger.sender.address
        self.last_error: str | None = None
        self.skipped: dict[tuple[int, int], str] = {}
        """Why a ready round was not attested on the last pass (lagging index, reorg...)."""
        self._published: OrderedDict[int, tuple[str, str, bytes]] = OrderedDict()
        """Per task, the last aggregate this validator stored: (CID, sha256, bytes), the most
        recent last, at most :data:`KEEP_PUBLISHED_BYTES` in all."""
        self.retries = quarantine.Retries()
        """Per task id, its failures in a row (module docstring, "Isolation")."""
        self._round: dict[int, int] = {}  # the round each task was last seen at
        self._marked: set[int] = set()  # tasks marked ``running`` in the database
        self._resume()

    def _resume(self) -> None:
        """Take up the failures recorded by earlier workers; a task still ``running`` is one a
        worker died judging: that death counts as a failed attempt."""
        try:
            rows = quarantine.entries(self.db, STAGE)
        except Exception as exc:  # noqa: BLE001 - no history is no reason not to validate
            log.warning("cannot read the quarantine table", extra={"error": str(exc)})
            return
        for row in rows:
            if row.task_id is None:
                continue
            died = row.state == quarantine.RUNNING
            reason = "the worker process died while judging it" if died else row.reason
            f = self.retries.failed(
                row.task_id,
                reason,
                transient=row.state == quarantine.RETRYING,  # restored as it was, not counted
                round=row.round,
                attempts=row.attempts,
            )
            f.quarantined = f.quarantined or row.state == quarantine.QUARANTINED
            if not f.quarantined:  # one death may be a deploy or a kill: try again at once
                f.next_at = self.retries.clock()
            if died:
                self._save(row.task_id, f)
                log.error(
                    "the previous worker died judging a task",
                    extra={"task": row.task_id, "round": row.round, "attempts": row.attempts},
                )

    def my_tasks(self) -> list[int]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(MemberRow.task_id)
                    .where(MemberRow.address == self.address, MemberRow.role == "validator")
                    .order_by(MemberRow.task_id)
                )
            )

    def step(self) -> list[Attested]:
        """Attest every round that is ready now; returns what was attested.  One task's
        failure, of any kind, is that task's (module docstring, "Isolation")."""
        done = []
        self.last_error = None
        for task_id in self.my_tasks():
            if not self._due(task_id):
                continue
            try:
                res = self.process(task_id)
            except Exception as exc:  # noqa: BLE001 - one task never stops the others
                self._failed(task_id, exc)
                continue
            self._succeeded(task_id)
            if res is not None:
                done.append(res)
        return done

    # -- isolation ------------------------------------------------------------------------------

    def _due(self, task_id: int) -> bool:
        f = self.retries.get(task_id)
        if f is None:
            return True
        if not self.retries.due(task_id):
            return False
        if not f.quarantined:
            return True
        try:  # quarantined: back only once the round it failed on is over
            moved = f.round is None or self.ledger.current_round(task_id) != f.round
        except Exception:  # noqa: BLE001 - cannot tell now: look again later
            moved = False
        if not moved:
            self.retries.parole(task_id)
            return False
        self._succeeded(task_id)
        return True

    def _failed(self, task_id: int, exc: Exception) -> None:
        reason = quarantine.describe(exc)
        transient = quarantine.is_transient(exc)
        f = self.retries.failed(
            task_id, reason, transient=transient, round=self._round.get(task_id)
        )
        self._marked.discard(task_id)
        self._save(task_id, f)
        self.last_error = f"task {task_id}: {reason}"
        log.warning(
            "task quarantined" if f.quarantined else "task failed; will retry",
            extra={
                "task": task_id,
                "round": f.round,
                "attempts": f.attempts,
                "transient": transient,
                "retry_in_s": round(max(0.0, f.next_at - self.retries.clock()), 3),
                "error": reason,
            },
            exc_info=None if transient else exc,
        )

    def _save(self, task_id: int, f: quarantine.Failing) -> None:
        until = ", quarantined until the round moves on" if f.quarantined else ""
        quarantine.record(
            self.db,
            quarantine.task_key(STAGE, task_id),
            stage=STAGE,
            state=quarantine.QUARANTINED if f.quarantined else quarantine.RETRYING,
            reason=f"round {f.round}: {f.reason} (attempt {f.attempts}{until})",
            attempts=f.attempts,
            task_id=task_id,
            round=f.round,
        )

    def _succeeded(self, task_id: int) -> None:
        had = self.retries.succeeded(task_id)
        if had or task_id in self._marked:
            self._marked.discard(task_id)
            quarantine.forget(self.db, quarantine.task_key(STAGE, task_id))
            if had:
                log.info("task recovered", extra={"task": task_id})

    def _mark_running(self, task_id: int, rnd: int) -> None:
        """Say in the database that this task's round is being judged: if the process dies
        before :meth:`_succeeded` or :meth:`_failed`, the next worker knows."""
        quarantine.record(
            self.db,
            quarantine.task_key(STAGE, task_id),
            stage=STAGE,
            state=quarantine.RUNNING,
            reason=f"judging round {rnd}",
            attempts=self.retries.attempts(task_id, rnd) + 1,
            task_id=task_id,
            round=rnd,
        )
        self._marked.add(task_id)

    def _register_key(self, task_id: int, t: dict) -> bool:  # type: ignore[type-arg]
        """For a private task, make sure the chain holds this validator's committee key
        (``setEncryptionKey``, once): contributors seal updates to the keys registered when
        they submit.  False when the task is private and this validator has no key."""
        private = self._private.get(task_id)
        if private is None:
            private = read_spec(self.store, str(t["specCid"])).privacy_policy().committee
            if private and self.committee_key is not None:
                mine = bytes(self.committee_key.public_key)
                if committee_keys(self.ledger, task_id).get(self.address) != mine:
                    self.ledger.set_encryption_key(task_id, mine)
                    log.info(
                        "committee key registered",
                        extra={"task": task_id, "public_key": "0x" + mine.hex()},
                    )
            self._private[task_id] = private
        return not private or self.committee_key is not None

    def _ready(self, t: dict, now: int) -> bool:  # type: ignore[type-arg]
        count, dur = int(t["updateCount"]), int(t["roundDuration"])
        if t["isSealed"]:
            return True
        if count >= int(t["maxUpdates"]):
            return True
        if dur > 0:  # the contract's rule: the deadline has passed once block time is after it
            return now > int(t["roundStart"]) + dur
        return count >= int(t["minUpdates"]) and count > 0

    def process(self, task_id: int) -> Attested | None:
        led = self.ledger
        t = led.get_task(task_id)
        rnd = int(t["currentRound"])
        self._round[task_id] = rnd
        if not self._register_key(task_id, t):
            self.skipped[(task_id, rnd)] = (
                "the task is private and this validator has no committee key (--committee-key)"
            )
            return None
        if led.has_attested(task_id, rnd, self.address):
            return None
        now = int(led.w3.eth.get_block("latest")["timestamp"])
        if not self._ready(t, now):
            return None
        if not t["isSealed"]:
            try:
                led.seal_round(task_id, rnd)
            except ContractRevert as exc:
                if exc.name != "RoundAlreadySealed":
                    raise
            t = led.get_task(task_id)
            if int(t["currentRound"]) != rnd:
                return None
        sealed = led.get_round(task_id, rnd)
        if sealed["state"] != "sealed":
            return None  # finalised meanwhile
        sealed_count = int(sealed["updateCount"])
        got = self._sealed_updates(task_id, rnd, sealed_count)
        if got is None:
            self.skipped[(task_id, rnd)] = "the index has not reached the confirmed seal yet"
            return None
        refs, started_at = got
        record_hash, count = record_hash_of(task_id, rnd, refs)
        if (record_hash, count) != (bytes(sealed["recordHash"]), sealed_count):
            self.skipped[(task_id, rnd)] = (
                "the indexed records do not hash to the sealed record hash (index behind or "
                "reorganised)"
            )
            return None
        self._mark_running(task_id, rnd)
        state = load_task(led, self.store, task_id, task=t)
        base = self._own_aggregate(task_id, state.global_cid, state.global_hash)
        if base is None:
            base = fetch_verified(self.store, state.global_cid, state.global_hash)
        previous = (
            verdicts.parse(self.store.get(state.last_verdict_cid))
            if state.last_verdict_cid is not None
            else None
        )
        duration = int(t["roundDuration"])
        deadline = started_at + duration if duration else None
        private = state.spec.privacy_policy().committee
        try:
            j = self.judge(
                self.store,
                task_id=task_id,
                round_=rnd,
                spec=state.spec,
                base_model=base,
                updates=refs,
                max_samples=state.config.max_samples,  # the chain's bound: fedavg's weight cap
                deadline=deadline,
                previous=previous,
                base_hash=state.global_hash,  # both ways of getting ``base`` checked it
                max_fetch_s=MAX_FETCH_S,
                committee_key=self.committee_key if private else None,
                required_recipients=(
                    required_recipients(led, state.spec, task_id) if private else ()
                ),
            )
        except NotRecipientError as exc:  # joined after the round's updates were sealed
            self.skipped[(task_id, rnd)] = f"abstaining: {exc.message}"
            log.info("abstaining", extra={"task": task_id, "round": rnd, "why": exc.message})
            return None
        self._publish(j)
        why = self._unsafe_to_attest(task_id, rnd, len(refs))
        if why is not None:
            self.skipped[(task_id, rnd)] = why
            if led.sender is not None:  # a reorg may have dropped our seal: re-read the nonce
                led.sender.nonces.resync(self.address)
            log.warning("not attesting", extra={"task": task_id, "round": rnd, "why": why})
            return None
        self.skipped.pop((task_id, rnd), None)
        try:
            receipt = led.attest_round(task_id, rnd, round_result(j, record_hash, count))
        except ContractRevert as exc:
            if exc.name == "AlreadyAttested":
                return None
            raise
        accepted = sum(1 for e in j.verdict_file.entries if e.verdict.name == "ACCEPTED")
        log.info(
            "attested",
            extra={
                "task": task_id,
                "round": rnd,
                "updates": len(refs),
                "accepted": accepted,
                "aggregate": j.aggregate_cid,
            },
        )
        return Attested(
            task_id,
            rnd,
            len(refs),
            accepted,
            j.aggregate_cid,
            j.verdict_cid,
            int(receipt["gasUsed"]),
        )

    def _unsafe_to_attest(self, task_id: int, rnd: int, judged: int) -> str | None:
        """Why attesting what was judged could attest something the chain no longer holds."""
        with self.db.session() as s:
            cp = s.get(Checkpoint, self.ledger.address)
            if cp is None:
                return "nothing indexed"
            number, stored = cp.block_number, cp.block_hash
        try:
            block = self.ledger.w3.eth.get_block(number)
        except Exception as exc:  # noqa: BLE001 - BlockNotFound (chain got shorter) included
            return f"the indexed block {number} is gone: {type(exc).__name__}"
        if "0x" + bytes(block["hash"]).hex() != stored:
            return f"block {number} was reorganised after it was indexed"
        t = self.ledger.get_task(task_id)
        if int(t["currentRound"]) != rnd:
            return "the round was finalised meanwhile"
        if not t["isSealed"]:
            return "the round is no longer sealed on chain (a reorg dropped the seal)"
        if int(t["updateCount"]) != judged:
            return f"the chain now holds {t['updateCount']} updates; {judged} were judged"
        return None

    def _publish(self, j: Judgement) -> None:
        agg_cid = self.store.put(j.aggregate, pin=True)
        ver_cid = self.store.put(j.verdict_bytes, pin=True)
        if agg_cid != j.aggregate_cid or ver_cid != j.verdict_cid:
            raise FedledgerError(
                f"store returned CIDs {agg_cid}, {ver_cid}; computed {j.aggregate_cid}, {j.verdict_cid}"
            )
        entry = (j.aggregate_cid, j.aggregate_hash, j.aggregate)
        remember(self._published, j.verdict_file.task_id, entry, KEEP_PUBLISHED_BYTES)

    def _own_aggregate(self, task_id: int, cid: str, content_hash: str) -> bytes | None:
        """The task's global model, if it is the aggregate this validator published last (the
        round was finalised with it): the bytes are in hand, no need to read them back."""
        mine = self._published.get(task_id)
        if mine is None or mine[0] != cid or mine[1] != content_hash.lower():
            return None
        return mine[2]

    def _sealed_updates(
        self, task_id: int, rnd: int, count: int
    ) -> tuple[list[UpdateRef], int] | None:
        """The sealed round's updates as indexed, and the round's start time (block time of
        the event that opened it), or None while the index is behind the seal."""
        with self.db.session() as s:
            rows = list(
                s.scalars(
                    select(ContributionRow)
                    .where(ContributionRow.task_id == task_id, ContributionRow.round == rnd)
                    .order_by(ContributionRow.update_id)
                )
            )
            r = s.get(RoundRow, (task_id, rnd))
            sealed_in_db = r is not None and r.sealed_count is not None
            started_at = 0 if r is None else int(r.started_at)
        if len(rows) != count or not sealed_in_db:
            return None
        refs = [
            UpdateRef(
                update_id=c.update_id,
                contributor=c.contributor,
                content_hash=c.content_hash,
                cid=c.cid,
                num_samples=c.num_samples,
                submitted_at=c.submitted_at,
                tensor_root=c.tensor_root,
                block_number=c.block_number,
            )
            for c in rows
        ]
        return refs, started_at


def record_hash_of(task_id: int, rnd: int, refs: list[UpdateRef]) -> tuple[bytes, int]:
    """The record hash the contract chained over these updates (in update-id order)."""
    return record_hash(
        task_id,
        rnd,
        (
            UpdateRecord(
                r.update_id,
                task_id,
                rnd,
                r.contributor,
                r.content_hash,
                r.cid,
                r.num_samples,
                "",
                0,
                r.tensor_root,
            )  # fmt: skip
            for r in refs
        ),
    )


def round_result(j: Judgement, record_hash: bytes, count: int) -> RoundResult:
    """What a validator attests for a judged round."""
    return RoundResult(
        record_hash=to_hex(record_hash),
        update_count=count,
        verdict_root=to_hex(j.root),
        verdict_hash=codec.sha256_hex(j.verdict_bytes),
        verdict_cid=j.verdict_cid,
        aggregate_hash=j.aggregate_hash,
        aggregate_cid=j.aggregate_cid,
        aggregate_tensor_root=j.aggregate_tensor_root,
    )
