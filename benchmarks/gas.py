"""Gas of every ledger-v2 transaction on anvil, beside the floor the EVM gas schedule sets for it.

Each figure is a real transaction's ``gasUsed`` (its receipt), measured in steady state: the
task has run a warm-up round first, so slots that are written once per task or per validator
(the first use of a dedup word, a validator's tally slot) are not counted; the first round's
figures are printed too.  Relayed figures are a batch transaction's gas divided by its entries.

The floor of each path is what no implementation of the same interface can go below (the
issue's definition): intrinsic 21,000 (shared by a batch's entries) + the transaction's own
calldata (16 gas per non-zero byte, 4 per zero byte; under EIP-7623, on Prague and later, at
least 10 per calldata token, whichever is larger) + the unavoidable work: per relayed update
one ``ecrecover`` (3,000) and one cold admission read (2,100), per direct update or
attestation one cold admission read (2,100).  ``ratio`` = gas / floor.

What v2 spends above the floor, per path (docs/ledger_v2.md has the slot layout):

* an update: the running record hash (one slot rewritten per transaction), the round-tagged
  dedup word (one per 224 contributors per transaction), its share of one event (a batch emits
  one ``UpdatesRelayed`` with 124 bytes a record), and Solidity's own code;
* an attestation: the task slot, the tally slot, ``RoundAttested``; the finalising one also
  keeps the round's digest (the one new slot per round, 22,100) and emits ``RoundFinalized``.

    .venv/bin/python benchmarks/gas.py

Prints a table; the LAST line is one JSON object: ``submitUpdate``, ``relayed_per_update_64``,
``relayed_per_update_16``, ``attestRound``, ``updates_per_block`` and ``<path>_floor_ratio``
for each, plus ``confirmRound``, ``sealRound``, ``attestRound_quorum_1``, ``submitUpdateFor``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402

from fedledger.chain.devnet import dev_private_keys, start_anvil  # noqa: E402
from fedledger.chain.ledger import Ledger, TaskConfig, connect  # noqa: E402
from fedledger.chain.records import RoundResult  # noqa: E402
from fedledger.content.cid import compute_cid  # noqa: E402

BLOCK_GAS = 30_000_000
TARGETS = {
    "submitUpdate": 40_000,
    "relayed_per_update_64": 10_000,
    "relayed_per_update_16": 12_000,
    "attestRound": 60_000,
}
ECRECOVER, COLD_READ = 3_000, 2_100


def update(tag: str) -> tuple[str, str]:
    data = tag.encode()
    return "0x" + hashlib.sha256(data).hexdigest(), compute_cid(data)


@dataclass
class Row:
    path: str
    gas: float
    floor: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.gas / self.floor


class Bench:
    def __init__(self, led: Ledger, owner: LocalAccount, accounts: list[LocalAccount]) -> None:
        self.led, self.w3 = led, led.w3
        self.signers = [
            Account.from_key(hashlib.sha256(b"signer%d" % i).digest()) for i in range(64)
        ]
        self.direct = accounts[1]
        self.v1, self.v2 = accounts[2], accounts[3]
        block = self.w3.eth.get_block("latest")
        self.prague = "requestsHash" in block  # EIP-7685 header field: Prague or later (EIP-7623)

    def floor(self, receipt: Any, unavoidable: int) -> int:
        """21,000 + calldata + ``unavoidable`` execution; under EIP-7623 at least 21,000 + 10 per
        calldata token (the larger of the two is what the transaction cannot go below)."""
        data = bytes(self.w3.eth.get_transaction(receipt["transactionHash"])["input"])
        zeros = data.count(0)
        standard = 21_000 + 4 * zeros + 16 * (len(data) - zeros) + unavoidable
        tokens = zeros + 4 * (len(data) - zeros)
        return max(standard, 21_000 + 10 * tokens) if self.prague else standard

    def task(self, quorum: int) -> int:
        led = self.led
        tid = led.create_task(
            TaskConfig(
                "0x" + "11" * 32,
                compute_cid(b"m"),
                compute_cid(b"s"),
                1,
                1000,
                quorum,
                max_samples=10_000,
            )  # fmt: skip
        )
        for a in [self.direct, *self.signers]:
            led.add_contributor(tid, a.address)
        led.add_validator(tid, self.v1.address)
        led.add_validator(tid, self.v2.address)
        return tid

    def result(self, tid: int, rnd: int) -> RoundResult:
        r = self.led.get_round(tid, rnd)
        return RoundResult(
            "0x" + bytes(r["recordHash"]).hex(), int(r["updateCount"]), "0x" + "22" * 32,
            "0x" + "33" * 32, compute_cid(b"v%d" % rnd), "0x" + "44" * 32, compute_cid(b"a%d" % rnd),
            "0x" + "55" * 32,
        )  # fmt: skip

    def round(self, tid: int, rnd: int) -> dict[str, Row]:
        led, rows = self.led, {}
        c = led.with_account(self.direct)
        assert c.sender is not None
        h, cid = update(f"direct-{tid}-{rnd}")
        r = c.sender.transact(c.submit_update_fn(tid, rnd, h, cid, 100), label="submitUpdate")
        rows["submitUpdate"] = Row("submitUpdate", r["gasUsed"], self.floor(r, COLD_READ))
        start = 0
        for n in (16, 48):
            batch = [
                led.sign_update(s, tid, rnd, *update(f"{tid}-{rnd}-{start + j}"), 100, 2**40)
                for j, s in enumerate(self.signers[start : start + n])
            ]
            out = led.submit_batch(batch)
            assert not out.skipped, out.skipped
            gas = out.receipt["gasUsed"]
            floor = self.floor(out.receipt, n * (ECRECOVER + COLD_READ))
            rows[f"batch_{n}"] = Row(f"submitBatch ({n})", gas, floor)
            start += n
        v1, v2 = led.with_account(self.v1), led.with_account(self.v2)
        r = v1.seal_round(tid, rnd)
        rows["sealRound"] = Row("sealRound", r["gasUsed"], self.floor(r, COLD_READ))
        res = self.result(tid, rnd)
        r = v1.attest_round(tid, rnd, res)
        rows["attestRound"] = Row(
            "attestRound (proposes; sealed round, quorum 2)", r["gasUsed"], self.floor(r, COLD_READ)
        )
        r = v2.attest_round(tid, rnd, res)  # confirmRound: the digest was proposed
        rows["confirmRound"] = Row(
            "confirmRound (finalises, quorum 2)", r["gasUsed"], self.floor(r, COLD_READ)
        )
        return rows

    def relayed_64(self, tid: int, rnd: int) -> Row:
        """One batch of all 64 signers, in a round of its own."""
        led = self.led
        batch = [
            led.sign_update(s, tid, rnd, *update(f"x{tid}-{rnd}-{j}"), 100, 2**40)
            for j, s in enumerate(self.signers)
        ]
        out = led.submit_batch(batch)
        assert not out.skipped, out.skipped
        floor = self.floor(out.receipt, 64 * (ECRECOVER + COLD_READ))
        v1, v2 = led.with_account(self.v1), led.with_account(self.v2)
        res = self.result(tid, rnd)
        v1.attest_round(tid, rnd, res)
        v2.attest_round(tid, rnd, res)
        return Row("submitBatch (64)", out.receipt["gasUsed"], floor)

    def quorum_1(self) -> Row:
        tid = self.task(1)
        c = self.led.with_account(self.direct)
        v1 = self.led.with_account(self.v1)
        for rnd in (0, 1):
            c.submit_update(tid, rnd, *update(f"q1-{rnd}"), 100)
            r = v1.attest_round(tid, rnd, self.result(tid, rnd))
        return Row(
            "attestRound (seals, proposes, finalises; quorum 1)",
            r["gasUsed"],
            self.floor(r, COLD_READ),
        )

    def submit_for(self, tid: int, rnd: int) -> Row:
        su = self.led.sign_update(self.signers[0], tid, rnd, *update(f"for-{rnd}"), 100, 2**40)
        r = self.led.sender.transact(  # type: ignore[union-attr]
            self.led.contract.functions.submitUpdateFor(*su.as_tuple()), label="submitUpdateFor"
        )
        return Row("submitUpdateFor", r["gasUsed"], self.floor(r, ECRECOVER + COLD_READ))


def per_update(row: Row, n: int) -> Row:
    return Row(f"{row.path}, per update", row.gas / n, row.floor / n)


def main() -> None:
    with start_anvil(accounts=6) as dn:
        w3 = connect(dn.url)
        accounts = [Account.from_key(k) for k in dev_private_keys(6)]
        led = Ledger.deploy(w3, accounts[0])
        bench = Bench(led, accounts[0], accounts)
        tid = bench.task(2)
        first = bench.round(tid, 0)
        steady = bench.round(tid, 1)
        r64 = bench.relayed_64(tid, 2)
        for_ = bench.submit_for(tid, 3)
        q1 = bench.quorum_1()
        fork = "Prague (EIP-7623 calldata floor)" if bench.prague else "pre-Prague"

    rows = {
        "submitUpdate": steady["submitUpdate"],
        "submitUpdateFor": for_,
        "relayed_per_update_16": per_update(steady["batch_16"], 16),
        "relayed_per_update_64": per_update(r64, 64),
        "sealRound": steady["sealRound"],
        "attestRound": steady["attestRound"],
        "confirmRound": steady["confirmRound"],
        "attestRound_quorum_1": q1,
    }
    print(f"TrainingLedger v2 gas on anvil ({fork}), steady state (after a warm-up round)\n")
    print(f"{'path':<58} {'gas':>9} {'floor':>9} {'ratio':>6} {'target':>8}")
    for key, row in rows.items():
        target = TARGETS.get(key)
        mark = "" if target is None else f"{target:>8,}" + (" ok" if row.gas <= target else " MISS")
        print(f"{row.path:<58} {row.gas:>9,.0f} {row.floor:>9,.0f} {row.ratio:>6.2f} {mark}")
    print("\nfirst round (one-time slots included):")
    for key in ("submitUpdate", "sealRound", "attestRound", "confirmRound"):
        print(f"  {first[key].path:<56} {first[key].gas:>9,.0f}")
    print(f"  {'submitBatch (16), per update':<56} {first['batch_16'].gas / 16:>9,.0f}")
    per_block = int(BLOCK_GAS // rows["relayed_per_update_64"].gas)
    print(f"\nrelayed updates per 30M-gas block at batch 64: {per_block:,}")
    figures: dict[str, Any] = {k: round(v.gas) for k, v in rows.items()}
    figures["updates_per_block"] = per_block
    for key in ("submitUpdate", "relayed_per_update_64", "relayed_per_update_16", "attestRound",
                "confirmRound", "submitUpdateFor"):  # fmt: skip
        figures[f"{key}_floor_ratio"] = round(rows[key].ratio, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
