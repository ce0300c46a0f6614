"""Exact aggregation rules on int32 fixed-point deltas (the specification: docs/aggregation.md).

Each rule maps n int32 vectors (:mod:`fedledger.protocol.fixedpoint`) to one int32 vector.  Per
coordinate it computes an exact rational -- a weighted mean, a middle value, a trimmed mean --
and rounds it once to the nearest integer, ties to even (:func:`round_half_even`).  Clipping
scales by a rational ``num / 2**32`` and truncates toward zero, so a clipped update never
exceeds its bound.  Every intermediate is an exact integer, so a result depends only on the
inputs: not on the order of additions, the blocking, the threads, the device, or how the
coordinates are sharded.  (The updates' *order* matters only to break exact Krum ties, which go
to the earlier update, i.e. the lower updateId.)

Sharding
--------
Every rule is coordinate-wise once two whole-update decisions are taken: the clip multipliers
(from each update's squared norm) and Krum's choice (from the exact squared distances).  Both
come from sums over coordinates, so a shard contributes a partial sum and the sums of the parts
are the whole's (:func:`sq_norms`, :func:`gram`).  :func:`plan_round` takes those decisions
(optionally from given shards); :func:`aggregate_columns` then computes any column range alone.
``concat(aggregate_range(..., s, e) for shards) == aggregate_exact(...)`` bit for bit.

Overflow
--------
Sums run in int64 only where a bound proves they fit (each kernel states its bound), otherwise
on limbs or Python ints; the float64 BLAS product in :func:`gram` multiplies 16-bit limbs whose
every partial sum stays below 2**48, far inside float64's exact integers (2**53).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from fedledger.errors import ConfigError, FormatError
from fedledger.protocol.aggregation import (
    MAX_SAMPLE_CAP,
    RuleName,
    RuleSpec,
    krum_neighbours,
    sorted_columns,
)
from fedledger.protocol.fixedpoint import FixedPointFormat, Int32Vector, round_half_even

I64 = npt.NDArray[np.int64]

_RULES = ("fedavg", "median", "trimmed_mean", "krum", "multi_krum")
_PARAMS: dict[str, set[str]] = {
    "fedavg": {"weight_cap"},
    "median": set(),
    "trimmed_mean": {"beta"},
    "krum": {"f"},
    "multi_krum": {"f", "m"},
}

_BLOCK = 32768  # int64 columns per fedavg block: accumulator + temporary (512 KiB) stay in L2
_TILE = 16384  # columns per order-statistics tile
_PARALLEL_MIN = 1 << 20  # below this many columns one thread is faster than several
_FLOAT64_TOTAL = 2**21  # total weight below which float64 is exact (see _mean_float64)
_INT64_TOTAL = 2**32  # total weight below which sum(w * q) fits int64 (D * 2**31 < 2**63)
_LIMB_TOTAL = 2**47  # total weight below which the 15-bit limb sums fit int64 (D * 2**16)
_LIMB = 15
_GRAM_BLOCK = 1 << 16  # 2**16 products of 16-bit limbs (< 2**32 each): partial sums < 2**48
_GRAM_FLUSH = 1 << 14  # blocks summed in int64 before moving to Python ints (2**48 * 2**14)


# --------------------------------------------------------------------------- the rule


def decimal_fraction(x: Fraction | int | float | str) -> Fraction:
    """A task-spec number as the exact decimal it is written as: a float means its shortest
    round-trip decimal (``0.3`` is 3/10, not the binary 0.29999...), so any language that
    prints floats the standard way reads the same rational."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise ConfigError(f"expected a number, got {x!r}")
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ConfigError(f"expected a finite number, got {x!r}")
        return Fraction(repr(x))
    try:
        return Fraction(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expected a number, got {x!r}") from exc


def trim_count(beta: Fraction | float | str, n: int) -> int:
    """``k = floor(beta * n)``, computed exactly: the values trimmed at each end of a column."""
    b = decimal_fraction(beta)
    return math.floor(b * n)


@dataclass(frozen=True)
class ExactRule:
    """One exact rule and its integer parameters.

    ``weight_cap`` caps each fedavg weight (None: uncapped); ``beta`` is trimmed_mean's fraction
    (a rational, ``0 <= beta < 1/2``); ``f``/``m`` are Krum's; ``clip_bound`` is the L2 bound in
    units of the scale (an integer >= 1) applied to every update before any rule.
    """

    rule: RuleName
    weight_cap: int | None = None
    beta: Fraction | None = None
    f: int | None = None
    m: int | None = None
    clip_bound: int | None = None

    def __post_init__(self) -> None:
        if self.rule not in _RULES:
            raise ConfigError(
                f"unknown rule {self.rule!r}; the exact rules are {', '.join(_RULES)}"
            )
        given = {k for k in ("weight_cap", "beta", "f", "m") if getattr(self, k) is not None}
        stray = given - _PARAMS[self.rule]
        if stray:
            raise ConfigError(f"{', '.join(sorted(stray))} does not apply to rule {self.rule!r}")
        if self.beta is not None:
            object.__setattr__(self, "beta", decimal_fraction(self.beta))
        self._check_values()

    def _check_values(self) -> None:
        if self.rule == "trimmed_mean" and self.beta is None:
            raise ConfigError(
                "trimmed_mean needs beta (fraction trimmed at each end, 0 <= beta < 1/2)"
            )
        if self.beta is not None and not 0 <= self.beta < Fraction(1, 2):
            raise ConfigError(f"beta must satisfy 0 <= beta < 1/2, got {self.beta}")
        if self.rule in ("krum", "multi_krum") and self.f is None:
            raise ConfigError(f"{self.rule} needs f (the number of attackers to tolerate)")
        for name, low in (("weight_cap", 1), ("f", 0), ("m", 1), ("clip_bound", 1)):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < low):
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")

    @property
    def needs_plan(self) -> bool:
        """Whether a column range needs whole-update decisions (clipping, Krum) first."""
        return self.clip_bound is not None or self.rule in ("krum", "multi_krum")

    @classmethod
    def from_rule_spec(cls, spec: RuleSpec, fmt: FixedPointFormat) -> ExactRule:
        """The exact counterpart of a task's float rule spec in format ``fmt``.

        ``beta`` and ``clip_norm`` mean the decimals they are written as
        (:func:`decimal_fraction`); the clip bound is ``floor(clip_norm * 2**frac_bits)`` units;
        fedavg's cap defaults to :data:`~fedledger.protocol.aggregation.MAX_SAMPLE_CAP`, as the
        float rule's does.
        """
        bound = None
        if spec.clip_norm is not None:
            bound = math.floor(decimal_fraction(spec.clip_norm) * 2**fmt.frac_bits)
            if bound < 1:
                raise ConfigError(
                    f"clip_norm {spec.clip_norm} is below one unit of the fixed-point scale "
                    f"(2**-{fmt.frac_bits})",
                    hint="raise clip_norm or the format's frac_bits",
                )
        cap = None
        if spec.rule == "fedavg":
            cap = (
                MAX_SAMPLE_CAP if spec.sample_cap is None else min(spec.sample_cap, MAX_SAMPLE_CAP)
            )
        return cls(
            rule=spec.rule,
            weight_cap=cap,
            beta=None if spec.beta is None else decimal_fraction(spec.beta),
            f=spec.f,
            m=spec.m,
            clip_bound=bound,
        )


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def capped_weights(num_samples: Sequence[int], cap: int | None) -> list[int]:
    """fedavg's weights: ``min(numSamples, cap)`` (uncapped when ``cap`` is None)."""
    out = []
    for i, ns in enumerate(num_samples):
        if not _is_int(ns):
            raise ValueError(f"numSamples of update {i} must be an integer, got {ns!r}")
        if ns < 0:
            raise ValueError(f"numSamples of update {i} is negative ({ns}); counts are >= 0")
        out.append(int(ns) if cap is None else min(int(ns), int(cap)))
    return out


