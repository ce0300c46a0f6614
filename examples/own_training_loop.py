"""Contribute to a fedledger task from your own PyTorch training loop.

fedledger hands you the task's model with the current global weights in it; you train it your
way (here: Adam, a DataLoader over your share of ``load_digits``, any device, optionally
bfloat16 autocast) and hand it back; fedledger checks the update against the task locally,
stores it, submits it on chain (or through a relayer), waits for the validators to close the
round and re-verifies it.  The part that is fedledger is the ``session``/``task`` lines of
:func:`contribute`::

    session = fedledger.connect(key="alice")
    task = session.task(1)
    model = task.model(device="cuda")        # or task.global_model(as_torch=YourNet())
    ...your loop...
    receipt = task.submit(model, num_samples=len(dataset))
    task.wait_for_round(receipt.round + 1)

Run it against a deployment (docs/tutorial.md makes one on a devnet, and
``examples/owner_script.py`` creates a task this script fits), with the settings every
fedledger command reads::

    export FEDLEDGER_HOME=~/.fedledger FEDLEDGER_RPC_URL=http://127.0.0.1:8545
    export FEDLEDGER_PASSWORD=...            # the key's password (else you are prompted)
    python examples/own_training_loop.py --task 1 --key alice --share 0/2 --rounds 2
    python examples/own_training_loop.py --task 1 --key bob --share 1/2 --device cuda --amp

``--own-module`` trains a module defined here (:class:`Net`) instead of ``task.model()``: any
module whose ``state_dict`` has the task's names and shapes will do (the task of
``owner_script.py`` is a 64-32-10 MLP described as data).  Exit status 0 when every round was
verified; a fedledger error prints one line and exits with its code.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fedledger


class Net(nn.Module):
    """Your own module for the owner script's task: its names (``net.0.weight``, ...) and
    shapes are those of fedledger's MLP for ``{"kind": "mlp", "hidden": [32], ...}``."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def my_data(index: int, parts: int) -> TensorDataset:
    """Your local data: share ``index`` of ``parts`` of scikit-learn's digits, scaled to [0, 1]."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    mine = np.array_split(order, parts)[index]
    return TensorDataset(
        torch.tensor(X[mine] / 16.0, dtype=torch.float32), torch.tensor(y[mine], dtype=torch.long)
    )


def contribute(args: argparse.Namespace) -> bool:
    device = torch.device(args.device)
    dataset = my_data(*args.share)
    loader = DataLoader(dataset, batch_size=32, shuffle=True)
    session = fedledger.connect(key=args.key)
    task = session.task(args.task)
    for _ in range(args.rounds):
        model = (task.global_model(as_torch=Net()) if args.own_module else task.model()).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        model.train()
        for _epoch in range(args.epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                opt.zero_grad()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                    loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
        receipt = task.submit(model, num_samples=len(dataset), relay=args.relay)
        if receipt.relay is not None:
            receipt = task.wait_relayed(receipt)
        print(f"round {receipt.round}: loss {loss.item():.3f}, update {receipt.update_id} "
              f"{receipt.cid}", flush=True)  # fmt: skip
        task.wait_for_round(receipt.round + 1, timeout_s=args.timeout)
        verdict = task.verdict(receipt)
        print(f"round {receipt.round}: {verdict.verdict.name if verdict else 'not final'}")
    report = session.verify(task.id)
    print("verified" if report.ok else f"verification failed: {report.problems}")
    return report.ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", type=int, required=True, help="task id")
    p.add_argument("--key", required=True, help="keystore key (name or address)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps, ... [cpu]")
    p.add_argument("--share", default="0/1", type=lambda s: tuple(map(int, s.split("/"))),
                   help="your share I/N of the digits data set [0/1]")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1, help="rounds to contribute to [1]")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (mixed precision)")
    p.add_argument("--own-module", action="store_true", help="train Net instead of task.model()")
    p.add_argument("--relay", help="hand the update to this relayer instead of paying gas")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a round")
    args = p.parse_args(argv)
    try:
        return 0 if contribute(args) else 1
    except fedledger.FedledgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
