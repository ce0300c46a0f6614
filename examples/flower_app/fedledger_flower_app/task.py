"""The model and the data of every client: a 64-16-10 MLP on scikit-learn's digits.

The module's tensor names (``net.0.weight``, ...) are the task's (fedledger's ``mlp`` model
kind), so its ``state_dict`` is exactly what the ledger records.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedledger.learning.data import load_dataset

MODEL = {"kind": "mlp", "in_features": 64, "hidden": [16], "out_features": 10}
"""The task spec's model: the owner creates the task with it."""


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def client_data(partition_id: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client ``partition_id``'s own draw of ``samples`` training rows (any number of clients)."""
    ds = load_dataset("digits")
    rows = np.random.default_rng(partition_id).choice(len(ds.y_train), samples, replace=False)
    return torch.from_numpy(ds.X_train[rows]), torch.from_numpy(ds.y_train[rows])


def train(net: Net, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float) -> float:
    """Plain SGD in batches of 16; the mean loss of the last epoch."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    net.train()
    loss = torch.zeros(())
    for _ in range(epochs):
        for i in range(0, len(y), 16):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[i : i + 16]), y[i : i + 16])
            loss.backward()
            opt.step()
    return float(loss.detach())
