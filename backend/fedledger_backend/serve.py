"""``fedledger serve``: the REST API (and relay) in this process, the worker beside it.

The SDK's CLI reaches this through the ``fedledger.service`` entry point (``pyproject.toml``),
so the SDK never imports the service package.
"""

from __future__ import annotations

import logging

from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey

from fedledger.chain.ledger import open_ledger
from fedledger.config import Settings
from fedledger.content.store import open_store
from fedledger_backend.db import Database
from fedledger_backend.service import Backend
from fedledger_backend.worker_process import WorkerConfig, WorkerProcess

log = logging.getLogger("fedledger.service")


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
    committee_key: PrivateKey | None = None,
) -> None:
    """``fedledger serve``: the REST API (and relay) in this process; the worker (indexer,
    projections, validator) in a supervised child process (:mod:`fedledger_backend.worker_process`), so
    judging a round never holds the GIL the API needs.  ``worker_process=False`` runs the worker
    as a thread of this process instead."""
    import uvicorn

    from fedledger.logs import configure
    from fedledger_backend.api.app import freeze_startup_heap

    configure("INFO", json_lines=True)
    ledger = open_ledger(settings.resolve_rpc_url(), settings.contract, settings.deployments_dir)
    ledger.log_chunk = settings.log_chunk
    db = Database(settings.db_url)
    if reindex:  # before the schema is checked: an older version's database is rebuilt
        log.warning("reindexing from the deployment block", extra={"db": "reset"})
        db.drop()
    backend = Backend(
        ledger=ledger,
        store=open_store(settings.ipfs, settings.home),
        db=db,
        account=None if worker_process else account,
        committee_key=None if worker_process else committee_key,
        confirmations=settings.confirmations,
        evaluate=evaluate,
        allow_models=settings.allowed_models,
        chunk=settings.log_chunk,
    )
    if reindex:
        backend.reindex()  # also forgets every quarantined item's retries
    relayer = None
    if relay_account is not None:
        from fedledger_backend.relay_service import RelayLimits, RelayPolicy, RelayService

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
            committee_key=bytes(committee_key) if committee_key is not None else None,
        )
    else:
        worker = backend
    worker.start()
    app = backend.app(relayer, worker.status)
    freeze_startup_heap()
    try:
        # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1; only the
        # proxies in FEDLEDGER_TRUSTED_PROXIES are believed (fedledger_backend.api.client_ip).
        uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)
    finally:
        worker.stop()
