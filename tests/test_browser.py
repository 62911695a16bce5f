"""End-to-end: the real server in headless Chromium, doing what a new user does.

Starts ``streamlit run dashboard.py`` on a free port over a fresh store with the demo
installed (and the embedded worker on), then drives Debian's Chromium with Playwright:
overview cards and "Run all", a KPI created through the form, run, its rows in the
AgGrid iframe, page 2, the full CSV download compared with the store, and the run and
the creation in the history and audit pages. A screenshot of each page is saved under
``docs/screenshots/``.

Without ``/usr/bin/chromium`` (or Playwright) the module is skipped, unless
``KPI_TEST_REQUIRE_BROWSER=1`` (as in CI), which makes that a failure.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpi_store import KPIStore

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("KPI_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USER = "Erin Example"
NEW_KPI = "Big Lines by Region"
NEW_SQL = """SELECT ol.line_id AS line_id,
       o.order_date AS order_date,
       r.name AS region,
       ol.quantity AS quantity,
       ol.line_amount AS line_amount
FROM order_lines ol
JOIN orders o ON o.order_id = ol.order_id
JOIN customers c ON c.customer_id = o.customer_id
JOIN regions r ON r.region_id = c.region_id
WHERE r.name = :region AND ol.line_amount >= :min_amount
ORDER BY ol.line_id"""


def _unavailable(reason: str) -> None:
    if os.environ.get("KPI_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required (KPI_TEST_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("streamlit did not become healthy in time")


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    store = KPIStore(f"sqlite:///{folder / 'store.db'}")
    store.install_demo(actor="demo")
    store.close()
    return folder / "store.db"


@pytest.fixture(scope="module")
def server(store_file: Path) -> Iterator[str]:
    """The real app on a free port; its log goes to a file beside the store."""
    port = _free_port()
    env = {**os.environ, "KPI_STORE_URL": f"sqlite:///{store_file}"}
    env.pop("KPI_EMBEDDED_WORKER", None)  # the worker runs inside the server
    log = (store_file.parent / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "dashboard.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        text = (store_file.parent / "server.log").read_text()
        assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


# -- helpers ------------------------------------------------------------------------------


def main(page):
    return page.locator('[data-testid="stMain"]')


def wait_text(page, text: str, timeout: float = 30_000) -> None:
    main(page).get_by_text(text, exact=False).filter(visible=True).first.wait_for(timeout=timeout)


def settle(page, seconds: float = 0.6) -> None:
    """Let a rerun start and finish (Streamlit shows a status widget while running)."""
    time.sleep(seconds)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000
    )


def fill(page, key: str, value: str, selector: str = "input") -> None:
    field = page.locator(f".st-key-{key} {selector}").first
    field.fill(value)
    field.press("Tab" if selector == "textarea" else "Enter")
    settle(page, 0.3)


def choose(page, key: str, option: str) -> None:
    page.locator(f".st-key-{key} input").first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    settle(page, 0.3)


def click(page, key: str) -> None:
    page.locator(f".st-key-{key} button").first.click()
    settle(page)


def sign_in(page, name: str = USER) -> None:
    fill(page, "actor", name)


def go(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=label).click()
    settle(page, 1.0)


def screenshot(page, name: str) -> None:
    """The whole page (the main area scrolls inside the window, so grow the window)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(1430, 990)  # no hover tooltips in the picture
    height = page.evaluate(
        "() => (document.querySelector('[data-testid=\"stMain\"]') || {}).scrollHeight || 1000"
    )
    page.set_viewport_size({"width": 1440, "height": max(1000, min(int(height) + 40, 4000))})
    time.sleep(1.2)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1440, "height": 1000})


