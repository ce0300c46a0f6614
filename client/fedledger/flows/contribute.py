"""One contributor's round: fetch the global model, train locally, (optionally) privatise,
encode and submit — or sign for a relayer.  The CLI's ``train``, the demo's contributor processes
and the tests all run this function.

Attacks exist here only so the demo and the experiments can play malicious contributors through
the exact code path honest ones use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError
from fedledger.flows.submit import Submitted, encode, sign, submit
from fedledger.flows.task import TaskState, global_model, load_task
from fedledger.learning import attacks as attack_lib
from fedledger.learning.models import build_task_architecture
from fedledger.learning.privacy import DPConfig, PrivacyAccountant, dp_metadata, privatize
from fedledger.learning.train import LocalTrainer, ProgressCallback
from fedledger.protocol import codec


@dataclass
class LocalData:
    X: np.ndarray
    y: np.ndarray


@dataclass
class ContributorOptions:
    encoding: codec.Encoding = "fp32"
    dp: DPConfig | None = None
    accountant: PrivacyAccountant | None = None
    attack: str | None = None
    attack_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    residual: codec.Residual | None = None
    progress: ProgressCallback | None = None
    allow_models: tuple[
        str, ...
    ] = ()  # the factories this node may import (fedledger.learning.architecture)


@dataclass(frozen=True)
class RoundWork:
    """What was trained: the update file and its facts (before it is sent)."""

    state: TaskState
    data: bytes
    num_samples: int
    loss: float
    epsilon: float | None


def make_update(
    ledger: Ledger,
    store: ContentStore,
    task_id: int,
    local: LocalData,
    opts: ContributorOptions,
    *,
    contributor: str,
) -> RoundWork:
    """Train one round against the task's current global model; return the encoded update,
    bound to ``contributor`` (the address that will submit or sign it)."""
    state = load_task(ledger, store, task_id)
    spec = state.spec
    # Raises ModelNotAllowed before anything is imported unless this node allowed the factory.
    model = build_task_architecture(spec, allow=opts.allow_models)  # global weights go in next
    current = global_model(store, state)
    attack = attack_lib.ATTACKS[opts.attack] if opts.attack else None
    n_classes = int(local.y.max()) + 1 if local.y.size else 1
    label_tf = (
        attack_lib.label_transform(attack.name, max(n_classes, _n_out(current)))
        if attack is not None and attack.flips_labels
        else None
    )
    trainer = LocalTrainer(
        model, local.X, local.y, label_transform=label_tf, progress=opts.progress
    )
    tp = spec.training
    result = trainer.train(
        current,
        epochs=tp.epochs,
        lr=tp.lr,
        batch_size=tp.batch_size,
        seed=opts.seed * 1_000_003 + state.current_round,
        optimizer=tp.optimizer,  # type: ignore[arg-type]
    )
    delta = result.delta
    if attack is not None and not attack.flips_labels:
        delta = attack_lib.apply_attack(attack.name, delta, **opts.attack_params)
    extra: dict[str, str] = {}
    eps: float | None = None
    if opts.dp is not None:
        rng = np.random.default_rng()
        delta = privatize(delta, opts.dp, rng)
        acct = opts.accountant or PrivacyAccountant(None)
        eps = acct.record(task_id, state.current_round, opts.dp)
        extra.update(dp_metadata(opts.dp, eps))
    data = encode(
        state,
        delta,
        contributor=contributor,
        encoding=opts.encoding,
        extra=extra,
        residual=opts.residual,
    )
    # The task caps the weight one update may claim; more local data than that counts as the cap.
    claimed = min(result.num_samples, state.config.max_samples)
    return RoundWork(state, data, claimed, result.loss, eps)


def _n_out(tensors: dict[str, np.ndarray]) -> int:
    last = list(tensors.values())[-1]
    return int(last.shape[0]) if last.ndim >= 1 else 1


def contribute(
    ledger: Ledger, store: ContentStore, task_id: int, local: LocalData, opts: ContributorOptions
) -> Submitted:
    """Train and submit one update for the task's current round (as the ledger's sender)."""
    if ledger.sender is None:
        raise ConfigError("contributing sends a transaction and needs a key", hint="pass --key")
    work = make_update(ledger, store, task_id, local, opts, contributor=ledger.sender.address)
    return submit(ledger, store, work.state, work.data, work.num_samples)


def contribute_signed(
    ledger: Ledger,
    account: LocalAccount,
    store: ContentStore,
    task_id: int,
    local: LocalData,
    opts: ContributorOptions,
) -> SignedUpdate:
    """Train and sign one update for a relayer (the contributor pays no gas)."""
    work = make_update(ledger, store, task_id, local, opts, contributor=account.address)
    return sign(ledger, account, store, work.state, work.data, work.num_samples)
