"""The dashboard at ``GET /``: one self-contained HTML page read from the index.

No script, font or style is fetched from anywhere: the CSS is inline and the accuracy plot is an
SVG drawn here, so the page works on machines without network access. ``load`` runs a handful
of bounded, index-friendly queries; ``render`` is a pure function of what it returns.

Every string from the chain, the store or a task's spec was written by someone else (a task's
creator chooses its spec, its validators the verdict reasons): all go through :func:`_e`, and
the page has no script to hand them to.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.orm import Session

from fedledger_backend.db import Checkpoint, ContributionRow, RoundRow, TaskRow

if TYPE_CHECKING:
    from fedledger_backend.taskspecs import SpecFields

RECENT_CONTRIBUTIONS = 30
RECENT_ROUNDS = 12
PLOT_ROUNDS = 200
MARKED_POINTS = 60  # beyond this many rounds a line is drawn without point markers
MAX_TASKS = 50
MAX_REASON_CHARS = 160  # a verdict's reason, as shown (its validator wrote it: any length)

SERIES = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4b5563")


@dataclass
class DashboardData:
    chain_id: int | None
    indexed_block: int | None
    task_filter: int | None
    tasks: list[TaskRow]
    finalized_per_task: dict[int, int]
    rounds: list[RoundRow]
    accuracy: dict[int, list[tuple[int, float]]]
    status_counts: dict[str, int]
    """Contributions per status in the rounds shown (bounded: a whole-history GROUP BY is not)."""
    contributions: list[ContributionRow]
    contribution_total: int
    specs: Mapping[str, SpecFields] = field(default_factory=dict)
    """What each task's spec says, by spec CID (a spec not read yet is missing)."""


SpecReader = Callable[[Iterable[str]], Mapping[str, "SpecFields"]]


def load(s: Session, task_id: int | None = None, specs: SpecReader | None = None) -> DashboardData:
    """What the page shows, for every task or for ``task_id``; ``specs`` reads the tasks'
    spec fields by spec CID (``SpecCache.lookup`` on the app's store)."""
    cp = s.scalars(select(Checkpoint).order_by(Checkpoint.block_number.desc()).limit(1)).first()
    tasks = list(s.scalars(select(TaskRow).order_by(TaskRow.task_id.desc()).limit(MAX_TASKS)))
    finalized = dict(
        s.execute(
            select(RoundRow.task_id, func.count())
            .where(RoundRow.status == "finalized")
            .group_by(RoundRow.task_id)
        ).all()
    )
    rq = select(RoundRow).order_by(
        RoundRow.started_block.desc(), RoundRow.task_id, RoundRow.round.desc()
    )
    cq = select(ContributionRow).order_by(ContributionRow.update_id.desc())
    aq = (
        select(RoundRow.task_id, RoundRow.round, RoundRow.accuracy)
        .where(RoundRow.accuracy.is_not(None))
        .order_by(RoundRow.task_id, RoundRow.round)
    )
    if task_id is not None:
        rq = rq.where(RoundRow.task_id == task_id)
        cq = cq.where(ContributionRow.task_id == task_id)
        aq = aq.where(RoundRow.task_id == task_id)
    total = select(func.coalesce(func.sum(RoundRow.submitted), 0))
    if task_id is not None:
        total = total.where(RoundRow.task_id == task_id)
    rounds = list(s.scalars(rq.limit(RECENT_ROUNDS)))
    shown = or_(
        false(),
        *(
            and_(ContributionRow.task_id == r.task_id, ContributionRow.round == r.round)
            for r in rounds
        ),
    )
    status_counts = s.execute(
        select(ContributionRow.status, func.count()).where(shown).group_by(ContributionRow.status)
    ).all()
    accuracy: dict[int, list[tuple[int, float]]] = {}
    for t, r, acc in s.execute(aq):
        if acc is not None:
            accuracy.setdefault(t, []).append((int(r), float(acc)))
    return DashboardData(
        chain_id=cp.chain_id if cp else None,
        indexed_block=cp.block_number if cp else None,
        task_filter=task_id,
        tasks=tasks,
        finalized_per_task={int(k): int(v) for k, v in finalized.items()},
        rounds=rounds,
        accuracy={t: pts[-PLOT_ROUNDS:] for t, pts in accuracy.items()},
        status_counts={str(k): int(v) for k, v in status_counts},
        contributions=list(s.scalars(cq.limit(RECENT_CONTRIBUTIONS))),
        contribution_total=int(s.scalar(total) or 0),
        specs=specs([t.spec_cid for t in tasks]) if specs is not None else {},
    )


