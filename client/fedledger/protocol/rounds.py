"""Judging a round: one function that validators run to attest and re-verifiers run to check.

:func:`judge_round` takes the round's updates (as the chain lists them), the global model they
were trained against and the task spec, and returns every update's verdict, the new global model
file and the verdict file, with their hashes, CIDs and the verdict Merkle root.  It is
deterministic: the same inputs give the same bytes on any machine (fixed update order, the
deterministic kernels of :mod:`fedledger.protocol.aggregation`, canonical encodings), which is what lets
several validators agree and anyone recompute ``aggregateHash``.

Order of checks per update (the first failure decides; see also :mod:`fedledger.protocol.screening`):
``LATE`` (block time after the round deadline) → ``UNAVAILABLE`` (not fetched within the spec's
``fetch_timeout_s``) → ``HASH_MISMATCH`` (sha256 of the bytes differs from the on-chain
``contentHash``: checked *before* the bytes are parsed) → ``MALFORMED`` (not a valid update file
for this task, round and base model, or naming no contributor) → ``COPIED`` (the file names
another contributor than the address that submitted it) → the screen.

An update file names its contributor (``fedledger.contributor``, :mod:`fedledger.protocol.codec`) and
``contentHash`` covers it, so copying another's pending ``(contentHash, cid)`` and landing it
first earns the copier ``COPIED``, while the contributor the file names is judged on its merits:
among updates of the same ``contentHash`` (same bytes, so the file names at most one of their
submitters) only the one it names can be accepted, whichever landed first.

Fixed-point tasks (a ``fixed_point`` section in the spec, :mod:`fedledger.protocol.fixed_deltas`)
run the same pipeline on int32 vectors.  An ``int32`` file declaring another format than the
task's (or any ``int32`` file for a float task) is ``MALFORMED`` with the file checks; a float
file is quantized, and one with a coordinate out of the int32 range is ``OUT_OF_RANGE`` right
after them (a float file whose shapes or values are wrong is left to the screen's
``SHAPE_MISMATCH`` and ``NON_FINITE``).  The screen judges the dequantized float32 vectors, the
exact integer rules (:func:`fedledger.protocol.exact_rules.aggregate_exact`) aggregate the
integers, and the new global model is ``global + dequantize(aggregate)`` in float32, encoded
exactly as for a float task: the aggregate's hash and CID go on chain as they always have.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
from nacl.public import PrivateKey

from fedledger.content.cid import CID, DAG_PB, RAW, compute_cid, parse_cid
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, FormatError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import (
    codec,
    committee,
    exact_rules,
    fixed_deltas,
    reference,
    screening,
    verdicts,
)
from fedledger.protocol import history as prior_round
from fedledger.protocol.fixedpoint import FixedPointFormat, FixedPointRangeError, Int32Vector
from fedledger.protocol.privacy_policy import (
    DPPolicy,
    declared_dp_problem,
    dp_screening,
    norm_band_problem,
)
from fedledger.protocol.taskspec import TaskSpec
from fedledger.protocol.tensor_root import tensor_root
from fedledger.protocol.verdicts import Verdict
from fedledger.redact import public_reason, public_text

ZERO_ROOT = "0x" + "00" * 32
"""The tensor root of a float task's updates and aggregates: none (zero)."""


@dataclass(frozen=True)
class UpdateRef:
    """An update as the chain recorded it."""

    update_id: int
    contributor: str
    content_hash: str
    cid: str
    num_samples: int
    submitted_at: int = 0
    tensor_root: str = ZERO_ROOT
    """The ``tensorRoot`` the chain recorded with the update (hex); zero for a float task."""
    block_number: int = 0
    """The block that recorded it (a private task's envelopes must name every committee key
    registered in an earlier block, :func:`judge_round`)."""


@dataclass(frozen=True)
class Judgement:
    verdict_file: verdicts.VerdictFile
    verdict_bytes: bytes
    verdict_cid: str
    root: bytes
    aggregate: bytes
    aggregate_hash: str
    aggregate_cid: str
    new_global: dict[str, np.ndarray]
    aggregate_tensor_root: str = ZERO_ROOT
    """The tensor root of the round's exact int32 aggregate (fixed-point tasks; zero else)."""


