"""Chain access through web3.py 8: connect, deploy, call, send, decode reverts, read events.

Every transaction fedledger sends goes through :class:`Sender`, which signs locally with a
keystore account and hands out nonces itself so that many submissions from one key can be in
flight at once without gaps or stalls.  Reverts are decoded into the contract's named custom
errors (:class:`~fedledger.errors.ContractRevert`).  Event logs are read in bounded
``eth_getLogs`` chunks and yielded as a stream.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    Web3RPCError,
)
from web3.types import RPCEndpoint

from fedledger import safejson
from fedledger.chain import artifacts as contracts
from fedledger.chain.records import (
    RoundResult,
    UpdateRecord,
    records_of_batch,
)
from fedledger.content.cid import recorded_digest
from fedledger.errors import ChainError, ConfigError, ContractRevert, FormatError, NotFoundError

EVENT_NAMES = (
    "TaskCreated",
    "ContributorAdded",
    "ValidatorAdded",
    "EncryptionKeySet",
    "UpdateSubmitted",
    "UpdatesRelayed",
    "EntrySkipped",
    "RoundSealed",
    "ResultProposed",
    "RoundAttested",
    "RoundFinalized",
)


def connect(rpc_url: str, *, timeout: float = 30.0) -> Web3:
    """A Web3 connected to ``rpc_url``; a ChainError that names the URL if nothing answers."""
    # web3 asks the node for its chain id around every contract call (two extra round trips
    # per eth_call); an endpoint's chain id does not change, so that answer is cached.
    provider = Web3.HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    w3 = Web3(provider)
    try:
        w3.eth.chain_id  # noqa: B018 - probe the endpoint
    except Exception as exc:  # noqa: BLE001 - any transport failure
        raise ChainError(
            f"cannot reach an Ethereum RPC endpoint at {rpc_url}: {type(exc).__name__}",
            hint="check FEDLEDGER_RPC_URL / --rpc-url, or start a devnet with `fedledger devnet`",
        ) from exc
    return w3


def as_chain_error(exc: BaseException) -> ChainError | None:
    """A ChainError for a transport failure that escaped a web3 call (the node went down, reset
    the connection or timed out), else None: callers turn only these into one clear message."""
    import requests

    if isinstance(exc, ChainError):
        return exc
    if isinstance(
        exc,
        requests.exceptions.RequestException
        | ProviderConnectionError
        | RequestTimedOut
        | ConnectionError
        | TimeoutError,
    ):
        return ChainError(
            f"lost the connection to the Ethereum RPC endpoint ({type(exc).__name__})",
            hint="check that the node is running and FEDLEDGER_RPC_URL / --rpc-url points at it",
        )
    if isinstance(exc, Web3RPCError):
        return ChainError(f"the Ethereum RPC endpoint answered an error: {exc}")
    return None


def hex32(value: str | bytes) -> bytes:
    """Parse a 32-byte hash given as 0x-hex or bytes."""
    if isinstance(value, bytes | bytearray):
        b = bytes(value)
    else:
        s = value[2:] if value.startswith("0x") else value
        try:
            b = bytes.fromhex(s)
        except ValueError as exc:
            raise ConfigError(f"not a hex hash: {value!r}") from exc
    if len(b) != 32:
        raise ConfigError(f"expected a 32-byte hash, got {len(b)} bytes: {value!r}")
    return b


def to_hex(b: bytes | str) -> str:
    """``0x`` hex of bytes; a hex string (as event fields decoded for indexers are) lowercased."""
    if isinstance(b, str):
        return b.lower() if b.startswith(("0x", "0X")) else "0x" + b.lower()
    return "0x" + bytes(b).hex()


# --------------------------------------------------------------------------------------------
# Revert decoding


def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    abi = list(contracts.load_artifact().abi)
    if contracts.COURT_ARTIFACT_PATH.is_file():  # the court's errors decode the same way
        abi += contracts.load_artifact(contracts.COURT_ARTIFACT_PATH).abi
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [_abi_type(i) for i in item["inputs"]]
        names = [i["name"] for i in item["inputs"]]
        sel = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        table[sel] = (item["name"], types, names)
    return table


def _abi_type(inp: dict[str, Any]) -> str:
    if inp["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in inp["components"])
        return f"({inner}){inp['type'][5:]}"
    return str(inp["type"])


_ERRORS: dict[bytes, tuple[str, list[str], list[str]]] | None = None


def _fmt_arg(v: Any) -> str:
    if isinstance(v, bytes):
        return to_hex(v)
    return str(v)


def decode_revert(data: bytes | str | None) -> ContractRevert | None:
    """Decode revert data into the contract's named error, or None if it is not one of ours."""
    global _ERRORS
    if data is None:
        return None
    raw = HexBytes(data) if isinstance(data, str) else bytes(data)
    if len(raw) < 4:
        return None
    if _ERRORS is None:
        _ERRORS = _error_table()
    entry = _ERRORS.get(bytes(raw[:4]))
    if entry is None:
        if bytes(raw[:4]) == bytes.fromhex("08c379a0"):  # Error(string)
            (msg,) = abi_decode(["string"], bytes(raw[4:]))
            return ContractRevert("Error", {"message": msg}, f"contract reverted: {msg}")
        return None
    name, types, names = entry
    values = abi_decode(types, bytes(raw[4:])) if types else ()
    args = {
        n: to_checksum_address(v) if t == "address" else v
        for n, t, v in zip(names, types, values, strict=True)
    }
    shown = ", ".join(f"{k}={_fmt_arg(v)}" for k, v in args.items())
    return ContractRevert(name, args, f"TrainingLedger reverted with {name}({shown})")


def _revert_from_exception(exc: Exception) -> ContractRevert | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str | bytes):
        try:
            return decode_revert(data)
        except Exception:  # noqa: BLE001 - undecodable data is reported as-is below
            return None
    return None


# --------------------------------------------------------------------------------------------
# Sending

