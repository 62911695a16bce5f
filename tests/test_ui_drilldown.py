"""The Drill-down page: run facts, paging, page size, downloads of every row."""

from __future__ import annotations

import csv
import io
import re

import pytest
from ui_helpers import (
    RECORDED,
    all_text,
    clean_kpi_spec,
    metrics,
    no_exception,
    open_app,
    sqlite_url,
    texts,
)

import kpi_ui


def kpi_named(store, name):
    return next(k for k in store.list_kpis() if k.name == name)


@pytest.fixture()
def detail_run(demo_store):
    """A run of "Order Line Detail" for March 2025, North: a few hundred rows."""
    kpi = kpi_named(demo_store, "Order Line Detail")
    run = demo_store.execute(
        kpi.id,
        {"start_date": "2025-03-01", "end_date": "2025-03-31", "region": "North"},
        actor="setup",
    )
    assert run.status == "success" and run.row_count > 120
    return run


def test_no_runs_is_an_empty_state(demo_store):
    at = open_app("drilldown")
    assert any("No runs yet" in i for i in texts(at.info))


def test_facts_of_the_run(demo_store, detail_run):
    at = open_app("drilldown", query={"execution": detail_run.id})
    assert at.selectbox(key="dd_run").value == detail_run.id
    assert "Order Line Detail · version 1" in texts(at.header)
    values = metrics(at)
    assert values["Rows"] == f"{detail_run.row_count:,}"
    assert values["Value"] == kpi_ui.format_value(detail_run.value, "$")
    assert values["Requested by"] == "setup"
    shown = all_text(at)
    assert "start_date=2025-03-01, end_date=2025-03-31, region=North" in shown
    assert "no" in texts(at.markdown)  # not truncated
    assert at.query_params["execution"] == str(detail_run.id)