def grid_frame(page, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frames = [f for f in page.frames if "aggrid" in f.url.lower()]
        for frame in frames:
            try:
                if frame.locator(".ag-row").count():
                    return frame
            except Exception:  # a frame replaced while we looked
                continue
        time.sleep(0.3)
    raise AssertionError("no AgGrid rows appeared")


def first_grid_cell(page, column: str) -> str:
    frame = grid_frame(page)
    cell = frame.locator(f'.ag-row[row-index="0"] [col-id="{column}"]').first
    cell.wait_for()
    return cell.inner_text().strip()


def grid_cells(page, expect: list[str] | None = None, timeout_s: float = 20) -> list[str]:
    """The visible cells of the page's tables (``st.dataframe`` keeps an accessible copy);
    waits until every string in ``expect`` is among them."""
    deadline = time.monotonic() + timeout_s
    while True:
        cells = main(page).locator('[data-testid="stDataFrame"] [role="gridcell"]')
        texts = [cells.nth(i).inner_text() for i in range(cells.count())]
        if all(e in texts for e in expect or []) or time.monotonic() > deadline:
            return texts
        time.sleep(0.4)


# -- tests --------------------------------------------------------------------------------


def test_a_deep_link_is_the_first_visit_of_a_fresh_server(server, page):
    """Before anyone opened "/", a shared link still opens inside the full app."""
    page.goto(f"{server}/history?kpi=1")
    wait_text(page, "This KPI has not been run yet.")
    assert page.locator(".st-key-hi_kpi input").input_value() == "Revenue"
    assert page.locator(".st-key-actor input").count() == 1  # the sidebar identity box
    assert page.locator('[data-testid="stSidebarNav"]').get_by_text("Data sources").count()
    assert main(page).get_by_role("heading", name="History").count() == 1


def test_what_a_new_user_does(server, page, store_file, tmp_path):
    store = KPIStore(f"sqlite:///{store_file}")
    try:
        _journey(server, page, store, tmp_path)
    finally:
        store.close()


def _journey(server, page, store, tmp_path):
    # 1. The overview shows the demo KPI cards; "Run all" computes them in the background.
    page.goto(server)
    wait_text(page, "Run all (8)")
    for name in ("Revenue", "Gross Margin", "Return Rate", "Order Line Detail"):
        assert main(page).get_by_text(name, exact=True).count() >= 1
    sign_in(page)
    click(page, "ov_run_all")
    wait_text(page, "Run all finished: 8 of 8 succeeded", timeout=90_000)
    wait_text(page, "$5,506,100.50")
    assert main(page).get_by_text("Off target").count() >= 1
    screenshot(page, "overview")

    # 2. Create a KPI through the form, with two typed parameters and a test query.
    go(page, "KPIs")
    wait_text(page, "New KPI")
    fill(page, "kf_new_0_name", NEW_KPI)
    fill(page, "kf_new_0_owner", "Sales Ops")
    fill(page, "kf_new_0_description", "Order lines of at least an amount, in one region.")
    fill(page, "kf_new_0_tags", "sales, drill-down")
    fill(page, "kf_new_0_sql", NEW_SQL, selector="textarea")
    click(page, "kf_new_0_add")
    fill(page, "kf_new_0_p0_name", "region")
    fill(page, "kf_new_0_p0_default", "North")
    fill(page, "kf_new_0_p0_choices", "North, South, East, West, Central")
    fill(page, "kf_new_0_p0_label", "Region")
    click(page, "kf_new_0_add")
    fill(page, "kf_new_0_p1_name", "min_amount")
    choose(page, "kf_new_0_p1_type", "Number")
    fill(page, "kf_new_0_p1_default", "100")
    fill(page, "kf_new_0_p1_label", "Minimum line amount ($)")
    fill(page, "kf_new_0_value_column", "line_amount")
    fill(page, "kf_new_0_unit", "$")
    fill(page, "kf_new_0_target", "2000000")
    click(page, "kf_new_0_test")
    wait_text(page, "The query works: first 20 row(s) below.")
    click(page, "kf_new_0_save")
    wait_text(page, f"KPI '{NEW_KPI}' created (version 1).")
    [kpi] = [k for k in store.list_kpis() if k.name == NEW_KPI]
    assert kpi.created_by == USER
    assert [(p.name, p.type) for p in kpi.parameters] == [
        ("region", "str"),
        ("min_amount", "float"),
    ]
    assert f"kpi={kpi.id}" in page.url
    screenshot(page, "kpis")

    # 3. Run it now: for North (the default), then for East.
    main(page).get_by_role("link", name="Run", exact=True).click()
    settle(page, 1.0)
    assert page.locator(".st-key-rn_kpis").get_by_text(NEW_KPI).count() == 1
    click(page, "rn_now")
    wait_text(page, "region=North, min_amount=100.0")
    choose(page, "rn_param_region_str", "East")
    click(page, "rn_now")
    wait_text(page, "region=East, min_amount=100.0")
    link = main(page).get_by_role("link", name=re.compile(r"Open run #\d+ in the drill-down"))
    run_id = int(re.search(r"#(\d+)", link.inner_text()).group(1))
    run = store.execution(run_id)
    assert run.status == "success" and run.row_count > 100 and run.requested_by == USER
    assert run.params == {"region": "East", "min_amount": 100.0}
    screenshot(page, "run")

    # 4. Its drill-down: rows in the AgGrid iframe, page 2, the full CSV download.
    link.click()
    settle(page, 1.0)
    assert f"execution={run_id}" in page.url
    first_page = store.result_page(run_id, 1, 50).rows
    second_page = store.result_page(run_id, 2, 50).rows
    assert first_grid_cell(page, "line_id") == str(first_page[0][0])
    assert grid_frame(page).locator(".ag-row").count() >= 10
    wait_text(page, f"Rows 1–50 of {run.row_count:,}")
    click(page, f"dd_next_{run_id}")
    wait_text(page, f"Rows 51–100 of {run.row_count:,}")
    deadline = time.monotonic() + 30
    while first_grid_cell(page, "line_id") != str(second_page[0][0]):
        assert time.monotonic() < deadline, "page 2 did not reach the grid"
        time.sleep(0.3)
    screenshot(page, "drilldown")
    with page.expect_download(timeout=60_000) as download_info:
        main(page).get_by_role(
            "button", name=f"Download CSV (all {run.row_count:,} rows)"
        ).first.click()
    target = tmp_path / "all.csv"
    download_info.value.save_as(target)
    downloaded = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert downloaded[0] == [c.name for c in run.columns]
    assert len(downloaded) - 1 == run.row_count
    stored = []
    for number in range(1, store.result_page(run_id, 1, 1000).total_pages + 1):
        stored += store.result_page(run_id, number, 1000).rows
    assert [row[0] for row in downloaded[1:]] == [str(row[0]) for row in stored]
    assert [float(row[4]) for row in downloaded[1:]] == [float(row[4]) for row in stored]
    assert store.audit_log(action="EXPORT", limit=1)[0].actor == USER

    # 5. History: the run in the runs tab, the creation in the versions tab.
    main(page).get_by_role("link", name="All runs of this KPI").click()
    settle(page, 1.0)
    assert f"kpi={kpi.id}" in page.url
    wait_text(page, f"Open run #{run_id} in the drill-down")
    assert str(run_id) in grid_cells(page, [str(run_id)])
    screenshot(page, "history")
    main(page).get_by_role("tab", name=re.compile("Versions")).click()
    wait_text(page, f"Created by {USER}")

    # 6. Audit: the creation and the run, by this user, for this KPI.
    go(page, "Audit")
    wait_text(page, "Audit chain intact")
    choose(page, "au_kpi", f"{NEW_KPI} (#{kpi.id})")
    settle(page)
    cells = grid_cells(page, ["CREATE", "EXECUTE", "EXPORT", USER])
    for action in ("CREATE", "EXECUTE", "EXPORT"):
        assert action in cells
    assert USER in cells
    screenshot(page, "audit")

    # 7. Data sources: a spreadsheet becomes a table of the demo warehouse.
    go(page, "Data sources")
    main(page).get_by_role("tab", name=re.compile("Upload a CSV")).click()
    upload = tmp_path / "targets.csv"
    upload.write_text("region,target\nNorth,1200000\nSouth,950000\n", encoding="utf-8")
    page.locator(".st-key-up_file input[type=file]").set_input_files(str(upload))
    settle(page, 1.0)
    click(page, "up_go")
    wait_text(page, "Uploaded 2 rows into table 'targets' of 'demo'.")
    columns, rows = store.preview_query("demo", "SELECT region, target FROM targets")
    assert rows == [["North", 1200000], ["South", 950000]]
    screenshot(page, "data_sources")
