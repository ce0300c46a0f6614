// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ICourt, ICourtHooks} from "./ICourt.sol";
import {ITrainingLedger} from "./ITrainingLedger.sol";
import {TensorRoot} from "./TensorRoot.sol";
import {ExactRules} from "./ExactRules.sol";

/// @title Court — bonds, challenge windows, the one-coordinate fraud proof and reward claims
/// @notice See {ICourt} for the user-facing documentation of every function, and
/// docs/verification.md for what is proven on chain and what rests on the quorum.
/// @dev Accounting (`totals`): every wei the court holds is a bond (`_held`) or in a task's
/// reward pool (`_pool`); `deposited == held + slashed + refunded + withdrawn` and the court's
/// balance is `held + sum(pool)`, so what was claimed is `funded - sum(pool)` (a claim writes
/// no global counter: it is the hot path, kept to its bitmap word and its pool). Every ETH transfer is the last step of its function
/// (checks-effects-interactions) behind a transient reentrancy lock.
contract Court is ICourt, ReentrancyGuardTransient {
    /// @dev Verdict code of an accepted update (fedledger.protocol.verdicts.Verdict.ACCEPTED).
    uint8 private constant ACCEPTED = 0;
    uint256 private constant BPS = 10_000;
    uint256 private constant MAX_BONDED = 256;

    ITrainingLedger private immutable _ledger;

    mapping(uint256 taskId => Terms) private _terms;
    mapping(uint256 taskId => mapping(address validator => Bond)) private _bonds;
    mapping(uint256 taskId => mapping(uint256 index => address validator)) private _validatorAt;
    mapping(uint256 taskId => uint256 count) private _bondedCount;
    mapping(uint256 taskId => mapping(uint64 round => RoundRecord)) private _rounds;
    /// @dev `round + 1` of the task's last attested round that is not voided (0: none).
    mapping(uint256 taskId => uint32 head) private _head;
    mapping(bytes32 key => uint256 bitmap) private _votes;
    mapping(uint256 challengeId => Challenge) private _challenges;
    mapping(uint256 taskId => uint256 count) private _open;
    mapping(uint256 taskId => uint256 wei_) private _pool;
    mapping(uint256 taskId => mapping(uint64 round => bytes32 verdictRoot)) private _settledRoot;
    mapping(uint256 taskId => mapping(uint256 word => uint256 bits)) private _claimed;
    uint256 private _challengeCount;
    uint256 private _deposited;
    uint256 private _held;
    uint256 private _slashed;
    uint256 private _refunded;
    uint256 private _withdrawn;
    uint256 private _funded;

    /// @param ledger_ the ledger whose tasks this court serves
    constructor(ITrainingLedger ledger_) {
        _ledger = ledger_;
    }

    // ---------------------------------------------------------------------------------------
    // Terms and bonds
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ICourt
    function setTerms(uint256 taskId, Terms calldata terms) external {
        if (_ledger.getTask(taskId).owner != msg.sender) revert NotOwner(taskId, msg.sender);
        if (_terms[taskId].bond != 0 || _ledger.courtOf(taskId) != address(0)) revert TermsState(taskId, true);
        if (terms.bond == 0) revert InvalidTerms("bond is zero");
        if (terms.challengerBond == 0) revert InvalidTerms("challengerBond is zero");
        if (terms.challengeWindow == 0) revert InvalidTerms("challengeWindow is zero");
        if (uint256(terms.unbondingDelay) < 2 * uint256(terms.challengeWindow)) {
            revert InvalidTerms("unbondingDelay is below 2 * challengeWindow");
        }
        if (terms.challengerShareBps > BPS) revert InvalidTerms("challengerShareBps exceeds 10000");
        if (terms.rule == Rule.TrimmedMean && (terms.betaDen == 0 || 2 * uint256(terms.betaNum) >= terms.betaDen)) {
            revert InvalidTerms("trimmed mean needs 0 <= betaNum / betaDen < 1/2");
        }
        _terms[taskId] = terms;
        emit TermsSet(taskId, terms);
    }

    /// @inheritdoc ICourt
    function bond(uint256 taskId) external payable {
        uint256 required = _terms[taskId].bond;
        if (required == 0) revert TermsState(taskId, false);
        if (!_ledger.isValidator(taskId, msg.sender)) revert NotValidator(taskId, msg.sender);
        Bond storage b = _bonds[taskId][msg.sender];
        if (b.registered) revert AlreadyBonded(taskId, msg.sender);
        if (msg.value != required) revert WrongBond(taskId, msg.value, required);
        uint256 index = _bondedCount[taskId];
        if (index == MAX_BONDED) revert TooManyBonded(taskId);
        _bondedCount[taskId] = index + 1;
        _validatorAt[taskId][index] = msg.sender;
        // forge-lint: disable-next-line(unsafe-typecast)
        _bonds[taskId][msg.sender] =
            Bond({amount: uint128(msg.value), unbondAt: 0, index: uint8(index), registered: true}); // value == bond (uint96), index < 256
        _deposited += msg.value;
        _held += msg.value;
        // forge-lint: disable-next-line(unsafe-typecast)
        emit Bonded(taskId, msg.sender, msg.value, uint8(index)); // index < 256
    }

    /// @inheritdoc ICourt
    function unbond(uint256 taskId) external {
        Bond storage b = _bonds[taskId][msg.sender];
        if (b.amount == 0 || b.unbondAt != 0) revert NotBonded(taskId, msg.sender);
        uint64 at = uint64(block.timestamp) + _terms[taskId].unbondingDelay;
        b.unbondAt = at;
        emit UnbondingStarted(taskId, msg.sender, at);
    }

    /// @inheritdoc ICourt
    function withdraw(uint256 taskId) external nonReentrant {
        Bond storage b = _bonds[taskId][msg.sender];
        uint64 at = b.unbondAt;
        uint256 amount = b.amount;
        // The delay is days against a block producer's drift of seconds.
        // slither-disable-next-line timestamp
        if (at == 0 || amount == 0 || block.timestamp < at) revert StillBonded(taskId, msg.sender, at);
        uint256 open = _open[taskId];
        if (open != 0) revert DisputeOpen(taskId, open);
        b.amount = 0;
        _held -= amount;
        _withdrawn += amount;
        emit Withdrawn(taskId, msg.sender, amount);
        Address.sendValue(payable(msg.sender), amount);
    }

    // ---------------------------------------------------------------------------------------
    // The ledger's hook
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ICourtHooks
    function onAttest(
        uint256 taskId,
        uint64 round,
        address validator,
        bytes32 digest,
        uint32 attempt,
        bool finalises,
        uint32 firstSeq
    ) external {
        if (msg.sender != address(_ledger)) revert NotLedger(msg.sender);
        Bond storage b = _bonds[taskId][validator];
        if (b.amount == 0 || b.unbondAt != 0) revert NotBonded(taskId, validator);
        _votes[_voteKey(taskId, round, attempt, digest)] |= uint256(1) << b.index;
        if (!finalises) return;
        uint32 parent = _head[taskId];
        _rounds[taskId][round] = RoundRecord({
            digest: digest,
            attestedAt: uint64(block.timestamp),
            attempt: attempt,
            firstSeq: firstSeq,
            parent: parent,
            status: RoundStatus.Attested,
            challenges: 0
        });
        // forge-lint: disable-next-line(unsafe-typecast)
        _head[taskId] = uint32(round) + 1; // the ledger's rounds are uint32
        emit RoundPending(taskId, round, digest, uint64(block.timestamp) + _terms[taskId].challengeWindow);
    }

    // ---------------------------------------------------------------------------------------
    // Windows
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ICourt
    function settle(uint256 taskId, uint64 round, ITrainingLedger.RoundResult calldata result) external {
        RoundRecord storage r = _rounds[taskId][round];
        if (r.status != RoundStatus.Attested) revert WrongStatus(taskId, round, r.status);
        if (r.challenges != 0) revert ChallengePending(taskId, round, r.challenges);
        uint64 ends = r.attestedAt + _terms[taskId].challengeWindow;
        // slither-disable-next-line timestamp
        if (block.timestamp < ends) revert Window(taskId, round, ends);
        uint32 parent = r.parent;
        if (parent != 0 && _rounds[taskId][parent - 1].status != RoundStatus.Settled) {
            revert ParentNotSettled(taskId, round, parent - 1);
        }
        _checkResult(taskId, round, r.digest, result);
        r.status = RoundStatus.Settled;
        _settledRoot[taskId][round] = result.verdictRoot;
        emit RoundSettled(taskId, round, result.verdictRoot);
    }

    // ---------------------------------------------------------------------------------------
    // Fraud proof
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ICourt
    function challenge(
        uint256 taskId,
        uint64 round,
        ITrainingLedger.RoundResult calldata result,
        uint64 coordinate,
        bytes calldata leaf,
        bytes32[] calldata proof
    ) external payable returns (uint256 challengeId) {
        Terms storage t = _terms[taskId];
        if (t.rule == Rule.None || result.aggregateTensorRoot == bytes32(0)) revert NotProvable(taskId, round);
        if (msg.value != t.challengerBond) revert WrongBond(taskId, msg.value, t.challengerBond);
        RoundRecord storage r = _rounds[taskId][round];
        if (r.status != RoundStatus.Attested) revert WrongStatus(taskId, round, r.status);
        uint64 ends = r.attestedAt + t.challengeWindow;
        // slither-disable-next-line timestamp
        if (block.timestamp >= ends) revert Window(taskId, round, ends);
        _checkResult(taskId, round, r.digest, result);
        int32 attested = TensorRoot.verifyCoordinate(result.aggregateTensorRoot, coordinate, leaf, proof);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 dimension = uint64(TensorRoot.dimension(leaf)); // read from 8 bytes
        r.challenges += 1;
        challengeId = _newChallenge(taskId, round, result, coordinate, dimension, attested, r.firstSeq);
    }

    /// @dev Store a new challenge (the checks of `challenge` passed) and count its bond.
    function _newChallenge(
        uint256 taskId,
        uint64 round,
        ITrainingLedger.RoundResult calldata result,
        uint64 coordinate,
        uint64 dimension,
        int32 attested,
        uint32 firstSeq
    ) private returns (uint256 challengeId) {
        challengeId = ++_challengeCount;
        Challenge storage c = _challenges[challengeId];
        uint64 deadline = uint64(block.timestamp) + _terms[taskId].challengeWindow;
        c.challenger = msg.sender;
        c.deadline = deadline;
        // forge-lint: disable-next-line(unsafe-typecast)
        c.bond = uint96(msg.value); // == challengerBond, a uint96
        c.firstSeq = firstSeq;
        c.open = true;
        c.taskId = taskId;
        c.round = round;
        c.coordinate = coordinate;
        c.dimension = dimension;
        c.attested = attested;
        c.updateCount = result.updateCount;
        c.chain = _recordSeed(taskId, round);
        c.recordHash = result.recordHash;
        c.verdictRoot = result.verdictRoot;
        _open[taskId] += 1;
        _deposited += msg.value;
        _held += msg.value;
        emit ChallengeOpened(challengeId, taskId, round, msg.sender, coordinate, attested, deadline);
    }

    /// @inheritdoc ICourt
    function stage(uint256 challengeId, Input[] calldata inputs) external {
        Challenge storage s = _challenges[challengeId];
        _checkLive(challengeId, s);
        if (msg.sender != s.challenger) revert NotChallenger(challengeId, s.challenger);
        Challenge memory c = s;
        uint256 weightCap = _terms[c.taskId].weightCap;
        uint256 count = inputs.length;
        if (uint256(c.staged) + count > c.updateCount) {
            revert StagingCount(challengeId, c.staged, count, c.updateCount);
        }
        for (uint256 i = 0; i < count; ++i) {
            _stageOne(challengeId, c, inputs[i], weightCap);
        }
        s.staged = c.staged;
        s.accepted = c.accepted;
        s.chain = c.chain;
        s.weightSum = c.weightSum;
        s.weightedSum = c.weightedSum;
        s.valuesHash = c.valuesHash;
        // forge-lint: disable-next-line(unsafe-typecast)
        emit InputsStaged(challengeId, uint32(count), c.staged); // count <= updateCount, a uint32
    }

    /// @inheritdoc ICourt
    function resolve(uint256 challengeId, bytes calldata values) external nonReentrant returns (bool overturned) {
        Challenge storage c = _challenges[challengeId];
        _checkLive(challengeId, c);
        if (c.staged != c.updateCount) revert StagingCount(challengeId, c.staged, 0, c.updateCount);
        if (c.chain != c.recordHash) revert RecordsMismatch(challengeId, c.recordHash, c.chain);
        uint256 taskId = c.taskId;
        uint64 round = c.round;
        int256 computed = _compute(challengeId, c, values);
        c.open = false;
        _open[taskId] -= 1;
        RoundRecord storage r = _rounds[taskId][round];
        r.challenges -= 1;
        address challenger = c.challenger;
        uint256 bond_ = c.bond;
        _held -= bond_;
        if (r.status != RoundStatus.Attested) {
            // voided meanwhile (an earlier round was overturned): nothing left to decide
            _refunded += bond_;
            emit ChallengeResolved(challengeId, false, computed, c.attested);
            Address.sendValue(payable(challenger), bond_);
            return false;
        }
        overturned = computed != int256(c.attested);
        emit ChallengeResolved(challengeId, overturned, computed, c.attested);
        if (!overturned) {
            _forfeit(taskId, bond_);
            return false;
        }
        _refunded += bond_;
        (uint256 toChallenger, bytes32 resumeDigest) = _overturn(taskId, round, r);
        _ledger.voidRounds(taskId, round, resumeDigest);
        Address.sendValue(payable(challenger), bond_ + toChallenger);
    }

    /// @inheritdoc ICourt
    function expire(uint256 challengeId) external {
        Challenge storage c = _challenges[challengeId];
        if (!c.open) revert NotOpen(challengeId);
        // slither-disable-next-line timestamp
        if (block.timestamp <= c.deadline) revert NotExpired(challengeId, c.deadline);
        c.open = false;
        uint256 taskId = c.taskId;
        _open[taskId] -= 1;
        _rounds[taskId][c.round].challenges -= 1;
        _held -= c.bond;
        _forfeit(taskId, c.bond);
        emit ChallengeExpired(challengeId);
    }

    // ---------------------------------------------------------------------------------------
    // Rewards
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ICourt
    function fund(uint256 taskId) external payable {
        _pool[taskId] += msg.value;
        _funded += msg.value;
        emit PoolFunded(taskId, msg.sender, msg.value);
    }

    /// @inheritdoc ICourt
    function claim(
        uint256 taskId,
        uint64 round,
        uint256 updateId,
        address contributor,
        bytes32 contentHash,
        uint64 clip,
        uint256 reward,
        bytes32[] calldata proof
    ) external nonReentrant {
        bytes32 root = _settledRoot[taskId][round];
        if (root == bytes32(0)) revert NotSettled(taskId, round);
        if (updateId >> 32 != taskId) revert BadClaim(taskId, round, updateId);
        bytes32 leaf = _verdictLeaf(updateId, contributor, contentHash, ACCEPTED, clip, reward);
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert BadClaim(taskId, round, updateId);
        _markClaimed(taskId, updateId);
        uint256 available = _pool[taskId];
        if (available < reward) revert PoolExhausted(taskId, available, reward);
        unchecked {
            _pool[taskId] = available - reward; // checked above
        }
        emit RewardClaimed(taskId, round, contributor, updateId, reward);
        Address.sendValue(payable(contributor), reward);
    }

    /// @dev Set update `updateId`'s claimed flag (bit `seq % 256` of word `seq / 256`), reverting
    /// `AlreadyClaimed` when it is set.
    function _markClaimed(uint256 taskId, uint256 updateId) private {
        uint256 seq = updateId & 0xffffffff;
        uint256 bits = _claimed[taskId][seq >> 8];
        uint256 flag = uint256(1) << (seq & 0xff);
        if (bits & flag != 0) revert AlreadyClaimed(taskId, updateId);
        _claimed[taskId][seq >> 8] = bits | flag;
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ICourt
    function ledger() external view returns (ITrainingLedger) {
        return _ledger;
    }

    /// @inheritdoc ICourt
    function getTerms(uint256 taskId) external view returns (Terms memory) {
        return _terms[taskId];
    }

    /// @inheritdoc ICourt
    function getBond(uint256 taskId, address validator) external view returns (Bond memory) {
        return _bonds[taskId][validator];
    }

    /// @inheritdoc ICourt
    function isBonded(uint256 taskId, address validator) external view returns (bool) {
        Bond storage b = _bonds[taskId][validator];
        return b.amount != 0 && b.unbondAt == 0;
    }

    /// @inheritdoc ICourt
    function getRoundRecord(uint256 taskId, uint64 round) external view returns (RoundRecord memory) {
        return _rounds[taskId][round];
    }

    /// @inheritdoc ICourt
    function roundStatus(uint256 taskId, uint64 round) external view returns (RoundStatus status, uint64 windowEndsAt) {
        RoundRecord storage r = _rounds[taskId][round];
        status = r.status;
        if (status != RoundStatus.None) windowEndsAt = r.attestedAt + _terms[taskId].challengeWindow;
    }

    /// @inheritdoc ICourt
    function getChallenge(uint256 challengeId) external view returns (Challenge memory) {
        return _challenges[challengeId];
    }

    /// @inheritdoc ICourt
    function challengeCount() external view returns (uint256) {
        return _challengeCount;
    }

    /// @inheritdoc ICourt
    function openChallenges(uint256 taskId) external view returns (uint256) {
        return _open[taskId];
    }

    /// @inheritdoc ICourt
    function pool(uint256 taskId) external view returns (uint256) {
        return _pool[taskId];
    }

    /// @inheritdoc ICourt
    function isClaimed(uint256 taskId, uint256 updateId) external view returns (bool) {
        uint256 seq = updateId & 0xffffffff;
        return (_claimed[taskId][seq >> 8] >> (seq & 0xff)) & 1 == 1;
    }

    /// @inheritdoc ICourt
    function attesters(uint256 taskId, uint64 round, uint32 attempt, bytes32 digest) external view returns (uint256) {
        return _votes[_voteKey(taskId, round, attempt, digest)];
    }

    /// @inheritdoc ICourt
    function validatorAt(uint256 taskId, uint8 index) external view returns (address) {
        return _validatorAt[taskId][index];
    }

    /// @inheritdoc ICourt
    function verdictLeaf(
        uint256 updateId,
        address contributor,
        bytes32 contentHash,
        uint8 verdict,
        uint64 clip,
        uint256 reward
    ) external pure returns (bytes32) {
        return _verdictLeaf(updateId, contributor, contentHash, verdict, clip, reward);
    }

    /// @inheritdoc ICourt
    function totals()
        external
        view
        returns (uint256 deposited, uint256 held, uint256 slashed, uint256 refunded, uint256 withdrawn, uint256 funded)
    {
        return (_deposited, _held, _slashed, _refunded, _withdrawn, _funded);
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    /// @dev One record: chain it, prove its verdict leaf, and for an accepted update prove
    /// coordinate `j` and fold its clipped value into the rule's accumulators.
    function _stageOne(uint256 challengeId, Challenge memory c, Input calldata x, uint256 weightCap) private pure {
        c.chain = _recordStep(c.chain, x.contributor, x.contentHash, x.cidDigest, x.tensorRoot, x.numSamples);
        uint256 updateId = (c.taskId << 32) | (uint256(c.firstSeq) + c.staged);
        c.staged += 1;
        bytes32 leaf = _verdictLeaf(updateId, x.contributor, x.contentHash, x.verdict, x.clip, x.reward);
        if (!MerkleProof.verifyCalldata(x.verdictProof, c.verdictRoot, leaf)) {
            revert BadVerdictProof(challengeId, updateId);
        }
        if (x.verdict != ACCEPTED) return;
        int32 q = TensorRoot.verifyCoordinate(x.tensorRoot, c.coordinate, x.leaf, x.leafProof);
        uint256 dim = TensorRoot.dimension(x.leaf);
        if (dim != c.dimension) revert DimensionMismatch(challengeId, updateId, dim, c.dimension);
        int256 v = ExactRules.clipped(q, x.clip); // |v| < 2**63: |q| <= 2**31, clip < 2**64
        uint256 w = weightCap == 0 || x.numSamples < weightCap ? x.numSamples : weightCap;
        c.accepted += 1;
        c.weightSum += w;
        // forge-lint: disable-next-line(unsafe-typecast)
        c.weightedSum += int256(w) * v; // w < 2**64
        // forge-lint: disable-next-line(unsafe-typecast)
        c.valuesHash = keccak256(abi.encodePacked(c.valuesHash, int64(v))); // |v| < 2**63
    }

    /// @dev The rule's value of the challenged coordinate from the staged accumulators (fedavg)
    /// or from `values`, checked against the staged hash chain (median, trimmed mean).
    function _compute(uint256 challengeId, Challenge storage c, bytes calldata values) private view returns (int256) {
        Terms storage t = _terms[c.taskId];
        if (t.rule == Rule.FedAvg) {
            uint256 d = c.weightSum;
            return d == 0 ? int256(0) : ExactRules.roundDiv(c.weightedSum, d);
        }
        uint256 n = c.accepted;
        if (values.length != n * 8) revert ValuesMismatch(challengeId, values.length / 8, n);
        int256[] memory v = new int256[](n);
        bytes32 h;
        for (uint256 i = 0; i < n; ++i) {
            int64 x = int64(uint64(bytes8(values[8 * i:8 * i + 8])));
            h = keccak256(abi.encodePacked(h, x));
            v[i] = x;
        }
        if (h != c.valuesHash) revert ValuesMismatch(challengeId, n, n);
        if (t.rule == Rule.Median) return ExactRules.median(v);
        return ExactRules.trimmedMean(v, t.betaNum, t.betaDen);
    }

    /// @dev Void `round` (overturned) and every attested round after it, slash the attesters of
    /// its digest; returns the challenger's share and the digest the task resumes from.
    function _overturn(uint256 taskId, uint64 round, RoundRecord storage r)
        private
        returns (uint256 toChallenger, bytes32 resumeDigest)
    {
        r.status = RoundStatus.Voided;
        emit RoundVoided(taskId, round, true);
        uint32 head = _head[taskId];
        for (uint64 k = round + 1; k < head; ++k) {
            RoundRecord storage later = _rounds[taskId][k];
            if (later.status == RoundStatus.Attested) {
                later.status = RoundStatus.Voided;
                emit RoundVoided(taskId, k, false);
            }
        }
        uint32 parent = r.parent;
        _head[taskId] = parent;
        resumeDigest = parent == 0 ? bytes32(0) : _rounds[taskId][parent - 1].digest;
        uint256 voters = _votes[_voteKey(taskId, round, r.attempt, r.digest)];
        uint256 shareBps = _terms[taskId].challengerShareBps;
        uint256 toPool = 0;
        for (uint256 i = 0; voters != 0; ++i) {
            if (voters & 1 != 0) {
                address v = _validatorAt[taskId][i];
                Bond storage b = _bonds[taskId][v];
                uint256 amount = b.amount;
                if (amount != 0) {
                    b.amount = 0;
                    uint256 share = (amount * shareBps) / BPS;
                    toChallenger += share;
                    toPool += amount - share;
                    _held -= amount;
                    _slashed += amount;
                    emit Slashed(taskId, v, amount, share);
                }
            }
            voters >>= 1;
        }
        if (toPool != 0) {
            _pool[taskId] += toPool;
            _funded += toPool;
            emit PoolFunded(taskId, address(this), toPool);
        }
    }

    /// @dev A challenger's bond that proved nothing goes to the task's reward pool.
    function _forfeit(uint256 taskId, uint256 amount) private {
        _slashed += amount;
        _pool[taskId] += amount;
        _funded += amount;
        emit PoolFunded(taskId, address(this), amount);
    }

    function _checkLive(uint256 challengeId, Challenge storage c) private view {
        if (!c.open) revert NotOpen(challengeId);
        // slither-disable-next-line timestamp
        if (block.timestamp > c.deadline) revert Expired(challengeId, c.deadline);
    }

    function _checkResult(uint256 taskId, uint64 round, bytes32 digest, ITrainingLedger.RoundResult calldata result)
        private
        pure
    {
        bytes32 given = keccak256(abi.encode(taskId, round, result));
        if (given != digest) revert ResultMismatch(taskId, round, digest, given);
    }

    function _voteKey(uint256 taskId, uint64 round, uint32 attempt, bytes32 digest) private pure returns (bytes32) {
        return keccak256(abi.encode(taskId, round, attempt, digest));
    }

    function _verdictLeaf(
        uint256 updateId,
        address contributor,
        bytes32 contentHash,
        uint8 verdict,
        uint64 clip,
        uint256 reward
    ) private pure returns (bytes32) {
        if (clip == ExactRules.UNCLIPPED && reward == 0) {
            return keccak256(bytes.concat(keccak256(abi.encode(updateId, contributor, contentHash, verdict))));
        }
        return keccak256(bytes.concat(keccak256(abi.encode(updateId, contributor, contentHash, verdict, clip, reward))));
    }

    /// @dev The ledger's `recordSeed`: `bytes28(keccak256(abi.encode(taskId, round)))`.
    function _recordSeed(uint256 taskId, uint64 round) private pure returns (bytes28) {
        return bytes28(keccak256(abi.encode(taskId, round)));
    }

    /// @dev The ledger's `recordStep`.
    function _recordStep(
        bytes28 previous,
        address contributor,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples
    ) private pure returns (bytes28) {
        return bytes28(keccak256(abi.encode(previous, contributor, contentHash, cidDigest, tensorRoot, numSamples)));
    }
}
