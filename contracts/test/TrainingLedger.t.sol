// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LedgerFixture} from "./utils/LedgerFixture.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";

/// @notice Unit and fuzz tests of ledger v2: configs, the three submission paths, batch skipping,
/// record hashes, sealing, attestations bound to the sealed records, attempts, views.
contract TrainingLedgerTest is LedgerFixture {
    // ------------------------------------------------------------------ tasks

    function test_createTask_refuses_each_invalid_config() public {
        ITrainingLedger.TaskConfig memory c = _config(1, 3, 1, 0, false);
        c.attestWindow = 0;
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "attestWindow is zero"));
        ledger.createTask(c);
        c = _config(1, 3, 1, 0, false);
        c.maxSamples = uint64(1) << 32;
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "maxSamples exceeds 2**32 - 1"));
        ledger.createTask(c);
        c = _config(4, 3, 1, 0, false);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "minUpdates exceeds maxUpdates"));
        ledger.createTask(c);
        c = _config(1, 3, 0, 0, false);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "quorum is zero"));
        ledger.createTask(c);
    }

    function test_only_the_owner_admits_and_never_twice() public {
        uint256 t = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotTaskOwner.selector, t, outsider));
        vm.prank(outsider);
        ledger.addContributor(t, outsider);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAdded.selector, t, alice));
        vm.prank(owner);
        ledger.addContributor(t, alice);
        assertEq(ledger.getTask(t).validatorCount, 3, "validators");
        assertEq(ledger.getTask(t).contributorCount, 3, "contributors");
    }

    // ------------------------------------------------------------------ direct submissions

    function test_submitUpdate_chains_the_record_hash_and_numbers_updates_per_task() public {
        uint256 t = _closedTask();
        uint256 a = _submit(alice, t, 0);
        uint256 b = _submit(bob, t, 0);
        assertEq(a, (t << 32) | 1, "first id");
        assertEq(b, (t << 32) | 2, "second id");
        address[] memory who = new address[](2);
        (who[0], who[1]) = (alice, bob);
        ITrainingLedger.RoundView memory r = ledger.getRound(t, 0);
        assertEq(bytes32(r.recordHash), bytes32(_recordsOf(t, 0, who)), "record hash");
        assertEq(r.updateCount, 2, "count");
        assertEq(
            bytes32(
                ledger.recordStep(_seed(t, 0), alice, _content(alice, 0), _cidDigest(alice, 0), _root(alice, 0), 100)
            ),
            bytes32(_step(_seed(t, 0), alice, 0, 100)),
            "recordStep view"
        );
        assertTrue(ledger.hasSubmitted(t, 0, alice), "alice flagged");
        assertFalse(ledger.hasSubmitted(t, 0, carol), "carol not");
    }

    function test_each_refusal_names_its_cause() public {
        uint256 t = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotContributor.selector, t, dave));
        _submit(dave, t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, t, uint64(1), uint64(0)));
        _submit(alice, t, 1);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingLedger.TooManySamples.selector, t, MAX_SAMPLES + 1, MAX_SAMPLES)
        );
        _submitClaiming(alice, t, 0, MAX_SAMPLES + 1);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroSamples.selector, t, alice));
        _submitClaiming(alice, t, 0, 0);
        _submit(alice, t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, t, uint64(0), alice));
        _submit(alice, t, 0);
        _submit(bob, t, 0);
        _submit(carol, t, 0);
        // a fourth admitted contributor finds the round full
        vm.prank(owner);
        ledger.addContributor(t, dave);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundFull.selector, t, uint64(0), uint32(3)));
        _submit(dave, t, 0);
    }

    function test_an_open_task_admits_and_numbers_a_first_time_contributor() public {
        uint256 t = _createTask(_config(1, 10, 1, 0, true));
        assertFalse(ledger.isContributor(t, dave), "not yet");
        _submit(dave, t, 0);
        assertTrue(ledger.isContributor(t, dave), "admitted by its update");
        assertEq(ledger.getTask(t).contributorCount, 1, "numbered");
    }

    function test_submitUpdateFor_takes_65_and_64_byte_signatures() public {
        uint256 t = _closedTask();
        _relayFor(ALICE_KEY, t, 0);
        (bytes32 r, bytes32 vs) = _compact(BOB_KEY, t, 0, 100, FAR);
        vm.prank(outsider);
        ledger.submitUpdateFor(
            t, 0, _content(bob, 0), _cidDigest(bob, 0), _root(bob, 0), 100, bob, FAR, abi.encodePacked(r, vs)
        );
        assertEq(ledger.getRound(t, 0).updateCount, 2, "both recorded");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, t, uint64(0), alice));
        _relayFor(ALICE_KEY, t, 0); // a signature works once
    }

    function test_a_forged_signature_is_refused() public {
        uint256 t = _closedTask();
        bytes memory sig = _signature(BOB_KEY, t, 0, 100, FAR);
        (bytes32 bc, bytes32 bd, bytes32 br) = (_content(bob, 0), _cidDigest(bob, 0), _root(bob, 0));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, alice, bob));
        ledger.submitUpdateFor(t, 0, bc, bd, br, 100, alice, FAR, sig);
    }

    function test_an_expired_signature_is_refused() public {
        uint256 t = _closedTask();
        uint64 past = uint64(block.timestamp - 1);
        bytes memory sig = _signature(ALICE_KEY, t, 0, 100, past);
        (bytes32 c, bytes32 d, bytes32 rt) = (_content(alice, 0), _cidDigest(alice, 0), _root(alice, 0));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.Expired.selector, uint256(past), block.timestamp));
        ledger.submitUpdateFor(t, 0, c, d, rt, 100, alice, past, sig);
    }

    function test_hashUpdate_is_the_EIP712_digest_computed_independently() public {
        uint256 t = _closedTask();
        assertEq(
            ledger.hashUpdate(t, 0, _content(alice, 0), _cidDigest(alice, 0), _root(alice, 0), 100, FAR),
            _typedHash(t, 0, alice, 100, FAR),
            "typed hash"
        );
    }

    // ------------------------------------------------------------------ batches

    function test_a_batch_records_good_entries_and_skips_each_bad_one() public {
        uint256 t = _closedTask();
        _submit(carol, t, 0); // carol's batch entry is then a duplicate
        bytes memory entries = bytes.concat(
            _entry(ALICE_KEY, t, 0, 100, FAR),
            _entry(DAVE_KEY, t, 0, 100, FAR), // not admitted
            _entry(CAROL_KEY, t, 0, 100, FAR), // already landed
            _entry(BOB_KEY, t, 0, 100, FAR)
        );
        vm.prank(outsider);
        (uint256 first, uint256 recorded) = ledger.submitBatch(t, 0, entries);
        assertEq(recorded, 2, "alice and bob");
        assertEq(first, (t << 32) | 2, "after carol's");
        address[] memory who = new address[](3);
        (who[0], who[1], who[2]) = (carol, alice, bob);
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(_recordsOf(t, 0, who)), "chained in order");
    }

    function test_a_batch_skips_expired_and_out_of_range_entries_but_reverts_only_for_its_own_faults() public {
        uint256 t = _closedTask();
        bytes memory entries = bytes.concat(
            _entry(ALICE_KEY, t, 0, 100, uint64(block.timestamp - 1)), // expired
            _entry(BOB_KEY, t, 0, MAX_SAMPLES + 1, FAR), // too many samples
            _entry(CAROL_KEY, t, 0, 100, FAR)
        );
        (, uint256 recorded) = ledger.submitBatch(t, 0, entries);
        assertEq(recorded, 1, "carol only");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadBatch.selector, uint256(175)));
        ledger.submitBatch(t, 0, new bytes(175));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, t, uint64(5), uint64(0)));
        ledger.submitBatch(t, 5, entries);
    }

    function test_a_tampered_entry_recovers_another_signer_and_is_skipped() public {
        uint256 t = _closedTask();
        bytes memory e = _entry(ALICE_KEY, t, 0, 100, FAR);
        e[0] = bytes1(uint8(e[0]) ^ 1); // another contentHash: the signature recovers a stranger
        (, uint256 recorded) = ledger.submitBatch(t, 0, e);
        assertEq(recorded, 0, "skipped");
        assertEq(ledger.getRound(t, 0).updateCount, 0, "nothing recorded");
    }

    /// @dev Any mix of good and bad entries: exactly the good ones are recorded, in order.
    function testFuzz_batch_records_exactly_the_good_entries(uint8 badMask) public {
        uint256 t = _createTask(_config(1, 10, 1, 0, false));
        uint256[4] memory keys = [ALICE_KEY, BOB_KEY, CAROL_KEY, DAVE_KEY];
        vm.startPrank(owner);
        for (uint256 i; i < 4; ++i) {
            ledger.addContributor(t, vm.addr(keys[i]));
        }
        vm.stopPrank();
        bytes memory entries;
        bytes28 h = _seed(t, 0);
        uint256 good;
        for (uint256 i; i < 4; ++i) {
            bool bad = (badMask >> i) & 1 == 1;
            entries = bytes.concat(entries, _entry(keys[i], t, 0, bad ? 0 : 100, FAR));
            if (!bad) {
                h = _step(h, vm.addr(keys[i]), 0, 100);
                ++good;
            }
        }
        (, uint256 recorded) = ledger.submitBatch(t, 0, entries);
        assertEq(recorded, good, "recorded");
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(h), "record hash");
    }

    // ------------------------------------------------------------------ sealing and attesting

    function test_sealing_needs_readiness_and_closes_the_round() public {
        uint256 t = _createTask(_config(2, 3, 1, 0, false));
        _admit(t);
        _submit(alice, t, 0);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingLedger.RoundNotReady.selector, t, uint64(0), uint32(1), uint32(2), uint256(0)
            )
        );
        vm.prank(val1);
        ledger.sealRound(t, 0);
        _submit(bob, t, 0);
        vm.prank(val1);
        ledger.sealRound(t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, t, uint64(0)));
        _submit(carol, t, 0);
        ITrainingLedger.RoundView memory r = ledger.getRound(t, 0);
        assertTrue(r.state == ITrainingLedger.RoundState.Sealed, "sealed");
        assertEq(r.sealedAt, block.timestamp, "sealed now");
        assertEq(r.attemptEndsAt, block.timestamp + WINDOW, "attempt 0 ends");
    }

    function test_an_attestation_must_name_the_sealed_records() public {
        uint256 t = _closedTask();
        _submit(alice, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "x");
        res.updateCount = 2;
        vm.expectRevert();
        _attest(val1, t, 0, res);
        res = _resultNow(t, 0, "x");
        bytes28 sealedHash = res.recordHash;
        res.recordHash = _seed(t, 0);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingLedger.RecordsMismatch.selector, t, uint64(0), sealedHash, uint32(1), _seed(t, 0), uint32(1)
            )
        );
        _attest(val1, t, 0, res);
    }

    function test_two_matching_attestations_finalise_and_open_the_next_round() public {
        uint256 t = _closedTask();
        _submit(alice, t, 0);
        _submit(bob, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "ok");
        _attest(val1, t, 0, res);
        assertEq(ledger.attestationCount(t, 0, ledger.resultDigest(t, 0, res)), 1, "one");
        assertTrue(ledger.hasAttested(t, 0, val1), "val1 attested");
        bytes32 digest = ledger.resultDigest(t, 0, res);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAttested.selector, t, uint64(0), val1, uint32(0)));
        _attest(val1, t, 0, res);
        vm.prank(val2);
        ledger.confirmRound(t, 0, digest);
        assertEq(ledger.currentRound(t), 1, "next round");
        assertEq(ledger.roundDigest(t, 0), digest, "digest kept");
        assertEq(ledger.getTask(t).lastFinalDigest, digest, "task view");
        assertTrue(ledger.getRound(t, 0).state == ITrainingLedger.RoundState.Final, "final");
        // the next round's records start from its own seed, and alice may submit again
        _submit(alice, t, 1);
        address[] memory who = new address[](1);
        who[0] = alice;
        assertEq(bytes32(ledger.getRound(t, 1).recordHash), bytes32(_recordsOf(t, 1, who)), "round 1 hash");
    }

    function test_a_split_quorum_is_attested_again_in_the_next_attempt() public {
        uint256 t = _createTask(_config(1, 3, 2, 0, false));
        vm.startPrank(owner);
        ledger.addContributor(t, alice);
        ledger.addValidator(t, val1);
        ledger.addValidator(t, val2);
        vm.stopPrank();
        _submit(alice, t, 0);
        _attest(val1, t, 0, _resultNow(t, 0, "one"));
        _attest(val2, t, 0, _resultNow(t, 0, "other")); // 1 + 1: no quorum, stuck in v1
        assertEq(ledger.currentRound(t), 0, "not final");
        ITrainingLedger.RoundResult memory one = _resultNow(t, 0, "one");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAttested.selector, t, uint64(0), val2, uint32(0)));
        _attest(val2, t, 0, one);
        vm.warp(block.timestamp + WINDOW);
        assertEq(ledger.getRound(t, 0).attempt, 1, "attempt 1");
        assertFalse(ledger.hasAttested(t, 0, val1), "a fresh attempt");
        ITrainingLedger.RoundResult memory agreed = _resultNow(t, 0, "one");
        _attest(val1, t, 0, agreed);
        _attest(val2, t, 0, agreed);
        assertEq(ledger.currentRound(t), 1, "final in attempt 1");
        assertEq(ledger.roundDigest(t, 0), ledger.resultDigest(t, 0, agreed), "the agreed digest");
    }

    function test_confirming_an_unproposed_result_and_outsiders_are_refused() public {
        uint256 t = _closedTask();
        _submit(alice, t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundNotSealed.selector, t, uint64(0)));
        vm.prank(val1);
        ledger.confirmRound(t, 0, bytes32(uint256(1)));
        vm.prank(val1);
        ledger.sealRound(t, 0);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingLedger.UnknownResult.selector, t, uint64(0), bytes32(uint256(1)), uint32(0))
        );
        vm.prank(val1);
        ledger.confirmRound(t, 0, bytes32(uint256(1)));
        ITrainingLedger.RoundResult memory x = _resultNow(t, 0, "x");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, t, outsider));
        _attest(outsider, t, 0, x);
    }

    function test_every_validator_can_propose_its_own_result_in_one_attempt() public {
        uint256 t = _closedTask(); // three validators, quorum 2: three different results fit
        _submit(alice, t, 0);
        _attest(val1, t, 0, _resultNow(t, 0, "a"));
        _attest(val2, t, 0, _resultNow(t, 0, "b"));
        _attest(val3, t, 0, _resultNow(t, 0, "c"));
        assertEq(ledger.currentRound(t), 0, "no quorum");
    }

    function test_quorum_one_seals_and_finalises_in_one_attestation() public {
        uint256 t = _createTask(_config(1, 3, 1, 0, false));
        _admit(t);
        _submit(alice, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "q1");
        _attest(val1, t, 0, res);
        assertEq(ledger.currentRound(t), 1, "final");
    }

    function test_verifyVerdict_checks_the_result_against_the_stored_digest() public {
        uint256 t = _createTask(_config(1, 3, 1, 0, false));
        _admit(t);
        _submit(alice, t, 0);
        bytes32 leaf = ledger.verdictLeaf((t << 32) | 1, alice, _content(alice, 0), 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "v");
        res.verdictRoot = leaf; // one leaf: the root is the leaf
        _attest(val1, t, 0, res);
        bytes32[] memory none = new bytes32[](0);
        assertTrue(ledger.verifyVerdict(t, 0, res, leaf, none), "proved");
        res.aggregateHash = bytes32(0);
        assertFalse(ledger.verifyVerdict(t, 0, res, leaf, none), "not the attested result");
    }

    function test_a_round_with_a_deadline_can_be_sealed_empty_after_it() public {
        uint256 t = _createTask(_config(2, 3, 1, 100, false));
        _admit(t);
        vm.warp(block.timestamp + 101);
        ITrainingLedger.RoundResult memory res = _result(_seed(t, 0), 0, "empty");
        _attest(val1, t, 0, res);
        assertEq(ledger.currentRound(t), 1, "final");
    }

    function test_only_validators_publish_encryption_keys() public {
        uint256 t = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, t, alice));
        vm.prank(alice);
        ledger.setEncryptionKey(t, bytes32(uint256(7)));
        vm.prank(val1);
        ledger.setEncryptionKey(t, bytes32(uint256(7)));
    }
}

