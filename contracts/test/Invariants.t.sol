// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {Vm} from "./utils/Vm.sol";
import {TrainingLedger} from "../TrainingLedger.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";

/// @notice Drives random sequences of direct and batched submissions (admitted and
/// non-admitted signers, good and bad entries), seals, attestations (agreeing, lying,
/// non-validators) and clock moves, keeping its own record of every update the ledger took.
contract LedgerHandler is Test {
    TrainingLedger public immutable ledger;
    uint256 public immutable task; // 3 admitted contributors, 3 validators, quorum 2, 1..6 updates
    uint256[] internal keys; // keys[0..2] admitted, keys[3] never
    address[] internal attesters; // [0..2] validators, [3] a contributor, [4] an outsider
    uint64 internal constant FAR = 2_000_000_000;

    // ghost state: the records of the current round, as the handler saw them accepted
    bytes28 public ghostHash;
    uint32 public ghostCount;
    uint64 public ghostRound;
    mapping(uint64 round => bytes32 digest) public ghostFinal;
    mapping(uint64 round => mapping(address who => uint256 n)) public accepted;
    uint64 public finalRounds;
    bool public duplicateAccepted;
    bool public outsiderAccepted;
    bool public nonValidatorAttested;
    bool public finalisedOtherThanSealed;

    constructor() {
        ledger = new TrainingLedger();
        for (uint256 i; i < 4; ++i) {
            keys.push(0xC0FFEE + i);
        }
        attesters.push(address(0x7A11));
        attesters.push(address(0x7A12));
        attesters.push(address(0x7A13));
        attesters.push(vm.addr(keys[0]));
        attesters.push(address(0x0BAD));
        uint256 t = ledger.createTask(
            ITrainingLedger.TaskConfig({
                modelHash: keccak256("m"),
                modelCid: "m",
                specCid: "s",
                minUpdates: 1,
                maxUpdates: 6,
                quorum: 2,
                roundDuration: 0,
                open: false,
                maxSamples: 100,
                attestWindow: 600
            })
        );
        for (uint256 i; i < 3; ++i) {
            ledger.addContributor(t, vm.addr(keys[i]));
            ledger.addValidator(t, attesters[i]);
        }
        task = t;
        ghostHash = bytes28(keccak256(abi.encode(t, uint64(0))));
    }

    function _content(address who, uint64 round, uint256 salt) internal pure returns (bytes32) {
        return keccak256(abi.encode(who, round, salt));
    }

    function _accept(address who, bytes32 content, uint64 numSamples) internal {
        if (accepted[ghostRound][who] > 0) duplicateAccepted = true;
        if (who == vm.addr(keys[3])) outsiderAccepted = true;
        accepted[ghostRound][who] += 1;
        ghostHash = bytes28(keccak256(abi.encode(ghostHash, who, content, content, content, numSamples)));
        ghostCount += 1;
    }

    function submit(uint256 actor, uint256 salt, uint64 numSamples) external {
        address who = vm.addr(keys[actor % 4]);
        numSamples = uint64(bound(numSamples, 0, 120));
        bytes32 c = _content(who, ghostRound, salt);
        vm.prank(who);
        try ledger.submitUpdate(task, ghostRound, c, c, c, numSamples) {
            _accept(who, c, numSamples);
        } catch {}
    }

    function batch(uint256 mask, uint256 salt) external {
        bytes memory entries;
        for (uint256 i; i < 4; ++i) {
            if ((mask >> i) & 1 == 0) continue;
            address who = vm.addr(keys[i]);
            bytes32 c = _content(who, ghostRound, salt);
            uint64 n = uint64(1 + (salt >> i) % 120);
            bytes32 digest = ledger.hashUpdate(task, ghostRound, c, c, c, n, FAR);
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(keys[i], digest);
            bytes32 vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
            entries = bytes.concat(entries, c, c, c, bytes8(n), bytes8(FAR), r, vs);
        }
        if (entries.length == 0) return;
        vm.recordLogs();
        try ledger.submitBatch(task, ghostRound, entries) returns (uint256, uint256) {
            Vm.Log[] memory logs = vm.getRecordedLogs();
            for (uint256 k; k < logs.length; ++k) {
                if (logs[k].topics[0] != ITrainingLedger.UpdatesRelayed.selector) continue;
                (, bytes memory recs) = abi.decode(logs[k].data, (uint256, bytes));
                for (uint256 j; j < recs.length / 124; ++j) {
                    address who;
                    bytes32 c;
                    uint64 n;
                    assembly {
                        let p := add(add(recs, 32), mul(j, 124))
                        who := shr(96, mload(p))
                        c := mload(add(p, 20))
                        n := shr(192, mload(add(p, 116)))
                    }
                    _accept(who, c, n);
                }
            }
        } catch {}
    }

    function attest(uint256 who, bool lie) external {
        address v = attesters[who % attesters.length];
        ITrainingLedger.RoundResult memory res = ITrainingLedger.RoundResult({
            recordHash: ghostHash,
            updateCount: ghostCount,
            verdictRoot: lie ? keccak256(abi.encode(v, block.timestamp)) : bytes32(uint256(1)),
            verdictHash: bytes32(uint256(2)),
            verdictCidDigest: bytes32(uint256(3)),
            aggregateHash: bytes32(uint256(4)),
            aggregateCidDigest: bytes32(uint256(5)),
            aggregateTensorRoot: bytes32(0)
        });
        uint64 before = ledger.currentRound(task);
        vm.prank(v);
        try ledger.attestRound(task, ghostRound, res) {
            if (who % attesters.length >= 3) nonValidatorAttested = true;
            if (ledger.currentRound(task) != before) {
                bytes32 digest = ledger.resultDigest(task, ghostRound, res);
                if (ledger.roundDigest(task, ghostRound) != digest) finalisedOtherThanSealed = true;
                ghostFinal[ghostRound] = digest;
                finalRounds += 1;
                ghostRound += 1;
                ghostHash = bytes28(keccak256(abi.encode(task, ghostRound)));
                ghostCount = 0;
            }
        } catch {}
    }

    function wait(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, 1_000));
    }
}

contract LedgerInvariantTest is Test {
    LedgerHandler internal handler;

    function setUp() public {
        handler = new LedgerHandler();
        targetContract(address(handler));
    }

    /// @dev Every final round's stored digest is the digest of a result naming exactly the
    /// records the handler saw sealed (their hash and count), and the open round's record hash
    /// is the chain of exactly the updates the handler saw accepted.
    function invariant_a_final_digest_covers_exactly_the_sealed_records() public view {
        TrainingLedger ledger = handler.ledger();
        uint256 t = handler.task();
        for (uint64 r; r < handler.finalRounds(); ++r) {
            assertEq(ledger.roundDigest(t, r), handler.ghostFinal(r), "final digest");
        }
        assertFalse(handler.finalisedOtherThanSealed(), "a round was finalised with other records");
        ITrainingLedger.RoundView memory cur = ledger.getRound(t, handler.ghostRound());
        assertEq(bytes32(cur.recordHash), bytes32(handler.ghostHash()), "running record hash");
        assertEq(cur.updateCount, handler.ghostCount(), "running count");
    }

    function invariant_no_contributor_twice_per_round() public view {
        assertFalse(handler.duplicateAccepted(), "a contributor was recorded twice in a round");
    }

    function invariant_non_admitted_never_recorded_and_non_validator_never_attests() public view {
        assertFalse(handler.outsiderAccepted(), "a non-admitted contributor was recorded");
        assertFalse(handler.nonValidatorAttested(), "a non-validator attested");
    }
}
