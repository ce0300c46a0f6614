// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC5267} from "@openzeppelin/contracts/interfaces/IERC5267.sol";

/// @title ITrainingLedger (v2) — the on-chain ledger of a federated training run
/// @notice A task owner creates a training task and admits contributors and validators.
/// Contributors record one model update per round: the sha256 of a safetensors file, the
/// sha2-256 digest of its IPFS CID, the keccak Merkle root of its fixed-point coordinates
/// (`tensorRoot`, docs/tensor_commitments.md) and the sample count it claims. Validators seal
/// the round, judge and aggregate it off chain and attest the result; a round is final when
/// `quorum` validators attest the same result in the same attempt, and the next round opens.
/// @dev v2 keeps no storage slot per update. Each task keeps a running hash of the current
/// round's update records and a count; events carry the records for indexers
/// (`UpdateSubmitted` for single updates, `UpdatesRelayed` for batches). Every attestation is
/// bound to the sealed record hash and count, and a round that does not reach quorum within
/// the task's attestation window may be attested again in a new attempt. docs/interfaces.md
/// is the team agreement on this ABI; docs/ledger_v2.md defines every hash below byte by byte.
///
/// Identities and encodings:
///  - `seq`: the task's update counter, 1 for its first update ever, over all rounds (uint32).
///  - `updateId = (taskId << 32) | seq`: global, unique, never reused (tasks < 2**32).
///  - `cidDigest`: the 32-byte sha2-256 digest of the file's CIDv1. The CID is rebuilt from it:
///    codec `raw` (0x55) when `cidDigest == contentHash` (a single-block file), else `dag-pb`
///    (0x70), multihash sha2-256, base32. Only such CIDs can be recorded.
///  - record hash: `h_0 = bytes28(keccak256(abi.encode(taskId, round)))`, then for each record
///    in order `h_k = bytes28(keccak256(abi.encode(h_{k-1}, contributor, contentHash, cidDigest,
///    tensorRoot, numSamples)))` (`bytes28` and `address` ABI-encoded as one word each).
interface ITrainingLedger is IERC5267 {
    // ---------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------

