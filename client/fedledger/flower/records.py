"""What fedledger reads from and writes into Flower messages: the one owner of these keys.

A training reply carries the trained weights as its one ``ArrayRecord``.  Its tensors are
matched to the task's by name (an ``ArrayRecord`` made from a ``state_dict``) or, when its keys
are not the task's names (one made from a list of arrays), by position in the task's tensor
order, the order :func:`to_arrays` writes them in.

After submitting, :class:`~fedledger.flower.LedgerMod` adds to the reply:

- ``fedledger-update-id`` to the reply's metrics (its one ``MetricRecord``; for a legacy
  ``NumPyClient`` reply, its ``fitres.metrics``), 0 while a relayer still holds the update;
- a ``ConfigRecord`` named ``fedledger`` (a ``MetricRecord`` holds numbers only) with the
  task id, round, contributor, content hash, CID, update id and relay URL: :class:`LedgerReply`.
  A legacy reply's ``fitres.metrics`` gets ``fedledger-cid`` as well.

:class:`~fedledger.flower.LedgerStrategy` reads them back and removes ``fedledger-update-id``
from the metrics before the wrapped strategy averages them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedledger.errors import FormatError

REPLY_RECORD = "fedledger"
UPDATE_ID_METRIC = "fedledger-update-id"
CID_METRIC = "fedledger-cid"  # legacy fit metrics only: they hold strings
TASK_CONFIG = "fedledger-task-id"
ROUND_CONFIG = "fedledger-round"
LEGACY_METRICS = "fitres.metrics"
LEGACY_SAMPLES = "fitres.num_examples"


@dataclass(frozen=True)
class LedgerReply:
    """The update one client's reply became on the ledger."""

    task_id: int
    round: int
    contributor: str
    content_hash: str
    cid: str
    update_id: int  # 0 while a relayer holds it: the round's records name it
    relay: str = ""

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(
            {
                "task-id": self.task_id,
                "round": self.round,
                "contributor": self.contributor,
                "content-hash": self.content_hash,
                "cid": self.cid,
                "update-id": self.update_id,
                "relay": self.relay,
            }
        )

    @classmethod
    def from_content(cls, content: RecordDict) -> LedgerReply | None:
        """The reply's fedledger record, or None if it has none (no LedgerMod on that client)."""
        if REPLY_RECORD not in content.config_records:
            return None
        rec = content.config_records[REPLY_RECORD]
        try:
            return cls(
                task_id=int(rec["task-id"]),  # type: ignore[arg-type]
                round=int(rec["round"]),  # type: ignore[arg-type]
                contributor=str(rec["contributor"]),
                content_hash=str(rec["content-hash"]),
                cid=str(rec["cid"]),
                update_id=int(rec["update-id"]),  # type: ignore[arg-type]
                relay=str(rec.get("relay", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(
                f"a reply's {REPLY_RECORD!r} record is malformed: {exc}",
                hint="it is written by fedledger.flower.LedgerMod; do not edit it in another mod",
            ) from exc

    def attach(self, content: RecordDict) -> None:
        """Write this record and the update id (and, for a legacy reply, the CID) into the
        reply's metrics."""
        content.config_records[REPLY_RECORD] = self.to_record()
        if LEGACY_METRICS in content.config_records:
            legacy = content.config_records[LEGACY_METRICS]
            legacy[UPDATE_ID_METRIC] = self.update_id
            legacy[CID_METRIC] = self.cid
            return
        metrics = _only(content.metric_records, "MetricRecord")
        metrics[UPDATE_ID_METRIC] = self.update_id


def _only(records: Mapping[str, object], what: str) -> MetricRecord:
    if len(records) != 1:
        raise FormatError(
            f"the training reply holds {len(records)} {what}s, not one",
            hint="reply with one ArrayRecord (the trained weights) and one MetricRecord "
            "(with num-examples), as Flower's strategies expect",
        )
    found = next(iter(records.values()))
    assert isinstance(found, MetricRecord)
    return found


def trained_arrays(content: RecordDict) -> ArrayRecord:
    """The reply's one ArrayRecord: the trained weights."""
    if len(content.array_records) != 1:
        raise FormatError(
            f"the training reply holds {len(content.array_records)} ArrayRecords, not one",
            hint="reply with the trained model as one ArrayRecord, e.g. "
            "ArrayRecord(model.state_dict())",
        )
    return next(iter(content.array_records.values()))


def num_examples(content: RecordDict, key: str = "num-examples") -> int:
    """How many samples trained the reply: ``key`` in its metrics (``num_examples`` of a
    legacy reply)."""
    if LEGACY_SAMPLES in content.metric_records:
        value = content.metric_records[LEGACY_SAMPLES].get("num_examples")
    else:
        value = _only(content.metric_records, "MetricRecord").get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise FormatError(
            f"the training reply's metrics give no positive {key!r} ({value!r})",
            hint=f"put the number of training samples in the reply's MetricRecord as {key!r}",
        )
    return int(value)


def to_tensors(record: ArrayRecord, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The record's arrays as the task's tensors (float32), by name or else by position."""
    keys = list(record.keys())
    if set(keys) == set(names):
        pairs = [(n, record[n]) for n in names]
    elif len(keys) == len(names):
        pairs = list(zip(names, (record[k] for k in keys), strict=True))
    else:
        missing = sorted(set(names) - set(keys))[:5]
        raise FormatError(
            f"the trained weights hold {len(keys)} arrays, the task's model {len(names)} "
            f"tensors (missing e.g. {missing})",
            hint="train the task's model: its state_dict must have the task's tensor names "
            "(task.global_tensors() lists them)",
        )
    return {n: np.ascontiguousarray(a.numpy(), dtype=np.float32) for n, a in pairs}


def to_arrays(tensors: Mapping[str, np.ndarray], keys: Sequence[str] | None = None) -> ArrayRecord:
    """The task's tensors as an ArrayRecord, named as the task names them or, with ``keys``
    (the names a client's record uses, position for position), by those."""
    names = list(tensors)
    if keys is None or set(keys) == set(names):
        return ArrayRecord({n: Array(np.asarray(tensors[n])) for n in names})
    if len(keys) != len(names):
        raise FormatError(
            f"cannot name the task's {len(names)} tensors with {len(keys)} array keys",
            hint="send the task's model: LedgerStrategy.global_arrays()",
        )
    return ArrayRecord({k: Array(np.asarray(tensors[n])) for k, n in zip(keys, names, strict=True)})


def without_ledger_metrics(msg: Message) -> Message:
    """The reply with ``fedledger-update-id`` taken out of its metrics, so that the wrapped
    strategy does not average update ids (edited in place; returned for chaining)."""
    if msg.has_error():
        return msg
    for rec in msg.content.metric_records.values():
        if UPDATE_ID_METRIC in rec:
            del rec[UPDATE_ID_METRIC]
    if LEGACY_METRICS in msg.content.config_records:
        legacy = msg.content.config_records[LEGACY_METRICS]
        for key in (UPDATE_ID_METRIC, CID_METRIC):
            if key in legacy:
                del legacy[key]
    return msg
