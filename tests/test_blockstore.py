"""The embedded blockstore (fedledger.content.blockstore) and open_store (fedledger.content.store)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedledger.content.blockstore import Blockstore, multihash_key
from fedledger.content.cid import CID, FEDLEDGER, compute_cid, parse_cid
from fedledger.content.kubo import KuboStore
from fedledger.content.store import ContentStore, open_store
from fedledger.errors import ConfigError, ContentNotFoundError, IntegrityError, StoreError

CHUNK = 1024


@pytest.fixture
def store(tmp_path: Path) -> Blockstore:
    return Blockstore(tmp_path / "blocks", chunk_size=CHUNK)


def data_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def block_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blocks").rglob("*.data"))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 174 * CHUNK + 1, 300_001])
def test_put_returns_kubos_cid_and_get_returns_the_bytes(store: Blockstore, size: int) -> None:
    data = data_of(size, size)
    cid = store.put(data)
    assert cid == compute_cid(data, FEDLEDGER.with_chunk_size(CHUNK))
    assert store.get(cid) == data
    assert store.get_hashed(cid) == (data, "0x" + hashlib.sha256(data).hexdigest())
    assert store.open(cid).read() == data
    assert store.has(cid)
    stat = store.stat(cid)
    assert stat.size == size and stat.cid == cid


def test_default_chunk_size_is_kubos(tmp_path: Path) -> None:
    data = data_of(600_000)
    assert Blockstore(tmp_path).put(data) == compute_cid(data)


def test_put_accepts_paths_and_streams(store: Blockstore, tmp_path: Path) -> None:
    data = data_of(50_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert store.put(path) == store.put(io.BytesIO(data)) == store.put(data)


def test_open_streams_in_small_reads(store: Blockstore) -> None:
    data = data_of(20_000)
    with store.open(store.put(data)) as f:
        pieces = iter(lambda: f.read(333), b"")
        assert b"".join(pieces) == data


def test_implements_the_content_store_protocol(store: Blockstore) -> None:
    assert isinstance(store, ContentStore)


# --------------------------------------------------------------------------- integrity


def test_a_flipped_byte_in_a_stored_block_raises_integrity_error_naming_it(
    store: Blockstore,
) -> None:
    data = data_of(5 * CHUNK)
    cid = store.put(data)
    victim = block_files(store.root)[2]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as err:
        store.get(cid)
    bad = parse_cid(str(err.value).split()[1])
    assert victim.name == multihash_key(bad) + ".data"
    with pytest.raises(IntegrityError):
        store.get_hashed(cid)  # hashing the whole file does not replace checking each block
    with pytest.raises(IntegrityError):
        store.open(cid).read()
    with pytest.raises(IntegrityError):
        store.verify(cid)


def test_get_hashed_with_the_expected_hash_proves_the_bytes_and_still_names_corruption(
    store: Blockstore,
) -> None:
    """With the sha256 the chain records, the blocks are read unhashed: a match proves the
    bytes; a mismatch is read again block by block, so a corrupted store is reported as such
    and a file that is not what its hash says comes back with its own hash."""
    data = data_of(175 * CHUNK + 7)  # two levels of dag-pb nodes
    cid = store.put(data)
    right = "0x" + hashlib.sha256(data).hexdigest()
    assert store.get_hashed(cid, expect=right.upper().replace("0X", "0x")) == (data, right)
    other = "0x" + hashlib.sha256(b"another file").hexdigest()
    assert store.get_hashed(cid, expect=other) == (data, right)
    for victim in (block_files(store.root)[3], _largest_node(store)):
        raw = bytearray(victim.read_bytes())
        saved = bytes(raw)
        raw[len(raw) // 3] ^= 0x40
        victim.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError, match="corrupted"):
            store.get_hashed(cid, expect=right)
        victim.write_bytes(saved)
    assert store.get_hashed(cid, expect=right) == (data, right)


def _largest_node(store: Blockstore) -> Path:
    """A dag-pb node's file (the leaves are raw blocks of exactly CHUNK bytes)."""
    nodes = [p for p in block_files(store.root) if p.stat().st_size != CHUNK]
    return max(nodes, key=lambda p: p.stat().st_size)


