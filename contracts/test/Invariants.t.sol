// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {TrainingLedger} from "../TrainingLedger.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";

/// @notice Drives random sequences of submissions (direct, signed, batched), attestations and
/// clock moves by admitted and non-admitted actors, and keeps ghost records of what succeeded.
contract LedgerHandler is Test {
    TrainingLedger public immutable ledger;
    uint256 public immutable closedTask; // 3 contributors, 3 validators, 2..4 updates, quorum 2
    uint256 public immutable openTask; // anyone contributes, 2 validators, quorum 1, 100 s rounds

    uint256[] internal keys; // keys[0..2] admitted to closedTask, keys[3..4] never admitted
    address[] internal attesters; // [0..2] validators of both tasks, [3] a contributor, [4] an outsider
    string internal constant CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    uint64 internal constant MAX_SAMPLES = 100; // both tasks' maxSamples

    // ghost state
    mapping(uint256 => mapping(uint64 => mapping(address => uint256))) public accepted;
    mapping(uint256 => mapping(uint64 => mapping(bytes32 => uint256))) public tally;
    uint256 public acceptedTotal;
    uint256 public lastId;
    uint256 public finalisations;
    bool public duplicateAccepted;
    bool public idWentBackOrSkipped;
    bool public outsiderSubmittedToClosed;
    bool public nonValidatorAttested;
    bool public finalisedWithoutQuorum;
    bool public quorumWithoutFinalisation;
    bool public samplesOutOfRange;

    constructor() {
        ledger = new TrainingLedger();
        for (uint256 i = 0; i < 5; ++i) {
            keys.push(0xC0FFEE + i);
        }
        attesters.push(address(0x7A11));
        attesters.push(address(0x7A12));
        attesters.push(address(0x7A13));
        attesters.push(vm.addr(keys[0]));
        attesters.push(address(0x0BAD));

        closedTask = ledger.createTask(_cfg(2, 4, 2, 0, false));
        openTask = ledger.createTask(_cfg(1, 3, 1, 100, true));
        for (uint256 i = 0; i < 3; ++i) {
            ledger.addContributor(closedTask, vm.addr(keys[i]));
            ledger.addValidator(closedTask, attesters[i]);
            ledger.addValidator(openTask, attesters[i]);
        }
    }

    function _cfg(uint32 minU, uint32 maxU, uint8 quorum, uint64 duration, bool open)
        internal
        pure
        returns (ITrainingLedger.TaskConfig memory)
    {
        return ITrainingLedger.TaskConfig(keccak256("m"), "m", "s", minU, maxU, quorum, duration, open, MAX_SAMPLES);
    }

    function _task(uint256 seed) internal view returns (uint256) {
        return seed % 2 == 0 ? closedTask : openTask;
    }

    /// @dev Mostly the current round, sometimes the one before or after.
    function _round(uint256 taskId, uint8 seed) internal view returns (uint64) {
        uint64 cur = ledger.currentRound(taskId);
        uint8 pick = seed % 8;
        if (pick == 6) return cur + 1;
        if (pick == 7 && cur > 0) return cur - 1;
        return cur;
    }

    function _isAdmitted(uint256 taskId, address who) internal view returns (bool) {
        return taskId == openTask || ledger.isContributor(taskId, who);
    }

    function _recordSuccess(uint256 taskId, uint64 round, address who, uint256 id) internal {
        if (id != lastId + 1) idWentBackOrSkipped = true;
        lastId = id;
        acceptedTotal += 1;
        if (++accepted[taskId][round][who] > 1) duplicateAccepted = true;
        if (!_isAdmitted(taskId, who)) outsiderSubmittedToClosed = true;
    }

    /// @dev Mostly a count the task allows, sometimes 0 or above its maxSamples.
    function _samples(uint8 seed) internal pure returns (uint64) {
        uint8 pick = seed % 8;
        if (pick == 6) return 0;
        if (pick == 7) return MAX_SAMPLES + 1 + seed;
        return 1 + uint64(seed) % MAX_SAMPLES;
    }

    function _recordSamples(uint64 numSamples) internal {
        if (numSamples == 0 || numSamples > MAX_SAMPLES) samplesOutOfRange = true;
    }

    function _sign(uint256 key, uint256 taskId, uint64 round, bytes32 h, uint64 numSamples, uint256 deadline)
        internal
        view
        returns (ITrainingLedger.SignedUpdate memory u)
    {
        u.taskId = taskId;
        u.round = round;
        u.contentHash = h;
        u.cid = CID;
        u.numSamples = numSamples;
        u.contributor = vm.addr(key);
        u.deadline = deadline;
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(key, ledger.hashUpdate(taskId, round, h, CID, numSamples, u.contributor, deadline));
        u.signature = abi.encodePacked(r, s, v);
    }

    // ------------------------------------------------------------------ actions

    function submit(uint256 actorSeed, uint256 taskSeed, uint8 roundSeed, bytes32 h, uint8 samplesSeed) external {
        uint256 taskId = _task(taskSeed);
        uint64 round = _round(taskId, roundSeed);
        address who = vm.addr(keys[actorSeed % keys.length]);
        uint64 numSamples = _samples(samplesSeed);
        vm.prank(who);
        try ledger.submitUpdate(taskId, round, h, CID, numSamples) returns (uint256 id) {
            _recordSuccess(taskId, round, who, id);
            _recordSamples(numSamples);
        } catch {}
    }

    function submitSigned(
        uint256 actorSeed,
        uint256 taskSeed,
        uint8 roundSeed,
        bytes32 h,
        bool expired,
        uint8 samplesSeed
    ) external {
        uint256 taskId = _task(taskSeed);
        ITrainingLedger.SignedUpdate memory u = _sign(
            keys[actorSeed % keys.length],
            taskId,
            _round(taskId, roundSeed),
            h,
            _samples(samplesSeed),
            expired ? block.timestamp - 1 : block.timestamp + 10
        );
        try ledger.submitUpdateFor(
            u.taskId, u.round, u.contentHash, u.cid, u.numSamples, u.contributor, u.deadline, u.signature
        ) returns (
            uint256 id
        ) {
            if (expired) duplicateAccepted = true; // an expired signature must never pass
            _recordSuccess(u.taskId, u.round, u.contributor, id);
            _recordSamples(u.numSamples);
        } catch {}
    }

    function submitBatch(uint256 actorSeed, uint256 taskSeed, uint8 roundSeed, uint8 size) external {
        uint256 taskId = _task(taskSeed);
        ITrainingLedger.SignedUpdate[] memory batch = _batch(actorSeed, taskId, _round(taskId, roundSeed), 1 + size % 3);
        try ledger.submitUpdatesFor(batch) returns (uint256 first) {
            for (uint256 i = 0; i < batch.length; ++i) {
                _recordSuccess(taskId, batch[i].round, batch[i].contributor, first + i);
            }
        } catch {}
    }

    function _batch(uint256 actorSeed, uint256 taskId, uint64 round, uint256 n)
        internal
        view
        returns (ITrainingLedger.SignedUpdate[] memory batch)
    {
        batch = new ITrainingLedger.SignedUpdate[](n);
        for (uint256 i = 0; i < n; ++i) {
            batch[i] = _sign(
                keys[(actorSeed % keys.length + i) % keys.length],
                taskId,
                round,
                keccak256(abi.encode(i)),
                7,
                block.timestamp + 10
            );
        }
    }

    function attest(uint256 actorSeed, uint256 taskSeed, uint8 roundSeed, bool agree) external {
        uint256 taskId = _task(taskSeed);
        uint64 round = _round(taskId, roundSeed);
        address who = attesters[actorSeed % attesters.length];
        bytes32 agg = agree ? keccak256("agg") : keccak256(abi.encode("dissent", who));
        vm.prank(who);
        try ledger.attestRound(taskId, round, bytes32(0), agg, CID, CID) {
            _recordAttestation(taskId, round, who, ledger.attestationDigest(bytes32(0), agg, CID, CID));
        } catch {}
    }

    function _recordAttestation(uint256 taskId, uint64 round, address who, bytes32 digest) internal {
        if (!ledger.isValidator(taskId, who)) nonValidatorAttested = true;
        uint256 count = ++tally[taskId][round][digest];
        uint8 quorum = ledger.getTask(taskId).quorum;
        if (ledger.currentRound(taskId) == round + 1) {
            finalisations += 1;
            if (count != quorum) finalisedWithoutQuorum = true;
        } else if (count >= quorum) {
            quorumWithoutFinalisation = true;
        }
    }

    function warp(uint16 secs) external {
        vm.warp(block.timestamp + secs);
    }
}

