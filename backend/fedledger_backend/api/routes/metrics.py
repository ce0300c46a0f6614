"""GET /metrics: Prometheus text: index progress, contributions, rounds, request latency."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from fedledger_backend.api.deps import CtxDep
from fedledger_backend.db import Checkpoint, ContributionRow, Database, RoundRow, TaskRow

router = APIRouter(tags=["metrics"])

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DatabaseCollector(Collector):
    """Reads the index's state at scrape time, so the figures are never stale."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.session() as s:
            indexed = s.scalar(select(func.max(Checkpoint.block_number)))
            by_status = s.execute(
                select(ContributionRow.status, func.count()).group_by(ContributionRow.status)
            ).all()
            rounds = s.execute(
                select(RoundRow.status, func.count()).group_by(RoundRow.status)
            ).all()
            tasks = s.scalar(select(func.count()).select_from(TaskRow)) or 0

        block = GaugeMetricFamily(
            "fedledger_indexed_block", "Last block whose events are all indexed (-1: none yet)"
        )
        block.add_metric([], -1 if indexed is None else indexed)
        yield block
        contributions = GaugeMetricFamily(
            "fedledger_contributions", "Indexed contributions by status", labels=["status"]
        )
        for status, n in by_status:
            contributions.add_metric([status], n)
        yield contributions
        per_round = dict(rounds)
        finalized = GaugeMetricFamily("fedledger_rounds_finalized", "Rounds finalised on chain")
        finalized.add_metric([], per_round.get("finalized", 0))
        yield finalized
        by_round_status = GaugeMetricFamily(
            "fedledger_rounds", "Rounds by status", labels=["status"]
        )
        for status, n in sorted(per_round.items()):
            by_round_status.add_metric([status], n)
        yield by_round_status
        task_count = GaugeMetricFamily("fedledger_tasks", "Training tasks created")
        task_count.add_metric([], tasks)
        yield task_count


def register_metrics(registry: CollectorRegistry, db: Database) -> Histogram:
    """Install the database collector; return the request-latency histogram to observe."""
    registry.register(DatabaseCollector(db))
    return Histogram(
        "fedledger_http_request_duration_seconds",
        "HTTP request latency by route template, method and status",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(ctx: CtxDep) -> Response:
    """Prometheus text exposition format."""
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)