    /// @notice Parameters of a training task, fixed at creation.
    /// @param modelHash sha256 of the initial model file (safetensors); must not be zero
    /// @param modelCid CIDv1 of the initial model file
    /// @param specCid CID of the task spec JSON (aggregation rule, screening, training params)
    /// @param minUpdates updates after which a round without a duration may be sealed (>= 1)
    /// @param maxUpdates most updates accepted per round (>= minUpdates)
    /// @param quorum matching attestations that finalise a round (1 to 255)
    /// @param roundDuration seconds a round stays open, 0 = no deadline (< 2**32)
    /// @param open anyone may contribute, not only admitted contributors
    /// @param maxSamples largest `numSamples` (the fedavg weight) an update may claim, 1 to 2**32 - 1
    /// @param attestWindow seconds an attestation attempt lasts (1 to 2**32 - 1): when no result
    /// reaches `quorum` within it, attempt `k + 1` opens and every validator may attest again
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
        uint64 attestWindow;
    }

    /// @notice What validators attest for a round; `resultDigest` hashes it with the task and
    /// round. `recordHash` and `updateCount` must be the sealed round's, so an attestation is
    /// bound to exactly the records that were sealed.
    /// @param recordHash the round's running record hash at its seal
    /// @param updateCount the number of records sealed
    /// @param verdictRoot Merkle root of the round's verdicts (OpenZeppelin sorted-pair tree)
    /// @param verdictHash sha256 of the round's verdict file
    /// @param verdictCidDigest sha2-256 digest of the verdict file's CID
    /// @param aggregateHash sha256 of the new global model file
    /// @param aggregateCidDigest sha2-256 digest of the new global model file's CID
    /// @param aggregateTensorRoot tensor root of the round's aggregate (fixed-point delta);
    /// zero for tasks without a fixed-point format
    struct RoundResult {
        bytes28 recordHash;
        uint32 updateCount;
        bytes32 verdictRoot;
        bytes32 verdictHash;
        bytes32 verdictCidDigest;
        bytes32 aggregateHash;
        bytes32 aggregateCidDigest;
        bytes32 aggregateTensorRoot;
    }

    /// @notice State of a round: `Open` takes updates, `Sealed` takes attestations, `Final` is done.
    enum RoundState {
        Open,
        Sealed,
        Final
    }

    /// @notice A task as `getTask` returns it.
    /// @param lastFinalDigest `resultDigest` of the last final round (zero before the first):
    /// its `RoundResult` (in `ResultProposed`) names the current global model
    /// @param roundStart timestamp at which the current round opened (0 once it is sealed: the
    /// seal's time is `getRound(...).sealedAt`)
    /// @param updateCount updates recorded in the current round
    /// @param isSealed the current round was sealed and takes no more updates
    /// @param updates updates recorded over the task's life (the last `seq`)
    struct TaskView {
        address owner;
        bytes32 modelHash;
        bytes32 lastFinalDigest;
        string modelCid;
        string specCid;
        uint32 minUpdates;
        uint32 maxUpdates;
        uint8 quorum;
        uint64 roundDuration;
        bool open;
        uint64 maxSamples;
        uint64 attestWindow;
        uint64 currentRound;
        uint64 roundStart;
        uint32 updateCount;
        bool isSealed;
        uint32 updates;
        uint32 contributorCount;
        uint8 validatorCount;
    }

    /// @notice A round as `getRound` returns it. Fields a past round no longer keeps are 0.
    /// @param state Open, Sealed or Final
    /// @param updateCount records in the round (current round only)
    /// @param recordHash the round's running record hash (current round only)
    /// @param startedAt timestamp the round opened (open current round only)
    /// @param deadline `startedAt + roundDuration` (open current round with a duration only)
    /// @param sealedAt timestamp of the seal (sealed current round only)
    /// @param attempt the attestation attempt now running (sealed current round only)
    /// @param attemptEndsAt when that attempt ends and the next one opens (sealed only)
    /// @param finalDigest the attested `resultDigest` (final rounds only)
    struct RoundView {
        RoundState state;
        uint32 updateCount;
        bytes28 recordHash;
        uint64 startedAt;
        uint64 deadline;
        uint64 sealedAt;
        uint32 attempt;
        uint64 attemptEndsAt;
        bytes32 finalDigest;
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
        uint64 maxSamples,
        uint64 attestWindow
    );

    /// @notice The task owner admitted a contributor; `index` numbers the task's contributors from 0.
    event ContributorAdded(uint256 indexed taskId, address indexed contributor, uint32 index);

    /// @notice The task owner admitted a validator; `index` numbers the task's validators from 0.
    event ValidatorAdded(uint256 indexed taskId, address indexed validator, uint8 index);

    /// @notice A validator published the X25519 public key updates of the task are encrypted to.
    event EncryptionKeySet(uint256 indexed taskId, address indexed validator, bytes32 publicKey);

    /// @notice One update was recorded (`submitUpdate`, `submitUpdateFor`).
    event UpdateSubmitted(
        uint256 indexed taskId,
        uint64 indexed round,
        address indexed contributor,
        uint256 updateId,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    );

    /// @notice A relayed batch recorded `records.length / 124` updates with consecutive ids from
    /// `firstUpdateId`. Each record is packed: contributor (20 bytes), contentHash (32),
    /// cidDigest (32), tensorRoot (32), numSamples (uint64, 8).
    event UpdatesRelayed(uint256 indexed taskId, uint64 indexed round, uint256 firstUpdateId, bytes records);

    /// @notice Entry `entry` (0-based) of a relayed batch was not recorded; `reason` is the
    /// selector of the error that a single submission would have reverted with (e.g.
    /// `DuplicateSubmission.selector`), `signer` the recovered address (zero if none).
    event EntrySkipped(uint256 indexed taskId, uint64 indexed round, uint256 entry, address signer, bytes4 reason);

    /// @notice The round was sealed: exactly these `updateCount` records, hashing to
    /// `recordHash`, are judged by every validator. Attempt 0 of its attestation starts now.
    event RoundSealed(uint256 indexed taskId, uint64 indexed round, uint32 updateCount, bytes28 recordHash);

    /// @notice A validator proposed a result no validator had attested in this attempt.
    event ResultProposed(
        uint256 indexed taskId, uint64 indexed round, bytes32 indexed digest, uint32 attempt, RoundResult result
    );

    /// @notice A validator attested `digest` in `attempt`; `count` attestations of it so far.
    event RoundAttested(
        uint256 indexed taskId,
        uint64 indexed round,
        address indexed validator,
        bytes32 digest,
        uint32 attempt,
        uint8 count
    );

    /// @notice `quorum` validators agreed in `attempt`: the round is final, its `RoundResult`
    /// (the `ResultProposed` of `digest`) names the new global model, and round `round + 1` opens.
    event RoundFinalized(uint256 indexed taskId, uint64 indexed round, bytes32 digest, uint32 attempt);

    /// @notice The owner of `taskId` handed its rounds to `court` (ICourt): every attestation is
    /// reported to it, a finalised round is only *attested* until the court settles it, and the
    /// court may void rounds proven wrong.
    event CourtSet(uint256 indexed taskId, address indexed court);

    /// @notice The court voided rounds `fromRound` to `toRound` (the round that was current, left
    /// unfinished) of `taskId`; round `toRound + 1` is open and builds on the result
    /// `resumeDigest` (zero: the initial model), which `roundDigest(taskId, toRound)` now returns.
    event RoundsVoided(uint256 indexed taskId, uint64 fromRound, uint64 toRound, bytes32 resumeDigest);

    // ---------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------

    /// @notice No task has id `taskId`.
    error UnknownTask(uint256 taskId);
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
    /// @notice Task `taskId` already has `max` validators (or contributors): the most it can hold.
    error TooManyMembers(uint256 taskId, uint256 max);
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
    /// @notice Task `taskId` recorded 2**32 - 1 updates, the most its `seq` can number (or its
    /// round 2**32 - 1, the last a uint32 can number, cannot be finalised).
    error TaskExhausted(uint256 taskId);
    /// @notice `round` of task `taskId` was sealed and takes no updates.
    error RoundAlreadySealed(uint256 taskId, uint64 round);
    /// @notice `round` of task `taskId` is open: seal it (`sealRound`) before attesting.
    error RoundNotSealed(uint256 taskId, uint64 round);
    /// @notice `round` of task `taskId` cannot be sealed yet: it holds `updateCount` updates,
    /// needs `needed` (or, when `deadline` is not 0, the deadline to pass).
    error RoundNotReady(uint256 taskId, uint64 round, uint32 updateCount, uint32 needed, uint256 deadline);
    /// @notice `validator` already attested `round` of task `taskId` in `attempt`; the next
    /// attempt opens when the task's attestation window has passed.
    error AlreadyAttested(uint256 taskId, uint64 round, address validator, uint32 attempt);
    /// @notice The attested records are not the sealed ones: the round sealed `sealedCount`
    /// records hashing to `sealedHash`, the attestation names `givenCount` and `givenHash`.
    error RecordsMismatch(
        uint256 taskId, uint64 round, bytes28 sealedHash, uint32 sealedCount, bytes28 givenHash, uint32 givenCount
    );
    /// @notice No validator proposed `digest` for `round` of task `taskId` in `attempt`:
    /// attest the full result with `attestRound`.
    error UnknownResult(uint256 taskId, uint64 round, bytes32 digest, uint32 attempt);
    /// @notice Every slot of the attempt's result table holds another result; attest in the next attempt.
    error TooManyResults(uint256 taskId, uint64 round, uint32 attempt);
    /// @notice The signature is not `contributor`'s (`recovered` is its signer, or zero when it
    /// is malformed or malleable).
    error BadSignature(address contributor, address recovered);
    /// @notice The signature's `deadline` passed before this block's timestamp `nowTs`.
    error Expired(uint256 deadline, uint256 nowTs);
    /// @notice A relayed batch is empty or its length `length` is not a multiple of 176 bytes.
    error BadBatch(uint256 length);
    /// @notice `caller` is not the court of task `taskId`.
    error NotCourt(uint256 taskId, address caller);
    /// @notice Task `taskId`'s court can only be set once, before its first round is sealed.
    error CourtLocked(uint256 taskId);

    // ---------------------------------------------------------------------------------------
    // Tasks and roles
    // ---------------------------------------------------------------------------------------

    /// @notice Create a training task owned by the caller; its round 0 opens now.
    /// @return taskId the new task's id; ids start at 1
    function createTask(TaskConfig calldata cfg) external returns (uint256 taskId);

    /// @notice Admit `who` as a contributor of task `taskId`. Task owner only.
    function addContributor(uint256 taskId, address who) external;

    /// @notice Admit `who` as a validator of task `taskId` (at most 255). Task owner only.
    function addValidator(uint256 taskId, address who) external;

    /// @notice Publish the caller's X25519 public key for task `taskId`. Validators only.
    function setEncryptionKey(uint256 taskId, bytes32 publicKey) external;

    // ---------------------------------------------------------------------------------------
    // Updates
    // ---------------------------------------------------------------------------------------

    /// @notice Record the caller's update for the current round of task `taskId`.
    /// @dev One update per contributor per round, at most `maxUpdates` per round, none once the
    /// round is sealed, `numSamples` in [1, `maxSamples`]. Updates after the round deadline but
    /// before the seal are recorded; validators judge them `LATE`. In an open task the first
    /// update of an address admits it (and numbers it).
    /// @return updateId `(taskId << 32) | seq`
    function submitUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) external returns (uint256 updateId);

    /// @notice Record `contributor`'s update, relayed by anyone and authorised by the
    /// contributor's EIP-712 `Update` signature (65 bytes, or 64 in EIP-2098 compact form).
    /// Same rules as `submitUpdate`; reverts on any failure.
    /// @dev No nonce: one update per contributor per round makes every signature single-use.
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
    ) external returns (uint256 updateId);

    /// @notice Record a batch of signed updates for one task and round, packed: each entry is
    /// 176 bytes, `contentHash (32) | cidDigest (32) | tensorRoot (32) | numSamples (uint64, 8) |
    /// deadline (uint64, 8) | r (32) | vs (32)` with (r, vs) the EIP-2098 compact signature; the
    /// contributor is the signer. An entry that a single submission would refuse (bad or expired
    /// signature, not admitted, duplicate, too many samples, round full) is skipped with an
    /// `EntrySkipped` event; the others are recorded in order, in one `UpdatesRelayed` event.
    /// @dev Reverts only for the whole batch's own faults: unknown task, wrong round, sealed
    /// round, or a length that is zero or not a multiple of 176. A newcomer of an open task that
    /// already numbers 2**32 - 2 contributors is skipped with `TooManyMembers.selector`.
    /// @return firstUpdateId the id of the first recorded entry (the others follow
    /// consecutively); 0 when no entry was recorded, and then no `UpdatesRelayed` is emitted
    /// @return recorded how many entries were recorded
    function submitBatch(uint256 taskId, uint64 round, bytes calldata entries)
        external
        returns (uint256 firstUpdateId, uint256 recorded);

    // ---------------------------------------------------------------------------------------
    // Attestation
    // ---------------------------------------------------------------------------------------

    /// @notice Close the current round of task `taskId` to new updates. Validators only; the
    /// round must be ready: full, or its deadline passed, or (no deadline) `minUpdates` updates.
    /// @dev Emits `RoundSealed` with the count and record hash every validator then judges.
    function sealRound(uint256 taskId, uint64 round) external;

    /// @notice Attest the result of the sealed current round of task `taskId`: once per
    /// validator per attempt. Proposes `result` if no validator has in this attempt, else
    /// counts one more attestation of it; `quorum` attestations make the round final.
    /// @dev Seals the round first when it is ready and not yet sealed.
    function attestRound(uint256 taskId, uint64 round, RoundResult calldata result) external;

    /// @notice Attest a result another validator proposed in the current attempt, by its digest
    /// (cheaper than `attestRound`: the result itself is already on record).
    function confirmRound(uint256 taskId, uint64 round, bytes32 digest) external;

    // ---------------------------------------------------------------------------------------
    // Court (optimistic verification, ICourt)
    // ---------------------------------------------------------------------------------------

    /// @notice Hand task `taskId` to `court` (an ICourt serving this ledger). Task owner only,
    /// once, while round 0 is open. From then on every attestation of the task is reported to
    /// the court (which refuses unbonded validators), and the court may void rounds.
    function setCourt(uint256 taskId, address court) external;

    /// @notice Void rounds `fromRound` (a finalised round) to the current one of task `taskId`
    /// and open a new round on `resumeDigest` (the result of the last round not voided; zero
    /// for the initial model). The task's court only.
    function voidRounds(uint256 taskId, uint64 fromRound, bytes32 resumeDigest) external;

    /// @notice The court of task `taskId` (zero when it has none: rounds are final on quorum).
    function courtOf(uint256 taskId) external view returns (address);

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice The EIP-712 type hash of `Update(uint256 taskId,uint64 round,bytes32 contentHash,
    /// bytes32 cidDigest,bytes32 tensorRoot,uint64 numSamples,uint64 deadline)`.
    function UPDATE_TYPEHASH() external view returns (bytes32);

    /// @notice The EIP-712 domain separator (name `TrainingLedger`, version `2`).
    function DOMAIN_SEPARATOR() external view returns (bytes32);

    /// @notice Number of tasks created; the last task's id.
    function taskCount() external view returns (uint256);

    /// @notice The open round of task `taskId`.
    function currentRound(uint256 taskId) external view returns (uint64);

    /// @notice Task `taskId` with its configuration and current round.
    function getTask(uint256 taskId) external view returns (TaskView memory);

    /// @notice Round `round` of task `taskId` (see `RoundView`).
    function getRound(uint256 taskId, uint64 round) external view returns (RoundView memory);

    /// @notice The attested `resultDigest` of the final round `round` (zero when not final).
    function roundDigest(uint256 taskId, uint64 round) external view returns (bytes32);

    /// @notice `keccak256(abi.encode(taskId, round, result))`: what validators agree on.
    function resultDigest(uint256 taskId, uint64 round, RoundResult calldata result) external pure returns (bytes32);

    /// @notice The first link of a round's record hash: `bytes28(keccak256(abi.encode(taskId, round)))`.
    function recordSeed(uint256 taskId, uint64 round) external pure returns (bytes28);

    /// @notice One link of the record hash (see the interface's header).
    function recordStep(
        bytes28 previous,
        address contributor,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) external pure returns (bytes28);

    /// @notice The EIP-712 hash a contributor signs to authorise a relayed update.
    function hashUpdate(
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples,
        uint64 deadline
    ) external view returns (bytes32);

    /// @notice Whether `who` is an admitted contributor of task `taskId` (in an open task: has
    /// contributed once, or was admitted).
    function isContributor(uint256 taskId, address who) external view returns (bool);

    /// @notice Whether `who` is a validator of task `taskId`.
    function isValidator(uint256 taskId, address who) external view returns (bool);

    /// @notice Whether `who` submitted an update to `round`, which must be the current round
    /// (reverts `WrongRound` otherwise: past rounds are in events).
    function hasSubmitted(uint256 taskId, uint64 round, address who) external view returns (bool);

    /// @notice Whether validator `who` attested `round` (the current round) in the current attempt.
    function hasAttested(uint256 taskId, uint64 round, address who) external view returns (bool);

    /// @notice How many validators attested `digest` for the current round `round` in the
    /// current attempt (reverts `WrongRound` for another round).
    function attestationCount(uint256 taskId, uint64 round, bytes32 digest) external view returns (uint256);

    /// @notice The verdict-tree leaf of an update: `keccak256(bytes.concat(keccak256(abi.encode(
    /// updateId, contributor, contentHash, verdict))))`.
    function verdictLeaf(uint256 updateId, address contributor, bytes32 contentHash, uint8 verdict)
        external
        pure
        returns (bytes32);

    /// @notice Whether `leaf` is in the verdict tree of the final round `round`, whose attested
    /// result is `result`.
    /// @return false when the round is not final, `result` is not its attested result, or the
    /// proof does not lead to `result.verdictRoot`
    function verifyVerdict(
        uint256 taskId,
        uint64 round,
        RoundResult calldata result,
        bytes32 leaf,
        bytes32[] calldata proof
    ) external view returns (bool);
}
