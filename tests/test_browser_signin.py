"""End-to-end sign-in: real OpenID Connect sign-in in Chromium, people with roles.

The module starts an OpenID Connect provider of its own (``oidc-provider-mock``, in a
thread, knowing three people) and ``streamlit run dashboard.py`` with ``KPI_AUTH=oidc``,
its ``[auth]`` secrets pointing at that provider (``STREAMLIT_SECRETS_FILES``), over a
fresh store with the demo installed and three people added through the store: a viewer,
an editor and an admin (through ``KPI_ADMINS``). Each person signs in for real (the
app's "Sign in" button, the provider's form, back to the app) in a browser context of
their own, so their cookies are theirs.

The steps, one test each, in file order (a step that needs an earlier one is skipped,
naming it, when that one failed):

1. a deep link, as the very first visit of the fresh server, shows the sign-in page and
   no data;
2. the viewer signs in: the sidebar names them and their role; creating KPIs is locked
   with a note saying why, "Run now" is disabled;
3. a link left open while an admin takes a role away: the viewer, made a runner for a
   while, got the drill-down's link to download every row of a run; following it after
   the role went back to viewer reaches the store, which refuses it (a DENIED entry
   names the viewer); their next click shows them as a viewer, and the drill-down shows
   the lock where the link was;
4. the editor signs in and creates a KPI through the form;
5. the audit names each by email: the creation by the editor, the refusal by the
   viewer (read from the store), and the Audit page, for the admin, finds the creation
   by a part of the editor's name;
6. the viewer, deactivated through the store while their page is open, is locked out at
   their next click (the refusal page, none of the app);
7. the editor signs out through the provider and is back at the sign-in page.

The server log must hold no traceback. Uses the browser and helpers of
``test_browser.py``; screenshots go where that module's go (``KPI_SCREENSHOTS``).
Without Chromium, Playwright or ``oidc-provider-mock`` the module is skipped, unless
``KPI_TEST_REQUIRE_BROWSER=1``, which makes that a failure.
"""

from __future__ import annotations

import re
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_browser
from test_browser import (
    TIMEOUT_MS,
    _free_port,
    _unavailable,
    button,
    expect,
    fill,
    idle,
    main,
    running_app,
    screenshot,
    see,
    table_cell,
)

from kpi_store import KPIStore
from kpi_store.config import Settings

pytestmark = [
    pytest.mark.browser,
    # The mock provider runs in this process: Authlib's deprecations in it are not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib"),
]

# test_browser.py's fixtures, for this module too (module-scoped: one browser here).
playwright_api = test_browser.playwright_api
browser = test_browser.browser
shots = test_browser.shots


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    role: str


VIEWER = Person("viewer@example.com", "Vera Viewer", "viewer")
EDITOR = Person("editor@example.com", "Eddie Editor", "editor")
ADMIN = Person("admin@example.com", "Ada Admin", "admin")
PEOPLE = (VIEWER, EDITOR, ADMIN)
DEMO_KPIS = ("Revenue", "Gross Margin", "Return Rate", "Order Line Detail")
NEW_KPI = "Order Count"
NEW_SQL = "SELECT COUNT(*) AS n FROM orders"
WORD_JOINER = "\u2060"


# -- fixtures: the provider, the store with its people, the server, one tab per person ------


