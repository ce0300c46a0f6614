"""A task's model as data: what a spec's ``model`` may say, its bounds, its pin, and which user
factories this node runs.  Owner of the task-spec fields ``model``, ``model_kwargs`` and
``model_sha256`` (:mod:`fedledger.protocol.taskspec`).

Nothing here imports torch, and nothing here imports, evaluates or unpickles anything a spec
names: this module only reads data (and, for a factory this node's operator allowed, hashes its
source file).  So the indexer, the projections, the API and ``fedledger train`` can decide what
a task's model is, and whether this node will build it, before any code runs.
:mod:`fedledger.learning.models` builds what :func:`admit` admitted.

A spec names its model in one of three ways:

* a **built-in name** (``mlp_digits``, ``mlp_wide``, ``logreg_breast_cancer``; see
  :data:`BUILTINS`) with integer ``model_kwargs`` such as ``{"hidden": 128}``: shorthand for
  a description;
* a **description** (then ``model_kwargs`` is empty), built by fedledger's own code::

      {"kind": "mlp", "in_features": 64, "hidden": [64], "out_features": 10,
       "activation": "relu"}
      {"kind": "sequential", "layers": [
          {"type": "unflatten", "shape": [1, 8, 8]},
          {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
          {"type": "relu"}, {"type": "flatten"},
          {"type": "linear", "in_features": 144, "out_features": 10}]}

  Layer types: ``linear``, ``conv2d``, ``maxpool2d``, ``relu``, ``tanh``, ``sigmoid``,
  ``gelu``, ``dropout``, ``flatten``, ``unflatten``.  Bounded before a tensor is allocated: at
  most :data:`MAX_LAYERS` layers, widths up to :data:`MAX_WIDTH`, channels up to
  :data:`MAX_CHANNELS`, kernels up to :data:`MAX_KERNEL` and :data:`MAX_PARAMETERS` parameters
  in all, counted from the description;
* ``package.module:factory``: a user's own code.  A node imports it only if its operator listed
  that exact name (``--allow-model NAME`` or ``FEDLEDGER_ALLOW_MODELS=NAME,…``); everywhere
  else the task is refused with :class:`~fedledger.errors.ModelNotAllowed`.  The module must be
  importable (installed, or its directory on ``PYTHONPATH``): a file path such as
  ``m2.py:make_model`` names a file on one machine, not a model every node can find, and is
  refused with the name to use instead (``m2:make_model``).

**The pin.**  ``model_sha256`` fixes the architecture: for a built-in name or a description,
the sha256 of the description's canonical JSON (:func:`canonical_bytes`, defaults filled in);
for a factory, the sha256 of its module's source file (the file named by ``module``; what that
file imports is the operator's to vouch for).  :func:`pin` computes it when a task is created;
every node checks it in :func:`admit` before building, and refuses a mismatch with
:class:`~fedledger.errors.ModelPinMismatch`, so every node proves it builds the same model.  A
factory's source is located and hashed *before* its module is imported.  A spec without a pin
(written before pins) is accepted for built-in names and descriptions, never for a factory.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fedledger.errors import ConfigError, ModelNotAllowed, ModelPinMismatch

if TYPE_CHECKING:
    from fedledger.protocol.taskspec import TaskSpec

__all__ = [
    "BUILTINS",
    "MAX_LAYERS",
    "MAX_PARAMETERS",
    "Admitted",
    "Builtin",
    "Described",
    "Description",
    "Factory",
    "FactoryRef",
    "admit",
    "admit_spec",
    "allow_list",
    "canonical_bytes",
    "describe",
    "locate_source",
    "parameter_count",
    "pin",
    "tensor_shapes",
]

MAX_LAYERS = 64
MAX_WIDTH = 65_536
MAX_CHANNELS = 4_096
MAX_KERNEL = 15
MAX_PARAMETERS = 20_000_000
"""80 MB of float32: four times the largest model the benchmarks train."""
MAX_REF_LENGTH = 200

# -- descriptions ---------------------------------------------------------------------------

Width = Annotated[int, Field(strict=True, ge=1, le=MAX_WIDTH)]
Channels = Annotated[int, Field(strict=True, ge=1, le=MAX_CHANNELS)]
Kernel = Annotated[int, Field(strict=True, ge=1, le=MAX_KERNEL)]
ActivationName = Literal["relu", "tanh", "sigmoid", "gelu"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Linear(_Part):
    type: Literal["linear"]
    in_features: Width
    out_features: Width
    bias: bool = True


class Conv2d(_Part):
    type: Literal["conv2d"]
    in_channels: Channels
    out_channels: Channels
    kernel_size: Kernel
    stride: Kernel = 1
    padding: Annotated[int, Field(strict=True, ge=0, le=MAX_KERNEL)] = 0
    bias: bool = True


class MaxPool2d(_Part):
    type: Literal["maxpool2d"]
    kernel_size: Kernel
    stride: Kernel | None = None


class Activation(_Part):
    type: ActivationName


class Dropout(_Part):
    type: Literal["dropout"]
    p: float = Field(default=0.5, ge=0.0, lt=1.0)


class Flatten(_Part):
    type: Literal["flatten"]


class Unflatten(_Part):
    """``(N, F) -> (N, *shape)``, e.g. flat 64 features into a 1x8x8 image for a conv2d."""

    type: Literal["unflatten"]
    shape: list[Width] = Field(min_length=1, max_length=3)


Layer = Annotated[
    Linear | Conv2d | MaxPool2d | Activation | Dropout | Flatten | Unflatten,
    Field(discriminator="type"),
]


class MLPDescription(_Part):
    """Linear layers with one activation between them; input flattened, logits out."""

    kind: Literal["mlp"]
    in_features: Width
    hidden: list[Width] = Field(default_factory=list, max_length=MAX_LAYERS)
    out_features: Width
    activation: ActivationName = "relu"


class SequentialDescription(_Part):
    """A layer list, applied in order."""

    kind: Literal["sequential"]
    layers: list[Layer] = Field(min_length=1, max_length=MAX_LAYERS)


Description = Annotated[MLPDescription | SequentialDescription, Field(discriminator="kind")]
_DESCRIPTION: TypeAdapter[MLPDescription | SequentialDescription] = TypeAdapter(Description)


def canonical_bytes(desc: MLPDescription | SequentialDescription) -> bytes:
    """The description as canonical JSON (defaults filled in, sorted keys, compact): what the
    pin hashes."""
    return json.dumps(desc.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def parameter_count(desc: MLPDescription | SequentialDescription) -> int:
    """Scalar parameters of the described model, counted without building it."""
    if isinstance(desc, MLPDescription):
        sizes = [desc.in_features, *desc.hidden, desc.out_features]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    total = 0
    for layer in desc.layers:
        if isinstance(layer, Linear):
            total += layer.in_features * layer.out_features + layer.out_features * layer.bias
        elif isinstance(layer, Conv2d):
            k2 = layer.kernel_size * layer.kernel_size
            total += layer.out_channels * (layer.in_channels * k2 + layer.bias)
    return total


def tensor_shapes(desc: MLPDescription | SequentialDescription) -> dict[str, tuple[int, ...]]:
    """The ``state_dict`` names and shapes :mod:`fedledger.learning.models` builds for ``desc``, without
    building it (layer ``i`` of the list is ``net.i``)."""
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(desc, MLPDescription):
        sizes = [desc.in_features, *desc.hidden, desc.out_features]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            out[f"net.{2 * i}.weight"] = (b, a)
            out[f"net.{2 * i}.bias"] = (b,)
        return out
    for i, layer in enumerate(desc.layers):
        if isinstance(layer, Linear):
            out[f"net.{i}.weight"] = (layer.out_features, layer.in_features)
        elif isinstance(layer, Conv2d):
            k = layer.kernel_size
            out[f"net.{i}.weight"] = (layer.out_channels, layer.in_channels, k, k)
        else:
            continue
        if layer.bias:
            out[f"net.{i}.bias"] = (
                layer.out_features if isinstance(layer, Linear) else layer.out_channels,
            )
    return out


def _check_layers(desc: SequentialDescription) -> None:
    """Adjacent layers must fit where the description says enough to tell."""
    features: int | None = None  # flat width after the last layer, when known
    channels: int | None = None  # channels of the image after the last layer, when known
    for i, layer in enumerate(desc.layers):
        if isinstance(layer, Linear):
            if features is not None and layer.in_features != features:
                raise ValueError(
                    f"layer {i}: linear takes {layer.in_features} features, "
                    f"the layer before gives {features}"
                )
            features, channels = layer.out_features, None
        elif isinstance(layer, Conv2d):
            if channels is not None and layer.in_channels != channels:
                raise ValueError(
                    f"layer {i}: conv2d takes {layer.in_channels} channels, "
                    f"the layer before gives {channels}"
                )
            features, channels = None, layer.out_channels
        elif isinstance(layer, Unflatten):
            size = math.prod(layer.shape)
            if features is not None and size != features:
                raise ValueError(
                    f"layer {i}: unflatten to {layer.shape} needs {size} features, "
                    f"the layer before gives {features}"
                )
            features, channels = None, layer.shape[0] if len(layer.shape) == 3 else None
        elif isinstance(layer, Flatten | MaxPool2d):
            features = None


def _shown(value: object) -> str:
    """A value from a spec, safe to put in a message: repr, at most 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_description(obj: Mapping[str, Any]) -> MLPDescription | SequentialDescription:
    """Validate a description and its bounds; :class:`ConfigError` names every problem."""
    for key in ("layers", "hidden"):  # refuse a huge list before validating its items
        items = obj.get(key)
        if isinstance(items, list) and len(items) > MAX_LAYERS:
            raise ConfigError(
                f"invalid model description: {key} has {len(items)} entries, at most "
                f"{MAX_LAYERS} are allowed"
            )
    try:
        desc = _DESCRIPTION.validate_python(dict(obj))
        if isinstance(desc, SequentialDescription):
            _check_layers(desc)
    except ValidationError as exc:
        reasons = "; ".join(
            (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "") + err["msg"]
            for err in exc.errors()[:5]
        )
        raise ConfigError(
            f"invalid model description: {reasons}",
            hint="see client/fedledger/learning/architecture.py for the layer types and their fields",
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"invalid model description: {exc}") from exc
    n = parameter_count(desc)
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"model description has {n:,} parameters, more than the {MAX_PARAMETERS:,} allowed"
        )
    return desc


