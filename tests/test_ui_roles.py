"""Sign-in and roles in the app: every page for every role, the sign-in gate, refusals,
data-source scope, acting as a signed-in person, the People page, and the demo mode.

The app runs with ``KPI_AUTH=oidc`` (set in the environment before it opens its store);
``AppTest.user`` stands in for the identity provider. The test's own store handle keeps
sign-in off, so setup and assertions need no actor. One store is prepared per module
(the demo, four people, a finished run, a second version of Revenue, two queued runs)
and copied for each test.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from ui_helpers import (
    DASHBOARD,
    RECORDED,
    ROOT,
    TIMEOUT_S,
    _clean_caches,
    all_text,
    no_exception,
    open_app,
    shown,
    sqlite_url,
    texts,
)

from kpi_store import AuditAction, KPIStore, Role
from kpi_store.config import Settings

ROLES = [str(role) for role in Role]  # viewer, runner, editor, admin
NAMES = {
    "viewer": "Vera Viewer",
    "runner": "Rui Runner",
    "editor": "Eddie Editor",
    "admin": "Ann Admin",
}
PAGES = ["overview", "kpis", "run", "drilldown", "history", "audit", "data_sources", "people"]
PAGES += ["alerts", "inbox", "storage"]
ADMIN_ONLY = ("people", "storage")
TITLES = {
    "overview": "Overview",
    "kpis": "KPIs",
    "run": "Run KPIs",
    "drilldown": "Drill-down",
    "history": "History",
    "audit": "Audit log",
    "data_sources": "Data sources",
    "people": "People",
    "alerts": "Schedules & alerts",
    "inbox": "Inbox",
    "storage": "Storage",
}
DEMO_KPI_NAMES = ("Orders", "Revenue", "Gross Margin")


def email(role: str) -> str:
    return f"{role}@example.com"


def refusal(least: str, what: str, role: str) -> str:
    return f"Only people with the {least} role or above may {what} (yours is {role})."


def may(role: str, least: str) -> bool:
    return Role(role).includes(Role(least))


def auth_off_store(url: str) -> KPIStore:
    """A handle that checks no actor (sign-in off), whatever the environment says."""
    return KPIStore(url, Settings.from_env().replace(auth="off"))


# -- the prepared store ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def roles_template(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo plus people of each role, a data source no KPI uses, a finished run of
    Orders, Revenue at version 2, and a queued run each by the runner and the admin."""
    folder = tmp_path_factory.mktemp("roles-template")
    shutil.copy(demo_template / "store.db", folder / "store.db")
    other_db = folder / "other.db"
    connection = sqlite3.connect(other_db)
    connection.execute("CREATE TABLE t (x INTEGER)")
    connection.commit()
    connection.close()
    store = auth_off_store(sqlite_url(folder / "store.db"))
    try:
        for role in ROLES:
            store.add_person(email(role), "setup", display_name=NAMES[role], role=role)
        store.add_data_source("other", sqlite_url(other_db), "setup")
        kpis = {k.name: k for k in store.list_kpis()}
        orders, revenue = kpis["Orders"], kpis["Revenue"]
        done = store.execute(orders.id, {}, actor="setup")
        assert done.status == "success"
        spec = revenue.spec().model_dump(mode="json")
        spec["description"] = "Revenue, reworded"
        store.update_kpi(revenue.id, spec, "setup", expected_version=1, note="reword")
        runner_run = store.submit(orders.id, {}, actor=email("runner"))
        admin_run = store.submit(revenue.id, {}, actor=email("admin"))
    finally:
        store.close()
    return {
        "folder": folder,
        "orders": orders.id,
        "revenue": revenue.id,
        "done": done.id,
        "runner_run": runner_run.id,
        "admin_run": admin_run.id,
    }


@pytest.fixture()
def signed_in(
    roles_template: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KPIStore]:
    """A copy of the prepared store, the app set to require sign-in; the test's handle."""
    shutil.copy(roles_template["folder"] / "store.db", tmp_path / "store.db")
    url = sqlite_url(tmp_path / "store.db")
    monkeypatch.setenv("KPI_STORE_URL", url)
    monkeypatch.setenv("KPI_EMBEDDED_WORKER", "0")
    monkeypatch.setenv("KPI_AUTH", "oidc")
    monkeypatch.chdir(ROOT)
    _clean_caches()
    handle = auth_off_store(url)
    yield handle
    handle.close()
    _clean_caches()


