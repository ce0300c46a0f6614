"""Local training: from the current global model to a delta ``trained - global``.

A contributor's update must be reproducible: given the same global tensors, data and seed,
:meth:`LocalTrainer.train` returns bit-identical deltas, so an honest contributor can show how
an update was made and the experiments can be repeated.  That is why shuffling uses a private
``torch.Generator`` and all other randomness (dropout, a user's own ``torch.rand``) runs under a
seeded, forked global RNG that is restored afterwards.  Bit-identity holds for one machine and
one torch thread count; BLAS may sum in another order with another thread count.

Data may be numpy arrays (fast path: whole tensors, batches by index), a torch ``Dataset``
(batched by a seeded ``DataLoader``), or a ready ``DataLoader`` (used as given; its shuffling is
seeded through the global RNG when it has no generator of its own).

**Devices.**  ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``;
:func:`resolve_device`) is where the model and each batch go.  The global tensors come in and the
delta goes out as float32 numpy arrays on CPU, so the update file encoded from them is the same
bytes whatever device trained it (given the same arithmetic: a GPU may round differently).  A
device this machine does not have is a :class:`~fedledger.errors.ConfigError` saying so.  Seeding
covers CPU and CUDA random state; on MPS, dropout's random state is seeded but not restored.

**Data that does not fit.**  Features that do not fit the model's first layer and labels beyond
its outputs are :class:`~fedledger.errors.ConfigError` naming both shapes, not torch's
``mat1 and mat2 shapes cannot be multiplied``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedledger.errors import ConfigError
from fedledger.learning.models import Tensors, numpy_to_state, state_to_numpy

__all__ = [
    "CentralizedResult",
    "EpochStats",
    "LocalTrainer",
    "ProgressCallback",
    "TrainProgress",
    "TrainResult",
    "evaluate",
    "init_worker",
    "resolve_device",
    "train_centralized",
]

OptimizerName = Literal["sgd", "adam"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LabelTransform = Callable[[torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
Device = str | torch.device

_DEVICE_HINT = "use device 'cpu' (--device cpu), or run where that device is"


def resolve_device(device: Device | None) -> torch.device:
    """The torch device named by ``device`` (``None``: CPU), checked to exist on this machine.

    Raises :class:`ConfigError` for a name torch does not know, and for a CUDA or MPS device
    this machine (or this torch build) does not have."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"unknown device {device!r}", hint="use cpu, cuda, cuda:N or mps"
        ) from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if torch.version.cuda is None:
            why = f"this torch ({torch.__version__}) is built without CUDA"
        elif not torch.cuda.is_available():
            why = "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)"
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            why = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        else:
            return dev
        raise ConfigError(f"device {str(dev)!r} is not available: {why}", hint=_DEVICE_HINT)
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                "device 'mps' is not available: no Apple GPU (Metal) on this machine",
                hint=_DEVICE_HINT,
            )
        return dev
    raise ConfigError(f"device {str(dev)!r} is not supported", hint="use cpu, cuda or mps")


def _model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return torch.device("cpu") if first is None else first.device


@dataclass(frozen=True)
class _FirstLayer:
    """What a model's first weighted layer takes: ``size`` along the first of ``ndim`` sample
    dimensions (features of a linear layer, channels of a conv layer)."""

    words: str  # "64 features per sample"
    shape: str  # the X that fits: "(n, 64)"
    ndim: int
    size: int

    def takes(self, per_sample: tuple[int, ...]) -> bool:
        return len(per_sample) == self.ndim and per_sample[0] == self.size


def _first_layer_input(model: nn.Module) -> _FirstLayer | None:
    """What the model's first weighted layer takes (``None`` if it is not a plain linear or
    conv layer, or a layer before it reshapes the samples)."""
    for module in model.modules():
        if isinstance(module, nn.Flatten | nn.Unflatten):
            return None
        if isinstance(module, nn.Linear):
            n = module.in_features
            return _FirstLayer(f"{n} features per sample", f"(n, {n})", 1, n)
        if isinstance(module, nn.Conv2d):
            c = module.in_channels
            return _FirstLayer(f"{c} input channel(s)", f"(n, {c}, height, width)", 3, c)
        if any(True for _ in module.parameters(recurse=False)):
            return None
    return None


def _data_does_not_fit(exc: Exception, xb: torch.Tensor, model: nn.Module) -> ConfigError:
    """The data's sample shape against what the model's first layer takes, and what to do.
    torch's own words (``mat1 and mat2 shapes cannot be multiplied``) are given only when the
    first layer does not explain the failure."""
    per_sample = tuple(xb.shape[1:])
    got = (
        f"{per_sample[0]} features per sample"
        if len(per_sample) == 1
        else f"samples of shape {per_sample}"
    )
    first = _first_layer_input(model)
    if first is not None and not first.takes(per_sample):
        return ConfigError(
            f"the data does not fit the task's model: it has {got}, but the model's first "
            f"layer takes {first.words}",
            hint=f"give X of shape {first.shape}, the features in the order and scale the "
            "task was made for, or create a task whose model takes your data",
        )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        f"the data does not fit the task's model: it has {got} (torch: {first_line})",
        hint="give the data the task's model was made for (X of shape (n, features), the "
        "features in the task's order), or create a task whose model takes your data",
    )


