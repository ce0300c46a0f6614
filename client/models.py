"""Built-in models, user models by ``module:factory``, and the model <-> numpy bridge.

A task names its model in its spec; every contributor and validator must build the *same*
architecture with the *same* initial weights, so :func:`build_model` seeds torch's generator
around the factory call (without disturbing the caller's global RNG state).

Tensors cross process and file boundaries as ``dict[str, np.ndarray]`` (float32, C-contiguous,
names in ``state_dict`` order; see ``docs/interfaces.md``).  :func:`state_to_numpy` and
:func:`numpy_to_state` are the only two places that convert, and the second is strict: an update
whose names or shapes do not fit the model is a :class:`~client.errors.FormatError`, never a
silent partial load.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from client.errors import ConfigError, FormatError

Tensors = dict[str, NDArray[np.float32]]

__all__ = [
    "MLP",
    "ModelSpec",
    "Tensors",
    "available_models",
    "build_model",
    "count_parameters",
    "numpy_to_state",
    "register_model",
    "state_to_numpy",
]


class MLP(nn.Module):
    """A multi-layer perceptron with ReLU between layers; logits out.

    ``hidden=()`` makes it a linear model, i.e. multinomial logistic regression.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what it is for."""

    name: str
    factory: Callable[..., nn.Module]
    description: str
    dataset: str | None = None


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, description: str, dataset: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory under ``name`` so tasks can refer to it by that name."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, factory, description, dataset)
        return factory

    return decorate


@register_model("mlp_digits", description="64-64-10 MLP (4,810 parameters)", dataset="digits")
def mlp_digits(
    in_features: int = 64, hidden: int = 64, n_classes: int = 10, depth: int = 1
) -> nn.Module:
    return MLP(in_features, [hidden] * depth, n_classes)


@register_model(
    "mlp_wide",
    description="64-2048-2048-10 MLP (4,349,962 parameters), for benchmarks of ~17 MB updates",
    dataset="digits",
)
def mlp_wide(
    in_features: int = 64, hidden: int = 2048, n_classes: int = 10, depth: int = 2
) -> nn.Module:
    return MLP(in_features, [hidden] * depth, n_classes)


@register_model(
    "logreg_breast_cancer",
    description="logistic regression, 30 features -> 2 logits (62 parameters)",
    dataset="breast_cancer",
)
def logreg_breast_cancer(in_features: int = 30, n_classes: int = 2) -> nn.Module:
    # Two logits under softmax are logistic regression; keeping the multi-class form lets one
    # cross-entropy training loop serve every built-in model.
    return MLP(in_features, [], n_classes)


def available_models() -> dict[str, ModelSpec]:
    """The registered models, by name."""
    return dict(_REGISTRY)


def _load_module(module_ref: str) -> object:
    """Import ``package.module``, or load a ``path/to/file.py`` directly."""
    if module_ref.endswith(".py"):
        path = Path(module_ref).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"model file {module_ref!r} does not exist")
        mod_name = f"_fedledger_user_model_{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load model file {module_ref!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise ConfigError(f"model file {module_ref!r} failed to load: {exc!r}") from exc
        return module
    try:
        return importlib.import_module(module_ref)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import model module {module_ref!r}: {exc}",
            hint="is the package installed, or its directory on PYTHONPATH?",
        ) from exc


def _resolve_factory(name_or_factory: str) -> Callable[..., nn.Module]:
    spec = _REGISTRY.get(name_or_factory)
    if spec is not None:
        return spec.factory
    if ":" not in name_or_factory:
        raise ConfigError(
            f"unknown model {name_or_factory!r}",
            hint=f"use one of {', '.join(sorted(_REGISTRY))} or 'package.module:factory'",
        )
    module_ref, _, attr = name_or_factory.rpartition(":")
    if not module_ref or not attr:
        raise ConfigError(f"model reference {name_or_factory!r} must be 'package.module:factory'")
    module = _load_module(module_ref)
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"module {module_ref!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ConfigError(f"{name_or_factory!r} is not callable")
    return factory


def build_model(name_or_factory: str, *, seed: int = 0, **kwargs: object) -> nn.Module:
    """Build a model by registry name or ``package.module:factory`` (or ``file.py:factory``).

    The factory is called with ``kwargs`` while torch's CPU generator is seeded with ``seed``;
    the caller's RNG state is restored afterwards, so building a model has no side effect on
    later randomness.  Same name, kwargs and seed give bit-identical weights.
    """
    factory = _resolve_factory(name_or_factory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"model factory {name_or_factory!r} rejected {kwargs}: {exc}"
            ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model factory {name_or_factory!r} returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def build_architecture(name_or_factory: str, **kwargs: object) -> nn.Module:
    """The model's architecture with *uninitialised* weights, for a caller that loads weights
    next (a contributor loading the global model): the factory runs on torch's ``meta`` device
    and the tensors are then allocated without the random initialisation, which for a
    4.3M-parameter MLP is most of the cost of building it.  A factory that cannot run on the
    meta device, or whose module holds state that loading its ``state_dict`` would not set
    (a non-persistent buffer), is built normally."""
    try:
        with torch.device("meta"):
            model = build_model(name_or_factory, seed=0, **kwargs)
    except (RuntimeError, NotImplementedError):
        return build_model(name_or_factory, seed=0, **kwargs)
    loaded = set(model.state_dict())
    if any(name not in loaded for name, _ in model.named_buffers()):
        return build_model(name_or_factory, seed=0, **kwargs)
    return model.to_empty(device="cpu")


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


def numpy_to_state(module: nn.Module, tensors: Mapping[str, np.ndarray]) -> None:
    """Load ``tensors`` into ``module`` in place; names and shapes must match exactly.

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
