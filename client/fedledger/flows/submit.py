"""Submitting updates: encode → store → ``submitUpdate``; or sign (EIP-712) for a relayer.

The CLI's ``submit`` and ``train``, the demo's contributors and the tests all come here.
Contributions are checked before anything is sent: the file must decode as an update for this
task, this round and this global model, so a contributor never pays gas for an update that
validators would reject as malformed, nor one that names another contributor (an update file
names the address that submits it, and validators judge any other submitter's copy ``COPIED``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from eth_account.signers.local import LocalAccount

from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, FormatError
from fedledger.flows.task import Published, TaskState, publish
from fedledger.protocol import codec


@dataclass(frozen=True)
class Submitted:
    update_id: int
    task_id: int
    round: int
    content_hash: str
    cid: str
    num_samples: int
    tx_hash: str


def encode(
    state: TaskState,
    delta: Mapping[str, np.ndarray],
    *,
    contributor: str,
    encoding: codec.Encoding = "fp32",
    extra: Mapping[str, str] | None = None,
    residual: codec.Residual | None = None,
) -> bytes:
    """The update file for ``delta`` against the task's current global model, bound to
    ``contributor``: the address that will submit it (or sign it for a relayer)."""
    return codec.encode_update(
        delta,
        task_id=state.task_id,
        round=state.current_round,
        base_hash=state.global_hash,
        contributor=contributor,
        encoding=encoding,
        extra=extra,
        residual=residual,
    )


def check_update(state: TaskState, data: bytes, *, contributor: str) -> codec.Decoded:
    """Refuse an update file that does not belong to this task's current round and model, or
    that does not name ``contributor`` (the address about to submit or sign it)."""
    dec = codec.decode(data, kind="update", copy=False)  # checked, not kept: no copy
    named = dec.contributor
    if named is None:
        raise FormatError(
            f"update file names no contributor ({codec.K_CONTRIBUTOR}); validators judge it "
            "MALFORMED",
            hint="rebuild it with this fedledger (`fedledger train`, or codec.encode_update "
            "with contributor=your address)",
        )
    if named != contributor.lower():
        raise FormatError(
            f"update file names contributor {named}, but it would be submitted by "
            f"{contributor.lower()}; validators judge it COPIED",
            hint="submit it with the key of the contributor it names, or rebuild it with "
            "contributor=your address",
        )
    if dec.task_id != state.task_id or dec.round != state.current_round:
        raise FormatError(
            f"update file is for task {dec.task_id} round {dec.round}, "
            f"but task {state.task_id} is in round {state.current_round}",
            hint="train again against the current global model (`fedledger train`)",
        )
    if dec.base_hash != state.global_hash:
        raise FormatError(
            f"update file was made against model {dec.base_hash}, "
            f"the task's global model is {state.global_hash}",
            hint="train again against the current global model",
        )
    return dec


def _check_samples(state: TaskState, num_samples: int) -> None:
    """The contract's rule, checked before anything is stored or sent: 1 to the task's
    ``maxSamples``."""
    if not 0 < num_samples < 2**64:
        raise ConfigError(f"numSamples must be a positive 64-bit integer, got {num_samples}")
    cap = state.config.max_samples
    if num_samples > cap:
        raise ConfigError(
            f"numSamples {num_samples} is above task {state.task_id}'s maxSamples {cap}",
            hint=f"claim at most {cap}: the task caps the weight one update may claim",
        )


def store_update(
    store: ContentStore, state: TaskState, data: bytes, *, contributor: str
) -> Published:
    check_update(state, data, contributor=contributor)
    return publish(store, data)


def _submitter(ledger: Ledger) -> str:
    if ledger.sender is None:
        raise ConfigError(
            "submitting an update sends a transaction and needs a key", hint="pass --key"
        )
    return ledger.sender.address


def submit(
    ledger: Ledger, store: ContentStore, state: TaskState, data: bytes, num_samples: int
) -> Submitted:
    """Store the update and record it on chain; returns its global update id."""
    _check_samples(state, num_samples)
    pub = store_update(store, state, data, contributor=_submitter(ledger))
    uid = ledger.submit_update(
        state.task_id, state.current_round, pub.content_hash, pub.cid, num_samples
    )
    return Submitted(
        uid, state.task_id, state.current_round, pub.content_hash, pub.cid, num_samples, ""
    )


def sign(
    ledger: Ledger,
    account: LocalAccount,
    store: ContentStore,
    state: TaskState,
    data: bytes,
    num_samples: int,
    *,
    valid_for_s: int = 3600,
) -> SignedUpdate:
    """Store the update and sign it for a relayer (gasless for the contributor)."""
    _check_samples(state, num_samples)
    pub = store_update(store, state, data, contributor=account.address)
    deadline = int(time.time()) + valid_for_s
    return ledger.sign_update(
        account,
        state.task_id,
        state.current_round,
        pub.content_hash,
        pub.cid,
        num_samples,
        deadline,
    )
