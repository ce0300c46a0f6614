"""Start and stop a local development chain: anvil from the npm package, or ``npx hardhat node``.

The devnet uses the well-known development mnemonic, so its accounts are predictable.  Those
keys are public test keys, never to be used on a real network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fedledger.errors import ChainError, ConfigError

DEV_MNEMONIC = "test test test test test test test test test test test junk"
REPO_ROOT = Path(__file__).resolve().parents[3]  # client/fedledger/chain/ -> checkout


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> Path:
    """Locate a Foundry binary (anvil, forge, cast) from node_modules, else from PATH."""
    local = REPO_ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return local
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ConfigError(
        f"{name} not found in node_modules/.bin or on PATH",
        hint="run `npm ci` in the fedledger checkout (or `make test`, which bootstraps it)",
    )


def wait_for_rpc(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> int:
    """Wait until ``url`` answers ``eth_chainId``; return the chain id."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ChainError(
                f"devnet process exited with code {proc.returncode} before serving {url}"
            )
        try:
            r = httpx.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                timeout=2,
            )
            return int(r.json()["result"], 16)
        except Exception as exc:  # noqa: BLE001 - any failure means "not up yet"
            last = exc
            time.sleep(0.05)
    raise ChainError(f"no Ethereum RPC answered at {url} within {timeout:.0f}s: {last}")


@dataclass
class Devnet:
    """A running local chain process."""

    url: str
    chain_id: int
    process: subprocess.Popen[bytes]
    kind: str = "anvil"
    log_path: Path | None = None
    _log: object = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the devnet and everything it started (``npx`` runs node as a child process)."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        else:
            self._signal(signal.SIGKILL)  # a child may outlive its parent

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_anvil(
    port: int | None = None,
    *,
    chain_id: int = 31337,
    accounts: int = 10,
    block_time: float | None = None,
    state_path: Path | None = None,
    log_path: Path | None = None,
    extra_args: list[str] | None = None,
) -> Devnet:
    """Start anvil on loopback with the development mnemonic and wait until it serves RPC."""
    port = port or free_port()
    args = [
        str(find_binary("anvil")),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--accounts",
        str(accounts),
        "--mnemonic",
        DEV_MNEMONIC,
        "--silent",
    ]
    if block_time:
        args += ["--block-time", str(block_time)]
    if state_path is not None:
        args += ["--state", str(state_path)]
    args += extra_args or []
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        cid = wait_for_rpc(url, proc=proc)
    except ChainError:
        _kill_group(proc)
        raise
    return Devnet(url=url, chain_id=cid, process=proc, kind="anvil", log_path=log_path, _log=out)


def start_hardhat(port: int | None = None, *, log_path: Path | None = None) -> Devnet:
    """Start ``npx hardhat node`` from the checkout and wait until it serves RPC."""
    port = port or free_port()
    npx = shutil.which("npx")
    if npx is None:
        raise ConfigError("npx not found", hint="install Node.js 20 and run `npm ci`")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [npx, "hardhat", "node", "--hostname", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        cid = wait_for_rpc(url, timeout=90, proc=proc)
    except ChainError:
        _kill_group(proc)
        raise
    return Devnet(url=url, chain_id=cid, process=proc, kind="hardhat", log_path=log_path, _log=out)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def dev_private_keys(n: int = 10) -> list[str]:
    """The development mnemonic's first ``n`` private keys (public test keys, devnets only)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
        for i in range(n)
    ]
