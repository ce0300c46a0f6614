// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LedgerFixture} from "./utils/LedgerFixture.sol";
import {Vm} from "./utils/Vm.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";

/// @notice Tasks and roles: every config rule, the owner's admissions, validator limits, keys.
contract TasksTest is LedgerFixture {
    function _refuses(ITrainingLedger.TaskConfig memory c, string memory reason) internal {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, reason));
        ledger.createTask(c);
    }

    function test_createTask_refuses_each_invalid_config() public {
        ITrainingLedger.TaskConfig memory c = _config(1, 3, 1, 0, false);
        c.modelHash = bytes32(0);
        _refuses(c, "modelHash is zero");
        _refuses(_config(1, 0, 1, 0, false), "maxUpdates is zero");
        _refuses(_config(0, 3, 1, 0, false), "minUpdates is zero");
        _refuses(_config(4, 3, 1, 0, false), "minUpdates exceeds maxUpdates");
        _refuses(_config(1, 3, 0, 0, false), "quorum is zero");
        _refuses(_config(1, 3, 1, uint64(1) << 32, false), "roundDuration exceeds 2**32 - 1");
        c = _config(1, 3, 1, 0, false);
        c.maxSamples = 0;
        _refuses(c, "maxSamples is zero");
        c.maxSamples = uint64(1) << 32;
        _refuses(c, "maxSamples exceeds 2**32 - 1");
        c = _config(1, 3, 1, 0, false);
        c.attestWindow = 0;
        _refuses(c, "attestWindow is zero");
        c.attestWindow = uint64(1) << 32;
        _refuses(c, "attestWindow exceeds 2**32 - 1");
        assertEq(ledger.taskCount(), 0, "no task");
    }

    function test_createTask_takes_the_largest_values_and_opens_round_0() public {
        ITrainingLedger.TaskConfig memory c = _config(type(uint32).max, type(uint32).max, 255, type(uint32).max, true);
        c.maxSamples = type(uint32).max;
        c.attestWindow = type(uint32).max;
        vm.expectEmit(true, true, false, true, address(ledger));
        emit ITrainingLedger.TaskCreated(
            1,
            owner,
            MODEL_HASH,
            MODEL_CID,
            SPEC_CID,
            type(uint32).max,
            type(uint32).max,
            255,
            type(uint32).max,
            true,
            type(uint32).max,
            type(uint32).max
        );
        uint256 t = _createTask(c);
        assertEq(t, 1, "ids start at 1");
        assertEq(ledger.taskCount(), 1, "count");
        ITrainingLedger.TaskView memory v = ledger.getTask(t);
        assertEq(v.owner, owner, "owner");
        assertEq(v.modelHash, MODEL_HASH, "model");
        assertEq(v.modelCid, MODEL_CID, "model cid");
        assertEq(v.specCid, SPEC_CID, "spec cid");
        assertEq(v.minUpdates, type(uint32).max, "min");
        assertEq(v.maxUpdates, type(uint32).max, "max");
        assertEq(v.quorum, 255, "quorum");
        assertEq(v.roundDuration, type(uint32).max, "duration");
        assertTrue(v.open, "open");
        assertEq(v.maxSamples, type(uint32).max, "samples");
        assertEq(v.attestWindow, type(uint32).max, "window");
        assertEq(v.currentRound, 0, "round 0");
        assertEq(v.roundStart, block.timestamp, "opened now");
        assertEq(v.lastFinalDigest, bytes32(0), "no final round yet");
        assertEq(v.updates + v.updateCount + v.contributorCount + v.validatorCount, 0, "empty");
        assertFalse(v.isSealed, "open round");
        assertEq(_createTask(c), 2, "the next id");
    }

    function test_unknown_tasks_are_named() public {
        bytes memory unknown = abi.encodeWithSelector(ITrainingLedger.UnknownTask.selector, uint256(7));
        vm.expectRevert(unknown);
        ledger.getTask(7);
        vm.expectRevert(unknown);
        ledger.currentRound(7);
        vm.expectRevert(unknown);
        ledger.getRound(7, 0);
        vm.expectRevert(unknown);
        vm.prank(owner);
        ledger.addContributor(7, alice);
        vm.expectRevert(unknown);
        vm.prank(owner);
        ledger.addValidator(7, val1);
        vm.expectRevert(unknown);
        _submit(alice, 7, 0);
        vm.expectRevert(unknown);
        ledger.submitBatch(7, 0, _entry(ALICE_KEY, 7, 0, 100, FAR));
        vm.expectRevert(unknown);
        vm.prank(val1);
        ledger.sealRound(7, 0);
        vm.expectRevert(unknown);
        _attest(val1, 7, 0, _result(_seed(7, 0), 0, "x"));
        vm.expectRevert(unknown);
        vm.prank(val1);
        ledger.confirmRound(7, 0, bytes32(uint256(1)));
        assertEq(ledger.roundDigest(7, 0), bytes32(0), "no digest");
    }

    function test_only_the_owner_admits_each_role_once_and_never_the_zero_address() public {
        uint256 t = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotTaskOwner.selector, t, outsider));
        vm.prank(outsider);
        ledger.addContributor(t, outsider);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotTaskOwner.selector, t, outsider));
        vm.prank(outsider);
        ledger.addValidator(t, outsider);
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAdded.selector, t, alice));
        ledger.addContributor(t, alice);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAdded.selector, t, val1));
        ledger.addValidator(t, val1);
        vm.expectRevert(ITrainingLedger.ZeroAddress.selector);
        ledger.addContributor(t, address(0));
        vm.expectRevert(ITrainingLedger.ZeroAddress.selector);
        ledger.addValidator(t, address(0));
        // one account may hold both roles
        vm.expectEmit(true, true, false, true, address(ledger));
        emit ITrainingLedger.ValidatorAdded(t, alice, 3);
        ledger.addValidator(t, alice);
        vm.expectEmit(true, true, false, true, address(ledger));
        emit ITrainingLedger.ContributorAdded(t, val1, 3);
        ledger.addContributor(t, val1);
        vm.stopPrank();
        assertTrue(ledger.isContributor(t, alice) && ledger.isValidator(t, alice), "alice: both");
        assertTrue(ledger.isContributor(t, val1) && ledger.isValidator(t, val1), "val1: both");
        assertFalse(ledger.isContributor(t, dave) || ledger.isValidator(t, dave), "dave: none");
        assertEq(ledger.getTask(t).validatorCount, 4, "validators");
        assertEq(ledger.getTask(t).contributorCount, 4, "contributors");
    }

    function test_a_task_holds_at_most_255_validators() public {
        uint256 t = _createTask(_config(1, 3, 1, 0, false));
        vm.startPrank(owner);
        for (uint256 i = 1; i <= 255; ++i) {
            ledger.addValidator(t, address(uint160(0x10000 + i)));
        }
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.TooManyMembers.selector, t, uint256(255)));
        ledger.addValidator(t, address(0x20000));
        vm.stopPrank();
        assertEq(ledger.getTask(t).validatorCount, 255, "full");
    }

    function test_only_validators_publish_encryption_keys() public {
        uint256 t = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, t, alice));
        vm.prank(alice);
        ledger.setEncryptionKey(t, bytes32(uint256(7)));
        vm.expectEmit(true, true, false, true, address(ledger));
        emit ITrainingLedger.EncryptionKeySet(t, val1, bytes32(uint256(7)));
        vm.prank(val1);
        ledger.setEncryptionKey(t, bytes32(uint256(7)));
    }

    function test_domain_and_type_hash() public view {
        assertEq(ledger.DOMAIN_SEPARATOR(), _domainSeparator(), "domain");
        assertEq(ledger.UPDATE_TYPEHASH(), UPDATE_TYPEHASH, "type hash");
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = ledger.eip712Domain();
        assertEq(name, "TrainingLedger", "name");
        assertEq(version, "2", "version");
        assertEq(chainId, block.chainid, "chain");
        assertEq(verifying, address(ledger), "contract");
    }
}

