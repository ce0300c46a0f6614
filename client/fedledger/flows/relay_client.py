"""The contributor's side of a relayer's REST API (``fedledger serve --relay-key``): hand it a
signed update and its bytes, ask what became of it.

The relayer is another party: every answer is parsed within bounds
(:mod:`fedledger.safejson`), and every failure is a :class:`FedledgerError` that says what to
do.  :class:`fedledger.flows.session.Task` calls these for ``submit(relay=URL)``,
``relay_status`` and ``wait_relayed``.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from fedledger import safejson
from fedledger.chain.ledger import SignedUpdate
from fedledger.errors import FedledgerError, FormatError
from fedledger.flows.relay import RelayStatus

__all__ = ["post", "status"]

TIMEOUT_S = 60.0
MAX_ANSWER = 1 << 20


def post(url: str, su: SignedUpdate, data: bytes) -> None:
    """``POST /relay/updates``: the signed update and the update file's bytes; raises with the
    relayer's reason if it refuses them."""
    body = {"signed": su.to_json(), "content": base64.b64encode(data).decode()}
    try:
        resp = httpx.post(url.rstrip("/") + "/relay/updates", json=body, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise _down(url, exc) from exc
    if resp.status_code >= 400:
        try:
            detail = str(_answer(resp.content, url).get("detail"))
        except FedledgerError:
            detail = resp.text
        raise FedledgerError(
            f"relay {url} refused the update ({resp.status_code}): {detail[:500]}",
            hint="the relay names why; submit without relay= to pay the gas yourself",
        )
    _answer(resp.content, url)


def status(url: str, contributor: str, task_id: int, round_: int) -> RelayStatus:
    """``GET /relay/updates/{contributor}/{task}/{round}``: the relayer's record of one update."""
    path = f"{url.rstrip('/')}/relay/updates/{contributor}/{task_id}/{round_}"
    try:
        resp = httpx.get(path, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise _down(url, exc) from exc
    doc = _answer(resp.content, url)
    if resp.status_code >= 400:
        raise FedledgerError(
            f"relay {url} has no record of the update "
            f"({resp.status_code}: {str(doc.get('detail'))[:300]})"
        )
    try:
        return RelayStatus(
            contributor=str(doc["contributor"]),
            task_id=int(doc["taskId"]),
            round=int(doc["round"]),
            cid=str(doc["cid"]),
            state=doc["state"],
            update_id=None if doc.get("updateId") is None else int(doc["updateId"]),
            tx_hash=None if doc.get("txHash") is None else str(doc["txHash"]),
            reason=None if doc.get("reason") is None else str(doc["reason"]),
            error=None if doc.get("error") is None else str(doc["error"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"relay {url} answered a malformed status: {exc}") from exc


def _down(url: str, exc: Exception) -> FedledgerError:
    return FedledgerError(
        f"relay {url} did not answer: {exc}",
        hint="is `fedledger serve --relay-key KEY` running there? or submit without relay=",
    )


def _answer(body: bytes, url: str) -> dict[str, Any]:
    doc = safejson.loads(body, what=f"answer from relay {url}", max_bytes=MAX_ANSWER, max_depth=8)
    if not isinstance(doc, dict):
        raise FormatError(f"relay {url} answered {type(doc).__name__}, not a JSON object")
    return doc
