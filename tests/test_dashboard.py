"""The dashboard page, served by real uvicorn and rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_data import ALICE, BOB, CAROL, MALLORY, OUTSIDER, Ledger, populate

from fedledger.content.store import ContentStore, open_store
from fedledger.protocol import merkle
from fedledger.protocol.taskspec import TaskSpec
from fedledger_backend import dashboard
from fedledger_backend.api import create_app
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import Database, TaskRow
from fedledger_backend.taskspecs import MAX_SPEC_TEXT, SpecCache, SpecFields

HOSTILE = """<script>alert(1)</script>"><img src=x onerror=alert(2)>"""
"""Markup an attacker may put wherever the page shows text of theirs (a task's spec is written
by whoever creates the task; a verdict's reason by the task's validators)."""

SPEC_1 = TaskSpec(
    model="mlp_digits", dataset="digits", aggregation={"rule": "trimmed_mean", "beta": 0.2}
)
SPEC_2 = TaskSpec(model=HOSTILE, dataset=HOSTILE, aggregation={"rule": HOSTILE})

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
                b.update_id: ("UNAVAILABLE", "CID not found" if rnd == 1 else HOSTILE, 0),
            },
            accuracy=acc,
        )
    led.submit(2, 3, OUTSIDER, 950)
    led.checkpoint(led.block)


def publish_specs(db: Database, store: ContentStore) -> None:
    """Put each task's spec in the store and its CID in the index, as task creation would."""
    with db.transaction() as s:
        for task_id, spec in ((1, SPEC_1), (2, SPEC_2)):
            row = s.get(TaskRow, task_id)
            assert row is not None
            row.spec_cid = store.put(spec.to_bytes())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("dash")
    db = Database(f"sqlite:///{home / 'index.db'}").create()
    more_rounds(populate(db))
    store = open_store(None, home)
    publish_specs(db, store)
    with BackgroundServer(create_app(db, store=store)) as srv:
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


def row_of(page: str, marker: str) -> str:
    """The one table row of ``page`` that holds ``marker``."""
    rows = [r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if marker in r]
    assert len(rows) == 1, rows
    return rows[0]


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


def test_accuracy_axis_runs_from_0_to_100_percent(page: str) -> None:
    """Every task plotted trains above 40 %; the axis still starts at 0, not near the data."""
    ticks = re.findall(r'class="tick" text-anchor="end">(\d+)%</text>', page)
    assert ticks == ["0", "20", "40", "60", "80", "100"]


def test_accuracy_is_drawn_to_scale() -> None:
    """A point at 50 % lies halfway between the 0 % and 100 % lines, whatever the data."""
    svg = dashboard.accuracy_svg({1: [(0, 0.5), (1, 0.9), (2, 0.95)]})
    grid = {
        label: float(y)
        for y, label in re.findall(r'y1="([\d.]+)"[^>]*/><text[^>]*>(\d+)%</text>', svg)
    }
    half = float(re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg)[0])
    assert half == pytest.approx((grid["0"] + grid["100"]) / 2, abs=0.1)


def test_accuracy_that_is_not_a_number_is_left_out() -> None:
    svg = dashboard.accuracy_svg({1: [(0, float("nan")), (1, 0.5), (2, float("inf"))]})
    assert "nan" not in svg and "inf" not in svg
    assert svg.count("<circle") == 1


def test_dashboard_names_each_tasks_model_data_set_and_rule(page: str) -> None:
    row = row_of(page, 'href="/?task_id=1"')
    assert "mlp_digits: mlp 64-64-10 (4,810 parameters)" in row
    assert "<td>digits<br><small>accuracy on built-in digits test split (demo only" in row
    assert "trimmed_mean beta=0.2" in row


def test_task_detail_names_its_model_data_set_and_rule(site: str) -> None:
    t = httpx.get(site + "/tasks/1").json()
    assert t["model"] == "mlp_digits: mlp 64-64-10 (4,810 parameters)"
    assert t["dataset"] == "digits"
    assert t["aggregation_rule"] == "trimmed_mean beta=0.2"
    assert t["evaluation_data"].startswith("built-in digits test split (demo only")


