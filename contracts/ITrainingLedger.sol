// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC5267} from "@openzeppelin/contracts/interfaces/IERC5267.sol";

/// @title ITrainingLedger — the on-chain ledger of a federated training run
/// @notice A task owner creates a training task and admits contributors and validators.
/// Contributors record one model update per round (the sha256 and IPFS CID of a safetensors
/// file); validators verify and aggregate the round off chain and attest the result. A round is
/// final when `quorum` validators attest the same result, and the next round opens.
/// @dev The chain stores one digest per update and per-round verdict roots; everything else is
/// emitted in events, which are the record that indexers and re-verifiers read. docs/interfaces.md
/// is the team agreement on this ABI.
interface ITrainingLedger is IERC5267 {
    // ---------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------

    /// @notice Parameters of a training task, fixed at creation.
    /// @param modelHash sha256 of the initial model file (safetensors); must not be zero
    /// @param modelCid CIDv1 of the initial model file
    /// @param specCid CID of the task spec JSON (aggregation rule, screening, training params)
    /// @param minUpdates updates after which a round without a duration may be attested (>= 1)
    /// @param maxUpdates most updates accepted per round (>= minUpdates)
    /// @param quorum matching attestations that finalise a round (>= 1)
    /// @param roundDuration seconds a round stays open, 0 = no deadline (< 2**32)
    /// @param open anyone may contribute, not only admitted contributors
    /// @param maxSamples largest `numSamples` an update may claim (>= 1). Contributors state
    /// their own sample counts and fedavg weighs updates by them, so the task bounds the weight
    /// one update can claim; validators cap fedavg weights at it too
    struct TaskConfig {
        bytes32 modelHash;
        string modelCid;
        string specCid;
        uint32 minUpdates;
        uint32 maxUpdates;
        uint8 quorum;
        uint64 roundDuration;
        bool open;
        uint64 maxSamples;
    }

    /// @notice One update relayed on behalf of `contributor`, authorised by its EIP-712
    /// signature over `Update(uint256 taskId,uint64 round,bytes32 contentHash,string cid,
    /// uint64 numSamples,address contributor,uint256 deadline)`.
    struct SignedUpdate {
        uint256 taskId;
        uint64 round;
        bytes32 contentHash;
        string cid;
        uint64 numSamples;
        address contributor;
        uint256 deadline;
        bytes signature;
    }

    /// @notice A task as `getTask` returns it.
    /// @param globalModelHash sha256 of the current global model: `modelHash` until the first
    /// round is final, then the `aggregateHash` of the last final round
    /// @param roundStart timestamp at which the current round opened
    /// @param updateCount updates recorded in the current round
    /// @param sealed the current round was attested at least once and takes no more updates
    struct TaskView {
        address owner;
        bytes32 modelHash;
        bytes32 globalModelHash;
        string modelCid;
        string specCid;
        uint32 minUpdates;
        uint32 maxUpdates;
        uint8 quorum;
        uint64 roundDuration;
        bool open;
        uint64 maxSamples;
        uint64 currentRound;
        uint64 roundStart;
        uint32 updateCount;
        bool isSealed;
    }

    /// @notice A round as `getRound` returns it.
    /// @dev Only the current round's counters live in storage. For a final round the chain keeps
    /// its `verdictRoot`; its update count, aggregate hash and CIDs are in the `RoundSealed` and
    /// `RoundFinalized` events, so `updateCount`, `startedAt` and `deadline` are 0 for it.
    /// @param finalized `quorum` validators attested the same result
    /// @param sealed the round takes no more updates (true for every final round)
    /// @param updateCount updates recorded so far (current round only)
    /// @param startedAt timestamp at which the round opened (current round only)
    /// @param deadline `startedAt + roundDuration`, 0 when the task has no round duration
    /// @param verdictRoot attested Merkle root of the round's verdicts (final rounds only)
    struct RoundView {
        bool finalized;
        bool isSealed;
        uint32 updateCount;
        uint64 startedAt;
        uint64 deadline;
        bytes32 verdictRoot;
    }

    // ---------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------

