// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./Test.sol";
import {TrainingLedger} from "../../TrainingLedger.sol";
import {ITrainingLedger} from "../../ITrainingLedger.sol";

/// @notice A deployed ledger, named actors with keys, and helpers that build configs, sign
/// updates (EIP-712 computed here independently of the contract) and drive rounds.
abstract contract LedgerFixture is Test {
    TrainingLedger internal ledger;

    address internal owner = address(0x0A11CE);
    address internal outsider = address(0x0BAD);

    uint256 internal constant ALICE_KEY = 0xA11CE5EC;
    uint256 internal constant BOB_KEY = 0xB0B5EC;
    uint256 internal constant CAROL_KEY = 0xCA5013;
    uint256 internal constant DAVE_KEY = 0xDA7E;
    address internal alice;
    address internal bob;
    address internal carol;
    address internal dave; // signs, but is never admitted

    address internal val1 = address(0x7A11);
    address internal val2 = address(0x7A12);
    address internal val3 = address(0x7A13);

    bytes32 internal constant MODEL_HASH = keccak256("initial model");
    string internal constant MODEL_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    string internal constant SPEC_CID = "bafkreie5ccdrc3ak4ms6pcsnhoqolo3ybm7ujrmrk2o4qhlfkwq4qvxwb4";
    string internal constant CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    string internal constant AGG_CID = "bafkreiaggregateaggregateaggregateaggregateaggregateaggrega";
    /// @dev The tasks' `maxSamples` unless a test sets another: above every count the helpers claim.
    uint64 internal constant MAX_SAMPLES = 10_000;
    string internal constant VERDICT_CID = "bafkreiverdictsverdictsverdictsverdictsverdictsverdictsverd";

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant UPDATE_TYPEHASH = keccak256(
        "Update(uint256 taskId,uint64 round,bytes32 contentHash,string cid,uint64 numSamples,address contributor,uint256 deadline)"
    );

    function setUp() public virtual {
        ledger = new TrainingLedger();
        alice = vm.addr(ALICE_KEY);
        bob = vm.addr(BOB_KEY);
        carol = vm.addr(CAROL_KEY);
        dave = vm.addr(DAVE_KEY);
        vm.label(address(ledger), "ledger");
        vm.label(alice, "alice");
        vm.label(bob, "bob");
        vm.label(carol, "carol");
        vm.label(dave, "dave");
        vm.warp(1_700_000_000);
    }

    // ------------------------------------------------------------------ tasks

    function _config(uint32 minUpdates, uint32 maxUpdates, uint8 quorum, uint64 roundDuration, bool open)
        internal
        pure
        returns (ITrainingLedger.TaskConfig memory)
    {
        return ITrainingLedger.TaskConfig({
            modelHash: MODEL_HASH,
            modelCid: MODEL_CID,
            specCid: SPEC_CID,
            minUpdates: minUpdates,
            maxUpdates: maxUpdates,
            quorum: quorum,
            roundDuration: roundDuration,
            open: open,
            maxSamples: MAX_SAMPLES
        });
    }

    function _createTask(ITrainingLedger.TaskConfig memory cfg) internal returns (uint256 taskId) {
        vm.prank(owner);
        taskId = ledger.createTask(cfg);
    }

    /// @dev A closed task: alice, bob, carol contribute; val1..val3 validate; 2..3 updates per
    /// round, quorum 2, no deadline.
    function _closedTask() internal returns (uint256 taskId) {
        taskId = _createTask(_config(2, 3, 2, 0, false));
        _admit(taskId);
    }

    function _admit(uint256 taskId) internal {
        vm.startPrank(owner);
        ledger.addContributor(taskId, alice);
        ledger.addContributor(taskId, bob);
        ledger.addContributor(taskId, carol);
        ledger.addValidator(taskId, val1);
        ledger.addValidator(taskId, val2);
        ledger.addValidator(taskId, val3);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ updates

    function _hash(address who, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("update", who, round));
    }

    function _submit(address who, uint256 taskId, uint64 round) internal returns (uint256 updateId) {
        vm.prank(who);
        updateId = ledger.submitUpdate(taskId, round, _hash(who, round), CID, 1000);
    }

    function _submitClaiming(address who, uint256 taskId, uint64 numSamples) internal returns (uint256 updateId) {
        vm.prank(who);
        updateId = ledger.submitUpdate(taskId, 0, _hash(who, 0), CID, numSamples);
    }

    function _domainSeparator(uint256 chainId, address verifyingContract) internal pure returns (bytes32) {
        return
            keccak256(
                abi.encode(DOMAIN_TYPEHASH, keccak256("TrainingLedger"), keccak256("1"), chainId, verifyingContract)
            );
    }

    function _typedHash(
        bytes32 domainSeparator,
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        string memory cid,
        uint64 numSamples,
        address contributor,
        uint256 deadline
    ) internal pure returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(
                UPDATE_TYPEHASH, taskId, round, contentHash, keccak256(bytes(cid)), numSamples, contributor, deadline
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator, structHash));
    }

    function _signDigest(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev A SignedUpdate by `key` for this chain and this ledger (500 samples).
    function _signed(uint256 key, uint256 taskId, uint64 round, uint256 deadline)
        internal
        view
        returns (ITrainingLedger.SignedUpdate memory u)
    {
        return _signedWith(key, taskId, round, deadline, 500);
    }

    /// @dev A SignedUpdate by `key` claiming `numSamples`.
    function _signedWith(uint256 key, uint256 taskId, uint64 round, uint256 deadline, uint64 numSamples)
        internal
        view
        returns (ITrainingLedger.SignedUpdate memory u)
    {
        address who = vm.addr(key);
        u = ITrainingLedger.SignedUpdate({
            taskId: taskId,
            round: round,
            contentHash: _hash(who, round),
            cid: CID,
            numSamples: numSamples,
            contributor: who,
            deadline: deadline,
            signature: ""
        });
        bytes32 digest = _typedHash(
            _domainSeparator(block.chainid, address(ledger)),
            taskId,
            round,
            u.contentHash,
            u.cid,
            u.numSamples,
            who,
            deadline
        );
        u.signature = _signDigest(key, digest);
    }

    function _relay(ITrainingLedger.SignedUpdate memory u) internal returns (uint256) {
        return ledger.submitUpdateFor(
            u.taskId, u.round, u.contentHash, u.cid, u.numSamples, u.contributor, u.deadline, u.signature
        );
    }

    // ------------------------------------------------------------------ attestations

    function _attest(address validator, uint256 taskId, uint64 round, bytes32 verdictRoot, bytes32 aggregateHash)
        internal
    {
        vm.prank(validator);
        ledger.attestRound(taskId, round, verdictRoot, aggregateHash, AGG_CID, VERDICT_CID);
    }

    /// @dev Fill round `round` with alice and bob, then let val1 and val2 agree.
    function _finishRound(uint256 taskId, uint64 round) internal {
        _submit(alice, taskId, round);
        _submit(bob, taskId, round);
        _attest(val1, taskId, round, keccak256("root"), keccak256(abi.encode("agg", round)));
        _attest(val2, taskId, round, keccak256("root"), keccak256(abi.encode("agg", round)));
    }
}