# --------------------------------------------------------------------------- inputs


def _as_fixed(updates: Sequence[npt.ArrayLike]) -> list[Int32Vector]:
    vecs = []
    for i, u in enumerate(updates):
        a = np.asarray(u)
        if a.dtype != np.int32:
            raise FormatError(
                f"update {i} has dtype {a.dtype}; the exact rules take int32 fixed-point vectors",
                hint="quantize() float deltas in the task's FixedPointFormat first",
            )
        vecs.append(a.reshape(-1))
    if not vecs:
        raise ValueError("no updates to aggregate")
    size = vecs[0].size
    for i, v in enumerate(vecs):
        if v.size != size:
            raise FormatError(f"update {i} has {v.size} coordinates, update 0 has {size}")
    return vecs


def _split_columns(work: Callable[[int, int], None], size: int, threads: int | None) -> None:
    """Run ``work(lo, hi)`` over disjoint column ranges; exact kernels make the split invisible."""
    if threads is None:
        threads = min(os.cpu_count() or 1, 8) if size >= _PARALLEL_MIN else 1
    threads = max(1, min(threads, size))
    if threads == 1:
        work(0, size)
        return
    step = -(-size // threads)
    bounds = [(lo, min(lo + step, size)) for lo in range(0, size, step)]
    with ThreadPoolExecutor(max_workers=len(bounds)) as pool:
        for fut in [pool.submit(work, lo, hi) for lo, hi in bounds]:
            fut.result()


# --------------------------------------------------------------------------- rounding


def _round_div(num: I64, den: int) -> I64:
    """``round_half_even(num / den)`` elementwise, for ``den > 0`` with ``2 den < 2**63`` and every
    ``num / den`` a mean of int32 values (so ``|floor(num / den) * den| <= 2**31 den < 2**63``)."""
    if den == 1:
        return num
    q = np.floor_divide(num, den)
    t = np.multiply(q, den)
    np.subtract(num, t, out=t)  # the remainder r, 0 <= r < den
    np.left_shift(t, 1, out=t)
    t += q & 1  # round up iff 2r + (q odd) > den: above half, or a tie with q odd
    np.subtract(den, t, out=t)
    np.right_shift(t, 63, out=t)  # -1 where den < 2r + odd, else 0
    q -= t
    return q


def _halve(s: I64) -> I64:
    """``round_half_even(s / 2)`` elementwise (floor shift, then up when odd and the floor is odd)."""
    q = s >> 1
    q += s & q & 1
    return q


# --------------------------------------------------------------------------- fedavg


def _weighted_mean(
    vecs: Sequence[Int32Vector], weights: Sequence[int], out: Int32Vector, threads: int | None
) -> None:
    """``out[c] = round_half_even(sum_i w_i q_i[c] / sum_i w_i)``.

    Dividing the weights by their gcd leaves every ratio unchanged (so the result too) and keeps
    the total small; the kernel is then chosen by the total ``D``, every one exact.
    """
    used = [(w, v) for w, v in zip(weights, vecs, strict=True) if w > 0]
    if not used:
        raise ValueError(
            "every update has zero weight (numSamples 0); fedavg needs a positive total"
        )
    g = math.gcd(*(w for w, _ in used))
    used = [(w // g, v) for w, v in used]
    total = sum(w for w, _ in used)
    if total < _FLOAT64_TOTAL:
        kernel = _mean_float64
    elif total < _INT64_TOTAL:
        kernel = _mean_int64
    elif total < _LIMB_TOTAL:
        kernel = _mean_limbs
    else:
        kernel = _mean_python
    _split_columns(lambda lo, hi: kernel(used, total, out, lo, hi), out.size, threads)


def _accumulate(acc: np.ndarray, tmp: np.ndarray, v: Int32Vector, w: int, first: bool) -> None:
    """``acc (+)= w * v`` in ``acc``'s dtype (int64 or float64; ``w == 1`` skips the multiply)."""
    if w == 1:
        if first:
            acc[...] = v
        else:
            np.add(acc, v, out=acc)
        return
    np.multiply(v, acc.dtype.type(w), out=acc if first else tmp)
    if not first:
        np.add(acc, tmp, out=acc)


def _mean_float64(
    used: list[tuple[int, Int32Vector]], total: int, out: Int32Vector, lo: int, hi: int
) -> None:
    """``D < 2**21``: float64 computes it exactly, and as fast as numpy can widen int32.

    Every partial sum is an integer of magnitude at most ``D 2**31 < 2**52``, so each product and
    sum is exact.  ``N / D`` is then correctly rounded: its error is at most
    ``|N / D| 2**-53 <= 2**-22``, while an exact value that is not a tie lies at least
    ``1 / (2 D) > 2**-22`` from the nearest half-integer, so the float lands on the same side of
    it, and a tie ``k + 1/2`` is representable and stays one.  ``rint`` (ties to even) of the
    float is therefore ``round_half_even(N / D)``.
    """
    acc = np.empty(_BLOCK)
    tmp = np.empty(_BLOCK)
    den = np.float64(total)
    for s in range(lo, hi, _BLOCK):
        e = min(s + _BLOCK, hi)
        a, t = acc[: e - s], tmp[: e - s]
        for j, (w, v) in enumerate(used):
            _accumulate(a, t, v[s:e], w, j == 0)
        np.divide(a, den, out=a)
        np.rint(a, out=a)
        out[s:e] = a


def _mean_int64(
    used: list[tuple[int, Int32Vector]], total: int, out: Int32Vector, lo: int, hi: int
) -> None:
    """``D < 2**32``: every partial sum is at most ``D * 2**31 < 2**63`` in magnitude."""
    acc = np.empty(_BLOCK, dtype=np.int64)
    tmp = np.empty(_BLOCK, dtype=np.int64)
    for s in range(lo, hi, _BLOCK):
        e = min(s + _BLOCK, hi)
        a, t = acc[: e - s], tmp[: e - s]
        for j, (w, v) in enumerate(used):
            _accumulate(a, t, v[s:e], w, j == 0)
        out[s:e] = _round_div(a, total)


def _mean_limbs(
    used: list[tuple[int, Int32Vector]], total: int, out: Int32Vector, lo: int, hi: int
) -> None:
    """``2**32 <= D < 2**47``: ``q = h 2**15 + l`` with ``h in [-2**16, 2**16)``, ``l in [0, 2**15)``.

    ``|sum w h| <= D 2**16 < 2**63`` and ``sum w l < D 2**15``.  With ``sum w h = a D + b``
    (``0 <= b < D``): ``N / D = a 2**15 + (b 2**15 + sum w l) / D``, whose numerator is below
    ``D 2**16 < 2**63``; ``a 2**15`` is even, so rounding the remainder rounds ``N / D``.
    """
    acc_h = np.empty(_BLOCK, dtype=np.int64)
    acc_l = np.empty(_BLOCK, dtype=np.int64)
    tmp = np.empty(_BLOCK, dtype=np.int64)
    limb = np.empty(_BLOCK, dtype=np.int32)
    for s in range(lo, hi, _BLOCK):
        e = min(s + _BLOCK, hi)
        m = e - s
        ah, al, t, lb = acc_h[:m], acc_l[:m], tmp[:m], limb[:m]
        for j, (w, v) in enumerate(used):
            np.right_shift(v[s:e], _LIMB, out=lb)
            _accumulate(ah, t, lb, w, j == 0)
            np.bitwise_and(v[s:e], (1 << _LIMB) - 1, out=lb)
            _accumulate(al, t, lb, w, j == 0)
        a = np.floor_divide(ah, total)
        rest = ((ah - a * total) << _LIMB) + al
        out[s:e] = (a << _LIMB) + _round_div(rest, total)


def _mean_python(
    used: list[tuple[int, Int32Vector]], total: int, out: Int32Vector, lo: int, hi: int
) -> None:
    """``D >= 2**47`` (weights far beyond any real sample count): Python ints, no bound needed."""
    step = 4096
    for s in range(lo, hi, step):
        e = min(s + step, hi)
        acc = np.zeros(e - s, dtype=object)
        for w, v in used:
            acc += v[s:e].astype(object) * w
        out[s:e] = [round_half_even(int(x), total) for x in acc]


# --------------------------------------------------------------------------- order statistics


def _sorted_tiles(
    vecs: Sequence[Int32Vector], lo: int, hi: int
) -> Iterator[tuple[int, int, npt.NDArray[np.int32]]]:
    """Yield ``(start, end, tile)``: ``tile[c]`` holds column c's n values in increasing order
    (sorted integers are unique, so the method cannot change a result)."""
    return sorted_columns(vecs, lo, hi, dtype=np.int32, tile=_TILE)


def _median(vecs: Sequence[Int32Vector], out: Int32Vector, threads: int | None) -> None:
    """Odd n: the middle value; even n: ``round_half_even((a + b) / 2)`` of the two middle ones
    (``|a + b| <= 2**32``, int64)."""
    n = len(vecs)

    def work(lo: int, hi: int) -> None:
        if n == 1:
            out[lo:hi] = vecs[0][lo:hi]
            return
        for s, e, t in _sorted_tiles(vecs, lo, hi):
            if n % 2:
                out[s:e] = t[:, n // 2]
            else:
                out[s:e] = _halve(t[:, n // 2 - 1].astype(np.int64) + t[:, n // 2])

    _split_columns(work, out.size, threads)


def _trimmed_mean(
    vecs: Sequence[Int32Vector], k: int, out: Int32Vector, threads: int | None
) -> None:
    """``round_half_even(sum of the middle n - 2k values / (n - 2k))`` per column; the sum is at
    most ``n 2**31`` in magnitude (int64 for n < 2**32)."""
    n = len(vecs)
    kept = n - 2 * k
    if kept < 1:
        raise ConfigError(f"trimming {k} values at each end leaves nothing of {n} updates")
    if k == 0:
        _weighted_mean(vecs, [1] * n, out, threads)
        return

    def work(lo: int, hi: int) -> None:
        for s, e, t in _sorted_tiles(vecs, lo, hi):
            out[s:e] = _round_div(t[:, k : n - k].sum(axis=1, dtype=np.int64), kept)

    _split_columns(work, out.size, threads)


# --------------------------------------------------------------------------- clipping


def sq_norms(columns: Sequence[npt.ArrayLike]) -> list[int]:
    """Each update's exact squared L2 norm over these columns (a shard's part of the whole).

    With ``q = h 2**16 + l``: ``q**2 = h**2 2**32 + 2 h l 2**16 + l**2``; each limb product is
    below 2**32, so the int64 dot products of up to 2**20 columns cannot overflow.
    """
    vecs = _as_fixed(columns)
    out = []
    for v in vecs:
        total = 0
        for s in range(0, v.size, 1 << 20):
            seg = v[s : s + (1 << 20)].astype(np.int64)
            h, low = seg >> 16, seg & 0xFFFF
            total += (int(h @ h) << 32) + (int(h @ low) << 17) + int(low @ low)
        out.append(total)
    return out


def clip_multiplier(sq_norm: int, bound: int) -> int | None:
    """``None`` when ``sq_norm <= bound**2`` (left alone), else ``num = floor(2**32 bound / sqrt(sq_norm))``.

    Exactly ``isqrt(floor(bound**2 2**64 / sq_norm))``, as ``floor(sqrt(x)) == isqrt(floor(x))``;
    ``0 <= num < 2**32`` because ``bound < sqrt(sq_norm)``.
    """
    if sq_norm <= bound * bound:
        return None
    return math.isqrt((bound * bound << 64) // sq_norm)


def scale_toward_zero(v: npt.ArrayLike, num: int) -> Int32Vector:
    """``trunc(q * num / 2**32)`` elementwise (``0 <= num < 2**32``; ``|q num| < 2**63``)."""
    vec = np.asarray(v, dtype=np.int32).reshape(-1)
    out = np.empty(vec.size, dtype=np.int32)
    mul = np.int64(num)
    for s in range(0, vec.size, _BLOCK):
        c = vec[s : s + _BLOCK].astype(np.int64) * mul
        r = c >> 32  # floor; a negative product with a remainder moves up by one to truncate
        r += (c < 0) & ((c & 0xFFFFFFFF) != 0)
        out[s : s + _BLOCK] = r
    return out


def clipped(
    vecs: Sequence[Int32Vector], multipliers: Sequence[int | None] | None
) -> list[Int32Vector]:
    """The updates with their clip multipliers applied (``None``: unchanged, not copied)."""
    if multipliers is None:
        return list(vecs)
    if len(multipliers) != len(vecs):
        raise ValueError(f"{len(vecs)} updates but {len(multipliers)} clip multipliers")
    return [
        v if m is None else scale_toward_zero(v, m) for v, m in zip(vecs, multipliers, strict=True)
    ]


def clip(update: npt.ArrayLike, bound: int) -> Int32Vector:
    """One whole update clipped to L2 norm ``bound`` units: its norm afterwards is <= ``bound``."""
    vec = _as_fixed([update])[0]
    num = clip_multiplier(sq_norms([vec])[0], bound)
    return vec.copy() if num is None else scale_toward_zero(vec, num)


# --------------------------------------------------------------------------- Krum


@dataclass(frozen=True)
class ExactGram:
    """``ints[i][j] = sum_c q_i[c] q_j[c]`` exactly (Python ints); shards' Grams add up."""

    ints: tuple[tuple[int, ...], ...]

    @classmethod
    def zeros(cls, n: int) -> ExactGram:
        return cls(tuple((0,) * n for _ in range(n)))

    @property
    def n(self) -> int:
        return len(self.ints)

    def __add__(self, other: ExactGram) -> ExactGram:
        if other.n != self.n:
            raise ValueError(f"Gram matrices of {self.n} and {other.n} updates cannot be added")
        return ExactGram(
            tuple(
                tuple(a + b for a, b in zip(ra, rb, strict=True))
                for ra, rb in zip(self.ints, other.ints, strict=True)
            )
        )

    def sq_distance(self, i: int, j: int) -> int:
        """``|q_i - q_j|**2``, exact."""
        return self.ints[i][i] + self.ints[j][j] - 2 * self.ints[i][j]


def gram(columns: Sequence[npt.ArrayLike]) -> ExactGram:
    """The exact Gram matrix of the updates over these columns, by float64 BLAS on limbs.

    ``q = h 2**16 + l`` with ``h in [-2**15, 2**15)``, ``l in [0, 2**16)``; the 2n x 2n product
    of the stacked limbs has entries that are sums of at most 2**16 products below 2**32, so
    every partial sum, in any order BLAS picks, is an integer below 2**48 and exact.
    ``G_ij = HH_ij 2**32 + (HL_ij + HL_ji) 2**16 + LL_ij``.
    """
    vecs = _as_fixed(columns)
    n, size = len(vecs), vecs[0].size
    block = max(1, min(_GRAM_BLOCK, (1 << 20) // n))
    limbs = np.empty((2 * n, block))
    scratch = np.empty(block, dtype=np.int32)
    acc = np.zeros((2 * n, 2 * n), dtype=np.int64)
    total = np.zeros((2 * n, 2 * n), dtype=object)  # Python ints
    pending = 0
    for s in range(0, size, block):
        e = min(s + block, size)
        m = e - s
        for i, v in enumerate(vecs):
            np.right_shift(v[s:e], 16, out=scratch[:m])
            limbs[i, :m] = scratch[:m]
            np.bitwise_and(v[s:e], 0xFFFF, out=scratch[:m])
            limbs[n + i, :m] = scratch[:m]
        part = limbs[:, :m]
        acc += (part @ part.T).astype(np.int64)
        pending += 1
        if pending == _GRAM_FLUSH:
            total += acc.astype(object)
            acc[...] = 0
            pending = 0
    total += acc.astype(object)
    hh, hl, ll = total[:n, :n], total[:n, n:], total[n:, n:]
    g = (hh << 32) + ((hl + hl.T) << 16) + ll
    return ExactGram(tuple(tuple(row) for row in g.tolist()))


def krum_scores(g: ExactGram, f: int) -> list[int]:
    """Each update's Krum score: the sum of its ``k = min(max(1, n - f - 2), n - 1)`` smallest
    exact squared distances to the others (0 for a lone update)."""
    n = g.n
    if n == 1:
        return [0]
    k = min(krum_neighbours(n, f), n - 1)
    ints = np.array(g.ints, dtype=object)
    diag = ints.diagonal().copy()
    dist = (diag[:, None] + diag[None, :] - 2 * ints).tolist()
    return [sum(sorted(row[:i] + row[i + 1 :])[:k]) for i, row in enumerate(dist)]


def krum_order(g: ExactGram, f: int) -> list[int]:
    """Update indices by increasing score; equal scores go to the earlier index (updateId)."""
    scores = krum_scores(g, f)
    return sorted(range(g.n), key=lambda i: (scores[i], i))


def krum_selection(rule: ExactRule, g: ExactGram) -> tuple[int, ...]:
    """The updates Krum keeps, in index order: the best one, or multi-Krum's best
    ``m`` (default ``n - f``, kept within ``[1, n]``)."""
    order = krum_order(g, rule.f or 0)
    if rule.rule == "krum":
        return (order[0],)
    keep = g.n - (rule.f or 0) if rule.m is None else rule.m
    return tuple(sorted(order[: max(1, min(keep, g.n))]))


# --------------------------------------------------------------------------- plan and ranges


@dataclass(frozen=True)
class Plan:
    """A round's whole-update decisions, which every column range needs.

    ``multipliers[i]`` is update i's clip multiplier (None: inside the bound); ``selected`` the
    updates Krum or multi-Krum keeps.
    """

    multipliers: tuple[int | None, ...] | None = None
    selected: tuple[int, ...] | None = None


def _check_shards(shards: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    for s, e in shards:
        if s != pos or e < s:
            raise ValueError(f"shards must tile [0, {size}) in order; got ({s}, {e}) at {pos}")
        out.append((s, e))
        pos = e
    if pos != size:
        raise ValueError(f"shards end at {pos}, the updates have {size} coordinates")
    return out


def plan_round(
    rule: ExactRule,
    updates: Sequence[npt.ArrayLike],
    shards: Sequence[tuple[int, int]] | None = None,
) -> Plan:
    """Take the whole-update decisions from per-shard partial sums (one shard by default).

    Squared norms give the clip multipliers; then the clipped updates' Gram gives Krum's
    choice.  Both are exact sums, so any shards that tile the coordinates give the same plan.
    """
    vecs = _as_fixed(updates)
    bounds = _check_shards(shards, vecs[0].size) if shards is not None else [(0, vecs[0].size)]
    multipliers = None
    if rule.clip_bound is not None:
        norms = [0] * len(vecs)
        for s, e in bounds:
            for i, part in enumerate(sq_norms([v[s:e] for v in vecs])):
                norms[i] += part
        multipliers = tuple(clip_multiplier(x, rule.clip_bound) for x in norms)
    selected = None
    if rule.rule in ("krum", "multi_krum"):
        g = ExactGram.zeros(len(vecs))
        for s, e in bounds:
            g = g + gram(clipped([v[s:e] for v in vecs], multipliers))
        selected = krum_selection(rule, g)
    return Plan(multipliers, selected)


def aggregate_columns(
    rule: ExactRule,
    columns: Sequence[npt.ArrayLike],
    num_samples: Sequence[int],
    plan: Plan | None,
    *,
    threads: int | None = None,
) -> Int32Vector:
    """``rule`` on one column range of every update (e.g. the shard a machine holds).

    ``plan`` (from :func:`plan_round` over the whole updates) is required when the rule clips or
    is Krum; ``num_samples`` only weighs fedavg.  ``threads`` (default: by size) never changes
    a bit.
    """
    vecs = _as_fixed(columns)
    if len(num_samples) != len(vecs):
        raise ValueError(f"{len(vecs)} updates but {len(num_samples)} sample counts")
    if rule.needs_plan and plan is None:
        raise ValueError(
            f"rule {rule.rule!r}{' with clipping' if rule.clip_bound else ''} needs the round's "
            "plan_round(...): clipping and Krum depend on whole updates, not on a column range"
        )
    if plan is not None:
        _check_plan(rule, plan, len(vecs))
        if rule.clip_bound is not None:
            vecs = clipped(vecs, plan.multipliers)
    out = np.empty(vecs[0].size, dtype=np.int32)
    if rule.rule == "fedavg":
        _weighted_mean(vecs, capped_weights(num_samples, rule.weight_cap), out, threads)
    elif rule.rule == "median":
        _median(vecs, out, threads)
    elif rule.rule == "trimmed_mean":
        assert rule.beta is not None
        _trimmed_mean(vecs, trim_count(rule.beta, len(vecs)), out, threads)
    else:
        assert plan is not None and plan.selected is not None
        chosen = [vecs[i] for i in plan.selected]
        _weighted_mean(chosen, [1] * len(chosen), out, threads)
    return out


def _check_plan(rule: ExactRule, plan: Plan, n: int) -> None:
    """Refuse a plan that cannot belong to this rule and round (a wrong plan must not pass)."""
    if (rule.clip_bound is None) != (plan.multipliers is None):
        raise ValueError(
            "the plan's clipping does not match the rule's; make it with plan_round(rule, ...)"
        )
    if plan.multipliers is not None and len(plan.multipliers) != n:
        raise ValueError(f"the plan clips {len(plan.multipliers)} updates, the round has {n}")
    krum_rule = rule.rule in ("krum", "multi_krum")
    if krum_rule != (plan.selected is not None):
        raise ValueError(
            "the plan's Krum choice does not match the rule; make it with plan_round(rule, ...)"
        )
    if plan.selected is not None and not all(0 <= i < n for i in plan.selected):
        raise ValueError(f"the plan selects updates {plan.selected}, the round has {n}")


def aggregate_range(
    rule: ExactRule,
    updates: Sequence[npt.ArrayLike],
    num_samples: Sequence[int],
    start: int,
    stop: int,
    plan: Plan | None = None,
    *,
    threads: int | None = None,
) -> Int32Vector:
    """Coordinates ``[start, stop)`` of the aggregate of whole ``updates`` (plan made if missing)."""
    vecs = _as_fixed(updates)
    size = vecs[0].size
    if not 0 <= start <= stop <= size:
        raise ValueError(f"column range [{start}, {stop}) is not inside [0, {size})")
    if plan is None and rule.needs_plan:
        plan = plan_round(rule, vecs)
    return aggregate_columns(
        rule, [v[start:stop] for v in vecs], num_samples, plan, threads=threads
    )


def aggregate_exact(
    rule: ExactRule,
    updates: Sequence[npt.ArrayLike],
    num_samples: Sequence[int] | None = None,
    *,
    threads: int | None = None,
) -> Int32Vector:
    """Clip (if the rule says so), then apply the rule; inputs in updateId order."""
    vecs = _as_fixed(updates)
    ns = [1] * len(vecs) if num_samples is None else list(num_samples)
    return aggregate_range(rule, vecs, ns, 0, vecs[0].size, threads=threads)


# --------------------------------------------------------------------------- one rule each


def fedavg(
    updates: Sequence[npt.ArrayLike], weights: Sequence[int], *, weight_cap: int | None = None
) -> Int32Vector:
    """``round_half_even(sum w_i q_i / sum w_i)`` per coordinate, ``w_i = min(weights_i, cap)``."""
    return aggregate_exact(ExactRule("fedavg", weight_cap=weight_cap), updates, weights)


def median(updates: Sequence[npt.ArrayLike]) -> Int32Vector:
    """Coordinate-wise median; for even n the two middle values' midpoint, ties to even."""
    return aggregate_exact(ExactRule("median"), updates)


def trimmed_mean(updates: Sequence[npt.ArrayLike], *, beta: Fraction | float | str) -> Int32Vector:
    """Mean of each column's middle ``n - 2 floor(beta n)`` values, rounded half to even."""
    return aggregate_exact(ExactRule("trimmed_mean", beta=decimal_fraction(beta)), updates)


def krum(updates: Sequence[npt.ArrayLike], *, f: int) -> Int32Vector:
    """The update with the lowest exact Krum score (ties: the earlier one), unchanged."""
    return aggregate_exact(ExactRule("krum", f=f), updates)


def multi_krum(updates: Sequence[npt.ArrayLike], *, f: int, m: int | None = None) -> Int32Vector:
    """Unweighted mean of the ``m`` best-scored updates (default ``n - f``), rounded half to even."""
    return aggregate_exact(ExactRule("multi_krum", f=f, m=m), updates)
