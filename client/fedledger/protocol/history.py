"""What the screen of round ``r`` knows of round ``r - 1``: its global step and each
contributor's accepted update (docs/defences.md, "History").

Both come from the previous round's *attested* verdict file and the update files it names, so
every validator and re-verifier rebuilds them alike: the accepted updates are fetched by their
CIDs (checked against their ``contentHash``), decoded as judging decoded them, and the global
step is recomputed by the rule the verdict file records (:func:`fedledger.protocol.aggregation.
aggregate_tensors`, or the exact integer rule of a fixed-point task) -- deterministic, so the
same bits as the aggregate the chain attested.

The screen uses them for two checks: ``STALE`` (an update that replays the previous global step
or the contributor's own previous update: a free rider's cheapest trick) and ``INCONSISTENT``
(an update that contradicts its own contributor's previous accepted one: a sleeper turning, as
FLDetector, Zhang et al. 2022, checks each client against its own history).

A private task (committee encryption) keeps no history here: its updates are envelopes, and
every judge of the task skips these checks alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedledger.content.store import ContentStore
from fedledger.errors import FedledgerError, FormatError, StoreError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec, verdicts
from fedledger.protocol.fixedpoint import FixedPointFormat, Int32Vector
from fedledger.protocol.verdicts import Verdict

Vector = npt.NDArray[np.float32]


FOLLOWED = frozenset({Verdict.ACCEPTED, Verdict.INCONSISTENT, Verdict.HARMFUL})
"""The verdicts whose updates the next round reads back: accepted ones (the step, each
contributor's own history) and those rejected as a contributor turning or as harmful, so that
carrying on the same way stays rejected."""


@dataclass(frozen=True)
class PreviousUpdate:
    """A contributor's update of the previous round and its verdict (one of :data:`FOLLOWED`)."""

    update_id: int
    vector: Vector
    verdict: Verdict = Verdict.ACCEPTED


@dataclass(frozen=True)
class History:
    """The previous round, as the screen sees it."""

    round: int
    step: Vector | None
    """The previous round's global step (``None`` when it accepted nothing)."""
    updates: Mapping[str, PreviousUpdate]
    """Lowercase contributor address -> its update of the previous round, if that one was
    accepted, INCONSISTENT or HARMFUL."""


class HistoryUnavailable(StoreError):
    """An accepted update of the previous round cannot be read back: the round cannot be judged
    with its history checks until it can (every judge must see the same history)."""


def previous_history(
    store: ContentStore,
    previous: verdicts.VerdictFile,
    layout: agg.TensorLayout,
    fmt: FixedPointFormat | None,
    max_bytes: int,
) -> History:
    """Rebuild round ``previous.round``'s global step and accepted updates (module docstring).

    Raises :class:`HistoryUnavailable` when one of its accepted update files cannot be fetched
    or no longer decodes to the model's tensors.
    """
    from fedledger.protocol.rounds import aggregate_fixed, fixed_view  # judging's own decoding

    floats: list[Mapping[str, np.ndarray]] = []
    ints: list[Int32Vector] = []
    weights: list[int] = []
    updates: dict[str, PreviousUpdate] = {}
    for e in previous.entries:
        if e.verdict not in FOLLOWED:
            continue
        qs: Int32Vector | None = None
        try:
            data = store.get(e.cid, max_bytes=max_bytes)
            if codec.sha256_hex(data) != e.content_hash:
                raise FormatError(f"bytes hash to {codec.sha256_hex(data)}, not {e.content_hash}")
            dec = codec.decode(data, kind="update", max_bytes=max_bytes, max_elements=layout.size)
            tensors: Mapping[str, np.ndarray] = dec.tensors
            if fmt is not None:
                tensors, q = fixed_view(dec, layout, fmt)
                if q is None:
                    raise FormatError("no fixed-point vector")
                qs = q
            vec, _ = agg.flatten(tensors, layout)
        except FedledgerError as exc:
            raise HistoryUnavailable(
                f"round {previous.round}'s accepted update {e.update_id} ({e.cid}) cannot be "
                f"read back: {exc}",
                hint="the history checks of the next round need the previous round's accepted "
                "updates: keep them pinned, or fetch them into the store",
            ) from exc
        updates[e.contributor] = PreviousUpdate(
            e.update_id, np.array(vec, dtype=np.float32), e.verdict
        )
        if e.verdict == Verdict.ACCEPTED:
            floats.append(tensors)
            weights.append(e.num_samples)
            if qs is not None:
                ints.append(qs)
    step: Vector | None = None
    if floats:
        if fmt is None:
            delta = agg.aggregate_tensors(previous.rule, floats, weights, layout)
        else:
            delta, _ = aggregate_fixed(previous.rule, fmt, ints, weights, layout)
        flat, _ = agg.flatten(delta, layout)
        step = np.array(flat, dtype=np.float32)
    return History(previous.round, step, updates)