Fetcher = Callable[[UpdateRef], bytes]


MAX_FETCHERS = 64
"""Updates of one round fetched at once (a round holds at most ``maxUpdates`` of them)."""


def _fetch_all(
    store: ContentStore,
    refs: Sequence[UpdateRef],
    timeout_s: float,
    max_bytes: int,
    fetch: Fetcher | None,
) -> dict[int, tuple[bytes, str] | str]:
    """Bytes and their sha256 per update id (hashed on the fetching threads), or the reason
    the update could not be fetched.

    ``timeout_s`` bounds the whole round's fetching, not each update's: updates whose bytes
    never come (a task creator chooses the timeout, a contributor the CID) cost one timeout
    together, never one each, and every update is fetched at once (up to
    :data:`MAX_FETCHERS`), so hanging ones do not queue honest ones behind them."""

    def get(r: UpdateRef) -> tuple[bytes, str]:
        if fetch is not None:
            data = fetch(r)
            return data, codec.sha256_hex(data)
        try:
            return store.get_hashed(r.cid, max_bytes=max_bytes, expect=r.content_hash)
        except Exception:
            # The chain rebuilds a CID from its digest: dag-pb whenever the digest is not the
            # claimed contentHash.  A single-block file whose claimed hash is false is then
            # found as the raw block of that digest, and judged HASH_MISMATCH by its bytes.
            twin = raw_twin(r.cid)
            if twin is None:
                raise
            try:
                return store.get_hashed(twin, max_bytes=max_bytes)
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                pass
            raise

    out: dict[int, tuple[bytes, str] | str] = {}
    if not refs:
        return out
    pool = ThreadPoolExecutor(max_workers=min(MAX_FETCHERS, len(refs)), thread_name_prefix="fetch")
    deadline = time.monotonic() + timeout_s
    try:
        futs = {r.update_id: pool.submit(get, r) for r in refs}
        for uid, fut in futs.items():
            try:
                out[uid] = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                out[uid] = f"not retrievable within {timeout_s:g}s"
            except Exception as exc:  # noqa: BLE001 - any failure to fetch one is its verdict
                out[uid] = f"not retrievable: {public_reason(exc)}"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return out


def raw_twin(cid: str) -> str | None:
    """The ``raw`` CID of the same digest as the ``dag-pb`` CID ``cid`` (None for any other)."""
    try:
        parsed = parse_cid(cid)
    except FormatError:
        return None
    return str(CID(1, RAW, parsed.digest)) if parsed.codec == DAG_PB else None


def max_update_bytes(layout: agg.TensorLayout) -> int:
    """The largest update file validators read for a model of ``layout`` (an fp32 delta is
    4 bytes a parameter; twice that and 1 MiB of header leave room for every encoding): a
    larger one is ``MALFORMED`` unread.  Contributors check against the same bound
    (:func:`fedledger.flows.submit.check_update`)."""
    return 2 * layout.size * 4 + (1 << 20)


