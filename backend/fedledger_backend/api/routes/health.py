"""GET /health: is the chain readable, and how far behind it is the index."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Connection, func, select

from fedledger_backend import quarantine
from fedledger_backend.api.addresses import checksum
from fedledger_backend.api.deps import CtxDep, read
from fedledger_backend.api.schemas import (
    MAX_SKIPPED_SHOWN,
    Health,
    HealthStatus,
    QuarantineSummary,
    SkippedTask,
)
from fedledger_backend.db import Checkpoint, TaskNodeStatusRow, TaskRow

router = APIRouter(tags=["health"])

RPC_TIMEOUT_S = 2.0
LAG_TOLERANCE_BLOCKS = 5
"""Blocks beyond the indexer's confirmations that still count as keeping up (one poll's worth)."""


HEAD_TTL_S = 0.5
"""How long one reading of the chain head serves /health: under load, many probes a second would
otherwise queue behind each other on the RPC endpoint (and a chain id never changes)."""


def _fresh_reading(ctx: Any) -> tuple[int, int] | None:
    hit = ctx.head_reading
    if hit is not None and time.monotonic() - hit[0] < HEAD_TTL_S:
        return hit[1], hit[2]
    return None


def _probe(ctx: Any) -> tuple[int, int]:
    fresh = _fresh_reading(ctx)  # another probe may have read it meanwhile
    if fresh is not None:
        return fresh
    hit = ctx.head_reading
    chain_id = hit[1] if hit is not None else int(ctx.w3.eth.chain_id)
    head = int(ctx.w3.eth.block_number)
    ctx.head_reading = (time.monotonic(), chain_id, head)
    return chain_id, head


@router.get("/health", response_model=Health)
async def health(ctx: CtxDep) -> Health:
    """Always 200: the status field says whether the chain and the index are healthy."""
    contract = checksum(ctx.ledger_address.lower()) if ctx.ledger_address else None
    query = select(Checkpoint.block_number, Checkpoint.chain_id)
    if contract is not None:
        query = query.where(Checkpoint.contract == contract)
    query = query.order_by(Checkpoint.block_number.desc()).limit(1)
    cp, skipped, n_skipped = await read(
        ctx, lambda c: (c.execute(query).first(), *_skipped_tasks(c))
    )
    last = cp.block_number if cp else None
    quarantined = QuarantineSummary.model_validate(await read(ctx, quarantine.summary))
    base = Health(
        status="degraded",
        chain_id=cp.chain_id if cp else None,
        head_block=None,
        last_indexed_block=last,
        lag_blocks=None,
        contract=contract,
        indexer=_indexer_report(ctx),
        skipped_tasks=skipped,
        skipped_tasks_count=n_skipped,
        quarantine=quarantined,
    )
    if ctx.w3 is None:
        return base.model_copy(update={"detail": "no chain configured"})
    try:
        reading = _fresh_reading(ctx)  # most probes under load: no hop to the RPC thread
        if reading is None:
            probe = asyncio.wrap_future(ctx.rpc_pool.submit(_probe, ctx))
            reading = await asyncio.wait_for(probe, RPC_TIMEOUT_S)
        chain_id, head = reading
    except TimeoutError:
        why = f"the RPC endpoint did not answer within {RPC_TIMEOUT_S:g}s"
        return base.model_copy(update={"detail": why})
    except Exception as exc:  # noqa: BLE001 - any transport or RPC failure means degraded
        why = f"cannot read the chain: {type(exc).__name__}"
        return base.model_copy(update={"detail": why})

    lag = head - last if last is not None else None
    confirmations = int((base.indexer or {}).get("confirmations", 0) or 0)
    status: HealthStatus = "ok"
    detail = None
    failed = (base.indexer or {}).get("last_error")
    if failed:  # the chain answers, but the worker cannot use it (e.g. the chain was replaced)
        status, detail = "degraded", f"the indexer's last pass failed: {failed}"
    elif lag is None:
        status, detail = "lagging", "nothing indexed yet"
    elif lag > confirmations + LAG_TOLERANCE_BLOCKS:
        status, detail = "lagging", f"the index is {lag} blocks behind the head"
    return base.model_copy(
        update={
            "status": status,
            "chain_id": chain_id,
            "head_block": head,
            "lag_blocks": lag,
            "detail": detail,
        }
    )


_SKIPPED = (
    (TaskNodeStatusRow.status == "skipped")
    & (TaskNodeStatusRow.task_id == TaskRow.task_id)
    & (TaskNodeStatusRow.spec_cid == TaskRow.spec_cid)  # not a spec a reorg replaced
)


def _skipped_tasks(c: Connection) -> tuple[list[SkippedTask], int]:
    """The tasks whose model this node does not build (the first few), and how many in all."""
    rows = c.execute(
        select(TaskNodeStatusRow.task_id, TaskNodeStatusRow.reason)
        .join(TaskRow, _SKIPPED)
        .order_by(TaskNodeStatusRow.task_id)
        .limit(MAX_SKIPPED_SHOWN)
    ).all()
    shown = [SkippedTask(task_id=r.task_id, reason=r.reason or "") for r in rows]
    if len(shown) < MAX_SKIPPED_SHOWN:
        return shown, len(shown)
    total = c.execute(select(func.count()).select_from(TaskNodeStatusRow).join(TaskRow, _SKIPPED))
    return shown, int(total.scalar_one())


def _indexer_report(ctx: CtxDep) -> dict[str, Any] | None:
    if ctx.indexer_status is None:
        return None
    try:
        return dict(ctx.indexer_status())
    except Exception as exc:  # noqa: BLE001 - a broken reporter must not break /health
        return {"error": f"indexer status unavailable: {type(exc).__name__}"}