@pytest.fixture()
def ids(roles_template: dict[str, Any]) -> dict[str, Any]:
    return roles_template


def visit(
    user: str | None,
    page: str | None = None,
    query: dict[str, Any] | None = None,
    name: str = "",
) -> AppTest:
    """Open the app as ``user`` (an email; None: signed out), then ``page`` if given."""
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S)
    if user is None:
        at.user = {"is_logged_in": False}
    else:
        at.user = {"is_logged_in": True, "email": user, "name": name, "email_verified": True}
    for key, value in (query or {}).items():
        at.query_params[key] = str(value)
    at.run()
    no_exception(at)
    if page:
        at.switch_page(f"pages/{page}.py").run()
        no_exception(at)
    return at


def as_role(role: str, page: str | None = None, query: dict[str, Any] | None = None) -> AppTest:
    return visit(email(role), page, query, NAMES[role])


def captions(at: AppTest) -> list[str]:
    return [shown(c) for c in texts(at.caption)]


def locked_caption(at: AppTest, least: str, what: str, role: str) -> bool:
    return any(refusal(least, what, role) in c for c in captions(at))


# -- each page, each role --------------------------------------------------------------------


def check_overview(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    run_all = at.button(key="ov_run_all")
    assert run_all.label == "Run all (8)"
    assert run_all.disabled is (not may(role, "runner"))
    if not may(role, "runner"):
        assert run_all.help == refusal("runner", "run KPIs", role)
    text = all_text(at)
    assert all(name in text for name in DEMO_KPI_NAMES)


def check_kpis(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    # The KPI opened by the link: read-only below editor, Archive and Delete by role.
    kpi = ids["orders"]
    at.query_params["kpi"] = str(kpi)
    at.run()
    no_exception(at)
    assert "Orders" in texts(at.header)
    archive, delete = at.button(key="kp_archive"), at.button(key="kp_delete")
    assert archive.disabled is (not may(role, "editor"))
    assert delete.disabled is (not may(role, "admin"))
    if not may(role, "editor"):
        assert archive.help == refusal("editor", "archive KPIs", role)
    if not may(role, "admin"):
        assert delete.help == refusal("admin", "delete KPIs", role)
    editable = [t for t in at.text_input if str(t.key).startswith(f"kf_{kpi}_v")]
    if may(role, "editor"):
        assert editable and not locked_caption(at, "editor", "edit KPIs", role)
    else:
        assert not editable
        assert locked_caption(at, "editor", "edit KPIs", role)
        assert at.code and "SELECT" in at.code[0].value.upper()
    # The create form ("New KPI"): a lock caption instead of the form below editor.
    at.selectbox(key="kp_open").set_value(None).run()
    no_exception(at)
    assert "New KPI" in texts(at.header)
    has_form = any(t.key == "kf_new_0_name" for t in at.text_input)
    assert has_form is may(role, "editor")
    assert locked_caption(at, "editor", "create KPIs", role) is (not may(role, "editor"))


def check_run(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    # Nothing chosen: nobody can press Run now.
    assert at.button(key="rn_now").disabled and at.button(key="rn_bg").disabled
    at.multiselect(key="rn_kpis").set_value([ids["orders"]]).run()
    no_exception(at)
    for key in ("rn_now", "rn_bg"):
        button = at.button(key=key)
        assert button.disabled is (not may(role, "runner"))
        assert (button.help or None) == (
            None if may(role, "runner") else refusal("runner", "run KPIs", role)
        )
    # Cancel only on one's own queued runs; an admin on everyone's.
    cancels = {b.key for b in at.button if str(b.key).startswith("rn_cancel_")}
    expected = {
        "viewer": set(),
        "runner": {f"rn_cancel_{ids['runner_run']}"},
        "editor": set(),
        "admin": {f"rn_cancel_{ids['runner_run']}", f"rn_cancel_{ids['admin_run']}"},
    }[role]
    assert cancels == expected
    # "My runs": the person's own runs.
    assert "My runs" in texts(at.header)
    if role in ("runner", "admin"):
        mine = at.dataframe[-1].value
        assert list(mine["Run"]) == [ids[f"{role}_run"]]
    else:
        assert "You have not run anything yet." in captions(at)


def check_drilldown(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    at.query_params["execution"] = str(ids["done"])
    at.run()
    no_exception(at)
    assert at.selectbox(key="dd_run").value == ids["done"]
    buttons = at.get("download_button")  # this page's rows (and all rows, when locked)
    assert any(b.label.startswith("Download this page") for b in buttons)
    full_link = any('class="kpi-download"' in m for m in texts(at.markdown))  # all rows
    if may(role, "runner"):
        assert buttons and not any(b.proto.disabled for b in buttons)
        assert full_link
        assert not locked_caption(at, "runner", "export rows", role)
    else:
        assert buttons and all(b.proto.disabled for b in buttons)
        assert not full_link
        assert locked_caption(at, "runner", "export rows", role)


def check_history(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    at.query_params["kpi"] = str(ids["revenue"])
    at.run()
    no_exception(at)
    assert at.selectbox(key="hi_kpi").value == ids["revenue"]
    restore = at.button(key="hi_restore_btn")
    assert restore.disabled is (not may(role, "editor"))
    assert (restore.help or None) == (
        None if may(role, "editor") else refusal("editor", "restore a version", role)
    )


def check_audit(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    chain = any("Audit chain intact" in s for s in texts(at.success))
    assert chain is may(role, "admin")
    note = any("an admin sees every entry and the chain check" in c for c in captions(at))
    assert note is (not may(role, "admin"))
    [export] = at.get("download_button")
    assert export.proto.disabled is (not may(role, "admin"))
    if not may(role, "admin"):
        assert export.proto.help == refusal("admin", "export the audit log", role)
    frame = at.dataframe[0].value
    actions = set(frame["action"])
    if may(role, "admin"):
        assert AuditAction.PERSON_ADD in actions  # entries about people, not KPIs
        assert (frame["kpi"] == "").any()
    else:
        assert AuditAction.PERSON_ADD not in actions
        assert AuditAction.DATA_SOURCE_ADD not in actions
        assert (frame["kpi"] != "").all()  # only entries about KPIs


def check_data_sources(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    names = set(at.dataframe[0].value["Name"])
    assert {"demo", "other"} <= names
    what = "add, fill or remove data sources"
    if may(role, "admin"):
        assert len(at.tabs) == 3 and not locked_caption(at, "admin", what, role)
    else:
        assert not at.tabs
        assert locked_caption(at, "admin", what, role)


def check_people(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    assert role == "admin"  # the others cannot reach it (test below)
    people = at.dataframe[0].value
    assert set(people["Email"]) == {email(r) for r in ROLES}
    assert dict(zip(people["Email"], people["Role"], strict=True))[email("runner")] == "runner"
    assert len(at.tabs) == 2
    assert not any("Sign-in is off" in i for i in texts(at.info))


def check_alerts(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    for key, what in (("sc_create", "create schedules"), ("ar_create", "create alert rules")):
        create = at.button(key=key)
        if may(role, "editor"):
            assert not (create.help or "").startswith("Only people"), (key, create.help)
        else:
            assert create.disabled and refusal("editor", what, role) in (create.help or ""), (
                key,
                create.help,
            )


def check_inbox(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    assert any("Inbox" in link.label for link in at.sidebar.get("page_link"))


def check_storage(at: AppTest, role: str, ids: dict[str, Any]) -> None:
    assert role == "admin"  # the others cannot reach it (like People)
    assert at.dataframe


CHECKS = {
    "overview": check_overview,
    "kpis": check_kpis,
    "run": check_run,
    "drilldown": check_drilldown,
    "history": check_history,
    "audit": check_audit,
    "data_sources": check_data_sources,
    "people": check_people,
    "alerts": check_alerts,
    "inbox": check_inbox,
    "storage": check_storage,
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PAGES)
def test_each_page_for_each_role(signed_in, ids, page, role):
    at = as_role(role)
    sidebar = [shown(c) for c in texts(at.sidebar.caption)]
    who = f"Signed in as {NAMES[role]} <{email(role)}> · {role}"
    assert any(who in c for c in sidebar), sidebar
    assert not any("Sign-in is off" in c for c in sidebar)
    if page in ADMIN_ONLY and role != "admin":
        # Not in their navigation: the page cannot be opened.
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(f"pages/{page}.py")
        return
    at.switch_page(f"pages/{page}.py").run()
    no_exception(at)
    assert TITLES[page] in texts(at.title)
    CHECKS[page](at, role, ids)
    no_exception(at)


@pytest.mark.parametrize("role", ["viewer", "runner", "editor"])
def test_people_page_locks_itself_when_opened_anyway(signed_in, monkeypatch, role):
    # Were the navigation to offer it (it does not), the page itself says no.
    monkeypatch.setattr("kpi_ui.app.ADMIN_PAGES", frozenset())
    at = as_role(role, "people")
    assert "People" in texts(at.title)
    assert locked_caption(at, "admin", "manage people", role)
    assert not at.dataframe and not at.tabs


def test_people_link_to_a_non_admin_lands_on_the_overview(signed_in):
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S)
    at.user = {"is_logged_in": True, "email": email("viewer"), "email_verified": True}
    at.switch_page("pages/people.py").run()  # a deep link: /people
    no_exception(at)
    assert texts(at.title) == ["Overview"]
    assert not any("manage people" in c for c in captions(at))


def test_an_admin_demoted_meanwhile_loses_the_people_page(signed_in):
    at = as_role("admin", "people")
    assert "People" in texts(at.title)
    signed_in.add_person("second@example.com", "setup", role="admin")  # not the last admin
    signed_in.update_person(email("admin"), "setup", role="viewer")
    at.run()  # their next click
    no_exception(at)
    assert "People" not in texts(at.title)
    assert any("· viewer" in shown(c) for c in texts(at.sidebar.caption))


# -- signed out, refused ---------------------------------------------------------------------


def assert_gate(at: AppTest) -> None:
    assert texts(at.title) == ["KPI Desk"]
    assert [b.label for b in at.button] == ["Sign in"]
    text = all_text(at)
    assert "Sign in to see your team's KPIs" in text
    assert not any(name in text for name in DEMO_KPI_NAMES)
    assert not at.dataframe and not at.metric


@pytest.mark.parametrize("query", [None, {"kpi": 1}, {"execution": 1}])
def test_signed_out_visitor_sees_only_the_gate(signed_in, query):
    at = visit(None, query=query)
    assert_gate(at)
    # The gate is the only page: no other page can be opened.
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/kpis.py")


def test_unknown_person_refused_when_only_added_people_may_enter(signed_in, monkeypatch):
    monkeypatch.setenv("KPI_DEFAULT_ROLE", "none")
    at = visit("stranger@example.com", name="Stan Stranger")
    assert texts(at.title) == ["KPI Desk"]
    [error] = [shown(e) for e in texts(at.error)]
    assert "stranger@example.com is not known here" in error
    assert "ask an admin to add you" in error
    assert [b.label for b in at.button] == ["Sign out"]
    assert not any(name in all_text(at) for name in DEMO_KPI_NAMES)
    assert all(p.email != "stranger@example.com" for p in signed_in.people())


def test_unknown_person_joins_as_viewer_by_default(signed_in):
    at = visit("newcomer@example.com", "run", name="Nia Newcomer")
    assert "Run KPIs" in texts(at.title)
    assert signed_in.person("newcomer@example.com").role == Role.VIEWER


def test_deactivated_person_is_refused(signed_in):
    signed_in.update_person(email("editor"), "setup", active=False)
    at = as_role("editor")
    assert texts(at.title) == ["KPI Desk"]
    assert any("has been deactivated here" in shown(e) for e in texts(at.error))
    assert not any(name in all_text(at) for name in DEMO_KPI_NAMES)


def test_unverified_email_is_refused(signed_in):
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S)
    at.user = {"is_logged_in": True, "email": email("admin"), "email_verified": False}
    at.run()
    no_exception(at)
    assert texts(at.title) == ["KPI Desk"]
    assert any("has not verified the email" in shown(e) for e in texts(at.error))


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"email_verified": "false"}, "has not verified the email"),
        ({"email": ""}, "is not an email address"),
        ({"email": "no-at-sign"}, "is not an email address"),
    ],
)
def test_a_sign_in_without_a_usable_email_is_refused_plainly(signed_in, claims, message):
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S)
    at.user = {"is_logged_in": True, "email": email("admin"), "name": "A", **claims}
    at.run()
    no_exception(at)
    assert texts(at.title) == ["KPI Desk"]
    assert any(message in shown(e) for e in texts(at.error))


# -- data-source scope -----------------------------------------------------------------------


def test_person_scoped_to_another_source_sees_no_demo_kpis(signed_in, ids):
    signed_in.update_person(email("viewer"), "setup", data_sources=["other"])
    at = as_role("viewer")
    assert "Overview" in texts(at.title)
    text = all_text(at)
    assert "There are no KPIs open to you yet." in text
    assert not any(name in text for name in DEMO_KPI_NAMES)
    assert not [b for b in at.button if b.key == "ov_demo"]  # nothing to load for a viewer
    at.switch_page("pages/run.py").run()
    assert "There are no active KPIs to run yet." in texts(at.info)
    # A link to a demo KPI opens nothing of it.
    at = as_role("viewer", "kpis", {"kpi": ids["orders"]})
    assert "Orders" not in texts(at.header)
    assert not any("Orders" in m for m in texts(at.markdown))


@pytest.mark.parametrize("role", ROLES)
def test_load_the_demo_is_for_admins(app_url, monkeypatch, role):
    setup = auth_off_store(app_url)
    setup.add_person(email(role), "setup", display_name=NAMES[role], role=role)
    setup.close()
    monkeypatch.setenv("KPI_AUTH", "oidc")
    at = as_role(role)
    if not Role(role).includes(Role.EDITOR):  # told who can add KPIs, offered nothing
        assert "There are no KPIs open to you yet." in all_text(at)
        assert not [b for b in at.button if b.key == "ov_demo"]
        return
    demo = at.button(key="ov_demo")
    assert demo.disabled is (role != "admin")
    assert (demo.help or None) == (
        None if role == "admin" else refusal("admin", "load the demo", role)
    )


# -- acting as a signed-in person ------------------------------------------------------------


def test_runner_runs_a_kpi_as_themselves(signed_in, ids):
    at = as_role("runner", "run", {"kpi": ids["orders"]})
    assert at.multiselect(key="rn_kpis").value == [ids["orders"]]
    at.button(key="rn_now").click().run()
    no_exception(at)
    known = {ids["done"], ids["runner_run"], ids["admin_run"]}
    [run] = [r for r in signed_in.executions(kpi_id=ids["orders"]) if r.id not in known]
    assert run.status == "success" and run.mode == "now"
    assert run.requested_by == email("runner")
    assert any(f"run #{run.id}" in m for m in texts(at.markdown))
    assert run.id in list(at.dataframe[-1].value["Run"])  # in "My runs"


def test_admin_changes_a_role_on_the_people_page(signed_in, ids):
    at = as_role("admin", "people")
    at.selectbox(key="pp_who").set_value(email("viewer")).run()
    [role_box] = [s for s in at.tabs[0].selectbox if s.label == "Role"]
    assert role_box.value == Role.VIEWER
    role_box.set_value(Role.EDITOR)
    [save] = [b for b in at.tabs[0].button if b.label == "Save"]
    save.click().run()
    no_exception(at)
    assert any("editor, active" in s for s in texts(at.success))
    assert signed_in.person(email("viewer")).role == Role.EDITOR
    updates = signed_in.audit_log(action=AuditAction.PERSON_UPDATE)
    assert any(
        e.actor == email("admin") and e.details.get("email") == email("viewer") for e in updates
    ), [(e.actor, e.details) for e in updates]
    # They hold the new role from their next click: restoring a version is open to them.
    at = as_role("viewer", "history")
    assert any("· editor" in shown(c) for c in texts(at.sidebar.caption))
    at.query_params["kpi"] = str(ids["revenue"])
    at.run()
    assert at.button(key="hi_restore_btn").disabled is False


# -- the demo mode (sign-in off) -------------------------------------------------------------


def test_demo_mode_shows_the_notice_and_records_typed_names(demo_store, monkeypatch):
    monkeypatch.delenv("KPI_AUTH", raising=False)
    orders = next(k for k in demo_store.list_kpis() if k.name == "Orders")
    at = open_app(actor=None)
    sidebar = texts(at.sidebar.caption)
    assert any("Sign-in is off" in c for c in sidebar)
    assert any("Enter your name" in c for c in sidebar)
    at.sidebar.text_input(key="actor").input("Tess Tester").run()
    no_exception(at)
    at.switch_page("pages/run.py").run()
    at.multiselect(key="rn_kpis").set_value([orders.id]).run()
    at.button(key="rn_now").click().run()
    no_exception(at)
    [run] = demo_store.executions(kpi_id=orders.id)
    assert run.requested_by == RECORDED == "Tess Tester (unverified)"
    # Every page is open in the demo mode, the People page with its notice.
    at.switch_page("pages/people.py").run()
    no_exception(at)
    assert any("Sign-in is off" in i for i in texts(at.info))