def test_a_missing_block_raises_content_not_found(store: Blockstore) -> None:
    cid = store.put(data_of(3 * CHUNK))
    block_files(store.root)[0].unlink()
    with pytest.raises(ContentNotFoundError):
        store.get(cid)
    with pytest.raises(ContentNotFoundError):
        store.get(compute_cid(b"never stored"))


def test_put_block_refuses_bytes_that_do_not_match(store: Blockstore) -> None:
    with pytest.raises(IntegrityError):
        store.put_block(compute_cid(b"a"), b"b")


# --------------------------------------------------------------------------- crash safety


class Exploding(io.RawIOBase):
    """A source that fails after ``limit`` bytes, like a disk or socket error mid-import."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.data, self.limit, self.pos = data, limit, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if self.pos >= self.limit:
            raise OSError("source failed")
        piece = self.data[self.pos : self.pos + size]
        self.pos += len(piece)
        return piece


def assert_all_blocks_whole(root: Path) -> None:
    assert not list((root / "tmp").iterdir())
    for f in block_files(root):
        digest = hashlib.sha256(f.read_bytes()).digest()
        assert multihash_key(CID(1, 0x55, digest)) + ".data" == f.name


def test_a_failed_put_leaves_no_partial_block_and_no_temp_file(store: Blockstore) -> None:
    data = data_of(20 * CHUNK)
    with pytest.raises(StoreError):
        store.put(Exploding(data, 7 * CHUNK + 10))
    assert_all_blocks_whole(store.root)
    assert store.pins() == []


def test_a_killed_writer_leaves_only_whole_blocks(tmp_path: Path) -> None:
    root = tmp_path / "store"
    script = textwrap.dedent(
        f"""
        import os, sys
        from fedledger.content.blockstore import Blockstore
        store = Blockstore({str(root)!r}, chunk_size=4096)
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        while True:
            store.put(os.urandom(4 * 1024 * 1024), pin=False)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    deadline = time.monotonic() + 10
    while len(block_files(root)) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert block_files(root), "the writer never stored a block"
    Blockstore(root)  # reopening clears leftovers of in-flight writes
    assert_all_blocks_whole(root)


# --------------------------------------------------------------------------- pins and gc


def test_gc_removes_unpinned_blocks_and_keeps_pinned_dags(store: Blockstore) -> None:
    shared = data_of(4 * CHUNK, 1)
    kept = store.put(shared + data_of(3 * CHUNK, 2))
    dropped = store.put(shared + data_of(3 * CHUNK, 3), pin=False)
    before = len(block_files(store.root))
    result = store.gc()
    assert (
        result.removed_blocks > 0 and len(block_files(store.root)) == before - result.removed_blocks
    )
    store.verify(kept)
    assert not store.has(dropped)
    store.unpin(kept)
    store.gc()
    assert block_files(store.root) == []


def test_pins_survive_reopening_the_store(tmp_path: Path) -> None:
    first = Blockstore(tmp_path, chunk_size=CHUNK)
    cid = first.put(data_of(3 * CHUNK), pin=False)
    first.pin(cid)
    second = Blockstore(tmp_path, chunk_size=CHUNK)
    assert second.is_pinned(cid) and second.pins() == [cid]
    second.gc()
    assert second.get(cid)


def test_pinning_an_incomplete_dag_fails(store: Blockstore) -> None:
    cid = store.put(data_of(3 * CHUNK), pin=False)
    block_files(store.root)[0].unlink()
    with pytest.raises(ContentNotFoundError):
        store.pin(cid)


# --------------------------------------------------------------------------- open_store


@pytest.mark.parametrize("spec", [None, "", "embedded"])
def test_open_store_defaults_to_the_embedded_store_in_home(
    tmp_path: Path, spec: str | None
) -> None:
    store = open_store(spec, tmp_path)
    assert isinstance(store, Blockstore) and store.root == tmp_path / "blocks"


def test_open_store_with_a_url_gives_the_kubo_adapter(tmp_path: Path) -> None:
    store = open_store("http://127.0.0.1:5001", tmp_path)
    assert isinstance(store, KuboStore) and isinstance(store, ContentStore)


@pytest.mark.parametrize("spec", ["ftp://x", "/some/path", "kubo"])
def test_open_store_rejects_anything_else(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ConfigError):
        open_store(spec, tmp_path)


def test_unwritable_root_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        Blockstore(blocker / "store")
    assert os.path.exists(blocker)