    /// @notice A task was created; round 0 is open.
    event TaskCreated(
        uint256 indexed taskId,
        address indexed owner,
        bytes32 modelHash,
        string modelCid,
        string specCid,
        uint32 minUpdates,
        uint32 maxUpdates,
        uint8 quorum,
        uint64 roundDuration,
        bool open,
        uint64 maxSamples
    );

    /// @notice The task owner admitted a contributor.
    event ContributorAdded(uint256 indexed taskId, address indexed contributor);

    /// @notice The task owner admitted a validator.
    event ValidatorAdded(uint256 indexed taskId, address indexed validator);

    /// @notice An update was recorded. `getUpdate(updateId)` holds its digest.
    event UpdateSubmitted(
        uint256 indexed taskId,
        uint64 indexed round,
        address indexed contributor,
        uint256 updateId,
        bytes32 contentHash,
        string cid,
        uint64 numSamples
    );

    /// @notice The first attestation of a round sealed it: exactly these `updateCount` updates
    /// are judged by every validator.
    event RoundSealed(uint256 indexed taskId, uint64 indexed round, uint32 updateCount);

    /// @notice A validator attested a round's result; `digest` is `attestationDigest(...)` of it.
    event RoundAttested(
        uint256 indexed taskId,
        uint64 indexed round,
        address indexed validator,
        bytes32 digest,
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string aggregateCid,
        string verdictCid
    );

    /// @notice `quorum` validators agreed: the round is final, `aggregateHash` is the new global
    /// model and round `round + 1` is open.
    event RoundFinalized(
        uint256 indexed taskId,
        uint64 indexed round,
        bytes32 aggregateHash,
        string aggregateCid,
        bytes32 verdictRoot,
        string verdictCid
    );

    // ---------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------

    /// @notice No task has id `taskId`.
    error UnknownTask(uint256 taskId);
    /// @notice No update has id `updateId`.
    error UnknownUpdate(uint256 updateId);
    /// @notice `round` of task `taskId` has not started yet; `current` is the open round.
    error UnknownRound(uint256 taskId, uint64 round, uint64 current);
    /// @notice `caller` is not the owner of task `taskId`.
    error NotTaskOwner(uint256 taskId, address caller);
    /// @notice `account` is not an admitted contributor of the closed task `taskId`.
    error NotContributor(uint256 taskId, address account);
    /// @notice `account` is not a validator of task `taskId`.
    error NotValidator(uint256 taskId, address account);
    /// @notice `account` already holds the role being granted in task `taskId`.
    error AlreadyAdded(uint256 taskId, address account);
    /// @notice The zero address cannot be a contributor or validator.
    error ZeroAddress();
    /// @notice The task configuration is invalid; `reason` names the rule it breaks.
    error InvalidConfig(string reason);
    /// @notice `given` is not the current round `current` of task `taskId`.
    error WrongRound(uint256 taskId, uint64 given, uint64 current);
    /// @notice `contributor` already submitted an update to `round` of task `taskId`.
    error DuplicateSubmission(uint256 taskId, uint64 round, address contributor);
    /// @notice `round` of task `taskId` already holds `maxUpdates` updates.
    error RoundFull(uint256 taskId, uint64 round, uint32 maxUpdates);
    /// @notice An update to task `taskId` claims `given` samples, more than the task's
    /// `maxSamples` (the largest weight one update may claim): claim at most `maxSamples`.
    error TooManySamples(uint256 taskId, uint64 given, uint64 maxSamples);
    /// @notice `contributor`'s update to task `taskId` claims 0 samples: an update stands for
    /// the samples it was trained on, at least one.
    error ZeroSamples(uint256 taskId, address contributor);
    /// @notice `round` of task `taskId` was sealed by its first attestation and takes no updates.
    error RoundAlreadySealed(uint256 taskId, uint64 round);
    /// @notice `round` of task `taskId` cannot be attested yet: it holds `updateCount` updates,
    /// needs `needed` (or, when `deadline` is not 0, the deadline to pass).
    error RoundNotReady(uint256 taskId, uint64 round, uint32 updateCount, uint32 needed, uint256 deadline);
    /// @notice `validator` already attested `round` of task `taskId`.
    error AlreadyAttested(uint256 taskId, uint64 round, address validator);
    /// @notice The signature is not `contributor`'s (`recovered` is its signer, or zero when it
    /// is malformed or malleable).
    error BadSignature(address contributor, address recovered);
    /// @notice The signature's `deadline` passed before this block's timestamp `nowTs`.
    error Expired(uint256 deadline, uint256 nowTs);
    /// @notice `submitUpdatesFor` was called with no updates.
    error EmptyBatch();