# -- built-in names -------------------------------------------------------------------------


@dataclass(frozen=True)
class Builtin:
    """A built-in model: a name for an MLP description, with integer arguments."""

    name: str
    summary: str
    dataset: str | None
    defaults: Mapping[str, int]

    def describe(self, kwargs: Mapping[str, Any]) -> MLPDescription:
        unknown = sorted(set(kwargs) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"model {self.name!r} rejected {_shown(dict(kwargs))}: it takes "
                f"{', '.join(self.defaults)}"
            )
        args = {**self.defaults, **kwargs}
        bad = [k for k, v in args.items() if type(v) is not int]
        if bad:
            raise ConfigError(f"model {self.name!r} rejected {_shown(dict(kwargs))}: integers only")
        depth = args.get("depth", 0)
        if not 0 <= depth <= MAX_LAYERS:
            raise ConfigError(f"model {self.name!r}: depth must be between 0 and {MAX_LAYERS}")
        hidden = [args["hidden"]] * depth if "hidden" in args else []
        desc = parse_description(
            {
                "kind": "mlp",
                "in_features": args["in_features"],
                "hidden": hidden,
                "out_features": args["n_classes"],
            }
        )
        assert isinstance(desc, MLPDescription)
        return desc


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "mlp_digits",
            "64-64-10 MLP (4,810 parameters)",
            "digits",
            {"in_features": 64, "hidden": 64, "n_classes": 10, "depth": 1},
        ),
        Builtin(
            "mlp_wide",
            "64-2048-2048-10 MLP (4,349,962 parameters), for benchmarks of ~17 MB updates",
            "digits",
            {"in_features": 64, "hidden": 2048, "n_classes": 10, "depth": 2},
        ),
        Builtin(
            # Two logits under softmax are logistic regression; the multi-class form lets one
            # cross-entropy training loop serve every built-in model.
            "logreg_breast_cancer",
            "logistic regression, 30 features -> 2 logits (62 parameters)",
            "breast_cancer",
            {"in_features": 30, "n_classes": 2},
        ),
    )
}


