"""The SDK's front door: a session opened from settings, and one task seen through it.

A PyTorch user brings their own loop, data loader, optimiser, device and precision; fedledger
gives them the task's model with the global weights in it, takes the trained model back and
does the rest (delta against the global model on CPU in float32, canonical encoding, the local
check validators' rules allow, store, sign, send or relay)::

    import fedledger
    session = fedledger.connect(key="alice")            # settings/env -> ledger + store + key
    task = session.task(1)
    model = task.model(device="cuda")                   # the task's architecture, global weights
    my_training_loop(model, my_loader)                  # any optimiser, any device, AMP
    receipt = task.submit(model, num_samples=len(my_dataset))
    task.wait_for_round(receipt.round + 1)              # the validators closed the round
    print(task.verdict(receipt).verdict.name, session.verify(1).ok)

``task.model()`` is built by fedledger's own code from the task's description of its model
(:mod:`fedledger.learning.models`); no code named by a spec is imported unless this node's
operator allowed it (``FEDLEDGER_ALLOW_MODELS``).  A user's own ``nn.Module`` works as well when
its ``state_dict`` has the task's tensor names and shapes: ``task.global_model(as_torch=net)``.

An owner deploys, creates and admits through the same object::

    session = fedledger.deploy(key="owner")             # a new TrainingLedger, recorded
    task = session.create_task(TaskSpec(model={...}, dataset="my-data"), max_samples=10_000)
    session.admit(task.id, contributors=[...], validators=[...])

Everything here is a thin shell over the flows the CLI, the service and the tests use
(:mod:`fedledger.flows.task`, :mod:`fedledger.flows.submit`, :mod:`fedledger.flows.verify`): one
way to do each thing.  Errors are :class:`~fedledger.errors.FedledgerError` subclasses that
say what to do.
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np

from fedledger.chain.ledger import DEFAULT_ATTEST_WINDOW, Ledger
from fedledger.config import Settings, load_settings
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, FedledgerError, FormatError, KeystoreError
from fedledger.flows import relay_client
from fedledger.flows.relay import RelayStatus
from fedledger.flows.submit import check_tensors, encode, sign, submit
from fedledger.flows.task import TaskState, global_model, load_task, wait_for_round
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from torch import nn

    from fedledger.flows.verify import Report
    from fedledger.protocol.verdicts import VerdictEntry

M = TypeVar("M", bound="nn.Module")

__all__ = ["Receipt", "Session", "Task", "connect", "deploy"]


@dataclass(frozen=True)
class Receipt:
    """What became of one submitted update.

    ``update_id`` is the contract's global id; ``None`` while a relayed update waits in the
    relayer's queue (follow it with :meth:`Task.relay_status` or :meth:`Task.wait_relayed`).
    """

    task_id: int
    round: int
    contributor: str
    content_hash: str
    cid: str
    num_samples: int
    update_id: int | None
    relay: str | None = None  # the relayer's URL, for a relayed update


@dataclass
class Session:
    """A ledger, a content store and (optionally) a key, opened from :class:`Settings`."""

    settings: Settings
    ledger: Ledger
    store: ContentStore
    account: LocalAccount | None = None

    @property
    def address(self) -> str | None:
        """The address this session signs with, if it has a key."""
        return None if self.account is None else str(self.account.address)

    @property
    def contract(self) -> str:
        return str(self.ledger.address)

    def task(self, task_id: int) -> Task:
        """The task as it stands now (its config, spec and global model pointer, read once)."""
        return Task(self, load_task(self.ledger, self.store, task_id))

    def create_task(
        self,
        spec: TaskSpec,
        initial: nn.Module | Mapping[str, np.ndarray] | None = None,
        *,
        max_samples: int,
        min_updates: int = 1,
        max_updates: int = 100,
        quorum: int = 1,
        round_duration: int = 0,
        open_: bool = False,
        attest_window: int = DEFAULT_ATTEST_WINDOW,
    ) -> Task:
        """Publish the initial model and the spec and create the task (this session's key is
        its owner); returns it.

        ``initial``: the initial weights (a module or tensors); by default the spec's model
        built by fedledger with the spec's seed, as ``fedledger task create`` does.
        ``max_samples`` is the largest ``numSamples`` (fedavg weight) one update may claim:
        about the largest contributor's data set."""
        from fedledger.flows.task import create_task
        from fedledger.learning.models import build_task_model

        self._need_key("create a task")
        if initial is None:
            initial = build_task_model(spec, allow=self.settings.allowed_models)
        task_id = create_task(
            self.ledger,
            self.store,
            spec,
            _float32_tensors(initial, "the initial model"),
            max_samples=max_samples,
            min_updates=min_updates,
            max_updates=max_updates,
            quorum=quorum,
            round_duration=round_duration,
            open_=open_,
            attest_window=attest_window,
            # a module is checked against the data set (features in, classes out) before
            # anything is stored or sent
            model=None if initial is None or isinstance(initial, Mapping) else initial,
        )
        return self.task(task_id)

    def admit(
        self, task_id: int, *, contributors: Sequence[str] = (), validators: Sequence[str] = ()
    ) -> None:
        """Admit contributors and validators to a task this session's key owns (every address
        is checked before anything is sent)."""
        from fedledger.chain.ledger import to_checksum

        self._need_key("admit contributors and validators")
        who = [to_checksum(a) for a in contributors], [to_checksum(a) for a in validators]
        for a in who[0]:
            self.ledger.add_contributor(task_id, a)
        for a in who[1]:
            self.ledger.add_validator(task_id, a)

    def verify(
        self,
        task_id: int,
        round_: int | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> Report:
        """Re-verify the task's final rounds (or one) from the chain and the store alone:
        ``report.ok``, ``report.problems``, ``report.rounds``."""
        from fedledger.flows.verify import verify_task

        return verify_task(
            self.ledger,
            self.store,
            task_id,
            round_,
            progress=progress,
            allow_models=self.settings.allowed_models,
        )

    def _need_key(self, to: str) -> LocalAccount:
        if self.account is None:
            raise ConfigError(
                f"this session has no key to {to} with",
                hint="fedledger.connect(key=NAME) with a keystore key (`fedledger keys new`), "
                "or connect(account=...)",
            )
        return self.account


def _unlock(settings: Settings, key: str, password: str | None) -> LocalAccount:
    from fedledger.chain.keys import find_key, load_key

    info = find_key(settings.keystore_dir, key)  # NotFoundError naming the keystore
    secret = password or settings.password
    if not secret:
        if not sys.stdin.isatty():
            raise KeystoreError(
                f"no password for key {info.name!r}",
                hint="pass password=..., set FEDLEDGER_PASSWORD, or run in a terminal",
            )
        secret = getpass.getpass(f"password for {info.name}: ")
    return load_key(settings.keystore_dir, key, secret)


def _account(
    settings: Settings, key: str | None, password: str | None, account: LocalAccount | None
) -> LocalAccount | None:
    if account is not None and key is not None:
        raise ConfigError("pass key= or account=, not both")
    return account if account is not None or key is None else _unlock(settings, key, password)


def connect(
    *,
    key: str | None = None,
    password: str | None = None,
    account: LocalAccount | None = None,
    **overrides: Any,
) -> Session:
    """Open a session from ``FEDLEDGER_*`` settings, with ``overrides`` (``rpc_url=``,
    ``contract=``, ``ipfs=``, ``home=``, ``keystore=``, ``allow_models=``) winning over the
    environment.

    ``key`` names a keystore key or its address (the password from ``password``,
    ``FEDLEDGER_PASSWORD`` or a prompt in a terminal); ``account`` passes an already unlocked
    one.  Without either, the session can read and verify but not submit.
    """
    from fedledger.chain.ledger import open_ledger
    from fedledger.content.store import open_store

    settings = load_settings(**overrides)
    acct = _account(settings, key, password, account)
    ledger = open_ledger(
        settings.resolve_rpc_url(), settings.contract, settings.deployments_dir, acct
    )
    ledger.log_chunk = settings.log_chunk
    return Session(settings, ledger, open_store(settings.ipfs, settings.home), acct)


def deploy(
    *,
    key: str | None = None,
    password: str | None = None,
    account: LocalAccount | None = None,
    **overrides: Any,
) -> Session:
    """Deploy a new TrainingLedger with this key (as ``fedledger deploy`` does: recorded in
    ``<home>/deployments/<chain id>.json``, so later sessions and commands find it), and return
    a session on it."""
    from fedledger.chain.ledger import connect as connect_chain
    from fedledger.content.store import open_store

    settings = load_settings(**overrides)
    acct = _account(settings, key, password, account)
    if acct is None:
        raise ConfigError("deploying sends a transaction and needs a key", hint="pass key=NAME")
    ledger = Ledger.deploy(
        connect_chain(settings.resolve_rpc_url()), acct, settings.deployments_dir
    )
    ledger.log_chunk = settings.log_chunk
    return Session(settings, ledger, open_store(settings.ipfs, settings.home), acct)


@dataclass
class Task:
    """One task seen through a session.  ``state`` is read once; :meth:`refresh` reads again."""

    session: Session
    state: TaskState
    _global: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def id(self) -> int:
        return self.state.task_id

    @property
    def round(self) -> int:
        """The round this view of the task is in (the one an update made now is for)."""
        return self.state.current_round

    @property
    def spec(self) -> TaskSpec:
        return self.state.spec

    @property
    def max_samples(self) -> int:
        """The most ``num_samples`` one update may claim."""
        return self.state.config.max_samples

    def refresh(self) -> Task:
        """Read the task again (a new round brings a new global model)."""
        self.state = load_task(self.session.ledger, self.session.store, self.id)
        self._global = None
        return self

    # -- the global model -------------------------------------------------------------------

    def global_tensors(self) -> dict[str, np.ndarray]:
        """The current global model's tensors (float32 numpy, by name), checked against the
        hash on chain.  Treat them as read-only: they are what the update is measured from."""
        if self._global is None:
            self._global = global_model(self.session.store, self.state)
        return self._global

    def model(self, *, device: Any = None) -> nn.Module:
        """The task's own architecture as a torch module, built by fedledger from the task's
        description of it (the pin on chain checked), with the current global weights loaded;
        on ``device`` if given ("cpu", "cuda", "mps" or a ``torch.device``)."""
        from fedledger.learning.models import build_task_architecture

        net = build_task_architecture(self.spec, allow=self.session.settings.allowed_models)
        self.global_model(as_torch=net)
        return net if device is None else net.to(device)

    @overload
    def global_model(self, as_torch: None = None) -> dict[str, np.ndarray]: ...

    @overload
    def global_model(self, as_torch: M) -> M: ...

    def global_model(self, as_torch: M | None = None) -> M | dict[str, np.ndarray]:
        """The global model: its tensors, or loaded into your own module ``as_torch`` (returned,
        on the device and in the precision it was in).  Its ``state_dict`` must have the
        task's names and shapes, or a :class:`FormatError` names the ones that differ."""
        tensors = self.global_tensors()
        if as_torch is None:
            return tensors
        from fedledger.learning.models import numpy_to_state

        try:
            numpy_to_state(as_torch, tensors)
        except FormatError as exc:
            raise FormatError(
                f"your module does not fit task {self.id}'s model: {exc.message}",
                hint="use task.model(), or name and shape your layers as the task's model "
                "(task.global_tensors() lists them)",
            ) from exc
        return as_torch

    # -- submitting -------------------------------------------------------------------------

    def delta(self, trained: nn.Module | Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``trained - global``, on CPU in float32, whatever device or precision trained it;
        refused (:class:`FormatError`) if the trained model does not fit the task's or holds
        NaN or Inf (validators would judge it SHAPE_MISMATCH or NON_FINITE)."""
        base = self.global_tensors()
        after = _float32_tensors(trained, "the trained model")
        check_tensors(base, after, what="trained model")
        return {k: np.subtract(after[k], base[k], dtype=np.float32) for k in base}

    def submit(
        self,
        trained: nn.Module | Mapping[str, Any],
        *,
        num_samples: int,
        encoding: codec.Encoding | None = None,
        relay: str | None = None,
        valid_for_s: int = 3600,
    ) -> Receipt:
        """Contribute ``trained`` (the module you trained from :meth:`model` or
        :meth:`global_model`, or its ``state_dict``) for this round.

        The delta is encoded bound to this session's address, checked locally by the rules
        validators apply (:func:`fedledger.flows.submit.check_update`), stored, and then sent
        (paying gas) or, with ``relay=URL``, signed and handed to that relayer (``fedledger
        serve --relay-key``; gasless).  ``num_samples``: how many samples trained it (at most
        :attr:`max_samples`).  ``encoding``: the task's by default (``int32`` in its fixed-point
        format when its spec has one, else ``fp32``)."""
        account = self.session._need_key("submit")
        led = self.session.ledger
        now = led.current_round(self.id)
        if now != self.round:
            raise FedledgerError(
                f"task {self.id} moved on to round {now} while this update was made for round "
                f"{self.round}",
                hint="task.refresh(), load the new global model (task.model()) and train again",
            )
        base = self.global_tensors()
        data = encode(
            self.state, self.delta(trained), contributor=account.address, encoding=encoding
        )
        store = self.session.store
        if relay is None:
            sub = submit(led, store, self.state, data, num_samples, base=base)
            return Receipt(
                sub.task_id,
                sub.round,
                account.address,
                sub.content_hash,
                sub.cid,
                num_samples,
                sub.update_id,
            )
        su = sign(
            led, account, store, self.state, data, num_samples, valid_for_s=valid_for_s, base=base
        )
        relay_client.post(relay, su, data)
        return Receipt(
            su.task_id,
            su.round,
            account.address,
            su.content_hash,
            su.cid,
            num_samples,
            None,
            relay=relay,
        )

    def relay_status(self, receipt: Receipt) -> RelayStatus:
        """The relayer's record of a relayed update: ``state`` (queued, submitted, failed),
        ``update_id`` and ``tx_hash`` once submitted, ``reason`` and ``error`` if it failed."""
        if receipt.relay is None:
            raise ConfigError("this update was not relayed", hint="its update_id is final")
        return relay_client.status(
            receipt.relay, receipt.contributor, receipt.task_id, receipt.round
        )

    def wait_relayed(
        self, receipt: Receipt, *, timeout_s: float = 300.0, poll_s: float = 0.5
    ) -> Receipt:
        """Block until the relayer has submitted the update; the receipt with its update id.
        Raises :class:`FedledgerError` with the relayer's reason if it failed."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.relay_status(receipt)
            if st.state == "submitted" and st.update_id is not None:
                return replace(receipt, update_id=st.update_id)
            if st.state == "failed":
                raise FedledgerError(
                    f"relay {receipt.relay} could not submit the update: {st.reason}",
                    hint="submit it yourself (task.submit without relay=) if the round is open",
                )
            if time.monotonic() > deadline:
                raise FedledgerError(
                    f"relay {receipt.relay} still holds the update queued after {timeout_s:g}s",
                    hint="is its relayer key funded? follow it with task.relay_status(receipt)",
                )
            time.sleep(poll_s)

    # -- rounds -----------------------------------------------------------------------------

    def wait_for_round(self, round_: int, *, timeout_s: float = 600.0, poll_s: float = 1.0) -> Task:
        """Block until the task reaches ``round_`` (the rounds before it are final), then
        refresh: :meth:`model` then holds the new global model.  Raises
        :class:`FedledgerError` naming the round it is stuck in and what to check
        (:func:`fedledger.flows.task.wait_for_round`)."""
        wait_for_round(self.session.ledger, self.id, round_, timeout_s=timeout_s, poll_s=poll_s)
        return self.refresh()

    def verdict(self, receipt: Receipt | int) -> VerdictEntry | None:
        """What validators decided about an update of this task (a receipt, or an update id
        with the round from :attr:`round` - 1): its ``verdict``, ``reason`` and ``score``
        from the round's attested verdict file; ``None`` while the round is not final."""
        from fedledger.protocol import verdicts

        if isinstance(receipt, Receipt):
            if receipt.update_id is None:
                raise ConfigError(
                    "a relayed update has no id until it is submitted",
                    hint="task.wait_relayed(receipt) first",
                )
            uid, rnd = receipt.update_id, receipt.round
        else:
            uid, rnd = receipt, self.round - 1
        fin = self.session.ledger.last_finalized(self.id, rnd)
        if fin is None:
            return None
        vf = verdicts.parse(self.session.store.get(str(fin["verdictCid"])))
        found = next((e for e in vf.entries if e.update_id == uid), None)
        if found is None:
            raise FedledgerError(f"update {uid} is not in round {rnd} of task {self.id}")
        return found


def _float32_tensors(source: Any, what: str) -> dict[str, np.ndarray]:
    """A module's ``state_dict`` or a mapping of arrays / torch tensors (any device, any
    float dtype) as float32 numpy arrays on CPU."""
    if hasattr(source, "state_dict") and not isinstance(source, Mapping):
        from fedledger.learning.models import state_to_numpy

        return state_to_numpy(source)
    if not isinstance(source, Mapping):
        raise FormatError(
            f"{what} is a {type(source).__name__}, not a torch module or a mapping of tensors",
            hint="pass the nn.Module you trained, or its state_dict()",
        )
    out: dict[str, np.ndarray] = {}
    for name, value in source.items():
        try:
            if hasattr(value, "detach"):  # a torch tensor: to CPU float32 first
                import torch

                value = value.detach().to("cpu", torch.float32).numpy()
            out[str(name)] = np.ascontiguousarray(value, dtype=np.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise FormatError(
                f"{what}: tensor {name!r} is not numeric ({type(value).__name__}): {exc}"
            ) from exc
    return out
