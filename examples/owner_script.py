"""A task owner's script: deploy the ledger, create a task, admit its parties, watch its rounds.

The consortium's owner key deploys TrainingLedger (or reuses the deployment in
``--contract`` / ``FEDLEDGER_CONTRACT``), publishes a task whose model is *described as data*
(fedledger builds it on every node with its own code: nothing is imported from the task), caps
the weight one update may claim (``max_samples``), admits the contributors and a validator, and
then watches the rounds close over the validator's REST API (``fedledger serve``) with httpx,
as any outsider could; at the end it re-verifies every round from the chain and the store.

    export FEDLEDGER_HOME=~/.fedledger FEDLEDGER_RPC_URL=http://127.0.0.1:8545
    export FEDLEDGER_PASSWORD=...
    python examples/owner_script.py --key owner --contributor 0xA... --contributor 0xB... \\
        --validator 0xV... --api http://127.0.0.1:8000 --rounds 2

It prints one JSON line ``{"contract": ..., "task_id": ...}`` as soon as the task exists (start
the validator and the contributors then), one line per finalised round, and exits 0 once
``--rounds`` rounds are final and verified.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

import fedledger

# A 64-32-10 MLP for 8x8 digits, as data: see client/fedledger/learning/architecture.py for
# the kinds and layers a description may use.
MODEL = {"kind": "mlp", "in_features": 64, "hidden": [32], "out_features": 10}


def create(args: argparse.Namespace) -> tuple[fedledger.Session, int]:
    if args.contract:
        session = fedledger.connect(key=args.key, contract=args.contract)
    else:
        session = fedledger.deploy(key=args.key)
    spec = fedledger.TaskSpec(
        model=MODEL,
        dataset="digits",  # the held-out split validators score each global model on
        training={"epochs": 1, "lr": 0.01, "optimizer": "adam"},
        aggregation={"rule": "fedavg"},
    )
    n = len(args.contributor)
    task = session.create_task(spec, max_samples=args.max_samples, min_updates=n, max_updates=n)
    session.admit(task.id, contributors=args.contributor, validators=[args.validator])
    print(json.dumps({"contract": session.contract, "task_id": task.id}), flush=True)
    return session, task.id


def finalized_rounds(api: str, task_id: int) -> list[dict[str, Any]]:
    """The task's final rounds as the validator's REST API shows them (oldest first)."""
    try:
        r = httpx.get(f"{api}/tasks/{task_id}/rounds", params={"limit": 500}, timeout=10)
    except httpx.HTTPError:
        return []  # not up yet
    if r.status_code == 404:  # not indexed yet
        return []
    r.raise_for_status()
    rounds = [x for x in r.json()["items"] if x["status"] == "finalized"]
    return sorted(rounds, key=lambda x: x["round"])


def watch(args: argparse.Namespace, task_id: int) -> None:
    api = args.api.rstrip("/")
    shown: set[int] = set()
    deadline = time.monotonic() + args.timeout
    while len(shown) < args.rounds:
        if time.monotonic() > deadline:
            raise fedledger.FedledgerError(
                f"only {len(shown)} of {args.rounds} rounds final after {args.timeout:g}s",
                hint=f"is `fedledger serve` answering at {api}, and did every contributor train?",
            )
        for rnd in finalized_rounds(api, task_id):
            if rnd["round"] not in shown:
                shown.add(rnd["round"])
                acc = rnd["accuracy"]
                print(f"round {rnd['round']} finalized: {rnd['accepted']} accepted, "
                      f"{rnd['rejected']} rejected, accuracy "
                      f"{'-' if acc is None else f'{acc:.3f}'}", flush=True)  # fmt: skip
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--key", required=True, help="the owner's keystore key")
    p.add_argument("--contributor", action="append", required=True, help="address (repeat)")
    p.add_argument("--validator", required=True, help="the validator's address")
    p.add_argument("--api", required=True, help="the validator's REST API URL")
    p.add_argument("--rounds", type=int, default=2, help="rounds to watch [2]")
    p.add_argument("--max-samples", type=int, default=2000, help="largest numSamples [2000]")
    p.add_argument("--contract", help="use this deployment instead of deploying one")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait in all")
    args = p.parse_args(argv)
    try:
        session, task_id = create(args)
        watch(args, task_id)
        report = session.verify(task_id)
    except fedledger.FedledgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print("verified" if report.ok else f"verification failed: {report.problems}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
