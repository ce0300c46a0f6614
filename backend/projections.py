"""Projections that need the content store, run after each indexer pass (outside its
transaction, so a slow or unreachable store never stalls indexing):

* copy each final round's verdict file (immutable, cached by CID) onto its contributions;
* evaluate each new global model on the task's held-out split (accuracy, loss per round).

Both are functions of the chain, the store and the shipped data: rebuilt after a reorg.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from backend.db import Database, RoundRow, TaskRow, VerdictFileRow
from backend.handlers import apply_verdict_file
from client import codec, verdicts
from client.errors import FedledgerError
from client.store import ContentStore
from client.taskspec import TaskSpec

log = logging.getLogger("fedledger.projections")


def apply_verdicts(db: Database, store: ContentStore) -> int:
    """Apply verdict files of final rounds not yet applied; returns how many rounds were done."""
    with db.session() as s:
        todo = [
            (r.task_id, r.round, r.verdict_cid)
            for r in s.scalars(
                select(RoundRow).where(
                    RoundRow.status == "finalized", RoundRow.verdicts_applied.is_(False)
                )
            )
        ]
    done = 0
    for task_id, rnd, cid in todo:
        if not cid:
            continue
        with db.session() as s:
            cached = s.get(VerdictFileRow, cid)
            body = cached.body if cached else None
        if body is None:
            try:
                vf = verdicts.parse(store.get(cid))
            except FedledgerError as exc:
                log.warning("verdict file unavailable", extra={"cid": cid, "error": str(exc)})
                continue
            body = vf.to_json()
        with db.transaction() as s:
            if s.get(VerdictFileRow, cid) is None:
                s.add(VerdictFileRow(cid=cid, body=body))
            row = s.get(RoundRow, (task_id, rnd))
            if row is None or row.status != "finalized" or row.verdict_cid != cid:
                continue  # a reorg rolled the round back while the file was being fetched
            apply_verdict_file(s, task_id, rnd, body)
        done += 1
    return done


class Evaluator:
    """Held-out accuracy of each final round's global model, per the task's spec."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self._cache: dict[str, Any] = {}

    def _context(self, spec_cid: str) -> tuple[Any, Any] | None:
        if spec_cid in self._cache:
            return self._cache[spec_cid]  # type: ignore[no-any-return]
        from client.data import load_dataset
        from client.models import build_model

        try:
            spec = TaskSpec.from_bytes(self.store.get(spec_cid))
            ds = load_dataset(spec.dataset, seed=spec.seed)
            model = build_model(spec.model, seed=spec.seed, **spec.model_kwargs)
            ctx = (model, ds)
        except FedledgerError as exc:
            log.warning("cannot evaluate task", extra={"spec_cid": spec_cid, "error": str(exc)})
            ctx = None
        self._cache[spec_cid] = ctx
        return ctx

    def run(self, db: Database) -> int:
        from client.train import evaluate

        with db.session() as s:
            todo = [
                (r.task_id, r.round, r.aggregate_cid, r.aggregate_hash, t.spec_cid)
                for r, t in s.execute(
                    select(RoundRow, TaskRow)
                    .join(TaskRow, TaskRow.task_id == RoundRow.task_id)
                    .where(RoundRow.status == "finalized", RoundRow.accuracy.is_(None))
                )
            ]
        done = 0
        for task_id, rnd, cid, h, spec_cid in todo:
            ctx = self._context(spec_cid)
            if ctx is None or not cid:
                continue
            model, ds = ctx
            try:
                data = self.store.get(cid)
                if codec.sha256_hex(data) != h:
                    log.warning("aggregate does not match its hash", extra={"cid": cid})
                    continue
                tensors = codec.decode(data, kind="model").tensors
                acc, loss = evaluate(model, tensors, ds.X_test, ds.y_test)
            except FedledgerError as exc:
                log.warning("evaluation failed", extra={"cid": cid, "error": str(exc)})
                continue
            with db.transaction() as s:
                row = s.get(RoundRow, (task_id, rnd))
                if row is None or row.aggregate_hash != h:
                    continue  # rolled back by a reorg meanwhile
                row.accuracy, row.loss = float(acc), float(loss)
            done += 1
        return done
