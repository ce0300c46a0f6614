"""GET /contributions[/{update_id}[/proof]]: the contribution history and verdict proofs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BeforeValidator
from sqlalchemy import select

from backend.api.addresses import checksum
from backend.api.deps import (
    ContributorFilter,
    CtxDep,
    Cursor,
    Limit,
    SessionDep,
    decode_cursor,
    encode_cursor,
)
from backend.api.proofs import verdict_proof
from backend.api.schemas import Contribution, ContributionStatus, Page, Proof
from backend.db import ContributionRow, RoundRow

router = APIRouter(prefix="/contributions", tags=["contributions"])

UpdateId = Annotated[int, Path(ge=1, description="global update id (from 1)")]


def _upper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else v


StatusFilter = Annotated[
    ContributionStatus | None,
    BeforeValidator(_upper),
    Query(description="PENDING or a verdict name (any case)"),
]


def contribution_model(row: ContributionRow) -> Contribution:
    c = Contribution.model_validate(row)
    c.contributor = checksum(c.contributor)
    return c


@router.get("", response_model=Page[Contribution])
def list_contributions(
    s: SessionDep,
    contributor: ContributorFilter,
    task_id: Annotated[int | None, Query(ge=1)] = None,
    round: Annotated[int | None, Query(ge=0)] = None,
    status: StatusFilter = None,
    order: Annotated[Literal["asc", "desc"], Query(description="by update id")] = "asc",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Contribution]:
    """The history, filtered, in update-id order, one keyset page at a time.

    Following ``next_cursor`` visits every matching contribution exactly once even while new
    ones are indexed between pages (in ascending order they appear on later pages).
    """
    kind = f"contributions.{order}"
    key = ContributionRow.update_id
    q = select(ContributionRow)
    if task_id is not None:
        q = q.where(ContributionRow.task_id == task_id)
    if round is not None:
        q = q.where(ContributionRow.round == round)
    if contributor is not None:
        q = q.where(ContributionRow.contributor == contributor)
    if status is not None:
        q = q.where(ContributionRow.status == status)
    if cursor is not None:
        after = decode_cursor(kind, cursor)
        q = q.where(key > after if order == "asc" else key < after)
    q = q.order_by(key if order == "asc" else key.desc()).limit(limit + 1)
    rows = list(s.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(kind, rows[-1].update_id) if more else None
    return Page[Contribution](items=[contribution_model(r) for r in rows], next_cursor=nxt)


def _get_row(s: SessionDep, update_id: int) -> ContributionRow:
    row = s.get(ContributionRow, update_id)
    if row is None:
        raise HTTPException(404, detail=f"update {update_id} not found")
    return row


@router.get("/{update_id}", response_model=Contribution)
def get_contribution(update_id: UpdateId, s: SessionDep) -> Contribution:
    """One contribution: where it is on chain, what it holds, and its verdict."""
    return contribution_model(_get_row(s, update_id))


@router.get(
    "/{update_id}/proof",
    response_model=Proof,
    responses={404: {"description": "unknown update, or its round is not finalised"}},
)
def get_proof(update_id: UpdateId, ctx: CtxDep, s: SessionDep) -> Proof:
    """A Merkle proof of the update's verdict against the round's attested verdict root.

    Check it with ``client.merkle.verify(root, leaf, proof)`` or on chain with
    ``verifyVerdict(taskId, round, leaf, proof)``.
    """
    row = _get_row(s, update_id)
    rnd = s.get(RoundRow, (row.task_id, row.round))
    if rnd is None or rnd.status != "finalized" or not rnd.verdict_cid or not rnd.verdict_root:
        raise HTTPException(
            404, detail=f"round {row.round} of task {row.task_id} is not finalised yet"
        )
    return verdict_proof(ctx, s, row, rnd)
