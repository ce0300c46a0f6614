"""The REST API over a real SQLite file, served by real uvicorn on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from api_data import (
    ALICE,
    BOB,
    CAROL,
    MALLORY,
    OUTSIDER,
    VAL1,
    VAL2,
    VAL3,
    Ledger,
    address,
    populate,
)
from fastapi import Request
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from web3 import Web3

from fedledger.chain.devnet import free_port
from fedledger.content.store import open_store
from fedledger.protocol import merkle, verdicts
from fedledger.protocol.verdicts import Verdict
from fedledger_backend.api import create_app
from fedledger_backend.api.addresses import checksum
from fedledger_backend.api.routes import contributions, tasks
from fedledger_backend.api.routes.contributions import history_query
from fedledger_backend.api.schemas import Contribution, ContributionStatus, Page, Task
from fedledger_backend.api.server import BackgroundServer
from fedledger_backend.db import Database, RoundRow, VerdictFileRow

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Api:
    url: str
    http: httpx.Client
    ledger: Ledger

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params={k: v for k, v in params.items() if v is not None})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A populated index, read-only for the tests that use it."""
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('api') / 'index.db'}").create()
    led = populate(db)
    with BackgroundServer(create_app(db)) as srv, httpx.Client(base_url=srv.url) as http:
        yield Api(srv.url, http, led)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Api]:
    """A populated index that the test may change."""
    db = Database(f"sqlite:///{tmp_path / 'index.db'}").create()
    led = populate(db)
    with BackgroundServer(create_app(db)) as srv, httpx.Client(base_url=srv.url) as http:
        yield Api(srv.url, http, led)


def ids(resp: httpx.Response) -> list[int]:
    assert resp.status_code == 200, resp.text
    return [c["update_id"] for c in resp.json()["items"]]


