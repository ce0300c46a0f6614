"""Defences that hold at 30 % attackers, on a small real setup: load_digits split non-IID over ten
contributors, the task naming a root data set of 100 clean samples, every round judged by
``judge_round`` through a real Blockstore.  Each attack is caught with its signal named in the
reason; honest updates pass; verdicts are the same bytes in any order and in another process."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedledger.content.blockstore import Blockstore
from fedledger.learning import attacks
from fedledger.learning.data import load_dataset, partition_dirichlet, stratified_split
from fedledger.learning.models import build_model, state_to_numpy
from fedledger.learning.train import LocalTrainer
from fedledger.protocol import codec
from fedledger.protocol.reference import RootDataRef, encode_root_data
from fedledger.protocol.rounds import Judgement, UpdateRef, judge_round
from fedledger.protocol.taskspec import TaskSpec, TrainingParams
from fedledger.protocol.verdicts import Verdict, VerdictFile

N = 10
BAD = (7, 8, 9)  # 30 %
Tensors = dict[str, np.ndarray]


@dataclass
class Setup:
    store: Blockstore
    spec: TaskSpec
    trainers: list[LocalTrainer]
    flipped: list[LocalTrainer]
    g0: Tensors


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    import torch

    torch.set_num_threads(1)
    ds = load_dataset("digits", seed=0)
    rest, root = stratified_split(ds.y_train, 100 / ds.n_train, 7)
    store = Blockstore(tmp_path_factory.mktemp("defences") / "store", durable=False)
    root_file = encode_root_data(ds.X_train[root], ds.y_train[root])
    spec = TaskSpec(
        model="mlp_digits",
        training=TrainingParams(epochs=3, lr=0.5),
        aggregation={"rule": "fedavg"},
        root_data=RootDataRef.of_file(
            root_file, store.put(root_file), "digits-root-100"
        ).model_dump(),
    )
    model = build_model("mlp_digits", seed=0)
    parts = partition_dirichlet(ds.y_train[rest], N, 0.5, 0)
    data = [(ds.X_train[rest[p]], ds.y_train[rest[p]]) for p in parts]
    flip = attacks.label_transform("label_flip", 10)
    return Setup(
        store,
        spec,
        [LocalTrainer(model, X, y) for X, y in data],
        [LocalTrainer(model, X, y, label_transform=flip) for X, y in data],
        state_to_numpy(model),
    )


def _train(s: Setup, g: Tensors, rnd: int, flipped: bool = False) -> list[Tensors]:
    pool = s.flipped if flipped else s.trainers
    return [
        t.train(g, epochs=3, lr=0.5, batch_size=32, seed=(i + 1) * 1_000_003 + rnd).delta
        for i, t in enumerate(pool)
    ]


def _refs(s: Setup, g: Tensors, rnd: int, sent: list[Tensors]) -> tuple[bytes, list[UpdateRef]]:
    base = codec.encode_model(g, task_id=1, round=rnd)
    refs = []
    for i, d in enumerate(sent):
        who = "0x" + f"{i + 1:040x}"
        f = codec.encode_update(
            d, task_id=1, round=rnd, base_hash=codec.sha256_hex(base), contributor=who
        )
        refs.append(UpdateRef(rnd * N + i + 1, who, codec.sha256_hex(f), s.store.put(f), 100))
    return base, refs


def _judge(
    s: Setup, g: Tensors, rnd: int, sent: list[Tensors], previous: VerdictFile | None
) -> Judgement:
    base, refs = _refs(s, g, rnd, sent)
    return judge_round(
        s.store,
        task_id=1,
        round_=rnd,
        spec=s.spec,
        base_model=base,
        updates=refs,
        max_samples=100,
        previous=previous,
    )


@pytest.fixture(scope="module")
def round0(setup: Setup) -> tuple[Judgement, list[Tensors]]:
    honest = _train(setup, setup.g0, 0)
    return _judge(setup, setup.g0, 0, honest, None), honest


@pytest.fixture(scope="module")
def honest1(setup: Setup, round0: tuple[Judgement, list[Tensors]]) -> list[Tensors]:
    return _train(setup, round0[0].new_global, 1)


def _round1(
    setup: Setup, round0: tuple[Judgement, list[Tensors]], sent: list[Tensors]
) -> list[tuple[Verdict, str]]:
    j0 = round0[0]
    j1 = _judge(setup, j0.new_global, 1, sent, j0.verdict_file)
    return [(e.verdict, e.reason) for e in j1.verdict_file.entries]


def _crafted(
    name: str,
    setup: Setup,
    round0: tuple[Judgement, list[Tensors]],
    honest: list[Tensors],
) -> list[Tensors]:
    sent = list(honest)
    good = [honest[i] for i in range(N) if i not in BAD]
    j0, _ = round0
    if name == "label_flip":
        flipped = _train(setup, j0.new_global, 1, flipped=True)
        for i in BAD:
            sent[i] = flipped[i]
    elif name == "sybil":
        for i, d in zip(BAD, attacks.sybil_group([honest[i] for i in BAD]), strict=True):
            sent[i] = d
    elif name == "stale":
        now = {k: j0.new_global[k] for k in setup.g0}  # in the delta's tensor order
        for i in BAD:
            sent[i] = attacks.free_rider(
                honest[i], mode="replay", global_tensors=now, previous_global=setup.g0
            )
    elif name == "copier":
        for n, i in enumerate(BAD):
            sent[i] = attacks.copier(honest[i], source=good[n], noise=0.05, seed=i)
    else:
        params: dict[str, object] = {
            "sign_flip": {},
            "sleeper": {},
            "scaling": {"factor": 10.0},
            "little_is_enough": {"honest": good, "n_clients": N, "n_malicious": len(BAD)},
            "ipm": {"honest": good, "epsilon": 0.5},
        }[name]
        attack = "sign_flip" if name == "sleeper" else name
        for i in BAD:
            sent[i] = attacks.apply_attack(attack, honest[i], **params)  # type: ignore[arg-type]
    return sent


# attack -> (the verdicts that may catch it, a phrase of the reason naming the signal)
CAUGHT = {
    "sign_flip": ({Verdict.INCONSISTENT, Verdict.HARMFUL}, ("own accepted update", "reference")),
    "sleeper": ({Verdict.INCONSISTENT}, ("cosine to its own accepted update",)),
    "scaling": ({Verdict.NORM_BOUND}, ("exceeds",)),
    "label_flip": ({Verdict.HARMFUL, Verdict.NORM_BOUND, Verdict.INCONSISTENT}, ("",)),
    "little_is_enough": ({Verdict.SYBIL}, ("one direction shared by 3 updates",)),
    "ipm": ({Verdict.SYBIL, Verdict.INCONSISTENT, Verdict.HARMFUL}, ("",)),
    "copier": ({Verdict.DUPLICATE}, ("cosine 0.99",)),
    "stale": ({Verdict.STALE}, ("global step",)),
    "sybil": ({Verdict.SYBIL}, ("one direction shared by 3 updates",)),
}


def test_honest_updates_pass_with_every_defence_on(
    setup: Setup, round0: tuple[Judgement, list[Tensors]], honest1: list[Tensors]
) -> None:
    first = [e.verdict for e in round0[0].verdict_file.entries]
    second = [v for v, _ in _round1(setup, round0, honest1)]
    assert first == [Verdict.ACCEPTED] * N
    assert second == [Verdict.ACCEPTED] * N


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_each_attack_at_30_percent_is_caught_with_its_signal_named(
    name: str,
    setup: Setup,
    round0: tuple[Judgement, list[Tensors]],
    honest1: list[Tensors],
) -> None:
    verdicts = _round1(setup, round0, _crafted(name, setup, round0, honest1))
    allowed, phrases = CAUGHT[name]
    for i in BAD:
        verdict, reason = verdicts[i]
        assert verdict in allowed, (i, verdict, reason)
        assert reason and any(p in reason for p in phrases), reason
    honest_ok = [verdicts[i][0] == Verdict.ACCEPTED for i in range(N) if i not in BAD]
    assert sum(honest_ok) >= len(honest_ok) - 1, verdicts  # at most one honest rejection


def test_a_rejected_sleeper_that_keeps_flipping_stays_rejected(
    setup: Setup, round0: tuple[Judgement, list[Tensors]], honest1: list[Tensors]
) -> None:
    j0 = round0[0]
    sent = _crafted("sleeper", setup, round0, honest1)
    j1 = _judge(setup, j0.new_global, 1, sent, j0.verdict_file)
    honest2 = _train(setup, j1.new_global, 2)
    again = [attacks.sign_flip(d) if i in BAD else d for i, d in enumerate(honest2)]
    j2 = _judge(setup, j1.new_global, 2, again, j1.verdict_file)
    for i in BAD:
        e = j2.verdict_file.entries[i]
        assert e.verdict in (Verdict.INCONSISTENT, Verdict.HARMFUL), e.reason
        assert "continues its update" in e.reason or "reference update" in e.reason


def test_verdicts_are_the_same_bytes_in_any_order(
    setup: Setup, round0: tuple[Judgement, list[Tensors]], honest1: list[Tensors]
) -> None:
    j0 = round0[0]
    sent = _crafted("label_flip", setup, round0, honest1)
    base, refs = _refs(setup, j0.new_global, 1, sent)
    kw = dict(task_id=1, round_=1, spec=setup.spec, base_model=base, max_samples=100)
    a = judge_round(setup.store, updates=refs, previous=j0.verdict_file, **kw)  # type: ignore[arg-type]
    shuffled = list(refs)
    random.Random(3).shuffle(shuffled)
    b = judge_round(setup.store, updates=shuffled, previous=j0.verdict_file, **kw)  # type: ignore[arg-type]
    assert a.verdict_bytes == b.verdict_bytes
    assert a.aggregate_hash == b.aggregate_hash


_OTHER_PROCESS = """
import json, sys
from pathlib import Path
from fedledger.content.blockstore import Blockstore
from fedledger.protocol import verdicts
from fedledger.protocol.rounds import UpdateRef, judge_round
from fedledger.protocol.taskspec import TaskSpec
job = json.loads(Path(sys.argv[1]).read_text())
store = Blockstore(Path(sys.argv[2]), durable=False)
for name in job["files"]:
    store.put(Path(sys.argv[1]).parent.joinpath(name).read_bytes())
