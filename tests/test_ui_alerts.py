"""The Schedules & alerts page, the Inbox and the alert badge on Overview cards (AppTest).

Each test runs the real dashboard over a copy of the demo store (no embedded worker): the
page's forms create and change schedules, rules and webhooks in the store, and the test's
own handle fires ticks (``run_due_schedules(now)``), runs KPIs (its run-finished hook
evaluates the rules), and delivers notifications, so nothing waits for a clock. Demo
figures: Return Rate is 8 % against a target of 6.5 % (lower is better: off target),
Revenue is on target.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from ui_helpers import (
    DASHBOARD,
    RECORDED,
    TIMEOUT_S,
    all_text,
    no_exception,
    open_app,
    shown,
    texts,
)

from kpi_store import KPIStore
from kpi_store.schedules import fire_times

EDITOR_ONLY = "Only people with the editor role or above may {} (yours is viewer)."
ADMIN_ONLY = "Only people with the admin role or above may {} (yours is viewer)."


def kpi_id(store: KPIStore, name: str) -> int:
    return next(k.id for k in store.list_kpis() if k.name == name)


def frame_with(at: AppTest, column: str) -> Any:
    """The first table on the page that has ``column``."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, f"no table with a {column!r} column"
    return found[0]


def sidebar_links(at: AppTest) -> list[str]:
    return [shown(str(link.label)) for link in at.sidebar.get("page_link")]


def node_text(node: Any) -> str:
    """Every text inside an element of the page (a card, an inbox entry)."""
    parts: list[str] = []

    def walk(element: Any) -> None:
        for child in getattr(element, "children", {}).values():
            for name in ("value", "body", "label"):
                value = getattr(child, name, None)
                if isinstance(value, str):
                    parts.append(shown(value))
            proto = getattr(child, "proto", None)
            body = getattr(proto, "body", None)
            if isinstance(body, str):
                parts.append(shown(body))
            walk(child)

    walk(node)
    return "\n".join(parts)


def firing_rule(store: KPIStore, subscriber: str = RECORDED) -> tuple[int, int]:
    """An off-target rule on Return Rate, ``subscriber`` subscribed, and a run that fires
    it: (rule id, run id)."""
    returns = kpi_id(store, "Return Rate")
    rule = store.create_rule(returns, "setup", name="Returns too high", condition="off_target")
    store.subscribe(rule.id, subscriber)
    run = store.execute(returns, actor="setup")
    assert run.status == "success" and store.rule(rule.id).state == "firing"
    return rule.id, run.id


# -- schedules -------------------------------------------------------------------------------


def test_a_schedule_made_in_the_form_shows_its_words_and_next_five_times(demo_store):
    returns = kpi_id(demo_store, "Return Rate")
    at = open_app("alerts")
    assert "Schedules & alerts" in texts(at.title)
    at.selectbox(key="sc_new_kpi").set_value(returns).run()
    at.text_input(key="sc_new_cron").input("61 * * * *").run()
    no_exception(at)
    assert "its minute field '61' is not valid" in shown(all_text(at))
    assert at.button(key="sc_create").disabled

    at.text_input(key="sc_new_cron").input("30 2 * * *")
    at.selectbox(key="sc_new_zone").set_value("Europe/Berlin").run()
    no_exception(at)
    text = shown(all_text(at))
    assert "**At 02:30** (Europe/Berlin)" in text
    expected = fire_times("30 2 * * *", "Europe/Berlin", None, 5)
    shown_times = next(t for t in texts(at.text) if t.count("\n") == 4).splitlines()
    assert shown_times == [f"{m:%Y-%m-%d %H:%M:%S %Z}" for m in expected]
    assert all(" 02:30:00 " in t for t in shown_times)
    at.selectbox(key=f"sc_new_p_{returns}_region").set_value("North").run()
    at.button(key="sc_create").click().run()
    no_exception(at)

    [schedule] = demo_store.schedules()
    assert (schedule.kpi_id, schedule.cron, schedule.timezone) == (
        returns,
        "30 2 * * *",
        "Europe/Berlin",
    )
    assert schedule.params == {"region": "North"} and schedule.run_as == RECORDED
    first = expected[0].astimezone(dt.UTC).replace(tzinfo=None)
    assert schedule.next_run_at == first
    assert any(f"Schedule #{schedule.id} created" in shown(s) for s in texts(at.success))
    table = frame_with(at, "Next run")
    assert list(table["When"]) == ["At 02:30"]
    assert list(table["Next run"]) == [f"{expected[0]:%Y-%m-%d %H:%M:%S %Z}"]
    assert list(table["Parameters"]) == ["region=North"]


