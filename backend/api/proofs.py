"""Verdict proofs from the cached verdict files, through ``client.merkle`` (one tree, one owner)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException
from sqlalchemy.orm import Session

from backend.api.addresses import checksum
from backend.api.schemas import VERDICTS, Proof
from backend.db import ContributionRow, RoundRow, VerdictFileRow
from client import merkle
from client.errors import FormatError, VerificationError

if TYPE_CHECKING:
    from backend.api.deps import ApiContext


@dataclass(frozen=True)
class VerdictTree:
    """A verdict file's leaves in update-id order (the order the tree is built in)."""

    update_ids: list[int]
    leaves: list[Any]
    verdicts: dict[int, str]


class TreeCache:
    """Leaves of recently used verdict files; safe to cache forever since a CID names its bytes."""

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


def build_tree(body: dict[str, Any]) -> VerdictTree:
    """Leaves of a verdict file body: ``entries`` of updateId, contributor, contentHash, verdict."""
    try:
        entries = sorted(body["entries"], key=lambda e: int(e["updateId"]))
        ids = [int(e["updateId"]) for e in entries]
        verdicts = {int(e["updateId"]): str(e["verdict"]) for e in entries}
        leaves = [
            merkle.leaf(
                int(e["updateId"]),
                checksum(str(e["contributor"]).lower()),
                str(e["contentHash"]),
                VERDICTS.index(str(e["verdict"])),
            )
            for e in entries
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"malformed verdict file: {type(exc).__name__}: {exc}") from exc
    return VerdictTree(update_ids=ids, leaves=leaves, verdicts=verdicts)


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value).lower()


def verdict_proof(ctx: ApiContext, s: Session, row: ContributionRow, rnd: RoundRow) -> Proof:
    cid = str(rnd.verdict_cid)
    tree = ctx.trees.get(cid)
    if tree is None:
        cached = s.get(VerdictFileRow, cid)
        if cached is None:
            raise HTTPException(
                503,
                detail=f"verdict file {cid} is not in the cache yet; retry shortly",
                headers={"Retry-After": "5"},
            )
        tree = build_tree(cached.body)
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
    verdict = tree.verdicts[row.update_id]
    return Proof(
        update_id=row.update_id,
        task_id=row.task_id,
        round=row.round,
        contributor=checksum(row.contributor),
        content_hash=row.content_hash,
        verdict=verdict,  # type: ignore[arg-type]
        verdict_code=VERDICTS.index(verdict),
        leaf=_hex(leaf),
        proof=[_hex(p) for p in path],
        root=root,
        verdict_cid=cid,
    )