j = judge_round(
    store, task_id=1, round_=1, spec=TaskSpec.model_validate(job["spec"]),
    base_model=bytes.fromhex(job["base"]), updates=[UpdateRef(**r) for r in job["refs"]],
    max_samples=100, previous=verdicts.parse(bytes.fromhex(job["previous"])),
)
sys.stdout.write(j.verdict_bytes.hex())
"""


def test_another_process_writes_the_same_verdict_file(
    tmp_path: Path,
    setup: Setup,
    round0: tuple[Judgement, list[Tensors]],
    honest1: list[Tensors],
) -> None:
    j0, honest0 = round0
    sent = _crafted("sleeper", setup, round0, honest1)
    base, refs = _refs(setup, j0.new_global, 1, sent)
    here = judge_round(
        setup.store,
        task_id=1,
        round_=1,
        spec=setup.spec,
        base_model=base,
        updates=refs,
        max_samples=100,
        previous=j0.verdict_file,
    )
    # Everything the other process needs: this round's and last round's update files, the root
    # data set, the previous verdict file; it imports them into a store of its own.
    cids = [r.cid for r in refs] + [e.cid for e in j0.verdict_file.entries]
    cids.append(setup.spec.root_data["cid"])  # type: ignore[index]
    names = []
    for k, cid in enumerate(cids):
        (tmp_path / f"f{k}").write_bytes(setup.store.get(cid))
        names.append(f"f{k}")
    job = {
        "files": names,
        "spec": setup.spec.model_dump(mode="json"),
        "base": base.hex(),
        "refs": [r.__dict__ for r in refs],
        "previous": j0.verdict_bytes.hex(),
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(tmp_path / "job.json"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    there = bytes.fromhex(out.stdout)
    assert hashlib.sha256(there).hexdigest() == hashlib.sha256(here.verdict_bytes).hexdigest()
    assert b"INCONSISTENT" in there
