"""Verdict proofs from the round's verdict file, through ``fedledger.protocol.verdicts`` and ``fedledger.protocol.merkle``
(each format has one owner: this module only finds the file and picks the leaf)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException
from sqlalchemy.orm import Session

from fedledger.content.cid import parse_cid
from fedledger.errors import FedledgerError, FormatError, VerificationError
from fedledger.flows.task import read_spec
from fedledger.protocol import codec, merkle, verdicts
from fedledger.protocol.aggregation import TensorLayout
from fedledger.protocol.fixed_deltas import locate
from fedledger.protocol.rounds import ZERO_ROOT, fixed_view
from fedledger.protocol.tensor_root import TensorTree
from fedledger_backend.api.addresses import checksum
from fedledger_backend.api.schemas import Proof, TensorProof
from fedledger_backend.db import ContributionRow, RoundRow, TaskRow, VerdictFileRow

if TYPE_CHECKING:
    from fedledger_backend.api.deps import ApiContext

RETRY_AFTER_S = 5


@dataclass(frozen=True)
class VerdictTree:
    """A verdict file's leaves in update-id order (the order the tree is built in)."""

    update_ids: list[int]
    leaves: list[bytes]
    verdicts: list[verdicts.Verdict]


class TreeCache:
    """Leaves of recently used verdict files; never stale, since a CID names its bytes."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._trees: OrderedDict[str, VerdictTree] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cid: str) -> VerdictTree | None:
        with self._lock:
            tree = self._trees.get(cid)
            if tree is not None:
                self._trees.move_to_end(cid)
            return tree

    def put(self, cid: str, tree: VerdictTree) -> None:
        with self._lock:
            self._trees[cid] = tree
            while len(self._trees) > self._size:
                self._trees.popitem(last=False)


def _tree(vf: verdicts.VerdictFile) -> VerdictTree:
    return VerdictTree(
        update_ids=[e.update_id for e in vf.entries],
        leaves=vf.leaves(),
        verdicts=[e.verdict for e in vf.entries],
    )


def _load(ctx: ApiContext, s: Session, cid: str) -> VerdictTree:
    """The verdict file from the database cache, else from the content store."""
    try:
        cached = s.get(VerdictFileRow, cid)
        if cached is not None:
            return _tree(verdicts.from_json(cached.body))
        if ctx.store is not None:
            return _tree(verdicts.parse(ctx.store.get(cid)))
    except FormatError as exc:
        raise VerificationError(f"verdict file {cid} is malformed: {exc.message}") from exc
    except FedledgerError:
        pass  # the store is down or does not have it yet: same answer as not cached
    raise HTTPException(
        503,
        detail=f"verdict file {cid} is not available yet; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def verdict_proof(ctx: ApiContext, s: Session, row: ContributionRow, rnd: RoundRow) -> Proof:
    """The proof of ``row``'s verdict in finalised round ``rnd``, checked against its root."""
    cid = str(rnd.verdict_cid)
    tree = ctx.trees.get(cid)
    if tree is None:
        tree = _load(ctx, s, cid)
        ctx.trees.put(cid, tree)
    try:
        index = tree.update_ids.index(row.update_id)
    except ValueError:
        raise VerificationError(
            f"update {row.update_id} has no verdict in the round's verdict file {cid}"
        ) from None
    leaf = tree.leaves[index]
    path = merkle.proof(tree.leaves, index)
    root = str(rnd.verdict_root)
    if not merkle.verify(root, leaf, path):
        raise VerificationError(f"verdict file {cid} does not match the attested root {root}")
    verdict = tree.verdicts[index]
    return Proof(
        update_id=row.update_id,
        task_id=row.task_id,
        round=row.round,
        contributor=checksum(row.contributor),
        content_hash=row.content_hash,
        verdict=verdict.name,  # type: ignore[arg-type]
        verdict_code=int(verdict),
        leaf=merkle.to_hex(leaf),
        proof=[merkle.to_hex(p) for p in path],
        root=root,
        verdict_cid=cid,
        result=round_result(rnd),
    )


