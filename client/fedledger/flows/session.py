"""The SDK's front door: a session opened from settings, and one task seen through it.

A PyTorch user brings their own model, data loader, optimiser and device; fedledger gives them
the task's global model, takes the trained model back and does the rest (delta against the
global model, canonical encoding on CPU, local checks, store, sign, send or relay)::

    import fedledger
    session = fedledger.connect(key="alice")           # settings/env -> ledger + store + key
    task = session.task(1)
    model = task.global_model(as_torch=MyNet())         # the global weights, loaded into MyNet
    my_training_loop(model, my_loader, device="cuda")   # any loop, any device
    receipt = task.submit(model, num_samples=len(my_dataset))
    print(receipt.update_id, receipt.cid, session.verify(1).ok)

Everything here is a thin shell over the flows the CLI, the service and the tests use
(:mod:`fedledger.flows.task`, :mod:`fedledger.flows.submit`, :mod:`fedledger.flows.verify`): one way to do each thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from fedledger.chain.ledger import Ledger, SignedUpdate
from fedledger.config import Settings, load_settings
from fedledger.content.store import ContentStore
from fedledger.errors import ConfigError, FedledgerError, FormatError
from fedledger.flows.submit import check_update, encode, sign, submit
from fedledger.flows.task import TaskState, global_model, load_task
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from torch import nn

    from fedledger.flows.verify import Report

M = TypeVar("M", bound="nn.Module")

__all__ = ["Receipt", "Session", "Task", "connect"]


@dataclass(frozen=True)
class Receipt:
    """What became of one submitted update.

    ``update_id`` is the contract's global id; ``None`` while a relayed update waits in the
    relayer's queue (follow it with :meth:`Task.relay_status`).
    """

    task_id: int
    round: int
    content_hash: str
    cid: str
    num_samples: int
    update_id: int | None
    relayed: bool = False
    relay_status: str | None = None


@dataclass
class Session:
    """A ledger, a content store and (optionally) a key, opened from :class:`Settings`."""

    settings: Settings
    ledger: Ledger
    store: ContentStore
    account: LocalAccount | None = None

    def task(self, task_id: int) -> Task:
        """The task as it stands now (its config, spec and global model pointer, read once)."""
        return Task(self, load_task(self.ledger, self.store, task_id))

    def create_task(
        self,
        spec: TaskSpec,
        initial: nn.Module | Mapping[str, np.ndarray],
        **config: Any,
    ) -> Task:
        """Publish the initial model and the spec and create the task (this session's key is
        its owner).  ``config``: ``min_updates``, ``max_updates``, ``quorum``,
        ``round_duration``, ``open_`` and the other :func:`fedledger.flows.task.create_task` options."""
        from fedledger.flows.task import create_task

        if isinstance(initial, Mapping):
            tensors = {k: np.asarray(v, dtype=np.float32) for k, v in initial.items()}
        else:
            from fedledger.learning.models import state_to_numpy

            tensors = state_to_numpy(initial)
        task_id = create_task(self.ledger, self.store, spec, tensors, **config)
        return self.task(task_id)

    def admit(
        self, task_id: int, *, contributors: Sequence[str] = (), validators: Sequence[str] = ()
    ) -> None:
        """Admit contributors and validators to a task this session's key owns."""
        for who in contributors:
            self.ledger.add_contributor(task_id, who)
        for who in validators:
            self.ledger.add_validator(task_id, who)

    def verify(
        self,
        task_id: int,
        round_: int | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> Report:
        """Re-verify the task's final rounds from the chain and the store alone."""
        from fedledger.flows.verify import verify_task

        return verify_task(self.ledger, self.store, task_id, round_, progress=progress)


def connect(
    *,
    key: str | None = None,
    password: str | None = None,
    account: LocalAccount | None = None,
    **overrides: Any,
) -> Session:
    """Open a session from ``FEDLEDGER_*`` settings, with ``overrides`` (e.g. ``rpc_url=``,
    ``contract=``, ``ipfs=``, ``home=``) winning over the environment.

    ``key`` names a keystore key (its password from ``password`` or ``FEDLEDGER_PASSWORD``);
    ``account`` passes an already unlocked one.  Without either, the session can read and
    verify but not submit.
    """
    from fedledger.chain.ledger import open_ledger
    from fedledger.content.store import open_store

    settings = load_settings(**overrides)
    if account is None and key is not None:
        from fedledger.chain.keys import find_key, load_key

        secret = password or settings.password
        if not secret:
            info = find_key(settings.keystore_dir, key)
            raise ConfigError(
                f"no password for key {info.name!r}",
                hint="pass password=... or set FEDLEDGER_PASSWORD",
            )
        account = load_key(settings.keystore_dir, key, secret)
    ledger = open_ledger(
        settings.resolve_rpc_url(), settings.contract, settings.deployments_dir, account
    )
    ledger.log_chunk = settings.log_chunk
    return Session(settings, ledger, open_store(settings.ipfs, settings.home), account)


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
        return self.state.current_round

    def refresh(self) -> Task:
        self.state = load_task(self.session.ledger, self.session.store, self.id)
        self._global = None
        return self

    # -- the global model -------------------------------------------------------------------

    def global_tensors(self) -> dict[str, np.ndarray]:
        """The current global model's tensors (float32 numpy), checked against the chain."""
        if self._global is None:
            self._global = global_model(self.session.store, self.state)
        return self._global

    def global_model(self, as_torch: M | None = None) -> M | dict[str, np.ndarray]:
        """The global model: its tensors, or loaded into ``as_torch`` (returned, on the device
        it was on).  Names and shapes must match exactly, or a :class:`FormatError` says which
        ones differ."""
        tensors = self.global_tensors()
        if as_torch is None:
            return tensors
        from fedledger.learning.models import numpy_to_state

        numpy_to_state(as_torch, tensors)
        return as_torch

    # -- submitting -------------------------------------------------------------------------

    def delta(self, trained: nn.Module | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``trained − global``, on CPU in float32, whatever device or precision trained it."""
        base = self.global_tensors()
        if isinstance(trained, Mapping):
            after = {k: np.asarray(v, dtype=np.float32) for k, v in trained.items()}
        else:
            from fedledger.learning.models import state_to_numpy

            after = state_to_numpy(trained)
        _check_same_layout(base, after)
        return {k: (after[k] - base[k]).astype(np.float32, copy=False) for k in base}

    def submit(
        self,
        trained: nn.Module | Mapping[str, np.ndarray],
        *,
        num_samples: int,
        encoding: codec.Encoding = "fp32",
        relay: str | None = None,
    ) -> Receipt:
        """Encode the update for this round, check it locally, store it, and submit it (paying
        gas) or, with ``relay=URL``, sign it and hand it to that relayer (gasless)."""
        account = self.session.account
        if account is None:
            raise ConfigError(
                "this session has no key to submit with",
                hint="fedledger.connect(key=NAME) or connect(account=...)",
            )
        data = encode(
            self.state, self.delta(trained), contributor=account.address, encoding=encoding
        )
        check_update(self.state, data, contributor=account.address)
        led = self.session.ledger
        if relay is None:
            sub = submit(led, self.session.store, self.state, data, num_samples)
            return Receipt(
                sub.task_id, sub.round, sub.content_hash, sub.cid, num_samples, sub.update_id
            )
        su = sign(led, account, self.session.store, self.state, data, num_samples)
        status = _post_relay(relay, su, data)
        return Receipt(
            su.task_id,
            su.round,
            su.content_hash,
            su.cid,
            num_samples,
            None,
            relayed=True,
            relay_status="queued" if status.get("queued") else str(status),
        )

    def relay_status(self, relay: str, receipt: Receipt) -> dict[str, Any]:
        """The relayer's record of a relayed update: ``state`` (queued, submitted, failed),
        ``updateId`` and ``txHash`` once submitted, ``reason`` if it failed."""
        import httpx

        account = self.session.account
        who = account.address if account is not None else ""
        url = f"{relay.rstrip('/')}/relay/updates/{who}/{receipt.task_id}/{receipt.round}"
        resp = httpx.get(url, timeout=30.0)
        if resp.status_code >= 400:
            raise FedledgerError(f"relay {relay} has no record of it ({resp.status_code})")
        return _answer(resp.content, relay)

    def wait_for_round(self, round_: int, *, timeout_s: float = 600.0, poll_s: float = 1.0) -> Task:
        """Block until the task reaches ``round_`` (the round before it was attested), then
        refresh.  Raises :class:`FedledgerError` naming the round it is stuck in."""
        deadline = time.monotonic() + timeout_s
        led = self.session.ledger
        while led.current_round(self.id) < round_:
            if time.monotonic() > deadline:
                raise FedledgerError(
                    f"task {self.id} is still in round {led.current_round(self.id)} after "
                    f"{timeout_s:g}s, waiting for round {round_}",
                    hint="are its validators running (`fedledger serve`)? "
                    "`fedledger task show` tells how many updates the round holds",
                )
            time.sleep(poll_s)
        return self.refresh()


def _check_same_layout(base: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> None:
    missing = sorted(set(base) - set(after))
    extra = sorted(set(after) - set(base))
    shapes = [
        f"{k}: {tuple(after[k].shape)} != {tuple(base[k].shape)}"
        for k in base
        if k in after and tuple(after[k].shape) != tuple(base[k].shape)
    ]
    problems = (
        ([f"missing {missing}"] if missing else [])
        + ([f"unexpected {extra}"] if extra else [])
        + shapes
    )
    if problems:
        raise FormatError(
            "the trained model does not match the task's model: " + "; ".join(problems),
            hint="train the architecture the task names (task.global_model(as_torch=...))",
        )
    bad = [k for k in base if not np.isfinite(after[k]).all()]
    if bad:
        raise FormatError(
            f"the trained model holds NaN or Inf in {bad}",
            hint="validators would reject it as NON_FINITE: lower the learning rate, or check "
            "the loss for overflow (mixed precision without a grad scaler?)",
        )


def _post_relay(url: str, su: SignedUpdate, data: bytes) -> dict[str, Any]:
    import base64

    import httpx

    body = {"signed": su.to_json(), "content": base64.b64encode(data).decode()}
    try:
        resp = httpx.post(url.rstrip("/") + "/relay/updates", json=body, timeout=60.0)
    except httpx.HTTPError as exc:
        raise FedledgerError(
            f"relay {url} did not answer: {exc}", hint="is `fedledger serve --relay-key` up?"
        ) from exc
    if resp.status_code >= 400:
        try:
            detail = _answer(resp.content, url).get("detail")
        except FedledgerError:
            detail = resp.text[:200]
        raise FedledgerError(f"relay {url} refused the update ({resp.status_code}): {detail}")
    return _answer(resp.content, url)


def _answer(body: bytes, url: str) -> dict[str, Any]:
    """A relayer's JSON answer, parsed within bounds: the relayer is another party."""
    from fedledger import safejson

    doc = safejson.loads(body, what=f"answer from relay {url}", max_bytes=1 << 20, max_depth=8)
    if not isinstance(doc, dict):
        raise FedledgerError(f"relay {url} answered {type(doc).__name__}, not a JSON object")
    return doc
