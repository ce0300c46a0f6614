// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {CourtFixture} from "./utils/CourtFixture.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";
import {ICourt} from "../ICourt.sol";
import {ExactRules} from "../ExactRules.sol";

contract CourtTest is CourtFixture {
    uint256 internal task;

    /// @dev The four updates of docs/aggregation.md's examples (weights 3, 1, 2, 2), all accepted.
    function _example() internal pure returns (Update[] memory us) {
        us = new Update[](4);
        us[0] = Update(_contributor(0), 3, 0, UNCLIPPED, 30, [int32(10), -7, 3]);
        us[1] = Update(_contributor(1), 1, 0, UNCLIPPED, 10, [int32(4), 5, -3]);
        us[2] = Update(_contributor(2), 2, 0, UNCLIPPED, 20, [int32(1), 1, 2]);
        us[3] = Update(_contributor(3), 2, 0, UNCLIPPED, 20, [int32(-6), 8, 1]);
    }

    /// @dev A round 0 of `us` attested by validators 0 and 1 with `aggregate`.
    function _attested(ICourt.Rule rule, Update[] memory us, int32[DIM] memory aggregate)
        internal
        returns (ITrainingLedger.RoundResult memory result)
    {
        task = _task(us.length < 4 ? 4 : us.length, 3, 2, _terms(rule));
        _submitAll(task, 0, us);
        vm.prank(validators[0]);
        ledger.sealRound(task, 0);
        result = _resultOf(task, 0, 1, us, aggregate);
        _attestAll(task, 0, result, 2);
    }

    function _challenge(ITrainingLedger.RoundResult memory result, uint64 j, int32[DIM] memory aggregate)
        internal
        returns (uint256 id)
    {
        vm.prank(challenger);
        id = court.challenge{value: CHALLENGER_BOND}(task, 0, result, j, _leafOf(aggregate), new bytes32[](0));
    }

    // ------------------------------------------------------------------ bonds

    function test_an_unbonded_validator_cannot_attest() public {
        Update[] memory us = _example();
        task = _task(4, 3, 2, _terms(ICourt.Rule.FedAvg));
        _submitAll(task, 0, us);
        vm.prank(validators[2]);
        court.unbond(task);
        ITrainingLedger.RoundResult memory result = _resultOf(task, 0, 1, us, [int32(3), 0, 2]);
        vm.prank(validators[2]);
        vm.expectRevert(abi.encodeWithSelector(ICourt.NotBonded.selector, task, validators[2]));
        ledger.attestRound(task, 0, result);
    }

    function test_a_bond_is_the_tasks_amount_once_per_validator() public {
        task = _task(4, 1, 1, _terms(ICourt.Rule.FedAvg));
        vm.prank(owner);
        ledger.addValidator(task, address(0x7B01));
        vm.deal(address(0x7B01), 5 ether);
        vm.prank(address(0x7B01));
        vm.expectRevert(abi.encodeWithSelector(ICourt.WrongBond.selector, task, 0.5 ether, BOND));
        court.bond{value: 0.5 ether}(task);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(ICourt.AlreadyBonded.selector, task, validators[0]));
        court.bond{value: BOND}(task);
        vm.deal(address(0x7B02), 5 ether);
        vm.prank(address(0x7B02));
        vm.expectRevert(abi.encodeWithSelector(ICourt.NotValidator.selector, task, address(0x7B02)));
        court.bond{value: BOND}(task);
    }

    function test_withdrawal_waits_for_the_delay_and_for_open_disputes() public {
        int32[DIM] memory wrong = [int32(3), 1, 2];
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, _example(), wrong);
        address v = validators[2]; // did not attest
        vm.prank(v);
        court.unbond(task);
        uint64 at = uint64(block.timestamp) + UNBONDING;
        vm.prank(v);
        vm.expectRevert(abi.encodeWithSelector(ICourt.StillBonded.selector, task, v, at));
        court.withdraw(task);
        _challenge(result, 1, wrong);
        vm.warp(at);
        vm.prank(v);
        vm.expectRevert(abi.encodeWithSelector(ICourt.DisputeOpen.selector, task, 1));
        court.withdraw(task);
        court.expire(1);
        uint256 before = v.balance;
        vm.prank(v);
        court.withdraw(task);
        assertEq(v.balance - before, BOND);
        assertFalse(court.isBonded(task, v));
    }

    // ------------------------------------------------------------------ windows

    function test_an_attested_round_settles_when_its_window_passes() public {
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, _example(), [int32(3), 0, 2]);
        assertEq(ledger.currentRound(task), 1, "the next round opens on attestation");
        (ICourt.RoundStatus status, uint64 ends) = court.roundStatus(task, 0);
        assertEq(uint8(status), uint8(ICourt.RoundStatus.Attested));
        vm.expectRevert(abi.encodeWithSelector(ICourt.Window.selector, task, 0, ends));
        court.settle(task, 0, result);
        vm.warp(ends);
        court.settle(task, 0, result);
        (status,) = court.roundStatus(task, 0);
        assertEq(uint8(status), uint8(ICourt.RoundStatus.Settled));
    }

    function test_a_round_settles_only_after_the_round_it_builds_on() public {
        Update[] memory us = _example();
        ITrainingLedger.RoundResult memory r0 = _attested(ICourt.Rule.FedAvg, us, [int32(3), 0, 2]);
        vm.warp(block.timestamp + 10);
        Update[] memory us1 = new Update[](1);
        us1[0] = Update(contributors[0], 5, 0, UNCLIPPED, 0, [int32(1), 2, 3]);
        _submitAll(task, 1, us1);
        ITrainingLedger.RoundResult memory r1 = _resultOf(task, 1, 5, us1, [int32(1), 2, 3]);
        _attestAll(task, 1, r1, 2);
        vm.warp(block.timestamp + CHALLENGE_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ICourt.ParentNotSettled.selector, task, 1, 0));
        court.settle(task, 1, r1);
        court.settle(task, 0, r0);
        court.settle(task, 1, r1);
    }

    // ------------------------------------------------------------------ fraud proofs

    function test_a_wrong_fedavg_coordinate_is_overturned_and_its_attesters_slashed() public {
        int32[DIM] memory wrong = [int32(3), 1, 2]; // the right aggregate is [3, 0, 2]
        Update[] memory us = _example();
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, us, wrong);
        // a round built on it
        Update[] memory us1 = new Update[](1);
        us1[0] = Update(contributors[0], 5, 0, UNCLIPPED, 0, [int32(1), 2, 3]);
        _submitAll(task, 1, us1);
        _attestAll(task, 1, _resultOf(task, 1, 5, us1, [int32(1), 2, 3]), 2);

        uint256 id = _challenge(result, 1, wrong);
        ICourt.Input[] memory staged = _inputs(task, 1, us);
        vm.prank(challenger);
        court.stage(id, staged);
        uint256 before = challenger.balance;
        vm.expectEmit(true, false, false, true, address(ledger));
        emit ITrainingLedger.RoundsVoided(task, 0, 2, bytes32(0));
        assertTrue(court.resolve(id, ""));
        (ICourt.RoundStatus s0,) = court.roundStatus(task, 0);
        (ICourt.RoundStatus s1,) = court.roundStatus(task, 1);
        assertEq(uint8(s0), uint8(ICourt.RoundStatus.Voided));
        assertEq(uint8(s1), uint8(ICourt.RoundStatus.Voided));
        assertEq(ledger.currentRound(task), 3, "the task resumes in a new round");
        assertEq(ledger.getTask(task).lastFinalDigest, bytes32(0), "on the initial model");
        assertEq(challenger.balance - before, CHALLENGER_BOND + BOND, "bond back + half of two bonds");
        assertEq(court.getBond(task, validators[0]).amount, 0);
        assertEq(court.getBond(task, validators[1]).amount, 0);
        assertEq(court.getBond(task, validators[2]).amount, BOND, "the validator that did not attest keeps its bond");
        assertEq(court.pool(task), BOND);
    }

    function test_a_right_coordinate_costs_the_challenger_its_bond() public {
        int32[DIM] memory right = [int32(2), 3, 2]; // docs/aggregation.md's median example
        Update[] memory us = _example();
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.Median, us, right);
        uint256 id = _challenge(result, 0, right);
        ICourt.Input[] memory staged = _inputs(task, 1, us);
        vm.prank(challenger);
        court.stage(id, staged);
        assertFalse(court.resolve(id, _values(us, 0)));
        assertEq(court.pool(task), CHALLENGER_BOND);
        assertEq(court.getBond(task, validators[0]).amount, BOND);
        assertEq(ledger.currentRound(task), 1);
    }

    function test_median_values_must_be_the_staged_ones() public {
        int32[DIM] memory right = [int32(2), 3, 2];
        Update[] memory us = _example();
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.Median, us, right);
        uint256 id = _challenge(result, 0, right);
        ICourt.Input[] memory staged = _inputs(task, 1, us);
        vm.prank(challenger);
        court.stage(id, staged);
        bytes memory values = _values(us, 0);
        values[7] = bytes1(uint8(values[7]) ^ 1);
        vm.expectRevert(abi.encodeWithSelector(ICourt.ValuesMismatch.selector, id, 4, 4));
        court.resolve(id, values);
    }

    function test_a_rejected_update_cannot_be_staged_as_accepted() public {
        Update[] memory us = _example();
        us[3].verdict = 6; // NORM_BOUND
        int32[DIM] memory agg = [int32(6), -3, 2];
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, us, agg);
        uint256 id = _challenge(result, 0, agg);
        ICourt.Input[] memory inputs = _inputs(task, 1, us);
        inputs[3].verdict = 0;
        inputs[3].leaf = _leafOf(us[3].q);
        vm.expectRevert(abi.encodeWithSelector(ICourt.BadVerdictProof.selector, id, (task << 32) | 4));
        vm.prank(challenger);
        court.stage(id, inputs);
    }

    function test_staged_records_must_be_the_sealed_ones() public {
        Update[] memory us = _example();
        int32[DIM] memory wrong = [int32(3), 1, 2];
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, us, wrong);
        uint256 id = _challenge(result, 1, wrong);
        ICourt.Input[] memory inputs = _inputs(task, 1, us);
        vm.prank(challenger);
        court.stage(id, inputs);
        vm.expectRevert(abi.encodeWithSelector(ICourt.StagingCount.selector, id, 4, 1, 4));
        ICourt.Input[] memory more = new ICourt.Input[](1);
        more[0] = inputs[0];
        vm.prank(challenger);
        court.stage(id, more);
    }

    function test_only_the_challenger_stages_its_records() public {
        int32[DIM] memory wrong = [int32(3), 1, 2];
        Update[] memory us = _example();
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, us, wrong);
        uint256 id = _challenge(result, 1, wrong);
        ICourt.Input[] memory inputs = _inputs(task, 1, us);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(ICourt.NotChallenger.selector, id, challenger));
        court.stage(id, inputs);
    }

    function test_a_challenge_after_the_window_is_refused() public {
        int32[DIM] memory wrong = [int32(3), 1, 2];
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, _example(), wrong);
        (, uint64 ends) = court.roundStatus(task, 0);
        vm.warp(ends);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(ICourt.Window.selector, task, 0, ends));
        court.challenge{value: CHALLENGER_BOND}(task, 0, result, 1, _leafOf(wrong), new bytes32[](0));
    }

    function test_clip_multipliers_in_the_leaves_enter_the_rule() public {
        Update[] memory us = _example();
        us[0].clip = uint64(UNCLIPPED / 2); // [5, -3, 1] after clipping (toward zero)
        ICourt.Terms memory t = _terms(ICourt.Rule.FedAvg);
        int32 right = int32(_reference(t, us, 0)); // (15 + 4 + 2 - 12) / 8 = 1.125 -> 1
        assertEq(right, 1);
        int32[DIM] memory agg = [right, 0, 2];
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, us, agg);
        uint256 id = _challenge(result, 0, agg);
        ICourt.Input[] memory staged = _inputs(task, 1, us);
        vm.prank(challenger);
        court.stage(id, staged);
        assertFalse(court.resolve(id, ""));
    }

    // ------------------------------------------------------------------ rewards

    function test_rewards_are_claimed_once_after_settlement_within_the_pool() public {
        Update[] memory us = _example();
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, us, [int32(3), 0, 2]);
        vm.deal(owner, 1 ether);
        vm.prank(owner);
        court.fund{value: 50}(task);
        bytes32[] memory nodes = _verdictNodes(task, 1, us);
        (, bytes32[] memory p0) = _rootAndProof(nodes, 0);
        vm.expectRevert(abi.encodeWithSelector(ICourt.NotSettled.selector, task, 0));
        court.claim(task, 0, (task << 32) | 1, us[0].contributor, _content(us[0].contributor), UNCLIPPED, 30, p0);
        vm.warp(block.timestamp + CHALLENGE_WINDOW);
        court.settle(task, 0, result);
        court.claim(task, 0, (task << 32) | 1, us[0].contributor, _content(us[0].contributor), UNCLIPPED, 30, p0);
        assertEq(us[0].contributor.balance, 30);
        assertTrue(court.isClaimed(task, (task << 32) | 1));
        vm.expectRevert(abi.encodeWithSelector(ICourt.AlreadyClaimed.selector, task, (task << 32) | 1));
        court.claim(task, 0, (task << 32) | 1, us[0].contributor, _content(us[0].contributor), UNCLIPPED, 30, p0);
        (, bytes32[] memory p2) = _rootAndProof(nodes, 2);
        court.claim(task, 0, (task << 32) | 3, us[2].contributor, _content(us[2].contributor), UNCLIPPED, 20, p2);
        (, bytes32[] memory p3) = _rootAndProof(nodes, 3);
        vm.expectRevert(abi.encodeWithSelector(ICourt.PoolExhausted.selector, task, 0, 20));
        court.claim(task, 0, (task << 32) | 4, us[3].contributor, _content(us[3].contributor), UNCLIPPED, 20, p3);
        vm.expectRevert(abi.encodeWithSelector(ICourt.BadClaim.selector, task, 0, (task << 32) | 4));
        court.claim(task, 0, (task << 32) | 4, us[3].contributor, _content(us[3].contributor), UNCLIPPED, 21, p3);
    }

    function test_gas_claim() public {
        Update[] memory us = _example();
        ITrainingLedger.RoundResult memory result = _attested(ICourt.Rule.FedAvg, us, [int32(3), 0, 2]);
        court.fund{value: 1 ether}(task);
        vm.warp(block.timestamp + CHALLENGE_WINDOW);
        court.settle(task, 0, result);
        (, bytes32[] memory p1) = _rootAndProof(_verdictNodes(task, 1, us), 1);
        court.claim(task, 0, (task << 32) | 2, us[1].contributor, _content(us[1].contributor), UNCLIPPED, 10, p1);
    }

    // ------------------------------------------------------------------ fuzz: the proof path

    function _fuzzRound(uint256 seed, uint8 ruleIndex, uint256 n)
        internal
        pure
        returns (ICourt.Terms memory t, Update[] memory us)
    {
        t = _terms(ICourt.Rule(1 + (ruleIndex % 3)));
        us = new Update[](n);
        for (uint256 i = 0; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            int32[DIM] memory q;
            for (uint256 c = 0; c < DIM; ++c) {
                q[c] = int32(uint32(r >> (32 * c)));
                if ((r >> (100 + c)) & 1 == 1) q[c] = int32(int256(q[c]) % 1000); // small values too
            }
            uint8 verdict = (r >> 200) % 4 == 0 ? 7 : 0; // a quarter rejected
            uint64 clip = (r >> 210) % 3 == 0 ? uint64((r >> 140) % UNCLIPPED) : UNCLIPPED;
            // forge-lint: disable-next-line(unsafe-typecast)
            us[i] = Update(_contributor(i), uint64(1 + (r >> 220) % 1000), verdict, clip, 0, q); // < 1001
        }
    }

    function _challengeFuzzed(uint256 seed, uint8 ruleIndex, uint8 size, int256 offset) internal returns (bool) {
        uint256 n = 1 + (size % 12);
        task = _task(n < 4 ? 4 : n, 3, 2, _terms(ICourt.Rule(1 + (ruleIndex % 3))));
        (ICourt.Terms memory t, Update[] memory us) = _fuzzRound(seed, ruleIndex, n);
        uint64 j = uint64(seed % DIM);
        int256 right = _reference(t, us, j);
        int256 claimed = right + offset;
        if (claimed > type(int32).max || claimed < type(int32).min) claimed = right - offset;
        int32[DIM] memory agg;
        // forge-lint: disable-next-line(unsafe-typecast)
        agg[j] = int32(claimed); // within int32, checked above
        _submitAll(task, 0, us);
        vm.prank(validators[0]);
        ledger.sealRound(task, 0);
        ITrainingLedger.RoundResult memory result = _resultOf(task, 0, 1, us, agg);
        _attestAll(task, 0, result, 2);
        vm.prank(challenger);
        uint256 id = court.challenge{value: CHALLENGER_BOND}(task, 0, result, j, _leafOf(agg), new bytes32[](0));
        ICourt.Input[] memory staged = _inputs(task, 1, us);
        vm.prank(challenger);
        court.stage(id, staged);
        return court.resolve(id, t.rule == ICourt.Rule.FedAvg ? bytes("") : _values(us, j));
    }

    function testFuzz_any_wrong_coordinate_is_caught(uint256 seed, uint8 ruleIndex, uint8 size, int256 offset) public {
        offset = bound(offset, 1, int256(type(int32).max));
        if (seed % 2 == 0) offset = -offset;
        assertTrue(_challengeFuzzed(seed, ruleIndex, size, offset));
    }

    function testFuzz_a_right_coordinate_is_never_overturned(uint256 seed, uint8 ruleIndex, uint8 size) public {
        assertFalse(_challengeFuzzed(seed, ruleIndex, size, 0));
    }

    function testFuzz_roundDiv_rounds_half_to_even(int64 a, uint32 b) public pure {
        vm.assume(b > 0);
        assertEq(ExactRules.roundDiv(a, b), _half(a, int256(uint256(b))));
    }
}
