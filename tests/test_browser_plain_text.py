"""End-to-end: whatever people type is shown as plain text, on every page, in Chromium.

One KPI carries Markdown and HTML in every field a person can fill: its name,
description, plain-words definition, owner, unit, tags, a parameter's label, choices and
default, the column names of its query, the actor who made and ran it and a version
note; a second KPI fails with an error message quoting a payload. The payloads are an
image and a link in Markdown, a Streamlit colour directive with bold text, and HTML (an
``<img>`` and ``<b>``); the images point at a small HTTP server this module starts on
127.0.0.1, which records every request.

Every page is opened in the real app (overview, the KPI's edit form with a failing
"Test query", the run page with a "Run now", the drill-down of a run and of the failed
run, the history's trend, runs, versions and compare tabs, the schedules and alert rules,
the inbox, the audit log, the data sources),
and on each: the recorder saw no request, no link goes to example.com or the recorder,
no image loads from it, no bold or coloured element came out of a payload (the main
document and every frame, the AgGrid's included), the payload is there literally (so it
was shown, as text), and the browser tab's title holds no HTML.

Uses the server, browser and helpers of ``test_browser.py`` (one server and one browser
for this module, over its own store).
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_browser import (  # noqa: F401  (fixtures, used by name)
    browser,
    expect,
    idle,
    main,
    playwright_api,
    see,
    server,
    sign_in,
    store,
    store_file,
)

from kpi_store import KPIStore

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
WORD_JOINER = "\u2060"  # what kpi_ui.md puts before "https://" in Markdown: invisible
# Found in the page after a payload was rendered as Markdown or HTML, never otherwise.
FORMATTED = """(args) => {
  const [hosts] = args;
  const found = [];
  const describe = (el) => `<${el.tagName.toLowerCase()} ${el.className || ''}>`
    + ` ${(el.textContent || '').slice(0, 60)}`;
  for (const el of document.querySelectorAll('a[href], area[href]')) {
    const href = el.getAttribute('href') || '';
    if (hosts.some((h) => href.includes(h))) found.push('link ' + href + ' ' + describe(el));
  }
  for (const el of document.querySelectorAll('[src], [srcset], image, use')) {
    const src = [el.getAttribute('src'), el.getAttribute('srcset'),
                 el.getAttribute('href'), el.getAttribute('xlink:href')].join(' ');
    if (hosts.some((h) => src.includes(h))) found.push('image ' + src + ' ' + describe(el));
  }
  for (const el of document.querySelectorAll('strong, b, em, i, del, s, mark')) {
    const text = (el.textContent || '').trim();
    if (text === 'bold' || text === 'ALERT' || text === 'click')
      found.push('formatted ' + describe(el));
  }
  for (const el of document.querySelectorAll('body *')) {
    if (el.children.length === 0 && (el.textContent || '').trim() === 'ALERT')
      found.push('coloured ' + describe(el));
  }
  for (const el of document.querySelectorAll('.stMarkdownColoredText, [class*="colored" i]')) {
    const text = el.textContent || '';
    if (text.includes('ALERT') && !text.includes(':red[ALERT]'))
      found.push('coloured ' + describe(el));
  }
  return found;
}"""
ALL_TEXT = """() => {
  // innerText: what is laid out; textContent: also collapsed labels (a card's metric).
  const parts = document.body ? [document.body.innerText, document.body.textContent] : [];
  for (const el of document.querySelectorAll('input, textarea')) parts.push(el.value || '');
  for (const el of document.querySelectorAll('[role="gridcell"], [role="columnheader"]'))
    parts.push(el.textContent || '');
  return parts.join('\\n');
}"""


# -- the recorder: an HTTP server that must never be asked for anything -----------------


class Recorder(http.server.ThreadingHTTPServer):
    requests: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (the http.server name)
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_POST = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        """Nothing on stderr: the test reads the recorded paths, not a log."""


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    listening = Recorder(("127.0.0.1", 0), _Handler)
    listening.requests = []
    thread = threading.Thread(target=listening.serve_forever, daemon=True)
    thread.start()
    yield listening
    listening.shutdown()
    listening.server_close()


# -- the payloads and the KPI that carries them -------------------------------------------


@dataclass
class Payloads:
    base: str  # http://127.0.0.1:PORT

    @property
    def image(self) -> str:
        return f"![x]({self.base}/x.png)"

    link = "[click](https://example.com)"
    colour = ":red[ALERT] **bold**"

    @property
    def html_image(self) -> str:
        return f"<img src={self.base}/h.png>"

    html_bold = "<b>bold</b>"

    @property
    def all(self) -> list[str]:
        return [self.image, self.link, self.colour, self.html_image, self.html_bold]

    def text(self, label: str) -> str:
        """One field's text: a label (to tell the fields apart) and every payload."""
        return f"{label} " + " ".join(self.all)

    @property
    def hosts(self) -> list[str]:
        return ["example.com", self.base.removeprefix("http://")]


