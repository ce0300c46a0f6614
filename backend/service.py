"""The validator service: indexer, projections, validator and REST API.

``Backend`` is what ``fedledger serve``, the demo, the benchmarks and the tests run.  The worker
thread loops: index confirmed events → apply verdict files → evaluate new global models →
attest ready rounds (with a validator key).  Errors are logged and retried with backoff;
they never kill the API, and /health shows them.

Isolation (:mod:`backend.quarantine`): inside each stage one event, round or task that fails
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

from backend import quarantine
from backend.db import Database
from backend.handlers import HANDLERS, SUBJECT, rebuild
from backend.indexer import Indexer, LedgerSource
from backend.projections import Evaluator, apply_verdicts
from backend.validator import Attested, Validator
from backend.worker_process import WorkerConfig, WorkerProcess
from client.chain import Ledger, open_ledger
from client.errors import FedledgerError
from client.settings import Settings
from client.store import ContentStore, open_store

log = logging.getLogger("fedledger.service")


@dataclass
class Backend:
    ledger: Ledger
    store: ContentStore
    db: Database
    account: LocalAccount | None = None
    confirmations: int = 0
    evaluate: bool = True
    allow_models: tuple[str, ...] = ()  # factories this node may import (client.architecture)
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
            Validator(self.ledger.with_account(self.account), self.store, self.db)
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
        :class:`backend.relay_service.RelayService`) also ``POST /relay/updates``.  ``status``
        reports the worker on /health (default: this object's own worker thread)."""
        from backend.api.app import create_app

        return create_app(
            self.db,
            w3=self.ledger.w3,
            ledger_address=self.ledger.address,
            store=self.store,
            indexer_status=status or self.status,
            relayer=relayer,
        )


def run_service(
    settings: Settings,
    *,
    account: LocalAccount | None,
    host: str,
    port: int,
    evaluate: bool = True,
    reindex: bool = False,
    relay_account: LocalAccount | None = None,
    worker_process: bool = True,
) -> None:
    """``fedledger serve``: the REST API (and relay) in this process; the worker (indexer,
    projections, validator) in a supervised child process (:mod:`backend.worker_process`), so
    judging a round never holds the GIL the API needs.  ``worker_process=False`` runs the worker
    as a thread of this process instead."""
    import uvicorn

    from backend.api.app import freeze_startup_heap
    from client.logs import configure

    configure("INFO", json_lines=True)
    ledger = open_ledger(settings.resolve_rpc_url(), settings.contract, settings.deployments_dir)
    ledger.log_chunk = settings.log_chunk
    backend = Backend(
        ledger=ledger,
        store=open_store(settings.ipfs, settings.home),
        db=Database(settings.db_url),
        account=None if worker_process else account,
        confirmations=settings.confirmations,
        evaluate=evaluate,
        allow_models=settings.allowed_models,
        chunk=settings.log_chunk,
    )
    if reindex:
        log.warning("reindexing from the deployment block", extra={"db": "reset"})
        backend.reindex()
    relayer = None
    if relay_account is not None:
        from backend.relay_service import RelayLimits, RelayPolicy, RelayService

        relayer = RelayService(
            ledger.with_account(relay_account),
            backend.store,
            limits=RelayLimits.from_settings(settings),
            # The relay serves the tasks this node validates and the ones its operator names.
            policy=RelayPolicy.from_settings(
                settings, account.address if account is not None else None
            ),
            journal_path=settings.home / "relay-journal.sqlite3",  # acknowledged updates survive
        )
    worker: Backend | WorkerProcess
    if worker_process:
        worker = WorkerProcess(
            WorkerConfig(
                rpc_url=settings.resolve_rpc_url(),
                contract=ledger.address,
                from_block=ledger.from_block,
                db_url=settings.db_url,
                home=str(settings.home),
                ipfs=settings.ipfs,
                confirmations=settings.confirmations,
                evaluate=evaluate,
                allow_models=settings.allowed_models,
                chunk=settings.log_chunk,
            ),
            private_key=bytes(account.key) if account is not None else None,
        )
    else:
        worker = backend
    worker.start()
    app = backend.app(relayer, worker.status)
    freeze_startup_heap()
    try:
        # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1; only the
        # proxies in FEDLEDGER_TRUSTED_PROXIES are believed (backend.api.client_ip).
        uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)
    finally:
        worker.stop()
