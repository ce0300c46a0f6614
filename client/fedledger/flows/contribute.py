"""One contributor's round: fetch the global model, train locally, (optionally) privatise,
encode and submit — or sign for a relayer; and several rounds in a row, waiting for each
(:func:`contribute_rounds`, ``fedledger train --rounds N``).  The CLI's ``train``, the demo's
contributor processes and the tests all run these functions.

Training runs on ``ContributorOptions.device`` (cpu, cuda, mps); the update file is encoded from
CPU float32 tensors, so it is the same bytes whatever device trained it.  Before anything is
trained, the round is checked to take the update (not sealed, not full, nothing from this
contributor yet), so no training is spent on an update the contract would refuse.

Attacks exist here only so the demo and the experiments can play malicious contributors through
the exact code path honest ones use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, ContractRevert, FedledgerError
from fedledger.flows.submit import Submitted, encode, sign, submit
from fedledger.flows.task import (
    VALIDATORS_HINT,
    TaskState,
    explain_revert,
    global_model,
    load_task,
    wait_for_round,
)
from fedledger.learning import attacks as attack_lib
from fedledger.learning.models import build_task_architecture
from fedledger.learning.privacy import DPConfig, PrivacyAccountant, dp_metadata, privatize
from fedledger.learning.train import Device, LocalTrainer, ProgressCallback, resolve_device
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec


@dataclass
class LocalData:
    X: np.ndarray
    y: np.ndarray


@dataclass
class ContributorOptions:
    encoding: codec.Encoding | None = None  # the task's: int32 for a fixed-point task, else fp32
    dp: DPConfig | None = None
    """Client-level DP of the contributor's choice; a task that requires DP (its spec's
    ``privacy.dp``) gets at least the task's, whatever is set here (:func:`task_dp`)."""
    accountant: PrivacyAccountant | None = None
    dp_budget: float | None = None
    """The most cumulative ``eps`` this contributor spends on a task (besides the task's own
    ``epsilon_budget``): a round that would exceed it raises ``PrivacyBudgetExceeded``."""
    attack: str | None = None
    attack_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    residual: codec.Residual | None = None
    progress: ProgressCallback | None = None
    # the factories this node may import (fedledger.learning.architecture)
    allow_models: tuple[str, ...] = ()
    device: Device | None = None  # cpu (default), cuda, cuda:N, mps


@dataclass(frozen=True)
class RoundWork:
    """What was trained: the update file and its facts (before it is sent).

    ``loss`` is the mean training loss of the last epoch; ``local_loss`` and
    ``local_accuracy`` are the trained model's on the contributor's own data (``None`` for a
    model that is not a classifier)."""

    state: TaskState
    data: bytes
    num_samples: int
    loss: float
    epsilon: float | None
    local_loss: float | None = None
    local_accuracy: float | None = None


@dataclass(frozen=True)
class Contributed(Submitted):
    """A submitted update with how its training went (see :class:`RoundWork`)."""

    loss: float = float("nan")
    local_loss: float | None = None
    local_accuracy: float | None = None
    epsilon: float | None = None


def make_update(
    ledger: Ledger,
    store: ContentStore,
    task_id: int,
    local: LocalData,
    opts: ContributorOptions,
    *,
    contributor: str,
    state: TaskState | None = None,
) -> RoundWork:
    """Train one round against the task's current global model; return the encoded update,
    bound to ``contributor`` (the address that will submit or sign it).  ``state``: the task
    as the caller has just read it (else it is read here)."""
    device = resolve_device(opts.device)  # ConfigError before anything is fetched
    if state is None:
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
        model, local.X, local.y, label_transform=label_tf, progress=opts.progress, device=device
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
    dp, budget = task_dp(spec, opts)
    if dp is not None:
        acct = opts.accountant or PrivacyAccountant(None)
        # recorded (and the budget checked) before the noised update exists: never sent unspent
        eps = acct.record(task_id, state.current_round, dp, budget=budget)
        delta = privatize(delta, dp, np.random.default_rng())
        extra.update(dp_metadata(dp, eps))
    data = encode(
        state,
        delta,
        contributor=contributor,
        encoding=opts.encoding,
        extra=extra,
        residual=opts.residual,
    )
    local_accuracy = local_loss = None
    if _is_classifier(current, local):
        local_accuracy, local_loss = trainer.evaluate(None, local.X, local.y)
    # The task caps the weight one update may claim; more local data than that counts as the cap.
    claimed = min(result.num_samples, state.config.max_samples)
    return RoundWork(state, data, claimed, result.loss, eps, local_loss, local_accuracy)


def task_dp(spec: TaskSpec, opts: ContributorOptions) -> tuple[DPConfig | None, float | None]:
    """The DP a contributor applies to ``spec``'s task and its budget: its own settings, made
    at least as strong as the task requires (clip no larger, noise multiplier no smaller; the
    task's delta), and the smaller of its own and the task's budget."""
    required = spec.privacy_policy().dp
    if required is None:
        return opts.dp, opts.dp_budget
    own = opts.dp
    dp = DPConfig(
        clip=required.clip_norm if own is None else min(own.clip, required.clip_norm),
        noise_multiplier=required.noise_multiplier
        if own is None
        else max(own.noise_multiplier, required.noise_multiplier),
        delta=required.delta,
    )
    budgets = [b for b in (opts.dp_budget, required.epsilon_budget) if b is not None]
    return dp, (min(budgets) if budgets else None)


