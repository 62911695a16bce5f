"""Storage: the store's size, which KPIs and runs take it, and pruning old rows (admins)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import kpi_ui as ui
from kpi_store.retention import PruneReport
from kpi_store.retention_space import StorageReport, human_bytes

store = ui.get_store()
me = ui.viewer()

PLAN_KEY, CONFIRM_KEY = "st_plan", "st_prune"

st.title("Storage")
st.caption(
    "What the store holds. Old runs lose their stored rows by the retention policy; their "
    "value, parameters and audit entries stay."
)
ui.show_flash()
if ui.locked(ui.Role.ADMIN, "see and prune the store's storage"):
    st.stop()

found: StorageReport | None = None
with ui.friendly_errors():
    found = store.storage_report(actor=me.actor)
if found is None:
    st.stop()
report: StorageReport = found

m = st.columns(4)
m[0].metric(
    "Store size",
    human_bytes(report.store_bytes),
    help="SQLite: the store file's pages. PostgreSQL: the whole database.",
)
m[1].metric("Rows kept", ui.format_number(report.rows_kept))
m[2].metric("Runs with rows", ui.format_number(report.runs_with_rows))
m[3].metric("Rows removed", ui.format_number(report.rows_removed))

notes = [f"Retention: {report.policy}."]
if report.auto_vacuum:
    notes.append(f"SQLite auto-vacuum: {report.auto_vacuum}.")
if report.free_bytes:
    notes.append(f"{human_bytes(report.free_bytes)} free inside the file, reused by new rows.")
st.caption(ui.md(" ".join(notes)))

st.subheader("Rows per KPI", anchor=False)
if report.kpis:
    per_kpi = [
        {
            "KPI": k.name,
            "Runs": k.runs,
            "Runs with rows": k.runs_with_rows,
            "Runs pruned": k.runs_pruned,
            "Rows kept": k.rows_kept,
            "Rows removed": k.rows_removed,
        }
        for k in report.kpis
    ]
    st.dataframe(pd.DataFrame(per_kpi), hide_index=True, width="stretch")
else:
    st.caption("No runs yet.")

st.subheader("Biggest runs", anchor=False)
if report.biggest_runs:
    biggest = [
        {
            "Run": r.execution_id,
            "KPI": r.kpi_name,
            "Rows": r.rows,
            "Finished": ui.format_time(r.finished_at),
            "Open": ui.run_url(r.execution_id),
        }
        for r in report.biggest_runs
    ]
    st.dataframe(
        pd.DataFrame(biggest),
        hide_index=True,
        width="stretch",
        column_config={"Open": st.column_config.LinkColumn("Drill-down", display_text="Open")},
    )
else:
    st.caption("No run keeps rows.")


# -- prune now: a dry run first, then "are you sure?" -------------------------------------------


def plan_prune() -> None:
    planned = ui.act(
        "prune the store", lambda actor: store.prune(actor=actor, dry_run=True), rerun=None
    )
    if planned is None:
        return
    st.session_state[PLAN_KEY] = planned
    ui.ask_to_confirm(CONFIRM_KEY, planned.as_of)
    st.rerun()


def question(plan: PruneReport) -> str:
    return (
        f"Remove the stored rows of {plan.runs_pruned:,} run(s) ({plan.rows_removed:,} rows)? "
        "Their values, parameters and audit entries stay; the rows cannot be brought back."
    )


def pruned(result: PruneReport) -> str:
    text = (
        f"Removed {result.rows_removed:,} rows of {result.runs_pruned:,} run(s); freed "
        f"{human_bytes(result.bytes_freed)}. {result.note}"
    )
    return ui.md(text)


st.subheader("Prune now", anchor=False)
st.caption(
    "Workers prune by themselves every `KPI_PRUNE_INTERVAL_S`. Here: see first what would "
    "go, then confirm."
)
if st.button("Prune now", icon=":material/auto_delete:", key="st_dry"):
    plan_prune()

plan = st.session_state.get(PLAN_KEY)
if isinstance(plan, PruneReport) and ui.asking(CONFIRM_KEY) == plan.as_of:
    if not plan.runs_pruned:
        st.info(
            ui.md(f"Nothing to remove now (retention: {plan.policy})."),
            icon=":material/check_circle:",
        )
        st.session_state.pop(PLAN_KEY, None)
    elif ui.confirmed(CONFIRM_KEY, plan.as_of, question(plan), "Remove the rows"):
        st.session_state.pop(PLAN_KEY, None)
        ui.act("prune the store", lambda actor: store.prune(actor=actor), done=pruned)
