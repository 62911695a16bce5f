# ruff: noqa: F811 - pytest fixtures imported from test_browser.py are used as parameters
"""End-to-end: a schedule made on the page fires in the embedded worker, its runs set off
an alert rule, and the alert arrives in the Inbox; the Overview card shows it firing.

The real server in headless Chromium over a fresh demo store, its embedded worker on and
made quick through the environment (``KPI_SCHEDULE_POLL_S``, ``KPI_WORKER_POLL_S``). The
journey, one test per step in file order: an off-target rule on Return Rate (8 % against
6.5 %, lower is better) made through the form, subscribed to; a schedule every 2 seconds
(a six-field cron, seconds last) made through the form after reading its words and next
five fire times; the firing in the Inbox, opened before it came (the page shows news as it
arrives), and the sidebar's unread count; the card's badge; the schedule paused, its tick
log; mark read. Waits are for what the page shows (Playwright's ``expect``), never sleeps.
Skipped without Chromium, like test_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_browser import (  # noqa: F401 - fixtures shared with the main journey
    TIMEOUT_MS,
    browser,
    button,
    expect,
    idle,
    main,
    needs,
    playwright_api,
    running_app,
    screenshot,
    see,
    shots,
    sign_in,
)
from test_browser_a11y import axe_violations, describe, failing, rendered

from kpi_store import KPIStore

pytestmark = pytest.mark.browser

USER = "Sam Scheduler"
RECORDED = f"{USER} (unverified)"
EVERY_2_S = "* * * * * */2"
QUICK = {"KPI_SCHEDULE_POLL_S": "0.2", "KPI_WORKER_POLL_S": "0.1", "KPI_EMBEDDED_WORKER": None}
FIRE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def store_file(playwright_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("alerts")
    store = KPIStore(f"sqlite:///{folder / 'store.db'}")
    store.install_demo(actor="demo")
    store.close()
    return folder / "store.db"


@pytest.fixture(scope="module")
def store(store_file: Path) -> Iterator[KPIStore]:
    handle = KPIStore(f"sqlite:///{store_file}")
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def server(store_file: Path) -> Iterator[str]:
    with running_app(store_file, QUICK) as url:
        yield url


@pytest.fixture(scope="module")
def tab(browser: Any, playwright_api: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server}/alerts")
    sign_in(page, USER)
    yield page
    context.close()


@dataclass
class Journey:
    rule_id: int | None = None
    schedule_id: int | None = None
    fired: bool = False


@pytest.fixture(scope="module")
def journey() -> Journey:
    return Journey()


def open_tab(page: Any, name: str) -> Any:
    """Open one of the page's tabs; returns its panel."""
    main(page).get_by_role("tab", name=re.compile(name)).click()
    panel = main(page).get_by_role("tabpanel").filter(visible=True)
    expect(panel).to_have_count(1)
    return panel


def pick(page: Any, panel: Any, label: str, option: str) -> None:
    """Choose ``option`` in the select box ``label`` inside ``panel``."""
    box = panel.get_by_label(label, exact=True).first
    box.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    expect(box).to_have_value(option)
    idle(page)  # the fields that depend on the choice are drawn again


def sidebar_inbox(page: Any) -> Any:
    return page.locator('[data-testid="stSidebar"]').get_by_role(
        "link", name=re.compile(r"Inbox · \d+ unread")
    )


# -- the journey ------------------------------------------------------------------------


def test_an_off_target_rule_made_and_subscribed_to(tab, store, journey):
    expect(main(tab).get_by_role("heading", name="Schedules & alerts")).to_be_visible()
    panel = open_tab(tab, "Alert rules")
    see(tab, "No alert rules yet")
    pick(tab, panel, "KPI", "Return Rate")
    # The form's fields follow the KPI: wait until only the new KPI's are left.
    suggested = panel.locator('input[aria-label="Rule name"][value="Return Rate off target"]')
    expect(suggested).to_have_count(1)
    name = panel.get_by_label("Rule name", exact=True)
    expect(name).to_have_count(1)
    name.fill("Returns too high")
    name.press("Tab")
    expect(panel.get_by_label("Condition", exact=True)).to_have_value(re.compile("^Off target"))
    panel.get_by_role("button", name="Create rule").click()
    see(tab, "Alert rule 'Returns too high' created on Return Rate")
    [rule] = store.rules()
    assert rule.name == "Returns too high" and rule.subscribers == (RECORDED,)
    journey.rule_id = rule.id


