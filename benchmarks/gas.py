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

A second table measures the court of optimistic verification (contracts/Court.sol), through
the SDK (``fedledger.chain.court``) on the same anvil: ``challenge_fedavg_100``,
``challenge_median_100``, ``challenge_fedavg_1000`` (the total gas of a fraud proof over all its
transactions: open, stage in transactions of at most 120 KB, resolve, against a round of that
many accepted updates of 1,024 random small coordinates each), ``challenge_*_txs`` (how many
transactions), ``claim`` (a reward claim in steady state: its claimed-bitmap word already
written), ``claim_first`` (the first of a word), ``bond`` and ``unbond``. ``--no-court`` skips
it, ``--court-only`` runs only it.
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


def court_figures(w3: Web3, keys: list[str]) -> dict[str, Any]:
    """Gas of the court's paths (see the module docstring), with the SDK."""
    import random

    import numpy as np

    from fedledger.chain.court import UNCLIPPED, Court, ProofInput, Rule, Terms
    from fedledger.chain.ledger import Ledger, NonceManager, SignedUpdate, TaskConfig, to_hex
    from fedledger.chain.records import RoundResult, record_hash
    from fedledger.protocol import merkle, verdicts
    from fedledger.protocol.tensor_root import TensorTree, tensor_root

    accts = [Account.from_key(k) for k in keys]
    owner, validators = accts[0], accts[1:3]
    nonces = NonceManager(w3)
    ledger = Ledger.deploy(w3, owner)
    ledger = ledger.with_account(owner, nonces)
    court = Court.deploy(w3, owner, ledger, nonces)
    rng = random.Random(7)
    figures: dict[str, Any] = {}

    def task(rule: Rule, n: int) -> int:
        t = ledger.create_task(
            TaskConfig(
                model_hash=to_hex(keccak(b"model")),
                model_cid="bafkreimodel",
                spec_cid="bafkreispec",
                min_updates=n,
                max_updates=n,
                quorum=2,
                open=True,
                max_samples=1000,
            )
        )
        for v in validators:
            ledger.add_validator(t, v.address)
        court.set_terms(
            t,
            Terms(
                bond=10**18,
                challenger_bond=10**17,
                challenge_window=3600,
                unbonding_delay=7200,
                rule=rule,
                weight_cap=1000,
                beta_num=1,
                beta_den=10,
            ),
        )
        ledger.set_court(t, court.address)
        for v in validators:
            r = court.with_account(v, nonces).bond(t)
            figures.setdefault("bond", int(r["gasUsed"]))
        return t

    def round_of(t: int, n: int) -> tuple[list[Any], list[np.ndarray], verdicts.VerdictFile]:
        """n updates by fresh keys, relayed in batches of 64: random small int32 coordinates."""
        vecs = [
            np.array([rng.randint(-3000, 3000) for _ in range(1024)], np.int32) for _ in range(n)
        ]
        signers = [Account.create() for _ in range(n)]
        deadline = int(w3.eth.get_block("latest")["timestamp"]) + 3600
        signed: list[SignedUpdate] = []
        for a, v in zip(signers, vecs, strict=True):
            content = "0x" + hashlib.sha256(a.address.encode()).hexdigest()
            root = to_hex(tensor_root(v))
            samples = 1 + rng.randint(0, 999)
            signed.append(
                ledger.sign_update(a, t, 0, content, _cid(a.address), samples, deadline, root)
            )
        records = []
        for i in range(0, n, 64):
            records += ledger.submit_batch(signed[i : i + 64]).records
        entries = [
            verdicts.VerdictEntry(
                update_id=r.update_id,
                contributor=r.contributor,
                content_hash=r.content_hash,
                cid=r.cid,
                num_samples=r.num_samples,
                verdict=verdicts.Verdict.ACCEPTED,
                reward=10**12,
            )
            for r in records
        ]
        vf = verdicts.build(
            task_id=t, round=0, rule=verdicts.RuleSpec(rule="fedavg"),
            base_model_hash=to_hex(keccak(b"model")), aggregate_hash=to_hex(keccak(b"agg")),
            aggregate_cid=_cid("agg"), entries=entries,
        )  # fmt: skip
        return records, vecs, vf

    def attest(
        t: int, records: list[Any], vf: verdicts.VerdictFile, agg: np.ndarray
    ) -> RoundResult:
        chained, count = record_hash(t, 0, records)
        result = RoundResult(
            record_hash=to_hex(chained), update_count=count, verdict_root=to_hex(vf.root()),
            verdict_hash=to_hex(keccak(b"vf")), verdict_cid=_cid("vf"),
            aggregate_hash=to_hex(keccak(b"agg")), aggregate_cid=_cid("agg"),
            aggregate_tensor_root=to_hex(tensor_root(agg)),
        )  # fmt: skip
        for v in validators:
            ledger.with_account(v, nonces).attest_round(t, 0, result)
        return result

    def challenge(rule: Rule, n: int) -> None:
        t = task(rule, n)
        records, vecs, vf = round_of(t, n)
        wrong = np.zeros(1024, np.int32) + 5  # the truth is some mean, not 5 everywhere
        result = attest(t, records, vf, wrong)
        watcher = court.with_account(accts[3], nonces)
        p = TensorTree(wrong).proof(0)
        cid_, receipt = watcher.challenge(t, 0, result, 0, p.leaf, p.proof)
        gas = [int(receipt["gasUsed"])]
        leaves = vf.leaves()
        inputs, values = [], b""
        for i, (r, v) in enumerate(zip(records, vecs, strict=True)):
            cp = TensorTree(v).proof(0)
            inputs.append(ProofInput(
                contributor=r.contributor, content_hash=r.content_hash, cid_digest=r.cid_digest,
                tensor_root=r.tensor_root, num_samples=r.num_samples, verdict=0, clip=UNCLIPPED,
                reward=10**12, verdict_proof=merkle.proof(leaves, i), leaf=cp.leaf,
                leaf_proof=cp.proof,
            ))  # fmt: skip
            values += int(v[0]).to_bytes(8, "big", signed=True)
        gas += [int(x["gasUsed"]) for x in watcher.stage(cid_, inputs)]
        overturned, receipt = watcher.resolve(cid_, b"" if rule is Rule.FEDAVG else values)
        assert overturned
        gas.append(int(receipt["gasUsed"]))
        name = f"challenge_{'fedavg' if rule is Rule.FEDAVG else 'median'}_{n}"
        figures[name] = sum(gas)
        figures[f"{name}_txs"] = len(gas)

    def claims() -> None:
        t = task(Rule.FEDAVG, 4)
        records, vecs, vf = round_of(t, 4)
        result = attest(t, records, vf, np.zeros(1024, np.int32))
        court.fund(t, 10**15)
        for r in records:  # contributors that exist (a relayed one may not: +25,000 gas)
            ledger.sender.transact(_pay(w3, r.contributor), label="fund contributor")  # type: ignore[union-attr]
        w3.provider.make_request("evm_increaseTime", [3600])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        court.settle(t, 0, result)
        out = []
        for e in vf.entries:
            r = court.claim(t, 0, e.update_id, e.contributor, e.content_hash, UNCLIPPED,
                            e.reward, vf.proof(e.update_id))  # fmt: skip
            out.append(int(r["gasUsed"]))
        figures["claim_first"], figures["claim"] = out[0], round(sum(out[1:]) / len(out[1:]))
        r = court.with_account(validators[0], nonces).unbond(t)
        figures["unbond"] = int(r["gasUsed"])

    claims()
    challenge(Rule.FEDAVG, 100)
    challenge(Rule.MEDIAN, 100)
    challenge(Rule.FEDAVG, 1000)
    return figures


