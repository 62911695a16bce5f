"""Inbox: what the alert rules you subscribe to told you, newest first, with links to the
run and the KPI; mark read one by one or all at once. New ones appear while it is open."""

from __future__ import annotations

import datetime as dt

import streamlit as st

import kpi_ui as ui
from kpi_store.notification_records import InboxItem

store = ui.get_store()
me = ui.viewer()

PAGE_SIZE, POLL_S = 50, 5.0
LIMIT_KEY, SEEN_KEY = "ib_limit", "ib_seen"

st.title("Inbox")
st.caption(
    "What the alert rules you subscribe to told you. Subscribe to a rule on the "
    "Schedules & alerts page."
)
ui.show_flash()
if not ui.require_actor("see your inbox"):
    st.stop()

unread_only = st.toggle("Unread only", key="ib_unread_only")
limit = int(st.session_state.get(LIMIT_KEY, PAGE_SIZE))
items: list[InboxItem] = []
unread = 0
with ui.friendly_errors():
    unread = store.unread_count(actor=me.actor)
    items = store.inbox(actor=me.actor, unread_only=unread_only, limit=limit)
st.session_state[SEEN_KEY] = (unread, items[0].id if items else None)


# While the inbox is open, a new notification (or one read elsewhere) refreshes the page
# and the sidebar's count: one count query every few seconds, on this page only.
@st.fragment(run_every=dt.timedelta(seconds=POLL_S))
def watch_for_news() -> None:
    ui.recheck(store)
    try:
        newest = store.inbox(actor=me.actor, limit=1)
        now = (store.unread_count(actor=me.actor), newest[0].id if newest else None)
    except ui.KPIStoreError:
        return
    if now != st.session_state.get(SEEN_KEY):
        st.rerun(scope="app")


watch_for_news()

head, button = st.columns([4, 1], vertical_alignment="center")
head.markdown(f"**{unread} unread**" if unread else "Nothing unread.")
if button.button(
    "Mark all read",
    icon=":material/done_all:",
    key="ib_all_read",
    disabled=not unread,
    width="stretch",
):
    ui.act(
        "mark your inbox read",
        lambda actor: store.mark_all_read(actor=actor),
        done=lambda n: f"Marked {n} notification(s) read.",
    )

if not items:
    st.info(
        "Nothing here yet. Subscribe to an alert rule and its news arrives here."
        if not unread_only
        else "No unread notifications.",
        icon=":material/inbox:",
    )
    st.stop()


def show(item: InboxItem) -> None:
    event = item.event
    with st.container(border=True, key=f"ib_item_{item.id}"):
        top, action = st.columns([5, 1], vertical_alignment="center")
        with top:
            new = " :blue-badge[:material/fiber_new: New]" if item.unread else ""
            when = ui.md(f"{ui.time_ago(item.created_at)} · {ui.format_time(item.created_at)}")
            st.markdown(f"{ui.notice_badge(event.kind)}{new} · {when}")
            summary = ui.md(event.summary)
            st.markdown(f"**{summary}**" if item.unread else summary)
        if item.unread and action.button("Mark read", key=f"ib_read_{item.id}", width="stretch"):
            ui.act(
                "mark a notification read",
                lambda actor: store.mark_read([item.id], actor=actor),
                done="",
            )
        links = st.columns([1, 1, 3])
        if event.run_id:
            with links[0]:
                ui.run_link(event.run_id, f"Run #{event.run_id}")
        if event.kpi_id:
            with links[1]:
                ui.kpi_link(
                    event.kpi_id, ui.md(event.kpi_name), ui.Page.HISTORY, ":material/timeline:"
                )


for entry in items:
    show(entry)

if len(items) == limit and st.button("Show older", key="ib_more"):
    st.session_state[LIMIT_KEY] = limit + PAGE_SIZE
    st.rerun()