# -- factories ------------------------------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_FACTORY = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}")


@dataclass(frozen=True)
class FactoryRef:
    """``package.module:factory``, syntax checked; nothing looked up or imported."""

    ref: str
    module: str
    attr: str


def parse_factory_ref(ref: str) -> FactoryRef:
    head, colon, attr = ref.rpartition(":")
    if colon and ("/" in head or "\\" in head or head.endswith(".py")):
        raise ConfigError(
            f"model reference {_shown(ref)} names a file: a task must name an importable "
            "module, so that it means the same model on every machine",
            hint=f"put the file's directory on PYTHONPATH or install it, and name "
            f"'{_shown(Path(head).stem)[1:-1]}:{_shown(attr)[1:-1]}'",
        )
    if len(ref) <= MAX_REF_LENGTH and _FACTORY.fullmatch(ref):
        return FactoryRef(ref, head, attr)
    raise ConfigError(
        f"unknown model {_shown(ref)}",
        hint=f"use a built-in name ({', '.join(BUILTINS)}), a description "
        "({'kind': 'mlp', ...}) or 'package.module:factory'",
    )


def allow_list(entries: Iterable[str]) -> frozenset[str]:
    """The factories an operator allowed, each checked to be ``package.module:factory``."""
    out = set()
    for raw in entries:
        for entry in str(raw).split(","):
            entry = entry.strip()
            if not entry:
                continue
            try:
                out.add(parse_factory_ref(entry).ref)
            except ConfigError as exc:
                raise ConfigError(
                    f"--allow-model / FEDLEDGER_ALLOW_MODELS entry {_shown(entry)} is not "
                    "'package.module:factory'",
                    hint=exc.hint
                    if "names a file" in exc.message
                    else "name the factory "
                    "exactly as the task spec does, e.g. custom_model:make_model",
                ) from exc
    return frozenset(out)


