"""Malicious contributor behaviours, for the demo and the robustness experiments.

Every attack is a pure function: it takes an honest delta (and, where the attack needs to know
what honest updates look like, the honest deltas of the round) and returns a new delta; inputs
are never modified.  Label flipping acts on training labels instead, through
:func:`flip_labels` / :func:`label_transform`.  Attacks are registered by name so an
experiment's configuration can say ``"sign_flip"`` and :func:`apply_attack` does the rest.

| name               | what the update becomes                                               |
| ------------------ | --------------------------------------------------------------------- |
| ``sign_flip``      | ``-scale * delta``                                                    |
| ``scaling``        | ``factor * delta`` (model replacement / boosting)                     |
| ``gaussian_noise`` | ``N(0, sigma^2)`` noise, or noise rescaled to a given norm             |
| ``label_flip``     | honest delta trained on labels ``C - 1 - y``                          |
| ``norm_preserving``| reversed direction with the honest median norm (passes norm screens)  |
| ``little_is_enough``| ``mean - z * std`` of honest deltas (Baruch et al. 2019)             |
| ``colluding``      | the same ``shared`` delta from every member of a group                |
| ``free_rider``     | zero, tiny noise, or a replay of the last global step                 |
| ``ipm``            | ``-epsilon * mean`` of honest deltas (Xie et al. 2020)                |
| ``copier``         | another contributor's delta plus a little noise                       |

A *sybil group* (:func:`sybil_group`) sends one pooled direction, each member at its own scale;
a *sleeper* is any attack started after honest rounds (the experiments' ``attack_from``).
"""

from __future__ import annotations

import inspect
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import ConfigError

Tensors = dict[str, NDArray[np.float32]]
Delta = Mapping[str, np.ndarray]

__all__ = [
    "ATTACKS",
    "Attack",
    "apply_attack",
    "collude",
    "colluding",
    "copier",
    "flip_labels",
    "free_rider",
    "gaussian_noise",
    "inner_product_manipulation",
    "label_transform",
    "lie_z",
    "little_is_enough",
    "norm_preserving",
    "scaling",
    "sign_flip",
    "sybil_group",
]


def _f32(a: np.ndarray) -> NDArray[np.float32]:
    return np.asarray(a, dtype=np.float32, order="C")


def _norm(delta: Delta) -> float:
    total = 0.0
    for value in delta.values():
        flat = np.asarray(value, dtype=np.float64).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def _scaled(delta: Delta, factor: float) -> Tensors:
    return {k: _f32(np.asarray(v, dtype=np.float64) * factor) for k, v in delta.items()}


def _check_same_layout(reference: Delta, others: Sequence[Delta], what: str) -> None:
    for other in others:
        if list(other) != list(reference) or any(
            np.shape(other[k]) != np.shape(reference[k]) for k in reference
        ):
            raise ConfigError(f"{what} must have the same tensor names and shapes as the delta")


def sign_flip(delta: Delta, *, scale: float = 1.0) -> Tensors:
    """Send ``-scale * delta``: gradient ascent on the honest objective."""
    return _scaled(delta, -scale)


def scaling(delta: Delta, *, factor: float = 10.0) -> Tensors:
    """Send ``factor * delta`` so that a plain mean is dominated by this update."""
    return _scaled(delta, factor)


def gaussian_noise(
    delta: Delta,
    *,
    sigma: float | None = None,
    norm: float | None = None,
    norm_factor: float = 1.0,
    seed: int = 0,
) -> Tensors:
    """Replace the update with Gaussian noise.

    With ``sigma``, each coordinate is ``N(0, sigma^2)``.  Otherwise the noise is rescaled to L2
    norm ``norm``, or by default to ``norm_factor`` times the honest delta's norm (noise of a
    comparable size slips past norm bounds; a big ``norm_factor`` tests them).
    """
    rng = np.random.default_rng(seed)
    noise = {k: rng.standard_normal(np.shape(v)) for k, v in delta.items()}
    if sigma is not None:
        return {k: _f32(v * sigma) for k, v in noise.items()}
    target = norm if norm is not None else norm_factor * _norm(delta)
    current = _norm(noise)
    return {k: _f32(v * (target / current if current > 0 else 0.0)) for k, v in noise.items()}


