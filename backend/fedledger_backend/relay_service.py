"""The relay service behind ``POST /relay/updates``: gasless submission for contributors.

A contributor sends its EIP-712 signed update and the update file's bytes; the relayer checks
them, stores the bytes and submits the update on chain in a ``submitBatch`` batch, paying
the gas (:class:`fedledger.flows.relay.BatchRelayer`).  The relay spends its operator's gas and disk, so
it serves only what the operator chose (:class:`RelayPolicy`):

- the tasks this node validates (its validator key is a validator of the task, asked of the
  chain), plus the tasks its operator lists (``--relay-task``, ``FEDLEDGER_RELAY_TASKS``);
  any other task, an attacker's own open task included, is refused (403);
- only contributors the task admitted (403 for others); a stranger to an *open* task that is
  served is relayed only within ``open_budget`` updates per round of that task
  (``--relay-open-budget``, default 0: none);
- within budgets (429 with ``Retry-After``), all token buckets: the sender's IP
  (``ip_burst`` requests, refilled at ``ip_per_s``: the requester's own flood guard); per
  contributor ``address_burst`` updates refilled at ``address_per_s``, and
  ``contributor_bytes_per_hour``; per task ``task_updates_per_hour`` and
  ``task_bytes_per_hour`` (each bucket holds an hour's allowance and refills continuously).

Checks run cheapest first, and nothing is stored, charged or sent until all pass:

1. a duplicate of an update this relay already holds (queued or submitted, in memory or in the
   journal) is 409 before anything else, so replaying a contributor's public signed update
   charges no bucket at all;
2. the sender's IP bucket (429; the client IP is the socket peer unless the peer is a trusted
   proxy: :mod:`fedledger_backend.api.client_ip`);
3. the EIP-712 signature (:func:`fedledger.flows.relay.check_signed`: deadline, 65 bytes, low s, signer)
   — a forged, expired, malleable or foreign-chain signature costs one recovery, no I/O (422);
4. the policy: task served, contributor admitted or within the open budget (403, or 429 when
   the open budget of the round is spent);
5. the contract's own preconditions, by ``eth_call`` of ``submitUpdateFor`` (already on chain,
   current round, round not full or sealed…) — 409 with the contract's error name;
6. ``sha256(content) == contentHash`` and ``compute_cid(content) == cid`` (422), and an update
   file names the signer as its contributor (422: one naming another address, or none, would
   only be judged ``COPIED`` or ``MALFORMED``, :func:`unbound_reason`);
7. the contributor's and the task's budgets, charged all together or not at all (429);

then the bytes are stored and the update is queued (202).  So a duplicate, a refused task or a
stranger never drains a contributor's or a task's budget, and never costs gas or disk.

Durability: with a ``journal_path`` the service keeps a :class:`fedledger_backend.relay_journal.RelayJournal`
(SQLite, WAL, ``synchronous=FULL``).  An update is committed there as ``queued`` before the
route answers 202, and marked ``submitted`` (tx hash, update id) or ``failed`` (reason) when its
batch is settled.  On start, every ``queued`` entry is queued again and goes through the same
simulation; one already on chain (sent before the process died, or landed by someone who
copied its signature) becomes ``submitted`` with its real update id and tx instead of being
sent twice.  A relayer stopped without draining leaves its entries ``queued`` in the journal.
Statuses are answered from memory, else from the journal, so they survive a restart.  Without
a journal the queue lives in memory only, and an acknowledged update is lost if the process
dies.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fedledger.chain.ledger import Ledger, SignedUpdate, encode_call, to_hex
from fedledger.content.cid import compute_cid
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, ContractRevert, FedledgerError, FormatError
from fedledger.flows.relay import (
    ALREADY_ON_CHAIN,
    LANDED_BY_OTHER,
    AlreadyRelayed,
    BatchRelayer,
    RelayStatus,
    check_signed,
    simulate,
)
from fedledger.protocol import codec, committee
from fedledger_backend.relay_journal import EntryKey, JournalEntry, RelayJournal

if TYPE_CHECKING:
    from fedledger.config import Settings

__all__ = [
    "ALREADY_ON_CHAIN",
    "LANDED_BY_OTHER",
    "AlreadyRelayed",
    "BatchRelayer",
    "ContentMismatch",
    "Membership",
    "NotServed",
    "RateLimited",
    "RelayLimits",
    "RelayPolicy",
    "RelayService",
    "RelayStatus",
    "TokenBuckets",
    "ledger_scope",
    "simulate",
    "status_of",
]

log = logging.getLogger("fedledger.relay")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ProxyHeader = Literal["x-forwarded-for", "forwarded"]
OPEN_BUDGET_RETRY_S = 60.0
"""Retry-After of a refusal because a round's open-task budget is spent (a later round)."""


