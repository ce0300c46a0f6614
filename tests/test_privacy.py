"""Client-level DP: clipping, noise, and the RDP accountant's epsilon."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from fedledger.errors import ConfigError, FormatError
from fedledger.learning.privacy import (
    DPConfig,
    PrivacyAccountant,
    analytic_gaussian_epsilon,
    clip_delta,
    dp_metadata,
    epsilon,
    global_l2_norm,
    privatize,
)


def _delta(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": (rng.standard_normal((50, 40)) * scale).astype(np.float32),
        "b": (rng.standard_normal(40) * scale).astype(np.float32),
        "s": np.array(scale, dtype=np.float32),
    }


def test_global_norm_is_over_all_tensors_together() -> None:
    d = {"a": np.full(4, 3.0, np.float32), "b": np.full(9, 4.0 / 3.0, np.float32)}
    assert global_l2_norm(d) == pytest.approx(math.sqrt(36 + 16))


@pytest.mark.parametrize("clip", [1e-3, 0.5, 1.0, 7.0])
def test_clipped_norm_never_exceeds_c(clip: float) -> None:
    for seed in range(10):
        clipped, original = clip_delta(_delta(seed, scale=3.0), clip)
        assert global_l2_norm(clipped) <= clip
        assert original > clip
        assert clipped["s"].shape == ()


def test_clipping_keeps_direction_and_leaves_short_updates_alone() -> None:
    d = _delta(1)
    clipped, original = clip_delta(d, 1.0)
    ratio = clipped["w"] / d["w"]
    np.testing.assert_allclose(ratio, 1.0 / original, rtol=1e-5)
    unchanged, _ = clip_delta(d, original * 2)
    assert all(np.array_equal(unchanged[k], d[k]) for k in d)


def test_privatize_noise_has_std_sigma_times_c_and_zero_mean() -> None:
    zero = {"w": np.zeros((400, 500), np.float32)}
    cfg = DPConfig(clip=2.0, noise_multiplier=0.7)
    noisy = privatize(zero, cfg, np.random.default_rng(0))["w"].astype(np.float64)
    assert noisy.std() == pytest.approx(1.4, rel=0.01)
    assert abs(noisy.mean()) < 4 * 1.4 / math.sqrt(noisy.size)


def test_privatize_clips_before_adding_noise_and_is_reproducible_per_rng() -> None:
    d = _delta(2, scale=5.0)
    cfg = DPConfig(clip=1.0, noise_multiplier=0.0)
    assert global_l2_norm(privatize(d, cfg, np.random.default_rng(0))) <= 1.0
    noisy = DPConfig(clip=1.0, noise_multiplier=1.0)
    a = privatize(d, noisy, np.random.default_rng(5))
    b = privatize(d, noisy, np.random.default_rng(5))
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert list(a) == list(d) and all(a[k].dtype == np.float32 for k in a)
    assert all(a[k].shape == d[k].shape for k in d)


def test_epsilon_grows_with_rounds_and_falls_with_noise() -> None:
    by_rounds = [epsilon(t, 1.0, 1e-5) for t in range(0, 30)]
    assert by_rounds[0] == 0.0
    assert all(a < b for a, b in pairwise(by_rounds))
    by_sigma = [epsilon(10, s, 1e-5) for s in (0.5, 0.8, 1.0, 2.0, 5.0, 20.0)]
    assert all(a > b for a, b in pairwise(by_sigma))
    assert epsilon(3, 0.0, 1e-5) == math.inf


def test_epsilon_lies_between_the_exact_gaussian_and_the_classic_rdp_bound() -> None:
    """Opacus's RDP accountant (with its tighter RDP-to-DP conversion) answers above the exact
    Gaussian epsilon and below the classic closed-form RDP optimum
    T/(2s^2) + 2*sqrt(T/(2s^2) * log(1/d))."""
    for rounds, sigma, delta in [(1, 1.0, 1e-5), (10, 2.0, 1e-6), (100, 5.0, 1e-5), (1, 50, 1e-5)]:
        a = rounds / (2 * sigma**2)
        b = math.log(1 / delta)
        classic = a + 2 * math.sqrt(a * b)
        got = epsilon(rounds, sigma, delta)
        assert analytic_gaussian_epsilon(sigma, delta, rounds) <= got < classic
    assert epsilon(1, 1.0, 1e-5) == pytest.approx(4.7285, abs=1e-3)


def _exact_delta(eps: float, mu: float) -> float:
    return float(norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2))


@pytest.mark.parametrize(
    ("sigma", "rounds"), [(0.8, 1), (1.0, 1), (2.0, 1), (10.0, 1), (1.0, 10), (3.0, 50)]
)
def test_rdp_bounds_the_exact_gaussian_epsilon_from_above_and_closely(
    sigma: float, rounds: int
) -> None:
    delta = 1e-5
    exact = analytic_gaussian_epsilon(sigma, delta, rounds)
    # The reference really is exact: the tight privacy profile (Balle & Wang 2018) at that eps
    # equals delta, computed here independently with scipy.
    assert _exact_delta(exact, math.sqrt(rounds) / sigma) == pytest.approx(delta, rel=1e-6)
    rdp = epsilon(rounds, sigma, delta)
    assert exact <= rdp <= 1.6 * exact


def test_known_reference_values() -> None:
    # sigma = 1, delta = 1e-5: exact 4.377 (analytic Gaussian), RDP 5.299.
    assert analytic_gaussian_epsilon(1.0, 1e-5) == pytest.approx(4.3772, abs=1e-3)
    # The classical Gaussian mechanism (Dwork & Roth 2014, Thm A.1) with
    # sigma = sqrt(2 ln(1.25/delta)) / eps is (eps, delta)-DP for eps < 1.
    sigma = math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5
    assert analytic_gaussian_epsilon(sigma, 1e-5) <= 0.5
    # T releases at sigma cost what one release at sigma / sqrt(T) costs.
    assert epsilon(100, 5.0, 1e-5) == pytest.approx(epsilon(1, 0.5, 1e-5), rel=1e-9)


def test_mixed_noise_multipliers_compose() -> None:
    assert epsilon(2, [1.0, 1.0], 1e-5) == epsilon(2, 1.0, 1e-5)
    mixed = epsilon(2, [1.0, 4.0], 1e-5)
    assert epsilon(1, 1.0, 1e-5) < mixed < epsilon(2, 1.0, 1e-5)
    with pytest.raises(ConfigError):
        epsilon(3, [1.0], 1e-5)


def test_accountant_counts_releases_per_task_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "dp" / "privacy.json"
    cfg = DPConfig(clip=1.0, noise_multiplier=1.1, delta=1e-5)
    acc = PrivacyAccountant(path)
    assert acc.preview(1, cfg) == pytest.approx(epsilon(1, 1.1, 1e-5))
    eps = [acc.record(1, r, cfg) for r in range(3)]
    acc.record("2", 0, cfg)
    assert eps == [pytest.approx(epsilon(t, 1.1, 1e-5)) for t in (1, 2, 3)]
    reopened = PrivacyAccountant(path)
    assert reopened.releases(1) == 3 and reopened.releases(2) == 1 and reopened.releases(3) == 0
    assert reopened.rounds(1) == [0, 1, 2]
    assert reopened.epsilon(1, 1e-5) == pytest.approx(eps[-1])
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["privacy.json"]


def test_corrupt_privacy_ledger_is_a_format_error_not_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "privacy.json"
    path.write_text("{not json")
    with pytest.raises(FormatError, match="reset your privacy budget"):
        PrivacyAccountant(path)


def test_dp_metadata_keys_and_canonical_values() -> None:
    cfg = DPConfig(clip=1.0, noise_multiplier=1.1, delta=1e-5)
    meta = dp_metadata(cfg, 5.25)
    assert meta == {
        "fedledger.dp.epsilon": "5.25",
        "fedledger.dp.delta": "1e-05",
        "fedledger.dp.noise_multiplier": "1.1",
        "fedledger.dp.clip": "1.0",
    }
    assert float(meta["fedledger.dp.epsilon"]) == 5.25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip": 0.0, "noise_multiplier": 1.0},
        {"clip": 1.0, "noise_multiplier": -1.0},
        {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1.0},
        {"clip": math.inf, "noise_multiplier": 1.0},
    ],
)
def test_invalid_dp_config_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        DPConfig(**kwargs)