@pytest.fixture(scope="module")
def provider(playwright_api: Any) -> Iterator[str]:
    """An OpenID Connect provider knowing the three people; its base URL."""
    try:
        with warnings.catch_warnings():
            import authlib.deprecate  # noqa: F401  (its import puts an "always" filter first)

            warnings.simplefilter("ignore", DeprecationWarning)  # the mock's imports
            from oidc_provider_mock import User, run_server_in_thread
    except ImportError:
        _unavailable("oidc-provider-mock is not installed (requirements-dev.txt)")
    users = [
        User(sub=p.email, claims={"email": p.email, "name": p.name, "email_verified": True})
        for p in PEOPLE
    ]
    with run_server_in_thread(port=_free_port(), user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def store_file(playwright_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh store with the demo, and the viewer and the editor added by an admin (the
    admin comes in through ``KPI_ADMINS``). Built with sign-in off in this process."""
    folder = tmp_path_factory.mktemp("signin")
    store = KPIStore(f"sqlite:///{folder / 'store.db'}", settings=_auth_off())
    try:
        store.install_demo(actor="demo")
        for person in (VIEWER, EDITOR):
            store.add_person(person.email, "setup", display_name=person.name, role=person.role)
    finally:
        store.close()
    return folder / "store.db"


@pytest.fixture(scope="module")
def demo_run(store_file: Path) -> int:
    """A successful run of the demo's Revenue, made in this process (sign-in off)."""
    store = KPIStore(f"sqlite:///{store_file}", settings=_auth_off())
    try:
        [revenue] = [k for k in store.list_kpis() if k.name == "Revenue"]
        run = store.execute(revenue.id, actor="setup")
        assert run.status == "success", run.error
        return run.id
    finally:
        store.close()


@pytest.fixture(scope="module")
def store(store_file: Path) -> Iterator[KPIStore]:
    """The test's own handle on the server's store, sign-in off (it acts as anyone)."""
    handle = KPIStore(f"sqlite:///{store_file}", settings=_auth_off())
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def server(store_file: Path, provider: str) -> Iterator[str]:
    """The real app with sign-in on, on a free port; its log goes beside the store."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"  # the redirect URI's host is the one the browser opens
    secrets_file = store_file.parent / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "{url}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        'client_id = "kpi-desk-test"\n'
        'client_secret = "not-checked-by-the-mock"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n',
        encoding="utf-8",
    )
    env = {
        "KPI_AUTH": "oidc",
        "KPI_ADMINS": ADMIN.email,
        "STREAMLIT_SECRETS_FILES": str(secrets_file),
        "KPI_DEFAULT_ROLE": None,
    }
    with running_app(store_file, env, port) as served:
        yield served


@pytest.fixture(scope="module")
def tabs(browser: Any, playwright_api: Any) -> Iterator[dict[Person, Any]]:
    """One browser context (cookies of its own) and tab per person, opened on first use."""
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    contexts: list[Any] = []

    class Tabs(dict):
        def __missing__(self, person: Person) -> Any:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            context.set_default_timeout(TIMEOUT_MS)
            contexts.append(context)
            self[person] = context.new_page()
            return self[person]

    yield Tabs()
    for context in contexts:
        context.close()


@dataclass
class Journey:
    """What the steps found out, for the steps after them."""

    viewer_in: bool = False
    refused: bool = False
    kpi_id: int | None = None
    editor_in: bool = False


@pytest.fixture(scope="module")
def journey() -> Journey:
    return Journey()


def needs(value: Any, step: str) -> Any:
    if not value:
        pytest.skip(f"needs the earlier step {step!r} to pass (run the whole module)")
    return value


# -- helpers --------------------------------------------------------------------------------


def _auth_off() -> Settings:
    return Settings.from_env().replace(auth="off")


def shown(text: str) -> re.Pattern[str]:
    """``text`` as the app shows it: Markdown of ``kpi_ui.md`` may hold invisible word
    joiners (before the ``@`` of an email, so that it is no link)."""
    return re.compile(f"{WORD_JOINER}?".join(re.escape(char) for char in text))


def sidebar(page: Any) -> Any:
    return page.locator('[data-testid="stSidebar"]')


def nav_link(page: Any, label: str) -> Any:
    return page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=label)


def go(page: Any, label: str, heading: str | None = None) -> None:
    nav_link(page, label).click()
    expect(main(page).get_by_role("heading", name=heading or label).first).to_be_visible()


def at_sign_in_page(page: Any) -> None:
    """The gate: a "Sign in" button to click (no dialog over it), no navigation, none of
    the demo's KPIs."""
    expect(main(page).get_by_role("button", name="Sign in")).to_be_visible()
    idle(page)
    expect(page.get_by_role("dialog")).to_have_count(0)  # e.g. "Page not found"
    expect(main(page).get_by_role("button", name="Sign in")).to_be_enabled()
    expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)
    for name in DEMO_KPIS:
        expect(page.get_by_text(name)).to_have_count(0)


def signed_in_as(page: Any, person: Person, role: str | None = None) -> None:
    note = sidebar(page).get_by_text("Signed in as")
    expect(note).to_contain_text(shown(person.email))
    expect(note).to_contain_text(f"· {role or person.role}")


def sign_in(page: Any, server: str, provider: str, person: Person) -> None:
    """Through the provider: "Sign in", the provider's form, back on the app's home."""
    if not page.url.startswith(server):
        page.goto(server)
    main(page).get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{provider}/oauth2/authorize?**")
    page.locator("input[name=sub]").fill(person.email)
    page.get_by_role("button", name="Authorize", exact=True).click()
    page.wait_for_url(f"{server}/")
    signed_in_as(page, person)
    see(page, "Revenue")  # the overview, with the data


# -- the journey ----------------------------------------------------------------------------


def test_a_deep_link_while_signed_out_shows_the_sign_in_page(server, tabs, shots):
    page = tabs[VIEWER]
    page.goto(f"{server}/kpis?kpi=1")
    at_sign_in_page(page)
    expect(main(page).get_by_role("heading", name="KPI Desk")).to_be_visible()
    screenshot(page, shots, "signin_gate")


def test_the_viewer_signs_in_and_is_refused_what_needs_more(server, provider, tabs, journey, shots):
    page = tabs[VIEWER]
    sign_in(page, server, provider, VIEWER)
    expect(sidebar(page).get_by_text("Signed in as")).to_contain_text(VIEWER.name)
    expect(nav_link(page, "People")).to_have_count(0)  # an admin's page
    journey.viewer_in = True

    go(page, "KPIs")
    see(page, "New KPI")
    see(page, "Only people with the editor role or above may create KPIs (yours is viewer).")
    expect(main(page).get_by_role("button", name="Create KPI")).to_have_count(0)
    expect(main(page).get_by_label("SQL", exact=True)).to_have_count(0)

    go(page, "Run", "Run KPIs")
    main(page).get_by_label("KPIs to run", exact=True).click()
    page.get_by_role("option", name="Revenue", exact=True).click()
    page.keyboard.press("Escape")  # the list stays open for more choices
    expect(button(page, "Run now")).to_be_disabled()
    expect(button(page, "Run in background")).to_be_disabled()
    screenshot(page, shots, "signin_viewer_run")


def test_a_link_left_open_after_losing_a_role_is_refused_by_the_store(
    server, tabs, store, journey, demo_run
):
    """Made a runner, the viewer gets the drill-down's link to every row of a run; an
    admin takes the role back while the page is open; following the link (the app's
    HTTP route, no page run in between) reaches the store, which refuses it."""
    needs(journey.viewer_in, "the viewer signs in")
    page = tabs[VIEWER]
    store.update_person(VIEWER.email, ADMIN.email, role="runner")
    page.goto(f"{server}/drilldown?execution={demo_run}")
    signed_in_as(page, VIEWER, "runner")
    link = main(page).locator("a.kpi-download").first  # every row (no sort or filter)
    expect(link).to_have_attribute("href", re.compile(r"^/export/.+\.csv"))
    href = link.get_attribute("href")

    store.update_person(VIEWER.email, ADMIN.email, role="viewer")
    response = page.context.request.get(f"{server}{href}")
    assert response.status == 410
    assert "Not allowed (open_export): only people with the runner role" in response.text()
    denied = store.audit_log(action="DENIED", person=VIEWER.email, limit=None)
    [refusal] = [e for e in denied if e.details["operation"] == "open_export"]
    assert refusal.actor == VIEWER.email
    assert not store.audit_log(action="EXPORT", limit=None)
    journey.refused = True

    nav_link(page, "Overview").click()  # their next click in the open page
    signed_in_as(page, VIEWER)
    page.goto(f"{server}/drilldown?execution={demo_run}")
    see(page, "Only people with the runner role or above may export rows (yours is viewer).")
    expect(main(page).locator("a.kpi-download")).to_have_count(0)


def test_the_editor_signs_in_and_creates_a_kpi(server, provider, tabs, store, journey, shots):
    page = tabs[EDITOR]
    page.goto(server)
    at_sign_in_page(page)
    sign_in(page, server, provider, EDITOR)
    journey.editor_in = True

    go(page, "KPIs")
    see(page, "New KPI")
    fill(page, "Name", NEW_KPI)
    fill(page, "Owner", "Sales Ops")
    fill(page, "Short description", "How many orders there are.")
    fill(page, "SQL", NEW_SQL)
    fill(page, "Value column", "n")
    button(page, "Create KPI").click()
    see(page, f"KPI '{NEW_KPI}' created (version 1).")

    [kpi] = [k for k in store.list_kpis() if k.name == NEW_KPI]
    assert kpi.created_by == EDITOR.email and kpi.updated_by == EDITOR.email
    journey.kpi_id = kpi.id
    screenshot(page, shots, "signin_editor_created")


def test_the_audit_names_each_person_by_email(server, provider, tabs, store, journey, shots):
    kpi_id = needs(journey.kpi_id, "the editor creates a KPI")
    [created] = store.audit_log(action="CREATE", kpi_id=kpi_id, limit=None)
    assert created.actor == EDITOR.email
    if journey.refused:
        assert {e.actor for e in store.audit_log(action="DENIED", limit=None)} == {VIEWER.email}

    page = tabs[ADMIN]
    page.goto(server)
    sign_in(page, server, provider, ADMIN)
    expect(nav_link(page, "People")).to_have_count(1)
    go(page, "Audit", "Audit log")
    see(page, re.compile(r"Audit chain intact"))
    person = main(page).get_by_label("Person", exact=True)
    person.fill("eddie")  # a part of the editor's name, in another case
    person.press("Enter")
    expect(table_cell(page, "CREATE")).to_be_attached()
    expect(table_cell(page, EDITOR.email)).to_be_attached()
    expect(table_cell(page, NEW_KPI)).to_be_attached()
    expect(table_cell(page, VIEWER.email)).to_have_count(0)
    screenshot(page, shots, "signin_audit")


def test_a_deactivated_person_is_locked_out_at_the_next_click(server, tabs, store, journey, shots):
    needs(journey.viewer_in, "the viewer signs in")
    page = tabs[VIEWER]
    if not page.url.startswith(server):
        page.goto(server)
    signed_in_as(page, VIEWER)
    idle(page)

    store.update_person(VIEWER.email, ADMIN.email, active=False)
    nav_link(page, "Overview").click()
    see(page, shown(f"{VIEWER.email} has been deactivated"))
    expect(main(page).get_by_role("button", name="Sign out")).to_be_visible()
    idle(page)
    expect(page.get_by_role("dialog")).to_have_count(0)  # e.g. "Page not found"
    expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)
    expect(sidebar(page).get_by_text("Signed in as")).to_have_count(0)
    for name in DEMO_KPIS:
        expect(page.get_by_text(name)).to_have_count(0)

    [refusal] = store.audit_log(action="DENIED", person=VIEWER.email, limit=1)
    assert refusal.actor == VIEWER.email and "deactivated" in refusal.details["reason"]
    screenshot(page, shots, "signin_deactivated")

    page.goto(f"{server}/kpis")  # a fresh load does not get past it either
    see(page, shown(f"{VIEWER.email} has been deactivated"))
    expect(page.get_by_text(NEW_KPI)).to_have_count(0)


def test_signing_out_goes_through_the_provider(server, provider, tabs, journey):
    needs(journey.editor_in, "the editor signs in")
    page = tabs[EDITOR]
    if not page.url.startswith(server):
        page.goto(server)
    signed_in_as(page, EDITOR)
    sidebar(page).get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{provider}/oauth2/end_session?**")
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(f"{server}/")
    at_sign_in_page(page)
    assert "_streamlit_user" not in {c["name"] for c in page.context.cookies()}
    page.goto(f"{server}/kpis")  # and a deep link no longer opens the app
    at_sign_in_page(page)
