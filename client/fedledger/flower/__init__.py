"""Flower integration: a Flower app gets the ledger in a few lines (``pip install 'fedledger[flower]'``).

On the clients, one mod after training turns each result into a fedledger update (the delta
against the ledger's global model, encoded, checked, stored, signed, and submitted or handed
to a relayer, by the SDK's own :meth:`fedledger.Task.submit`)::

    from flwr.clientapp import ClientApp
    from fedledger.flower import LedgerMod

    app = ClientApp(mods=[LedgerMod(key="client-{partition_id}", relay="http://127.0.0.1:8000")])

On the server, a wrapper around any Flower strategy::

    from flwr.serverapp.strategy import FedAvg
    from fedledger.flower import LedgerStrategy

    strategy = LedgerStrategy(FedAvg(), task_id=1)            # mode="ledger" (default)
    result = strategy.start(grid, strategy.global_arrays(), num_rounds=3)

In ``"ledger"`` mode the next global parameters are the aggregate the task's validators
attested (its bytes checked against the hash on chain), with each client's verdict in the
round's metrics; in ``"record"`` mode Flower aggregates the updates the ledger accepted, and the
ledger records and screens every one.  ``examples/flower_app/`` is a whole app.

This package sits at the top of the SDK, beside :mod:`fedledger.cli`: it uses the SDK's flows
and nothing below them re-implemented.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401 - the extra this package needs
except ImportError as exc:  # pragma: no cover - depends on the installation
    from fedledger.errors import ConfigError

    raise ConfigError(
        "fedledger.flower needs Flower",
        hint="pip install 'fedledger[flower]' (flwr[simulation]==1.42.0)",
    ) from exc

from fedledger.flower.mod import LedgerMod
from fedledger.flower.records import LedgerReply
from fedledger.flower.strategy import ClientVerdict, LedgerRound, LedgerStrategy

__all__ = ["ClientVerdict", "LedgerMod", "LedgerReply", "LedgerRound", "LedgerStrategy"]
