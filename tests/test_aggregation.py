"""fedledger.protocol.aggregation: rules against plain reference implementations, bit-exact determinism."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedledger.errors import ConfigError, FormatError
from fedledger.protocol import aggregation as A

finite32 = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def _updates(seed: int, n: int = 7, d: int = 70_001) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(d).astype(np.float32) for _ in range(n)]


def _bits(x: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).digest()


# --------------------------------------------------------------- against references


def test_fedavg_matches_weighted_mean_within_float32_rounding() -> None:
    xs, ns = _updates(0), [5, 10, 3, 7, 2, 9, 1]
    ref = (np.array(xs, dtype=np.float64) * np.array(ns)[:, None]).sum(0) / sum(ns)
    np.testing.assert_allclose(A.fedavg(xs, ns), ref, rtol=0, atol=1e-6)


def test_fedavg_is_the_fixed_order_float32_weighted_sum() -> None:
    xs, ns = _updates(0), [5, 10, 3, 7, 2, 9, 1]
    acc = np.zeros_like(xs[0])
    for x, n in zip(xs, ns, strict=True):
        acc = acc + np.float32(n) * x
    np.testing.assert_array_equal(A.fedavg(xs, ns), acc / np.float32(sum(ns)))


def test_fedavg_caps_stated_sample_counts() -> None:
    xs = _updates(1, n=3)
    np.testing.assert_array_equal(
        A.fedavg(xs, [10**9, 50, 100], sample_cap=100), A.fedavg(xs, [100, 50, 100])
    )


@pytest.mark.parametrize(
    ("spec", "max_samples", "cap"),
    [
        ({"rule": "fedavg"}, 500, 500),  # the task's bound is the cap
        ({"rule": "fedavg", "sample_cap": 100}, 500, 100),  # the rule's is tighter
        ({"rule": "fedavg", "sample_cap": 800}, 500, 500),  # the task's is tighter
        ({"rule": "fedavg"}, 2**64 - 1, None),  # nothing tighter than MAX_SAMPLE_CAP
    ],
)
def test_fedavg_weight_cap_is_the_smaller_of_the_rule_and_the_task(
    spec: dict, max_samples: int, cap: int | None
) -> None:
    assert A.RuleSpec.parse(spec).with_task_cap(max_samples).sample_cap == cap


def test_the_task_cap_leaves_rules_that_do_not_weigh_updates_unchanged() -> None:
    rule = A.RuleSpec(rule="median", clip_norm=2.0)
    assert rule.with_task_cap(7) is rule


def test_a_task_cap_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="maxSamples"):
        A.RuleSpec(rule="fedavg").with_task_cap(0)


def test_fedavg_of_known_example() -> None:
    xs = [np.array([1.0, 2.0], np.float32), np.array([3.0, -2.0], np.float32)]
    np.testing.assert_array_equal(A.fedavg(xs, [1, 3]), np.array([2.5, -1.0], np.float32))


def test_median_matches_numpy_for_odd_n() -> None:
    xs = _updates(2)
    np.testing.assert_array_equal(A.median(xs), np.median(np.array(xs), axis=0))


def test_median_of_even_n_is_mean_of_middle_pair() -> None:
    xs = _updates(3, n=6)
    s = np.sort(np.array(xs, dtype=np.float64), axis=0)
    np.testing.assert_array_equal(A.median(xs), ((s[2] + s[3]) / 2).astype(np.float32))


def test_trimmed_mean_matches_reference() -> None:
    xs = _updates(4, n=10)
    s = np.sort(np.array(xs, dtype=np.float64), axis=0)[2:8]
    ref = s[0]
    for row in s[1:]:
        ref = ref + row
    np.testing.assert_array_equal(A.trimmed_mean(xs, beta=0.2), (ref / 6).astype(np.float32))


def _krum_reference(xs: list[np.ndarray], f: int) -> list[float]:
    x = np.array(xs, dtype=np.float64)
    n, k = len(xs), max(1, len(xs) - f - 2)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return [float(np.sort(np.delete(d[i], i))[:k].sum()) for i in range(n)]


def test_krum_scores_match_reference_to_fixed_point_resolution() -> None:
    xs = _updates(5, n=8, d=5000)
    np.testing.assert_allclose(A.krum_scores(xs, 2), _krum_reference(xs, 2), rtol=1e-4)


def test_krum_returns_the_best_scored_update() -> None:
    xs = _updates(6, n=8, d=5000)
    best = int(np.argmin(_krum_reference(xs, 2)))
    np.testing.assert_array_equal(A.krum(xs, f=2), xs[best])


def test_multi_krum_is_mean_of_the_m_best() -> None:
    xs = _updates(7, n=8, d=5000)
    keep = sorted(np.argsort(_krum_reference(xs, 2), kind="stable")[:5].tolist())
    np.testing.assert_array_equal(A.multi_krum(xs, f=2, m=5), A.mean([xs[i] for i in keep]))


def test_krum_ties_go_to_the_earlier_update() -> None:
    x = np.ones(10, np.float32)
    assert A.krum_select([x, x.copy(), x.copy()], f=0, m=3) == [0, 1, 2]


def test_clip_scales_to_the_norm_bound() -> None:
    v = np.array([3.0, 4.0], np.float32)
    np.testing.assert_allclose(A.clip(v, 1.0), [0.6, 0.8], rtol=1e-6)
    assert A.clip(v, 10.0) is v


def test_deterministic_norm_matches_float64_norm() -> None:
    (v,) = _updates(8, n=1)
    assert A.norm(v) == pytest.approx(float(np.linalg.norm(v.astype(np.float64))), rel=1e-13)


def test_non_finite_input_is_refused() -> None:
    xs = _updates(9, n=3, d=10)
    xs[1][3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        A.median(xs)


# --------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=finite32), st.integers(1, 9))
def test_median_of_identical_updates_is_that_update(v: np.ndarray, n: int) -> None:
    np.testing.assert_array_equal(A.median([v] * n), v + np.float32(0.0))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=12).filter(lambda w: sum(w) > 0))
def test_fedavg_weights_sum_to_one(ns: list[int]) -> None:
    ones = [np.ones(3, np.float32)] * len(ns)
    np.testing.assert_array_equal(A.fedavg(ones, ns, sample_cap=1000), np.ones(3, np.float32))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.floats(0.0, 0.49), st.integers(0, 2**32 - 1))
def test_trimmed_mean_lies_within_min_and_max(n: int, beta: float, seed: int) -> None:
    xs = _updates(seed, n=n, d=257)
    out = A.trimmed_mean(xs, beta=beta)
    assert (out >= np.min(xs, axis=0)).all() and (out <= np.max(xs, axis=0)).all()


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.floats(20.0, 1e4))
def test_krum_selects_an_honest_update_when_attackers_are_far(
    seed: int, f: int, far: float
) -> None:
    rng = np.random.default_rng(seed)
    honest = [rng.standard_normal(200).astype(np.float32) * 0.1 for _ in range(2 * f + 3)]
    bad = [(rng.standard_normal(200) * far).astype(np.float32) for _ in range(f)]
    chosen = A.krum_select(honest + bad, f=f, m=1)[0]
    assert chosen < len(honest)


# --------------------------------------------------------------- determinism and streaming


def test_accumulator_gives_the_same_bits_as_batch_fedavg() -> None:
    xs, ns = _updates(10), [5, 10, 3, 0, 7, 2, 9]
    acc = A.FedAvgAccumulator(xs[0].size, block=30_000)
    for x, n in zip(xs, ns, strict=True):
        acc.add(x, n)
    assert _bits(acc.result()) == _bits(A.fedavg(xs, ns))


def test_accumulator_accepts_updates_in_chunks() -> None:
    xs, ns = _updates(11, n=3), [1, 2, 3]
    acc = A.FedAvgAccumulator(xs[0].size)
    for x, n in zip(xs, ns, strict=True):
        acc.add_chunks(np.array_split(x, 7), n)
    assert _bits(acc.result()) == _bits(A.fedavg(xs, ns))


_DETERMINISM = textwrap.dedent(
    """
    import hashlib, numpy as np
    from fedledger.protocol import aggregation as A
    rng = np.random.default_rng(42)
    xs = [rng.standard_normal(50_003).astype(np.float32) * (i + 1) for i in range(9)]
    ns = list(range(3, 12))
    out = []
    for spec in ({"rule": "fedavg", "sample_cap": 8}, {"rule": "median", "clip_norm": 300.0},
                 {"rule": "trimmed_mean", "beta": 0.2}, {"rule": "krum", "f": 2},
                 {"rule": "multi_krum", "f": 2, "m": 5}):
        r = A.aggregate(A.RuleSpec.parse(spec), xs, ns)
        out.append(hashlib.sha256(r.tobytes()).hexdigest())
    out.append(repr(A.krum_scores(xs, 2)))
    print("\\n".join(out))
    """
)


def _run_determinism(env_threads: str) -> str:
    import os

    env = dict(os.environ, OMP_NUM_THREADS=env_threads, OPENBLAS_NUM_THREADS=env_threads)
    return subprocess.run(
        [sys.executable, "-c", _DETERMINISM], capture_output=True, text=True, check=True, env=env
    ).stdout


def test_same_inputs_give_identical_bytes_in_separate_processes() -> None:
    assert _run_determinism("1") == _run_determinism("2")


# --------------------------------------------------------------- spec, tensors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rule": "trimmed_mean"}, "needs beta"),
        ({"rule": "trimmed_mean", "beta": 0.5}, "beta"),
        ({"rule": "krum"}, "needs f"),
        ({"rule": "median", "beta": 0.1}, "does not apply"),
        ({"rule": "fedavg", "clip_norm": -1}, "clip_norm"),
        ({"rule": "fedavg", "clip_nrom": 1}, "clip_nrom"),
        ({"rule": "mean"}, "rule"),
    ],
)
def test_bad_rule_spec_is_a_config_error_that_says_why(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        A.RuleSpec.parse(spec)


def test_rule_spec_reads_the_aggregation_section_of_a_task_spec() -> None:
    spec = A.RuleSpec.parse({"aggregation": {"rule": "trimmed_mean", "beta": 0.2}, "seed": 1})
    assert spec.to_json() == {"rule": "trimmed_mean", "beta": 0.2}


def test_flatten_then_unflatten_round_trips() -> None:
    t = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    flat, layout = A.flatten(t)
    back = A.unflatten(flat, layout)
    assert list(back) == ["w", "b"] and all(np.array_equal(back[k], t[k]) for k in t)


def test_flatten_follows_the_layout_order_not_the_dict_order() -> None:
    model = {"w": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}
    delta = {"b": np.array([3.0], np.float32), "w": np.array([1.0, 2.0], np.float32)}
    flat, _ = A.flatten(delta, A.TensorLayout.of(model))
    np.testing.assert_array_equal(flat, [1.0, 2.0, 3.0])


def test_apply_delta_adds_per_tensor() -> None:
    g = {"w": np.ones((2, 2), np.float32)}
    out = A.apply_delta(g, {"w": np.full((2, 2), 0.5, np.float32)})
    np.testing.assert_array_equal(out["w"], np.full((2, 2), 1.5, np.float32))


def test_apply_delta_of_wrong_shape_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="shape"):
        A.apply_delta({"w": np.ones(2, np.float32)}, {"w": np.ones(3, np.float32)})


def test_aggregate_tensors_of_no_updates_leaves_the_model_unchanged() -> None:
    layout = A.TensorLayout.of({"w": np.ones(3, np.float32)})
    out = A.aggregate_tensors(A.RuleSpec(rule="median"), [], None, layout)
    np.testing.assert_array_equal(out["w"], np.zeros(3, np.float32))


def test_a_decoded_fp32_file_flattens_without_a_copy() -> None:
    """A decoded fp32 file keeps its tensors end to end in one buffer: flatten takes them as one
    read-only vector, equal to the copying path, and cannot write through to the tensors."""
    from fedledger.protocol import codec

    rng = np.random.default_rng(5)
    shapes = {"b.weight": (30, 7), "a.bias": (7,), "c": (3, 2, 5)}
    model = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    delta = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    layout = A.TensorLayout.of(codec.decode(codec.encode_model(model, task_id=1, round=0)).tensors)
    data = codec.encode_update(
        delta, task_id=1, round=0, base_hash="0x" + "00" * 32, contributor="0x" + "11" * 20
    )
    tensors = codec.decode(data, kind="update").tensors

    flat, _ = A.flatten(tensors, layout)
    copied, _ = A.flatten({k: v.copy() for k, v in tensors.items()}, layout)
    assert _bits(flat) == _bits(copied)
    assert all(np.shares_memory(flat, t) for t in tensors.values())
    assert not flat.flags.writeable and copied.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        flat[0] = 1.0
    # tensors in another order than the layout's are copied, as before
    reordered = A.TensorLayout.of({k: tensors[k] for k in reversed(list(tensors))})
    again, _ = A.flatten(tensors, reordered)
    assert again.flags.writeable and not np.shares_memory(again, flat)


def test_a_file_decoded_without_a_copy_flattens_to_a_view_of_its_bytes() -> None:
    from fedledger.protocol import codec

    rng = np.random.default_rng(6)
    delta = {
        k: rng.standard_normal(s).astype(np.float32) for k, s in {"w": (9, 4), "b": (4,)}.items()
    }
    data = codec.encode_update(
        delta, task_id=1, round=0, base_hash="0x" + "00" * 32, contributor="0x" + "11" * 20
    )
    tensors = codec.decode(data, kind="update", copy=False).tensors
    assert not any(t.flags.writeable for t in tensors.values())
    flat, layout = A.flatten(tensors)
    assert np.shares_memory(flat, np.frombuffer(data, dtype=np.uint8))
    assert _bits(flat) == _bits(A.flatten({k: delta[k] for k in layout.names}, layout)[0])
