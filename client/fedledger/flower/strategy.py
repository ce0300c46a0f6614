"""The ServerApp strategy wrapper: any Flower strategy, with the ledger deciding or recording.

::

    strategy = LedgerStrategy(FedAvg(...), task_id=1, mode="ledger")
    result = strategy.start(grid, strategy.global_arrays(), num_rounds=3)

Each Flower round is one ledger round.  :meth:`LedgerStrategy.configure_train` reads the task,
names its id and current round in the training config (the clients'
:class:`~fedledger.flower.LedgerMod` submits to that round and refuses another), and in
``"ledger"`` mode sends the ledger's global model (its bytes checked against the hash on chain)
whatever Flower holds.  :meth:`LedgerStrategy.aggregate_train` waits until the task's
validators have sealed, judged and attested the round (``fedledger serve --key``), reads the
attested verdict file and matches each reply to its verdict, then:

- ``"ledger"``: the next global parameters are the attested aggregate, fetched by its CID and
  checked against ``aggregateHash`` on chain; the wrapped strategy only aggregates the metrics;
- ``"record"``: the wrapped strategy aggregates the replies whose updates the ledger accepted;
  the ledger has recorded and screened every one.

The round's metrics hold the wrapped strategy's, plus ``fedledger-round`` (the ledger round),
``fedledger-updates`` (how many it recorded), one count per verdict met
(``fedledger-accepted``, ``fedledger-outlier``, ...) and each client's verdict code
(``fedledger-verdict-<update id>``, :class:`fedledger.protocol.verdicts.Verdict`).  The full
record of every round, names and reasons included, is :attr:`LedgerStrategy.rounds`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO
from typing import Any, Literal

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

import fedledger
from fedledger.errors import ConfigError, FedledgerError
from fedledger.flower import records
from fedledger.flows.task import model_for_round, wait_for_round
from fedledger.protocol import codec, verdicts

__all__ = ["ClientVerdict", "LedgerRound", "LedgerStrategy"]

Mode = Literal["ledger", "record"]
MISSING = "MISSING"
"""A client's reply names an update that the round's attested verdict file does not hold."""


@dataclass(frozen=True)
class ClientVerdict:
    """What the ledger decided about one client's update."""

    node_id: int
    update_id: int
    contributor: str
    cid: str
    verdict: str  # a Verdict name, or MISSING
    reason: str = ""
    reported_id: int = 0  # the update id in the client's metrics (0: a relayer held it)


@dataclass
class LedgerRound:
    """One Flower round as the ledger saw it (times are ``time.time()``)."""

    server_round: int
    ledger_round: int
    updates: int
    aggregate_hash: str
    aggregate_cid: str
    verdict_cid: str
    verdicts: list[ClientVerdict] = field(default_factory=list)
    failures: int = 0
    sent_at: float = 0.0
    replied_at: float = 0.0
    final_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "server_round": self.server_round,
            "ledger_round": self.ledger_round,
            "updates": self.updates,
            "aggregate_hash": self.aggregate_hash,
            "aggregate_cid": self.aggregate_cid,
            "verdict_cid": self.verdict_cid,
            "failures": self.failures,
            "sent_at": self.sent_at,
            "replied_at": self.replied_at,
            "final_at": self.final_at,
            "verdicts": [
                {
                    "node_id": v.node_id,
                    "update_id": v.update_id,
                    "contributor": v.contributor,
                    "cid": v.cid,
                    "verdict": v.verdict,
                    "reason": v.reason,
                    "reported_id": v.reported_id,
                }
                for v in self.verdicts
            ],
        }


