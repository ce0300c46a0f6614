"""fedledger: a blockchain-verified ledger for federated training.

The whole contributor and owner journey from one import::

    import fedledger
    session = fedledger.connect(key="alice")            # settings/env -> ledger + store + key
    task = session.task(1)
    model = task.model(device="cuda")                    # the task's model, global weights in
    my_training_loop(model, my_loader)                   # your own loop, optimiser, precision
    receipt = task.submit(model, num_samples=len(my_dataset))
    task.wait_for_round(receipt.round + 1)
    print(receipt.update_id, task.verdict(receipt).verdict.name, session.verify(1).ok)

An owner starts with ``fedledger.deploy(key="owner")`` (or ``connect`` to a deployed ledger),
then ``session.create_task(fedledger.TaskSpec(...), max_samples=...)`` and ``session.admit``.
See ``docs/tutorial.md`` and ``examples/``.

Layers, bottom to top (``make lint`` checks them): ``errors``/``logs`` -> ``config`` ->
``content`` | ``chain`` | ``learning`` -> ``protocol`` -> ``flows`` -> ``cli``.  Heavy parts
(torch, web3) load only when a name that needs them is first used, so ``import fedledger`` is
fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fedledger.errors import (
    ChainError,
    ConfigError,
    ContractRevert,
    FedledgerError,
    FormatError,
    IntegrityError,
    KeystoreError,
    ModelNotAllowed,
    NotFoundError,
    VerificationError,
)

__version__ = "0.2.0"

# A library logs only where its user asked (`fedledger serve` and the worker configure
# handlers); without this, Python's last-resort handler would print warnings into a CLI's
# one-line errors.
logging.getLogger("fedledger").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from fedledger.config import Settings
    from fedledger.flows.session import Receipt, Session, Task, connect, deploy
    from fedledger.flows.verify import Report
    from fedledger.protocol.taskspec import TaskSpec

__all__ = [
    "ChainError",
    "ConfigError",
    "ContractRevert",
    "FedledgerError",
    "FormatError",
    "IntegrityError",
    "KeystoreError",
    "ModelNotAllowed",
    "NotFoundError",
    "Receipt",
    "Report",
    "Session",
    "Settings",
    "Task",
    "TaskSpec",
    "VerificationError",
    "__version__",
    "connect",
    "deploy",
]


def __getattr__(name: str) -> Any:
    """The public names that pull in web3, torch or pydantic models, loaded on first use."""
    if name in ("connect", "deploy", "Session", "Task", "Receipt"):
        from fedledger.flows import session

        return getattr(session, name)
    if name == "Report":
        from fedledger.flows.verify import Report

        return Report
    if name == "TaskSpec":
        from fedledger.protocol.taskspec import TaskSpec

        return TaskSpec
    if name == "Settings":
        from fedledger.config import Settings

        return Settings
    raise AttributeError(f"module 'fedledger' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
