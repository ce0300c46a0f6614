"""Tasks from the owner's and the contributor's side: publish the initial model and the spec,
check and create the task on chain, load a task's current state (config, spec, global model),
summarise tasks for ``fedledger task list | show``, fetch the global model of any round, and
wait for a round to open.

The CLI, the backend, the demo and the tests all go through these functions.

A task is checked before it goes on chain (:func:`check_spec`): its rule and screening
parameters parse, its data set is one fedledger knows, and, given the model, the model takes
that data set's samples and has an output per class; a task nobody can train or evaluate is
refused at ``task create``, not found out by its contributors.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedledger.chain.ledger import DEFAULT_ATTEST_WINDOW, Ledger, TaskConfig, to_hex
from fedledger.content.store import ContentStore
from fedledger.errors import (
    ConfigError,
    ContractRevert,
    FedledgerError,
    IntegrityError,
    ModelPinMismatch,
    NotFoundError,
)
from fedledger.learning import architecture
from fedledger.protocol import codec, committee
from fedledger.protocol.taskspec import TaskSpec

if TYPE_CHECKING:
    from torch import nn

MAX_SPEC_BYTES = 1 << 20  # a spec is ~1 KiB; TaskSpec.from_bytes reads no more


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


def fetch_verified(
    store: ContentStore, cid: str, content_hash: str, *, max_bytes: int | None = None
) -> bytes:
    """Bytes for ``cid`` whose sha256 must equal ``content_hash`` (else IntegrityError);
    ``max_bytes`` bounds what is read."""
    data, got = store.get_hashed(cid, max_bytes=max_bytes, expect=content_hash)
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
    committee: tuple[bytes, ...] = ()
    """A private task's readers now: the X25519 keys its current validators registered on
    chain, then the spec's auditors (empty for a public task)."""


def committee_keys(ledger: Ledger, task_id: int) -> dict[str, bytes]:
    """The encryption key each current validator of ``task_id`` registered last
    (``EncryptionKeySet``, read in bounded chunks), by validator address.  A key set by an
    address that is no validator now is left out."""
    keys: dict[str, bytes] = {}
    for ev in ledger.events("EncryptionKeySet", task_id=task_id):
        keys[str(ev["args"]["validator"])] = bytes(ev["args"]["publicKey"])
    return {who: key for who, key in keys.items() if ledger.is_validator(task_id, who)}


def required_recipients(
    ledger: Ledger, spec: TaskSpec, task_id: int
) -> tuple[tuple[int, frozenset[bytes]], ...]:
    """Whom a private task's envelopes must name, as
    :func:`fedledger.protocol.rounds.judge_round` checks it: for each validator, ``(the block
    that registered its first encryption key, every usable key it registered)`` (an update
    recorded in a later block must be sealed to one of them); for each auditor of the spec,
    ``(0, {its key})``.  Every judge reads the same events, so every judge draws the same
    line; a member who registered in the update's block or later is not required, reads the
    update only if its contributor sealed to it, and abstains otherwise."""
    policy = spec.privacy_policy()
    if not policy.committee:
        return ()
    first: dict[str, int] = {}
    keys: dict[str, set[bytes]] = {}
    for e in ledger.events("EncryptionKeySet", task_id=task_id):
        who, key = str(e["args"]["validator"]), bytes(e["args"]["publicKey"])
        first.setdefault(who, int(e["blockNumber"]))
        if committee.is_usable_key(key):
            keys.setdefault(who, set()).add(key)
    out = [(first[who], frozenset(keys[who])) for who in sorted(keys)]
    out += [(0, frozenset({k})) for k in policy.auditor_keys()]
    return tuple(out)


def task_committee(ledger: Ledger, spec: TaskSpec, task_id: int) -> tuple[bytes, ...]:
    """Who a private task's updates are sealed to (see :attr:`TaskState.committee`)."""
    policy = spec.privacy_policy()
    if not policy.committee:
        return ()
    found = sorted(set(committee_keys(ledger, task_id).values()) | set(policy.auditor_keys()))
    return tuple(k for k in found if committee.is_usable_key(k))


