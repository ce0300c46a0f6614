"""fedledger.protocol.merkle: the verdict tree of docs/interfaces.md, compatible with OZ MerkleProof."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from fedledger.protocol import merkle

ADDR = "0x" + "ab" * 20
HASH = "0x" + "cd" * 32


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf(i + 1, ADDR, HASH, i % 11) for i in range(n)]


def test_leaf_is_double_keccak_of_abi_encoding() -> None:
    inner = keccak(
        encode(["uint256", "address", "bytes32", "uint8"], [7, ADDR, bytes.fromhex("cd" * 32), 6])
    )
    assert merkle.leaf(7, ADDR, HASH, 6) == keccak(inner)


def test_leaf_depends_on_the_verdict() -> None:
    assert merkle.leaf(1, ADDR, HASH, 0) != merkle.leaf(1, ADDR, HASH, 7)


def test_empty_tree_root_is_zero() -> None:
    assert merkle.root([]) == b"\x00" * 32


def test_single_leaf_is_its_own_root_with_empty_proof() -> None:
    (leaf,) = _leaves(1)
    assert merkle.root([leaf]) == leaf
    assert merkle.proof([leaf], 0) == []


def test_pair_hash_is_commutative_sorted_keccak() -> None:
    a, b = _leaves(2)
    assert merkle.hash_pair(a, b) == merkle.hash_pair(b, a) == keccak(min(a, b) + max(a, b))


def test_odd_last_node_is_carried_up_unchanged() -> None:
    a, b, c = _leaves(3)
    assert merkle.root([a, b, c]) == merkle.hash_pair(merkle.hash_pair(a, b), c)


@given(st.integers(min_value=1, max_value=40))
def test_every_leaf_proof_verifies(n: int) -> None:
    leaves = _leaves(n)
    root = merkle.root(leaves)
    for i, leaf in enumerate(leaves):
        assert merkle.verify(root, leaf, merkle.proof(leaves, i))


@given(st.integers(min_value=2, max_value=40), st.data())
def test_tampered_leaf_fails_verification(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    i = data.draw(st.integers(0, n - 1))
    forged = merkle.leaf(i + 1, ADDR, HASH, (i % 11 + 1) % 11)
    assert not merkle.verify(merkle.root(leaves), forged, merkle.proof(leaves, i))


@given(st.integers(min_value=2, max_value=40), st.data())
def test_tampered_proof_fails_verification(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    i = data.draw(st.integers(0, n - 1))
    path = merkle.proof(leaves, i)
    j = data.draw(st.integers(0, len(path) - 1))
    path[j] = bytes([path[j][0] ^ 1]) + path[j][1:]
    assert not merkle.verify(merkle.root(leaves), leaves[i], path)


def test_hex_strings_are_accepted_for_root_leaf_and_proof() -> None:
    leaves = _leaves(5)
    path = [merkle.to_hex(p) for p in merkle.proof(leaves, 3)]
    assert merkle.verify(merkle.to_hex(merkle.root(leaves)), merkle.to_hex(leaves[3]), path)


def test_malformed_address_is_rejected() -> None:
    with pytest.raises(ValueError, match="20-byte"):
        merkle.leaf(1, "0x1234", HASH, 0)
