"""Gas of every ledger-v2 transaction on anvil, beside the floor the EVM gas schedule sets for it.

Each figure is a real transaction's ``gasUsed`` (its receipt), measured in steady state: the
task has run a warm-up round first, so slots written once per task or per validator are not
counted (the first round's figures are printed too). Relayed figures are a batch
transaction's gas divided by its entries. Transactions are signed and encoded here with
eth_account and web3 directly (no SDK), against the contract compiled from ``contracts/``.

The floor of a path is what no implementation of the interface can go below: intrinsic
21,000 (shared by a batch's entries) + the transaction's own calldata (16 gas per non-zero
byte, 4 per zero byte; from Prague on, EIP-7623 makes it at least 10 per calldata token,
a token being a zero byte or a quarter of a non-zero one) + the unavoidable work: per relayed
update one ``ecrecover`` (3,000) and one cold admission read (2,100), per direct update or
attestation one cold admission read (2,100). ``ratio`` = gas / floor. docs/ledger_v2.md
explains what each path spends above its floor.

    .venv/bin/python benchmarks/gas.py

Prints a table; the LAST line is one JSON object with ``submitUpdate``,
``relayed_per_update_64``, ``relayed_per_update_16``, ``attestRound`` (the larger of the two
attestations of a quorum-2 round: the proposing ``attestRound`` and the finalising
``confirmRound``), ``updates_per_block`` and ``<path>_floor_ratio`` for each, plus the other
paths (``submitUpdateFor``, ``sealRound``, ``attestRound_propose``, ``confirmRound``,
``attestRound_quorum_1``) and the first round's figures.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "client"))

from eth_abi import encode  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402
from eth_utils import keccak  # noqa: E402
from web3 import Web3  # noqa: E402
from web3.logs import DISCARD  # noqa: E402

from fedledger.chain.artifacts import compile_sources  # noqa: E402
from fedledger.chain.devnet import dev_private_keys, start_anvil  # noqa: E402

BLOCK_GAS = 30_000_000
TARGETS = {
    "submitUpdate": 40_000,
    "relayed_per_update_64": 10_000,
    "relayed_per_update_16": 12_000,
    "attestRound": 60_000,
}
INTRINSIC, ECRECOVER, COLD_READ = 21_000, 3_000, 2_100
SIGNERS = 64
UPDATE_TYPE = (
    b"Update(uint256 taskId,uint64 round,bytes32 contentHash,bytes32 cidDigest,"
    b"bytes32 tensorRoot,uint64 numSamples,uint64 deadline)"
)
DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"


def h(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


@dataclass
class Row:
    path: str
    gas: float
    floor: float

    @property
    def ratio(self) -> float:
        return self.gas / self.floor


class Bench:
    """A deployed ledger, its task owner (account 0, also the relayer), one direct
    contributor, two validators and 64 signing contributors."""

    def __init__(self, w3: Web3, keys: list[str]) -> None:
        self.w3 = w3
        self.owner, self.direct, self.v1, self.v2 = (Account.from_key(k) for k in keys[:4])
        self.signers = [Account.from_key(h(f"signer{i}")) for i in range(SIGNERS)]
        self.fixed_point: set[int] = set()
        self.hardfork = self._hardfork()
        self.eip7623 = self.hardfork not in ("cancun", "shanghai", "paris", "london", "berlin")
        art = compile_sources(ROOT)
        self.ledger = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = self.send(self.owner, self.ledger.constructor())
        self.ledger = w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)
        self.domain = keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    keccak(DOMAIN_TYPE),
                    keccak(b"TrainingLedger"),
                    keccak(b"2"),
                    w3.eth.chain_id,
                    self.ledger.address,
                ],
            )  # fmt: skip
        )

    def _hardfork(self) -> str:
        try:
            info = self.w3.provider.make_request("anvil_nodeInfo", [])  # type: ignore[arg-type]
            return str(info["result"]["hardFork"]).lower()
        except Exception:  # noqa: BLE001 - not anvil: tell by the header (EIP-7685: Prague on)
            return "prague" if "requestsHash" in self.w3.eth.get_block("latest") else "cancun"

    # -- transactions ---------------------------------------------------------------------

    def send(self, acct: LocalAccount, call: Any) -> Any:
        tx = call.build_transaction(
            {"from": acct.address, "nonce": self.w3.eth.get_transaction_count(acct.address)}
        )
        tx["gas"] = int(self.w3.eth.estimate_gas(tx) * 1.2) + 50_000
        signed = acct.sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1, receipt
        return receipt

    def floor(self, receipt: Any, unavoidable: int) -> int:
        """21,000 + calldata + ``unavoidable``; under EIP-7623 at least 21,000 + 10 a token."""
        data = bytes(self.w3.eth.get_transaction(receipt["transactionHash"])["input"])
        zeros = data.count(0)
        tokens = zeros + 4 * (len(data) - zeros)
        standard = INTRINSIC + 4 * tokens + unavoidable
        return max(standard, INTRINSIC + 10 * tokens) if self.eip7623 else standard

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    # -- the task -------------------------------------------------------------------------

    def task(self, quorum: int, fixed_point: bool = False) -> int:
        """A task with the direct contributor, 64 signers and both validators; the updates of a
        fixed-point task carry a (non-zero) tensor root, a float task's a zero one."""
        fn = self.ledger.functions
        cfg = (h("model"), "bafk-model", "bafk-spec", 1, 1000, quorum, 0, False, 10_000, 600)
        receipt = self.send(self.owner, fn.createTask(cfg))
        tid = int(
            self.ledger.events.TaskCreated().process_receipt(receipt, errors=DISCARD)[0]["args"][
                "taskId"
            ]
        )
        for a in [self.direct, *self.signers]:
            self.send(self.owner, fn.addContributor(tid, a.address))
        self.send(self.owner, fn.addValidator(tid, self.v1.address))
        self.send(self.owner, fn.addValidator(tid, self.v2.address))
        if fixed_point:
            self.fixed_point.add(tid)
        return tid

    def update(self, tid: int, rnd: int, who: str) -> tuple[bytes, bytes, bytes, int]:
        tag = f"{tid}/{rnd}/{who}"
        root = h("root " + tag) if tid in self.fixed_point else bytes(32)
        return h("content " + tag), h("cid " + tag), root, 100 + rnd

    def sign(self, signer: LocalAccount, tid: int, rnd: int, deadline: int) -> tuple[Any, ...]:
        """(contentHash, cidDigest, tensorRoot, numSamples, deadline, r, vs) of a signed update."""
        c, d, t, n = self.update(tid, rnd, signer.address)
        struct = keccak(
            encode(
                [
                    "bytes32",
                    "uint256",
                    "uint64",
                    "bytes32",
                    "bytes32",
                    "bytes32",
                    "uint64",
                    "uint64",
                ],
                [keccak(UPDATE_TYPE), tid, rnd, c, d, t, n, deadline],
            )
        )
        sig = Account.unsafe_sign_hash(keccak(b"\x19\x01" + self.domain + struct), signer.key)
        vs = sig.s | ((sig.v - 27) << 255)
        return c, d, t, n, deadline, sig.r.to_bytes(32, "big"), vs.to_bytes(32, "big")

    def entries(self, tid: int, rnd: int, signers: list[LocalAccount]) -> bytes:
        deadline = self.now() + 3600  # a realistic deadline: 4 non-zero bytes of 8
        out = b""
        for s in signers:
            c, d, t, n, dl, r, vs = self.sign(s, tid, rnd, deadline)
            out += c + d + t + n.to_bytes(8, "big") + dl.to_bytes(8, "big") + r + vs
        return out

    def result(self, tid: int, rnd: int) -> tuple[Any, ...]:
        r = self.ledger.functions.getRound(tid, rnd).call()
        record_hash, count = r[2], r[1]
        salt = f"{tid}/{rnd}"
        return (record_hash, count, h("verdictRoot " + salt), h("verdictHash " + salt),
                h("verdictCid " + salt), h("aggregate " + salt), h("aggregateCid " + salt),
                h("aggregateRoot " + salt))  # fmt: skip

    # -- the measured paths ---------------------------------------------------------------

    def batch(self, tid: int, rnd: int, signers: list[LocalAccount]) -> Row:
        receipt = self.send(
            self.owner, self.ledger.functions.submitBatch(tid, rnd, self.entries(tid, rnd, signers))
        )
        assert not self.ledger.events.EntrySkipped().process_receipt(receipt, errors=DISCARD), (
            "an entry skipped"
        )
        n = len(signers)
        return Row(
            f"submitBatch ({n})",
            receipt["gasUsed"],
            self.floor(receipt, n * (ECRECOVER + COLD_READ)),
        )

    def round(self, tid: int, rnd: int) -> dict[str, Row]:
        """A round of a quorum-2 task: one direct update, batches of 16 and 48, seal, attest,
        confirm (which finalises)."""
        fn, rows = self.ledger.functions, {}
        r = self.send(self.direct, fn.submitUpdate(tid, rnd, *self.update(tid, rnd, "direct")))
        rows["submitUpdate"] = Row("submitUpdate", r["gasUsed"], self.floor(r, COLD_READ))
        rows["batch_16"] = self.batch(tid, rnd, self.signers[:16])
        rows["batch_48"] = self.batch(tid, rnd, self.signers[16:])
        r = self.send(self.v1, fn.sealRound(tid, rnd))
        rows["sealRound"] = Row("sealRound", r["gasUsed"], self.floor(r, COLD_READ))
        res = self.result(tid, rnd)
        r = self.send(self.v1, fn.attestRound(tid, rnd, res))
        rows["attestRound_propose"] = Row(
            "attestRound (proposes; sealed round, quorum 2)", r["gasUsed"], self.floor(r, COLD_READ)
        )
        digest = fn.resultDigest(tid, rnd, res).call()
        r = self.send(self.v2, fn.confirmRound(tid, rnd, digest))
        rows["confirmRound"] = Row(
            "confirmRound (finalises, quorum 2)", r["gasUsed"], self.floor(r, COLD_READ)
        )
        assert fn.currentRound(tid).call() == rnd + 1
        return rows

    def relayed_64(self, tid: int, rnd: int) -> Row:
        """One batch of all 64 signers, in a round of its own (then attested away)."""
        row = self.batch(tid, rnd, self.signers)
        self.finish(tid, rnd)
        return row

    def submit_for(self, tid: int, rnd: int) -> Row:
        fn = self.ledger.functions
        signer = self.signers[0]
        c, d, t, n, dl, r, vs = self.sign(signer, tid, rnd, self.now() + 3600)
        call = fn.submitUpdateFor(tid, rnd, c, d, t, n, signer.address, dl, r + vs)
        receipt = self.send(self.owner, call)
        self.finish(tid, rnd)
        return Row("submitUpdateFor (64-byte signature)", receipt["gasUsed"],
                   self.floor(receipt, ECRECOVER + COLD_READ))  # fmt: skip

    def finish(self, tid: int, rnd: int) -> None:
        fn = self.ledger.functions
        res = self.result(tid, rnd)
        self.send(self.v1, fn.attestRound(tid, rnd, res))
        self.send(self.v2, fn.confirmRound(tid, rnd, fn.resultDigest(tid, rnd, res).call()))

    def quorum_1(self) -> tuple[Row, Row]:
        """A quorum-1 task: one attestation seals, proposes and finalises (round 0, then 1)."""
        fn = self.ledger.functions
        tid = self.task(1)
        rows = []
        for rnd in (0, 1):
            self.send(self.direct, fn.submitUpdate(tid, rnd, *self.update(tid, rnd, "q1")))
            r = self.send(self.v1, fn.attestRound(tid, rnd, self.result(tid, rnd)))
            rows.append(Row("attestRound (seals, proposes, finalises; quorum 1)", r["gasUsed"],
                            self.floor(r, COLD_READ)))  # fmt: skip
        return rows[0], rows[1]


