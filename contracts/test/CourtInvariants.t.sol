// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {CourtFixture} from "./utils/CourtFixture.sol";
import {Test} from "./utils/Test.sol";
import {ITrainingLedger} from "../ITrainingLedger.sol";
import {ICourt} from "../ICourt.sol";
import {Court} from "../Court.sol";

/// @notice Drives random sequences of bonds, unbonds, withdrawals, fundings, clock moves and
/// rounds of one fedavg court task: each round attested by two bonded validators, right or
/// wrong, then left alone, challenged (and resolved, or left to expire) or settled and claimed.
/// It never reverts: every court and ledger call that may fail is caught.
contract CourtHandler is CourtFixture {
    uint256 public task;
    uint256 public claimedByHandler;
    uint256 public fundedByHandler;
    uint64 internal round;
    uint256 internal nextValidator = 4;
    uint32 internal seqSoFar;

    /// @notice The court under test.
    function theCourt() external view returns (Court) {
        return court;
    }

    constructor() {
        setUp();
        task = _task(4, 4, 2, _terms(ICourt.Rule.FedAvg));
        vm.deal(address(this), 1_000 ether);
    }

    function _validator(uint256 i) internal view returns (address) {
        return validators[i % validators.length];
    }

    function bond(uint256 i) external {
        address v = _validator(i);
        vm.deal(v, BOND);
        vm.prank(v);
        try court.bond{value: BOND}(task) {} catch {}
    }

    function unbond(uint256 i) external {
        vm.prank(_validator(i));
        try court.unbond(task) {} catch {}
    }

    function withdraw(uint256 i) external {
        vm.prank(_validator(i));
        try court.withdraw(task) {} catch {}
    }

    function fund(uint96 amount) external {
        uint256 a = amount % 10 ether;
        court.fund{value: a}(task);
        fundedByHandler += a;
    }

    function wait(uint32 dt) external {
        vm.warp(block.timestamp + (dt % (2 * uint256(CHALLENGE_WINDOW))));
    }

    /// @dev Two bonded validators, adding and bonding new ones when fewer are left.
    function _attesters() internal returns (address[2] memory out) {
        uint256 k;
        for (uint256 i = 0; i < validators.length && k < 2; ++i) {
            if (court.isBonded(task, validators[i])) out[k++] = validators[i];
        }
        while (k < 2) {
            address v = address(uint160(0x7A00 + nextValidator++));
            validators.push(v);
            vm.prank(owner);
            ledger.addValidator(task, v);
            vm.deal(v, BOND);
            vm.prank(v);
            court.bond{value: BOND}(task);
            out[k++] = v;
        }
    }

    /// @dev A round of the example updates with rewards, attested right (`wrong` false) or with
    /// coordinate 1 off by one, then `what`: 0 nothing, 1 challenge and resolve, 2 challenge and
    /// let it expire, 3 settle after the window and claim.
    function playRound(bool wrong, uint8 what, uint8 claims) external {
        round = ledger.currentRound(task);
        Update[] memory us = new Update[](4);
        us[0] = Update(_contributor(0), 3, 0, UNCLIPPED, 30, [int32(10), -7, 3]);
        us[1] = Update(_contributor(1), 1, 0, UNCLIPPED, 10, [int32(4), 5, -3]);
        us[2] = Update(_contributor(2), 2, 7, UNCLIPPED, 0, [int32(1), 1, 2]);
        us[3] = Update(_contributor(3), 2, 0, UNCLIPPED, 20, [int32(-6), 8, 1]);
        // the right fedavg of updates 0, 1, 3 (2 is rejected; weights 3, 1, 2):
        // [R(22 / 6), R(0 / 6), R(8 / 6)] = [4, 0, 1]
        int32[DIM] memory agg = [int32(4), wrong ? int32(1) : int32(0), 1];
        _submitAll(task, round, us);
        address[2] memory a = _attesters();
        vm.prank(a[0]);
        ledger.sealRound(task, round);
        uint32 firstSeq = seqSoFar + 1;
        seqSoFar += 4;
        ITrainingLedger.RoundResult memory result = _resultOf(task, round, firstSeq, us, agg);
        for (uint256 i = 0; i < 2; ++i) {
            vm.prank(a[i]);
            ledger.attestRound(task, round, result);
        }
        if (what % 4 == 1 || what % 4 == 2) {
            vm.deal(challenger, CHALLENGER_BOND);
            vm.prank(challenger);
            uint256 id = court.challenge{value: CHALLENGER_BOND}(task, round, result, 1, _leafOf(agg), new bytes32[](0));
            if (what % 4 == 1) {
                ICourt.Input[] memory staged = _inputs(task, firstSeq, us);
                vm.prank(challenger);
                court.stage(id, staged);
                court.resolve(id, "");
            } else {
                vm.warp(block.timestamp + CHALLENGE_WINDOW + 1);
                court.expire(id);
            }
        } else if (what % 4 == 3) {
            vm.warp(block.timestamp + CHALLENGE_WINDOW);
            try court.settle(task, round, result) {
                bytes32[] memory nodes = _verdictNodes(task, firstSeq, us);
                for (uint256 i = 0; i < 4 && i < claims % 5; ++i) {
                    if (us[i].verdict != 0) continue;
                    (, bytes32[] memory p) = _rootAndProof(nodes, i);
                    try court.claim(
                        task,
                        round,
                        (task << 32) | (firstSeq + i),
                        us[i].contributor,
                        _content(us[i].contributor),
                        UNCLIPPED,
                        us[i].reward,
                        p
                    ) {
                        claimedByHandler += us[i].reward;
                    } catch {}
                }
            } catch {}
        }
    }
}

/// @notice Bond conservation and claims within the pool under any sequence of the handler's calls.
contract CourtInvariantsTest is Test {
    CourtHandler internal handler;

    function setUp() public {
        handler = new CourtHandler();
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](6);
        selectors[0] = CourtHandler.bond.selector;
        selectors[1] = CourtHandler.unbond.selector;
        selectors[2] = CourtHandler.withdraw.selector;
        selectors[3] = CourtHandler.fund.selector;
        selectors[4] = CourtHandler.wait.selector;
        selectors[5] = CourtHandler.playRound.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function invariant_bonds_are_conserved() public view {
        (uint256 deposited, uint256 held, uint256 slashed, uint256 refunded, uint256 withdrawn,) =
            handler.theCourt().totals();
        assertEq(deposited, held + slashed + refunded + withdrawn, "deposited = held + slashed + refunded + withdrawn");
    }

    function invariant_the_court_holds_its_bonds_and_its_pool() public view {
        Court court = handler.theCourt();
        (, uint256 held,,,,) = court.totals();
        assertEq(address(court).balance, held + court.pool(handler.task()), "balance = held + pool");
    }

    function invariant_claims_never_exceed_what_was_funded() public view {
        Court court = handler.theCourt();
        (,,,,, uint256 funded) = court.totals();
        uint256 claimed = handler.claimedByHandler();
        assertLe(claimed, funded, "claimed <= funded");
        assertEq(funded - claimed, court.pool(handler.task()), "the pool is what was funded less what was claimed");
    }
}
