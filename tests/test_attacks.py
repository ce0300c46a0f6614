"""Malicious behaviours do what their names say, and never touch their inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedledger.errors import ConfigError
from fedledger.learning.attacks import (
    ATTACKS,
    apply_attack,
    collude,
    flip_labels,
    label_transform,
    lie_z,
    sybil_group,
)
from fedledger.learning.privacy import global_l2_norm


def _delta(seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": (rng.standard_normal((20, 10)) * 0.1 + shift).astype(np.float32),
        "b": (rng.standard_normal(10) * 0.1 + shift).astype(np.float32),
    }


HONEST = [_delta(s, shift=0.05) for s in range(9)]


def _flat(d: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in d.values()])


def _cos(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    x, y = _flat(a), _flat(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _mean(ds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.mean([d[k] for d in ds], axis=0) for k in ds[0]}


def test_registry_names() -> None:
    assert set(ATTACKS) == {
        "sign_flip",
        "scaling",
        "gaussian_noise",
        "label_flip",
        "norm_preserving",
        "little_is_enough",
        "colluding",
        "free_rider",
        "ipm",
        "copier",
    }


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_return_float32_with_the_same_layout_and_leave_input_alone(name: str) -> None:
    d = HONEST[0]
    before = {k: v.copy() for k, v in d.items()}
    needs: dict[str, dict[str, object]] = {
        "norm_preserving": {"honest": HONEST},
        "little_is_enough": {"honest": HONEST},
        "colluding": {"shared": HONEST[1]},
        "ipm": {"honest": HONEST},
        "copier": {"source": HONEST[1]},
    }
    params = needs.get(name, {})
    out = apply_attack(name, d, **params)
    assert list(out) == list(d)
    for k in d:
        assert out[k].dtype == np.float32 and out[k].shape == d[k].shape
        assert out[k].flags.c_contiguous
        assert not np.shares_memory(out[k], d[k])
        assert np.array_equal(d[k], before[k])


def test_sign_flip_negates_and_scaling_multiplies() -> None:
    d = HONEST[0]
    flipped = apply_attack("sign_flip", d, scale=2.0)
    scaled = apply_attack("scaling", d, factor=10.0)
    for k in d:
        np.testing.assert_allclose(flipped[k], -2.0 * d[k], rtol=1e-6)
        np.testing.assert_allclose(scaled[k], 10.0 * d[k], rtol=1e-6)


def test_gaussian_noise_matches_the_requested_norm_or_sigma() -> None:
    d = HONEST[0]
    same = apply_attack("gaussian_noise", d, seed=1)
    assert global_l2_norm(same) == pytest.approx(global_l2_norm(d), rel=1e-5)
    assert abs(_cos(same, d)) < 0.3
    big = apply_attack("gaussian_noise", d, norm=100.0)
    assert global_l2_norm(big) == pytest.approx(100.0, rel=1e-5)
    by_sigma = apply_attack("gaussian_noise", {"w": np.zeros((300, 300), np.float32)}, sigma=2.0)
    assert by_sigma["w"].std() == pytest.approx(2.0, rel=0.02)


def test_label_flip_mirrors_labels_and_needs_a_training_hook() -> None:
    y = np.arange(10)
    assert flip_labels(y, 10).tolist() == list(range(9, -1, -1))
    transform = label_transform("label_flip", 10)
    assert transform is not None
    assert torch.equal(transform(torch.tensor([0, 3, 9])), torch.tensor([9, 6, 0]))
    assert label_transform("sign_flip", 10) is None
    unchanged = apply_attack("label_flip", HONEST[0])
    assert all(np.array_equal(unchanged[k], HONEST[0][k]) for k in unchanged)
    with pytest.raises(ConfigError):
        flip_labels(np.array([10]), 10)


def test_norm_preserving_reverses_direction_at_the_honest_median_norm() -> None:
    median = float(np.median([global_l2_norm(d) for d in HONEST]))
    out = apply_attack("norm_preserving", HONEST[0], honest=HONEST)
    assert global_l2_norm(out) == pytest.approx(median, rel=1e-5)
    assert _cos(out, _mean(HONEST)) == pytest.approx(-1.0, abs=1e-5)
    own = apply_attack("norm_preserving", HONEST[0], reference_norm=2.0, direction="reverse")
    assert global_l2_norm(own) == pytest.approx(2.0, rel=1e-5)
    assert _cos(own, HONEST[0]) == pytest.approx(-1.0, abs=1e-5)


def test_little_is_enough_stays_inside_the_honest_spread_but_shifts_every_coordinate() -> None:
    z = lie_z(n_clients=12, n_malicious=3)
    assert 0 < z < 1.5
    out = apply_attack("little_is_enough", HONEST[0], honest=HONEST, n_clients=12, n_malicious=3)
    stack = {k: np.stack([d[k] for d in HONEST]) for k in HONEST[0]}
    for k in out:
        mean, std = stack[k].mean(0), stack[k].std(0)
        np.testing.assert_allclose(out[k], mean - z * std, rtol=1e-5, atol=1e-7)
        assert np.all(out[k] <= mean)
        inside = (out[k] >= stack[k].min(0)) & (out[k] <= stack[k].max(0))
        assert inside.mean() > 0.95


def test_colluding_group_sends_identical_updates() -> None:
    group = HONEST[:4]
    updates = collude(group)
    assert all(u["w"].tobytes() == updates[0]["w"].tobytes() for u in updates)
    np.testing.assert_allclose(updates[0]["w"], _mean(group)["w"], rtol=1e-5)
    boosted = collude(group, attack="scaling", factor=5.0)
    np.testing.assert_allclose(boosted[2]["b"], 5.0 * _mean(group)["b"], rtol=1e-5)
    assert len({u["b"].tobytes() for u in boosted}) == 1


def test_free_rider_contributes_nothing() -> None:
    d = HONEST[0]
    zero = apply_attack("free_rider", d)
    assert all(not v.any() for v in zero.values())
    tiny = apply_attack("free_rider", d, mode="noise", sigma=1e-5)
    assert 0 < global_l2_norm(tiny) < 1e-3
    prev, cur = _delta(50), _delta(51)
    replay = apply_attack("free_rider", d, mode="replay", global_tensors=cur, previous_global=prev)
    np.testing.assert_allclose(replay["w"], cur["w"] - prev["w"], rtol=1e-6)


def test_unknown_attacks_and_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown attack"):
        apply_attack("backdoor", HONEST[0])
    with pytest.raises(ConfigError, match="bad parameters"):
        apply_attack("scaling", HONEST[0], scale=3.0)
    with pytest.raises(ConfigError, match="honest"):
        apply_attack("little_is_enough", HONEST[0])
    with pytest.raises(ConfigError):
        apply_attack("colluding", HONEST[0], shared={"w": np.zeros(3, np.float32)})


def test_lie_z_matches_the_paper_example() -> None:
    # Baruch et al. 2019: n = 50, m = 12 (24%) gives s = 14 and z = Phi^-1(36/50) ~ 0.58.
    assert lie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)
    assert math.isfinite(lie_z(10, 2))


def test_ipm_sends_minus_epsilon_times_the_honest_mean() -> None:
    out = apply_attack("ipm", HONEST[0], honest=HONEST, epsilon=0.5)
    mean = _mean(HONEST)
    for k in out:
        np.testing.assert_allclose(out[k], -0.5 * mean[k], rtol=1e-5, atol=1e-7)


def test_copier_is_the_source_plus_noise_of_the_asked_relative_norm() -> None:
    src = HONEST[1]
    out = apply_attack("copier", HONEST[0], source=src, noise=0.05, seed=3)
    noise = {k: out[k] - src[k] for k in src}
    assert global_l2_norm(noise) == pytest.approx(0.05 * global_l2_norm(src), rel=1e-4)
    assert 0.995 < _cos(out, src) < 0.9999


def test_a_sybil_group_shares_one_direction_at_distinct_scales() -> None:
    group = sybil_group(HONEST[:3])
    pooled = _mean(HONEST[:3])
    assert all(_cos(g, pooled) == pytest.approx(1.0, abs=1e-6) for g in group)
    norms = [global_l2_norm(g) for g in group]
    assert len(set(norms)) == 3