def test_pause_resume_change_and_delete_a_schedule(demo_store):
    revenue = kpi_id(demo_store, "Revenue")
    made = demo_store.create_schedule(revenue, "0 7 * * 1-5", "setup", timezone="UTC")
    at = open_app("alerts")
    at.button(key="sc_pause").click().run()
    no_exception(at)
    paused = demo_store.schedule(made.id)
    assert not paused.active and paused.next_run_at is None
    assert list(frame_with(at, "Next run")["Next run"]) == ["paused"]

    at.button(key="sc_resume").click().run()
    no_exception(at)
    assert demo_store.schedule(made.id).active
    assert demo_store.schedule(made.id).next_run_at is not None

    at.text_input(key=f"sc_edit_{made.id}_cron").input("@hourly").run()
    assert "Every hour" in shown(all_text(at))
    at.button(key=f"sc_edit_{made.id}_save").click().run()
    no_exception(at)
    changed = demo_store.schedule(made.id)
    assert changed.cron == "@hourly" and changed.run_as == "setup"  # not taken over

    at.button(key="sc_ask_delete").click().run()
    assert any("Delete schedule" in shown(w) for w in texts(at.warning))
    assert demo_store.schedules() != []  # asked, not done
    at.button(key="sc_delete_yes").click().run()
    no_exception(at)
    assert demo_store.schedules() == []
    assert any(f"Schedule #{made.id} deleted" in s for s in texts(at.success))


def test_the_tick_log_says_what_each_due_time_did(demo_store):
    revenue = kpi_id(demo_store, "Revenue")
    made = demo_store.create_schedule(revenue, "*/5 * * * *", "setup")
    [fired] = demo_store.run_due_schedules(made.next_run_at)
    later = demo_store.schedule(made.id).next_run_at
    [skipped] = demo_store.run_due_schedules(later)  # no worker: the first run still queued
    at = open_app("alerts")
    no_exception(at)
    log = frame_with(at, "Outcome")
    assert list(log["Outcome"]) == ["skipped", "fired"]
    assert f"Run {fired.run_id} of this schedule was still pending" in log["Reason"][0]
    assert log["Run"][1] == f"drilldown?execution={fired.run_id}"
    assert skipped.run_id is None
    assert list(frame_with(at, "Next run")["Last run"]) == [f"drilldown?execution={fired.run_id}"]


# -- alert rules -----------------------------------------------------------------------------


def test_a_rule_made_in_the_form_fires_and_logs_why(demo_store):
    returns = kpi_id(demo_store, "Return Rate")
    at = open_app("alerts")
    at.selectbox(key="ar_new_kpi").set_value(returns).run()
    assert at.selectbox(key=f"ar_new_{returns}_cond").value == "off_target"
    at.text_input(key=f"ar_new_{returns}_name").input("Returns too high").run()
    at.button(key="ar_create").click().run()
    no_exception(at)
    [rule] = demo_store.rules()
    assert (rule.name, rule.condition, rule.official) == ("Returns too high", "off_target", True)
    assert rule.subscribers == (RECORDED,)  # "Subscribe me" is on by default

    run = demo_store.execute(returns, actor="setup")
    at.run()
    no_exception(at)
    table = frame_with(at, "Condition")
    assert list(table["State"]) == ["Firing"] and list(table["Subscribed"]) == [True]
    log = frame_with(at, "Notified")
    assert list(log["State"]) == ["OK → Firing"]
    assert list(log["Notified"]) == ["yes: firing (1 told)"]
    assert list(log["Run"]) == [f"drilldown?execution={run.id}"]
    assert list(log["Value"]) == ["8%"] and list(log["Why"]) == ["started firing"]