def locate_source(module: str) -> Path:
    """The file ``module`` would be imported from, found *without* executing any of it (nor
    its parent packages).  An already imported module answers with its own file."""
    loaded = sys.modules.get(module)
    origin: str | None
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
    else:
        search: list[str] | None = None
        origin = None
        parts = module.split(".")
        for i in range(len(parts)):
            name = ".".join(parts[: i + 1])
            parent = sys.modules.get(name)
            if parent is not None and i < len(parts) - 1:
                search = list(getattr(parent, "__path__", None) or [])
                continue
            # A top-level name is found by every finder on sys.meta_path (editable installs
            # too) without running anything; a submodule only in its parent's directories, so
            # that the parent package is not imported to find it.
            spec = (
                importlib.util.find_spec(name)
                if i == 0
                else importlib.machinery.PathFinder.find_spec(name, search)
            )
            if spec is None:
                raise ConfigError(
                    f"cannot find model module {module!r}",
                    hint="install it, or put its directory on PYTHONPATH",
                )
            if i < len(parts) - 1:
                search = list(spec.submodule_search_locations or [])
            origin = spec.origin
    if not origin or not Path(origin).is_file():
        raise ConfigError(
            f"cannot pin model module {module!r}: it has no source file",
            hint="a factory must live in a .py module so that its source can be pinned",
        )
    return Path(origin).resolve()


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read the source of model module: {exc.strerror}") from exc


# -- resolving, pinning, admitting ----------------------------------------------------------


