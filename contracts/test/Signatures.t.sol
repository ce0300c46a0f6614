// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LedgerFixture} from "./utils/LedgerFixture.sol";
import {Vm} from "./utils/Vm.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";
import {TrainingLedger} from "../TrainingLedger.sol";

/// @notice Fuzzed properties of relayed (EIP-712 signed) updates, through `submitUpdateFor` (65-
/// and 64-byte signatures) and `submitBatch`: a signature authorises exactly one update, by
/// its signer, of these fields, on this chain, for this contract, until its deadline, once.
contract SignaturesTest is LedgerFixture {
    uint256 internal task;

    /// @dev The fields of one signed update.
    struct Signed {
        address signer;
        bytes32 contentHash;
        bytes32 cidDigest;
        bytes32 tensorRoot;
        uint64 numSamples;
        uint64 deadline;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    function setUp() public override {
        super.setUp();
        task = _createTask(_config(1, 1000, 1, 0, true)); // open: any signer may contribute
    }

    function _key(uint256 seed) internal pure returns (uint256) {
        return bound(seed, 1, SECP256K1_N - 1);
    }

    function _digest(bytes32 domain, Signed memory u) internal view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(
                UPDATE_TYPEHASH, task, uint64(0), u.contentHash, u.cidDigest, u.tensorRoot, u.numSamples, u.deadline
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    function _sign(uint256 key, bytes32 seed, uint64 numSamples, uint64 deadline)
        internal
        view
        returns (Signed memory u)
    {
        u.signer = vm.addr(key);
        u.contentHash = keccak256(abi.encode("content", seed));
        u.cidDigest = keccak256(abi.encode("cid", seed));
        u.tensorRoot = keccak256(abi.encode("root", seed));
        u.numSamples = numSamples;
        u.deadline = deadline;
        (u.v, u.r, u.s) = vm.sign(key, _digest(_domainSeparator(), u));
    }

    function _full(Signed memory u) internal pure returns (bytes memory) {
        return abi.encodePacked(u.r, u.s, u.v);
    }

    function _compactSig(Signed memory u) internal pure returns (bytes memory) {
        return abi.encodePacked(u.r, bytes32(uint256(u.s) | (uint256(u.v - 27) << 255)));
    }

    function _relay(Signed memory u, bytes memory sig) internal returns (uint256) {
        vm.prank(outsider);
        return ledger.submitUpdateFor(
            task, 0, u.contentHash, u.cidDigest, u.tensorRoot, u.numSamples, u.signer, u.deadline, sig
        );
    }

    function _asEntry(Signed memory u) internal pure returns (bytes memory) {
        return abi.encodePacked(
            u.contentHash,
            u.cidDigest,
            u.tensorRoot,
            u.numSamples,
            u.deadline,
            u.r,
            bytes32(uint256(u.s) | (uint256(u.v - 27) << 255))
        );
    }

    /// @dev The signer the ledger recovers from `u`'s signature over `u`'s (possibly changed) fields.
    function _recovered(Signed memory u) internal view returns (address) {
        bytes32 digest = ledger.hashUpdate(task, 0, u.contentHash, u.cidDigest, u.tensorRoot, u.numSamples, u.deadline);
        return ecrecover(digest, u.v, u.r, u.s);
    }

    function testFuzz_valid_signature_records_the_signers_update(
        uint256 keySeed,
        bytes32 seed,
        uint64 numSamples,
        uint32 ttl,
        bool compact
    ) public {
        numSamples = uint64(bound(numSamples, 1, MAX_SAMPLES));
        Signed memory u = _sign(_key(keySeed), seed, numSamples, uint64(block.timestamp + ttl));
        uint256 id = _relay(u, compact ? _compactSig(u) : _full(u));
        assertEq(id, (task << 32) | 1, "the first id");
        assertTrue(ledger.hasSubmitted(task, 0, u.signer), "recorded for the signer");
        bytes28 h = bytes28(
            keccak256(abi.encode(_seed(task, 0), u.signer, u.contentHash, u.cidDigest, u.tensorRoot, u.numSamples))
        );
        assertEq(bytes32(ledger.getRound(task, 0).recordHash), bytes32(h), "its record");
    }

    function testFuzz_a_batch_entry_is_its_signers_update(uint256 keySeed, bytes32 seed, uint64 numSamples) public {
        numSamples = uint64(bound(numSamples, 1, MAX_SAMPLES));
        Signed memory u = _sign(_key(keySeed), seed, numSamples, FAR);
        vm.recordLogs();
        (, uint256 recorded) = ledger.submitBatch(task, 0, _asEntry(u));
        assertEq(recorded, 1, "recorded");
        (, uint256 first, bytes memory records) = _relayedIn(vm.getRecordedLogs());
        assertEq(first, (task << 32) | 1, "id");
        assertEq(
            records,
            abi.encodePacked(u.signer, u.contentHash, u.cidDigest, u.tensorRoot, u.numSamples),
            "its record, signed by it"
        );
    }

    function testFuzz_signature_by_another_key_is_rejected(uint256 signerSeed, uint256 claimedSeed, bytes32 seed)
        public
    {
        Signed memory u = _sign(_key(signerSeed), seed, 1, FAR);
        address claimed = vm.addr(_key(claimedSeed));
        vm.assume(claimed != u.signer);
        address signer = u.signer;
        u.signer = claimed;
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, claimed, signer));
        _relay(u, _full(u));
    }

    function testFuzz_any_field_change_breaks_the_signature(uint256 keySeed, uint8 field, bytes32 noise) public {
        Signed memory u = _sign(_key(keySeed), keccak256("h"), 10, uint64(block.timestamp + 100));
        bytes32 flip = noise == bytes32(0) ? bytes32(uint256(1)) : noise;
        field = uint8(bound(field, 0, 4));
        if (field == 0) u.contentHash ^= flip;
        if (field == 1) u.cidDigest ^= flip;
        if (field == 2) u.tensorRoot ^= flip;
        if (field == 3) u.numSamples = 11 + uint64(uint256(noise) % 1000);
        if (field == 4) u.deadline += 1 + uint64(uint256(noise) % 1000);
        address recovered = _recovered(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.signer, recovered));
        _relay(u, _full(u));
        // in a batch the entry is skipped; a stranger's update is never recorded in its place
        vm.recordLogs();
        (, uint256 recorded) = ledger.submitBatch(task, 0, _asEntry(u));
        Skip[] memory skips = _skipsIn(vm.getRecordedLogs());
        if (recorded == 1) {
            // the open task admitted the recovered stranger: its update, never u.signer's
            assertTrue(recovered != u.signer, "a stranger");
            assertFalse(ledger.hasSubmitted(task, 0, u.signer), "not the signer's");
        } else {
            assertEq(skips[0].signer, recovered, "the recovered signer");
        }
    }

    function testFuzz_a_signature_is_bound_to_its_task_and_round(uint256 keySeed, uint8 which) public {
        uint256 other = _createTask(_config(1, 1000, 1, 0, true));
        Signed memory u = _sign(_key(keySeed), keccak256("h"), 10, FAR);
        bytes memory sig = _full(u);
        (uint256 t, uint64 round) = which % 2 == 0 ? (other, uint64(0)) : (task, uint64(1));
        if (round == 1) {
            vm.prank(owner);
            ledger.addValidator(task, val1);
            _submit(alice, task, 0);
            _attest(val1, task, 0, _resultNow(task, 0, "r0"));
        }
        bytes32 digest = ledger.hashUpdate(t, round, u.contentHash, u.cidDigest, u.tensorRoot, 10, FAR);
        address recovered = ecrecover(digest, u.v, u.r, u.s);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.signer, recovered));
        ledger.submitUpdateFor(t, round, u.contentHash, u.cidDigest, u.tensorRoot, 10, u.signer, FAR, sig);
    }

    function testFuzz_signature_does_not_survive_a_chain_fork(uint256 keySeed, uint64 forkedChain) public {
        vm.assume(forkedChain != block.chainid && forkedChain != 0);
        Signed memory u = _sign(_key(keySeed), keccak256("h"), 10, FAR);
        vm.chainId(forkedChain); // the contract rebuilds its domain separator for the new chain id
        address recovered = _recovered(u);
        assertTrue(recovered != u.signer, "digest changed with the chain id");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.signer, recovered));
        _relay(u, _compactSig(u));
    }

    function testFuzz_signature_for_another_contract_is_rejected(uint256 keySeed) public {
        TrainingLedger other = new TrainingLedger();
        uint256 key = _key(keySeed);
        Signed memory u = _sign(key, keccak256("h"), 10, FAR);
        bytes32 otherDomain = keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("TrainingLedger"), keccak256("2"), block.chainid, address(other))
        );
        (u.v, u.r, u.s) = vm.sign(key, _digest(otherDomain, u));
        address recovered = _recovered(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.signer, recovered));
        _relay(u, _full(u));
    }

    function testFuzz_expired_signature_is_rejected(uint256 keySeed, uint32 ttl, uint32 lateBy) public {
        uint64 deadline = uint64(block.timestamp + ttl);
        Signed memory u = _sign(_key(keySeed), keccak256("h"), 10, deadline);
        uint256 nowTs = uint256(deadline) + 1 + lateBy;
        vm.warp(nowTs);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.Expired.selector, uint256(deadline), nowTs));
        _relay(u, _full(u));
        vm.recordLogs();
        ledger.submitBatch(task, 0, _asEntry(u));
        Skip[] memory skips = _skipsIn(vm.getRecordedLogs());
        assertEq(bytes32(skips[0].reason), bytes32(ITrainingLedger.Expired.selector), "skipped as expired");
        assertEq(skips[0].signer, u.signer, "with its signer");
    }

    function testFuzz_high_s_twin_of_a_valid_signature_is_rejected(uint256 keySeed, bytes32 seed) public {
        Signed memory u = _sign(_key(keySeed), seed, 10, FAR);
        // (r, n - s, v ^ 1) recovers the same signer: ecrecover accepts it, the ledger must not
        Signed memory twin = u;
        twin.s = bytes32(SECP256K1_N - uint256(u.s));
        twin.v = u.v == 27 ? 28 : 27;
        assertEq(_recovered(twin), u.signer, "the twin is a valid raw signature");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, u.signer, address(0)));
        _relay(twin, _full(twin));
    }

    function testFuzz_replayed_signature_is_rejected(uint256 keySeed, bytes32 seed, bool compact) public {
        Signed memory u = _sign(_key(keySeed), seed, 10, FAR);
        bytes memory sig = compact ? _compactSig(u) : _full(u);
        _relay(u, sig);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, task, 0, u.signer));
        _relay(u, sig);
        vm.recordLogs();
        (, uint256 recorded) = ledger.submitBatch(task, 0, _asEntry(u));
        assertEq(recorded, 0, "not again in a batch");
        Skip[] memory skips = _skipsIn(vm.getRecordedLogs());
        assertEq(bytes32(skips[0].reason), bytes32(ITrainingLedger.DuplicateSubmission.selector), "duplicate");
    }

    function testFuzz_garbage_signature_is_rejected(uint256 keySeed, bytes calldata garbage) public {
        Signed memory u = _sign(_key(keySeed), keccak256("h"), 10, FAR);
        vm.assume(keccak256(garbage) != keccak256(_full(u)) && keccak256(garbage) != keccak256(_compactSig(u)));
        vm.expectRevert(); // BadSignature(signer, whatever the garbage recovers to)
        _relay(u, garbage);
    }

    function testFuzz_garbage_entries_never_record_an_update_for_a_known_signer(
        bytes32 r,
        bytes32 vs,
        uint64 numSamples
    ) public {
        Signed memory u = _sign(ALICE_KEY, keccak256("h"), 10, FAR);
        bytes memory e = abi.encodePacked(u.contentHash, u.cidDigest, u.tensorRoot, numSamples, FAR, r, vs);
        vm.recordLogs();
        ledger.submitBatch(task, 0, e);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertFalse(ledger.hasSubmitted(task, 0, alice), "alice signed nothing of it");
        (bool found,, bytes memory records) = _relayedIn(logs);
        if (found) {
            address who;
            assembly {
                who := shr(96, mload(add(records, 32)))
            }
            assertEq(
                ecrecover(
                    ledger.hashUpdate(task, 0, u.contentHash, u.cidDigest, u.tensorRoot, numSamples, FAR),
                    uint8(27 + (uint256(vs) >> 255)),
                    r,
                    bytes32(uint256(vs) & ((uint256(1) << 255) - 1))
                ),
                who,
                "its real signer"
            );
        }
    }
}
