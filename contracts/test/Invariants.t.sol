// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {Vm} from "./utils/Vm.sol";
import {TrainingLedger} from "../TrainingLedger.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";

/// @notice Drives random sequences of direct, relayed (65- and 64-byte) and batched
/// submissions (admitted and non-admitted signers, good and bad entries), seals,
/// attestations (agreeing, lying, naming other records, non-validators), confirmations and
/// clock moves across attempts and rounds, keeping its own record of every update the ledger
/// took. It never reverts: every ledger call is caught, and what it learns goes into flags the
/// invariants read.
contract LedgerHandler is Test {
    TrainingLedger public immutable ledger;
    uint256 public immutable task; // 3 admitted contributors, 3 validators, quorum 2, 1..6 updates
    uint64 public constant MAX_SAMPLES = 100;
    uint64 internal constant FAR = 2_000_000_000;
    uint256[] internal keys; // keys[0..2] admitted, keys[3] never
    address[] internal attesters; // [0..2] validators, [3] a contributor, [4] an outsider

    // ghost state: the records of the current round, as the handler saw them accepted
    bytes28 public ghostHash;
    uint32 public ghostCount;
    uint64 public ghostRound;
    mapping(uint64 round => bytes32 digest) public ghostFinal;
    mapping(uint64 round => mapping(address who => uint256 n)) public accepted;
    /// the record fields of every result attested in the current round, by digest
    mapping(bytes32 digest => bytes28 recordHash) internal attestedHash;
    mapping(bytes32 digest => uint32 count) internal attestedCount;
    bytes32[] internal proposed; // digests attested in the current round
    uint64 public finalRounds;
    uint256 public updates;
    bool public duplicateAccepted;
    bool public outsiderAccepted;
    bool public samplesOutOfRange;
    bool public nonValidatorAttested;
    bool public mismatchAccepted;
    bool public finalisedOtherThanSealed;
    bool public sealedOtherThanAccepted;

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
                maxSamples: MAX_SAMPLES,
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

    // ------------------------------------------------------------------ bookkeeping

    function _content(address who, uint64 round, uint256 salt) internal pure returns (bytes32) {
        return keccak256(abi.encode(who, round, salt));
    }

    /// @dev An update the ledger took: who, its fields (contentHash = cidDigest = tensorRoot = c).
    function _accept(address who, bytes32 c, uint64 numSamples) internal {
        if (accepted[ghostRound][who] > 0) duplicateAccepted = true;
        if (who == vm.addr(keys[3])) outsiderAccepted = true;
        if (numSamples == 0 || numSamples > MAX_SAMPLES) samplesOutOfRange = true;
        accepted[ghostRound][who] += 1;
        ghostHash = bytes28(keccak256(abi.encode(ghostHash, who, c, c, c, numSamples)));
        ghostCount += 1;
        updates += 1;
    }

    function _sign(uint256 key, bytes32 c, uint64 n, uint64 deadline) internal view returns (uint8, bytes32, bytes32) {
        return vm.sign(key, ledger.hashUpdate(task, ghostRound, c, c, c, n, deadline));
    }

    function _result(bytes28 recordHash, uint32 count, bytes32 verdictRoot)
        internal
        pure
        returns (ITrainingLedger.RoundResult memory)
    {
        return ITrainingLedger.RoundResult({
            recordHash: recordHash,
            updateCount: count,
            verdictRoot: verdictRoot,
            verdictHash: bytes32(uint256(2)),
            verdictCidDigest: bytes32(uint256(3)),
            aggregateHash: bytes32(uint256(4)),
            aggregateCidDigest: bytes32(uint256(5)),
            aggregateTensorRoot: bytes32(0)
        });
    }

    /// @dev After a counted attestation: the seal (if it just happened) named exactly the
    /// accepted records; a finalisation kept a digest whose records are the sealed ones.
    function _afterVote(bool isValidator, uint64 before) internal {
        if (!isValidator) nonValidatorAttested = true;
        if (ledger.currentRound(task) == before) return;
        bytes32 digest = ledger.roundDigest(task, ghostRound);
        if (attestedHash[digest] != ghostHash || attestedCount[digest] != ghostCount) finalisedOtherThanSealed = true;
        ghostFinal[ghostRound] = digest;
        finalRounds += 1;
        ghostRound += 1;
        ghostHash = bytes28(keccak256(abi.encode(task, ghostRound)));
        ghostCount = 0;
        delete proposed;
    }

    function _checkSealed() internal {
        ITrainingLedger.RoundView memory r = ledger.getRound(task, ghostRound);
        if (r.state == ITrainingLedger.RoundState.Sealed) {
            if (r.recordHash != ghostHash || r.updateCount != ghostCount) sealedOtherThanAccepted = true;
        }
    }

    // ------------------------------------------------------------------ actions

    function submit(uint256 actor, uint256 salt, uint64 numSamples) external {
        address who = vm.addr(keys[actor % 4]);
        numSamples = uint64(bound(numSamples, 0, MAX_SAMPLES + 20));
        bytes32 c = _content(who, ghostRound, salt);
        vm.prank(who);
        try ledger.submitUpdate(task, ghostRound, c, c, c, numSamples) {
            _accept(who, c, numSamples);
        } catch {}
    }

    function submitFor(uint256 actor, uint256 salt, uint64 numSamples, bool compact, bool expired) external {
        uint256 key = keys[actor % 4];
        address who = vm.addr(key);
        numSamples = uint64(bound(numSamples, 0, MAX_SAMPLES + 20));
        bytes32 c = _content(who, ghostRound, salt);
        uint64 deadline = expired ? uint64(block.timestamp - 1) : FAR;
        bytes memory sig = _signature(key, c, numSamples, deadline, compact);
        try ledger.submitUpdateFor(task, ghostRound, c, c, c, numSamples, who, deadline, sig) {
            _accept(who, c, numSamples);
            if (expired) samplesOutOfRange = true; // an expired signature was taken: flag it loudly
        } catch {}
    }

    /// @dev A 65-byte or (EIP-2098) 64-byte signature of one update.
    function _signature(uint256 key, bytes32 c, uint64 numSamples, uint64 deadline, bool compact)
        internal
        view
        returns (bytes memory)
    {
        (uint8 v, bytes32 r, bytes32 s) = _sign(key, c, numSamples, deadline);
        return compact ? abi.encodePacked(r, bytes32(uint256(s) | (uint256(v - 27) << 255))) : abi.encodePacked(r, s, v);
    }

    function batch(uint256 mask, uint256 salt, uint256 kinds) external {
        salt = bound(salt, 0, type(uint128).max);
        bytes memory entries;
        for (uint256 j; j < 6; ++j) {
            if ((mask >> j) & 1 == 0) continue;
            entries =
                bytes.concat(entries, _batchEntry(keys[(mask >> (6 + 2 * j)) % 4], salt + j, (kinds >> (3 * j)) & 7));
        }
        if (entries.length == 0) return;
        vm.recordLogs();
        try ledger.submitBatch(task, ghostRound, entries) returns (uint256, uint256) {
            _acceptRelayed(vm.getRecordedLogs());
        } catch {}
    }

    /// @dev One packed entry by `key`; kind 0 zero samples, 1 too many, 2 expired, 3 a tampered
    /// contentHash (recovers a stranger), else good.
    function _batchEntry(uint256 key, uint256 salt, uint256 kind) internal view returns (bytes memory) {
        bytes32 c = _content(vm.addr(key), ghostRound, salt);
        uint64 n = kind == 0 ? 0 : kind == 1 ? MAX_SAMPLES + 1 : uint64(1 + salt % MAX_SAMPLES);
        uint64 deadline = kind == 2 ? uint64(block.timestamp - 1) : FAR;
        (uint8 v, bytes32 r, bytes32 s) = _sign(key, c, n, deadline);
        bytes32 vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
        bytes32 field = kind == 3 ? c ^ bytes32(uint256(1)) : c;
        return abi.encodePacked(field, c, c, n, deadline, r, vs);
    }

    /// @dev Accept the records of the `UpdatesRelayed` among `logs`.
    function _acceptRelayed(Vm.Log[] memory logs) internal {
        for (uint256 k; k < logs.length; ++k) {
            if (logs[k].topics[0] != ITrainingLedger.UpdatesRelayed.selector) continue;
            (, bytes memory recs) = abi.decode(logs[k].data, (uint256, bytes));
            for (uint256 j; j < recs.length / 124; ++j) {
                address who;
                bytes32 content;
                bytes32 cid;
                bytes32 root;
                uint64 n;
                assembly {
                    let p := add(add(recs, 32), mul(j, 124))
                    who := shr(96, mload(p))
                    content := mload(add(p, 20))
                    cid := mload(add(p, 52))
                    root := mload(add(p, 84))
                    n := shr(192, mload(add(p, 116)))
                }
                // every recorded entry was signed over exactly these fields (c, c, c)
                if (content != cid || cid != root) outsiderAccepted = true;
                _accept(who, content, n);
            }
        }
    }

    function seal(uint256 who) external {
        address v = attesters[who % attesters.length];
        vm.prank(v);
        try ledger.sealRound(task, ghostRound) {
            if (who % attesters.length >= 3) nonValidatorAttested = true;
            _checkSealed();
        } catch {}
    }

    function attest(uint256 who, uint8 kind) external {
        uint256 i = who % attesters.length;
        address v = attesters[i];
        kind %= 8;
        // kind: 0..3 the honest result, 4..5 a lie about the verdicts, 6 other records, 7 a wrong count
        bytes32 root = kind >= 4 && kind < 6 ? keccak256(abi.encode(v, block.timestamp)) : bytes32(uint256(1));
        bytes28 h = kind == 6 ? bytes28(keccak256(abi.encode(ghostHash))) : ghostHash;
        uint32 count = kind == 7 ? ghostCount + 1 : ghostCount;
        ITrainingLedger.RoundResult memory res = _result(h, count, root);
        bytes32 digest = ledger.resultDigest(task, ghostRound, res);
        uint64 before = ledger.currentRound(task);
        vm.prank(v);
        try ledger.attestRound(task, ghostRound, res) {
            if (kind >= 6) mismatchAccepted = true;
            _checkSealed();
            attestedHash[digest] = h;
            attestedCount[digest] = count;
            proposed.push(digest);
            _afterVote(i < 3, before);
        } catch {}
    }

    function confirm(uint256 who, uint256 pick) external {
        uint256 i = who % attesters.length;
        address v = attesters[i];
        bytes32 digest = proposed.length == 0 ? bytes32(pick) : proposed[pick % proposed.length];
        uint64 before = ledger.currentRound(task);
        vm.prank(v);
        try ledger.confirmRound(task, ghostRound, digest) {
            _afterVote(i < 3, before);
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
    /// records the handler saw sealed (their hash and count), and the current round's record
    /// hash is the chain of exactly the updates the handler saw accepted.
    function invariant_a_final_digest_covers_exactly_the_sealed_records() public view {
        TrainingLedger ledger = handler.ledger();
        uint256 t = handler.task();
        assertEq(ledger.currentRound(t), handler.ghostRound(), "rounds");
        for (uint64 r; r < handler.finalRounds(); ++r) {
            assertEq(ledger.roundDigest(t, r), handler.ghostFinal(r), "final digest");
        }
        assertFalse(handler.finalisedOtherThanSealed(), "a round was finalised with other records");
        assertFalse(handler.sealedOtherThanAccepted(), "a seal named other records than accepted");
        assertFalse(handler.mismatchAccepted(), "an attestation naming other records was counted");
        ITrainingLedger.RoundView memory cur = ledger.getRound(t, handler.ghostRound());
        assertEq(bytes32(cur.recordHash), bytes32(handler.ghostHash()), "running record hash");
        assertEq(cur.updateCount, handler.ghostCount(), "running count");
        assertEq(ledger.getTask(t).updates, handler.updates(), "the task's updates");
    }

    function invariant_no_contributor_twice_per_round() public view {
        assertFalse(handler.duplicateAccepted(), "a contributor was recorded twice in a round");
    }

    function invariant_non_admitted_never_recorded_and_non_validator_never_attests() public view {
        assertFalse(handler.outsiderAccepted(), "a non-admitted contributor or unsigned fields were recorded");
        assertFalse(handler.nonValidatorAttested(), "a non-validator sealed or attested");
    }

    function invariant_samples_stay_within_one_and_max_samples() public view {
        assertFalse(handler.samplesOutOfRange(), "an update outside [1, maxSamples] (or expired) was recorded");
    }
}