/// @notice Single submissions (`submitUpdate`, `submitUpdateFor`): records, ids, every refusal.
contract SubmitTest is LedgerFixture {
    function test_submitUpdate_chains_the_record_hash_and_numbers_updates_per_task() public {
        uint256 t = _closedTask();
        uint256 other = _closedTask();
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.UpdateSubmitted(
            t, 0, alice, (t << 32) | 1, _content(alice, 0), _cidDigest(alice, 0), _root(alice, 0), 100
        );
        uint256 a = _submit(alice, t, 0);
        uint256 b = _submitClaiming(bob, t, 0, 7);
        assertEq(a, (t << 32) | 1, "first id");
        assertEq(b, (t << 32) | 2, "second id");
        assertEq(_submit(alice, other, 0), (other << 32) | 1, "ids count per task");
        bytes28 h = _step(_step(_seed(t, 0), alice, 0, 100), bob, 0, 7);
        ITrainingLedger.RoundView memory r = ledger.getRound(t, 0);
        assertEq(bytes32(r.recordHash), bytes32(h), "record hash recomputed here");
        assertEq(r.updateCount, 2, "count");
        assertEq(
            bytes32(
                ledger.recordStep(_seed(t, 0), alice, _content(alice, 0), _cidDigest(alice, 0), _root(alice, 0), 100)
            ),
            bytes32(_step(_seed(t, 0), alice, 0, 100)),
            "recordStep view"
        );
        assertEq(bytes32(ledger.recordSeed(t, 3)), bytes32(_seed(t, 3)), "recordSeed view");
        assertTrue(ledger.hasSubmitted(t, 0, alice), "alice flagged");
        assertFalse(ledger.hasSubmitted(t, 0, carol), "carol not");
        assertFalse(ledger.hasSubmitted(t, 0, dave), "dave is no contributor");
        assertEq(ledger.getTask(t).updates, 2, "task's updates");
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
        _submitClaiming(alice, t, 0, MAX_SAMPLES); // the bound itself is allowed
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, t, uint64(0), alice));
        _submit(alice, t, 0);
        _submit(bob, t, 0);
        _submit(carol, t, 0);
        // a fourth admitted contributor finds the round full
        vm.prank(owner);
        ledger.addContributor(t, dave);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundFull.selector, t, uint64(0), uint32(3)));
        _submit(dave, t, 0);
        vm.prank(val1);
        ledger.sealRound(t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, t, uint64(0)));
        _submit(dave, t, 0);
    }

    function test_the_2_32nd_update_of_a_task_is_refused() public {
        uint256 t = _closedTask();
        _forgeSeq(t, type(uint32).max - 1, type(uint32).max - 2); // one update left, the round has room
        uint256 id = _submit(alice, t, 0);
        assertEq(id, (t << 32) | type(uint32).max, "the last id");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.TaskExhausted.selector, t));
        _submit(bob, t, 0);
    }

    function test_an_open_task_admits_and_numbers_a_first_time_contributor() public {
        uint256 t = _createTask(_config(1, 10, 1, 0, true));
        vm.prank(owner);
        ledger.addContributor(t, alice); // index 0
        assertFalse(ledger.isContributor(t, dave), "not yet");
        vm.recordLogs();
        _submit(dave, t, 0);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs[0].topics[0], ITrainingLedger.ContributorAdded.selector, "admitted first");
        assertEq(logs[0].topics[2], bytes32(uint256(uint160(dave))), "dave");
        assertEq(abi.decode(logs[0].data, (uint32)), 1, "index 1");
        assertEq(logs[1].topics[0], ITrainingLedger.UpdateSubmitted.selector, "then recorded");
        assertTrue(ledger.isContributor(t, dave), "admitted by its update");
        assertTrue(ledger.hasSubmitted(t, 0, dave), "flagged");
        assertEq(ledger.getTask(t).contributorCount, 2, "numbered");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, t, uint64(0), dave));
        _submit(dave, t, 0);
        // refusals before admission admit no one
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroSamples.selector, t, carol));
        _submitClaiming(carol, t, 0, 0);
        assertFalse(ledger.isContributor(t, carol), "not admitted by a refused update");
    }

    function test_flags_of_contributors_in_another_word_and_of_the_last_round_do_not_count() public {
        uint256 t = _createTask(_config(1, 400, 1, 0, false));
        vm.startPrank(owner);
        for (uint256 i; i < 230; ++i) {
            ledger.addContributor(t, address(uint160(0x50000 + i)));
        }
        ledger.addContributor(t, alice); // index 230: word 1, bit 6
        ledger.addValidator(t, val1);
        vm.stopPrank();
        address first = address(uint160(0x50000)); // index 0: word 0, bit 0
        address sameBit = address(uint160(0x50000 + 224)); // index 224: word 1, bit 0
        _submit(first, t, 0);
        assertFalse(ledger.hasSubmitted(t, 0, sameBit), "another word");
        _submit(sameBit, t, 0);
        _submit(alice, t, 0);
        _attest(val1, t, 0, _resultNow(t, 0, "r0"));
        assertFalse(ledger.hasSubmitted(t, 1, first), "round 1 starts empty");
        _submit(alice, t, 1);
        _submit(first, t, 1);
        assertTrue(ledger.hasSubmitted(t, 1, alice) && ledger.hasSubmitted(t, 1, first), "flagged again");
        assertFalse(ledger.hasSubmitted(t, 1, sameBit), "a flag of round 0 is gone");
    }

    function test_submitUpdateFor_takes_65_and_64_byte_signatures() public {
        uint256 t = _closedTask();
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.UpdateSubmitted(
            t, 0, alice, (t << 32) | 1, _content(alice, 0), _cidDigest(alice, 0), _root(alice, 0), 100
        );
        _relayFor(ALICE_KEY, t, 0);
        (bytes32 r, bytes32 vs) = _compact(BOB_KEY, t, 0, 100, FAR);
        vm.prank(outsider);
        ledger.submitUpdateFor(
            t, 0, _content(bob, 0), _cidDigest(bob, 0), _root(bob, 0), 100, bob, FAR, abi.encodePacked(r, vs)
        );
        address[] memory who = new address[](2);
        (who[0], who[1]) = (alice, bob);
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(_recordsOf(t, 0, who)), "signers recorded");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, t, uint64(0), alice));
        _relayFor(ALICE_KEY, t, 0); // a signature works once
    }

    function test_a_signature_by_another_key_is_refused_with_its_signer() public {
        uint256 t = _closedTask();
        bytes memory sig = _signature(BOB_KEY, t, 0, 100, FAR);
        (bytes32 bc, bytes32 bd, bytes32 br) = (_content(bob, 0), _cidDigest(bob, 0), _root(bob, 0));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, alice, bob));
        ledger.submitUpdateFor(t, 0, bc, bd, br, 100, alice, FAR, sig);
    }

    /// @dev Relay alice's fixture update for round 0 (100 samples) with `sig`.
    function _relayAlice(uint256 t, uint64 deadline, bytes memory sig) internal {
        (bytes32 c, bytes32 d, bytes32 rt) = (_content(alice, 0), _cidDigest(alice, 0), _root(alice, 0));
        ledger.submitUpdateFor(t, 0, c, d, rt, 100, alice, deadline, sig);
    }

    function test_malformed_and_high_s_signatures_recover_no_one() public {
        uint256 t = _closedTask();
        bytes memory bad = abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, alice, address(0));
        vm.expectRevert(bad);
        _relayAlice(t, FAR, new bytes(63));
        vm.expectRevert(bad);
        _relayAlice(t, FAR, new bytes(66));
        vm.expectRevert(bad);
        _relayAlice(t, FAR, new bytes(65));
        bytes memory sig = _signature(ALICE_KEY, t, 0, 100, FAR);
        bytes32 r;
        bytes32 s;
        assembly {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
        }
        uint8 flipped = uint8(sig[64]) == 27 ? 28 : 27;
        bytes32 highS = bytes32(SECP256K1_N - uint256(s));
        assertEq(
            ecrecover(_typedHash(t, 0, alice, 100, FAR), flipped, r, highS), alice, "the twin is valid to ecrecover"
        );
        vm.expectRevert(bad);
        _relayAlice(t, FAR, abi.encodePacked(r, highS, flipped));
        // in compact form s has 255 bits: any s above n / 2 that fits is refused, though
        // ecrecover gives an address for it
        bytes32 high = bytes32(HALF_ORDER + 1);
        assertTrue(ecrecover(_typedHash(t, 0, alice, 100, FAR), 27, r, high) != address(0), "ecrecover takes it");
        vm.expectRevert(bad);
        _relayAlice(t, FAR, abi.encodePacked(r, high));
        _relayAlice(t, FAR, sig);
        assertTrue(ledger.hasSubmitted(t, 0, alice), "the low-s original works");
    }

    function test_an_expired_signature_is_refused_and_the_deadline_itself_is_not_expired() public {
        uint256 t = _closedTask();
        uint64 past = uint64(block.timestamp - 1);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.Expired.selector, uint256(past), block.timestamp));
        _relayAlice(t, past, _signature(ALICE_KEY, t, 0, 100, past));
        uint64 nowTs = uint64(block.timestamp);
        _relayAlice(t, nowTs, _signature(ALICE_KEY, t, 0, 100, nowTs));
        assertTrue(ledger.hasSubmitted(t, 0, alice), "valid until its deadline");
    }

    function test_a_relayed_update_obeys_the_rules_of_a_direct_one() public {
        uint256 t = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotContributor.selector, t, dave));
        _relayFor(DAVE_KEY, t, 0);
        bytes memory sig = _signature(ALICE_KEY, t, 0, 0, FAR);
        (bytes32 c, bytes32 d, bytes32 rt) = (_content(alice, 0), _cidDigest(alice, 0), _root(alice, 0));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroSamples.selector, t, alice));
        ledger.submitUpdateFor(t, 0, c, d, rt, 0, alice, FAR, sig);
    }

    function test_hashUpdate_is_the_EIP712_digest_computed_independently() public {
        uint256 t = _closedTask();
        assertEq(
            ledger.hashUpdate(t, 0, _content(alice, 0), _cidDigest(alice, 0), _root(alice, 0), 100, FAR),
            _typedHash(t, 0, alice, 100, FAR),
            "typed hash"
        );
    }
}

