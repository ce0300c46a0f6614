"""The validator service judging with the sharded path (``FEDLEDGER_SHARDED_WORKERS``): a real
anvil, contract, embedded store and validator attest two rounds of a fixed-point task on Ray
workers, and ``fedledger verify``, judging in memory, agrees with every attested round."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_kit import backend_for, make_scenario

from fedledger.flows.verify import verify_task

ray = pytest.importorskip("ray")
sharded = pytest.importorskip("fedledger_backend.sharded")


def test_a_validator_set_to_shard_attests_rounds_that_verify_agrees_with(  # type: ignore[no-untyped-def]
    ledger, store, dev_accounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLEDGER_SHARDED_WORKERS", "2")
    monkeypatch.setenv("FEDLEDGER_RAY_NUM_CPUS", "2")
    sc = make_scenario(
        ledger,
        store,
        dev_accounts,
        n_contributors=5,
        rule={"rule": "median"},
        fixed_point={"frac_bits": 24},
    )
    backend = backend_for(sc, sc.validators[0], tmp_path / "v.db")
    assert backend.validator is not None
    assert backend.validator.judge == sharded.ShardedJudge(2, None, 2)
    try:
        for rnd in (0, 1):  # round 1 carries round 0's standing and norm history
            for i in range(5):
                sc.submit_bytes(i, *sc.honest_update(i))
            for _ in range(20):
                backend.run_pass()
                if ledger.current_round(sc.task_id) > rnd:
                    break
            assert ledger.current_round(sc.task_id) == rnd + 1, backend.status()
        assert ray.is_initialized()  # the rounds were judged on Ray
        report = verify_task(sc.ledger, sc.store, sc.task_id)
    finally:
        ray.shutdown()
    assert report.ok, report.problems
    assert [r.round for r in report.rounds] == [0, 1]
    assert all(r.accepted >= 4 for r in report.rounds)
