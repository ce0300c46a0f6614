// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ITrainingLedger} from "./ITrainingLedger.sol";

/// @title ICourtHooks — what TrainingLedger calls on the court of a task
/// @notice A task whose owner set a court (`TrainingLedger.setCourt`) reports every counted
/// attestation to it; the court may refuse one (an unbonded validator) by reverting.
interface ICourtHooks {
    /// @notice `validator` attested `digest` for `round` of `taskId` in `attempt`; `finalises`
    /// when it was the attestation that reached quorum (the round is now *attested*).
    /// `firstSeq` is the round's first update `seq` (its updateIds are `(taskId << 32) | seq`
    /// for `seq` from `firstSeq` on). Called by the ledger only, after its own state is written.
    function onAttest(
        uint256 taskId,
        uint64 round,
        address validator,
        bytes32 digest,
        uint32 attempt,
        bool finalises,
        uint32 firstSeq
    ) external;
}

/// @title ICourt — bonded validators, a challenge window, a one-coordinate fraud proof of an
/// attested aggregate, and rewards claimed by Merkle proof
/// @notice Optimistic verification for tasks of one `TrainingLedger` (docs/verification.md).
///  - **Bonds.** Every validator of a task posts the task's `bond` (native ETH) before it may
///    attest; it withdraws it `unbondingDelay` seconds after `unbond`, when no challenge of the
///    task is open.
///  - **Windows.** A round the ledger finalises is *attested*; it becomes *settled* (`settle`)
///    once `challengeWindow` seconds pass without a successful challenge and the round it built
///    on is settled. An overturned round and every attested round after it are *voided*; the
///    ledger then opens a new round on the last model that was not voided.
///  - **Fraud proof.** Anyone posting `challengerBond` names coordinate `j` of an attested
///    round's aggregate (`aggregateTensorRoot`), stages every update record of the round with its
///    verdict leaf (and, for accepted ones, coordinate `j` with its proof against the update's
///    tensorRoot), and the court recomputes the task's rule (fedavg, median, trimmed mean, on
///    the integers of docs/aggregation.md, clip multipliers as the verdict leaves commit them).
///    A different value overturns the round and slashes the bonds of the validators that
///    attested it (`challengerShareBps` of each to the challenger, the rest to the reward pool);
///    the same value, or a proof left unfinished by its deadline, forfeits the challenger's bond
///    to the reward pool.
///  - **Rewards.** Anyone funds a task's pool; a settled round's verdict leaves carry each
///    accepted update's reward, claimed once with a Merkle proof; claims never exceed the pool.
/// @dev Verdict leaves: `keccak256(bytes.concat(keccak256(abi.encode(updateId, contributor,
/// contentHash, verdict))))` when the update is not clipped (`clip == 2**32`) and earns nothing
/// (`reward == 0`), else `keccak256(bytes.concat(keccak256(abi.encode(updateId, contributor,
/// contentHash, verdict, clip, reward))))` with `clip` a uint64 and `reward` a uint256: the
/// first form is the ledger's `verdictLeaf`, so rounds without clipping or rewards keep
/// their leaves (fedledger.protocol.verdicts).
interface ICourt is ICourtHooks {
    // ---------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------

    /// @notice The aggregation rule the fraud proof recomputes (`None`: rounds are attested and
    /// settle, but their aggregate cannot be challenged, e.g. krum; docs/verification.md).
    enum Rule {
        None,
        FedAvg,
        Median,
        TrimmedMean
    }

    /// @notice A round as the court sees it: `None` (not attested), `Attested` (in or past its
    /// window, not yet settled), `Settled`, `Voided`.
    enum RoundStatus {
        None,
        Attested,
        Settled,
        Voided
    }

    /// @notice A task's terms, set once by the task's owner before its court is set on the ledger.
    /// @param bond wei each validator posts (> 0)
    /// @param challengerBond wei a challenger posts (> 0)
    /// @param challengeWindow seconds after attestation in which a round may be challenged; a
    /// challenge must also be resolved within this many seconds of being opened (> 0)
    /// @param unbondingDelay seconds from `unbond` to `withdraw` (>= 2 * challengeWindow, so
    /// every round a validator attested is settled or challenged before its bond leaves)
    /// @param challengerShareBps share of each slashed bond paid to the challenger, in 1/10,000
    /// @param rule the rule the fraud proof recomputes
    /// @param weightCap fedavg's weight cap (`w = min(numSamples, weightCap)`), 0 = uncapped
    /// @param betaNum trimmed mean: `beta = betaNum / betaDen < 1/2`
    /// @param betaDen trimmed mean: > 0
    struct Terms {
        uint96 bond;
        uint96 challengerBond;
        uint32 challengeWindow;
        uint32 unbondingDelay;
        uint16 challengerShareBps;
        Rule rule;
        uint64 weightCap;
        uint32 betaNum;
        uint32 betaDen;
    }

