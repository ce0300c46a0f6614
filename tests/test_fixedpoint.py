"""fedledger.protocol.fixedpoint and exact_rules: the integer definitions of docs/aggregation.md.

Every rule is checked against a reference written with Python ints and ``fractions`` (the
definition, with no numpy in it), and for the properties exactness buys: the same result
whatever the order of the updates, the sharding of the coordinates or the number of threads.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedledger.errors import ConfigError, FormatError
from fedledger.protocol import aggregation as A
from fedledger.protocol import exact_rules as X
from fedledger.protocol.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    FixedPointFormat,
    FixedPointRangeError,
    dequantize,
    first_out_of_range,
    quantize,
    round_half_even,
)

FMT = FixedPointFormat()  # frac_bits 24
ULP = 2.0**-24

# --------------------------------------------------------------------------- references


def ref_fedavg(qs: list[list[int]], weights: list[int]) -> list[int]:
    total = sum(weights)
    return [
        round(Fraction(sum(w * q[c] for w, q in zip(weights, qs, strict=True)), total))
        for c in range(len(qs[0]))
    ]


def ref_median(qs: list[list[int]]) -> list[int]:
    n, out = len(qs), []
    for c in range(len(qs[0])):
        col = sorted(q[c] for q in qs)
        out.append(col[n // 2] if n % 2 else round(Fraction(col[n // 2 - 1] + col[n // 2], 2)))
    return out


def ref_trimmed(qs: list[list[int]], k: int) -> list[int]:
    n, out = len(qs), []
    for c in range(len(qs[0])):
        kept = sorted(q[c] for q in qs)[k : n - k]
        out.append(round(Fraction(sum(kept), len(kept))))
    return out


def ref_krum_order(qs: list[list[int]], f: int) -> list[int]:
    n = len(qs)
    if n == 1:
        return [0]
    k = min(max(1, n - f - 2), n - 1)
    dist = [[sum((a - b) ** 2 for a, b in zip(qi, qj, strict=True)) for qj in qs] for qi in qs]
    scores = [sum(sorted(dist[i][j] for j in range(n) if j != i)[:k]) for i in range(n)]
    return sorted(range(n), key=lambda i: (scores[i], i))


def ref_clip(q: list[int], bound: int) -> list[int]:
    s = sum(x * x for x in q)
    if s <= bound * bound:
        return list(q)
    # the largest multiplier num with num / 2**32 <= bound / sqrt(s): a float guess, corrected
    limit = bound * bound << 64
    num = int(2**32 * bound / math.sqrt(s))
    while num * num * s > limit:
        num -= 1
    while (num + 1) ** 2 * s <= limit:
        num += 1
    return [int(Fraction(x * num, 2**32)) for x in q]  # int() truncates toward zero


def as_lists(qs: list[np.ndarray]) -> list[list[int]]:
    return [[int(v) for v in q] for q in qs]


def rule_of(name: str, **kw: object) -> X.ExactRule:
    return X.ExactRule(rule=name, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- strategies

int32s = st.integers(INT32_MIN, INT32_MAX)
smallints = st.integers(-4, 4)  # many ties and equal values


@st.composite
def int_updates(draw: st.DrawFn, max_n: int = 12, max_d: int = 24) -> list[np.ndarray]:
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    elems = draw(st.sampled_from([int32s, smallints, st.integers(-1000, 1000)]))
    return [draw(arrays(np.int32, d, elements=elems)) for _ in range(n)]


weights_st = st.one_of(
    st.integers(0, 50), st.integers(0, 2**29), st.integers(0, 2**40), st.integers(0, 2**60)
)


# --------------------------------------------------------------------------- the format


def test_format_defaults_to_int32_with_24_fraction_bits() -> None:
    assert FMT.coordinate == "int32"
    assert FMT.frac_bits == 24
    assert FMT.ulp == 2.0**-24
    assert FMT.max_value == (2**31 - 1) * 2.0**-24
    assert FMT.min_value == -128.0


@pytest.mark.parametrize(
    "bad", [{"frac_bits": 32}, {"frac_bits": -1}, {"frac_bits": 2.5}, {"frac_bitz": 3}]
)
def test_format_rejects_bad_fraction_bits_and_unknown_keys(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="fixed-point format"):
        FixedPointFormat.parse(bad)


def test_format_parses_json_and_a_task_spec_section() -> None:
    assert FixedPointFormat.parse('{"frac_bits": 20}').frac_bits == 20
    assert FixedPointFormat.parse({"fixed_point": {"frac_bits": 16}}).frac_bits == 16


# --------------------------------------------------------------------------- quantize


def test_quantize_rounds_half_to_even() -> None:
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.25, -3.75], dtype=np.float32)
    q = quantize(halves * np.float32(ULP), FMT)
    assert q.dtype == np.int32
    assert q.tolist() == [0, 2, 2, 0, -2, -2, 3, -4]


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 50), elements=st.floats(-127.5, 127.5, width=32)),
    st.integers(0, 24),
)
def test_quantize_is_round_half_even_of_the_exact_product(x: np.ndarray, bits: int) -> None:
    fmt = FixedPointFormat(frac_bits=bits)
    assume(np.abs(x).max() < fmt.max_value)
    q = quantize(x, fmt)
    assert q.tolist() == [round(Fraction(float(v)) * 2**bits) for v in x]


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(1, 50), elements=st.floats(-127.75, 127.75, width=32)))
def test_round_trip_error_is_at_most_half_an_ulp_of_the_scale(x: np.ndarray) -> None:
    back = dequantize(quantize(x, FMT), FMT)
    assert back.dtype == np.float32
    for v, b in zip(x, back, strict=True):
        assert abs(Fraction(float(b)) - Fraction(float(v))) <= Fraction(1, 2**25)


def test_dequantize_is_the_correctly_rounded_float32_of_q_times_the_scale() -> None:
    q = np.array([INT32_MIN, INT32_MAX, 2**24 + 1, -(2**25) - 3, 7, 0], dtype=np.int32)
    expect = [np.float32(float(Fraction(int(v), 2**24))) for v in q]
    assert dequantize(q, FMT).tolist() == expect
    assert dequantize(q, FMT, dtype=np.float64).tolist() == [int(v) * 2.0**-24 for v in q]


def test_quantize_accepts_the_edges_of_the_int32_range() -> None:
    fmt = FixedPointFormat(frac_bits=0)
    x = np.array([-(2.0**31), 2.0**31 - 1, 2.0**31 - 1.5, -(2.0**31) - 0.5], dtype=np.float64)
    assert quantize(x, fmt).tolist() == [INT32_MIN, INT32_MAX, 2**31 - 2, INT32_MIN]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (2.0**31, "outside"),
        (2.0**31 - 0.5, "outside"),  # rounds half to even, up to 2**31: out, not wrapped
        (-(2.0**31) - 1, "outside"),
        (float("nan"), "not finite"),
        (float("inf"), "not finite"),
        (float("-inf"), "not finite"),
    ],
)
def test_out_of_range_coordinate_is_reported_not_wrapped(value: float, why: str) -> None:
    fmt = FixedPointFormat(frac_bits=0)
    x = np.zeros(10, dtype=np.float64)
    x[7] = value
    with pytest.raises(FixedPointRangeError, match=why) as info:
        quantize(x, fmt)
    assert info.value.index == 7
    assert isinstance(info.value, FormatError)
    assert first_out_of_range(x, fmt) == 7


def test_first_out_of_range_names_the_first_bad_coordinate() -> None:
    x = np.zeros(1000, dtype=np.float32)
    assert first_out_of_range(x, FMT) is None
    x[[900, 412, 5]] = [np.inf, 200.0, -129.0]
    assert first_out_of_range(x, FMT) == 5
    with pytest.raises(FixedPointRangeError, match=r"coordinate 5 .*-129"):
        quantize(x, FMT)


def test_float32_overflow_of_the_scaled_value_is_out_of_range() -> None:
    x = np.array([0.0, 3e38], dtype=np.float32)  # x * 2**30 overflows float32
    assert first_out_of_range(x, FixedPointFormat(frac_bits=30)) == 1


def test_quantize_refuses_non_float_input() -> None:
    with pytest.raises(FormatError, match="float32"):
        quantize(np.array([1, 2], dtype=np.int64), FMT)


@given(st.integers(-(2**70), 2**70), st.integers(1, 2**70))
def test_round_half_even_is_python_round_of_the_fraction(num: int, den: int) -> None:
    assert round_half_even(num, den) == round(Fraction(num, den))


# --------------------------------------------------------------------------- rules vs references


@settings(max_examples=150, deadline=None)
@given(int_updates(), st.data())
def test_fedavg_equals_the_fraction_reference(qs: list[np.ndarray], data: st.DataObject) -> None:
    ws = data.draw(st.lists(weights_st, min_size=len(qs), max_size=len(qs)))
    assume(sum(ws) > 0)
    out = X.fedavg(qs, ws)
    assert out.dtype == np.int32
    assert out.tolist() == ref_fedavg(as_lists(qs), ws)


@pytest.mark.parametrize("weight", [3, 2**31, 2**40, 2**50])  # int64, 15-bit limbs, Python ints
def test_fedavg_paths_agree_with_the_reference(weight: int) -> None:
    rng = np.random.default_rng(1)
    qs = [rng.integers(INT32_MIN, INT32_MAX, 4099, endpoint=True, dtype=np.int32) for _ in range(5)]
    ws = [weight, weight - 1, 1, weight // 3, 0]
    assert X.fedavg(qs, ws).tolist() == ref_fedavg(as_lists(qs), ws)


@pytest.mark.parametrize("total", [2**21 - 2, 2**21, 2**22, 2**32 - 2, 2**32, 2**32 + 2])
def test_fedavg_rounds_ties_and_near_ties_exactly_at_each_kernel_bound(total: int) -> None:
    # weights (D - 1, 1): N = (D - 1) q1 + q2 == q2 - q1 (mod D), so q2 = q1 + D/2 + delta puts
    # N / D exactly on a half (delta 0) or 1/D to either side of one, at the largest magnitudes
    rng = np.random.default_rng(total)
    half = total // 2
    q1 = rng.integers(INT32_MIN, INT32_MAX - half - 1, 3000, endpoint=True).astype(np.int64)
    q2 = q1 + half + np.tile([-1, 0, 1], 1000)
    qs = [q1.astype(np.int32), q2.astype(np.int32)]
    ws = [total - 1, 1]
    assert X.fedavg(qs, ws).tolist() == ref_fedavg(as_lists(qs), ws)


@settings(max_examples=150, deadline=None)
@given(int_updates())
def test_median_equals_the_python_reference(qs: list[np.ndarray]) -> None:
    assert X.median(qs).tolist() == ref_median(as_lists(qs))


@settings(max_examples=150, deadline=None)
@given(
    int_updates(),
    st.sampled_from([Fraction(0), Fraction(1, 10), Fraction(1, 5), Fraction(49, 100)]),
)
def test_trimmed_mean_equals_the_python_reference(qs: list[np.ndarray], beta: Fraction) -> None:
    k = X.trim_count(beta, len(qs))
    assert X.trimmed_mean(qs, beta=beta).tolist() == ref_trimmed(as_lists(qs), k)


@settings(max_examples=100, deadline=None)
@given(int_updates(max_n=9, max_d=12), st.integers(0, 4))
def test_krum_order_equals_the_python_reference(qs: list[np.ndarray], f: int) -> None:
    order = ref_krum_order(as_lists(qs), f)
    assert X.krum_order(X.gram(qs), f) == order
    assert X.krum(qs, f=f).tolist() == qs[order[0]].tolist()


@settings(max_examples=100, deadline=None)
@given(int_updates(max_n=9, max_d=12), st.integers(0, 3), st.integers(1, 9) | st.none())
def test_multi_krum_is_the_rounded_mean_of_the_best_m(
    qs: list[np.ndarray], f: int, m: int | None
) -> None:
    n = len(qs)
    keep = max(1, min(n - f if m is None else m, n))
    chosen = ref_krum_order(as_lists(qs), f)[:keep]
    expect = ref_fedavg([as_lists(qs)[i] for i in chosen], [1] * keep)
    assert X.multi_krum(qs, f=f, m=m).tolist() == expect


@settings(max_examples=150, deadline=None)
@given(arrays(np.int32, st.integers(1, 30), elements=int32s | smallints), st.integers(1, 2**40))
def test_clip_equals_the_python_reference(q: np.ndarray, bound: int) -> None:
    out = X.clip(q, bound)
    assert out.dtype == np.int32
    assert out.tolist() == ref_clip([int(v) for v in q], bound)


@settings(max_examples=150, deadline=None)
@given(arrays(np.int32, st.integers(1, 30), elements=int32s), st.integers(1, 2**36))
def test_clipped_norm_never_exceeds_the_bound(q: np.ndarray, bound: int) -> None:
    out = [int(v) for v in X.clip(q, bound)]
    assert sum(v * v for v in out) <= bound * bound
    assert all(abs(o) <= abs(int(v)) and o * int(v) >= 0 for o, v in zip(out, q, strict=True))


def test_an_update_inside_the_bound_is_not_changed() -> None:
    q = np.array([3, -4], dtype=np.int32)  # norm 5
    assert X.clip(q, 5).tolist() == [3, -4]
    assert X.clip(q, 4).tolist() == [2, -3]  # x 4/5 = 2.4, -3.2, truncated toward zero
    assert X.clip_multiplier(25, 5) is None
    assert X.clip_multiplier(25, 4) == (4 * 2**32) // 5


# --------------------------------------------------------------------------- order, shards, threads

ALL_RULES = [
    rule_of("fedavg"),
    rule_of("fedavg", weight_cap=7, clip_bound=3000),
    rule_of("median"),
    rule_of("median", clip_bound=50),
    rule_of("trimmed_mean", beta=Fraction(1, 5)),
    rule_of("trimmed_mean", beta=Fraction(0)),
    rule_of("krum", f=1),
    rule_of("krum", f=0, clip_bound=10**6),
    rule_of("multi_krum", f=1),
    rule_of("multi_krum", f=2, m=3, clip_bound=10**9),
]


def _scores_distinct(rule: X.ExactRule, qs: list[np.ndarray]) -> bool:
    """Whether Krum's choice is free of ties between different updates (index tie-break)."""
    if rule.rule not in ("krum", "multi_krum"):
        return True
    plan = X.plan_round(rule, qs)
    vecs = X.clipped(qs, plan.multipliers)
    scores = X.krum_scores(X.gram(vecs), rule.f or 0)
    by_score: dict[int, set[bytes]] = {}
    for s, v in zip(scores, vecs, strict=True):
        by_score.setdefault(s, set()).add(v.tobytes())
    return all(len(vs) == 1 for vs in by_score.values())


