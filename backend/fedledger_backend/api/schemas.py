"""The REST API's response models: the OpenAPI schema at ``/openapi.json`` is the contract.

Hashes are 0x-prefixed lowercase hex, addresses EIP-55 checksummed, block times Unix seconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

ContributionStatus = Literal[
    "PENDING",
    "ACCEPTED",
    "HASH_MISMATCH",
    "UNAVAILABLE",
    "MALFORMED",
    "SHAPE_MISMATCH",
    "NON_FINITE",
    "NORM_BOUND",
    "OUTLIER",
    "LATE",
    "DUPLICATE",
    "FREE_RIDER",
    "COPIED",
    "OUT_OF_RANGE",
    "TENSOR_ROOT_MISMATCH",
    "STALE",
    "SYBIL",
    "INCONSISTENT",
    "HARMFUL",
]
"""PENDING until the round's verdict file is indexed, then the update's verdict
(``fedledger.protocol.verdicts.Verdict`` names; a test keeps the two in step)."""

RoundStatus = Literal["open", "sealed", "finalized"]
HealthStatus = Literal["ok", "lagging", "degraded"]


class ErrorOut(BaseModel):
    """Every error that is not a request-validation failure: ``{"detail": "what went wrong"}``."""

    detail: str
    error: str | None = Field(
        default=None, description="the contract's custom error name, when it refused"
    )


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


MAX_SKIPPED_SHOWN = 20

NodeStatus = Literal["ok", "skipped"]


class SkippedTask(Model):
    task_id: int
    reason: str = Field(
        description="why this node does not build the task's model, e.g. 'model X is not "
        "allowed on this node: allow it with --allow-model X or FEDLEDGER_ALLOW_MODELS=X'"
    )


class QuarantineEntry(Model):
    stage: str = Field(description="index (an event), validate, verdicts or evaluate")
    task_id: int | None
    round: int | None
    event: str | None = Field(description="the event's name, for stage index")
    block_number: int | None
    log_index: int | None
    reason: str
    updated_at: float = Field(description="Unix seconds")


class QuarantineSummary(Model):
    quarantined: int = Field(default=0, description="items given up (events, task rounds)")
    retrying: int = Field(default=0, description="items failing, to be tried again")
    last_reason: str | None = Field(default=None, description="why the latest was quarantined")
    last: QuarantineEntry | None = None


TaskRunStatus = Literal["active", "retrying", "quarantined"]


class Health(Model):
    status: HealthStatus = Field(
        description="ok; lagging when the indexer is behind the head by more than its "
        "confirmations plus a tolerance; degraded when the chain cannot be read"
    )
    chain_id: int | None
    head_block: int | None = Field(description="the chain's latest block; null when unreadable")
    last_indexed_block: int | None = Field(description="the indexer's checkpoint")
    lag_blocks: int | None
    contract: str | None
    detail: str | None = Field(default=None, description="why the status is not ok")
    indexer: dict[str, Any] | None = Field(default=None, description="the indexer's own report")
    quarantine: QuarantineSummary = Field(
        default_factory=QuarantineSummary,
        description="events and task rounds this node could not process: each is isolated, "
        "everything else goes on (GET /tasks/{task_id} shows a task's)",
    )
    skipped_tasks: list[SkippedTask] = Field(
        default_factory=list,
        description=f"tasks whose model this node does not build, with the reason (at most "
        f"{MAX_SKIPPED_SHOWN}, lowest ids first; GET /tasks/{{task_id}} shows any one)",
    )
    skipped_tasks_count: int = Field(default=0, description="how many tasks are skipped in all")


class Task(Model):
    task_id: int
    owner: str
    model_hash: str
    model_cid: str
    spec_cid: str
    min_updates: int
    max_updates: int
    quorum: int
    round_duration: int = Field(description="seconds; 0 = no deadline")
    open: bool = Field(description="anyone may contribute")
    max_samples: int = Field(
        description="the largest numSamples (fedavg weight) one update may claim; enforced on chain"
    )
    attest_window: int = Field(
        description="seconds an attestation attempt lasts before validators may attest again"
    )
    current_round: int
    global_hash: str = Field(description="sha256 of the current global model")
    global_cid: str
    created_block: int
    created_tx: str
    created_at: int


class TaskDetail(Task):
    contributors: list[str] = Field(
        description="admitted contributors (an open task admits anyone)"
    )
    validators: list[str]
    rounds_finalized: int
    contributions: int
    status: TaskRunStatus = Field(
        default="active",
        description="active; retrying when this node failed to index, judge or evaluate "
        "something of the task and will try again; quarantined when it gave up (status_reason)",
    )
    status_reason: str | None = Field(default=None, description="why it is not active")
    node_status: NodeStatus | None = Field(
        default=None,
        description="whether this node builds the task's model (to evaluate it): ok, or "
        "skipped (see skip_reason; it still indexes and judges the task's rounds); null until "
        "checked, or when this node evaluates no models",
    )
    skip_reason: str | None = Field(
        default=None, description="why the task's model is not built here, and what allows it"
    )
    model: str | None = Field(
        default=None,
        description="the spec's model in a few words (a built-in name, a description's widths "
        "or a factory's module:factory); like dataset and aggregation_rule, the task creator's "
        "text, at most 64 characters, null while this node cannot read the spec",
    )
    dataset: str | None = Field(default=None, description="the data set the spec names")
    evaluation_data: str | None = Field(
        default=None,
        description="the data each round's accuracy and loss are measured on: the task's root / "
        "evaluation data set (root_data in its spec: name, samples, CID), or the built-in public "
        "split of the demo, which may overlap the contributors' data",
    )
    aggregation_rule: str | None = Field(
        default=None, description="the spec's rule and its parameters, e.g. trimmed_mean beta=0.2"
    )


class Round(Model):
    task_id: int
    round: int
    status: RoundStatus
    started_block: int
    started_at: int
    submitted: int
    sealed_count: int | None
    sealed_block: int | None
    aggregate_hash: str | None
    aggregate_cid: str | None
    verdict_root: str | None
    verdict_cid: str | None
    finalized_block: int | None
    finalized_tx: str | None
    accepted: int
    rejected: int
    conflicts: int = Field(description="distinct attested digests beyond the first")
    accuracy: float | None
    loss: float | None
    record_hash: str | None = Field(
        None, description="the running hash of the round's update records at its seal (28 bytes)"
    )
    sealed_at: int | None = Field(None, description="block time of the seal")
    attempt: int = Field(
        0,
        description="the attestation attempt: 0 from the seal, one more each time the task's "
        "attestation window passes without a result reaching the quorum",
    )
    digest: str | None = Field(None, description="the final result's resultDigest, on chain")
    verdict_hash: str | None = Field(None, description="sha256 of the verdict file")
    aggregate_tensor_root: str | None = Field(
        None, description="tensor root of the aggregate (fixed-point tasks; zero for float)"
    )


class Attestation(Model):
    validator: str
    digest: str
    attempt: int = Field(description="the attempt it was made in")
    verdict_root: str
    aggregate_hash: str
    aggregate_cid: str
    verdict_cid: str
    block_number: int
    tx_hash: str
    agrees: bool | None = Field(
        description="whether it attested the finalised result; null while the round is not final"
    )


class DigestCount(Model):
    digest: str
    attestations: int


class RoundDetail(Round):
    counts: dict[str, int] = Field(description="contributions per status (verdict or PENDING)")
    metrics: dict[str, Any] | None
    attestations: list[Attestation]
    digests: list[DigestCount] = Field(description="attested digests, most attested first")


class Contribution(Model):
    update_id: int
    task_id: int
    round: int
    contributor: str
    content_hash: str
    cid: str
    num_samples: int
    tensor_root: str = Field(description="the tensor root recorded with it (zero for float tasks)")
    tx_hash: str
    block_number: int
    block_hash: str
    log_index: int
    submitted_at: int
    status: ContributionStatus
    reason: str | None
    score: float | None
    dp_epsilon: float | None = Field(
        description="cumulative differential-privacy epsilon (at the task's delta) of the "
        "contributor's updates to a DP task so far, by Opacus' RDP accountant; null for a "
        "task without DP"
    )


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="opaque; pass as `cursor` for the next page; null when there is none now"
    )


class Proof(Model):
    update_id: int
    task_id: int
    round: int
    contributor: str
    content_hash: str
    verdict: ContributionStatus
    verdict_code: int
    leaf: str = Field(description="OpenZeppelin double-hashed leaf")
    proof: list[str] = Field(description="sibling hashes, leaf to root")
    root: str = Field(description="the verdict root the round was finalised with")
    verdict_cid: str
    result: dict[str, Any] | None = Field(
        None,
        description="the round's attested RoundResult as the contract takes it (recordHash, "
        "updateCount, verdictRoot, verdictHash, verdictCidDigest, aggregateHash, "
        "aggregateCidDigest, aggregateTensorRoot): verifyVerdict(taskId, round, result, leaf, "
        "proof) checks the proof on chain",
    )


class TensorProof(Model):
    """A Merkle proof of one fixed-point coordinate of an update against its tensorRoot
    (docs/tensor_commitments.md); ``TensorRoot.verifyCoordinate`` checks it on chain."""

    update_id: int
    index: int = Field(description="the coordinate's flat index in the task's tensor order")
    tensor: str = Field(description="the tensor it belongs to, and its element")
    value: int = Field(description="the int32 coordinate")
    dimension: int
    leaf_index: int
    leaf: str = Field(description="the 4,116-byte leaf, 0x hex")
    proof: list[str] = Field(description="sibling hashes, leaf to root")
    root: str = Field(description="the tensorRoot the chain recorded with the update")


class TaskShare(Model):
    task_id: int
    roles: list[str] = Field(description="roles the address was admitted with")
    contributions: int
    accepted: int


class Reputation(Model):
    acceptance: float = Field(
        description="smoothed acceptance rate (accepted + 1) / (judged + 2): 0.5 with no history"
    )
    mean_score: float | None = Field(description="mean verdict score over judged updates")
    judged: int = Field(description="updates that received a verdict")


class Contributor(Model):
    address: str
    contributions: int
    totals: dict[str, int] = Field(description="contributions per status")
    tasks: list[TaskShare]
    reputation: Reputation


# -- relay (POST /relay/updates) ----------------------------------------------------------------

Uint64 = Annotated[int, Field(strict=True, ge=0, lt=2**64)]
Uint256 = Annotated[int, Field(strict=True, ge=0, lt=2**256)]


class SignedUpdateIn(BaseModel):
    """``fedledger.chain.ledger.SignedUpdate.to_json()``: an update signed by its contributor (EIP-712)."""

    model_config = ConfigDict(extra="forbid")

    taskId: Annotated[int, Field(strict=True, ge=1, lt=2**256)]
    round: Uint64
    contentHash: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="sha256 of the content")
    cid: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9]+$")
    numSamples: Uint64
    contributor: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    deadline: Uint64 = Field(description="Unix seconds; the signature is void after it")
    signature: str = Field(
        pattern=r"^0x([0-9a-fA-F]{2}){0,128}$",
        description="65-byte r ‖ s ‖ v, or 64-byte EIP-2098 r ‖ vs, 0x hex",
    )
    tensorRoot: str = Field(
        default="0x" + "00" * 32,
        pattern=r"^0x[0-9a-fA-F]{64}$",
        description="the update's tensor root (fixed-point tasks; zero for a float task)",
    )


class RelayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signed: SignedUpdateIn
    content: str = Field(description="the update file's bytes, standard base64")


class RelayAccepted(BaseModel):
    queued: bool
    contributor: str
    taskId: int
    round: int
    cid: str


class RelayStatusOut(BaseModel):
    contributor: str
    taskId: int
    round: int
    cid: str
    state: Literal["queued", "submitted", "failed"]
    updateId: int | None = Field(description="set once submitted")
    txHash: str | None = Field(description="the submitBatch transaction, once submitted")
    reason: str | None = Field(description="why it failed")
    error: str | None = Field(description="the contract's error name, when it reverted")