def check_spec(spec: TaskSpec, model: nn.Module | None = None) -> None:
    """Refuse a spec no contributor could train or no validator could run, before it is
    published (:class:`ConfigError` naming the field and what to use instead).

    The aggregation rule, the screening parameters and the fixed-point format (if any) must
    parse, and the rule must exist in that format's integers; the data set must be one
    fedledger ships (:data:`fedledger.learning.data.DATASETS`: the one ``--partition`` splits
    and validators score each global model on).  With ``model`` (the task's model, built), two
    of the data set's samples go through it: it must take them and have an output per class.
    """
    from fedledger.learning.data import DATASETS, load_dataset
    from fedledger.protocol.aggregation import RuleSpec
    from fedledger.protocol.screening import ScreeningSpec

    rule = RuleSpec.parse(spec.aggregation)
    ScreeningSpec.parse(spec.screening)
    spec.privacy_policy()
    fmt = spec.fixed_point_format()
    if fmt is not None:  # the rule's integer parameters must exist in the format (clip_norm)
        from fedledger.protocol.exact_rules import ExactRule

        ExactRule.from_rule_spec(rule, fmt)
    if spec.dataset not in DATASETS:
        close = difflib.get_close_matches(spec.dataset, DATASETS, n=1, cutoff=0.5)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown data set {spec.dataset!r}{maybe}",
            hint=f"choose one of: {', '.join(DATASETS)} (--dataset): the data set validators "
            "score each global model on",
        )
    if model is None:
        return
    import torch

    ds = load_dataset(spec.dataset, seed=spec.seed)
    sample = torch.from_numpy(ds.X_test[:2])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(sample)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"the model does not take data set {spec.dataset!r}: its samples have "
            f"{ds.n_features} features (torch: {first})",
            hint=f"give the model {ds.n_features} inputs, or pick the data set it was made for",
        ) from exc
    finally:
        model.train(was_training)
    if out.ndim == 2 and out.shape[1] < ds.n_classes:
        raise ConfigError(
            f"the model has {out.shape[1]} outputs, but data set {spec.dataset!r} has "
            f"{ds.n_classes} classes",
            hint=f"give the model {ds.n_classes} outputs, or pick the data set it was made for",
        )


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
    model: nn.Module | None = None,
    attest_window: int = DEFAULT_ATTEST_WINDOW,
) -> int:
    """Publish the initial model and the spec, then ``createTask``; returns the task id.

    ``max_samples`` is the largest ``numSamples`` (fedavg weight) one update may claim: about
    the largest honest contributor's data set.  Contributors state their own counts, so without
    it one update claiming billions of samples would be the whole aggregate.

    The spec is published with its architecture's pin (``model_sha256``, see
    :mod:`fedledger.learning.architecture`), computed here if it has none; a pin that does not match is
    refused, since no node would build that task's model.

    The spec is checked first (:func:`check_spec`; with ``model``, the built model, also
    against its data set): nothing is stored or sent for a task nobody could train."""
    check_spec(spec, model)
    pin = architecture.pin(spec.model, spec.model_kwargs)
    if spec.model_sha256 is None:
        spec = spec.model_copy(update={"model_sha256": pin})
    elif spec.model_sha256 != pin:
        raise ModelPinMismatch(
            f"the spec pins model architecture {spec.model_sha256}, but its model is {pin}",
            hint="leave model_sha256 out and create_task fills it in",
        )
    model_pub = publish(store, codec.encode_model(initial, task_id=0, round=0))
    spec_pub = publish(store, spec.to_bytes())
    cfg = TaskConfig(
        model_hash=model_pub.content_hash,
        model_cid=model_pub.cid,
        spec_cid=spec_pub.cid,
        min_updates=min_updates,
        max_updates=max_updates,
        quorum=quorum,
        round_duration=round_duration,
        open=open_,
        max_samples=max_samples,
        attest_window=attest_window,
    )
    return ledger.create_task(cfg)


def load_task(
    ledger: Ledger, store: ContentStore, task_id: int, *, task: dict[str, Any] | None = None
) -> TaskState:
    """Read a task from chain and its spec from the store; the global model's CID from events.

    ``task``: the task's ``getTask`` answer when the caller has just read it (the validator
    does), so it is not asked for again."""
    t = task if task is not None else _get_task(ledger, task_id)
    cfg = _config(t)
    spec = read_spec(store, cfg.spec_cid)
    global_hash = cfg.model_hash
    global_cid = cfg.model_cid
    last_verdict_cid = None
    resumed = int(t["currentRound"]) > 0 and ledger.last_finalized(
        task_id, int(t["currentRound"]) - 1
    )
    if int(t["currentRound"]) > 0 and not resumed and not any(bytes(t["lastFinalDigest"])):
        pass  # a court voided every round so far (RoundsVoided): the initial model again
    elif int(t["currentRound"]) > 0:
        # the last final round, or the one a court resumed from after voiding rounds
        last = resumed or ledger.result_by_digest(task_id, bytes(t["lastFinalDigest"]))
        if last is None:
            raise NotFoundError(f"task {task_id}: no RoundFinalized event for its global model")
        if last["digest"] != bytes(t["lastFinalDigest"]):
            raise IntegrityError(
                f"task {task_id}: the RoundFinalized event's digest is not the one the "
                "contract stores for its last final round",
                hint="the RPC endpoint answers inconsistently; use another endpoint",
            )
        last_verdict_cid = str(last["verdictCid"])
        global_hash = str(last["aggregateHash"])
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
        committee=task_committee(ledger, spec, task_id),
    )


