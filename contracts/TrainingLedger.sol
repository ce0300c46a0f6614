// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ITrainingLedger} from "./ITrainingLedger.sol";

/// @title TrainingLedger — hashes of federated-training updates and attested round results
/// @notice See {ITrainingLedger} for the user-facing documentation of every function.
/// @dev Storage is laid out for the hot paths (gas notes below):
///  - `_state[taskId]`: ONE slot with everything `submitUpdate` and `attestRound` check
///    (round, counters, limits, flags), so a submission reads and writes one task slot.
///  - `_info[taskId]`: the cold config; its first slot packs the owner with `minUpdates` and
///    `roundDuration`, which only the seal reads (once per round, and not when the round is full).
///  - `_members[taskId][account]`: ONE slot holding the roles and the last round (+1) the
///    account submitted to and attested, so admission, one-update-per-round and
///    one-attestation-per-round are one SLOAD and one SSTORE.
///  - `_updates[updateId]`: one digest per update; the fields themselves are in events.
///
/// Gas floor of one update (EIP-2929/2200/3529 schedule, cancun): the update's digest is a new
/// slot (22,100), and the global id counter, the task slot and the member slot are each a cold
/// read plus a non-zero rewrite (3 x 5,000), so storage alone costs 37,100 gas; the
/// `UpdateSubmitted` log (4 topics, ~7 data words) adds ~3,700. With the 21,000 intrinsic gas
/// and ~1,300 of calldata a submitUpdate transaction cannot go below ~63,000 gas while keeping
/// the required state (measured: 67,451 per transaction, 44,211 of execution; the sample-count
/// bounds are two comparisons on the task slot already read, ~50 gas). In a relayed
/// batch the counter and the task slot stay warm, but each update still needs its own new digest
/// slot (22,100), its contributor's member slot (5,000), an ecrecover (3,000 + ~300 call
/// overhead) and its log (~3,700): ~34,000 gas of execution plus ~4,000 of calldata (a 512-byte
/// ABI-encoded `SignedUpdate`) whatever the batch size (measured: ~45,000 per update per
/// transaction). A 10,000-gas-per-update target is below the EVM floor for the required state.
/// attestRound: the finalising attestation of a quorum-2 round costs 74,547 per transaction
/// (49,691 of execution); a quorum-1 round seals and finalises in one call: 78,954 per
/// transaction. Sealing a round that is not full also reads `minUpdates`/`roundDuration` from
/// the cold info slot (2,100, once per round): the hot task slot holds `maxSamples` instead,
/// so that submissions stay at one task slot. (benchmarks/gas.py on anvil, 2026-11-27.)
contract TrainingLedger is ITrainingLedger, EIP712 {
    /// @inheritdoc ITrainingLedger
    bytes32 public constant UPDATE_TYPEHASH = keccak256(
        "Update(uint256 taskId,uint64 round,bytes32 contentHash,string cid,uint64 numSamples,address contributor,uint256 deadline)"
    );

    uint8 private constant ROLE_CONTRIBUTOR = 1;
    uint8 private constant ROLE_VALIDATOR = 2;

    /// @dev The hot per-task slot: 8 + 5 + 4 + 4 + 8 + 1 + 1 + 1 = 32 bytes. Slither taints
    /// the whole struct with `roundStart` (a timestamp) and flags every strict equality on its
    /// other fields as `incorrect-equality`; those comparisons are on counters and config values
    /// that no miner influences, so the flagged lines carry a disable comment that says so.
    struct TaskState {
        uint64 round; // current round
        uint40 roundStart; // timestamp at which the current round opened
        uint32 updateCount; // updates in the current round
        uint32 maxUpdates; // >= 1 for every existing task: 0 means "no such task"
        uint64 maxSamples; // largest numSamples an update may claim (>= 1)
        uint8 quorum;
        bool open;
        bool isSealed; // the current round was attested once and takes no more updates
    }

    /// @dev Cold per-task data, read by views, the owner checks and the seal. `owner`,
    /// `minUpdates` and `roundDuration` share one slot (20 + 4 + 4 bytes).
    struct TaskInfo {
        address owner;
        uint32 minUpdates;
        uint32 roundDuration; // seconds, 0 = none (the config's uint64 is bounded to 2**32 - 1)
        bytes32 modelHash;
        bytes32 globalModelHash;
        string modelCid;
        string specCid;
    }

    /// @dev One slot per (task, account). Rounds are stored + 1 so that 0 means "never".
    struct Member {
        uint8 roles;
        uint64 submittedRound;
        uint64 attestedRound;
    }

    uint256 private _taskCount;
    uint256 private _lastUpdateId;
    mapping(uint256 taskId => TaskState) private _state;
    mapping(uint256 taskId => TaskInfo) private _info;
    mapping(uint256 taskId => mapping(address account => Member)) private _members;
    mapping(uint256 updateId => bytes32 digest) private _updates;
    mapping(uint256 taskId => mapping(uint64 round => bytes32 verdictRoot)) private _verdictRoots;
    mapping(uint256 taskId => mapping(uint64 round => mapping(bytes32 digest => uint256 count))) private _attestations;

    constructor() EIP712("TrainingLedger", "1") {}

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

        taskId = ++_taskCount;
        _state[taskId] = TaskState({
            round: 0,
            roundStart: uint40(block.timestamp),
            updateCount: 0,
            maxUpdates: cfg.maxUpdates,
            maxSamples: cfg.maxSamples,
            quorum: cfg.quorum,
            open: cfg.open,
            isSealed: false
        });
        _info[taskId] = TaskInfo({
            owner: msg.sender,
            minUpdates: cfg.minUpdates,
            roundDuration: uint32(cfg.roundDuration),
            modelHash: cfg.modelHash,
            globalModelHash: cfg.modelHash,
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
            cfg.maxSamples
        );
    }

    /// @inheritdoc ITrainingLedger
    function addContributor(uint256 taskId, address who) external onlyTaskOwner(taskId) {
        _grant(taskId, who, ROLE_CONTRIBUTOR);
        emit ContributorAdded(taskId, who);
    }

    /// @inheritdoc ITrainingLedger
    function addValidator(uint256 taskId, address who) external onlyTaskOwner(taskId) {
        _grant(taskId, who, ROLE_VALIDATOR);
        emit ValidatorAdded(taskId, who);
    }

    // ---------------------------------------------------------------------------------------
    // Updates
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITrainingLedger
    function submitUpdate(uint256 taskId, uint64 round, bytes32 contentHash, string calldata cid, uint64 numSamples)
        external
        returns (uint256 updateId)
    {
        return _recordUpdate(taskId, round, msg.sender, contentHash, cid, keccak256(bytes(cid)), numSamples);
    }

    /// @inheritdoc ITrainingLedger
    function submitUpdateFor(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        string calldata cid,
        uint64 numSamples,
        address contributor,
        uint256 deadline,
        bytes calldata signature
    ) external returns (uint256 updateId) {
        bytes32 cidHash = keccak256(bytes(cid));
        _checkSignature(taskId, round, contentHash, cidHash, numSamples, contributor, deadline, signature);
        return _recordUpdate(taskId, round, contributor, contentHash, cid, cidHash, numSamples);
    }

    /// @inheritdoc ITrainingLedger
    function submitUpdatesFor(SignedUpdate[] calldata updates) external returns (uint256 firstUpdateId) {
        uint256 n = updates.length;
        if (n == 0) revert EmptyBatch();
        firstUpdateId = _lastUpdateId + 1;
        for (uint256 i; i < n; ++i) {
            SignedUpdate calldata u = updates[i];
            bytes32 cidHash = keccak256(bytes(u.cid));
            _checkSignature(
                u.taskId, u.round, u.contentHash, cidHash, u.numSamples, u.contributor, u.deadline, u.signature
            );
            _recordUpdate(u.taskId, u.round, u.contributor, u.contentHash, u.cid, cidHash, u.numSamples);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Attestation
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITrainingLedger
    function sealRound(uint256 taskId, uint64 round) external {
        TaskState memory st = _state[taskId];
        // slither-disable-next-line incorrect-equality -- compares counters/config in TaskState, not its timestamp (see TaskState)
        if (st.maxUpdates == 0) revert UnknownTask(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        if (_members[taskId][msg.sender].roles & ROLE_VALIDATOR == 0) revert NotValidator(taskId, msg.sender);
        if (st.isSealed) revert RoundAlreadySealed(taskId, round);
        _seal(taskId, st);
        _state[taskId].isSealed = true;
    }

    /// @inheritdoc ITrainingLedger
    function attestRound(
        uint256 taskId,
        uint64 round,
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        string calldata verdictCid
    ) external {
        _attest(taskId, round, msg.sender, verdictRoot, aggregateHash, aggregateCid, verdictCid);
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
    function lastUpdateId() external view returns (uint256) {
        return _lastUpdateId;
    }

    /// @inheritdoc ITrainingLedger
    function currentRound(uint256 taskId) external view returns (uint64) {
        return _existing(taskId).round;
    }

    /// @inheritdoc ITrainingLedger
    function getTask(uint256 taskId) external view returns (TaskView memory t) {
        TaskState memory s = _existing(taskId);
        TaskInfo storage info = _info[taskId];
        t.owner = info.owner;
        t.modelHash = info.modelHash;
        t.globalModelHash = info.globalModelHash;
        t.modelCid = info.modelCid;
        t.specCid = info.specCid;
        t.minUpdates = info.minUpdates;
        t.maxUpdates = s.maxUpdates;
        t.quorum = s.quorum;
        t.roundDuration = info.roundDuration;
        t.open = s.open;
        t.maxSamples = s.maxSamples;
        t.currentRound = s.round;
        t.roundStart = s.roundStart;
        t.updateCount = s.updateCount;
        t.isSealed = s.isSealed;
    }

    /// @inheritdoc ITrainingLedger
    function getRound(uint256 taskId, uint64 round) external view returns (RoundView memory r) {
        TaskState memory s = _existing(taskId);
        if (round > s.round) revert UnknownRound(taskId, round, s.round);
        if (round < s.round) {
            r.finalized = true;
            r.isSealed = true;
            r.verdictRoot = _verdictRoots[taskId][round];
        } else {
            r.isSealed = s.isSealed;
            r.updateCount = s.updateCount;
            r.startedAt = s.roundStart;
            r.deadline = _deadline(s, _info[taskId].roundDuration);
        }
    }

    /// @inheritdoc ITrainingLedger
    function getUpdate(uint256 updateId) external view returns (bytes32 digest) {
        digest = _updates[updateId];
        if (digest == bytes32(0)) revert UnknownUpdate(updateId);
    }

    /// @inheritdoc ITrainingLedger
    function updateDigest(
        uint256 taskId,
        uint64 round,
        address contributor,
        bytes32 contentHash,
        string calldata cid,
        uint64 numSamples
    ) external pure returns (bytes32) {
        return _updateDigest(taskId, round, contributor, contentHash, keccak256(bytes(cid)), numSamples);
    }

    /// @inheritdoc ITrainingLedger
    function hashUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        string calldata cid,
        uint64 numSamples,
        address contributor,
        uint256 deadline
    ) external view returns (bytes32) {
        return _hashUpdate(taskId, round, contentHash, keccak256(bytes(cid)), numSamples, contributor, deadline);
    }

    /// @inheritdoc ITrainingLedger
    function attestationDigest(
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        string calldata verdictCid
    ) external pure returns (bytes32) {
        return _attestationDigest(verdictRoot, aggregateHash, aggregateCid, verdictCid);
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
        _checkCurrent(taskId, round);
        return _members[taskId][who].submittedRound == _plusOne(round);
    }

    /// @inheritdoc ITrainingLedger
    function hasAttested(uint256 taskId, uint64 round, address who) external view returns (bool) {
        _checkCurrent(taskId, round);
        return _members[taskId][who].attestedRound == _plusOne(round);
    }

    /// @inheritdoc ITrainingLedger
    function attestationCount(uint256 taskId, uint64 round, bytes32 digest) external view returns (uint256) {
        _checkCurrent(taskId, round);
        return _attestations[taskId][round][digest];
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
    function verifyVerdict(uint256 taskId, uint64 round, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        if (round >= _existing(taskId).round) return false;
        return MerkleProof.verifyCalldata(proof, _verdictRoots[taskId][round], leaf);
    }

    // ---------------------------------------------------------------------------------------
    // Internals: the one door for updates, the one door for attestations
    // ---------------------------------------------------------------------------------------

    /// @dev Every submission path ends here: admission, round, capacity, sample-count and
    /// duplicate checks, then the writes, then the event. `cidHash` is `keccak256(bytes(cid))`, computed once by
    /// the caller because signature paths need it too.
    function _recordUpdate(
        uint256 taskId,
        uint64 round,
        address contributor,
        bytes32 contentHash,
        string calldata cid,
        bytes32 cidHash,
        uint64 numSamples
    ) internal returns (uint256 updateId) {
        TaskState storage s = _state[taskId];
        TaskState memory st = s;
        // slither-disable-next-line incorrect-equality -- compares counters/config in TaskState, not its timestamp (see TaskState)
        if (st.maxUpdates == 0) revert UnknownTask(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);
        if (st.isSealed) revert RoundAlreadySealed(taskId, round);
        if (st.updateCount >= st.maxUpdates) revert RoundFull(taskId, round, st.maxUpdates);

        Member storage m = _members[taskId][contributor];
        Member memory mem = m;
        if (!st.open && mem.roles & ROLE_CONTRIBUTOR == 0) revert NotContributor(taskId, contributor);
        uint64 roundTag = _plusOne(round);
        if (mem.submittedRound == roundTag) revert DuplicateSubmission(taskId, round, contributor);
        // The weight fedavg gives an update is its own claim: the task bounds it (validators cap
        // fedavg weights at maxSamples again, so the bound holds off chain as well).
        if (numSamples > st.maxSamples) revert TooManySamples(taskId, numSamples, st.maxSamples);
        if (numSamples == 0) revert ZeroSamples(taskId, contributor);

        unchecked {
            // bounded by maxUpdates (uint32) and by the number of transactions respectively
            s.updateCount = st.updateCount + 1;
            updateId = ++_lastUpdateId;
        }
        m.submittedRound = roundTag;
        _updates[updateId] = _updateDigest(taskId, round, contributor, contentHash, cidHash, numSamples);
        emit UpdateSubmitted(taskId, round, contributor, updateId, contentHash, cid, numSamples);
    }

    /// @dev The only path to an attestation: validator and round checks, the seal on the first
    /// attestation, the tally, and finalisation when `quorum` attestations share a digest.
    function _attest(
        uint256 taskId,
        uint64 round,
        address validator,
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        string calldata verdictCid
    ) internal {
        (uint8 quorum, bool sealsNow) = _admitAttestation(taskId, round, validator);
        bytes32 digest = _attestationDigest(verdictRoot, aggregateHash, aggregateCid, verdictCid);
        uint256 count = _attestations[taskId][round][digest] + 1;
        emit RoundAttested(taskId, round, validator, digest, verdictRoot, aggregateHash, aggregateCid, verdictCid);
        // slither-disable-next-line incorrect-equality -- an attestation count, exact by design: finalise once
        if (count == quorum) {
            // The round closes now, so nobody can attest it again: neither the validator's
            // once-per-round mark nor the tally is read again (saves 2,900 + up to 22,100 gas).
            _finalize(taskId, round, verdictRoot, aggregateHash, aggregateCid, verdictCid);
        } else {
            _attestations[taskId][round][digest] = count;
            _members[taskId][validator].attestedRound = _plusOne(round);
            if (sealsNow) _state[taskId].isSealed = true;
        }
    }

    /// @dev Checks that `validator` may attest `round` now. On the round's first attestation it
    /// checks readiness and announces the seal; the caller stores the seal and the validator's
    /// once-per-round mark, or opens the next round at once when the quorum is reached.
    function _admitAttestation(uint256 taskId, uint64 round, address validator)
        internal
        returns (uint8 quorum, bool sealsNow)
    {
        TaskState memory st = _state[taskId];
        // slither-disable-next-line incorrect-equality -- compares counters/config in TaskState, not its timestamp (see TaskState)
        if (st.maxUpdates == 0) revert UnknownTask(taskId);
        if (round != st.round) revert WrongRound(taskId, round, st.round);

        Member memory m = _members[taskId][validator];
        if (m.roles & ROLE_VALIDATOR == 0) revert NotValidator(taskId, validator);
        if (m.attestedRound == _plusOne(round)) revert AlreadyAttested(taskId, round, validator);

        if (!st.isSealed) {
            _seal(taskId, st);
            sealsNow = true;
        }
        return (st.quorum, sealsNow);
    }

    /// @dev `quorum` validators agree: keep the verdict root, move the global model on and
    /// open the next round.
    function _finalize(
        uint256 taskId,
        uint64 round,
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        string calldata verdictCid
    ) internal {
        _verdictRoots[taskId][round] = verdictRoot;
        _info[taskId].globalModelHash = aggregateHash;
        TaskState storage s = _state[taskId];
        unchecked {
            s.round = round + 1; // a task would need 2**64 rounds to wrap
        }
        s.roundStart = uint40(block.timestamp);
        s.updateCount = 0;
        s.isSealed = false;
        emit RoundFinalized(taskId, round, aggregateHash, aggregateCid, verdictRoot, verdictCid);
    }

    function _checkSignature(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidHash,
        uint64 numSamples,
        address contributor,
        uint256 deadline,
        bytes calldata signature
    ) internal view {
        // The deadline is the signer's wall-clock limit; a block producer's few seconds of drift
        // cannot make a signature live longer than the signer allowed by more than that drift.
        // slither-disable-next-line timestamp
        if (block.timestamp > deadline) revert Expired(deadline, block.timestamp); // forge-lint: disable-line(block-timestamp)
        bytes32 hash = _hashUpdate(taskId, round, contentHash, cidHash, numSamples, contributor, deadline);
        // slither-disable-next-line unused-return -- the error argument only details `err`, which is checked
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(hash, signature);
        if (err != ECDSA.RecoverError.NoError || recovered != contributor) {
            revert BadSignature(contributor, recovered);
        }
    }

    /// @dev The one place a round is sealed: it must be ready; announces the count it closes
    /// at. Callers store `isSealed` (or open the next round at once).
    function _seal(uint256 taskId, TaskState memory st) internal {
        _checkReady(taskId, st);
        emit RoundSealed(taskId, st.round, st.updateCount);
    }

    function _checkReady(uint256 taskId, TaskState memory st) internal view {
        // slither-disable-next-line incorrect-equality -- compares counters/config in TaskState, not its timestamp (see TaskState)
        if (st.updateCount == st.maxUpdates) return;
        TaskInfo storage info = _info[taskId]; // one cold slot: minUpdates and roundDuration
        uint32 roundDuration = info.roundDuration;
        if (roundDuration == 0) {
            uint32 minUpdates = info.minUpdates;
            if (st.updateCount >= minUpdates) return;
            revert RoundNotReady(taskId, st.round, st.updateCount, minUpdates, 0);
        }
        uint256 deadline = _deadline(st, roundDuration);
        // A validator can shift the seal by at most the block-time drift it controls (seconds);
        // late updates are still recorded and judged LATE, so nothing is lost by that drift.
        // slither-disable-next-line timestamp
        if (block.timestamp > deadline) return; // forge-lint: disable-line(block-timestamp)
        revert RoundNotReady(taskId, st.round, st.updateCount, st.maxUpdates, deadline);
    }

    function _grant(uint256 taskId, address who, uint8 role) internal {
        if (who == address(0)) revert ZeroAddress();
        Member storage m = _members[taskId][who];
        if (m.roles & role != 0) revert AlreadyAdded(taskId, who);
        m.roles |= role;
    }

    function _checkTaskOwner(uint256 taskId) internal view {
        address owner = _info[taskId].owner;
        if (owner == address(0)) revert UnknownTask(taskId);
        if (owner != msg.sender) revert NotTaskOwner(taskId, msg.sender);
    }

    function _checkCurrent(uint256 taskId, uint64 round) internal view {
        uint64 current = _existing(taskId).round;
        if (round != current) revert WrongRound(taskId, round, current);
    }

    function _existing(uint256 taskId) internal view returns (TaskState memory st) {
        st = _state[taskId];
        // slither-disable-next-line incorrect-equality -- compares counters/config in TaskState, not its timestamp (see TaskState)
        if (st.maxUpdates == 0) revert UnknownTask(taskId);
    }

    function _deadline(TaskState memory st, uint32 roundDuration) internal pure returns (uint64) {
        return roundDuration == 0 ? 0 : uint64(st.roundStart) + roundDuration;
    }

    function _hashUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidHash,
        uint64 numSamples,
        address contributor,
        uint256 deadline
    ) internal view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(UPDATE_TYPEHASH, taskId, round, contentHash, cidHash, numSamples, contributor, deadline)
            )
        );
    }

    function _updateDigest(
        uint256 taskId,
        uint64 round,
        address contributor,
        bytes32 contentHash,
        bytes32 cidHash,
        uint64 numSamples
    ) internal pure returns (bytes32) {
        return keccak256(abi.encode(taskId, round, contributor, contentHash, cidHash, numSamples));
    }

    function _attestationDigest(
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        string calldata verdictCid
    ) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(verdictRoot, aggregateHash, keccak256(bytes(aggregateCid)), keccak256(bytes(verdictCid)))
        );
    }

    function _plusOne(uint64 round) internal pure returns (uint64) {
        unchecked {
            return round + 1; // 2**64 - 1 rounds are out of reach; 0 stays "never"
        }
    }
}