def per_update(row: Row, n: int) -> Row:
    return Row(f"{row.path}, per update", row.gas / n, row.floor / n)


def row_line(row: Row, target: int | None = None) -> str:
    mark = "" if target is None else f"{target:>9,}" + (" ok" if row.gas <= target else " MISS")
    return f"{row.path:<58} {row.gas:>9,.0f} {row.floor:>9,.0f} {row.ratio:>6.2f} {mark}"


def main() -> None:
    with start_anvil(accounts=4) as dn:
        w3 = Web3(Web3.HTTPProvider(dn.url))
        bench = Bench(w3, dev_private_keys(4))
        tid = bench.task(2)  # a float task: tensorRoot 0
        first = bench.round(tid, 0)
        steady = bench.round(tid, 1)
        r64 = bench.relayed_64(tid, 2)
        for_ = bench.submit_for(tid, 3)
        q1_first, q1 = bench.quorum_1()
        fp = bench.task(2, fixed_point=True)  # a fixed-point task: a tensor root per update
        bench.round(fp, 0)
        fp_steady = bench.round(fp, 1)
        fp64 = bench.relayed_64(fp, 2)

    attest = max(steady["attestRound_propose"], steady["confirmRound"], key=lambda r: r.gas)
    rows = {
        "submitUpdate": steady["submitUpdate"],
        "submitUpdateFor": for_,
        "relayed_per_update_16": per_update(steady["batch_16"], 16),
        "relayed_per_update_64": per_update(r64, 64),
        "sealRound": steady["sealRound"],
        "attestRound_propose": steady["attestRound_propose"],
        "confirmRound": steady["confirmRound"],
        "attestRound": Row(
            f"attestRound = max of the two above ({attest.path.split(' ')[0]})",
            attest.gas,
            attest.floor,
        ),  # fmt: skip
        "attestRound_quorum_1": q1,
    }
    fixed = {
        "submitUpdate_fixed_point": fp_steady["submitUpdate"],
        "relayed_per_update_16_fixed_point": per_update(fp_steady["batch_16"], 16),
        "relayed_per_update_64_fixed_point": per_update(fp64, 64),
    }
    fork = f"{bench.hardfork}, " + ("EIP-7623 calldata floor" if bench.eip7623 else "no EIP-7623")
    print(f"TrainingLedger v2 gas on anvil ({fork}), steady state (after a warm-up round)")
    print("float task (tensorRoot = 0); deadlines an hour ahead; 100 samples an update\n")
    print(f"{'path':<58} {'gas':>9} {'floor':>9} {'ratio':>6} {'target':>9}")
    for key, row in rows.items():
        print(row_line(row, TARGETS.get(key)))
    print("\nfixed-point task (a non-zero tensorRoot: 32 more non-zero calldata bytes an update)")
    for key, row in fixed.items():
        print(row_line(row, TARGETS.get(key.removesuffix("_fixed_point"))))
    first_rows = {
        "submitUpdate": first["submitUpdate"],
        "relayed_per_update_16": per_update(first["batch_16"], 16),
        "sealRound": first["sealRound"],
        "attestRound_propose": first["attestRound_propose"],
        "confirmRound": first["confirmRound"],
        "attestRound_quorum_1": q1_first,
    }
    print("\nfirst round (slots written once per task or validator included):")
    for row in first_rows.values():
        print(f"  {row.path:<56} {row.gas:>9,.0f}")
    batches = int(BLOCK_GAS // r64.gas)
    per_block = batches * 64
    print(f"\nrelayed updates per 30M-gas block at batch 64: {per_block:,} "
          f"({batches} batches of {r64.gas:,.0f} gas)")  # fmt: skip
    figures: dict[str, Any] = {k: round(v.gas) for k, v in rows.items()}
    figures["updates_per_block"] = per_block
    for key, row in rows.items():
        figures[f"{key}_floor_ratio"] = round(row.ratio, 3)
    for key, row in fixed.items():
        figures[key] = round(row.gas)
        figures[f"{key}_floor_ratio"] = round(row.ratio, 3)
    figures.update({f"first_round_{k}": round(v.gas) for k, v in first_rows.items()})
    figures["hardfork"] = bench.hardfork
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
