"""The watcher: re-verify every attested round of a court task and prove a wrong aggregate on chain.

For each round the court holds as *attested* and still inside its window, :func:`check_round`

* reads the attested ``RoundResult`` and verdict file, and the round's update records from the
  chain's events (their record hash must be the attested one);
* fetches every accepted update and turns it into the task's int32 vector;
* recomputes the court's rule on them exactly as the contract will: the verdicts and clip
  multipliers as the verdict leaves commit them, fedavg's weights capped by the court's
  ``weightCap`` (:func:`expected_aggregate`), and compares its tensor root with the attested
  ``aggregateTensorRoot``.

When they differ, :func:`prove` finds a coordinate where the attested aggregate (published by the
attesters, ``metrics.aggregateDelta`` of the verdict file: a big-endian int32 vector) is wrong,
opens a challenge with the challenger key's bond, stages every record with its proofs
(transactions of at most 120 KB), and resolves it: the round and every round built on it are
voided and the attesters' bonds slashed.  Verdicts themselves (screening, krum) are re-checked
by ``fedledger verify``, off chain: docs/verification.md says what rests on the quorum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedledger.chain.court import UNCLIPPED, Court, ProofInput, RoundStatus, Rule
from fedledger.chain.ledger import Ledger, to_hex
from fedledger.chain.records import RoundResult, UpdateRecord, record_hash
from fedledger.content.store import ContentStore
from fedledger.errors import FedledgerError, IntegrityError, NotFoundError
from fedledger.flows.task import fetch_verified, load_task
from fedledger.protocol import codec, exact_rules, fixed_deltas, merkle, verdicts
from fedledger.protocol.aggregation import TensorLayout
from fedledger.protocol.tensor_root import TensorTree, tensor_root

DELTA_KEY = "aggregateDelta"
"""The verdict file's ``metrics`` key naming the CID of the attested int32 aggregate delta."""


@dataclass
class Finding:
    """What the watcher found for one attested round."""

    task_id: int
    round: int
    status: str  # "ok", "overturned", "upheld", "unprovable"
    detail: str = ""
    challenge_id: int | None = None
    gas: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class RoundInputs:
    """Everything a challenge of one round needs, read and checked once."""

    result: RoundResult
    records: list[UpdateRecord]
    verdict_file: verdicts.VerdictFile
    vectors: dict[int, npt.NDArray[np.int32]]  # accepted updates' int32 vectors, by updateId


def delta_bytes(vector: npt.ArrayLike) -> bytes:
    """The published form of an int32 aggregate delta: big-endian int32s, nothing else."""
    return np.asarray(vector, dtype=">i4").tobytes()


def read_delta(data: bytes) -> npt.NDArray[np.int32]:
    if len(data) % 4:
        raise IntegrityError(f"an int32 delta is a multiple of 4 bytes, got {len(data)}")
    return np.frombuffer(data, dtype=">i4").astype(np.int32)


def expected_aggregate(
    terms: dict[str, Any],
    vectors: Sequence[npt.NDArray[np.int32]],
    num_samples: Sequence[int],
    clips: Sequence[int],
) -> npt.NDArray[np.int32]:
    """The court's rule over the accepted updates (in updateId order), each scaled by its
    committed clip multiplier: what ``Court.resolve`` computes, for every coordinate."""
    if not vectors:
        raise NotFoundError("no accepted update: the court's value is 0 everywhere")
    clipped = [
        v if c == UNCLIPPED else exact_rules.scale_toward_zero(v, c)
        for v, c in zip(vectors, clips, strict=True)
    ]
    rule = Rule(int(terms["rule"]))
    cap = int(terms["weightCap"]) or None
    if rule is Rule.FEDAVG:
        spec = exact_rules.ExactRule("fedavg", weight_cap=cap)
    elif rule is Rule.MEDIAN:
        spec = exact_rules.ExactRule("median")
    elif rule is Rule.TRIMMED_MEAN:
        from fractions import Fraction

        spec = exact_rules.ExactRule(
            "trimmed_mean", beta=Fraction(int(terms["betaNum"]), int(terms["betaDen"]))
        )
    else:
        raise NotFoundError("the task's court proves no rule")
    return exact_rules.aggregate_exact(spec, clipped, list(num_samples))


def load_round(
    ledger: Ledger, court: Court, store: ContentStore, task_id: int, round_: int
) -> RoundInputs:
    """The attested result, records, verdict file and accepted vectors of an attested round."""
    digest = bytes(court.round_record(task_id, round_)["digest"])
    result = ledger.proposed_result(task_id, round_, digest)
    if result is None:
        raise NotFoundError(f"task {task_id} round {round_}: no ResultProposed for its digest")
    records = list(ledger.update_records(task_id, round_))
    chained, count = record_hash(task_id, round_, records)
    if (to_hex(chained), count) != (result.record_hash.lower(), result.update_count):
        raise IntegrityError(f"round {round_}: the recorded updates are not the sealed ones")
    vf = verdicts.parse(fetch_verified(store, result.verdict_cid, result.verdict_hash))
    state = load_task(ledger, store, task_id)
    model = codec.decode(
        fetch_verified(store, state.config.model_cid, state.config.model_hash), kind="model"
    )
    layout = TensorLayout.of(model.tensors)
    vectors: dict[int, npt.NDArray[np.int32]] = {}
    for e in vf.entries:
        if e.verdict is not verdicts.Verdict.ACCEPTED:
            continue
        dec = codec.decode(store.get(e.cid), kind="update")
        vec = fixed_deltas.flatten_fixed(dec.tensors, layout)
        if vec is None:
            raise IntegrityError(f"accepted update {e.update_id} is not an int32 vector")
        vectors[e.update_id] = vec
    return RoundInputs(result, records, vf, vectors)


