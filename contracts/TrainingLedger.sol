// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ITrainingLedger} from "./ITrainingLedger.sol";

/// @title TrainingLedger (v2) — running record hashes of federated-training updates and attested round results
/// @notice See {ITrainingLedger} for the user-facing documentation of every function.
/// @dev Storage is laid out for the hot paths (docs/ledger_v2.md has the byte-level definitions
/// and the measured gas beside each path's floor):
///  - `_state[taskId]`: ONE slot with everything a submission checks (round, limits, flags);
///    submissions only read it.
///  - `_records[taskId]`: ONE slot, the running record hash (bytes28) and the task's update
///    counter `seq` (uint32). Never reset: the first update of a round (`seq == startSeq`)
///    chains from `recordSeed(taskId, round)` instead of the stored hash.
///  - `_members[taskId][account]`: roles, contributor index, validator index and the attested
///    (round, attempt) mark.
///  - `_seen[taskId][word]`: one-update-per-round flags, 224 contributors a word, tagged with
///    the round (a word of another round counts as empty), so no slot is new per update.
///  - `_results[taskId][validatorIndex]`: the attestation tally, one reused slot per validator
///    (pre-written by `addValidator`): bytes23 digest prefix | uint64 epoch (round << 32 |
///    attempt) | uint8 count; a slot of another epoch is free.
///  - `_finalDigest[taskId][round]`: the one new slot per round, written when it is final.
contract TrainingLedger is ITrainingLedger, EIP712 {
    /// @inheritdoc ITrainingLedger
    bytes32 public constant UPDATE_TYPEHASH = keccak256(
        "Update(uint256 taskId,uint64 round,bytes32 contentHash,bytes32 cidDigest,bytes32 tensorRoot,uint64 numSamples,uint64 deadline)"
    );

    uint8 private constant ROLE_CONTRIBUTOR = 1;
    uint8 private constant ROLE_VALIDATOR = 2;
    uint256 private constant ENTRY_BYTES = 176;
    uint256 private constant RECORD_BYTES = 124;
    uint256 private constant FLAGS_PER_WORD = 224;
    uint256 private constant FLAG_MASK = (uint256(1) << 224) - 1;
    uint8 private constant MAX_VALIDATORS = 255;
    uint32 private constant MAX_SEQ = type(uint32).max;

    /// @dev The hot per-task slot: 4 + 5 + 4 + 4 + 4 + 4 + 1 + 1 + 1 + 1 = 29 bytes.
    struct TaskState {
        uint32 round; // current round
        uint40 stamp; // round start while open; seal time once sealed
        uint32 maxUpdates; // >= 1 for every existing task: 0 means "no such task"
        uint32 maxSamples;
        uint32 startSeq; // the task's seq when the current round opened
        uint32 attestWindow;
        uint8 quorum;
        bool open;
        bool isSealed;
        uint8 validatorCount;
    }

    /// @dev The running record hash and the task's update counter.
    struct Records {
        bytes28 hash;
        uint32 seq;
    }

    /// @dev Cold per-task data: owner, minUpdates, roundDuration, contributorCount share a slot.
    struct TaskInfo {
        address owner;
        uint32 minUpdates;
        uint32 roundDuration;
        uint32 contributorCount;
        bytes32 modelHash;
        string modelCid;
        string specCid;
    }

    /// @dev One packed entry of `submitBatch`, read and recovered.
    struct Entry {
        bytes32 contentHash;
        bytes32 cidDigest;
        bytes32 tensorRoot;
        uint64 numSamples;
        uint64 deadline;
        address signer;
    }

    /// @dev One slot per (task, account).
    struct Member {
        uint8 roles;
        uint32 contributorIndex; // index + 1, 0 = none
        uint8 validatorIndex; // index + 1, 0 = none
        uint32 attestedRound; // round + 1 of the last attestation
        uint32 attestedAttempt;
    }

    uint256 private _taskCount;
    mapping(uint256 taskId => TaskState) private _state;
    mapping(uint256 taskId => Records) private _records;
    mapping(uint256 taskId => TaskInfo) private _info;
    mapping(uint256 taskId => mapping(address account => Member)) private _members;
    mapping(uint256 taskId => mapping(uint256 word => uint256 flags)) private _seen;
    mapping(uint256 taskId => mapping(uint256 validatorIndex => uint256 tally)) private _results;
    mapping(uint256 taskId => mapping(uint64 round => bytes32 digest)) private _finalDigest;

    constructor() EIP712("TrainingLedger", "2") {}

    modifier onlyTaskOwner(uint256 taskId) {
        _checkTaskOwner(taskId);
        _;
    }

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
        if (cfg.roundDuration > type(uint32).max) revert InvalidConfig("roundDuration exceeds 2**32 - 1");
        if (cfg.maxSamples == 0) revert InvalidConfig("maxSamples is zero");
        if (cfg.maxSamples > type(uint32).max) revert InvalidConfig("maxSamples exceeds 2**32 - 1");
        if (cfg.attestWindow == 0) revert InvalidConfig("attestWindow is zero");
        if (cfg.attestWindow > type(uint32).max) revert InvalidConfig("attestWindow exceeds 2**32 - 1");

        taskId = ++_taskCount;
        _state[taskId] = TaskState({
            round: 0,
            stamp: uint40(block.timestamp),
            maxUpdates: cfg.maxUpdates,
            maxSamples: uint32(cfg.maxSamples),
            startSeq: 0,
            attestWindow: uint32(cfg.attestWindow),
            quorum: cfg.quorum,
            open: cfg.open,
            isSealed: false,
            validatorCount: 0
        });
        _records[taskId] = Records({hash: _recordSeed(taskId, 0), seq: 0});
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
    function addContributor(uint256 taskId, address who) external onlyTaskOwner(taskId) {
        if (who == address(0)) revert ZeroAddress();
        Member storage m = _members[taskId][who];
        if (m.roles & ROLE_CONTRIBUTOR != 0) revert AlreadyAdded(taskId, who);
        _admitContributor(taskId, who, m);
    }

    /// @inheritdoc ITrainingLedger
    function addValidator(uint256 taskId, address who) external onlyTaskOwner(taskId) {
        if (who == address(0)) revert ZeroAddress();
        Member storage m = _members[taskId][who];
        if (m.roles & ROLE_VALIDATOR != 0) revert AlreadyAdded(taskId, who);
        TaskState storage s = _state[taskId];
        uint8 index = s.validatorCount;
        if (index == MAX_VALIDATORS) revert TooManyMembers(taskId, MAX_VALIDATORS);
        s.validatorCount = index + 1;
        m.roles |= ROLE_VALIDATOR;
        m.validatorIndex = index + 1;
        // A stale, non-zero tally (epoch 2**64 - 1 never runs): attestations rewrite it
        // instead of paying for a new slot.
        _results[taskId][index] = uint256(type(uint64).max) << 8;
        emit ValidatorAdded(taskId, who, index);
    }

    /// @inheritdoc ITrainingLedger
    function setEncryptionKey(uint256 taskId, bytes32 publicKey) external {
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        if (_members[taskId][msg.sender].roles & ROLE_VALIDATOR == 0) revert NotValidator(taskId, msg.sender);
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
        // slither-disable-next-line divide-before-multiply -- the entry count; the length is then checked to be exactly n * ENTRY_BYTES
        uint256 n = entries.length / ENTRY_BYTES;
        if (n == 0 || entries.length % ENTRY_BYTES != 0) revert BadBatch(entries.length);
        TaskState memory st = _openRound(taskId, round);
        Records memory rec = _records[taskId];
        firstUpdateId = (taskId << 32) | (uint256(rec.seq) + 1);
        // 32 bytes of slack: each record's last word overruns its 124 bytes by 24
        bytes memory records = new bytes(n * RECORD_BYTES + 32);
        for (uint256 i; i < n; ++i) {
            Entry memory e = _readEntry(taskId, round, entries, i * ENTRY_BYTES);
            bytes4 err;
            // slither-disable-next-line timestamp
            if (block.timestamp > e.deadline) {
                // forge-lint: disable-line(block-timestamp)
                err = Expired.selector;
            } else if (e.signer == address(0)) {
                err = BadSignature.selector;
            } else {
                err = _admit(taskId, st, rec, e.signer, e.numSamples);
            }
            if (err != bytes4(0)) {
                emit EntrySkipped(taskId, round, i, e.signer, err);
                continue;
            }
            _appendRecord(records, recorded, e);
            // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
            rec.hash = _recordStep(
                rec.seq == st.startSeq ? _recordSeed(taskId, round) : rec.hash,
                e.signer,
                e.contentHash,
                e.cidDigest,
                e.tensorRoot,
                e.numSamples
            );
            unchecked {
                ++rec.seq; // bounded by _admit's TaskExhausted check
                ++recorded;
            }
        }
        if (recorded == 0) return (0, 0);
        _records[taskId] = rec;
        assembly ("memory-safe") {
            mstore(records, mul(recorded, RECORD_BYTES)) // only the recorded entries
        }
        emit UpdatesRelayed(taskId, round, firstUpdateId, records);
    }

    // ---------------------------------------------------------------------------------------
    // Attestation
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITrainingLedger
    function sealRound(uint256 taskId, uint64 round) external {
        TaskState memory st = _existing(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        if (_members[taskId][msg.sender].roles & ROLE_VALIDATOR == 0) revert NotValidator(taskId, msg.sender);
        if (st.isSealed) revert RoundAlreadySealed(taskId, round);
        _seal(taskId, st);
    }

    /// @inheritdoc ITrainingLedger
    function attestRound(uint256 taskId, uint64 round, RoundResult calldata result) external {
        TaskState memory st = _existing(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        Member memory m = _members[taskId][msg.sender];
        if (m.roles & ROLE_VALIDATOR == 0) revert NotValidator(taskId, msg.sender);
        if (!st.isSealed) st = _seal(taskId, st);
        Records memory rec = _records[taskId];
        bytes28 sealedHash = _roundHash(taskId, st, rec);
        uint32 sealedCount = rec.seq - st.startSeq;
        if (result.recordHash != sealedHash || result.updateCount != sealedCount) {
            revert RecordsMismatch(taskId, round, sealedHash, sealedCount, result.recordHash, result.updateCount);
        }
        bytes32 digest = _resultDigest(taskId, round, result);
        (uint32 attempt, uint256 slot, uint8 count, bool proposed) = _tally(taskId, round, st, m, digest, true);
        if (proposed) emit ResultProposed(taskId, round, digest, attempt, result);
        _record(taskId, round, st, digest, attempt, slot, count);
    }

    /// @inheritdoc ITrainingLedger
    function confirmRound(uint256 taskId, uint64 round, bytes32 digest) external {
        TaskState memory st = _existing(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        Member memory m = _members[taskId][msg.sender];
        if (m.roles & ROLE_VALIDATOR == 0) revert NotValidator(taskId, msg.sender);
        if (!st.isSealed) revert RoundNotSealed(taskId, round);
        (uint32 attempt, uint256 slot, uint8 count,) = _tally(taskId, round, st, m, digest, false);
        _record(taskId, round, st, digest, attempt, slot, count);
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
        return _existing(taskId).round;
    }

    /// @inheritdoc ITrainingLedger
    function getTask(uint256 taskId) external view returns (TaskView memory t) {
        TaskState memory s = _existing(taskId);
        TaskInfo storage info = _info[taskId];
        Records memory rec = _records[taskId];
        t.owner = info.owner;
        t.modelHash = info.modelHash;
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        t.lastFinalDigest = s.round == 0 ? bytes32(0) : _finalDigest[taskId][s.round - 1];
        t.modelCid = info.modelCid;
        t.specCid = info.specCid;
        t.minUpdates = info.minUpdates;
        t.maxUpdates = s.maxUpdates;
        t.quorum = s.quorum;
        t.roundDuration = info.roundDuration;
        t.open = s.open;
        t.maxSamples = s.maxSamples;
        t.attestWindow = s.attestWindow;
        t.currentRound = s.round;
        t.roundStart = s.stamp;
        t.updateCount = rec.seq - s.startSeq;
        t.isSealed = s.isSealed;
        t.updates = rec.seq;
        t.contributorCount = info.contributorCount;
        t.validatorCount = s.validatorCount;
    }

    /// @inheritdoc ITrainingLedger
    function getRound(uint256 taskId, uint64 round) external view returns (RoundView memory r) {
        TaskState memory s = _existing(taskId);
        if (round > s.round) revert UnknownRound(taskId, round, s.round);
        if (round < s.round) {
            r.state = RoundState.Final;
            r.finalDigest = _finalDigest[taskId][round];
            return r;
        }
        Records memory rec = _records[taskId];
        r.updateCount = rec.seq - s.startSeq;
        r.recordHash = _roundHash(taskId, s, rec);
        if (s.isSealed) {
            r.state = RoundState.Sealed;
            r.sealedAt = s.stamp;
            r.attempt = _attempt(s);
            r.attemptEndsAt = uint64(s.stamp) + (uint64(r.attempt) + 1) * s.attestWindow;
        } else {
            r.state = RoundState.Open;
            r.startedAt = s.stamp;
            uint32 duration = _info[taskId].roundDuration;
            r.deadline = duration == 0 ? 0 : uint64(s.stamp) + duration;
        }
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
        return _members[taskId][who].roles & ROLE_CONTRIBUTOR != 0;
    }

    /// @inheritdoc ITrainingLedger
    function isValidator(uint256 taskId, address who) external view returns (bool) {
        return _members[taskId][who].roles & ROLE_VALIDATOR != 0;
    }

    /// @inheritdoc ITrainingLedger
    function hasSubmitted(uint256 taskId, uint64 round, address who) external view returns (bool) {
        TaskState memory st = _existing(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        uint32 index = _members[taskId][who].contributorIndex;
        if (index == 0) return false;
        uint256 word = _seen[taskId][(index - 1) / FLAGS_PER_WORD];
        if (word >> FLAGS_PER_WORD != uint256(st.round) + 1) return false;
        return (word >> ((index - 1) % FLAGS_PER_WORD)) & 1 == 1;
    }

    /// @inheritdoc ITrainingLedger
    function hasAttested(uint256 taskId, uint64 round, address who) external view returns (bool) {
        TaskState memory st = _existing(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        if (!st.isSealed) return false;
        Member memory m = _members[taskId][who];
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        return m.attestedRound == st.round + 1 && m.attestedAttempt == _attempt(st);
    }

    /// @inheritdoc ITrainingLedger
    function attestationCount(uint256 taskId, uint64 round, bytes32 digest) external view returns (uint256) {
        TaskState memory st = _existing(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        if (!st.isSealed) return 0;
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        if (st.validatorCount == 0) return 0;
        (,, uint8 count) = _find(taskId, st, digest, (uint64(st.round) << 32) | _attempt(st));
        return count;
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
        if (round >= _existing(taskId).round) return false;
        if (_finalDigest[taskId][round] != _resultDigest(taskId, round, result)) return false;
        return MerkleProof.verifyCalldata(proof, result.verdictRoot, leaf);
    }

    // ---------------------------------------------------------------------------------------
    // Internals: updates
    // ---------------------------------------------------------------------------------------

    /// @dev A single update, by `submitUpdate` or `submitUpdateFor`: checks, record, event.
    function _submitOne(
        uint256 taskId,
        uint64 round,
        address who,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) internal returns (uint256 updateId) {
        TaskState memory st = _openRound(taskId, round);
        Records memory rec = _records[taskId];
        _revertFor(_admit(taskId, st, rec, who, numSamples), taskId, round, who, numSamples, st);
        updateId = _append(taskId, round, st, rec, who, contentHash, cidDigest, tensorRoot, numSamples);
        emit UpdateSubmitted(taskId, round, who, updateId, contentHash, cidDigest, tensorRoot, numSamples);
    }

    /// @dev Reverts `BadSignature` unless `signature` (65 bytes, or 64 in EIP-2098 form) over
    /// `hash` is `contributor`'s.
    function _checkSigner(bytes32 hash, address contributor, bytes calldata signature) internal pure {
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

    /// @dev The batch-level checks every submission path starts with.
    function _openRound(uint256 taskId, uint64 round) internal view returns (TaskState memory st) {
        st = _existing(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        if (st.isSealed) revert RoundAlreadySealed(taskId, round);
    }

    /// @dev The per-update checks of every path, and the dedup flag: zero when `who` may record
    /// an update now (its flag is then set and, in an open task, `who` admitted), else the
    /// selector of the error a single submission reverts with. `rec` is the accumulator as the
    /// caller holds it (batches keep it in memory).
    function _admit(uint256 taskId, TaskState memory st, Records memory rec, address who, uint64 numSamples)
        internal
        returns (bytes4)
    {
        if (rec.seq - st.startSeq >= st.maxUpdates) return RoundFull.selector;
        if (rec.seq == MAX_SEQ) return TaskExhausted.selector;
        if (numSamples > st.maxSamples) return TooManySamples.selector;
        if (numSamples == 0) return ZeroSamples.selector;
        Member storage m = _members[taskId][who];
        uint32 index = m.contributorIndex;
        if (index == 0 || m.roles & ROLE_CONTRIBUTOR == 0) {
            if (!st.open) return NotContributor.selector;
            index = _admitContributor(taskId, who, m);
        }
        uint256 wordIndex = (index - 1) / FLAGS_PER_WORD;
        uint256 bit = uint256(1) << ((index - 1) % FLAGS_PER_WORD);
        uint256 tag = uint256(st.round) + 1;
        uint256 word = _seen[taskId][wordIndex];
        if (word >> FLAGS_PER_WORD != tag) word = tag << FLAGS_PER_WORD; // another round's flags
        if (word & bit != 0) return DuplicateSubmission.selector;
        _seen[taskId][wordIndex] = word | bit;
        return bytes4(0);
    }

    /// @dev A single submission's refusal as its error, with the facts.
    function _revertFor(bytes4 err, uint256 taskId, uint64 round, address who, uint64 numSamples, TaskState memory st)
        internal
        pure
    {
        if (err == bytes4(0)) return;
        if (err == RoundFull.selector) revert RoundFull(taskId, round, st.maxUpdates);
        if (err == TaskExhausted.selector) revert TaskExhausted(taskId);
        if (err == TooManySamples.selector) revert TooManySamples(taskId, numSamples, st.maxSamples);
        if (err == ZeroSamples.selector) revert ZeroSamples(taskId, who);
        if (err == NotContributor.selector) revert NotContributor(taskId, who);
        revert DuplicateSubmission(taskId, round, who);
    }

    /// @dev Chain one record into the accumulator and store it; returns the update's id.
    function _append(
        uint256 taskId,
        uint64 round,
        TaskState memory st,
        Records memory rec,
        address who,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) internal returns (uint256 updateId) {
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        bytes28 prev = rec.seq == st.startSeq ? _recordSeed(taskId, round) : rec.hash;
        uint32 seq = rec.seq + 1;
        _records[taskId] =
            Records({hash: _recordStep(prev, who, contentHash, cidDigest, tensorRoot, numSamples), seq: seq});
        updateId = (taskId << 32) | seq;
    }

    /// @dev Entry `off` of a packed batch, with its signer (zero when the signature does not
    /// recover). `submitBatch` checked that `entries` holds whole 176-byte entries, so every
    /// field read here lies inside it.
    function _readEntry(uint256 taskId, uint64 round, bytes calldata entries, uint256 off)
        internal
        view
        returns (Entry memory e)
    {
        bytes32 r;
        bytes32 vs;
        assembly ("memory-safe") {
            let p := add(entries.offset, off)
            mstore(e, calldataload(p)) // contentHash
            mstore(add(e, 32), calldataload(add(p, 32))) // cidDigest
            mstore(add(e, 64), calldataload(add(p, 64))) // tensorRoot
            mstore(add(e, 96), shr(192, calldataload(add(p, 96)))) // numSamples (uint64)
            mstore(add(e, 128), shr(192, calldataload(add(p, 104)))) // deadline (uint64)
            r := calldataload(add(p, 112))
            vs := calldataload(add(p, 144))
        }
        bytes32 hash = _hashUpdate(taskId, round, e.contentHash, e.cidDigest, e.tensorRoot, e.numSamples, e.deadline);
        // slither-disable-next-line unused-return -- a failed recovery returns address(0), which no member is
        (e.signer,,) = ECDSA.tryRecover(hash, r, vs);
    }

    /// @dev Write record `k` (124 packed bytes) of an `UpdatesRelayed` event into `records`.
    function _appendRecord(bytes memory records, uint256 k, Entry memory e) internal pure {
        address who = e.signer;
        bytes32 contentHash = e.contentHash;
        bytes32 cidDigest = e.cidDigest;
        bytes32 tensorRoot = e.tensorRoot;
        uint64 numSamples = e.numSamples;
        assembly ("memory-safe") {
            let p := add(add(records, 32), mul(k, 124))
            mstore(p, shl(96, who))
            mstore(add(p, 20), contentHash)
            mstore(add(p, 52), cidDigest)
            mstore(add(p, 84), tensorRoot)
            // numSamples in the next 8 bytes; the rest of this word is the next record's start
            // (written after this one) or the buffer's 32 bytes of slack, never memory beyond
            mstore(add(p, 116), shl(192, numSamples))
        }
    }

    function _admitContributor(uint256 taskId, address who, Member storage m) internal returns (uint32 index) {
        TaskInfo storage info = _info[taskId];
        uint32 count = info.contributorCount;
        if (count == MAX_SEQ - 1) revert TooManyMembers(taskId, MAX_SEQ - 1);
        info.contributorCount = count + 1;
        index = count + 1;
        m.roles |= ROLE_CONTRIBUTOR;
        m.contributorIndex = index;
        emit ContributorAdded(taskId, who, count);
    }

    // ---------------------------------------------------------------------------------------
    // Internals: attestation
    // ---------------------------------------------------------------------------------------

    /// @dev Checks readiness, seals (stamp = now) and announces the records sealed.
    function _seal(uint256 taskId, TaskState memory st) internal returns (TaskState memory) {
        Records memory rec = _records[taskId];
        uint32 count = rec.seq - st.startSeq;
        _checkReady(taskId, st, count);
        st.isSealed = true;
        st.stamp = uint40(block.timestamp);
        TaskState storage s = _state[taskId];
        s.isSealed = true;
        s.stamp = st.stamp;
        emit RoundSealed(taskId, st.round, count, _roundHash(taskId, st, rec));
        return st;
    }

    /// @dev The tally of one attestation of `digest` in the current attempt: its table slot,
    /// the count with this attestation, and whether it is the attempt's first of `digest` (a
    /// proposal, allowed only with the result itself: `propose`).
    function _tally(uint256 taskId, uint64 round, TaskState memory st, Member memory m, bytes32 digest, bool propose)
        internal
        view
        returns (uint32 attempt, uint256 slot, uint8 count, bool proposed)
    {
        attempt = _attempt(st);
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        if (m.attestedRound == st.round + 1 && m.attestedAttempt == attempt) {
            revert AlreadyAttested(taskId, round, msg.sender, attempt);
        }
        uint64 epoch = (uint64(st.round) << 32) | attempt;
        bool found;
        (found, slot, count) = _find(taskId, st, digest, epoch);
        if (count != 0) {
            count += 1;
        } else if (!propose) {
            revert UnknownResult(taskId, round, digest, attempt);
        } else if (!found) {
            revert TooManyResults(taskId, round, attempt);
        } else {
            (count, proposed) = (1, true);
        }
    }

    /// @dev Record a counted attestation: the event, then either the final state (quorum
    /// reached) or the tally and the validator's once-per-attempt mark.
    function _record(
        uint256 taskId,
        uint64 round,
        TaskState memory st,
        bytes32 digest,
        uint32 attempt,
        uint256 slot,
        uint8 count
    ) internal {
        emit RoundAttested(taskId, round, msg.sender, digest, attempt, count);
        // slither-disable-next-line incorrect-equality -- an attestation count, exact by design: finalise once
        if (count == st.quorum) {
            _finalize(taskId, round, st, digest, attempt);
            return; // the round closes: neither the tally nor the validator's mark is read again
        }
        uint64 epoch = (uint64(st.round) << 32) | attempt;
        _results[taskId][slot] = uint256(bytes32(bytes23(digest))) | (uint256(epoch) << 8) | count;
        Member storage ms = _members[taskId][msg.sender];
        ms.attestedRound = st.round + 1;
        ms.attestedAttempt = attempt;
    }

    /// @dev Probe the result table for `digest` in `epoch` (round << 32 | attempt), from
    /// `digest % validatorCount`: the slot holding it (with its count), else the first slot
    /// not live in this epoch (count 0, found), else found = false (every slot holds another
    /// live result). Deterministic, so every validator of one digest meets in one slot.
    function _find(uint256 taskId, TaskState memory st, bytes32 digest, uint64 epoch)
        internal
        view
        returns (bool found, uint256 slot, uint8 count)
    {
        uint256 n = st.validatorCount;
        // slither-disable-next-line weak-prng -- not randomness: the deterministic first probe of a result table every validator computes alike
        uint256 start = uint256(digest) % n; // n >= 1: only validators get here
        for (uint256 k; k < n; ++k) {
            // slither-disable-next-line weak-prng -- not randomness: linear probing of the result table
            uint256 i = (start + k) % n;
            uint256 tally = _results[taskId][i];
            // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
            bool live = uint64(tally >> 8) == epoch;
            if (live && bytes23(bytes32(tally)) == bytes23(digest)) return (true, i, uint8(tally));
            if (!live && !found) (found, slot) = (true, i);
        }
    }

    /// @dev `quorum` validators agree: keep the digest and open the next round.
    function _finalize(uint256 taskId, uint64 round, TaskState memory st, bytes32 digest, uint32 attempt) internal {
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        if (st.round == type(uint32).max - 1) revert InvalidConfig("the task has run 2**32 - 2 rounds");
        _finalDigest[taskId][round] = digest;
        TaskState storage s = _state[taskId];
        s.round = st.round + 1;
        s.stamp = uint40(block.timestamp);
        s.startSeq = _records[taskId].seq;
        s.isSealed = false;
        emit RoundFinalized(taskId, round, digest, attempt);
    }

    function _checkReady(uint256 taskId, TaskState memory st, uint32 count) internal view {
        // slither-disable-next-line incorrect-equality -- compares counters, not timestamps
        if (count == st.maxUpdates) return;
        TaskInfo storage info = _info[taskId];
        uint32 roundDuration = info.roundDuration;
        if (roundDuration == 0) {
            uint32 minUpdates = info.minUpdates;
            if (count >= minUpdates) return;
            revert RoundNotReady(taskId, st.round, count, minUpdates, 0);
        }
        uint256 deadline = uint256(st.stamp) + roundDuration;
        // A validator can shift the seal by at most the block-time drift it controls (seconds);
        // late updates are still recorded and judged LATE, so nothing is lost by that drift.
        // slither-disable-next-line timestamp
        if (block.timestamp > deadline) return; // forge-lint: disable-line(block-timestamp)
        revert RoundNotReady(taskId, st.round, count, st.maxUpdates, deadline);
    }

    /// @dev The attempt running now: one more each `attestWindow` seconds since the seal.
    function _attempt(TaskState memory st) internal view returns (uint32) {
        return uint32((block.timestamp - st.stamp) / st.attestWindow);
    }

    /// @dev The current round's record hash: the seed while it holds no record.
    function _roundHash(uint256 taskId, TaskState memory st, Records memory rec) internal pure returns (bytes28) {
        // slither-disable-next-line incorrect-equality -- counters and config in TaskState/Records/Member, not its timestamp
        return rec.seq == st.startSeq ? _recordSeed(taskId, st.round) : rec.hash;
    }

    // ---------------------------------------------------------------------------------------
    // Internals: hashes and lookups
    // ---------------------------------------------------------------------------------------

    function _checkTaskOwner(uint256 taskId) internal view {
        address owner = _info[taskId].owner;
        if (owner == address(0)) revert UnknownTask(taskId);
        if (owner != msg.sender) revert NotTaskOwner(taskId, msg.sender);
    }

    function _existing(uint256 taskId) internal view returns (TaskState memory st) {
        st = _state[taskId];
        // slither-disable-next-line incorrect-equality -- a config value, not a timestamp
        if (st.maxUpdates == 0) revert UnknownTask(taskId);
    }

    /// @dev The EIP-712 digest of an `Update`: `_hashTypedDataV4(keccak256(abi.encode(
    /// UPDATE_TYPEHASH, taskId, round, contentHash, cidDigest, tensorRoot, numSamples,
    /// deadline)))`, the struct hashed in scratch memory (the batch loop allocates nothing).
    function _hashUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples,
        uint64 deadline
    ) internal view returns (bytes32) {
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

    function _recordSeed(uint256 taskId, uint64 round) internal pure returns (bytes28) {
        return bytes28(keccak256(abi.encode(taskId, round)));
    }

    /// @dev `bytes28(keccak256(abi.encode(previous, contributor, contentHash, cidDigest,
    /// tensorRoot, numSamples)))`, hashed in scratch memory.
    function _recordStep(
        bytes28 previous,
        address contributor,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) internal pure returns (bytes28 h) {
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

    function _resultDigest(uint256 taskId, uint64 round, RoundResult calldata result) internal pure returns (bytes32) {
        return keccak256(abi.encode(taskId, round, result));
    }
}
