"""Typed records of the ledger (v2): the one place an event becomes a contribution record, and
the one implementation, off chain, of the hashes the contract keeps.

* :class:`UpdateRecord` -- one recorded update, from an ``UpdateSubmitted`` event or one packed
  record of an ``UpdatesRelayed`` batch (:func:`records_of_batch`).  The indexer's handler (a
  database row), ``fedledger history`` without a backend, ``verify`` and the relay all build
  theirs here, so the same event always yields the same fields.
* :func:`record_hash` -- a round's running hash of its records, exactly as the contract chains
  it (docs/ledger_v2.md): ``verify`` and the validators check the sealed hash with it.
* :class:`RoundResult` -- what validators attest, and :meth:`RoundResult.digest`, the
  ``resultDigest`` the contract stores for a final round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from fedledger.content.cid import recorded_cid
from fedledger.errors import FormatError

ZERO32 = "0x" + "00" * 32

RECORD_BYTES = 124
"""One packed record of an ``UpdatesRelayed`` event: contributor (20), contentHash (32),
cidDigest (32), tensorRoot (32), numSamples (uint64, 8)."""

SEQ_BITS = 32
"""``updateId = (taskId << 32) | seq``: ``seq`` numbers a task's updates from 1."""


def update_id(task_id: int, seq: int) -> int:
    """The global id of update ``seq`` of task ``task_id``."""
    return (task_id << SEQ_BITS) | seq


def split_update_id(uid: int) -> tuple[int, int]:
    """``(task_id, seq)`` of a global update id."""
    return uid >> SEQ_BITS, uid & ((1 << SEQ_BITS) - 1)


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    text = str(value).lower()
    return text if text.startswith("0x") else "0x" + text