    // ---------------------------------------------------------------------------------------
    // Tasks and roles
    // ---------------------------------------------------------------------------------------

    /// @notice Create a training task owned by the caller; its round 0 opens now.
    /// @param cfg the task configuration (see `TaskConfig`)
    /// @return taskId the new task's id; ids start at 1
    function createTask(TaskConfig calldata cfg) external returns (uint256 taskId);

    /// @notice Admit `who` as a contributor of task `taskId`. Task owner only.
    function addContributor(uint256 taskId, address who) external;

    /// @notice Admit `who` as a validator of task `taskId`. Task owner only.
    function addValidator(uint256 taskId, address who) external;

    // ---------------------------------------------------------------------------------------
    // Updates
    // ---------------------------------------------------------------------------------------

    /// @notice Record the caller's update for the current round of task `taskId`.
    /// @dev One update per contributor per round, at most `maxUpdates` per round, none once the
    /// round is sealed, `numSamples` in [1, `maxSamples`]. Updates after the round deadline but
    /// before the seal are recorded; validators judge them `LATE`.
    /// @param taskId the task
    /// @param round must be the task's current round
    /// @param contentHash sha256 of the update file
    /// @param cid CIDv1 of the update file
    /// @param numSamples number of training samples behind the update, 1 to the task's `maxSamples`
    /// @return updateId the update's global id; ids start at 1
    function submitUpdate(uint256 taskId, uint64 round, bytes32 contentHash, string calldata cid, uint64 numSamples)
        external
        returns (uint256 updateId);

    /// @notice Record `contributor`'s update, relayed by anyone and authorised by the
    /// contributor's EIP-712 `Update` signature. Same rules as `submitUpdate`.
    /// @dev No nonce: one update per contributor per round makes every signature single-use.
    /// @param deadline last timestamp at which the signature is valid
    /// @param signature 65-byte ECDSA signature (r, s, v) with low s
    /// @return updateId the update's global id
    function submitUpdateFor(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        string calldata cid,
        uint64 numSamples,
        address contributor,
        uint256 deadline,
        bytes calldata signature
    ) external returns (uint256 updateId);

    /// @notice Record a batch of signed updates; all or none are recorded.
    /// @return firstUpdateId the id of `updates[0]`; the others follow consecutively
    function submitUpdatesFor(SignedUpdate[] calldata updates) external returns (uint256 firstUpdateId);

    // ---------------------------------------------------------------------------------------
    // Attestation
    // ---------------------------------------------------------------------------------------

    /// @notice Close the current round of task `taskId` to new updates, without attesting.
    /// Validators only; the round must be ready (as for `attestRound`).
    /// @dev Validators seal before they judge, so that every validator judges exactly the
    /// updates the seal counted: an update mined between a validator's read of the round and
    /// its attestation could otherwise make validators disagree. Emits `RoundSealed`.
    /// @param taskId the task
    /// @param round must be the task's current round
    function sealRound(uint256 taskId, uint64 round) external;

    /// @notice Attest the result of the current round of task `taskId`. Validators only, once
    /// per validator per round.
    /// @dev The first attestation seals the round (`RoundSealed`); it may be made once the
    /// round is full, or its deadline passed, or (no deadline) it holds `minUpdates` updates.
    /// When `quorum` attestations share one `attestationDigest` the round is final.
    /// @param verdictRoot Merkle root of the round's verdicts (see docs/interfaces.md)
    /// @param aggregateHash sha256 of the new global model file
    /// @param aggregateCid CIDv1 of the new global model file
    /// @param verdictCid CID of the round's verdict file
    function attestRound(
        uint256 taskId,
        uint64 round,
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        string calldata verdictCid
    ) external;

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice The EIP-712 type hash of `Update`.
    function UPDATE_TYPEHASH() external view returns (bytes32);

