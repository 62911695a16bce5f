# ruff: noqa: F811 - pytest fixtures imported from test_browser.py are used as parameters
"""End-to-end, the official number and its story in headless Chromium over the demo: the
Overview card keeps the official number when an exploration is newer; History's Trend
backfills the missing year and compares 2025 with 2024; Compare runs says the runs are
two series apart and splits the change of Units Sold by category. Each step fails on
its own; later steps skip when an earlier one they need failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_browser import (  # noqa: F401 - fixtures shared with the main journey
    TIMEOUT_MS,
    browser,
    button,
    expect,
    main,
    needs,
    playwright_api,
    running_app,
    screenshot,
    see,
    shots,
    sign_in,
)

from kpi_store import KPIStore, RunStatus

pytestmark = pytest.mark.browser

YEAR_2024 = {"start_date": "2024-01-01", "end_date": "2024-12-31"}
DONE: dict[str, bool] = {}


@pytest.fixture(scope="module")
def demo(playwright_api: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo with Revenue run officially (2025) and as an exploration (North, newer),
    and Units Sold by Category run for 2024 and 2025."""
    folder = tmp_path_factory.mktemp("story")
    store = KPIStore(f"sqlite:///{folder / 'store.db'}")
    store.install_demo(actor="demo")
    by_name = {k.name: k for k in store.list_kpis()}
    revenue, units = by_name["Revenue"], by_name["Units Sold by Category"]
    official = store.execute(revenue.id, None, "demo")
    north = store.execute(revenue.id, {"region": "North"}, "demo")
    units_2024 = store.execute(units.id, YEAR_2024, "demo")
    units_2025 = store.execute(units.id, None, "demo")
    store.close()
    return {
        "file": folder / "store.db",
        "revenue": revenue.id,
        "units": units.id,
        "official": official,
        "north": north,
        "units_runs": (units_2024, units_2025),
    }


@pytest.fixture(scope="module")
def server(demo: dict[str, Any]) -> Iterator[str]:
    with running_app(demo["file"], {"KPI_WORKER_POLL_S": "0.2"}) as url:
        yield url


@pytest.fixture(scope="module")
def page(browser: Any, playwright_api: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(server)
    sign_in(tab, "Stella Story")
    yield tab
    context.close()


def test_the_card_keeps_the_official_number_when_an_exploration_is_newer(
    page: Any, server: str, demo: dict[str, Any]
) -> None:
    card = page.locator(f".st-key-kpi_card_{demo['revenue']}")
    expect(card).to_contain_text(f"${demo['official'].value:,.2f}")
    expect(card).not_to_contain_text(f"${demo['north'].value:,.2f}")
    expect(card).to_contain_text("an exploration")
    DONE["card"] = True


def test_the_trend_backfills_2024_and_compares_2025_with_it(
    page: Any, server: str, demo: dict[str, Any], shots: Any
) -> None:
    page.goto(f"{server}/history?kpi={demo['revenue']}")
    see(page, "Parameter sets")
    expect(button(page, "Run 2024 to compare")).to_be_visible()
    main(page).get_by_text("Backfill: one run per period").click()
    type_date(page, "From", "2024/01/01")
    type_date(page, "To", "2025/12/31")
    button(page, "Backfill").click()
    see(page, re.compile(r"Queued 1 of 2 periods as one batch; skipped 1 already run"))
    store = KPIStore(f"sqlite:///{demo['file']}")
    try:
        [queued] = store.executions(kpi_id=demo["revenue"], limit=1)
        assert queued.params["start_date"] == "2024-01-01"
        finished = _wait_until(lambda: store.runs([queued.id])[0].finished)
        assert finished, "the embedded worker did not run the backfill"
        assert store.runs([queued.id])[0].status == RunStatus.SUCCESS
        compared = store.compare(demo["official"].id, "previous_period")
    finally:
        store.close()
    page.reload()
    assert compared.change_pct is not None
    see(page, "Latest vs 2024")
    see(page, f"({compared.change_pct:+.1f} %)")
    expect(main(page).get_by_role("button", name="Run 2024 to compare")).to_have_count(0)
    main(page).get_by_role("combobox", name="Parameter sets").click()  # the exploration too
    page.get_by_role("option", name=re.compile("North")).first.click()
    page.keyboard.press("Escape")
    see(page, "Latest vs 2024")
    screenshot(page, shots, "trend")
    DONE["trend"] = True


def test_compare_runs_says_two_series_and_what_changed_by_category(
    page: Any, server: str, demo: dict[str, Any]
) -> None:
    page.goto(f"{server}/history?kpi={demo['units']}")
    main(page).get_by_role("tab", name=re.compile("Compare runs")).click()
    see(page, "What changed?")
    first, second = demo["units_runs"]
    see(page, re.compile(r"From run #\d+ .* to run #\d+"))
    expect(main(page).get_by_text("Split the change by")).to_be_visible()
    assert first.value is not None and second.value is not None
    see(page, re.compile("adds up"))
    DONE["what_changed"] = True


def test_the_run_page_link_opens_the_official_run(page: Any, server: str, demo: dict) -> None:
    needs(DONE.get("card"), "the card keeps the official number")
    page.goto(server)
    card = page.locator(f".st-key-kpi_card_{demo['revenue']}")
    card.get_by_role("link", name=re.compile("Rows")).click()
    expect(page).to_have_url(re.compile(rf"execution={demo['official'].id}"))


def type_date(page: Any, label: str, value: str) -> None:
    """Type a date into Streamlit's date field (a group of year / month / day parts)."""
    group = main(page).get_by_label(label, exact=True)
    group.locator('[role="spinbutton"]').first.click()
    page.keyboard.type(value.replace("/", ""))
    page.keyboard.press("Tab")
    expect(group).to_contain_text(value.split("/")[0])


def _wait_until(ready: Any, timeout_s: float = 60.0) -> bool:
    """Poll ``ready()`` until it is true (a background run finishing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.2)
    return False
