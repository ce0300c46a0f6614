// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Vm} from "./Vm.sol";

/// @notice A minimal test base: the cheatcode handle, assertions, `bound`, logging events that
/// forge prints with -vv, and the target/exclude lists forge's invariant runner reads.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev secp256k1 group order; a signature with s > N/2 is the malleable twin of a low-s one.
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    /// @dev n / 2, the largest s a signature may have (OpenZeppelin's and the ledger's rule).
    uint256 internal constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    event log_named_uint(string key, uint256 val);
    event log_named_bytes32(string key, bytes32 val);

    /// @dev The shape forge's invariant runner decodes from `targetSelectors()`.
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetedContracts;
    address[] private _excludedContracts;
    address[] private _targetedSenders;
    FuzzSelector[] private _targetedSelectors;

    // ---------------------------------------------------------------- invariant targets

    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetedSelectors.push(selector);
    }

    function targetSender(address sender) internal {
        _targetedSenders.push(sender);
    }

    function excludeContract(address target) internal {
        _excludedContracts.push(target);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetedSelectors;
    }

    function targetSenders() public view returns (address[] memory) {
        return _targetedSenders;
    }

    function excludeContracts() public view returns (address[] memory) {
        return _excludedContracts;
    }

    // ---------------------------------------------------------------- assertions

    function assertTrue(bool c, string memory err) internal pure {
        vm.assertTrue(c, err);
    }

    function assertFalse(bool c, string memory err) internal pure {
        vm.assertFalse(c, err);
    }

    function assertEq(uint256 a, uint256 b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(bytes32 a, bytes32 b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(address a, address b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(bool a, bool b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(string memory a, string memory b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertEq(bytes memory a, bytes memory b, string memory err) internal pure {
        vm.assertEq(a, b, err);
    }

    function assertTrue(bool c) internal pure {
        vm.assertTrue(c, "");
    }

    function assertFalse(bool c) internal pure {
        vm.assertFalse(c, "");
    }

    function assertEq(uint256 a, uint256 b) internal pure {
        vm.assertEq(a, b, "");
    }

    function assertEq(int256 a, int256 b) internal pure {
        vm.assertEq(a, b, "");
    }

    function assertEq(bytes32 a, bytes32 b) internal pure {
        vm.assertEq(a, b, "");
    }

    function assertLe(uint256 a, uint256 b, string memory err) internal pure {
        vm.assertLe(a, b, err);
    }

    function assertGe(uint256 a, uint256 b, string memory err) internal pure {
        vm.assertGe(a, b, err);
    }

    // ---------------------------------------------------------------- fuzz helpers

    /// @dev `bound` for signed values: `x` mapped into [lo, hi].
    function bound(int256 x, int256 lo, int256 hi) internal pure returns (int256) {
        require(lo <= hi, "bound: lo > hi");
        if (x >= lo && x <= hi) return x;
        uint256 size = uint256(hi - lo);
        uint256 ux = x < 0 ? uint256(-(x + 1)) : uint256(x);
        return lo + int256(ux % (size + 1));
    }

    /// @dev Map `x` uniformly-enough into [lo, hi] (inclusive), keeping small values stable.
    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        require(lo <= hi, "bound: lo > hi");
        if (x >= lo && x <= hi) return x;
        uint256 size = hi - lo;
        if (size == type(uint256).max) return x;
        return lo + x % (size + 1);
    }
}
