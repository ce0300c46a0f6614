"""The compiled ``TrainingLedger`` contract: its ABI, bytecode and custom errors.

This is the one module that knows where the contract's ABI and bytecode come from:

* :func:`load_artifact` reads ``client/fedledger/chain/abi/TrainingLedger.json``, which ships with the
  package (written by ``scripts/export_artifacts.py`` from Hardhat's build), so the SDK works
  without node or a compiler;
* :func:`compile_sources` compiles ``contracts/`` of a checkout with py-solc-x, using a native
  ``solc`` 0.8.30 when one is installed and ``scripts/solc-shim`` (solcjs) otherwise, with
  exactly the standard-JSON input Hardhat builds (same source names, same settings), so the
  bytecode - metadata hash included - is identical;
* :func:`error_selectors` and :func:`decode_revert` turn revert data into the contract's named
  custom errors (:class:`fedledger.errors.ContractRevert`).

The ABI itself is owned by ``contracts/ITrainingLedger.sol`` (see ``docs/interfaces.md``);
Python never restates it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedledger.errors import ConfigError, ContractRevert, FormatError, NotFoundError

CONTRACT_NAME = "TrainingLedger"
SOURCE_NAME = "contracts/TrainingLedger.sol"
SOLC_VERSION = "0.8.30"

#: Compiler settings, the same as ``hardhat.config.js`` (and ``foundry.toml``). Everything here
#: enters the contract metadata, hence the bytecode's metadata hash.
SOLC_SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
}

#: What Hardhat asks solc for; it does not enter the metadata.
OUTPUT_SELECTION: dict[str, Any] = {
    "*": {
        "*": ["abi", "evm.bytecode", "evm.deployedBytecode", "evm.methodIdentifiers", "metadata"],
        "": ["ast"],
    }
}

ARTIFACT_PATH = Path(__file__).resolve().parent / "abi" / f"{CONTRACT_NAME}.json"
COURT_NAME = "Court"
COURT_SOURCE = "contracts/Court.sol"
COURT_ARTIFACT_PATH = Path(__file__).resolve().parent / "abi" / f"{COURT_NAME}.json"
"""The court of optimistic verification (``contracts/Court.sol``, docs/verification.md)."""
ARTIFACT_FORMAT = "fedledger-artifact-1"

_IMPORT_RE = re.compile(r"""^\s*import\s+(?:[^"';]*?\bfrom\s+)?["']([^"']+)["']""", re.MULTILINE)


