"""Validators beyond one machine's memory: a round streamed from the real embedded store by
coordinate ranges (fedledger.protocol.streaming) and sharded across real Ray workers
(fedledger_backend.sharded) gives the same aggregate, bit for bit, as the in-memory exact rules,
whatever the number of workers; hostile files get a verdict, never a crash; byte ranges
outside a file are refused."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedledger.content.blockstore import Blockstore, RangeError
from fedledger.content.cid import CID, DAG_PB, RAW, compute_cid
from fedledger.content.dagpb import UNIXFS_FILE, PBLink, encode_pbnode, encode_unixfs
from fedledger.content.kubo import KuboStore
from fedledger.content.store import RangeReadable
from fedledger.errors import ConfigError, FormatError, IntegrityError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec, exact_rules, fixedpoint, rounds, streaming
from fedledger.protocol import tensor_root as troot
from fedledger.protocol.exact_rules import ExactRule
from fedledger.protocol.fixedpoint import FixedPointFormat
from fedledger.protocol.rounds import UpdateRef
from fedledger.protocol.taskspec import TaskSpec
from fedledger.protocol.verdicts import Verdict

ray = pytest.importorskip("ray")
sharded = pytest.importorskip("fedledger_backend.sharded")

FMT = FixedPointFormat(frac_bits=20)
# state_dict order differs from the file's (canonical: by name), and no tensor fills a leaf
SHAPES = {"fc.weight": (120, 61), "fc.bias": (120,), "out.weight": (10, 120), "a.scale": (3,)}
LAYOUT = agg.TensorLayout.of({k: np.zeros(v, np.float32) for k, v in SHAPES.items()})
CHUNK = 4096  # small leaves: a multi-level DAG, and blocks that straddle leaves
BLOCK_BYTES = 7 * 4 * 1024  # 1,024-coordinate blocks for 7 updates: many blocks per shard


@dataclass(frozen=True)
class Round:
    store: Blockstore
    refs: list[UpdateRef]
    vectors: list[np.ndarray]

    @property
    def num_samples(self) -> list[int]:
        return [r.num_samples for r in self.refs]


def _address(i: int) -> str:
    return "0x" + f"{i + 1:02x}" * 20


def _vector(data: bytes) -> np.ndarray:
    dec = codec.decode(data)
    return np.concatenate([dec.tensors[k].reshape(-1) for k in LAYOUT.names])


def _ref(i: int, store: Blockstore, data: bytes) -> UpdateRef:
    root = "0x" + troot.tensor_root(_vector(data)).hex()
    cid = store.put(data)
    return UpdateRef(i + 1, _address(i), codec.sha256_hex(data), cid, 10 + 7 * i, 0, root)


MODEL = {k: np.zeros(v, np.float32) for k, v in SHAPES.items()}
BASE_MODEL = codec.encode_model(MODEL, task_id=1, round=0)
MODEL_HASH = codec.sha256_hex(BASE_MODEL)


def _delta(i: int, scale: float = 0.02) -> dict[str, np.ndarray]:
    """Honest updates share a direction (so the screen has a consensus) plus their own noise."""
    shared = np.random.default_rng(99)
    rng = np.random.default_rng(i)
    return {
        k: ((shared.standard_normal(v) + 0.5 * rng.standard_normal(v)) * scale).astype(np.float32)
        for k, v in SHAPES.items()
    }


def _file(delta: dict[str, np.ndarray], who: int) -> bytes:
    return codec.encode_update(
        delta,
        task_id=1,
        round=0,
        base_hash=MODEL_HASH,
        contributor=_address(who),
        encoding="int32",
        fixed_point=FMT,
    )


def _update(i: int, scale: float = 0.02) -> bytes:
    """Update ``i``, of its own random direction, from contributor ``i``."""
    rng = np.random.default_rng(i)
    return _file(
        {k: (rng.standard_normal(v) * scale).astype(np.float32) for k, v in SHAPES.items()}, i
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    sharded.connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Round:
    store = Blockstore(tmp_path_factory.mktemp("store"), chunk_size=CHUNK, durable=False)
    files = [_update(i, 0.02 if i != 5 else 0.5) for i in range(7)]  # update 5 is far off
    refs = [_ref(i, store, data) for i, data in enumerate(files)]
    return Round(store, refs, [_vector(d) for d in files])


def _with_header(data: bytes, edit: Callable[[dict], None]) -> bytes:
    """``data`` with its safetensors header JSON edited by ``edit`` (then padded again)."""
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    edit(header)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def _inspect(rnd: Round, **kw: object) -> list[streaming.Inspection]:
    args: dict[str, object] = dict(
        task_id=1, round_=0, base_hash=MODEL_HASH, layout=LAYOUT, fmt=FMT, workers=2
    )
    args.update(kw)
    return sharded.inspect_round_sharded(rnd.store, rnd.refs, **args)


RULES = {
    "fedavg": ExactRule("fedavg", weight_cap=40),
    "median": ExactRule("median"),
    "trimmed_mean": ExactRule("trimmed_mean", beta=Fraction(1, 5)),
    "krum": ExactRule("krum", f=1),
    "multi_krum_clipped": ExactRule("multi_krum", f=1, clip_bound=2**16),
}


# --------------------------------------------------------------------------- byte ranges


def test_a_range_read_returns_exactly_those_bytes_of_a_multi_level_dag(tmp_path: Path) -> None:
    store = Blockstore(tmp_path, chunk_size=64, durable=False)  # 64-byte leaves: depth 2
    data = random.Random(1).randbytes(64 * 400 + 17)
    cid = store.put(data)
    assert isinstance(store, RangeReadable)
    f = store.open_range(cid)
    assert f.size == len(data)
    rng = random.Random(2)
    for _ in range(200):
        a = rng.randrange(len(data) + 1)
        b = rng.randrange(a, len(data) + 1)
        assert f.read(a, b - a) == data[a:b]
    assert store.read_range(cid, len(data) - 5, 5) == data[-5:]


@pytest.mark.parametrize(("offset", "length"), [(0, 10**6), (-1, 4), (5, -1), (1000, 1)])
def test_a_range_outside_the_file_is_refused(tmp_path: Path, offset: int, length: int) -> None:
    store = Blockstore(tmp_path, chunk_size=64, durable=False)
    cid = store.put(bytes(1000))
    with pytest.raises(RangeError, match="not inside"):
        store.read_range(cid, offset, length)


def test_kubo_range_reads_walk_the_dag_with_verified_blocks(tmp_path: Path) -> None:
    local = Blockstore(tmp_path, chunk_size=64, durable=False)
    data = random.Random(3).randbytes(64 * 300)
    cid = local.put(data)
    tampered: set[str] = set()

    def node(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v0/block/get"
        arg = request.url.params["arg"]
        block = local.get_block(arg)
        return httpx.Response(200, content=b"x" + block[1:] if arg in tampered else block)

    client = httpx.Client(base_url="http://kubo/api/v0", transport=httpx.MockTransport(node))
    kubo = KuboStore("http://kubo", client=client)
    assert isinstance(kubo, RangeReadable)
    assert kubo.read_range(cid, 1000, 3000) == data[1000:4000]
    with pytest.raises(RangeError):
        kubo.read_range(cid, len(data) - 1, 2)
    leaf = compute_cid(data[1024:1088])  # the raw leaf holding bytes 1024..1087
    tampered.add(leaf)
    with pytest.raises(IntegrityError):
        kubo.read_range(cid, 1030, 10)


# --------------------------------------------------------------------------- one process


def test_streamed_tensor_root_and_statistics_are_the_in_memory_ones(honest: Round) -> None:
    files = [
        streaming.open_update(honest.store.open_range(r.cid), r.cid, LAYOUT, max_bytes=1 << 24)
        for r in honest.refs
    ]
    reader = streaming.ColumnReader(honest.store.open_range(files[0].cid), files[0])
    scan = streaming.scan_update(reader, FMT)
    assert scan.tensor_root == troot.tensor_root(honest.vectors[0])
    floats = [fixedpoint.dequantize(v, FMT) for v in honest.vectors]
    assert scan.norm == agg.norm(floats[0])  # the screen's own fold, to the bit
    assert agg.Gram([[0]], [scan.gram_exp]).exps == agg.exact_gram(floats[:1]).exps
    runner = streaming.LocalRunner(honest.store, BLOCK_BYTES)
    cuts = streaming.split(LAYOUT.size, 3)
    stats = streaming.combine(runner.statistics(files, cuts, gram=True, multipliers=None))
    assert stats.gram == exact_rules.gram(honest.vectors)
    assert list(stats.sq_norms) == exact_rules.sq_norms(honest.vectors)
    exps = agg.exact_gram(floats).exps
    parts = runner.screen_gram(files, cuts, exps, FMT)
    summed = np.sum([np.array(p, dtype=object) for p in parts], axis=0).tolist()
    assert summed == agg.exact_gram(floats).ints
    center = np.concatenate(runner.center(files, cuts, FMT))
    assert np.array_equal(center, agg.median(floats))
    folds = runner.center_folds(files, center, FMT)
    assert folds == [(agg.dot(v, center), agg.sq_distance(v, center)) for v in floats]


@pytest.mark.parametrize("name", sorted(RULES))
def test_streaming_in_one_process_is_the_in_memory_exact_result(honest: Round, name: str) -> None:
    rule = RULES[name]
    files = [
        streaming.open_update(honest.store.open_range(r.cid), r.cid, LAYOUT, max_bytes=1 << 24)
        for r in honest.refs
    ]
    want = exact_rules.aggregate_exact(rule, honest.vectors, honest.num_samples)
    got = streaming.stream_aggregate(
        honest.store, files, rule, honest.num_samples, block_bytes=BLOCK_BYTES
    )
    assert np.array_equal(got.aggregate, want)


# --------------------------------------------------------------------------- Ray


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_aggregate_hash_is_the_same_for_1_2_and_4_workers_and_in_memory(
    cluster: None, honest: Round, name: str
) -> None:
    rule = RULES[name]
    want = exact_rules.aggregate_exact(rule, honest.vectors, honest.num_samples)
    files = [i.file for i in _inspect(honest, block_bytes=BLOCK_BYTES)]
    assert all(f is not None for f in files)
    digests = set()
    for workers in (1, 2, 4):
        got = sharded.aggregate_round_sharded(
            honest.store,
            files if workers != 4 else [r.cid for r in honest.refs],  # also from CIDs alone
            rule,
            LAYOUT,
            num_samples=honest.num_samples,
            workers=workers,
            block_bytes=BLOCK_BYTES,
        )
        assert len(got.shards) == workers
        assert np.array_equal(got.aggregate, want)
        digests.add(got.sha256)
    assert digests == {streaming.aggregate_digest(want)}


def test_honest_files_pass_every_file_check(cluster: None, honest: Round) -> None:
    for ins in _inspect(honest):
        assert ins.early is None and ins.shape_problem is None and ins.file is not None
        assert ins.file.coordinates == LAYOUT.size


def test_hostile_files_get_their_verdicts_and_nothing_crashes(
    cluster: None, tmp_path: Path
) -> None:
    store = Blockstore(tmp_path, chunk_size=CHUNK, durable=False)
    good = _update(0)

    def shifted(h: dict) -> None:  # a tensor's offsets moved off its bytes
        begin, end = h["fc.bias"]["data_offsets"]
        h["fc.bias"]["data_offsets"] = [begin + 8, end + 8]

    def past_the_end(h: dict) -> None:  # claims more bytes than the file holds
        h["out.weight"]["shape"] = [10, 121]
        begin, end = h["out.weight"]["data_offsets"]
        h["out.weight"]["data_offsets"] = [begin, end + 40]

    def other_shape(h: dict) -> None:  # consistent with itself, not with the model
        h["fc.weight"]["shape"] = [61, 120]

    def ref(uid: int, data: bytes, *, who: int = 0, content_hash: str | None = None) -> UpdateRef:
        content_hash = content_hash or codec.sha256_hex(data)
        root = "0x" + troot.tensor_root(_vector(good)).hex()
        return UpdateRef(uid, _address(who), content_hash, store.put(data), 5, 0, root)

    wrong_root = ref(6, good)
    refs = [
        ref(1, _with_header(good, shifted)),
        ref(2, _with_header(good, past_the_end)),
        ref(3, _with_header(good, other_shape)),
        ref(4, good, content_hash="0x" + "00" * 32),
        ref(5, good, who=4),  # the file names contributor 0
        UpdateRef(6, _address(0), wrong_root.content_hash, wrong_root.cid, 5, 0, "0x" + "33" * 32),
        UpdateRef(7, _address(6), "0x" + "44" * 32, "bafkreib" + "a" * 51, 5),  # not stored
    ]
    rnd = Round(store, refs, [])
    got = _inspect(rnd)
    verdicts = [(i.early[0] if i.early else None) for i in got]
    assert verdicts == [
        Verdict.MALFORMED,
        Verdict.MALFORMED,
        None,
        Verdict.HASH_MISMATCH,
        Verdict.COPIED,
        Verdict.TENSOR_ROOT_MISMATCH,
        Verdict.UNAVAILABLE,
    ]
    assert "tensor 'fc.bias' at offset 20 leaves a gap" in got[0].early[1]  # type: ignore[index]
    assert "past the" in got[1].early[1]  # type: ignore[index]
    assert got[2].shape_problem == "tensor 'fc.weight' has shape (61, 120), expected (120, 61)"
    assert got[2].file is None
    # The aggregation path, given a lying file, refuses it by name (a verdict-level error).
    with pytest.raises(FormatError, match=refs[0].cid):
        sharded.aggregate_round_sharded(
            store, [refs[0].cid, refs[4].cid], RULES["fedavg"], LAYOUT, num_samples=[1, 1]
        )


def test_a_wrong_store_location_is_a_config_error(cluster: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no embedded content store"):
        sharded.open_location(str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- judging a round


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Blockstore, list[UpdateRef]]:
    """A round with every kind of verdict the screen and the file checks give: honest updates,
    a boosted one, a sign flip, a free rider, a copy of another's bytes, a near-duplicate, a
    file of the wrong shape, a lying header, a hash and a tensor root the file does not have,
    an update nobody stored, a sybil group of three updates in one direction."""
    store = Blockstore(tmp_path_factory.mktemp("judge"), chunk_size=CHUNK, durable=False)
    layout = agg.TensorLayout.of(codec.decode(BASE_MODEL, kind="model").tensors)  # the judge's
    files: list[tuple[int, bytes]] = [(i, _file(_delta(i), i)) for i in range(8)]
    files.append((8, _file({k: v * 20 for k, v in _delta(8).items()}, 8)))  # boosted
    files.append((9, _file({k: -v for k, v in _delta(9).items()}, 9)))  # sign flip
    files.append((10, _file({k: np.zeros_like(v) for k, v in MODEL.items()}, 10)))  # free rider
    near = {k: v * np.float32(1.0001) for k, v in _delta(0).items()}
    files.append((11, _file(near, 11)))  # a rescaled copy of update 1's delta
    wrong = dict(_delta(12), **{"fc.bias": np.zeros(7, np.float32)})
    files.append((12, _file(wrong, 12)))

    def lying(h: dict) -> None:
        begin, end = h["fc.bias"]["data_offsets"]
        h["fc.bias"]["data_offsets"] = [begin + 8, end + 8]

    files.append((13, _with_header(_file(_delta(13), 13), lying)))
    for who, scale in ((17, 0.6), (18, 0.8), (19, 1.1)):  # a sybil group: one direction
        files.append((who, _file({k: v * np.float32(scale) for k, v in _delta(20).items()}, who)))
    refs = []
    for uid, (who, data) in enumerate(files, start=1):
        try:
            root = rounds.update_tensor_root(codec.decode(data, kind="update"), layout, FMT)
        except FormatError:
            root = rounds.ZERO_ROOT
        refs.append(
            UpdateRef(
                uid, _address(who), codec.sha256_hex(data), store.put(data), 20 + uid, 0, root
            )
        )
    first = refs[0]
    n = len(refs)
    refs.append(
        UpdateRef(n + 1, _address(14), first.content_hash, first.cid, 5, 0, first.tensor_root)
    )
    refs.append(
        UpdateRef(n + 2, _address(15), "0x" + "00" * 32, refs[1].cid, 5, 0, refs[1].tensor_root)
    )
    refs.append(
        UpdateRef(n + 3, _address(2), refs[2].content_hash, refs[2].cid, 5, 0, "0x" + "33" * 32)
    )
    refs.append(UpdateRef(n + 4, _address(16), "0x" + "44" * 32, "bafkreib" + "a" * 51, 5))
    return store, refs


JUDGED_RULES = [
    {"rule": "fedavg"},
    {"rule": "median"},
    {"rule": "krum", "f": 2},
    {"rule": "trimmed_mean", "beta": 0.2, "clip_norm": 0.5},
]


def _judgement_bytes(j: rounds.Judgement) -> tuple[object, ...]:
    return (
        j.verdict_bytes,
        j.verdict_cid,
        j.root,
        j.aggregate,
        j.aggregate_hash,
        j.aggregate_tensor_root,
    )


@pytest.mark.parametrize("rule", JUDGED_RULES, ids=lambda r: r["rule"])
def test_a_round_judged_streamed_and_on_1_2_4_workers_is_judge_round_to_the_byte(
    cluster: None, mixed: tuple[Blockstore, list[UpdateRef]], rule: dict
) -> None:
    store, refs = mixed
    spec = TaskSpec(aggregation=rule, fixed_point={"frac_bits": FMT.frac_bits})
    args = dict(
        task_id=1, round_=0, spec=spec, base_model=BASE_MODEL, updates=refs, max_samples=1000
    )
    want = rounds.judge_round(store, **args)  # type: ignore[arg-type]
    verdicts = [e.verdict for e in want.verdict_file.entries]
    assert Verdict.ACCEPTED in verdicts
    got = [
        streaming.judge_round_streamed(
            store, streaming.LocalRunner(store, BLOCK_BYTES), shards=3, **args
        )
    ]
    for workers in (1, 2, 4):
        got.append(
            sharded.judge_round_sharded(store, workers=workers, block_bytes=BLOCK_BYTES, **args)
        )
    for j in got:
        assert [e.verdict for e in j.verdict_file.entries] == verdicts
        assert _judgement_bytes(j) == _judgement_bytes(want)


def test_the_mixed_round_holds_every_verdict(
    mixed: tuple[Blockstore, list[UpdateRef]],
) -> None:
    store, refs = mixed
    spec = TaskSpec(aggregation={"rule": "fedavg"}, fixed_point={"frac_bits": FMT.frac_bits})
    j = streaming.judge_round_streamed(
        store,
        streaming.LocalRunner(store),
        task_id=1,
        round_=0,
        spec=spec,
        base_model=BASE_MODEL,
        updates=refs,
        max_samples=1000,
    )
    got = {e.verdict for e in j.verdict_file.entries}
    assert got >= {
        Verdict.ACCEPTED,
        Verdict.NORM_BOUND,
        Verdict.OUTLIER,
        Verdict.FREE_RIDER,
        Verdict.DUPLICATE,
        Verdict.SHAPE_MISMATCH,
        Verdict.MALFORMED,
        Verdict.HASH_MISMATCH,
        Verdict.TENSOR_ROOT_MISMATCH,
        Verdict.UNAVAILABLE,
        Verdict.SYBIL,
    }, [(e.update_id, e.verdict, e.reason) for e in j.verdict_file.entries]


def test_the_validator_setting_names_the_sharded_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sharded.ShardedSettings().judge() is rounds.judge_round
    monkeypatch.setenv("FEDLEDGER_SHARDED_WORKERS", "4")
    monkeypatch.setenv("FEDLEDGER_RAY_ADDRESS", "head:6379")
    judge = sharded.ShardedSettings.from_env().judge()
    assert judge == sharded.ShardedJudge(4, "head:6379")
    monkeypatch.setenv("FEDLEDGER_SHARDED_WORKERS", "-1")
    with pytest.raises(ConfigError, match="FEDLEDGER_SHARDED_WORKERS"):
        sharded.ShardedSettings.from_env()


def _hand_made(store: Blockstore, data: bytes, *, filesize: int, lie: int = 0) -> str:
    """``data`` stored as a one-level UnixFS DAG built by hand: 4 KiB raw leaves under a root
    that declares ``filesize`` and, with ``lie``, one leaf ``lie`` bytes longer than it is."""
    leaves = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    links, sizes = [], []
    for k, leaf in enumerate(leaves):
        c = CID(1, RAW, hashlib.sha256(leaf).digest())
        store.put_block(c, leaf)
        links.append(PBLink(c.to_bytes(), len(leaf)))
        sizes.append(len(leaf) + (lie if k == 1 else 0))
    root = encode_pbnode(
        links, encode_unixfs(UNIXFS_FILE, filesize=filesize, blocksizes=tuple(sizes))
    )
    c = CID(1, DAG_PB, hashlib.sha256(root).digest())
    store.put_block(c, root)
    return str(c)


def test_a_dag_the_whole_file_walk_reads_is_read_alike_by_ranges_and_a_lying_one_alike_refused(
    tmp_path: Path,
) -> None:
    store = Blockstore(tmp_path, durable=False)
    spec = TaskSpec(aggregation={"rule": "fedavg"}, fixed_point={"frac_bits": FMT.frac_bits})
    layout = agg.TensorLayout.of(codec.decode(BASE_MODEL, kind="model").tensors)
    refs = []
    for i in range(6):
        data = _file(_delta(i), i)
        root = rounds.update_tensor_root(codec.decode(data, kind="update"), layout, FMT)
        # a filesize that lies is not read by the walk; a blocksize that lies fails it
        cid = _hand_made(store, data, filesize=len(data) + 5 * i, lie=1 if i == 5 else 0)
        refs.append(UpdateRef(i + 1, _address(i), codec.sha256_hex(data), cid, 10, 0, root))
    args = dict(task_id=1, round_=0, spec=spec, base_model=BASE_MODEL, updates=refs, max_samples=99)
    want = rounds.judge_round(store, **args)  # type: ignore[arg-type]
    got = streaming.judge_round_streamed(store, streaming.LocalRunner(store), **args)
    # the lying DAG cannot be walked, so its CID is read as the raw block of its digest (the
    # chain's rule for a single-block file), whose bytes are not the update's
    assert [e.verdict for e in want.verdict_file.entries] == [Verdict.ACCEPTED] * 5 + [
        Verdict.HASH_MISMATCH
    ]
    assert _judgement_bytes(got) == _judgement_bytes(want)


def test_float_files_in_a_fixed_point_round_are_judged_as_judge_round_judges_them(
    cluster: None, tmp_path: Path
) -> None:
    store = Blockstore(tmp_path, chunk_size=CHUNK, durable=False)
    layout = agg.TensorLayout.of(codec.decode(BASE_MODEL, kind="model").tensors)
    spec = TaskSpec(aggregation={"rule": "median"}, fixed_point={"frac_bits": FMT.frac_bits})

    def float_file(delta: dict[str, np.ndarray], who: int, encoding: str = "fp32") -> bytes:
        return codec.encode_update(
            delta,
            task_id=1,
            round=0,
            base_hash=MODEL_HASH,
            contributor=_address(who),
            encoding=encoding,  # type: ignore[arg-type]
        )

    files = [_file(_delta(i), i) for i in range(4)]
    files += [float_file(_delta(4), 4), float_file(_delta(5), 5, "fp16")]  # quantized
    huge = _delta(6)
    huge["fc.bias"][3] = 5000.0  # frac_bits 20 holds [-2048, 2048)
    nan = _delta(7)
    nan["out.weight"][1, 2] = np.nan
    files += [
        float_file(huge, 6),
        float_file(nan, 7),
        float_file({"fc.weight": np.ones(3, np.float32)}, 8),
    ]
    refs = []
    for uid, data in enumerate(files, start=1):
        try:
            root = rounds.update_tensor_root(codec.decode(data, kind="update"), layout, FMT)
        except Exception:  # noqa: BLE001 - a file out of range records no root
            root = rounds.ZERO_ROOT
        refs.append(
            UpdateRef(uid, _address(uid - 1), codec.sha256_hex(data), store.put(data), 9, 0, root)
        )
    args = dict(task_id=1, round_=0, spec=spec, base_model=BASE_MODEL, updates=refs, max_samples=99)
    want = rounds.judge_round(store, **args)  # type: ignore[arg-type]
    assert [e.verdict for e in want.verdict_file.entries] == [Verdict.ACCEPTED] * 6 + [
        Verdict.OUT_OF_RANGE,
        Verdict.NON_FINITE,
        Verdict.SHAPE_MISMATCH,
    ]
    local = streaming.judge_round_streamed(store, streaming.LocalRunner(store), shards=2, **args)
    on_ray = sharded.judge_round_sharded(store, workers=2, **args)
    assert _judgement_bytes(local) == _judgement_bytes(want) == _judgement_bytes(on_ray)
