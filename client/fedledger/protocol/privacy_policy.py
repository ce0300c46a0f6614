"""A task's privacy section: who may read its updates, and the differential privacy it requires.

The ``privacy`` section of a task spec (absent: a public task, updates in plaintext, no DP)::

    "privacy": {
      "encryption": "committee",            # "none" (default) or "committee"
      "auditors": ["<64 hex digits>", ...],  # X25519 keys the owner grants reading, besides the
                                             # validators (at most MAX_AUDITORS)
      "dp": {                                # client-level DP every update must carry
        "clip_norm": 1.0,                    # L2 bound of each update before noise
        "noise_multiplier": 1.1,             # Gaussian noise std / clip_norm
        "delta": 1e-5,
        "epsilon_budget": 8.0                # optional: contributors refuse to exceed it
      }
    }

``encryption = "committee"``: every update is sealed (:mod:`fedledger.protocol.committee`) to the
X25519 keys the task's validators registered on chain (``setEncryptionKey``) when it was
submitted, plus the auditors' keys.  Validators judge what they can open; one that is not a
recipient (it joined later) abstains from that round.

``dp``: validators judge each update against the band a clipped and noised update's L2 norm
lies in (:func:`dp_norm_band`) instead of the round-relative norm and noise screens, which a DP
update fails by design; an update declaring other DP parameters than the task's is
``MALFORMED``.  ε(δ) per contributor is computed by :mod:`fedledger.learning.privacy` (Opacus'
RDP accountant) and recorded with every accepted update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fedledger.protocol.taskspec import parse_section

if TYPE_CHECKING:
    from fedledger.protocol.screening import ScreeningSpec

MAX_AUDITORS = 16
"""Most auditor keys a task may name (each adds 112 bytes to every envelope)."""

DP_BAND_SIGMAS = 8.0
"""Width of :func:`dp_norm_band` in standard deviations of the noise's norm: a ``chi`` variable
with ``d`` degrees of freedom has standard deviation below ``1/sqrt(2)`` (times the noise's std),
so an honest update leaves the band with probability far below 1e-12."""


class DPPolicy(BaseModel):
    """The client-level DP parameters a task requires of every update."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_norm: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    noise_multiplier: Annotated[float, Field(gt=0.0, le=1e6, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    epsilon_budget: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None


class PrivacyPolicy(BaseModel):
    """A task's ``privacy`` section (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encryption: Literal["none", "committee"] = "none"
    auditors: Annotated[
        tuple[Annotated[str, Field(pattern="^(0x)?[0-9a-fA-F]{64}$")], ...],
        Field(max_length=MAX_AUDITORS),
    ] = ()
    dp: DPPolicy | None = None

    @property
    def committee(self) -> bool:
        return self.encryption == "committee"

    def auditor_keys(self) -> tuple[bytes, ...]:
        return tuple(bytes.fromhex(a.removeprefix("0x")) for a in self.auditors)

    @classmethod
    def parse(cls, obj: Mapping[str, Any] | str | bytes | None) -> PrivacyPolicy:
        """Validate a privacy section (``None``: a public task). Raises ConfigError naming
        each bad field."""
        if obj is None:
            return cls()
        return parse_section(cls, obj, "privacy", "privacy section")


def dp_norm_band(dp: DPPolicy, size: int) -> tuple[float, float]:
    """The L2 norms an update clipped to ``clip_norm`` and noised with std
    ``noise_multiplier * clip_norm`` per coordinate, ``size`` coordinates, can have.

    The noise alone has norm ``s * chi_d`` (``s`` the std), concentrated at ``s * sqrt(d)`` with a
    standard deviation under ``s / sqrt(2)``; the clipped signal moves it by at most
    ``clip_norm``.  The band is that, widened by :data:`DP_BAND_SIGMAS` deviations: an update
    below it carries less noise than the task requires (its privacy claim is false), above it
    was not clipped (or was boosted)."""
    s = dp.noise_multiplier * dp.clip_norm
    centre = s * math.sqrt(size)
    spread = DP_BAND_SIGMAS * s / math.sqrt(2.0)
    return max(0.0, centre - spread - dp.clip_norm), centre + spread + dp.clip_norm


META_CLIP = "fedledger.dp.clip"
META_NOISE = "fedledger.dp.noise_multiplier"
"""The metadata keys an update file declares its DP parameters under (written by
:func:`fedledger.learning.privacy.dp_metadata`)."""


def declared_dp_problem(dp: DPPolicy, metadata: Mapping[str, str]) -> str | None:
    """Why an update file's declared DP parameters do not meet the task's (``None`` if they
    do): it must declare a clip norm at most, and a noise multiplier at least, the task's."""
    try:
        clip = float(metadata[META_CLIP])
        noise = float(metadata[META_NOISE])
    except (KeyError, ValueError):
        return (
            f"the task requires client-level DP (clip {dp.clip_norm:g}, noise multiplier "
            f"{dp.noise_multiplier:g}) and the update declares none"
        )
    if not (math.isfinite(clip) and math.isfinite(noise) and clip > 0):
        return f"the update declares DP clip {clip:g} and noise multiplier {noise:g}: not valid DP parameters"
    if clip > dp.clip_norm * (1 + 1e-9) or noise < dp.noise_multiplier * (1 - 1e-9):
        return (
            f"the update declares DP clip {clip:g} and noise multiplier {noise:g}; the task "
            f"requires clip <= {dp.clip_norm:g} and noise multiplier >= {dp.noise_multiplier:g}"
        )
    return None


def norm_band_problem(dp: DPPolicy, norm: float, size: int) -> str | None:
    """Why an update's L2 ``norm`` is outside :func:`dp_norm_band` (``None`` if inside)."""
    low, high = dp_norm_band(dp, size)
    if norm < low:
        return (
            f"norm {norm:.6g} is below {low:.6g}, the least a clipped update with the task's DP "
            f"noise (multiplier {dp.noise_multiplier:g} x clip {dp.clip_norm:g} over {size} "
            "coordinates) has: its noise is missing or smaller than declared"
        )
    if norm > high:
        return (
            f"norm {norm:.6g} is above {high:.6g}, the most a clipped update with the task's DP "
            "noise has: it was not clipped"
        )
    return None


def dp_screening(screen: ScreeningSpec) -> ScreeningSpec:
    """The screen a DP task's updates get after the norm band: a DP update is mostly noise by
    design, so the checks that compare its norm with the round's or its direction with the
    others' (relative norm bounds, noise, cosine and standing) would reject honest ones; the
    norm band (checked first) and duplicates remain."""
    return screen.model_copy(
        update={
            "norm_multiple": None,
            "noise_sigmas": 0.0,
            "min_cosine": None,
            "min_standing": None,
            "free_rider_fraction": 0.0,
        }
    )