def _get_task(ledger: Ledger, task_id: int) -> dict[str, Any]:
    if task_id < 1 or task_id > ledger.task_count():
        raise NotFoundError(
            f"task {task_id} does not exist on contract {ledger.address}",
            hint="list tasks with `fedledger task list` or create one with `fedledger task create`",
        )
    return ledger.get_task(task_id)


def _config(t: Mapping[str, Any]) -> TaskConfig:
    return TaskConfig(
        model_hash=to_hex(t["modelHash"]),
        model_cid=str(t["modelCid"]),
        spec_cid=str(t["specCid"]),
        min_updates=int(t["minUpdates"]),
        max_updates=int(t["maxUpdates"]),
        quorum=int(t["quorum"]),
        round_duration=int(t["roundDuration"]),
        open=bool(t["open"]),
        max_samples=int(t["maxSamples"]),
        attest_window=int(t["attestWindow"]),
    )


def read_spec(store: ContentStore, spec_cid: str) -> TaskSpec:
    """The task spec behind ``spec_cid``, read within :data:`MAX_SPEC_BYTES` and validated."""
    return TaskSpec.from_bytes(store.get(spec_cid, max_bytes=MAX_SPEC_BYTES))


def global_model(store: ContentStore, state: TaskState) -> dict[str, np.ndarray]:
    """The current global model's tensors, checked against the on-chain hash."""
    data = fetch_verified(store, state.global_cid, state.global_hash)
    return codec.decode(data, kind="model").tensors


# -- reading tasks: `fedledger task list | show` -------------------------------------------


@dataclass(frozen=True)
class TaskSummary:
    """A task as the chain holds it now, with its spec summarised (for ``task list | show``).

    ``spec`` is ``None`` when this node cannot read the spec (not in its store, or invalid);
    ``spec_error`` then says why, and the chain's fields are still shown."""

    task_id: int
    owner: str
    config: TaskConfig
    current_round: int
    updates_in_round: int
    sealed: bool
    round_start: int
    spec: TaskSpec | None
    spec_error: str | None = None

    @property
    def model(self) -> str | None:
        return None if self.spec is None else model_label(self.spec)

    @property
    def dataset(self) -> str | None:
        return None if self.spec is None else self.spec.dataset

    @property
    def rule(self) -> str | None:
        return None if self.spec is None else str(self.spec.aggregation.get("rule", "fedavg"))

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "task_id": self.task_id,
            "owner": self.owner,
            "model": self.model,
            "dataset": self.dataset,
            "rule": self.rule,
            "current_round": self.current_round,
            "updates_in_round": self.updates_in_round,
            "sealed": self.sealed,
            "round_start": self.round_start,
            "min_updates": c.min_updates,
            "max_updates": c.max_updates,
            "quorum": c.quorum,
            "round_duration": c.round_duration,
            "open": c.open,
            "max_samples": c.max_samples,
            "model_hash": c.model_hash,
            "model_cid": c.model_cid,
            "spec_cid": c.spec_cid,
            "spec_error": self.spec_error,
        }


def model_label(spec: TaskSpec) -> str:
    """A task's model in a few words, read as data (nothing is imported): a built-in name, a
    description's layer widths (``mlp 30-16-2``), or a factory's ``module:factory``."""
    try:
        what = architecture.describe(spec.model, spec.model_kwargs)
    except FedledgerError as exc:
        return f"invalid model ({exc.message})"
    if isinstance(what, architecture.FactoryRef):
        return what.ref
    desc = what.description
    n = architecture.parameter_count(desc)
    if isinstance(desc, architecture.MLPDescription):
        widths = "-".join(str(w) for w in (desc.in_features, *desc.hidden, desc.out_features))
        shape = f"mlp {widths}"
    else:
        shape = f"sequential, {len(desc.layers)} layers"
    named = "" if what.name == "description" else f"{what.name}: "
    return f"{named}{shape} ({n:,} parameters)"


def task_summary(
    ledger: Ledger, store: ContentStore, task_id: int, *, task: dict[str, Any] | None = None
) -> TaskSummary:
    """One task's :class:`TaskSummary` (``NotFoundError`` for an id the contract has not
    given out)."""
    t = task if task is not None else _get_task(ledger, task_id)
    cfg = _config(t)
    spec: TaskSpec | None = None
    spec_error = None
    try:
        spec = read_spec(store, cfg.spec_cid)
    except FedledgerError as exc:  # the chain's facts stand without it
        spec_error = exc.message
    return TaskSummary(
        task_id=task_id,
        owner=str(t["owner"]),
        config=cfg,
        current_round=int(t["currentRound"]),
        updates_in_round=int(t["updateCount"]),
        sealed=bool(t["isSealed"]),
        round_start=int(t["roundStart"]),
        spec=spec,
        spec_error=spec_error,
    )