    /// @notice A validator's bond in a task.
    /// @param amount wei held (0 once withdrawn or slashed)
    /// @param unbondAt when `withdraw` becomes possible; 0 while the bond is active
    /// @param index the validator's number among the task's bonded validators (from 0)
    /// @param registered the validator has bonded in this task before
    struct Bond {
        uint128 amount;
        uint64 unbondAt;
        uint8 index;
        bool registered;
    }

    /// @notice An attested round as the court keeps it.
    /// @param digest the ledger's `resultDigest` of the round
    /// @param attestedAt when the quorum was reached
    /// @param attempt the attestation attempt that reached it
    /// @param firstSeq the `seq` of the round's first update
    /// @param parent `round + 1` of the attested round it builds on, 0 = the task's initial model
    /// @param status see `RoundStatus`
    /// @param challenges how many of its challenges are open
    struct RoundRecord {
        bytes32 digest;
        uint64 attestedAt;
        uint32 attempt;
        uint32 firstSeq;
        uint32 parent;
        RoundStatus status;
        uint64 challenges;
    }

    /// @notice One update record of a challenged round, in record order, with its verdict leaf
    /// fields and proof and, when accepted, coordinate `j` of its tensor with the proof.
    /// @param contributor the record's contributor
    /// @param contentHash the record's contentHash
    /// @param cidDigest the record's cidDigest
    /// @param tensorRoot the record's tensorRoot
    /// @param numSamples the record's numSamples
    /// @param verdict the verdict code its leaf commits (0 = ACCEPTED)
    /// @param clip its clip multiplier `num` (docs/aggregation.md section 4), 2**32 = not clipped
    /// @param reward the wei its leaf grants (claimable once the round settles)
    /// @param verdictProof the leaf's proof against the round's `verdictRoot`
    /// @param leaf accepted only: the 4,116-byte tensor leaf holding coordinate `j`
    /// @param leafProof accepted only: the leaf's proof against `tensorRoot`
    struct Input {
        address contributor;
        bytes32 contentHash;
        bytes32 cidDigest;
        bytes32 tensorRoot;
        uint64 numSamples;
        uint8 verdict;
        uint64 clip;
        uint256 reward;
        bytes32[] verdictProof;
        bytes leaf;
        bytes32[] leafProof;
    }

    /// @notice A challenge as `getChallenge` returns it.
    /// @param challenger who posted the bond
    /// @param deadline when an unresolved challenge expires
    /// @param bond the challenger's bond
    /// @param staged records staged so far
    /// @param accepted accepted inputs among them
    /// @param firstSeq the round's first update `seq`
    /// @param open not yet resolved or expired
    /// @param taskId the task
    /// @param round the challenged round
    /// @param coordinate the coordinate `j` proven
    /// @param dimension the aggregate's dimension (every accepted input must have it)
    /// @param attested the attested aggregate's coordinate `j`
    /// @param updateCount the round's sealed record count
    /// @param chain the record hash of the staged records
    /// @param recordHash the round's sealed record hash
    /// @param verdictRoot the round's verdict root
    /// @param weightSum fedavg: sum of the capped weights
    /// @param weightedSum fedavg: sum of weight * clipped coordinate
    /// @param valuesHash median / trimmed mean: `keccak256(abi.encodePacked(previous, int64 value))`
    /// chained over the clipped coordinates in staging order, from zero
    struct Challenge {
        address challenger;
        uint64 deadline;
        uint96 bond;
        uint32 staged;
        uint32 accepted;
        uint32 firstSeq;
        bool open;
        uint256 taskId;
        uint64 round;
        uint64 coordinate;
        uint64 dimension;
        int32 attested;
        uint32 updateCount;
        bytes28 chain;
        bytes28 recordHash;
        bytes32 verdictRoot;
        uint256 weightSum;
        int256 weightedSum;
        bytes32 valuesHash;
    }

    // ---------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------

