"""Relaying signed updates: the checks a relayer runs, and the one batch relayer that sends them.

A relayer submits EIP-712 signed updates for their contributors in ``submitBatch``
batches and pays the gas.  Every signature is checked here before anything is sent
(:func:`check_signed`; the contract checks it again), so a forged, expired or foreign-chain
signature costs the relayer no gas.

:class:`BatchRelayer` is the only relayer: ``fedledger relay`` drives it synchronously
(:meth:`BatchRelayer.send_all`), the relay service of ``fedledger serve``
(:mod:`fedledger_backend.relay_service`) runs its worker thread with a durable journal.

Every entry handed to it ends ``submitted`` (update id, tx hash) or ``failed`` (reason, and the
contract's error name); none is dropped.  One ``submitBatch`` goes per task and round, and the
contract never reverts a batch for one entry (ledger v2): it records the entries it can and
skips the others with an ``EntrySkipped`` event naming the error a single submission would have
met.  So a copied signature landed first by someone else, an expired one or a full round cost
only their own entry:

- a skipped ``DuplicateSubmission`` whose very update is on chain (landed by someone who copied
  its signature, or sent by this relayer before a restart) becomes ``submitted`` with the id and
  tx hash of the event that recorded it; any other skipped entry is ``failed`` with the reason;
- a batch that does not land at all (no receipt, the node failed) is sent again, up to
  ``max_attempts`` times, then each remaining entry alone; a batch-level revert (the round was
  sealed or moved on meanwhile) fails its entries with the contract's reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.constants import SECPK1_N

from fedledger.chain.ledger import (
    Ledger,
    SignedUpdate,
    decode_revert,
    full_signature,
    to_hex,
)
from fedledger.errors import ChainError, ConfigError, ContractRevert, FedledgerError

log = logging.getLogger("fedledger.relay")


class BadSignedUpdate(FedledgerError):
    """A signed update that would revert: wrong signer, expired, malleable signature..."""

    exit_code = 8
    http_status = 422


# The largest low-s value (EIP-2, and what OpenZeppelin's ECDSA accepts): half the curve order.
SECP256K1_HALF_N = SECPK1_N // 2


def check_signed(ledger: Ledger, su: SignedUpdate, *, now: int | None = None) -> None:
    """Raise BadSignedUpdate unless ``su`` is validly signed by its contributor and not expired."""
    now = int(time.time()) if now is None else now
    if su.deadline < now:
        raise BadSignedUpdate(f"signed update expired at {su.deadline} (now {now})")
    if len(su.signature) not in (64, 65):
        raise BadSignedUpdate(f"signature must be 64 or 65 bytes, got {len(su.signature)}")
    if len(su.signature) == 65:
        s = int.from_bytes(su.signature[32:64], "big")
        if s > SECP256K1_HALF_N:
            raise BadSignedUpdate("malleable signature (high s) rejected")
    try:
        typed = ledger.typed_update(
            su.task_id, su.round, su.content_hash, su.cid, su.num_samples, su.deadline,
            su.tensor_root,
        )  # fmt: skip
        recovered = Account.recover_message(
            encode_typed_data(full_message=typed), signature=full_signature(su.signature)
        )
    except Exception as exc:  # noqa: BLE001 - any failure to recover is a bad signature
        raise BadSignedUpdate(f"signature does not recover: {exc}") from exc
    if recovered.lower() != su.contributor.lower():
        raise BadSignedUpdate(
            f"signature was made by {recovered}, not by the contributor {su.contributor}"
        )


def simulate(ledger: Ledger, call: dict[str, Any]) -> ContractRevert | None:
    """``eth_call`` ``call`` on the latest block: None if it would succeed, else the contract's
    named error.  Transport failures raise :class:`ChainError`."""
    try:
        res = ledger.w3.provider.make_request("eth_call", [call, "latest"])  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - transport failures of any kind
        raise ChainError(f"eth_call failed: {type(exc).__name__}") from exc
    err = res.get("error") if isinstance(res, dict) else None
    if not err:
        return None
    data = err.get("data") if isinstance(err, dict) else None
    if isinstance(data, dict):
        data = data.get("data")
    rev = decode_revert(data) if isinstance(data, str) else None
    if rev is None:
        message = err.get("message") if isinstance(err, dict) else err
        raise ChainError(f"eth_call failed: {message}")
    return rev


BATCH_FAULTS = frozenset({"UnknownTask", "WrongRound", "RoundAlreadySealed", "BadBatch"})
"""Errors ``submitBatch`` reverts with for the batch as a whole (not one entry)."""

SKIP_REASONS = {
    "BadSignature": "the signature is not the contributor's: sign the update again",
    "Expired": "the signature's deadline passed before the batch landed: sign it again",
    "NotContributor": "the contributor is not admitted to this task: ask its owner",
    "DuplicateSubmission": "the contributor already has an update in this round",
    "TooManySamples": "numSamples is above the task's maxSamples",
    "ZeroSamples": "numSamples is 0: an update stands for at least one sample",
    "RoundFull": "the round was full when the batch landed: submit to the next round",
    "TaskExhausted": "the task has recorded all the updates it can number",
}
"""What a contributor is told for each entry the contract skipped (``EntrySkipped``)."""


# -- what became of a relayed update ----------------------------------------------------------

RelayState = Literal["queued", "submitted", "failed"]
RELAY_STATES: tuple[RelayState, ...] = ("queued", "submitted", "failed")

EntryKey = tuple[str, int, int]
"""(contributor address in lower case, task id, round): one relayed update per key."""


def entry_key(su: SignedUpdate) -> EntryKey:
    return (su.contributor.lower(), su.task_id, su.round)


ALREADY_ON_CHAIN = (
    "already on chain, sent by this relayer before (e.g. before a restart): not sent again"
)
LANDED_BY_OTHER = (
    "already on chain: another sender landed this signed update first ({sender}); not sent again"
)


@dataclass
class RelayStatus:
    """What became of one relayed update (``GET /relay/updates/{contributor}/{task}/{round}``)."""

    contributor: str
    task_id: int
    round: int
    cid: str
    state: RelayState = "queued"
    update_id: int | None = None
    tx_hash: str | None = None
    reason: str | None = None
    error: str | None = None


class AlreadyRelayed(ContractRevert):
    """This relayer already holds the update of this (task, round, contributor)."""

    def __init__(self, su: SignedUpdate, state: RelayState = "queued") -> None:
        super().__init__(
            "DuplicateSubmission",
            {"taskId": su.task_id, "round": su.round, "contributor": su.contributor},
            f"DuplicateSubmission(taskId={su.task_id}, round={su.round}, "
            f"contributor={su.contributor}): this update is already {state} through this relay; "
            "follow its status instead of sending it again",
        )


class Journal(Protocol):
    """Where a relayer records outcomes durably (:class:`fedledger_backend.relay_journal.RelayJournal`)."""

    def add(self, su: SignedUpdate) -> bool: ...
    def mark_submitted(
        self, outcomes: list[tuple[EntryKey, int]], tx_hash: str, reason: str | None = None
    ) -> None: ...
    def mark_failed(self, key: EntryKey, reason: str, error: str | None) -> None: ...


@dataclass
class _Entry:
    su: SignedUpdate
    status: RelayStatus


class BatchRelayer:
    """Queues checked signed updates and submits them in ``submitBatch`` batches.

    A worker thread (:meth:`start`) flushes when ``batch_size`` entries wait or the oldest has
    waited ``max_wait_s``; :meth:`send_all` sends a list at once without one.  ``ledger`` must
    carry the relayer's key (it pays the gas).  With a ``journal``, :meth:`put` commits each
    entry there first and every outcome is recorded.  A batch is tried ``max_attempts`` times
    (see the module docstring), pausing ``retry_pause_s`` × attempt between tries.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        batch_size: int = 32,
        max_wait_s: float = 1.0,
        on_done: Callable[[RelayStatus], None] | None = None,
        journal: Journal | None = None,
        max_attempts: int = 3,
        retry_pause_s: float = 0.2,
    ) -> None:
        if not 1 <= batch_size <= 256:
            raise ConfigError("relay batch size must be between 1 and 256")
        if max_attempts < 1:
            raise ConfigError("a relayer needs at least one attempt per batch")
        self.ledger = ledger
        self.sender = ledger._need_sender()
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.on_done = on_done
        self.journal = journal
        self.max_attempts = max_attempts
        self.retry_pause_s = retry_pause_s
        self.batches_sent = 0
        self.attempts_failed = 0
        """Tries of a batch that did not land (reverted on chain, no receipt, node failed)."""
        self._queue: list[_Entry] = []
        self._first_at: float | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return self.sender.address

    # -- the queue ----------------------------------------------------------------------------

    def put(self, su: SignedUpdate, status: RelayStatus) -> None:
        """Queue ``su``.  With a journal it is committed there first, so once this returns the
        update may be acknowledged; :class:`AlreadyRelayed` if the journal already holds it."""
        if self.journal is not None and not self.journal.add(su):
            raise AlreadyRelayed(su)
        with self._cond:
            self._append(_Entry(su, status))

    def requeue(self, su: SignedUpdate, status: RelayStatus) -> bool:
        """Queue an update the journal already holds (after a restart); False if it is queued."""
        key = entry_key(su)
        with self._cond:
            if any(entry_key(e.su) == key for e in self._queue):
                return False
            self._append(_Entry(su, status))
            return True

    def _append(self, entry: _Entry) -> None:
        """Append under ``self._cond``."""
        self._queue.append(entry)
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def send_all(self, updates: Iterable[SignedUpdate]) -> list[RelayStatus]:
        """Check and send ``updates`` now, in batches, without the worker; every status final.
        A bad signature raises :class:`BadSignedUpdate` before anything is sent."""
        entries = []
        for su in updates:
            check_signed(self.ledger, su)
            entries.append(_Entry(su, RelayStatus(su.contributor, su.task_id, su.round, su.cid)))
        for start in range(0, len(entries), self.batch_size):
            self.flush(entries[start : start + self.batch_size])
        return [e.status for e in entries]

    # -- the worker ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None

    def start(self) -> BatchRelayer:
        with self._cond:
            if self._thread is not None:
                return self
            self._stop = False
            self._thread = threading.Thread(target=self._run, daemon=True, name="relay-batcher")
        self._thread.start()
        return self

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the worker; with ``drain`` it first submits what is queued.  Without, queued
        entries are failed, or, with a journal, left ``queued`` there for the next start."""
        with self._cond:
            self._stop = True
            if not drain:
                if self.journal is None:
                    for e in self._queue:
                        self._fail(e, "relayer stopped before submitting", None)
                elif self._queue:
                    log.warning(
                        "relayer stopped with updates queued; they stay in the journal",
                        extra={"queued": len(self._queue)},
                    )
                self._queue = []
                self._first_at = None
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _take_batch(self) -> list[_Entry] | None:
        """Block until a batch is due (or stop); None when stopped with nothing queued."""
        with self._cond:
            while True:
                if self._queue and (
                    self._stop
                    or len(self._queue) >= self.batch_size
                    or time.monotonic() - (self._first_at or 0.0) >= self.max_wait_s
                ):
                    batch = self._queue[: self.batch_size]
                    self._queue = self._queue[self.batch_size :]
                    self._first_at = time.monotonic() if self._queue else None
                    return batch
                if self._stop:
                    return None
                timeout = None
                if self._first_at is not None:
                    timeout = max(0.0, self._first_at + self.max_wait_s - time.monotonic())
                self._cond.wait(timeout)

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            try:
                self.flush(batch)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                log.exception("relay batch failed")
                for e in batch:
                    if e.status.state == "queued":
                        self._fail(
                            e, f"relayer error: {type(exc).__name__}; send the update again", None
                        )

    # -- sending ------------------------------------------------------------------------------

    def flush(self, batch: list[_Entry]) -> None:
        """Submit ``batch``; every entry ends ``submitted`` or ``failed`` (module docstring)."""
        left, why = self._send(batch, self.max_attempts)
        if len(left) > 1:
            log.warning(
                "relay batch did not land after retries; sending its entries one by one",
                extra={"entries": len(left), "error": why.message if why else None},
            )
            alone: list[tuple[_Entry, FedledgerError | None]] = []
            for e in left:
                rest, err = self._send([e], 2)
                alone += [(r, err) for r in rest]
        else:
            alone = [(e, why) for e in left]
        for e, err in alone:
            self._give_up(e, err)

    def _send(
        self, batch: Sequence[_Entry], attempts: int
    ) -> tuple[list[_Entry], FedledgerError | None]:
        """Try to land ``batch`` ``attempts`` times (one ``submitBatch`` per task and round); the
        entries still queued, and why.  The contract skips a bad or already-landed entry and
        records the rest, so one entry never holds up the others."""
        todo = list(batch)
        last: FedledgerError | None = None
        for attempt in range(attempts):
            todo = [e for e in todo if e.status.state == "queued"]
            if not todo:
                return [], None
            if attempt:
                time.sleep(self.retry_pause_s * attempt)
            groups: dict[tuple[int, int], list[_Entry]] = {}
            for e in todo:
                groups.setdefault((e.su.task_id, e.su.round), []).append(e)
            for (task_id, rnd), group in groups.items():
                label = f"submitBatch(task {task_id}, round {rnd}, {len(group)} updates)"
                try:
                    fn = self.ledger.submit_batch_fn([e.su for e in group])
                    receipt = self.sender.wait(self.sender.send(fn, label=label))
                except ContractRevert as exc:
                    if exc.name in BATCH_FAULTS:  # the whole batch's own fault: no retry helps
                        for e in group:
                            self._fail(e, exc.message, exc.name)
                        continue
                    last = exc
                    self.attempts_failed += 1
                    continue
                except FedledgerError as exc:
                    # No receipt, or the node failed: check again on the next attempt.
                    last = exc
                    self.attempts_failed += 1
                    log.warning(
                        "relay batch did not land; trying again",
                        extra={"entries": len(group), "attempt": attempt + 1, "error": exc.message},
                    )
                    continue
                self.batches_sent += 1
                self._settle(group, receipt)
        return [e for e in todo if e.status.state == "queued"], last

    def _settle(self, group: Sequence[_Entry], receipt: Any) -> None:
        """Each entry of a landed batch: recorded (its id), or skipped (why)."""
        tx = to_hex(bytes(receipt["transactionHash"]))
        recorded = {rec.contributor.lower(): rec for rec in self.ledger.records_in(receipt)}
        skipped = {int(s["entry"]): s for s in self.ledger.skipped_in(receipt)}
        done: list[tuple[_Entry, int]] = []
        for i, e in enumerate(group):
            rec = recorded.get(e.su.contributor.lower())
            if rec is not None and i not in skipped:
                done.append((e, rec.update_id))
                continue
            name = str(skipped[i]["reason"]) if i in skipped else "NotRecorded"
            # a full round skips before it checks duplicates: either may be this very update,
            # landed first by someone who copied it
            if name in ("DuplicateSubmission", "RoundFull") and (found := self._on_chain(e.su)):
                self._submitted([(e, found[0])], found[1], self._landed(found[1]))
            else:
                self._fail(e, SKIP_REASONS.get(name, f"the contract skipped it ({name})"), name)
        if done:
            self._submitted(done, tx)

    def _on_chain(self, su: SignedUpdate) -> tuple[int, str] | None:
        """(update id, tx hash) if this very update (same contributor, hash, CID, tensor root
        and samples) is recorded on chain, else None (nothing, or another of the contributor)."""
        who = su.contributor.lower()
        want = (su.content_hash.lower(), su.cid, su.tensor_root.lower(), su.num_samples)
        for rec in self.ledger.update_records(su.task_id, su.round):
            if rec.contributor.lower() != who:
                continue
            same = (rec.content_hash, rec.cid, rec.tensor_root, rec.num_samples) == want
            return (rec.update_id, rec.tx_hash) if same else None
        return None

    def _landed(self, tx_hash: str) -> str:
        """The reason recorded for an update found on chain in ``tx_hash``: sent by whom."""
        try:
            sender = str(self.ledger.w3.eth.get_transaction(tx_hash)["from"])  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - the reason is informative only
            return LANDED_BY_OTHER.format(sender="sender unknown")
        if sender.lower() == self.address.lower():
            return ALREADY_ON_CHAIN
        return LANDED_BY_OTHER.format(sender=sender)

    def _give_up(self, e: _Entry, why: FedledgerError | None) -> None:
        """Settle an entry that did not land after every attempt: on chain after all, or failed."""
        try:
            found = self._on_chain(e.su)
        except FedledgerError:
            found = None
        if found is not None:
            self._submitted([(e, found[0])], found[1], self._landed(found[1]))
            return
        text = why.message if why is not None else "unknown error"
        self._fail(
            e,
            f"not submitted after {self.max_attempts} attempts: {text}; sign the update again "
            "and resend it, or submit it yourself",
            why.name if isinstance(why, ContractRevert) else None,
        )

    # -- outcomes -----------------------------------------------------------------------------

    def _submitted(
        self, done: list[tuple[_Entry, int]], tx: str, reason: str | None = None
    ) -> None:
        """Record that each (entry, update id) of ``done`` is on chain in ``tx``."""
        journal = self.journal
        if journal is not None:
            outcomes = [(entry_key(e.su), uid) for e, uid in done]
            self._record(lambda: journal.mark_submitted(outcomes, tx, reason), tx=tx)
        for e, uid in done:
            e.status.update_id, e.status.tx_hash, e.status.state = uid, tx, "submitted"
            e.status.reason, e.status.error = reason, None
            if self.on_done:
                self.on_done(e.status)

    def _fail(self, e: _Entry, reason: str, error: str | None) -> None:
        journal = self.journal
        if journal is not None:
            key = entry_key(e.su)
            self._record(lambda: journal.mark_failed(key, reason, error), error=error)
        e.status.state, e.status.reason, e.status.error = "failed", reason, error
        if self.on_done:
            self.on_done(e.status)

    @staticmethod
    def _record(write: Callable[[], None], **context: str | None) -> None:
        """Write an outcome to the journal.  A failure here is logged, not raised: the entry
        stays ``queued`` there and is re-checked against the chain on the next start."""
        try:
            write()
        except FedledgerError as exc:
            log.error(
                "relay journal write failed; the entry is re-checked on restart",
                extra={"error": exc.message, **context},
            )