def check_file(
    dec: codec.Decoded,
    task_id: int,
    round_: int,
    base_hash: str,
    contributor: str,
    *,
    fixed_point: FixedPointFormat | None = None,
) -> tuple[Verdict, str] | None:
    """The file's own claims against the chain's record: ``MALFORMED`` if it is not an update
    of this task, round and base model, declares a fixed-point format other than the task's
    ``fixed_point`` (``None``: a float task, which takes no ``int32`` file) or names no
    contributor; ``COPIED`` if it names another contributor than the address that submitted it
    (see the module docstring)."""
    if dec.task_id != task_id or dec.round != round_:
        return Verdict.MALFORMED, (
            f"file is for task {dec.task_id} round {dec.round}, not task {task_id} round {round_}"
        )
    if dec.base_hash != base_hash:
        return Verdict.MALFORMED, (
            f"delta was computed against model {dec.base_hash}, not the global model {base_hash}"
        )
    misfit = fixed_deltas.format_problem(dec.fixed_point, fixed_point)
    if misfit is not None:
        return Verdict.MALFORMED, misfit
    named = dec.contributor
    if named is None:
        return Verdict.MALFORMED, (
            f"update file names no contributor ({codec.K_CONTRIBUTOR}): rebuild it with this "
            "fedledger (`fedledger train` or `fedledger submit`), which binds an update to the "
            "address that submits it"
        )
    if not codec.ADDRESS_RE.fullmatch(named):
        shown = named if len(named) <= 60 else named[:60] + "..."
        return Verdict.MALFORMED, (
            f"{codec.K_CONTRIBUTOR} {shown!r} is not an address (0x + 40 hex digits): rebuild "
            "the update with this fedledger"
        )
    if named != contributor.lower():
        return Verdict.COPIED, (
            f"the file names contributor {named}, not {contributor.lower()} who submitted it: "
            "a copy of another's update earns nothing"
        )
    return None


@dataclass(frozen=True)
class _Round:
    """What every update of one round is judged against."""

    task_id: int
    round: int
    base_hash: str
    layout: agg.TensorLayout
    max_bytes: int
    fixed_point: FixedPointFormat | None
    sealed: _Sealing | None = None
    dp: DPPolicy | None = None


def dp_problem(
    dp: DPPolicy, dec: codec.Decoded, tensors: Mapping[str, np.ndarray], layout: agg.TensorLayout
) -> tuple[Verdict, str] | None:
    """A DP task's checks of one update (:mod:`fedledger.protocol.privacy_policy`):
    ``MALFORMED`` if it declares weaker DP than the task requires, ``NORM_BOUND`` if its L2 norm
    (deterministic float64 fold) is outside the band a clipped, noised update lies in.  An
    update whose shapes do not fit or that holds NaN/Inf is left to the screen."""
    declared = declared_dp_problem(dp, dec.metadata)
    if declared is not None:
        return Verdict.MALFORMED, declared
    if layout.matches(tensors) is not None:
        return None
    vec, _ = agg.flatten(tensors, layout)
    if not bool(np.isfinite(vec).all()):
        return None
    band = norm_band_problem(dp, agg.norm(vec), layout.size)
    return None if band is None else (Verdict.NORM_BOUND, band)


@dataclass(frozen=True)
class _Sealing:
    """A private task's envelopes: the key this judge opens them with, and the recipients each
    must name (one key of each set)."""

    key: PrivateKey
    required: tuple[tuple[int, frozenset[bytes]], ...]
    max_plaintext: int


def sealed_update_bytes(max_plaintext: int) -> int:
    """The most bytes an envelope of a ``max_plaintext``-byte update file can take."""
    return committee.envelope_size(max_plaintext, committee.MAX_RECIPIENTS)


def open_sealed(got: bytes, r: UpdateRef, task_id: int, round_: int, s: _Sealing) -> bytes:
    """The update file inside a private task's envelope (see :func:`judge_round`).  Raises
    :class:`~fedledger.protocol.committee.NotRecipientError` when ``s.key`` is not among its
    recipients, :class:`FormatError` (the update's ``MALFORMED``) for everything else wrong."""
    if not committee.is_envelope(got):
        raise FormatError(
            "task is private (committee encryption) and takes only updates sealed to its "
            "committee; these bytes are not an envelope"
        )
    header = committee.read_header(got, max_plaintext=s.max_plaintext)
    named = set(header.key_ids)
    for since, keys in s.required:
        if since < r.block_number and not named & keys:
            shown = min(keys).hex()
            raise FormatError(
                f"envelope is not sealed to committee key 0x{shown}, registered in block {since} "
                "before the update: a member could not read it"
            )
    opened = committee.open_envelope(
        got,
        s.key,
        task_id=task_id,
        round=round_,
        contributor=r.contributor,
        max_plaintext=s.max_plaintext,
    )
    if opened.header.tensor_root != r.tensor_root.lower():
        raise _RootMismatch(
            f"the envelope commits to tensor root {opened.header.tensor_root}, the chain records "
            f"{r.tensor_root}"
        )
    return bytes(opened.plaintext)


