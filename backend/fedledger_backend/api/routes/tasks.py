"""GET /tasks and /tasks/{task_id}: task configs and where each task stands (the spec's
model, data set and rule from :data:`fedledger_backend.taskspecs.SPECS`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fedledger_backend import quarantine
from fedledger_backend.api.addresses import checksum
from fedledger_backend.api.deps import (
    MAX_DB_INT,
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
from fedledger_backend.api.schemas import Page, Task, TaskDetail
from fedledger_backend.db import MemberRow, RoundRow, TaskNodeStatusRow, TaskRow
from fedledger_backend.taskspecs import SPECS, SpecFields

router = APIRouter(prefix="/tasks", tags=["tasks"])

TaskId = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="task id (from 1)")]


def task_model(row: TaskRow) -> Task:
    t = Task.model_validate(row)
    t.owner = checksum(t.owner)
    return t


def get_task_row(s: Session, task_id: int) -> TaskRow:
    row = s.get(TaskRow, task_id)
    if row is None:
        raise HTTPException(404, detail=f"task {task_id} not found")
    return row


COLUMNS = tuple(TaskRow.__table__.columns.keys())
"""The tasks table's columns, in order: also the fields of ``Task``."""


@router.get("", response_model=Page[Task])
async def list_tasks(ctx: CtxDep, limit: Limit = 50, cursor: Cursor = None) -> Response:
    """Tasks by id."""
    q = select(*TaskRow.__table__.columns).order_by(TaskRow.task_id).limit(limit + 1)
    if cursor is not None:
        q = q.where(TaskRow.task_id > decode_cursor("tasks", cursor))
    rows = await read(ctx, lambda c: c.execute(q).all())
    more = len(rows) > limit
    items = row_items(rows[:limit], COLUMNS, addresses=("owner",))
    nxt = encode_cursor("tasks", items[-1]["task_id"]) if more else None
    return page_response(items, nxt)


@router.get("/{task_id}", response_model=TaskDetail)
def get_task(task_id: TaskId, ctx: CtxDep, s: SessionDep) -> TaskDetail:
    """One task with its members and progress."""
    row = get_task_row(s, task_id)
    members = s.execute(
        select(MemberRow.address, MemberRow.role)
        .where(MemberRow.task_id == task_id)
        .order_by(MemberRow.block_number, MemberRow.address)
    ).all()
    finalized, contributions = s.execute(
        select(
            func.count().filter(RoundRow.status == "finalized"),
            func.coalesce(func.sum(RoundRow.submitted), 0),
        ).where(RoundRow.task_id == task_id)
    ).one()
    node = s.get(TaskNodeStatusRow, task_id)
    if node is not None and node.spec_cid != row.spec_cid:
        node = None  # judged a spec a reorg replaced: not this task's
    status, status_reason = quarantine.task_status(s, task_id)
    base = task_model(row).model_dump()
    spec = SPECS.lookup(ctx.store, [row.spec_cid]).get(row.spec_cid, SpecFields())
    return TaskDetail(
        **base,
        model=spec.model,
        dataset=spec.dataset,
        evaluation_data=spec.evaluation_data,
        aggregation_rule=spec.aggregation_rule,
        contributors=[checksum(a) for a, role in members if role == "contributor"],
        validators=[checksum(a) for a, role in members if role == "validator"],
        rounds_finalized=int(finalized),
        contributions=int(contributions),
        node_status=node.status if node is not None else None,  # type: ignore[arg-type]
        skip_reason=node.reason if node is not None else None,
        status=status,  # type: ignore[arg-type]
        status_reason=status_reason,
    )
