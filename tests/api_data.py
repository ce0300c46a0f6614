"""A small, realistic index for the API and dashboard tests, written through ``fedledger_backend.db``.

Two tasks. Task 1 (quorum 2, admitted contributors) has rounds 0 and 1 finalised with verdict
files in the cache, a dissenting validator in round 1, and round 2 open with pending updates.
Task 2 is open to anyone; its round 0 is sealed and awaiting attestations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from eth_utils import keccak, to_checksum_address

from fedledger.protocol import merkle
from fedledger.protocol.aggregation import RuleSpec
from fedledger.protocol.verdicts import Verdict, VerdictEntry, build
from fedledger_backend.db import (
    AttestationRow,
    Checkpoint,
    ContributionRow,
    Database,
    MemberRow,
    ResultRow,
    RoundRow,
    TaskRow,
    VerdictFileRow,
)


def address(name: str) -> str:
    return str(to_checksum_address(keccak(text=name)[:20]))


def h32(text: str) -> str:
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


def cid(text: str) -> str:
    return "bafkrei" + hashlib.sha256(text.encode()).hexdigest()[:52]


ALICE, BOB, CAROL, MALLORY = (address(n) for n in ("alice", "bob", "carol", "mallory"))
VAL1, VAL2, VAL3 = (address(n) for n in ("v1", "v2", "v3"))
OWNER = address("owner")
CONTRACT = address("contract")
OUTSIDER = address("outsider")


@dataclass
class Ledger:
    """What was written, for the tests to compare against."""

    db: Database
    next_update: int = 1
    block: int = 100
    contributions: list[ContributionRow] = field(default_factory=list)

    def add_task(self, task_id: int, *, open_: bool, quorum: int = 2) -> None:
        with self.db.transaction() as s:
            s.add(
                TaskRow(
                    task_id=task_id,
                    owner=OWNER,
                    model_hash=h32(f"model{task_id}"),
                    model_cid=cid(f"model{task_id}"),
                    spec_cid=cid(f"spec{task_id}"),
                    min_updates=2,
                    max_updates=8,
                    quorum=quorum,
                    round_duration=0,
                    open=open_,
                    max_samples=1000,
                    current_round=0,
                    global_hash=h32(f"model{task_id}"),
                    global_cid=cid(f"model{task_id}"),
                    created_block=self.block,
                    created_tx=h32(f"tx-task{task_id}"),
                    created_at=1_700_000_000,
                )
            )
            s.flush()
            s.add(RoundRow(task_id=task_id, round=0, status="open", started_block=self.block))

    def add_member(self, task_id: int, who: str, role: str) -> None:
        with self.db.transaction() as s:
            s.add(MemberRow(task_id=task_id, address=who, role=role, block_number=self.block))

    def submit(self, task_id: int, rnd: int, who: str, samples: int = 600) -> ContributionRow:
        """Index one UpdateSubmitted, as the indexer would."""
        self.block += 1
        uid = self.next_update
        self.next_update += 1
        row = ContributionRow(
            update_id=uid,
            task_id=task_id,
            round=rnd,
            contributor=who,
            content_hash=h32(f"update{uid}"),
            cid=cid(f"update{uid}"),
            num_samples=samples,
            tx_hash=h32(f"tx{uid}"),
            block_number=self.block,
            block_hash=h32(f"block{self.block}"),
            log_index=0,
            submitted_at=1_700_000_000 + self.block * 2,
            status="PENDING",
        )
        with self.db.transaction() as s:
            s.add(row)
            r = s.get(RoundRow, (task_id, rnd))
            if r is None:
                r = RoundRow(
                    task_id=task_id, round=rnd, status="open", started_block=self.block, submitted=0
                )
                s.add(r)
            r.submitted = (r.submitted or 0) + 1
        self.contributions.append(row)
        return row

    def finalize(
        self,
        task_id: int,
        rnd: int,
        verdicts: dict[int, tuple[str, str | None, float]],
        accuracy: float,
        *,
        validators: tuple[str, ...] = (VAL1, VAL2),
        dissenters: tuple[str, ...] = (),
    ) -> str:
        """Apply a verdict file and the attestations that finalised it; return its verdict root."""
        with self.db.session() as s:
            rows = [s.get(ContributionRow, uid) for uid in sorted(verdicts)]
        entries = []
        for row in rows:
            assert row is not None
            verdict, reason, score = verdicts[row.update_id]
            entries.append(
                VerdictEntry(
                    update_id=row.update_id,
                    contributor=row.contributor,
                    content_hash=row.content_hash,
                    cid=row.cid,
                    num_samples=row.num_samples,
                    verdict=Verdict[verdict],
                    reason=reason or "",
                    score=score,
                )
            )
        vf = build(
            task_id=task_id,
            round=rnd,
            rule=RuleSpec(rule="fedavg"),
            base_model_hash=h32(f"model{task_id}.{rnd}"),
            aggregate_hash=h32(f"agg{task_id}.{rnd}"),
            aggregate_cid=cid(f"agg{task_id}.{rnd}"),
            entries=entries,
            metrics={"accuracy": accuracy, "loss": 1 - accuracy},
        )
        root = merkle.to_hex(vf.root())
        body = vf.to_json()
        vcid, agg_hash, agg_cid = (
            cid(f"verdicts{task_id}.{rnd}"),
            h32(f"agg{task_id}.{rnd}"),
            cid(f"agg{task_id}.{rnd}"),
        )
        self.block += 1
        with self.db.transaction() as s:
            s.add(VerdictFileRow(cid=vcid, body=body))
            digest = h32(f"digest{root}")

            def result(d: str, vroot: str, ahash: str, acid: str, vc: str) -> ResultRow:
                return ResultRow(
                    task_id=task_id, round=rnd, digest=d, attempt=0,
                    record_hash="0x" + "ee" * 28, update_count=len(verdicts), verdict_root=vroot,
                    verdict_hash=h32(f"vh{vc}"), verdict_cid=vc, aggregate_hash=ahash,
                    aggregate_cid=acid, aggregate_tensor_root="0x" + "00" * 32,
                    block_number=self.block,
                )  # fmt: skip

            s.add(result(digest, root, agg_hash, agg_cid, vcid))
            for n, v in enumerate(validators):
                s.add(
                    AttestationRow(
                        task_id=task_id,
                        round=rnd,
                        validator=v,
                        attempt=0,
                        digest=digest,
                        count=n + 1,
                        block_number=self.block,
                        tx_hash=h32(f"att{v}{rnd}"),
                    )  # fmt: skip
                )
            for v in dissenters:
                d = h32(f"dissent{v}{rnd}")
                s.add(
                    result(
                        d,
                        h32("other-root"),
                        h32("other-agg"),
                        cid("other-agg"),
                        cid("other-verdicts"),
                    )
                )
                s.add(
                    AttestationRow(
                        task_id=task_id,
                        round=rnd,
                        validator=v,
                        attempt=0,
                        digest=d,
                        count=1,
                        block_number=self.block,
                        tx_hash=h32(f"att{v}{rnd}"),
                    )  # fmt: skip
                )
            r = s.get(RoundRow, (task_id, rnd))
            assert r is not None
            accepted = sum(1 for v, _r, _s in verdicts.values() if v == "ACCEPTED")
            r.status, r.sealed_count, r.sealed_block = "finalized", len(verdicts), self.block
            r.aggregate_hash, r.aggregate_cid = agg_hash, agg_cid
            r.verdict_root, r.verdict_cid = root, vcid
            r.digest, r.record_hash, r.verdict_hash = digest, "0x" + "ee" * 28, h32(f"vh{vcid}")
            r.finalized_block, r.finalized_tx = self.block, h32(f"final{task_id}.{rnd}")
            r.accepted, r.rejected = accepted, len(verdicts) - accepted
            r.accuracy, r.loss, r.metrics = accuracy, 1 - accuracy, body["metrics"]
            r.conflicts = 1 if dissenters else 0
            r.verdicts_applied = True
            for uid, (verdict, reason, score) in verdicts.items():
                c = s.get(ContributionRow, uid)
                assert c is not None
                c.status, c.reason, c.score = verdict, reason, score
            task = s.get(TaskRow, task_id)
            assert task is not None
            task.current_round = rnd + 1
            task.global_hash, task.global_cid = agg_hash, agg_cid
            s.add(RoundRow(task_id=task_id, round=rnd + 1, status="open", started_block=self.block))
        return root

    def checkpoint(self, block: int, chain_id: int = 31337) -> None:
        with self.db.transaction() as s:
            s.merge(
                Checkpoint(
                    contract=CONTRACT,
                    chain_id=chain_id,
                    block_number=block,
                    block_hash=h32(f"block{block}"),
                )
            )


def populate(db: Database) -> Ledger:
    led = Ledger(db)
    led.add_task(1, open_=False)
    for who in (ALICE, BOB, CAROL, MALLORY):
        led.add_member(1, who, "contributor")
    for v in (VAL1, VAL2, VAL3):
        led.add_member(1, v, "validator")
    led.add_member(1, ALICE, "validator")  # one address may hold two roles

    r0 = [led.submit(1, 0, who) for who in (ALICE, BOB, CAROL, MALLORY)]
    led.finalize(
        1,
        0,
        {
            r0[0].update_id: ("ACCEPTED", None, 0.91),
            r0[1].update_id: ("ACCEPTED", None, 0.88),
            r0[2].update_id: ("ACCEPTED", None, 0.86),
            r0[3].update_id: ("NORM_BOUND", "update norm 41.2 > bound 10.0", 0.02),
        },
        accuracy=0.62,
    )
    r1 = [led.submit(1, 1, who) for who in (ALICE, BOB, CAROL, MALLORY)]
    led.finalize(
        1,
        1,
        {
            r1[0].update_id: ("ACCEPTED", None, 0.93),
            r1[1].update_id: ("LATE", "submitted after the round deadline", 0.0),
            r1[2].update_id: ("ACCEPTED", None, 0.9),
            r1[3].update_id: ("OUTLIER", "cosine distance 0.97 from the median", 0.05),
        },
        accuracy=0.74,
        validators=(VAL1, VAL2),
        dissenters=(VAL3,),
    )
    for who in (ALICE, BOB):
        led.submit(1, 2, who)

    led.add_task(2, open_=True, quorum=1)
    led.add_member(2, VAL1, "validator")
    for who in (BOB, OUTSIDER):
        led.submit(2, 0, who, samples=1200)
    with db.transaction() as s:
        r = s.get(RoundRow, (2, 0))
        assert r is not None
        r.status, r.sealed_count, r.sealed_block = "sealed", 2, led.block
    led.checkpoint(led.block)
    return led