_RPC_CLIENTS: dict[str, httpx.Client] = {}
_SELECTORS: dict[str, tuple[bytes, list[str]]] = {}


def encode_call(fn: Any) -> bytes:
    """Calldata of a bound contract function: selector + ABI-encoded arguments (cached types)."""
    key = fn.abi_element_identifier
    entry = _SELECTORS.get(key)
    if entry is None:
        types = [_abi_type(i) for i in fn.abi["inputs"]]
        entry = (keccak(text=f"{fn.abi['name']}({','.join(types)})")[:4], types)
        _SELECTORS[key] = entry
    selector, types = entry
    return selector + abi_encode(types, list(fn.args))


def rpc_batch(
    w3: Web3, calls: Sequence[tuple[str, list[Any]]], *, max_batch: int = 500
) -> list[dict[str, Any]]:
    """JSON-RPC batch over HTTP (one round trip for many calls); results in call order."""
    url = str(getattr(w3.provider, "endpoint_uri", "") or "")
    if not url.startswith("http"):
        raise ConfigError("batched RPC needs an HTTP provider")
    client = _RPC_CLIENTS.get(url)
    if client is None:
        client = _RPC_CLIENTS[url] = httpx.Client(timeout=60)
    out: list[dict[str, Any]] = []
    for start in range(0, len(calls), max_batch):
        part = calls[start : start + max_batch]
        body = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(part)
        ]
        try:
            resp = client.post(url, json=body)
            data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ChainError(f"RPC batch to {url} failed: {exc}") from exc
        if not isinstance(data, list):
            raise ChainError(f"RPC endpoint {url} does not support batches: {str(data)[:200]}")
        by_id = {int(d["id"]): d for d in data}
        out += [by_id[i] for i in range(len(part))]
    return out


@dataclass
class NonceManager:
    """Hands out consecutive nonces per address; resyncs from the node after a failure."""

    w3: Web3
    _next: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, address: str) -> int:
        with self._lock:
            if address not in self._next:
                self._next[address] = self.w3.eth.get_transaction_count(
                    to_checksum_address(address), "pending"
                )
            n = self._next[address]
            self._next[address] = n + 1
            return n

    def resync(self, address: str) -> None:
        with self._lock:
            self._next.pop(address, None)


@dataclass
class Pending:
    """A transaction that was sent and not yet waited for."""

    tx_hash: bytes
    label: str


@dataclass
class Sender:
    """Signs and sends transactions from one account, pipelined through a shared NonceManager."""

    w3: Web3
    account: LocalAccount
    nonces: NonceManager
    gas_multiplier: float = 1.25
    receipt_timeout: float = 120.0
    _fees: tuple[int, int, float] | None = None
    _chain_id: int | None = None

    @property
    def address(self) -> str:
        return str(self.account.address)

    def _fee_fields(self) -> dict[str, int]:
        now = time.monotonic()
        if self._fees is None or now - self._fees[2] > 5:
            block = self.w3.eth.get_block("latest")
            base = int(block.get("baseFeePerGas", 0) or 0)
            tip = 1_000_000_000 if base else 0
            self._fees = (base * 2 + tip, tip, now)
        max_fee, tip, _ = self._fees
        if max_fee == 0:
            return {"gasPrice": int(self.w3.eth.gas_price)}
        return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}

    def send(self, fn: Any, *, label: str, gas: int | None = None, value: int = 0) -> Pending:
        """Estimate (which surfaces reverts with their names), sign and send; don't wait."""
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        tx: dict[str, Any] = {"from": self.address, "value": value, "chainId": self._chain_id}
        if gas is None:
            try:
                gas = int(fn.estimate_gas(tx) * self.gas_multiplier) + 10_000
            except (ContractLogicError, Web3RPCError, ValueError) as exc:
                raise self._explain(exc, label) from exc
        tx.update(self._fee_fields())
        tx["gas"] = gas
        tx["nonce"] = self.nonces.take(self.address)
        built = fn.build_transaction(tx)
        signed = self.account.sign_transaction(built)
        try:
            h = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except (Web3RPCError, ValueError) as exc:
            self.nonces.resync(self.address)
            raise self._explain(exc, label) from exc
        return Pending(tx_hash=bytes(h), label=label)

    def wait(self, pending: Pending) -> Any:
        """Wait for a receipt; a reverted transaction raises its decoded error."""
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                HexBytes(pending.tx_hash), timeout=self.receipt_timeout, poll_latency=0.05
            )
        except TimeExhausted as exc:
            raise ChainError(
                f"{pending.label}: no receipt for {to_hex(pending.tx_hash)} "
                f"within {self.receipt_timeout:.0f}s",
                hint="the node may be stalled or the fee too low",
            ) from exc
        if receipt["status"] != 1:
            raise self._replay_failure(receipt, pending.label)
        return receipt

    def transact(self, fn: Any, *, label: str, gas: int | None = None) -> Any:
        return self.wait(self.send(fn, label=label, gas=gas))

    def send_many(self, fns: Sequence[Any], *, label: str, gas: int) -> list[Pending]:
        """The pipelined path: sign many calls locally with consecutive nonces and hand them to
        the node in one JSON-RPC batch.  ``gas`` is a fixed limit (estimate one call first)."""
        if not fns:
            return []
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        fees = self._fee_fields()
        raws = []
        for fn in fns:
            tx = {
                "to": fn.address,
                "data": encode_call(fn),
                "value": 0,
                "gas": gas,
                "nonce": self.nonces.take(self.address),
                "chainId": self._chain_id,
                **fees,
            }
            raws.append(self.account.sign_transaction(tx).raw_transaction)
        results = rpc_batch(self.w3, [("eth_sendRawTransaction", [to_hex(r)]) for r in raws])
        out = []
        for res in results:
            if "error" in res:
                self.nonces.resync(self.address)
                err = res["error"]
                rev = decode_revert(err.get("data")) if isinstance(err.get("data"), str) else None
                raise rev or ChainError(f"{label}: {err.get('message')}")
            out.append(Pending(tx_hash=bytes(HexBytes(res["result"])), label=label))
        return out

    def wait_many(self, pendings: Sequence[Pending], *, poll: float = 0.02) -> list[Any]:
        """Receipts of many transactions, fetched in JSON-RPC batches; reverts raise."""
        receipts: dict[int, Any] = {}
        deadline = time.monotonic() + self.receipt_timeout
        todo = list(range(len(pendings)))
        while todo:
            got = rpc_batch(
                self.w3,
                [("eth_getTransactionReceipt", [to_hex(pendings[i].tx_hash)]) for i in todo],
            )
            left = []
            for i, res in zip(todo, got, strict=True):
                r = res.get("result")
                if r is None:
                    left.append(i)
                else:
                    receipts[i] = r
            todo = left
            if todo:
                if time.monotonic() > deadline:
                    raise ChainError(
                        f"{len(todo)} transactions had no receipt within {self.receipt_timeout:.0f}s"
                    )
                time.sleep(poll)
        out = []
        for i, p in enumerate(pendings):
            r = receipts[i]
            if int(r["status"], 16) != 1:
                full = self.w3.eth.get_transaction_receipt(HexBytes(p.tx_hash))
                raise self._replay_failure(full, p.label)
            out.append(r)
        return out

    def _replay_failure(self, receipt: Any, label: str) -> ChainError:
        tx = self.w3.eth.get_transaction(receipt["transactionHash"])
        call: dict[str, Any] = {k: tx[k] for k in ("from", "to", "value") if k in tx}
        call["data"] = tx.get("input", tx.get("data"))
        # On the state before its block first; a transaction before it in the same block (a
        # race: another update filled the round, a seal) shows on the state after the block.
        for block in (receipt["blockNumber"] - 1, receipt["blockNumber"]):
            try:
                self.w3.eth.call(cast(Any, call), block)
            except (ContractLogicError, Web3RPCError, ValueError) as exc:
                return self._explain(exc, label)
        return ChainError(f"{label}: transaction {to_hex(receipt['transactionHash'])} failed")

    @staticmethod
    def _explain(exc: Exception, label: str) -> ChainError:
        rev = _revert_from_exception(exc)
        if rev is not None:
            rev.message = f"{label}: {rev.message}"
            rev.args = (rev.message,)
            return rev
        return ChainError(f"{label}: {exc}")


