"""GET /tasks/{task_id}/rounds[/{round}]: round status, results, verdict counts, attestations."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from sqlalchemy import func, select

from fedledger_backend.api.addresses import checksum
from fedledger_backend.api.deps import (
    MAX_DB_INT,
    Cursor,
    Limit,
    SessionDep,
    decode_cursor,
    encode_cursor,
)
from fedledger_backend.api.routes.tasks import TaskId, get_task_row
from fedledger_backend.api.schemas import Attestation, DigestCount, Page, Round, RoundDetail
from fedledger_backend.db import AttestationRow, ContributionRow, ResultRow, RoundRow

router = APIRouter(prefix="/tasks/{task_id}/rounds", tags=["rounds"])

RoundNo = Annotated[int, Path(ge=0, le=MAX_DB_INT, description="round number (from 0)")]


@router.get("", response_model=Page[Round])
def list_rounds(
    task_id: TaskId, s: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[Round]:
    """A task's rounds, oldest first."""
    get_task_row(s, task_id)
    q = (
        select(RoundRow)
        .where(RoundRow.task_id == task_id)
        .order_by(RoundRow.round)
        .limit(limit + 1)
    )
    if cursor is not None:
        q = q.where(RoundRow.round > decode_cursor(f"rounds.{task_id}", cursor))
    rows = list(s.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(f"rounds.{task_id}", rows[-1].round) if more else None
    return Page[Round](items=[Round.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/{round}", response_model=RoundDetail)
def get_round(task_id: TaskId, round: RoundNo, s: SessionDep) -> RoundDetail:
    """One round: its result, verdict counts, metrics and every validator's attestation.

    Attestations that disagree with the finalised result stay listed (``agrees: false``), so a
    validator that attested a different digest is visible.
    """
    get_task_row(s, task_id)
    row = s.get(RoundRow, (task_id, round))
    if row is None:
        raise HTTPException(404, detail=f"round {round} of task {task_id} not found")
    counts = {
        status: int(n)
        for status, n in s.execute(
            select(ContributionRow.status, func.count())
            .where(ContributionRow.task_id == task_id, ContributionRow.round == round)
            .group_by(ContributionRow.status)
        )
    }
    atts = list(
        s.scalars(
            select(AttestationRow)
            .where(AttestationRow.task_id == task_id, AttestationRow.round == round)
            .order_by(AttestationRow.block_number, AttestationRow.attempt, AttestationRow.validator)
        )
    )
    final = row.status == "finalized" and row.digest is not None
    results = {
        r.digest: r
        for r in s.scalars(
            select(ResultRow).where(ResultRow.task_id == task_id, ResultRow.round == round)
        )
    }
    attestations = []
    for a in atts:
        res = results.get(a.digest)
        attestations.append(
            Attestation(
                validator=checksum(a.validator),
                digest=a.digest,
                attempt=a.attempt,
                verdict_root=res.verdict_root if res else "",
                aggregate_hash=res.aggregate_hash if res else "",
                aggregate_cid=res.aggregate_cid if res else "",
                verdict_cid=res.verdict_cid if res else "",
                block_number=a.block_number,
                tx_hash=a.tx_hash,
                agrees=(a.digest == row.digest) if final else None,
            )
        )
    tally = Counter(a.digest for a in atts)
    digests = [DigestCount(digest=d, attestations=n) for d, n in tally.most_common()]
    return RoundDetail(
        **Round.model_validate(row).model_dump(),
        counts=counts,
        metrics=row.metrics,
        attestations=attestations,
        digests=digests,
    )
