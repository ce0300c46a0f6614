"""A task's privacy section and the DP checks validators make of an update's own claims: every
value here is written by a task creator or a contributor, so the worst of each is fed in."""

from __future__ import annotations

import math

import pytest
from nacl.public import PrivateKey

from fedledger.errors import ConfigError
from fedledger.protocol.committee import is_usable_key
from fedledger.protocol.privacy_policy import (
    MAX_AUDITORS,
    DPPolicy,
    PrivacyPolicy,
    declared_dp_problem,
    norm_band_problem,
)
from fedledger.protocol.taskspec import TaskSpec

DP = DPPolicy(clip_norm=1.0, noise_multiplier=1.0)


@pytest.mark.parametrize(
    "section, field",
    [
        ({"encryption": "everyone"}, "encryption"),
        ({"auditors": ["zz" * 32]}, "auditors"),
        ({"auditors": ["ab" * 31]}, "auditors"),
        ({"auditors": ["ab" * 32] * (MAX_AUDITORS + 1)}, "auditors"),
        ({"dp": {"clip_norm": 0, "noise_multiplier": 1}}, "clip_norm"),
        ({"dp": {"clip_norm": 1, "noise_multiplier": float("nan")}}, "noise_multiplier"),
        ({"dp": {"clip_norm": 1, "noise_multiplier": 1, "delta": 1.0}}, "delta"),
        ({"dp": {"clip_norm": 1}}, "noise_multiplier"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_a_bad_privacy_section_names_the_field(section: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TaskSpec(privacy=section).privacy_policy()


def test_no_section_is_a_public_task_and_its_spec_bytes_are_unchanged() -> None:
    assert PrivacyPolicy.parse(None) == PrivacyPolicy()
    assert not TaskSpec().privacy_policy().committee
    assert b"privacy" not in TaskSpec().to_bytes()


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"fedledger.dp.clip": "1.0"},
        {"fedledger.dp.clip": "one", "fedledger.dp.noise_multiplier": "1.0"},
        {"fedledger.dp.clip": "nan", "fedledger.dp.noise_multiplier": "1.0"},
        {"fedledger.dp.clip": "1.0", "fedledger.dp.noise_multiplier": "inf"},
        {"fedledger.dp.clip": "2.0", "fedledger.dp.noise_multiplier": "1.0"},  # looser clip
        {"fedledger.dp.clip": "1.0", "fedledger.dp.noise_multiplier": "0.5"},  # less noise
        {"fedledger.dp.clip": "-1", "fedledger.dp.noise_multiplier": "1e308"},
    ],
)
def test_declared_dp_weaker_than_the_tasks_or_unreadable_is_refused(meta: dict) -> None:
    assert declared_dp_problem(DP, meta) is not None


def test_declared_dp_at_least_as_strong_as_the_tasks_passes() -> None:
    assert (
        declared_dp_problem(
            DP, {"fedledger.dp.clip": "1.0", "fedledger.dp.noise_multiplier": "1.0"}
        )
        is None
    )
    assert (
        declared_dp_problem(DP, {"fedledger.dp.clip": "0.5", "fedledger.dp.noise_multiplier": "3"})
        is None
    )


@pytest.mark.parametrize("norm", [0.0, -1.0, math.inf, 1e300])
def test_norms_outside_the_band_are_named(norm: float) -> None:
    assert norm_band_problem(DP, norm, 4810) is not None


def test_unusable_committee_keys_are_recognised() -> None:
    assert is_usable_key(bytes(PrivateKey.generate().public_key))
    assert not is_usable_key(bytes(32))  # zero: libsodium refuses the exchange
    assert not is_usable_key(b"\x01" + bytes(31))  # a low-order point
    assert not is_usable_key(b"\x05" * 31)  # not 32 bytes
