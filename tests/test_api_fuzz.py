"""The REST API fuzzed from its own OpenAPI schema (schemathesis) over real uvicorn.

The app serves a populated index (``api_data.populate``) and, on a real anvil with the real
contract, the relay endpoint.  For every operation schemathesis generates valid and invalid
requests (bounded: ``MAX_EXAMPLES`` each) and checks that the server never answers 5xx, that
every status, content type, header and body it answers is the one the schema declares, and
that invalid input is rejected with a 4xx.

What a schema cannot generate is added by hand (issue #14): a body nested 100 000 deep on every
operation (json.loads of it would overflow the C stack under web3's recursion limit), and
cursors holding integers no id can be (2**70, negative, thousands of digits).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from api_data import populate
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fedledger.chain.devnet import dev_private_keys, start_anvil
from fedledger.chain.ledger import Ledger, connect
from fedledger.content.store import open_store
from fedledger_backend.api import create_app
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import Database
from fedledger_backend.relay_service import RelayLimits, RelayService

MAX_EXAMPLES = int(os.environ.get("FEDLEDGER_FUZZ_EXAMPLES", "30"))
"""Per operation; the suite keeps it small (about 15 s), a deeper run raises it."""


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    db = Database(f"sqlite:///{tmp / 'index.db'}").create()
    populate(db)
    keys = dev_private_keys(2)
    with start_anvil(accounts=2) as dn:
        w3 = connect(dn.url)
        ledger = Ledger.deploy(w3, Account.from_key(keys[0]))
        relayer = RelayService(
            ledger.with_account(Account.from_key(keys[1])),
            open_store(None, tmp / "home"),
            limits=RelayLimits(ip_burst=10_000, ip_per_s=10_000, address_burst=10_000),
        )
        app = create_app(
            db,
            w3=w3,
            ledger_address=ledger.address,
            store=open_store(None, tmp / "home"),
            relayer=relayer,
        )
        with BackgroundServer(app) as srv:
            yield srv.url


class _RelayShape:
    """Enough of a RelayService for ``create_app`` to mount the relay routes (schema only)."""

    limits = RelayLimits()


def _operations() -> list[tuple[str, str]]:
    """(path, method) of every operation, read from the app's schema at collection time."""
    app = create_app(Database("sqlite://"), relayer=_RelayShape())  # type: ignore[arg-type]
    return [
        (path, method.upper()) for path, item in app.openapi()["paths"].items() for method in item
    ]


@pytest.fixture(scope="module")
def api_schema(api_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


@pytest.mark.parametrize(("path", "method"), _operations())
def test_every_operation_answers_as_its_schema_says(
    api_schema: schemathesis.BaseSchema, path: str, method: str
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        # What no schema can say: a cursor is valid only if the server handed it out, and a
        # signed update only if its signature recovers to its contributor; well-formed made-up
        # ones are refused with 422 (test_api and test_relay_api cover real ones).
        semantic = "cursor" in (case.query or {}) or path == "/relay/updates"
        excluded = [positive_data_acceptance] if semantic else []
        case.call_and_validate(timeout=10, excluded_checks=excluded)

    check()


DEEP_BODIES = {
    "arrays": b"[" * 100_000,
    "objects": b'{"a":' * 50_000,
    "a-number-of-100k-digits": b'{"signed":{"taskId":' + b"1" * 100_000 + b"}}",
}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.mark.parametrize("body", sorted(DEEP_BODIES))
@pytest.mark.parametrize(("path", "method"), _operations())
def test_every_operation_refuses_a_deep_or_huge_number_body_and_answers_the_next_request(
    api_url: str, path: str, method: str, body: str
) -> None:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        r = http.request(
            method,
            _concrete(path),
            content=DEEP_BODIES[body],
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, r.text
        assert isinstance(r.json()["detail"], str) and "request body" in r.json()["detail"]
        assert http.get("/health").status_code == 200


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def _cursor_operations() -> list[tuple[str, str]]:
    """(path, method) of every operation that takes a ``cursor``, from the app's schema."""
    app = create_app(Database("sqlite://"), relayer=_RelayShape())  # type: ignore[arg-type]
    return [
        (path, method.upper())
        for path, item in app.openapi()["paths"].items()
        for method, op in item.items()
        if any(p["name"] == "cursor" for p in op.get("parameters", []))
    ]


@pytest.mark.parametrize("key", [str(2**70), str(2**63), "-1", "9" * 4000, "1e3", "0x1"])
@pytest.mark.parametrize(("path", "method"), _cursor_operations())
def test_a_cursor_holding_a_number_no_id_can_be_is_422_as_the_schema_says(
    api_schema: schemathesis.BaseSchema, path: str, method: str, key: str
) -> None:
    operation = api_schema[path][method]
    kind = {"/tasks": "tasks", "/contributions": "contributions.asc"}.get(path, "rounds.1")
    case = operation.Case(
        path_parameters={name: 1 for name in re.findall(r"\{(\w+)\}", path)},
        query={"cursor": _cursor(f"{kind}:{key}")},
    )
    response = case.call_and_validate(timeout=10, excluded_checks=[positive_data_acceptance])
    assert response.status_code == 422, response.text
