# ruff: noqa: F811 - pytest fixtures imported from test_browser.py are used as parameters
"""End-to-end: the drill-down grid sorts and filters a 100,951-row run over every row.

The real server in headless Chromium, on the demo's "Order Line Detail" run for 2024-2025.
The grid's own header click and column filter drive the store; the caption, the page
count, the rows on two pages and both downloads (this page, and the whole filtered and
sorted result streamed through a link) are checked against the same query run directly
on the demo warehouse with sqlite3. Skipped without Chromium, like test_browser.py.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browser import (  # noqa: F401 - fixtures shared with the main journey
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    TIMEOUT_MS,
    browser,
    grid,
    grid_cell,
    playwright_api,
    running_app,
    sign_in,
)

from kpi_store import KPIStore

pytestmark = pytest.mark.browser

WIDE = {"start_date": "2024-01-01", "end_date": "2025-12-31", "region": "All"}
PARAMS = {**WIDE, "min_quantity": 1, "min_amount": 0.0, "completed_only": False}


@pytest.fixture(scope="module")
def detail(playwright_api: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with the demo and its 100,951-row run; the warehouse and the KPI's SQL."""
    folder = tmp_path_factory.mktemp("drilldown")
    store = KPIStore(f"sqlite:///{folder / 'store.db'}")
    store.install_demo(actor="demo")
    [kpi] = [k for k in store.list_kpis() if k.name == "Order Line Detail"]
    run = store.execute(kpi.id, WIDE, actor="demo")
    warehouse = store.demo_warehouse_path()
    store.close()
    assert run.status == "success" and run.row_count == 100_951
    return {"store": folder / "store.db", "run": run, "sql": kpi.sql, "warehouse": warehouse}


def expected(detail: dict[str, Any], where: str, order: str) -> list[tuple[Any, ...]]:
    """The KPI's own query on the warehouse, filtered and sorted as the grid asked."""
    connection = sqlite3.connect(f"file:{detail['warehouse']}?mode=ro", uri=True)
    try:
        query = f"SELECT * FROM ({detail['sql']}) WHERE {where} ORDER BY {order}, line_id"
        return connection.execute(query, PARAMS).fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(detail: dict[str, Any]) -> Iterator[str]:
    with running_app(detail["store"], {"KPI_EMBEDDED_WORKER": "0"}) as url:
        yield url


@pytest.fixture(scope="module")
def page(browser: Any, playwright_api: Any, server: str, detail: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(f"{server}/drilldown?execution={detail['run'].id}")
    sign_in(tab, "Dana Drill")
    playwright_api.expect(grid_cell(tab, "line_id")).to_have_text("1")
    yield tab
    context.close()


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def download(page: Any, locator: Any) -> list[list[str]]:
    with page.expect_download() as started:
        locator.click()
    return csv_rows(Path(started.value.path()).read_bytes())


def cell(value: Any) -> str:
    return "" if value is None else str(value)


def test_sort_and_filter_in_the_grid_apply_to_every_row(
    page: Any, playwright_api: Any, detail: dict[str, Any]
) -> None:
    expect = playwright_api.expect
    header = grid(page).locator('.ag-header-cell[col-id="order_id"] .ag-header-cell-label')
    header.click()
    expect(page.get_by_text(re.compile("sorted by order_id asc"))).to_be_visible()
    header.click()
    expect(page.get_by_text(re.compile("sorted by order_id desc"))).to_be_visible()
    rows = expected(detail, "1", "order_id DESC")
    expect(grid_cell(page, "line_id")).to_have_text(str(rows[0][0]))

    grid(page).locator('.ag-header-cell[col-id="region"] .ag-header-cell-filter-button').click()
    grid(page).locator(".ag-filter-body input").first.fill("west")
    west = expected(detail, "lower(region) LIKE '%west%'", "order_id DESC")
    assert 0 < len(west) < detail["run"].row_count
    caption = f"Rows 1–50 of {len(west):,} (filtered from 100,951) · sorted by order_id desc"
    expect(page.get_by_text(caption, exact=True)).to_be_visible()
    expect(page.get_by_text(f"Page (of {-(-len(west) // 50):,})")).to_be_visible()
    for index in range(5):
        expect(grid_cell(page, "line_id", index)).to_have_text(str(west[index][0]))

    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text(re.compile(rf"Rows 51–100 of {len(west):,}"))).to_be_visible()
    expect(grid_cell(page, "line_id")).to_have_text(str(west[50][0]))
    detail["west"] = west


def test_both_downloads_follow_the_filter_and_sort(
    page: Any, playwright_api: Any, detail: dict[str, Any]
) -> None:
    west = detail.get("west")
    if west is None:
        pytest.skip("needs test_sort_and_filter_in_the_grid_apply_to_every_row")
    header, *body = download(page, page.get_by_role("button", name="Download this page (50 rows)"))
    assert header[0] == "line_id"
    assert [row[0] for row in body] == [str(row[0]) for row in west[50:100]]
    label = f"Download CSV (these {len(west):,} rows, filtered, sorted)"
    header, *body = download(page, page.get_by_role("link", name=re.compile(re.escape(label))))
    assert len(body) == len(west)
    assert [row[0] for row in body] == [str(row[0]) for row in west]
    assert body[-1] == [cell(v) for v in west[-1]]
    everything = page.get_by_role("link", name=re.compile(r"Download CSV \(all 100,951 rows\)"))
    playwright_api.expect(everything).to_be_visible()