def _b32(value: str | bytes) -> bytes:
    raw = (
        bytes(value)
        if isinstance(value, bytes | bytearray)
        else bytes.fromhex(str(value).removeprefix("0x"))
    )
    if len(raw) != 32:
        raise FormatError(f"expected 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class UpdateRecord:
    """One recorded update: who submitted which bytes for which round, and where the chain
    recorded it.  ``cid`` is rebuilt from the recorded digest (``recorded_cid``)."""

    update_id: int
    task_id: int
    round: int
    contributor: str
    content_hash: str
    cid: str
    num_samples: int
    tx_hash: str
    block_number: int
    tensor_root: str = ZERO32

    @property
    def seq(self) -> int:
        return split_update_id(self.update_id)[1]

    @property
    def cid_digest(self) -> bytes:
        from fedledger.content.cid import parse_cid

        return parse_cid(self.cid).digest

    @classmethod
    def from_event(
        cls, args: Mapping[str, Any], *, tx_hash: Any, block_number: int
    ) -> UpdateRecord:
        """From an ``UpdateSubmitted`` event's decoded ``args`` (web3's, or the indexer's stored
        JSON form) or one item of :func:`records_of_batch`."""
        content_hash = _hex(args["contentHash"])
        if "cid" in args:
            cid = str(args["cid"])
        else:
            cid = recorded_cid(_b32(_hex(args["cidDigest"])), _b32(content_hash))
        return cls(
            update_id=int(args["updateId"]),
            task_id=int(args["taskId"]),
            round=int(args["round"]),
            contributor=to_checksum_address(str(args["contributor"])),
            content_hash=content_hash,
            cid=cid,
            num_samples=int(args["numSamples"]),
            tx_hash=tx_hash if isinstance(tx_hash, str) else _hex(bytes(tx_hash)),
            block_number=int(block_number),
            tensor_root=_hex(args.get("tensorRoot", ZERO32)),
        )

    def columns(self) -> dict[str, Any]:
        """The record as the field names REST and the database use."""
        return asdict(self)


def records_of_batch(args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-update args (as ``UpdateSubmitted`` has them) of an ``UpdatesRelayed`` event."""
    raw = args["records"]
    data = (
        bytes(raw)
        if isinstance(raw, bytes | bytearray)
        else bytes.fromhex(str(raw).removeprefix("0x"))
    )
    if len(data) % RECORD_BYTES:
        raise FormatError(f"UpdatesRelayed records are {len(data)} bytes, not a multiple of 124")
    first = int(args["firstUpdateId"])
    out = []
    for k in range(len(data) // RECORD_BYTES):
        rec = data[k * RECORD_BYTES : (k + 1) * RECORD_BYTES]
        out.append(
            {
                "taskId": int(args["taskId"]),
                "round": int(args["round"]),
                "updateId": first + k,
                "contributor": to_checksum_address(rec[:20]),
                "contentHash": "0x" + rec[20:52].hex(),
                "cidDigest": "0x" + rec[52:84].hex(),
                "tensorRoot": "0x" + rec[84:116].hex(),
                "numSamples": int.from_bytes(rec[116:124], "big"),
            }
        )
    return out


# --------------------------------------------------------------------------- record hash


def record_seed(task_id: int, round_: int) -> bytes:
    """``bytes28(keccak256(abi.encode(taskId, round)))``: a round's record hash with no records."""
    return keccak(abi_encode(["uint256", "uint64"], [task_id, round_]))[:28]


def record_step(previous: bytes, rec: UpdateRecord) -> bytes:
    """One link: ``bytes28(keccak256(abi.encode(previous, contributor, contentHash, cidDigest,
    tensorRoot, numSamples)))``."""
    return keccak(
        abi_encode(
            ["bytes28", "address", "bytes32", "bytes32", "bytes32", "uint64"],
            [
                previous,
                rec.contributor,
                _b32(rec.content_hash),
                rec.cid_digest,
                _b32(rec.tensor_root),
                rec.num_samples,
            ],
        )
    )[:28]


def record_hash(task_id: int, round_: int, records: Iterable[UpdateRecord]) -> tuple[bytes, int]:
    """The round's running record hash over ``records`` (in chain order) and their count."""
    h, n = record_seed(task_id, round_), 0
    for rec in records:
        h, n = record_step(h, rec), n + 1
    return h, n


# --------------------------------------------------------------------------- round results


@dataclass(frozen=True)
class RoundResult:
    """``ITrainingLedger.RoundResult``: what a validator attests for a sealed round.  CIDs are
    kept as strings; the chain records their digests."""

    record_hash: str
    update_count: int
    verdict_root: str
    verdict_hash: str
    verdict_cid: str
    aggregate_hash: str
    aggregate_cid: str
    aggregate_tensor_root: str = ZERO32

    def as_tuple(self) -> tuple[Any, ...]:
        from fedledger.content.cid import parse_cid

        rh = bytes.fromhex(self.record_hash.removeprefix("0x"))
        if len(rh) != 28:
            raise FormatError("a record hash is 28 bytes")
        return (
            rh,
            self.update_count,
            _b32(self.verdict_root),
            _b32(self.verdict_hash),
            parse_cid(self.verdict_cid).digest,
            _b32(self.aggregate_hash),
            parse_cid(self.aggregate_cid).digest,
            _b32(self.aggregate_tensor_root),
        )

    def digest(self, task_id: int, round_: int) -> bytes:
        """``resultDigest(taskId, round, result)``: ``keccak256(abi.encode(taskId, round, result))``."""
        return keccak(
            abi_encode(
                [
                    "uint256",
                    "uint64",
                    "(bytes28,uint32,bytes32,bytes32,bytes32,bytes32,bytes32,bytes32)",
                ],
                [task_id, round_, self.as_tuple()],
            )
        )

    @classmethod
    def from_event(cls, result: Mapping[str, Any] | tuple[Any, ...]) -> RoundResult:
        """From a ``ResultProposed`` event's ``result`` (a dict by field name or a tuple)."""
        names = (
            "recordHash", "updateCount", "verdictRoot", "verdictHash", "verdictCidDigest",
            "aggregateHash", "aggregateCidDigest", "aggregateTensorRoot",
        )  # fmt: skip
        d = dict(result) if isinstance(result, Mapping) else dict(zip(names, result, strict=True))
        verdict_hash = _b32(_hex(d["verdictHash"]))
        aggregate_hash = _b32(_hex(d["aggregateHash"]))
        return cls(
            record_hash=_hex(d["recordHash"]),
            update_count=int(d["updateCount"]),
            verdict_root=_hex(d["verdictRoot"]),
            verdict_hash=_hex(verdict_hash),
            verdict_cid=recorded_cid(_b32(_hex(d["verdictCidDigest"])), verdict_hash),
            aggregate_hash=_hex(aggregate_hash),
            aggregate_cid=recorded_cid(_b32(_hex(d["aggregateCidDigest"])), aggregate_hash),
            aggregate_tensor_root=_hex(d["aggregateTensorRoot"]),
        )