class _RootMismatch(Exception):
    """An envelope's committed tensor root is not the recorded one (TENSOR_ROOT_MISMATCH)."""


def fixed_view(
    dec: codec.Decoded, layout: agg.TensorLayout, fmt: FixedPointFormat
) -> tuple[Mapping[str, np.ndarray], Int32Vector | None]:
    """A fixed-point task's update as ``(tensors the screen sees, its int32 vector)``.

    The tensors are the vector dequantized (float32).  A file whose names or shapes differ from
    the model's, or a float file holding NaN or Inf, comes back as it is with no vector: the
    screen judges it ``SHAPE_MISMATCH`` or ``NON_FINITE``, as for a float task.  Raises
    :class:`~fedledger.protocol.fixedpoint.FixedPointRangeError` (the update's ``OUT_OF_RANGE``)
    for a float file with a finite coordinate ``fmt`` cannot hold.
    """
    q: Int32Vector | None = None
    if dec.fixed_point is not None:  # int32, in the task's format (check_file)
        q = fixed_deltas.flatten_fixed(dec.tensors, layout)
    elif layout.matches(dec.tensors) is None:
        try:
            q = fixed_deltas.quantize_delta(dec.tensors, layout, fmt)
        except FixedPointRangeError as exc:
            if np.isfinite(exc.value):
                raise
    if q is None:
        return dec.tensors, None
    return fixed_deltas.dequantize_tensors(q, layout, fmt), q


