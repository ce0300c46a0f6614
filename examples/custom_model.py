"""A user-supplied model, for ``fedledger train --model examples/custom_model.py:make_model``.

Any importable ``module:factory`` (or ``path/to/file.py:factory``) works: the factory is called
with the task's model arguments and must return a ``torch.nn.Module``.  fedledger seeds torch
around the call, so every participant builds the same initial weights.
"""

from __future__ import annotations

from torch import nn


def make_model(n_features: int = 64, n_classes: int = 10, hidden: int = 32) -> nn.Module:
    """A small MLP with dropout, for the digits data set (64 features, 10 classes)."""
    return nn.Sequential(
        nn.Linear(n_features, hidden),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(hidden, n_classes),
    )


def not_a_model() -> str:
    """Returns something that is not a module; used to show build_model's error."""
    return "not a model"
