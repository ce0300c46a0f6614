"""Building a task's model (from data, or from a factory this node allowed) and the
model <-> numpy bridge.

**No code from content.**  A task names its model as data (:mod:`fedledger.learning.architecture`: a
built-in name or a layer description), and fedledger's own code here builds it.  A user's own
``package.module:factory`` is imported only on a node whose operator allowed that exact name
(``--allow-model custom_model:make_model`` on ``train``, ``serve``, ``verify`` and ``task
create``, or ``FEDLEDGER_ALLOW_MODELS=custom_model:make_model,…``); anywhere else
:func:`build_task_model` raises :class:`~fedledger.errors.ModelNotAllowed` before anything is
imported.  Nothing a spec, an event or a file names is ever imported, evaluated or unpickled.

A factory is named by an importable module, never a path: ``m2.py:make_model`` means a file
on one machine only, so it is refused; put the file's directory on ``PYTHONPATH`` (or install
it) and name ``m2:make_model``.  The operator allows the same ``module:factory`` string the
spec holds.

**The pin.**  The spec's ``model_sha256`` pins the architecture (a description's canonical
sha256, or a factory module's source sha256); :func:`build_task_model` checks it before
building, and a factory's source is hashed *before* its module is imported, so every node
proves it builds the same model (:class:`~fedledger.errors.ModelPinMismatch` otherwise).

Every contributor and validator must build the *same* architecture with the *same* initial
weights, so building seeds torch's generator (without disturbing the caller's global RNG
state).

Tensors cross process and file boundaries as ``dict[str, np.ndarray]`` (float32, C-contiguous,
names in ``state_dict`` order; see ``docs/interfaces.md``).  :func:`state_to_numpy` and
:func:`numpy_to_state` are the only two places that convert, and the second is strict: an update
whose names or shapes do not fit the model is a :class:`~fedledger.errors.FormatError`, never a
silent partial load.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedledger.errors import ConfigError, FormatError, ModelPinMismatch
from fedledger.learning import architecture as arch

if TYPE_CHECKING:
    from fedledger.protocol.taskspec import TaskSpec

Tensors = dict[str, NDArray[np.float32]]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

__all__ = [
    "MLP",
    "Tensors",
    "available_models",
    "build_architecture",
    "build_model",
    "build_task_architecture",
    "build_task_model",
    "count_parameters",
    "numpy_to_state",
    "state_to_numpy",
]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


class MLP(nn.Module):
    """A multi-layer perceptron with one activation between layers; logits out.

    ``hidden=()`` makes it a linear model, i.e. multinomial logistic regression.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class Layered(nn.Module):
    """A ``sequential`` description's layers, applied in order (tensors named ``net.N.*``)."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _layer(layer: Any) -> nn.Module:
    if isinstance(layer, arch.Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, arch.Conv2d):
        return nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            bias=layer.bias,
        )
    if isinstance(layer, arch.MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, stride=layer.stride)
    if isinstance(layer, arch.Activation):
        return _ACTIVATIONS[layer.type]()
    if isinstance(layer, arch.Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, arch.Flatten):
        return nn.Flatten(1)
    if isinstance(layer, arch.Unflatten):
        return nn.Unflatten(1, tuple(layer.shape))
    raise AssertionError(f"no builder for layer {layer!r}")  # architecture.Layer is closed


def _from_description(desc: arch.MLPDescription | arch.SequentialDescription) -> nn.Module:
    if isinstance(desc, arch.MLPDescription):
        return MLP(desc.in_features, desc.hidden, desc.out_features, desc.activation)
    return Layered([_layer(layer) for layer in desc.layers])


def available_models() -> dict[str, arch.Builtin]:
    """The built-in models, by name."""
    return dict(arch.BUILTINS)


def _import_factory(f: arch.Factory) -> Callable[..., nn.Module]:
    """Import an admitted factory's module (its source already located and hashed) and check
    that the file imported is the file that was pinned."""
    try:
        module = importlib.import_module(f.ref.module)
    except Exception as exc:  # the operator's own code: any failure is a setup problem
        raise ConfigError(
            f"model module {f.ref.module!r} failed to import: {type(exc).__name__}: {exc}",
            hint="is the package installed, or its directory on PYTHONPATH?",
        ) from exc
    file = getattr(module, "__file__", None)
    if file is None or Path(file).resolve() != f.source:
        raise ModelPinMismatch(
            f"importing {f.ref.module!r} loaded another file than the one whose source was hashed",
            hint="remove the other copy of the module from sys.path",
        )
    factory = getattr(module, f.ref.attr, None)
    if factory is None:
        raise ConfigError(f"module {f.ref.module!r} has no attribute {f.ref.attr!r}")
    if not callable(factory):
        raise ConfigError(f"{f.ref.ref!r} is not callable")
    return factory  # type: ignore[no-any-return]


def build_admitted(admitted: arch.Admitted, *, seed: int = 0) -> nn.Module:
    """Build what :func:`fedledger.learning.architecture.admit` admitted, with torch's CPU generator seeded
    by ``seed``; the caller's RNG state is restored afterwards, so building a model has no side
    effect on later randomness.  Same model and seed give bit-identical weights."""
    factory = _import_factory(admitted) if isinstance(admitted, arch.Factory) else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if factory is None:
            assert isinstance(admitted, arch.Described)
            return _from_description(admitted.description)
        assert isinstance(admitted, arch.Factory)
        try:
            model = factory(**admitted.kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"model factory {admitted.ref.ref!r} rejected {dict(admitted.kwargs)}: {exc}"
            ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model factory {admitted.ref.ref!r} returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def build_model(
    model: str | Mapping[str, Any],
    *,
    seed: int = 0,
    allow: Iterable[str] = (),
    pin: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by built-in name (with ``kwargs``), description, or ``module:factory``
    (only if listed in ``allow``; checked against ``pin`` when one is given).

    For a task, use :func:`build_task_model`: it takes everything from the spec and requires
    a factory's pin.
    """
    admitted = arch.admit(
        model, kwargs, pinned=pin, allow=arch.allow_list(allow), require_pin=False
    )
    return build_admitted(admitted, seed=seed)