/// @notice Record hashes of batches recomputed by hand (a single-entry batch once hashed a
/// contentHash corrupted by its own record's write past the buffer: found by the invariant).
contract BatchRecordsTest is LedgerFixture {
    function test_a_one_entry_batch_chains_its_own_fields() public {
        uint256 t = _createTask(_config(1, 6, 2, 0, false));
        _admit(t);
        _submit(alice, t, 0);
        ledger.submitBatch(t, 0, _entry(CAROL_KEY, t, 0, 12, FAR));
        bytes28 h = _step(_seed(t, 0), alice, 0, 100);
        h = bytes28(
            keccak256(abi.encode(h, carol, _content(carol, 0), _cidDigest(carol, 0), _root(carol, 0), uint64(12)))
        );
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(h), "one entry");
    }

    function test_a_two_entry_batch_chains_both_in_order() public {
        uint256 t = _createTask(_config(1, 6, 2, 0, false));
        _admit(t);
        bytes memory entries = bytes.concat(_entry(BOB_KEY, t, 0, 7, FAR), _entry(CAROL_KEY, t, 0, 9, FAR));
        ledger.submitBatch(t, 0, entries);
        bytes28 h = _seed(t, 0);
        h = bytes28(keccak256(abi.encode(h, bob, _content(bob, 0), _cidDigest(bob, 0), _root(bob, 0), uint64(7))));
        h = bytes28(
            keccak256(abi.encode(h, carol, _content(carol, 0), _cidDigest(carol, 0), _root(carol, 0), uint64(9)))
        );
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(h), "two");
    }
}
