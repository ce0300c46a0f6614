"""The dashboard page, served by real uvicorn and rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_data import ALICE, BOB, CAROL, MALLORY, OUTSIDER, Ledger, populate

from fedledger_backend.api import create_app
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import Database

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def more_rounds(led: Ledger) -> None:
    """Task 1 trains for a few more rounds; task 2 gets going, so the plot has two lines."""
    accuracy = [0.79, 0.83, 0.86, 0.88]
    for rnd, acc in enumerate(accuracy, start=2):
        if rnd > 2:
            for who in (ALICE, BOB):
                led.submit(1, rnd, who)
        rows = [c for c in led.contributions if (c.task_id, c.round) == (1, rnd)]
        rows.append(led.submit(1, rnd, CAROL))
        rows.append(led.submit(1, rnd, MALLORY))
        verdicts: dict[int, tuple[str, str | None, float]] = {
            c.update_id: ("ACCEPTED", None, 0.9) for c in rows
        }
        verdicts[rows[-1].update_id] = ("NON_FINITE", "tensor fc.weight holds NaN", 0.0)
        led.finalize(1, rnd, verdicts, accuracy=acc)
    rows = [c for c in led.contributions if (c.task_id, c.round) == (2, 0)]
    led.finalize(2, 0, {c.update_id: ("ACCEPTED", None, 0.8) for c in rows}, accuracy=0.41)
    for rnd, acc in ((1, 0.55), (2, 0.63)):
        a, b = led.submit(2, rnd, OUTSIDER, 900), led.submit(2, rnd, BOB, 1100)
        led.finalize(
            2,
            rnd,
            {
                a.update_id: ("ACCEPTED", None, 0.8),
                b.update_id: ("UNAVAILABLE", "CID not found", 0),
            },
            accuracy=acc,
        )
    led.submit(2, 3, OUTSIDER, 950)
    led.checkpoint(led.block)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('dash') / 'index.db'}").create()
    more_rounds(populate(db))
    with BackgroundServer(create_app(db)) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def page(site: str) -> str:
    r = httpx.get(site + "/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def test_dashboard_lists_the_tasks(page: str) -> None:
    assert 'href="/?task_id=1"' in page
    assert 'href="/?task_id=2"' in page


def test_dashboard_shows_rounds_with_their_status(page: str) -> None:
    assert '<span class="badge ok">finalized</span>' in page
    assert '<span class="badge info">open</span>' in page


def test_dashboard_flags_rounds_with_conflicting_attestations(page: str) -> None:
    assert '<span class="badge bad">1 conflicting</span>' in page


def test_dashboard_colour_codes_verdicts(page: str) -> None:
    assert '<span class="badge ok">ACCEPTED</span>' in page
    assert '<span class="badge bad">NON_FINITE</span>' in page
    assert '<span class="badge warn">UNAVAILABLE</span>' in page
    assert '<span class="badge idle">PENDING</span>' in page


def test_dashboard_plots_accuracy_per_round_for_each_task(page: str) -> None:
    assert page.count("<polyline") == 2
    assert "task 1, round 5: 88.00%" in page


def test_dashboard_fetches_nothing_from_elsewhere(page: str) -> None:
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    assert "<script" not in page


def test_dashboard_can_focus_on_one_task(site: str) -> None:
    one = httpx.get(site + "/", params={"task_id": 2}).text
    assert one.count("<polyline") == 1
    assert "show all tasks" in one


def test_dashboard_renders_in_a_browser(site: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/ensure-apt.sh installs it as root)")
    shot = tmp_path / "dashboard.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,1000",
            site + "/",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # a blank or error page compresses to a few kB

    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 1000)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 500  # text, badges and plot lines, not a flat page