class _pay:
    """A plain 1-wei transfer, in the shape ``Sender.transact`` sends (a bound call)."""

    def __init__(self, w3: Web3, to: str) -> None:
        self.address, self.w3 = Web3.to_checksum_address(to), w3

    def estimate_gas(self, tx: dict[str, Any]) -> int:
        return 21_000

    def build_transaction(self, tx: dict[str, Any]) -> dict[str, Any]:
        return {**tx, "to": self.address, "value": 1, "data": b""}


def _cid(tag: str) -> str:
    from fedledger.content.cid import compute_cid

    return compute_cid(tag.encode())


def print_court(figures: dict[str, Any]) -> None:
    print("\ncourt (optimistic verification), gas on anvil; challenge = open + stage + resolve")
    print(f"{'path':<34} {'gas':>12} {'txs':>5} {'target':>12}")
    for key in ("challenge_fedavg_100", "challenge_median_100", "challenge_fedavg_1000"):
        target = f"{BLOCK_GAS:,}" if key.endswith("1000") else ""
        print(f"{key:<34} {figures[key]:>12,} {figures[key + '_txs']:>5} {target:>12}")
    for key, target in (("claim", "60,000"), ("claim_first", ""), ("bond", ""), ("unbond", "")):
        print(f"{key:<34} {figures[key]:>12,} {'1':>5} {target:>12}")


def main() -> None:
    if "--court-only" in sys.argv:
        with start_anvil(accounts=4) as dn:
            court = court_figures(Web3(Web3.HTTPProvider(dn.url)), dev_private_keys(4))
        print_court(court)
        print(json.dumps(court))
        return
    court = {}
    if "--no-court" not in sys.argv:
        with start_anvil(accounts=4) as dn:
            court = court_figures(Web3(Web3.HTTPProvider(dn.url)), dev_private_keys(4))
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
    if court:
        print_court(court)
        figures.update(court)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