def round_result(rnd: RoundRow) -> dict[str, Any] | None:
    """A final round's attested RoundResult, as ``verifyVerdict`` takes it."""
    if rnd.record_hash is None or rnd.verdict_hash is None or rnd.sealed_count is None:
        return None
    try:
        verdict_digest = parse_cid(str(rnd.verdict_cid)).digest
        aggregate_digest = parse_cid(str(rnd.aggregate_cid)).digest
    except FormatError:
        return None  # not CIDs the chain could have recorded: nothing to prove on chain
    return {
        "recordHash": rnd.record_hash,
        "updateCount": rnd.sealed_count,
        "verdictRoot": rnd.verdict_root,
        "verdictHash": rnd.verdict_hash,
        "verdictCidDigest": "0x" + verdict_digest.hex(),
        "aggregateHash": rnd.aggregate_hash,
        "aggregateCidDigest": "0x" + aggregate_digest.hex(),
        "aggregateTensorRoot": rnd.aggregate_tensor_root,
    }


MAX_PROOF_UPDATE_BYTES = 1 << 30
"""The largest update file this node reads to answer a coordinate proof."""


def tensor_proof(ctx: ApiContext, s: Session, row: ContributionRow, index: int) -> TensorProof:
    """The proof of coordinate ``index`` of ``row``'s update against its recorded tensorRoot:
    the file is fetched (checked against its contentHash), its fixed-point vector rebuilt as
    validators rebuild it, and the root checked before the proof is answered."""
    if row.tensor_root == ZERO_ROOT:
        raise HTTPException(
            404, detail=f"update {row.update_id} records no tensor root (a float task's update)"
        )
    task = s.get(TaskRow, row.task_id)
    if ctx.store is None or task is None:
        raise HTTPException(503, detail="this node has no content store to read the update from")
    try:
        spec = read_spec(ctx.store, task.spec_cid)
        fmt = spec.fixed_point_format()
        data, h = ctx.store.get_hashed(
            row.cid, max_bytes=MAX_PROOF_UPDATE_BYTES, expect=row.content_hash
        )
    except FedledgerError as exc:
        raise HTTPException(
            503,
            detail=f"update {row.update_id} cannot be read now: {exc.message}",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    if h != row.content_hash.lower():
        raise VerificationError(f"the stored bytes of update {row.update_id} hash to {h}")
    if fmt is None:
        raise HTTPException(404, detail=f"task {row.task_id} has no fixed-point format")
    try:
        dec = codec.decode(data, kind="update", copy=False)
    except FormatError as exc:
        raise VerificationError(f"update {row.update_id} is not an update file: {exc}") from exc
    layout = TensorLayout.of(dec.tensors)
    try:
        _, q = fixed_view(dec, layout, fmt)
    except FedledgerError as exc:
        raise VerificationError(f"update {row.update_id} has no fixed-point vector: {exc}") from exc
    if q is None:
        raise VerificationError(f"update {row.update_id} has no fixed-point vector")
    if index >= q.size:
        raise HTTPException(
            404,
            detail=f"update {row.update_id} has {q.size} coordinates; index {index} is past them",
        )
    tree = TensorTree(q)
    if "0x" + tree.root.hex() != row.tensor_root:
        raise VerificationError(
            f"update {row.update_id}'s coordinates do not hash to its recorded tensor root "
            "(validators judge it TENSOR_ROOT_MISMATCH)"
        )
    cp = tree.proof(index)
    return TensorProof(
        update_id=row.update_id,
        index=index,
        tensor=locate(index, layout),
        value=int(q[index]),
        dimension=int(q.size),
        leaf_index=cp.leaf_index,
        leaf="0x" + cp.leaf.hex(),
        proof=["0x" + p.hex() for p in cp.proof],
        root=row.tensor_root,
    )