/// @notice Relayed batches: packing, each skip reason, batch-level faults, order, open tasks.
contract BatchTest is LedgerFixture {
    function _batch(uint256 t, bytes memory entries)
        internal
        returns (uint256 first, uint256 recorded, Vm.Log[] memory logs)
    {
        vm.recordLogs();
        vm.prank(outsider);
        (first, recorded) = ledger.submitBatch(t, ledger.currentRound(t), entries);
        logs = vm.getRecordedLogs();
    }

    function _expectSkip(Skip memory s, uint256 entry, address signer, bytes4 reason, string memory what)
        internal
        pure
    {
        assertEq(s.entry, entry, string.concat(what, ": entry"));
        assertEq(s.signer, signer, string.concat(what, ": signer"));
        assertEq(bytes32(s.reason), bytes32(reason), string.concat(what, ": reason"));
    }

    /// @dev `logs` hold one `UpdatesRelayed(t, round 0, first, records)` and no `UpdateSubmitted`.
    function _expectRelayed(Vm.Log[] memory logs, uint256 t, uint256 first, bytes memory records) internal pure {
        (bool found, uint256 firstId, bytes memory got) = _relayedIn(logs);
        assertTrue(found, "UpdatesRelayed");
        assertEq(_count(logs, ITrainingLedger.UpdatesRelayed.selector), 1, "one event for the batch");
        assertEq(_count(logs, ITrainingLedger.UpdateSubmitted.selector), 0, "no per-update event");
        assertEq(firstId, first, "its first id");
        assertEq(got, records, "packed records");
        assertEq(logs[logs.length - 1].topics[1], bytes32(t), "task topic");
        assertEq(logs[logs.length - 1].topics[2], bytes32(0), "round topic");
    }

    function test_a_batch_records_good_entries_in_one_event_and_skips_each_bad_one() public {
        uint256 t = _closedTask();
        _submit(carol, t, 0); // carol's batch entry is then a duplicate
        bytes memory entries = bytes.concat(
            _entry(ALICE_KEY, t, 0, 100, FAR),
            _entry(DAVE_KEY, t, 0, 100, FAR), // not admitted
            _entry(CAROL_KEY, t, 0, 100, FAR), // already landed
            _entry(BOB_KEY, t, 0, 50, FAR)
        );
        (uint256 first, uint256 recorded, Vm.Log[] memory logs) = _batch(t, entries);
        assertEq(recorded, 2, "alice and bob");
        assertEq(first, (t << 32) | 2, "after carol's");
        Skip[] memory skips = _skipsIn(logs);
        assertEq(skips.length, 2, "two skipped");
        _expectSkip(skips[0], 1, dave, ITrainingLedger.NotContributor.selector, "dave");
        _expectSkip(skips[1], 2, carol, ITrainingLedger.DuplicateSubmission.selector, "carol");
        _expectRelayed(logs, t, first, bytes.concat(_packed(alice, 0, 100), _packed(bob, 0, 50)));
        bytes28 h = _step(_step(_step(_seed(t, 0), carol, 0, 100), alice, 0, 100), bob, 0, 50);
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(h), "chained in order");
        assertTrue(ledger.hasSubmitted(t, 0, bob), "bob flagged");
    }

    function test_each_skip_reason_is_the_error_a_single_submission_gives() public {
        uint256 t = _createTask(_config(1, 4, 1, 0, false));
        _admit(t);
        vm.prank(owner);
        ledger.addContributor(t, dave);
        bytes memory tampered = _entry(CAROL_KEY, t, 0, 100, FAR);
        tampered[0] = bytes1(uint8(tampered[0]) ^ 1); // another contentHash: recovers a stranger
        bytes memory zeroR = _entry(CAROL_KEY, t, 0, 100, FAR);
        for (uint256 i = 112; i < 144; ++i) {
            zeroR[i] = 0; // r = 0: ecrecover fails
        }
        bytes memory entries = bytes.concat(
            _entry(ALICE_KEY, t, 0, 100, uint64(block.timestamp - 1)), // 0 expired
            tampered, // 1 bad signature (recovers someone else)
            zeroR // 2 bad signature (recovers no one)
        );
        entries = bytes.concat(
            entries,
            _entry(BOB_KEY, t, 0, MAX_SAMPLES + 1, FAR), // 3 too many samples
            _entry(BOB_KEY, t, 0, 0, FAR), // 4 zero samples
            _entry(uint256(0xD15C0), t, 0, 100, FAR) // 5 not a contributor
        );
        entries = bytes.concat(
            entries,
            _entry(ALICE_KEY, t, 0, 100, FAR), // 6 recorded
            _entry(ALICE_KEY, t, 0, 100, FAR), // 7 duplicate within the batch
            _entry(BOB_KEY, t, 0, 100, FAR) // 8 recorded
        );
        entries = bytes.concat(
            entries,
            _entry(CAROL_KEY, t, 0, 100, FAR), // 9 recorded
            _entry(DAVE_KEY, t, 0, 100, FAR), // 10 recorded: the round is full now
            _entry(uint256(0xD15C0), t, 0, 100, FAR) // 11 round full (checked before admission)
        );
        (, uint256 recorded, Vm.Log[] memory logs) = _batch(t, entries);
        assertEq(recorded, 4, "four recorded");
        Skip[] memory s = _skipsIn(logs);
        assertEq(s.length, 8, "eight skipped");
        _expectSkip(s[0], 0, alice, ITrainingLedger.Expired.selector, "expired");
        assertTrue(s[1].signer != carol && s[1].signer != address(0), "tampered: a stranger");
        _expectSkip(s[1], 1, s[1].signer, ITrainingLedger.NotContributor.selector, "tampered");
        _expectSkip(s[2], 2, address(0), ITrainingLedger.BadSignature.selector, "r = 0");
        _expectSkip(s[3], 3, bob, ITrainingLedger.TooManySamples.selector, "samples");
        _expectSkip(s[4], 4, bob, ITrainingLedger.ZeroSamples.selector, "zero");
        _expectSkip(s[5], 5, vm.addr(0xD15C0), ITrainingLedger.NotContributor.selector, "stranger");
        _expectSkip(s[6], 7, alice, ITrainingLedger.DuplicateSubmission.selector, "twice in one batch");
        _expectSkip(s[7], 11, vm.addr(0xD15C0), ITrainingLedger.RoundFull.selector, "full");
    }

    function test_a_high_s_entry_is_skipped_as_a_bad_signature() public {
        uint256 t = _closedTask();
        bytes memory e = _entry(ALICE_KEY, t, 0, 100, FAR);
        bytes32 r;
        assembly {
            r := mload(add(e, 144)) // bytes 112..143 of the entry
        }
        // s = n / 2 + 1 (v = 27): ecrecover gives an address, the low-s rule none
        bytes32 digest = _typedHash(t, 0, alice, 100, FAR);
        assertTrue(ecrecover(digest, 27, r, bytes32(HALF_ORDER + 1)) != address(0), "ecrecover takes it");
        uint256 high = HALF_ORDER + 1;
        assembly {
            mstore(add(e, 176), high)
        }
        (, uint256 recorded, Vm.Log[] memory logs) = _batch(t, e);
        assertEq(recorded, 0, "skipped");
        _expectSkip(_skipsIn(logs)[0], 0, address(0), ITrainingLedger.BadSignature.selector, "high s");
        // the same s minus one, n / 2, is low: it recovers (someone) and is judged on
        high = HALF_ORDER;
        assembly {
            mstore(add(e, 176), high)
        }
        (, recorded, logs) = _batch(t, e);
        assertTrue(_skipsIn(logs)[0].signer != address(0), "n / 2 recovers");
    }

    function test_the_2_32nd_update_in_a_batch_is_skipped() public {
        uint256 t = _closedTask();
        _forgeSeq(t, type(uint32).max - 1, type(uint32).max - 2);
        bytes memory entries = bytes.concat(_entry(ALICE_KEY, t, 0, 100, FAR), _entry(BOB_KEY, t, 0, 100, FAR));
        (uint256 first, uint256 recorded, Vm.Log[] memory logs) = _batch(t, entries);
        assertEq(recorded, 1, "the last one");
        assertEq(first, (t << 32) | type(uint32).max, "its id");
        _expectSkip(_skipsIn(logs)[0], 1, bob, ITrainingLedger.TaskExhausted.selector, "exhausted");
    }

    function test_a_batch_reverts_only_for_its_own_faults() public {
        uint256 t = _closedTask();
        bytes memory one = _entry(ALICE_KEY, t, 0, 100, FAR);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadBatch.selector, uint256(0)));
        ledger.submitBatch(t, 0, "");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadBatch.selector, uint256(175)));
        ledger.submitBatch(t, 0, new bytes(175));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadBatch.selector, uint256(177)));
        ledger.submitBatch(t, 0, bytes.concat(one, hex"00"));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, t, uint64(5), uint64(0)));
        ledger.submitBatch(t, 5, one);
        _submit(bob, t, 0);
        vm.prank(val1);
        ledger.sealRound(t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, t, uint64(0)));
        ledger.submitBatch(t, 0, one);
    }

    function test_a_batch_of_only_bad_entries_records_nothing_and_emits_no_records() public {
        uint256 t = _closedTask();
        bytes28 before = ledger.getRound(t, 0).recordHash;
        bytes memory entries = bytes.concat(_entry(DAVE_KEY, t, 0, 100, FAR), _entry(ALICE_KEY, t, 0, 0, FAR));
        (uint256 first, uint256 recorded, Vm.Log[] memory logs) = _batch(t, entries);
        assertEq(first, 0, "no first id");
        assertEq(recorded, 0, "none");
        (bool found,,) = _relayedIn(logs);
        assertFalse(found, "no UpdatesRelayed");
        assertEq(_skipsIn(logs).length, 2, "both skipped");
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(before), "unchanged");
        assertEq(ledger.getTask(t).updates, 0, "no update");
    }

    function test_entries_in_any_order_across_dedup_words_are_each_checked_once() public {
        uint256 t = _createTask(_config(1, 1000, 1, 0, false));
        uint256[] memory keys = new uint256[](460);
        vm.startPrank(owner);
        for (uint256 i; i < 460; ++i) {
            keys[i] = 0xA0000 + i;
            ledger.addContributor(t, vm.addr(keys[i]));
        }
        vm.stopPrank();
        // words 0, 2, 0, 1, 2 again, then the first entry's signer a second time
        uint256[6] memory order = [uint256(3), 450, 100, 300, 449, 3];
        bytes memory entries;
        bytes28 h = _seed(t, 0);
        for (uint256 k; k < 6; ++k) {
            entries = bytes.concat(entries, _entry(keys[order[k]], t, 0, 100, FAR));
            if (k < 5) h = _step(h, vm.addr(keys[order[k]]), 0, 100);
        }
        (, uint256 recorded, Vm.Log[] memory logs) = _batch(t, entries);
        assertEq(recorded, 5, "five distinct");
        _expectSkip(_skipsIn(logs)[0], 5, vm.addr(keys[3]), ITrainingLedger.DuplicateSubmission.selector, "again");
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(h), "record hash");
        for (uint256 k; k < 5; ++k) {
            assertTrue(ledger.hasSubmitted(t, 0, vm.addr(keys[order[k]])), "flagged");
            vm.expectRevert(
                abi.encodeWithSelector(
                    ITrainingLedger.DuplicateSubmission.selector, t, uint64(0), vm.addr(keys[order[k]])
                )
            );
            _submit(vm.addr(keys[order[k]]), t, 0);
        }
        assertFalse(ledger.hasSubmitted(t, 0, vm.addr(keys[4])), "a neighbour is not");
        _submit(vm.addr(keys[4]), t, 0);
    }

    function test_an_open_task_admits_newcomers_of_a_batch_in_order() public {
        uint256 t = _createTask(_config(1, 10, 1, 0, true));
        bytes memory entries = bytes.concat(
            _entry(BOB_KEY, t, 0, 100, FAR), _entry(ALICE_KEY, t, 0, 0, FAR), _entry(ALICE_KEY, t, 0, 100, FAR)
        );
        (, uint256 recorded, Vm.Log[] memory logs) = _batch(t, entries);
        assertEq(recorded, 2, "bob and alice");
        assertEq(_count(logs, ITrainingLedger.ContributorAdded.selector), 2, "two admitted");
        uint256 k;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] != ITrainingLedger.ContributorAdded.selector) continue;
            assertEq(logs[i].topics[2], bytes32(uint256(uint160(k == 0 ? bob : alice))), "in entry order");
            assertEq(abi.decode(logs[i].data, (uint32)), k, "numbered");
            ++k;
        }
        assertEq(ledger.getTask(t).contributorCount, 2, "count");
        assertTrue(ledger.isContributor(t, alice) && ledger.isContributor(t, bob), "both");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, t, uint64(0), alice));
        _submit(alice, t, 0);
    }

    function test_a_batch_mixes_with_direct_updates_in_the_record_hash() public {
        uint256 t = _closedTask();
        ledger.submitBatch(t, 0, _entry(BOB_KEY, t, 0, 9, FAR));
        _submit(alice, t, 0);
        ledger.submitBatch(t, 0, _entry(CAROL_KEY, t, 0, 11, FAR));
        bytes28 h = _step(_step(_step(_seed(t, 0), bob, 0, 9), alice, 0, 100), carol, 0, 11);
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(h), "one chain");
        assertEq(ledger.getRound(t, 0).updateCount, 3, "three");
    }

    /// @dev Any mix of good and bad entries, in any order: exactly the good ones are recorded,
    /// in order, and every bad one is skipped with its reason.
    function testFuzz_batch_records_exactly_the_good_entries(uint16 kinds, uint256 orderSeed) public {
        uint256 t = _createTask(_config(1, 10, 1, 0, false));
        vm.startPrank(owner);
        for (uint256 i; i < 4; ++i) {
            ledger.addContributor(t, vm.addr(_fuzzKey(i))); // _fuzzKey(4) never
        }
        vm.stopPrank();
        (bytes memory entries, bytes28 h, uint256 good) = _fuzzBatch(t, kinds, orderSeed);
        (uint256 first, uint256 recorded, Vm.Log[] memory logs) = _batch(t, entries);
        assertEq(recorded, good, "recorded");
        assertEq(_skipsIn(logs).length, 5 - good, "skipped");
        assertEq(first, good == 0 ? 0 : (t << 32) | 1, "first id");
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(good == 0 ? _seed(t, 0) : h), "record hash");
    }

    function _fuzzKey(uint256 i) internal pure returns (uint256) {
        return [ALICE_KEY, BOB_KEY, CAROL_KEY, DAVE_KEY, uint256(0xE1E1)][i];
    }

    /// @dev Five entries in a rotated order; entry j's kind (3 bits of `kinds`): 0..3 and 7
    /// good, 4 zero samples, 5 expired, 6 too many samples. The expected record hash and count.
    function _fuzzBatch(uint256 t, uint16 kinds, uint256 orderSeed)
        internal
        view
        returns (bytes memory entries, bytes28 h, uint256 good)
    {
        h = _seed(t, 0);
        for (uint256 j; j < 5; ++j) {
            uint256 i = (j + orderSeed % 5) % 5;
            uint256 kind = (uint256(kinds) >> (3 * j)) & 7;
            uint64 n = kind == 4 ? 0 : kind == 6 ? MAX_SAMPLES + 1 : uint64(1 + j);
            uint64 deadline = kind == 5 ? uint64(block.timestamp - 1) : FAR;
            entries = bytes.concat(entries, _entry(_fuzzKey(i), t, 0, n, deadline));
            if (i != 4 && (kind < 4 || kind == 7)) {
                h = _step(h, vm.addr(_fuzzKey(i)), 0, n);
                ++good;
            }
        }
    }
}

