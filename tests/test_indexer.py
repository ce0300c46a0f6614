"""The indexer under faults, on a real anvil and SQLite: reorgs of every depth, a chain that got
shorter, a devnet that was replaced, an RPC endpoint that went away, and ``kill -9`` at random
points.  After each, the database must equal a fresh rebuild from the chain, table by table."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from chain_kit import (
    assert_same_tables,
    busy_chain,
    dump,
    fresh_dump,
    indexer,
    reorg,
    rpc,
    url_of,
)
from sqlalchemy import func, select

import fedledger_backend.indexer as indexer_mod
from fedledger.chain.devnet import free_port, start_anvil
from fedledger.chain.ledger import Ledger, connect
from fedledger.errors import ChainError
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import AttestationRow, Checkpoint, ContributionRow, Database, EventRow
from fedledger_backend.indexer import ChainReplaced
from fedledger_backend.service import Backend

REPO = Path(__file__).resolve().parent.parent


def _events(ledger: Ledger) -> list[tuple[int, int, str]]:
    head = int(ledger.w3.eth.block_number)
    return [(e["blockNumber"], e["logIndex"], e["blockHash"]) for e in ledger.iter_logs(0, head)]


def _indexed(db: Database) -> list[tuple[int, int, str]]:
    with db.session() as s:
        rows = s.execute(
            select(EventRow.block_number, EventRow.log_index, EventRow.block_hash).order_by(
                EventRow.block_number, EventRow.log_index
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.mark.parametrize("depth", [1, 3])
def test_a_reorg_is_rolled_back_and_the_index_equals_a_fresh_rebuild(
    depth, ledger, dev_accounts, tmp_path
):
    task = busy_chain(ledger, dev_accounts, rounds=2, contributors=3)
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    ix = indexer(ledger, db)
    ix.run_once()
    before = _indexed(db)
    newcomer = dev_accounts[15].address
    reorg(
        ledger, depth, [(dev_accounts[0], ledger.contract.functions.addContributor(task, newcomer))]
    )
    assert ix.run_once() >= 1
    assert ix.reorgs == 1
    assert _indexed(db) == _events(ledger) != before
    assert_same_tables(dump(db), fresh_dump(ledger, tmp_path / "fresh.db"))


def test_a_reorg_deeper_than_the_confirmations_is_still_rolled_back(ledger, dev_accounts, tmp_path):
    busy_chain(ledger, dev_accounts, rounds=2, contributors=3)
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    ix = indexer(ledger, db, confirmations=2)
    ix.run_once()
    reorg(ledger, 6)  # the last 6 blocks replaced by empty ones: 4 of them were "confirmed"
    for _ in range(3):
        rpc(url_of(ledger), "evm_mine")
    ix.run_once()
    assert ix.reorgs == 1
    assert_same_tables(dump(db), fresh_dump(ledger, tmp_path / "fresh.db", confirmations=2))


def test_a_chain_shorter_than_the_checkpoint_is_rolled_back_to_the_fork(
    ledger, dev_accounts, tmp_path
):
    task = busy_chain(ledger, dev_accounts, rounds=2, contributors=3)
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    ix = indexer(ledger, db)
    ix.run_once()
    checkpoint = ix.last_indexed()
    rpc(url_of(ledger), "anvil_rollback", [4])
    ix.run_once()
    assert ix.reorgs == 1 and ix.last_indexed() == checkpoint - 4
    assert _indexed(db) == _events(ledger)
    assert ledger.sender is not None
    ledger.sender.nonces.resync(ledger.sender.address)  # the rolled-back txs took nonces
    ledger.add_contributor(task, dev_accounts[16].address)
    ix.run_once()
    assert_same_tables(dump(db), fresh_dump(ledger, tmp_path / "fresh.db"))


def test_a_fork_below_the_kept_block_hashes_is_found_through_the_events(
    ledger, dev_accounts, tmp_path, monkeypatch
):
    monkeypatch.setattr(indexer_mod, "KEEP_BLOCK_HASHES", 2)
    busy_chain(ledger, dev_accounts, rounds=2, contributors=3)
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    ix = indexer(ledger, db)
    ix.run_once()
    reorg(ledger, 7)
    ix.run_once()
    assert ix.reorgs == 1
    assert_same_tables(dump(db), fresh_dump(ledger, tmp_path / "fresh.db"))


def test_a_replaced_devnet_is_reported_and_the_index_is_kept(dev_accounts, store, tmp_path):
    port = free_port()
    owner = dev_accounts[0]
    with start_anvil(port, accounts=20) as first:
        led = Ledger.deploy(connect(first.url), owner)
        busy_chain(led, dev_accounts, rounds=1, contributors=3)
        db = Database(f"sqlite:///{tmp_path / 'a.db'}")
        indexer(led, db).run_once()
    kept = dump(db)
    # A different genesis time: two devnets started within the same second would otherwise
    # produce identical blocks, which no indexer could tell from a reorg.
    genesis = str(int(time.time()) + 10_000)
    with start_anvil(port, accounts=20, extra_args=["--timestamp", genesis]) as second:
        again = Ledger.deploy(connect(second.url), owner)  # same deployer, nonce 0: same address
        assert again.address == led.address
        ix = indexer(again, db)
        with pytest.raises(ChainReplaced, match="replaced"):
            ix.run_once()
        assert dump(db) == kept
        backend = Backend(ledger=again, store=store, db=db, evaluate=False, poll_s=0.05)
        backend.start()
        try:
            with BackgroundServer(backend.app()) as srv:
                backend.wait_passes(1, timeout=30)
                health = httpx.get(srv.url + "/health").json()
        finally:
            backend.stop()
        assert health["status"] == "degraded"
        assert "replaced" in health["detail"]
        assert dump(db) == kept


def test_the_rpc_going_away_degrades_health_and_the_backend_recovers(dev_accounts, store, tmp_path):
    port = free_port()
    state = tmp_path / "anvil-state.json"
    devnet = start_anvil(port, accounts=20, state_path=state)
    try:
        led = Ledger.deploy(connect(devnet.url), dev_accounts[0])
        task = busy_chain(led, dev_accounts, rounds=1, contributors=3)
        db = Database(f"sqlite:///{tmp_path / 'a.db'}")
        backend = Backend(ledger=led, store=store, db=db, evaluate=False, poll_s=0.05)
        backend.start()
        with BackgroundServer(backend.app()) as srv:
            _wait(lambda: backend.indexer.last_indexed() == led.w3.eth.block_number, "indexed")
            assert httpx.get(srv.url + "/health").json()["status"] == "ok"

            devnet.stop()
            _wait(lambda: backend.last_error is not None, "a failed pass")
            assert "cannot read" in str(backend.last_error) or "failed" in str(backend.last_error)
            with pytest.raises(ChainError):
                backend.indexer.run_once()
            assert httpx.get(srv.url + "/health").json()["status"] == "degraded"

            devnet = start_anvil(port, accounts=20, state_path=state)
            _wait(lambda: backend.last_error is None, "a good pass", timeout=60)
            assert led.sender is not None
            led.sender.nonces.resync(led.sender.address)
            led.add_contributor(task, dev_accounts[17].address)
            head = led.w3.eth.block_number
            _wait(lambda: backend.indexer.last_indexed() == head, "the new block indexed")
            assert httpx.get(srv.url + "/health").json()["status"] == "ok"
        backend.stop()
        assert_same_tables(dump(db), fresh_dump(led, tmp_path / "fresh.db"))
    finally:
        devnet.stop()


def _wait(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f}s")
        time.sleep(0.05)


KILLS = 15


def test_kill_9_at_random_points_loses_nothing_and_counts_nothing_twice(
    ledger, dev_accounts, tmp_path
):
    busy_chain(ledger, dev_accounts, rounds=10, contributors=6)
    db_url = f"sqlite:///{tmp_path / 'killed.db'}"
    cmd = [
        sys.executable,
        "-m",
        "fedledger_backend.worker",
        "--rpc-url",
        url_of(ledger),
        "--contract",
        ledger.address,
        "--from-block",
        str(ledger.from_block),
        "--db",
        db_url,
        "--chunk",
        "1",
        "--until-synced",
    ]
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    db = Database(db_url)
    kills = 0
    while kills < KILLS:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else b""
        for _ in range(rng.randrange(0, 4)):
            proc.stdout.readline()  # let some chunks commit
        time.sleep(rng.uniform(0, 0.02))  # then land anywhere inside the next one
        alive = proc.poll() is None
        proc.kill()
        proc.wait()
        assert alive, f"the worker finished before kill {kills + 1}; make the chain longer"
        kills += 1
        _assert_consistent(db, seed)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert kills == KILLS
    assert_same_tables(dump(db), fresh_dump(ledger, tmp_path / "fresh.db"))


def _assert_consistent(db: Database, seed: int) -> None:
    """After any crash: nothing above the checkpoint, every event projected exactly once."""
    with db.session() as s:
        cp = s.scalars(select(Checkpoint)).first()
        top = s.scalar(select(func.max(EventRow.block_number)))
        if cp is None:
            assert top is None, seed
            return
        assert top is None or top <= cp.block_number, seed
        for name, table in (
            ("UpdateSubmitted", ContributionRow),
            ("RoundAttested", AttestationRow),
        ):
            events = s.scalar(select(func.count()).where(EventRow.name == name))
            assert s.scalar(select(func.count()).select_from(table)) == events, (name, seed)


def test_a_read_only_data_dir_gives_a_clear_error_not_a_traceback(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from fedledger.errors import ConfigError, StoreError\n"
        "from fedledger.content.store import open_store\n"
        "from fedledger_backend.db import Database\n"
        "d = Path(sys.argv[1])\n"
        "try:\n"
        "    open_store(None, d)\n"
        "except StoreError as e:\n"
        "    print('store:', e)\n"
        "try:\n"
        "    Database(f'sqlite:///{d}/index.db').create()\n"
        "except ConfigError as e:\n"
        "    print('db:', e)\n"
    )
    out = _as_unprivileged(code, ro)
    assert "store: cannot open blockstore" in out, out
    assert "db: cannot open the database" in out, out
    assert not list(ro.iterdir())


def _as_unprivileged(code: str, ro: Path) -> str:
    """Run ``code`` where ``ro`` is read-only: a read-only bind mount in a private mount
    namespace when we are root (root writes through any mode bits), else mode 0555."""
    import os
    import shlex
    import shutil

    argv = [sys.executable, "-c", code, str(ro)]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root without unshare(1): cannot make a read-only directory")
        d = shlex.quote(str(ro))
        script = f"mount --bind {d} {d} && mount -o remount,ro,bind {d} && exec {shlex.join(argv)}"
        argv = ["unshare", "--mount", "sh", "-c", script]
    ro.chmod(0o555)
    try:
        res = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=60)
    finally:
        ro.chmod(0o755)
    if res.returncode != 0 and b"mount" in res.stderr:
        pytest.skip(f"cannot make a read-only mount here: {res.stderr.decode().strip()}")
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def test_a_tasks_sample_cap_is_indexed_from_the_chain(ledger, dev_accounts, tmp_path):
    from fedledger_backend.db import TaskRow

    task = busy_chain(ledger, dev_accounts, rounds=1, contributors=2)
    db = Database(f"sqlite:///{tmp_path / 'cap.db'}")
    indexer(ledger, db).run_once()
    with db.session() as s:
        row = s.get(TaskRow, task)
        assert row is not None
        assert row.max_samples == int(ledger.get_task(task)["maxSamples"]) > 0


def test_a_database_an_older_version_made_is_refused_with_what_to_do(tmp_path):
    """A table lacking a column this version reads is never half-used: the error names the
    column and `--reindex`, which rebuilds the cache from the chain."""
    from sqlalchemy import text

    from fedledger.errors import ConfigError

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Database(url).create()
    with Database(url).engine.begin() as c:
        c.execute(text("ALTER TABLE tasks DROP COLUMN max_samples"))
    with pytest.raises(ConfigError, match=r"lacks tasks\.max_samples") as err:
        Database(url).create()
    assert "--reindex" in str(err.value)
    db = Database(url)
    db.drop()  # what `fedledger serve --reindex` does first
    assert db.create().missing_columns() == []