def test_paging_through_the_rows(demo_store, detail_run):
    at = open_app("drilldown", query={"execution": detail_run.id})
    total = detail_run.row_count
    pages = -(-total // 50)
    page_input = at.number_input(key=f"dd_page_{detail_run.id}")
    assert page_input.value == 1 and page_input.max == pages
    assert f"Rows 1–50 of {total:,}" in texts(at.caption)
    at.button(key=f"dd_next_{detail_run.id}").click().run()
    assert at.number_input(key=f"dd_page_{detail_run.id}").value == 2
    assert f"Rows 51–100 of {total:,}" in texts(at.caption)
    at.button(key=f"dd_prev_{detail_run.id}").click().run()
    assert f"Rows 1–50 of {total:,}" in texts(at.caption)
    at.number_input(key=f"dd_page_{detail_run.id}").set_value(pages).run()
    last_first = (pages - 1) * 50 + 1
    assert f"Rows {last_first:,}–{total:,} of {total:,}" in texts(at.caption)
    # A bigger page size keeps the page inside the new range.
    at.selectbox(key=f"dd_size_{detail_run.id}").set_value(250).run()
    no_exception(at)
    assert at.number_input(key=f"dd_page_{detail_run.id}").value == -(-total // 250)


def test_the_grid_gets_one_page_of_rows(demo_store, detail_run):
    frame = demo_store.result_frame(detail_run.id, page=2, page_size=50)
    shown = kpi_ui.grid.grid_frame(frame)
    assert len(shown) == 50
    assert list(shown.columns) == [c.name for c in detail_run.columns]
    assert shown.iloc[0]["line_id"] == demo_store.result_page(detail_run.id, 2, 50).rows[0][0]


def fetch(store, path: str) -> tuple[int, dict[str, str], bytes, int]:
    """GET ``path`` from the app's download routes over ``store`` (by default the app's
    own, as ``dashboard.py`` wires them): (status, headers, body, number of body chunks)."""
    import asyncio

    from starlette.applications import Starlette

    app = Starlette(routes=kpi_ui.download_routes(lambda: store or kpi_ui.process_store()))
    target, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": "GET",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "root_path": "",
    }
    sent: list[dict] = []

    async def call() -> None:
        finished = asyncio.Event()
        requests = iter([{"type": "http.request", "body": b"", "more_body": False}])

        async def receive():
            request = next(requests, None)
            if request is None:  # the client stays until the response ends
                await finished.wait()
                return {"type": "http.disconnect"}
            return request

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished.set()

        await app(scope, receive, send)

    asyncio.run(call())
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    chunks = [m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body")]
    return start["status"], headers, b"".join(chunks), len(chunks)


def export_href(at, format: str = "csv") -> str:
    links = [m for m in texts(at.markdown) if 'class="kpi-download"' in m]
    hrefs = [re.search(r'href="([^"]+)"', link).group(1).replace("&amp;", "&") for link in links]
    [href] = [h for h in hrefs if f".{format}?" in h]
    return href


def test_download_of_every_row_matches_the_store(demo_store, detail_run):
    at = open_app("drilldown", query={"execution": detail_run.id})
    href = export_href(at)
    assert re.fullmatch(r"/export/[A-Za-z0-9_-]{20,}\.csv\?name=order-line-detail", href)
    assert demo_store.audit_log(action="EXPORT") == []  # a link exports nothing yet

    status, headers, data, chunks = fetch(None, href)  # the server's store issued the link

    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert f'filename="order-line-detail-run-{detail_run.id}.csv"' in headers["content-disposition"]
    assert data.startswith(b"\xef\xbb\xbf")  # spreadsheet-safe by default: Excel reads UTF-8
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == [c.name for c in detail_run.columns]
    assert len(rows) - 1 == detail_run.row_count
    stored = [
        row
        for page in range(1, demo_store.result_page(detail_run.id, 1, 1000).total_pages + 1)
        for row in demo_store.result_page(detail_run.id, page, 1000).rows
    ]
    assert [r[0] for r in rows[1:]] == [str(r[0]) for r in stored]
    [entry] = demo_store.audit_log(action="EXPORT")
    assert entry.actor == RECORDED and entry.details["rows"] == detail_run.row_count
    # The link works once.
    assert fetch(None, href)[0] == 410
    assert len(demo_store.audit_log(action="EXPORT")) == 1


def test_the_full_export_streams_in_chunks(demo_store, detail_run, monkeypatch):
    from kpi_store import results

    monkeypatch.setattr(results, "EXPORT_CHUNK_ROWS", 100)
    grant = demo_store.export_link(detail_run.id, "analyst", excel=True)
    status, _, data, chunks = fetch(demo_store, kpi_ui.export_url(grant.token))
    assert status == 200 and data.startswith(b"\xef\xbb\xbf")
    assert chunks == -(-detail_run.row_count // 100)  # never the whole file at once
    assert len(data.decode("utf-8-sig").splitlines()) == detail_run.row_count + 1
    assert demo_store.audit_log(action="EXPORT")[0].actor == "analyst"


def test_an_unknown_or_expired_link_is_a_plain_message(demo_store, detail_run):
    status, headers, body, _ = fetch(demo_store, "/export/not-a-token.csv")
    assert status == 410 and headers["content-type"].startswith("text/plain")
    assert b"expired or was used already" in body and b"Traceback" not in body
    assert demo_store.audit_log(action="EXPORT") == []


def test_download_buttons_need_a_name_every_export_is_audited(demo_store, detail_run):
    at = open_app("drilldown", actor=None, query={"execution": detail_run.id})
    buttons = {b.label: b for b in at.get("download_button")}
    full = buttons[f"Download CSV (all {detail_run.row_count:,} rows)"]
    assert full.proto.disabled
    assert buttons["Download this page (50 rows)"].proto.disabled
    at = open_app("drilldown", query={"execution": detail_run.id})
    assert not any(b.proto.disabled for b in at.get("download_button"))


def test_downloads_are_spreadsheet_safe_unless_exact_values_are_asked_for(demo_store, detail_run):
    at = open_app("drilldown", query={"execution": detail_run.id})
    exact = at.toggle(key="dd_exact")
    assert exact.value is False and "Exact values" in exact.label
    assert fetch(None, export_href(at))[2].startswith(b"\xef\xbb\xbf")

    at = exact.set_value(True).run()
    no_exception(at)
    data = fetch(None, export_href(at))[2]
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.decode("utf-8").splitlines()[0] == ",".join(c.name for c in detail_run.columns)


def test_page_csv_can_be_excel_friendly():
    from kpi_store.results import csv_bytes

    rows = [["=1+1", -5], ["Zoë", 3]]
    plain = csv_bytes(["name", "amount"], rows).decode("utf-8")
    assert plain.splitlines() == ["name,amount", "=1+1,-5", "Zoë,3"]
    excel = csv_bytes(["name", "amount"], rows, excel=True)
    assert excel.startswith(b"\xef\xbb\xbf")
    assert excel.decode("utf-8-sig").splitlines() == ["name,amount", "'=1+1,-5", "Zoë,3"]


def test_unknown_run_in_the_link_is_a_message(demo_store, detail_run):
    at = open_app(query={"execution": 999})  # the home URL hands over to the drill-down
    assert texts(at.title) == ["Drill-down"]
    assert "There is no run with id 999." in texts(at.error)
    assert not [s for s in at.selectbox if s.key == "dd_run"]  # it stays: no other run


def test_failed_run_shows_its_error(app_store, sales_db):
    import sqlite3

    app_store.add_data_source("src", sqlite_url(sales_db), "setup")
    kpi = app_store.create_kpi(clean_kpi_spec(), "setup")
    connection = sqlite3.connect(sales_db)
    connection.execute("DROP TABLE sales")
    connection.commit()
    connection.close()
    run = app_store.execute(kpi.id, actor="setup")
    at = open_app("drilldown", query={"execution": run.id})
    no_exception(at)
    assert any("sales" in e for e in texts(at.error))
    assert not at.get("download_button")


def test_queued_run_waits_for_the_worker(demo_store):
    orders = kpi_named(demo_store, "Orders")
    run = demo_store.submit(orders.id, actor="setup")
    at = open_app("drilldown", query={"execution": run.id})
    no_exception(at)
    assert any("Queued" in i and "refreshes by itself" in i for i in texts(at.info))


def grid_state(sort: list[tuple[str, str]] = (), filters: dict | None = None) -> dict:
    """What the grid sends back after a click on a header or a filter: its state."""
    return {
        "gridState": {
            "sort": {"sortModel": [{"colId": c, "sort": d} for c, d in sort]},
            "filter": {"filterModel": filters or {}},
        }
    }


def test_the_grid_sort_and_filter_apply_to_every_row(demo_store, detail_run):
    at = open_app("drilldown", query={"execution": detail_run.id})
    key = f"dd_grid_{detail_run.id}"
    at.session_state[key] = grid_state(
        [("line_amount", "desc")],
        {"category": {"filterType": "text", "type": "equals", "filter": "electronics"}},
    )
    at.run()
    no_exception(at)
    view = demo_store.result_page(
        detail_run.id,
        1,
        50,
        sort=[("line_amount", "desc")],
        filters=[{"column": "category", "op": "equals", "value": "electronics"}],
    )
    assert 0 < view.total < detail_run.row_count
    caption = (
        f"Rows 1–50 of {view.total:,} (filtered from {detail_run.row_count:,}) "
        "· sorted by line_amount desc"
    )
    assert caption in texts(at.caption)
    assert at.number_input(key=f"dd_page_{detail_run.id}").max == view.total_pages
    amount = [c.name for c in view.columns].index("line_amount")
    amounts = [row[amount] for row in view.rows]
    assert amounts == sorted(amounts, reverse=True)
    # A new sort or filter starts again on page 1.
    at.number_input(key=f"dd_page_{detail_run.id}").set_value(3).run()
    assert f"Rows 101–{min(150, view.total):,} of {view.total:,}" in " ".join(texts(at.caption))
    at.session_state[key] = grid_state([("line_amount", "asc")])
    at.run()
    assert at.number_input(key=f"dd_page_{detail_run.id}").value == 1
    assert f"Rows 1–50 of {detail_run.row_count:,} · sorted by line_amount asc" in texts(at.caption)


def test_excel_and_parquet_downloads_hold_every_row_typed(demo_store, detail_run):
    import openpyxl
    import pyarrow.parquet as pq

    at = open_app("drilldown", query={"execution": detail_run.id})
    stored = demo_store.result_page(detail_run.id, 1, 1000).rows
    status, headers, data, _chunks = fetch(None, export_href(at, "xlsx"))
    assert status == 200 and "spreadsheetml" in headers["content-type"]
    assert f"run-{detail_run.id}.xlsx" in headers["content-disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == [c.name for c in detail_run.columns]
    assert len(rows) - 1 == detail_run.row_count
    assert [r[0] for r in rows[1:1001]] == [r[0] for r in stored]
    status, headers, data, _chunks = fetch(None, export_href(at, "parquet"))
    assert status == 200 and headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == detail_run.row_count
    assert table.column("line_id").to_pylist()[:1000] == [r[0] for r in stored]
    formats = [e.details["format"] for e in demo_store.audit_log(action="EXPORT")]
    assert sorted(formats) == ["parquet", "xlsx"]


def test_an_unknown_run_in_the_link_says_so_and_stays(demo_store, detail_run):
    at = open_app("drilldown", query={"execution": 99999})
    no_exception(at)
    assert any("There is no run with id 99999" in e for e in texts(at.error))
    assert at.query_params["execution"] in ("99999", ["99999"])
    assert not [s for s in at.selectbox if s.key == "dd_run"]  # no other run opened instead
