"""The REST API fuzzed from its own OpenAPI schema (schemathesis) over real uvicorn.

The app serves a populated index (``api_data.populate``) and, on a real anvil with the real
contract, the relay endpoint.  For every operation schemathesis generates valid and invalid
requests (bounded: ``MAX_EXAMPLES`` each) and checks that the server never answers 5xx, that
every status, content type, header and body it answers is the one the schema declares, and
that invalid input is rejected with a 4xx.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from api_data import populate
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backend.api import create_app
from backend.api.server import BackgroundServer
from backend.db import Database
from backend.relay_service import RelayLimits, RelayService
from client.chain import Ledger, connect
from client.devnet import dev_private_keys, start_anvil
from client.store import open_store

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
