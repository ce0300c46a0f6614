"""Projections that need the content store, run after each indexer pass (outside its
transaction, so a slow or unreachable store never stalls indexing):

* copy each final round's verdict file (immutable, cached by CID) onto its contributions, and
  for a task that requires client-level DP (``privacy.dp``) record each update's ε: the
  cumulative ε(δ) of its contributor's releases to the task so far, by Opacus's RDP accountant
  at the task's noise multiplier (:func:`fedledger.learning.privacy.epsilon`);
* evaluate each new global model on the task's held-out split (accuracy, loss per round),
  for tasks whose model this node builds (``task_node_status`` says which are skipped, why).

Both are functions of the chain, the store and the shipped data: rebuilt after a reorg.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fedledger.content.store import ContentStore
from fedledger.errors import FedledgerError, IntegrityError
from fedledger.flows.task import MAX_SPEC_BYTES
from fedledger.learning.architecture import admit_spec, allow_list
from fedledger.protocol import codec, verdicts
from fedledger.protocol.privacy_policy import DPPolicy
from fedledger.protocol.taskspec import TaskSpec
from fedledger.redact import public_reason
from fedledger_backend import quarantine
from fedledger_backend.db import (
    ContributionRow,
    Database,
    RoundRow,
    TaskNodeStatusRow,
    TaskRow,
    VerdictFileRow,
)
from fedledger_backend.handlers import apply_verdict_file

log = logging.getLogger("fedledger.projections")


VERDICTS_STAGE = "verdicts"
EVALUATE_STAGE = "evaluate"
"""Stage names of the quarantine table: one round's failure is that round's, with bounded
retries (:mod:`fedledger_backend.quarantine`); the other rounds and tasks go on."""


def apply_verdicts(
    db: Database, store: ContentStore, retries: quarantine.Retries | None = None
) -> int:
    """Apply verdict files of final rounds not yet applied; returns how many rounds were done.

    A round whose file cannot be fetched, parsed or applied (an exception of any type) is
    retried on later passes with a backoff (``retries``, kept by the caller across passes),
    then quarantined if the failure is the file's own."""
    retries = retries if retries is not None else quarantine.Retries()
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
        item = quarantine.TaskItem(VERDICTS_STAGE, task_id, rnd)
        if not cid or not quarantine.due(retries, item):
            continue
        try:
            done += _apply_one(db, store, task_id, rnd, cid)
        except Exception as exc:  # noqa: BLE001 - one round's file never stops the others
            quarantine.failed(db, retries, item, exc, f"verdict file {cid}")
            continue
        quarantine.succeeded(db, retries, item)
    return done


def _apply_one(db: Database, store: ContentStore, task_id: int, rnd: int, cid: str) -> int:
    with db.session() as s:
        cached = s.get(VerdictFileRow, cid)
        body = cached.body if cached else None
    if body is None:
        body = verdicts.parse(store.get(cid)).to_json()
    dp = _task_dp(db, store, task_id)
    with db.transaction() as s:
        if s.get(VerdictFileRow, cid) is None:
            s.add(VerdictFileRow(cid=cid, body=body))
        row = s.get(RoundRow, (task_id, rnd))
        if row is None or row.status != "finalized" or row.verdict_cid != cid:
            return 0  # a reorg rolled the round back while the file was being fetched
        apply_verdict_file(s, task_id, rnd, body)
        if dp is not None:
            _record_epsilon(s, task_id, rnd, dp)
    return 1


_SPEC_DP: OrderedDict[str, DPPolicy | None] = OrderedDict()
"""Each spec CID's DP requirement, most recently used last (a spec is immutable)."""


def _task_dp(db: Database, store: ContentStore, task_id: int) -> DPPolicy | None:
    with db.session() as s:
        task = s.get(TaskRow, task_id)
        spec_cid = None if task is None else task.spec_cid
    if spec_cid is None:
        return None
    if spec_cid not in _SPEC_DP:
        spec = TaskSpec.from_bytes(store.get(spec_cid, max_bytes=MAX_SPEC_BYTES))
        _SPEC_DP[spec_cid] = spec.privacy_policy().dp
        while len(_SPEC_DP) > 256:
            _SPEC_DP.popitem(last=False)
    _SPEC_DP.move_to_end(spec_cid)
    return _SPEC_DP[spec_cid]


def _record_epsilon(s: Session, task_id: int, rnd: int, dp: DPPolicy) -> None:
    """Each update of the round gets its contributor's cumulative ε over its updates to the
    task up to this round (each a release at the task's noise multiplier, whatever its
    verdict: its noised delta was published)."""
    rows = list(
        s.scalars(
            select(ContributionRow).where(
                ContributionRow.task_id == task_id, ContributionRow.round == rnd
            )
        )
    )
    for row in rows:
        releases = s.scalar(
            select(func.count())
            .select_from(ContributionRow)
            .where(
                ContributionRow.task_id == task_id,
                ContributionRow.contributor == row.contributor,
                ContributionRow.round <= rnd,
            )
        )
        row.dp_epsilon = _epsilon(int(releases or 0), dp.noise_multiplier, dp.delta)


@lru_cache(maxsize=4096)
def _epsilon(releases: int, noise_multiplier: float, delta: float) -> float:
    from fedledger.learning.privacy import epsilon

    return epsilon(releases, noise_multiplier, delta)


MAX_CHECKS_PER_PASS = 50
"""Tasks whose model admission one pass decides (a spec fetch each): many new tasks at once
never hold up a pass for long."""