@dataclass(frozen=True)
class Described:
    """A model fedledger builds from data: a built-in name or a description."""

    name: str  # the built-in name, or "description"
    description: MLPDescription | SequentialDescription
    sha256: str

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class Factory:
    """A user's factory this node's operator allowed, its source located and pinned."""

    ref: FactoryRef
    kwargs: Mapping[str, Any]
    source: Path
    sha256: str

    @property
    def label(self) -> str:
        return self.ref.ref


Admitted = Described | Factory


def describe(model: str | Mapping[str, Any], kwargs: Mapping[str, Any]) -> Described | FactoryRef:
    """What a spec's ``model`` and ``model_kwargs`` say, checked as data; nothing is looked up
    on disk and nothing is imported."""
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"model_kwargs must be a JSON object, got {type(kwargs).__name__}")
    if isinstance(model, Mapping):
        if kwargs:
            raise ConfigError(
                "model_kwargs apply to a built-in name or a factory, not to a description",
                hint="put the values in the description itself",
            )
        desc = parse_description(model)
        return Described("description", desc, hashlib.sha256(canonical_bytes(desc)).hexdigest())
    if not isinstance(model, str):
        raise ConfigError(f"model must be a name or a description, got {type(model).__name__}")
    builtin = BUILTINS.get(model)
    if builtin is not None:
        desc = builtin.describe(kwargs)
        return Described(model, desc, hashlib.sha256(canonical_bytes(desc)).hexdigest())
    return parse_factory_ref(model)


def not_allowed(ref: str) -> ModelNotAllowed:
    return ModelNotAllowed(
        f"model {ref} is not allowed on this node: allow it with --allow-model {ref} "
        f"or FEDLEDGER_ALLOW_MODELS={ref}"
    )


def pin(model: str | Mapping[str, Any], kwargs: Mapping[str, Any]) -> str:
    """The ``model_sha256`` a new task records (a factory's source is hashed, not imported)."""
    what = describe(model, kwargs)
    if isinstance(what, Described):
        return what.sha256
    return _file_sha256(locate_source(what.module))


def admit(
    model: str | Mapping[str, Any],
    kwargs: Mapping[str, Any],
    *,
    pinned: str | None,
    allow: Iterable[str] = (),
    require_pin: bool = True,
) -> Admitted:
    """Decide whether this node builds the model, before anything runs.

    Raises :class:`ConfigError` for a malformed or oversize model, :class:`ModelNotAllowed` for
    a factory the operator did not list in ``allow``, :class:`ModelPinMismatch` when the pin
    differs from what this node would build (or a factory has no pin and ``require_pin``).
    """
    what = describe(model, kwargs)
    if isinstance(what, Described):
        if pinned is not None and pinned != what.sha256:
            raise ModelPinMismatch(
                f"the task pins model architecture {pinned}, but this node's fedledger "
                f"describes {what.name!r} as {what.sha256}",
                hint="run the fedledger version the task was created with",
            )
        return what
    if what.ref not in frozenset(allow):
        raise not_allowed(what.ref)
    if pinned is None and require_pin:
        raise ModelPinMismatch(
            f"model {what.ref} is not pinned: the task spec has no model_sha256",
            hint="only a task created with its factory's source hash can name a factory "
            "(`fedledger task create --model M --allow-model M` records it)",
        )
    source = locate_source(what.module)
    digest = _file_sha256(source)
    if pinned is not None and pinned != digest:
        raise ModelPinMismatch(
            f"model {what.ref} is pinned to source sha256 {pinned}, but this node's "
            f"module {what.module!r} hashes to {digest}",
            hint="install the exact version of the module the task was created with",
        )
    return Factory(what, dict(kwargs), source, digest)


def admit_spec(spec: TaskSpec, allow: Iterable[str] = ()) -> Admitted:
    """:func:`admit` for a task's spec: the pin is required for a factory."""
    return admit(spec.model, spec.model_kwargs, pinned=spec.model_sha256, allow=allow)
