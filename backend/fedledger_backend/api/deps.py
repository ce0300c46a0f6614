"""What the routes get injected: the app's context, a database session, parsed parameters."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import pydantic_core
from fastapi import Depends, HTTPException, Path, Query, Request, Response
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from fedledger_backend.api.addresses import checksum, parse_address
from fedledger_backend.api.proofs import TreeCache
from fedledger_backend.db import Database


@dataclass
class ApiContext:
    """Everything a request may need besides its session; one per app, in ``app.state.ctx``."""

    db: Database
    w3: Any = None
    ledger_address: str | None = None
    store: Any = None
    indexer_status: Callable[[], dict[str, Any]] | None = None
    relayer: Any = None  # fedledger_backend.relay_service.RelayService when the app relays updates
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


T = TypeVar("T")


async def read(ctx: ApiContext, query: Callable[[Connection], T]) -> T:
    """``query`` on a Core connection of its own, for a read that needs no ORM objects (a page
    of rows goes from the cursor to JSON without a model per row).

    SQLite answers from this process's memory in less time than a hop to the thread pool
    costs, so its reads run inline on the event loop; a database across a network runs them on
    the pool, so that its round trips never hold up the other requests."""
    if ctx.db.in_process:
        return _on_connection(ctx.db.engine, query)
    return await run_in_threadpool(_on_connection, ctx.db.engine, query)


def _on_connection(engine: Engine, query: Callable[[Connection], T]) -> T:
    with engine.connect() as c:
        return query(c)


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


MAX_CURSOR_CHARS = 128
"""A cursor this API hands out is ~40 characters (a kind and an id below 2**63)."""


def decode_cursor(kind: str, token: str) -> int:
    """The key a cursor of ``kind`` holds; 422 if it is not one this API handed out.

    The key is a database id, so one outside ``[0, MAX_DB_INT]`` (e.g. 2**70, which SQLite
    cannot bind) is no cursor of ours either; the length is capped before anything is decoded.
    """
    if len(token) > MAX_CURSOR_CHARS:
        raise HTTPException(422, detail="invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        got_kind, key = raw.split(":")
        value = int(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(422, detail="invalid cursor") from None
    if got_kind != kind or not 0 <= value <= MAX_DB_INT or str(value) != key:
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


def page_response(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    """A ``Page`` built from plain row dicts, serialised in one call. The route's response_model
    still documents the shape; the rows come from our own tables, whose columns are the
    model's fields (a test holds the two together), so validating each row again would only
    cost time."""
    body = pydantic_core.to_json({"items": items, "next_cursor": next_cursor})
    return Response(body, media_type="application/json")


def row_items(
    rows: Sequence[Sequence[Any]], columns: tuple[str, ...], addresses: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Rows selected as ``columns`` as JSON objects, the ``addresses`` among them EIP-55."""
    items = []
    for row in rows:
        item = dict(zip(columns, row, strict=True))
        for key in addresses:
            item[key] = checksum(item[key])
        items.append(item)
    return items
