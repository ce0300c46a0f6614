"""Contribution history for ``fedledger history``: from a backend's REST API, or straight from the
chain (UpdateSubmitted events) and the store (finalised rounds' verdict files) when no backend
is at hand."""

from __future__ import annotations

from typing import Any

import httpx

from fedledger import safejson
from fedledger.chain.ledger import Ledger, to_checksum
from fedledger.content.store import ContentStore
from fedledger.errors import ChainError, ConfigError, FedledgerError, FormatError, NotFoundError
from fedledger.protocol import verdicts

MAX_ANSWER_BYTES = 64 << 20
"""Largest answer read from a backend (a page of at most 500 contributions is ~250 KiB)."""


def history_from_api(
    api: str,
    *,
    task_id: int | None = None,
    round_: int | None = None,
    contributor: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first, like :func:`history_from_chain`: ``--limit`` keeps the latest rows."""
    params: dict[str, Any] = {"limit": limit, "order": "desc"}
    for k, v in (
        ("task_id", task_id),
        ("round", round_),
        ("contributor", contributor),
        ("status", status),
    ):
        if v is not None:
            params[k] = v
    try:
        r = httpx.get(api.rstrip("/") + "/contributions", params=params, timeout=10)
    except httpx.HTTPError as exc:
        raise ChainError(f"backend at {api} did not answer: {exc}", hint="check --api") from exc
    if r.status_code not in (200, 404, 422):
        raise FedledgerError(f"backend answered {r.status_code}: {r.text[:200]}")
    body = safejson.loads(r.content, what=f"the answer of {api}", max_bytes=MAX_ANSWER_BYTES)
    if not isinstance(body, dict):
        raise FormatError(f"the answer of {api} is not a JSON object", hint="check --api")
    if r.status_code == 404:
        raise NotFoundError(str(body.get("detail"))[:500])
    if r.status_code == 422:
        raise ConfigError(f"backend refused the query: {str(body.get('detail'))[:500]}")
    items = body.get("items")
    if not isinstance(items, list):
        raise FormatError(f"the answer of {api} holds no list of items", hint="check --api")
    return items


def history_from_chain(
    ledger: Ledger,
    store: ContentStore,
    *,
    task_id: int | None = None,
    round_: int | None = None,
    contributor: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first (the API is asked for the same order); verdicts from the verdict files of
    final rounds."""
    who = to_checksum(contributor) if contributor else None
    judged: dict[int, verdicts.VerdictEntry] = {}
    for ev in ledger.events("RoundFinalized", task_id=task_id, round_=round_ if task_id else None):
        try:
            fin = ledger.finalized_args(ev)
            vf = verdicts.parse(store.get(str(fin["verdictCid"])))
        except FedledgerError:
            continue  # verdict file not reachable: its updates show as PENDING
        for entry in vf.entries:
            judged[entry.update_id] = entry
    rows: list[dict[str, Any]] = []
    for rec in ledger.update_records(task_id, round_ if task_id else None):
        if round_ is not None and rec.round != round_:
            continue
        if who is not None and rec.contributor != who:
            continue
        e: verdicts.VerdictEntry | None = judged.get(rec.update_id)
        st = e.verdict.name if e else "PENDING"
        if status is not None and st != status:
            continue
        rows.append(
            {
                **rec.columns(),
                "status": st,
                "reason": e.reason if e else None,
                "score": e.score if e else None,
            }
        )
    rows.sort(key=lambda r: -r["update_id"])
    return rows[:limit]