@dataclass
class Made:
    payloads: Payloads
    actor: str
    kpi_id: int
    broken_id: int
    run_ids: list[int] = field(default_factory=list)
    failed_run_id: int = 0
    requests: list[str] = field(default_factory=list)  # what the recorder was asked for


def sql_colons(text: str) -> str:
    return text.replace(":", "\\:")


@pytest.fixture(scope="module")
def made(store: KPIStore, recorder: Recorder) -> Made:  # noqa: F811
    """The payload KPI (two versions, two runs), a failing KPI and run, a data source."""
    p = Payloads(f"http://127.0.0.1:{recorder.server_address[1]}")
    actor = p.text("Actor")
    # In SQL a colon starts a parameter, even in quotes: "\\:" is a colon in a column name.
    columns = ", ".join(f'amount AS "{sql_colons(alias)}"' for alias in p.all)
    spec: dict[str, Any] = {
        "name": p.text("KPI"),
        "description": p.text("Description"),
        "nl_definition": p.text("Definition"),
        "owner": p.text("Owner"),
        "unit": p.colour,
        "tags": p.all,
        "data_source": "demo",
        "sql": f"SELECT :choice AS choice, {columns}, amount FROM "
        "(SELECT SUM(line_amount) AS amount FROM order_lines)",
        "parameters": [
            {
                "name": "choice",
                "type": "str",
                "label": p.text("Label"),
                "choices": p.all,
                "default": p.link,
            }
        ],
        "value_column": "amount",
        "aggregation": "sum",
        "target": 1.0,
    }
    kpi = store.create_kpi(spec, actor)
    kpi = store.update_kpi(
        kpi.id, {**spec, "target": 2.0}, actor, expected_version=1, note=p.text("Note")
    )
    # A rule named with the payloads, subscribed by the actor: the official run fires it.
    rule = store.create_rule(
        kpi.id, actor, name=p.text("Rule"), condition="threshold", op=">", value=0
    )
    store.subscribe(rule.id, f"{actor} (unverified)")  # as the demo mode records the name
    store.create_schedule(kpi.id, "0 7 * * 1-5", actor, params={"choice": p.colour})
    runs = [store.execute(kpi.id, {"choice": choice}, actor=actor) for choice in p.all[:2]]
    assert [r.status for r in runs] == ["success", "success"], [r.error for r in runs]

    broken = store.create_kpi(
        {
            "name": p.text("Broken"),
            "data_source": "demo",
            "sql": f'SELECT * FROM "{sql_colons(p.html_image)}"',
            "owner": p.text("Owner"),
        },
        actor,
    )
    failed = store.execute(broken.id, actor=actor)
    assert failed.status == "failed" and p.html_image in (failed.error or ""), failed.error

    demo = next(s for s in store.data_sources() if s.name == "demo")
    store.add_data_source("payload_source", demo.display_url, actor)
    return Made(p, actor, kpi.id, broken.id, [r.id for r in runs], failed.id, recorder.requests)


# -- the checks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tab(browser: Any, playwright_api: Any, made: Made) -> Iterator[Any]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def open_page(tab: Any, url: str, made: Made, ready: str | re.Pattern[str]) -> None:
    """A fresh load of ``url``, signed in as the payload actor, rendered to ``ready``."""
    tab.goto(url)
    see(tab, ready)  # the first run ends before the sign-in starts another
    idle(tab)
    sign_in(tab, made.actor)
    idle(tab)
    see(tab, ready)


def press(tab: Any, name: str, then: str | re.Pattern[str], actor: str) -> None:
    """Press the button ``name`` until ``then`` shows. A busy machine can lose a press,
    or the typed name, to a rerun that was still going: the name is given again when the
    button stays disabled (it needs one), and the press repeated (both buttons may be)."""
    for attempt in range(3):
        idle(tab)
        target = main(tab).get_by_role("button", name=name).filter(visible=True).first
        try:
            expect(target).to_be_enabled(timeout=10_000)
        except AssertionError:
            sign_in(tab, actor)
            continue
        target.click()
        try:
            see(tab, then, timeout=10_000 if attempt < 2 else TIMEOUT_MS)
            break
        except AssertionError:
            if attempt == 2:
                raise
    else:
        raise AssertionError(f"{name!r} did not do its work after three presses")
    idle(tab)


def shown_as_text(tab: Any, made: Made, *expected: str) -> None:
    """Nothing formatted, linked or loaded; ``expected`` present literally; a clean title."""
    tab.wait_for_load_state("networkidle")
    problems: list[str] = []
    for frame in tab.frames:
        try:
            problems += [
                f"{frame.url}: {p}" for p in frame.evaluate(FORMATTED, [made.payloads.hosts])
            ]
        except Exception as error:  # a frame that went away while we looked
            if "detached" not in str(error).lower():
                raise
    assert problems == []
    assert made.requests == []
    text = "\n".join(frame.evaluate(ALL_TEXT) for frame in tab.frames if not frame.is_detached())
    text = text.replace(WORD_JOINER, "")
    for literal in expected:
        assert literal in text, f"{literal!r} is not shown as typed"
    title = tab.title()
    assert "<" not in title and "bold" not in title and "ALERT" not in title, title