    /// @notice The EIP-712 domain separator (name `TrainingLedger`, version `1`).
    function DOMAIN_SEPARATOR() external view returns (bytes32);

    /// @notice Number of tasks created; the last task's id.
    function taskCount() external view returns (uint256);

    /// @notice Number of updates recorded over all tasks; the last update's id.
    function lastUpdateId() external view returns (uint256);

    /// @notice The open round of task `taskId`.
    function currentRound(uint256 taskId) external view returns (uint64);

    /// @notice Task `taskId` with its configuration and current round.
    function getTask(uint256 taskId) external view returns (TaskView memory);

    /// @notice Round `round` of task `taskId` (see `RoundView` for what is kept of past rounds).
    function getRound(uint256 taskId, uint64 round) external view returns (RoundView memory);

    /// @notice The stored digest of update `updateId`, equal to `updateDigest(...)` of its fields.
    function getUpdate(uint256 updateId) external view returns (bytes32 digest);

    /// @notice The digest the ledger stores for an update:
    /// `keccak256(abi.encode(taskId, round, contributor, contentHash, keccak256(bytes(cid)), numSamples))`.
    function updateDigest(
        uint256 taskId,
        uint64 round,
        address contributor,
        bytes32 contentHash,
        string calldata cid,
        uint64 numSamples
    ) external pure returns (bytes32);

    /// @notice The EIP-712 hash a contributor signs to authorise `submitUpdateFor`.
    function hashUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        string calldata cid,
        uint64 numSamples,
        address contributor,
        uint256 deadline
    ) external view returns (bytes32);

    /// @notice The digest validators agree on: `keccak256(abi.encode(verdictRoot, aggregateHash,
    /// keccak256(bytes(aggregateCid)), keccak256(bytes(verdictCid))))`.
    function attestationDigest(
        bytes32 verdictRoot,
        bytes32 aggregateHash,
        string calldata aggregateCid,
        string calldata verdictCid
    ) external pure returns (bytes32);

    /// @notice Whether `who` is an admitted contributor of task `taskId` (open tasks accept
    /// updates from anyone regardless).
    function isContributor(uint256 taskId, address who) external view returns (bool);

    /// @notice Whether `who` is a validator of task `taskId`.
    function isValidator(uint256 taskId, address who) external view returns (bool);

    /// @notice Whether `who` submitted an update to `round`, which must be the current round.
    /// @dev The chain keeps only each contributor's latest round (one packed slot per member);
    /// the history of earlier rounds is in `UpdateSubmitted` events. Reverts `WrongRound` for
    /// any other round rather than answer wrongly.
    function hasSubmitted(uint256 taskId, uint64 round, address who) external view returns (bool);

    /// @notice Whether validator `who` attested `round`, which must be the current round
    /// (reverts `WrongRound` otherwise, as `hasSubmitted`).
    function hasAttested(uint256 taskId, uint64 round, address who) external view returns (bool);

    /// @notice How many validators attested `digest` for `round` of task `taskId`, which must
    /// be the current round (reverts `WrongRound` otherwise): a final round's tally is not kept
    /// in storage; its `RoundAttested` events hold it.
    function attestationCount(uint256 taskId, uint64 round, bytes32 digest) external view returns (uint256);

    /// @notice The verdict-tree leaf of an update: `keccak256(bytes.concat(keccak256(abi.encode(
    /// updateId, contributor, contentHash, verdict))))`.
    function verdictLeaf(uint256 updateId, address contributor, bytes32 contentHash, uint8 verdict)
        external
        pure
        returns (bytes32);

    /// @notice Whether `leaf` is in the attested verdict tree of the final round `round`.
    /// @return false when the round is not final or the proof does not lead to its root
    function verifyVerdict(uint256 taskId, uint64 round, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool);
}
