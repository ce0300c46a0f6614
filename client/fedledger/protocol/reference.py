"""The validators' root data set and the screen's measurements on it, bit for bit the same on
every machine.  Owner of the root-data file format and of the task spec's ``root_data`` section.

A task may name a small clean data set that its validators hold (FLTrust, Cao et al. 2021: a
root data set of ~100 samples): the spec's ``root_data`` section gives its CID, sha256 and
number of samples.  The screen then measures each update against it (docs/defences.md):

* the **reference update** ``r``: ``steps`` full-batch gradient steps of the root loss from the
  round's global model (FLTrust's server update), and each update's cosine to it -- an inner
  product, so a Gram-matrix entry when the reference is appended to the round's vectors;
* the **loss change** ``L(global + delta) - L(global)`` of each update applied alone (as
  Templar's validators score gradients on held-out batches).

Reproducible arithmetic
-----------------------
Every validator must reach the same verdict, so nothing here may depend on BLAS's summation
order, threads, FMA or the libm.  The model is evaluated in *fixed point*:

* an activation tensor is quantized once per layer to integers ``|q| <= 2**ACT_BITS`` with a
  power-of-two scale read off its largest magnitude (``rint``: exact, ties to even), a weight
  tensor likewise to ``|q| <= 2**WEIGHT_BITS``;
* a matrix product of such integers is computed in float64 by BLAS: every product is below
  ``2**(ACT_BITS + WEIGHT_BITS)`` and every partial sum below ``fan_in * 2**36 < 2**53``
  (:data:`MAX_FAN_IN`), so each partial sum is an exact integer and the result is the same in
  any order, blocking or threading;
* the rest is elementwise IEEE-754 arithmetic (a power-of-two scale, adding the bias, ReLU,
  ``rint``), correctly rounded everywhere, and sums over samples are ``math.fsum`` (exactly
  rounded);
* the loss is the cross-entropy the models train with; its ``exp`` and ``log`` are fixed
  polynomials (:func:`exp_nonpositive`, :func:`log_positive`) evaluated as a fixed sequence of
  IEEE-754 operations, not the libm's, whose last bit differs between platforms; the softmax
  denominators are summed class by class in a fixed order.  The gradient by the logits
  (``softmax - onehot``) is quantized like an activation before it flows back.

Supported models are chains of linear layers with ReLU between them (the built-in
``mlp_*`` and ``logreg_*`` models, ``{"kind": "mlp"}`` descriptions with the default
activation): read from the model's own tensors (``<prefix>.weight`` ``[out, in]`` and
``<prefix>.bias`` ``[out]`` in the model's order).  A task with another model cannot name a
root data set (:class:`~fedledger.errors.ConfigError` when it is judged).

Root-data file: canonical safetensors (:func:`fedledger.protocol.codec.write_safetensors`)
holding ``x`` (F32 ``[N, F]``) and ``y`` (I64 ``[N]``, classes ``0..C-1``) and the metadata
``fedledger.kind = "root_data"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, FedledgerError, FormatError, StoreError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec, parse_section

ACT_BITS = 16
WEIGHT_BITS = 20
MAX_FAN_IN = 1 << 16
"""Largest layer input: ``2**16 * 2**(16 + 20) = 2**52`` keeps every partial sum exact."""
MAX_SAMPLES = 1 << 16
"""Most root samples (the gradient's sums ``N * 2**32`` stay below ``2**53``)."""
MAX_ROOT_BYTES = 64 << 20
ROOT_KIND = "root_data"

F64 = npt.NDArray[np.float64]


class RootDataRef(BaseModel):
    """The task spec's ``root_data`` section: the validators' root / evaluation data set.

    ``{"cid": "bafk...", "sha256": "<64 hex>", "samples": 100, "name": "digits-root-100"}``;
    ``name`` is a label for people (REST and the dashboard show it beside the figures measured
    on it).  The reference update is ``steps`` full-batch gradient steps on the root data at
    learning rate ``lr`` (default: the task's ``training.lr``), as FLTrust's server trains its
    own update on the root data each round.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cid: Annotated[str, Field(min_length=1, max_length=200)]
    sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES, strict=True)]
    name: Annotated[str, Field(max_length=100)] = ""
    steps: Annotated[int, Field(ge=1, le=100, strict=True)] = 12
    lr: Annotated[float, Field(gt=0.0, le=10.0, allow_inf_nan=False)] | None = None

    @classmethod
    def of_file(cls, data: bytes, cid: str, name: str = "") -> RootDataRef:
        """The section naming the root-data file ``data`` stored at ``cid`` (its sha256 and
        size read from it), for a task spec's ``root_data``."""
        return cls(
            cid=cid,
            sha256=codec.sha256_hex(data)[2:],
            samples=decode_root_data(data).samples,
            name=name,
        )

    @classmethod
    def parse(cls, obj: Mapping[str, Any] | str | bytes) -> RootDataRef:
        """Validate the section (alone or inside a whole spec); ConfigError names bad fields."""
        return parse_section(
            cls,
            obj,
            "root_data",
            "root data section",
            hint='e.g. {"cid": "bafk...", "sha256": "<64 hex>", "samples": 100}',
        )


@dataclass(frozen=True)
class RootData:
    """A decoded root data set."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    @property
    def samples(self) -> int:
        return int(self.y.shape[0])


def encode_root_data(x: npt.ArrayLike, y: npt.ArrayLike) -> bytes:
    """The canonical root-data file for samples ``x`` ``[N, F]`` and labels ``y`` ``[N]``."""
    xs = np.ascontiguousarray(x, dtype=np.float32)
    ys = np.ascontiguousarray(y, dtype=np.int64)
    _check(xs, ys)
    return codec.write_safetensors({"x": xs, "y": ys}, {codec.K_KIND: ROOT_KIND})


def decode_root_data(data: bytes, ref: RootDataRef | None = None) -> RootData:
    """Parse a root-data file; with ``ref``, also check its sha256 and size against the spec.

    Raises FormatError naming the problem.
    """
    if ref is not None and codec.sha256_hex(data) != "0x" + ref.sha256:
        raise FormatError(
            f"root data {ref.cid} hashes to {codec.sha256_hex(data)}, the task spec says "
            f"0x{ref.sha256}",
            hint="the store returned other bytes than the task's root data set",
        )
    raw = codec.read_safetensors(data, max_bytes=MAX_ROOT_BYTES)
    if raw.metadata.get(codec.K_KIND) != ROOT_KIND or set(raw.tensors) != {"x", "y"}:
        raise FormatError(
            f"not a root-data file: expected tensors x, y and {codec.K_KIND}={ROOT_KIND}",
            hint="write it with fedledger.protocol.reference.encode_root_data",
        )
    x, y = raw.tensors["x"], raw.tensors["y"]
    if x.dtype != np.float32 or y.dtype != np.int64:
        raise FormatError("root data: x must be F32 and y I64")
    _check(x, y)
    if ref is not None and int(y.shape[0]) != ref.samples:
        raise FormatError(f"root data holds {y.shape[0]} samples, the task spec says {ref.samples}")
    return RootData(np.asarray(x), np.asarray(y))


def _check(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or y.shape[0] < 1:
        raise FormatError(f"root data: x {x.shape} and y {y.shape} must be [N, F] and [N]")
    if y.shape[0] > MAX_SAMPLES:
        raise FormatError(f"root data holds {y.shape[0]} samples, at most {MAX_SAMPLES}")
    if not np.isfinite(x).all() or int(y.min()) < 0:
        raise FormatError("root data: x must be finite and labels non-negative")


# --------------------------------------------------------------------------- fixed-point MLP


def _quantize(a: F64, bits: int) -> tuple[F64, int]:
    """``(q, e)`` with ``q = rint(a * 2**-e)`` integers ``|q| <= 2**bits`` (float64), exact."""
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    if peak == 0.0:
        return np.zeros_like(a), 0
    e = math.frexp(peak)[1] - bits
    return np.rint(np.ldexp(a, -e)), e


@dataclass(frozen=True)
class _Layer:
    weight: str
    bias: str | None
    fan_in: int
    fan_out: int


@dataclass(frozen=True)
class Network:
    """A chain of linear layers with ReLU between them, as laid out in the model's tensors."""

    layers: tuple[_Layer, ...]
    layout: agg.TensorLayout

    @classmethod
    def of(cls, model: Mapping[str, np.ndarray], spec_model: object = None) -> Network:
        """Read the chain from the model's tensors; ConfigError if it is not one."""
        _check_model_kind(spec_model)
        layout = agg.TensorLayout.of(model)
        prefixes: dict[str, dict[str, tuple[int, ...]]] = {}
        for name, shape in zip(layout.names, layout.shapes, strict=True):
            prefix, _, leaf = name.rpartition(".")
            if leaf not in ("weight", "bias"):
                raise ConfigError(
                    f"root-data screening evaluates chains of linear layers; tensor {name!r} "
                    "is neither a weight nor a bias",
                    hint="remove root_data from the task spec, or use an MLP model",
                )
            prefixes.setdefault(prefix, {})[leaf] = shape
        layers: list[_Layer] = []
        for prefix in sorted(prefixes, key=_natural):  # net.2 before net.10
            parts = prefixes[prefix]
            shape = parts.get("weight", ())
            w, b = f"{prefix}.weight", f"{prefix}.bias"
            if len(shape) != 2 or parts.get("bias", (shape[0],)) != (shape[0],):
                raise ConfigError(
                    f"root-data screening evaluates chains of linear layers; {prefix!r} holds "
                    f"{dict(parts)}, not a linear layer's weight [out, in] and bias [out]",
                    hint="remove root_data from the task spec, or use an MLP model",
                )
            if layers and layers[-1].fan_out != shape[1]:
                raise ConfigError(f"layer {w!r} takes {shape[1]} inputs, not {layers[-1].fan_out}")
            if shape[1] > MAX_FAN_IN:
                raise ConfigError(f"layer {w!r} has {shape[1]} inputs, at most {MAX_FAN_IN}")
            has_bias = "bias" in parts
            layers.append(_Layer(w, b if has_bias else None, int(shape[1]), int(shape[0])))
        if not layers:
            raise ConfigError("root-data screening needs a model with at least one layer")
        return cls(tuple(layers), layout)

    def _params(self, flat: F64) -> list[tuple[F64, F64 | None]]:
        out = []
        for layer in self.layers:
            k = self.layout.names.index(layer.weight)
            off, shape = self.layout.offsets[k], self.layout.shapes[k]
            w = flat[off : off + shape[0] * shape[1]].reshape(shape)
            b = None
            if layer.bias is not None:
                kb = self.layout.names.index(layer.bias)
                ob = self.layout.offsets[kb]
                b = flat[ob : ob + shape[0]]
            out.append((w, b))
        return out

    def _forward(self, flat: F64, x: F64) -> tuple[list[tuple[F64, int]], list[F64], F64]:
        """Quantized inputs of each layer, pre-activations and logits (float64, exact)."""
        inputs: list[tuple[F64, int]] = []
        pre: list[F64] = []
        a, ea = _quantize(x, ACT_BITS)
        params = self._params(flat)
        z = np.zeros((x.shape[0], 0))
        for k, (w, b) in enumerate(params):
            inputs.append((a, ea))
            wq, ew = _quantize(w, WEIGHT_BITS)
            z = np.ldexp(a @ wq.T, ea + ew)  # exact integers, then an exact power-of-two scale
            if b is not None:
                z = z + b
            pre.append(z)
            if k + 1 < len(params):
                a, ea = _quantize(np.maximum(z, 0.0), ACT_BITS)
        return inputs, pre, z

    def evaluate(self, flat: F64, root: RootData) -> tuple[float, float]:
        """``(cross-entropy, accuracy)`` of the model ``flat`` (float64, the model's layout) on
        ``root``; deterministic to the bit."""
        _, _, z = self._forward(flat, root.x.astype(np.float64))
        loss, correct, _ = _cross_entropy(z, root.y)
        return loss, correct / root.samples

    def descent(self, flat: F64, root: RootData) -> F64:
        """``-grad`` of the mean cross-entropy at ``flat`` (float64, the model's layout), exact up
        to the fixed-point quantization described in the module docstring."""
        x = root.x.astype(np.float64)
        inputs, pre, z = self._forward(flat, x)
        _, _, dz = _cross_entropy(z, root.y)
        n = root.samples
        grad = np.zeros(self.layout.size)
        params = self._params(flat)
        d, ed = _quantize(dz, ACT_BITS)  # integers at scale 2**ed
        for k in range(len(params) - 1, -1, -1):
            layer = self.layers[k]
            a, ea = inputs[k]
            kw = self.layout.names.index(layer.weight)
            ow = self.layout.offsets[kw]
            # |d| <= 2**16, |a| <= 2**16: sums over N <= 2**16 samples stay below 2**53
            gw = np.ldexp(d.T @ a, ed + ea)
            grad[ow : ow + gw.size] = gw.reshape(-1)
            if layer.bias is not None:
                kb = self.layout.names.index(layer.bias)
                ob = self.layout.offsets[kb]
                grad[ob : ob + layer.fan_out] = np.ldexp(d.sum(axis=0), ed)  # exact integers
            if k:
                wq, ew = _quantize(params[k][0], WEIGHT_BITS)
                back = np.ldexp(d @ wq, ed + ew)  # |d| <= 2**16, fan_out <= 2**16: exact
                back[pre[k - 1] <= 0.0] = 0.0
                d, ed = _quantize(back, ACT_BITS)
        return np.multiply(grad, -1.0 / n)


def _natural(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in name.split(".")]


_LN2 = 0.6931471805599453
_EXP_TERMS = 14
_LOG_TERMS = 18


def exp_nonpositive(x: F64) -> F64:
    """``exp(x)`` for ``x <= 0``, bit-reproducible: ``2**n * exp(f ln 2)`` with the integer
    ``n = floor(x / ln 2)`` applied by ``ldexp`` (exact) and ``exp(g)``, ``g`` in
    ``[0, ln 2)``, by a Taylor polynomial in Horner form -- a fixed sequence of correctly
    rounded IEEE-754 operations, where a libm's ``exp`` may differ in the last bit."""
    t = np.maximum(x, -700.0) * (1.0 / _LN2)
    n = np.floor(t)
    g = (t - n) * _LN2
    p = np.full_like(g, 1.0 / math.factorial(_EXP_TERMS))
    for k in range(_EXP_TERMS - 1, -1, -1):
        p = p * g + 1.0 / math.factorial(k)
    return np.ldexp(p, n.astype(np.int64))


def log_positive(x: F64) -> F64:
    """``log(x)`` for ``x > 0``, bit-reproducible: ``x = m 2**e`` (``frexp``, exact) and
    ``log m = 2 atanh((m - 1) / (m + 1))`` by its series, a fixed sequence of IEEE-754
    operations."""
    m, e = np.frexp(x)
    y = (m - 1.0) / (m + 1.0)
    y2 = y * y
    p = np.full_like(y, 1.0 / (2 * _LOG_TERMS + 1))
    for k in range(_LOG_TERMS - 1, -1, -1):
        p = p * y2 + 1.0 / (2 * k + 1)
    return 2.0 * y * p + e * _LN2


def _cross_entropy(z: F64, y: npt.NDArray[np.int64]) -> tuple[float, int, F64]:
    """Mean cross-entropy, correct count (argmax, ties to the lowest class), and
    ``softmax(z) - onehot(y)`` (the gradient of the summed loss by the logits)."""
    n, c = z.shape
    if int(y.max()) >= c:
        raise ConfigError(f"root data has label {int(y.max())}, the model has {c} classes")
    rows = np.arange(n)
    top = np.max(z, axis=1)  # exact in any order
    e = exp_nonpositive(z - top[:, None])
    total = e[:, 0].copy()
    for j in range(1, c):  # column by column: a fixed order of additions
        total = total + e[:, j]
    per = log_positive(total) + top - z[rows, y]
    grad = e / total[:, None]
    grad[rows, y] -= 1.0
    correct = int(np.count_nonzero(np.argmax(z, axis=1) == y))
    return math.fsum(per.tolist()) / n, correct, grad


_RELU_BUILTINS = ("mlp_digits", "mlp_wide", "logreg_breast_cancer")


def _check_model_kind(spec_model: object) -> None:
    if spec_model is None:
        return
    if isinstance(spec_model, str):
        if spec_model in _RELU_BUILTINS:
            return
        raise ConfigError(
            f"root-data screening evaluates ReLU MLPs; model {spec_model!r} is not a built-in "
            f"one of {', '.join(_RELU_BUILTINS)}",
            hint="remove root_data from the task spec, or describe the model as an MLP",
        )
    mlp = isinstance(spec_model, Mapping) and spec_model.get("kind") == "mlp"
    if mlp and isinstance(spec_model, Mapping) and spec_model.get("activation", "relu") == "relu":
        return
    raise ConfigError(
        "root-data screening evaluates ReLU MLPs: the task's model must be "
        '{"kind": "mlp"} with the relu activation',
        hint="remove root_data from the task spec, or describe the model as an MLP",
    )


@dataclass(frozen=True)
class RootMeasure:
    """What the screen learns from the root data in one round."""

    network: Network
    root: RootData
    ref: RootDataRef | None
    global_flat: F64
    base_loss: float
    base_accuracy: float
    reference: npt.NDArray[np.float32]
    """The reference update (FLTrust's server update), float32 in the model's layout."""

    @classmethod
    def of(
        cls,
        model: Mapping[str, np.ndarray],
        root: RootData,
        ref: RootDataRef | None = None,
        spec_model: object = None,
        *,
        steps: int = 12,
        lr: float = 0.5,
    ) -> RootMeasure:
        """Measure the global ``model`` on ``root``: its loss, and the reference update of
        ``steps`` full-batch gradient steps at ``lr`` (each step exact, so the same bits on
        every machine)."""
        net = Network.of(model, spec_model)
        if root.x.shape[1] != net.layers[0].fan_in:
            raise ConfigError(
                f"root data has {root.x.shape[1]} features, the model takes {net.layers[0].fan_in}"
            )
        vec, _ = agg.flatten(model, net.layout)
        g = vec.astype(np.float64)
        loss, acc = net.evaluate(g, root)
        w = g.copy()
        for _ in range(steps):
            w = w + lr * net.descent(w, root)
        r = (w - g).astype(np.float32)
        return cls(net, root, ref, g, loss, acc, r)

    def loss_change(self, delta: npt.NDArray[np.float32]) -> float:
        """``L(global + delta) - L(global)`` on the root data (negative: the update helps)."""
        loss, _ = self.network.evaluate(self.global_flat + delta.astype(np.float64), self.root)
        return loss - self.base_loss

    def label(self) -> str:
        """How the reasons name the data: its spec name, or its CID."""
        if self.ref is None:
            return f"root data ({self.root.samples} samples)"
        return f"root data {self.ref.name or self.ref.cid} ({self.root.samples} samples)"


def measure_all(measure: RootMeasure, deltas: Sequence[npt.NDArray[np.float32]]) -> list[float]:
    """Each update's root loss change, in order."""
    return [measure.loss_change(d) for d in deltas]


_CACHE: dict[str, RootData] = {}
_CACHE_MAX = 8


def fetch_root_data(store: ContentStore, ref: RootDataRef) -> RootData:
    """The task's root data set from the content store (checked against ``ref``), cached by
    CID.  Raises :class:`RootDataUnavailable` when it cannot be read, FormatError when it is
    not the spec's."""
    key = f"{ref.cid}:{ref.sha256}"
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    try:
        data = store.get(ref.cid, max_bytes=MAX_ROOT_BYTES)
    except FedledgerError as exc:
        raise RootDataUnavailable(
            f"the task's root data set {ref.cid} cannot be fetched: {exc}",
            hint="validators judge with the task's root data: import it into this node's store "
            "(`fedledger store import`) or make its CID reachable",
        ) from exc
    root = decode_root_data(data, ref)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = root
    return root


def measure_round(
    store: ContentStore, spec: TaskSpec, model: Mapping[str, np.ndarray]
) -> RootMeasure | None:
    """The round's root-data measurements, or ``None`` when the task names no root data."""
    ref = spec.root_data_ref()
    if ref is None:
        return None
    lr = ref.lr if ref.lr is not None else spec.training.lr
    return RootMeasure.of(
        model, fetch_root_data(store, ref), ref, spec.model, steps=ref.steps, lr=lr
    )


class RootDataUnavailable(StoreError):
    """The task's root data set cannot be fetched: no judge may screen the round without it."""
