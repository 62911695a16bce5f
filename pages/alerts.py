"""Schedules & alerts: KPIs that run themselves, the rules that watch them and tell
people, and the channels they are told through."""

from __future__ import annotations

import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

st.title("Schedules & alerts")
st.caption(
    "Schedules run a KPI at set times, fired by the background workers. Alert rules watch "
    "its runs and tell their subscribers when it goes off target, stops having data or fails."
)
ui.show_flash()
if not ui.worker_running():
    st.caption(
        ":orange[:material/memory: No background worker runs in this app: schedules fire "
        "and emails and webhooks go out only while `python -m kpi_store worker` runs.]"
    )

kpis: list[ui.KPI] = []
with ui.friendly_errors():
    kpis = store.list_kpis(include_archived=True, actor=me.actor)
if not kpis:
    st.info(
        "There are no KPIs open to you yet: create one (or load the demo) first.",
        icon=":material/lightbulb:",
    )
    st.stop()
by_id = {k.id: k for k in kpis}

ALL = 0  # the filter's "All KPIs" (no KPI has id 0)
ui.follow_query_param("al_kpi", "kpi", list(by_id))
chosen = st.selectbox(
    "KPI",
    [ALL, *by_id],
    format_func=lambda i: "All KPIs" if i == ALL else ui.kpi_label(by_id[i]),
    key="al_kpi",
    help="Show the schedules and rules of one KPI (a link with ?kpi= opens it here).",
)
focus = chosen if chosen in by_id else None
ui.set_query_param("kpi", focus)

schedules_tab, rules_tab, channels_tab = st.tabs(
    [
        ":material/event_repeat: Schedules",
        ":material/notifications: Alert rules",
        ":material/hub: Channels",
    ],
    key="al_tabs",
)
with schedules_tab:
    ui.schedules_tab(store, me, by_id, focus)
with rules_tab:
    ui.rules_tab(store, me, by_id, focus)
with channels_tab:
    ui.channels_tab(store, me)
