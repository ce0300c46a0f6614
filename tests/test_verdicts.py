"""fedledger.protocol.verdicts: the verdict file's canonical bytes, validation and Merkle leaves."""

from __future__ import annotations

import json

import pytest

from fedledger.errors import FormatError
from fedledger.protocol import merkle, verdicts
from fedledger.protocol.aggregation import RuleSpec
from fedledger.protocol.verdicts import Verdict, VerdictEntry

H = "0x" + "11" * 32


def _entry(
    uid: int, verdict: Verdict = Verdict.ACCEPTED, score: float | None = 0.5
) -> VerdictEntry:
    return VerdictEntry(
        uid,
        "0x" + f"{uid:040x}",
        "0x" + f"{uid:064x}",
        f"bafy{uid}",
        10 * uid,
        verdict,
        "reason",
        score,
    )


def _file(entries: list[VerdictEntry] | None = None) -> verdicts.VerdictFile:
    return verdicts.build(
        task_id=1,
        round=0,
        rule=RuleSpec(rule="trimmed_mean", beta=0.2),
        base_model_hash=H,
        aggregate_hash=H,
        aggregate_cid="bafyagg",
        entries=entries if entries is not None else [_entry(3), _entry(1, Verdict.OUTLIER)],
        metrics={"accuracy": 0.91},
    )


def test_codes_match_interfaces_md() -> None:
    assert [v.name for v in sorted(Verdict)] == [
        "ACCEPTED",
        "HASH_MISMATCH",
        "UNAVAILABLE",
        "MALFORMED",
        "SHAPE_MISMATCH",
        "NON_FINITE",
        "NORM_BOUND",
        "OUTLIER",
        "LATE",
        "DUPLICATE",
        "FREE_RIDER",
        "COPIED",
        "OUT_OF_RANGE",
        "TENSOR_ROOT_MISMATCH",
        "STALE",
        "SYBIL",
        "INCONSISTENT",
        "HARMFUL",
    ]


def test_round_trip_preserves_the_file() -> None:
    vf = _file()
    assert verdicts.parse(vf.to_bytes(), canonical=True) == vf


def test_entries_are_sorted_by_update_id() -> None:
    assert [e.update_id for e in _file().entries] == [1, 3]


def test_canonical_bytes_are_sorted_compact_ascii() -> None:
    raw = _file().to_bytes()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_scores_are_rounded_to_nine_significant_digits() -> None:
    assert _entry(1, score=0.1 + 0.2).score == 0.3


def test_non_finite_score_is_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        _entry(1, score=float("nan"))


def test_addresses_are_lowercased() -> None:
    e = VerdictEntry(1, "0x" + "AB" * 20, H, "c", 1, Verdict.ACCEPTED)
    assert e.contributor == "0x" + "ab" * 20


def test_root_matches_merkle_over_leaves_in_update_id_order() -> None:
    vf = _file()
    expected = [
        merkle.leaf(e.update_id, e.contributor, e.content_hash, e.verdict) for e in vf.entries
    ]
    assert vf.root() == merkle.root(expected)


def test_proof_of_each_entry_verifies_against_root() -> None:
    vf = _file([_entry(i) for i in range(1, 8)])
    for e in vf.entries:
        assert merkle.verify(vf.root(), e.leaf(), vf.proof(e.update_id))


def test_malformed_json_is_rejected() -> None:
    with pytest.raises(FormatError, match="not valid JSON"):
        verdicts.parse(b"{not json")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other/1"),
        lambda d: d.update(extra=1),
        lambda d: d["entries"][0].update(verdict="MAYBE"),
        lambda d: d["entries"][0].update(contentHash="0x12"),
        lambda d: d["entries"][0].update(updateId=-1),
        lambda d: d["entries"][0].update(numSamples=1.5),
        lambda d: d["entries"][0].pop("reason"),
        lambda d: d["entries"].reverse(),
        lambda d: d["entries"].append(dict(d["entries"][0])),
        lambda d: d.update(rule={"rule": "krum"}),
        lambda d: d.update(rule={"rule": "median", "typo": 1}),
        lambda d: d.update(standing={"0x12": 0.1}),
        lambda d: d.update(standing={"0x" + "ab" * 20: "high"}),
        lambda d: d.update(standing=[0.1]),
        lambda d: d.update(normHistory={"a": 1.0}),
        lambda d: d.update(normHistory=[1.0, 0.0]),
        lambda d: d.update(normHistory=[-2.5]),
        lambda d: d.update(normHistory=["big"]),
        lambda d: d.update(normHistory=[10**400]),
        lambda d: d.update(normHistory=[1.0] * (verdicts.MAX_NORM_HISTORY + 1)),
    ],
    ids=[
        "format",
        "extra-key",
        "verdict",
        "hash",
        "negative-id",
        "float-samples",
        "missing-key",
        "unsorted",
        "duplicate-id",
        "rule-missing-f",
        "rule-unknown-key",
        "standing-bad-address",
        "standing-not-a-number",
        "standing-not-an-object",
        "norm-history-not-a-list",
        "norm-history-zero",
        "norm-history-negative",
        "norm-history-not-a-number",
        "norm-history-beyond-float",
        "norm-history-too-long",
    ],
)
def test_invalid_document_is_a_format_error(mutate) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(_file().to_bytes())
    mutate(doc)
    with pytest.raises(FormatError):
        verdicts.parse(json.dumps(doc).encode())


def test_standing_round_trips_canonically() -> None:
    base = _file()
    vf = verdicts.build(
        task_id=base.task_id,
        round=base.round,
        rule=base.rule,
        base_model_hash=H,
        aggregate_hash=H,
        aggregate_cid="bafyagg",
        entries=list(base.entries),
        standing={"0x" + "AB" * 20: -0.123456789123, "0x" + "01" * 20: 0.5},
    )
    assert vf.standing == {"0x" + "01" * 20: 0.5, "0x" + "ab" * 20: -0.123456789}
    again = verdicts.parse(vf.to_bytes(), canonical=True)
    assert again == vf and again.standing == vf.standing
    assert b'"standing":{"0x0101' in vf.to_bytes()
    assert b"standing" not in base.to_bytes()  # absent unless given


def test_norm_history_round_trips_canonically() -> None:
    base = _file()
    vf = verdicts.build(
        task_id=base.task_id,
        round=base.round,
        rule=base.rule,
        base_model_hash=H,
        aggregate_hash=H,
        aggregate_cid="bafyagg",
        entries=list(base.entries),
        norm_history=[0.123456789123, 2],
    )
    assert vf.norm_history == (0.123456789, 2.0)
    again = verdicts.parse(vf.to_bytes(), canonical=True)
    assert again == vf and again.norm_history == vf.norm_history
    assert b'"normHistory":[0.123456789,2.0]' in vf.to_bytes()
    assert b"normHistory" not in base.to_bytes()  # absent unless given


def test_non_canonical_bytes_are_rejected_when_canonical_is_required() -> None:
    pretty = json.dumps(json.loads(_file().to_bytes()), indent=2).encode()
    assert verdicts.parse(pretty) == _file()
    with pytest.raises(FormatError, match="canonical"):
        verdicts.parse(pretty, canonical=True)


def test_two_verdicts_for_one_update_are_refused() -> None:
    with pytest.raises(FormatError, match="exactly one verdict"):
        _file([_entry(1), _entry(1, Verdict.OUTLIER)])
