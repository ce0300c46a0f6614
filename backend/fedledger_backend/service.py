"""The validator service: indexer, projections, validator and REST API.

``Backend`` is what ``fedledger serve``, the demo, the benchmarks and the tests run.  The worker
thread loops: index confirmed events → apply verdict files → evaluate new global models →
attest ready rounds (with a validator key).  Errors are logged and retried with backoff;
they never kill the API, and /health shows them.

Isolation (:mod:`fedledger_backend.quarantine`): inside each stage one event, round or task that fails
is marked, retried with a bound and quarantined, and the stage goes on with the rest; a stage
that fails as a whole (its database read, say) does not keep the later stages from running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey

from fedledger.chain.ledger import Ledger
from fedledger.content.store import ContentStore
from fedledger.errors import FedledgerError
from fedledger_backend import quarantine
from fedledger_backend.db import Database
from fedledger_backend.handlers import HANDLERS, SUBJECT, rebuild
from fedledger_backend.indexer import Indexer, LedgerSource
from fedledger_backend.projections import Evaluator, apply_verdicts
from fedledger_backend.validator import Attested, Validator

log = logging.getLogger("fedledger.service")


@dataclass
class Backend:
    ledger: Ledger
    store: ContentStore
    db: Database
    account: LocalAccount | None = None
    committee_key: PrivateKey | None = None  # the validator's X25519 key for private tasks
    confirmations: int = 0
    evaluate: bool = True
    allow_models: tuple[
        str, ...
    ] = ()  # factories this node may import (fedledger.learning.architecture)
    poll_s: float = 0.25
    chunk: int = 2000
    attested: list[Attested] = field(default_factory=list)
    last_error: str | None = None
    passes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pass_done: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.db.create()
        self.indexer = Indexer(
            LedgerSource(self.ledger, chunk=self.chunk),
            self.db,
            HANDLERS,
            rebuild,
            start_block=self.ledger.from_block,
            confirmations=self.confirmations,
            chunk=self.chunk,
            subject=SUBJECT,
        )
        self.verdict_retries = quarantine.Retries()
        self.evaluator = Evaluator(self.store, self.allow_models) if self.evaluate else None
        self.validator = (
            Validator(
                self.ledger.with_account(self.account), self.store, self.db, self.committee_key
            )
            if self.account is not None
            else None
        )

    def run_pass(self) -> int:
        """One full pass; returns events indexed.  A failing projection stage does not keep
        the validator from its rounds: the pass runs on and raises the first failure after."""
        n = self.indexer.run_once()
        failed: list[Exception] = []
        self._stage(failed, "verdicts", apply_verdicts, self.db, self.store, self.verdict_retries)
        if self.evaluator is not None:
            self._stage(failed, "evaluate", self.evaluator.run, self.db)
        if self.validator is not None:
            done = self.validator.step()
            self.attested += done
            if done:
                n += self.indexer.run_once()
                self._stage(
                    failed, "verdicts", apply_verdicts, self.db, self.store, self.verdict_retries
                )
        if failed:
            raise failed[0]
        return n

    @staticmethod
    def _stage(failed: list[Exception], name: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported by run_pass once the others ran
            log.warning("stage failed", extra={"stage": name, "error": str(exc)})
            failed.append(exc)

    def reindex(self) -> None:
        """Drop the whole database, a cache of the chain, and build it again (``--reindex``):
        the schema this version defines, every event indexed again, and every quarantined
        item tried again."""
        self.db.drop()
        self.db.create()
        if self.validator is not None:
            self.validator.retries = quarantine.Retries()
        self.verdict_retries = quarantine.Retries()
        if self.evaluator is not None:
            self.evaluator.retries = quarantine.Retries()

    def status(self) -> dict[str, Any]:
        """The worker's own report, shown on /health (a ``last_error`` makes it degraded)."""
        return {
            "confirmations": self.confirmations,
            "last_indexed_block": self.indexer.last_indexed(),
            "reorgs": self.indexer.reorgs,
            "events_quarantined": self.indexer.quarantined,
            "passes": self.passes,
            "validator": self.validator.address if self.validator else None,
            "validator_error": self.validator.last_error if self.validator else None,
            "last_error": self.last_error,
        }

    def _loop(self) -> None:
        backoff = self.poll_s
        while not self._stop.is_set():
            try:
                self.run_pass()
                self.last_error = None
                backoff = self.poll_s
            except FedledgerError as exc:
                self.last_error = str(exc)
                log.warning("backend pass failed", extra={"error": str(exc)})
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:  # noqa: BLE001 - keep serving; report on /health
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("backend pass crashed")
                backoff = min(backoff * 2, 10.0)
            with self._pass_done:
                self.passes += 1
                self._pass_done.notify_all()
            self._stop.wait(backoff)

    def wait_passes(self, n: int = 1, timeout: float = 60.0) -> None:
        """Block until ``n`` more worker passes have completed."""
        with self._pass_done:
            target = self.passes + n
            if not self._pass_done.wait_for(lambda: self.passes >= target, timeout):
                raise TimeoutError(f"backend made no {n} passes within {timeout}s")

    def start(self) -> Backend:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fedledger-worker")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def app(self, relayer: Any = None, status: Callable[[], dict[str, Any]] | None = None) -> Any:
        """The REST API over this backend's database; with ``relayer`` (a
        :class:`fedledger_backend.relay_service.RelayService`) also ``POST /relay/updates``.  ``status``
        reports the worker on /health (default: this object's own worker thread)."""
        from fedledger_backend.api.app import create_app

        return create_app(
            self.db,
            w3=self.ledger.w3,
            ledger_address=self.ledger.address,
            store=self.store,
            indexer_status=status or self.status,
            relayer=relayer,
        )
