"""End-to-end: the real server in headless Chromium, doing what a new user does.

Starts ``streamlit run dashboard.py`` once for the module, on a free port over a fresh store
with the demo installed (and the embedded worker on), and drives Debian's Chromium with
Playwright through one browser tab. The journey is split into steps, one test each, run in
file order: a deep link as the very first visit; the overview cards and "Run all"; a KPI
created through the form; run now (twice); its rows in the AgGrid iframe, page 2; the
whole result as CSV, compared with the store; the run and the creation in the history;
the audit timeline; a CSV upload. A step that needs an earlier one's result is skipped,
naming that step, when the earlier one failed, so each failure shows where it happened.

The tests find things as a user does, by visible labels and texts, and wait for what they
expect to see (Playwright's auto-waiting locators and ``expect``), never for fixed times.

Screenshots of each page go to a temporary folder, or, with ``KPI_SCREENSHOTS=DIR``
(relative to the repository, e.g. ``KPI_SCREENSHOTS=docs/screenshots``), to ``DIR``.

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kpi_store import KPIStore

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS_ENV = "KPI_SCREENSHOTS"
CHROMIUM = os.environ.get("KPI_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000
RUN_ALL_TIMEOUT_MS = 120_000
USER = "Erin Example"
RECORDED = f"{USER} (unverified)"  # sign-in is off: the typed name, marked as not checked
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
WHOLE_CSV = re.compile(r"Download CSV \(all [\d,]+ rows\)")


def _unavailable(reason: str) -> None:
    if os.environ.get("KPI_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required (KPI_TEST_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Poll the health endpoint until it answers (the server's start-up, not a fixed wait)."""
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
        time.sleep(0.1)
    raise RuntimeError("streamlit did not become healthy in time")