def test_a_threshold_rule_tested_against_the_latest_run_changes_nothing(demo_store):
    revenue = kpi_id(demo_store, "Revenue")
    run = demo_store.execute(revenue, actor="setup")
    at = open_app("alerts")
    at.selectbox(key="ar_new_kpi").set_value(revenue).run()
    prefix = f"ar_new_{revenue}"
    at.selectbox(key=f"{prefix}_cond").set_value("threshold").run()
    at.text_input(key=f"{prefix}_name").input("Revenue above a million")
    at.selectbox(key=f"{prefix}_op").set_value(">")
    at.text_input(key=f"{prefix}_value").input("1,000,000")
    at.toggle(key="ar_new_subscribe").set_value(False).run()
    at.button(key="ar_create").click().run()
    no_exception(at)
    [rule] = demo_store.rules()
    assert (rule.op, rule.value, rule.subscribers) == (">", 1_000_000.0, ())

    at.button(key="ar_test").click().run()
    no_exception(at)
    [tested] = [shown(w) for w in texts(at.warning) if "Against run" in shown(w)]
    assert f"Against run #{run.id}" in tested and "$5,506,100.50" in tested
    assert "State OK → Firing; it would notify (firing)" in tested
    assert demo_store.rule(rule.id).state == "ok"  # a test changes nothing
    assert demo_store.rule_evaluations(rule.id) == []
    assert "No evaluation yet" in all_text(at)


def test_subscribe_mute_edit_and_delete_a_rule(demo_store):
    returns = kpi_id(demo_store, "Return Rate")
    rule = demo_store.create_rule(returns, "setup", name="Returns high", condition="off_target")
    at = open_app("alerts")
    at.button(key="ar_sub").click().run()
    no_exception(at)
    assert demo_store.rule(rule.id).subscribers == (RECORDED,)
    at.button(key="ar_unsub").click().run()
    assert demo_store.rule(rule.id).subscribers == ()

    at.selectbox(key="ar_mute_for").set_value("for 1 day").run()
    at.button(key="ar_mute").click().run()
    no_exception(at)
    until = demo_store.rule(rule.id).muted_until
    in_a_day = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=1)
    assert until is not None and abs((until - in_a_day).total_seconds()) < 600
    assert "muted until" in list(frame_with(at, "Condition")["Muted"])[0]
    at.button(key="ar_unmute").click().run()
    assert demo_store.rule(rule.id).muted_until is None
    at.selectbox(key="ar_mute_for").set_value("until unmuted").run()
    at.button(key="ar_mute").click().run()
    assert list(frame_with(at, "Condition")["Muted"]) == ["muted until unmuted"]

    at.text_input(key=f"ar_edit_{rule.id}_name").input("Returns far too high")
    at.toggle(key=f"ar_edit_{rule.id}_amber").set_value(True).run()
    at.button(key=f"ar_edit_{rule.id}_save").click().run()
    no_exception(at)
    edited = demo_store.rule(rule.id)
    assert (edited.name, edited.include_amber) == ("Returns far too high", True)

    at.button(key="ar_ask_delete").click().run()
    at.button(key="ar_delete_yes").click().run()
    no_exception(at)
    assert demo_store.rules() == []


# -- inbox and overview ----------------------------------------------------------------------


def test_the_inbox_shows_a_firing_and_mark_read_updates_the_sidebar(demo_store):
    rule_id, run_id = firing_rule(demo_store)
    demo_store.send_test_notification(RECORDED)
    at = open_app("inbox")
    no_exception(at)
    assert "**Inbox · 2 unread**" in [str(link.label) for link in at.sidebar.get("page_link")]
    [test_item, firing] = demo_store.inbox(actor=RECORDED)  # newest first
    entry = node_text(at.get_by_key(f"ib_item_{firing.id}"))
    assert "Returns too high' is firing" in entry and "value 8%" in entry
    assert "Alert" in entry and "New" in entry
    assert f"Run #{run_id}" in entry and "Return Rate" in entry
    assert any(shown(m).startswith("**Return Rate") for m in texts(at.markdown))  # unread: bold

    at.button(key=f"ib_read_{firing.id}").click().run()
    no_exception(at)
    assert sidebar_links(at)[0] == "**Inbox · 1 unread**"
    assert demo_store.unread_count(actor=RECORDED) == 1
    assert not [b for b in at.button if b.key == f"ib_read_{firing.id}"]
    at.button(key="ib_all_read").click().run()
    no_exception(at)
    assert sidebar_links(at)[0] == "Inbox · 0 unread"
    assert demo_store.unread_count(actor=RECORDED) == 0
    assert test_item.event.kind == "test" and rule_id


