"""Rewards of a court task: settle a round once its window passed, and claim an update's reward.

A settled round's verdict leaves carry each accepted update's reward
(:func:`fedledger.protocol.verdicts.with_rewards`: the round's budget split in proportion to the
capped fedavg weights); the contributor, or anyone for it, claims it once with the leaf's Merkle
proof against the settled verdict root, and the court pays from the task's pool
(docs/verification.md, "Rewards").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedledger.chain.court import Court, RoundStatus
from fedledger.chain.ledger import Ledger
from fedledger.chain.records import RoundResult
from fedledger.content.store import ContentStore
from fedledger.errors import ChainError, NotFoundError
from fedledger.flows.task import fetch_verified
from fedledger.protocol import verdicts


@dataclass(frozen=True)
class Claim:
    """One claimed reward."""

    task_id: int
    round: int
    update_id: int
    contributor: str
    amount: int
    tx_hash: str

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def attested_result(ledger: Ledger, court: Court, task_id: int, round_: int) -> RoundResult:
    """The result the court holds for a round (attested or settled)."""
    digest = bytes(court.round_record(task_id, round_)["digest"])
    if not any(digest):
        raise NotFoundError(f"task {task_id} round {round_} was not attested under a court")
    result = ledger.proposed_result(task_id, round_, digest)
    if result is None:
        raise NotFoundError(f"task {task_id} round {round_}: no ResultProposed for its digest")
    return result


def settle(ledger: Ledger, court: Court, task_id: int, round_: int) -> bool:
    """Settle the round (and the attested rounds before it, oldest first) when its window
    passed; returns False when it was settled already."""
    status, _ = court.round_status(task_id, round_)
    if status is RoundStatus.SETTLED:
        return False
    if status is not RoundStatus.ATTESTED:
        raise ChainError(f"task {task_id} round {round_} is {status.name.lower()}, not attested")
    parent = int(court.round_record(task_id, round_)["parent"])
    if parent:
        settle(ledger, court, task_id, parent - 1)
    court.settle(task_id, round_, attested_result(ledger, court, task_id, round_))
    return True


def claim(
    ledger: Ledger,
    court: Court,
    store: ContentStore,
    task_id: int,
    round_: int,
    contributor: str,
) -> list[Claim]:
    """Claim every unclaimed reward ``contributor`` earned in the round (settling it first when
    its window passed)."""
    status, _ = court.round_status(task_id, round_)
    if status is not RoundStatus.SETTLED:
        settle(ledger, court, task_id, round_)
    result = attested_result(ledger, court, task_id, round_)
    vf = verdicts.parse(fetch_verified(store, result.verdict_cid, result.verdict_hash))
    who = contributor.lower()
    out = []
    for e in vf.entries:
        if e.contributor != who or e.verdict is not verdicts.Verdict.ACCEPTED or not e.reward:
            continue
        if court.is_claimed(task_id, e.update_id):
            continue
        receipt = court.claim(
            task_id,
            round_,
            e.update_id,
            e.contributor,
            e.content_hash,
            e.clip_multiplier,
            e.reward,
            vf.proof(e.update_id),
        )
        out.append(
            Claim(
                task_id,
                round_,
                e.update_id,
                contributor,
                e.reward,
                receipt["transactionHash"].hex(),
            )
        )
    return out
