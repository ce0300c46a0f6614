"""Verdict proofs from the round's verdict file, through ``fedledger.protocol.verdicts`` and ``fedledger.protocol.merkle``
(each format has one owner: this module only finds the file and picks the leaf)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import HTTPException
from sqlalchemy.orm import Session

from fedledger.errors import FedledgerError, FormatError, VerificationError
from fedledger.protocol import merkle, verdicts
from fedledger_backend.api.addresses import checksum
from fedledger_backend.api.schemas import Proof
from fedledger_backend.db import ContributionRow, RoundRow, VerdictFileRow

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
    )
