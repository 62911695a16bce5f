"""The Alert rules tab of the Schedules & alerts page: every rule with its state; the
chosen rule's settings, subscribing and unsubscribing oneself, muting, "test against the
latest run", its evaluation log (why it did or did not notify), editing and deleting;
and a new rule."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from kpi_store import KPI, KPIStore, Role
from kpi_store.alert_records import AlertEvaluation, AlertRule, RuleTest
from kpi_store.alert_states import AlertState
from kpi_store.formats import MISSING, format_number, format_params, format_time, format_value

from .actions import act, ask_to_confirm, confirmed
from .alert_look import ALERT_STYLE, FOREVER, alert_badge, muted_text, state_word
from .identity import Viewer
from .links import run_link, run_url
from .messages import friendly_errors, md
from .rule_form import edit_rule_form, new_rule_form
from .widgets import kpi_label

DELETE_KEY, TESTED_KEY = "ar_delete", "ar_tested"
MUTE_FOR = {"for 1 hour": dt.timedelta(hours=1), "for 1 day": dt.timedelta(days=1)}
UNTIL_UNMUTED = "until unmuted"
STATE_COLOURS = {  # the list's State cell, in its badge's colour
    "red": "background-color: #fee2e2; color: #991b1b",
    "orange": "background-color: #ffedd5; color: #9a3412",
    "gray": "background-color: #f3f4f6; color: #374151",
    "green": "background-color: #dcfce7; color: #166534",
}


def rules_tab(store: KPIStore, me: Viewer, kpis: dict[int, KPI], focus: int | None) -> None:
    """The whole tab: list, the chosen rule, a new one."""
    found: list[AlertRule] = []
    with friendly_errors():
        found = store.rules(focus, actor=me.actor)
    if found:
        rule_table(found, kpis, me)
        chosen = pick_rule(found, kpis)
        if chosen is not None and chosen.kpi_id in kpis:
            rule_panel(store, me, chosen, kpis[chosen.kpi_id])
    else:
        st.caption("No alert rules yet: nobody is told when a KPI goes off target.")
    with st.expander("New alert rule", icon=":material/add_alert:", expanded=not found):
        new_rule_form(store, me, kpis, focus)


def mine(rule: AlertRule, me: Viewer) -> bool:
    """Whether the viewer is among the rule's subscribers."""
    return rule.subscribed(me.actor)


def watches(rule: AlertRule) -> str:
    return "official number" if rule.official else format_params(rule.params)


def _state_cell(word: str) -> str:
    style = next((s for s in ALERT_STYLE.values() if s[0] == word), None)
    return STATE_COLOURS.get(style[1], "") if style else ""


def rule_table(found: list[AlertRule], kpis: dict[int, KPI], me: Viewer) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = []
    for r in found:
        kpi = kpis.get(r.kpi_id)
        rows.append(
            {
                "ID": r.id,
                "KPI": kpi_label(kpi) if kpi else f"#{r.kpi_id}",
                "Rule": r.name,
                "Watches": watches(r),
                "Condition": r.describe(kpi.unit if kpi else ""),
                "State": state_word(r.state),
                "Since": format_time(r.state_since),
                "Muted": muted_text(r.muted_until, now) or "",
                "Subscribers": len(r.subscribers),
                "Subscribed": mine(r, me),
                "Active": r.active,
            }
        )
    frame = pd.DataFrame(rows)
    st.dataframe(
        frame.style.map(_state_cell, subset=["State"]),
        hide_index=True,
        width="stretch",
        key="ar_table",
    )


def pick_rule(found: list[AlertRule], kpis: dict[int, KPI]) -> AlertRule | None:
    by_id = {r.id: r for r in found}

    def label(rule_id: int) -> str:
        r = by_id[rule_id]
        name = kpis[r.kpi_id].name if r.kpi_id in kpis else f"KPI #{r.kpi_id}"
        return f"#{r.id} · {r.name} · {name} · {state_word(r.state)}"

    chosen = st.selectbox("Alert rule", list(by_id), format_func=label, key="ar_pick")
    return by_id.get(chosen) if chosen is not None else None


# -- one rule -------------------------------------------------------------------------------


def rule_panel(store: KPIStore, me: Viewer, rule: AlertRule, kpi: KPI) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    head, badge = st.columns([4, 1], vertical_alignment="center")
    head.markdown(f"**{md(rule.name)}** · {md(kpi.name)} · {md(rule.describe(kpi.unit))}")
    with badge:
        alert_badge(rule.state, help_text=f"since {format_time(rule.state_since)}")
    facts = [
        f"Watches the {watches(rule)}",
        f"fires after {rule.for_runs} run(s) in a row, recovers after {rule.recover_runs}",
        "repeats every " + _hours(rule.renotify_after_s) if rule.renotify_after_s else "no repeat",
        f"no data {'notifies' if rule.notify_on_no_data else 'is quiet'}",
        f"a failed run {'notifies' if rule.notify_on_error else 'is quiet'}",
    ]
    if rule.webhooks:
        facts.append("webhooks " + ", ".join(rule.webhooks))
    if not rule.active:
        facts.append("switched off")
    if muted := muted_text(rule.muted_until, now):
        facts.append(muted)
    st.text(" · ".join(facts))
    st.caption(md(f"Subscribers: {', '.join(rule.subscribers) or 'nobody yet'}"))
    actions(store, me, rule)
    tested_result(rule, kpi)
    evaluation_log(store, me, rule, kpi)
    with st.expander("Change this rule", icon=":material/edit_notifications:"):
        edit_rule_form(store, me, rule, kpi)