def list_tasks(
    ledger: Ledger, store: ContentStore, *, limit: int | None = None
) -> Iterator[TaskSummary]:
    """Every task on the contract, newest first (at most ``limit``), one at a time."""
    count = ledger.task_count()
    last = 0 if limit is None else max(count - limit, 0)
    for task_id in range(count, last, -1):
        yield task_summary(ledger, store, task_id)


# -- the global model of a round -------------------------------------------------------------


@dataclass(frozen=True)
class RoundModel:
    """The global model a round trains from: the file's bytes as the chain committed them."""

    task_id: int
    round: int
    content_hash: str
    cid: str
    data: bytes


def model_for_round(
    ledger: Ledger, store: ContentStore, task_id: int, round_: int | None = None
) -> RoundModel:
    """The global model round ``round_`` (default: the current one) trains from: the initial
    model for round 0, else the aggregate attested for round ``round_ - 1``.  Its bytes are
    checked against the hash on chain and must decode as a model file."""
    t = _get_task(ledger, task_id)
    cfg = _config(t)
    current = int(t["currentRound"])
    rnd = current if round_ is None else round_
    if rnd < 0:
        raise ConfigError(f"round must be 0 or more, got {rnd}")
    if rnd > current:
        raise NotFoundError(
            f"task {task_id} has no global model for round {rnd} yet: it is in round {current}",
            hint=f"round {rnd}'s model is the aggregate of round {rnd - 1}, attested when that "
            f"round is final; pull round {current} (or omit --round)",
        )
    if rnd == 0:
        content_hash, cid = cfg.model_hash, cfg.model_cid
    else:
        fin = ledger.last_finalized(task_id, rnd - 1)
        if fin is None:
            raise NotFoundError(f"task {task_id}: no RoundFinalized event for round {rnd - 1}")
        content_hash, cid = str(fin["aggregateHash"]), str(fin["aggregateCid"])
        if content_hash == cfg.model_hash:  # nothing accepted yet: still the initial model
            cid = cfg.model_cid
    data = fetch_verified(store, cid, content_hash, max_bytes=codec.DEFAULT_MAX_BYTES)
    codec.decode(data, kind="model", copy=False)  # FormatError if it is not a model file
    return RoundModel(task_id, rnd, content_hash, cid, data)


# -- waiting for a round ------------------------------------------------------------------------

VALIDATORS_HINT = (
    "are the task's validators running (`fedledger serve --key VALIDATOR`) and admitted "
    "(`fedledger task add-validator`)? `fedledger task show ID` shows the round"
)


def wait_for_round(
    ledger: Ledger,
    task_id: int,
    round_: int,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 1.0,
    tick: Callable[[int], None] | None = None,
) -> int:
    """Block until task ``task_id`` reaches round ``round_`` (every round before it final);
    returns the round it is in.  At ``timeout_s`` a :class:`FedledgerError` names the round it
    is stuck in, what that round holds, and that its validators may be down.  ``tick`` is
    called with the current round after each poll."""
    deadline = time.monotonic() + timeout_s
    while (now := ledger.current_round(task_id)) < round_:
        if tick is not None:
            tick(now)
        if time.monotonic() >= deadline:
            t = ledger.get_task(task_id)
            count, least = int(t["updateCount"]), int(t["minUpdates"])
            state = "sealed" if bool(t["isSealed"]) else "open"
            raise FedledgerError(
                f"task {task_id} is still in round {now} after {timeout_s:g}s of waiting for "
                f"round {round_}: round {now} is {state} with {count} update(s) (it closes at "
                f"{least}); validators may be down",
                hint=VALIDATORS_HINT,
            )
        time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))
    return now


# -- reverts a contributor meets -------------------------------------------------------------


REVERT_HINTS = {
    "RoundFull": "the round is full: wait for its validators to attest it, then train "
    "the next round (`fedledger train --rounds N` waits); " + VALIDATORS_HINT,
    "RoundAlreadySealed": "the round is closed to new updates while validators judge it: "
    "wait for the next round (`fedledger train --rounds N` waits)",
    "WrongRound": "the task moved on to another round: train again against its current "
    "global model",
    "DuplicateSubmission": "one update per contributor per round: wait for the next round",
}
"""What to do about the reverts a submission meets when the round moved on or filled up."""


def explain_revert(exc: ContractRevert) -> ContractRevert:
    """``exc`` with a hint that says what to do, for the reverts a submission meets when
    the round moved on or filled up (the revert itself names the facts)."""
    hint = REVERT_HINTS.get(exc.name)
    if hint is None or exc.hint is not None:
        return exc
    exc.hint = hint
    exc.args = (f"{exc.message} ({hint})",)
    return exc