/// @notice Sealing, attestations bound to the sealed records, attempts, the result table,
/// finalisation and the views of each round state.
contract AttestTest is LedgerFixture {
    function _seal(uint256 t, uint64 round) internal {
        vm.prank(val1);
        ledger.sealRound(t, round);
    }

    function _confirm(address v, uint256 t, uint64 round, ITrainingLedger.RoundResult memory res) internal {
        bytes32 digest = ledger.resultDigest(t, round, res);
        vm.prank(v);
        ledger.confirmRound(t, round, digest);
    }

    function test_sealing_needs_a_validator_and_readiness_and_closes_the_round() public {
        uint256 t = _createTask(_config(2, 3, 1, 0, false));
        _admit(t);
        _submit(alice, t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, t, alice));
        vm.prank(alice);
        ledger.sealRound(t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, t, uint64(1), uint64(0)));
        _seal(t, 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingLedger.RoundNotReady.selector, t, uint64(0), uint32(1), uint32(2), uint256(0)
            )
        );
        _seal(t, 0);
        _submit(bob, t, 0);
        bytes28 h = _step(_step(_seed(t, 0), alice, 0, 100), bob, 0, 100);
        vm.expectEmit(true, true, false, true, address(ledger));
        emit ITrainingLedger.RoundSealed(t, 0, 2, h);
        _seal(t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, t, uint64(0)));
        _seal(t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, t, uint64(0)));
        _submit(carol, t, 0);
        ITrainingLedger.RoundView memory r = ledger.getRound(t, 0);
        assertTrue(r.state == ITrainingLedger.RoundState.Sealed, "sealed");
        assertEq(r.sealedAt, block.timestamp, "sealed now");
        assertEq(r.attempt, 0, "attempt 0");
        assertEq(r.attemptEndsAt, block.timestamp + WINDOW, "attempt 0 ends");
        assertEq(r.updateCount, 2, "count");
        assertEq(bytes32(r.recordHash), bytes32(h), "hash");
        assertEq(r.startedAt + r.deadline, 0, "open-round fields read 0");
        ITrainingLedger.TaskView memory v = ledger.getTask(t);
        assertTrue(v.isSealed, "task view: sealed");
        assertEq(v.roundStart, 0, "task view: roundStart reads 0 once sealed");
    }

    function test_a_round_with_a_deadline_seals_after_it_or_when_full() public {
        uint256 t = _createTask(_config(1, 2, 1, 100, false));
        _admit(t);
        uint256 start = block.timestamp;
        _submit(alice, t, 0);
        ITrainingLedger.RoundView memory r = ledger.getRound(t, 0);
        assertEq(r.startedAt, start, "started");
        assertEq(r.deadline, start + 100, "deadline");
        vm.warp(start + 100); // the deadline itself has not passed
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingLedger.RoundNotReady.selector, t, uint64(0), uint32(1), uint32(2), start + 100
            )
        );
        _seal(t, 0);
        _submit(bob, t, 0); // late updates are recorded until the seal; now the round is full
        _seal(t, 0);
        assertEq(ledger.getRound(t, 0).updateCount, 2, "full");
    }

    function test_an_empty_round_with_a_deadline_seals_to_its_seed_after_it() public {
        uint256 t = _createTask(_config(2, 3, 1, 100, false));
        _admit(t);
        vm.warp(block.timestamp + 101);
        ITrainingLedger.RoundResult memory res = _result(_seed(t, 0), 0, "empty");
        _attest(val1, t, 0, res);
        assertEq(ledger.currentRound(t), 1, "final");
        assertEq(ledger.roundDigest(t, 0), ledger.resultDigest(t, 0, res), "the empty round's result");
    }

    function test_an_attestation_must_name_the_sealed_records() public {
        uint256 t = _closedTask();
        _submit(alice, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "x");
        bytes28 sealedHash = res.recordHash;
        res.updateCount = 2;
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingLedger.RecordsMismatch.selector, t, uint64(0), sealedHash, uint32(1), sealedHash, uint32(2)
            )
        );
        _attest(val1, t, 0, res);
        res = _resultNow(t, 0, "x");
        res.recordHash = _seed(t, 0);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingLedger.RecordsMismatch.selector, t, uint64(0), sealedHash, uint32(1), _seed(t, 0), uint32(1)
            )
        );
        _attest(val1, t, 0, res);
        // the mismatch reverted the implicit seal too: updates still land
        assertFalse(ledger.getTask(t).isSealed, "still open");
        _submit(bob, t, 0);
        res = _resultNow(t, 0, "x");
        _attest(val1, t, 0, res);
        assertEq(ledger.attestationCount(t, 0, ledger.resultDigest(t, 0, res)), 1, "counted");
    }

    function test_attesting_needs_a_validator_the_current_round_and_readiness() public {
        uint256 t = _createTask(_config(2, 3, 2, 0, false));
        _admit(t);
        _submit(alice, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "x");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, t, outsider));
        _attest(outsider, t, 0, res);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, t, uint64(1), uint64(0)));
        _attest(val1, t, 1, res);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingLedger.RoundNotReady.selector, t, uint64(0), uint32(1), uint32(2), uint256(0)
            )
        );
        _attest(val1, t, 0, res);
    }

    function test_two_matching_attestations_finalise_and_open_the_next_round() public {
        uint256 t = _closedTask();
        _submit(alice, t, 0);
        _submit(bob, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "ok");
        bytes32 digest = ledger.resultDigest(t, 0, res);
        assertEq(digest, keccak256(abi.encode(t, uint64(0), res)), "resultDigest = keccak256(abi.encode(...))");
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.ResultProposed(t, 0, digest, 0, res);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.RoundAttested(t, 0, val1, digest, 0, 1);
        _attest(val1, t, 0, res);
        assertEq(ledger.attestationCount(t, 0, digest), 1, "one");
        assertEq(ledger.attestationCount(t, 0, bytes32(uint256(5))), 0, "none for another digest");
        assertTrue(ledger.hasAttested(t, 0, val1), "val1 attested");
        assertFalse(ledger.hasAttested(t, 0, val2), "val2 not yet");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAttested.selector, t, uint64(0), val1, uint32(0)));
        _attest(val1, t, 0, res);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAttested.selector, t, uint64(0), val1, uint32(0)));
        vm.prank(val1);
        ledger.confirmRound(t, 0, digest);
        uint256 finalisedAt = block.timestamp + 5;
        vm.warp(finalisedAt);
        vm.recordLogs();
        _confirm(val2, t, 0, res);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(_count(logs, ITrainingLedger.ResultProposed.selector), 0, "a confirmation proposes nothing");
        assertEq(logs[0].topics[0], ITrainingLedger.RoundAttested.selector, "attested");
        (bytes32 d, uint32 attempt, uint8 count) = abi.decode(logs[0].data, (bytes32, uint32, uint8));
        assertEq(d, digest, "digest");
        assertEq(attempt + count, 2, "attempt 0, count 2");
        assertEq(logs[1].topics[0], ITrainingLedger.RoundFinalized.selector, "finalised");
        assertEq(ledger.currentRound(t), 1, "next round");
        assertEq(ledger.roundDigest(t, 0), digest, "digest kept");
        ITrainingLedger.TaskView memory v = ledger.getTask(t);
        assertEq(v.lastFinalDigest, digest, "task view");
        assertEq(v.roundStart, finalisedAt, "round 1 opened at the finalisation");
        assertEq(v.updateCount, 0, "round 1 is empty");
        assertEq(v.updates, 2, "the task's updates");
        ITrainingLedger.RoundView memory r0 = ledger.getRound(t, 0);
        assertTrue(r0.state == ITrainingLedger.RoundState.Final, "final");
        assertEq(r0.finalDigest, digest, "final digest");
        assertEq(r0.updateCount + r0.sealedAt + r0.startedAt, 0, "a past round keeps only its digest");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownRound.selector, t, uint64(2), uint64(1)));
        ledger.getRound(t, 2);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, t, uint64(0), uint64(1)));
        ledger.hasSubmitted(t, 0, alice);
        // the next round's records start from its own seed, ids continue, alice may submit again
        assertEq(bytes32(ledger.getRound(t, 1).recordHash), bytes32(_seed(t, 1)), "round 1 seed");
        assertEq(_submit(alice, t, 1), (t << 32) | 3, "id 3");
        assertEq(bytes32(ledger.getRound(t, 1).recordHash), bytes32(_step(_seed(t, 1), alice, 1, 100)), "round 1");
        assertFalse(ledger.hasAttested(t, 1, val1), "a new round");
    }

    function test_a_split_quorum_is_attested_again_in_the_next_attempt() public {
        uint256 t = _createTask(_config(1, 3, 2, 0, false));
        vm.startPrank(owner);
        ledger.addContributor(t, alice);
        ledger.addValidator(t, val1);
        ledger.addValidator(t, val2);
        vm.stopPrank();
        _submit(alice, t, 0);
        uint256 sealedAt = block.timestamp;
        ITrainingLedger.RoundResult memory one = _resultNow(t, 0, "one");
        ITrainingLedger.RoundResult memory other = _resultNow(t, 0, "other");
        _attest(val1, t, 0, one);
        _attest(val2, t, 0, other); // 1 + 1: no quorum in attempt 0
        assertEq(ledger.currentRound(t), 0, "not final");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAttested.selector, t, uint64(0), val2, uint32(0)));
        _attest(val2, t, 0, one);
        vm.warp(sealedAt + WINDOW - 1);
        assertEq(ledger.getRound(t, 0).attempt, 0, "still attempt 0");
        vm.warp(sealedAt + WINDOW);
        ITrainingLedger.RoundView memory r = ledger.getRound(t, 0);
        assertEq(r.attempt, 1, "attempt 1");
        assertEq(r.attemptEndsAt, sealedAt + 2 * WINDOW, "ends one window later");
        assertFalse(ledger.hasAttested(t, 0, val1), "a fresh attempt");
        assertEq(ledger.attestationCount(t, 0, ledger.resultDigest(t, 0, one)), 0, "attempt 0's counts are gone");
        // a result of attempt 0 is not proposed in attempt 1: confirming it is refused
        bytes32 d = ledger.resultDigest(t, 0, one);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownResult.selector, t, uint64(0), d, uint32(1)));
        vm.prank(val1);
        ledger.confirmRound(t, 0, d);
        _attest(val2, t, 0, one);
        vm.expectEmit(true, true, false, true, address(ledger));
        emit ITrainingLedger.RoundFinalized(t, 0, d, 1);
        _confirm(val1, t, 0, one);
        assertEq(ledger.currentRound(t), 1, "final in attempt 1");
        assertEq(ledger.roundDigest(t, 0), d, "the agreed digest");
    }

    function test_confirming_needs_a_sealed_round_and_a_proposed_result() public {
        uint256 t = _closedTask();
        _submit(alice, t, 0);
        bytes32 d = bytes32(uint256(1));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundNotSealed.selector, t, uint64(0)));
        vm.prank(val1);
        ledger.confirmRound(t, 0, d);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, t, outsider));
        vm.prank(outsider);
        ledger.confirmRound(t, 0, d);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, t, uint64(3), uint64(0)));
        vm.prank(val1);
        ledger.confirmRound(t, 3, d);
        _seal(t, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownResult.selector, t, uint64(0), d, uint32(0)));
        vm.prank(val1);
        ledger.confirmRound(t, 0, d);
        _attest(val1, t, 0, _resultNow(t, 0, "a"));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownResult.selector, t, uint64(0), d, uint32(0)));
        vm.prank(val2);
        ledger.confirmRound(t, 0, d); // another digest than the proposed one
    }

    function test_every_validator_can_propose_its_own_result_in_one_attempt() public {
        uint256 t = _closedTask(); // three validators, quorum 2: three different results fit
        _submit(alice, t, 0);
        _attest(val1, t, 0, _resultNow(t, 0, "a"));
        _attest(val2, t, 0, _resultNow(t, 0, "b"));
        _attest(val3, t, 0, _resultNow(t, 0, "c"));
        assertEq(ledger.currentRound(t), 0, "no quorum");
        assertEq(ledger.attestationCount(t, 0, ledger.resultDigest(t, 0, _resultNow(t, 0, "c"))), 1, "c counted");
    }

    /// @dev With n validators (1..12) each proposing its own result, the table never runs out
    /// (no TooManyResults); then all agreeing in the next attempt finalise it.
    function testFuzz_the_result_table_holds_one_result_per_validator(uint8 n, uint64 salt) public {
        n = uint8(bound(n, 1, 12));
        uint256 t = _createTask(_config(1, 3, n, 0, false));
        vm.startPrank(owner);
        ledger.addContributor(t, alice);
        for (uint256 i; i < n; ++i) {
            ledger.addValidator(t, address(uint160(0x7B00 + i)));
        }
        vm.stopPrank();
        _submit(alice, t, 0);
        if (n > 1) {
            for (uint256 i; i < n; ++i) {
                _attest(address(uint160(0x7B00 + i)), t, 0, _resultNow(t, 0, keccak256(abi.encode(salt, i))));
            }
            for (uint256 i; i < n; ++i) {
                bytes32 d = ledger.resultDigest(t, 0, _resultNow(t, 0, keccak256(abi.encode(salt, i))));
                assertEq(ledger.attestationCount(t, 0, d), 1, "each result counted once");
            }
            vm.warp(block.timestamp + WINDOW);
        }
        ITrainingLedger.RoundResult memory agreed = _resultNow(t, 0, bytes32(uint256(salt)));
        _attest(address(uint160(0x7B00)), t, 0, agreed);
        for (uint256 i = 1; i < n; ++i) {
            _confirm(address(uint160(0x7B00 + i)), t, 0, agreed);
        }
        assertEq(ledger.roundDigest(t, 0), ledger.resultDigest(t, 0, agreed), "final");
    }

    function test_quorum_one_seals_proposes_and_finalises_in_one_attestation() public {
        uint256 t = _createTask(_config(1, 3, 1, 0, false));
        _admit(t);
        _submit(alice, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "q1");
        bytes32 d = ledger.resultDigest(t, 0, res);
        vm.recordLogs();
        _attest(val1, t, 0, res);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 4, "four events");
        assertEq(logs[0].topics[0], ITrainingLedger.RoundSealed.selector, "sealed");
        assertEq(logs[1].topics[0], ITrainingLedger.ResultProposed.selector, "proposed");
        assertEq(logs[2].topics[0], ITrainingLedger.RoundAttested.selector, "attested");
        assertEq(logs[3].topics[0], ITrainingLedger.RoundFinalized.selector, "finalised");
        assertEq(ledger.currentRound(t), 1, "final");
        assertEq(ledger.roundDigest(t, 0), d, "digest");
        // rounds go on: round 1 with bob
        _submit(bob, t, 1);
        _attest(val2, t, 1, _resultNow(t, 1, "q1"));
        assertEq(ledger.currentRound(t), 2, "round 1 final");
    }

    function test_a_validator_added_while_a_round_is_sealed_attests_it() public {
        uint256 t = _closedTask(); // quorum 2 of val1..val3
        _submit(alice, t, 0);
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "x");
        _attest(val1, t, 0, res);
        address val4 = address(0x7A14);
        vm.prank(owner);
        ledger.addValidator(t, val4);
        _attest(val4, t, 0, res); // the probe now runs over four slots
        assertEq(ledger.currentRound(t), 1, "final: val1 and val4 agreed");
    }

    function test_the_last_round_of_a_uint32_cannot_be_finalised() public {
        uint256 t = _createTask(_config(1, 3, 1, 0, false));
        _admit(t);
        uint256 st = uint256(vm.load(address(ledger), _stateSlot(t)));
        vm.store(address(ledger), _stateSlot(t), bytes32(st | type(uint32).max)); // round 2**32 - 1
        uint64 last = type(uint32).max;
        _submit(alice, t, last);
        assertTrue(ledger.hasSubmitted(t, last, alice), "its dedup tag wraps to 0 and still works");
        ITrainingLedger.RoundResult memory res = _resultNow(t, last, "end");
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.TaskExhausted.selector, t));
        _attest(val1, t, last, res);
    }

    function test_verifyVerdict_checks_the_result_against_the_stored_digest() public {
        uint256 t = _createTask(_config(1, 3, 1, 0, false));
        _admit(t);
        uint256 a = _submit(alice, t, 0);
        uint256 b = _submit(bob, t, 0);
        bytes32 la = ledger.verdictLeaf(a, alice, _content(alice, 0), 0);
        bytes32 lb = ledger.verdictLeaf(b, bob, _content(bob, 0), 7);
        assertEq(la, keccak256(bytes.concat(keccak256(abi.encode(a, alice, _content(alice, 0), uint8(0))))), "leaf");
        ITrainingLedger.RoundResult memory res = _resultNow(t, 0, "v");
        res.verdictRoot = la < lb ? keccak256(abi.encode(la, lb)) : keccak256(abi.encode(lb, la));
        bytes32[] memory proofA = new bytes32[](1);
        proofA[0] = lb;
        bytes32[] memory proofB = new bytes32[](1);
        proofB[0] = la;
        assertFalse(ledger.verifyVerdict(t, 0, res, la, proofA), "not final yet");
        _attest(val1, t, 0, res);
        assertTrue(ledger.verifyVerdict(t, 0, res, la, proofA), "alice's verdict");
        assertTrue(ledger.verifyVerdict(t, 0, res, lb, proofB), "bob's verdict");
        assertFalse(ledger.verifyVerdict(t, 0, res, la, proofB), "a wrong proof");
        assertFalse(ledger.verifyVerdict(t, 1, res, la, proofA), "another round");
        assertFalse(ledger.verifyVerdict(t + 1, 0, res, la, proofA), "another task");
        res.aggregateHash = bytes32(0);
        assertFalse(ledger.verifyVerdict(t, 0, res, la, proofA), "not the attested result");
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

    function testFuzz_any_fields_chain_as_recomputed_here(bytes32 c, bytes32 d, bytes32 r, uint64 n, bool relayed)
        public
    {
        uint256 t = _createTask(_config(1, 6, 2, 0, false));
        _admit(t);
        n = uint64(bound(n, 1, MAX_SAMPLES));
        if (relayed) {
            ledger.submitBatch(t, 0, _entryOf(ALICE_KEY, t, 0, c, d, r, n, FAR));
        } else {
            vm.prank(alice);
            ledger.submitUpdate(t, 0, c, d, r, n);
        }
        bytes28 h = bytes28(keccak256(abi.encode(bytes28(keccak256(abi.encode(t, uint64(0)))), alice, c, d, r, n)));
        assertEq(bytes32(ledger.getRound(t, 0).recordHash), bytes32(h), "record hash");
    }
}
