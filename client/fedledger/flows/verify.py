"""Re-verification from the chain and the content store alone: nobody has to trust validators.

For every final round of a task (or one round) :func:`verify_task`

* lists the round's updates from ``UpdateSubmitted`` and ``UpdatesRelayed`` events and checks
  that they chain to the record hash and count the final attestation covers, and that the
  attested result hashes to the digest the contract stores for the round;
* fetches the global model the round started from and checks it against the on-chain hash;
* recomputes every verdict and the aggregate with :func:`fedledger.protocol.rounds.judge_round` (the
  validators' own code path, which also recomputes every update's tensor root) and compares
  ``aggregateHash``, the aggregate's tensor root, the CIDs and ``verdictRoot`` with the
  attested result;
* fetches the attested aggregate and verdict files and checks them byte for byte;
* checks the spec's pinned architecture (:mod:`fedledger.learning.architecture`) against what this node
  builds, and the initial model's tensor names and shapes against it.

Availability is the one thing that depends on time: an update that the validators could not
fetch is taken as ``UNAVAILABLE`` as attested.  Every mismatch is reported with the update or
round it concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nacl.public import PrivateKey

from fedledger.chain.ledger import Ledger, to_hex
from fedledger.chain.records import record_hash
from fedledger.content.store import ContentStore
from fedledger.errors import FedledgerError, ModelNotAllowed, NotFoundError
from fedledger.flows.task import TaskState, fetch_verified, load_task, required_recipients
from fedledger.learning import architecture
from fedledger.protocol import codec, verdicts
from fedledger.protocol.rounds import UpdateRef, judge_round


@dataclass
class RoundReport:
    round: int
    updates: int = 0
    accepted: int = 0
    aggregate_ok: bool = False
    root_ok: bool = False
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Report:
    task_id: int
    rounds: list[RoundReport] = field(default_factory=list)
    model: str = ""  # what became of the architecture check (see _check_model)
    model_problems: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        rounds = [f"round {r.round}: {p}" for r in self.rounds for p in r.problems]
        return [*self.model_problems, *rounds]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "ok": self.ok,
            "problems": self.problems,
            "model": self.model,
            "rounds": [r.to_json() for r in self.rounds],
        }


def verify_task(
    ledger: Ledger,
    store: ContentStore,
    task_id: int,
    round_: int | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    allow_models: Iterable[str] = (),
    committee_key: PrivateKey | None = None,
) -> Report:
    """Re-verify the task's final rounds (or one); also check that the spec's pinned
    architecture is what this node builds and that the initial model fits it (a factory only
    if ``allow_models`` lists it: otherwise the check is reported as skipped, not failed).
    A private task's updates are read with ``committee_key`` (an auditor's or a validator's)."""
    state = load_task(ledger, store, task_id)  # also: the task exists, its spec parses
    created = next(iter(ledger.events("TaskCreated", task_id=task_id)), None)
    if created is None:
        raise NotFoundError(f"no TaskCreated event for task {task_id}")
    finals = [
        {**f, "args": ledger.finalized_args(f)}
        for f in ledger.events("RoundFinalized", task_id=task_id)
    ]
    if round_ is not None and not any(int(f["args"]["round"]) == round_ for f in finals):
        raise NotFoundError(f"round {round_} of task {task_id} is not final (yet)")
    report = Report(task_id)
    report.model, report.model_problems = _check_model(store, state, allow_models)
    prev_hash, prev_cid = state.config.model_hash, state.config.model_cid
    prev_block = int(created["blockNumber"])
    prev_verdicts: str | None = None  # the attested verdict file of the round before
    files: dict[str, verdicts.VerdictFile] = {}  # by CID: each round's file serves the next too
    todo = [f for f in finals if round_ is None or int(f["args"]["round"]) == round_]
    done = 0
    for f in finals:
        a = f["args"]
        rnd = int(a["round"])
        if round_ is None or rnd == round_:
            report.rounds.append(
                _verify_round(
                    ledger,
                    store,
                    state.spec,
                    task_id,
                    rnd,
                    a,
                    prev_hash,
                    prev_cid,
                    prev_block,
                    state.config.round_duration,
                    prev_verdicts,
                    files,
                    max_samples=state.config.max_samples,
                    committee_key=committee_key,
                )
            )
            done += 1
            if progress:
                progress(done, len(todo))
        prev_hash, prev_cid = str(a["aggregateHash"]), str(a["aggregateCid"])
        prev_block = int(f["blockNumber"])
        prev_verdicts = str(a["verdictCid"])
    return report


def _check_model(
    store: ContentStore, state: TaskState, allow: Iterable[str]
) -> tuple[str, list[str]]:
    """(what was checked, problems): the pin against what this node builds, and the initial
    model's tensor names and shapes against the architecture.  Nothing is imported unless the
    operator allowed the spec's factory."""
    try:
        admitted = architecture.admit_spec(state.spec, architecture.allow_list(allow))
    except ModelNotAllowed as exc:
        return f"not checked: {exc.message}", []
    except FedledgerError as exc:
        return "refused", [f"model: {exc}"]
    try:
        initial = fetch_verified(store, state.config.model_cid, state.config.model_hash)
        got = {k: tuple(v.shape) for k, v in codec.decode(initial, kind="model").tensors.items()}
        if isinstance(admitted, architecture.Described):
            want = architecture.tensor_shapes(admitted.description)
        else:
            from fedledger.learning.models import build_task_architecture

            built = build_task_architecture(state.spec, allow=[admitted.label])
            want = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    except FedledgerError as exc:
        return "refused", [f"model: {exc}"]
    if got != want:
        return "refused", [
            f"model: the initial model's tensors do not fit the pinned architecture "
            f"{admitted.label} ({admitted.sha256})"
        ]
    return f"ok: {admitted.label} pinned to {admitted.sha256}", []


