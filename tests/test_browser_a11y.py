# ruff: noqa: F811 - pytest fixtures imported from test_browser.py are used as parameters
"""Accessibility in the real browser: axe-core on every page, the keyboard, a phone.

The real server in headless Chromium (as test_browser.py starts it), over a store with the
demo installed and a few runs: Revenue and Orders for 2024 and 2025 (so their cards draw
official sparklines) and for one region (an exploration), and "Order Line Detail" for one
month and region (so the drill-down has rows); a schedule and an alert rule on Revenue.
Each page is opened afresh, signed in with a typed name (the demo mode), and once it has
rendered (no script run going, its charts drawn, the grid's rows in) axe-core checks it:
the test fails on any violation of impact "critical" or "serious", printing each rule,
the nodes it failed on and why. No rule is turned off.

axe-core comes from the PyPI dev dependency ``axe-playwright-python``, which ships
``axe.min.js`` (``make install`` brings it); ``KPI_AXE_JS=/path/to/axe.min.js`` uses
another build instead (for example npm's ``axe-core/axe.min.js``). The script is put into
every frame of the page, the AgGrid component's same-origin iframe included, and
``axe.run`` starts in the top document with ``iframes: true``: axe then checks each frame
through its own copy and reports one result with frame-aware targets (``[iframe, node]``),
as axe's own Playwright integration does.

Also: a sidebar link shows a visible focus ring when reached with Tab; on a 390x844 phone
the sidebar starts collapsed and the drill-down grid starts within two screens of the
page's top. Skipped without Chromium, like test_browser.py.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browser import (  # noqa: F401 - fixtures shared with the main journey
    ROOT,
    TIMEOUT_MS,
    browser,
    expect,
    grid_cell,
    idle,
    playwright_api,
    running_app,
    sign_in,
)

from kpi_store import KPIStore

pytestmark = pytest.mark.browser

BLOCKING = ("critical", "serious")
# Rated "moderate" by axe, and failing all the same: headings that skip a level.
ALSO_FAILING = ("heading-order",)
PHONE = {"width": 390, "height": 844}
DETAIL = {"start_date": "2025-03-01", "end_date": "2025-03-31", "region": "North"}
AXE_ENV = "KPI_AXE_JS"
USER = "Ada Access"


@functools.cache
def axe_script() -> str:
    """axe-core's browser build: ``$KPI_AXE_JS``, else the one axe-playwright-python ships."""
    chosen = os.environ.get(AXE_ENV, "").strip()
    if chosen:
        return Path(chosen).read_text(encoding="utf-8")
    try:
        import axe_playwright_python
    except ImportError:
        pytest.fail("axe-core is missing: install requirements-dev.txt (axe-playwright-python)")
    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def runs(playwright_api: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A demo store with runs: 2024, 2025 and North of Revenue and of Orders, one of Order
    Line Detail; a schedule and an alert rule (with its evaluation) on Revenue."""
    folder = tmp_path_factory.mktemp("a11y")
    store = KPIStore(f"sqlite:///{folder / 'store.db'}")
    store.install_demo(actor="demo")
    kpis = {k.name: k for k in store.list_kpis()}
    revenue = kpis["Revenue"].id
    store.create_schedule(revenue, "0 7 * * 1-5", "demo", timezone="Europe/Berlin")
    rule = store.create_rule(
        revenue, "demo", name="Revenue above 0", condition="threshold", op=">", value=0
    )
    store.subscribe(rule.id, f"{USER} (unverified)")  # the inbox has the firing
    for name in ("Revenue", "Orders"):
        store.execute(kpis[name].id, {"region": "North"}, actor="demo")
        store.execute(kpis[name].id, {"start_date": "2024-01-01", "end_date": "2024-12-31"}, "demo")
        store.execute(kpis[name].id, {}, actor="demo")
    detail = store.execute(kpis["Order Line Detail"].id, DETAIL, actor="demo")
    store.close()
    assert detail.status == "success" and detail.row_count > 50
    return {"store": folder / "store.db", "kpi": kpis["Revenue"].id, "run": detail.id}


@pytest.fixture(scope="module")
def server(runs: dict[str, Any]) -> Iterator[str]:
    with running_app(runs["store"], {"KPI_EMBEDDED_WORKER": "0"}) as url:
        yield url


@pytest.fixture(scope="module")
def tab(browser: Any, playwright_api: Any, server: str) -> Iterator[Any]:
    """A desktop tab, signed in once (the name is kept in a cookie for later visits)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    page.goto(server)
    sign_in(page, USER)
    page.wait_for_function("() => document.cookie.includes('kpi_desk_name=')")
    yield page
    context.close()


def rendered(page: Any) -> None:
    """Wait until the page is drawn: no script run going, the page's heading shown, every
    chart drawn, every grid's rows in and no placeholder left."""
    page.locator('[data-testid="stMain"] h1').first.wait_for()
    idle(page)
    page.wait_for_function(
        """() => {
          const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')];
          const drawn = charts.every(c => c.querySelector('canvas, svg'));
          const skeleton = document.querySelector('[data-testid="stSkeleton"]');
          return drawn && !skeleton;
        }"""
    )
    for frame in page.frames:
        if "aggrid" in frame.url.lower():
            frame.locator(".ag-row").first.wait_for()
    idle(page)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page and in its frames."""
    script = axe_script()
    for frame in page.frames:
        if not frame.is_detached():
            frame.evaluate(script)
    return page.evaluate(
        """async () => (await axe.run(document, {
            iframes: true, resultTypes: ['violations'],
        })).violations"""
    )


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for rule in violations:
        nodes = rule["nodes"]
        lines.append(f"{rule['id']} ({rule['impact']}, {len(nodes)} nodes): {rule['help']}")
        for node in nodes[:8]:
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"    {node['target']}: {summary[:300]}")
        if len(nodes) > 8:
            lines.append(f"    … and {len(nodes) - 8} more")
    return "\n".join(lines)


PAGES = {
    "overview": "/",
    "kpis": "/kpis?kpi={kpi}",
    "run": "/run",
    "drilldown": "/drilldown?execution={run}",
    "history": "/history?kpi={kpi}",
    "audit": "/audit",
    "data_sources": "/data_sources",
    "people": "/people",
    "alerts": "/alerts",
    "inbox": "/inbox",
}


def failing(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in BLOCKING or v["id"] in ALSO_FAILING]


@pytest.mark.parametrize("name", list(PAGES))
def test_no_serious_axe_violations(tab: Any, server: str, runs: dict[str, Any], name: str) -> None:
    tab.goto(server + PAGES[name].format(**runs))
    name_box = tab.locator('[data-testid="stSidebar"]').get_by_label("Your name", exact=True)
    expect(name_box).to_have_value(USER)  # signed in (the demo mode's typed name)
    if name == "overview":  # the cards' sparklines, drawn, are part of what is checked
        tab.locator(
            '[class*="st-key-kpi_card_"] [data-testid="stVegaLiteChart"] svg'
        ).first.wait_for()
    if name == "drilldown":
        grid_cell(tab, "line_id").wait_for()
    rendered(tab)
    violations = axe_violations(tab)
    others = [v for v in violations if v not in failing(violations)]
    if others:
        print(f"\n{name}, not failing the test:\n{describe(others)}")
    assert not failing(violations), f"axe-core on {name}:\n{describe(failing(violations))}"


def test_keyboard_focus_on_a_sidebar_link_is_visible(tab: Any, server: str) -> None:
    tab.goto(server)
    rendered(tab)
    expect(tab.locator('[data-testid="stSidebar"]')).to_have_attribute("data-collapsed", "false")
    tab.locator("body").focus()
    for _ in range(10):
        tab.keyboard.press("Tab")
        focused = tab.evaluate(
            """() => {
              const a = document.activeElement;
              if (!a.matches('[data-testid="stSidebarNav"] a')) return null;
              const style = getComputedStyle(a);
              return {name: a.innerText, outline: style.outlineStyle,
                      width: parseFloat(style.outlineWidth), shadow: style.boxShadow};
            }"""
        )
        if focused:
            break
    assert focused, "Tab did not reach a link of the sidebar's navigation"
    ring = (focused["outline"] != "none" and focused["width"] >= 2) or focused["shadow"] != "none"
    assert ring, f"no visible focus ring on the sidebar link {focused}"


def test_on_a_phone_the_sidebar_is_closed_and_the_grid_near_the_top(
    browser: Any, server: str, runs: dict[str, Any]
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{server}/drilldown?execution={runs['run']}")
        grid_cell(page, "line_id").wait_for()
        rendered(page)
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar).to_have_attribute("data-collapsed", "true")
        expect(page.get_by_role("button", name="Expand sidebar")).to_be_visible()
        expect(sidebar.get_by_role("link", name="Overview")).not_to_be_in_viewport()
        top = page.evaluate(
            """() => {
              const grid = [...document.querySelectorAll('iframe')]
                .find(f => /aggrid/i.test(f.src));
              const main = document.querySelector('[data-testid="stMain"]');
              return grid.getBoundingClientRect().top + main.scrollTop;
            }"""
        )
        assert top <= 2 * PHONE["height"], f"the grid starts {top:.0f}px down the page"
        violations = failing(axe_violations(page))
        assert not violations, f"axe-core on the phone:\n{describe(violations)}"
    finally:
        context.close()
