"""What a task's spec says, for REST and the dashboard: its model, data set and rule, a few
bounded words each, read once per spec CID from the content store.

A task's spec lives on the content store, not in the index, and whoever creates a task writes
it: every field is bounded and made printable here (escape it where it is shown), and a slow or
missing store never holds up an answer (:class:`SpecCache`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from fedledger.content.store import ContentStore
from fedledger.errors import FedledgerError
from fedledger.flows.task import MAX_SPEC_BYTES, model_label
from fedledger.protocol.aggregation import RuleSpec
from fedledger.protocol.taskspec import TaskSpec

MAX_SPEC_TEXT = 64
"""Characters kept of each spec field (whoever creates a task writes its spec: any length)."""


@dataclass(frozen=True)
class SpecFields:
    """What a task's spec says it trains, on which data set and how updates are combined, a few
    words each; ``None`` where this node could not read the spec.  The text is the task
    creator's (printable and bounded here, not escaped: escape it where it is shown)."""

    model: str | None = None
    dataset: str | None = None
    aggregation_rule: str | None = None
    evaluation_data: str | None = None


def bounded(text: str, limit: int = MAX_SPEC_TEXT) -> str:
    """``text`` cut to ``limit`` characters, unprintable ones (controls, bidi overrides) shown
    as U+FFFD so that they cannot disguise the rest."""
    clean = "".join(c if c.isprintable() else "\ufffd" for c in text[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def rule_label(aggregation: dict[str, Any]) -> str:
    """A rule and its parameters in a few words, e.g. ``trimmed_mean beta=0.2``."""
    try:
        params = RuleSpec.parse(aggregation).to_json()
    except FedledgerError:
        return f"{aggregation.get('rule')} (invalid)"
    name = params.pop("rule")
    return " ".join([name, *(f"{k}={v}" for k, v in sorted(params.items()))])


def evaluation_label(spec: TaskSpec) -> str:
    """Which data a task's accuracy and loss figures are measured on: the root / evaluation
    data set the spec names (``root_data``), or else the built-in public split, which is for
    the demo only and may overlap what contributors train on."""
    try:
        ref = spec.root_data_ref()
    except FedledgerError:
        return "the spec's root_data (invalid): not evaluated"
    if ref is None:
        return f"built-in {spec.dataset} test split (demo only: may overlap contributors' data)"
    return f"the task's root data {ref.name or ref.cid} ({ref.samples} samples, {ref.cid})"


def spec_fields(spec: TaskSpec) -> SpecFields:
    """The :class:`SpecFields` of ``spec``."""
    return SpecFields(
        model=bounded(model_label(spec)),
        dataset=bounded(spec.dataset),
        aggregation_rule=bounded(rule_label(spec.aggregation)),
        evaluation_data=bounded(evaluation_label(spec), 160),
    )


class SpecCache:
    """:class:`SpecFields` by spec CID, read from the content store off the caller's thread.

    A CID names fixed bytes, so what it says is kept (the least recently used dropped beyond
    ``size``; bytes that are no task spec are kept as an empty :class:`SpecFields`); a spec
    the store could not give is asked for again after ``retry_s``.  A caller waits at most
    ``wait_s`` for the reads: a slow store leaves fields out of one answer, never holds it up.
    """

    def __init__(
        self, size: int = 4096, retry_s: float = 60.0, wait_s: float = 2.0, readers: int = 4
    ) -> None:
        self.size, self.retry_s, self.wait_s, self.readers = size, retry_s, wait_s, readers
        self._lock = threading.Lock()
        self._known: OrderedDict[str, SpecFields] = OrderedDict()
        self._retry_at: dict[str, float] = {}
        self._reading: dict[str, Future[None]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def lookup(self, store: ContentStore | None, cids: Iterable[str]) -> dict[str, SpecFields]:
        """The fields of each spec in ``cids`` known within ``wait_s`` (none without a store)."""
        if store is None:
            return {}
        wanted = set(cids)
        with self._lock:
            now = time.monotonic()
            for cid in wanted - self._known.keys() - self._reading.keys():
                if self._retry_at.get(cid, 0.0) <= now:
                    self._reading[cid] = self._executor().submit(self._read, store, cid)
            pending = [self._reading[c] for c in wanted if c in self._reading]
        if pending:
            wait(pending, timeout=self.wait_s)
        with self._lock:
            for cid in wanted & self._known.keys():
                self._known.move_to_end(cid)
            return {cid: self._known[cid] for cid in wanted if cid in self._known}

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.readers, thread_name_prefix="spec-read")
        return self._pool

    def _read(self, store: ContentStore, cid: str) -> None:
        fields: SpecFields | None
        try:
            data = store.get(cid, max_bytes=MAX_SPEC_BYTES)
        except Exception:  # noqa: BLE001 - missing, unreachable or corrupt: ask again later
            fields = None
        else:
            try:
                fields = spec_fields(TaskSpec.from_bytes(data))
            except FedledgerError:
                fields = SpecFields()  # these bytes are no task spec, and never will be
        with self._lock:
            del self._reading[cid]
            if fields is None:
                if len(self._retry_at) >= self.size:
                    self._retry_at.clear()
                self._retry_at[cid] = time.monotonic() + self.retry_s
                return
            self._retry_at.pop(cid, None)
            self._known[cid] = fields
            while len(self._known) > self.size:
                self._known.popitem(last=False)


SPECS = SpecCache()
"""This process's spec cache: spec CIDs mean the same bytes in every store, so it is shared."""