# -- the pages ----------------------------------------------------------------------------


def test_overview(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, server, made, re.compile(r"Run all \(\d+\)"))
    card = main(tab).locator(f".st-key-kpi_card_{made.kpi_id}")
    expect(card).to_be_visible()
    shown_as_text(tab, made, p.text("KPI"), p.text("Description"), p.text("Owner"))


def test_kpi_catalog_and_edit_form(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, f"{server}/kpis?kpi={made.kpi_id}", made, "Save new version")
    expect(main(tab).get_by_label("Short description", exact=True)).to_have_value(
        p.text("Description")
    )
    press(tab, "Test query", "The query works", made.actor)
    shown_as_text(tab, made, p.text("KPI"), p.text("Definition"), p.colour)


def test_a_failing_test_query_shows_its_error_as_text(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, f"{server}/kpis?kpi={made.broken_id}", made, "Save new version")
    press(tab, "Test query", re.compile("Test query failed"), made.actor)
    shown_as_text(tab, made, p.html_image, p.text("Broken"))


def test_run_page_with_the_kpi_and_run_now(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, f"{server}/run?kpi={made.kpi_id}", made, "Parameters")
    label = main(tab).get_by_text(re.compile(r"^Label "))
    expect(label.first).to_be_visible()
    press(tab, "Run now", re.compile(r"Open run #\d+ in the drill-down"), made.actor)
    shown_as_text(tab, made, p.text("Label"), p.text("KPI"), p.link)


def test_drilldown_of_a_run(server, tab, made):  # noqa: F811
    p = made.payloads
    run_id = made.run_ids[-1]
    open_page(tab, f"{server}/drilldown?execution={run_id}", made, re.compile(r"Rows 1–1 of 1"))
    grid = tab.frame_locator('iframe[src*="aggrid" i]').last
    expect(grid.locator(".ag-header-cell").first).to_be_visible()
    expect(grid.locator(".ag-row").first).to_be_visible()
    shown_as_text(tab, made, p.text("KPI"), p.text("Actor"), *p.all)


def test_drilldown_of_the_failed_run(server, tab, made):  # noqa: F811
    p = made.payloads
    url = f"{server}/drilldown?execution={made.failed_run_id}"
    open_page(tab, url, made, re.compile("no such table", re.IGNORECASE))
    shown_as_text(tab, made, p.html_image, p.text("Broken"))


def test_history_runs_versions_and_compare(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, f"{server}/history?kpi={made.kpi_id}", made, "Parameter sets")
    shown_as_text(tab, made, p.text("Owner"), p.colour)  # the Trend: series and comparisons
    main(tab).get_by_role("tab", name=re.compile(r"Runs \(")).click()
    see(tab, "Open a run")
    idle(tab)
    shown_as_text(tab, made, p.text("Owner"), p.colour)
    main(tab).get_by_role("tab", name=re.compile("Versions")).click()
    see(tab, "Compare two versions")
    idle(tab)
    shown_as_text(tab, made, p.text("Note"), p.text("Actor"))
    main(tab).get_by_role("tab", name=re.compile("Compare runs")).click()
    see(tab, re.compile(r"Run #\d+ vs run #\d+"))
    idle(tab)
    shown_as_text(tab, made, p.colour)


def test_schedules_and_alert_rules(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, f"{server}/alerts?kpi={made.kpi_id}", made, "Schedules run a KPI at set times")
    shown_as_text(tab, made, p.colour)  # the schedule's parameters
    main(tab).get_by_role("tab", name=re.compile("Alert rules")).click()
    idle(tab)
    shown_as_text(tab, made, p.text("Rule"))


def test_inbox(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, f"{server}/inbox", made, "What the alert rules you subscribe to told you")
    see(tab, "Mark read")
    shown_as_text(tab, made, p.text("Rule"), p.text("KPI"))


def test_audit(server, tab, made):  # noqa: F811
    p = made.payloads
    open_page(tab, f"{server}/audit?kpi={made.kpi_id}", made, "Entry details")
    shown_as_text(tab, made, p.text("Actor"), p.text("KPI"))


def test_data_sources(server, tab, made):  # noqa: F811
    open_page(tab, f"{server}/data_sources", made, "Test and add")
    table = main(tab).locator('[data-testid="stDataFrame"] [role="gridcell"]')
    expect(table.filter(has_text="payload_source").first).to_be_attached()
    shown_as_text(tab, made, made.actor)


def test_the_recorder_saw_nothing(recorder, made):
    assert recorder.requests == []
