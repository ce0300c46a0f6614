"""Typed records decoded from the ledger's events: the one place an ``UpdateSubmitted`` becomes
a contribution record.  The indexer's handler (a database row), ``fedledger history`` without a
backend (a JSON row) and anything else that lists contributions build theirs from
:class:`UpdateRecord`, so the same event always yields the same fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fedledger.chain.ledger import to_checksum, to_hex


@dataclass(frozen=True)
class UpdateRecord:
    """One ``UpdateSubmitted`` event: who submitted which bytes for which round, and where the
    chain recorded it."""

    update_id: int
    task_id: int
    round: int
    contributor: str
    content_hash: str
    cid: str
    num_samples: int
    tx_hash: str
    block_number: int

    @classmethod
    def from_event(
        cls, args: Mapping[str, Any], *, tx_hash: Any, block_number: int
    ) -> UpdateRecord:
        """From an event's decoded ``args`` (web3's, or the indexer's stored JSON form)."""
        content_hash = args["contentHash"]
        return cls(
            update_id=int(args["updateId"]),
            task_id=int(args["taskId"]),
            round=int(args["round"]),
            contributor=to_checksum(str(args["contributor"])),
            content_hash=(
                to_hex(content_hash) if isinstance(content_hash, bytes) else str(content_hash)
            ).lower(),
            cid=str(args["cid"]),
            num_samples=int(args["numSamples"]),
            tx_hash=tx_hash if isinstance(tx_hash, str) else to_hex(bytes(tx_hash)),
            block_number=int(block_number),
        )

    def columns(self) -> dict[str, Any]:
        """The record as the field names REST and the database use."""
        return asdict(self)
