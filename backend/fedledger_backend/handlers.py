"""fedledger's event handlers: one small function per TrainingLedger event, mapping it to rows.

Each handler is a pure function of (session, event row); the indexer calls them in chain order
inside the transaction that stores the event.  ``rebuild`` empties every projection so that the
indexer can replay the stored events after a reorg.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from fedledger.chain.ledger import to_checksum
from fedledger.chain.records import RoundResult, UpdateRecord, records_of_batch
from fedledger_backend.db import (
    AttestationRow,
    ContributionRow,
    EventRow,
    MemberRow,
    ResultRow,
    RoundRow,
    TaskRow,
)

_ROUNDS = "fedledger.rounds"
_DIGESTS = "fedledger.digests"


def _round(s: Session, task_id: int, rnd: int) -> RoundRow:
    # The session's identity map holds clean rows only weakly, so a round touched by every
    # event of a chunk would be SELECTed again each time; this per-session map keeps them.
    # The indexer empties ``s.info`` when it rolls a failed event back (backend.indexer).
    cache: dict[tuple[int, int], RoundRow] = s.info.setdefault(_ROUNDS, {})
    row = cache.get((task_id, rnd))
    if row is None:
        row = s.get(RoundRow, (task_id, rnd))
    if row is None:
        row = RoundRow(
            task_id=task_id,
            round=rnd,
            status="open",
            submitted=0,
            accepted=0,
            rejected=0,
            verdicts_applied=False,
            conflicts=0,
        )
        s.add(row)
    cache[(task_id, rnd)] = row
    return row


def on_task_created(s: Session, ev: EventRow) -> None:
    a = ev.args
    task_id = int(a["taskId"])
    s.add(
        TaskRow(
            task_id=task_id,
            owner=to_checksum(a["owner"]),
            model_hash=a["modelHash"],
            model_cid=a["modelCid"],
            spec_cid=a["specCid"],
            min_updates=int(a["minUpdates"]),
            max_updates=int(a["maxUpdates"]),
            quorum=int(a["quorum"]),
            round_duration=int(a["roundDuration"]),
            open=bool(a["open"]),
            max_samples=int(a["maxSamples"]),
            attest_window=int(a["attestWindow"]),
            current_round=0,
            global_hash=a["modelHash"],
            global_cid=a["modelCid"],
            created_block=ev.block_number,
            created_tx=ev.tx_hash,
            created_at=ev.block_time,
        )
    )
    r = _round(s, task_id, 0)
    r.started_block = ev.block_number
    r.started_at = ev.block_time


def _member(role: str, key: str):  # type: ignore[no-untyped-def]
    def handler(s: Session, ev: EventRow) -> None:
        s.merge(
            MemberRow(
                task_id=int(ev.args["taskId"]),
                address=to_checksum(ev.args[key]),
                role=role,
                block_number=ev.block_number,
            )
        )

    return handler


on_contributor_added = _member("contributor", "contributor")
on_validator_added = _member("validator", "validator")


def _record(s: Session, ev: EventRow, args: dict) -> None:  # type: ignore[type-arg]
    rec = UpdateRecord.from_event(args, tx_hash=ev.tx_hash, block_number=ev.block_number)
    s.add(
        ContributionRow(
            **rec.columns(),
            block_hash=ev.block_hash,
            log_index=ev.log_index,
            submitted_at=ev.block_time,
            status="PENDING",
        )
    )
    _round(s, rec.task_id, rec.round).submitted += 1


def on_update_submitted(s: Session, ev: EventRow) -> None:
    _record(s, ev, ev.args)


def on_updates_relayed(s: Session, ev: EventRow) -> None:
    """A relayed batch: one contribution per packed record (they share the batch's log)."""
    for args in records_of_batch(ev.args):
        _record(s, ev, args)


def on_round_sealed(s: Session, ev: EventRow) -> None:
    r = _round(s, int(ev.args["taskId"]), int(ev.args["round"]))
    r.status = "sealed"
    r.sealed_count = int(ev.args["updateCount"])
    r.sealed_block = ev.block_number
    r.sealed_at = ev.block_time
    r.record_hash = str(ev.args["recordHash"]).lower()


def on_result_proposed(s: Session, ev: EventRow) -> None:
    a = ev.args
    task_id, rnd = int(a["taskId"]), int(a["round"])
    result = RoundResult.from_event(a["result"])
    s.add(
        ResultRow(
            task_id=task_id,
            round=rnd,
            digest=a["digest"],
            attempt=int(a["attempt"]),
            record_hash=result.record_hash,
            update_count=result.update_count,
            verdict_root=result.verdict_root,
            verdict_hash=result.verdict_hash,
            verdict_cid=result.verdict_cid,
            aggregate_hash=result.aggregate_hash,
            aggregate_cid=result.aggregate_cid,
            aggregate_tensor_root=result.aggregate_tensor_root,
            block_number=ev.block_number,
        )
    )


def on_round_attested(s: Session, ev: EventRow) -> None:
    a = ev.args
    task_id, rnd = int(a["taskId"]), int(a["round"])
    s.add(  # one per validator per attempt: the contract refuses a second (AlreadyAttested)
        AttestationRow(
            task_id=task_id,
            round=rnd,
            validator=to_checksum(a["validator"]),
            attempt=int(a["attempt"]),
            digest=a["digest"],
            count=int(a["count"]),
            block_number=ev.block_number,
            tx_hash=ev.tx_hash,
        )
    )
    r = _round(s, task_id, rnd)
    if r.status == "open":
        r.status = "sealed"
    r.attempt = max(r.attempt or 0, int(a["attempt"]))
    seen: dict[tuple[int, int], set[str]] = s.info.setdefault(_DIGESTS, {})
    digests = seen.get((task_id, rnd))
    if digests is None:  # once per round and session (the query flushes the row just added)
        digests = seen[(task_id, rnd)] = set(
            s.scalars(
                select(AttestationRow.digest).where(
                    AttestationRow.task_id == task_id, AttestationRow.round == rnd
                )
            )
        )
    digests.add(a["digest"])
    r.conflicts = len(digests) - 1


def on_round_finalized(s: Session, ev: EventRow) -> None:
    a = ev.args
    task_id, rnd = int(a["taskId"]), int(a["round"])
    res = s.get(ResultRow, (task_id, rnd, a["digest"]))
    if res is None:  # the contract finalises only a proposed digest: the index lacks an event
        raise ValueError(f"task {task_id} round {rnd}: final digest {a['digest']} never proposed")
    r = _round(s, task_id, rnd)
    r.status = "finalized"
    r.digest = a["digest"]
    r.attempt = int(a["attempt"])
    r.aggregate_hash = res.aggregate_hash
    r.aggregate_cid = res.aggregate_cid
    r.verdict_root = res.verdict_root
    r.verdict_cid = res.verdict_cid
    r.verdict_hash = res.verdict_hash
    r.aggregate_tensor_root = res.aggregate_tensor_root
    r.finalized_block = ev.block_number
    r.finalized_tx = ev.tx_hash
    r.verdicts_applied = False
    task = s.get(TaskRow, task_id)
    if task is not None:
        task.current_round = rnd + 1
        task.global_hash = res.aggregate_hash
        task.global_cid = res.aggregate_cid
    nxt = _round(s, task_id, rnd + 1)
    nxt.started_block = ev.block_number
    nxt.started_at = ev.block_time


def _ignore(s: Session, ev: EventRow) -> None:
    """Events kept in ``events`` but projected nowhere (yet)."""


HANDLERS = {
    "TaskCreated": on_task_created,
    "ContributorAdded": on_contributor_added,
    "ValidatorAdded": on_validator_added,
    "EncryptionKeySet": _ignore,
    "UpdateSubmitted": on_update_submitted,
    "UpdatesRelayed": on_updates_relayed,
    "EntrySkipped": _ignore,
    "RoundSealed": on_round_sealed,
    "ResultProposed": on_result_proposed,
    "RoundAttested": on_round_attested,
    "RoundFinalized": on_round_finalized,
}


SUBJECT = {"task_id": "taskId", "round": "round", "update_id": "updateId"}
"""Which event args say what an event is about, for the indexer's quarantine records."""


def rebuild(s: Session) -> None:
    """Empty every projection (not the events, not the immutable verdict-file cache)."""
    s.info.pop(_ROUNDS, None)
    s.info.pop(_DIGESTS, None)
    for model in (AttestationRow, ResultRow, ContributionRow, RoundRow, MemberRow, TaskRow):
        s.execute(delete(model))
    s.flush()


def apply_verdict_file(s: Session, task_id: int, rnd: int, body: dict) -> None:  # type: ignore[type-arg]
    """Copy a finalised round's verdicts onto its contributions and its counts onto the round."""
    r = _round(s, task_id, rnd)
    accepted = rejected = 0
    for e in body.get("entries", []):
        verdict = str(e["verdict"])
        s.execute(
            update(ContributionRow)
            .where(
                ContributionRow.update_id == int(e["updateId"]), ContributionRow.task_id == task_id
            )
            .values(status=verdict, reason=e.get("reason"), score=e.get("score"))
        )
        if verdict == "ACCEPTED":
            accepted += 1
        else:
            rejected += 1
    r.accepted, r.rejected = accepted, rejected
    r.verdicts_applied = True