def _hours(seconds: float) -> str:
    return f"{format_number(seconds / 3600)} h"


def actions(store: KPIStore, me: Viewer, rule: AlertRule) -> None:
    """Subscribe or unsubscribe me, test, mute or unmute, delete."""
    refusal = me.refusal(Role.EDITOR, "mute or delete alert rules")
    c1, c2, c3, c4, c5 = st.columns([1.3, 1.6, 1.1, 0.9, 0.9], vertical_alignment="bottom")
    if mine(rule, me):
        if c1.button("Unsubscribe me", icon=":material/notifications_off:", key="ar_unsub"):
            act(
                "unsubscribe",
                lambda actor: store.unsubscribe(rule.id, actor),
                done=f"You are no longer told about '{md(rule.name)}'.",
            )
    elif c1.button("Subscribe me", icon=":material/notification_add:", key="ar_sub"):
        act(
            "subscribe",
            lambda actor: store.subscribe(rule.id, actor),
            done=f"Subscribed: '{md(rule.name)}' now tells you in your inbox.",
        )
    if c2.button("Test against the latest run", icon=":material/science:", key="ar_test"):
        with friendly_errors():
            st.session_state[TESTED_KEY] = store.test_rule(rule.id, actor=me.actor)
    how_long = c3.selectbox(
        "Mute", [*MUTE_FOR, UNTIL_UNMUTED], key="ar_mute_for", disabled=bool(refusal)
    )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if muted_text(rule.muted_until, now):
        if c4.button("Unmute", key="ar_unmute", disabled=bool(refusal), help=refusal):
            act(
                "unmute an alert rule",
                lambda actor: store.mute_rule(rule.id, None, actor),
                done=f"'{md(rule.name)}' unmuted.",
            )
    elif c4.button("Mute", key="ar_mute", disabled=bool(refusal), help=refusal):
        until = FOREVER if how_long == UNTIL_UNMUTED else now + MUTE_FOR[how_long]
        act(
            "mute an alert rule",
            lambda actor: store.mute_rule(rule.id, until, actor),
            done=f"'{md(rule.name)}' muted {how_long}: its state still moves, nobody is told.",
        )
    if c5.button("Delete", key="ar_ask_delete", disabled=bool(refusal), help=refusal):
        ask_to_confirm(DELETE_KEY, rule.id)
    question = f"Delete the alert rule '{md(rule.name)}' with its evaluation log?"
    if confirmed(DELETE_KEY, rule.id, question, "Delete the rule"):
        act(
            "delete an alert rule",
            lambda actor: store.delete_rule(rule.id, actor),
            done=f"Alert rule '{md(rule.name)}' deleted.",
        )


def tested_result(rule: AlertRule, kpi: KPI) -> None:
    """What "Test against the latest run" found, while that rule is the one shown."""
    tested = st.session_state.get(TESTED_KEY)
    if not isinstance(tested, RuleTest) or tested.rule_id != rule.id:
        return
    if tested.run_id is None:
        st.info(md(f"Nothing to test: {tested.reason}."), icon=":material/science:")
        return
    would = (
        f"it would notify ({tested.would_notify})"
        if tested.would_notify and not tested.muted
        else f"it would hold back a {tested.would_notify} notification (muted)"
        if tested.would_notify
        else "it would notify nobody"
    )
    text = (
        f"Against run #{tested.run_id}: value {format_value(tested.value, kpi.unit)}"
        f" ({tested.detail or tested.outcome}). State {state_word(tested.state_before)} → "
        f"{state_word(tested.state_after)}; {would}: {tested.reason}."
    )
    box = st.warning if tested.state_after == AlertState.FIRING else st.info
    box(md(text), icon=":material/science:")
    run_link(tested.run_id)


def _notified(e: AlertEvaluation) -> str:
    if e.notification is None:
        return "no"
    if e.notified:
        return f"yes: {e.notification} ({e.recipients} told)"
    return f"held back: {e.notification}"


def evaluation_log(store: KPIStore, me: Viewer, rule: AlertRule, kpi: KPI) -> None:
    st.markdown("**Evaluation log** · every run the rule saw, newest first")
    found: list[AlertEvaluation] = []
    with friendly_errors():
        found = store.rule_evaluations(rule.id, limit=100, actor=me.actor)
    if not found:
        st.caption("No evaluation yet: the rule watches runs that finish from now on.")
        return
    rows = [
        {
            "When": format_time(e.evaluated_at, seconds=True),
            "Run": run_url(e.run_id) if e.run_id else None,
            "Outcome": str(e.outcome),
            "Value": format_value(e.value, kpi.unit),
            "Target": format_value(e.target, kpi.unit),
            "Change": MISSING if e.change_pct is None else f"{format_number(e.change_pct)} %",
            "State": f"{state_word(e.state_before)} → {state_word(e.state_after)}",
            "Notified": _notified(e),
            "Why": e.reason,
            "Detail": e.detail,
        }
        for e in found
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"Run": st.column_config.LinkColumn("Run", display_text=r"execution=(\d+)")},
        key=f"ar_log_{rule.id}",
    )
