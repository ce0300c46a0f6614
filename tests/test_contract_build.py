"""The contract the Python package ships is the contract in contracts/, compiled the same way.

* py-solc-x (native solc or scripts/solc-shim) and Hardhat produce identical bytecode, metadata
  hash included, because they get the same standard-JSON input;
* the committed client/fedledger/chain/abi/TrainingLedger.json equals a fresh compile of the sources, so
  an edit to contracts/ without `make contracts` fails here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fedledger.chain import artifacts as contracts
from fedledger.errors import ContractRevert

ROOT = Path(__file__).resolve().parent.parent
HAS_NODE = shutil.which("node") is not None and (ROOT / "node_modules" / "solc").is_dir()
needs_node = pytest.mark.skipif(not HAS_NODE, reason="needs node and `npm ci` (solcjs, hardhat)")


@pytest.fixture(scope="module")
def fresh() -> contracts.Artifact:
    return contracts.compile_sources(ROOT)


@pytest.fixture(scope="module")
def hardhat_build() -> contracts.Artifact:
    subprocess.run(
        ["npx", "--no-install", "hardhat", "compile", "--quiet"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return contracts.artifact_from_hardhat(ROOT)


def test_committed_artifact_loads_with_abi_and_bytecode() -> None:
    art = contracts.load_artifact()
    names = {e.get("name") for e in art.abi}
    assert {
        "submitUpdate",
        "submitBatch",
        "attestRound",
        "confirmRound",
        "UpdateSubmitted",
        "UpdatesRelayed",
    } <= names
    assert len(art.bytecode) > len(art.deployed_bytecode) > 1000
    assert art.abi_hash == contracts.abi_hash(art.abi)


@needs_node
def test_committed_artifact_matches_fresh_compile(fresh: contracts.Artifact) -> None:
    committed = contracts.load_artifact()
    assert committed.abi == fresh.abi, "ABI changed: run `make contracts`"
    assert committed.bytecode == fresh.bytecode, "bytecode is stale: run `make contracts`"
    assert committed.deployed_bytecode == fresh.deployed_bytecode
    assert committed.compiler["settings"] == contracts.SOLC_SETTINGS


@needs_node
def test_hardhat_and_py_solc_x_give_identical_bytecode(
    fresh: contracts.Artifact, hardhat_build: contracts.Artifact
) -> None:
    # identical including the CBOR metadata (IPFS hash of sources + settings) at the end
    assert hardhat_build.bytecode == fresh.bytecode
    assert hardhat_build.deployed_bytecode == fresh.deployed_bytecode
    assert hardhat_build.abi == fresh.abi
    assert hardhat_build.compiler["settings"] == contracts.SOLC_SETTINGS


@needs_node
def test_standard_json_input_is_hardhats(hardhat_build: contracts.Artifact) -> None:
    dbg = ROOT / "artifacts" / contracts.SOURCE_NAME / f"{contracts.CONTRACT_NAME}.dbg.json"
    build_info = json.loads((dbg.parent / json.loads(dbg.read_text())["buildInfo"]).read_text())
    ours = contracts.standard_json_input(ROOT)
    theirs = build_info["input"]
    # an incremental Hardhat build holds only the changed files and their imports
    assert contracts.SOURCE_NAME in theirs["sources"]
    for name, source in theirs["sources"].items():
        assert ours["sources"].get(name) == source, name
    assert ours["settings"] == theirs["settings"]


def test_solc_shim_reports_a_version_py_solc_x_parses() -> None:
    if not HAS_NODE:
        pytest.skip("needs node")
    from solcx.wrapper import get_solc_version

    assert str(get_solc_version(ROOT / "scripts" / "solc-shim")) == contracts.SOLC_VERSION


def test_error_selectors_cover_the_named_errors() -> None:
    table = contracts.error_selectors()
    by_name = {name: types for name, types in table.values()}
    assert by_name["WrongRound"] == ("uint256", "uint64", "uint64")
    assert by_name["BadSignature"] == ("address", "address")
    for name in (
        "NotContributor", "NotValidator", "NotTaskOwner", "UnknownTask", "DuplicateSubmission",
        "RoundFull", "RoundAlreadySealed", "RoundNotReady", "Expired", "AlreadyAttested",
        "InvalidConfig", "BadBatch",
    ):  # fmt: skip
        assert name in by_name
    # the selector is keccak256("WrongRound(uint256,uint64,uint64)")[:4]
    assert bytes.fromhex("e4cec87d") in table


def test_decode_revert_names_the_error_and_its_facts() -> None:
    from eth_abi import encode

    data = bytes.fromhex("e4cec87d") + encode(["uint256", "uint64", "uint64"], [3, 1, 2])
    err = contracts.decode_revert("0x" + data.hex())
    assert isinstance(err, ContractRevert)
    assert err.name == "WrongRound"
    assert err.args_ == {"taskId": 3, "given": 1, "current": 2}
    assert "WrongRound(taskId=3, given=1, current=2)" in str(err)
    assert contracts.decode_revert(b"\x08\xc3\x79\xa0") is None  # Error(string) is not ours
