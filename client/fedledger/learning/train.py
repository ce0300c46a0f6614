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
    "train_centralized",
]

OptimizerName = Literal["sgd", "adam"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LabelTransform = Callable[[torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


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

    def epochs(
        self, epochs: int, batch_size: int, generator: torch.Generator
    ) -> Iterator[Iterator[Batch]]:
        for _ in range(epochs):
            yield self._epoch(batch_size, generator)

    def _epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            yield self.X[idx], self.y[idx]

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)


class _LoaderBatches:
    """Batches from a torch Dataset (seeded DataLoader) or a user's DataLoader."""

    def __init__(self, data: Dataset[Any] | DataLoader[Any]) -> None:
        self.data = data

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
    ``loss_fn`` defaults to cross-entropy on logits.
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
    ) -> None:
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
        The wrapped model is left holding the trained weights.
        """
        _check_hyper(epochs, lr, batch_size)
        callback = progress or self.progress
        numpy_to_state(self.model, global_tensors)
        start = state_to_numpy(self.model)
        opt = _make_optimizer(optimizer, self.model.parameters(), lr, momentum, weight_decay)
        steps_per_epoch = self._batches.steps_per_epoch(batch_size)
        total_steps = epochs * steps_per_epoch
        generator = torch.Generator().manual_seed(seed)
        step = 0
        epoch_losses: list[float] = []
        correct = seen = 0
        began = time.perf_counter()
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for epoch, batches in enumerate(self._batches.epochs(epochs, batch_size, generator)):
                loss_sum, n_epoch, correct, seen = 0.0, 0, 0, 0
                for i, (xb, yb_raw) in enumerate(batches):
                    yb = self.label_transform(yb_raw) if self.label_transform else yb_raw
                    opt.zero_grad(set_to_none=True)
                    out = self.model(xb)
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

    ``tensors``, when given, are loaded into ``model`` first (in place).
    """
    if tensors is not None:
        numpy_to_state(model, tensors)
    X_t, y_t = _as_tensors(X, y)
    fn = loss_fn or nn.functional.cross_entropy
    model.eval()
    correct = 0
    loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, int(y_t.shape[0]), batch_size):
            xb, yb = X_t[start : start + batch_size], y_t[start : start + batch_size]
            out = model(xb)
            loss_sum += float(fn(out, yb)) * int(yb.shape[0])
            correct += int((out.argmax(1) == yb).sum())
    n = int(y_t.shape[0])
    return correct / n, loss_sum / n


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