/// @notice Properties that hold after any sequence of handler actions.
contract LedgerInvariantTest is Test {
    LedgerHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        handler = new LedgerHandler();
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](5);
        selectors[0] = LedgerHandler.submit.selector;
        selectors[1] = LedgerHandler.submitSigned.selector;
        selectors[2] = LedgerHandler.submitBatch.selector;
        selectors[3] = LedgerHandler.attest.selector;
        selectors[4] = LedgerHandler.warp.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    function invariant_one_update_per_contributor_per_round() public view {
        assertFalse(handler.duplicateAccepted(), "a contributor had two updates (or an expired one) accepted");
    }

    function invariant_round_final_only_when_quorum_agrees() public view {
        assertFalse(handler.finalisedWithoutQuorum(), "finalised without quorum agreeing attestations");
        assertFalse(handler.quorumWithoutFinalisation(), "quorum agreed but round not final");
    }

    function invariant_update_ids_only_grow() public view {
        assertFalse(handler.idWentBackOrSkipped(), "update id not previous + 1");
        assertEq(handler.ledger().lastUpdateId(), handler.acceptedTotal(), "every id is an accepted update");
    }

    function invariant_non_validator_never_attests() public view {
        assertFalse(handler.nonValidatorAttested(), "attestation accepted from a non-validator");
    }

    function invariant_no_update_claims_samples_outside_one_to_maxSamples() public view {
        assertFalse(handler.samplesOutOfRange(), "an update claiming 0 or more than maxSamples was recorded");
    }

    function invariant_non_contributor_never_submits_to_closed_task() public view {
        assertFalse(handler.outsiderSubmittedToClosed(), "closed task accepted an outsider");
    }

    function invariant_round_never_exceeds_maxUpdates() public view {
        TrainingLedger ledger = handler.ledger();
        ITrainingLedger.TaskView memory a = ledger.getTask(handler.closedTask());
        ITrainingLedger.TaskView memory b = ledger.getTask(handler.openTask());
        assertLe(a.updateCount, a.maxUpdates, "closed task over capacity");
        assertLe(b.updateCount, b.maxUpdates, "open task over capacity");
    }
}
