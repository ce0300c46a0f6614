"""A fixed-point task's deltas in the task's tensor order: what validators, ``fedledger verify``
and contributors' local checks do with the task's format (docs/aggregation.md, "Wiring").

A task with a ``fixed_point`` section (:meth:`fedledger.protocol.taskspec.TaskSpec.fixed_point_format`)
judges every update as one int32 vector, its tensors flattened in the global model's order
(:class:`fedledger.protocol.aggregation.TensorLayout`):

* an ``int32`` file (:mod:`fedledger.protocol.codec`) is that vector as stored, once its declared
  format is the task's (:func:`format_problem`);
* a float file (``fp32``, ``fp16``, ``int8``, ``topk``) is quantized: ``round_half_even(x *
  2**frac_bits)`` (:func:`quantize_delta`); a coordinate the format cannot hold is the update's
  verdict, ``OUT_OF_RANGE``, with the coordinate named (never a wrap or a saturation).

The screen sees the dequantized vector (:func:`dequantize_tensors`: one correctly rounded
float32 per coordinate, the same on every machine) and the exact rules aggregate the integers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedledger.protocol import aggregation as agg
from fedledger.protocol import fixedpoint
from fedledger.protocol.fixedpoint import FixedPointFormat, FixedPointRangeError, Int32Vector


def locate(index: int, layout: agg.TensorLayout) -> str:
    """Where flat coordinate ``index`` lies: ``" (tensor 'fc.weight' element [3, 1])"``."""
    for name, shape, off in zip(layout.names, layout.shapes, layout.offsets, strict=True):
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if off <= index < off + size:
            at = [int(i) for i in np.unravel_index(index - off, shape)] if shape else []
            return f" (tensor {name!r} element {at})"
    return ""


def quantize_delta(
    delta: Mapping[str, np.ndarray], layout: agg.TensorLayout, fmt: FixedPointFormat
) -> Int32Vector:
    """A float delta (tensors matching ``layout``) as the task's int32 vector.

    Raises :class:`~fedledger.protocol.fixedpoint.FixedPointRangeError` naming the first
    coordinate (flat index in task order, tensor and element) the format cannot hold.
    """
    vec, _ = agg.flatten(delta, layout)
    try:
        return fixedpoint.quantize(vec, fmt)
    except FixedPointRangeError as exc:
        raise FixedPointRangeError(exc.index, exc.value, fmt, locate(exc.index, layout)) from None


def flatten_fixed(
    tensors: Mapping[str, np.ndarray], layout: agg.TensorLayout
) -> Int32Vector | None:
    """An int32 file's tensors as one vector in ``layout``'s order; ``None`` when their names or
    shapes differ from the model's (the screen then says how: ``SHAPE_MISMATCH``)."""
    if set(tensors) != set(layout.names):
        return None
    out = np.empty(layout.size, dtype=np.int32)
    for name, shape, off in zip(layout.names, layout.shapes, layout.offsets, strict=True):
        arr = tensors[name]
        if tuple(arr.shape) != shape or arr.dtype != np.int32:
            return None
        out[off : off + arr.size] = arr.reshape(-1)
    return out


def dequantize_tensors(
    q: Int32Vector, layout: agg.TensorLayout, fmt: FixedPointFormat
) -> agg.Tensors:
    """``q * 2**-frac_bits`` as float32 tensors of ``layout`` (elementwise, deterministic)."""
    return agg.unflatten(fixedpoint.dequantize(q, fmt), layout)


def format_problem(declared: FixedPointFormat | None, task: FixedPointFormat | None) -> str | None:
    """Why a file's fixed-point format (``None``: a float encoding) does not fit the task's
    (``None``: a float task), or ``None`` when it does.  A float file fits any task: a
    fixed-point task quantizes it."""
    if declared is None or declared == task:
        return None
    if task is None:
        return (
            f"an int32 update (frac_bits={declared.frac_bits}) for a task without a fixed-point "
            "format: encode the delta as fp32 (the default for this task)"
        )
    return (
        f"the update declares frac_bits={declared.frac_bits}, the task's fixed-point format has "
        f"frac_bits={task.frac_bits}: encode it with this fedledger (task.submit quantizes to "
        "the task's format)"
    )
