"""GET /contributors/{address}: one address's record across tasks, and its reputation."""

from __future__ import annotations

from collections import defaultdict

from fastapi import APIRouter, HTTPException
from sqlalchemy import func, select

from fedledger_backend.api.deps import AddressPath, SessionDep
from fedledger_backend.api.schemas import Contributor, Reputation, TaskShare
from fedledger_backend.db import ContributionRow, MemberRow

router = APIRouter(prefix="/contributors", tags=["contributors"])


def reputation(totals: dict[str, int], mean_score: float | None) -> Reputation:
    """Laplace-smoothed acceptance over judged updates: (accepted + 1) / (judged + 2).

    A newcomer starts at 0.5 and moves towards its true rate as verdicts accumulate, so one
    lucky (or unlucky) update does not make a perfect (or worthless) contributor. Pending updates
    are not judged yet and do not count; every verdict other than ACCEPTED counts against.
    """
    judged = sum(n for status, n in totals.items() if status != "PENDING")
    accepted = totals.get("ACCEPTED", 0)
    return Reputation(
        acceptance=(accepted + 1) / (judged + 2), mean_score=mean_score, judged=judged
    )


@router.get(
    "/{address}",
    response_model=Contributor,
    responses={404: {"description": "the address never contributed nor was admitted"}},
)
def get_contributor(address: AddressPath, s: SessionDep) -> Contributor:
    """Totals per status, tasks (with roles), and reputation of one address."""
    per_task = s.execute(
        select(ContributionRow.task_id, ContributionRow.status, func.count())
        .where(ContributionRow.contributor == address)
        .group_by(ContributionRow.task_id, ContributionRow.status)
    ).all()
    roles = s.execute(
        select(MemberRow.task_id, MemberRow.role).where(MemberRow.address == address)
    ).all()
    if not per_task and not roles:
        raise HTTPException(404, detail=f"no contributions or memberships for {address}")
    mean_score = s.scalar(
        select(func.avg(ContributionRow.score)).where(
            ContributionRow.contributor == address, ContributionRow.status != "PENDING"
        )
    )

    totals: dict[str, int] = defaultdict(int)
    shares: dict[int, TaskShare] = {}
    for task_id, status, n in per_task:
        totals[status] += n
        share = shares.setdefault(
            task_id, TaskShare(task_id=task_id, roles=[], contributions=0, accepted=0)
        )
        share.contributions += n
        if status == "ACCEPTED":
            share.accepted += n
    for task_id, role in roles:
        share = shares.setdefault(
            task_id, TaskShare(task_id=task_id, roles=[], contributions=0, accepted=0)
        )
        share.roles.append(role)
    for share in shares.values():
        share.roles.sort()
    return Contributor(
        address=address,
        contributions=sum(totals.values()),
        totals=dict(totals),
        tasks=[shares[t] for t in sorted(shares)],
        reputation=reputation(totals, None if mean_score is None else float(mean_score)),
    )
