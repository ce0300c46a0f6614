"""The ClientApp mod: after training, the client's result becomes a fedledger update.

::

    app = ClientApp(mods=[LedgerMod(key="client-{partition_id}")])

For every ``train`` message, after the app (and any inner mod) has trained, the mod takes the
reply's trained weights and hands them to :meth:`fedledger.Task.submit`: the delta against the
ledger's global model (hash checked), encoded, checked by the validators' file rules, stored,
then sent (this client pays gas) or, with ``relay``, signed and posted to a relayer (``fedledger
serve --relay-key``).  The update id and CID go back in the reply (:mod:`fedledger.flower.records`).
A submission the SDK refuses becomes an error reply naming why, so the server sees a failure,
not a silent gap.  Other messages pass through untouched.

Settings come from the arguments, else the run config (``flwr run --run-config``):
``fedledger-key`` (a keystore key name; ``{partition_id}`` and the other ``node_config``
entries are filled in, so each virtual client signs with its own key), ``fedledger-relay``,
``fedledger-wait-relayed``, ``fedledger-task-id`` (else the task the server's
:class:`~fedledger.flower.LedgerStrategy` names in the message).  The ledger, store and
keystore are the ``FEDLEDGER_*`` settings (``FEDLEDGER_PASSWORD`` unlocks the keys); keys are
read from the keystore, never from the run config.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import WARNING
from typing import Any

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log
from flwr.common.constant import ErrorCode

import fedledger
from fedledger.errors import ConfigError, FedledgerError
from fedledger.flower import records

__all__ = ["LedgerMod"]

_SESSIONS: dict[tuple[str, str], fedledger.Session] = {}
"""Sessions by key and settings, kept for the life of the process: Flower's simulation engine
sends its workers a copy of the ClientApp (mods included) with every message, so a cache on the
mod would start empty each time; a worker process serves many virtual clients, round after
round."""


class LedgerMod:
    """A Flower ClientApp mod that records every training result on a fedledger ledger.

    ``key``: the keystore key each client signs with, a template filled from the client's
    ``node_config`` (``"client-{partition_id}"``).  ``relay``: a relayer's URL to submit
    through (gasless), or ``None`` to send the transaction with the client's key.
    ``wait_relayed``: wait until the relayer has submitted, so the update id is known on the
    client (otherwise it is 0 in the metrics and the server's strategy finds it in the round's
    records).  ``samples_key``: the metric that holds the number of training samples.
    ``connect``: settings for :func:`fedledger.connect` (``rpc_url=``, ``home=``, ...) over
    the ``FEDLEDGER_*`` environment.
    """

    def __init__(
        self,
        *,
        key: str | None = None,
        relay: str | None = None,
        task_id: int | None = None,
        wait_relayed: bool | None = None,
        samples_key: str = "num-examples",
        relay_timeout_s: float = 300.0,
        **connect: Any,
    ) -> None:
        self.key = key
        self.relay = relay
        self.task_id = task_id
        self.wait_relayed = wait_relayed
        self.samples_key = samples_key
        self.relay_timeout_s = relay_timeout_s
        self.connect = connect

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        try:
            reply = self.submit(msg.content, out.content, ctxt)
        except FedledgerError as exc:
            log(WARNING, "fedledger: the training result was not recorded: %s", exc)
            return Message(
                Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"fedledger: {exc}"),
                reply_to=msg,
            )
        reply.attach(out.content)
        return out

    def submit(self, sent: RecordDict, trained: RecordDict, ctxt: Context) -> records.LedgerReply:
        """Submit the trained weights in ``trained`` (the reply's content) for the round the
        server's message ``sent`` asked for; what became of them."""
        config = _ledger_config(sent)
        run = ctxt.run_config
        task_id = self.task_id or _int(
            config.get(records.TASK_CONFIG) or run.get("fedledger-task-id")
        )
        if not task_id:
            raise ConfigError(
                "no fedledger task to record this training result in",
                hint="wrap the server's strategy in fedledger.flower.LedgerStrategy, or pass "
                "LedgerMod(task_id=...) or --run-config 'fedledger-task-id=N'",
            )
        session = self._session(self._key(ctxt))
        task = session.task(task_id)
        asked = config.get(records.ROUND_CONFIG)
        if asked is not None and _int(asked) != task.round:
            raise FedledgerError(
                f"the server trains ledger round {asked} of task {task_id}, but the ledger is "
                f"in round {task.round}",
                hint="the server's LedgerStrategy waits for each round to be final; is "
                "another Flower run driving the same task?",
            )
        tensors = records.to_tensors(records.trained_arrays(trained), list(task.global_tensors()))
        relay = self.relay if self.relay is not None else str(run.get("fedledger-relay", ""))
        receipt = task.submit(
            tensors,
            num_samples=records.num_examples(trained, self.samples_key),
            relay=relay or None,
        )
        wait = self.wait_relayed
        if wait is None:
            wait = bool(run.get("fedledger-wait-relayed", False))
        if receipt.relay is not None and wait:
            receipt = task.wait_relayed(receipt, timeout_s=self.relay_timeout_s)
        return records.LedgerReply(
            task_id=receipt.task_id,
            round=receipt.round,
            contributor=receipt.contributor,
            content_hash=receipt.content_hash,
            cid=receipt.cid,
            update_id=receipt.update_id or 0,
            relay=receipt.relay or "",
        )

    def _key(self, ctxt: Context) -> str:
        template = self.key if self.key is not None else ctxt.run_config.get("fedledger-key")
        if not template:
            raise ConfigError(
                "no fedledger key for this client",
                hint="LedgerMod(key='client-{partition_id}') or --run-config "
                "\"fedledger-key='client-{partition_id}'\", with a keystore key of that name "
                "(`fedledger keys new`)",
            )
        fields = {str(k).replace("-", "_"): v for k, v in ctxt.node_config.items()}
        try:
            return str(template).format_map(fields)
        except (KeyError, ValueError, IndexError) as exc:
            raise ConfigError(
                f"the key template {template!r} names {exc} that this client's node config "
                f"does not have ({sorted(fields)})"
            ) from exc

    def _session(self, key: str) -> fedledger.Session:
        """One session per key, kept: unlocking a key and connecting happen once per client
        and process."""
        cached = (key, repr(sorted(self.connect.items())))
        if cached not in _SESSIONS:
            _SESSIONS[cached] = fedledger.connect(key=key, **self.connect)
        return _SESSIONS[cached]


def _ledger_config(content: RecordDict) -> Mapping[str, Any]:
    """The incoming message's config record that names the ledger's task and round."""
    for rec in content.config_records.values():
        if records.TASK_CONFIG in rec:
            return rec
    return {}


def _int(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expected an integer, got {value!r}") from exc