@dataclass(frozen=True)
class Artifact:
    """A compiled contract. Hex strings are ``0x``-prefixed lowercase."""

    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    abi_hash: str
    contract_name: str = CONTRACT_NAME
    source_name: str = SOURCE_NAME
    compiler: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        abi: list[dict[str, Any]],
        bytecode: str,
        deployed_bytecode: str,
        compiler: Mapping[str, Any],
    ) -> Artifact:
        return cls(
            abi=abi,
            bytecode=_hex(bytecode),
            deployed_bytecode=_hex(deployed_bytecode),
            abi_hash=abi_hash(abi),
            compiler=dict(compiler),
        )

    def to_json(self) -> dict[str, Any]:
        """The committed artifact file's content."""
        return {
            "format": ARTIFACT_FORMAT,
            "contractName": self.contract_name,
            "sourceName": self.source_name,
            "abi": self.abi,
            "abiHash": self.abi_hash,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
            "compiler": self.compiler,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Artifact:
        try:
            art = cls.build(
                data["abi"], data["bytecode"], data["deployedBytecode"], data.get("compiler", {})
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"not a fedledger contract artifact: {exc!r}") from exc
        if data.get("abiHash") not in (None, art.abi_hash):
            raise FormatError(
                "contract artifact's abiHash does not match its ABI",
                hint="regenerate it with `make contracts`",
            )
        name = data.get("contractName", CONTRACT_NAME)
        if name == CONTRACT_NAME:
            return art
        return cls(
            abi=art.abi,
            bytecode=art.bytecode,
            deployed_bytecode=art.deployed_bytecode,
            abi_hash=art.abi_hash,
            contract_name=str(name),
            source_name=str(data.get("sourceName", SOURCE_NAME)),
            compiler=art.compiler,
        )


def abi_hash(abi: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the ABI in canonical JSON (sorted keys, no spaces); identifies an ABI version."""
    canon = json.dumps(list(abi), sort_keys=True, separators=(",", ":"))
    return "0x" + hashlib.sha256(canon.encode()).hexdigest()


def _hex(code: str) -> str:
    code = code.lower()
    code = code[2:] if code.startswith("0x") else code
    bytes.fromhex(code)  # validates
    return "0x" + code


# -------------------------------------------------------------------------------------------
# The committed artifact
# -------------------------------------------------------------------------------------------


def load_artifact(path: str | os.PathLike[str] | None = None) -> Artifact:
    """Load the compiled contract (default: the artifact shipped in ``client/fedledger/chain/abi``)."""
    return _load_artifact(Path(path) if path is not None else ARTIFACT_PATH)


@functools.lru_cache(maxsize=4)
def _load_artifact(path: Path) -> Artifact:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"contract artifact {path} is missing", hint="build it with `make contracts`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise FormatError(f"contract artifact {path} is unreadable: {exc}") from exc
    return Artifact.from_json(data)


def write_artifact(artifact: Artifact, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``artifact`` as the committed artifact file (stable formatting, trailing newline)."""
    out = Path(path) if path is not None else ARTIFACT_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(artifact.to_json(), indent=2, sort_keys=False) + "\n", "utf-8")
    _load_artifact.cache_clear()
    return out


def artifact_from_solc_output(
    output: Mapping[str, Any],
    compiler: Mapping[str, Any],
    *,
    source_name: str = SOURCE_NAME,
    contract_name: str = CONTRACT_NAME,
) -> Artifact:
    """Pick a contract (default TrainingLedger) out of a solc standard-JSON output."""
    try:
        c = output["contracts"][source_name][contract_name]
        art = Artifact.build(
            c["abi"],
            c["evm"]["bytecode"]["object"],
            c["evm"]["deployedBytecode"]["object"],
            compiler,
        )
    except KeyError as exc:
        raise FormatError(f"solc output has no {source_name}:{contract_name}") from exc
    if contract_name == CONTRACT_NAME:
        return art
    return Artifact(
        abi=art.abi,
        bytecode=art.bytecode,
        deployed_bytecode=art.deployed_bytecode,
        abi_hash=art.abi_hash,
        contract_name=contract_name,
        source_name=source_name,
        compiler=art.compiler,
    )


def artifact_from_hardhat(
    root: str | os.PathLike[str] | None = None,
    *,
    source_name: str = SOURCE_NAME,
    contract_name: str = CONTRACT_NAME,
) -> Artifact:
    """Read a contract (default TrainingLedger) from Hardhat's latest build (``artifacts/build-info``)."""
    base = Path(root) if root is not None else repo_root()
    dbg = base / "artifacts" / source_name / f"{contract_name}.dbg.json"
    try:
        build_info_rel = json.loads(dbg.read_text())["buildInfo"]
        build_info = json.loads((dbg.parent / build_info_rel).read_text())
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"no Hardhat build of {contract_name} under {base / 'artifacts'}",
            hint="run `npx hardhat compile`",
        ) from exc
    settings = {k: v for k, v in build_info["input"]["settings"].items() if k != "outputSelection"}
    compiler = {
        "version": build_info["solcVersion"],
        "longVersion": build_info["solcLongVersion"],
        "settings": settings,
    }
    return artifact_from_solc_output(
        build_info["output"], compiler, source_name=source_name, contract_name=contract_name
    )


# -------------------------------------------------------------------------------------------
# Compiling from source
# -------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The checkout this package lives in (the directory holding ``contracts/``)."""
    root = Path(__file__).resolve().parents[3]  # client/fedledger/chain/ -> checkout
    if not (root / SOURCE_NAME).is_file():
        raise NotFoundError(
            f"{SOURCE_NAME} not found next to the client package",
            hint="compiling needs a fedledger source checkout; the installed package ships "
            "the compiled artifact instead",
        )
    return root


def collect_sources(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Hardhat's source set: every ``contracts/**.sol`` except Foundry tests, plus imports.

    Keys are source unit names as Hardhat forms them (``contracts/...``,
    ``@openzeppelin/contracts/...``); values are file contents.
    """
    base = Path(root) if root is not None else repo_root()
    pending = sorted(
        p.relative_to(base).as_posix()
        for p in (base / "contracts").rglob("*.sol")
        if p.relative_to(base / "contracts").parts[0] != "test" and not p.name.endswith(".t.sol")
    )
    sources: dict[str, str] = {}
    while pending:
        name = pending.pop()
        if name in sources:
            continue
        path = base / name if name.startswith("contracts/") else base / "node_modules" / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"Solidity import {name} not found at {path}", hint="run `npm ci`"
            ) from exc
        sources[name] = text
        for imp in _IMPORT_RE.findall(text):
            if imp.startswith("."):
                imp = os.path.normpath(os.path.join(os.path.dirname(name), imp)).replace(
                    os.sep, "/"
                )
            pending.append(imp)
    return dict(sorted(sources.items()))


def standard_json_input(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The standard-JSON input Hardhat gives solc for ``contracts/``."""
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in collect_sources(root).items()},
        "settings": {**SOLC_SETTINGS, "outputSelection": OUTPUT_SELECTION},
    }


