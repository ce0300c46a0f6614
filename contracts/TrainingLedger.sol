// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ITrainingLedger} from "./ITrainingLedger.sol";
import {ICourtHooks} from "./ICourt.sol";

/// @title TrainingLedger (v2) — running record hashes of federated-training updates and attested round results
/// @notice See {ITrainingLedger} for the user-facing documentation of every function.
/// @dev Storage is laid out for the hot paths; docs/ledger_v2.md has the byte-level definitions
/// and the measured gas of every path beside its floor. Every hot slot is one packed word,
/// read and written whole (the bit positions are the constants below):
///  - `_state[taskId]`: everything a submission checks (round, limits, flags). Submissions
///    only read it; the seal and the finalisation write it.
///  - `_records[taskId]`: the running record hash (bytes28, high bits) and the task's update
///    counter `seq` (uint32, low bits). Never reset: the first update of a round
///    (`seq == startSeq`) chains from `recordSeed(taskId, round)` instead of the stored hash.
///  - `_members[taskId][account]`: roles, contributor index, validator index and the attested
///    (round + 1, attempt) tag.
///  - `_seen[taskId][word]`: one-update-per-round flags, 224 contributors a word, tagged with
///    `uint32(round + 1)` in the top 32 bits (a word of another round counts as empty), so no
///    slot is new per update.
///  - `_results[taskId][validatorIndex]`: the attestation tally, one reused slot per validator
///    (pre-written by `addValidator`): bytes23 digest prefix | uint64 epoch (round << 32 |
///    attempt) | uint8 count; a slot of another epoch (or count 0) is free.
///  - `_finalDigest[taskId][round]`: the one new slot per round, written when it is final.
contract TrainingLedger is ITrainingLedger, EIP712 {
    /// @inheritdoc ITrainingLedger
    bytes32 public constant UPDATE_TYPEHASH = keccak256(
        "Update(uint256 taskId,uint64 round,bytes32 contentHash,bytes32 cidDigest,bytes32 tensorRoot,uint64 numSamples,uint64 deadline)"
    );

    // ---------------------------------------------------------------------------------------
    // Layout of the packed words
    // ---------------------------------------------------------------------------------------

    // `_state[taskId]` (exactly 32 bytes): round uint32 | stamp uint40 | maxUpdates uint32 |
    // maxSamples uint32 | startSeq uint32 | attestWindow uint32 | quorum uint8 |
    // validatorCount uint8 | flags uint8 (bit 0 open, bit 1 sealed, bit 2 court) | sealedSeq uint32.
    // `stamp` is the round's start while it is open and the seal's time once it is sealed;
    // `sealedSeq` is `seq` at the seal (meaningful while sealed: the next round's `startSeq`).
    // Every existing task has maxUpdates >= 1, so a zero word means "no such task".
    // Slither's accepted lows (block-timestamp, 14): every function that compares a field of
    // this word is flagged because `stamp` shares it. Only `_attempt`, `_checkReady` and the
    // court's windows compare times, against windows of at least a second that a block
    // producer's drift of seconds cannot move by more than that drift.
    uint256 private constant ST_STAMP = 32;
    uint256 private constant ST_MAX_UPDATES = 72;
    uint256 private constant ST_MAX_SAMPLES = 104;
    uint256 private constant ST_START_SEQ = 136;
    uint256 private constant ST_WINDOW = 168;
    uint256 private constant ST_QUORUM = 200;
    uint256 private constant ST_VALIDATORS = 208;
    uint256 private constant ST_OPEN = 0x1000000000000000000000000000000000000000000000000000000; // 1 << 216
    uint256 private constant ST_SEALED = 0x2000000000000000000000000000000000000000000000000000000; // 1 << 217
    uint256 private constant ST_COURT = 0x4000000000000000000000000000000000000000000000000000000; // 1 << 218
    uint256 private constant ST_SEALED_SEQ = 224;
    uint256 private constant U32 = 0xffffffff;
    uint256 private constant U40 = 0xffffffffff;

    // `_members[taskId][account]`: roles uint8 | contributorIndex + 1 uint32 | validatorIndex + 1
    // uint8 | attested tag uint96 = (round + 1) << 32 | attempt of its last counted attestation.
    uint256 private constant ROLE_CONTRIBUTOR = 1;
    uint256 private constant ROLE_VALIDATOR = 2;
    uint256 private constant M_CONTRIBUTOR = 8;
    uint256 private constant M_VALIDATOR = 40;
    uint256 private constant M_ATTESTED = 48;
    uint256 private constant M_ATTESTED_MASK = 0xffffffffffffffffffffffff000000000000; // 96 bits at 48

    // `_results[taskId][i]`: bytes23 digest prefix | uint64 epoch | uint8 count. The value
    // `addValidator` writes is free (count 0) in every epoch.
    uint256 private constant STALE_TALLY = 0xffffffffffffffff00; // epoch 2**64 - 1, count 0

    // Event topics the assembly emits (`Event.selector` spelled out: slither 0.11 cannot build
    // its IR for an inherited event's `.selector`; Gas.t.sol checks each against the event).
    bytes32 private constant T_UPDATES_RELAYED = keccak256("UpdatesRelayed(uint256,uint64,uint256,bytes)");
    bytes32 private constant T_UPDATE_SUBMITTED =
        keccak256("UpdateSubmitted(uint256,uint64,address,uint256,bytes32,bytes32,bytes32,uint64)");
    bytes32 private constant T_ENTRY_SKIPPED = keccak256("EntrySkipped(uint256,uint64,uint256,address,bytes4)");
    bytes32 private constant T_CONTRIBUTOR_ADDED = keccak256("ContributorAdded(uint256,address,uint32)");
    bytes32 private constant T_ROUND_ATTESTED = keccak256("RoundAttested(uint256,uint64,address,bytes32,uint32,uint8)");
    bytes32 private constant T_ROUND_FINALIZED = keccak256("RoundFinalized(uint256,uint64,bytes32,uint32)");

    uint256 private constant FLAGS_PER_WORD = 224;
    uint256 private constant ENTRY_BYTES = 176;
    uint256 private constant RECORD_BYTES = 124;
    uint256 private constant MAX_SEQ = 0xffffffff; // type(uint32).max
    uint256 private constant MAX_CONTRIBUTORS = 0xfffffffe; // type(uint32).max - 1
    uint256 private constant MAX_VALIDATORS = 255;
    /// @dev A pre-paid dedup word: a tag and no flags, so it reads "nobody submitted" in any round.
    uint256 private constant FRESH_WORD = 0xffffffff00000000000000000000000000000000000000000000000000000000; // tag 0xffffffff, no flags

    // secp256k1: the low-s bound (n / 2); a larger s is the malleable twin of a low-s signature
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    // ---------------------------------------------------------------------------------------
    // Memory of `submitBatch` (absolute addresses: the batch owns memory from 0x80, see
    // `_batchContext`; 0x00-0x3f is scratch space for slot hashing and ecrecover's output)
    // ---------------------------------------------------------------------------------------

    // loop constants
    uint256 private constant C_TASK = 0x80; // C_TASK and C_ROUND are adjacent: mcopy restores S_TASK, S_ROUND
    uint256 private constant C_ROUND = 0xa0;
    uint256 private constant C_START = 0xc0; // startSeq
    uint256 private constant C_LIMIT = 0xe0; // min(startSeq + maxUpdates, MAX_SEQ): seq must stay below
    uint256 private constant C_MAX_UPDATES = 0x100;
    uint256 private constant C_MAX_SAMPLES_1 = 0x120; // maxSamples - 1
    uint256 private constant C_OPEN = 0x140;
    uint256 private constant C_TAG = 0x160; // uint32(round + 1), the dedup words' tag
    uint256 private constant C_SEEN_KEY = 0x180; // a dedup word's index, hashed with C_SEEN
    uint256 private constant C_SEEN = 0x1a0; // slot of _seen[taskId]
    uint256 private constant C_INFO = 0x1c0; // first slot of _info[taskId] (owner .. contributorCount)
    uint256 private constant C_FIRST = 0x1e0; // calldata offset of entry 0
    uint256 private constant C_TOPIC_SKIPPED = 0x200;
    uint256 private constant C_TOPIC_ADDED = 0x220;
    // skip reasons (error selectors, left-aligned)
    uint256 private constant R_EXPIRED = 0x240;
    uint256 private constant R_BAD_SIGNATURE = 0x260;
    uint256 private constant R_ROUND_FULL = 0x280;
    uint256 private constant R_EXHAUSTED = 0x2a0;
    uint256 private constant R_TOO_MANY_SAMPLES = 0x2c0;
    uint256 private constant R_ZERO_SAMPLES = 0x2e0;
    uint256 private constant R_NOT_CONTRIBUTOR = 0x300;
    uint256 private constant R_DUPLICATE = 0x320;
    uint256 private constant R_TOO_MANY_MEMBERS = 0x340;
    uint256 private constant C_HALF_ORDER = 0x360; // HALF_ORDER, cheaper to load than to build
    uint256 private constant C_HASH = 0x380; // the record hash the batch starts from
    uint256 private constant C_SEQ = 0x3a0; // seq when the batch starts
    // the EIP-712 struct [typehash, taskId, round, contentHash, cidDigest, tensorRoot,
    // numSamples, deadline]; a recorded entry's record hash reuses its words 1..6 as
    // [previous, contributor, contentHash, cidDigest, tensorRoot, numSamples]
    uint256 private constant S_TYPE = 0x3c0;
    uint256 private constant S_TASK = 0x3e0;
    uint256 private constant S_ROUND = 0x400;
    uint256 private constant S_CONTENT = 0x420;
    uint256 private constant S_SAMPLES = 0x480;
    uint256 private constant S_DEADLINE = 0x4a0;
    // "\x19\x01" | domain separator | struct hash (66 bytes)
    uint256 private constant T_PREFIX = 0x4c0;
    uint256 private constant T_DOMAIN = 0x4c2;
    uint256 private constant T_STRUCT = 0x4e2;
    // ecrecover's input (hash, v, r, s); also the data of the loop's events
    uint256 private constant E_HASH = 0x520;
    uint256 private constant E_V = 0x540;
    uint256 private constant E_R = 0x560;
    uint256 private constant E_S = 0x580;
    // the `UpdatesRelayed` data: firstUpdateId | 0x40 | length | packed records | zero padding
    uint256 private constant B_HEAD = 0x5a0;
    uint256 private constant B_RECORDS = 0x600;

    /// @dev Cold per-task data; the first slot (owner, minUpdates, roundDuration,
    /// contributorCount) is also read and written by the batch loop (`C_INFO`).
    struct TaskInfo {
        address owner;
        uint32 minUpdates;
        uint32 roundDuration;
        uint32 contributorCount;
        bytes32 modelHash;
        string modelCid;
        string specCid;
    }

    uint256 private _taskCount;
    mapping(uint256 taskId => uint256 word) private _state;
    mapping(uint256 taskId => uint256 word) private _records;
    mapping(uint256 taskId => TaskInfo) private _info;
    mapping(uint256 taskId => mapping(address account => uint256 word)) private _members;
    mapping(uint256 taskId => mapping(uint256 word => uint256 flags)) private _seen;
    mapping(uint256 taskId => mapping(uint256 validatorIndex => uint256 tally)) private _results;
    mapping(uint256 taskId => mapping(uint64 round => bytes32 digest)) private _finalDigest;
    mapping(uint256 taskId => address court) private _court;

    constructor() EIP712("TrainingLedger", "2") {}

    // ---------------------------------------------------------------------------------------
    // Tasks and roles
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITrainingLedger
    function createTask(TaskConfig calldata cfg) external returns (uint256 taskId) {
        if (cfg.modelHash == bytes32(0)) revert InvalidConfig("modelHash is zero");
        if (cfg.maxUpdates == 0) revert InvalidConfig("maxUpdates is zero");
        if (cfg.minUpdates == 0) revert InvalidConfig("minUpdates is zero");
        if (cfg.minUpdates > cfg.maxUpdates) revert InvalidConfig("minUpdates exceeds maxUpdates");
        if (cfg.quorum == 0) revert InvalidConfig("quorum is zero");
        if (cfg.roundDuration > U32) revert InvalidConfig("roundDuration exceeds 2**32 - 1");
        if (cfg.maxSamples == 0) revert InvalidConfig("maxSamples is zero");
        if (cfg.maxSamples > U32) revert InvalidConfig("maxSamples exceeds 2**32 - 1");
        if (cfg.attestWindow == 0) revert InvalidConfig("attestWindow is zero");
        if (cfg.attestWindow > U32) revert InvalidConfig("attestWindow exceeds 2**32 - 1");

        taskId = ++_taskCount;
        _state[taskId] = (uint256(uint40(block.timestamp)) << ST_STAMP) | (uint256(cfg.maxUpdates) << ST_MAX_UPDATES)
            | (uint256(cfg.maxSamples) << ST_MAX_SAMPLES) | (uint256(cfg.attestWindow) << ST_WINDOW)
            | (uint256(cfg.quorum) << ST_QUORUM) | (cfg.open ? ST_OPEN : 0);
        // a non-zero accumulator from the start (seq 0, hash = round 0's seed): the first
        // update rewrites a slot instead of paying for a new one
        _records[taskId] = uint256(bytes32(_recordSeed(taskId, 0)));
        _info[taskId] = TaskInfo({
            owner: msg.sender,
            minUpdates: cfg.minUpdates,
            roundDuration: uint32(cfg.roundDuration),
            contributorCount: 0,
            modelHash: cfg.modelHash,
            modelCid: cfg.modelCid,
            specCid: cfg.specCid
        });
        emit TaskCreated(
            taskId,
            msg.sender,
            cfg.modelHash,
            cfg.modelCid,
            cfg.specCid,
            cfg.minUpdates,
            cfg.maxUpdates,
            cfg.quorum,
            cfg.roundDuration,
            cfg.open,
            cfg.maxSamples,
            cfg.attestWindow
        );
    }

    /// @inheritdoc ITrainingLedger
    function addContributor(uint256 taskId, address who) external {
        _checkTaskOwner(taskId);
        if (who == address(0)) revert ZeroAddress();
        uint256 m = _members[taskId][who];
        if (m & ROLE_CONTRIBUTOR != 0) revert AlreadyAdded(taskId, who);
        uint256 index = _register(taskId, who, m) - 1;
        // The owner pre-pays the dedup word a new index opens (one per 224 contributors), so
        // that no submission pays for a new slot.
        if (index % FLAGS_PER_WORD == 0) _seen[taskId][index / FLAGS_PER_WORD] = FRESH_WORD;
    }

    /// @inheritdoc ITrainingLedger
    function addValidator(uint256 taskId, address who) external {
        _checkTaskOwner(taskId);
        if (who == address(0)) revert ZeroAddress();
        uint256 m = _members[taskId][who];
        if (m & ROLE_VALIDATOR != 0) revert AlreadyAdded(taskId, who);
        uint256 st = _state[taskId];
        uint256 index = uint8(st >> ST_VALIDATORS);
        if (index == MAX_VALIDATORS) revert TooManyMembers(taskId, MAX_VALIDATORS);
        _state[taskId] = st + (uint256(1) << ST_VALIDATORS);
        _members[taskId][who] = m | ROLE_VALIDATOR | ((index + 1) << M_VALIDATOR);
        // A free, non-zero tally slot: attestations rewrite it instead of paying for a new slot.
        _results[taskId][index] = STALE_TALLY;
        // forge-lint: disable-next-line(unsafe-typecast)
        emit ValidatorAdded(taskId, who, uint8(index)); // index < 255, checked above
    }

    /// @inheritdoc ITrainingLedger
    function setCourt(uint256 taskId, address court) external {
        _checkTaskOwner(taskId);
        if (court == address(0)) revert ZeroAddress();
        uint256 st = _state[taskId];
        if (st & (ST_COURT | ST_SEALED) != 0 || st & U32 != 0) revert CourtLocked(taskId);
        _state[taskId] = st | ST_COURT;
        _court[taskId] = court;
        emit CourtSet(taskId, court);
    }

    /// @inheritdoc ITrainingLedger
    function voidRounds(uint256 taskId, uint64 fromRound, bytes32 resumeDigest) external {
        uint256 st = _existing(taskId);
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        if (st & ST_COURT == 0 || msg.sender != _court[taskId]) revert NotCourt(taskId, msg.sender);
        uint64 current = uint32(st);
        if (fromRound >= current) revert UnknownRound(taskId, fromRound, current);
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        if (current == U32) revert TaskExhausted(taskId);
        // the unfinished current round resolves to the model the task resumes from, so that
        // `getTask(...).lastFinalDigest` of the new round names it
        _finalDigest[taskId][current] = resumeDigest;
        // round + 1, open, stamp = now, its records start after every record so far
        uint256 seq = _records[taskId] & U32;
        uint256 next = st & ~(U32 | (U40 << ST_STAMP) | (U32 << ST_START_SEQ) | ST_SEALED);
        _state[taskId] = next | (current + 1) | (uint256(uint40(block.timestamp)) << ST_STAMP) | (seq << ST_START_SEQ);
        emit RoundsVoided(taskId, fromRound, current, resumeDigest);
    }

    /// @inheritdoc ITrainingLedger
    function setEncryptionKey(uint256 taskId, bytes32 publicKey) external {
        if (_members[taskId][msg.sender] & ROLE_VALIDATOR == 0) revert NotValidator(taskId, msg.sender);
        emit EncryptionKeySet(taskId, msg.sender, publicKey);
    }

    // ---------------------------------------------------------------------------------------
    // Updates
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITrainingLedger
    function submitUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) external returns (uint256 updateId) {
        return _submitOne(taskId, round, msg.sender, contentHash, cidDigest, tensorRoot, numSamples);
    }

    /// @inheritdoc ITrainingLedger
    function submitUpdateFor(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples,
        address contributor,
        uint64 deadline,
        bytes calldata signature
    ) external returns (uint256 updateId) {
        // The deadline is the signer's wall-clock limit; a block producer's drift of seconds
        // cannot make a signature live longer than the signer allowed by more than that drift.
        // slither-disable-next-line timestamp
        if (block.timestamp > deadline) revert Expired(deadline, block.timestamp); // forge-lint: disable-line(block-timestamp)
        _checkSigner(
            _hashUpdate(taskId, round, contentHash, cidDigest, tensorRoot, numSamples, deadline), contributor, signature
        );
        return _submitOne(taskId, round, contributor, contentHash, cidDigest, tensorRoot, numSamples);
    }

    /// @inheritdoc ITrainingLedger
    function submitBatch(uint256 taskId, uint64 round, bytes calldata entries)
        external
        returns (uint256 firstUpdateId, uint256 recorded)
    {
        uint256 first;
        uint256 length = entries.length;
        assembly {
            first := entries.offset
        }
        if (length == 0 || length % ENTRY_BYTES != 0) revert BadBatch(length);
        uint256 seq = _batchContext(taskId, round, first);
        (uint256 h, uint256 seqEnd) = _relay(first, first + length);
        unchecked {
            recorded = seqEnd - seq; // seq only grows
        }
        if (recorded == 0) return (0, 0);
        firstUpdateId = (taskId << 32) | (seq + 1);
        bytes32 topic = T_UPDATES_RELAYED;
        assembly {
            mstore(0x00, taskId)
            mstore(0x20, _records.slot)
            sstore(keccak256(0x00, 0x40), or(h, seqEnd))
            let size := mul(recorded, RECORD_BYTES)
            mstore(B_HEAD, firstUpdateId)
            mstore(add(B_HEAD, 0x20), 0x40)
            mstore(add(B_HEAD, 0x40), size)
            mstore(add(B_RECORDS, size), 0) // the zero padding after the last record
            log3(B_HEAD, add(0x60, and(add(size, 31), not(31))), topic, taskId, round)
        }
    }

    // ---------------------------------------------------------------------------------------
    // Attestation
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITrainingLedger
    function sealRound(uint256 taskId, uint64 round) external {
        (uint256 st,,) = _attester(taskId, round);
        if (st & ST_SEALED != 0) revert RoundAlreadySealed(taskId, round);
        _seal(taskId, round, st);
    }

    /// @inheritdoc ITrainingLedger
    function attestRound(uint256 taskId, uint64 round, RoundResult calldata result) external {
        (uint256 st, uint256 mslot, uint256 m) = _attester(taskId, round);
        bytes28 sealedHash;
        if (st & ST_SEALED == 0) (st, sealedHash) = _seal(taskId, round, st);
        else sealedHash = _sealedHash(taskId, round, st);
        uint32 sealedCount = _sealedCount(st);
        if (result.recordHash != sealedHash || result.updateCount != sealedCount) {
            revert RecordsMismatch(taskId, round, sealedHash, sealedCount, result.recordHash, result.updateCount);
        }
        uint32 attempt = _notYetAttested(taskId, round, st, m);
        bytes32 digest = _resultDigest(taskId, round, result);
        (uint256 slot, uint256 count, bool free) = _probe(taskId, st, digest, attempt);
        if (count == 0) {
            if (!free) revert TooManyResults(taskId, round, attempt);
            emit ResultProposed(taskId, round, digest, attempt, result);
        }
        _vote(taskId, round, st, mslot, m, digest, attempt, slot, count + 1);
    }

    /// @inheritdoc ITrainingLedger
    function confirmRound(uint256 taskId, uint64 round, bytes32 digest) external {
        // The checks of attestRound (less the seal) and the table probe in one pass; a failed
        // check leaves with its number in `fault` and reverts below with the facts.
        uint256 fault;
        uint256 st;
        uint256 mslot;
        uint256 m;
        uint256 attempt;
        uint256 slot;
        uint256 count;
        assembly {
            for {} 1 {} {
                mstore(0x00, taskId)
                mstore(0x20, _state.slot)
                st := sload(keccak256(0x00, 0x40))
                if iszero(st) {
                    fault := 1
                    break
                }
                if iszero(eq(round, and(st, U32))) {
                    fault := 2
                    break
                }
                mstore(0x20, _members.slot)
                mstore(0x20, keccak256(0x00, 0x40))
                mstore(0x00, caller())
                mslot := keccak256(0x00, 0x40)
                m := sload(mslot)
                if iszero(and(m, ROLE_VALIDATOR)) {
                    fault := 3
                    break
                }
                if iszero(and(st, ST_SEALED)) {
                    fault := 4
                    break
                }
                attempt := div(sub(timestamp(), and(shr(ST_STAMP, st), U40)), and(shr(ST_WINDOW, st), U32))
                if gt(attempt, U32) { attempt := U32 }
                if eq(shr(M_ATTESTED, and(m, M_ATTESTED_MASK)), or(shl(32, add(and(st, U32), 1)), attempt)) {
                    fault := 5
                    break
                }
                // the probe of _probe, stopping at the first free slot
                let epoch := or(shl(32, and(st, U32)), attempt)
                let n := and(shr(ST_VALIDATORS, st), 0xff)
                mstore(0x00, taskId)
                mstore(0x20, _results.slot)
                mstore(0x20, keccak256(0x00, 0x40))
                let i := mod(digest, n)
                for { let k := 0 } lt(k, n) { k := add(k, 1) } {
                    mstore(0x00, i)
                    slot := keccak256(0x00, 0x40)
                    let tally := sload(slot)
                    if or(iszero(and(tally, 0xff)), iszero(eq(and(shr(8, tally), 0xffffffffffffffff), epoch))) {
                        break
                    }
                    if eq(shr(72, tally), shr(72, digest)) {
                        count := and(tally, 0xff)
                        break
                    }
                    i := add(i, 1)
                    if eq(i, n) { i := 0 }
                }
                if iszero(count) { fault := 6 }
                break
            }
        }
        if (fault != 0) _confirmFault(fault, taskId, round, digest, st, attempt);
        // forge-lint: disable-next-line(unsafe-typecast)
        _vote(taskId, round, st, mslot, m, digest, uint32(attempt), slot, count + 1); // attempt <= U32
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITrainingLedger
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @inheritdoc ITrainingLedger
    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @inheritdoc ITrainingLedger
    function currentRound(uint256 taskId) external view returns (uint64) {
        return uint32(_existing(taskId));
    }

    /// @inheritdoc ITrainingLedger
    function getTask(uint256 taskId) external view returns (TaskView memory t) {
        uint256 st = _existing(taskId);
        TaskInfo storage info = _info[taskId];
        uint256 seq = _records[taskId] & U32;
        uint32 round = uint32(st);
        bool isSealed = st & ST_SEALED != 0;
        t.owner = info.owner;
        t.modelHash = info.modelHash;
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        t.lastFinalDigest = round == 0 ? bytes32(0) : _finalDigest[taskId][round - 1];
        t.modelCid = info.modelCid;
        t.specCid = info.specCid;
        t.minUpdates = info.minUpdates;
        t.maxUpdates = uint32(st >> ST_MAX_UPDATES);
        t.quorum = uint8(st >> ST_QUORUM);
        t.roundDuration = info.roundDuration;
        t.open = st & ST_OPEN != 0;
        t.maxSamples = uint32(st >> ST_MAX_SAMPLES);
        t.attestWindow = uint32(st >> ST_WINDOW);
        t.currentRound = round;
        t.roundStart = isSealed ? 0 : uint40(st >> ST_STAMP); // the slot holds the seal's time once sealed
        t.updateCount = uint32(seq - ((st >> ST_START_SEQ) & U32));
        t.isSealed = isSealed;
        t.updates = uint32(seq);
        t.contributorCount = info.contributorCount;
        t.validatorCount = uint8(st >> ST_VALIDATORS);
    }

    /// @inheritdoc ITrainingLedger
    function getRound(uint256 taskId, uint64 round) external view returns (RoundView memory r) {
        uint256 st = _existing(taskId);
        uint64 current = uint32(st);
        if (round > current) revert UnknownRound(taskId, round, current);
        if (round < current) {
            r.state = RoundState.Final;
            r.finalDigest = _finalDigest[taskId][round];
            return r;
        }
        uint256 stamp = uint40(st >> ST_STAMP);
        if (st & ST_SEALED != 0) {
            r.state = RoundState.Sealed;
            r.updateCount = _sealedCount(st);
            r.recordHash = _sealedHash(taskId, round, st);
            r.sealedAt = uint64(stamp);
            r.attempt = _attempt(st);
            r.attemptEndsAt = uint64(stamp + (uint256(r.attempt) + 1) * ((st >> ST_WINDOW) & U32));
        } else {
            uint256 rec = _records[taskId];
            uint256 count = (rec & U32) - ((st >> ST_START_SEQ) & U32);
            r.state = RoundState.Open;
            r.updateCount = uint32(count);
            // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
            r.recordHash = count == 0 ? _recordSeed(taskId, round) : bytes28(bytes32(rec));
            r.startedAt = uint64(stamp);
            uint256 duration = _info[taskId].roundDuration;
            r.deadline = duration == 0 ? 0 : uint64(stamp + duration);
        }
    }

    /// @inheritdoc ITrainingLedger
    function courtOf(uint256 taskId) external view returns (address) {
        return _court[taskId];
    }

    /// @inheritdoc ITrainingLedger
    function roundDigest(uint256 taskId, uint64 round) external view returns (bytes32) {
        return _finalDigest[taskId][round];
    }

    /// @inheritdoc ITrainingLedger
    function resultDigest(uint256 taskId, uint64 round, RoundResult calldata result) external pure returns (bytes32) {
        return _resultDigest(taskId, round, result);
    }

    /// @inheritdoc ITrainingLedger
    function recordSeed(uint256 taskId, uint64 round) external pure returns (bytes28) {
        return _recordSeed(taskId, round);
    }

    /// @inheritdoc ITrainingLedger
    function recordStep(
        bytes28 previous,
        address contributor,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) external pure returns (bytes28) {
        return _recordStep(previous, contributor, contentHash, cidDigest, tensorRoot, numSamples);
    }

    /// @inheritdoc ITrainingLedger
    function hashUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples,
        uint64 deadline
    ) external view returns (bytes32) {
        return _hashUpdate(taskId, round, contentHash, cidDigest, tensorRoot, numSamples, deadline);
    }

    /// @inheritdoc ITrainingLedger
    function isContributor(uint256 taskId, address who) external view returns (bool) {
        return _members[taskId][who] & ROLE_CONTRIBUTOR != 0;
    }

    /// @inheritdoc ITrainingLedger
    function isValidator(uint256 taskId, address who) external view returns (bool) {
        return _members[taskId][who] & ROLE_VALIDATOR != 0;
    }

    /// @inheritdoc ITrainingLedger
    function hasSubmitted(uint256 taskId, uint64 round, address who) external view returns (bool) {
        uint256 st = _currentRound(taskId, round);
        uint256 index = (_members[taskId][who] >> M_CONTRIBUTOR) & U32;
        if (index == 0) return false;
        index -= 1;
        uint256 word = _seen[taskId][index / FLAGS_PER_WORD];
        if (word >> FLAGS_PER_WORD != _tag(st)) return false;
        return (word >> (index % FLAGS_PER_WORD)) & 1 == 1;
    }

    /// @inheritdoc ITrainingLedger
    function hasAttested(uint256 taskId, uint64 round, address who) external view returns (bool) {
        uint256 st = _currentRound(taskId, round);
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        if (st & ST_SEALED == 0) return false;
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        return _attestedTag(_members[taskId][who]) == _memberTag(st, _attempt(st));
    }

    /// @inheritdoc ITrainingLedger
    function attestationCount(uint256 taskId, uint64 round, bytes32 digest) external view returns (uint256 count) {
        uint256 st = _currentRound(taskId, round);
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        if (st & ST_SEALED == 0 || uint8(st >> ST_VALIDATORS) == 0) return 0;
        (, count,) = _probe(taskId, st, digest, _attempt(st));
    }

    /// @inheritdoc ITrainingLedger
    function verdictLeaf(uint256 updateId, address contributor, bytes32 contentHash, uint8 verdict)
        external
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(updateId, contributor, contentHash, verdict))));
    }

    /// @inheritdoc ITrainingLedger
    function verifyVerdict(
        uint256 taskId,
        uint64 round,
        RoundResult calldata result,
        bytes32 leaf,
        bytes32[] calldata proof
    ) external view returns (bool) {
        bytes32 digest = _finalDigest[taskId][round]; // zero unless the round is final
        if (digest == bytes32(0) || digest != _resultDigest(taskId, round, result)) return false;
        return MerkleProof.verifyCalldata(proof, result.verdictRoot, leaf);
    }

    // ---------------------------------------------------------------------------------------
    // Internals: single updates
    // ---------------------------------------------------------------------------------------

    /// @dev A single update, by `submitUpdate` or `submitUpdateFor`: the checks and the dedup
    /// flag (`_admitOne`), then the record and `UpdateSubmitted`.
    function _submitOne(
        uint256 taskId,
        uint64 round,
        address who,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) private returns (uint256 updateId) {
        (uint256 st, uint256 rec) = _admitOne(taskId, round, who, numSamples);
        bytes32 topic = T_UPDATE_SUBMITTED;
        assembly ("memory-safe") {
            // the record: h = bytes28(keccak256(abi.encode(previous, who, contentHash, cidDigest,
            // tensorRoot, numSamples))), previous = the round's seed for its first update
            let seq := and(rec, U32)
            let previous := and(rec, not(U32))
            if eq(seq, and(shr(ST_START_SEQ, st), U32)) {
                mstore(0x00, taskId)
                mstore(0x20, round)
                previous := and(keccak256(0x00, 0x40), not(U32))
            }
            let m := mload(0x40)
            mstore(m, previous)
            mstore(add(m, 0x20), who)
            mstore(add(m, 0x40), contentHash)
            mstore(add(m, 0x60), cidDigest)
            mstore(add(m, 0x80), tensorRoot)
            mstore(add(m, 0xa0), numSamples)
            seq := add(seq, 1) // < MAX_SEQ, checked by _admitOne
            mstore(0x00, taskId)
            mstore(0x20, _records.slot)
            sstore(keccak256(0x00, 0x40), or(and(keccak256(m, 0xc0), not(U32)), seq))
            updateId := or(shl(32, taskId), seq)
            mstore(m, updateId) // UpdateSubmitted's data: updateId, contentHash, ..., numSamples
            mstore(add(m, 0x20), contentHash)
            mstore(add(m, 0x40), cidDigest)
            mstore(add(m, 0x60), tensorRoot)
            mstore(add(m, 0x80), numSamples)
            log4(m, 0xa0, topic, taskId, round, who)
        }
    }

    /// @dev Set the dedup flag of contributor `index` (index + 1 given) for the current round:
    /// word index / 224, bit index % 224, the word tagged uint32(round + 1) (a word of another
    /// round counts as empty); reverts `DuplicateSubmission` when the flag is already set.
    function _flag(uint256 taskId, uint64 round, address who, uint256 index) private {
        bool duplicate;
        assembly ("memory-safe") {
            index := sub(index, 1)
            mstore(0x00, taskId)
            mstore(0x20, _seen.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, div(index, FLAGS_PER_WORD))
            let slot := keccak256(0x00, 0x40)
            let word := sload(slot)
            let tag := and(add(round, 1), U32)
            if iszero(eq(shr(FLAGS_PER_WORD, word), tag)) { word := shl(FLAGS_PER_WORD, tag) }
            // slither-disable-next-line incorrect-shift -- Yul shl(shift, value): the flag is 1 shifted by index % 224
            index := shl(mod(index, FLAGS_PER_WORD), 1)
            duplicate := iszero(iszero(and(word, index)))
            if iszero(duplicate) { sstore(slot, or(word, index)) }
        }
        if (duplicate) revert DuplicateSubmission(taskId, round, who);
    }

    /// @dev The checks of a single update, in the batch loop's order, and its dedup flag:
    /// returns the task's state and accumulator words (admitting `who` first when it is new
    /// to an open task).
    function _admitOne(uint256 taskId, uint64 round, address who, uint64 numSamples)
        private
        returns (uint256 st, uint256 rec)
    {
        uint256 m;
        uint256 index;
        uint256 mslot;
        assembly {
            mstore(0x00, taskId)
            mstore(0x20, _state.slot)
            st := sload(keccak256(0x00, 0x40))
            mstore(0x20, _records.slot)
            rec := sload(keccak256(0x00, 0x40))
            mstore(0x20, _members.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, who)
            mslot := keccak256(0x00, 0x40)
            m := sload(mslot)
            index := and(shr(M_CONTRIBUTOR, m), U32)
        }
        _checkOpen(taskId, round, st);
        unchecked {
            uint256 seq = rec & U32;
            uint256 maxUpdates = (st >> ST_MAX_UPDATES) & U32;
            // forge-lint: disable-next-line(unsafe-typecast)
            if (seq - ((st >> ST_START_SEQ) & U32) >= maxUpdates) revert RoundFull(taskId, round, uint32(maxUpdates));
            if (seq == MAX_SEQ) revert TaskExhausted(taskId);
            uint256 maxSamples = (st >> ST_MAX_SAMPLES) & U32;
            // forge-lint: disable-next-line(unsafe-typecast)
            if (numSamples > maxSamples) revert TooManySamples(taskId, numSamples, uint64(maxSamples));
            if (numSamples == 0) revert ZeroSamples(taskId, who);
        }
        if (index == 0) {
            if (st & ST_OPEN == 0) revert NotContributor(taskId, who);
            index = _register(taskId, who, m);
        }
        _flag(taskId, round, who, index);
    }

    /// @dev Admit `who` as the task's next contributor; returns its index + 1.
    function _register(uint256 taskId, address who, uint256 m) private returns (uint256 index1) {
        TaskInfo storage info = _info[taskId];
        uint256 count = info.contributorCount;
        if (count == MAX_CONTRIBUTORS) revert TooManyMembers(taskId, MAX_CONTRIBUTORS);
        index1 = count + 1;
        // forge-lint: disable-next-line(unsafe-typecast)
        info.contributorCount = uint32(index1); // <= MAX_CONTRIBUTORS
        _members[taskId][who] = m | ROLE_CONTRIBUTOR | (index1 << M_CONTRIBUTOR);
        // forge-lint: disable-next-line(unsafe-typecast)
        emit ContributorAdded(taskId, who, uint32(count)); // < MAX_CONTRIBUTORS
    }

    /// @dev Reverts `BadSignature` unless `signature` (65 bytes, or 64 in EIP-2098 form) over
    /// `hash` is `contributor`'s; OpenZeppelin's recovery refuses high-s signatures.
    function _checkSigner(bytes32 hash, address contributor, bytes calldata signature) private pure {
        address recovered;
        ECDSA.RecoverError rerr;
        if (signature.length == 64) {
            // slither-disable-next-line unused-return -- the error argument only details `rerr`, which is checked
            (recovered, rerr,) = ECDSA.tryRecover(hash, bytes32(signature[:32]), bytes32(signature[32:]));
        } else {
            // slither-disable-next-line unused-return -- the error argument only details `rerr`, which is checked
            (recovered, rerr,) = ECDSA.tryRecoverCalldata(hash, signature);
        }
        if (rerr != ECDSA.RecoverError.NoError || recovered != contributor) {
            revert BadSignature(contributor, recovered);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Internals: batches
    // ---------------------------------------------------------------------------------------

    /// @dev The batch-level checks (`UnknownTask`, `WrongRound`, `RoundAlreadySealed`) and the
    /// loop's constants (see the memory map above); returns the task's `seq`. The batch claims
    /// memory from 0x80 on: no memory object is live when `submitBatch` calls this, and the
    /// free-memory pointer is moved past the records buffer (at most one 124-byte record per
    /// 176 bytes of calldata, plus 32 bytes of padding), so later Solidity code never
    /// overwrites the loop's memory. Scratch word 0x20 holds the slot of `_members[taskId]`
    /// during the loop: ecrecover writes the signer to 0x00, so `keccak256(0x00, 0x40)` is the
    /// signer's member slot.
    function _batchContext(uint256 taskId, uint64 round, uint256 first) private view returns (uint256 seq) {
        uint256 st;
        uint256 rec;
        assembly {
            mstore(0x00, taskId)
            mstore(0x20, _state.slot)
            st := sload(keccak256(0x00, 0x40))
            mstore(0x20, _records.slot)
            rec := sload(keccak256(0x00, 0x40))
        }
        _checkOpen(taskId, round, st);
        bytes32 typeHash = UPDATE_TYPEHASH;
        bytes32 domain = _domainSeparatorV4();
        assembly {
            // slither-disable-next-line divide-before-multiply -- the number of whole entries, times the bytes of a record: floor intended
            mstore(0x40, add(B_RECORDS, add(mul(div(sub(calldatasize(), first), ENTRY_BYTES), RECORD_BYTES), 0x20)))
            seq := and(rec, U32)
            let start := and(shr(ST_START_SEQ, st), U32)
            let maxUpdates := and(shr(ST_MAX_UPDATES, st), U32)
            let limit := add(start, maxUpdates)
            if gt(limit, MAX_SEQ) { limit := MAX_SEQ }
            mstore(C_TASK, taskId)
            mstore(C_ROUND, round)
            mstore(C_START, start)
            mstore(C_LIMIT, limit)
            mstore(C_MAX_UPDATES, maxUpdates)
            mstore(C_MAX_SAMPLES_1, sub(and(shr(ST_MAX_SAMPLES, st), U32), 1)) // maxSamples >= 1
            mstore(C_OPEN, iszero(iszero(and(st, ST_OPEN))))
            mstore(C_TAG, and(add(round, 1), U32))
            mstore(C_SEQ, seq)
            // only a batch's first recorded entry can be its round's first: it chains from the seed
            switch eq(seq, start)
            case 0 { mstore(C_HASH, and(rec, not(U32))) }
            default {
                mstore(0x20, round)
                mstore(C_HASH, and(keccak256(0x00, 0x40), not(U32)))
            }
            mstore(0x20, _seen.slot)
            mstore(C_SEEN, keccak256(0x00, 0x40))
            mstore(0x20, _info.slot)
            mstore(C_INFO, keccak256(0x00, 0x40))
            mstore(0x20, _members.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(C_FIRST, first)
            mstore(S_TYPE, typeHash)
            mstore(S_TASK, taskId)
            mstore(S_ROUND, round)
            mstore(S_SAMPLES, 0)
            mstore(S_DEADLINE, 0)
            mstore(T_PREFIX, shl(240, 0x1901))
            mstore(T_DOMAIN, domain)
        }
        _batchSelectors();
    }

    /// @dev Reverts `UnknownTask`, `WrongRound` or `RoundAlreadySealed` unless `st` is the
    /// state of an existing task whose current round `round` is open.
    function _checkOpen(uint256 taskId, uint64 round, uint256 st) private pure {
        if (st == 0) revert UnknownTask(taskId);
        if (round != st & U32) revert WrongRound(taskId, round, uint32(st));
        if (st & ST_SEALED != 0) revert RoundAlreadySealed(taskId, round);
    }

    /// @dev The loop's event topics and skip reasons, from the interface's declarations.
    function _batchSelectors() private pure {
        bytes32 skipped = T_ENTRY_SKIPPED;
        bytes32 added = T_CONTRIBUTOR_ADDED;
        bytes4 expired = Expired.selector;
        bytes4 badSignature = BadSignature.selector;
        bytes4 roundFull = RoundFull.selector;
        bytes4 exhausted = TaskExhausted.selector;
        bytes4 tooManySamples = TooManySamples.selector;
        bytes4 zeroSamples = ZeroSamples.selector;
        bytes4 notContributor = NotContributor.selector;
        bytes4 duplicate = DuplicateSubmission.selector;
        bytes4 tooManyMembers = TooManyMembers.selector;
        assembly {
            mstore(C_TOPIC_SKIPPED, skipped)
            mstore(C_TOPIC_ADDED, added)
            mstore(R_EXPIRED, expired)
            mstore(R_BAD_SIGNATURE, badSignature)
            mstore(R_ROUND_FULL, roundFull)
            mstore(R_EXHAUSTED, exhausted)
            mstore(R_TOO_MANY_SAMPLES, tooManySamples)
            mstore(R_ZERO_SAMPLES, zeroSamples)
            mstore(R_NOT_CONTRIBUTOR, notContributor)
            mstore(R_DUPLICATE, duplicate)
            mstore(R_TOO_MANY_MEMBERS, tooManyMembers)
            mstore(C_HALF_ORDER, HALF_ORDER)
        }
    }

    /// @dev The batch loop over the entries at calldata `[p, end)`, with the accumulator `rec`
    /// (hash | seq; the hash already the seed if the round has no record yet); returns the
    /// accumulator and the end of the packed records at `B_RECORDS`. Per entry: the EIP-712
    /// hash and signer (ecrecover, EIP-2098 split, low s), the checks of a single submission in
    /// its order (any failure: `EntrySkipped` with its selector), the member slot (one cold
    /// read; an open task admits a newcomer), the dedup flag and the record. The dedup word
    /// stays on the stack while consecutive entries share it and is written back when the word
    /// changes and at the end: correct for any order, cheapest when the relayer sorts the
    /// entries by contributor index.
    function _relay(uint256 p, uint256 end) private returns (uint256 h, uint256 seq) {
        assembly {
            // `EntrySkipped(taskId, round, entry, signer, reason)` for the entry at `q`
            function skip(q, signer, reason) {
                mstore(E_HASH, div(sub(q, mload(C_FIRST)), ENTRY_BYTES))
                mstore(E_V, signer)
                mstore(E_R, reason)
                log3(E_HASH, 0x60, mload(C_TOPIC_SKIPPED), mload(C_TASK), mload(C_ROUND))
            }
            // the first check that fails, in a single submission's order
            function reasonOf(signer, count) -> reason {
                reason := mload(R_EXPIRED)
                if iszero(gt(timestamp(), mload(S_DEADLINE))) {
                    reason := mload(R_BAD_SIGNATURE)
                    if signer {
                        reason := mload(R_ROUND_FULL)
                        if lt(sub(count, mload(C_START)), mload(C_MAX_UPDATES)) {
                            reason := mload(R_EXHAUSTED)
                            if lt(count, MAX_SEQ) {
                                reason := mload(R_ZERO_SAMPLES)
                                if mload(S_SAMPLES) { reason := mload(R_TOO_MANY_SAMPLES) }
                            }
                        }
                    }
                }
            }
            // an unknown signer: an open task admits it as its next contributor (index + 1
            // returned), a closed one skips the entry (0 returned)
            function admit(q, signer, mslot) -> index {
                switch mload(C_OPEN)
                case 0 { skip(q, signer, mload(R_NOT_CONTRIBUTOR)) }
                default {
                    let info := sload(mload(C_INFO))
                    let count := shr(224, info)
                    switch eq(count, MAX_CONTRIBUTORS)
                    case 0 {
                        sstore(mload(C_INFO), add(info, shl(224, 1)))
                        index := add(count, 1)
                        sstore(mslot, or(or(sload(mslot), ROLE_CONTRIBUTOR), shl(M_CONTRIBUTOR, index)))
                        mstore(E_HASH, count)
                        log3(E_HASH, 0x20, mload(C_TOPIC_ADDED), mload(C_TASK), signer)
                    }
                    default { skip(q, signer, mload(R_TOO_MANY_MEMBERS)) }
                }
            }

            h := mload(C_HASH)
            seq := mload(C_SEQ)
            let out := B_RECORDS
            let cur := not(0) // index of the dedup word held in `word`; none yet
            let word := 0
            for {} lt(p, end) { p := add(p, ENTRY_BYTES) } {
                calldatacopy(S_CONTENT, p, 0x60) // contentHash, cidDigest, tensorRoot
                // numSamples and deadline, right-aligned in their words (whose other bytes stay 0)
                calldatacopy(add(S_SAMPLES, 24), add(p, 0x60), 8)
                calldatacopy(add(S_DEADLINE, 24), add(p, 0x68), 8)
                mstore(T_STRUCT, keccak256(S_TYPE, 0x100))
                mstore(E_HASH, keccak256(T_PREFIX, 0x42))
                let signer := calldataload(add(p, 0x90)) // vs
                mstore(E_V, add(27, shr(255, signer)))
                mstore(E_R, calldataload(add(p, 0x70)))
                signer := shr(1, shl(1, signer)) // s
                mstore(E_S, signer)
                // a high s is the malleable twin of a low-s signature: no signer
                signer := iszero(gt(signer, mload(C_HALF_ORDER)))
                pop(staticcall(gas(), 1, E_HASH, 0x80, 0x00, 0x20))
                // nothing returned: the signature recovers no address
                signer := mul(mload(0x00), and(signer, eq(returndatasize(), 0x20)))
                if or(
                    or(gt(timestamp(), mload(S_DEADLINE)), iszero(signer)),
                    or(iszero(lt(seq, mload(C_LIMIT))), gt(sub(mload(S_SAMPLES), 1), mload(C_MAX_SAMPLES_1)))
                ) {
                    skip(p, signer, reasonOf(signer, seq))
                    continue
                }
                // 0x00 holds the signer (ecrecover's output), 0x20 the slot of _members[taskId]
                let index := and(shr(M_CONTRIBUTOR, sload(keccak256(0x00, 0x40))), U32)
                if iszero(index) {
                    index := admit(p, signer, keccak256(0x00, 0x40))
                    if iszero(index) { continue }
                }
                index := sub(index, 1)
                if iszero(eq(div(index, FLAGS_PER_WORD), cur)) {
                    if iszero(eq(cur, not(0))) {
                        mstore(C_SEEN_KEY, cur)
                        sstore(keccak256(C_SEEN_KEY, 0x40), word)
                    }
                    cur := div(index, FLAGS_PER_WORD)
                    mstore(C_SEEN_KEY, cur)
                    word := sload(keccak256(C_SEEN_KEY, 0x40))
                    // another round's flags count as none
                    if iszero(eq(shr(FLAGS_PER_WORD, word), mload(C_TAG))) {
                        word := shl(FLAGS_PER_WORD, mload(C_TAG))
                    }
                }
                // slither-disable-next-line incorrect-shift -- Yul shl(shift, value): the flag is 1 shifted by index % 224
                index := shl(mod(index, FLAGS_PER_WORD), 1) // the flag
                if and(word, index) {
                    skip(p, signer, mload(R_DUPLICATE))
                    continue
                }
                word := or(word, index)
                // record hash: words 1..6 of the struct become [previous, contributor, ...]
                mstore(S_TASK, h)
                mstore(S_ROUND, signer)
                h := and(keccak256(S_TASK, 0xc0), not(U32))
                seq := add(seq, 1)
                mcopy(S_TASK, C_TASK, 0x40)
                // packed record: contributor | contentHash | cidDigest | tensorRoot | numSamples
                mstore(out, shl(96, signer))
                calldatacopy(add(out, 20), p, 0x68)
                out := add(out, RECORD_BYTES)
            }
            if iszero(eq(cur, not(0))) {
                mstore(C_SEEN_KEY, cur)
                sstore(keccak256(C_SEEN_KEY, 0x40), word)
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Internals: attestation
    // ---------------------------------------------------------------------------------------

    /// @dev Checks readiness, seals (stamp = now, sealedSeq = seq) and announces the records
    /// sealed; returns the new state word and the sealed record hash.
    function _seal(uint256 taskId, uint64 round, uint256 st) private returns (uint256, bytes28 sealedHash) {
        uint256 rec = _records[taskId];
        uint256 seq = rec & U32;
        uint256 count = seq - ((st >> ST_START_SEQ) & U32);
        _checkReady(taskId, round, st, count);
        st = (st & ~((U40 << ST_STAMP) | (U32 << ST_SEALED_SEQ))) | ST_SEALED
            | (uint256(uint40(block.timestamp)) << ST_STAMP) | (seq << ST_SEALED_SEQ);
        _state[taskId] = st;
        sealedHash = count == 0 ? _recordSeed(taskId, round) : bytes28(bytes32(rec));
        // forge-lint: disable-next-line(unsafe-typecast)
        emit RoundSealed(taskId, round, uint32(count), sealedHash); // a difference of uint32 counters
        return (st, sealedHash);
    }

    function _checkReady(uint256 taskId, uint64 round, uint256 st, uint256 count) private view {
        uint256 maxUpdates = (st >> ST_MAX_UPDATES) & U32;
        if (count >= maxUpdates) return;
        TaskInfo storage info = _info[taskId];
        uint256 roundDuration = info.roundDuration;
        if (roundDuration == 0) {
            uint32 minUpdates = info.minUpdates;
            if (count >= minUpdates) return;
            // forge-lint: disable-next-line(unsafe-typecast)
            revert RoundNotReady(taskId, round, uint32(count), minUpdates, 0); // count < minUpdates
        }
        uint256 deadline = uint40(st >> ST_STAMP) + roundDuration;
        // A validator can shift the seal by at most the block-time drift it controls (seconds);
        // late updates are still recorded and judged LATE, so nothing is lost by that drift.
        // slither-disable-next-line timestamp
        if (block.timestamp > deadline) return; // forge-lint: disable-line(block-timestamp)
        // forge-lint: disable-next-line(unsafe-typecast)
        revert RoundNotReady(taskId, round, uint32(count), uint32(maxUpdates), deadline); // count < maxUpdates
    }

    /// @dev The task's state word and the caller's member slot and word: reverts
    /// `UnknownTask`, `WrongRound` (not the current round) or `NotValidator`.
    function _attester(uint256 taskId, uint64 round) private view returns (uint256 st, uint256 mslot, uint256 m) {
        assembly {
            mstore(0x00, taskId)
            mstore(0x20, _state.slot)
            st := sload(keccak256(0x00, 0x40))
            mstore(0x20, _members.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, caller())
            mslot := keccak256(0x00, 0x40)
            m := sload(mslot)
        }
        if (st == 0) revert UnknownTask(taskId);
        if (round != st & U32) revert WrongRound(taskId, round, uint32(st));
        if (m & ROLE_VALIDATOR == 0) revert NotValidator(taskId, msg.sender);
    }

    /// @dev The attempt running now, after reverting `AlreadyAttested` if the member `m`
    /// already attested in it.
    function _notYetAttested(uint256 taskId, uint64 round, uint256 st, uint256 m)
        private
        view
        returns (uint32 attempt)
    {
        attempt = _attempt(st);
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        if (_attestedTag(m) == _memberTag(st, attempt)) revert AlreadyAttested(taskId, round, msg.sender, attempt);
    }

    /// @dev Probe the result table for `digest` in `attempt` of the current round (its epoch
    /// `round << 32 | attempt`), from `digest % validatorCount`: the storage slot holding it
    /// (with its count), else the first free slot (count 0, free), else free = false (every
    /// slot holds another live result). Within one epoch live slots stay live and a result is
    /// stored in the first free slot of its probe sequence, so the search stops at the first
    /// free slot. Deterministic: every validator of one digest meets in one slot.
    function _probe(uint256 taskId, uint256 st, bytes32 digest, uint32 attempt)
        private
        view
        returns (uint256 slot, uint256 count, bool free)
    {
        uint256 epoch = _epoch(st, attempt);
        assembly {
            let n := and(shr(ST_VALIDATORS, st), 0xff) // >= 1: only validators get here
            mstore(0x00, taskId)
            mstore(0x20, _results.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            let key := shr(72, digest)
            let i := mod(digest, n)
            for { let k := 0 } lt(k, n) { k := add(k, 1) } {
                mstore(0x00, i)
                slot := keccak256(0x00, 0x40)
                let tally := sload(slot)
                count := and(tally, 0xff)
                // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
                if or(iszero(count), iszero(eq(and(shr(8, tally), 0xffffffffffffffff), epoch))) {
                    count := 0
                    free := 1
                    break
                }
                if eq(shr(72, tally), key) { break }
                count := 0
                i := add(i, 1)
                // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
                if eq(i, n) { i := 0 }
            }
        }
    }

    /// @dev The error of `confirmRound`'s failed check number `fault`, with its facts.
    function _confirmFault(uint256 fault, uint256 taskId, uint64 round, bytes32 digest, uint256 st, uint256 attempt)
        private
        view
    {
        if (fault == 1) revert UnknownTask(taskId);
        if (fault == 2) revert WrongRound(taskId, round, uint32(st));
        if (fault == 3) revert NotValidator(taskId, msg.sender);
        if (fault == 4) revert RoundNotSealed(taskId, round);
        // forge-lint: disable-next-line(unsafe-typecast)
        if (fault == 5) revert AlreadyAttested(taskId, round, msg.sender, uint32(attempt)); // <= U32
        // forge-lint: disable-next-line(unsafe-typecast)
        revert UnknownResult(taskId, round, digest, uint32(attempt)); // <= U32
    }

    /// @dev Count one attestation (`count` with it) in table slot `slot`: `RoundAttested`, then
    /// either the final state (quorum reached: the digest kept, the next round open,
    /// `RoundFinalized`) or the tally slot and the validator's once-per-attempt tag (member
    /// slot `mslot`, word `m`). The finalising attestation writes neither: the round closes.
    function _vote(
        uint256 taskId,
        uint64 round,
        uint256 st,
        uint256 mslot,
        uint256 m,
        bytes32 digest,
        uint32 attempt,
        uint256 slot,
        uint256 count
    ) private {
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        bool finalises = count == (st >> ST_QUORUM) & 0xff;
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        if (finalises && st & U32 == U32) revert TaskExhausted(taskId); // round 2**32 - 1 is the last
        bytes32 attested = T_ROUND_ATTESTED;
        bytes32 finalized = T_ROUND_FINALIZED;
        assembly ("memory-safe") {
            let data := mload(0x40)
            mstore(data, digest)
            mstore(add(data, 0x20), attempt)
            mstore(add(data, 0x40), count)
            log4(data, 0x60, attested, taskId, round, caller())
            switch finalises
            // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
            case 0 {
                sstore(slot, or(or(shl(72, shr(72, digest)), shl(40, and(st, U32))), or(shl(8, attempt), count)))
                // the tag (round + 1) << 32 | attempt, at M_ATTESTED (48)
                sstore(
                    mslot,
                    or(and(m, not(M_ATTESTED_MASK)), or(shl(80, add(and(st, U32), 1)), shl(M_ATTESTED, attempt)))
                )
            }
            default {
                mstore(0x00, taskId)
                mstore(0x20, _finalDigest.slot)
                mstore(0x20, keccak256(0x00, 0x40))
                mstore(0x00, round)
                sstore(keccak256(0x00, 0x40), digest)
                // round + 1, stamp = now, startSeq = sealedSeq, the seal flag cleared
                let next := and(st, not(or(or(U32, shl(ST_STAMP, U40)), or(shl(ST_START_SEQ, U32), ST_SEALED))))
                next := or(next, add(and(st, U32), 1))
                next := or(next, shl(ST_STAMP, and(timestamp(), U40)))
                next := or(next, shl(ST_START_SEQ, shr(ST_SEALED_SEQ, st)))
                mstore(0x00, taskId)
                mstore(0x20, _state.slot)
                sstore(keccak256(0x00, 0x40), next)
                mstore(data, digest)
                mstore(add(data, 0x20), attempt)
                log3(data, 0x40, finalized, taskId, round)
            }
        }
        // After every write: the court (set by the task's owner) may refuse the attestation.
        if (st & ST_COURT != 0) {
            // forge-lint: disable-next-line(unsafe-typecast)
            uint32 firstSeq = uint32(((st >> ST_START_SEQ) & U32) + 1); // seq < 2**32 - 1 when recorded
            ICourtHooks(_court[taskId]).onAttest(taskId, round, msg.sender, digest, attempt, finalises, firstSeq);
        }
    }

    /// @dev The attempt running now: one more each `attestWindow` seconds since the seal
    /// (capped at 2**32 - 1, which no window of at least a second reaches in 136 years).
    function _attempt(uint256 st) private view returns (uint32) {
        uint256 attempt = (block.timestamp - uint40(st >> ST_STAMP)) / ((st >> ST_WINDOW) & U32);
        // forge-lint: disable-next-line(unsafe-typecast)
        return attempt > U32 ? type(uint32).max : uint32(attempt); // capped
    }

    function _sealedCount(uint256 st) private pure returns (uint32) {
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint32((st >> ST_SEALED_SEQ) - ((st >> ST_START_SEQ) & U32)); // seq only grows
    }

    /// @dev The sealed round's record hash: the seed if it sealed no record.
    function _sealedHash(uint256 taskId, uint64 round, uint256 st) private view returns (bytes28) {
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        return _sealedCount(st) == 0 ? _recordSeed(taskId, round) : bytes28(bytes32(_records[taskId]));
    }

    /// @dev The result table's epoch of `attempt` of the current round.
    function _epoch(uint256 st, uint32 attempt) private pure returns (uint256) {
        return ((st & U32) << 32) | attempt;
    }

    /// @dev A member's attested tag for `attempt` of the current round: (round + 1) << 32 | attempt.
    function _memberTag(uint256 st, uint32 attempt) private pure returns (uint256) {
        return (((st & U32) + 1) << 32) | attempt;
    }

    function _attestedTag(uint256 m) private pure returns (uint256) {
        return (m & M_ATTESTED_MASK) >> M_ATTESTED;
    }

    /// @dev The dedup words' tag of the current round: uint32(round + 1).
    function _tag(uint256 st) private pure returns (uint256) {
        return ((st & U32) + 1) & U32;
    }

    // ---------------------------------------------------------------------------------------
    // Internals: lookups and hashes
    // ---------------------------------------------------------------------------------------

    function _checkTaskOwner(uint256 taskId) private view {
        address owner = _info[taskId].owner;
        if (owner == address(0)) revert UnknownTask(taskId);
        if (owner != msg.sender) revert NotTaskOwner(taskId, msg.sender);
    }

    function _existing(uint256 taskId) private view returns (uint256 st) {
        st = _state[taskId];
        // slither-disable-next-line incorrect-equality -- a field of a packed word or a counter, compared exactly by design; the timestamp beside it in the word is no money
        if (st == 0) revert UnknownTask(taskId);
    }

    function _currentRound(uint256 taskId, uint64 round) private view returns (uint256 st) {
        st = _existing(taskId);
        uint64 current = uint32(st);
        if (round != current) revert WrongRound(taskId, round, current);
    }

    /// @dev The EIP-712 digest of an `Update`: `_hashTypedDataV4(keccak256(abi.encode(
    /// UPDATE_TYPEHASH, taskId, round, contentHash, cidDigest, tensorRoot, numSamples,
    /// deadline)))`, the struct hashed in memory past the free pointer (nothing allocated).
    function _hashUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples,
        uint64 deadline
    ) private view returns (bytes32) {
        bytes32 typeHash = UPDATE_TYPEHASH;
        bytes32 structHash;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typeHash)
            mstore(add(m, 32), taskId)
            mstore(add(m, 64), and(round, 0xffffffffffffffff))
            mstore(add(m, 96), contentHash)
            mstore(add(m, 128), cidDigest)
            mstore(add(m, 160), tensorRoot)
            mstore(add(m, 192), and(numSamples, 0xffffffffffffffff))
            mstore(add(m, 224), and(deadline, 0xffffffffffffffff))
            structHash := keccak256(m, 256)
        }
        return _hashTypedDataV4(structHash);
    }

    /// @dev `bytes28(keccak256(abi.encode(taskId, round)))`, hashed in scratch space.
    function _recordSeed(uint256 taskId, uint64 round) private pure returns (bytes28 seed) {
        assembly ("memory-safe") {
            mstore(0x00, taskId)
            mstore(0x20, and(round, 0xffffffffffffffff))
            seed := and(keccak256(0x00, 0x40), not(0xffffffff))
        }
    }

    /// @dev `bytes28(keccak256(abi.encode(previous, contributor, contentHash, cidDigest,
    /// tensorRoot, numSamples)))`, hashed in memory past the free pointer.
    function _recordStep(
        bytes28 previous,
        address contributor,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) private pure returns (bytes28 h) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            // values narrower than a word are cleaned: assembly gets no clean-bits guarantee
            mstore(m, and(previous, not(0xffffffff))) // bytes28, left-aligned
            mstore(add(m, 32), and(contributor, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(m, 64), contentHash)
            mstore(add(m, 96), cidDigest)
            mstore(add(m, 128), tensorRoot)
            mstore(add(m, 160), and(numSamples, 0xffffffffffffffff))
            h := and(keccak256(m, 192), not(0xffffffff))
        }
    }

    function _resultDigest(uint256 taskId, uint64 round, RoundResult calldata result) private pure returns (bytes32) {
        return keccak256(abi.encode(taskId, round, result));
    }
}
