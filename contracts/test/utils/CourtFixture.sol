// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./Test.sol";
import {TrainingLedger} from "../../TrainingLedger.sol";
import {ITrainingLedger} from "../../ITrainingLedger.sol";
import {Court} from "../../Court.sol";
import {ICourt} from "../../ICourt.sol";

/// @notice A ledger and its court, a task handed to the court, bonded validators, and helpers
/// that build a fixed-point round the way a validator would: each update a one-leaf tensor of
/// `DIM` coordinates (its tensorRoot is the leaf's keccak), the verdict tree (OpenZeppelin's
/// sorted pairs, built here), the honest aggregate by a reference written here (plain sorting,
/// big sums), and the stage inputs of a challenge.
abstract contract CourtFixture is Test {
    TrainingLedger internal ledger;
    Court internal court;

    address internal owner = address(0x0A11CE);
    address internal challenger = address(0xC4A1);
    address[] internal validators;
    address[] internal contributors;

    uint256 internal constant DIM = 3;
    uint96 internal constant BOND = 1 ether;
    uint96 internal constant CHALLENGER_BOND = 0.1 ether;
    uint32 internal constant CHALLENGE_WINDOW = 1 days;
    uint32 internal constant UNBONDING = 3 days;
    uint16 internal constant SHARE_BPS = 5000;
    bytes4 internal constant TAG = 0x46545231;
    uint64 internal constant UNCLIPPED = 1 << 32;

    /// @dev One update of a built round.
    struct Update {
        address contributor;
        uint64 numSamples;
        uint8 verdict;
        uint64 clip;
        uint256 reward;
        int32[DIM] q;
    }

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        ledger = new TrainingLedger();
        court = new Court(ledger);
        vm.deal(challenger, 100 ether);
    }

    // ------------------------------------------------------------------ tasks

    function _terms(ICourt.Rule rule) internal pure returns (ICourt.Terms memory) {
        return ICourt.Terms({
            bond: BOND,
            challengerBond: CHALLENGER_BOND,
            challengeWindow: CHALLENGE_WINDOW,
            unbondingDelay: UNBONDING,
            challengerShareBps: SHARE_BPS,
            rule: rule,
            weightCap: 500,
            betaNum: 1,
            betaDen: 5
        });
    }

    /// @dev A closed task of `n` contributors and `v` bonded validators (quorum `quorum`),
    /// handed to the court with `terms`.
    function _task(uint256 n, uint256 v, uint8 quorum, ICourt.Terms memory terms) internal returns (uint256 taskId) {
        vm.startPrank(owner);
        taskId = ledger.createTask(
            ITrainingLedger.TaskConfig({
                modelHash: keccak256("model"),
                modelCid: "m",
                specCid: "s",
                minUpdates: 1,
                maxUpdates: uint32(n),
                quorum: quorum,
                roundDuration: 0,
                open: false,
                maxSamples: 10_000,
                attestWindow: 600
            })
        );
        delete contributors;
        delete validators;
        for (uint256 i = 0; i < n; ++i) {
            address c = _contributor(i);
            contributors.push(c);
            ledger.addContributor(taskId, c);
        }
        for (uint256 i = 0; i < v; ++i) {
            address a = address(uint160(0x7A00 + i));
            validators.push(a);
            ledger.addValidator(taskId, a);
        }
        court.setTerms(taskId, terms);
        ledger.setCourt(taskId, address(court));
        vm.stopPrank();
        for (uint256 i = 0; i < v; ++i) {
            vm.deal(validators[i], 10 ether);
            vm.prank(validators[i]);
            court.bond{value: BOND}(taskId);
        }
    }

    /// @dev Contributor `i` of every task built here.
    function _contributor(uint256 i) internal pure returns (address) {
        return address(uint160(0xC000 + i));
    }

    // ------------------------------------------------------------------ tensors and trees

    function _leafOf(int32[DIM] memory q) internal pure returns (bytes memory leaf) {
        leaf = new bytes(4116);
        bytes memory head = abi.encodePacked(TAG, uint64(DIM), uint64(0));
        for (uint256 i = 0; i < 20; ++i) {
            leaf[i] = head[i];
        }
        for (uint256 c = 0; c < DIM; ++c) {
            uint32 u = uint32(q[c]);
            for (uint256 b = 0; b < 4; ++b) {
                leaf[20 + 4 * c + b] = bytes1(uint8(u >> (24 - 8 * b)));
            }
        }
    }

    function _pair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encodePacked(a, b)) : keccak256(abi.encodePacked(b, a));
    }

    function _rootAndProof(bytes32[] memory input, uint256 at)
        internal
        pure
        returns (bytes32 root, bytes32[] memory proof)
    {
        bytes32[] memory nodes = new bytes32[](input.length);
        for (uint256 i = 0; i < input.length; ++i) {
            nodes[i] = input[i];
        }
        bytes32[] memory path = new bytes32[](64);
        uint256 depth;
        uint256 n = nodes.length;
        while (n > 1) {
            if ((at ^ 1) < n) path[depth++] = nodes[at ^ 1];
            for (uint256 i = 0; i < n / 2; ++i) {
                nodes[i] = _pair(nodes[2 * i], nodes[2 * i + 1]);
            }
            if (n % 2 == 1) nodes[n / 2] = nodes[n - 1];
            n = (n + 1) / 2;
            at /= 2;
        }
        proof = new bytes32[](depth);
        for (uint256 i = 0; i < depth; ++i) {
            proof[i] = path[i];
        }
        root = nodes[0];
    }

    function _vleaf(uint256 updateId, Update memory u) internal view returns (bytes32) {
        return court.verdictLeaf(updateId, u.contributor, _content(u.contributor), u.verdict, u.clip, u.reward);
    }

    function _content(address who) internal pure returns (bytes32) {
        return keccak256(abi.encode("content", who));
    }

    // ------------------------------------------------------------------ a round

    /// @dev Submit every update of `us` (contributor i submits us[i]) to the current round.
    function _submitAll(uint256 taskId, uint64 round, Update[] memory us) internal {
        for (uint256 i = 0; i < us.length; ++i) {
            vm.prank(us[i].contributor);
            ledger.submitUpdate(
                taskId,
                round,
                _content(us[i].contributor),
                keccak256(abi.encode("cid", us[i].contributor)),
                keccak256(_leafOf(us[i].q)),
                us[i].numSamples
            );
        }
    }

    function _verdictNodes(uint256 taskId, uint32 firstSeq, Update[] memory us)
        internal
        view
        returns (bytes32[] memory nodes)
    {
        nodes = new bytes32[](us.length);
        for (uint256 i = 0; i < us.length; ++i) {
            nodes[i] = _vleaf((taskId << 32) | (firstSeq + i), us[i]);
        }
    }

    /// @dev The result validators attest for the sealed round: its records, the verdict tree of
    /// `us` and `aggregate` as its tensor.
    function _resultOf(uint256 taskId, uint64 round, uint32 firstSeq, Update[] memory us, int32[DIM] memory aggregate)
        internal
        view
        returns (ITrainingLedger.RoundResult memory result)
    {
        ITrainingLedger.RoundView memory r = ledger.getRound(taskId, round);
        (bytes32 vroot,) = _rootAndProof(_verdictNodes(taskId, firstSeq, us), 0);
        result = ITrainingLedger.RoundResult({
            recordHash: r.recordHash,
            updateCount: r.updateCount,
            verdictRoot: vroot,
            verdictHash: keccak256("verdict file"),
            verdictCidDigest: keccak256("verdict cid"),
            aggregateHash: keccak256(abi.encode("aggregate", aggregate)),
            aggregateCidDigest: keccak256("aggregate cid"),
            aggregateTensorRoot: keccak256(_leafOf(aggregate))
        });
    }

    function _attestAll(uint256 taskId, uint64 round, ITrainingLedger.RoundResult memory result, uint256 quorum)
        internal
    {
        for (uint256 i = 0; i < quorum; ++i) {
            vm.prank(validators[i]);
            ledger.attestRound(taskId, round, result);
        }
    }

    function _inputs(uint256 taskId, uint32 firstSeq, Update[] memory us)
        internal
        view
        returns (ICourt.Input[] memory inputs)
    {
        bytes32[] memory nodes = _verdictNodes(taskId, firstSeq, us);
        inputs = new ICourt.Input[](us.length);
        for (uint256 i = 0; i < us.length; ++i) {
            (, bytes32[] memory vproof) = _rootAndProof(nodes, i);
            bool ok = us[i].verdict == 0;
            inputs[i] = ICourt.Input({
                contributor: us[i].contributor,
                contentHash: _content(us[i].contributor),
                cidDigest: keccak256(abi.encode("cid", us[i].contributor)),
                tensorRoot: keccak256(_leafOf(us[i].q)),
                numSamples: us[i].numSamples,
                verdict: us[i].verdict,
                clip: us[i].clip,
                reward: us[i].reward,
                verdictProof: vproof,
                leaf: ok ? _leafOf(us[i].q) : bytes(""),
                leafProof: new bytes32[](0)
            });
        }
    }

    /// @dev The clipped coordinate `j` of every accepted update, packed as int64s (resolve's input).
    function _values(Update[] memory us, uint256 j) internal pure returns (bytes memory out) {
        for (uint256 i = 0; i < us.length; ++i) {
            if (us[i].verdict != 0) continue;
            int256 v = (int256(us[i].q[j]) * int256(uint256(us[i].clip))) / int256(uint256(UNCLIPPED));
            out = abi.encodePacked(out, int64(v));
        }
    }

    // ------------------------------------------------------------------ the reference rules

    function _half(int256 a, int256 b) internal pure returns (int256 q) {
        // R(a / b) with floor semantics spelled out differently from ExactRules: via |a|
        bool neg = a < 0;
        uint256 ua = uint256(neg ? -a : a);
        uint256 ub = uint256(b);
        uint256 fq = ua / ub;
        uint256 fr = ua % ub;
        // round |a| / b half to even on the magnitude, then restore the sign (R is odd-symmetric)
        if (2 * fr > ub || (2 * fr == ub && fq % 2 == 1)) fq += 1;
        q = neg ? -int256(fq) : int256(fq);
    }

    function _reference(ICourt.Terms memory t, Update[] memory us, uint256 j) internal pure returns (int256) {
        uint256 n;
        for (uint256 i = 0; i < us.length; ++i) {
            if (us[i].verdict == 0) ++n;
        }
        if (n == 0) return 0;
        int256[] memory v = new int256[](n);
        int256 num;
        int256 den;
        uint256 k;
        for (uint256 i = 0; i < us.length; ++i) {
            if (us[i].verdict != 0) continue;
            int256 c = (int256(us[i].q[j]) * int256(uint256(us[i].clip))) / int256(uint256(UNCLIPPED));
            int256 w = int256(uint256(us[i].numSamples < t.weightCap ? us[i].numSamples : t.weightCap));
            num += w * c;
            den += w;
            v[k++] = c;
        }
        if (t.rule == ICourt.Rule.FedAvg) return _half(num, den);
        // insertion sort
        for (uint256 a = 1; a < n; ++a) {
            int256 x = v[a];
            uint256 b = a;
            while (b > 0 && v[b - 1] > x) {
                v[b] = v[b - 1];
                --b;
            }
            v[b] = x;
        }
        if (t.rule == ICourt.Rule.Median) {
            return n % 2 == 1 ? v[n / 2] : _half(v[n / 2 - 1] + v[n / 2], 2);
        }
        uint256 drop = (uint256(t.betaNum) * n) / t.betaDen;
        int256 s;
        for (uint256 a = drop; a < n - drop; ++a) {
            s += v[a];
        }
        return _half(s, int256(n - 2 * drop));
    }
}
