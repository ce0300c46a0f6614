"""The round verdict file: the one place that defines its JSON format, bytes and Merkle leaves.

A validator publishes one verdict file per round on IPFS and attests its CID and the Merkle root
of its entries (SPEC "Verdicts", docs/interfaces.md "Verdicts and the Merkle tree").  Validators
must produce *identical bytes* for quorum, so the encoding is canonical:

* JSON with sorted keys, compact separators (``,`` and ``:``), ASCII only, no trailing newline;
* entries sorted by ``updateId`` (unique);
* hashes ``0x`` + 64 lowercase hex; addresses ``0x`` + 40 lowercase hex (case carries no meaning,
  and EIP-55 checksums would make the same address two different strings);
* floats (``score``, metrics) are first rounded to 9 significant digits -- ``float(f"{x:.9g}")``
  -- and then written with Python's ``repr`` (the shortest string that reads back as the same
  double, identical on every IEEE-754 machine).  The rounding absorbs last-bit noise from
  anything outside our control (e.g. accuracy computed by torch); NaN and Inf are not allowed;
* ``verdict`` is written as its name (``"ACCEPTED"``); the leaf uses its uint8 code.

Codes are appended, never renumbered (:class:`Verdict`).  12 ``OUT_OF_RANGE`` is a fixed-point
task's: a float upload whose quantization leaves int32 (an ``int32`` upload with another
``frac_bits`` than the task's is ``MALFORMED``, a claim of the file that does not fit the task).

Document shape (``format`` = :data:`FORMAT`)::

    {"format", "taskId", "round", "rule", "baseModelHash", "aggregateHash", "aggregateCid",
     "entries": [{"updateId", "contributor", "contentHash", "cid", "numSamples", "verdict",
                  "reason", "score"}], "metrics"?, "standing"?, "normHistory"?}

``standing`` maps each contributor seen so far in the task (lowercase address) to its running
agreement with the round's consensus (:mod:`fedledger.protocol.screening`, "standing"): the screen of round
``r + 1`` starts from round ``r``'s attested file, so the task's history is carried from file to
file and every re-verifier recomputes it.  ``normHistory`` is carried the same way: the median
norm of the accepted updates of each of the task's last rounds (oldest first, positive), which
bounds the norms of the next round however few updates it has (:mod:`fedledger.protocol.screening`, check 7).

``parse`` accepts exactly this and nothing else (unknown keys, wrong types, bad hex, duplicate
or unsorted entries are a :class:`~fedledger.errors.FormatError`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from pydantic import ValidationError

from fedledger import safejson
from fedledger.errors import FormatError
from fedledger.protocol import merkle
from fedledger.protocol.aggregation import RuleSpec

FORMAT = "fedledger.verdicts/1"
MAX_FILE_BYTES = 64 << 20
"""Largest verdict file :func:`parse` reads: ~180 000 entries of ~360 bytes."""
MAX_NORM_HISTORY = 1000
"""Most entries ``normHistory`` may hold (a task's spec keeps at most 100)."""
MAX_DEPTH = 16
"""Deepest nesting :func:`parse` reads (entries are 3 deep; ``metrics`` may nest a little)."""
SCORE_DIGITS = 9

_HASH = re.compile(r"^0x[0-9a-f]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_MAX_UINT64 = 2**64 - 1


class Verdict(IntEnum):
    """Verdict codes (uint8 in the Merkle leaf), fixed by docs/interfaces.md; a new verdict is
    appended with the next code, so no code (and no attested leaf) ever changes meaning."""

    ACCEPTED = 0
    HASH_MISMATCH = 1
    UNAVAILABLE = 2
    MALFORMED = 3
    SHAPE_MISMATCH = 4
    NON_FINITE = 5
    NORM_BOUND = 6
    OUTLIER = 7
    LATE = 8
    DUPLICATE = 9
    FREE_RIDER = 10
    COPIED = 11
    """The update file names another contributor than the address that submitted it: a copy of
    someone else's update (its ``contentHash`` and ``cid``) landed under the copier's address."""
    OUT_OF_RANGE = 12
    """A fixed-point task's float update (``fp32``, ``fp16``, ``int8``, ``topk``) has a coordinate
    that its fixed-point format cannot hold after rounding (docs/aggregation.md, section 1); the
    reason names the coordinate.  An ``int32`` update is in range by type, and one declaring
    another format than the task's (another ``frac_bits``), or sent to a float task, is
    ``MALFORMED``: a claim of the file that does not fit the task, like a wrong round or base
    model."""
    TENSOR_ROOT_MISMATCH = 13
    """The ``tensorRoot`` recorded with the update is not the tensor root of the file's
    fixed-point coordinates (docs/tensor_commitments.md), or a float task's update records a
    non-zero one: the commitment a fraud proof would check against is false."""
    STALE = 14
    """The update replays the previous round's global step (cosine at least the task's
    ``stale_cosine``, and closer to it than to its contributor's own accepted update of that
    round): a free rider resubmitting old work (docs/defences.md)."""
    SYBIL = 15
    """One of a group of at least ``sybil_group`` updates sharing one direction (pairwise cosine
    at least ``sybil_cosine``): contributors whose updates are too alike to be independent, e.g.
    sybils pooling one update, or "a little is enough" attackers sending the same crafted one."""
    INCONSISTENT = 16
    """The update contradicts its contributor's own accepted update of the previous round
    (cosine below ``min_self_cosine``, or below ``drift_cosine`` while it raises the root loss),
    or carries on the way its previous update rejected so went: a sleeper turning."""
    HARMFUL = 17
    """Measured on the task's root data set (``root_data``): the update points away from the
    validators' reference update (cosine below ``min_trust``) and, applied alone, raises the
    root loss by more than ``harm_loss`` times the global model's; or it carries on the way its
    previous update rejected so went."""


def canonical_float(x: float) -> float:
    """``x`` rounded to :data:`SCORE_DIGITS` significant digits; ValueError for NaN/Inf."""
    if not math.isfinite(x):
        raise ValueError(f"non-finite number {x!r} cannot be written to a verdict file")
    return float(f"{float(x):.{SCORE_DIGITS}g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def _hash(value: str, what: str) -> str:
    if not isinstance(value, str) or not _HASH.match(value.lower()):
        raise ValueError(f"{what} must be 0x + 64 hex digits, got {value!r}")
    return value.lower()


def _address(value: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise ValueError(f"contributor must be 0x + 40 hex digits, got {value!r}")
    return value.lower()


def _uint(value: int, what: str, top: int = _MAX_UINT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"{what} must be an integer in [0, {top}], got {value!r}")
    return value


@dataclass(frozen=True)
class VerdictEntry:
    """One update's verdict. ``score`` is the screening statistic, ``None`` when none applied."""

    update_id: int
    contributor: str
    content_hash: str
    cid: str
    num_samples: int
    verdict: Verdict
    reason: str = ""
    score: float | None = None
    clip: int | None = None
    """The clip multiplier ``num`` the rule applied (docs/aggregation.md section 4), ``None``
    when the update was not clipped; committed in the leaf for the court's fraud proof."""
    reward: int = 0
    """Wei the update earned (:func:`with_rewards`), claimable from the task's court once the
    round settles; 0 for none."""

    def __post_init__(self) -> None:
        _uint(self.update_id, "updateId", 2**256 - 1)
        if self.clip is not None:
            _uint(self.clip, "clip", UNCLIPPED - 1)
        _uint(self.reward, "reward", 2**256 - 1)
        object.__setattr__(self, "contributor", _address(self.contributor))
        object.__setattr__(self, "content_hash", _hash(self.content_hash, "contentHash"))
        _uint(self.num_samples, "numSamples")
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        if not isinstance(self.cid, str) or not isinstance(self.reason, str):
            raise ValueError("cid and reason must be strings")
        if self.score is not None:
            object.__setattr__(self, "score", canonical_float(self.score))

    @property
    def clip_multiplier(self) -> int:
        """The clip multiplier as the leaf holds it: ``2**32`` when the update was not clipped."""
        return UNCLIPPED if self.clip is None else self.clip

    def leaf(self) -> bytes:
        """This entry's Merkle leaf (docs/interfaces.md): the four-field leaf when the update
        is not clipped and earns nothing, else the six-field leaf with ``clip`` and ``reward``
        (``ICourt``'s header, :func:`court_leaf`)."""
        if self.clip is None and self.reward == 0:
            return merkle.leaf(self.update_id, self.contributor, self.content_hash, self.verdict)
        return court_leaf(
            self.update_id,
            self.contributor,
            self.content_hash,
            self.verdict,
            self.clip_multiplier,
            self.reward,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "updateId": self.update_id,
            "contributor": self.contributor,
            "contentHash": self.content_hash,
            "cid": self.cid,
            "numSamples": self.num_samples,
            "verdict": self.verdict.name,
            "reason": self.reason,
            "score": self.score,
        }
        if self.clip is not None:
            doc["clip"] = self.clip
        if self.reward:
            doc["reward"] = str(self.reward)  # a decimal string: wei exceed JSON's safe integers
        return doc


UNCLIPPED = 1 << 32
"""The leaf's clip multiplier of an update left unclipped (``trunc(q * 2**32 / 2**32) = q``)."""


def court_leaf(
    update_id: int, contributor: str, content_hash: str, verdict: int, clip: int, reward: int
) -> bytes:
    """The six-field verdict leaf ``keccak256(bytes.concat(keccak256(abi.encode(uint256 updateId,
    address contributor, bytes32 contentHash, uint8 verdict, uint64 clip, uint256 reward))))``
    (``ICourt.verdictLeaf``), as OpenZeppelin's StandardMerkleTree hashes a leaf."""
    from eth_utils import keccak

    encoded = (
        int(update_id).to_bytes(32, "big")
        + b"\x00" * 12
        + bytes.fromhex(_address(contributor)[2:])
        + bytes.fromhex(_hash(content_hash, "contentHash")[2:])
        + int(verdict).to_bytes(32, "big")
        + _uint(clip, "clip").to_bytes(32, "big")
        + _uint(reward, "reward", 2**256 - 1).to_bytes(32, "big")
    )
    return bytes(keccak(keccak(encoded)))


def capped_weight(num_samples: int, weight_cap: int | None) -> int:
    """fedavg's weight of an update: ``min(numSamples, weight_cap)`` (uncapped: numSamples)."""
    return num_samples if weight_cap is None else min(num_samples, weight_cap)


def with_rewards(vf: VerdictFile, budget: int, weight_cap: int | None) -> VerdictFile:
    """``vf`` with each accepted update's reward: ``floor(budget * w_i / sum_j w_j)`` over the
    accepted updates, ``w`` the capped weight (:func:`capped_weight`); the rest earn 0. So a
    round pays at most ``budget`` wei, in proportion to what fedavg weighs each update by."""
    _uint(budget, "budget", 2**256 - 1)
    weights = {
        e.update_id: capped_weight(e.num_samples, weight_cap)
        for e in vf.entries
        if e.verdict is Verdict.ACCEPTED
    }
    total = sum(weights.values())
    entries = [
        replace(e, reward=budget * weights[e.update_id] // total if total else 0)
        if e.update_id in weights
        else replace(e, reward=0)
        for e in vf.entries
    ]
    return replace(vf, entries=tuple(entries))


def with_clips(vf: VerdictFile, clips: Mapping[int, int | None]) -> VerdictFile:
    """``vf`` with the clip multipliers the rule applied, by updateId (``None``: not clipped)."""
    return replace(
        vf, entries=tuple(replace(e, clip=clips.get(e.update_id, e.clip)) for e in vf.entries)
    )


@dataclass(frozen=True)
class VerdictFile:
    """A round's verdicts plus what they were aggregated into."""

    task_id: int
    round: int
    rule: RuleSpec
    base_model_hash: str
    aggregate_hash: str
    aggregate_cid: str
    entries: tuple[VerdictEntry, ...]
    metrics: Mapping[str, Any] | None = field(default=None)
    standing: Mapping[str, float] | None = field(default=None)
    norm_history: Sequence[float] | None = field(default=None)

    def __post_init__(self) -> None:
        _uint(self.task_id, "taskId", 2**256 - 1)
        _uint(self.round, "round")
        object.__setattr__(self, "base_model_hash", _hash(self.base_model_hash, "baseModelHash"))
        object.__setattr__(self, "aggregate_hash", _hash(self.aggregate_hash, "aggregateHash"))
        if not isinstance(self.aggregate_cid, str):
            raise ValueError("aggregateCid must be a string")
        entries = tuple(sorted(self.entries, key=lambda e: e.update_id))
        ids = [e.update_id for e in entries]
        if len(set(ids)) != len(ids):
            raise ValueError("two entries share an updateId: each update gets exactly one verdict")
        object.__setattr__(self, "entries", entries)
        if self.metrics is not None:
            object.__setattr__(self, "metrics", _canonical_metrics(self.metrics, "metrics"))
        if self.standing is not None:
            object.__setattr__(self, "standing", _canonical_standing(self.standing))
        if self.norm_history is not None:
            object.__setattr__(self, "norm_history", _canonical_norms(self.norm_history))

    def leaves(self) -> list[bytes]:
        """Merkle leaves in updateId order."""
        return [e.leaf() for e in self.entries]

    def root(self) -> bytes:
        """The ``verdictRoot`` to attest."""
        return merkle.root(self.leaves())

    def proof(self, update_id: int) -> list[bytes]:
        """Merkle proof of ``update_id``'s verdict against :meth:`root`."""
        for i, e in enumerate(self.entries):
            if e.update_id == update_id:
                return merkle.proof(self.leaves(), i)
        raise KeyError(f"update {update_id} has no verdict in this file")

    def entry(self, update_id: int) -> VerdictEntry:
        for e in self.entries:
            if e.update_id == update_id:
                return e
        raise KeyError(f"update {update_id} has no verdict in this file")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "taskId": self.task_id,
            "round": self.round,
            "rule": self.rule.to_json(),
            "baseModelHash": self.base_model_hash,
            "aggregateHash": self.aggregate_hash,
            "aggregateCid": self.aggregate_cid,
            "entries": [e.to_json() for e in self.entries],
        }
        if self.metrics is not None:
            doc["metrics"] = dict(self.metrics)
        if self.standing is not None:
            doc["standing"] = dict(self.standing)
        if self.norm_history is not None:
            doc["normHistory"] = list(self.norm_history)
        return doc

    def to_bytes(self) -> bytes:
        """The canonical bytes (see the module docstring) -- what goes on IPFS."""
        return encode(self.to_json())


def encode(doc: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact, ASCII; NaN/Inf refused."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _canonical_standing(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError("standing must be a JSON object")
    out: dict[str, float] = {}
    for k, v in sorted(value.items()):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"standing[{k!r}] must be a number")
        out[_address(k)] = canonical_float(float(v))
    return out


def _canonical_norms(value: Any) -> tuple[float, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ValueError("normHistory must be a JSON list")
    if len(value) > MAX_NORM_HISTORY:
        raise ValueError(f"normHistory holds {len(value)} entries, at most {MAX_NORM_HISTORY}")
    out = []
    for i, v in enumerate(value):
        try:
            x = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
        except OverflowError:
            x = math.inf
        if not 0.0 < x < math.inf:
            raise ValueError(f"normHistory[{i}] must be a positive number, got {str(v)[:40]}")
        out.append(canonical_float(x))
    return tuple(out)


def _canonical_metrics(value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return canonical_float(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} keys must be strings, got {k!r}")
            out[k] = _canonical_metrics(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical_metrics(v, f"{where}[]") for v in value]
    raise ValueError(f"{where} holds a {type(value).__name__}, which JSON cannot carry")


_ENTRY_KEYS = {
    "updateId",
    "contributor",
    "contentHash",
    "cid",
    "numSamples",
    "verdict",
    "reason",
    "score",
}
_FILE_KEYS = {
    "format",
    "taskId",
    "round",
    "rule",
    "baseModelHash",
    "aggregateHash",
    "aggregateCid",
    "entries",
}


def _keys(obj: Any, required: set[str], optional: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a JSON object")
    missing = required - obj.keys()
    extra = obj.keys() - required - optional
    if missing:
        raise ValueError(f"{where} lacks {sorted(missing)}")
    if extra:
        raise ValueError(f"{where} has unknown keys {sorted(extra)}")
    return obj


def _entry_from_json(obj: Any, i: int) -> VerdictEntry:
    d = _keys(obj, _ENTRY_KEYS, {"clip", "reward"}, f"entries[{i}]")
    reward = d.get("reward", "0")
    if not isinstance(reward, str) or not reward.isdigit() or reward != str(int(reward)):
        raise ValueError(f"entries[{i}].reward must be a decimal string of wei, got {reward!r}")
    if "reward" in d and int(reward) == 0:
        raise ValueError(f"entries[{i}].reward is written only when it is not zero")
    verdict = d["verdict"]
    if not isinstance(verdict, str) or verdict not in Verdict.__members__:
        known = ", ".join(Verdict.__members__)
        raise ValueError(f"entries[{i}].verdict {verdict!r} is not one of {known}")
    score = d["score"]
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise ValueError(f"entries[{i}].score must be a number or null")
    return VerdictEntry(
        update_id=_uint(d["updateId"], f"entries[{i}].updateId", 2**256 - 1),
        contributor=d["contributor"],
        content_hash=d["contentHash"],
        cid=d["cid"],
        num_samples=_uint(d["numSamples"], f"entries[{i}].numSamples"),
        verdict=Verdict[verdict],
        reason=d["reason"],
        score=None if score is None else float(score),
        clip=None if "clip" not in d else _uint(d["clip"], f"entries[{i}].clip", UNCLIPPED - 1),
        reward=int(reward),
    )


def from_json(doc: Any) -> VerdictFile:
    """Validate a decoded verdict document. Raises FormatError naming the first problem."""
    try:
        d = _keys(doc, _FILE_KEYS, {"metrics", "standing", "normHistory"}, "verdict file")
        if d["format"] != FORMAT:
            raise ValueError(f"format is {d['format']!r}, expected {FORMAT!r}")
        entries = d["entries"]
        if not isinstance(entries, list):
            raise ValueError("entries must be a list")
        parsed = [_entry_from_json(e, i) for i, e in enumerate(entries)]
        ids = [e.update_id for e in parsed]
        if ids != sorted(set(ids)):
            raise ValueError("entries must be sorted by updateId with no repeats")
        return VerdictFile(
            task_id=_uint(d["taskId"], "taskId", 2**256 - 1),
            round=_uint(d["round"], "round"),
            rule=_rule(d["rule"]),
            base_model_hash=d["baseModelHash"],
            aggregate_hash=d["aggregateHash"],
            aggregate_cid=d["aggregateCid"],
            entries=tuple(parsed),
            metrics=d.get("metrics"),
            standing=d.get("standing"),
            norm_history=d.get("normHistory"),
        )
    except (ValueError, TypeError) as exc:
        raise FormatError(f"not a valid verdict file: {exc}") from exc


def _rule(obj: Any) -> RuleSpec:
    if not isinstance(obj, dict):
        raise ValueError("rule must be a JSON object")
    try:
        return RuleSpec.model_validate(obj)  # strict: unknown keys are an error here
    except ValidationError as exc:
        raise ValueError(f"rule: {exc.errors()[0]['msg']}") from exc


def parse(data: bytes | str, *, canonical: bool = False) -> VerdictFile:
    """Parse verdict-file bytes. With ``canonical=True`` also require the exact canonical bytes
    (what a re-verifier checks, since the CID and the attested digest commit to the bytes).
    """
    doc = safejson.loads(data, what="verdict file", max_bytes=MAX_FILE_BYTES, max_depth=MAX_DEPTH)
    vf = from_json(doc)
    raw = data.encode() if isinstance(data, str) else data
    if canonical and vf.to_bytes() != raw:
        raise FormatError("verdict file is valid but not in canonical form (bytes differ)")
    return vf


def build(
    *,
    task_id: int,
    round: int,
    rule: RuleSpec,
    base_model_hash: str,
    aggregate_hash: str,
    aggregate_cid: str,
    entries: Sequence[VerdictEntry],
    metrics: Mapping[str, Any] | None = None,
    standing: Mapping[str, float] | None = None,
    norm_history: Sequence[float] | None = None,
) -> VerdictFile:
    """Construct a verdict file, turning invalid values into FormatError."""
    try:
        return VerdictFile(
            task_id=task_id,
            round=round,
            rule=rule,
            base_model_hash=base_model_hash,
            aggregate_hash=aggregate_hash,
            aggregate_cid=aggregate_cid,
            entries=tuple(entries),
            metrics=metrics,
            standing=standing,
            norm_history=norm_history,
        )
    except ValueError as exc:
        raise FormatError(f"cannot build verdict file: {exc}") from exc
