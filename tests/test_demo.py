"""``fedledger demo`` end to end, small: 4 contributor processes (one flipping signs), two
validators with quorum 2, a real anvil, the embedded store, SQLite; then verify and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedledger.chain.devnet import free_port
from fedledger.cli.demo import DemoConfig, DemoResult, run_demo

CHANCE = 0.1  # ten digit classes


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoConfig, DemoResult]:
    cfg = DemoConfig(
        contributors=4,
        attackers=1,
        rounds=2,
        port=free_port(),
        home=tmp_path_factory.mktemp("demo") / "home",
        quiet=True,
        round_timeout_s=120.0,
    )
    return cfg, run_demo(cfg)


def test_demo_run_is_ok(demo: tuple[DemoConfig, DemoResult]) -> None:
    cfg, res = demo
    assert res.ok
    assert [r.round for r in res.rounds] == list(range(cfg.rounds))


def test_every_round_is_final_by_both_validators(demo: tuple[DemoConfig, DemoResult]) -> None:
    _, res = demo
    for r in res.rounds:
        assert len(r.attesters) == 2, r


def test_the_attackers_updates_are_rejected_and_honest_ones_accepted(
    demo: tuple[DemoConfig, DemoResult],
) -> None:
    cfg, res = demo
    for r in res.rounds:
        assert r.submitted == cfg.contributors
        assert r.attackers_total == cfg.attackers
        assert r.attackers_rejected == r.attackers_total, r
        assert r.honest_rejected == 0, r


def test_verify_from_chain_and_store_is_clean(demo: tuple[DemoConfig, DemoResult]) -> None:
    _, res = demo
    assert res.verify_ok, res.verify_problems


def test_the_model_learns_far_beyond_chance(demo: tuple[DemoConfig, DemoResult]) -> None:
    _, res = demo
    assert res.final_accuracy is not None and res.final_accuracy > 3 * CHANCE


def test_report_and_plot_are_written(demo: tuple[DemoConfig, DemoResult]) -> None:
    _, res = demo
    assert res.report_path is not None and res.plot_path is not None
    report = Path(res.report_path).read_text()
    assert "## The attackers' updates" in report and "OUTLIER" in report
    png = Path(res.plot_path).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_the_final_table_wraps_long_reasons_instead_of_cutting_them() -> None:
    from rich.console import Console

    from fedledger.cli.demo import RoundStats, _print_summary

    reason = "cosine to consensus -0.1797 is 5.1 robust sigmas from 0.331; " * 3 + "END-OF-REASON"
    res = DemoResult(
        ok=True,
        rounds=[RoundStats(0, 4, 3, {"OUTLIER": 1}, 0.5, 1, 1, 1, 0, 1.0)],
        verify_ok=True,
    )
    con = Console(width=80, record=True, color_system=None)
    rows = [{"update_id": 4, "round": 0, "contributor": "0x" + "ab" * 20, "status": "OUTLIER"}]
    _print_summary(con, DemoConfig(), res, [{**rows[0], "reason": reason}])
    text = con.export_text()
    assert "END-OF-REASON" in text and max(len(line) for line in text.splitlines()) <= 80
    # every word of the reason is there, in order, across the wrapped lines of its cell
    table = text[text.index("the attackers' updates") :]
    cells = [line.split("│")[-2].strip() for line in table.splitlines() if line.count("│") == 6]
    assert " ".join(cells).split() == reason.split()
