"""A user-supplied model factory: ``custom_model:make_model``.

A task names its architecture as data (a built-in name such as ``mlp_digits``, or a layer
description; see ``client/fedledger/learning/architecture.py``), and fedledger builds it with its own code.  Code
such as this factory runs only on a machine whose operator allowed it by name, e.g.::

    export PYTHONPATH=examples        # the module must be importable: a file path is refused
    fedledger task create --key owner --max-samples 1000 \
        --model custom_model:make_model --allow-model custom_model:make_model
    fedledger train --task 1 --key alice --partition 0/4 --allow-model custom_model:make_model
    fedledger serve --key val --allow-model custom_model:make_model   # or
    export FEDLEDGER_ALLOW_MODELS=custom_model:make_model

Everywhere else a task naming it is refused ("model custom_model:make_model is not allowed on
this node: allow it with --allow-model ..."), and nothing is imported.  ``task create`` pins the
sha256 of this file in the spec (``model_sha256``); every node hashes its own copy before
importing it and refuses a task whose pin differs, so all build the same model.  The factory is
called with the task's ``model_kwargs`` and must return a ``torch.nn.Module``; fedledger seeds
torch around the call, so every participant builds the same initial weights.
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