# -- rendering ----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """``value`` as HTML text, safe inside an element or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


NONE = '<span class="muted">—</span>'


def _clip(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters, escaped; the whole (up to 4×) in its title."""
    if not text:
        return ""
    if len(text) <= limit:
        return _e(text)
    return f'<span title="{_e(text[: 4 * limit])}">{_e(text[: limit - 1])}…</span>'


def _text(value: str | None) -> str:
    return NONE if value is None else _e(value)


def _short(value: str | None, head: int = 8, tail: int = 6) -> str:
    """A hash, CID or address as its ends, the whole in the title (copied from there)."""
    if not value:
        return NONE
    if len(value) <= head + tail + 1:
        return f"<code>{_e(value)}</code>"
    return f'<code title="{_e(value)}">{_e(value[:head])}…{_e(value[-tail:])}</code>'


def verdict_class(status: str) -> str:
    if status == "ACCEPTED":
        return "ok"
    if status == "PENDING":
        return "idle"
    if status in ("LATE", "UNAVAILABLE"):
        return "warn"
    return "bad"


ROUND_CLASS = {"finalized": "ok", "sealed": "warn", "open": "info"}


def _badge(text: str, cls: str) -> str:
    return f'<span class="badge {cls}">{_e(text)}</span>'


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f}%"


def accuracy_svg(
    series: dict[int, list[tuple[int, float]]], width: int = 720, height: int = 230
) -> str:
    """Accuracy per round, one line per task, as an inline SVG on an axis from 0 to 100 %
    (one fitted to the data would make a few points look like a leap)."""
    finite = ((t, [(r, a) for r, a in pts if math.isfinite(a)]) for t, pts in series.items())
    series = {t: pts for t, pts in finite if pts}
    points = [p for pts in series.values() for p in pts]
    if not points:
        return '<p class="empty">No round has reported accuracy yet.</p>'
    left, right, top, bottom = 48, 16, 14, 34
    w, h = width - left - right, height - top - bottom
    r_min = min(r for r, _ in points)
    r_max = max(r for r, _ in points)
    ticks = 5  # 0 %, 20 %, … 100 %
    span_r = max(1, r_max - r_min)

    def x(r: int) -> float:
        return left + (r - r_min) / span_r * w

    def y(a: float) -> float:
        return top + (1 - min(1.0, max(0.0, a))) * h

    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="accuracy per round">'
    ]
    for i in range(ticks + 1):
        a = i / ticks
        yy = y(a)
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
            f'<text x="{left - 8}" y="{yy + 4:.1f}" class="tick" text-anchor="end">'
            f"{a * 100:.0f}%</text>"
        )
    step = max(1, span_r // 10)
    for r in range(r_min, r_max + 1, step):
        parts.append(
            f'<text x="{x(r):.1f}" y="{top + h + 18}" class="tick" text-anchor="middle">{r}</text>'
        )
    parts.append(
        f'<text x="{left + w / 2:.1f}" y="{height - 2}" class="axis" '
        'text-anchor="middle">round</text>'
    )
    for i, (task, pts) in enumerate(sorted(series.items())):
        colour = SERIES[i % len(SERIES)]
        path = " ".join(f"{x(r):.1f},{y(a):.1f}" for r, a in pts)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>'
        )
        for r, a in pts if len(pts) <= MARKED_POINTS else ():
            parts.append(
                f'<circle cx="{x(r):.1f}" cy="{y(a):.1f}" r="3.5" fill="{colour}">'
                f"<title>task {task}, round {r}: {a * 100:.2f}%</title></circle>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{SERIES[i % len(SERIES)]}"></i>task {t}</span>'
        for i, t in enumerate(sorted(series))
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _verdict_bar(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return '<p class="empty">No contributions indexed yet.</p>'
    order = sorted(counts, key=lambda k: (k != "ACCEPTED", k == "PENDING", -counts[k], k))
    segs = "".join(
        f'<span class="seg {verdict_class(k)}" style="flex:{counts[k]}" '
        f'title="{_e(k)}: {counts[k]}"></span>'
        for k in order
    )
    keys = "".join(
        f"<tr><td>{_badge(k, verdict_class(k))}</td>"
        f'<td class="num"><b>{counts[k]:,}</b></td>'
        f'<td class="num muted">{counts[k] / total * 100:.1f}%</td></tr>'
        for k in order
    )
    return f'<div class="bar">{segs}</div><table class="counts">{keys}</table>'


def _proof_link(c: ContributionRow) -> str:
    """A link to the Merkle proof of the verdict (a verdict is applied once its round is final)."""
    if c.status == "PENDING":
        return NONE
    return f'<a href="/contributions/{c.update_id}/proof" title="Merkle proof (JSON)">proof</a>'


CSS = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1f2328;--muted:#6b7280;--line:#e5e7eb;
--ok:#1a7f37;--ok-bg:#dafbe1;--bad:#b42318;--bad-bg:#fee4e2;--warn:#9a6700;--warn-bg:#fff4d6;
--idle:#57606a;--idle-bg:#eaeef2;--info:#0550ae;--info-bg:#ddf4ff}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
background:var(--bg);color:var(--ink)}
header{background:#111827;color:#f9fafb;padding:14px 28px;display:flex;
align-items:baseline;gap:28px}
header h1{font-size:20px;margin:0;letter-spacing:.3px}
header .stat{color:#d1d5db;font-size:13px}
header .stat b{color:#fff;font-size:15px;margin-left:4px}
main{max-width:1240px;margin:0 auto;padding:18px 24px 40px;display:grid;
grid-template-columns:minmax(0,1.7fr) minmax(0,1fr);gap:18px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 10px;color:#374151}
h2 small{font-weight:normal;color:var(--muted);margin-left:6px}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);
padding:5px 8px}
td{border-bottom:1px solid #f0f1f3;padding:5px 8px;vertical-align:middle}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr:last-child td{border-bottom:none}
code{font:12px ui-monospace,SFMono-Regular,Menlo,"DejaVu Sans Mono",monospace;color:#374151}
td code{white-space:nowrap}
a{color:var(--info);text-decoration:none}a:hover{text-decoration:underline}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:11.5px;font-weight:600;
letter-spacing:.2px;white-space:nowrap}
.ok{color:var(--ok);background:var(--ok-bg)}.bad{color:var(--bad);background:var(--bad-bg)}
.warn{color:var(--warn);background:var(--warn-bg)}.idle{color:var(--idle);background:var(--idle-bg)}
.info{color:var(--info);background:var(--info-bg)}
.muted{color:var(--muted)}.empty{color:var(--muted);font-style:italic;margin:6px 0}
.bar{display:flex;height:14px;border-radius:7px;overflow:hidden;margin:4px 0 10px;gap:2px}
.seg.ok{background:#2da44e}.seg.bad{background:#e5534b}.seg.warn{background:#d4a72c}
.seg.idle{background:#afb8c1}
table.counts td{border:none;padding:3px 8px}
svg.plot{width:100%;height:auto}
svg .grid{stroke:#eceef1;stroke-width:1}svg .tick{fill:#6b7280;font-size:11px}
svg .axis{fill:#6b7280;font-size:11px}
.legend{display:flex;gap:14px;font-size:12px;color:#374151;margin-top:4px}
.legend i{display:inline-block;width:12px;height:3px;margin-right:5px;vertical-align:middle}
.filter{font-size:12px;margin-left:8px}
"""


def render(d: DashboardData) -> str:
    """The whole page as one HTML string."""
    contributions = d.contribution_total
    finalized = sum(d.finalized_per_task.values())
    scope = f"task {d.task_filter}" if d.task_filter is not None else "all tasks"
    clear = ' <a class="filter" href="/">show all tasks</a>' if d.task_filter is not None else ""

    def spec(t: TaskRow) -> str:
        """The model, data set and rule cells of ``t``."""
        got = d.specs.get(t.spec_cid)
        if got is None:
            return f'<td colspan="3" class="muted" title="{_e(t.spec_cid)}">spec not read</td>'
        measured = _text(got.evaluation_data)
        return (
            f"<td>{_text(got.model)}</td>"
            f"<td>{_text(got.dataset)}<br><small>accuracy on {measured}</small></td>"
            f"<td>{_text(got.aggregation_rule)}</td>"
        )

    task_rows = (
        "".join(
            f'<tr><td><a href="/?task_id={t.task_id}">#{t.task_id}</a></td>'
            f"<td>{_short(t.owner, 6, 4)}</td>{spec(t)}"
            f'<td class="num">{t.current_round}</td>'
            f'<td class="num">{d.finalized_per_task.get(t.task_id, 0)}</td>'
            f'<td class="num">{t.min_updates}–{t.max_updates}</td>'
            f'<td class="num">{t.quorum}</td>'
            f"<td>{_badge('open', 'info') if t.open else _badge('admitted', 'idle')}</td>"
            f"<td>{_short(t.global_cid, 10, 6)}</td></tr>"
            for t in d.tasks
        )
        or '<tr><td colspan="11" class="empty">No task indexed yet.</td></tr>'
    )

    round_rows = (
        "".join(
            f'<tr><td>#{r.task_id}</td><td class="num">{r.round}</td>'
            f"<td>{_badge(r.status, ROUND_CLASS.get(r.status, 'idle'))}"
            + (f" {_badge(f'{r.conflicts} conflicting', 'bad')}" if r.conflicts else "")
            + f'</td><td class="num">{r.submitted}</td>'
            f'<td class="num">{r.accepted}</td><td class="num">{r.rejected}</td>'
            f'<td class="num">{_pct(r.accuracy)}</td>'
            f"<td>{_short(r.aggregate_cid, 10, 6)}</td></tr>"
            for r in d.rounds
        )
        or '<tr><td colspan="8" class="empty">No round yet.</td></tr>'
    )

    contribution_rows = (
        "".join(
            f'<tr><td class="num"><a href="/contributions/{c.update_id}" '
            f'title="the record (JSON)">{c.update_id}</a></td><td>#{c.task_id}</td>'
            f'<td class="num">{c.round}</td><td>{_short(c.contributor, 6, 4)}</td>'
            f'<td class="num">{c.num_samples:,}</td>'
            f"<td>{_badge(c.status, verdict_class(c.status))}</td>"
            f'<td class="num">{"" if c.score is None else f"{c.score:.3f}"}</td>'
            f'<td class="num">{"" if c.dp_epsilon is None else f"{c.dp_epsilon:.3g}"}</td>'
            f'<td class="muted">{_clip(c.reason, MAX_REASON_CHARS)}</td>'
            f"<td>{_short(c.cid, 10, 6)}</td><td>{_short(c.tx_hash, 8, 6)}</td>"
            f"<td>{_proof_link(c)}</td></tr>"
            for c in d.contributions
        )
        or '<tr><td colspan="12" class="empty">No contribution yet.</td></tr>'
    )

    chain = "—" if d.chain_id is None else str(d.chain_id)
    block = "—" if d.indexed_block is None else f"{d.indexed_block:,}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="15">
<title>fedledger — dashboard</title><style>{CSS}</style></head>
<body>
<header><h1>fedledger</h1>
<span class="stat">chain<b>{chain}</b></span>
<span class="stat">indexed block<b>{block}</b></span>
<span class="stat">tasks<b>{len(d.tasks)}</b></span>
<span class="stat">rounds finalised<b>{finalized}</b></span>
<span class="stat">contributions<b>{contributions:,}</b></span>
</header>
<main>
<section><h2>Accuracy per round <small>{_e(scope)}</small>{clear}</h2>
{accuracy_svg(d.accuracy)}</section>
<section><h2>Verdicts <small>latest {RECENT_ROUNDS} rounds, {_e(scope)}</small></h2>
{_verdict_bar(d.status_counts)}</section>
<section class="wide"><h2>Tasks</h2><table>
<tr><th>task</th><th>owner</th><th>model</th><th>data set</th><th>rule</th>
<th class="num">round</th><th class="num">finalised</th>
<th class="num">updates</th><th class="num">quorum</th><th>access</th><th>global model</th></tr>
{task_rows}</table></section>
<section class="wide"><h2>Rounds <small>latest {RECENT_ROUNDS}, {_e(scope)}</small></h2><table>
<tr><th>task</th><th class="num">round</th><th>status</th><th class="num">submitted</th>
<th class="num">accepted</th><th class="num">rejected</th><th class="num">accuracy</th>
<th>aggregate</th></tr>
{round_rows}</table></section>
<section class="wide">
<h2>Contributions <small>latest {RECENT_CONTRIBUTIONS}, {_e(scope)}</small></h2>
<table><tr><th class="num">update</th><th>task</th><th class="num">round</th><th>contributor</th>
<th class="num">samples</th><th>verdict</th><th class="num">score</th>
<th class="num" title="cumulative differential-privacy epsilon of the contributor in a DP task">ε</th>
<th>reason</th>
<th>cid</th><th>transaction</th><th>proof</th></tr>
{contribution_rows}</table></section>
</main></body></html>
"""
