// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LedgerFixture} from "./utils/LedgerFixture.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";
import {TrainingLedger} from "../TrainingLedger.sol";

/// @notice One test per rule of TrainingLedger: tasks and roles, the three submission paths,
/// the round life cycle, attestations and the views.
contract TrainingLedgerTest is LedgerFixture {
    // ================================================================== tasks

    function test_task_ids_start_at_one_and_grow() public {
        assertEq(ledger.taskCount(), 0, "no tasks yet");
        assertEq(_createTask(_config(1, 1, 1, 0, false)), 1, "first id");
        assertEq(_createTask(_config(1, 1, 1, 0, false)), 2, "second id");
        assertEq(ledger.taskCount(), 2, "count");
    }

    function test_createTask_emits_TaskCreated() public {
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.TaskCreated(1, owner, MODEL_HASH, MODEL_CID, SPEC_CID, 2, 5, 3, 60, true, MAX_SAMPLES);
        _createTask(_config(2, 5, 3, 60, true));
    }

    function test_getTask_returns_config_and_round_zero() public {
        uint256 taskId = _createTask(_config(2, 5, 3, 60, true));
        ITrainingLedger.TaskView memory t = ledger.getTask(taskId);
        assertEq(t.owner, owner, "owner");
        assertEq(t.modelHash, MODEL_HASH, "modelHash");
        assertEq(t.globalModelHash, MODEL_HASH, "global model starts as the initial model");
        assertEq(t.modelCid, MODEL_CID, "modelCid");
        assertEq(t.specCid, SPEC_CID, "specCid");
        assertEq(t.minUpdates, 2, "min");
        assertEq(t.maxUpdates, 5, "max");
        assertEq(t.quorum, 3, "quorum");
        assertEq(t.roundDuration, 60, "duration");
        assertTrue(t.open, "open");
        assertEq(t.maxSamples, MAX_SAMPLES, "maxSamples");
        assertEq(t.currentRound, 0, "round numbering starts at 0");
        assertEq(t.roundStart, block.timestamp, "round 0 opens at creation");
        assertEq(t.updateCount, 0, "no updates");
        assertFalse(t.isSealed, "not sealed");
        assertEq(ledger.currentRound(taskId), 0, "currentRound");
    }

    function test_createTask_rejects_zero_model_hash() public {
        ITrainingLedger.TaskConfig memory cfg = _config(1, 1, 1, 0, false);
        cfg.modelHash = bytes32(0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "modelHash is zero"));
        ledger.createTask(cfg);
    }

    function test_createTask_rejects_zero_maxUpdates() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "maxUpdates is zero"));
        ledger.createTask(_config(0, 0, 1, 0, false));
    }

    function test_createTask_rejects_zero_minUpdates() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "minUpdates is zero"));
        ledger.createTask(_config(0, 3, 1, 0, false));
    }

    function test_createTask_rejects_min_above_max() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "minUpdates exceeds maxUpdates"));
        ledger.createTask(_config(4, 3, 1, 0, false));
    }

    function test_createTask_rejects_zero_quorum() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "quorum is zero"));
        ledger.createTask(_config(1, 3, 0, 0, false));
    }

    function test_createTask_rejects_roundDuration_beyond_32_bits() public {
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "roundDuration exceeds 2**32 - 1")
        );
        ledger.createTask(_config(1, 3, 1, uint64(type(uint32).max) + 1, false));
    }

    function test_createTask_rejects_zero_maxSamples() public {
        ITrainingLedger.TaskConfig memory cfg = _config(1, 3, 1, 0, false);
        cfg.maxSamples = 0;
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.InvalidConfig.selector, "maxSamples is zero"));
        ledger.createTask(cfg);
    }

    // ================================================================== roles

    function test_owner_admits_contributors_and_validators() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 0, false));
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.ContributorAdded(taskId, alice);
        vm.prank(owner);
        ledger.addContributor(taskId, alice);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.ValidatorAdded(taskId, val1);
        vm.prank(owner);
        ledger.addValidator(taskId, val1);

        assertTrue(ledger.isContributor(taskId, alice), "alice contributes");
        assertFalse(ledger.isValidator(taskId, alice), "alice does not validate");
        assertTrue(ledger.isValidator(taskId, val1), "val1 validates");
        assertFalse(ledger.isContributor(taskId, val1), "val1 does not contribute");
    }

    function test_one_account_may_hold_both_roles() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 0, false));
        vm.startPrank(owner);
        ledger.addContributor(taskId, alice);
        ledger.addValidator(taskId, alice);
        vm.stopPrank();
        assertTrue(ledger.isContributor(taskId, alice) && ledger.isValidator(taskId, alice), "both roles");
    }

    function test_addContributor_by_non_owner_reverts() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 0, false));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotTaskOwner.selector, taskId, outsider));
        vm.prank(outsider);
        ledger.addContributor(taskId, alice);
    }

    function test_addValidator_by_non_owner_reverts() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 0, false));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotTaskOwner.selector, taskId, alice));
        vm.prank(alice);
        ledger.addValidator(taskId, alice);
    }

    function test_adding_to_unknown_task_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownTask.selector, 7));
        vm.prank(owner);
        ledger.addContributor(7, alice);
    }

    function test_adding_twice_reverts() public {
        uint256 taskId = _closedTask();
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAdded.selector, taskId, alice));
        ledger.addContributor(taskId, alice);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAdded.selector, taskId, val1));
        ledger.addValidator(taskId, val1);
        vm.stopPrank();
    }

    function test_adding_zero_address_reverts() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 0, false));
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroAddress.selector));
        ledger.addContributor(taskId, address(0));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroAddress.selector));
        ledger.addValidator(taskId, address(0));
        vm.stopPrank();
    }

    // ================================================================== submitUpdate

    function test_submitUpdate_stores_digest_and_emits() public {
        uint256 taskId = _closedTask();
        bytes32 h = _hash(alice, 0);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.UpdateSubmitted(taskId, 0, alice, 1, h, CID, 1000);
        uint256 id = _submit(alice, taskId, 0);

        assertEq(id, 1, "update ids start at 1");
        assertEq(ledger.lastUpdateId(), 1, "lastUpdateId");
        bytes32 expected = keccak256(abi.encode(taskId, uint64(0), alice, h, keccak256(bytes(CID)), uint64(1000)));
        assertEq(ledger.getUpdate(id), expected, "stored digest");
        assertEq(ledger.updateDigest(taskId, 0, alice, h, CID, 1000), expected, "updateDigest view");
        assertTrue(ledger.hasSubmitted(taskId, 0, alice), "alice submitted");
        assertFalse(ledger.hasSubmitted(taskId, 0, bob), "bob did not");
        assertEq(ledger.getTask(taskId).updateCount, 1, "count");
    }

    function test_update_ids_are_global_across_tasks() public {
        uint256 t1 = _closedTask();
        uint256 t2 = _closedTask();
        assertEq(_submit(alice, t1, 0), 1, "t1 first");
        assertEq(_submit(alice, t2, 0), 2, "t2 continues the global sequence");
        assertEq(_submit(bob, t1, 0), 3, "t1 again");
    }

    function test_submitUpdate_to_unknown_task_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownTask.selector, 42));
        _submit(alice, 42, 0);
    }

    function test_non_contributor_cannot_submit_to_closed_task() public {
        uint256 taskId = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotContributor.selector, taskId, outsider));
        _submit(outsider, taskId, 0);
    }

    function test_validator_is_not_a_contributor() public {
        uint256 taskId = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotContributor.selector, taskId, val1));
        _submit(val1, taskId, 0);
    }

    function test_open_task_accepts_anyone() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 0, true));
        assertEq(_submit(outsider, taskId, 0), 1, "outsider's update recorded");
        assertFalse(ledger.isContributor(taskId, outsider), "but not admitted as contributor");
    }

    function test_submit_to_future_round_reverts() public {
        uint256 taskId = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 1, 0));
        _submit(alice, taskId, 1);
    }

    function test_submit_to_past_round_reverts() public {
        uint256 taskId = _closedTask();
        _finishRound(taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 0, 1));
        _submit(carol, taskId, 0);
    }

    function test_second_update_in_a_round_reverts() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, taskId, 0, alice));
        _submit(alice, taskId, 0);
    }

    function test_contributor_submits_again_in_the_next_round() public {
        uint256 taskId = _closedTask();
        _finishRound(taskId, 0);
        assertEq(_submit(alice, taskId, 1), 3, "round 1 update");
        assertTrue(ledger.hasSubmitted(taskId, 1, alice), "alice in round 1");
    }

    function test_round_takes_at_most_maxUpdates() public {
        uint256 taskId = _createTask(_config(1, 2, 1, 0, true));
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundFull.selector, taskId, 0, 2));
        _submit(carol, taskId, 0);
    }

    function test_sealed_round_takes_no_updates() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        _attest(val1, taskId, 0, keccak256("root"), keccak256("agg"));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, taskId, 0));
        _submit(carol, taskId, 0);
    }

    function test_update_after_deadline_but_before_seal_is_recorded() public {
        uint256 taskId = _createTask(_config(1, 5, 1, 60, true));
        vm.warp(block.timestamp + 61);
        assertEq(_submit(alice, taskId, 0), 1, "late update still recorded (validators mark it LATE)");
    }

    function test_update_may_claim_exactly_maxSamples() public {
        uint256 taskId = _closedTask();
        assertEq(_submitClaiming(alice, taskId, MAX_SAMPLES), 1, "the cap itself is allowed");
    }

    function test_update_claiming_more_than_maxSamples_reverts() public {
        uint256 taskId = _closedTask();
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingLedger.TooManySamples.selector, taskId, MAX_SAMPLES + 1, MAX_SAMPLES)
        );
        _submitClaiming(alice, taskId, MAX_SAMPLES + 1);
    }

    function test_update_claiming_2_pow_64_minus_1_samples_reverts() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 0, true));
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingLedger.TooManySamples.selector, taskId, type(uint64).max, MAX_SAMPLES)
        );
        _submitClaiming(outsider, taskId, type(uint64).max);
    }

    function test_update_claiming_zero_samples_reverts() public {
        uint256 taskId = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroSamples.selector, taskId, alice));
        _submitClaiming(alice, taskId, 0);
    }

    function testFuzz_numSamples_is_recorded_only_within_one_to_maxSamples(uint64 maxSamples, uint64 given) public {
        maxSamples = uint64(bound(maxSamples, 1, type(uint64).max));
        ITrainingLedger.TaskConfig memory cfg = _config(1, 3, 1, 0, true);
        cfg.maxSamples = maxSamples;
        uint256 taskId = _createTask(cfg);
        if (given == 0) {
            vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroSamples.selector, taskId, alice));
        } else if (given > maxSamples) {
            vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.TooManySamples.selector, taskId, given, maxSamples));
        }
        _submitClaiming(alice, taskId, given);
        bool inRange = given != 0 && given <= maxSamples;
        assertEq(ledger.hasSubmitted(taskId, 0, alice), inRange, "recorded exactly when 1 <= given <= maxSamples");
    }

    function test_hasSubmitted_refuses_rounds_other_than_the_current() public {
        uint256 taskId = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 3, 0));
        ledger.hasSubmitted(taskId, 3, alice);
    }

    // ================================================================== submitUpdateFor

    function test_relayed_update_is_recorded_for_the_signer() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signed(ALICE_KEY, taskId, 0, block.timestamp + 1 hours);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.UpdateSubmitted(taskId, 0, alice, 1, u.contentHash, CID, 500);
        vm.prank(outsider);
        uint256 id = _relay(u);
        assertEq(id, 1, "id");
        assertEq(ledger.getUpdate(id), ledger.updateDigest(taskId, 0, alice, u.contentHash, CID, 500), "digest");
        assertTrue(ledger.hasSubmitted(taskId, 0, alice), "recorded for alice, not the relayer");
    }

    function test_relayed_update_claiming_more_than_maxSamples_reverts() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u =
            _signedWith(ALICE_KEY, taskId, 0, block.timestamp + 1 hours, MAX_SAMPLES + 1);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingLedger.TooManySamples.selector, taskId, MAX_SAMPLES + 1, MAX_SAMPLES)
        );
        vm.prank(outsider);
        _relay(u);
    }

    function test_relayed_update_claiming_zero_samples_reverts() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signedWith(ALICE_KEY, taskId, 0, block.timestamp + 1 hours, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.ZeroSamples.selector, taskId, alice));
        vm.prank(outsider);
        _relay(u);
    }

    function test_signature_is_valid_until_its_deadline_inclusive() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signed(ALICE_KEY, taskId, 0, block.timestamp + 10);
        vm.warp(block.timestamp + 10);
        assertEq(_relay(u), 1, "accepted at the deadline");
    }

    function test_expired_signature_reverts() public {
        uint256 taskId = _closedTask();
        uint256 deadline = block.timestamp + 10;
        ITrainingLedger.SignedUpdate memory u = _signed(ALICE_KEY, taskId, 0, deadline);
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.Expired.selector, deadline, deadline + 1));
        _relay(u);
    }

    function test_signature_of_another_account_reverts() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signed(BOB_KEY, taskId, 0, block.timestamp + 1);
        u.contributor = alice; // bob's signature over bob's update, claimed for alice
        bytes32 digest = ledger.hashUpdate(taskId, 0, u.contentHash, CID, 500, alice, u.deadline);
        address recovered = _recover(digest, u.signature);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, alice, recovered));
        _relay(u);
    }

    function test_signed_update_of_non_contributor_reverts() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signed(DAVE_KEY, taskId, 0, block.timestamp + 1);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotContributor.selector, taskId, dave));
        _relay(u);
    }

    function test_replayed_signature_is_rejected() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signed(ALICE_KEY, taskId, 0, block.timestamp + 1 hours);
        _relay(u);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, taskId, 0, alice));
        _relay(u);
    }

    function test_signature_cannot_be_replayed_into_a_later_round() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signed(CAROL_KEY, taskId, 0, block.timestamp + 1 hours);
        _finishRound(taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 0, 1));
        _relay(u);
    }

    function test_malformed_signature_reverts() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate memory u = _signed(ALICE_KEY, taskId, 0, block.timestamp + 1);
        u.signature = hex"1234";
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.BadSignature.selector, alice, address(0)));
        _relay(u);
    }

    // ================================================================== submitUpdatesFor

    function test_batch_records_all_updates_with_consecutive_ids() public {
        uint256 taskId = _closedTask();
        _submit(carol, taskId, 0); // id 1
        ITrainingLedger.SignedUpdate[] memory batch = new ITrainingLedger.SignedUpdate[](2);
        batch[0] = _signed(ALICE_KEY, taskId, 0, block.timestamp + 1 hours);
        batch[1] = _signed(BOB_KEY, taskId, 0, block.timestamp + 1 hours);
        vm.prank(outsider);
        uint256 first = ledger.submitUpdatesFor(batch);
        assertEq(first, 2, "first id of the batch");
        assertEq(ledger.lastUpdateId(), 3, "last id");
        assertEq(
            ledger.getUpdate(3), ledger.updateDigest(taskId, 0, bob, batch[1].contentHash, CID, 500), "bob's digest"
        );
        assertEq(ledger.getTask(taskId).updateCount, 3, "count");
    }

    function test_empty_batch_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.EmptyBatch.selector));
        ledger.submitUpdatesFor(new ITrainingLedger.SignedUpdate[](0));
    }

    function test_batch_is_all_or_nothing() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate[] memory batch = new ITrainingLedger.SignedUpdate[](2);
        batch[0] = _signed(ALICE_KEY, taskId, 0, block.timestamp + 1 hours);
        batch[1] = _signed(ALICE_KEY, taskId, 0, block.timestamp + 1 hours);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.DuplicateSubmission.selector, taskId, 0, alice));
        ledger.submitUpdatesFor(batch);
        assertEq(ledger.lastUpdateId(), 0, "nothing recorded");
    }

    function test_batch_with_one_update_over_maxSamples_records_none() public {
        uint256 taskId = _closedTask();
        ITrainingLedger.SignedUpdate[] memory batch = new ITrainingLedger.SignedUpdate[](2);
        batch[0] = _signed(ALICE_KEY, taskId, 0, block.timestamp + 1 hours);
        batch[1] = _signedWith(BOB_KEY, taskId, 0, block.timestamp + 1 hours, MAX_SAMPLES + 1);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingLedger.TooManySamples.selector, taskId, MAX_SAMPLES + 1, MAX_SAMPLES)
        );
        ledger.submitUpdatesFor(batch);
        assertEq(ledger.lastUpdateId(), 0, "nothing recorded");
    }

    function test_batch_may_span_tasks() public {
        uint256 t1 = _closedTask();
        uint256 t2 = _closedTask();
        ITrainingLedger.SignedUpdate[] memory batch = new ITrainingLedger.SignedUpdate[](2);
        batch[0] = _signed(ALICE_KEY, t1, 0, block.timestamp + 1 hours);
        batch[1] = _signed(ALICE_KEY, t2, 0, block.timestamp + 1 hours);
        assertEq(ledger.submitUpdatesFor(batch), 1, "first id");
        assertTrue(ledger.hasSubmitted(t1, 0, alice) && ledger.hasSubmitted(t2, 0, alice), "both tasks");
    }

    // ================================================================== attestRound

    function test_non_validator_cannot_attest() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, taskId, alice));
        _attest(alice, taskId, 0, bytes32(0), bytes32(0));
    }

    function test_attest_unknown_task_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownTask.selector, 9));
        _attest(val1, 9, 0, bytes32(0), bytes32(0));
    }

    function test_attest_wrong_round_reverts() public {
        uint256 taskId = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 1, 0));
        _attest(val1, taskId, 1, bytes32(0), bytes32(0));
    }

    function test_round_below_minUpdates_is_not_ready() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundNotReady.selector, taskId, 0, 1, 2, 0));
        _attest(val1, taskId, 0, bytes32(0), bytes32(0));
    }

    function test_timed_round_is_not_ready_before_its_deadline() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 60, true));
        vm.prank(owner);
        ledger.addValidator(taskId, val1);
        _submit(alice, taskId, 0);
        uint256 deadline = block.timestamp + 60;
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundNotReady.selector, taskId, 0, 1, 3, deadline));
        _attest(val1, taskId, 0, bytes32(0), bytes32(0));
    }

    function test_timed_round_is_ready_after_its_deadline_even_when_empty() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 60, true));
        vm.prank(owner);
        ledger.addValidator(taskId, val1);
        vm.warp(block.timestamp + 61);
        _attest(val1, taskId, 0, bytes32(0), keccak256("unchanged"));
        assertEq(ledger.currentRound(taskId), 1, "empty round finalised");
    }

    function test_full_timed_round_is_ready_before_its_deadline() public {
        uint256 taskId = _createTask(_config(1, 2, 1, 1 days, true));
        vm.prank(owner);
        ledger.addValidator(taskId, val1);
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        _attest(val1, taskId, 0, keccak256("root"), keccak256("agg"));
        assertEq(ledger.currentRound(taskId), 1, "finalised");
    }

    function test_first_attestation_seals_the_round() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        bytes32 digest = ledger.attestationDigest(keccak256("root"), keccak256("agg"), AGG_CID, VERDICT_CID);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.RoundSealed(taskId, 0, 2);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.RoundAttested(
            taskId, 0, val1, digest, keccak256("root"), keccak256("agg"), AGG_CID, VERDICT_CID
        );
        _attest(val1, taskId, 0, keccak256("root"), keccak256("agg"));

        ITrainingLedger.RoundView memory r = ledger.getRound(taskId, 0);
        assertTrue(r.isSealed, "sealed");
        assertFalse(r.finalized, "not final with one of two attestations");
        assertEq(r.updateCount, 2, "count");
        assertEq(ledger.attestationCount(taskId, 0, digest), 1, "tally");
        assertTrue(ledger.hasAttested(taskId, 0, val1), "val1 attested");
    }

    function test_sealRound_closes_the_round_without_attesting() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.RoundSealed(taskId, 0, 2);
        vm.prank(val1);
        ledger.sealRound(taskId, 0);
        ITrainingLedger.RoundView memory r = ledger.getRound(taskId, 0);
        assertTrue(r.isSealed, "sealed");
        assertFalse(ledger.hasAttested(taskId, 0, val1), "sealing is not attesting");
        _attest(val1, taskId, 0, keccak256("root"), keccak256("agg"));
        assertTrue(ledger.hasAttested(taskId, 0, val1), "attested after the seal");
    }

    function test_sealRound_twice_reverts() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        vm.prank(val1);
        ledger.sealRound(taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, taskId, 0));
        vm.prank(val2);
        ledger.sealRound(taskId, 0);
    }

    function test_sealRound_by_non_validator_reverts() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.NotValidator.selector, taskId, outsider));
        vm.prank(outsider);
        ledger.sealRound(taskId, 0);
    }

    function test_sealRound_before_ready_reverts() public {
        uint256 taskId = _createTask(_config(2, 5, 1, 0, false));
        _admit(taskId);
        _submit(alice, taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundNotReady.selector, taskId, 0, 1, 2, 0));
        vm.prank(val1);
        ledger.sealRound(taskId, 0);
    }

    function test_sealRound_of_another_round_reverts() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 1, 0));
        vm.prank(val1);
        ledger.sealRound(taskId, 1);
    }

    function test_submission_after_the_seal_reverts() public {
        uint256 taskId = _createTask(_config(1, 5, 1, 0, false));
        _admit(taskId);
        _submit(alice, taskId, 0);
        vm.prank(val1);
        ledger.sealRound(taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.RoundAlreadySealed.selector, taskId, 0));
        vm.prank(bob);
        ledger.submitUpdate(taskId, 0, _hash(bob, 0), CID, 10);
    }

    function test_validator_attests_once_per_round() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        _attest(val1, taskId, 0, keccak256("root"), keccak256("agg"));
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.AlreadyAttested.selector, taskId, 0, val1));
        _attest(val1, taskId, 0, keccak256("other root"), keccak256("agg"));
    }

    function test_disagreeing_attestations_do_not_finalise() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        _attest(val1, taskId, 0, keccak256("root"), keccak256("agg"));
        _attest(val2, taskId, 0, keccak256("root"), keccak256("different agg"));
        assertEq(ledger.currentRound(taskId), 0, "still round 0");
        _attest(val3, taskId, 0, keccak256("root"), keccak256("agg"));
        assertEq(ledger.currentRound(taskId), 1, "val1 and val3 agree");
    }

    function test_cids_are_part_of_the_agreement() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        _attest(val1, taskId, 0, keccak256("root"), keccak256("agg"));
        vm.prank(val2);
        ledger.attestRound(taskId, 0, keccak256("root"), keccak256("agg"), "bafkreiother", VERDICT_CID);
        assertEq(ledger.currentRound(taskId), 0, "different aggregate CID is a different result");
    }

    function test_quorum_finalises_the_round_and_opens_the_next() public {
        uint256 taskId = _closedTask();
        _submit(alice, taskId, 0);
        _submit(bob, taskId, 0);
        bytes32 root = keccak256("root");
        bytes32 agg = keccak256("agg");
        _attest(val1, taskId, 0, root, agg);
        vm.warp(block.timestamp + 5);
        vm.expectEmit(true, true, true, true, address(ledger));
        emit ITrainingLedger.RoundFinalized(taskId, 0, agg, AGG_CID, root, VERDICT_CID);
        _attest(val2, taskId, 0, root, agg);

        ITrainingLedger.TaskView memory t = ledger.getTask(taskId);
        assertEq(t.currentRound, 1, "next round open");
        assertEq(t.globalModelHash, agg, "global model is the aggregate");
        assertEq(t.modelHash, MODEL_HASH, "initial model hash kept");
        assertEq(t.updateCount, 0, "fresh round");
        assertFalse(t.isSealed, "fresh round unsealed");
        assertEq(t.roundStart, block.timestamp, "opened now");

        ITrainingLedger.RoundView memory r = ledger.getRound(taskId, 0);
        assertTrue(r.finalized && r.isSealed, "round 0 final");
        assertEq(r.verdictRoot, root, "verdict root kept");
        bytes32 digest = ledger.attestationDigest(root, agg, AGG_CID, VERDICT_CID);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 0, 1));
        ledger.attestationCount(taskId, 0, digest);
    }

    function test_late_attestation_of_a_final_round_reverts() public {
        uint256 taskId = _closedTask();
        _finishRound(taskId, 0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.WrongRound.selector, taskId, 0, 1));
        _attest(val3, taskId, 0, keccak256("root"), keccak256(abi.encode("agg", uint64(0))));
    }

    function test_attestation_digest_formula() public view {
        bytes32 expected = keccak256(
            abi.encode(keccak256("r"), keccak256("a"), keccak256(bytes(AGG_CID)), keccak256(bytes(VERDICT_CID)))
        );
        assertEq(
            ledger.attestationDigest(keccak256("r"), keccak256("a"), AGG_CID, VERDICT_CID), expected, "digest formula"
        );
    }

    // ================================================================== verdicts

    function test_verdict_proof_against_the_attested_root() public {
        uint256 taskId = _closedTask();
        uint256 id1 = _submit(alice, taskId, 0);
        uint256 id2 = _submit(bob, taskId, 0);
        uint256 id3 = _submit(carol, taskId, 0);
        bytes32 l1 = ledger.verdictLeaf(id1, alice, _hash(alice, 0), 0);
        bytes32 l2 = ledger.verdictLeaf(id2, bob, _hash(bob, 0), 7);
        bytes32 l3 = ledger.verdictLeaf(id3, carol, _hash(carol, 0), 8);
        assertEq(
            l1,
            keccak256(bytes.concat(keccak256(abi.encode(id1, alice, _hash(alice, 0), uint8(0))))),
            "leaf formula (OpenZeppelin double hash)"
        );
        // three leaves: pair (l1, l2), carry l3 up unchanged
        bytes32 n12 = _hashPair(l1, l2);
        bytes32 root = _hashPair(n12, l3);

        bytes32[] memory proof = new bytes32[](2);
        proof[0] = l2;
        proof[1] = l3;
        assertFalse(ledger.verifyVerdict(taskId, 0, l1, proof), "not final yet");

        _attest(val1, taskId, 0, root, keccak256("agg"));
        _attest(val2, taskId, 0, root, keccak256("agg"));
        assertTrue(ledger.verifyVerdict(taskId, 0, l1, proof), "alice's verdict proven");
        bytes32[] memory proof3 = new bytes32[](1);
        proof3[0] = n12;
        assertTrue(ledger.verifyVerdict(taskId, 0, l3, proof3), "carol's carried-up leaf proven");
        bytes32 forged = ledger.verdictLeaf(id1, alice, _hash(alice, 0), 7);
        assertFalse(ledger.verifyVerdict(taskId, 0, forged, proof), "another verdict fails");
    }

    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    // ================================================================== views

    function test_views_of_unknown_ids_revert() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownTask.selector, 1));
        ledger.currentRound(1);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownTask.selector, 1));
        ledger.getTask(1);
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownUpdate.selector, 1));
        ledger.getUpdate(1);
        uint256 taskId = _closedTask();
        vm.expectRevert(abi.encodeWithSelector(ITrainingLedger.UnknownRound.selector, taskId, 1, 0));
        ledger.getRound(taskId, 1);
    }

    function test_current_round_view_has_deadline() public {
        uint256 taskId = _createTask(_config(1, 3, 1, 60, true));
        ITrainingLedger.RoundView memory r = ledger.getRound(taskId, 0);
        assertEq(r.startedAt, block.timestamp, "start");
        assertEq(r.deadline, block.timestamp + 60, "deadline");
        assertFalse(r.finalized || r.isSealed, "open");
    }

    function test_eip712_domain() public view {
        (bytes1 fields, string memory name, string memory version, uint256 chainId, address verifying,,) =
            ledger.eip712Domain();
        assertEq(uint256(uint8(fields)), 0x0f, "name, version, chainId, verifyingContract");
        assertEq(name, "TrainingLedger", "name");
        assertEq(version, "1", "version");
        assertEq(chainId, block.chainid, "chain");
        assertEq(verifying, address(ledger), "contract");
        assertEq(ledger.DOMAIN_SEPARATOR(), _domainSeparator(block.chainid, address(ledger)), "separator");
        assertEq(ledger.UPDATE_TYPEHASH(), UPDATE_TYPEHASH, "type hash");
    }

    function test_hashUpdate_is_the_eip712_digest() public view {
        bytes32 expected =
            _typedHash(_domainSeparator(block.chainid, address(ledger)), 3, 4, keccak256("c"), CID, 5, alice, 6);
        assertEq(ledger.hashUpdate(3, 4, keccak256("c"), CID, 5, alice, 6), expected, "EIP-712 digest");
    }

    function _recover(bytes32 digest, bytes memory sig) internal pure returns (address) {
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
}