# --------------------------------------------------------------------------------------------
# The ledger


DEFAULT_ATTEST_WINDOW = 600
"""Seconds an attestation attempt lasts unless a task says otherwise: when no result reaches
the quorum within it, validators may attest again (a new attempt)."""

ENTRY_BYTES = 176
"""One packed entry of ``submitBatch``: contentHash, cidDigest, tensorRoot (32 each),
numSamples and deadline (uint64 each), then the EIP-2098 compact signature (r, vs)."""

ZERO32 = "0x" + "00" * 32


@dataclass(frozen=True)
class TaskConfig:
    """``ITrainingLedger.TaskConfig``.  ``max_samples`` (keyword, no default) is the largest
    ``numSamples`` one update may claim: fedavg weighs updates by their own claims, so every
    task bounds them (the contract refuses more, validators cap weights at it)."""

    model_hash: str
    model_cid: str
    spec_cid: str
    min_updates: int = 1
    max_updates: int = 100
    quorum: int = 1
    round_duration: int = 0
    open: bool = False
    max_samples: int = field(kw_only=True)
    attest_window: int = DEFAULT_ATTEST_WINDOW

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            hex32(self.model_hash),
            self.model_cid,
            self.spec_cid,
            self.min_updates,
            self.max_updates,
            self.quorum,
            self.round_duration,
            self.open,
            self.max_samples,
            self.attest_window,
        )