def _verdict_file(
    store: ContentStore, cid: str, files: dict[str, verdicts.VerdictFile] | None
) -> verdicts.VerdictFile:
    """The verdict file at ``cid``, fetched and parsed once per verification."""
    if files is not None and cid in files:
        return files[cid]
    vf = verdicts.parse(store.get(cid))
    if files is not None:
        files[cid] = vf
    return vf


def _verify_round(
    ledger: Ledger,
    store: ContentStore,
    spec: Any,
    task_id: int,
    rnd: int,
    fin: dict[str, Any],
    base_hash: str,
    base_cid: str,
    start_block: int,
    duration: int,
    prev_verdicts: str | None = None,
    files: dict[str, verdicts.VerdictFile] | None = None,
    *,
    max_samples: int,
    committee_key: PrivateKey | None = None,
) -> RoundReport:
    rep = RoundReport(rnd)
    records = list(ledger.update_records(task_id, rnd))
    times = ledger.block_timestamps(r.block_number for r in records)
    refs = [
        UpdateRef(
            r.update_id,
            r.contributor,
            r.content_hash,
            r.cid,
            r.num_samples,
            times[r.block_number],
            r.tensor_root,
            r.block_number,
        )
        for r in records
    ]
    chained, count = record_hash(task_id, rnd, records)
    if (to_hex(chained), count) != (str(fin["recordHash"]).lower(), int(fin["updateCount"])):
        rep.problems.append(
            f"the round's {count} recorded updates chain to record hash {to_hex(chained)}; the "
            f"attestation covers {fin['updateCount']} hashing to {fin['recordHash']}"
        )
    if bytes(fin["digest"]) != ledger.round_digest(task_id, rnd):
        rep.problems.append("the attested result is not the digest the contract stores")
    rep.updates = len(refs)
    try:
        base = fetch_verified(store, base_cid, base_hash)
    except FedledgerError as exc:
        rep.problems.append(f"global model {base_cid} unavailable or altered: {exc}")
        return rep
    previous = None
    if prev_verdicts is not None:  # the standing this round started from
        try:
            previous = _verdict_file(store, prev_verdicts, files)
        except FedledgerError as exc:
            rep.problems.append(
                f"verdict file {prev_verdicts} of round {rnd - 1} unavailable or invalid: {exc}"
            )
            return rep
    try:
        attested = _verdict_file(store, str(fin["verdictCid"]), files)
    except FedledgerError as exc:
        rep.problems.append(f"verdict file {fin['verdictCid']} unavailable or invalid: {exc}")
        attested = None
    unavailable = (
        {e.update_id: e.reason for e in attested.entries if e.verdict.name == "UNAVAILABLE"}
        if attested
        else {}
    )
    start_ts = int(ledger.w3.eth.get_block(start_block)["timestamp"])
    deadline = start_ts + duration if duration else None
    j = judge_round(
        store,
        task_id=task_id,
        round_=rnd,
        spec=spec,
        base_model=base,
        updates=refs,
        max_samples=max_samples,  # the task's, from the chain: fedavg's weight cap
        deadline=deadline,
        unavailable=unavailable,
        previous=previous,
        base_hash=base_hash,  # fetch_verified checked it
        committee_key=committee_key,
        required_recipients=required_recipients(ledger, spec, task_id),
    )
    rep.accepted = sum(1 for e in j.verdict_file.entries if e.verdict.name == "ACCEPTED")
    rep.aggregate_ok = (
        j.aggregate_hash == str(fin["aggregateHash"])
        and j.aggregate_cid == fin["aggregateCid"]
        and j.aggregate_tensor_root == str(fin["aggregateTensorRoot"])
    )
    rep.root_ok = to_hex(j.root) == str(fin["verdictRoot"])
    # Causes first: a changed verdict is why the aggregate and the root differ.
    if attested is not None:
        mine = {e.update_id: e for e in j.verdict_file.entries}
        for e in attested.entries:
            m = mine.get(e.update_id)
            if m is None:
                rep.problems.append(f"update {e.update_id}: in the verdict file but not on chain")
            elif m.verdict != e.verdict:
                rep.problems.append(
                    f"update {e.update_id} ({e.cid}): attested {e.verdict.name}, recomputed "
                    f"{m.verdict.name} ({m.reason})"
                )
    if not rep.aggregate_ok:
        rep.problems.append(
            f"recomputed aggregate {j.aggregate_hash} (tensor root {j.aggregate_tensor_root}) "
            f"differs from the attested {fin['aggregateHash']} ({fin['aggregateTensorRoot']})"
        )
    if not rep.root_ok:
        rep.problems.append(
            f"recomputed verdict root {to_hex(j.root)} differs from the attested {fin['verdictRoot']}"
        )
    if codec.sha256_hex(j.verdict_bytes) != str(fin["verdictHash"]):
        rep.problems.append("the recomputed verdict file does not hash to the attested verdictHash")
    if j.verdict_cid != fin["verdictCid"]:
        rep.problems.append(
            f"recomputed verdict file {j.verdict_cid} differs from the attested {fin['verdictCid']}"
        )
    try:
        agg_bytes = store.get(str(fin["aggregateCid"]))
        if codec.sha256_hex(agg_bytes) != str(fin["aggregateHash"]):
            rep.problems.append(
                f"stored aggregate {fin['aggregateCid']} does not hash to aggregateHash"
            )
    except FedledgerError as exc:
        rep.problems.append(f"aggregate {fin['aggregateCid']} unavailable: {exc}")
    return rep
