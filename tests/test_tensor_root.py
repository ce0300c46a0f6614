"""fedledger.protocol.tensor_root: the tensor commitment of docs/tensor_commitments.md.

Checked against a pure-Python reference written here from the specification (struct + eth_utils
keccak, its own tree), against the verdict tree of fedledger.protocol.merkle (the same OZ tree),
and against contracts/TensorRoot.sol on a real anvil (a harness compiled by the project's solc).
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensor_root_fixture
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.exceptions import ContractCustomError

from fedledger.chain import artifacts
from fedledger.chain.devnet import Devnet
from fedledger.chain.ledger import connect
from fedledger.errors import FormatError
from fedledger.protocol import merkle
from fedledger.protocol import tensor_root as tr

N = tr.LEAF_COORDINATES
ROOT = Path(__file__).resolve().parent.parent


def _vec(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32)


# ------------------------------------------------------------------ an independent reference


def _ref_leaf(values: list[int], dimension: int, k: int) -> bytes:
    coords = values[k * N : (k + 1) * N]
    coords += [0] * (N - len(coords))
    return struct.pack(f">4sQQ{N}i", b"FTR1", dimension, k, *coords)


def _ref_pair(a: bytes, b: bytes) -> bytes:
    lo, hi = sorted((a, b))
    return keccak(lo + hi)


def _ref_root(values: list[int]) -> bytes:
    """The specification, coordinate by coordinate: leaves, then pairs up to one node."""
    count = (len(values) + N - 1) // N
    level = [keccak(_ref_leaf(values, len(values), k)) for k in range(count)]
    while len(level) > 1:
        level = [
            _ref_pair(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
    return level[0]


SHAPES = [1, 2, 11, N - 1, N, N + 1, 2 * N, 2 * N + 1, 3 * N + 52, 5 * N + 1000]


@pytest.mark.parametrize("n", SHAPES)
def test_root_equals_the_reference(n: int) -> None:
    vec = _vec(n, seed=n)
    assert tr.tensor_root(vec) == _ref_root([int(x) for x in vec])


@pytest.mark.parametrize("n", SHAPES)
def test_leaves_are_the_packed_layout(n: int) -> None:
    vec = _vec(n, seed=n)
    values = [int(x) for x in vec]
    rows = tr.leaves(vec)
    assert rows.shape == (tr.leaf_count(n), tr.LEAF_BYTES) == (-(-n // N), 4116)
    for k in range(rows.shape[0]):
        assert bytes(rows[k]) == tr.leaf(vec, k) == _ref_leaf(values, n, k)


def test_tree_is_the_verdict_trees_over_the_leaf_nodes() -> None:
    tree = tr.TensorTree(_vec(7 * N + 3))
    assert tree.leaf_nodes == [keccak(bytes(row)) for row in tr.leaves(tree.vector)]
    assert tree.root == merkle.root(tree.leaf_nodes)
    for k in range(8):
        assert tree.proof(k * N).proof == merkle.proof(tree.leaf_nodes, k)


def test_public_keccak_path_gives_the_same_root(monkeypatch: pytest.MonkeyPatch) -> None:
    vec = _vec(3 * N + 7)
    fast = tr.tensor_root(vec)
    monkeypatch.setattr(tr, "_hash_rows", tr._public_keccak_rows)
    assert tr.tensor_root(vec) == fast


def test_roots_computed_in_threads_at_once_are_right() -> None:
    # the C keccak releases the GIL: each call must hash with its own state
    vectors = [_vec(20 * N + k, seed=k) for k in range(6)]
    expected = [tr.tensor_root(v) for v in vectors]
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            assert list(pool.map(tr.tensor_root, vectors)) == expected


def test_keccak_rows_is_keccak256_of_each_row() -> None:
    rows = np.random.default_rng(1).integers(0, 256, (5, 200), dtype=np.uint8)
    assert [bytes(d) for d in tr.keccak_rows(rows)] == [keccak(bytes(r)) for r in rows]
    assert tr.keccak_rows(np.empty((0, 64), np.uint8)).shape == (0, 32)


# ------------------------------------------------------------------ the root binds every coordinate


def test_root_changes_when_any_coordinate_changes() -> None:
    vec = _vec(N + 77, seed=3)
    root = tr.tensor_root(vec)
    seen = {root}
    for i in range(vec.size):
        changed = vec.copy()
        changed[i] ^= 1
        seen.add(tr.tensor_root(changed))
    assert len(seen) == vec.size + 1


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4 * N + 100), st.data())
def test_any_change_of_any_shape_changes_the_root(n: int, data: st.DataObject) -> None:
    vec = _vec(n, seed=n)
    i = data.draw(st.integers(0, n - 1))
    delta = data.draw(st.integers(1, 2**32 - 1))
    changed = vec.copy()
    changed[i] = np.int32(((int(vec[i]) + delta + 2**31) % 2**32) - 2**31)
    assert tr.tensor_root(changed) != tr.tensor_root(vec)


def test_trailing_zero_is_not_padding() -> None:
    # the dimension is in every leaf: a vector and the same vector with a zero appended differ
    vec = _vec(10)
    assert tr.tensor_root(vec) != tr.tensor_root(np.append(vec, np.int32(0)))
    full = _vec(N)
    assert tr.tensor_root(full) != tr.tensor_root(np.append(full, np.zeros(N, np.int32)))


def test_leaves_swapped_change_the_root() -> None:
    vec = _vec(2 * N)
    swapped = np.concatenate([vec[N:], vec[:N]])
    assert tr.tensor_root(vec) != tr.tensor_root(swapped)


# ------------------------------------------------------------------ proofs


def test_every_coordinate_of_a_small_vector_verifies() -> None:
    vec = _vec(2 * N + 52, seed=5)
    tree = tr.TensorTree(vec)
    for i in range(vec.size):
        p = tree.proof(i)
        assert p.leaf_index == i // N
        assert tr.verify_coordinate(tree.root, i, int(vec[i]), p.leaf, p.proof)
    # the one-shot form, hex inputs, and the expected dimension
    p = tr.coordinate_proof(vec, 1500)
    assert p == tree.proof(1500)
    j = p.to_json()
    assert tr.verify_coordinate(
        merkle.to_hex(tree.root), 1500, int(vec[1500]), p.leaf, j["proof"], dimension=vec.size
    )


@pytest.mark.parametrize("n", SHAPES)
def test_first_and_last_coordinate_of_each_shape_verify(n: int) -> None:
    vec = _vec(n, seed=n)
    tree = tr.TensorTree(vec)
    for i in {0, n - 1, n // 2}:
        p = tree.proof(i)
        assert tr.verify_coordinate(tree.root, i, int(vec[i]), p.leaf, p.proof)
        assert merkle.verify(tree.root, keccak(p.leaf), p.proof)  # plain OZ MerkleProof.verify


def test_one_coordinate_is_one_leaf_with_an_empty_proof() -> None:
    vec = np.array([-7], dtype=np.int32)
    tree = tr.TensorTree(vec)
    p = tree.proof(0)
    assert p.proof == [] and p.leaf_index == 0
    assert tree.root == keccak(p.leaf) == keccak(_ref_leaf([-7], 1, 0))
    assert tr.verify_coordinate(tree.root, 0, -7, p.leaf, p.proof)
    decoded = tr.decode_leaf(p.leaf)
    assert (decoded.dimension, decoded.leaf_index, decoded.coordinates.tolist()) == (1, 0, [-7])


def test_exactly_one_leaf_and_one_leaf_plus_one() -> None:
    one = tr.TensorTree(_vec(N))
    assert len(one.levels) == 1 and one.proof(N - 1).proof == []
    two = tr.TensorTree(_vec(N + 1))
    assert len(two.levels) == 2
    last = two.proof(N)
    assert last.leaf_index == 1 and last.proof == [two.leaf_nodes[0]]
    decoded = tr.decode_leaf(last.leaf)
    assert decoded.dimension == N + 1 and decoded.coordinates.size == 1


def test_wrong_index_value_proof_root_or_dimension_fails() -> None:
    vec = _vec(3 * N + 10, seed=9)
    tree = tr.TensorTree(vec)
    i = N + 5
    p = tree.proof(i)
    v = int(vec[i])
    assert tr.verify_coordinate(tree.root, i, v, p.leaf, p.proof)
    assert not tr.verify_coordinate(tree.root, i + 1, v, p.leaf, p.proof)  # another coordinate
    assert not tr.verify_coordinate(tree.root, i + N, v, p.leaf, p.proof)  # another leaf's slot
    assert not tr.verify_coordinate(tree.root, -1, v, p.leaf, p.proof)
    assert not tr.verify_coordinate(tree.root, i, v + 1, p.leaf, p.proof)
    assert not tr.verify_coordinate(tree.root, i, v, p.leaf, p.proof[:-1])
    assert not tr.verify_coordinate(tree.root, i, v, p.leaf, tree.proof(0).proof)
    bad = list(p.proof)
    bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
    assert not tr.verify_coordinate(tree.root, i, v, p.leaf, bad)
    assert not tr.verify_coordinate(b"\x01" * 32, i, v, p.leaf, p.proof)
    assert not tr.verify_coordinate(tree.root, i, v, p.leaf, p.proof, dimension=vec.size + 1)
    assert not tr.verify_coordinate("0xnothex", i, v, p.leaf, p.proof)
    # a leaf whose value was changed (and the proof kept) fails at the root
    forged = bytearray(p.leaf)
    at = tr.HEADER_BYTES + 4 * (i % N)
    forged[at : at + 4] = (v ^ 1).to_bytes(4, "big", signed=True)
    assert not tr.verify_coordinate(tree.root, i, v ^ 1, bytes(forged), p.proof)
    # the index past the end, inside the last leaf's padding
    last = tree.proof(vec.size - 1)
    assert not tr.verify_coordinate(tree.root, vec.size, 0, last.leaf, last.proof)


def test_proof_index_out_of_range() -> None:
    tree = tr.TensorTree(_vec(5))
    with pytest.raises(IndexError, match="coordinate 5 out of range for 5"):
        tree.proof(5)
    with pytest.raises(IndexError):
        tree.proof(-1)
    with pytest.raises(IndexError, match="leaf 1 out of range"):
        tr.leaf(_vec(5), 1)


# ------------------------------------------------------------------ refused inputs


def test_empty_vector_is_refused_with_a_clear_error() -> None:
    with pytest.raises(FormatError, match="at least one coordinate: the vector is empty"):
        tr.tensor_root(np.array([], dtype=np.int32))


@pytest.mark.parametrize(
    ("vec", "match"),
    [
        (np.arange(4, dtype=np.int64), "int32 vector, got dtype int64"),
        (np.zeros(4, dtype=np.float32), "got dtype float32"),
        ([1, 2, 3], "got dtype int64"),
        (np.zeros((2, 3), dtype=np.int32), r"flat vector .* shape \(2, 3\)"),
    ],
)
def test_non_int32_or_non_flat_vectors_are_refused(vec: Any, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        tr.tensor_root(vec)


def test_malformed_leaves_are_refused() -> None:
    good = tr.leaf(_vec(N + 3), 1)
    with pytest.raises(FormatError, match="4116 bytes, got 4112"):
        tr.decode_leaf(good[:-4])
    with pytest.raises(FormatError, match="starts with b'FTR1'"):
        tr.decode_leaf(b"XTR1" + good[4:])
    beyond = good[:12] + (2).to_bytes(8, "big") + good[20:]
    with pytest.raises(FormatError, match="leaf index 2 is beyond the 2 leaves"):
        tr.decode_leaf(beyond)
    padded = bytearray(good)
    padded[-1] = 1
    with pytest.raises(FormatError, match="padding after coordinate 3"):
        tr.decode_leaf(bytes(padded))


# ------------------------------------------------------------------ the Solidity library


def test_fixture_is_current() -> None:
    committed = tensor_root_fixture.FIXTURE.read_text()
    assert committed == tensor_root_fixture.render(), (
        "contracts/test/fixtures/TensorRootFixture.sol is stale: "
        "run `.venv/bin/python tests/tensor_root_fixture.py`"
    )


HARNESS = """// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;
import {TensorRoot} from "contracts/TensorRoot.sol";
contract TensorRootHarness {
    function verifyCoordinate(bytes32 root, uint256 index, bytes calldata leaf, bytes32[] calldata proof)
        external pure returns (int32)
    {
        return TensorRoot.verifyCoordinate(root, index, leaf, proof);
    }
}
"""
HARNESS_NAME = "tests/TensorRootHarness.sol"


@pytest.fixture(scope="module")
def harness_artifact() -> dict[str, Any]:
    """The harness, compiled with the project's solc and settings (scripts/solc-shim or native)."""
    from solcx import compile_standard

    wanted = (
        "contracts/TensorRoot.sol",
        "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol",
        "@openzeppelin/contracts/utils/cryptography/Hashes.sol",
    )
    sources = {k: {"content": v} for k, v in artifacts.collect_sources(ROOT).items() if k in wanted}
    assert set(sources) == set(wanted)
    sources[HARNESS_NAME] = {"content": HARNESS}
    out = compile_standard(
        {
            "language": "Solidity",
            "sources": sources,
            "settings": {
                **artifacts.SOLC_SETTINGS,
                "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
            },
        },
        solc_binary=artifacts.find_solc(ROOT),
    )
    c = out["contracts"][HARNESS_NAME]["TensorRootHarness"]
    return {"abi": c["abi"], "bytecode": c["evm"]["bytecode"]["object"]}


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def test_solidity_library_accepts_the_python_proofs_on_anvil(
    anvil: Devnet, harness_artifact: dict[str, Any]
) -> None:
    w3 = connect(anvil.url)
    deployer = w3.eth.accounts[0]
    factory = w3.eth.contract(abi=harness_artifact["abi"], bytecode=harness_artifact["bytecode"])
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor().transact({"from": deployer})
    )
    harness = w3.eth.contract(address=receipt["contractAddress"], abi=harness_artifact["abi"])

    for n, seed in [(1, 1), (N, 2), (N + 1, 3), (6 * N + 321, 4)]:
        vec = _vec(n, seed)
        vec[0] = np.iinfo(np.int32).min
        vec[-1] = np.iinfo(np.int32).max
        tree = tr.TensorTree(vec)
        for i in sorted({0, n // 3, n // 2, n - 1}):
            p = tree.proof(i)
            got = harness.functions.verifyCoordinate(tree.root, i, p.leaf, p.proof).call()
            assert got == int(vec[i]), (n, i)

    # and rejects a tampered value with the error that carries both roots
    vec = _vec(3 * N, 5)
    tree = tr.TensorTree(vec)
    p = tree.proof(2000)
    forged = bytearray(p.leaf)
    forged[tr.HEADER_BYTES + 4 * (2000 % N)] ^= 0x80
    with pytest.raises(ContractCustomError) as err:
        harness.functions.verifyCoordinate(tree.root, 2000, bytes(forged), p.proof).call()
    data = str(err.value.data)
    assert data.startswith(_selector("TensorProofInvalid(bytes32,bytes32)"))
    assert Web3.to_hex(tree.root)[2:] in data
    with pytest.raises(ContractCustomError) as err:
        harness.functions.verifyCoordinate(tree.root, 2000 + N, p.leaf, p.proof).call()
    assert str(err.value.data).startswith(_selector("TensorLeafIndex(uint256,uint256)"))