def find_solc(root: str | os.PathLike[str] | None = None) -> Path:
    """A ``solc`` 0.8.30: native on PATH or installed by py-solc-x, else ``scripts/solc-shim``."""
    from solcx.install import get_executable  # local import: only compiling needs py-solc-x
    from solcx.wrapper import get_solc_version

    candidates: list[Path] = []
    if found := shutil.which("solc"):
        candidates.append(Path(found))
    with contextlib.suppress(Exception):  # not installed in ~/.solcx is the normal case
        candidates.append(Path(get_executable(SOLC_VERSION)))
    for cand in candidates:
        with contextlib.suppress(Exception):  # a broken binary is just not a candidate
            if str(get_solc_version(cand)) == SOLC_VERSION:
                return cand
    base = Path(root) if root is not None else repo_root()
    shim = base / "scripts" / "solc-shim"
    if not shim.is_file() or shutil.which("node") is None:
        raise ConfigError(
            f"no solc {SOLC_VERSION} found",
            hint="install solc 0.8.30 on PATH, or node plus `npm ci` for scripts/solc-shim",
        )
    return shim


def compile_sources(
    root: str | os.PathLike[str] | None = None, solc_binary: str | os.PathLike[str] | None = None
) -> Artifact:
    """Compile ``contracts/`` with py-solc-x; the result equals Hardhat's build."""
    from solcx import compile_standard
    from solcx.exceptions import SolcError
    from solcx.wrapper import get_version_str_from_solc_binary

    base = Path(root) if root is not None else repo_root()
    binary = Path(solc_binary) if solc_binary is not None else find_solc(base)
    try:
        output = compile_standard(standard_json_input(base), solc_binary=binary)
    except SolcError as exc:
        raise ConfigError(f"compiling {SOURCE_NAME} failed: {exc}") from exc
    compiler = {
        "version": SOLC_VERSION,
        "longVersion": get_version_str_from_solc_binary(binary),
        "settings": SOLC_SETTINGS,
    }
    return artifact_from_solc_output(output, compiler)


# -------------------------------------------------------------------------------------------
# Custom errors
# -------------------------------------------------------------------------------------------


def _canonical_type(param: Mapping[str, Any]) -> str:
    typ: str = param["type"]
    if typ.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){typ[len('tuple') :]}"
    return typ


def error_selectors(
    abi: Iterable[Mapping[str, Any]] | None = None,
) -> dict[bytes, tuple[str, tuple[str, ...]]]:
    """Map each custom error's 4-byte selector to its name and input types."""
    from eth_utils import keccak

    entries = abi if abi is not None else load_artifact().abi
    table: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    for entry in entries:
        if entry.get("type") != "error":
            continue
        types = tuple(_canonical_type(p) for p in entry.get("inputs", []))
        sig = f"{entry['name']}({','.join(types)})"
        table[keccak(text=sig)[:4]] = (entry["name"], types)
    return table


def _error_arg_names(abi: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    return {
        e["name"]: [p.get("name") or f"arg{i}" for i, p in enumerate(e.get("inputs", []))]
        for e in abi
        if e.get("type") == "error"
    }


def decode_revert(
    data: bytes | str, abi: Iterable[Mapping[str, Any]] | None = None
) -> ContractRevert | None:
    """Decode revert data into a :class:`ContractRevert`; ``None`` if no custom error matches."""
    from eth_abi import decode

    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    entries = list(abi) if abi is not None else load_artifact().abi
    spec = error_selectors(entries).get(raw[:4])
    if spec is None:
        return None
    name, types = spec
    try:
        values = decode(list(types), raw[4:])
    except Exception:  # noqa: BLE001 - malformed data is "no match", not a crash
        return None
    args = dict(zip(_error_arg_names(entries)[name], (_plain(v) for v in values), strict=True))
    shown = ", ".join(f"{k}={v}" for k, v in args.items())
    return ContractRevert(name, args, f"TrainingLedger reverted: {name}({shown})")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        from eth_utils import to_checksum_address

        return to_checksum_address(value)
    return value