def _candidate(
    r: UpdateRef,
    early: Mapping[int, tuple[Verdict, str]],
    fetched: Mapping[int, tuple[bytes, str] | str],
    ctx: _Round,
) -> tuple[screening.Candidate, Int32Vector | None]:
    """What the screen sees of one update: its delta, or the verdict that stopped it early;
    and, for a fixed-point task, the update's int32 vector (``None`` if it has none)."""

    def stopped(verdict: Verdict, reason: str) -> tuple[screening.Candidate, None]:
        cand = screening.Candidate(
            r.update_id, r.contributor, r.content_hash, None, verdict, reason
        )
        return cand, None

    if r.update_id in early:
        return stopped(*early[r.update_id])
    fetched_r = fetched[r.update_id]
    if isinstance(fetched_r, str):
        return stopped(Verdict.UNAVAILABLE, fetched_r)
    got, h = fetched_r  # h was computed before any parsing: unverified bytes are never parsed
    if h != r.content_hash.lower():
        return stopped(
            Verdict.HASH_MISMATCH, f"bytes hash to {h}, the chain records {r.content_hash}"
        )
    if ctx.sealed is not None:
        try:
            got = open_sealed(got, r, ctx.task_id, ctx.round, ctx.sealed)
        except committee.NotRecipientError:
            raise  # this judge cannot read the round: it abstains (judge_round's caller)
        except _RootMismatch as exc:
            return stopped(Verdict.TENSOR_ROOT_MISMATCH, str(exc))
        except FormatError as exc:
            return stopped(Verdict.MALFORMED, f"sealed update: {exc.message}")
    try:
        # A top-k file declares its dense shape: bounded by the model's size, a 200-byte file
        # cannot make every validator allocate codec.DEFAULT_MAX_ELEMENTS floats (1 GiB).
        dec = codec.decode(
            got, kind="update", max_bytes=ctx.max_bytes, max_elements=ctx.layout.size, copy=False
        )
        problem = check_file(
            dec, ctx.task_id, ctx.round, ctx.base_hash, r.contributor, fixed_point=ctx.fixed_point
        )
    except FormatError as exc:
        return stopped(Verdict.MALFORMED, str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever escapes the decoder judges this update
        return stopped(Verdict.MALFORMED, f"not a valid update file: {public_reason(exc)}")
    if problem is not None:
        return stopped(*problem)
    if ctx.fixed_point is None:
        if r.tensor_root.lower() != ZERO_ROOT:
            return stopped(
                Verdict.TENSOR_ROOT_MISMATCH,
                f"the chain records tensor root {r.tensor_root} for an update of a float task, "
                "which commits to none (zero)",
            )
        if ctx.dp is not None and (dp := dp_problem(ctx.dp, dec, dec.tensors, ctx.layout)):
            return stopped(*dp)
        return screening.Candidate(r.update_id, r.contributor, r.content_hash, dec.tensors), None
    try:
        tensors, q = fixed_view(dec, ctx.layout, ctx.fixed_point)
    except FixedPointRangeError as exc:
        return stopped(Verdict.OUT_OF_RANGE, str(exc))
    if q is not None:
        root = "0x" + tensor_root(q).hex()
        if root != r.tensor_root.lower():
            return stopped(
                Verdict.TENSOR_ROOT_MISMATCH,
                f"the file's fixed-point coordinates have tensor root {root}, the chain records "
                f"{r.tensor_root}",
            )
    if ctx.dp is not None and (dp := dp_problem(ctx.dp, dec, tensors, ctx.layout)):
        return stopped(*dp)
    return screening.Candidate(r.update_id, r.contributor, r.content_hash, tensors), q


def update_tensor_root(
    dec: codec.Decoded, layout: agg.TensorLayout, fmt: FixedPointFormat | None
) -> str:
    """The ``tensorRoot`` a contributor records with the update ``dec`` (hex): the tensor root of
    its fixed-point vector for a fixed-point task (validators recompute it the same way), zero
    for a float task or a file whose shapes do not fit (the screen judges that one anyway)."""
    if fmt is None:
        return ZERO_ROOT
    _, q = fixed_view(dec, layout, fmt)
    return ZERO_ROOT if q is None else "0x" + tensor_root(q).hex()


def aggregate_fixed(
    rule: agg.RuleSpec,
    fmt: FixedPointFormat,
    updates: Sequence[Int32Vector],
    num_samples: Sequence[int],
    layout: agg.TensorLayout,
) -> tuple[agg.Tensors, Int32Vector]:
    """The accepted int32 updates (updateId order) aggregated by the exact counterpart of
    ``rule`` (:meth:`fedledger.protocol.exact_rules.ExactRule.from_rule_spec`): the float32 delta
    the global model takes, dequantized, and the int32 aggregate itself (zero when nothing was
    accepted)."""
    if not updates:
        zero = np.zeros(layout.size, dtype=np.int32)
        return fixed_deltas.dequantize_tensors(zero, layout, fmt), zero
    exact = exact_rules.ExactRule.from_rule_spec(rule, fmt)
    q = exact_rules.aggregate_exact(exact, updates, num_samples)
    return fixed_deltas.dequantize_tensors(q, layout, fmt), q


def judge_round(
    store: ContentStore,
    *,
    task_id: int,
    round_: int,
    spec: TaskSpec,
    base_model: bytes,
    updates: Sequence[UpdateRef],
    max_samples: int,
    deadline: int | None = None,
    unavailable: Mapping[int, str] | None = None,
    fetch: Fetcher | None = None,
    previous: verdicts.VerdictFile | None = None,
    base_hash: str | None = None,
    max_fetch_s: float | None = None,
    committee_key: PrivateKey | None = None,
    required_recipients: Sequence[tuple[int, frozenset[bytes]]] = (),
) -> Judgement:
    """Every update's verdict and the round's aggregate (see the module docstring).

    ``max_samples`` is the task's on-chain ``maxSamples``: fedavg weighs each update by its
    ``numSamples`` capped at ``min(the rule's sample_cap, max_samples)``
    (:meth:`fedledger.protocol.aggregation.RuleSpec.with_task_cap`), the rule the verdict file records.
    ``unavailable`` (update id → reason) is for re-verification: updates the validators could
    not fetch are judged ``UNAVAILABLE`` with the reason they recorded, whether or not they can
    be fetched now.  ``previous`` is the attested verdict file of round ``round_ - 1`` (``None``
    for round 0): the contributors' standing and the norm history carry over from it
    (:mod:`fedledger.protocol.screening`).
    ``base_hash``, when the caller already checked ``base_model`` against the chain's hash (as
    :func:`fedledger.flows.task.fetch_verified` does), saves hashing it again.
    ``max_fetch_s``: the caller's own bound on the spec's ``fetch_timeout_s`` (a validator's:
    the task creator chose the spec's).

    A private task (``privacy.encryption = "committee"``,
    :mod:`fedledger.protocol.privacy_policy`) records envelopes
    (:mod:`fedledger.protocol.committee`): ``contentHash`` is checked on the envelope, which is
    then opened with ``committee_key`` (a validator's or auditor's X25519 key).  An envelope
    that is not for this task, round and contributor, fails authentication, commits to a
    plaintext hash its plaintext does not have, or names none of the keys of one of the
    ``required_recipients`` ``(block, keys)``: each committee member's keys, required of every
    update recorded after the block that registered its first, and each auditor's, block 0
    (:func:`fedledger.flows.task.required_recipients`), is
    ``MALFORMED``; a committed tensor root other than the recorded one is
    ``TENSOR_ROOT_MISMATCH``; then the plaintext is judged as any update.  If ``committee_key``
    is not among an envelope's recipients (a member who joined later),
    :class:`~fedledger.protocol.committee.NotRecipientError` is raised: this judge cannot
    judge the round and must abstain.
    """
    if round_ > 0 and previous is None:
        raise ValueError(f"round {round_} needs round {round_ - 1}'s verdict file (its standing)")
    if previous is not None and (previous.task_id, previous.round) != (task_id, round_ - 1):
        raise ValueError(
            f"the previous verdict file is for task {previous.task_id} round {previous.round}, "
            f"not task {task_id} round {round_ - 1}"
        )
    prior = previous.standing if previous is not None else None
    prior_norms = previous.norm_history if previous is not None else None
    rule = agg.RuleSpec.parse(spec.aggregation).with_task_cap(max_samples)
    fmt = spec.fixed_point_format()
    screen_spec = screening.ScreeningSpec.parse(spec.screening)
    privacy = spec.privacy_policy()
    if privacy.dp is not None:
        screen_spec = dp_screening(screen_spec)
    base_hash = (base_hash or codec.sha256_hex(base_model)).lower()
    global_model = codec.decode(base_model, kind="model", copy=False).tensors  # only read
    layout = agg.TensorLayout.of(global_model)
    max_bytes = max_update_bytes(layout)
    sealing = None
    if privacy.committee:
        if committee_key is None:
            raise ConfigError(
                f"task {task_id} is private (committee encryption): judging it needs a "
                "committee key",
                hint="give the validator or auditor its committee key (--committee-key)",
            )
        sealing = _Sealing(committee_key, tuple(required_recipients), max_bytes)
    fetch_limit = max_bytes if sealing is None else sealed_update_bytes(max_bytes)
    refs = sorted(updates, key=lambda r: r.update_id)
    unavailable = dict(unavailable or {})

    early: dict[int, tuple[Verdict, str]] = {}
    to_fetch = []
    for r in refs:
        if deadline is not None and r.submitted_at > deadline:
            early[r.update_id] = (
                Verdict.LATE,
                f"submitted at {r.submitted_at}, after the deadline {deadline}",
            )
        elif r.update_id in unavailable:
            early[r.update_id] = (Verdict.UNAVAILABLE, unavailable[r.update_id])
        else:
            to_fetch.append(r)
    timeout_s = (
        spec.fetch_timeout_s if max_fetch_s is None else min(spec.fetch_timeout_s, max_fetch_s)
    )
    fetched = _fetch_all(store, to_fetch, timeout_s, fetch_limit, fetch)

    ctx = _Round(task_id, round_, base_hash, layout, max_bytes, fmt, sealing, privacy.dp)
    judged = [_candidate(r, early, fetched, ctx) for r in refs]
    candidates = [c for c, _ in judged]
    fixed = {c.update_id: q for c, q in judged if q is not None}

    history = None  # the previous round's step and updates (STALE, INCONSISTENT)
    if previous is not None and screen_spec.uses_history() and not privacy.committee:
        history = prior_round.previous_history(store, previous, layout, fmt, max_bytes)
    root = reference.measure_round(store, spec, global_model)  # HARMFUL, on the root data
    decisions = screening.screen(
        candidates, global_model, rule, screen_spec, prior, prior_norms, history, root
    )
    by_id = {c.update_id: c for c in candidates}
    ref_by_id = {r.update_id: r for r in refs}
    accepted = screening.accepted_ids(decisions)
    weights = [ref_by_id[i].num_samples for i in accepted]
    agg_root = ZERO_ROOT
    if fmt is None:
        deltas = [by_id[i].delta for i in accepted]
        delta = agg.aggregate_tensors(rule, [d for d in deltas if d is not None], weights, layout)
    else:  # an accepted update matched the model's shapes and was finite: it has its vector
        delta, q_agg = aggregate_fixed(rule, fmt, [fixed[i] for i in accepted], weights, layout)
        agg_root = "0x" + tensor_root(q_agg).hex()
    return judgement_of(
        task_id=task_id,
        round_=round_,
        rule=rule,
        screen_spec=screen_spec,
        base_hash=base_hash,
        new_global=agg.apply_delta(global_model, delta),
        decisions=decisions,
        refs=refs,
        unavailable=unavailable,
        prior=prior,
        prior_norms=prior_norms,
        aggregate_tensor_root=agg_root,
    )


def judgement_of(
    *,
    task_id: int,
    round_: int,
    rule: agg.RuleSpec,
    screen_spec: screening.ScreeningSpec,
    base_hash: str,
    new_global: dict[str, np.ndarray],
    decisions: Sequence[screening.Decision],
    refs: Sequence[UpdateRef],
    unavailable: Mapping[int, str],
    prior: Mapping[str, float] | None,
    prior_norms: Sequence[float] | None,
    aggregate_tensor_root: str,
) -> Judgement:
    """A judged round's files: the new global model encoded (its hash and CID), the verdict
    file (entries in ``decisions`` order, standing and norm history carried on) and its root.
    The one tail of :func:`judge_round` and of the streamed judge
    (:func:`fedledger.protocol.streaming.judge_round_streamed`)."""
    ref_by_id = {r.update_id: r for r in refs}
    aggregate = codec.encode_model(new_global, task_id=task_id, round=round_ + 1)
    aggregate_hash = codec.sha256_hex(aggregate)
    aggregate_cid = compute_cid(aggregate)
    entries = [
        verdicts.VerdictEntry(
            update_id=d.update_id,
            contributor=ref_by_id[d.update_id].contributor,
            content_hash=ref_by_id[d.update_id].content_hash,
            cid=ref_by_id[d.update_id].cid,
            num_samples=ref_by_id[d.update_id].num_samples,
            verdict=d.verdict,
            # Recorded reasons (re-verification) are kept to the byte; new ones are public.
            reason=d.reason if d.update_id in unavailable else public_text(d.reason),
            score=d.score,
        )
        for d in decisions
    ]
    vf = verdicts.build(
        task_id=task_id,
        round=round_,
        rule=rule,
        base_model_hash=base_hash,
        aggregate_hash=aggregate_hash,
        aggregate_cid=aggregate_cid,
        entries=entries,
        standing=screening.next_standing(
            prior, decisions, {r.update_id: r.contributor for r in refs}
        ),
        norm_history=screening.next_norm_history(prior_norms, decisions, screen_spec),
    )
    vbytes = vf.to_bytes()
    return Judgement(
        verdict_file=vf,
        verdict_bytes=vbytes,
        verdict_cid=compute_cid(vbytes),
        root=vf.root(),
        aggregate=aggregate,
        aggregate_hash=aggregate_hash,
        aggregate_cid=aggregate_cid,
        new_global=new_global,
        aggregate_tensor_root=aggregate_tensor_root,
    )
