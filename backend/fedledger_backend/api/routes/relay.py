"""POST /relay/updates, GET /relay/updates/{contributor}/{task_id}/{round}: gasless submission.

Mounted only when the app is given a :class:`fedledger_backend.relay_service.RelayService`.  The checks
and their order are the service's (see its docstring); this module finds the client
(:mod:`fedledger_backend.api.client_ip`: the socket peer, or what a trusted proxy says) and maps the
outcomes to HTTP, each refusal as ``{"detail": ...}`` saying why and what to do: 413 (body over
the relay's own cap, by the app's middleware), 422 (schema, base64, signature, content), 403
(a task this relay does not serve, a contributor the task did not admit), 409 (a duplicate, or
what the contract would refuse, with its error name in ``error``), 429 with ``Retry-After`` (a
rate or budget spent), 202 once queued.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fedledger.chain.ledger import SignedUpdate
from fedledger.errors import ContractRevert
from fedledger_backend.api.addresses import parse_address
from fedledger_backend.api.client_ip import client_ip, rate_key
from fedledger_backend.api.deps import ADDRESS_PATTERN, CtxDep
from fedledger_backend.api.schemas import ErrorOut, RelayAccepted, RelayRequest, RelayStatusOut
from fedledger_backend.relay_service import NotServed, RateLimited, RelayService

router = APIRouter(prefix="/relay", tags=["relay"])

RELAY_PATH = "/relay/updates"
MAX_RETRY_AFTER_S = 3600


def _service(ctx: CtxDep) -> RelayService:
    service: RelayService | None = ctx.relayer
    if service is None:  # the router is only mounted with a relayer; belt and braces
        raise HTTPException(404, detail="this server does not relay updates")
    return service


@router.post(
    "/updates",
    status_code=202,
    response_model=RelayAccepted,
    responses={
        403: {
            "model": ErrorOut,
            "description": "this relay does not serve the task, or the contributor is not admitted",
        },
        409: {
            "model": ErrorOut,
            "description": "a duplicate, or the contract would refuse it (`error` names why)",
        },
        413: {"model": ErrorOut, "description": "body over the relay's size cap"},
        429: {
            "model": ErrorOut,
            "description": "rate limited, or a budget of the contributor or the task spent",
            "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
        },
        502: {"model": ErrorOut, "description": "the chain or the content store failed"},
    },
)
async def relay_update(body: RelayRequest, request: Request, ctx: CtxDep) -> JSONResponse:
    """Check a signed update and its bytes, store them, and queue the update for submission.

    422 for a malformed request, a bad signature or content that is not what was signed.

    The relayer pays the gas; follow the outcome at
    ``GET /relay/updates/{contributor}/{taskId}/{round}``.
    """
    service = _service(ctx)
    try:
        content = base64.b64decode(body.content, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, detail="content is not valid base64") from None
    s = body.signed
    su = SignedUpdate(
        task_id=s.taskId,
        round=s.round,
        content_hash=s.contentHash.lower(),
        cid=s.cid,
        num_samples=s.numSamples,
        contributor=parse_address(s.contributor),
        deadline=s.deadline,
        signature=bytes.fromhex(s.signature[2:]),
        tensor_root=s.tensorRoot.lower(),
    )
    policy = service.policy
    client = client_ip(
        request.client.host if request.client else None,
        request.headers.getlist(policy.proxy_header),
        policy.trusted_proxies,
        policy.proxy_header,
    )
    try:
        status = await run_in_threadpool(service.submit, su, content, rate_key(client))
    except RateLimited as exc:
        wait = MAX_RETRY_AFTER_S
        if math.isfinite(exc.retry_after):
            wait = min(MAX_RETRY_AFTER_S, max(1, math.ceil(exc.retry_after)))
        return JSONResponse(
            {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(wait)}
        )
    except NotServed as exc:
        return JSONResponse({"detail": str(exc)}, status_code=403)
    except ContractRevert as exc:
        return JSONResponse({"detail": exc.message, "error": exc.name}, status_code=409)
    accepted = RelayAccepted(
        queued=True,
        contributor=status.contributor,
        taskId=status.task_id,
        round=status.round,
        cid=status.cid,
    )
    return JSONResponse(accepted.model_dump(), status_code=202)


@router.get(
    "/updates/{contributor}/{task_id}/{round}",
    response_model=RelayStatusOut,
    responses={404: {"model": ErrorOut, "description": "this relayer holds no update for it"}},
)
async def relay_status(
    contributor: Annotated[
        str, Path(description="0x address, any case", json_schema_extra=ADDRESS_PATTERN)
    ],
    task_id: Annotated[int, Path(ge=1, lt=2**256)],
    round: Annotated[int, Path(ge=0, lt=2**64)],
    ctx: CtxDep,
) -> RelayStatusOut:
    """What became of a relayed update: queued, submitted (update id, tx hash) or failed."""
    address = parse_address(contributor)
    st = _service(ctx).status(address, task_id, round)
    if st is None:
        raise HTTPException(
            404, detail=f"no relayed update of {address} for task {task_id} round {round}"
        )
    return RelayStatusOut(
        contributor=st.contributor,
        taskId=st.task_id,
        round=st.round,
        cid=st.cid,
        state=st.state,
        updateId=st.update_id,
        txHash=st.tx_hash,
        reason=st.reason,
        error=st.error,
    )