def test_a_schedule_every_two_seconds_made_after_reading_it_in_words(tab, store, journey):
    needs(journey.rule_id, "an off-target rule")
    panel = open_tab(tab, "Schedules")
    pick(tab, panel, "KPI", "Return Rate")
    cron = panel.get_by_label("When (cron)", exact=True)
    cron.fill(EVERY_2_S)
    cron.press("Tab")
    expect(panel.get_by_text("Every 2 seconds", exact=True)).to_be_visible()
    times = panel.get_by_text(re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+\s*){5}$"))
    expect(times).to_be_visible()
    panel.get_by_role("button", name="Create schedule").click()
    see(tab, re.compile(r"Schedule #\d+ created for Return Rate: Every 2 seconds"))
    [schedule] = store.schedules()
    assert schedule.cron == EVERY_2_S and schedule.run_as == RECORDED
    journey.schedule_id = schedule.id


def test_the_alert_arrives_in_the_inbox_while_it_is_open(tab, store, journey, shots):
    needs(journey.schedule_id, "a schedule every two seconds")
    tab.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Inbox").click()
    expect(main(tab).get_by_role("heading", name="Inbox")).to_be_visible()
    firing = main(tab).get_by_text(re.compile(r"Return Rate: 'Returns too high' is firing"))
    expect(firing.first).to_be_visible(timeout=FIRE_TIMEOUT_MS)
    see(tab, "value 8%")
    expect(sidebar_inbox(tab)).to_contain_text(re.compile(r"Inbox · [1-9]\d* unread"))
    [item] = [i for i in store.inbox(actor=RECORDED) if i.event.kind == "firing"]
    run_link = main(tab).get_by_role("link", name=f"Run #{item.event.run_id}")
    expect(run_link).to_have_attribute("href", re.compile(rf"execution={item.event.run_id}$"))
    run = store.execution(item.event.run_id)
    assert run.schedule_id == journey.schedule_id and run.requested_by == RECORDED
    journey.fired = True
    screenshot(tab, shots, "inbox")


def card(page: Any, store: KPIStore, name: str) -> Any:
    kpi_id = next(k.id for k in store.list_kpis() if k.name == name)
    return main(page).locator(f".st-key-kpi_card_{kpi_id}")


def test_the_overview_card_shows_the_alert_firing(tab, store, journey, shots):
    needs(journey.fired, "the alert in the inbox")
    tab.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Overview").click()
    see(tab, "Run all (8)")
    expect(card(tab, store, "Return Rate")).to_contain_text("Alert: firing")
    expect(card(tab, store, "Revenue")).not_to_contain_text("Alert:")  # it has no rule
    screenshot(tab, shots, "overview_alert")


def test_pause_the_schedule_and_read_its_tick_log(tab, store, journey, shots):
    schedule_id = needs(journey.schedule_id, "a schedule every two seconds")
    tab.locator('[data-testid="stSidebarNav"]').get_by_role(
        "link", name="Schedules & alerts"
    ).click()
    panel = open_tab(tab, "Schedules")
    panel.get_by_role("button", name="Pause").click()
    see(tab, f"Schedule #{schedule_id} paused")
    assert not store.schedule(schedule_id).active
    ticks = store.schedule_ticks(schedule_id)
    fired = [t for t in ticks if t.outcome == "fired"]
    assert fired and all(t.run_id for t in fired)
    assert len({t.due_at for t in ticks}) == len(ticks)  # each due time decided once
    expect(panel.get_by_text("Tick log", exact=False).first).to_be_visible()
    idle(tab)
    screenshot(tab, shots, "alerts")
    rules = open_tab(tab, "Alert rules")
    expect(rules.get_by_text("Evaluation log", exact=False).first).to_be_visible()
    screenshot(tab, shots, "alert_rules")


@pytest.mark.parametrize("where", ["Schedules", "Alert rules", "Channels", "Inbox"])
def test_no_serious_axe_violations(tab, server, journey, where):
    """The new pages, with what the journey made in them, pass axe-core as the others do."""
    needs(journey.fired, "the alert in the inbox")
    tab.goto(f"{server}/inbox" if where == "Inbox" else f"{server}/alerts")
    expect(
        main(tab).get_by_role("heading", name=where if where == "Inbox" else "Schedules & alerts")
    ).to_be_visible()
    if where != "Inbox":
        open_tab(tab, where)
    rendered(tab)
    problems = failing(axe_violations(tab))
    assert not problems, f"axe-core on {where}:\n{describe(problems)}"


def test_mark_read_empties_the_sidebar_count(tab, store, journey):
    needs(journey.fired, "the alert in the inbox")
    tab.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Inbox").click()
    expect(main(tab).get_by_role("heading", name="Inbox")).to_be_visible()
    button(tab, "Mark all read").click()
    expect(sidebar_inbox(tab)).to_contain_text("Inbox · 0 unread")
    assert store.unread_count(actor=RECORDED) == 0