MAX_MODELS = 4
"""Built models (with their data sets) kept between passes, most recently used."""


class Evaluator:
    """Held-out accuracy of each final round's global model, per the task's spec: on the
    task's root / evaluation data set when its spec names one (``root_data``), else on the
    built-in public split of its ``dataset`` (the demo's; REST says which, ``evaluation_data``).

    Before anything is built, each task's model goes through
    :func:`fedledger.learning.architecture.admit_spec` under this node's allow list: a built-in name or a
    description is built by fedledger's own code, a factory only if the operator allowed it
    (its pinned source checked first); nothing a spec names is imported otherwise.  The
    outcome per task, ``ok`` or ``skipped`` with the reason, is written to
    ``task_node_status`` (shown by ``GET /tasks/{id}`` and ``/health``) and logged once.
    """

    def __init__(self, store: ContentStore, allow_models: Iterable[str] = ()) -> None:
        self.store = store
        self.retries = quarantine.Retries()
        self.allow = allow_list(allow_models)
        self._admitted: dict[str, str | None] = {}  # spec CID -> why it is skipped, or None
        self._built: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._recorded: set[tuple[int, str]] = set()

    def _admission(self, spec_cid: str) -> str | None:
        """Why this node does not build the model of the spec at ``spec_cid`` (None: it does)."""
        if spec_cid not in self._admitted:
            try:
                admit_spec(TaskSpec.from_bytes(self.store.get(spec_cid)), self.allow)
                self._admitted[spec_cid] = None
            except FedledgerError as exc:
                self._admitted[spec_cid] = public_reason(exc)
        return self._admitted[spec_cid]

    def check_tasks(self, db: Database) -> int:
        """Decide and record, for tasks not yet seen by this process, whether their model is
        built here; returns how many were decided."""
        with db.session() as s:
            tasks = s.execute(select(TaskRow.task_id, TaskRow.spec_cid)).all()
        todo = [(t, c) for t, c in tasks if (t, c) not in self._recorded][:MAX_CHECKS_PER_PASS]
        for task_id, spec_cid in todo:
            reason = self._admission(spec_cid)
            with db.transaction() as s:
                row = s.get(TaskNodeStatusRow, task_id)
                if row is None:
                    row = TaskNodeStatusRow(task_id=task_id)
                    s.add(row)
                row.spec_cid, row.reason = spec_cid, reason
                row.status = "ok" if reason is None else "skipped"
            if reason is not None:
                log.warning(
                    "task skipped: its model is not built on this node",
                    extra={"task_id": task_id, "spec_cid": spec_cid, "status": "skipped",
                           "reason": reason},
                )  # fmt: skip
            self._recorded.add((task_id, spec_cid))
        return len(todo)

    def _context(self, spec_cid: str) -> tuple[Any, Any] | None:
        if self._admission(spec_cid) is not None:
            return None  # skipped, and said so by check_tasks
        if spec_cid in self._built:
            self._built.move_to_end(spec_cid)
            return self._built[spec_cid]
        from fedledger.learning.data import load_dataset
        from fedledger.learning.models import build_task_model
        from fedledger.protocol.reference import fetch_root_data

        try:
            spec = TaskSpec.from_bytes(self.store.get(spec_cid))
            ref = spec.root_data_ref()
            if ref is not None:  # the task's own evaluation data: what REST says it measured
                root = fetch_root_data(self.store, ref)
                data = (root.x, root.y)
            else:  # the demo's built-in public split (labelled so on REST and the dashboard)
                ds = load_dataset(spec.dataset, seed=spec.seed)
                data = (ds.X_test, ds.y_test)
            ctx = (build_task_model(spec, allow=self.allow), data)
        except FedledgerError as exc:
            log.warning("cannot evaluate task", extra={"spec_cid": spec_cid, "error": str(exc)})
            self._admitted[spec_cid] = public_reason(exc)
            self._recorded = {(t, c) for t, c in self._recorded if c != spec_cid}  # say why
            return None
        self._built[spec_cid] = ctx
        if len(self._built) > MAX_MODELS:
            self._built.popitem(last=False)
        return ctx

    def run(self, db: Database) -> int:
        from fedledger.learning.train import evaluate

        self.check_tasks(db)
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
            item = quarantine.TaskItem(EVALUATE_STAGE, task_id, rnd)
            if not cid or not quarantine.due(self.retries, item):
                continue
            try:  # anything from the spec, the model or the aggregate is this round's failure
                ctx = self._context(spec_cid)
                if ctx is None:
                    continue
                model, (x_eval, y_eval) = ctx
                data = self.store.get(cid)
                if codec.sha256_hex(data) != h:
                    raise IntegrityError(f"aggregate {cid} does not match its hash {h}")
                tensors = codec.decode(data, kind="model").tensors
                acc, loss = evaluate(model, tensors, x_eval, y_eval)
            except Exception as exc:  # noqa: BLE001 - one task's model never stops the others
                quarantine.failed(db, self.retries, item, exc, f"evaluating aggregate {cid}")
                continue
            quarantine.succeeded(db, self.retries, item)
            with db.transaction() as s:
                row = s.get(RoundRow, (task_id, rnd))
                if row is None or row.aggregate_hash != h:
                    continue  # rolled back by a reorg meanwhile
                row.accuracy, row.loss = float(acc), float(loss)
            done += 1
        return done