def test_a_task_naming_root_data_is_measured_on_it(store: ContentStore) -> None:
    from fedledger.protocol.reference import RootDataRef, encode_root_data

    data = encode_root_data(np.zeros((3, 64), np.float32), [0, 1, 2])
    ref = RootDataRef.of_file(data, store.put(data), "clinic-holdout")
    spec = TaskSpec(root_data=ref.model_dump())
    cid = store.put(spec.to_bytes())
    got = SpecCache().lookup(store, [cid])[cid]
    assert got.evaluation_data is not None
    assert got.evaluation_data.startswith("the task's root data clinic-holdout (3 samples, ")


def test_spec_fields_are_bounded_and_printable(store: ContentStore) -> None:
    spec = TaskSpec(dataset="\u202e" + "A" * 10_000, model="x" * 10_000)
    cid = store.put(spec.to_bytes())
    got = SpecCache().lookup(store, [cid])[cid]
    assert got.dataset is not None and got.model is not None
    assert len(got.dataset) <= MAX_SPEC_TEXT and len(got.model) <= MAX_SPEC_TEXT
    assert got.dataset.startswith("\ufffdAAA") and got.dataset.endswith("…")


def test_a_spec_the_store_lacks_is_not_made_up(store: ContentStore) -> None:
    """Unknown here (not in the store, or not a task spec): no field, and the page says so."""
    missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    invalid = store.put(b'{"format": "something else"}')
    got = SpecCache().lookup(store, [missing, invalid])
    assert got.get(missing, SpecFields()) == SpecFields()
    assert got.get(invalid, SpecFields()) == SpecFields()


def test_each_contribution_links_to_its_record_and_verdict_proof(site: str, page: str) -> None:
    r = httpx.get(site + "/contributions", params={"status": "NON_FINITE", "limit": 1}).json()
    judged = r["items"][0]
    row = row_of(page, f'href="/contributions/{judged["update_id"]}"')
    assert f'title="{judged["tx_hash"]}"' in row
    assert f'title="{judged["cid"]}"' in row
    proof_href = f"/contributions/{judged['update_id']}/proof"
    assert f'href="{proof_href}"' in row
    proof = httpx.get(site + proof_href).json()
    assert merkle.verify(proof["root"], proof["leaf"], proof["proof"])


def test_a_pending_contribution_has_no_proof_yet(site: str, page: str) -> None:
    r = httpx.get(site + "/contributions", params={"status": "PENDING", "order": "desc"}).json()
    pending = r["items"][0]["update_id"]
    row = row_of(page, f'href="/contributions/{pending}"')
    assert "/proof" not in row
    assert httpx.get(f"{site}/contributions/{pending}/proof").status_code == 404


class Markup(HTMLParser):
    """The elements and attributes a browser would build from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_text_from_the_chain_and_the_specs_is_rendered_inert(site: str, page: str) -> None:
    """A hostile verdict reason and a hostile spec (model, data set, rule) show as text."""
    markup = Markup()
    markup.feed(page)
    assert "script" not in markup.tags and "img" not in markup.tags
    assert not [a for a in markup.attributes if a.startswith("on")]
    shown = "".join(markup.text)
    assert shown.count(HOSTILE) >= 2  # the reason and the data set, whole
    assert "unknown model '<script>alert(1)</script>" in shown
    row = row_of(page, 'href="/?task_id=2"')
    assert HOSTILE not in row and "&lt;script&gt;" in row
    one = httpx.get(site + "/", params={"task_id": 2}).text
    assert "<script" not in one and "<img" not in one


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


def test_hostile_text_stays_text_in_a_browser(site: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/ensure-apt.sh installs it as root)")
    dom = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            site + "/",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<img" not in dom and "<script" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
