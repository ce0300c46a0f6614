"""The verdict Merkle tree, compatible with OpenZeppelin's ``MerkleProof``.

The construction is fixed by docs/interfaces.md ("Verdicts and the Merkle tree"):

* leaf = ``keccak256(bytes.concat(keccak256(abi.encode(uint256 updateId, address contributor,
  bytes32 contentHash, uint8 verdict))))`` — the double hash OpenZeppelin recommends so that a leaf
  can never be confused with an inner node (64-byte preimage) of the same tree;
* leaves are ordered by ``updateId`` (the caller passes them in that order);
* each level pairs neighbours left to right; an odd last node is carried up unchanged;
* parent = ``keccak256(min(a, b) ++ max(a, b))`` (bytes compared as big-endian integers), exactly
  ``MerkleProof._hashPair`` (commutative), so a proof is a plain list of siblings with no
  left/right flags and ``MerkleProof.verify`` / the contract's ``verifyVerdict`` accept it;
* empty tree: root = 32 zero bytes; a single leaf is its own root (empty proof).

Because an odd node is carried up without a sibling, its proof simply has one element fewer for
that level; ``processProof`` needs no placeholder.

Values are ``bytes`` of length 32 (Solidity ``bytes32``). Inputs also accept ``0x`` hex strings;
:func:`to_hex` gives the ``0x``-prefixed lowercase form used in JSON and Python APIs.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak

ZERO_ROOT = b"\x00" * 32
"""Root of the empty tree (a round with no updates)."""


def to_hex(value: bytes) -> str:
    """``0x``-prefixed lowercase hex of ``value``."""
    return "0x" + value.hex()


def as_bytes32(value: bytes | str, what: str = "value") -> bytes:
    """``value`` as exactly 32 bytes, from raw bytes or ``0x`` hex; ValueError otherwise."""
    raw = _hex_or_bytes(value, what)
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def _hex_or_bytes(value: bytes | str, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise ValueError(f"{what} must be bytes or a 0x-prefixed hex string, got {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise ValueError(f"{what} is not valid hex: {value!r}") from exc


def _address(value: bytes | str) -> bytes:
    raw = _hex_or_bytes(value, "contributor")
    if len(raw) != 20:
        raise ValueError(f"contributor must be a 20-byte address, got {len(raw)} bytes")
    return raw


def leaf(
    update_id: int, contributor: bytes | str, content_hash: bytes | str, verdict: int
) -> bytes:
    """The tree leaf of one verdict (interfaces.md), as ``MerkleProof`` expects it.

    ``abi.encode`` of static types is each value left-padded to one 32-byte word, so the encoding
    is written out here rather than pulled from an ABI library.
    """
    if not 0 <= update_id < 2**256:
        raise ValueError(f"updateId must fit uint256, got {update_id}")
    if not 0 <= int(verdict) < 256:
        raise ValueError(f"verdict must fit uint8, got {verdict}")
    encoded = (
        int(update_id).to_bytes(32, "big")
        + b"\x00" * 12
        + _address(contributor)
        + as_bytes32(content_hash, "contentHash")
        + int(verdict).to_bytes(32, "big")
    )
    return bytes(keccak(keccak(encoded)))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin ``_hashPair``: keccak256 of the two nodes in ascending order."""
    return bytes(keccak(a + b if a <= b else b + a))


def _levels(leaves: Sequence[bytes | str]) -> list[list[bytes]]:
    level = [as_bytes32(x, "leaf") for x in leaves]
    levels = [level]
    while len(level) > 1:
        nxt = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def root(leaves: Sequence[bytes | str]) -> bytes:
    """Root of the tree over ``leaves`` (already in updateId order); 32 zero bytes when empty."""
    if not leaves:
        return ZERO_ROOT
    return _levels(leaves)[-1][0]


def proof(leaves: Sequence[bytes | str], index: int) -> list[bytes]:
    """Sibling path of ``leaves[index]``, bottom-up, for ``MerkleProof.verify``."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} out of range for {len(leaves)} leaves")
    path: list[bytes] = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def process_proof(leaf_: bytes | str, proof_: Sequence[bytes | str]) -> bytes:
    """OpenZeppelin ``MerkleProof.processProof``: the root implied by a leaf and its proof."""
    computed = as_bytes32(leaf_, "leaf")
    for node in proof_:
        computed = hash_pair(computed, as_bytes32(node, "proof node"))
    return computed


def verify(root_: bytes | str, leaf_: bytes | str, proof_: Sequence[bytes | str]) -> bool:
    """True when ``proof_`` proves ``leaf_`` is in the tree with root ``root_``."""
    try:
        return process_proof(leaf_, proof_) == as_bytes32(root_, "root")
    except ValueError:
        return False
