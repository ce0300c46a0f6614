"""Tasks from the owner's and the contributor's side: publish the initial model and the spec,
create the task on chain, and load a task's current state (config, spec, global model).

The CLI, the backend, the demo and the tests all go through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedledger.chain.ledger import Ledger, TaskConfig, to_hex
from fedledger.content.store import ContentStore
from fedledger.errors import IntegrityError, ModelPinMismatch, NotFoundError
from fedledger.learning import architecture
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec


@dataclass(frozen=True)
class Published:
    content_hash: str
    cid: str
    size: int


_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")


def publish(store: ContentStore, data: bytes) -> Published:
    """Put bytes in the store (pinned) and return their sha256 and CID. The sha256 runs on
    another core while the store imports and syncs the file (hashlib releases the GIL)."""
    content_hash = _HASHER.submit(codec.sha256_hex, data)
    cid = store.put(data, pin=True)
    return Published(content_hash=content_hash.result(), cid=cid, size=len(data))


def fetch_verified(store: ContentStore, cid: str, content_hash: str) -> bytes:
    """Bytes for ``cid`` whose sha256 must equal ``content_hash`` (else IntegrityError)."""
    data, got = store.get_hashed(cid, expect=content_hash)
    if got != content_hash.lower():
        raise IntegrityError(
            f"content {cid} hashes to {got}, not the recorded {content_hash}",
            hint="the stored copy is corrupted or was replaced; fetch it from another node",
        )
    return data


@dataclass(frozen=True)
class TaskState:
    """What a contributor or validator needs to know about a task right now."""

    task_id: int
    owner: str
    config: TaskConfig
    spec: TaskSpec
    current_round: int
    global_hash: str
    global_cid: str
    round_start: int
    update_count: int
    sealed: bool
    raw: dict[str, Any]
    last_verdict_cid: str | None = None  # the verdict file of the last final round


def create_task(
    ledger: Ledger,
    store: ContentStore,
    spec: TaskSpec,
    initial: Mapping[str, np.ndarray],
    *,
    max_samples: int,
    min_updates: int = 1,
    max_updates: int = 100,
    quorum: int = 1,
    round_duration: int = 0,
    open_: bool = False,
) -> int:
    """Publish the initial model and the spec, then ``createTask``; returns the task id.

    ``max_samples`` is the largest ``numSamples`` (fedavg weight) one update may claim: about
    the largest honest contributor's data set.  Contributors state their own counts, so without
    it one update claiming billions of samples would be the whole aggregate.

    The spec is published with its architecture's pin (``model_sha256``, see
    :mod:`fedledger.learning.architecture`), computed here if it has none; a pin that does not match is
    refused, since no node would build that task's model."""
    pin = architecture.pin(spec.model, spec.model_kwargs)
    if spec.model_sha256 is None:
        spec = spec.model_copy(update={"model_sha256": pin})
    elif spec.model_sha256 != pin:
        raise ModelPinMismatch(
            f"the spec pins model architecture {spec.model_sha256}, but its model is {pin}",
            hint="leave model_sha256 out and create_task fills it in",
        )
    model = publish(store, codec.encode_model(initial, task_id=0, round=0))
    spec_pub = publish(store, spec.to_bytes())
    cfg = TaskConfig(
        model_hash=model.content_hash,
        model_cid=model.cid,
        spec_cid=spec_pub.cid,
        min_updates=min_updates,
        max_updates=max_updates,
        quorum=quorum,
        round_duration=round_duration,
        open=open_,
        max_samples=max_samples,
    )
    return ledger.create_task(cfg)


def load_task(
    ledger: Ledger, store: ContentStore, task_id: int, *, task: dict[str, Any] | None = None
) -> TaskState:
    """Read a task from chain and its spec from the store; the global model's CID from events.

    ``task``: the task's ``getTask`` answer when the caller has just read it (the validator
    does), so it is not asked for again."""
    if task is None and (task_id < 1 or task_id > ledger.task_count()):
        raise NotFoundError(
            f"task {task_id} does not exist on contract {ledger.address}",
            hint="list tasks with `fedledger history --tasks` or create one with `fedledger task create`",
        )
    t = task if task is not None else ledger.get_task(task_id)
    cfg_raw = t
    cfg = TaskConfig(
        model_hash=to_hex(cfg_raw["modelHash"]),
        model_cid=cfg_raw["modelCid"],
        spec_cid=cfg_raw["specCid"],
        min_updates=int(cfg_raw["minUpdates"]),
        max_updates=int(cfg_raw["maxUpdates"]),
        quorum=int(cfg_raw["quorum"]),
        round_duration=int(cfg_raw["roundDuration"]),
        open=bool(cfg_raw["open"]),
        max_samples=int(cfg_raw["maxSamples"]),
    )
    spec = TaskSpec.from_bytes(store.get(cfg.spec_cid))
    global_hash = to_hex(t["globalModelHash"])
    global_cid = cfg.model_cid
    last_verdict_cid = None
    if int(t["currentRound"]) > 0:
        last = ledger.last_finalized(task_id, int(t["currentRound"]) - 1)
        if last is None:
            raise NotFoundError(f"task {task_id}: no RoundFinalized event for its global model")
        last_verdict_cid = str(last["verdictCid"])
        if global_hash != cfg.model_hash:
            global_cid = str(last["aggregateCid"])
    return TaskState(
        task_id=task_id,
        owner=str(t["owner"]),
        config=cfg,
        spec=spec,
        current_round=int(t["currentRound"]),
        global_hash=global_hash,
        global_cid=global_cid,
        round_start=int(t["roundStart"]),
        update_count=int(t["updateCount"]),
        sealed=bool(t["isSealed"]),
        raw=t,
        last_verdict_cid=last_verdict_cid,
    )


def global_model(store: ContentStore, state: TaskState) -> dict[str, np.ndarray]:
    """The current global model's tensors, checked against the on-chain hash."""
    data = fetch_verified(store, state.global_cid, state.global_hash)
    return codec.decode(data, kind="model").tensors