class RateLimited(FedledgerError):
    """Too many requests from one client, or a budget spent; retry after ``retry_after``."""

    http_status = 429

    def __init__(self, message: str, retry_after: float, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ContentMismatch(FedledgerError):
    """The bytes sent are not the ones the signed update commits to."""

    http_status = 422


class NotServed(FedledgerError):
    """This relay does not relay this update: its task is not served, or its contributor is
    not admitted to it (the operator's :class:`RelayPolicy`)."""

    http_status = 403


# -- what the relay serves --------------------------------------------------------------------


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses) as networks; :class:`ConfigError` naming a bad one."""
    out = []
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted proxy {text!r} is not an IP address or CIDR",
                hint="give one like 10.0.0.0/8 or 127.0.0.1 (--trusted-proxy, "
                "FEDLEDGER_TRUSTED_PROXIES)",
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class RelayPolicy:
    """What this relay pays gas and pins bytes for; the default serves nothing.

    ``fedledger serve`` builds it from its settings (:meth:`from_settings`): the tasks its
    validator key validates, ``--relay-task``, ``--relay-open-budget``, ``--trusted-proxy``.
    """

    validators: tuple[str, ...] = ()
    """Serve every task one of these addresses validates (the node's validator key)."""
    tasks: frozenset[int] = frozenset()
    """Serve these tasks as well (``--relay-task``, ``FEDLEDGER_RELAY_TASKS``)."""
    open_budget: int = 0
    """Updates per round of a served *open* task relayed for contributors the task never
    admitted (``--relay-open-budget``); 0 relays none of them."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Peers whose proxy header names the client (``--trusted-proxy``,
    ``FEDLEDGER_TRUSTED_PROXIES``); from any other peer the header is ignored."""
    proxy_header: ProxyHeader = "x-forwarded-for"
    """The header the trusted proxies set (``FEDLEDGER_PROXY_HEADER``): ``x-forwarded-for``
    or RFC 7239 ``forwarded``; only that one is read, so a client cannot add the other."""

    def __post_init__(self) -> None:
        if self.open_budget < 0:
            raise ConfigError("the relay's open-task budget must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings, validator: str | None = None) -> RelayPolicy:
        """The policy of ``fedledger serve``: ``validator`` is its validator key's address."""
        return cls(
            validators=(validator,) if validator else (),
            tasks=frozenset(settings.relay_task_ids),
            open_budget=settings.relay_open_budget,
            trusted_proxies=parse_networks(settings.trusted_proxy_list),
            proxy_header=settings.proxy_header,
        )

    @property
    def serves_any(self) -> bool:
        return bool(self.validators or self.tasks)

    def describe(self) -> str:
        """What is served, in words (for refusals and the startup log)."""
        parts = []
        if self.validators:
            parts.append(f"the tasks validated by {', '.join(self.validators)}")
        if self.tasks:
            parts.append(f"tasks {', '.join(str(t) for t in sorted(self.tasks))}")
        return " and ".join(parts) if parts else "no task"


@dataclass(frozen=True)
class RelayLimits:
    """Request sizes, rates and budgets of the relay endpoint (all configurable)."""

    max_body_bytes: int = 8 << 20
    """Largest ``POST /relay/updates`` body (JSON + base64 content); other routes keep 1 MiB."""
    address_burst: float = 4.0
    """Updates relayed for one contributor in a burst; refilled at ``address_per_s``."""
    address_per_s: float = 0.5
    ip_burst: float = 120.0
    """Requests from one client IP in a burst, whatever their outcome; refilled at ``ip_per_s``."""
    ip_per_s: float = 50.0
    contributor_bytes_per_hour: int = 512 << 20
    """Update bytes relayed (and pinned) for one contributor per hour, all tasks together."""
    task_updates_per_hour: int = 10_000
    """Updates relayed for one task per hour, all contributors together."""
    task_bytes_per_hour: int = 8 << 30
    """Update bytes relayed (and pinned) for one task per hour."""
    max_tracked: int = 100_000
    """Most rate buckets, statuses and cached answers kept in memory; the oldest dropped."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayLimits:
        return cls(
            ip_burst=float(settings.relay_ip_burst),
            ip_per_s=settings.relay_ip_per_s,
            task_updates_per_hour=settings.relay_task_updates_per_hour,
            task_bytes_per_hour=settings.relay_task_mib_per_hour << 20,
            contributor_bytes_per_hour=settings.relay_contributor_mib_per_hour << 20,
        )


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens, refilled at ``per_s``; memory bounded."""

    def __init__(
        self,
        burst: float,
        per_s: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.per_s, self.max_keys, self.clock = burst, per_s, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.per_s)

    def _wait_for(self, level: float, cost: float) -> float:
        if cost > self.burst or self.per_s <= 0:
            return math.inf
        return (cost - level) / self.per_s

    def wait(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``key`` has ``cost`` tokens (0 if it has them now); takes nothing."""
        with self._lock:
            level = self._level(key, self.clock())
        return 0.0 if level >= cost else self._wait_for(level, cost)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0 on success, else the seconds to wait (nothing taken)."""
        with self._lock:
            now = self.clock()
            level = self._level(key, now)
            if level < cost:
                return self._wait_for(level, cost)
            self._set(key, level - cost, now)
            return 0.0

    def refund(self, key: str, cost: float = 1.0) -> None:
        """Give back tokens taken for something that was not done after all."""
        with self._lock:
            now = self.clock()
            self._set(key, min(self.burst, self._level(key, now) + cost), now)

    def _set(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


class Membership:
    """The chain's answers to "does X validate task T", "is C admitted to T", "is T open",
    cached: roles are never revoked and a task's ``open`` never changes, so a yes (and
    ``open``) is kept; a no is asked again after ``ttl_s`` (a role may be granted since)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        ttl_s: float = 30.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger, self.ttl_s, self.max_keys, self.clock = ledger, ttl_s, max_keys, clock
        self._cache: OrderedDict[tuple[str, int, str], tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _ask(self, key: tuple[str, int, str], ask: Callable[[], bool], *, final: bool) -> bool:
        now = self.clock()
        with self._lock:
            held = self._cache.get(key)
        if held is not None and (held[0] or final or now - held[1] < self.ttl_s):
            return held[0]
        answer = ask()
        with self._lock:
            self._cache[key] = (answer, now)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_keys:
                self._cache.popitem(last=False)
        return answer

    def validates(self, task_id: int, who: str) -> bool:
        key = ("validator", task_id, who.lower())
        return self._ask(key, lambda: self.ledger.is_validator(task_id, who), final=False)

    def admitted(self, task_id: int, who: str) -> bool:
        key = ("contributor", task_id, who.lower())
        return self._ask(key, lambda: self.ledger.is_contributor(task_id, who), final=False)

    def is_open(self, task_id: int) -> bool:
        key = ("open", task_id, "")
        return self._ask(key, lambda: bool(self.ledger.get_task(task_id)["open"]), final=True)


# -- statuses ---------------------------------------------------------------------------------


def status_of(entry: JournalEntry) -> RelayStatus:
    """The status the journal records for ``entry`` (after a restart)."""
    su = entry.update
    return RelayStatus(
        su.contributor,
        su.task_id,
        su.round,
        su.cid,
        state=entry.state,
        update_id=entry.update_id,
        tx_hash=entry.tx_hash,
        reason=entry.reason,
        error=entry.error,
    )


def unbound_reason(content: bytes, signer: str) -> str | None:
    """Why validators would not credit ``signer`` for ``content``, if its header says so: an
    update file that names another contributor (``COPIED``) or none (``MALFORMED``).  Only the
    header is read, within the codec's bounds; bytes that are no update file at all are the
    validators' to judge.  A private task's envelope (:mod:`fedledger.protocol.committee`) names
    its sender in its clear header: one sealed for another address would be ``MALFORMED``."""
    if committee.is_envelope(content):
        try:
            sender = committee.read_header(content).contributor
        except FormatError:
            return None  # the validators' to judge
        if sender != signer.lower():
            return (
                f"the envelope was sealed for contributor {sender}, not its signer "
                f"{signer.lower()}: it would be judged MALFORMED"
            )
        return None
    try:
        meta = codec.parse_header(content, len(content)).metadata
    except (FormatError, ValueError, OverflowError):
        return None
    if meta.get(codec.K_KIND) != "update":
        return None
    named = meta.get(codec.K_CONTRIBUTOR)
    if named is None:
        return (
            f"the update file names no contributor ({codec.K_CONTRIBUTOR}): it would be MALFORMED"
        )
    if named.lower() != signer.lower():
        return (
            f"the update file names contributor {named.lower()[:42]}, not its signer "
            f"{signer.lower()}: it would be judged COPIED"
        )
    return None


def ledger_scope(ledger: Ledger) -> str:
    """The journal scope of ``ledger``: its chain id and contract address."""
    return f"{ledger.chain_id}:{ledger.address.lower()}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


# -- the service ------------------------------------------------------------------------------


@dataclass
class RelayService:
    """The checks and bookkeeping of ``POST /relay/updates``; thread-safe.

    ``ledger`` carries the relayer's key; ``store`` keeps the update bytes for the validators.
    ``policy`` says what is served (the default: nothing).  ``journal_path``, if given, is the
    SQLite file of :class:`RelayJournal` that makes an acknowledged update survive a crash (see
    the module docstring); None keeps everything in memory (tests and tools that do not need
    durability).
    """

    ledger: Ledger
    store: ContentStore
    limits: RelayLimits = field(default_factory=RelayLimits)
    batch_size: int = 32
    max_wait_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    journal_path: Path | None = None
    policy: RelayPolicy = field(default_factory=RelayPolicy)

    def __post_init__(self) -> None:
        lim = self.limits

        def buckets(burst: float, per_s: float) -> TokenBuckets:
            return TokenBuckets(burst, per_s, max_keys=lim.max_tracked, clock=self.clock)

        hour = 3600.0
        self.by_ip = buckets(lim.ip_burst, lim.ip_per_s)
        self.by_address = buckets(lim.address_burst, lim.address_per_s)
        # Budgets per hour: a bucket holds an hour's allowance and refills continuously.
        self.address_bytes = buckets(
            lim.contributor_bytes_per_hour, lim.contributor_bytes_per_hour / hour
        )
        self.task_updates = buckets(lim.task_updates_per_hour, lim.task_updates_per_hour / hour)
        self.task_bytes = buckets(lim.task_bytes_per_hour, lim.task_bytes_per_hour / hour)
        self.membership = Membership(self.ledger, max_keys=lim.max_tracked, clock=self.clock)
        self.journal = (
            RelayJournal(self.journal_path, ledger_scope(self.ledger))
            if self.journal_path is not None
            else None
        )
        self.relayer = BatchRelayer(
            self.ledger,
            batch_size=self.batch_size,
            max_wait_s=self.max_wait_s,
            journal=self.journal,
        )
        self._statuses: OrderedDict[tuple[str, int, int], RelayStatus] = OrderedDict()
        self._open_used: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._lock = threading.Lock()
        self._budget_lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def start(self) -> RelayService:
        """Start the batch worker, first queueing again what the journal holds as ``queued``."""
        if not self.relayer.running:
            self._recover()
            log.info(
                "relay serves %s",
                self.policy.describe(),
                extra={"open_budget": self.policy.open_budget},
            )
            if not self.policy.serves_any:
                log.warning(
                    "the relay serves no task: run it with a validator key (--key), or name "
                    "tasks with --relay-task / FEDLEDGER_RELAY_TASKS"
                )
        self.relayer.start()
        return self

    def stop(self) -> None:
        self.relayer.stop()

    def close(self) -> None:
        """Stop (draining the queue) and close the journal."""
        self.stop()
        if self.journal is not None:
            self.journal.close()

    def _recover(self) -> int:
        """Queue every entry the journal holds as ``queued``; the worker re-simulates each."""
        if self.journal is None:
            return 0
        n = 0
        for entry in self.journal.queued():
            su = entry.update
            status = RelayStatus(su.contributor, su.task_id, su.round, su.cid)
            if not self.relayer.requeue(su, status):
                continue  # already in this process's queue
            with self._lock:
                self._statuses[entry.key] = status
                self._statuses.move_to_end(entry.key)
                self._evict()
            n += 1
        if n:
            self._count("recovered", n)
            log.info(
                "relay journal: queued again the updates acknowledged before a restart",
                extra={"recovered": n},
            )
        return n

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + n

    @staticmethod
    def _key(contributor: str, task_id: int, round_: int) -> EntryKey:
        return (contributor.lower(), task_id, round_)

    def status(self, contributor: str, task_id: int, round_: int) -> RelayStatus | None:
        """What became of the update of this key: from memory, else from the journal."""
        key = self._key(contributor, task_id, round_)
        with self._lock:
            held = self._statuses.get(key)
        if held is not None or self.journal is None:
            return held
        entry = self.journal.get(key)
        return None if entry is None else status_of(entry)

    # -- the checks, in order -----------------------------------------------------------------

    def submit(self, su: SignedUpdate, content: bytes, client_ip: str) -> RelayStatus:
        """Check ``su`` and ``content`` (see the module docstring), store and queue them."""
        self._refuse_held(su)
        wait = self.by_ip.take(client_ip)
        if wait > 0:
            self._count("rate_limited")
            raise RateLimited(
                f"too many requests from {client_ip}", wait, hint="retry after Retry-After"
            )
        check_signed(self.ledger, su)
        stranger = self._admit(su)
        key = self._key(su.contributor, su.task_id, su.round)
        status = RelayStatus(su.contributor, su.task_id, su.round, su.cid)
        with self._lock:
            held = self._statuses.get(key)
            if held is not None and held.state != "failed":
                self._count("duplicate")
                raise AlreadyRelayed(su, held.state)
            self._statuses[key] = status  # reserved: a concurrent twin now gets 409
            self._statuses.move_to_end(key)
            self._evict()
        try:
            rev = self._precheck(su)
            if rev is not None:
                if rev.name == "DuplicateSubmission":
                    self._count("duplicate")
                raise rev
            if codec.sha256_hex(content) != su.content_hash.lower():
                raise ContentMismatch(
                    "sha256 of the content does not match the signed contentHash",
                    hint="send the bytes of the file you signed",
                )
            if compute_cid(content) != su.cid:
                raise ContentMismatch(
                    "the content's CID does not match the signed cid",
                    hint="send the bytes of the file you signed",
                )
            unbound = unbound_reason(content, su.contributor)
            if unbound is not None:
                raise ContentMismatch(
                    unbound, hint="build the update with your own address (this fedledger)"
                )
            refund = self._charge(su, len(content), stranger)
            try:
                self.store.put(content)
                self.relayer.put(su, status)  # committed to the journal, if any, before the 202
            except BaseException:
                refund()
                raise
        except BaseException:
            with self._lock:
                if self._statuses.get(key) is status:
                    del self._statuses[key]
            raise
        self._count("queued")
        return status

    def _refuse_held(self, su: SignedUpdate) -> None:
        """409 for an update this relay already holds (queued or submitted), before any bucket
        is charged: a replayed signature costs its contributor nothing."""
        held = self.status(su.contributor, su.task_id, su.round)
        if held is not None and held.state != "failed":
            self._count("duplicate")
            raise AlreadyRelayed(su, held.state)

    def _admit(self, su: SignedUpdate) -> bool:
        """Raise :class:`NotServed` unless the policy serves ``su``; True if its contributor is
        a stranger to an open task (relayed only within the open budget)."""
        policy, task, who = self.policy, su.task_id, su.contributor
        served = task in policy.tasks or any(
            self.membership.validates(task, v) for v in policy.validators
        )
        if not served:
            self._count("not_served")
            raise NotServed(
                f"this relay does not serve task {task}: it serves {policy.describe()}",
                hint="submit the update yourself (with gas), use a relay that serves this task, "
                "or ask this relay's operator to add it (--relay-task)",
            )
        if self.membership.admitted(task, who):
            return False
        if not self.membership.is_open(task):
            self._count("not_admitted")
            raise NotServed(
                f"{who} is not an admitted contributor of task {task}",
                hint="ask the task owner to admit you (fedledger task add-contributor)",
            )
        if policy.open_budget <= 0:
            self._count("not_admitted")
            raise NotServed(
                f"task {task} is open and {who} was never admitted to it: this relay relays "
                "updates of contributors it did not admit only within a budget its operator "
                "sets (--relay-open-budget), and that budget is 0",
                hint="ask the task owner to admit you, or submit the update yourself (with gas)",
            )
        with self._budget_lock:
            used = self._open_used.get((task, su.round), 0)
        if used >= policy.open_budget:
            raise self._open_spent(su)
        return True

    def _open_spent(self, su: SignedUpdate) -> RateLimited:
        self._count("rate_limited")
        return RateLimited(
            f"this relay's budget for contributors not admitted to open task {su.task_id} is "
            f"spent for round {su.round} ({self.policy.open_budget} updates)",
            OPEN_BUDGET_RETRY_S,
            hint="send your update of a later round, or submit it yourself (with gas)",
        )

    def _precheck(self, su: SignedUpdate) -> ContractRevert | None:
        try:
            fn = self.ledger.contract.functions.submitUpdateFor(*su.as_tuple())
        except (ConfigError, FormatError) as exc:  # a CID the chain cannot record
            raise ContentMismatch(exc.message, hint=exc.hint) from exc
        call = {
            "from": self.relayer.address,
            "to": self.ledger.address,
            "data": to_hex(encode_call(fn)),
        }
        return simulate(self.ledger, call)

    def _charge(self, su: SignedUpdate, size: int, stranger: bool) -> Callable[[], None]:
        """Charge the contributor's and the task's budgets all together (429 and nothing charged
        if one is short); returns the refund, for an update that is not queued after all."""
        lim, who, task = self.limits, su.contributor.lower(), str(su.task_id)
        later = "retry after Retry-After, or submit the update yourself (with gas)"
        needs = [
            (self.by_address, who, 1.0, f"too many relayed updates for {su.contributor}"),
            (
                self.address_bytes,
                who,
                float(size),
                f"{su.contributor} has spent its relay budget of "
                f"{_mib(lim.contributor_bytes_per_hour)} per hour",
            ),
            (
                self.task_updates,
                task,
                1.0,
                f"the relay's budget for task {su.task_id} is spent: "
                f"{lim.task_updates_per_hour} updates per hour",
            ),
            (
                self.task_bytes,
                task,
                float(size),
                f"the relay's budget for task {su.task_id} is spent: "
                f"{_mib(lim.task_bytes_per_hour)} per hour",
            ),
        ]
        round_key = (su.task_id, su.round)
        with self._budget_lock:
            for buckets, key, cost, why in needs:
                wait = buckets.wait(key, cost)
                if wait > 0:
                    self._count("rate_limited")
                    raise RateLimited(why, wait, hint=later)
            if stranger and self._open_used.get(round_key, 0) >= self.policy.open_budget:
                raise self._open_spent(su)
            for buckets, key, cost, _ in needs:
                buckets.take(key, cost)
            if stranger:
                self._open_used[round_key] = self._open_used.get(round_key, 0) + 1
                self._open_used.move_to_end(round_key)
                while len(self._open_used) > self.limits.max_tracked:
                    self._open_used.popitem(last=False)

        def refund() -> None:
            with self._budget_lock:
                for buckets, key, cost, _ in needs:
                    buckets.refund(key, cost)
                if stranger and self._open_used.get(round_key, 0) > 0:
                    self._open_used[round_key] -= 1

        return refund

    def _evict(self) -> None:
        """Drop the oldest finished statuses beyond ``max_tracked`` (queued ones stay)."""
        excess = len(self._statuses) - self.limits.max_tracked
        if excess <= 0:
            return
        for k in [k for k, s in self._statuses.items() if s.state != "queued"][:excess]:
            del self._statuses[k]