    /// @notice The owner of `taskId` fixed its terms.
    event TermsSet(uint256 indexed taskId, Terms terms);
    /// @notice `validator` bonded `amount` wei in `taskId` as bonded validator number `index`.
    event Bonded(uint256 indexed taskId, address indexed validator, uint256 amount, uint8 index);
    /// @notice `validator` stopped attesting `taskId`; it may withdraw from `withdrawableAt`.
    event UnbondingStarted(uint256 indexed taskId, address indexed validator, uint64 withdrawableAt);
    /// @notice `validator` took back its bond of `amount` wei.
    event Withdrawn(uint256 indexed taskId, address indexed validator, uint256 amount);
    /// @notice `round` of `taskId` is attested with `digest`; it may be challenged until `windowEndsAt`.
    event RoundPending(uint256 indexed taskId, uint64 indexed round, bytes32 digest, uint64 windowEndsAt);
    /// @notice `round` of `taskId` is settled: final, and its rewards claimable.
    event RoundSettled(uint256 indexed taskId, uint64 indexed round, bytes32 verdictRoot);
    /// @notice `round` of `taskId` was voided (`overturned`: it is the round proven wrong; else
    /// it built on a voided round).
    event RoundVoided(uint256 indexed taskId, uint64 indexed round, bool overturned);
    /// @notice A challenge of coordinate `coordinate` of `round`'s aggregate was opened.
    event ChallengeOpened(
        uint256 indexed challengeId,
        uint256 indexed taskId,
        uint64 indexed round,
        address challenger,
        uint64 coordinate,
        int32 attested,
        uint64 deadline
    );
    /// @notice `count` records of the challenge were staged; `staged` of them so far.
    event InputsStaged(uint256 indexed challengeId, uint32 count, uint32 staged);
    /// @notice The challenge was decided: the rule gives `computed` where the round attested
    /// `attested`; `overturned` when they differ.
    event ChallengeResolved(uint256 indexed challengeId, bool overturned, int256 computed, int32 attested);
    /// @notice The challenge passed its deadline unresolved; its bond went to the reward pool.
    event ChallengeExpired(uint256 indexed challengeId);
    /// @notice `amount` wei of `validator`'s bond were slashed; `toChallenger` of them paid to the challenger.
    event Slashed(uint256 indexed taskId, address indexed validator, uint256 amount, uint256 toChallenger);
    /// @notice `amount` wei were added to the reward pool of `taskId` (by `from`; the court itself
    /// for slashed and forfeited bonds).
    event PoolFunded(uint256 indexed taskId, address indexed from, uint256 amount);
    /// @notice `contributor` claimed `amount` wei for update `updateId` of `round`.
    event RewardClaimed(
        uint256 indexed taskId, uint64 indexed round, address indexed contributor, uint256 updateId, uint256 amount
    );

    // ---------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------

