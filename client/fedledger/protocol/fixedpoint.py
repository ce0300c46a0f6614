"""A task's fixed-point format for deltas: int32 coordinates with a power-of-two scale.

A coordinate ``q`` (a signed 32-bit integer) stands for the real value ``q * 2**-frac_bits``;
``frac_bits`` (0..31, default 24) is a task parameter.  With 24 fraction bits one unit (an
*ulp of the scale*) is ``2**-24 ~ 6e-8`` and the range is ``[-128, 128 - 2**-24]``, ample for
the deltas of one round.  The exact rules (:mod:`fedledger.protocol.exact_rules`) work on these
integers; ``docs/aggregation.md`` is the specification of both modules.

Conversions
-----------
* :func:`quantize`: ``q = round_half_even(x * 2**frac_bits)``.  The product is exact (a power of
  two scales the float's exponent only; float32 and float64 inputs are each handled in their own
  precision), and ``rint`` rounds it to the nearest integer, ties to even.  A result outside
  ``[-2**31, 2**31 - 1]`` -- or a NaN or infinity -- is *reported*, never wrapped or saturated:
  :class:`FixedPointRangeError` names the first bad coordinate, so a validator can turn it into a
  verdict.
* :func:`dequantize`: ``fl32(q) * 2**-frac_bits``, the correctly rounded float32 of
  ``q * 2**-frac_bits`` (exact whenever ``|q| <= 2**24``).  ``dequantize(quantize(x))`` is within
  half an ulp of the scale of ``x``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from fedledger.errors import FormatError
from fedledger.protocol.taskspec import parse_section

Int32Vector = npt.NDArray[np.int32]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
MAX_FRAC_BITS = 31


class FixedPointFormat(BaseModel):
    """The fixed-point format of a task's deltas, e.g. ``{"coordinate": "int32", "frac_bits": 24}``.

    ``frac_bits`` fixes the scale ``2**-frac_bits``: larger keeps more precision, smaller allows
    larger coordinates (the range is ``[-2**(31-frac_bits), 2**(31-frac_bits) - 2**-frac_bits]``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    coordinate: Literal["int32"] = "int32"
    frac_bits: Annotated[int, Field(ge=0, le=MAX_FRAC_BITS, strict=True)] = 24

    @property
    def ulp(self) -> float:
        """The real value of one unit, ``2**-frac_bits``."""
        return 2.0**-self.frac_bits

    @property
    def max_value(self) -> float:
        """The largest representable value, ``(2**31 - 1) * 2**-frac_bits``."""
        return INT32_MAX * self.ulp

    @property
    def min_value(self) -> float:
        """The smallest representable value, ``-2**31 * 2**-frac_bits``."""
        return INT32_MIN * self.ulp

    @classmethod
    def parse(cls, obj: Mapping[str, Any] | str | bytes) -> FixedPointFormat:
        """Validate a format (a mapping or JSON text, alone or as a task spec's ``fixed_point``).

        Raises ConfigError naming every bad field.
        """
        return parse_section(
            cls,
            obj,
            "fixed_point",
            "fixed-point format",
            hint=f'e.g. {{"coordinate": "int32", "frac_bits": 24}}; frac_bits is 0..{MAX_FRAC_BITS}',
        )


class FixedPointRangeError(FormatError):
    """A delta has a coordinate the task's fixed-point format cannot hold (or one not finite).

    ``index`` is the first such coordinate in the flat vector and ``value`` its float value;
    ``where`` (optional) says where that coordinate lies, e.g. ``" (tensor 'fc.weight' [3, 1])"``.
    """

    def __init__(self, index: int, value: float, fmt: FixedPointFormat, where: str = "") -> None:
        self.index = index
        self.value = value
        self.fmt = fmt
        self.where = where
        if np.isfinite(value):
            why = (
                f"coordinate {index}{where} is {value!r}, outside the fixed-point range "
                f"[{fmt.min_value!r}, {fmt.max_value!r}] of frac_bits={fmt.frac_bits}"
            )
            hint = "the update is too large for the task's format; clip it or use fewer frac_bits"
        else:
            why = (
                f"coordinate {index}{where} is {value!r}: a fixed-point delta must be finite "
                "(not finite)"
            )
            hint = "screening rejects NaN and infinity before quantizing"
        super().__init__(why, hint=hint)


def _check_float(x: np.ndarray) -> None:
    if x.dtype not in (np.float32, np.float64):
        raise FormatError(
            f"quantize takes a float32 (or float64) vector, got dtype {x.dtype}",
            hint="decode the update's tensors to float32 first",
        )


def _scaled(x: np.ndarray, fmt: FixedPointFormat) -> np.ndarray:
    """``rint(x * 2**frac_bits)`` in ``x``'s own precision: the product is exact, ``rint`` rounds
    half to even, so this is the exact rounded value (or an infinity/NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow to inf is reported below
        y = np.multiply(x, x.dtype.type(2.0**fmt.frac_bits))
        np.rint(y, out=y)
    return y


def _bad_mask(y: np.ndarray) -> npt.NDArray[np.bool_]:
    # -2**31 and 2**31 are exact in float32 and float64; NaN fails both comparisons
    lo, hi = y.dtype.type(INT32_MIN), y.dtype.type(2.0**31)
    return ~((y >= lo) & (y < hi))


def first_out_of_range(x: npt.ArrayLike, fmt: FixedPointFormat) -> int | None:
    """Index of the first coordinate of ``x`` that ``fmt`` cannot hold (or not finite); None if
    every coordinate quantizes."""
    arr = np.asarray(x).reshape(-1)
    _check_float(arr)
    bad = np.flatnonzero(_bad_mask(_scaled(arr, fmt)))
    return int(bad[0]) if bad.size else None


def quantize(x: npt.ArrayLike, fmt: FixedPointFormat) -> Int32Vector:
    """``round_half_even(x * 2**frac_bits)`` as a flat int32 vector.

    Raises :class:`FixedPointRangeError` (a FormatError) naming the first coordinate that is
    outside the int32 range after rounding, or not finite; nothing is ever wrapped.
    """
    arr = np.asarray(x).reshape(-1)
    _check_float(arr)
    y = _scaled(arr, fmt)
    if y.size:
        lo, hi = y.min(), y.max()  # NaN propagates through both
        if not (lo >= INT32_MIN and hi < 2.0**31):
            index = int(np.flatnonzero(_bad_mask(y))[0])
            raise FixedPointRangeError(index, float(arr[index]), fmt)
    return y.astype(np.int32)


def dequantize(
    q: npt.ArrayLike,
    fmt: FixedPointFormat,
    dtype: type[np.float32] | type[np.float64] = np.float32,
) -> npt.NDArray[Any]:
    """``q * 2**-frac_bits`` correctly rounded to ``dtype`` (float32 by default; float64 is exact).

    The int32 -> float conversion rounds once (ties to even) and the power-of-two scale is exact.
    """
    arr = np.asarray(q)
    if arr.dtype != np.int32:
        raise FormatError(f"dequantize takes an int32 vector, got dtype {arr.dtype}")
    out = arr.astype(dtype)
    np.multiply(out, dtype(2.0**-fmt.frac_bits), out=out)
    return out


def round_half_even(num: int, den: int) -> int:
    """The integer nearest to ``num / den`` (``den > 0``), ties to even -- the rounding every exact
    rule uses (the Python ints reference of docs/aggregation.md)."""
    if den <= 0:
        raise ValueError(f"denominator must be positive, got {den}")
    q, r = divmod(num, den)  # floor division: 0 <= r < den
    if 2 * r > den or (2 * r == den and q % 2 == 1):
        q += 1
    return q