# -- fixtures (one server, one browser, one tab for the whole module) ---------------------


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    """Playwright's sync API module, or skip/fail before any server is started."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("playwright is not installed")
    return sync_api


@pytest.fixture(scope="module")
def store_file(playwright_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    store = KPIStore(f"sqlite:///{folder / 'store.db'}")
    store.install_demo(actor="demo")
    store.close()
    return folder / "store.db"


@pytest.fixture(scope="module")
def store(store_file: Path) -> Iterator[KPIStore]:
    """The test's own handle on the server's store (to compare what the pages show)."""
    handle = KPIStore(f"sqlite:///{store_file}")
    yield handle
    handle.close()


@contextmanager
def running_app(
    store_file: Path, env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[str]:
    """``streamlit run dashboard.py`` over ``store_file`` on a free port (or ``port``), its
    log beside the store; yields the URL. ``env`` adds to (a value of None removes from)
    this process's environment. The log must hold no traceback when it stops."""
    port = port or _free_port()
    environment = {**os.environ, "KPI_STORE_URL": f"sqlite:///{store_file}"}
    environment.pop("KPI_EMBEDDED_WORKER", None)  # by default the worker runs inside
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    command = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port"]
    command += [str(port), "--server.headless", "true", "--server.address", "127.0.0.1"]
    log_path = store_file.parent / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
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
    text = log_path.read_text()
    assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def server(store_file: Path) -> Iterator[str]:
    """The real app on a free port; its log goes to a file beside the store."""
    with running_app(store_file) as url:
        yield url


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def tab(browser: Any, playwright_api: Any) -> Iterator[Any]:
    """One tab for the whole journey (a step continues where the previous one ended)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$KPI_SCREENSHOTS`` when set, else a temporary folder."""
    chosen = os.environ.get(SCREENSHOTS_ENV, "").strip()
    folder = (ROOT / chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Journey:
    """What the steps found out, for the steps after them."""

    kpi_id: int | None = None
    run_id: int | None = None
    on_drilldown: bool = False
    exported: bool = False


@pytest.fixture(scope="module")
def journey() -> Journey:
    return Journey()


def needs(value: Any, step: str) -> Any:
    if not value:
        pytest.skip(f"needs the earlier step {step!r} to pass (run the whole module)")
    return value


# -- helpers --------------------------------------------------------------------------------


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def main(page: Any) -> Any:
    return page.locator('[data-testid="stMain"]')


def see(page: Any, text: str | re.Pattern[str], timeout: float = TIMEOUT_MS) -> None:
    """Wait until ``text`` is visible in the main area."""
    expect(main(page).get_by_text(text).filter(visible=True).first).to_be_visible(timeout=timeout)


def idle(page: Any) -> None:
    """Wait until the app has no script run going (no "Running..." status)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !!document.querySelector('[data-testid=\"stApp\"]')"
    )


def field(page: Any, label: str, nth: int = 0) -> Any:
    return main(page).get_by_label(label, exact=True).nth(nth)


def fill(page: Any, label: str, value: str, nth: int = 0, shown: str | None = None) -> None:
    """Type into a field; it commits when the focus moves on (as when a person tabs away).

    ``shown``: how the field displays the value once committed (numbers get decimals)."""
    target = field(page, label, nth)
    target.fill(value)
    target.press("Tab")
    expect(target).to_have_value(shown or value)


def choose(page: Any, label: str, option: str, nth: int = 0, where: Any = None) -> None:
    box = (where or main(page)).get_by_label(label, exact=True).nth(nth)
    box.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    expect(box).to_have_value(option)


def selectbox_of(box: Any) -> Any:
    """The whole select widget around its input (it shows the chosen option's text)."""
    return box.locator(
        'xpath=ancestor::*[@data-testid="stSelectbox" or @data-testid="stMultiSelect"][1]'
    )


def button(page: Any, name: str | re.Pattern[str]) -> Any:
    """A visible button whose name contains ``name`` (a text: any case; or a pattern)."""
    return main(page).get_by_role("button", name=name).filter(visible=True).first


def sign_in(page: Any, name: str = USER) -> None:
    box = page.locator('[data-testid="stSidebar"]').get_by_label("Your name", exact=True)
    box.fill(name)
    box.press("Enter")
    expect(page.get_by_text("Enter your name to make changes")).to_have_count(0)


def visit(page: Any, url: str) -> None:
    """A fresh load of ``url`` (a new app session), signed in."""
    page.goto(url)
    sign_in(page)


def in_app(page: Any, server: str) -> None:
    if not page.url.startswith(server):
        visit(page, server)


def go(page: Any, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=label).click()
    expect(main(page).get_by_role("heading", name=label).first).to_be_visible()


def screenshot(page: Any, folder: Path, name: str) -> None:
    """The whole page (the main area scrolls inside the window, so grow the window)."""
    idle(page)
    page.mouse.move(1430, 990)  # no hover tooltips in the picture
    height = page.evaluate(
        "() => (document.querySelector('[data-testid=\"stMain\"]') || {}).scrollHeight || 1000"
    )
    page.set_viewport_size({"width": 1440, "height": max(1000, min(int(height) + 40, 4000))})
    page.evaluate("() => document.fonts.ready.then(() => true)")
    idle(page)
    page.screenshot(path=str(folder / f"{name}.png"))
    page.set_viewport_size({"width": 1440, "height": 1000})


def grid(page: Any) -> Any:
    """The AgGrid (it lives in an iframe whose address names the component)."""
    return page.frame_locator('iframe[src*="aggrid" i]').last


def grid_cell(page: Any, column: str, row: int = 0) -> Any:
    return grid(page).locator(f'.ag-row[row-index="{row}"] [col-id="{column}"]').first


def table_cell(page: Any, text: str) -> Any:
    """A cell of a table (``st.dataframe`` keeps an accessible copy of its cells)."""
    return (
        main(page)
        .locator('[data-testid="stDataFrame"] [role="gridcell"]')
        .filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))
        .first
    )


# -- the journey ------------------------------------------------------------------------


def test_a_deep_link_is_the_first_visit_of_a_fresh_server(server, tab):
    """Before anyone opened "/", a shared link still opens inside the full app."""
    tab.goto(f"{server}/history?kpi=1")
    see(tab, "No successful runs of this KPI yet.")  # the Trend tab, first
    expect(main(tab).get_by_role("heading", name="History")).to_have_count(1)
    expect(main(tab).get_by_label("KPI", exact=True).first).to_have_value("Revenue")
    sidebar = tab.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_label("Your name", exact=True)).to_have_count(1)
    expect(tab.locator('[data-testid="stSidebarNav"]').get_by_text("Data sources")).to_be_visible()


def test_overview_cards_and_run_all(server, tab, store, shots):
    visit(tab, server)
    see(tab, "Run all (8)")
    for name in ("Revenue", "Gross Margin", "Return Rate", "Order Line Detail"):
        expect(main(tab).get_by_text(name, exact=True).first).to_be_visible()
    button(tab, "Run all (8)").click()
    see(tab, "Run all finished: 8 of 8 succeeded", timeout=RUN_ALL_TIMEOUT_MS)
    see(tab, "$5,506,100.50")
    see(tab, "Off target")
    assert {r.status for r in store.executions(limit=20)} == {"success"}
    screenshot(tab, shots, "overview")


