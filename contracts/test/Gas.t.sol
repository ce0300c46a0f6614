// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LedgerFixture} from "./utils/LedgerFixture.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";

/// @notice Execution gas of the hot paths in steady state (one warm-up round first), for
/// `.gas-snapshot`; benchmarks/gas.py measures whole transactions on anvil beside their floors.
contract GasTest is LedgerFixture {
    uint256 internal task;
    uint256[] internal keys;

    function setUp() public override {
        super.setUp();
        task = _createTask(_config(1, 100, 2, 0, false));
        vm.startPrank(owner);
        for (uint256 i; i < 64; ++i) {
            keys.push(0xBEEF00 + i);
            ledger.addContributor(task, vm.addr(0xBEEF00 + i));
        }
        ledger.addContributor(task, alice);
        ledger.addValidator(task, val1);
        ledger.addValidator(task, val2);
        vm.stopPrank();
        _round(0); // warm-up: every slot written once
    }

    function _batch(uint64 round, uint256 n) internal view returns (bytes memory entries) {
        for (uint256 i; i < n; ++i) {
            entries = bytes.concat(entries, _entry(keys[i], task, round, 100, FAR));
        }
    }

    function _round(uint64 round) internal {
        ledger.submitBatch(task, round, _batch(round, 64));
        ITrainingLedger.RoundResult memory res = _resultNow(task, round, "gas");
        _attest(val1, task, round, res);
        bytes32 digest = ledger.resultDigest(task, round, res);
        vm.prank(val2);
        ledger.confirmRound(task, round, digest);
    }

    function test_gas_submitUpdate() public {
        _submit(alice, task, 1);
    }

    function test_gas_submitBatch_16() public {
        ledger.submitBatch(task, 1, _batch(1, 16));
    }

    function test_gas_submitBatch_64() public {
        ledger.submitBatch(task, 1, _batch(1, 64));
    }

    function test_gas_attest_then_confirm() public {
        ledger.submitBatch(task, 1, _batch(1, 4));
        ITrainingLedger.RoundResult memory res = _resultNow(task, 1, "gas");
        _attest(val1, task, 1, res);
        bytes32 digest = ledger.resultDigest(task, 1, res);
        vm.prank(val2);
        ledger.confirmRound(task, 1, digest);
    }
}