def proof_inputs(
    task_id: int, inputs: RoundInputs, coordinate: int
) -> tuple[list[ProofInput], bytes]:
    """The stage inputs of every record (in record order) and resolve's packed values."""
    vf = inputs.verdict_file
    leaves = vf.leaves()
    index = {e.update_id: i for i, e in enumerate(vf.entries)}
    out: list[ProofInput] = []
    values = b""
    for r in inputs.records:
        e = vf.entries[index[r.update_id]]
        leaf, leaf_proof = b"", []
        if e.verdict is verdicts.Verdict.ACCEPTED:
            p = TensorTree(inputs.vectors[r.update_id]).proof(coordinate)
            leaf, leaf_proof = p.leaf, list(p.proof)
            q = int(inputs.vectors[r.update_id][coordinate])
            v = (
                int(exact_rules.scale_toward_zero(np.array([q], np.int32), e.clip)[0])
                if (e.clip is not None)
                else q
            )
            values += v.to_bytes(8, "big", signed=True)
        out.append(
            ProofInput(
                contributor=r.contributor,
                content_hash=r.content_hash,
                cid_digest=r.cid_digest,
                tensor_root=r.tensor_root,
                num_samples=r.num_samples,
                verdict=int(e.verdict),
                clip=e.clip_multiplier,
                reward=e.reward,
                verdict_proof=merkle.proof(leaves, index[r.update_id]),
                leaf=leaf,
                leaf_proof=leaf_proof,
            )
        )
    return out, values


def check_round(
    ledger: Ledger, court: Court, store: ContentStore, task_id: int, round_: int
) -> tuple[RoundInputs, npt.NDArray[np.int32] | None]:
    """Re-verify an attested round: its inputs and, when the attested aggregate tensor root is
    not the court's rule over them, the expected aggregate (None when it is right)."""
    inputs = load_round(ledger, court, store, task_id, round_)
    accepted = [e for e in inputs.verdict_file.entries if e.verdict is verdicts.Verdict.ACCEPTED]
    if not accepted:
        return inputs, None
    expected = expected_aggregate(
        court.terms(task_id),
        [inputs.vectors[e.update_id] for e in accepted],
        [e.num_samples for e in accepted],
        [e.clip_multiplier for e in accepted],
    )
    if to_hex(tensor_root(expected)) == inputs.result.aggregate_tensor_root.lower():
        return inputs, None
    return inputs, expected


def prove(
    court: Court,
    store: ContentStore,
    task_id: int,
    round_: int,
    inputs: RoundInputs,
    expected: npt.NDArray[np.int32],
) -> Finding:
    """Challenge the first coordinate where the published attested aggregate is wrong."""
    cid = (inputs.verdict_file.metrics or {}).get(DELTA_KEY)
    if not isinstance(cid, str):
        return Finding(
            task_id, round_, "unprovable", "the attested aggregate delta is not published"
        )
    try:
        attested = read_delta(store.get(cid))
    except FedledgerError as exc:
        return Finding(task_id, round_, "unprovable", f"attested delta {cid}: {exc}")
    if to_hex(tensor_root(attested)) != inputs.result.aggregate_tensor_root.lower():
        return Finding(task_id, round_, "unprovable", "the published delta is not the attested one")
    wrong = np.flatnonzero(attested != expected)
    j = int(wrong[0])
    p = TensorTree(attested).proof(j)
    challenge_id, receipt = court.challenge(task_id, round_, inputs.result, j, p.leaf, p.proof)
    gas = [int(receipt["gasUsed"])]
    stage_inputs, values = proof_inputs(task_id, inputs, j)
    gas += [int(r["gasUsed"]) for r in court.stage(challenge_id, stage_inputs)]
    rule = Rule(int(court.terms(task_id)["rule"]))
    overturned, receipt = court.resolve(challenge_id, b"" if rule is Rule.FEDAVG else values)
    gas.append(int(receipt["gasUsed"]))
    return Finding(
        task_id,
        round_,
        "overturned" if overturned else "upheld",
        f"coordinate {j}: attested {int(attested[j])}, the rule gives {int(expected[j])}",
        challenge_id,
        gas,
    )


def watch_once(
    ledger: Ledger,
    court: Court,
    store: ContentStore,
    task_id: int,
    *,
    seen: set[int] | None = None,
) -> list[Finding]:
    """Check every attested round of the task still inside its window (once each with ``seen``)."""
    findings = []
    now = int(ledger.w3.eth.get_block("latest")["timestamp"])
    for ev in court.pending_rounds(task_id, ledger.from_block):
        rnd = ev["round"]
        if seen is not None and rnd in seen:
            continue
        status, ends = court.round_status(task_id, rnd)
        if status is not RoundStatus.ATTESTED or now >= ends:
            continue
        if seen is not None:
            seen.add(rnd)
        try:
            inputs, expected = check_round(ledger, court, store, task_id, rnd)
        except FedledgerError as exc:
            findings.append(Finding(task_id, rnd, "unprovable", str(exc)))
            continue
        if expected is None:
            findings.append(Finding(task_id, rnd, "ok"))
        else:
            findings.append(prove(court, store, task_id, rnd, inputs, expected))
    return findings


def watch(
    ledger: Ledger,
    court: Court,
    store: ContentStore,
    task_id: int,
    *,
    poll_s: float = 2.0,
    until: Callable[[], bool] | None = None,
    report: Callable[[Finding], None] | None = None,
) -> None:
    """Poll for attested rounds and prove every wrong one, until ``until()`` is true."""
    seen: set[int] = set()
    while until is None or not until():
        for f in watch_once(ledger, court, store, task_id, seen=seen):
            if report is not None:
                report(f)
        time.sleep(poll_s)