def test_the_typed_name_is_kept_across_a_reload(server, tab):
    in_app(tab, server)
    tab.reload()
    box = tab.locator('[data-testid="stSidebar"]').get_by_label("Your name", exact=True)
    expect(box).to_have_value(USER)
    expect(tab.get_by_text("Enter your name to make changes")).to_have_count(0)


def test_create_a_kpi_through_the_form(server, tab, store, journey, shots):
    in_app(tab, server)
    go(tab, "KPIs")
    see(tab, "New KPI")
    fill(tab, "Name", NEW_KPI)
    fill(tab, "Owner", "Sales Ops")
    fill(tab, "Short description", "Order lines of at least an amount, in one region.")
    fill(tab, "Tags (comma-separated)", "sales, drill-down")
    fill(tab, "SQL", NEW_SQL)
    button(tab, "Add parameter").click()
    fill(tab, "Name", "region", nth=1)  # the first parameter row's name (nth 0: the KPI's)
    fill(tab, "Default", "North")
    fill(tab, "Choices", "North, South, East, West, Central")
    fill(tab, "Label shown to users", "Region")
    button(tab, "Add parameter").click()
    fill(tab, "Name", "min_amount", nth=2)
    choose(tab, "Type", "Number", nth=1)
    fill(tab, "Default", "100", nth=1)
    fill(tab, "Label shown to users", "Minimum line amount ($)", nth=1)
    fill(tab, "Value column", "line_amount")
    fill(tab, "Unit", "$")
    fill(tab, "Target", "2000000", shown="2000000.00")
    button(tab, "Test query").click()
    see(tab, "The query works: first 20 row(s) below.")
    button(tab, "Create KPI").click()
    see(tab, f"KPI '{NEW_KPI}' created (version 1).")

    [kpi] = [k for k in store.list_kpis() if k.name == NEW_KPI]
    assert kpi.created_by == RECORDED
    assert kpi.owner == "Sales Ops" and kpi.tags == ["sales", "drill-down"]
    assert [(p.name, p.type, p.label) for p in kpi.parameters] == [
        ("region", "str", "Region"),
        ("min_amount", "float", "Minimum line amount ($)"),
    ]
    assert kpi.parameters[0].choices == ["North", "South", "East", "West", "Central"]
    assert (kpi.value_column, kpi.unit, kpi.target) == ("line_amount", "$", 2_000_000)
    expect(tab).to_have_url(re.compile(rf"kpi={kpi.id}\b"))
    journey.kpi_id = kpi.id
    screenshot(tab, shots, "kpis")


def test_run_it_now_with_two_parameter_values(tab, store, journey, shots):
    needs(journey.kpi_id, "create a KPI")
    main(tab).get_by_role("link", name="Run", exact=True).click()
    runs = main(tab).get_by_label("KPIs to run", exact=True)
    expect(selectbox_of(runs)).to_contain_text(NEW_KPI)  # a chosen KPI is a tag in the box
    link = main(tab).get_by_role("link", name=re.compile(r"Open run #\d+ in the drill-down"))
    button(tab, "Run now").click()
    see(tab, "region=North, min_amount=100.0")
    expect(link).to_have_count(1)
    first_id = int(re.search(r"#(\d+)", link.inner_text()).group(1))
    choose(tab, "Region", "East")
    button(tab, "Run now").click()
    # The first run's link shows until the rerun replaces it: wait for the new run's.
    expect(link).not_to_have_text(re.compile(rf"#{first_id}\b"), timeout=30_000)
    see(tab, "region=East, min_amount=100.0")
    idle(tab)

    expect(link).to_have_count(1)
    run_id = int(re.search(r"#(\d+)", link.inner_text()).group(1))
    assert f"execution={run_id}" in (link.get_attribute("href") or "")
    run = store.execution(run_id)
    assert run.kpi_id == journey.kpi_id
    assert run.status == "success" and run.row_count > 100 and run.requested_by == RECORDED
    assert run.params == {"region": "East", "min_amount": 100.0}
    journey.run_id = run_id
    screenshot(tab, shots, "run")