def walk(api: Api, between_pages: object = None, **params: object) -> list[int]:
    """Every update id reachable by following next_cursor from the first page."""
    seen: list[int] = []
    cursor = None
    while True:
        page = api.get("/contributions", cursor=cursor, **params).json()
        seen += [c["update_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        if callable(between_pages):
            between_pages()


# -- /health ------------------------------------------------------------------------------------


def dead_rpc() -> Web3:
    return Web3(Web3.HTTPProvider(f"http://127.0.0.1:{free_port()}", request_kwargs={"timeout": 2}))


def test_health_is_degraded_with_200_when_the_rpc_is_dead(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    populate(db).checkpoint(123)
    with BackgroundServer(create_app(db, w3=dead_rpc())) as srv:
        r = httpx.get(srv.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["head_block"] is None
    assert body["last_indexed_block"] == 123
    assert body["chain_id"] == 31337  # known from the checkpoint even with the chain down
    assert "Traceback" not in r.text


def test_a_hanging_rpc_degrades_health_without_holding_up_other_requests(tmp_path: Path) -> None:
    """An RPC endpoint that accepts and never answers: /health says so after its bounded wait,
    and the requests that arrive meanwhile are answered at once (the probe waits off the loop)."""
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    populate(db).checkpoint(123)
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    try:
        with (
            BackgroundServer(create_app(db, w3=w3)) as srv,
            httpx.Client(timeout=20) as http,
            ThreadPoolExecutor(1) as pool,
        ):
            probe = pool.submit(http.get, srv.url + "/health")
            time.sleep(0.3)  # the probe is now waiting on the silent endpoint
            assert not probe.done()
            assert http.get(srv.url + "/tasks").status_code == 200
            assert not probe.done()  # /tasks was answered while /health still waited
            r = probe.result()
    finally:
        silent.close()
    assert r.status_code == 200
    assert r.json()["status"] == "degraded"
    assert "did not answer" in r.json()["detail"]


@pytest.fixture(scope="module")
def anvil() -> Iterator[Web3]:
    from fedledger.chain.devnet import start_anvil

    try:
        net = start_anvil()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"anvil unavailable: {exc}")
    try:
        yield Web3(Web3.HTTPProvider(net.url))
    finally:
        net.stop()


def test_health_is_ok_when_the_index_is_at_the_head(tmp_path: Path, anvil: Web3) -> None:
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    led = Ledger(db)
    led.checkpoint(anvil.eth.block_number, chain_id=anvil.eth.chain_id)
    with BackgroundServer(create_app(db, w3=anvil)) as srv:
        body = httpx.get(srv.url + "/health").json()
    assert body["status"] == "ok"
    assert body["lag_blocks"] == 0
    assert body["head_block"] == anvil.eth.block_number


def test_health_is_lagging_when_the_index_trails_the_head(tmp_path: Path, anvil: Web3) -> None:
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    Ledger(db).checkpoint(anvil.eth.block_number, chain_id=anvil.eth.chain_id)
    anvil.provider.make_request("anvil_mine", [hex(20)])  # type: ignore[arg-type]
    with BackgroundServer(create_app(db, w3=anvil)) as srv:
        body = httpx.get(srv.url + "/health").json()
    assert body["status"] == "lagging"
    assert body["lag_blocks"] >= 20


def test_health_tolerates_the_indexers_confirmations(tmp_path: Path, anvil: Web3) -> None:
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    Ledger(db).checkpoint(anvil.eth.block_number, chain_id=anvil.eth.chain_id)
    anvil.provider.make_request("anvil_mine", [hex(12)])  # type: ignore[arg-type]
    app = create_app(db, w3=anvil, indexer_status=lambda: {"confirmations": 12})
    with BackgroundServer(app) as srv:
        body = httpx.get(srv.url + "/health").json()
    assert body["status"] == "ok"
    assert body["indexer"] == {"confirmations": 12}


# -- /tasks and rounds --------------------------------------------------------------------------


def test_tasks_are_listed_with_config_and_current_round(api: Api) -> None:
    tasks = api.get("/tasks").json()["items"]
    assert [t["task_id"] for t in tasks] == [1, 2]
    assert tasks[0]["current_round"] == 2
    assert tasks[0]["quorum"] == 2
    assert tasks[1]["open"] is True
    assert tasks[0]["max_samples"] == 1000  # the cap on each update's fedavg weight


def test_task_detail_lists_members_and_progress(api: Api) -> None:
    t = api.get("/tasks/1").json()
    assert set(t["contributors"]) == {ALICE, BOB, CAROL, MALLORY}
    assert set(t["validators"]) == {VAL1, VAL2, VAL3, ALICE}
    assert t["rounds_finalized"] == 2
    assert t["contributions"] == 10


def test_unknown_task_is_404(api: Api) -> None:
    r = api.get("/tasks/99")
    assert r.status_code == 404
    assert r.json() == {"detail": "task 99 not found"}


def test_rounds_of_a_task_are_listed_in_order(api: Api) -> None:
    rounds = api.get("/tasks/1/rounds").json()["items"]
    assert [(r["round"], r["status"]) for r in rounds] == [
        (0, "finalized"),
        (1, "finalized"),
        (2, "open"),
    ]


def test_round_detail_counts_each_verdict(api: Api) -> None:
    r = api.get("/tasks/1/rounds/1").json()
    assert r["counts"] == {"ACCEPTED": 2, "LATE": 1, "OUTLIER": 1}
    assert r["metrics"]["accuracy"] == pytest.approx(0.74)
    assert r["aggregate_cid"].startswith("bafkrei")


def test_round_detail_shows_a_validator_that_attested_a_different_digest(api: Api) -> None:
    r = api.get("/tasks/1/rounds/1").json()
    agrees = {a["validator"]: a["agrees"] for a in r["attestations"]}
    assert agrees == {VAL1: True, VAL2: True, VAL3: False}
    assert [d["attestations"] for d in r["digests"]] == [2, 1]
    assert r["conflicts"] == 1


def test_unknown_round_is_404(api: Api) -> None:
    assert api.get("/tasks/1/rounds/7").status_code == 404


def test_rounds_of_an_unknown_task_are_404(api: Api) -> None:
    assert api.get("/tasks/5/rounds").status_code == 404


# -- /contributions: filters --------------------------------------------------------------------


def test_contributions_are_listed_in_update_id_order(api: Api) -> None:
    assert ids(api.get("/contributions")) == list(range(1, 13))


def test_contributions_can_be_listed_newest_first(api: Api) -> None:
    assert ids(api.get("/contributions", order="desc", limit=3)) == [12, 11, 10]


def test_contributions_filter_by_task(api: Api) -> None:
    assert ids(api.get("/contributions", task_id=2)) == [11, 12]


def test_contributions_filter_by_task_and_round(api: Api) -> None:
    assert ids(api.get("/contributions", task_id=1, round=1)) == [5, 6, 7, 8]


def test_contributions_filter_by_round_across_tasks(api: Api) -> None:
    assert ids(api.get("/contributions", round=0)) == [1, 2, 3, 4, 11, 12]


def test_contributions_filter_by_contributor_in_any_case(api: Api) -> None:
    lower = api.get("/contributions", contributor=BOB.lower())
    upper = api.get("/contributions", contributor="0x" + BOB[2:].upper())
    assert ids(lower) == ids(upper) == [2, 6, 10, 11]
    assert {c["contributor"] for c in lower.json()["items"]} == {BOB}


def test_contributions_filter_by_status_in_any_case(api: Api) -> None:
    assert ids(api.get("/contributions", status="accepted")) == [1, 2, 3, 5, 7]
    assert ids(api.get("/contributions", status="PENDING")) == [9, 10, 11, 12]


def test_contributions_filters_combine(api: Api) -> None:
    assert ids(api.get("/contributions", contributor=MALLORY, status="OUTLIER")) == [8]


def test_an_unknown_status_is_422(api: Api) -> None:
    assert api.get("/contributions", status="MAYBE").status_code == 422


def test_a_malformed_contributor_filter_is_422(api: Api) -> None:
    assert api.get("/contributions", contributor="0x1234").status_code == 422


# -- /contributions: pages ----------------------------------------------------------------------


def test_limit_defaults_to_50(fresh: Api) -> None:
    for _ in range(60):
        fresh.ledger.submit(2, 0, OUTSIDER)
    page = fresh.get("/contributions").json()
    assert len(page["items"]) == 50
    assert page["next_cursor"] is not None


@pytest.mark.parametrize("limit", [0, 501, -1])
def test_limit_outside_1_to_500_is_422(api: Api, limit: int) -> None:
    r = api.get("/contributions", limit=limit)
    assert r.status_code == 422
    assert "detail" in r.json()


def test_limit_500_is_accepted(api: Api) -> None:
    assert api.get("/contributions", limit=500).status_code == 200


def test_the_last_page_has_no_next_cursor(api: Api) -> None:
    page = api.get("/contributions", limit=12).json()
    assert len(page["items"]) == 12
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%",
        "dGFza3M6MQ",  # a /tasks cursor
        "Y29udHJpYnV0aW9ucy5hc2M6LTE",  # contributions.asc:-1
        "Y29udHJpYnV0aW9ucy5kZXNjOjU",  # a descending cursor on an ascending walk
    ],
)
def test_a_bad_cursor_is_422(api: Api, cursor: str) -> None:
    r = api.get("/contributions", cursor=cursor)
    assert r.status_code == 422
    assert r.json() == {"detail": "invalid cursor"}


def test_pages_cover_every_contribution_once(api: Api) -> None:
    assert walk(api, limit=3) == list(range(1, 13))


def test_pages_skip_and_repeat_nothing_while_new_contributions_arrive(fresh: Api) -> None:
    led = fresh.ledger
    for _ in range(3):
        led.submit(2, 0, OUTSIDER)

    def index_more() -> None:
        led.submit(2, 0, OUTSIDER)
        led.submit(1, 2, CAROL)

    seen = walk(fresh, between_pages=index_more, limit=4)
    assert len(seen) == len(set(seen))
    assert seen == sorted(c.update_id for c in led.contributions)


def test_filtered_pages_skip_and_repeat_nothing_while_new_contributions_arrive(fresh: Api) -> None:
    led = fresh.ledger
    inserted: list[int] = []

    def index_more() -> None:
        inserted.append(led.submit(2, 0, BOB).update_id)
        led.submit(2, 0, OUTSIDER)

    seen = walk(fresh, between_pages=index_more, contributor=BOB, limit=2)
    assert seen == [2, 6, 10, 11, *inserted]


def test_newest_first_pages_skip_and_repeat_nothing_while_new_contributions_arrive(
    fresh: Api,
) -> None:
    led = fresh.ledger
    seen = walk(fresh, between_pages=lambda: led.submit(2, 0, OUTSIDER), order="desc", limit=3)
    assert seen == list(range(12, 0, -1))


def test_pages_survive_verdicts_changing_between_pages(fresh: Api) -> None:
    def judge_everything() -> None:
        with fresh.ledger.db.transaction() as s:
            s.execute(text("UPDATE contributions SET status = 'ACCEPTED'"))

    assert walk(fresh, between_pages=judge_everything, limit=5) == list(range(1, 13))


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "SCAN contributions"),  # in rowid (update id) order, stopping at the limit
        ({"after": 5}, "INTEGER PRIMARY KEY"),
        ({"task_id": 1}, "ix_contrib_task"),
        ({"task_id": 1, "round": 0}, "ix_contrib_task_round"),
        ({"round": 0}, "ix_contrib_task_round"),
        ({"contributor": BOB}, "ix_contrib_contributor"),
        ({"contributor": BOB, "status": "OUTLIER"}, "ix_contrib_contributor"),
        ({"task_id": 1, "contributor": BOB}, "ix_contrib_contributor"),
        ({"status": "OUTLIER"}, "ix_contrib_status"),
        ({"task_id": 1, "status": "OUTLIER"}, "ix_contrib_status"),
        ({"task_id": 1, "status": "ACCEPTED"}, "ix_contrib_task"),
    ],
)
def test_history_filters_reach_rows_through_an_index(
    api: Api, filters: dict[str, Any], index: str
) -> None:
    args = {"task_id": None, "round": None, "contributor": None, "status": None, **filters}
    q = history_query(**args).limit(51)
    sql = str(q.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with api.ledger.db.engine.connect() as conn:
        plan = " | ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert index in plan
    assert "SCAN contributions" not in plan or not filters
    if "round" not in filters or "task_id" in filters:  # a round across tasks merges per task
        assert "TEMP B-TREE" not in plan


# -- /contributions/{id} ------------------------------------------------------------------------


def test_a_contribution_shows_its_chain_position_and_verdict(api: Api) -> None:
    c = api.get("/contributions/8").json()
    row = api.ledger.contributions[7]
    assert c["contributor"] == MALLORY
    assert (c["task_id"], c["round"]) == (1, 1)
    assert c["content_hash"] == row.content_hash
    assert c["cid"] == row.cid
    assert c["tx_hash"] == row.tx_hash
    assert c["block_number"] == row.block_number
    assert c["log_index"] == 0
    assert c["num_samples"] == 600
    assert c["status"] == "OUTLIER"
    assert c["reason"].startswith("cosine distance")
    assert c["score"] == pytest.approx(0.05)
    assert "dp_epsilon" in c


def test_an_unknown_contribution_is_404(api: Api) -> None:
    r = api.get("/contributions/9999")
    assert r.status_code == 404
    assert r.json() == {"detail": "update 9999 not found"}


def test_a_non_numeric_update_id_is_422(api: Api) -> None:
    assert api.get("/contributions/abc").status_code == 422


def test_addresses_are_returned_checksummed_even_if_stored_lowercase(fresh: Api) -> None:
    row = fresh.ledger.submit(2, 0, OUTSIDER.lower())
    assert fresh.get(f"/contributions/{row.update_id}").json()["contributor"] == OUTSIDER


# -- proofs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("update_id", [1, 4, 6, 8])
def test_a_verdict_proof_verifies_against_the_attested_root(api: Api, update_id: int) -> None:
    p = api.get(f"/contributions/{update_id}/proof").json()
    rnd = api.get(f"/tasks/{p['task_id']}/rounds/{p['round']}").json()
    assert p["root"] == rnd["verdict_root"]
    assert merkle.verify(p["root"], p["leaf"], p["proof"])


def test_a_verdict_proof_commits_to_the_update_and_its_verdict(api: Api) -> None:
    p = api.get("/contributions/4/proof").json()
    c = api.get("/contributions/4").json()
    assert p["verdict"] == "NORM_BOUND"
    assert p["leaf"] == merkle.to_hex(
        merkle.leaf(4, c["contributor"], c["content_hash"], p["verdict_code"])
    )
    assert p["verdict_code"] == 6


def test_a_proof_for_a_round_not_finalised_is_404(api: Api) -> None:
    r = api.get("/contributions/9/proof")
    assert r.status_code == 404
    assert "not finalised" in r.json()["detail"]


def test_a_proof_for_an_unknown_update_is_404(api: Api) -> None:
    assert api.get("/contributions/9999/proof").status_code == 404


def test_a_tampered_verdict_file_is_reported_as_409_not_proved(fresh: Api) -> None:
    with fresh.ledger.db.transaction() as s:
        vf = s.get(VerdictFileRow, fresh.get("/tasks/1/rounds/0").json()["verdict_cid"])
        assert vf is not None
        body = dict(vf.body)
        body["entries"] = [dict(e, verdict="ACCEPTED") for e in body["entries"]]
        vf.body = body
    r = fresh.get("/contributions/4/proof")
    assert r.status_code == 409
    assert "does not match the attested root" in r.json()["detail"]


def _uncache_verdict_file(api: Api, task_id: int, rnd: int) -> bytes:
    """Drop a round's verdict file from the cache; return its canonical bytes."""
    with api.ledger.db.transaction() as s:
        r = s.get(RoundRow, (task_id, rnd))
        assert r is not None
        vf = s.get(VerdictFileRow, r.verdict_cid)
        assert vf is not None
        raw = verdicts.from_json(vf.body).to_bytes()
        s.delete(vf)
    return raw


def test_a_proof_is_503_while_the_verdict_file_is_not_cached(fresh: Api) -> None:
    _uncache_verdict_file(fresh, 1, 0)
    r = fresh.get("/contributions/2/proof")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"


def test_a_proof_falls_back_to_the_content_store(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    led = populate(db)
    store = open_store(None, tmp_path)
    real_cid = store.put(_uncache_verdict_file(Api("", httpx.Client(), led), 1, 0))
    with db.transaction() as s:
        r = s.get(RoundRow, (1, 0))
        assert r is not None
        r.verdict_cid = real_cid
    with BackgroundServer(create_app(db, store=store)) as srv:
        p = httpx.get(srv.url + "/contributions/2/proof").json()
    assert p["verdict_cid"] == real_cid
    assert merkle.verify(p["root"], p["leaf"], p["proof"])


def test_the_status_filter_knows_every_verdict() -> None:
    assert get_args(ContributionStatus) == ("PENDING", *Verdict.__members__)


def test_list_pages_are_built_from_the_columns_their_models_name() -> None:
    """The list routes serialise table rows without a model per row: the tables' columns must
    be the models' fields, in order (a new column needs a field, and the other way round)."""
    assert tuple(Contribution.model_fields) == contributions.COLUMNS
    assert tuple(Task.model_fields) == tasks.COLUMNS


def test_every_listed_page_validates_as_its_model(api: Api) -> None:
    for params in ({"limit": 500}, {"status": "OUTLIER"}, {"order": "desc", "limit": 2}):
        page = Page[Contribution].model_validate(api.get("/contributions", params=params).json())
        assert page.items
        assert all(c.contributor == checksum(c.contributor.lower()) for c in page.items)
    tasks_page = Page[Task].model_validate(api.get("/tasks").json())
    assert tasks_page.items and all(t.owner == checksum(t.owner.lower()) for t in tasks_page.items)


# -- /contributors ------------------------------------------------------------------------------


def test_a_contributor_has_totals_per_status(api: Api) -> None:
    c = api.get(f"/contributors/{MALLORY}").json()
    assert c["totals"] == {"NORM_BOUND": 1, "OUTLIER": 1}
    assert c["contributions"] == 2


def test_a_contributor_lists_its_tasks_and_roles(api: Api) -> None:
    c = api.get(f"/contributors/{ALICE}").json()
    assert [(t["task_id"], t["roles"], t["contributions"], t["accepted"]) for t in c["tasks"]] == [
        (1, ["contributor", "validator"], 3, 2)
    ]


def test_reputation_is_the_smoothed_acceptance_rate_over_judged_updates(api: Api) -> None:
    bob = api.get(f"/contributors/{BOB}").json()["reputation"]
    # bob: ACCEPTED, LATE judged; two PENDING not judged yet
    assert bob["judged"] == 2
    assert bob["acceptance"] == pytest.approx((1 + 1) / (2 + 2))
    assert bob["mean_score"] == pytest.approx((0.88 + 0.0) / 2)


def test_a_newcomer_has_neutral_reputation(api: Api) -> None:
    rep = api.get(f"/contributors/{OUTSIDER}").json()["reputation"]
    assert rep == {"acceptance": 0.5, "mean_score": None, "judged": 0}


def test_a_contributor_address_is_accepted_in_any_case(api: Api) -> None:
    r = api.get(f"/contributors/{CAROL.lower()}")
    assert r.status_code == 200
    assert r.json()["address"] == CAROL


@pytest.mark.parametrize("bad", ["0x123", "carol", "0x" + "g" * 40, "0x" + "a" * 41])
def test_a_malformed_address_is_422(api: Api, bad: str) -> None:
    r = api.get(f"/contributors/{bad}")
    assert r.status_code == 422
    assert "not an Ethereum address" in r.json()["detail"]


def test_an_address_never_seen_is_404(api: Api) -> None:
    assert api.get(f"/contributors/{address('nobody')}").status_code == 404


# -- /metrics -----------------------------------------------------------------------------------


def metric_samples(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_metrics_report_the_indexed_block_and_contributions_by_status(api: Api) -> None:
    m = metric_samples(api)
    assert m["fedledger_indexed_block"] == [({}, float(api.ledger.block))]
    by_status = {labels["status"]: v for labels, v in m["fedledger_contributions"]}
    assert by_status["ACCEPTED"] == 5
    assert by_status["PENDING"] == 4
    assert m["fedledger_rounds_finalized"] == [({}, 2.0)]


def test_metrics_have_a_latency_histogram_by_route_template(api: Api) -> None:
    api.get("/contributions/3")
    m = metric_samples(api)
    counts = {
        (labels["route"], labels["status"]): v
        for labels, v in m["fedledger_http_request_duration_seconds_count"]
    }
    assert counts[("/contributions/{update_id}", "200")] >= 1


# -- errors and limits --------------------------------------------------------------------------


def test_an_unknown_path_is_404_with_detail(api: Api) -> None:
    r = api.get("/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}


def test_a_database_failure_is_503_without_a_stack_trace(fresh: Api) -> None:
    with fresh.ledger.db.transaction() as s:
        s.execute(text("DROP TABLE attestations"))
    r = fresh.get("/tasks/1/rounds/1")
    assert r.status_code == 503
    assert r.json() == {"detail": "the database is unavailable; retry shortly"}


def test_a_body_over_the_cap_is_413_before_it_is_read(api: Api) -> None:
    r = api.http.post("/contributions", content=b"x" * (2 << 20))
    assert r.status_code == 413
    assert "larger than" in r.json()["detail"]


def test_a_streamed_body_over_the_cap_is_413(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    app = create_app(db)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 65536

    with BackgroundServer(app) as srv:
        small = httpx.post(srv.url + "/echo", content=iter([b"z" * 1000]))
        big = httpx.post(srv.url + "/echo", content=chunks())
    assert small.json() == {"size": 1000}
    assert big.status_code == 413


def test_openapi_docs_are_served(api: Api) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/health",
        "/tasks",
        "/tasks/{task_id}",
        "/tasks/{task_id}/rounds",
        "/tasks/{task_id}/rounds/{round}",
        "/contributions",
        "/contributions/{update_id}",
        "/contributions/{update_id}/proof",
        "/contributors/{address}",
        "/metrics",
    ):
        assert path in paths


def test_a_served_app_leaves_its_startup_heap_out_of_the_collector(tmp_path: Path) -> None:
    """``from_settings`` (as ``fedledger serve`` does) freezes what startup built, so a full
    collection under load walks only what requests made, not the ~150k objects of the imports."""
    script = (
        "import gc; from fedledger_backend.api.app import from_settings; "
        "assert gc.get_freeze_count() == 0; from_settings(); print(gc.get_freeze_count())"
    )
    env = dict(os.environ, FEDLEDGER_DB=f"sqlite:///{tmp_path / 'i.sqlite3'}")
    env["FEDLEDGER_HOME"] = str(tmp_path)
    env.pop("FEDLEDGER_RPC_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 50_000  # the imports and the app, not a handful of objects


def test_an_unhandled_error_is_a_bare_500_and_the_connection_stays_usable(tmp_path: Path) -> None:
    """One keep-alive connection: a route that raises answers a bare 500, and the next request
    on the same socket is answered (uvicorn closes a connection whose app raised)."""
    db = Database(f"sqlite:///{tmp_path / 'i.db'}").create()
    app = create_app(db)

    def boom() -> None:
        raise RuntimeError("disk on fire at /secret/path")

    app.add_api_route("/boom", boom)
    with BackgroundServer(app) as srv, socket.create_connection((srv.host, srv.port)) as sock:
        replies = []
        for path in ("/boom", "/tasks"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            replies.append(_read_response(sock))
    (status, body), (status2, _) = replies
    assert status == 500 and json.loads(body) == {"detail": "internal server error"}
    assert status2 == 200


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return int(head.split()[1]), body
