"""The court of optimistic verification (``contracts/Court.sol``): typed calls and sends.

A task whose owner hands it to a court (``TrainingLedger.setCourt``) only *attests* a round on
quorum; the round is *settled* once its challenge window passes without a successful challenge
(docs/verification.md).  This module wraps the court's ABI for the task owner (terms, pool),
validators (bond, unbond, withdraw), watchers (challenge, stage, resolve) and contributors
(claim).  The fraud proof's inputs are built one layer up (:mod:`fedledger.flows.watch`); here
they are plain :class:`ProofInput` values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.logs import DISCARD

from fedledger.chain import artifacts as contracts
from fedledger.chain.ledger import Ledger, NonceManager, Sender, hex32
from fedledger.chain.records import RoundResult
from fedledger.errors import ChainError, ConfigError

UNCLIPPED = 1 << 32
"""The clip multiplier of an update left unclipped (docs/aggregation.md section 4)."""

MAX_STAGE_BYTES = 120_000
"""Calldata a ``stage`` transaction carries at most, below the 128 KB transaction limit."""


class Rule(IntEnum):
    """``ICourt.Rule``: the rule the fraud proof recomputes (``NONE``: not provable)."""

    NONE = 0
    FEDAVG = 1
    MEDIAN = 2
    TRIMMED_MEAN = 3


class RoundStatus(IntEnum):
    """``ICourt.RoundStatus``."""

    NONE = 0
    ATTESTED = 1
    SETTLED = 2
    VOIDED = 3


@dataclass(frozen=True)
class Terms:
    """``ICourt.Terms`` (see the interface for each field)."""

    bond: int
    challenger_bond: int
    challenge_window: int
    unbonding_delay: int
    challenger_share_bps: int = 5000
    rule: Rule = Rule.FEDAVG
    weight_cap: int = 0
    beta_num: int = 0
    beta_den: int = 1

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.bond,
            self.challenger_bond,
            self.challenge_window,
            self.unbonding_delay,
            self.challenger_share_bps,
            int(self.rule),
            self.weight_cap,
            self.beta_num,
            self.beta_den,
        )


@dataclass(frozen=True)
class ProofInput:
    """``ICourt.Input``: one record of a challenged round with its verdict leaf and, when
    accepted, coordinate ``j`` of its tensor with the proof."""

    contributor: str
    content_hash: str
    cid_digest: bytes
    tensor_root: str
    num_samples: int
    verdict: int
    clip: int
    reward: int
    verdict_proof: Sequence[bytes]
    leaf: bytes = b""
    leaf_proof: Sequence[bytes] = ()

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            to_checksum_address(self.contributor),
            hex32(self.content_hash),
            self.cid_digest,
            hex32(self.tensor_root),
            self.num_samples,
            self.verdict,
            self.clip,
            self.reward,
            [bytes(p) for p in self.verdict_proof],
            bytes(self.leaf),
            [bytes(p) for p in self.leaf_proof],
        )

    def size(self) -> int:
        """Its ABI-encoded size in bytes, roughly (for packing stage transactions)."""
        return 15 * 32 + 32 * (len(self.verdict_proof) + len(self.leaf_proof)) + len(self.leaf)


class Court:
    """Court at one address, for one ledger."""

    def __init__(self, w3: Web3, address: str, sender: Sender | None = None) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(
            address=self.address, abi=contracts.load_artifact(contracts.COURT_ARTIFACT_PATH).abi
        )
        self.sender = sender

    @staticmethod
    def deploy(
        w3: Web3, account: LocalAccount, ledger: Ledger, nonces: NonceManager | None = None
    ) -> Court:
        """Deploy a court for ``ledger``; ``nonces``: share the ledger's nonce manager when
        the same keys send through both."""
        art = contracts.load_artifact(contracts.COURT_ARTIFACT_PATH)
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        if nonces is None:
            nonces = ledger.sender.nonces if ledger.sender is not None else NonceManager(w3)
        sender = Sender(w3, account, nonces)
        receipt = sender.transact(factory.constructor(ledger.address), label="deploy Court")
        return Court(w3, receipt["contractAddress"], sender)

    def with_account(self, account: LocalAccount, nonces: NonceManager | None = None) -> Court:
        nm = nonces or (self.sender.nonces if self.sender else NonceManager(self.w3))
        return Court(self.w3, self.address, Sender(self.w3, account, nm))

    def _send(self, fn: Any, label: str, *, value: int = 0, gas: int | None = None) -> Any:
        if self.sender is None:
            raise ConfigError("this action sends a transaction and needs a key", hint="pass --key")
        return self.sender.wait(self.sender.send(fn, label=label, value=value, gas=gas))

    def _call(self, fn: Any, label: str) -> Any:
        try:
            return fn.call()
        except Exception as exc:  # noqa: BLE001 - decoded into the named error below
            raise Sender._explain(exc, label) from exc

    # -- task owner ---------------------------------------------------------------------------

    def set_terms(self, task_id: int, terms: Terms) -> Any:
        fn = self.contract.functions.setTerms(task_id, terms.as_tuple())
        return self._send(fn, f"setTerms({task_id})")

    def fund(self, task_id: int, amount: int) -> Any:
        return self._send(self.contract.functions.fund(task_id), f"fund({task_id})", value=amount)

    # -- validators ---------------------------------------------------------------------------

    def bond(self, task_id: int) -> Any:
        amount = self.terms(task_id)["bond"]
        return self._send(self.contract.functions.bond(task_id), f"bond({task_id})", value=amount)

    def unbond(self, task_id: int) -> Any:
        return self._send(self.contract.functions.unbond(task_id), f"unbond({task_id})")

    def withdraw(self, task_id: int) -> Any:
        return self._send(self.contract.functions.withdraw(task_id), f"withdraw({task_id})")

    # -- windows ------------------------------------------------------------------------------

    def settle(self, task_id: int, round_: int, result: RoundResult) -> Any:
        fn = self.contract.functions.settle(task_id, round_, result.as_tuple())
        return self._send(fn, f"settle({task_id}, {round_})")

    # -- fraud proof --------------------------------------------------------------------------

    def challenge(
        self,
        task_id: int,
        round_: int,
        result: RoundResult,
        coordinate: int,
        leaf: bytes,
        proof: Sequence[bytes],
    ) -> tuple[int, Any]:
        """Open a challenge of ``coordinate``; returns its id and the receipt."""
        bond = self.terms(task_id)["challengerBond"]
        fn = self.contract.functions.challenge(
            task_id, round_, result.as_tuple(), coordinate, leaf, [bytes(p) for p in proof]
        )
        receipt = self._send(fn, f"challenge({task_id}, {round_}, {coordinate})", value=bond)
        opened = self.contract.events.ChallengeOpened().process_receipt(receipt, errors=DISCARD)
        if not opened:
            raise ChainError("challenge: no ChallengeOpened event in the receipt")
        return int(opened[0]["args"]["challengeId"]), receipt

    def stage(self, challenge_id: int, inputs: Sequence[ProofInput]) -> list[Any]:
        """Stage ``inputs`` in as many transactions as :data:`MAX_STAGE_BYTES` needs."""
        receipts = []
        batch: list[ProofInput] = []
        size = 0
        for x in inputs:
            if batch and size + x.size() > MAX_STAGE_BYTES:
                receipts.append(self._stage_one(challenge_id, batch))
                batch, size = [], 0
            batch.append(x)
            size += x.size()
        if batch:
            receipts.append(self._stage_one(challenge_id, batch))
        return receipts

    def _stage_one(self, challenge_id: int, batch: Sequence[ProofInput]) -> Any:
        fn = self.contract.functions.stage(challenge_id, [x.as_tuple() for x in batch])
        return self._send(fn, f"stage({challenge_id}, {len(batch)} records)")

    def resolve(self, challenge_id: int, values: bytes = b"") -> tuple[bool, Any]:
        """Decide the challenge; returns whether the round was overturned, and the receipt."""
        fn = self.contract.functions.resolve(challenge_id, values)
        receipt = self._send(fn, f"resolve({challenge_id})")
        ev = self.contract.events.ChallengeResolved().process_receipt(receipt, errors=DISCARD)
        return bool(ev[0]["args"]["overturned"]), receipt

    def expire(self, challenge_id: int) -> Any:
        return self._send(self.contract.functions.expire(challenge_id), f"expire({challenge_id})")

    # -- rewards ------------------------------------------------------------------------------

    def claim(
        self,
        task_id: int,
        round_: int,
        update_id: int,
        contributor: str,
        content_hash: str,
        clip: int,
        reward: int,
        proof: Sequence[bytes],
    ) -> Any:
        fn = self.contract.functions.claim(
            task_id,
            round_,
            update_id,
            to_checksum_address(contributor),
            hex32(content_hash),
            clip,
            reward,
            [bytes(p) for p in proof],
        )
        return self._send(fn, f"claim(update {update_id})")

    # -- views --------------------------------------------------------------------------------

    def terms(self, task_id: int) -> dict[str, Any]:
        raw = self._call(self.contract.functions.getTerms(task_id), f"getTerms({task_id})")
        names = [c["name"] for c in self._outputs("getTerms")[0]["components"]]
        return dict(zip(names, raw, strict=True))

    def _outputs(self, name: str) -> list[dict[str, Any]]:
        abi: list[dict[str, Any]] = cast(Any, self.contract.abi)
        for item in abi:
            if item.get("type") == "function" and item.get("name") == name:
                return list(item["outputs"])
        raise ConfigError(f"{name} missing from the Court ABI")

    def round_status(self, task_id: int, round_: int) -> tuple[RoundStatus, int]:
        """The court's status of a round and when its window ends (0: not attested)."""
        status, ends = self._call(
            self.contract.functions.roundStatus(task_id, round_), "roundStatus"
        )
        return RoundStatus(int(status)), int(ends)

    def round_record(self, task_id: int, round_: int) -> dict[str, Any]:
        raw = self._call(self.contract.functions.getRoundRecord(task_id, round_), "getRoundRecord")
        names = [c["name"] for c in self._outputs("getRoundRecord")[0]["components"]]
        return dict(zip(names, raw, strict=True))

    def is_bonded(self, task_id: int, who: str) -> bool:
        fn = self.contract.functions.isBonded(task_id, to_checksum_address(who))
        return bool(self._call(fn, "isBonded"))

    def bond_of(self, task_id: int, who: str) -> dict[str, Any]:
        raw = self._call(
            self.contract.functions.getBond(task_id, to_checksum_address(who)), "getBond"
        )
        names = [c["name"] for c in self._outputs("getBond")[0]["components"]]
        return dict(zip(names, raw, strict=True))

    def pool(self, task_id: int) -> int:
        return int(self._call(self.contract.functions.pool(task_id), "pool"))

    def is_claimed(self, task_id: int, update_id: int) -> bool:
        return bool(self._call(self.contract.functions.isClaimed(task_id, update_id), "isClaimed"))

    def totals(self) -> dict[str, int]:
        raw = self._call(self.contract.functions.totals(), "totals")
        names = ("deposited", "held", "slashed", "refunded", "withdrawn", "funded")
        return dict(zip(names, (int(x) for x in raw), strict=True))

    def pending_rounds(self, task_id: int, from_block: int = 0) -> list[dict[str, Any]]:
        """Every ``RoundPending`` of the task so far (round, digest, windowEndsAt, block)."""
        logs = self.contract.events.RoundPending().get_logs(
            from_block=from_block, argument_filters={"taskId": task_id}
        )
        return [
            {
                "round": int(log["args"]["round"]),
                "digest": bytes(log["args"]["digest"]),
                "windowEndsAt": int(log["args"]["windowEndsAt"]),
                "block": int(log["blockNumber"]),
            }
            for log in logs
        ]
