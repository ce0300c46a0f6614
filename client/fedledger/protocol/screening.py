"""Poisoning screen: per-update checks and the verdict of every update in a round.

Pure functions: the validator and ``fedledger verify`` both call :func:`screen` on the same inputs
and must reach the same verdicts, scores and reasons, byte for byte (they end up in the verdict
file).  Every statistic therefore comes from :mod:`fedledger.protocol.aggregation`'s deterministic kernels
(fixed-order float64 folds, the exact fixed-point Gram matrix, sorting), never from ``np.sum`` or
BLAS on floats.

Checks, in order; the first that fails decides (so each update gets exactly one verdict):

1. an early verdict from the caller (``HASH_MISMATCH``, ``UNAVAILABLE``, ``MALFORMED``, ``LATE``,
   ``COPIED``: the file names another contributor than its submitter, :mod:`fedledger.protocol.rounds`;
   ``OUT_OF_RANGE``: a fixed-point task's float update, of the model's shapes and finite, has a
   coordinate its format cannot hold, :mod:`fedledger.protocol.fixed_deltas`);
2. ``DUPLICATE``: the same ``contentHash`` as an earlier update (lower ``updateId``) that passed
   step 1.  An update stopped at step 1 claims no hash: a copier that lands another's
   ``(contentHash, cid)`` first (``COPIED``), or the same ``contentHash`` with other bytes
   (``HASH_MISMATCH``), cannot make the contributor the file names a ``DUPLICATE``.  Since a file
   names one contributor and the contract takes one update per contributor per round, among
   updates of one ``contentHash`` only the one the file names can be accepted;
3. ``SHAPE_MISMATCH``: tensor names, shapes or dtype differ from the global model;
4. ``NON_FINITE``: a NaN or Inf anywhere;
5. ``FREE_RIDER``: an all-zero delta, or one whose norm is a negligible fraction of the round's
   median norm (training nothing while claiming credit);
6. ``DUPLICATE``: cosine >= ``duplicate_cosine`` to an earlier surviving update (a copy, possibly
   rescaled or with a little noise added);
7. ``NORM_BOUND`` (scaling/boosting attacks), whatever the round's size, even one update: L2
   norm above the tightest of

   * ``norm_bound``, the task's absolute bound;
   * ``norm_multiple`` x the median norm of the round's surviving updates (binds from three
     updates on: the median of one or two updates is pulled up by a boosted one);
   * ``norm_multiple`` x the median of the *norm history*: each of the last ``norm_history``
     rounds' median accepted norm, carried from round to round in the verdict file
     (:attr:`fedledger.protocol.verdicts.VerdictFile.norm_history`, :func:`next_norm_history`) as the
     standing is.  This is what bounds a round of one or two updates, where nothing in the
     round can be compared; a contributor alone in a round can raise the history by at most
     ``norm_multiple`` per round it wins, and ``norm_bound`` caps it outright;
8. ``OUTLIER``, by the task's rule family, with the robust threshold ``median + k * MAD`` (MAD
   scaled by 1.4826 to estimate a standard deviation, ``k = outlier_k``):

   * ``krum`` / ``multi_krum``: the Krum score (sum of squared distances to the ``n - f - 2``
     nearest others) is too high.  Krum's own *selection* (one update, or ``m``) is made later by
     the aggregation rule among the accepted; calling every unselected honest update an outlier
     would reject most honest contributors of every round;
   * ``median`` / ``trimmed_mean`` / ``fedavg``: distance to the coordinate-wise median too high;
   * every rule, against the *consensus* (:func:`consensus_cosines`: the unit-vector sum of the
     half of the updates most aligned with the coordinate-wise median, the judged update left
     out): the cosine to it is a robust outlier, or below ``min_cosine`` (default -0.1: the
     update points strongly against what the majority agrees on).  This catches sign flips and other
     reversed updates, whose norm is unremarkable.  The consensus of the most aligned half stays
     honest with 30-45% attackers, where the median itself is already dragged towards them.
     If the median cosine to the consensus (of the updates in good standing, below) is under
     ``min_consensus`` (default 0.15), the round has no consensus: honest non-IID updates near
     convergence are near-orthogonal, and a correlated minority could pose as one.  Then no
     cosine check applies in the round;
   * every rule, over the task's history: *standing*, each contributor's running agreement
     with the consensus: ``s += (1 - standing_decay) * min(1, 2 * strength) * (cosine - s)``
     (its first cosine when it has no history; ``strength`` is the round's median cosine to
     the consensus, so rounds where honest updates clearly agree count fully and barely
     agreeing ones little), carried from round to round in the verdict file
     (:attr:`fedledger.protocol.verdicts.VerdictFile.standing`).  Below ``min_standing`` (default -0.1: on
     balance, its updates have pointed against what the others agree on) the update is an
     outlier, even in a round too small to compare updates.  One round's cosine is a noisy
     witness once honest non-IID updates become near-orthogonal late in training; a
     contributor that flips its updates round after round stays negative on balance, while an
     honest one's occasional negative round is outweighed by its history.  Contributors in bad
     standing are left out of the consensus.  A round without a consensus (above) leaves every
     standing as it was;
   * every rule: noise.  An update whose cosines to *all* the others have a root mean square
     below ``noise_sigmas / sqrt(d)`` (``d`` parameters; a random direction's cosines are about
     ``N(0, 1/d)``) is uncorrelated with everything in the round: Gaussian-noise updates and
     noise-faking free riders.  Honest updates correlate, positively or negatively, with some
     of the others.

   How well the geometry can work depends on how much honest updates agree: they agree while
   the model is far from the optimum of the federation; near it, honest non-IID updates pull
   towards their own data and become near-orthogonal, and a flipped update is statistically an
   honest one.  ``benchmarks/experiments.py`` measures recall and false rejections per attack.

``score`` is the number the deciding check looked at: the norm (FREE_RIDER, NORM_BOUND), the
cosine (cosine DUPLICATE), or for updates that reached step 8 the largest robust z-score of the
outlier statistics (``(x - median) / (1.4826 MAD)``, signed so that larger is worse).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from fedledger.protocol import aggregation as agg
from fedledger.protocol.history import History
from fedledger.protocol.reference import RootMeasure
from fedledger.protocol.taskspec import parse_section
from fedledger.protocol.verdicts import Verdict, canonical_float

MAX_NORM_HISTORY = 100
"""Most rounds :attr:`ScreeningSpec.norm_history` may look back over."""
EARLY_VERDICTS = frozenset(
    {
        Verdict.HASH_MISMATCH,
        Verdict.UNAVAILABLE,
        Verdict.MALFORMED,
        Verdict.LATE,
        Verdict.COPIED,
        Verdict.OUT_OF_RANGE,
        Verdict.TENSOR_ROOT_MISMATCH,
        Verdict.NORM_BOUND,  # only a DP task's norm band (rounds.dp_problem); else the screen's
    }
)
MAD_TO_SIGMA = 1.4826
NOISE_SEPARATION = 2.0
"""The noise check applies only in a round whose median rms cosine is at least this many times
the noise level: in a small model (a logistic regression of 62 parameters, near convergence)
honest updates are themselves as uncorrelated as random directions, and the check would reject
them."""


class ScreeningSpec(BaseModel):
    """The screening part of a task spec; every field has a default that passes the tests'
    attack scenarios (30% sign-flip / scaling attackers on non-IID clients) and that
    ``benchmarks/experiments.py`` measures (sign flip, scaling and Gaussian noise rejected with
    few honest rejections on Dirichlet(0.5) splits of load_digits).

    The norm bounds combine: ``norm_bound`` (absolute, off by default) and ``norm_multiple``
    (relative to the round's median norm and to the median of the last ``norm_history``
    rounds' median accepted norms; ``null`` turns both relative bounds off) all apply, the
    tightest decides.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    norm_bound: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    norm_multiple: Annotated[float, Field(gt=1.0, allow_inf_nan=False)] | None = 3.0
    outlier_k: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 5.0
    duplicate_cosine: Annotated[float, Field(gt=0.0, le=1.0)] = 0.995
    free_rider_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 1e-3
    min_cosine: Annotated[float, Field(ge=-1.0, le=1.0)] | None = -0.3
    min_standing: Annotated[float, Field(ge=-1.0, le=1.0)] | None = -0.1
    min_consensus: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.15
    standing_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.7
    noise_sigmas: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 3.0
    min_outlier_pool: Annotated[int, Field(ge=3)] = 4
    norm_history: Annotated[int, Field(ge=0, le=MAX_NORM_HISTORY)] = 5
    stale_cosine: Annotated[float, Field(gt=0.0, le=1.0)] | None = 0.999
    sybil_cosine: Annotated[float, Field(gt=0.0, le=1.0)] = 0.999
    sybil_group: Annotated[int, Field(ge=2)] = 3
    min_trust: Annotated[float, Field(ge=-1.0, le=1.0)] | None = 0.05
    harm_loss: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = 0.5
    min_self_cosine: Annotated[float, Field(ge=-1.0, le=1.0)] | None = -0.3
    continue_cosine: Annotated[float, Field(ge=-1.0, le=1.0)] | None = 0.5
    drift_cosine: Annotated[float, Field(ge=-1.0, le=1.0)] | None = 0.3

    def uses_history(self) -> bool:
        """Whether a check reads the previous round's updates (``STALE``, ``INCONSISTENT``)."""
        return self.stale_cosine is not None or self.min_self_cosine is not None

    @classmethod
    def parse(cls, obj: Mapping[str, Any] | str | bytes | None) -> ScreeningSpec:
        """Validate the screening object, or a whole task spec's ``"screening"`` section.

        Raises ConfigError naming each bad field.
        """
        if obj is None:
            return cls()
        return parse_section(cls, obj, "screening", "screening spec")


@dataclass(frozen=True)
class Candidate:
    """One update of the round as the screen sees it.

    ``delta`` is ``None`` when the caller could not get or decode it; ``early`` then says why.
    """

    update_id: int
    contributor: str
    content_hash: str
    delta: Mapping[str, np.ndarray] | None
    early: Verdict | None = None
    early_reason: str = ""


@dataclass(frozen=True)
class Decision:
    """The screen's verdict on one update."""

    update_id: int
    verdict: Verdict
    reason: str
    score: float | None = None
    standing: float | None = None  # the contributor's standing after this round, if judged
    norm: float | None = None  # the update's L2 norm, once it reached the norm check


@dataclass
class _Live:
    index: int
    cand: Candidate
    vec: npt.NDArray[np.float32]
    norm: float


def robust_threshold(
    values: Sequence[float], *, rel_floor: float = 0.0, abs_floor: float = 0.0
) -> tuple[float, float]:
    """``(median, sigma)`` with ``sigma = 1.4826 * MAD``, floored at ``rel_floor * |median|`` and
    ``abs_floor`` (and 1e-12).  The floors matter: a MAD over the handful of updates of a round
    is noisy, and honest non-IID contributors legitimately differ; without a floor, a round of
    similar updates makes every modest difference look like many sigmas.
    """
    med = _median(values)
    mad = _median([abs(v - med) for v in values])
    sigma = max(MAD_TO_SIGMA * mad, rel_floor * abs(med), abs_floor, 1e-12)
    return med, sigma


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of nothing")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def screen(
    candidates: Sequence[Candidate],
    global_model: Mapping[str, np.ndarray],
    rule: agg.RuleSpec,
    spec: ScreeningSpec | None = None,
    standing: Mapping[str, float] | None = None,
    norm_history: Sequence[float] | None = None,
    history: History | None = None,
    root: RootMeasure | None = None,
) -> list[Decision]:
    """Decide every candidate's verdict; returns one :class:`Decision` per update, by updateId.

    ``standing`` (lowercase contributor address → standing) and ``norm_history`` (earlier
    rounds' median accepted norms, oldest first) are the task's history before this round: the
    previous round's :attr:`~fedledger.protocol.verdicts.VerdictFile.standing` and
    :attr:`~fedledger.protocol.verdicts.VerdictFile.norm_history`.  ``history`` is the previous
    round's global step and accepted updates (:mod:`fedledger.protocol.history`: ``STALE``,
    ``INCONSISTENT``); ``root`` the measurements on the task's root data set
    (:mod:`fedledger.protocol.reference`: ``HARMFUL``).  Without them those checks are skipped.
    """
    spec = spec or ScreeningSpec()
    prior = {k.lower(): v for k, v in (standing or {}).items()}
    ordered = sorted(candidates, key=lambda c: c.update_id)
    ids = [c.update_id for c in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("two candidates share an updateId")
    layout = agg.TensorLayout.of(global_model)
    decided: dict[int, Decision] = {}
    seen_hashes: dict[str, int] = {}
    live: list[_Live] = []

    def reject(c: Candidate, verdict: Verdict, reason: str, score: float | None = None) -> None:
        decided[c.update_id] = Decision(c.update_id, verdict, reason, score)

    for c in ordered:
        if c.early is not None:
            if c.early not in EARLY_VERDICTS:
                raise ValueError(f"{c.early.name} is decided by the screen, not the caller")
            reject(c, c.early, c.early_reason or c.early.name.lower().replace("_", " "))
            continue
        if c.delta is None:
            raise ValueError(f"update {c.update_id} has neither a delta nor an early verdict")
        first = seen_hashes.setdefault(c.content_hash.lower(), c.update_id)
        if first != c.update_id:
            reject(c, Verdict.DUPLICATE, f"same content hash as update {first}")
            continue
        problem = layout.matches(c.delta)
        if problem is not None:
            reject(c, Verdict.SHAPE_MISMATCH, problem)
            continue
        vec, _ = agg.flatten(c.delta, layout)
        # NaN wins max and min, and an infinity is one of them: two passes, no mask
        finite = not vec.size or (math.isfinite(vec.max()) and math.isfinite(vec.min()))
        bad = 0 if finite else int(vec.size - np.count_nonzero(np.isfinite(vec)))
        if bad:
            reject(c, Verdict.NON_FINITE, f"{bad} values are NaN or Inf")
            continue
        live.append(_Live(len(live), c, vec, agg.norm(vec)))

    live = _free_riders(live, spec, reject)
    live = _stale(live, history, spec, reject)
    # One exact Gram matrix serves the copy checks, Krum scores and the consensus cosines.
    for pos, x in enumerate(live):
        x.index = pos
    gram = agg.exact_gram([x.vec for x in live]) if live else None
    live = _sybils(live, gram, spec, reject)
    live = _near_duplicates(live, gram, spec, reject)
    live = _norm_bound(live, spec, reject, norm_history or ())
    signals = _Signals.of(live, spec, history, root)
    judged = _outliers(live, gram, rule, spec, layout.size, prior, signals)
    for item, verdict, reason, score, now in judged:
        uid = item.cand.update_id
        decided[uid] = Decision(uid, verdict, reason, score, now, item.norm)
    return [decided[i] for i in ids]


def next_standing(
    prior: Mapping[str, float] | None,
    decisions: Sequence[Decision],
    contributors: Mapping[int, str],
) -> dict[str, float]:
    """The task's standing after a round: ``prior`` with each judged contributor's new value
    (``contributors``: updateId → address)."""
    out = {k.lower(): v for k, v in (prior or {}).items()}
    for d in decisions:
        if d.standing is not None:
            out[contributors[d.update_id].lower()] = d.standing
    return out


def next_norm_history(
    prior: Sequence[float] | None, decisions: Sequence[Decision], spec: ScreeningSpec
) -> list[float] | None:
    """The task's norm history after a round: ``prior`` plus this round's median accepted norm
    (none when nothing was accepted), the last ``spec.norm_history`` kept, oldest first;
    ``None`` when the spec keeps no history.  Rounded as the verdict file stores it, so the
    bound the next round uses is the one every re-verifier reads back."""
    if spec.norm_history == 0:
        return None
    out = list(prior or ())
    norms = [d.norm for d in decisions if d.verdict == Verdict.ACCEPTED and d.norm is not None]
    if norms:
        out.append(canonical_float(_median(norms)))
    return out[-spec.norm_history :]


def updated_standing(
    spec: ScreeningSpec, prior: float | None, cosine: float, strength: float = 1.0
) -> float:
    """The standing after a round: ``prior`` moved towards ``cosine`` by
    ``(1 - standing_decay) * min(1, 2 * strength)`` (``cosine`` alone without a history).

    ``strength`` is the round's median cosine to the consensus: a round where honest updates
    agree (>= 0.5) moves standings a full step, a barely-agreeing one a fraction of it, so the
    clear evidence of early rounds is not washed out by the noise of late ones.  Rounded as the
    verdict file stores it, so the value judged is the value kept.
    """
    if prior is None:
        return canonical_float(cosine)
    step = (1.0 - spec.standing_decay) * min(1.0, max(0.0, 2.0 * strength))
    return canonical_float(prior + step * (cosine - prior))


_Reject = Any  # callable(candidate, verdict, reason, score)


def _free_riders(live: list[_Live], spec: ScreeningSpec, reject: _Reject) -> list[_Live]:
    nonzero = [x.norm for x in live if x.norm > 0.0]
    floor = spec.free_rider_fraction * _median(nonzero) if nonzero else 0.0
    kept = []
    for x in live:
        if x.norm == 0.0:
            reject(x.cand, Verdict.FREE_RIDER, "the delta is all zeros", 0.0)
        elif x.norm <= floor:
            reject(
                x.cand,
                Verdict.FREE_RIDER,
                f"norm {x.norm:.3g} is below {spec.free_rider_fraction:g} x the median norm",
                x.norm,
            )
        else:
            kept.append(x)
    return kept


def _cos(a: npt.NDArray[np.float32], na: float, b: npt.NDArray[np.float32]) -> float:
    """Deterministic cosine (fixed-order float64 folds); 0.0 against a zero vector."""
    nb = agg.norm(b)
    return agg.dot(a, b) / (na * nb) if na > 0.0 and nb > 0.0 else 0.0


def _stale(
    live: list[_Live], history: History | None, spec: ScreeningSpec, reject: _Reject
) -> list[_Live]:
    """STALE: a replay of the previous round's global step (cosine >= ``stale_cosine``), unless
    the update is closer still to its contributor's own accepted update of that round."""
    if history is None or spec.stale_cosine is None:
        return live
    kept = []
    for x in live:
        c = _cos(x.vec, x.norm, history.step) if history.step is not None else 0.0
        own = history.updates.get(x.cand.contributor.lower())
        # An honest contributor whose update carried last round's step (the only one accepted,
        # or the global barely moving) sends about its own update again: not a replay.
        mine = (
            _cos(x.vec, x.norm, own.vector)
            if own is not None and own.verdict == Verdict.ACCEPTED
            else -1.0
        )
        if c >= spec.stale_cosine and c > mine:
            reason = (
                f"cosine {c:.6f} to round {history.round}'s global step (>= "
                f"{spec.stale_cosine:g}): a replay of the last aggregate, not new work"
            )
            reject(x.cand, Verdict.STALE, reason, c)
        else:
            kept.append(x)
    return kept


def _sybils(
    live: list[_Live], gram: agg.Gram | None, spec: ScreeningSpec, reject: _Reject
) -> list[_Live]:
    """SYBIL: every member of a group of at least ``sybil_group`` updates that share one
    direction (pairwise cosine >= ``sybil_cosine``, linked transitively), as FoolsGold (Fung et
    al. 2020) marks clients whose updates are too similar to be independent.  A pair is left to
    the copy check, which keeps the update that landed first."""
    if gram is None or len(live) < spec.sybil_group:
        return live
    n = len(live)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if gram.cosine(live[i].index, live[j].index) >= spec.sybil_cosine:
                parent[max(find(i), find(j))] = min(find(i), find(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    kept = []
    for i, x in enumerate(live):
        group = groups[find(i)]
        if len(group) < spec.sybil_group:
            kept.append(x)
            continue
        others = [live[j] for j in group if j != i]
        low = min(gram.cosine(x.index, y.index) for y in others)
        ids = ", ".join(str(y.cand.update_id) for y in others[:8])
        more = f" and {len(others) - 8} more" if len(others) > 8 else ""
        reject(
            x.cand,
            Verdict.SYBIL,
            f"one direction shared by {len(group)} updates (cosine >= {low:.6f} to updates "
            f"{ids}{more}; >= {spec.sybil_cosine:g} from {spec.sybil_group} updates on)",
            low,
        )
    return kept


@dataclass(frozen=True)
class _Signals:
    """Per surviving update: its cosine to the root data's descent direction (FLTrust trust),
    its root loss change, and its cosine to its own previous accepted update (or ``None``)."""

    trust: list[float | None]
    loss: list[float | None]
    own: list[tuple[float, int, Verdict] | None]
    label: str
    history_round: int | None
    base_loss: float

    @classmethod
    def of(
        cls,
        live: Sequence[_Live],
        spec: ScreeningSpec,
        history: History | None,
        root: RootMeasure | None,
    ) -> _Signals:
        trust: list[float | None] = [None] * len(live)
        loss: list[float | None] = [None] * len(live)
        own: list[tuple[float, int, Verdict] | None] = [None] * len(live)
        if root is not None and (spec.min_trust is not None or spec.harm_loss is not None):
            trust = [_cos(x.vec, x.norm, root.reference) for x in live]
            loss = [root.loss_change(x.vec) for x in live]
        if history is not None:
            for i, x in enumerate(live):
                prev = history.updates.get(x.cand.contributor.lower())
                if prev is not None:
                    own[i] = (_cos(x.vec, x.norm, prev.vector), prev.update_id, prev.verdict)
        label = root.label() if root is not None else ""
        base = root.base_loss if root is not None else 0.0
        return cls(trust, loss, own, label, history.round if history is not None else None, base)

    def vouches(self, i: int, spec: ScreeningSpec) -> str | None:
        """Why the root data clears update ``i`` of the soft geometric checks (the fixed cosine
        floor, standing, noise; never the robust z-scores), or ``None``: with a root data set
        the task has a trusted arbiter, and an update that agrees with the reference update, or
        raises the root loss by at most half of what HARMFUL takes, is not rejected for
        disagreeing with the other updates as honest non-IID updates near convergence do."""
        t, lc = self.trust[i], self.loss[i]
        if t is None or lc is None:
            return None
        if spec.min_trust is not None and t >= spec.min_trust:
            return f"the root data (cosine to the reference update {t:.4f})"
        limit = 0.0 if spec.harm_loss is None else 0.5 * spec.harm_loss * self.base_loss
        if lc <= limit:
            return f"the root data (root loss change {lc:+.4g}, within {limit:.4g})"
        return None

    def reasons(self, i: int, spec: ScreeningSpec) -> tuple[list[str], list[str]]:
        """``(HARMFUL reasons, INCONSISTENT reasons)`` of update ``i``: HARMFUL when it points
        away from the reference update (cosine below ``min_trust``) *and*, applied alone, raises
        the root loss by more than ``harm_loss`` times the global model's (either condition
        alone when the other is off): near convergence honest non-IID updates scatter around
        the reference, but do not wreck the root loss."""
        harmful: list[str] = []
        inconsistent: list[str] = []
        t, lc = self.trust[i], self.loss[i]
        if t is not None and lc is not None:
            away = spec.min_trust is None or t < spec.min_trust
            hurts = spec.harm_loss is None or lc > spec.harm_loss * self.base_loss
            if away and hurts and (spec.min_trust is not None or spec.harm_loss is not None):
                harmful.append(
                    f"cosine to the reference update on {self.label} {t:.4f} (below "
                    f"{spec.min_trust}) and root loss {self.base_loss:.4g} -> "
                    f"{self.base_loss + lc:.4g} when applied alone (up more than "
                    f"{spec.harm_loss} x)"
                )
        own = self.own[i]
        if own is None:
            return harmful, inconsistent
        c, uid, was = own
        if was == Verdict.ACCEPTED:
            if spec.min_self_cosine is not None and c < spec.min_self_cosine:
                inconsistent.append(
                    f"cosine to its own accepted update {uid} of round {self.history_round} "
                    f"{c:.4f} is below {spec.min_self_cosine:g}"
                )
            elif spec.drift_cosine is not None and c < spec.drift_cosine and lc is not None:
                # A milder turn (honest updates of one contributor stay well aligned round
                # to round), corroborated by the root data: the update alone raises its loss.
                limit = 0.5 * (spec.harm_loss or 0.0) * self.base_loss
                if lc > limit:
                    inconsistent.append(
                        f"cosine to its own accepted update {uid} of round {self.history_round} "
                        f"{c:.4f} is below {spec.drift_cosine:g} and root loss "
                        f"{self.base_loss:.4g} -> {self.base_loss + lc:.4g} when applied alone"
                    )
        elif spec.continue_cosine is not None and c >= spec.continue_cosine:
            # Carrying on the way last round's rejected update went: a sleeper that turned
            # stays rejected while it keeps turned, unless the root data clears it.
            trusted = t is not None and spec.min_trust is not None and t >= spec.min_trust
            if not trusted:
                text = (
                    f"continues its update {uid} of round {self.history_round}, judged "
                    f"{was.name} (cosine {c:.4f} >= {spec.continue_cosine:g})"
                )
                (inconsistent if was == Verdict.INCONSISTENT else harmful).append(text)
        return harmful, inconsistent


def _overruled(note: str, reasons: Sequence[str], vouched: str | None) -> str:
    if not reasons or vouched is None:
        return note
    return f"{note}; {vouched} overrules: {'; '.join(reasons)}"


def _verdict_of(
    outlier: list[str], harmful: list[str], inconsistent: list[str]
) -> tuple[Verdict, str] | None:
    """The most specific verdict among those whose checks fired, with every reason."""
    reasons = inconsistent + harmful + outlier
    if not reasons:
        return None
    verdict = (
        Verdict.INCONSISTENT if inconsistent else Verdict.HARMFUL if harmful else Verdict.OUTLIER
    )
    return verdict, "; ".join(reasons)


def _near_duplicates(
    live: list[_Live], gram: agg.Gram | None, spec: ScreeningSpec, reject: _Reject
) -> list[_Live]:
    if len(live) < 2 or gram is None:
        return live
    kept: list[_Live] = []
    for x in live:
        match = next(
            (y for y in kept if gram.cosine(x.index, y.index) >= spec.duplicate_cosine),
            None,
        )
        if match is None:
            kept.append(x)
        else:
            cos = gram.cosine(x.index, match.index)
            other = match.cand.update_id
            reject(x.cand, Verdict.DUPLICATE, f"cosine {cos:.6f} to update {other}", cos)
    return kept


def _norm_bound(
    live: list[_Live], spec: ScreeningSpec, reject: _Reject, history: Sequence[float]
) -> list[_Live]:
    """NORM_BOUND above the tightest bound; the absolute one and the history's apply to a
    round of any size (see the module docstring, check 7)."""
    if not live:
        return live
    bounds: list[tuple[float, str]] = []
    if spec.norm_bound is not None:
        bounds.append((spec.norm_bound, "the task's bound"))
    if spec.norm_multiple is not None:
        m = spec.norm_multiple
        bounds.append((m * _median([x.norm for x in live]), f"{m:g} x the round's median norm"))
        recent = list(history)[-spec.norm_history :] if spec.norm_history else []
        if recent and _median(recent) > 0.0:
            why = f"{m:g} x the median accepted norm of the last {len(recent)} rounds"
            bounds.append((m * _median(recent), why))
    if not bounds:
        return live
    bound, how = min(bounds, key=lambda b: b[0])  # ties: the first listed
    kept = []
    for x in live:
        if x.norm > bound:
            reason = f"norm {x.norm:.4g} exceeds {bound:.4g} ({how})"
            reject(x.cand, Verdict.NORM_BOUND, reason, x.norm)
        else:
            kept.append(x)
    return kept


def _sub_gram(gram: agg.Gram, idx: Sequence[int]) -> agg.Gram:
    return agg.Gram([[gram.ints[a][b] for b in idx] for a in idx], [gram.exps[a] for a in idx])


def cosine_matrix(gram: agg.Gram) -> list[list[float]]:
    """All pairwise cosines, from the exact Gram matrix (deterministic)."""
    return [[gram.cosine(i, j) for j in range(gram.n)] for i in range(gram.n)]


def consensus_cosines(
    cos: Sequence[Sequence[float]],
    first: Sequence[float],
    eligible: Sequence[bool] | None = None,
) -> list[float]:
    """Each update's cosine to the consensus of the others.

    The consensus is the sum of the unit vectors of the ``ceil(m/2)`` updates that ``first``
    ranks highest (ties to the earlier update) among the ``m`` ``eligible`` ones (default: all;
    the screen leaves out contributors already in bad standing, so a group that has been
    flipping its updates cannot become the consensus in a round where honest updates scatter),
    leaving out the update being judged.  With
    ``first`` the cosine to the coordinate-wise median, that set is the updates most aligned with
    a reference a minority cannot move much; sign-flipped or noise updates do not make it in, so
    the consensus stays honest with 30-45% attackers, where a plain median or mean is already
    dragged towards them.  Unit vectors keep one large update from standing for the consensus.

    Deterministic: cosines come from the exact Gram matrix and sums are ``math.fsum`` (exactly
    rounded, so the same on every platform and Python version).
    """
    n = len(cos)
    pool = [i for i in range(n) if eligible is None or eligible[i]]
    if len(pool) < 2:
        pool = list(range(n))
    top = sorted(pool, key=lambda i: (-first[i], i))[: (len(pool) + 1) // 2]
    whole = math.fsum(cos[j][k] for j in top for k in top)
    members = set(top)
    out = []
    for i in range(n):
        num = math.fsum(cos[i][j] for j in top if j != i)
        # For a member: |sum of the others|^2 = |sum of all|^2 - 2 <u_i, others> - <u_i, u_i>
        den = math.fsum([whole, -2.0 * num, -cos[i][i]]) if i in members else whole
        out.append(num / math.sqrt(den) if den > 0.0 else 0.0)
    return out


def rms_cosines(cos: Sequence[Sequence[float]]) -> list[float]:
    """Root mean square of each update's cosines to all the others: how correlated it is with
    anything in the round, whatever the sign."""
    n = len(cos)
    return [
        math.sqrt(math.fsum(cos[i][j] * cos[i][j] for j in range(n) if j != i) / (n - 1))
        for i in range(n)
    ]


def noise_level(spec: ScreeningSpec, size: int) -> float:
    """``noise_sigmas / sqrt(size)``: a random direction in ``size`` dimensions has a cosine of
    about ``N(0, 1/size)`` to any fixed vector, so an update whose cosines to all the others stay
    below this is indistinguishable from noise."""
    return spec.noise_sigmas / math.sqrt(size) if size > 0 else 0.0


def _outliers(
    live: list[_Live],
    gram: agg.Gram | None,
    rule: agg.RuleSpec,
    spec: ScreeningSpec,
    size: int,
    prior: Mapping[str, float],
    signals: _Signals,
) -> list[tuple[_Live, Verdict, str, float | None, float | None]]:
    if len(live) < spec.min_outlier_pool or gram is None:
        # Too few to compare with one another; the norm bounds applied, the history counts,
        # and so do the absolute signals (root data, the contributor's own history).
        note = (
            f"accepted (within the norm bounds; only {len(live)} updates: too few to compare "
            "as outliers)"
        )
        small: list[tuple[_Live, Verdict, str, float | None, float | None]] = []
        for i, x in enumerate(live):
            was = prior.get(x.cand.contributor.lower())
            bad = []
            if spec.min_standing is not None and was is not None and was < spec.min_standing:
                bad.append(_bad_standing(was, spec.min_standing))
            vouched = signals.vouches(i, spec)
            decided = _verdict_of([] if vouched else bad, *signals.reasons(i, spec))
            if decided is not None:
                small.append((x, decided[0], decided[1], None, was))
            else:
                small.append((x, Verdict.ACCEPTED, _overruled(note, bad, vouched), None, was))
        return small
    vecs = [x.vec for x in live]
    sub = _sub_gram(gram, [x.index for x in live])
    center = agg.median(vecs)
    center_norm = agg.norm(center)
    to_median = [
        agg.dot(v, center) / (x.norm * center_norm) if center_norm > 0 else 0.0
        for v, x in zip(vecs, live, strict=True)
    ]
    pair = cosine_matrix(sub)
    # Contributors in bad standing (history) do not get to form the consensus.
    priors = [prior.get(x.cand.contributor.lower()) for x in live]
    good = [spec.min_standing is None or p is None or p >= spec.min_standing for p in priors]
    cos = consensus_cosines(pair, to_median, good)
    rms = rms_cosines(pair)
    # (name, values, sign (+1: larger is worse), sigma floor relative to |median|, absolute)
    stats: list[tuple[str, list[float], float, float, float]]
    if rule.rule in ("krum", "multi_krum"):
        scores = agg.krum_scores_from_gram(sub, rule.f or 0)
        stats = [("sqrt krum score", [math.sqrt(s) for s in scores], 1.0, 0.25, 0.0)]
    else:
        dist = [math.sqrt(agg.sq_distance(v, center)) for v in vecs]
        stats = [("distance to median", dist, 1.0, 0.25, 0.0)]
    k = spec.outlier_k
    noise = noise_level(spec, size)
    floor = spec.min_cosine
    accepted_note = "passed all checks"
    # How much the round agrees: the median cosine to the consensus of the updates in good
    # standing.  Below min_consensus (honest non-IID updates near convergence are
    # near-orthogonal, and a correlated minority could pose as the consensus) there is none:
    # the cosine checks are not applied and no standing moves this round.
    strength = _median([c for c, g in zip(cos, good, strict=True) if g] or cos)
    consensus = strength >= spec.min_consensus
    if consensus:
        stats.append(("cosine to consensus", cos, -1.0, 0.0, 0.1))
    else:
        floor = None
        accepted_note = (
            f"passed all checks (no consensus this round: median cosine to it {strength:.3f} "
            f"< {spec.min_consensus:g}; cosine checks not applied, standings unchanged)"
        )
    out: list[tuple[_Live, Verdict, str, float | None, float | None]] = []
    noise_applies = _median(rms) >= NOISE_SEPARATION * noise
    robust = [
        (name, values, sign, *robust_threshold(values, rel_floor=rel, abs_floor=absf))
        for name, values, sign, rel, absf in stats
    ]
    for i, x in enumerate(live):
        worst_z = -math.inf
        hard = []  # robust z-scores: never overruled
        for name, values, sign, med, sigma in robust:
            z = sign * (values[i] - med) / sigma
            worst_z = max(worst_z, z)
            if z > k:
                hard.append(f"{name} {values[i]:.4g} is {z:.1f} robust sigmas from {med:.4g}")
        reasons = []  # fixed floors, standing, noise: the root data may overrule them
        if floor is not None and cos[i] < floor:
            reasons.append(f"cosine to consensus {cos[i]:.4f} is below {floor:g}")
        before = priors[i]
        now = updated_standing(spec, before, cos[i], strength) if consensus else before
        if spec.min_standing is not None and now is not None and now < spec.min_standing:
            reasons.append(_bad_standing(now, spec.min_standing))
        if rms[i] < noise and noise_applies:
            reasons.append(
                f"uncorrelated with every other update, like noise (rms cosine {rms[i]:.3g} "
                f"< {spec.noise_sigmas:g}/sqrt({size}))"
            )
        vouched = signals.vouches(i, spec)
        decided = _verdict_of(hard + ([] if vouched else reasons), *signals.reasons(i, spec))
        if decided is not None:
            out.append((x, decided[0], decided[1], worst_z, now))
        else:
            out.append(
                (x, Verdict.ACCEPTED, _overruled(accepted_note, reasons, vouched), worst_z, now)
            )
    return out


def _bad_standing(standing: float, floor: float) -> str:
    return (
        f"standing {standing:.4f} (agreement with the consensus over its rounds) is below {floor:g}"
    )


def accepted_ids(decisions: Sequence[Decision]) -> list[int]:
    """updateIds of the accepted updates, in updateId order (the aggregation's input order)."""
    return [d.update_id for d in decisions if d.verdict == Verdict.ACCEPTED]