def test_overview_cards_show_the_worst_alert_state(demo_store):
    firing_rule(demo_store)
    revenue = kpi_id(demo_store, "Revenue")
    demo_store.create_rule(revenue, "setup", name="Revenue low", condition="off_target")
    demo_store.execute(revenue, actor="setup")
    at = open_app("overview")
    no_exception(at)
    returns_card = node_text(at.get_by_key(f"kpi_card_{kpi_id(demo_store, 'Return Rate')}"))
    revenue_card = node_text(at.get_by_key(f"kpi_card_{revenue}"))
    orders_card = node_text(at.get_by_key(f"kpi_card_{kpi_id(demo_store, 'Orders')}"))
    assert ":red-badge[:material/notifications_active: Alert: firing]" in returns_card
    assert ":green-badge[:material/check_circle: Alert: ok]" in revenue_card
    assert "Alert:" not in orders_card


# -- channels --------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_webhook_added_shows_its_secret_once_and_a_failing_one_is_red(demo_store):
    at = open_app("alerts")
    at.text_input(key="ch_name").input("team-chat")
    at.text_input(key="ch_url").input(f"http://127.0.0.1:{closed_port()}/hook/abc")
    at.button(key="FormSubmitter:ch_add-Add webhook").click().run()
    no_exception(at)
    [secret] = [c.value for c in at.code]
    assert len(secret) >= 32
    assert any("signing secret" in shown(w) for w in texts(at.warning))
    [hook] = demo_store.webhooks()
    assert hook.name == "team-chat" and "abc" not in hook.url
    at.run()  # the next click: the secret is gone for good
    assert not at.code

    demo_store.send_test_notification("setup", webhook="team-chat")
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    while not demo_store.webhooks()[0].failing:  # each try refused; retried later
        moment += dt.timedelta(hours=1)
        demo_store.deliver_due(moment)
    at.run()
    no_exception(at)
    errors = [shown(e) for e in texts(at.error)]
    assert any("Webhook 'team-chat' is failing. Last error:" in e for e in errors), errors
    assert list(frame_with(at, "Health")["Health"]) == ["failing"]
    at.button(key="ch_ask_remove").click().run()
    at.button(key="ch_remove_yes").click().run()
    assert demo_store.webhooks() == []


def test_send_a_test_to_my_inbox(demo_store):
    at = open_app("alerts")
    at.button(key="ch_test_me").click().run()
    no_exception(at)
    [item] = demo_store.inbox(actor=RECORDED)
    assert item.event.kind == "test"
    assert "**Inbox · 1 unread**" in [str(link.label) for link in at.sidebar.get("page_link")]


# -- roles -----------------------------------------------------------------------------------


@pytest.fixture()
def viewer_app(demo_store, monkeypatch) -> dict[str, Any]:
    """Sign-in on for the app; a viewer, a schedule and a rule made by others."""
    monkeypatch.setenv("KPI_AUTH", "oidc")
    demo_store.add_person("viewer@example.com", "setup", display_name="Vera", role="viewer")
    revenue = kpi_id(demo_store, "Revenue")
    schedule = demo_store.create_schedule(revenue, "@daily", "setup")
    rule = demo_store.create_rule(revenue, "setup", name="Revenue low", condition="off_target")
    return {"schedule": schedule.id, "rule": rule.id}


def test_a_viewer_sees_the_forms_disabled_and_may_subscribe(demo_store, viewer_app):
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT_S)
    at.user = {"is_logged_in": True, "email": "viewer@example.com", "email_verified": True}
    at.run()
    at.switch_page("pages/alerts.py").run()
    no_exception(at)
    create = at.button(key="sc_create")
    assert create.disabled and create.help == EDITOR_ONLY.format("create schedules")
    assert at.text_input(key="sc_new_cron").disabled
    pause = at.button(key="sc_pause")
    assert pause.disabled and pause.help == EDITOR_ONLY.format("change schedules")
    assert at.button(key="sc_ask_delete").disabled
    assert at.button(key="ar_create").disabled
    assert at.button(key="ar_mute").disabled and at.button(key="ar_ask_delete").disabled
    assert at.button(key="FormSubmitter:ch_add-Add webhook").disabled
    assert any(
        ADMIN_ONLY.format("add, remove or test webhooks") in shown(c) for c in texts(at.caption)
    )
    assert not at.button(key="ar_test").disabled
    at.button(key="ar_sub").click().run()
    no_exception(at)
    assert demo_store.rule(viewer_app["rule"]).subscribers == ("viewer@example.com",)
    assert demo_store.schedule(viewer_app["schedule"]).active  # nothing else changed
    assert "Inbox · 0 unread" in sidebar_links(at)