    /// @notice Only the ledger calls the court's hooks; `caller` is not it.
    error NotLedger(address caller);
    /// @notice `caller` is not the owner of task `taskId` on the ledger.
    error NotOwner(uint256 taskId, address caller);
    /// @notice The terms are invalid; `reason` names the rule they break.
    error InvalidTerms(string reason);
    /// @notice Task `taskId` already has terms, or has none yet (`set` says which).
    error TermsState(uint256 taskId, bool set);
    /// @notice `account` is not a validator of task `taskId` on the ledger.
    error NotValidator(uint256 taskId, address account);
    /// @notice The bond sent (`given`) is not the task's (`required`).
    error WrongBond(uint256 taskId, uint256 given, uint256 required);
    /// @notice `validator` has bonded in task `taskId` before (a bond is posted once per task).
    error AlreadyBonded(uint256 taskId, address validator);
    /// @notice `validator` holds no active bond in task `taskId`: it may not attest.
    error NotBonded(uint256 taskId, address validator);
    /// @notice Task `taskId` has 256 bonded validators, the most it can number.
    error TooManyBonded(uint256 taskId);
    /// @notice `validator`'s bond in task `taskId` is not withdrawable before `unbondAt`
    /// (0: it is not unbonding, or was already withdrawn or slashed).
    error StillBonded(uint256 taskId, address validator, uint64 unbondAt);
    /// @notice Task `taskId` has `open` open challenges; withdrawals wait until they are decided.
    error DisputeOpen(uint256 taskId, uint256 open);
    /// @notice `round` of task `taskId` is `status`, not what the call needs.
    error WrongStatus(uint256 taskId, uint64 round, RoundStatus status);
    /// @notice The window of `round` of task `taskId` closed at `windowEndsAt` (challenge), or
    /// closes then (settle).
    error Window(uint256 taskId, uint64 round, uint64 windowEndsAt);
    /// @notice `round` of task `taskId` has `open` open challenges: it settles once they are decided.
    error ChallengePending(uint256 taskId, uint64 round, uint256 open);
    /// @notice `round` of task `taskId` cannot settle before the round it builds on (`parent`).
    error ParentNotSettled(uint256 taskId, uint64 round, uint64 parent);
    /// @notice `result` does not hash to the attested digest `digest` of the round.
    error ResultMismatch(uint256 taskId, uint64 round, bytes32 digest, bytes32 given);
    /// @notice The task's rule is `None` or the round has no aggregate tensor root: nothing to prove.
    error NotProvable(uint256 taskId, uint64 round);
    /// @notice No challenge `challengeId` is open.
    error NotOpen(uint256 challengeId);
    /// @notice Only challenge `challengeId`'s challenger (`challenger`) stages its records:
    /// records staged by anyone else could spoil its record hash and cost it its bond.
    error NotChallenger(uint256 challengeId, address challenger);
    /// @notice Challenge `challengeId` passed its deadline `deadline`; call `expire`.
    error Expired(uint256 challengeId, uint64 deadline);
    /// @notice Challenge `challengeId` is open until `deadline`.
    error NotExpired(uint256 challengeId, uint64 deadline);
    /// @notice Staging `count` more records exceeds the round's `updateCount`, or resolving
    /// found `staged` of `updateCount` staged.
    error StagingCount(uint256 challengeId, uint256 staged, uint256 count, uint256 updateCount);
    /// @notice The staged records hash to `computed`, not the round's sealed `recordHash`.
    error RecordsMismatch(uint256 challengeId, bytes28 recordHash, bytes28 computed);
    /// @notice The verdict leaf of update `updateId` does not prove against the verdict root.
    error BadVerdictProof(uint256 challengeId, uint256 updateId);
    /// @notice Accepted update `updateId`'s tensor has `dimension` coordinates, the aggregate `expected`.
    error DimensionMismatch(uint256 challengeId, uint256 updateId, uint256 dimension, uint256 expected);
    /// @notice The values given to `resolve` are not the staged ones (count `given` of `expected`, or another hash).
    error ValuesMismatch(uint256 challengeId, uint256 given, uint256 expected);
    /// @notice `round` of task `taskId` is not settled: its rewards are not claimable yet.
    error NotSettled(uint256 taskId, uint64 round);
    /// @notice Update `updateId`'s reward was claimed already.
    error AlreadyClaimed(uint256 taskId, uint256 updateId);
    /// @notice The leaf is not an accepted update of task `taskId` in the settled round's verdict tree.
    error BadClaim(uint256 taskId, uint64 round, uint256 updateId);
    /// @notice The pool of task `taskId` holds `pool` wei, less than the `amount` claimed.
    error PoolExhausted(uint256 taskId, uint256 pool, uint256 amount);

    // ---------------------------------------------------------------------------------------
    // Terms and bonds
    // ---------------------------------------------------------------------------------------

    /// @notice Fix the terms of task `taskId`. Its ledger owner only, once, before
    /// `TrainingLedger.setCourt(taskId, court)`.
    function setTerms(uint256 taskId, Terms calldata terms) external;

    /// @notice Post the task's bond (exactly `terms.bond` wei) as a validator of task `taskId`.
    function bond(uint256 taskId) external payable;

    /// @notice Stop attesting task `taskId`; the bond is withdrawable after `unbondingDelay`.
    function unbond(uint256 taskId) external;

    /// @notice Take back the caller's bond once its unbonding delay passed and no challenge of
    /// the task is open.
    function withdraw(uint256 taskId) external;

    // ---------------------------------------------------------------------------------------
    // Windows
    // ---------------------------------------------------------------------------------------

    /// @notice Settle the attested `round` of task `taskId`: its window passed, it has no open
    /// challenge and the round it builds on is settled. `result` must be its attested result
    /// (its verdict root is kept for claims).
    function settle(uint256 taskId, uint64 round, ITrainingLedger.RoundResult calldata result) external;

    // ---------------------------------------------------------------------------------------
    // Fraud proof
    // ---------------------------------------------------------------------------------------

