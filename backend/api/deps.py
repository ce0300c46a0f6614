"""What the routes get injected: the app's context, a database session, parsed parameters."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from sqlalchemy.orm import Session

from backend.api.addresses import parse_address
from backend.api.proofs import TreeCache
from backend.db import Database


@dataclass
class ApiContext:
    """Everything a request may need besides its session; one per app, in ``app.state.ctx``."""

    db: Database
    w3: Any = None
    ledger_address: str | None = None
    store: Any = None
    indexer_status: Callable[[], dict[str, Any]] | None = None
    relayer: Any = None  # backend.relay_service.RelayService when the app relays updates
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    trees: TreeCache = field(default_factory=TreeCache)
    # The health probe runs here so that a hanging RPC endpoint costs a bounded wait.
    rpc_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="rpc-probe")
    )
    # The last chain reading of /health: (monotonic time, chain id, head block).
    head_reading: tuple[float, int, int] | None = None


# The dependencies are ``async`` although they do no I/O: FastAPI runs a sync dependency on the
# thread pool, and each hop there costs more than the work itself.


async def get_ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[ApiContext, Depends(get_ctx)]


async def get_session(ctx: CtxDep) -> AsyncIterator[Session]:
    """A session for the request; it opens a connection only when the route first queries."""
    with ctx.db.session() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session)]


# -- addresses ----------------------------------------------------------------------------------


# The pattern is documented, not enforced by FastAPI: parse_address answers with a message
# that names the bad value.
ADDRESS_PATTERN = {"pattern": "^0x[0-9a-fA-F]{40}$"}


async def _address_path(
    address: Annotated[
        str, Path(description="0x address, any case", json_schema_extra=ADDRESS_PATTERN)
    ],
) -> str:
    return parse_address(address)


async def _address_query(
    contributor: Annotated[
        str | None, Query(description="0x address, any case", json_schema_extra=ADDRESS_PATTERN)
    ] = None,
) -> str | None:
    return None if contributor is None else parse_address(contributor)


AddressPath = Annotated[str, Depends(_address_path)]
ContributorFilter = Annotated[str | None, Depends(_address_query)]


# -- cursors ------------------------------------------------------------------------------------

# A cursor is the last key of the previous page (keyset pagination), wrapped so that clients
# treat it as opaque: rows that arrive between pages land after it and are neither skipped nor
# repeated, which an offset could not promise.


def encode_cursor(kind: str, key: int) -> str:
    raw = f"{kind}:{key}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(kind: str, token: str) -> int:
    """The key a cursor of ``kind`` holds; 422 if it is not one this API handed out."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        got_kind, key = raw.split(":")
        value = int(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(422, detail="invalid cursor") from None
    if got_kind != kind or value < 0 or str(value) != key:
        raise HTTPException(422, detail="invalid cursor")
    return value


Limit = Annotated[int, Query(ge=1, le=500, description="page size, at most 500")]
Cursor = Annotated[
    str | None,
    Query(
        description="next_cursor of the previous page",
        json_schema_extra={"pattern": "^[A-Za-z0-9_-]+$"},
    ),
]

MAX_DB_INT = 2**63 - 1
"""Largest id or round a query may name: the databases store ids as signed 64-bit integers."""


def json_response(model: BaseModel) -> Response:
    """``model`` as JSON, serialised once: FastAPI would validate a returned model again against
    the route's response_model (which still documents the shape in OpenAPI)."""
    return Response(model.model_dump_json(), media_type="application/json")