def build_task_model(
    spec: TaskSpec, *, allow: Iterable[str] = (), seed: int | None = None
) -> nn.Module:
    """The task's model with its initial weights (seeded by the spec's ``seed``), after the
    spec's pin is checked.  Raises :class:`~fedledger.errors.ModelNotAllowed` before anything is
    imported when the spec names a factory that ``allow`` does not list."""
    admitted = arch.admit_spec(spec, arch.allow_list(allow))
    return build_admitted(admitted, seed=spec.seed if seed is None else seed)


def _architecture(admitted: arch.Admitted) -> nn.Module:
    """The model with *uninitialised* weights, for a caller that loads weights next (a
    contributor loading the global model): the builder runs on torch's ``meta`` device and the
    tensors are then allocated without the random initialisation, which for a 4.3M-parameter
    MLP is most of the cost of building it.  A factory that cannot run on the meta device, or
    whose module holds state that loading its ``state_dict`` would not set (a non-persistent
    buffer), is built normally."""
    try:
        with torch.device("meta"):
            model = build_admitted(admitted, seed=0)
    except (RuntimeError, NotImplementedError):
        return build_admitted(admitted, seed=0)
    loaded = set(model.state_dict())
    if any(name not in loaded for name, _ in model.named_buffers()):
        return build_admitted(admitted, seed=0)
    return model.to_empty(device="cpu")


def build_architecture(
    model: str | Mapping[str, Any],
    *,
    allow: Iterable[str] = (),
    pin: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """:func:`build_model`'s architecture with uninitialised weights (see :func:`_architecture`)."""
    admitted = arch.admit(
        model, kwargs, pinned=pin, allow=arch.allow_list(allow), require_pin=False
    )
    return _architecture(admitted)


def build_task_architecture(spec: TaskSpec, *, allow: Iterable[str] = ()) -> nn.Module:
    """The task's architecture, pin checked, weights uninitialised (the global model goes in
    next)."""
    return _architecture(arch.admit_spec(spec, arch.allow_list(allow)))


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def state_to_numpy(module: nn.Module) -> Tensors:
    """Copy a module's ``state_dict`` out as float32 numpy arrays, in ``state_dict`` order.

    Buffers are included (a model file must restore them too); integer buffers such as
    BatchNorm's ``num_batches_tracked`` become float32, exact below 2**24.
    """
    out: Tensors = {}
    for name, tensor in module.state_dict().items():
        array = tensor.detach().to("cpu", torch.float32).numpy()
        out[name] = np.array(array, dtype=np.float32, order="C", copy=True)
    return out


def _iter_mismatches(
    expected: Mapping[str, torch.Tensor], tensors: Mapping[str, np.ndarray]
) -> Iterator[str]:
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing:
        yield f"missing {missing}"
    if unexpected:
        yield f"unexpected {unexpected}"
    for name, tensor in expected.items():
        if name in tensors:
            array = tensors[name]
            if not isinstance(array, np.ndarray):
                yield f"{name}: {type(array).__name__} is not a numpy array"
            elif tuple(array.shape) != tuple(tensor.shape):
                yield f"{name}: shape {tuple(array.shape)} != {tuple(tensor.shape)}"
            elif array.dtype.kind not in "fiub":
                yield f"{name}: dtype {array.dtype} is not numeric"


def numpy_to_state(module: ModuleT, tensors: Mapping[str, np.ndarray]) -> ModuleT:
    """Load ``tensors`` into ``module`` in place and return it (on its device, in its dtypes):
    ``net = numpy_to_state(MyNet(), tensors)``; names and shapes must match exactly.

    Raises :class:`FormatError` naming every missing, unexpected or misshapen tensor, before
    anything is written, so a bad update never leaves a half-loaded model behind.
    """
    state = module.state_dict()
    problems = list(_iter_mismatches(state, tensors))
    if problems:
        raise FormatError(
            "tensors do not match the model: " + "; ".join(problems),
            hint="the update was made for another model architecture",
        )
    with torch.no_grad():
        for name, target in state.items():
            source = torch.from_numpy(np.asarray(tensors[name], order="C"))
            target.copy_(source.to(target.dtype))
    return module
