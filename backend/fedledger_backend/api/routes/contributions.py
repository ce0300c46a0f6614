"""GET /contributions[/{update_id}[/proof]]: the contribution history and verdict proofs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BeforeValidator
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from fedledger_backend import quarantine
from fedledger_backend.api.addresses import checksum
from fedledger_backend.api.deps import (
    MAX_DB_INT,
    ContributorFilter,
    CtxDep,
    Cursor,
    Limit,
    SessionDep,
    decode_cursor,
    encode_cursor,
    page_response,
    read,
    row_items,
)
from fedledger_backend.api.proofs import tensor_proof, verdict_proof
from fedledger_backend.api.schemas import (
    Contribution,
    ContributionStatus,
    Page,
    Proof,
    TensorProof,
)
from fedledger_backend.db import ContributionRow, RoundRow, TaskRow

router = APIRouter(prefix="/contributions", tags=["contributions"])

UpdateId = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="global update id (from 1)")]


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
async def list_contributions(
    ctx: CtxDep,
    contributor: ContributorFilter,
    task_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT)] = None,
    round: Annotated[int | None, Query(ge=0, le=MAX_DB_INT)] = None,
    status: StatusFilter = None,
    order: Annotated[Literal["asc", "desc"], Query(description="by update id")] = "asc",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """The history, filtered, in update-id order, one keyset page at a time.

    Following ``next_cursor`` visits every matching contribution exactly once even while new
    ones are indexed between pages (in ascending order they appear on later pages).
    """
    kind = f"contributions.{order}"
    after = None if cursor is None else decode_cursor(kind, cursor)
    q = history_query(task_id, round, contributor, status, order, after).limit(limit + 1)
    rows = await read(ctx, lambda c: c.execute(q).all())
    more = len(rows) > limit
    items = row_items(rows[:limit], COLUMNS, addresses=("contributor",))
    nxt = encode_cursor(kind, items[-1]["update_id"]) if more else None
    return page_response(items, nxt)


COLUMNS = tuple(ContributionRow.__table__.columns.keys())
"""The contributions table's columns, in order: also the fields of ``Contribution``."""


def history_query(
    task_id: int | None,
    round: int | None,
    contributor: str | None,
    status: str | None,
    order: Literal["asc", "desc"] = "asc",
    after: int | None = None,
) -> Select[Any]:
    """Contributions matching the filters, keyset-ordered by update id after ``after``."""
    key = ContributionRow.update_id
    use = _index_for(task_id, round, contributor, status)
    q = select(*ContributionRow.__table__.columns)
    if task_id is not None:
        q = q.where(_steer(ContributionRow.task_id, use in ("task", "task_round")) == task_id)
    if round is not None:
        q = q.where(ContributionRow.round == round)
        if task_id is None:  # reach ix_contrib_task_round once per task instead of a full scan
            q = q.where(ContributionRow.task_id.in_(select(TaskRow.task_id)))
    if contributor is not None:
        q = q.where(_steer(ContributionRow.contributor, use == "contributor") == contributor)
    if status is not None:
        q = q.where(_steer(ContributionRow.status, use == "status") == status)
    if after is not None:
        q = q.where(key > after if order == "asc" else key < after)
    return q.order_by(key if order == "asc" else key.desc())


def _index_for(
    task_id: int | None, round: int | None, contributor: str | None, status: str | None
) -> str | None:
    """Which index (``ix_contrib_*``) reaches the fewest rows for these filters.

    Each of them ends in update_id, so the keyset ORDER BY needs no sort. A rejection status
    is rare (a few %), so it narrows a task more than the task narrows the history.
    """
    if round is not None:
        return "task_round"
    if contributor is not None:
        return "contributor"
    if status is not None and (task_id is None or status not in ("ACCEPTED", "PENDING")):
        return "status"
    if task_id is not None:
        return "task"
    return None


class _Unindexed(ColumnElement[Any]):
    """A column SQLite must not reach through an index: ``+col`` (sqlite.org/optoverview.html,
    "Disqualifying WHERE clause terms"); other databases see the plain column.

    SQLite plans a cache like ours without statistics and picks badly between two usable
    indexes, e.g. status over contributor: 80 ms instead of 0.3 ms on 1M rows.
    """

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _plain(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_Unindexed, "sqlite")
def _unary_plus(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


def _steer(column: Any, indexed: bool) -> Any:
    return column if indexed else _Unindexed(column)


def _get_row(s: SessionDep, update_id: int) -> ContributionRow:
    row = s.get(ContributionRow, update_id)
    if row is None:
        raise HTTPException(404, detail=f"update {update_id} not found")
    return row


@router.get("/{update_id}", response_model=Contribution)
def get_contribution(update_id: UpdateId, s: SessionDep) -> Contribution:
    """One contribution: where it is on chain, what it holds, and its verdict (while it is
    PENDING on a task this node is retrying or quarantined, ``reason`` says why)."""
    c = contribution_model(_get_row(s, update_id))
    if c.status == "PENDING" and c.reason is None:
        status, why = quarantine.task_status(s, c.task_id)
        if status != "active":
            c.reason = f"not judged yet: the task is {status} on this node ({why})"
    return c


@router.get(
    "/{update_id}/proof",
    response_model=Proof,
    responses={404: {"description": "unknown update, or its round is not finalised"}},
)
def get_proof(update_id: UpdateId, ctx: CtxDep, s: SessionDep) -> Proof:
    """A Merkle proof of the update's verdict against the round's attested verdict root.

    Check it with ``fedledger.protocol.merkle.verify(root, leaf, proof)`` or on chain with
    ``verifyVerdict(taskId, round, result, leaf, proof)`` (``result`` is in the answer).
    """
    row = _get_row(s, update_id)
    rnd = s.get(RoundRow, (row.task_id, row.round))
    if rnd is None or rnd.status != "finalized" or not rnd.verdict_cid or not rnd.verdict_root:
        raise HTTPException(
            404, detail=f"round {row.round} of task {row.task_id} is not finalised yet"
        )
    return verdict_proof(ctx, s, row, rnd)


@router.get(
    "/{update_id}/tensor-proof",
    response_model=TensorProof,
    responses={
        404: {"description": "unknown update, no tensor root, or an index past its coordinates"},
        503: {"description": "the update cannot be read from the content store now"},
    },
)
def get_tensor_proof(
    update_id: UpdateId,
    ctx: CtxDep,
    s: SessionDep,
    index: Annotated[int, Query(ge=0, lt=2**40, description="flat coordinate index")] = 0,
) -> TensorProof:
    """A Merkle proof of one int32 coordinate of a fixed-point update against the tensorRoot
    recorded with it on chain: ``MerkleProof.verify(proof, root, keccak256(leaf))`` or
    ``TensorRoot.verifyCoordinate`` accept it."""
    return tensor_proof(ctx, s, _get_row(s, update_id), index)