@settings(max_examples=60, deadline=None)
@given(int_updates(max_n=10, max_d=16), st.data(), st.sampled_from(ALL_RULES))
def test_every_rule_is_invariant_under_reordering_the_updates(
    qs: list[np.ndarray], data: st.DataObject, rule: X.ExactRule
) -> None:
    ws = data.draw(st.lists(st.integers(1, 100), min_size=len(qs), max_size=len(qs)))
    perm = data.draw(st.permutations(range(len(qs))))
    assume(_scores_distinct(rule, qs))
    whole = X.aggregate_exact(rule, qs, ws)
    moved = X.aggregate_exact(rule, [qs[i] for i in perm], [ws[i] for i in perm])
    assert moved.tolist() == whole.tolist()


def test_krum_ties_go_to_the_earlier_update() -> None:
    a = np.array([1, 0], dtype=np.int32)
    b = np.array([0, 1], dtype=np.int32)  # every pairwise distance is 2: all scores equal
    c = np.array([-1, 0], dtype=np.int32)
    d = np.array([0, -1], dtype=np.int32)
    assert X.krum([b, a, c, d], f=0).tolist() == b.tolist()
    assert X.krum([a, b, c, d], f=0).tolist() == a.tolist()


@settings(max_examples=60, deadline=None)
@given(int_updates(max_n=10, max_d=40), st.data(), st.sampled_from(ALL_RULES))
def test_sharded_equals_whole_bit_for_bit(
    qs: list[np.ndarray], data: st.DataObject, rule: X.ExactRule
) -> None:
    d = qs[0].size
    ws = data.draw(st.lists(st.integers(0, 2**33), min_size=len(qs), max_size=len(qs)))
    assume(sum(ws) > 0)
    cuts = sorted(data.draw(st.lists(st.integers(0, d), max_size=6)))
    bounds = list(zip([0, *cuts], [*cuts, d], strict=True))
    whole = X.aggregate_exact(rule, qs, ws)
    plan = X.plan_round(rule, qs, shards=bounds)
    assert plan == X.plan_round(rule, qs)
    pieces = [X.aggregate_range(rule, qs, ws, s, e, plan) for s, e in bounds]
    assert np.concatenate(pieces).tolist() == whole.tolist()
    # a shard that holds only its own columns computes the same
    cols = [X.aggregate_columns(rule, [q[s:e] for q in qs], ws, plan) for s, e in bounds]
    assert np.concatenate(cols).tolist() == whole.tolist()