    /// @notice Challenge coordinate `coordinate` of the aggregate of the attested `round` of
    /// task `taskId`, inside its window, posting exactly `terms.challengerBond` wei. `result` is
    /// the round's attested result; `leaf` and `proof` prove the attested coordinate against its
    /// `aggregateTensorRoot`.
    /// @return challengeId the new challenge's id (from 1)
    function challenge(
        uint256 taskId,
        uint64 round,
        ITrainingLedger.RoundResult calldata result,
        uint64 coordinate,
        bytes calldata leaf,
        bytes32[] calldata proof
    ) external payable returns (uint256 challengeId);

    /// @notice Stage the next records of challenge `challengeId` (its challenger only), in record order.
    function stage(uint256 challengeId, Input[] calldata inputs) external;

    /// @notice Decide challenge `challengeId` once all records are staged. `values` is empty for
    /// fedavg; for median and trimmed mean it is the accepted inputs' clipped coordinates in
    /// staging order, each an int64 as 8 big-endian bytes.
    /// @return overturned whether the attested coordinate was proven wrong
    function resolve(uint256 challengeId, bytes calldata values) external returns (bool overturned);

    /// @notice Close challenge `challengeId` after its deadline: its bond goes to the reward pool.
    function expire(uint256 challengeId) external;

    // ---------------------------------------------------------------------------------------
    // Rewards
    // ---------------------------------------------------------------------------------------

    /// @notice Add `msg.value` to the reward pool of task `taskId`.
    function fund(uint256 taskId) external payable;

    /// @notice Pay `contributor` the `reward` its accepted update `updateId` earned in the
    /// settled `round` of task `taskId`, once; `proof` proves its verdict leaf.
    function claim(
        uint256 taskId,
        uint64 round,
        uint256 updateId,
        address contributor,
        bytes32 contentHash,
        uint64 clip,
        uint256 reward,
        bytes32[] calldata proof
    ) external;

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice The ledger whose tasks this court serves.
    function ledger() external view returns (ITrainingLedger);

    /// @notice The terms of task `taskId` (all zero when unset).
    function getTerms(uint256 taskId) external view returns (Terms memory);

    /// @notice `validator`'s bond in task `taskId`.
    function getBond(uint256 taskId, address validator) external view returns (Bond memory);

    /// @notice Whether `validator` may attest task `taskId` (holds an active bond).
    function isBonded(uint256 taskId, address validator) external view returns (bool);

    /// @notice `round` of task `taskId` as the court keeps it.
    function getRoundRecord(uint256 taskId, uint64 round) external view returns (RoundRecord memory);

    /// @notice The status of `round` and when its window ends (0 when not attested).
    function roundStatus(uint256 taskId, uint64 round) external view returns (RoundStatus status, uint64 windowEndsAt);

    /// @notice Challenge `challengeId`.
    function getChallenge(uint256 challengeId) external view returns (Challenge memory);

    /// @notice Number of challenges ever opened (the last id).
    function challengeCount() external view returns (uint256);

    /// @notice Open challenges of task `taskId`.
    function openChallenges(uint256 taskId) external view returns (uint256);

    /// @notice The reward pool of task `taskId` in wei.
    function pool(uint256 taskId) external view returns (uint256);

    /// @notice Whether update `updateId`'s reward was claimed.
    function isClaimed(uint256 taskId, uint256 updateId) external view returns (bool);

    /// @notice The validators whose attestation of `digest` in `attempt` counted, as a bitmap of
    /// their bonded-validator numbers.
    function attesters(uint256 taskId, uint64 round, uint32 attempt, bytes32 digest) external view returns (uint256);

    /// @notice The validator bonded as number `index` in task `taskId`.
    function validatorAt(uint256 taskId, uint8 index) external view returns (address);

    /// @notice The verdict leaf (see the interface's header).
    function verdictLeaf(
        uint256 updateId,
        address contributor,
        bytes32 contentHash,
        uint8 verdict,
        uint64 clip,
        uint256 reward
    ) external pure returns (bytes32);

    /// @notice Totals over the court's life, in wei: bonds (validators' and challengers')
    /// `deposited`, `held` now, `slashed` (slashed and forfeited), `refunded` (challengers'
    /// bonds returned) and `withdrawn`; always `deposited == held + slashed + refunded + withdrawn`.
    /// Pools: `funded` (incl. slashed shares paid in); what was claimed is `funded` less the
    /// pools, and the court's balance is `held` plus the pools.
    function totals()
        external
        view
        returns (uint256 deposited, uint256 held, uint256 slashed, uint256 refunded, uint256 withdrawn, uint256 funded);
}
