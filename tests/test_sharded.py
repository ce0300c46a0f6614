"""Validators beyond one machine's memory: a round streamed from the real embedded store by
coordinate ranges (fedledger.protocol.streaming) and sharded across real Ray workers
(fedledger_backend.sharded) gives the same aggregate, bit for bit, as the in-memory exact rules,
whatever the number of workers; hostile files get a verdict, never a crash; byte ranges
outside a file are refused."""

from __future__ import annotations

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
from fedledger.content.cid import compute_cid
from fedledger.content.kubo import KuboStore
from fedledger.content.store import RangeReadable
from fedledger.errors import ConfigError, FormatError, IntegrityError
from fedledger.protocol import aggregation as agg
from fedledger.protocol import codec, exact_rules, streaming
from fedledger.protocol import tensor_root as troot
from fedledger.protocol.exact_rules import ExactRule
from fedledger.protocol.fixedpoint import FixedPointFormat
from fedledger.protocol.rounds import UpdateRef
from fedledger.protocol.verdicts import Verdict

ray = pytest.importorskip("ray")
sharded = pytest.importorskip("fedledger_backend.sharded")

FMT = FixedPointFormat(frac_bits=20)
BASE = "0x" + "22" * 32
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


def _update(i: int, scale: float = 0.02) -> bytes:
    rng = np.random.default_rng(i)
    delta = {k: (rng.standard_normal(v) * scale).astype(np.float32) for k, v in SHAPES.items()}
    return codec.encode_update(
        delta,
        task_id=1,
        round=0,
        base_hash=BASE,
        contributor=_address(i),
        encoding="int32",
        fixed_point=FMT,
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
        task_id=1, round_=0, base_hash=BASE, layout=LAYOUT, fmt=FMT, workers=2
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
    assert streaming.streamed_tensor_root(reader, 4096) == troot.tensor_root(honest.vectors[0])
    runner = streaming.LocalRunner(honest.store.open_range, files, BLOCK_BYTES)
    stats = streaming.round_statistics(
        runner, streaming.split(LAYOUT.size, 3), FMT, center_of=[0, 1, 2, 3]
    )
    assert stats.exact.gram == exact_rules.gram(honest.vectors)
    assert list(stats.exact.sq_norms) == exact_rules.sq_norms(honest.vectors)
    center = exact_rules.median(honest.vectors[:4]).astype(object)
    assert list(stats.exact.center_dots or ()) == [
        int(v.astype(object) @ center) for v in honest.vectors
    ]


@pytest.mark.parametrize("name", sorted(RULES))
def test_streaming_in_one_process_is_the_in_memory_exact_result(honest: Round, name: str) -> None:
    rule = RULES[name]
    files = [
        streaming.open_update(honest.store.open_range(r.cid), r.cid, LAYOUT, max_bytes=1 << 24)
        for r in honest.refs
    ]
    want = exact_rules.aggregate_exact(rule, honest.vectors, honest.num_samples)
    got = streaming.stream_aggregate(
        honest.store.open_range, files, rule, honest.num_samples, block_bytes=BLOCK_BYTES
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
    assert digests == {sharded.aggregate_digest(want)}


def test_sharded_statistics_are_the_exact_sums(cluster: None, honest: Round) -> None:
    files = [i.file for i in _inspect(honest)]
    stats = sharded.round_statistics_sharded(
        honest.store, files, FMT, workers=4, block_bytes=BLOCK_BYTES
    )
    assert stats.exact.gram == exact_rules.gram(honest.vectors)
    norms = [agg.norm(v.astype(np.float32) * np.float32(2**-20)) for v in honest.vectors]
    assert stats.norms() == pytest.approx(norms, rel=1e-6)


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