class LedgerStrategy(Strategy):
    """Wrap ``strategy`` so that each round is recorded, judged and attested on the ledger.

    ``mode``: ``"ledger"`` (the next global model is the validators' attested aggregate) or
    ``"record"`` (Flower aggregates the accepted updates).  ``session``: a
    :class:`fedledger.Session` (no key needed: the server only reads), else one from
    ``connect`` settings over the ``FEDLEDGER_*`` environment.  ``round_timeout_s``: how long
    to wait for the validators to make a round final.
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        task_id: int,
        mode: Mode = "ledger",
        session: fedledger.Session | None = None,
        round_timeout_s: float = 600.0,
        poll_s: float = 0.2,
        **connect: Any,
    ) -> None:
        if mode not in ("ledger", "record"):
            raise ConfigError(f"unknown mode {mode!r}", hint="use 'ledger' or 'record'")
        self.strategy = strategy
        self.task_id = int(task_id)
        self.mode: Mode = mode
        self.round_timeout_s = round_timeout_s
        self.poll_s = poll_s
        self._connect = connect
        self._session = session
        self._task: fedledger.Task | None = None
        self._sent_at = 0.0
        self.rounds: list[LedgerRound] = []

    @property
    def session(self) -> fedledger.Session:
        if self._session is None:
            self._session = fedledger.connect(**self._connect)
        return self._session

    def global_arrays(self) -> ArrayRecord:
        """The task's current global model (checked against the hash on chain) as the
        ``initial_arrays`` of :meth:`start`."""
        return records.to_arrays(self.session.task(self.task_id).global_tensors())

    # -- training ---------------------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        task = self._task = self.session.task(self.task_id)
        if self.mode == "ledger":
            keys = list(arrays.keys()) if len(arrays) else None
            arrays = records.to_arrays(task.global_tensors(), keys)
        config[records.TASK_CONFIG] = self.task_id
        config[records.ROUND_CONFIG] = task.round
        self._sent_at = time.time()
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._task is None:
            raise FedledgerError(
                "aggregate_train before configure_train: this strategy did not send the round",
                hint="run it with strategy.start(grid, strategy.global_arrays(), ...)",
            )
        got = list(replies)
        replied_at = time.time()
        led, store, rnd = self.session.ledger, self.session.store, self._task.round
        log(INFO, "fedledger: waiting for task %s round %s to be final", self.task_id, rnd)
        wait_for_round(
            led, self.task_id, rnd + 1, timeout_s=self.round_timeout_s, poll_s=self.poll_s
        )
        final_at = time.time()
        fin = led.last_finalized(self.task_id, rnd)
        if fin is None:
            raise FedledgerError(
                f"task {self.task_id} round {rnd} is final but not found in the logs"
            )
        vf = verdicts.parse(store.get(str(fin["verdictCid"])))
        judged = self._match(got, vf)
        ok = [m for m in got if not m.has_error()]
        clean = [records.without_ledger_metrics(m) for m in ok]
        if self.mode == "ledger":
            model = model_for_round(led, store, self.task_id, rnd + 1)  # hash checked
            keys = list(records.trained_arrays(ok[0].content).keys()) if ok else None
            arrays: ArrayRecord | None = records.to_arrays(
                codec.decode(model.data, kind="model").tensors, keys
            )
            _, inner = self.strategy.aggregate_train(server_round, clean) if clean else (None, None)
        else:
            accepted = {id(m) for m, v in judged if v.verdict == verdicts.Verdict.ACCEPTED.name}
            kept = [m for m in clean if id(m) in accepted]
            arrays, inner = (
                self.strategy.aggregate_train(server_round, kept) if kept else (None, None)
            )
        mine = [v for _, v in judged]
        record = LedgerRound(
            server_round=server_round,
            ledger_round=rnd,
            updates=len(vf.entries),
            aggregate_hash=str(fin["aggregateHash"]),
            aggregate_cid=str(fin["aggregateCid"]),
            verdict_cid=str(fin["verdictCid"]),
            verdicts=mine,
            failures=len(got) - len(ok),
            sent_at=self._sent_at,
            replied_at=replied_at,
            final_at=final_at,
        )
        self.rounds.append(record)
        counts = Counter(v.verdict for v in mine)
        log(
            INFO,
            "fedledger: task %s round %s final: %s updates, %s",
            self.task_id,
            rnd,
            record.updates,
            dict(counts),
        )
        return arrays, self._metrics(inner, record, counts)

    def _match(
        self, replies: list[Message], vf: verdicts.VerdictFile
    ) -> list[tuple[Message, ClientVerdict]]:
        """Each reply that names an update, with that update's verdict in the round's file."""
        by_update = {(e.contributor.lower(), _hex(e.content_hash)): e for e in vf.entries}
        out = []
        for msg in replies:
            if msg.has_error():
                continue
            reply = records.LedgerReply.from_content(msg.content)
            if reply is None:
                continue
            entry = by_update.get((reply.contributor.lower(), _hex(reply.content_hash)))
            node = int(msg.metadata.src_node_id)
            if entry is None:
                out.append(
                    (
                        msg,
                        ClientVerdict(node, reply.update_id, reply.contributor, reply.cid, MISSING),
                    )
                )
                continue
            out.append(
                (
                    msg,
                    ClientVerdict(
                        node,
                        entry.update_id,
                        reply.contributor,
                        reply.cid,
                        entry.verdict.name,
                        entry.reason,
                        reply.update_id,
                    ),
                )
            )
        return out

    @staticmethod
    def _metrics(
        inner: MetricRecord | None, record: LedgerRound, counts: Counter[str]
    ) -> MetricRecord:
        out = MetricRecord(dict(inner) if inner is not None else {})
        out["fedledger-round"] = record.ledger_round
        out["fedledger-updates"] = record.updates
        for name, n in sorted(counts.items()):
            out[f"fedledger-{name.lower().replace('_', '-')}"] = n
        for v in record.verdicts:
            if v.verdict != MISSING:
                out[f"fedledger-verdict-{v.update_id}"] = int(verdicts.Verdict[v.verdict])
        return out

    # -- evaluation: the wrapped strategy's -------------------------------------------------

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log(INFO, "fedledger: task %s, mode %r, wrapping:", self.task_id, self.mode)
        self.strategy.summary()


def _hex(value: str) -> str:
    return value.lower().removeprefix("0x")
