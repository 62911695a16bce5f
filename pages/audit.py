"""Audit: who did what and when, with filters, the chain check and a CSV export."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

ACTIONS = [str(action) for action in ui.AuditAction]
LIMITS = {"100": 100, "500": 500, "2,000": 2_000, "All": None}
SUMMARY_KEYS = ("version", "note", "table", "rows", "status", "execution_id", "value")

st.title("Audit log")
st.caption(
    "Every change, run and export is written to a hash-chained log: "
    "editing or removing an entry breaks the chain and shows up below."
)


def chain_check() -> None:
    check = store.verify_audit(actor=me.actor)
    if check.ok:
        st.success(
            f"Audit chain intact: {check.checked:,} entries checked.",
            icon=":material/verified_user:",
        )
    else:
        st.error(
            f"Audit chain broken at entry {check.first_broken_id}: {ui.md(check.reason)} "
            f"({check.checked:,} entries verified before it).",
            icon=":material/gpp_bad:",
        )


if me.may(ui.Role.ADMIN):
    with ui.friendly_errors():
        chain_check()
else:
    st.caption(
        "You see the entries about the KPIs open to you; an admin sees every entry "
        "and the chain check."
    )

kpis: list[ui.KPI] = []
with ui.friendly_errors():
    kpis = store.list_kpis(include_archived=True, actor=me.actor)
kpi_names = {k.id: k.name for k in kpis}

with st.container(border=True):
    c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 3, 1])
    person = c1.text_input(
        "Person", key="au_actor", placeholder="anyone", help="Any part of an email or a name."
    )
    action = c2.selectbox("Action", ["Any", *ACTIONS], key="au_action")
    kpi_options = [None, *kpi_names]
    ui.follow_query_param("au_kpi", "kpi", kpi_options)
    kpi_id = c3.selectbox(
        "KPI",
        kpi_options,
        format_func=lambda i: "Any" if i is None else f"{kpi_names[i]} (#{i})",
        key="au_kpi",
    )
    ui.set_query_param("kpi", kpi_id)
    dates = c4.date_input(
        "Date range",
        value=(),  # type: ignore[arg-type]  # an empty range: no dates chosen yet
        key="au_dates",
        format="YYYY-MM-DD",
    )
    limit_label = c5.selectbox("Show", list(LIMITS), key="au_limit")

since = until = None
if isinstance(dates, (tuple, list)) and dates:
    since = dates[0]
    until = dates[1] if len(dates) > 1 else dates[0]
elif isinstance(dates, dt.date):
    since = until = dates

entries = []
with ui.friendly_errors():
    entries = store.audit_log(
        kpi_id=kpi_id,
        person=person.strip() or None,
        actor=me.actor,
        action=None if action == "Any" else action,
        since=since,
        until=until,
        limit=LIMITS[limit_label],
    )

if not entries:
    st.info("No audit entries match these filters.", icon=":material/search_off:")
    st.stop()


def summary(details: dict[str, Any]) -> str:
    parts = [f"{key}: {details[key]}" for key in SUMMARY_KEYS if details.get(key) not in (None, "")]
    if isinstance(details.get("changes"), dict):
        parts.append("changed: " + ", ".join(details["changes"]))
    return "; ".join(parts)


frame = pd.DataFrame(
    [
        {
            "id": e.id,
            "when": e.occurred_at,
            "actor": e.actor,
            "action": e.action,
            "kpi": kpi_names.get(e.kpi_id, f"#{e.kpi_id}") if e.kpi_id else "",
            "entity": e.entity or "",
            "summary": summary(e.details),
            "details": json.dumps(e.details, default=str, ensure_ascii=False),
        }
        for e in entries
    ]
)

st.header(f"{len(entries):,} entries", divider="gray")
ui.events_chart(frame)

st.dataframe(
    frame.drop(columns=["details"]),
    hide_index=True,
    width="stretch",
    column_config={
        "id": st.column_config.NumberColumn("#", width="small"),
        "when": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "summary": st.column_config.TextColumn("Summary", width="large"),
    },
)

st.download_button(
    "Export these entries as CSV",
    data=ui.deferred(store.audit_csv, entries, actor=me.actor),
    disabled=not me.actor or not me.may(ui.Role.ADMIN),
    help=me.refusal(ui.Role.ADMIN, "export the audit log")
    or (
        "Recorded in the audit log."
        if me.actor
        else "Enter your name in the sidebar: exports are recorded in the audit log."
    ),
    file_name=f"kpi-audit-{dt.date.today().isoformat()}.csv",
    mime="text/csv",
    icon=":material/download:",
    key="au_export",
    on_click="ignore",
)

# -- one entry ------------------------------------------------------------------------------


def changed_fields(changes: dict[str, Any]) -> None:
    st.markdown("**Changed fields**")
    rows = [
        {"field": name, "before": ui.as_text(c.get("before")), "after": ui.as_text(c.get("after"))}
        for name, c in changes.items()
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def before_and_after(before: Any, after: Any) -> None:
    left, right = st.columns(2)
    with left:
        st.markdown("**Before**")
        st.json(before if before is not None else {}, expanded=True)
    with right:
        st.markdown("**After**")
        st.json(after if after is not None else {}, expanded=True)


st.header("Entry details", divider="gray")
by_id = {e.id: e for e in entries}
chosen = st.selectbox(
    "Entry",
    list(by_id),
    format_func=lambda i: (
        f"#{i} · {by_id[i].action} by {by_id[i].actor} · {ui.format_time(by_id[i].occurred_at)}"
    ),
    key="au_entry",
)
entry = by_id[chosen]
details = dict(entry.details)
changes = details.pop("changes", None)
before, after = details.pop("before", None), details.pop("after", None)
if isinstance(changes, dict) and changes:
    changed_fields(changes)
if before is not None or after is not None:
    before_and_after(before, after)
if details:
    st.markdown("**Details**")
    st.json(details, expanded=True)
st.caption(f"Entry hash `{entry.entry_hash[:16]}…` · previous `{entry.prev_hash[:16]}…`")
