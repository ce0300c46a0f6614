// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LedgerFixture} from "./utils/LedgerFixture.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";
import {TrainingLedger} from "../TrainingLedger.sol";

/// @notice Fuzzed properties of relayed (EIP-712 signed) updates: a signature authorises exactly
/// one update, by its signer, on this chain, for this contract, until its deadline, once.
contract SignaturesTest is LedgerFixture {
    uint256 internal task;

    function setUp() public override {
        super.setUp();
        task = _createTask(_config(1, 1000, 1, 0, true)); // open: any signer may contribute
    }

    function _key(uint256 seed) internal pure returns (uint256) {
        return bound(seed, 1, SECP256K1_N - 1);
    }

    function _update(uint256 key, bytes32 contentHash, string memory cid, uint64 numSamples, uint256 deadline)
        internal
        view
        returns (ITrainingLedger.SignedUpdate memory u)
    {
        u = ITrainingLedger.SignedUpdate(task, 0, contentHash, cid, numSamples, vm.addr(key), deadline, "");
        u.signature = _signDigest(
            key,
            _typedHash(
                _domainSeparator(block.chainid, address(ledger)),
                task,
                0,
                contentHash,
                cid,
                numSamples,
                u.contributor,
                deadline
            )
        );
    }

    function _recoverOf(ITrainingLedger.SignedUpdate memory u) internal view returns (address) {
        bytes32 digest =
            ledger.hashUpdate(u.taskId, u.round, u.contentHash, u.cid, u.numSamples, u.contributor, u.deadline);
        bytes memory sig = u.signature;
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
            v := byte(0, mload(add(sig, 96)))
        }
        return ecrecover(digest, v, r, s);
    }

    function testFuzz_valid_signature_records_the_signers_update(
        uint256 keySeed,
        bytes32 contentHash,
        string calldata cid,
        uint64 numSamples,
        uint32 ttl
    ) public {
        uint256 key = _key(keySeed);
        numSamples = uint64(bound(numSamples, 1, MAX_SAMPLES)); // the task's bounds (tested in TrainingLedgerTest)
        ITrainingLedger.SignedUpdate memory u = _update(key, contentHash, cid, numSamples, block.timestamp + ttl);
        vm.prank(outsider);
        uint256 id = _relay(u);
        assertEq(
            ledger.getUpdate(id), ledger.updateDigest(task, 0, vm.addr(key), contentHash, cid, numSamples), "digest"
        );
        assertTrue(ledger.hasSubmitted(task, 0, vm.addr(key)), "recorded for the signer");
    }

    function testFuzz_signature_by_another_key_is_rejected(uint256 signerSeed, uint256 claimedSeed, bytes32 h) public {
        uint256 signer = _key(signerSeed);
        uint256 claimed = _key(claimedSeed);
        vm.assume(vm.addr(signer) != vm.addr(claimed));
        ITrainingLedger.SignedUpdate memory u = _update(signer, h, CID, 1, block.timestamp + 1);
        u.contributor = vm.addr(claimed);
        address recovered = _recoverOf(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.contributor, recovered));
        _relay(u);
    }

    function testFuzz_any_field_change_breaks_the_signature(uint256 keySeed, uint8 field, bytes32 noise) public {
        uint256 key = _key(keySeed);
        ITrainingLedger.SignedUpdate memory u = _update(key, keccak256("h"), CID, 10, block.timestamp + 100);
        field = uint8(bound(field, 0, 3));
        if (field == 0) u.contentHash = u.contentHash ^ (noise == bytes32(0) ? bytes32(uint256(1)) : noise);
        if (field == 1) u.cid = string.concat(u.cid, "x");
        if (field == 2) u.numSamples = u.numSamples + 1 + uint64(uint256(noise) % 1000);
        if (field == 3) u.deadline = u.deadline + 1 + uint256(noise) % 1000;
        address recovered = _recoverOf(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.contributor, recovered));
        _relay(u);
    }

    function testFuzz_signature_for_another_chain_is_rejected(uint256 keySeed, uint64 otherChain) public {
        vm.assume(otherChain != block.chainid && otherChain != 0);
        uint256 key = _key(keySeed);
        ITrainingLedger.SignedUpdate memory u = _update(key, keccak256("h"), CID, 10, block.timestamp + 100);
        u.signature = _signDigest(
            key,
            _typedHash(
                _domainSeparator(otherChain, address(ledger)),
                task,
                0,
                u.contentHash,
                CID,
                10,
                u.contributor,
                u.deadline
            )
        );
        address recovered = _recoverOf(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.contributor, recovered));
        _relay(u);
    }

    function testFuzz_signature_does_not_survive_a_chain_fork(uint256 keySeed, uint64 forkedChain) public {
        vm.assume(forkedChain != block.chainid && forkedChain != 0);
        uint256 key = _key(keySeed);
        ITrainingLedger.SignedUpdate memory u = _update(key, keccak256("h"), CID, 10, block.timestamp + 100);
        vm.chainId(forkedChain); // the contract rebuilds its domain separator for the new chain id
        address recovered = _recoverOf(u);
        assertTrue(recovered != u.contributor, "digest changed with the chain id");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.contributor, recovered));
        _relay(u);
    }

    function testFuzz_signature_for_another_contract_is_rejected(uint256 keySeed) public {
        uint256 key = _key(keySeed);
        TrainingLedger other = new TrainingLedger();
        ITrainingLedger.SignedUpdate memory u = _update(key, keccak256("h"), CID, 10, block.timestamp + 100);
        u.signature = _signDigest(
            key,
            _typedHash(
                _domainSeparator(block.chainid, address(other)),
                task,
                0,
                u.contentHash,
                CID,
                10,
                u.contributor,
                u.deadline
            )
        );
        address recovered = _recoverOf(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.contributor, recovered));
        _relay(u);
    }

    function testFuzz_expired_signature_is_rejected(uint256 keySeed, uint32 ttl, uint32 lateBy) public {
        uint256 key = _key(keySeed);
        uint256 deadline = block.timestamp + ttl;
        ITrainingLedger.SignedUpdate memory u = _update(key, keccak256("h"), CID, 10, deadline);
        uint256 nowTs = deadline + 1 + lateBy;
        vm.warp(nowTs);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.Expired.selector, deadline, nowTs));
        _relay(u);
    }

    function testFuzz_high_s_twin_of_a_valid_signature_is_rejected(uint256 keySeed, bytes32 h) public {
        uint256 key = _key(keySeed);
        ITrainingLedger.SignedUpdate memory u = _update(key, h, CID, 10, block.timestamp + 100);
        bytes memory sig = u.signature;
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
            v := byte(0, mload(add(sig, 96)))
        }
        // (r, n - s, v ^ 1) recovers the same signer: ecrecover accepts it, the ledger must not
        bytes32 highS = bytes32(SECP256K1_N - uint256(s));
        uint8 flippedV = v == 27 ? 28 : 27;
        bytes32 digest = ledger.hashUpdate(task, 0, h, CID, 10, u.contributor, u.deadline);
        assertEq(ecrecover(digest, flippedV, r, highS), u.contributor, "the twin is a valid raw signature");
        u.signature = abi.encodePacked(r, highS, flippedV);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.contributor, address(0)));
        _relay(u);
    }

    function testFuzz_replayed_signature_is_rejected(uint256 keySeed, bytes32 h) public {
        uint256 key = _key(keySeed);
        ITrainingLedger.SignedUpdate memory u = _update(key, h, CID, 10, block.timestamp + 100);
        _relay(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, task, 0, u.contributor));
        _relay(u);
        ITrainingLedger.SignedUpdate[] memory batch = new ITrainingLedger.SignedUpdate[](1);
        batch[0] = u;
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, task, 0, u.contributor));
        ledger.submitUpdatesFor(batch);
    }

    function testFuzz_garbage_signature_is_rejected(uint256 keySeed, bytes calldata garbage) public {
        uint256 key = _key(keySeed);
        ITrainingLedger.SignedUpdate memory u = _update(key, keccak256("h"), CID, 10, block.timestamp + 100);
        u.signature = garbage;
        vm.expectRevert(); // BadSignature(contributor, whatever the garbage recovers to)
        _relay(u);
    }
}
