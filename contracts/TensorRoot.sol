// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title TensorRoot — check one int32 coordinate of a committed tensor against its tensor root
/// @notice A tensor root is a keccak256 Merkle root over a flat int32 fixed-point vector (an
/// update, an aggregate or a global model), cut into leaves of 1,024 coordinates
/// (docs/tensor_commitments.md; the reference is `fedledger.protocol.tensor_root`). A leaf is
/// `abi.encodePacked(bytes4("FTR1"), uint64 dimension, uint64 leafIndex)` followed by 1,024
/// coordinates of 4 big-endian bytes each (packed int32 scalars, not an `int32[]`, whose packed
/// elements take 32 bytes): 4,116 bytes, the last leaf padded with zero coordinates. Its tree
/// node is `keccak256(leaf)`.
/// The tree is OpenZeppelin's (sorted-pair keccak, an odd last node carried up), so a proof is
/// the sibling list that {MerkleProof-verify} takes. Position is bound by the leaf's header:
/// the leaf of coordinate `i` says `leafIndex == i / 1024` and `dimension > i`.
/// @dev Every leaf has the same length (never 64 bytes), so a leaf cannot pose as an inner node
/// and one hash per leaf suffices (OpenZeppelin's double hash guards variable-length leaves).
/// Gas: the 4,116-byte leaf is most of a proof's cost, as calldata (up to ~66,000 gas at 16 per
/// non-zero byte); checking it is ~9,500 gas of execution at 5M coordinates (13 proof levels,
/// `test_gas_verifyCoordinate_5m` in contracts/test/TensorRoot.t.sol): the leaf's copy to memory
/// and its 4 KiB keccak, then one 64-byte keccak per level.
library TensorRoot {
    /// @notice The first four bytes of every leaf ("FTR1": fedledger tensor root, layout 1).
    bytes4 internal constant LEAF_TAG = 0x46545231;
    /// @notice Coordinates per leaf.
    uint256 internal constant LEAF_COORDINATES = 1024;
    /// @notice Tag (4) + dimension (8) + leaf index (8).
    uint256 internal constant HEADER_BYTES = 20;
    /// @notice The length of every leaf: 20 + 4 * 1024.
    uint256 internal constant LEAF_BYTES = HEADER_BYTES + 4 * LEAF_COORDINATES;

    /// @notice A leaf is not `LEAF_BYTES` long.
    error TensorLeafLength(uint256 length, uint256 expected);
    /// @notice A leaf does not start with `LEAF_TAG` (not a tensor leaf, or another layout).
    error TensorLeafTag(bytes4 tag);
    /// @notice Coordinate `index` is not inside the vector of `dimension` coordinates the leaf
    /// belongs to.
    error TensorIndexOutOfRange(uint256 index, uint256 dimension);
    /// @notice The leaf is leaf `leafIndex`, but coordinate `index` is in leaf `index / 1024`.
    error TensorLeafIndex(uint256 index, uint256 leafIndex);
    /// @notice The leaf and proof lead to `computedRoot`, not to `root`.
    error TensorProofInvalid(bytes32 root, bytes32 computedRoot);

    /// @notice Check that `leaf` and `proof` prove coordinate `index` of the vector committed by
    /// `root`, and return that coordinate. Reverts with a `Tensor*` error saying what is wrong.
    /// @param root The tensor root.
    /// @param index The coordinate's position in the flat vector (0-based, task tensor order).
    /// @param leaf The 4,116-byte leaf holding the coordinate.
    /// @param proof The sibling nodes from the leaf up to the root (OpenZeppelin order).
    /// @return value The int32 fixed-point coordinate (its real value is `value * 2**-fracBits`).
    function verifyCoordinate(bytes32 root, uint256 index, bytes calldata leaf, bytes32[] calldata proof)
        internal
        pure
        returns (int32 value)
    {
        value = coordinate(leaf, index);
        bytes32 computed = MerkleProof.processProofCalldata(proof, keccak256(leaf));
        if (computed != root) revert TensorProofInvalid(root, computed);
    }

    /// @notice The vector's dimension (number of coordinates) a well-formed leaf declares; a
    /// caller that knows the expected dimension (e.g. from the task) compares it with this.
    function dimension(bytes calldata leaf) internal pure returns (uint256) {
        _checkShape(leaf);
        return uint64(bytes8(leaf[4:12]));
    }

    /// @notice Coordinate `index` read from `leaf`, after checking the leaf's shape and that it
    /// is the leaf of `index`; no proof is checked (see {verifyCoordinate}).
    function coordinate(bytes calldata leaf, uint256 index) internal pure returns (int32) {
        _checkShape(leaf);
        uint256 dim = uint64(bytes8(leaf[4:12]));
        if (index >= dim) revert TensorIndexOutOfRange(index, dim);
        uint256 leafIndex = uint64(bytes8(leaf[12:20]));
        if (leafIndex != index / LEAF_COORDINATES) revert TensorLeafIndex(index, leafIndex);
        uint256 at = HEADER_BYTES + 4 * (index % LEAF_COORDINATES);
        return int32(uint32(bytes4(leaf[at:at + 4])));
    }

    function _checkShape(bytes calldata leaf) private pure {
        if (leaf.length != LEAF_BYTES) revert TensorLeafLength(leaf.length, LEAF_BYTES);
        if (bytes4(leaf[0:4]) != LEAF_TAG) revert TensorLeafTag(bytes4(leaf[0:4]));
    }
}
