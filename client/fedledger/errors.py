"""One exception hierarchy for fedledger, rooted in :class:`FedledgerError`.

Every error says what was wrong and what to do about it.  The CLI prints ``str(err)`` on one
line and exits with ``err.exit_code``; the REST API maps ``err.http_status`` to a response.
"""

from __future__ import annotations


class FedledgerError(Exception):
    """Base of every error fedledger raises on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ConfigError(FedledgerError):
    """A setting, flag or environment variable is missing or invalid."""

    exit_code = 2
    http_status = 422


class NotFoundError(FedledgerError):
    """An id, file or address that was asked for does not exist."""

    exit_code = 3
    http_status = 404


class KeystoreError(FedledgerError):
    """A keystore is missing, unreadable, or its password is wrong."""

    exit_code = 4
    http_status = 403


class StoreError(FedledgerError):
    """The content store failed (I/O, a node that is down or answered wrongly)."""

    http_status = 502


class ContentNotFoundError(StoreError, NotFoundError):
    """A CID is not in the content store."""

    exit_code = 3
    http_status = 404


class IntegrityError(StoreError):
    """Stored bytes do not hash to the CID or hash they are stored under: corruption or tampering."""

    http_status = 409


class FormatError(FedledgerError):
    """Bytes are not a valid fedledger file (safetensors update, model, verdict file, CAR)."""

    exit_code = 5
    http_status = 422


class ChainError(FedledgerError):
    """The RPC endpoint is down, answered wrongly, or a transaction failed."""

    exit_code = 6
    http_status = 502


class ContractRevert(ChainError):
    """A call reverted with one of TrainingLedger's named custom errors.

    ``name`` is the Solidity error's name and ``args`` its decoded arguments.
    """

    http_status = 409

    def __init__(self, name: str, args: dict[str, object], message: str) -> None:
        self.name = name
        self.args_ = args
        super().__init__(message)


class VerificationError(FedledgerError):
    """Re-verification found a mismatch between chain, store and recomputation."""

    exit_code = 7
    http_status = 409


class ModelNotAllowed(FedledgerError):
    """A task names a user's ``module:factory`` that this node's operator has not allowed: the
    node runs no code named by a task (``--allow-model`` / ``FEDLEDGER_ALLOW_MODELS``)."""

    exit_code = 10
    http_status = 403


class ModelPinMismatch(FedledgerError):
    """The architecture this node would build is not the one the task spec pins."""

    exit_code = 11
    http_status = 409
