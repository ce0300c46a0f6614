"""The REST API: ``create_app`` wires the routers, middleware and error mapping together.

Run it on a configured data dir (``FEDLEDGER_DB``, ``FEDLEDGER_RPC_URL``, ``FEDLEDGER_CONTRACT``)::

    uvicorn --factory fedledger_backend.api.app:from_settings --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import Histogram
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import fedledger
from fedledger import safejson
from fedledger.config import load_settings
from fedledger.errors import ConfigError, FedledgerError, FormatError
from fedledger.redact import public_text
from fedledger_backend.api.deps import ApiContext
from fedledger_backend.api.routes import (
    contributions,
    contributors,
    dashboard,
    health,
    metrics,
    relay,
    rounds,
    tasks,
)
from fedledger_backend.api.schemas import ErrorOut
from fedledger_backend.db import Database

if TYPE_CHECKING:
    from web3 import Web3

    from fedledger_backend.relay_service import RelayService

log = logging.getLogger("fedledger.api")

MAX_BODY_BYTES = 1 << 20
"""Largest request body accepted, except on the paths given their own cap (the relay's)."""


class BodySizeLimit:
    """413 for a body over ``max_bytes`` (or ``per_path[path]``): at once from Content-Length,
    else as soon as the streamed body passes the limit, without reading the rest."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        per_path: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.default_max = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.default_max)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _too_large(send, "invalid Content-Length", status=400)
                    return
                if declared > max_bytes:
                    await _too_large(send, _too_large_detail(max_bytes))
                    return
        seen = 0
        started = False
        refused = False

        # The 413 goes out from inside receive: a framework that reads the body (FastAPI does,
        # for a declared body) turns any error while reading into its own 400, and whatever the
        # app answers after the refusal is dropped.
        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    if not started and not refused:
                        refused = True
                        await _too_large(send, _too_large_detail(max_bytes))
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started and not refused:
                await _too_large(send, _too_large_detail(max_bytes))


def _too_large_detail(max_bytes: int) -> str:
    return f"request body larger than {max_bytes} bytes"


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, detail: str, status: int = 413) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


MAX_BODY_DEPTH = 32
"""Deepest JSON request body accepted (the relay's nests 2 levels)."""
_NOT_JSON_BODIES = ("multipart/form-data", "application/x-www-form-urlencoded")


class JsonBodyBounds:
    """422 for a request body that nests deeper than ``max_depth`` or holds a number of more
    than ``max_number_digits`` digits, before any route parses it (:func:`fedledger.safejson.check`).

    FastAPI parses a JSON body with ``json.loads``, which recurses once per nesting level; web3
    raises the recursion limit, so one unauthenticated body of 100 000 ``[`` would overflow the
    C stack and kill the server with SIGSEGV. Every body but a form's is checked, whatever its
    Content-Type (a route may call ``request.json()`` itself): buffered whole (BodySizeLimit,
    outside this, caps it), checked at C speed, then handed on unchanged."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        max_depth: int = MAX_BODY_DEPTH,
        max_number_digits: int = safejson.DEFAULT_MAX_NUMBER_DIGITS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_number_digits = max_number_digits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_checked_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body arrived: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            safejson.check(
                body,
                what="request body",
                max_bytes=self.max_bytes,
                max_depth=self.max_depth,
                max_number_digits=self.max_number_digits,
            )
        except FormatError as exc:
            status = 413 if len(body) > self.max_bytes else 422
            await JSONResponse({"detail": str(exc)}, status_code=status)(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _has_checked_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request announces a body (a length above 0, or chunks) that is not a form."""
    announced = False
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower().decode("latin-1")
            if media in _NOT_JSON_BODIES:
                return False
        elif name == b"transfer-encoding" or (
            name == b"content-length" and value.strip().lstrip(b"0")
        ):
            announced = True
    return announced


class UnexpectedErrors:
    """An exception no handler took becomes a bare 500 here, logged with its traceback, and goes
    no further. Starlette's outermost middleware would answer the same 500 but then re-raise,
    and uvicorn closes a connection whose app raised: a keep-alive client's next request could
    meet a reset. Answered here, the connection stays usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # part of a response is out: nothing clean can follow
                raise
            response = await _unexpected_error(Request(scope), exc)
            await response(scope, receive, send)


class RequestLatency:
    """Observes every request's latency by route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            self.histogram.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )


def create_app(
    db: Database,
    *,
    w3: Web3 | None = None,
    ledger_address: str | None = None,
    store: Any = None,
    indexer_status: Callable[[], dict[str, Any]] | None = None,
    relayer: RelayService | None = None,
) -> FastAPI:
    """The API over ``db`` (read-only). ``w3`` is a ``web3.Web3`` for /health's head block;
    ``ledger_address`` picks the indexer checkpoint to report; ``indexer_status`` returns a
    JSON-able dict shown on /health (its ``confirmations`` widens the tolerated lag).

    With ``relayer``, the app also serves ``POST /relay/updates`` (gasless submission, body cap
    ``relayer.limits.max_body_bytes``) and starts and stops the relayer's batch worker."""
    ctx = ApiContext(
        db=db,
        w3=w3,
        ledger_address=ledger_address,
        store=store,
        indexer_status=indexer_status,
        relayer=relayer,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if relayer is not None:
            relayer.start()
        yield
        if relayer is not None:
            relayer.stop()
        ctx.rpc_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="fedledger",
        summary="Contribution history of federated training, indexed from the TrainingLedger chain",
        version=fedledger.__version__,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    not_found = {404: {"model": ErrorOut, "description": "no such id or address"}}
    for module in (health, metrics, dashboard):
        app.include_router(module.router)
    for module in (tasks, rounds, contributions, contributors):
        app.include_router(module.router, responses=not_found)  # type: ignore[arg-type]
    per_path: dict[str, int] = {}
    if relayer is not None:
        app.include_router(relay.router)
        per_path[relay.RELAY_PATH] = relayer.limits.max_body_bytes

    app.add_exception_handler(FedledgerError, _fedledger_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(UnexpectedErrors)  # the innermost: inside the latency histogram
    app.add_middleware(JsonBodyBounds, max_bytes=max([MAX_BODY_BYTES, *per_path.values()]))
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES, per_path=per_path)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(RequestLatency, histogram=metrics.register_metrics(ctx.registry, db))
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, made true of our 422s: besides its own field errors (a list), a route
    may answer a string naming the bad value (a cursor, an address)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        http422 = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
        if http422 is not None:
            items = http422["properties"]["detail"]
            http422["properties"]["detail"] = {
                "anyOf": [{"type": "string"}, items],
                "title": "Detail",
            }
        app.openapi_schema = schema
    return app.openapi_schema


async def _fedledger_error(_request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "http_status", 500)
    if status >= 500:
        log.warning("request failed: %s", exc)
    # The node's own paths and endpoint URLs stay in its log (fedledger.redact).
    return JSONResponse({"detail": public_text(str(exc))}, status_code=status)


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field, without echoing the input back (a relay body is megabytes,
    and reflecting attacker-chosen text helps nobody)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def freeze_startup_heap() -> None:
    """Take everything alive now (imported modules, the app) out of the cyclic collector's walks.

    A full collection walks every tracked object: with web3, SQLAlchemy, pydantic and FastAPI
    loaded that is ~150,000 objects, 70 ms idle and 170-190 ms under load, during which no
    request is answered (the load benchmark's slowest requests). What a server builds before it
    serves lives as long as the process, so the collector has nothing to find there; after
    :func:`gc.freeze` a full collection walks only what requests made. Call it once, just before
    serving, in a process that only serves."""
    gc.collect()
    gc.freeze()


def from_settings() -> FastAPI:
    """``create_app`` on the configured database and chain (a factory for ``uvicorn --factory``)."""
    from web3 import Web3

    settings = load_settings()
    db = Database(settings.db_url).create()
    try:
        rpc_url: str | None = settings.resolve_rpc_url()
    except ConfigError:
        rpc_url = None  # /health reports "degraded: no chain configured"
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 5})) if rpc_url else None
    app = create_app(db, w3=w3, ledger_address=settings.contract)
    freeze_startup_heap()
    return app