def _check_labels(labels: torch.Tensor | None, outputs: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or not labels.numel():
        return
    if int(labels.min()) < 0 or int(labels.max()) >= outputs:
        raise _labels_do_not_fit(labels, outputs)


def _labels_do_not_fit(labels: torch.Tensor, outputs: int) -> ConfigError:
    low, high = int(labels.min()), int(labels.max())
    return ConfigError(
        f"the labels do not fit the model: they range from {low} to {high}, but the model has "
        f"{outputs} outputs (classes 0 to {outputs - 1})",
        hint="number the classes 0..C-1 as the task's model does, or create a task whose "
        "model has an output per class",
    )


@dataclass(frozen=True)
class TrainProgress:
    """One step of local training, as reported to a progress callback."""

    epoch: int  # 0-based
    epochs: int
    step: int  # 1-based, counted over all epochs
    total_steps: int
    loss: float  # this batch's mean loss
    epoch_done: bool


ProgressCallback = Callable[[TrainProgress], None]


@dataclass(frozen=True)
class TrainResult:
    """What local training produced: the delta to submit and how it went.

    ``loss`` is the mean training loss over the last epoch (weighted by batch size);
    ``metrics`` holds floats safe to put in update metadata (``train_accuracy``,
    ``first_epoch_loss``, ``steps``, ``seconds``).
    """

    delta: Tensors
    num_samples: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)


def init_worker(threads: int = 1) -> None:
    """Limit torch's intra-op threads; pass as ``initializer`` to a process pool.

    Simulations run one contributor per process; with torch's default of one thread per core in
    each, the processes oversubscribe the cores and run slower than one thread each.
    """
    torch.set_num_threads(threads)


class _ArrayBatches:
    """Seeded mini-batches over in-memory tensors, without DataLoader's per-sample overhead."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X = X
        self.y = y

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def labels(self) -> torch.Tensor | None:
        return self.y

    def to(self, device: torch.device) -> _ArrayBatches:
        """The same batches drawn from copies on ``device`` (copied once, not per batch)."""
        if self.X.device == device:
            return self
        return _ArrayBatches(self.X.to(device), self.y.to(device))

    def epochs(
        self, epochs: int, batch_size: int, generator: torch.Generator
    ) -> Iterator[Iterator[Batch]]:
        for _ in range(epochs):
            yield self._epoch(batch_size, generator)

    def _epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size].to(self.X.device)
            yield self.X[idx], self.y[idx]

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)


class _LoaderBatches:
    """Batches from a torch Dataset (seeded DataLoader) or a user's DataLoader."""

    def __init__(self, data: Dataset[Any] | DataLoader[Any]) -> None:
        self.data = data

    def labels(self) -> torch.Tensor | None:
        return None  # checked batch by batch

    def to(self, device: torch.device) -> _LoaderBatches:
        return self  # each batch is moved as it comes

    def __len__(self) -> int:
        dataset = self.data.dataset if isinstance(self.data, DataLoader) else self.data
        return len(dataset)  # type: ignore[arg-type]

    def _loader(self, batch_size: int, generator: torch.Generator) -> DataLoader[Any]:
        if isinstance(self.data, DataLoader):
            return self.data
        return DataLoader(self.data, batch_size=batch_size, shuffle=True, generator=generator)

    def epochs(
        self, epochs: int, batch_size: int, generator: torch.Generator
    ) -> Iterator[Iterable[Batch]]:
        loader = self._loader(batch_size, generator)
        for _ in range(epochs):
            yield loader

    def steps_per_epoch(self, batch_size: int) -> int:
        if isinstance(self.data, DataLoader):
            return len(self.data)
        return math.ceil(len(self) / batch_size)


def _as_tensors(
    X: NDArray[np.generic], y: NDArray[np.generic]
) -> tuple[torch.Tensor, torch.Tensor]:
    X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    y_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    if X_t.shape[0] != y_t.shape[0]:
        raise ConfigError(f"X has {X_t.shape[0]} rows but y has {y_t.shape[0]} labels")
    if y_t.shape[0] == 0:
        raise ConfigError("no training samples")
    return X_t, y_t


def _make_optimizer(
    name: str, params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}", hint="use 'sgd' or 'adam'")


def _check_hyper(epochs: int, lr: float, batch_size: int) -> None:
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if not lr > 0:
        raise ConfigError(f"learning rate must be positive, got {lr}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")


