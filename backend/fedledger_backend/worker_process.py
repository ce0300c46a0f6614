"""The backend's worker (indexer, projections, validator) in its own process, supervised.

The REST API answers from the database; the worker fills it.  Both are CPU-bound Python, so in
one process they share one GIL, and a validator judging a round (decode, screen, aggregate)
stalls every request for the length of a GIL slice.  :class:`WorkerProcess` runs the worker as
``python -m fedledger_backend.worker_process`` instead, beside the API process:

* the child gets its configuration as one JSON argument (:class:`WorkerConfig`, no secrets) and
  the validator's private key, if any, as the first line of its stdin (never in argv, the
  environment, a file or a log);
* after every pass the child prints one JSON line: the worker's status
  (:meth:`fedledger_backend.service.Backend.status`), which the parent keeps for ``/health``;
* the child runs at a lower CPU priority (``nice``, default +5): it is background work, and
  on a busy machine the scheduler should run the API's requests first;
* if the child exits, the parent says so on ``/health`` (``last_error``) and starts a new one
  with backoff (1 s doubling to 30 s).  Restarting is safe at any moment: the indexer commits
  each chunk with its checkpoint, and the validator's attestations are idempotent (it checks
  the chain before attesting; see :mod:`fedledger_backend.validator`);
* a child killed by one task (a crash no ``except`` catches) does not crash-loop: the validator
  marks a task ``running`` before judging it, and each new child counts a task it finds still
  marked as a failed attempt, quarantining it after a few (:mod:`fedledger_backend.quarantine`), so the
  other tasks are validated again.

The child's logs go to its stderr, which is the parent's.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedledger import safejson
from fedledger.errors import FormatError

log = logging.getLogger("fedledger.worker")

RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
MAX_REPORT_BYTES = 4 << 20
"""Largest status line read from the child (a report is a few KiB)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What the child needs to build its :class:`fedledger_backend.service.Backend` (no secrets)."""

    rpc_url: str
    contract: str
    from_block: int
    db_url: str
    home: str
    ipfs: str | None = None
    confirmations: int = 0
    evaluate: bool = True
    allow_models: tuple[str, ...] = ()  # the operator's --allow-model list (names, no secrets)
    poll_s: float = 0.25
    chunk: int = 2000
    log_level: str = "INFO"
    nice: int = 5

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        return cls(**json.loads(text))


class WorkerProcess:
    """Start, watch and restart the worker child; ``status()`` is its latest report."""

    def __init__(
        self,
        config: WorkerConfig,
        private_key: bytes | None = None,
        committee_key: bytes | None = None,
    ) -> None:
        self.config = config
        self._key = private_key
        self._committee_key = committee_key
        self._proc: subprocess.Popen[str] | None = None
        self._status: dict[str, Any] = {"last_error": "the worker has not reported yet"}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.reports = 0
        self._reported = threading.Condition(self._lock)

    # -- parent side ---------------------------------------------------------------------------

    def start(self) -> WorkerProcess:
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="worker-watch")
        self._thread.start()
        return self

    def status(self) -> dict[str, Any]:
        with self._lock:
            out = dict(self._status)
            proc = self._proc
        out["worker_pid"] = proc.pid if proc is not None else None
        out["worker_restarts"] = self.restarts
        return out

    def wait_reports(self, n: int = 1, timeout: float = 60.0) -> None:
        """Block until the child has reported ``n`` more passes."""
        with self._reported:
            target = self.reports + n
            if not self._reported.wait_for(lambda: self.reports >= target, timeout):
                raise TimeoutError(f"the worker process made no {n} passes within {timeout}s")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._thread is not None:
            self._thread.join(timeout)

    def _spawn(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedledger_backend.worker_process", self.config.to_json()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(Path(__file__).resolve().parents[2]),  # the checkout, as for `fedledger serve`
        )
        assert proc.stdin is not None
        proc.stdin.write((self._key.hex() if self._key else "") + "\n")
        proc.stdin.write((self._committee_key.hex() if self._committee_key else "") + "\n")
        proc.stdin.close()
        return proc

    def _supervise(self) -> None:
        backoff = RESTART_MIN_S
        while not self._stop.is_set():
            started = time.monotonic()
            proc = self._spawn()
            with self._lock:
                self._proc = proc
            log.info("worker process started", extra={"pid": proc.pid})
            assert proc.stdout is not None
            for line in proc.stdout:
                self._on_line(line)
            code = proc.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started > 60:
                backoff = RESTART_MIN_S
            why = f"the worker process exited with code {code}; restarting in {backoff:g}s"
            log.error("worker process exited", extra={"pid": proc.pid, "code": code})
            with self._lock:  # until the new child reports, /health shows why it restarted
                self._status = {"last_error": why}
            self.restarts += 1
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, RESTART_MAX_S)

    def _on_line(self, line: str) -> None:
        # The child prints whatever code it runs prints, and its reports quote error messages
        # from outside: parsed within bounds (fedledger.safejson), a stray line cannot crash us.
        try:
            report = safejson.loads(line, what="worker report", max_bytes=MAX_REPORT_BYTES)
        except FormatError:
            return  # not a report (a stray print): ignore it
        if not isinstance(report, dict):
            return
        with self._reported:
            self._status = report
            self.reports += 1
            self._reported.notify_all()


# -- child side --------------------------------------------------------------------------------


def child_main(argv: list[str]) -> int:
    """``python -m fedledger_backend.worker_process CONFIG_JSON`` with the key, then the committee key
    (each hex or empty), one a line, on stdin."""
    from eth_account import Account
    from nacl.public import PrivateKey

    from fedledger.chain.ledger import Ledger, connect
    from fedledger.content.store import open_store
    from fedledger.errors import FedledgerError
    from fedledger.logs import configure
    from fedledger_backend.db import Database
    from fedledger_backend.service import Backend

    if len(argv) != 1:
        print("usage: python -m fedledger_backend.worker_process CONFIG_JSON", file=sys.stderr)
        return 2
    cfg = WorkerConfig.from_json(argv[0])
    configure(cfg.log_level, json_lines=True)
    if cfg.nice:
        os.nice(cfg.nice)
    key = sys.stdin.readline().strip()
    reader = sys.stdin.readline().strip()  # the committee key, or empty
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ledger = Ledger(connect(cfg.rpc_url), cfg.contract, from_block=cfg.from_block)
        ledger.log_chunk = cfg.chunk
        backend = Backend(
            ledger=ledger,
            store=open_store(cfg.ipfs, Path(cfg.home)),
            db=Database(cfg.db_url),
            account=Account.from_key(bytes.fromhex(key)) if key else None,
            committee_key=PrivateKey(bytes.fromhex(reader)) if reader else None,
            confirmations=cfg.confirmations,
            evaluate=cfg.evaluate,
            allow_models=tuple(cfg.allow_models),
            poll_s=cfg.poll_s,
            chunk=cfg.chunk,
        )
    except FedledgerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    del key, reader
    backend.start()
    try:
        while not stop.is_set():
            try:
                backend.wait_passes(1, timeout=1.0)
            except TimeoutError:
                continue
            try:
                print(json.dumps(backend.status(), default=str), flush=True)
            except BrokenPipeError:
                break  # the parent is gone: stop rather than run unsupervised
    finally:
        backend.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(child_main(sys.argv[1:]))
