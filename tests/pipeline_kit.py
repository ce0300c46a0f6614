"""Helpers for the end-to-end tests: a task on a real devnet with real trained updates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey

from fedledger.chain.ledger import Ledger, hex32
from fedledger.content.store import ContentStore
from fedledger.flows.contribute import ContributorOptions, LocalData, make_update
from fedledger.flows.local_data import partition_share
from fedledger.flows.task import TaskState, create_task, load_task
from fedledger.learning.models import build_model, state_to_numpy
from fedledger.protocol import codec
from fedledger.protocol.taskspec import TaskSpec, TrainingParams
from fedledger_backend.db import Database
from fedledger_backend.service import Backend


@dataclass
class Scenario:
    ledger: Ledger
    store: ContentStore
    task_id: int
    owner: LocalAccount
    contributors: list[LocalAccount]
    validators: list[LocalAccount]
    n_parts: int

    def as_(self, acct: LocalAccount) -> Ledger:
        return self.ledger.with_account(acct)

    def state(self) -> TaskState:
        return load_task(self.ledger, self.store, self.task_id)

    def local(self, i: int) -> LocalData:
        return partition_share("digits", i, self.n_parts, 0.0, 0)

    def honest_update(
        self, i: int, *, attack: str | None = None, **params: object
    ) -> tuple[bytes, int]:
        """A real update trained by contributor i on its IID share (optionally attacked)."""
        work = make_update(
            self.as_(self.contributors[i]),
            self.store,
            self.task_id,
            self.local(i),
            ContributorOptions(seed=i + 1, attack=attack, attack_params=dict(params)),
            contributor=self.contributors[i].address,
        )
        return work.data, work.num_samples

    def _root(self, data: bytes, st: Any) -> str:
        return _tensor_root(self.store, data, st)

    def submit_bytes(
        self,
        i: int,
        data: bytes,
        samples: int = 100,
        *,
        store_it: bool = True,
        claimed_hash: str | None = None,
        tensor_root: str | None = None,
    ) -> int:
        """Submit raw bytes as contributor i, bypassing the SDK's own checks (as an attacker
        would: a ``claimed_hash`` other than the bytes' own goes on chain as it is)."""
        from fedledger.content.cid import compute_cid, parse_cid

        cid = self.store.put(data) if store_it else compute_cid(data)
        h = claimed_hash or codec.sha256_hex(data)
        st = self.state()
        led = self.as_(self.contributors[i])
        root = tensor_root if tensor_root is not None else self._root(data, st)
        fn = led.contract.functions.submitUpdate(
            self.task_id, st.current_round, hex32(h), parse_cid(cid).digest, hex32(root), samples
        )
        assert led.sender is not None
        return led.update_ids(led.sender.transact(fn, label="submitUpdate (raw)"))[0]


def _tensor_root(store: ContentStore, data: bytes, st: Any) -> str:
    """The tensorRoot an honest contributor records for ``data`` (zero if it has none)."""
    from fedledger.flows.task import global_model
    from fedledger.protocol import rounds
    from fedledger.protocol.aggregation import TensorLayout

    try:
        layout = TensorLayout.of(global_model(store, st))
        dec = codec.decode(data, kind="update")
        return rounds.update_tensor_root(dec, layout, st.spec.fixed_point_format())
    except Exception:  # noqa: BLE001 - an attacker's file: it records none
        return rounds.ZERO_ROOT


def make_scenario(
    ledger: Ledger,
    store: ContentStore,
    accounts: list[LocalAccount],
    *,
    n_contributors: int,
    n_validators: int = 1,
    quorum: int = 1,
    rule: dict | None = None,
    min_updates: int | None = None,
    max_updates: int | None = None,
    round_duration: int = 0,
    screening: dict | None = None,
    max_samples: int = 1000,
    fixed_point: dict | None = None,
    privacy: dict | None = None,
) -> Scenario:
    owner = accounts[0]
    validators = accounts[1 : 1 + n_validators]
    contributors = accounts[1 + n_validators : 1 + n_validators + n_contributors]
    spec = TaskSpec(
        model="mlp_digits",
        dataset="digits",
        training=TrainingParams(epochs=1, lr=0.1),
        aggregation=rule or {"rule": "median"},
        screening=screening or {},
        fetch_timeout_s=5,
        fixed_point=fixed_point,
        privacy=privacy,
    )
    initial = state_to_numpy(build_model("mlp_digits", seed=0))
    task_id = create_task(
        ledger,
        store,
        spec,
        initial,
        max_samples=max_samples,
        min_updates=min_updates or n_contributors,
        max_updates=max_updates or n_contributors,
        quorum=quorum,
        round_duration=round_duration,
    )
    for c in contributors:
        ledger.add_contributor(task_id, c.address)
    for v in validators:
        ledger.add_validator(task_id, v.address)
    return Scenario(ledger, store, task_id, owner, contributors, validators, max(n_contributors, 4))


def backend_for(
    sc: Scenario,
    validator: LocalAccount | None,
    db_path: Path,
    *,
    evaluate: bool = False,
    committee_key: PrivateKey | None = None,
) -> Backend:
    led = Ledger(sc.ledger.w3, sc.ledger.address, from_block=sc.ledger.from_block)
    return Backend(
        ledger=led,
        store=sc.store,
        db=Database(f"sqlite:///{db_path}"),
        account=validator,
        evaluate=evaluate,
        committee_key=committee_key,
    )


def zero_like(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.zeros_like(v) for k, v in tensors.items()}