class LocalTrainer:
    """Trains a user's model on local data, starting each time from given global tensors.

    ``data`` is either numpy features with ``y`` the labels, a torch ``Dataset`` yielding
    ``(x, label)`` pairs, or a ``DataLoader``.  ``label_transform`` rewrites every batch's labels
    before the loss (the label-flip attack uses it; honest contributors leave it ``None``).
    ``loss_fn`` defaults to cross-entropy on logits.  ``device`` (cpu, cuda, cuda:N, mps;
    default CPU) is where training runs: the model is moved there, and every batch.
    """

    def __init__(
        self,
        model: nn.Module,
        data: NDArray[np.generic] | Dataset[Any] | DataLoader[Any],
        y: NDArray[np.generic] | None = None,
        *,
        loss_fn: LossFn | None = None,
        label_transform: LabelTransform | None = None,
        progress: ProgressCallback | None = None,
        device: Device | None = None,
    ) -> None:
        self.device = resolve_device(device)  # ConfigError before any data is copied
        self.model = model
        self.loss_fn: LossFn = loss_fn or nn.functional.cross_entropy
        self.label_transform = label_transform
        self.progress = progress
        self._batches: _ArrayBatches | _LoaderBatches
        if isinstance(data, Dataset | DataLoader):
            if y is not None:
                raise ConfigError("pass labels inside the Dataset, not as y")
            self._batches = _LoaderBatches(data)
        else:
            if y is None:
                raise ConfigError("numpy features need labels: LocalTrainer(model, X, y)")
            self._batches = _ArrayBatches(*_as_tensors(data, y))

    @property
    def num_samples(self) -> int:
        return len(self._batches)

    def train(
        self,
        global_tensors: Mapping[str, np.ndarray],
        epochs: int = 1,
        lr: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        optimizer: OptimizerName = "sgd",
        *,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        progress: ProgressCallback | None = None,
    ) -> TrainResult:
        """Load ``global_tensors``, train ``epochs`` passes, and return ``trained - global``.

        The optimizer is created fresh for every call: a round starts from the global model,
        and momentum or Adam moments from a previous round would leak the old local model in.
        The wrapped model is left holding the trained weights, on the trainer's device; the
        delta is float32 numpy on CPU.
        """
        _check_hyper(epochs, lr, batch_size)
        callback = progress or self.progress
        device = self.device
        self.model.to(device)
        numpy_to_state(self.model, global_tensors)
        start = state_to_numpy(self.model)
        batches_on = self._batches.to(device)
        # Labels beyond the outputs fail inside cross-entropy (a CUDA assert on a GPU): say so.
        check_labels = self.loss_fn is nn.functional.cross_entropy and self.label_transform is None
        n_out: int | None = None
        opt = _make_optimizer(optimizer, self.model.parameters(), lr, momentum, weight_decay)
        steps_per_epoch = self._batches.steps_per_epoch(batch_size)
        total_steps = epochs * steps_per_epoch
        generator = torch.Generator().manual_seed(seed)
        step = 0
        epoch_losses: list[float] = []
        correct = seen = 0
        began = time.perf_counter()
        self.model.train()
        with _forked_rng(device):
            torch.manual_seed(seed)
            for epoch, batches in enumerate(batches_on.epochs(epochs, batch_size, generator)):
                loss_sum, n_epoch, correct, seen = 0.0, 0, 0, 0
                for i, (xb_in, yb_in) in enumerate(batches):
                    xb = xb_in.to(device, non_blocking=True)
                    yb_raw = yb_in.to(device, non_blocking=True)
                    yb = self.label_transform(yb_raw) if self.label_transform else yb_raw
                    opt.zero_grad(set_to_none=True)
                    if step == 0:
                        out = self._first_forward(xb)
                        if check_labels and out.ndim == 2:
                            n_out = int(out.shape[1])
                            _check_labels(self._batches.labels(), n_out)
                    else:
                        out = self.model(xb)
                    if n_out is not None and isinstance(self._batches, _LoaderBatches):
                        _check_labels(yb_in, n_out)  # as it came: on CPU, before the copy
                    loss = self.loss_fn(out, yb)
                    loss.backward()
                    opt.step()
                    n = int(yb.shape[0])
                    loss_value = float(loss.detach())
                    loss_sum += loss_value * n
                    n_epoch += n
                    if out.ndim == 2 and yb.ndim == 1:
                        correct += int((out.detach().argmax(1) == yb).sum())
                        seen += n
                    step += 1
                    if callback is not None:
                        callback(
                            TrainProgress(
                                epoch=epoch,
                                epochs=epochs,
                                step=step,
                                total_steps=total_steps,
                                loss=loss_value,
                                epoch_done=i == steps_per_epoch - 1,
                            )
                        )
                epoch_losses.append(loss_sum / max(n_epoch, 1))
        self.model.eval()
        trained = state_to_numpy(self.model)
        delta = {name: np.subtract(trained[name], start[name], dtype=np.float32) for name in start}
        metrics = {
            "first_epoch_loss": epoch_losses[0],
            "steps": float(step),
            "seconds": time.perf_counter() - began,
        }
        if seen:
            metrics["train_accuracy"] = correct / seen
        return TrainResult(
            delta=delta, num_samples=self.num_samples, loss=epoch_losses[-1], metrics=metrics
        )

    def _first_forward(self, xb: torch.Tensor) -> torch.Tensor:
        """The first batch through the model: a failure here means the data does not fit it
        (out of memory is not that, and is raised as it is)."""
        try:
            return self.model(xb)  # type: ignore[no-any-return]
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as exc:
            raise _data_does_not_fit(exc, xb, self.model) from exc

    def evaluate(
        self,
        tensors: Mapping[str, np.ndarray] | None,
        X: NDArray[np.generic],
        y: NDArray[np.generic],
    ) -> tuple[float, float]:
        """Accuracy and mean loss of ``tensors`` (or the model as it is) on ``X, y``."""
        return evaluate(self.model, tensors, X, y, loss_fn=self.loss_fn)


