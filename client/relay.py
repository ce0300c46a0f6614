"""A relayer: collects EIP-712 signed updates and submits them in batches (``submitUpdatesFor``).

Every signature is checked here before anything is sent (the contract checks it again), so a
forged, expired or foreign-chain signature costs the relayer no gas.  A batch is sent when it is
full or when its oldest entry has waited ``max_wait_s``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.constants import SECPK1_N

from client.chain import Ledger, SignedUpdate
from client.errors import ConfigError, FedledgerError


class BadSignedUpdate(FedledgerError):
    """A signed update that would revert: wrong signer, expired, malleable signature..."""

    exit_code = 8
    http_status = 422


# The largest low-s value (EIP-2, and what OpenZeppelin's ECDSA accepts): half the curve order.
SECP256K1_HALF_N = SECPK1_N // 2


def check_signed(ledger: Ledger, su: SignedUpdate, *, now: int | None = None) -> None:
    """Raise BadSignedUpdate unless ``su`` is validly signed by its contributor and not expired."""
    now = int(time.time()) if now is None else now
    if su.deadline < now:
        raise BadSignedUpdate(f"signed update expired at {su.deadline} (now {now})")
    if len(su.signature) != 65:
        raise BadSignedUpdate(f"signature must be 65 bytes, got {len(su.signature)}")
    s = int.from_bytes(su.signature[32:64], "big")
    if s > SECP256K1_HALF_N:
        raise BadSignedUpdate("malleable signature (high s) rejected")
    typed = ledger.typed_update(
        su.task_id, su.round, su.content_hash, su.cid, su.num_samples, su.contributor, su.deadline
    )
    try:
        recovered = Account.recover_message(
            encode_typed_data(full_message=typed), signature=su.signature
        )
    except Exception as exc:  # noqa: BLE001 - any failure to recover is a bad signature
        raise BadSignedUpdate(f"signature does not recover: {exc}") from exc
    if recovered.lower() != su.contributor.lower():
        raise BadSignedUpdate(
            f"signature was made by {recovered}, not by the contributor {su.contributor}"
        )


@dataclass
class Relayer:
    """Batches signed updates; thread-safe; ``flush`` sends what is queued."""

    ledger: Ledger
    batch_size: int = 64
    max_wait_s: float = 2.0
    _queue: list[SignedUpdate] = field(default_factory=list)
    _first_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 256:
            raise ConfigError("relay batch size must be between 1 and 256")

    def add(self, su: SignedUpdate) -> list[int] | None:
        """Queue a checked update; send the batch if it is full (returns the update ids)."""
        check_signed(self.ledger, su)
        with self._lock:
            self._queue.append(su)
            if self._first_at is None:
                self._first_at = time.monotonic()
            full = len(self._queue) >= self.batch_size
        return self.flush() if full else None

    def due(self) -> bool:
        with self._lock:
            return (
                self._first_at is not None and time.monotonic() - self._first_at >= self.max_wait_s
            )

    def flush(self) -> list[int]:
        with self._lock:
            batch, self._queue, self._first_at = self._queue, [], None
        if not batch:
            return []
        return self.ledger.submit_updates_for(batch)
