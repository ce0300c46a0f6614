"""GET /: the dashboard page (self-contained HTML, see :mod:`fedledger_backend.dashboard`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from fedledger_backend import dashboard
from fedledger_backend.api.deps import MAX_DB_INT, CtxDep, SessionDep
from fedledger_backend.taskspecs import SPECS

router = APIRouter(tags=["dashboard"])


@router.get("/", response_class=HTMLResponse)
def page(
    s: SessionDep,
    ctx: CtxDep,
    task_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="show one task")] = None,
) -> HTMLResponse:
    """Tasks (with their model, data set and rule), rounds, verdicts and accuracy per round,
    readable at a glance."""
    data = dashboard.load(s, task_id, specs=lambda cids: SPECS.lookup(ctx.store, cids))
    return HTMLResponse(dashboard.render(data))