def evaluate(
    model: nn.Module,
    tensors: Mapping[str, np.ndarray] | None,
    X: NDArray[np.generic],
    y: NDArray[np.generic],
    *,
    loss_fn: LossFn | None = None,
    batch_size: int = 4096,
) -> tuple[float, float]:
    """Return ``(accuracy, mean loss)`` of a classifier on ``X, y``.

    ``tensors``, when given, are loaded into ``model`` first (in place).  Runs on the device the
    model is on.  Data that does not fit the model is a :class:`ConfigError` saying how.
    """
    if tensors is not None:
        numpy_to_state(model, tensors)
    X_t, y_t = _as_tensors(X, y)
    device = _model_device(model)
    fn = loss_fn or nn.functional.cross_entropy
    model.eval()
    correct = 0
    loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, int(y_t.shape[0]), batch_size):
            xb = X_t[start : start + batch_size].to(device)
            yb = y_t[start : start + batch_size].to(device)
            try:
                out = model(xb)
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, ValueError) as exc:
                raise _data_does_not_fit(exc, xb, model) from exc
            if out.ndim == 2 and fn is nn.functional.cross_entropy:
                _check_labels(yb, int(out.shape[1]))
            loss_sum += float(fn(out, yb)) * int(yb.shape[0])
            correct += int((out.argmax(1) == yb).sum())
    n = int(y_t.shape[0])
    return correct / n, loss_sum / n


def _forked_rng(device: torch.device) -> Any:
    """Run under a forked global RNG (restored afterwards) for the CPU and a CUDA device."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.random.fork_rng(devices=[index], device_type="cuda")
    return torch.random.fork_rng(devices=[])


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    test_accuracy: float
    test_loss: float


@dataclass(frozen=True)
class CentralizedResult:
    """The baseline a federation is compared against: all data in one place."""

    tensors: Tensors
    history: list[EpochStats]

    @property
    def accuracy(self) -> float:
        return self.history[-1].test_accuracy


def train_centralized(
    model: nn.Module,
    X_train: NDArray[np.generic],
    y_train: NDArray[np.generic],
    X_test: NDArray[np.generic],
    y_test: NDArray[np.generic],
    *,
    epochs: int = 20,
    lr: float = 0.05,
    batch_size: int = 32,
    seed: int = 0,
    optimizer: OptimizerName = "sgd",
    momentum: float = 0.0,
    progress: Callable[[EpochStats], None] | None = None,
) -> CentralizedResult:
    """Train on the pooled training set, evaluating on the test set after every epoch.

    Uses the same loop as :class:`LocalTrainer` (one epoch per call, the delta applied as it
    would be by FedAvg with a single client) so that differences from a federated run come from
    federation, not from a different training recipe.
    """
    trainer = LocalTrainer(model, X_train, y_train)
    tensors = state_to_numpy(model)
    history: list[EpochStats] = []
    for epoch in range(1, epochs + 1):
        result = trainer.train(
            tensors,
            epochs=1,
            lr=lr,
            batch_size=batch_size,
            seed=seed + epoch,
            optimizer=optimizer,
            momentum=momentum,
        )
        tensors = {k: np.add(tensors[k], result.delta[k], dtype=np.float32) for k in tensors}
        accuracy, loss = evaluate(model, tensors, X_test, y_test)
        stats = EpochStats(epoch, result.loss, accuracy, loss)
        history.append(stats)
        if progress is not None:
            progress(stats)
    return CentralizedResult(tensors=tensors, history=history)