@dataclass(frozen=True)
class SignedUpdate:
    """An update its contributor signed (EIP-712 ``Update``, ledger v2) for a relayer to record.

    ``cid`` is kept as text; the chain records its digest (:func:`recorded_digest`), which is
    what the signature covers.  ``signature`` is 65 bytes (r, s, v) or 64 (EIP-2098 compact)."""

    task_id: int
    round: int
    content_hash: str
    cid: str
    num_samples: int
    contributor: str
    deadline: int
    signature: bytes
    tensor_root: str = ZERO32

    @property
    def cid_digest(self) -> bytes:
        return recorded_digest(self.cid, hex32(self.content_hash))

    def as_tuple(self) -> tuple[Any, ...]:
        """The arguments of ``submitUpdateFor``."""
        return (
            self.task_id,
            self.round,
            hex32(self.content_hash),
            self.cid_digest,
            hex32(self.tensor_root),
            self.num_samples,
            to_checksum_address(self.contributor),
            self.deadline,
            self.signature,
        )

    def entry(self) -> bytes:
        """The 176-byte packed entry of ``submitBatch`` (signature in EIP-2098 compact form)."""
        return (
            hex32(self.content_hash)
            + self.cid_digest
            + hex32(self.tensor_root)
            + self.num_samples.to_bytes(8, "big")
            + self.deadline.to_bytes(8, "big")
            + compact_signature(self.signature)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "round": self.round,
            "contentHash": self.content_hash,
            "cid": self.cid,
            "tensorRoot": self.tensor_root,
            "numSamples": self.num_samples,
            "contributor": self.contributor,
            "deadline": self.deadline,
            "signature": to_hex(self.signature),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SignedUpdate:
        """From :meth:`to_json`'s dict; every number an int in its Solidity type's range."""
        try:
            if not isinstance(d, dict):
                raise TypeError("a signed update is a JSON object")
            su = cls(
                task_id=_uint_field(d, "taskId", 256),
                round=_uint_field(d, "round", 64),
                content_hash=to_hex(hex32(str(d["contentHash"]))),
                cid=str(d["cid"]),
                num_samples=_uint_field(d, "numSamples", 64),
                contributor=to_checksum_address(d["contributor"]),
                deadline=_uint_field(d, "deadline", 64),
                signature=bytes(HexBytes(d["signature"])),
                tensor_root=to_hex(hex32(str(d.get("tensorRoot", ZERO32)))),
            )
            if len(su.signature) not in (64, 65):
                raise ValueError(f"signature must be 64 or 65 bytes, got {len(su.signature)}")
            su.cid_digest  # noqa: B018 - a CID the chain cannot record is refused here
            return su
        except (KeyError, ValueError, TypeError, FormatError) as exc:
            raise ConfigError(f"not a signed update: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes | str) -> SignedUpdate:
        """A signed update file (:meth:`to_json` as JSON), as a contributor sends it to a
        relayer: outside input, so parsed within bounds (:mod:`fedledger.safejson`)."""
        try:
            doc = safejson.loads(data, what="signed update", max_bytes=64 << 10, max_depth=4)
        except FormatError as exc:
            raise ConfigError(f"not a signed update: {exc.message}", hint=exc.hint) from exc
        return cls.from_json(doc)


def compact_signature(signature: bytes) -> bytes:
    """EIP-2098: (r, s, v) as 64 bytes (r, vs), the top bit of vs the y parity."""
    if len(signature) == 64:
        return bytes(signature)
    if len(signature) != 65:
        raise ConfigError(f"signature must be 64 or 65 bytes, got {len(signature)}")
    r, s_, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    parity = v - 27 if v >= 27 else v
    if parity not in (0, 1) or s_ >> 255:
        raise ConfigError("not an ECDSA signature (bad v or s)")
    return r + ((parity << 255) | s_).to_bytes(32, "big")


def full_signature(signature: bytes) -> bytes:
    """EIP-2098's 64 bytes (r, vs) back to 65 (r, s, v); a 65-byte signature as it is."""
    if len(signature) == 65:
        return bytes(signature)
    if len(signature) != 64:
        raise ConfigError(f"signature must be 64 or 65 bytes, got {len(signature)}")
    vs = int.from_bytes(signature[32:], "big")
    s_ = vs & ((1 << 255) - 1)
    return signature[:32] + s_.to_bytes(32, "big") + bytes([27 + (vs >> 255)])


def _uint_field(d: dict[str, Any], key: str, bits: int) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ValueError(f"{key} must be an integer in [0, 2**{bits}), got {str(value)[:40]}")
    return value


@dataclass(frozen=True)
class Deployment:
    address: str
    chain_id: int
    block: int
    abi_hash: str
    tx_hash: str

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.chain_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: Path, chain_id: int) -> Deployment:
        path = directory / f"{chain_id}.json"
        if not path.exists():
            raise NotFoundError(
                f"no TrainingLedger deployment recorded for chain {chain_id} in {directory}",
                hint="deploy one with `fedledger deploy` or set FEDLEDGER_CONTRACT",
            )
        return cls(**json.loads(path.read_text()))


class Ledger:
    """TrainingLedger at one address: typed calls, sends and event streams."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        sender: Sender | None = None,
        *,
        from_block: int = 0,
        log_chunk: int = 2000,
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        art = contracts.load_artifact()
        self.contract = w3.eth.contract(address=self.address, abi=art.abi)
        self.sender = sender
        self.from_block = from_block
        self.log_chunk = log_chunk
        self._chain_id: int | None = None
        self._topics = {
            bytes(keccak(text=self._event_signature(name))): name for name in EVENT_NAMES
        }

    # -- construction -------------------------------------------------------------------------

    @staticmethod
    def deploy(w3: Web3, account: LocalAccount, deployments_dir: Path | None = None) -> Ledger:
        art = contracts.load_artifact()
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        sender = Sender(w3, account, NonceManager(w3))
        receipt = sender.transact(factory.constructor(), label="deploy TrainingLedger")
        address = receipt["contractAddress"]
        if deployments_dir is not None:
            Deployment(
                address=address,
                chain_id=w3.eth.chain_id,
                block=receipt["blockNumber"],
                abi_hash=art.abi_hash,
                tx_hash=to_hex(receipt["transactionHash"]),
            ).save(deployments_dir)
        return Ledger(w3, address, sender, from_block=int(receipt["blockNumber"]))

    def with_account(self, account: LocalAccount, nonces: NonceManager | None = None) -> Ledger:
        nm = nonces or (self.sender.nonces if self.sender else NonceManager(self.w3))
        return Ledger(
            self.w3,
            self.address,
            Sender(self.w3, account, nm),
            from_block=self.from_block,
            log_chunk=self.log_chunk,
        )

    def check_deployed(self) -> None:
        if not self.w3.eth.get_code(self.address):
            raise ChainError(
                f"no contract at {self.address} on chain {self.chain_id}",
                hint="deploy with `fedledger deploy` or fix FEDLEDGER_CONTRACT",
            )

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def _need_sender(self) -> Sender:
        if self.sender is None:
            raise ConfigError("this action sends a transaction and needs a key", hint="pass --key")
        return self.sender

    def _event_signature(self, name: str) -> str:
        abi: list[dict[str, Any]] = cast(Any, self.contract.abi)
        for item in abi:
            if item.get("type") == "event" and item["name"] == name:
                return f"{name}({','.join(_abi_type(i) for i in item['inputs'])})"
        raise ConfigError(f"event {name} missing from the TrainingLedger ABI")

    def _call(self, fn: Any, label: str) -> Any:
        try:
            return fn.call()
        except (ContractLogicError, Web3RPCError, ValueError) as exc:
            raise Sender._explain(exc, label) from exc

    def _events_in(self, receipt: Any, name: str) -> list[dict[str, Any]]:
        ev = getattr(self.contract.events, name)()
        out = []
        for log in receipt["logs"]:
            if (
                log["address"] == self.address
                and log["topics"]
                and bytes(log["topics"][0]) in self._topics
            ) and self._topics[bytes(log["topics"][0])] == name:
                out.append(dict(ev.process_log(log)["args"]))
        return out

    # -- task owner ---------------------------------------------------------------------------

    def create_task(self, cfg: TaskConfig) -> int:
        s = self._need_sender()
        r = s.transact(self.contract.functions.createTask(cfg.as_tuple()), label="createTask")
        return int(self._events_in(r, "TaskCreated")[0]["taskId"])

    def add_contributor(self, task_id: int, who: str) -> Any:
        fn = self.contract.functions.addContributor(task_id, to_checksum_address(who))
        return self._need_sender().transact(fn, label=f"addContributor({task_id}, {who})")

    def add_validator(self, task_id: int, who: str) -> Any:
        fn = self.contract.functions.addValidator(task_id, to_checksum_address(who))
        return self._need_sender().transact(fn, label=f"addValidator({task_id}, {who})")

    # -- contributor --------------------------------------------------------------------------

    def submit_update_fn(
        self,
        task_id: int,
        round_: int,
        content_hash: str,
        cid: str,
        num_samples: int,
        tensor_root: str = ZERO32,
    ) -> Any:
        digest = recorded_digest(cid, hex32(content_hash))
        return self.contract.functions.submitUpdate(
            task_id, round_, hex32(content_hash), digest, hex32(tensor_root), num_samples
        )

    def submit_update(
        self,
        task_id: int,
        round_: int,
        content_hash: str,
        cid: str,
        num_samples: int,
        tensor_root: str = ZERO32,
    ) -> int:
        s = self._need_sender()
        r = s.transact(
            self.submit_update_fn(task_id, round_, content_hash, cid, num_samples, tensor_root),
            label=f"submitUpdate(task {task_id}, round {round_})",
        )
        return self.update_ids(r)[0]

    def update_ids(self, receipt: Any) -> list[int]:
        """The ids of the updates a receipt recorded, singles and batches alike, in order."""
        return [rec.update_id for rec in self.records_in(receipt)]

    def records_in(self, receipt: Any) -> list[UpdateRecord]:
        """The update records a receipt's logs carry, in order."""
        out: list[UpdateRecord] = []
        for log in receipt["logs"]:
            decoded = self.decode_log(log) if log["address"] == self.address else None
            if decoded is not None:
                out.extend(self.records_of(decoded))
        return out

    def skipped_in(self, receipt: Any) -> list[dict[str, Any]]:
        """``EntrySkipped`` args of a batch receipt: ``entry``, ``signer``, ``reason`` (the
        error's name, as :func:`decode_revert` names it)."""
        out = []
        for log in receipt["logs"]:
            d = self.decode_log(log) if log["address"] == self.address else None
            if d is not None and d["event"] == "EntrySkipped":
                args = dict(d["args"])
                args["reason"] = error_name(bytes(args["reason"]))
                out.append(args)
        return out

    def sign_update(
        self,
        account: LocalAccount,
        task_id: int,
        round_: int,
        content_hash: str,
        cid: str,
        num_samples: int,
        deadline: int,
        tensor_root: str = ZERO32,
    ) -> SignedUpdate:
        """EIP-712 signature authorising a relayer to submit this update for ``account``."""
        typed = self.typed_update(
            task_id, round_, content_hash, cid, num_samples, deadline, tensor_root
        )
        sig = Account.sign_typed_data(account.key, full_message=typed).signature
        return SignedUpdate(
            task_id,
            round_,
            to_hex(hex32(content_hash)),
            cid,
            num_samples,
            account.address,
            deadline,
            bytes(sig),
            to_hex(hex32(tensor_root)),
        )

    def typed_update(
        self,
        task_id: int,
        round_: int,
        content_hash: str,
        cid: str,
        num_samples: int,
        deadline: int,
        tensor_root: str = ZERO32,
        *,
        chain_id: int | None = None,
        verifying_contract: str | None = None,
    ) -> dict[str, Any]:
        """The EIP-712 typed data of an update (what ethers' ``signTypedData`` and viem's
        ``signTypedData`` take as domain, types and message)."""
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Update": [
                    {"name": "taskId", "type": "uint256"},
                    {"name": "round", "type": "uint64"},
                    {"name": "contentHash", "type": "bytes32"},
                    {"name": "cidDigest", "type": "bytes32"},
                    {"name": "tensorRoot", "type": "bytes32"},
                    {"name": "numSamples", "type": "uint64"},
                    {"name": "deadline", "type": "uint64"},
                ],
            },
            "primaryType": "Update",
            "domain": {
                "name": "TrainingLedger",
                "version": "2",
                "chainId": chain_id if chain_id is not None else self.chain_id,
                "verifyingContract": verifying_contract or self.address,
            },
            "message": {
                "taskId": task_id,
                "round": round_,
                "contentHash": hex32(content_hash),
                "cidDigest": recorded_digest(cid, hex32(content_hash)),
                "tensorRoot": hex32(tensor_root),
                "numSamples": num_samples,
                "deadline": deadline,
            },
        }

    def submit_update_for(self, su: SignedUpdate) -> int:
        fn = self.contract.functions.submitUpdateFor(*su.as_tuple())
        r = self._need_sender().transact(fn, label=f"submitUpdateFor({su.contributor})")
        return self.update_ids(r)[0]

    def submit_batch_fn(self, batch: Sequence[SignedUpdate]) -> Any:
        """``submitBatch`` of updates that share one task and round (packed entries)."""
        if not batch:
            raise ConfigError("an empty batch records nothing")
        task_id, round_ = batch[0].task_id, batch[0].round
        if any((su.task_id, su.round) != (task_id, round_) for su in batch):
            raise ConfigError("a batch holds updates of one task and round only")
        return self.contract.functions.submitBatch(
            task_id, round_, b"".join(su.entry() for su in batch)
        )

    def submit_batch(self, batch: Sequence[SignedUpdate]) -> BatchOutcome:
        """Record a batch; entries the contract skips are reported, not raised."""
        fn = self.submit_batch_fn(batch)
        r = self._need_sender().transact(fn, label=f"submitBatch({len(batch)} updates)")
        return BatchOutcome(self.records_in(r), self.skipped_in(r), r)

    def submit_updates_for(self, batch: Sequence[SignedUpdate]) -> list[int]:
        """Record a batch and return the recorded ids; any skipped entry raises (for callers
        that need all or nothing reported)."""
        out = self.submit_batch(batch)
        if out.skipped:
            first = out.skipped[0]
            raise ChainError(
                f"{len(out.skipped)} of {len(batch)} entries skipped; entry {first['entry']} "
                f"({first['signer']}): {first['reason']}",
                hint="each skipped entry says why; fix those and send them again",
            )
        return [rec.update_id for rec in out.records]

    # -- validator ----------------------------------------------------------------------------

    def attest_round(self, task_id: int, round_: int, result: RoundResult) -> Any:
        """Attest ``result``: confirm it by digest when another validator already proposed it
        in the current attempt (cheaper), else propose it."""
        digest = result.digest(task_id, round_)
        if self.attestation_count(task_id, round_, digest) > 0:
            fn = self.contract.functions.confirmRound(task_id, round_, digest)
            label = f"confirmRound(task {task_id}, round {round_})"
        else:
            fn = self.contract.functions.attestRound(task_id, round_, result.as_tuple())
            label = f"attestRound(task {task_id}, round {round_})"
        return self._need_sender().transact(fn, label=label)

    def seal_round(self, task_id: int, round_: int) -> Any:
        """Close the current round to new updates so every validator judges the same set."""
        fn = self.contract.functions.sealRound(task_id, round_)
        return self._need_sender().transact(fn, label=f"sealRound(task {task_id}, round {round_})")

    def set_court(self, task_id: int, court: str) -> Any:
        """Hand the task to ``court`` (optimistic verification: attested, then settled)."""
        fn = self.contract.functions.setCourt(task_id, to_checksum_address(court))
        return self._need_sender().transact(fn, label=f"setCourt({task_id})")

    def court_of(self, task_id: int) -> str | None:
        """The task's court, or None when its rounds are final on quorum."""
        addr = str(self._call(self.contract.functions.courtOf(task_id), "courtOf"))
        return None if int(addr, 16) == 0 else to_checksum_address(addr)

    def set_encryption_key(self, task_id: int, public_key: bytes) -> Any:
        fn = self.contract.functions.setEncryptionKey(task_id, public_key)
        return self._need_sender().transact(fn, label=f"setEncryptionKey(task {task_id})")

    # -- views --------------------------------------------------------------------------------

    def task_count(self) -> int:
        return int(self._call(self.contract.functions.taskCount(), "taskCount"))

    def current_round(self, task_id: int) -> int:
        return int(
            self._call(self.contract.functions.currentRound(task_id), f"currentRound({task_id})")
        )

    def get_task(self, task_id: int) -> dict[str, Any]:
        raw = self._call(self.contract.functions.getTask(task_id), f"getTask({task_id})")
        return _named(self.contract, "getTask", raw)

    def get_round(self, task_id: int, round_: int) -> dict[str, Any]:
        """``getRound``; ``state`` as text (``open``, ``sealed``, ``final``)."""
        raw = self._call(
            self.contract.functions.getRound(task_id, round_), f"getRound({task_id}, {round_})"
        )
        out = _named(self.contract, "getRound", raw)
        out["state"] = ROUND_STATES[int(out["state"])]
        return out

    def round_digest(self, task_id: int, round_: int) -> bytes:
        fn = self.contract.functions.roundDigest(task_id, round_)
        return bytes(self._call(fn, f"roundDigest({task_id}, {round_})"))

    def attestation_count(self, task_id: int, round_: int, digest: bytes) -> int:
        fn = self.contract.functions.attestationCount(task_id, round_, digest)
        return int(self._call(fn, "attestationCount"))

    def block_timestamps(self, numbers: Iterable[int]) -> dict[int, int]:
        """Each block's timestamp, in one batch of ``eth_getBlockByNumber``."""
        wanted = sorted(set(numbers))
        try:
            answers = rpc_batch(
                self.w3, [("eth_getBlockByNumber", [hex(b), False]) for b in wanted]
            )
            return {
                b: int(a["result"]["timestamp"], 16) for b, a in zip(wanted, answers, strict=True)
            }
        except (ConfigError, KeyError, TypeError, ValueError):
            return {b: int(self.w3.eth.get_block(b)["timestamp"]) for b in wanted}

    def is_contributor(self, task_id: int, who: str) -> bool:
        return bool(
            self._call(
                self.contract.functions.isContributor(task_id, to_checksum_address(who)),
                "isContributor",
            )
        )

    def is_validator(self, task_id: int, who: str) -> bool:
        return bool(
            self._call(
                self.contract.functions.isValidator(task_id, to_checksum_address(who)),
                "isValidator",
            )
        )

    def has_attested(self, task_id: int, round_: int, who: str) -> bool:
        fn = self.contract.functions.hasAttested(task_id, round_, to_checksum_address(who))
        return bool(self._call(fn, "hasAttested"))

    def has_submitted(self, task_id: int, round_: int, who: str) -> bool:
        fn = self.contract.functions.hasSubmitted(task_id, round_, to_checksum_address(who))
        return bool(self._call(fn, "hasSubmitted"))

    def verify_verdict(
        self, task_id: int, round_: int, result: RoundResult, leaf: bytes, proof: Iterable[bytes]
    ) -> bool:
        fn = self.contract.functions.verifyVerdict(
            task_id, round_, result.as_tuple(), leaf, list(proof)
        )
        return bool(self._call(fn, "verifyVerdict"))

    # -- events -------------------------------------------------------------------------------

    def iter_logs(
        self, from_block: int, to_block: int, *, chunk: int = 2000
    ) -> Iterator[dict[str, Any]]:
        """Decoded TrainingLedger events in [from_block, to_block], in chain order, chunk by chunk.

        Each item: ``{"event", "args", "blockNumber", "blockHash", "transactionHash", "logIndex"}``.
        """
        if chunk < 1:
            raise ConfigError("log chunk must be >= 1")
        yield from self._logs({}, from_block, to_block, chunk)

    def _logs(
        self, extra: dict[str, Any], from_block: int, to_block: int, chunk: int
    ) -> Iterator[dict[str, Any]]:
        """The one eth_getLogs loop: bounded block ranges, decoded, in chain order."""
        start = from_block
        while start <= to_block:
            end = min(to_block, start + chunk - 1)
            query = {"address": self.address, "fromBlock": start, "toBlock": end, **extra}
            try:
                logs = self.w3.eth.get_logs(cast(Any, query))
            except Exception as exc:  # noqa: BLE001 - transport and RPC errors alike
                raise ChainError(f"eth_getLogs {start}..{end} failed: {exc}") from exc
            for log in logs:
                decoded = self.decode_log(log)
                if decoded is not None:
                    yield decoded
            start = end + 1

    def decode_log(self, log: Any) -> dict[str, Any] | None:
        topics = log["topics"]
        if not topics:
            return None
        name = self._topics.get(bytes(topics[0]))
        if name is None:
            return None
        return {
            "event": name,
            "args": self._decode_args(name, topics, log["data"]),
            "blockNumber": int(log["blockNumber"]),
            "blockHash": to_hex(bytes(log["blockHash"])),
            "transactionHash": to_hex(bytes(log["transactionHash"])),
            "logIndex": int(log["logIndex"]),
        }

    def _decode_args(self, name: str, topics: Sequence[Any], data: Any) -> dict[str, Any]:
        """An event's arguments, as web3's ``process_log`` gives them, decoded with eth_abi
        directly (about ten times faster: the indexer decodes every log it reads)."""
        layout = _EVENT_LAYOUTS.get((self.address, name))
        if layout is None:
            abi: list[dict[str, Any]] = cast(Any, self.contract.abi)
            item = next(i for i in abi if i.get("type") == "event" and i["name"] == name)
            layout = [(i["name"], _abi_type(i), bool(i["indexed"])) for i in item["inputs"]]
            _EVENT_LAYOUTS[(self.address, name)] = layout
        values = iter(abi_decode([t for _, t, ix in layout if not ix], bytes(HexBytes(data))))
        indexed = iter(topics[1:])
        args: dict[str, Any] = {}
        for arg, typ, is_indexed in layout:
            if is_indexed:
                raw = bytes(HexBytes(next(indexed)))
                dynamic = typ in ("string", "bytes") or typ.endswith("]") or typ.startswith("(")
                value = raw if dynamic else abi_decode([typ], raw)[0]  # dynamic: only a hash
            else:
                value = next(values)
            args[arg] = to_checksum_address(value) if typ == "address" else value
        return args

    def events(
        self,
        name: str,
        *,
        task_id: int | None = None,
        round_: int | None = None,
        from_block: int | None = None,
        to_block: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """One event type, filtered by the indexed taskId (and round) topics, in bounded chunks."""
        topic0 = "0x" + keccak(text=self._event_signature(name)).hex()
        topics: list[Any] = [topic0]
        if task_id is not None:
            topics.append(_topic_int(task_id))
            if round_ is not None:
                topics.append(_topic_int(round_))
        end_all = int(self.w3.eth.block_number) if to_block is None else to_block
        start = self.from_block if from_block is None else from_block
        yield from self._logs({"topics": topics}, start, end_all, self.log_chunk)

    def records_of(self, decoded: dict[str, Any]) -> list[UpdateRecord]:
        """The update records one decoded log carries: one for ``UpdateSubmitted``, every
        packed record for ``UpdatesRelayed``, none for other events."""
        if decoded["event"] == "UpdateSubmitted":
            items = [decoded["args"]]
        elif decoded["event"] == "UpdatesRelayed":
            items = records_of_batch(decoded["args"])
        else:
            return []
        return [
            UpdateRecord.from_event(
                a, tx_hash=decoded["transactionHash"], block_number=decoded["blockNumber"]
            )
            for a in items
        ]

    def update_records(
        self,
        task_id: int | None = None,
        round_: int | None = None,
        *,
        from_block: int | None = None,
        to_block: int | None = None,
    ) -> Iterator[UpdateRecord]:
        """Every recorded update (single and relayed), in chain order, filtered by task/round."""
        # both event types carry taskId and round as their first two topics: one query
        topics: list[Any] = [
            [
                "0x" + keccak(text=self._event_signature("UpdateSubmitted")).hex(),
                "0x" + keccak(text=self._event_signature("UpdatesRelayed")).hex(),
            ]
        ]
        if task_id is not None:
            topics.append(_topic_int(task_id))
            if round_ is not None:
                topics.append(_topic_int(round_))
        end_all = int(self.w3.eth.block_number) if to_block is None else to_block
        start = self.from_block if from_block is None else from_block
        for decoded in self._logs({"topics": topics}, start, end_all, self.log_chunk):
            yield from self.records_of(decoded)

    def proposed_result(
        self, task_id: int, round_: int, digest: bytes, *, to_block: int | None = None
    ) -> RoundResult | None:
        """The ``RoundResult`` a validator proposed under ``digest``, from its ``ResultProposed``
        event (searched backwards from ``to_block``), checked against the digest."""
        end = int(self.w3.eth.block_number) if to_block is None else to_block
        topics = [
            "0x" + keccak(text=self._event_signature("ResultProposed")).hex(),
            _topic_int(task_id),
            _topic_int(round_),
            to_hex(digest),
        ]
        while end >= self.from_block:
            start = max(self.from_block, end - self.log_chunk + 1)
            for ev in self._logs({"topics": topics}, start, end, self.log_chunk):
                result = RoundResult.from_event(ev["args"]["result"])
                if result.digest(task_id, round_) == bytes(digest):
                    return result
            end = start - 1
        return None

    def last_finalized(self, task_id: int, round_: int | None = None) -> dict[str, Any] | None:
        """What the task's latest final round (``round_``, by default the round before the
        current one) attested, or None before the first: the ``RoundFinalized`` event's
        ``digest`` and ``attempt`` with its ``RoundResult`` fields by their v1 names too
        (``aggregateHash``, ``aggregateCid``, ``verdictRoot``, ``verdictCid``, ...).

        Searched backwards from the head, one chunk at a time: the last finalisation is
        usually recent, so this costs a few ``eth_getLogs`` calls however long the history."""
        if round_ is None:
            round_ = self.current_round(task_id) - 1
        if round_ < 0:
            return None
        end = int(self.w3.eth.block_number)
        while end >= self.from_block:
            start = max(self.from_block, end - self.log_chunk + 1)
            found = list(
                self.events(
                    "RoundFinalized", task_id=task_id, round_=round_, from_block=start, to_block=end
                )
            )
            if found:
                return self.finalized_args(found[-1])
            end = start - 1
        return None

    def result_by_digest(self, task_id: int, digest: bytes) -> dict[str, Any] | None:
        """The result proposed under ``digest`` in any round of the task (what a court resumed
        from after voiding rounds), with the fields :meth:`last_finalized` gives."""
        topics = [
            "0x" + keccak(text=self._event_signature("ResultProposed")).hex(),
            _topic_int(task_id),
            None,
            to_hex(digest),
        ]
        end = int(self.w3.eth.block_number)
        for ev in self._logs({"topics": topics}, self.from_block, end, self.log_chunk):
            rnd = int(ev["args"]["round"])
            result = RoundResult.from_event(ev["args"]["result"])
            if result.digest(task_id, rnd) == bytes(digest):
                return {
                    "taskId": task_id,
                    "round": rnd,
                    "digest": bytes(digest),
                    **result_fields(result),
                }
        return None

    def finalized_args(self, event: dict[str, Any]) -> dict[str, Any]:
        """A decoded ``RoundFinalized`` with the fields of the result it finalised."""
        a = dict(event["args"])
        task_id, rnd, digest = int(a["taskId"]), int(a["round"]), bytes(a["digest"])
        result = self.proposed_result(task_id, rnd, digest, to_block=int(event["blockNumber"]))
        if result is None:
            raise ChainError(
                f"task {task_id} round {rnd}: no ResultProposed event for its final digest "
                f"{to_hex(digest)}",
                hint="the RPC endpoint's log history is incomplete; use an archive endpoint",
            )
        return {**a, **result_fields(result)}


def result_fields(result: RoundResult) -> dict[str, Any]:
    """A result's fields by the event-argument names indexers and v1 callers use."""
    return {
        "recordHash": result.record_hash,
        "updateCount": result.update_count,
        "verdictRoot": result.verdict_root,
        "verdictHash": result.verdict_hash,
        "verdictCid": result.verdict_cid,
        "aggregateHash": result.aggregate_hash,
        "aggregateCid": result.aggregate_cid,
        "aggregateTensorRoot": result.aggregate_tensor_root,
    }


ROUND_STATES = ("open", "sealed", "final")


@dataclass(frozen=True)
class BatchOutcome:
    """What one ``submitBatch`` did: the records it made, the entries it skipped (``entry``,
    ``signer``, ``reason``), and its receipt."""

    records: list[UpdateRecord]
    skipped: list[dict[str, Any]]
    receipt: Any


def error_name(selector: bytes) -> str:
    """The name of the contract error with this 4-byte selector (hex when unknown)."""
    hit = _error_table().get(bytes(selector))
    return hit[0] if hit else "0x" + bytes(selector).hex()


_EVENT_LAYOUTS: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}