def _is_classifier(tensors: dict[str, np.ndarray], local: LocalData) -> bool:
    """Labels that index the model's outputs (its last tensor's rows): accuracy means
    something."""
    return bool(local.y.size) and local.y.ndim == 1 and int(local.y.max()) < _n_out(tensors)


def _n_out(tensors: dict[str, np.ndarray]) -> int:
    last = list(tensors.values())[-1]
    return int(last.shape[0]) if last.ndim >= 1 else 1


def check_round_open(ledger: Ledger, state: TaskState, contributor: str) -> None:
    """Refuse, before any training, an update the contract would refuse for this round: the
    round is sealed, full, or already holds one from ``contributor``."""
    t, r = state.task_id, state.current_round
    if state.sealed:
        raise FedledgerError(
            f"task {t} round {r} is sealed: validators are judging it and it takes no more updates",
            hint="wait for the next round (`fedledger train --rounds N` waits for it)",
        )
    if state.update_count >= state.config.max_updates:
        raise FedledgerError(
            f"task {t} round {r} is full: it holds {state.update_count} of "
            f"{state.config.max_updates} updates",
            hint="wait for its validators to attest it, then train the next round "
            "(`fedledger train --rounds N` waits); " + VALIDATORS_HINT,
        )
    if ledger.has_submitted(t, r, contributor):
        raise FedledgerError(
            f"{contributor} already submitted an update to task {t} round {r}",
            hint=f"one update per contributor per round: wait for round {r + 1} "
            "(`fedledger train --rounds N` waits for each next round)",
        )


def contribute(
    ledger: Ledger,
    store: ContentStore,
    task_id: int,
    local: LocalData,
    opts: ContributorOptions,
    *,
    state: TaskState | None = None,
) -> Contributed:
    """Train and submit one update for the task's current round (as the ledger's sender).
    ``state``: the task as the caller has just read it."""
    if ledger.sender is None:
        raise ConfigError("contributing sends a transaction and needs a key", hint="pass --key")
    resolve_device(opts.device)
    who = ledger.sender.address
    if state is None:
        state = load_task(ledger, store, task_id)
    check_round_open(ledger, state, who)
    work = make_update(ledger, store, task_id, local, opts, contributor=who, state=state)
    try:
        sub = submit(ledger, store, work.state, work.data, work.num_samples)
    except ContractRevert as exc:
        raise explain_revert(exc) from None
    return Contributed(
        **{f: getattr(sub, f) for f in Submitted.__dataclass_fields__},
        loss=work.loss,
        local_loss=work.local_loss,
        local_accuracy=work.local_accuracy,
        epsilon=work.epsilon,
    )


def contribute_rounds(
    ledger: Ledger,
    store: ContentStore,
    task_id: int,
    local: LocalData,
    opts: ContributorOptions,
    rounds: int,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 1.0,
    on_wait: Callable[[int, int], None] | None = None,
    on_train: Callable[[int], None] | None = None,
    state: TaskState | None = None,
) -> Iterator[Contributed]:
    """Contribute to ``rounds`` rounds in a row: the current one, then each next one as soon
    as validators open it (``on_wait(current, wanted)`` is called while waiting, and
    ``on_train(round)`` before each round is trained; ``state``: the task as the caller has
    just read it, used for the first round).  Each wait is bounded by ``timeout_s``: past it,
    a :class:`FedledgerError` names the round the task is stuck in
    (:func:`fedledger.flows.task.wait_for_round`).  With ``rounds`` above 1, a round
    this contributor cannot join (it already holds its update, or is sealed or full) is
    skipped for the next one; with 1, it is refused as :func:`contribute` refuses it."""
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    if ledger.sender is None:
        raise ConfigError("contributing sends a transaction and needs a key", hint="pass --key")
    resolve_device(opts.device)
    who = ledger.sender.address
    wanted = state.current_round if state is not None else ledger.current_round(task_id)
    done = 0
    while done < rounds:
        if wanted > ledger.current_round(task_id):

            def tick(now: int, target: int = wanted) -> None:
                if on_wait is not None:
                    on_wait(now, target)

            wait_for_round(ledger, task_id, wanted, timeout_s=timeout_s, poll_s=poll_s, tick=tick)
        if state is None or state.current_round < wanted:
            state = load_task(ledger, store, task_id)  # validators may have moved on further
        if rounds > 1 and _closed_to(ledger, state, who):
            wanted = state.current_round + 1
            continue
        if on_train is not None:
            on_train(state.current_round)
        yield contribute(ledger, store, task_id, local, opts, state=state)
        done += 1
        wanted = state.current_round + 1


def _closed_to(ledger: Ledger, state: TaskState, who: str) -> bool:
    try:
        check_round_open(ledger, state, who)
    except FedledgerError:
        return True
    return False


def contribute_signed(
    ledger: Ledger,
    account: LocalAccount,
    store: ContentStore,
    task_id: int,
    local: LocalData,
    opts: ContributorOptions,
    *,
    state: TaskState | None = None,
) -> SignedUpdate:
    """Train and sign one update for a relayer (the contributor pays no gas).  ``state``: the
    task as the caller has just read it."""
    resolve_device(opts.device)
    if state is None:
        state = load_task(ledger, store, task_id)
    check_round_open(ledger, state, account.address)
    work = make_update(
        ledger, store, task_id, local, opts, contributor=account.address, state=state
    )
    return sign(ledger, account, store, work.state, work.data, work.num_samples)