def test_gram_of_shards_sums_to_the_gram_of_the_whole() -> None:
    rng = np.random.default_rng(2)
    qs = [rng.integers(INT32_MIN, INT32_MAX, 1000, endpoint=True, dtype=np.int32) for _ in range(6)]
    parts = [X.gram([q[s : s + 137] for q in qs]) for s in range(0, 1000, 137)]
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    assert total == X.gram(qs)
    assert total.ints[1][2] == sum(int(a) * int(b) for a, b in zip(qs[1], qs[2], strict=True))


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: f"{r.rule}-{r.clip_bound}")
def test_threads_and_blocks_do_not_change_any_bit(rule: X.ExactRule) -> None:
    rng = np.random.default_rng(3)
    qs = [rng.integers(-(10**6), 10**6, 70_001, dtype=np.int32) for _ in range(9)]
    ws = [int(w) for w in rng.integers(1, 1000, 9)]
    plan = X.plan_round(rule, qs)
    one = X.aggregate_columns(rule, qs, ws, plan, threads=1)
    three = X.aggregate_columns(rule, qs, ws, plan, threads=3)
    assert one.tolist() == three.tolist()


# --------------------------------------------------------------------------- extremes


@pytest.mark.parametrize("value", [INT32_MAX, INT32_MIN])
def test_no_overflow_with_every_coordinate_at_an_int32_extreme(value: int) -> None:
    qs = [np.full(64, value, dtype=np.int32)] * 1000
    ws = [2**29] * 1000
    for rule in (
        rule_of("fedavg", weight_cap=2**29),
        rule_of("median"),
        rule_of("trimmed_mean", beta=Fraction(1, 10)),
        rule_of("krum", f=10),
        rule_of("multi_krum", f=10),
    ):
        assert X.aggregate_exact(rule, qs, ws).tolist() == [value] * 64