def flip_labels(y: NDArray[np.integer], n_classes: int) -> NDArray[np.int64]:
    """Labels ``C - 1 - y``: every sample is taught the "mirror" class (Tolpegin et al. 2020)."""
    labels = np.asarray(y, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ConfigError(
            f"labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}"
        )
    return n_classes - 1 - labels


def label_transform(name: str, n_classes: int) -> Callable[[Any], Any] | None:
    """The batch-label rewrite an attack needs during training, or ``None`` if it needs none.

    Works on numpy arrays and torch tensors alike (``C - 1 - y``), so it can be passed to
    :class:`fedledger.learning.train.LocalTrainer` as ``label_transform``.
    """
    attack = _get(name)
    if not attack.flips_labels:
        return None

    def transform(y: Any) -> Any:
        return n_classes - 1 - y

    return transform


def _median_norm(honest: Sequence[Delta]) -> float:
    if not honest:
        raise ConfigError("this attack needs the round's honest deltas (honest=[...])")
    return float(statistics.median(_norm(d) for d in honest))


def _mean(deltas: Sequence[Delta]) -> dict[str, NDArray[np.float64]]:
    return {
        k: np.mean([np.asarray(d[k], dtype=np.float64) for d in deltas], axis=0) for k in deltas[0]
    }


def norm_preserving(
    delta: Delta,
    *,
    honest: Sequence[Delta] = (),
    reference_norm: float | None = None,
    direction: str = "reverse_mean",
) -> Tensors:
    """Point the update the wrong way while giving it the norm an honest update has.

    Norm screens (``NORM_BOUND``) cannot see it.  ``direction="reverse"`` uses ``-delta``;
    ``"reverse_mean"`` (default, needs ``honest``) uses minus the honest mean, which pushes the
    aggregate backwards most efficiently.  The norm is ``reference_norm`` or the median norm of
    ``honest``.
    """
    target = reference_norm if reference_norm is not None else _median_norm(honest)
    if direction == "reverse":
        base: Mapping[str, np.ndarray] = delta
    elif direction == "reverse_mean":
        if not honest:
            raise ConfigError("direction='reverse_mean' needs the round's honest deltas")
        _check_same_layout(delta, honest, "honest deltas")
        base = _mean(honest)
    else:
        raise ConfigError(
            f"unknown direction {direction!r}", hint="use 'reverse' or 'reverse_mean'"
        )
    length = _norm(base)
    return _scaled(base, -target / length if length > 0 else 0.0)


def lie_z(n_clients: int, n_malicious: int) -> float:
    """The largest safe shift ``z`` from Baruch et al. (2019), "A little is enough", Alg. 3.

    ``s = floor(n/2 + 1) - m`` honest updates must look farther from the mean than the crafted
    one; ``z = Phi^{-1}((n - s) / n)``.
    """
    from statistics import NormalDist

    s = math.floor(n_clients / 2 + 1) - n_malicious
    p = (n_clients - s) / n_clients
    if not 0 < p < 1:
        raise ConfigError(f"no valid z for n_clients={n_clients}, n_malicious={n_malicious}")
    return NormalDist().inv_cdf(p)


def little_is_enough(
    delta: Delta,
    *,
    honest: Sequence[Delta] = (),
    z: float | None = None,
    n_clients: int | None = None,
    n_malicious: int | None = None,
) -> Tensors:
    """Send ``mean - z * std`` of the honest deltas, coordinate by coordinate.

    Each coordinate stays within the honest spread, so median, trimmed mean and Krum accept it,
    yet every coordinate is nudged the same harmful way.  ``z`` defaults to :func:`lie_z` when
    ``n_clients`` and ``n_malicious`` are given, else 1.0.
    """
    if not honest:
        raise ConfigError("little_is_enough needs the round's honest deltas (honest=[...])")
    _check_same_layout(delta, honest, "honest deltas")
    if z is None:
        z = lie_z(n_clients, n_malicious) if n_clients and n_malicious else 1.0
    out: Tensors = {}
    for k in delta:
        stack = np.stack([np.asarray(d[k], dtype=np.float64) for d in honest])
        out[k] = _f32(stack.mean(axis=0) - z * stack.std(axis=0))
    return out


def colluding(delta: Delta, *, shared: Delta) -> Tensors:
    """Every member of a group sends the same ``shared`` delta (Sybils that agree)."""
    _check_same_layout(delta, [shared], "the shared delta")
    return {k: _f32(np.array(v, copy=True)) for k, v in shared.items()}


def collude(deltas: Sequence[Delta], attack: str | None = None, **params: Any) -> list[Tensors]:
    """Make a colluding group's updates: one update, sent by all of them.

    The group pools its honest deltas into their mean, optionally applies another attack to it
    (e.g. ``attack="scaling", factor=5``), and every member sends the result.  Identical updates
    multiply their weight under FedAvg and can win a median or Krum vote.
    """
    if not deltas:
        raise ConfigError("a colluding group needs at least one member")
    _check_same_layout(deltas[0], deltas[1:], "the group's deltas")
    pooled: Tensors = {k: _f32(v) for k, v in _mean(deltas).items()}
    shared = apply_attack(attack, pooled, **params) if attack else pooled
    return [colluding(d, shared=shared) for d in deltas]


def free_rider(
    delta: Delta,
    *,
    mode: str = "zero",
    sigma: float = 1e-4,
    seed: int = 0,
    global_tensors: Delta | None = None,
    previous_global: Delta | None = None,
) -> Tensors:
    """Contribute nothing while claiming a share (Lin et al. 2019, "Free-riders in FL").

    ``"zero"``: the zero delta, which is also what returning a copy of the global model gives.
    ``"noise"``: small Gaussian noise ``N(0, sigma^2)`` so that the update is not exactly zero.
    ``"replay"``: the last global step ``global_tensors - previous_global``, which looks like a
    plausible update but carries no new information.
    """
    if mode == "zero":
        return {k: np.zeros(np.shape(v), dtype=np.float32) for k, v in delta.items()}
    if mode == "noise":
        rng = np.random.default_rng(seed)
        return {k: _f32(rng.standard_normal(np.shape(v)) * sigma) for k, v in delta.items()}
    if mode == "replay":
        if global_tensors is None or previous_global is None:
            raise ConfigError("free_rider mode 'replay' needs global_tensors and previous_global")
        _check_same_layout(delta, [global_tensors, previous_global], "global tensors")
        return {
            k: _f32(
                np.asarray(global_tensors[k], np.float64)
                - np.asarray(previous_global[k], np.float64)
            )
            for k in delta
        }
    raise ConfigError(f"unknown free-rider mode {mode!r}", hint="use 'zero', 'noise' or 'replay'")


def inner_product_manipulation(
    delta: Delta, *, honest: Sequence[Delta] = (), epsilon: float = 0.5
) -> Tensors:
    """Send ``-epsilon * mean(honest)`` (Xie, Koyejo and Gupta 2020, "Fall of empires"): the
    inner product of the aggregate with the true gradient turns negative, while a small
    ``epsilon`` keeps the update short and close to the others."""
    if not honest:
        raise ConfigError("inner_product_manipulation needs the round's honest deltas")
    _check_same_layout(delta, honest, "honest deltas")
    return _scaled(_mean(honest), -epsilon)


def copier(delta: Delta, *, source: Delta, noise: float = 0.05, seed: int = 0) -> Tensors:
    """Send someone else's update ``source`` plus Gaussian noise of ``noise`` times its norm:
    credit for work not done, disguised from an exact-duplicate check."""
    _check_same_layout(delta, [source], "the copied delta")
    rng = np.random.default_rng(seed)
    raw = {k: rng.standard_normal(np.shape(v)) for k, v in source.items()}
    length = _norm(raw)
    factor = noise * _norm(source) / length if length > 0 else 0.0
    return {k: _f32(np.asarray(source[k], np.float64) + factor * raw[k]) for k in source}


def sybil_group(deltas: Sequence[Delta], *, spread: float = 0.2) -> list[Tensors]:
    """A sybil group's updates: the members pool their deltas and all send that one direction,
    member ``i`` of ``k`` at ``1 + spread * i / k`` times the pool (distinct files, one
    direction: their weight multiplied, and credit for one update earned ``k`` times)."""
    if not deltas:
        raise ConfigError("a sybil group needs at least one member")
    _check_same_layout(deltas[0], deltas[1:], "the group's deltas")
    pooled = _mean(deltas)
    k = len(deltas)
    return [_scaled(pooled, 1.0 + spread * i / k) for i in range(k)]


def _honest_label_flip(delta: Delta) -> Tensors:
    # The poisoning happened in training (see label_transform); the delta is sent as trained.
    return {k: _f32(np.array(v, copy=True)) for k, v in delta.items()}


@dataclass(frozen=True)
class Attack:
    """A registered attack: its delta transform and whether training must flip labels."""

    name: str
    on_delta: Callable[..., Tensors]
    flips_labels: bool
    description: str


ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in [
        Attack("sign_flip", sign_flip, False, "-scale * delta"),
        Attack("scaling", scaling, False, "factor * delta"),
        Attack("gaussian_noise", gaussian_noise, False, "Gaussian noise instead of the delta"),
        Attack("label_flip", _honest_label_flip, True, "trained on labels C-1-y"),
        Attack("norm_preserving", norm_preserving, False, "reversed, honest median norm"),
        Attack("little_is_enough", little_is_enough, False, "mean - z*std of honest deltas"),
        Attack("colluding", colluding, False, "the group's shared delta"),
        Attack("free_rider", free_rider, False, "zero / noise / replayed update"),
        Attack("ipm", inner_product_manipulation, False, "-epsilon * mean of honest deltas"),
        Attack("copier", copier, False, "another's delta plus a little noise"),
    ]
}


def _get(name: str) -> Attack:
    attack = ATTACKS.get(name)
    if attack is None:
        raise ConfigError(f"unknown attack {name!r}", hint=f"choose one of: {', '.join(ATTACKS)}")
    return attack


def apply_attack(name: str, delta: Delta, **params: Any) -> Tensors:
    """Turn an honest ``delta`` into the update attack ``name`` sends; ``params`` go to it.

    Unknown names or parameters are :class:`ConfigError`, so a typo in an experiment's
    configuration fails loudly instead of running an honest client.
    """
    attack = _get(name)
    try:
        inspect.signature(attack.on_delta).bind(delta, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for attack {name!r}: {exc}") from exc
    return attack.on_delta(delta, **params)