def test_drilldown_shows_the_first_page_in_the_grid(tab, store, journey):
    run_id = needs(journey.run_id, "run it now")
    run = store.execution(run_id)
    first_page = store.result_page(run_id, 1, 50).rows
    main(tab).get_by_role("link", name=f"Open run #{run_id} in the drill-down").click()
    expect(tab).to_have_url(re.compile(rf"execution={run_id}\b"))
    see(tab, f"Rows 1–50 of {run.row_count:,}")
    expect(grid_cell(tab, "line_id")).to_have_text(str(first_page[0][0]))
    expect(grid_cell(tab, "line_amount", row=9)).to_be_attached()  # ten rows and more
    journey.on_drilldown = True


def test_drilldown_next_page(tab, store, journey, shots):
    needs(journey.on_drilldown, "drill-down first page")
    run_id = journey.run_id
    run = store.execution(run_id)
    second_page = store.result_page(run_id, 2, 50).rows
    button(tab, "Next").click()
    see(tab, f"Rows 51–100 of {run.row_count:,}")
    expect(grid_cell(tab, "line_id")).to_have_text(str(second_page[0][0]))
    screenshot(tab, shots, "drilldown")


def test_download_every_row_as_csv(server, tab, store, journey, tmp_path):
    run_id = needs(journey.run_id, "run it now")
    run = store.execution(run_id)
    visit(tab, f"{server}/drilldown?execution={run_id}")  # a shared link, opened afresh
    see(tab, f"Rows 1–50 of {run.row_count:,}")
    download = main(tab).locator("button, a").filter(has_text=WHOLE_CSV).first
    expect(download).to_have_text(re.compile(rf"all {run.row_count:,} rows"))
    expect(download).to_be_enabled()
    with tab.expect_download(timeout=60_000) as download_info:
        download.click()
    target = tmp_path / "all.csv"
    download_info.value.save_as(target)

    downloaded = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
    assert downloaded[0] == [c.name for c in run.columns]
    assert len(downloaded) - 1 == run.row_count
    stored = []
    for number in range(1, store.result_page(run_id, 1, 1000).total_pages + 1):
        stored += store.result_page(run_id, number, 1000).rows
    assert [row[0] for row in downloaded[1:]] == [str(row[0]) for row in stored]
    assert [float(row[4]) for row in downloaded[1:]] == [float(row[4]) for row in stored]
    [export] = store.audit_log(action="EXPORT", limit=1)
    assert export.actor == RECORDED
    journey.exported = True


def test_history_shows_the_run_and_the_creation(server, tab, journey, shots):
    run_id = needs(journey.run_id, "run it now")
    kpi_id = journey.kpi_id
    in_app(tab, server)
    if f"execution={run_id}" not in tab.url:
        visit(tab, f"{server}/drilldown?execution={run_id}")
    main(tab).get_by_role("link", name="All runs of this KPI").click()
    expect(tab).to_have_url(re.compile(rf"kpi={kpi_id}\b"))
    see(tab, "Parameter sets")  # the Trend tab comes first
    main(tab).get_by_role("tab", name=re.compile(r"Runs \(")).click()
    see(tab, f"Open run #{run_id} in the drill-down")
    expect(table_cell(tab, str(run_id))).to_be_attached()
    screenshot(tab, shots, "history")
    main(tab).get_by_role("tab", name=re.compile("Versions")).click()
    see(tab, f"Created by {USER}")


def test_audit_shows_creation_run_and_export(server, tab, journey, shots):
    kpi_id = needs(journey.kpi_id, "create a KPI")
    needs(journey.exported, "download every row as CSV")
    in_app(tab, server)
    go(tab, "Audit")
    see(tab, re.compile(r"Audit chain intact"))
    choose(tab, "KPI", f"{NEW_KPI} (#{kpi_id})")
    for text in ("CREATE", "EXECUTE", "EXPORT", RECORDED):
        expect(table_cell(tab, text)).to_be_attached()
    screenshot(tab, shots, "audit")


def test_upload_a_csv_as_a_new_table(server, tab, store, tmp_path, shots):
    in_app(tab, server)
    go(tab, "Data sources")
    main(tab).get_by_role("tab", name=re.compile("Upload a CSV")).click()
    upload = tmp_path / "targets.csv"
    upload.write_text("region,target\nNorth,1200000\nSouth,950000\n", encoding="utf-8")
    main(tab).locator("input[type=file]").set_input_files(str(upload))
    expect(field(tab, "New table name")).to_have_value("targets")
    button(tab, re.compile(r"\bUpload$")).click()
    see(tab, "Uploaded 2 rows into table 'targets' of 'demo'.")
    _columns, rows = store.preview_query(
        "demo", "SELECT region, target FROM targets", actor="tester"
    )
    assert rows == [["North", 1200000], ["South", 950000]]
    screenshot(tab, shots, "data_sources")