def test_no_overflow_with_updates_at_opposite_extremes_and_capped_weights() -> None:
    n = 1000
    qs = [np.full(16, INT32_MAX if i % 3 else INT32_MIN, dtype=np.int32) for i in range(n)]
    qs[0][::2] = INT32_MIN  # columns differ
    ws = [2**29 - (i % 2) for i in range(n)]
    lists = as_lists(qs)
    assert X.fedavg(qs, ws).tolist() == ref_fedavg(lists, ws)
    assert X.median(qs).tolist() == ref_median(lists)
    assert X.trimmed_mean(qs, beta=Fraction(1, 5)).tolist() == ref_trimmed(lists, 200)
    g = X.gram(qs)
    assert g.sq_distance(0, 1) == sum((a - b) ** 2 for a, b in zip(lists[0], lists[1], strict=True))
    assert X.clip(qs[1], 1).tolist() == [0] * 16


# --------------------------------------------------------------------------- against float32


def _realistic(seed: int, n: int = 11, d: int = 60_000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d).astype(np.float32)
    return [
        ((common + rng.standard_normal(d, dtype=np.float32)) * np.float32(0.01)) for _ in range(n)
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {"rule": "fedavg", "sample_cap": 300},
        {"rule": "median"},
        {"rule": "trimmed_mean", "beta": 0.2},
        {"rule": "krum", "f": 2},
        {"rule": "multi_krum", "f": 2},
        {"rule": "fedavg", "clip_norm": 1.5},
        {"rule": "median", "clip_norm": 1.5},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_exact_rules_agree_with_the_float32_rules_within_two_ulps(spec: dict[str, object]) -> None:
    xs = _realistic(4)
    ns = [50, 400, 120, 90, 300, 10, 220, 180, 75, 260, 33]
    rs = A.RuleSpec.parse(spec)
    floats = A.aggregate(rs, xs, ns)
    exact = X.aggregate_exact(
        X.ExactRule.from_rule_spec(rs, FMT), [quantize(x, FMT) for x in xs], ns
    )
    diff = np.abs(dequantize(exact, FMT).astype(np.float64) - floats.astype(np.float64))
    assert float(diff.max()) <= 2 * ULP


def test_exact_krum_picks_the_update_the_float_rule_picks() -> None:
    xs = _realistic(5, n=9)
    xs[3] = -xs[3] * np.float32(3)  # an outlier
    qs = [quantize(x, FMT) for x in xs]
    assert X.krum_order(X.gram(qs), 2) == A.krum_order_from_gram(A.exact_gram(xs), 2)


# --------------------------------------------------------------------------- the rule spec


def test_rule_spec_numbers_mean_the_decimals_they_are_written_as() -> None:
    rs = A.RuleSpec.parse({"rule": "trimmed_mean", "beta": 0.3, "clip_norm": 0.1})
    rule = X.ExactRule.from_rule_spec(rs, FMT)
    assert rule.beta == Fraction(3, 10)
    assert X.trim_count(rule.beta, 10) == 3  # not 2, as the binary value 0.29999... would give
    assert rule.clip_bound == math.floor(Fraction(1, 10) * 2**24)
    fed = X.ExactRule.from_rule_spec(A.RuleSpec.parse({"rule": "fedavg"}), FMT)
    assert fed.weight_cap == A.MAX_SAMPLE_CAP  # the float rule's default cap


def test_trim_count_is_floor_of_beta_times_n() -> None:
    assert [X.trim_count(Fraction(1, 4), n) for n in (1, 3, 4, 7, 8)] == [0, 0, 1, 1, 2]
    assert X.trim_count(0.2, 10) == 2


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"rule": "trimmed_mean"}, "needs beta"),
        ({"rule": "trimmed_mean", "beta": Fraction(1, 2)}, "beta"),
        ({"rule": "krum"}, "needs f"),
        ({"rule": "median", "f": 1}, "does not apply"),
        ({"rule": "fedavg", "weight_cap": 0}, "weight_cap"),
        ({"rule": "median", "clip_bound": 0}, "clip_bound"),
        ({"rule": "mean"}, "unknown rule"),
    ],
)
def test_exact_rule_rejects_bad_parameters(kw: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        X.ExactRule(**kw)  # type: ignore[arg-type]


def test_a_clip_norm_below_one_unit_is_refused() -> None:
    rs = A.RuleSpec.parse({"rule": "median", "clip_norm": 1e-9})
    with pytest.raises(ConfigError, match="below one unit"):
        X.ExactRule.from_rule_spec(rs, FMT)


# --------------------------------------------------------------------------- bad inputs


def test_rules_take_int32_vectors_only() -> None:
    with pytest.raises(FormatError, match="int32"):
        X.median([np.zeros(3, dtype=np.float32)])  # type: ignore[list-item]


def test_rules_refuse_updates_of_different_sizes() -> None:
    with pytest.raises(FormatError, match="update 1 has 2"):
        X.median([np.zeros(3, dtype=np.int32), np.zeros(2, dtype=np.int32)])


def test_rules_refuse_an_empty_round() -> None:
    with pytest.raises(ValueError, match="no updates"):
        X.median([])


def test_fedavg_refuses_zero_total_weight_and_negative_counts() -> None:
    qs = [np.zeros(3, dtype=np.int32)] * 2
    with pytest.raises(ValueError, match="zero weight"):
        X.fedavg(qs, [0, 0])
    with pytest.raises(ValueError, match="negative"):
        X.fedavg(qs, [-1, 5])


def test_weights_are_capped_per_update() -> None:
    qs = [np.array([0], dtype=np.int32), np.array([100], dtype=np.int32)]
    rule = rule_of("fedavg", weight_cap=10)
    assert X.aggregate_exact(rule, qs, [1000, 10]).tolist() == [50]


def test_a_column_range_needs_the_round_plan_for_krum_and_clipping() -> None:
    qs = [np.zeros(4, dtype=np.int32)] * 3
    with pytest.raises(ValueError, match="plan_round"):
        X.aggregate_columns(rule_of("krum", f=0), qs, [1, 1, 1], None)
    with pytest.raises(ValueError, match="plan_round"):
        X.aggregate_columns(rule_of("median", clip_bound=5), qs, [1, 1, 1], None)


def test_aggregate_range_checks_its_bounds() -> None:
    qs = [np.zeros(4, dtype=np.int32)] * 2
    with pytest.raises(ValueError, match="range"):
        X.aggregate_range(rule_of("median"), qs, [1, 1], 3, 9)


# --------------------------------------------------------------------------- docs/aggregation.md


def _v(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int32)


def test_worked_examples_in_the_docs() -> None:
    qs = [_v(10, -7, 3), _v(4, 5, -3), _v(1, 1, 2), _v(-6, 8, 1)]
    assert X.fedavg(qs, [3, 1, 2, 2]).tolist() == [3, 0, 2]  # 24/8, 2/8, 12/8 (a tie: to 2)
    assert X.median(qs).tolist() == [2, 3, 2]  # 5/2 -> 2, 6/2, 3/2 -> 2
    assert X.median(qs[:3]).tolist() == [4, 1, 2]
    five = [*qs, _v(100, -100, 50)]
    assert X.trimmed_mean(five, beta=Fraction(1, 5)).tolist() == [5, 0, 2]  # 15/3, -1/3, 6/3
    g = X.gram(five)
    assert [g.sq_distance(0, j) for j in range(5)] == [0, 216, 146, 485, 18958]
    assert X.krum_scores(g, 1) == [362, 175, 149, 224, 41264]
    assert X.krum_order(g, 1) == [2, 1, 3, 0, 4]
    assert X.krum(five, f=1).tolist() == [1, 1, 2]
    assert X.multi_krum(five, f=1).tolist() == [2, 2, 1]  # 9/4, 7/4, 3/4
    assert X.clip_multiplier(2500, 20) == 1717986918  # floor(0.4 * 2**32)
    assert X.clip(_v(30, -40, 0), 20).tolist() == [11, -15, 0]  # 11.99..., -15.99... truncated
    assert round_half_even(5, 2) == 2 and round_half_even(-5, 2) == -2
    assert round_half_even(7, 2) == 4 and round_half_even(-1, 3) == 0


def test_quantize_examples_in_the_docs() -> None:
    fmt = FixedPointFormat(frac_bits=2)
    q = quantize(np.array([0.3, -0.375, 0.125, 0.625], dtype=np.float32), fmt)
    assert q.tolist() == [1, -2, 0, 2]
    assert dequantize(q, fmt).tolist() == [0.25, -0.5, 0.0, 0.5]
    with pytest.raises(FixedPointRangeError, match="coordinate 1 "):
        quantize(np.array([7.0, 8.0], dtype=np.float32), FixedPointFormat(frac_bits=28))


def test_a_plan_made_for_another_rule_is_refused() -> None:
    qs = [np.arange(4, dtype=np.int32)] * 3
    clipping = X.plan_round(rule_of("median", clip_bound=2), qs)
    with pytest.raises(ValueError, match="clipping does not match"):
        X.aggregate_columns(rule_of("median"), qs, [1, 1, 1], clipping)
    with pytest.raises(ValueError, match="Krum choice"):
        X.aggregate_columns(rule_of("krum", f=0, clip_bound=2), qs, [1, 1, 1], clipping)
    with pytest.raises(ValueError, match="round has 2"):
        X.aggregate_columns(rule_of("median", clip_bound=2), qs[:2], [1, 1], clipping)
