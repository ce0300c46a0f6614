// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./Test.sol";
import {Vm} from "./Vm.sol";
import {TrainingLedger} from "../../TrainingLedger.sol";
import {ITrainingLedger} from "../../ITrainingLedger.sol";

/// @notice A deployed ledger v2, named actors with keys, and helpers that build configs, sign
/// updates (EIP-712 computed here, independently of the contract), pack batch entries, chain
/// record hashes and drive rounds.
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
    uint64 internal constant MAX_SAMPLES = 10_000;
    uint64 internal constant WINDOW = 600;
    uint64 internal constant FAR = 2_000_000_000; // a deadline after every test's clock

    // storage slots of TrainingLedger's mappings (`forge inspect TrainingLedger storage-layout`;
    // the two before them are EIP712's fallback strings), for tests that forge a state
    uint256 internal constant STATE_SLOT = 3;
    uint256 internal constant RECORDS_SLOT = 4;

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant UPDATE_TYPEHASH = keccak256(
        "Update(uint256 taskId,uint64 round,bytes32 contentHash,bytes32 cidDigest,bytes32 tensorRoot,uint64 numSamples,uint64 deadline)"
    );

    function setUp() public virtual {
        ledger = new TrainingLedger();
        alice = vm.addr(ALICE_KEY);
        bob = vm.addr(BOB_KEY);
        carol = vm.addr(CAROL_KEY);
        dave = vm.addr(DAVE_KEY);
        vm.label(address(ledger), "ledger");
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
            maxSamples: MAX_SAMPLES,
            attestWindow: WINDOW
        });
    }

    function _createTask(ITrainingLedger.TaskConfig memory cfg) internal returns (uint256 taskId) {
        vm.prank(owner);
        taskId = ledger.createTask(cfg);
    }

    /// @dev alice, bob, carol admitted; val1..val3 validators; quorum 2; 1..3 updates a round.
    function _closedTask() internal returns (uint256 taskId) {
        taskId = _createTask(_config(1, 3, 2, 0, false));
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

    function _content(address who, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("content", who, round));
    }

    function _cidDigest(address who, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("cid", who, round));
    }

    function _root(address who, uint64 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("root", who, round));
    }

    function _submit(address who, uint256 taskId, uint64 round) internal returns (uint256 updateId) {
        return _submitClaiming(who, taskId, round, 100);
    }

    function _submitClaiming(address who, uint256 taskId, uint64 round, uint64 numSamples)
        internal
        returns (uint256 updateId)
    {
        vm.prank(who);
        updateId = ledger.submitUpdate(
            taskId, round, _content(who, round), _cidDigest(who, round), _root(who, round), numSamples
        );
    }

    function _domainSeparator() internal view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("TrainingLedger"), keccak256("2"), block.chainid, address(ledger))
        );
    }

    function _typedHash(uint256 taskId, uint64 round, address who, uint64 numSamples, uint64 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(
            abi.encode(
                UPDATE_TYPEHASH,
                taskId,
                round,
                _content(who, round),
                _cidDigest(who, round),
                _root(who, round),
                numSamples,
                deadline
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash));
    }

    /// @dev A 65-byte (r, s, v) signature of `key`'s update.
    function _signature(uint256 key, uint256 taskId, uint64 round, uint64 numSamples, uint64 deadline)
        internal
        view
        returns (bytes memory)
    {
        bytes32 digest = _typedHash(taskId, round, vm.addr(key), numSamples, deadline);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev The EIP-2098 (r, vs) form of the same signature.
    function _compact(uint256 key, uint256 taskId, uint64 round, uint64 numSamples, uint64 deadline)
        internal
        view
        returns (bytes32 r, bytes32 vs)
    {
        bytes memory sig = _signature(key, taskId, round, numSamples, deadline);
        uint8 v = uint8(sig[64]);
        bytes32 s;
        assembly {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
        }
        vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
    }

    /// @dev One packed 176-byte batch entry for `key`'s update.
    function _entry(uint256 key, uint256 taskId, uint64 round, uint64 numSamples, uint64 deadline)
        internal
        view
        returns (bytes memory)
    {
        address who = vm.addr(key);
        (bytes32 r, bytes32 vs) = _compact(key, taskId, round, numSamples, deadline);
        bytes memory head = abi.encodePacked(_content(who, round), _cidDigest(who, round), _root(who, round));
        return abi.encodePacked(head, numSamples, deadline, r, vs);
    }

    /// @dev A packed entry of explicit fields, signed by `key`.
    function _entryOf(
        uint256 key,
        uint256 taskId,
        uint64 round,
        bytes32 contentHash,
        bytes32 cidDigest,
        bytes32 tensorRoot,
        uint64 numSamples,
        uint64 deadline
    ) internal view returns (bytes memory) {
        bytes32 structHash = keccak256(
            abi.encode(UPDATE_TYPEHASH, taskId, round, contentHash, cidDigest, tensorRoot, numSamples, deadline)
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        bytes32 vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
        return abi.encodePacked(contentHash, cidDigest, tensorRoot, numSamples, deadline, r, vs);
    }

    /// @dev The packed 124-byte `UpdatesRelayed` record of `who`'s fixture update.
    function _packed(address who, uint64 round, uint64 numSamples) internal pure returns (bytes memory) {
        return abi.encodePacked(who, _content(who, round), _cidDigest(who, round), _root(who, round), numSamples);
    }

    function _relayFor(uint256 key, uint256 taskId, uint64 round) internal returns (uint256) {
        address who = vm.addr(key);
        bytes memory sig = _signature(key, taskId, round, 100, FAR);
        vm.prank(outsider);
        return ledger.submitUpdateFor(
            taskId, round, _content(who, round), _cidDigest(who, round), _root(who, round), 100, who, FAR, sig
        );
    }

    // ------------------------------------------------------------------ events and forged state

    /// @dev One `EntrySkipped` as a test reads it.
    struct Skip {
        uint256 entry;
        address signer;
        bytes4 reason;
    }

    /// @dev The `EntrySkipped` events among `logs`, in order.
    function _skipsIn(Vm.Log[] memory logs) internal pure returns (Skip[] memory skips) {
        uint256 n;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == ITrainingLedger.EntrySkipped.selector) ++n;
        }
        skips = new Skip[](n);
        n = 0;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] != ITrainingLedger.EntrySkipped.selector) continue;
            (uint256 entry, address signer, bytes4 reason) = abi.decode(logs[i].data, (uint256, address, bytes4));
            skips[n++] = Skip(entry, signer, reason);
        }
    }

    /// @dev The `UpdatesRelayed` event among `logs`, if any.
    function _relayedIn(Vm.Log[] memory logs)
        internal
        pure
        returns (bool found, uint256 firstUpdateId, bytes memory records)
    {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] != ITrainingLedger.UpdatesRelayed.selector) continue;
            (firstUpdateId, records) = abi.decode(logs[i].data, (uint256, bytes));
            return (true, firstUpdateId, records);
        }
    }

    /// @dev Number of `topic` events among `logs`.
    function _count(Vm.Log[] memory logs, bytes32 topic) internal pure returns (uint256 n) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == topic) ++n;
        }
    }

    function _stateSlot(uint256 taskId) internal pure returns (bytes32) {
        return keccak256(abi.encode(taskId, STATE_SLOT));
    }

    function _recordsSlot(uint256 taskId) internal pure returns (bytes32) {
        return keccak256(abi.encode(taskId, RECORDS_SLOT));
    }

    /// @dev Forge the task's update counter (`seq`, the accumulator's low 32 bits) to `seq`,
    /// and the round's start to `start` (bits 136..167 of the state word).
    function _forgeSeq(uint256 taskId, uint32 seq, uint32 start) internal {
        uint256 rec = uint256(vm.load(address(ledger), _recordsSlot(taskId)));
        vm.store(address(ledger), _recordsSlot(taskId), bytes32((rec >> 32 << 32) | seq));
        uint256 st = uint256(vm.load(address(ledger), _stateSlot(taskId)));
        st = (st & ~(uint256(type(uint32).max) << 136)) | (uint256(start) << 136);
        vm.store(address(ledger), _stateSlot(taskId), bytes32(st));
    }

    // ------------------------------------------------------------------ record hashes and results

    function _seed(uint256 taskId, uint64 round) internal pure returns (bytes28) {
        return bytes28(keccak256(abi.encode(taskId, round)));
    }

    function _step(bytes28 prev, address who, uint64 round, uint64 numSamples) internal pure returns (bytes28) {
        return bytes28(
            keccak256(
                abi.encode(prev, who, _content(who, round), _cidDigest(who, round), _root(who, round), numSamples)
            )
        );
    }

    /// @dev The record hash of `who[0..]` having submitted to `round` in that order, 100 samples each.
    function _recordsOf(uint256 taskId, uint64 round, address[] memory who) internal pure returns (bytes28 h) {
        h = _seed(taskId, round);
        for (uint256 i; i < who.length; ++i) {
            h = _step(h, who[i], round, 100);
        }
    }

    function _result(bytes28 recordHash, uint32 count, bytes32 salt)
        internal
        pure
        returns (ITrainingLedger.RoundResult memory)
    {
        return ITrainingLedger.RoundResult({
            recordHash: recordHash,
            updateCount: count,
            verdictRoot: keccak256(abi.encode("verdicts", salt)),
            verdictHash: keccak256(abi.encode("verdict file", salt)),
            verdictCidDigest: keccak256(abi.encode("verdict cid", salt)),
            aggregateHash: keccak256(abi.encode("aggregate", salt)),
            aggregateCidDigest: keccak256(abi.encode("aggregate cid", salt)),
            aggregateTensorRoot: keccak256(abi.encode("aggregate root", salt))
        });
    }

    /// @dev A result for the current round's records as the contract holds them now.
    function _resultNow(uint256 taskId, uint64 round, bytes32 salt)
        internal
        view
        returns (ITrainingLedger.RoundResult memory)
    {
        ITrainingLedger.RoundView memory r = ledger.getRound(taskId, round);
        return _result(r.recordHash, r.updateCount, salt);
    }

    function _attest(address validator, uint256 taskId, uint64 round, ITrainingLedger.RoundResult memory result)
        internal
    {
        vm.prank(validator);
        ledger.attestRound(taskId, round, result);
    }
}