def _named(contract: Any, fn_name: str, raw: Any) -> dict[str, Any]:
    """Turn a view's tuple result into a dict using the ABI's output names (one level of structs)."""
    for item in contract.abi:
        if item.get("type") == "function" and item["name"] == fn_name:
            outs = item["outputs"]
            if len(outs) == 1 and outs[0]["type"] == "tuple":
                return _tuple_to_dict(outs[0]["components"], raw)
            return _tuple_to_dict(outs, raw if isinstance(raw, list | tuple) else (raw,))
    raise ConfigError(f"{fn_name} missing from the TrainingLedger ABI")


def _tuple_to_dict(components: list[dict[str, Any]], values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for comp, val in zip(components, values, strict=True):
        if comp["type"] == "tuple":
            out[comp["name"]] = _tuple_to_dict(comp["components"], val)
        else:
            out[comp["name"]] = val
    return out


def open_ledger(
    rpc_url: str, address: str | None, deployments_dir: Path, account: LocalAccount | None = None
) -> Ledger:
    """Connect and find the contract: an explicit address, else the recorded deployment."""
    w3 = connect(rpc_url)
    from_block = 0
    if address is None:
        dep = Deployment.load(deployments_dir, int(w3.eth.chain_id))
        address, from_block = dep.address, dep.block
    led = Ledger(w3, address, from_block=from_block)
    led.check_deployed()
    if account is not None:
        led = led.with_account(account)
    return led


def wait_all(sender: Sender, pendings: Sequence[Pending]) -> list[Any]:
    return [sender.wait(p) for p in pendings]


__all__ = [
    "Deployment",
    "Ledger",
    "NonceManager",
    "Pending",
    "Sender",
    "SignedUpdate",
    "TaskConfig",
    "as_chain_error",
    "connect",
    "decode_revert",
    "open_ledger",
    "rpc_batch",
    "to_checksum",
]


def to_checksum(address: str) -> str:
    """A checksummed address; ConfigError for anything that is not a 20-byte hex address."""
    try:
        return str(to_checksum_address(address))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an Ethereum address: {address!r}") from exc


def _topic_int(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()
