"""Run: pick KPIs, fill their parameters, run now or in the background; live job monitor."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

import kpi_ui as ui
from kpi_store import Execution, ParameterSpec

store = ui.get_store()

st.title("Run KPIs")
st.caption(
    'Run one KPI or several with the same parameters. "Run now" waits for the result; '
    '"Run in background" queues the work and you can keep using the app.'
)
ui.show_flash()

kpis = []
with ui.friendly_errors():
    kpis = store.list_kpis()
by_id = {k.id: k for k in kpis}

if not kpis:
    st.info("There are no active KPIs to run yet.", icon=":material/lightbulb:")
    st.page_link(ui.PAGES["kpis"], label="Create a KPI", icon=":material/add_circle:")
    st.stop()

# -- choose and parametrise -------------------------------------------------------------

ui.follow_query_param("rn_kpis", "kpi", list(by_id), as_list=True)
chosen: list[int] = st.multiselect(
    "KPIs to run",
    list(by_id),
    format_func=lambda i: by_id[i].name,
    key="rn_kpis",
    placeholder="Choose one or more KPIs",
)
ui.set_query_param("kpi", chosen[0] if len(chosen) == 1 else None)


def shared_parameters(ids: list[int]) -> list[ParameterSpec]:
    """Each parameter name once, as the first chosen KPI that declares it defines it."""
    seen: dict[str, ParameterSpec] = {}
    for kpi_id in ids:
        for param in by_id[kpi_id].parameters:
            seen.setdefault(param.name, param)
    return list(seen.values())


params: dict[str, Any] = {}
if chosen:
    with st.container(border=True):
        st.markdown("**Parameters**")
        if len(chosen) > 1:
            st.caption("Each KPI uses the parameters it declares and ignores the others.")
        params = ui.parameter_form(
            shared_parameters(chosen), "rn_param", ui.remembered_errors("rn")
        )

buttons = st.container(horizontal=True)
run_now = buttons.button(
    "Run now", type="primary", icon=":material/play_arrow:", disabled=not chosen, key="rn_now"
)
run_bg = buttons.button(
    "Run in background", icon=":material/schedule_send:", disabled=not chosen, key="rn_bg"
)

if run_now or run_bg:
    actor = ui.require_actor("run KPIs")
    if actor:
        ui.forget_error("rn")
        try:
            if run_now and len(chosen) == 1:
                name = by_id[chosen[0]].name
                with st.spinner(f"Running {name}…"):
                    execution = store.execute(chosen[0], params, actor=actor)
                st.session_state["rn_last"] = {"runs": [execution.id]}
            elif run_now:
                with st.spinner(f"Running {len(chosen)} KPIs…"):
                    batch = store.execute_batch(chosen, params, actor=actor)
                st.session_state["rn_last"] = {
                    "batch": batch.batch_id,
                    "refused": [
                        e.model_dump()
                        for e in batch.errors
                        if e.kpi_id not in {x.kpi_id for x in batch.executions}
                    ],
                }
            elif len(chosen) == 1:
                execution = store.submit(chosen[0], params, actor=actor)
                st.session_state["rn_last"] = {"runs": [execution.id]}
                ui.flash(f"Queued run #{execution.id} of {by_id[chosen[0]].name}.", "info")
            else:
                batch = store.submit_batch(chosen, params, actor=actor)
                st.session_state["rn_last"] = {
                    "batch": batch.batch_id,
                    "refused": [e.model_dump() for e in batch.errors],
                }
                ui.flash(f"Queued {batch.successful} of {batch.total} KPIs.", "info")
        except ui.KPIStoreError as error:
            ui.remember_error("rn", error)
        st.rerun()

ui.show_remembered_error("rn")

# -- outcome of the last request ----------------------------------------------------------


def run_summary(execution: Execution) -> None:
    kpi = by_id.get(execution.kpi_id)
    name = kpi.name if kpi else f"KPI #{execution.kpi_id}"
    unit = kpi.unit if kpi else ""
    with st.container(border=True):
        head, badge = st.columns([4, 1], vertical_alignment="center")
        head.markdown(f"**{name}** · run #{execution.id} · {ui.format_params(execution.params)}")
        with badge:
            ui.status_badge(execution.status)
        if execution.status == "success":
            m = st.columns(4)
            m[0].metric("Value", ui.format_value(execution.value, unit))
            m[1].metric("Rows", ui.format_number(execution.row_count))
            m[2].metric("Duration", ui.format_duration(execution.execution_time_ms))
            m[3].metric("Attempts", execution.attempts)
            if kpi is not None:
                rag = kpi.rag_status(execution.value)
                target = ui.format_value(kpi.target, unit) if kpi.target is not None else "none"
                label = ui.RAG_STYLE[rag][0] if rag else "No target"
                st.caption(f"Target {target} · {label}")
            ui.run_link(execution.id)
        elif execution.finished:
            st.error(execution.error or f"The run ended as {execution.status}.")
        else:
            st.caption("Waiting for the background worker… see the monitor below.")


def batch_outcome(batch_id: str, refused: list[dict[str, Any]], key: str) -> None:
    """Each KPI's outcome in a batch; "re-run the failed ones" once everything finished."""
    runs = store.executions(batch_id=batch_id, limit=None)
    finished = [r for r in runs if r.finished]
    ok = sum(r.status == "success" for r in runs)
    failed = [r for r in finished if r.status != "success"]
    total = len(runs) + len(refused)
    st.markdown(f"**Batch `{batch_id[:8]}`** · {total} KPI(s)")
    st.progress(
        len(finished) / max(1, len(runs)),
        text=f"{len(finished)} of {len(runs)} finished · {ok} succeeded · "
        f"{len(failed) + len(refused)} failed",
    )
    rows = [
        {
            "KPI": by_id[r.kpi_id].name if r.kpi_id in by_id else f"#{r.kpi_id}",
            "Status": ui.status_label(r.status),
            "Value": ui.format_value(r.value, by_id[r.kpi_id].unit if r.kpi_id in by_id else ""),
            "Rows": r.row_count,
            "Duration": ui.format_duration(r.execution_time_ms),
            "Run": f"drilldown?execution={r.id}",
            "Message": r.error or "",
        }
        for r in sorted(runs, key=lambda r: r.id)
    ]
    rows += [
        {
            "KPI": by_id[e["kpi_id"]].name if e["kpi_id"] in by_id else f"#{e['kpi_id']}",
            "Status": "Refused",
            "Value": "—",
            "Rows": None,
            "Duration": "—",
            "Run": None,
            "Message": e["message"],
        }
        for e in refused
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"Run": st.column_config.LinkColumn("Drill-down", display_text="Open")},
    )
    if (
        failed
        and len(finished) == len(runs)
        and st.button(
            f"Re-run the {len(failed)} failed one(s)", icon=":material/replay:", key=f"{key}_rerun"
        )
    ):
        actor = ui.require_actor("run KPIs")
        if actor:
            merged: dict[str, Any] = {}
            for run in failed:
                merged.update(run.params)
            try:
                batch = store.submit_batch([r.kpi_id for r in failed], merged, actor=actor)
            except ui.KPIStoreError as error:
                ui.show_error(error)
            else:
                st.session_state["rn_last"] = {
                    "batch": batch.batch_id,
                    "refused": [e.model_dump() for e in batch.errors],
                }
                ui.flash(f"Queued {batch.successful} failed KPI(s) again.", "info")
                st.rerun(scope="app")


last = st.session_state.get("rn_last")


@st.fragment(run_every=dt.timedelta(seconds=2))
def last_request() -> None:
    if not last:
        return
    st.subheader("Result", divider="gray")
    with ui.friendly_errors():
        if "runs" in last:
            for execution_id in last["runs"]:
                run_summary(store.execution(execution_id))
        else:
            batch_outcome(last["batch"], last.get("refused", []), "rn_batch")


last_request()

# -- live job monitor -----------------------------------------------------------------------


def expected_rows(kpi_id: int) -> int | None:
    previous = store.executions(kpi_id=kpi_id, status="success", limit=1)
    return previous[0].row_count if previous and previous[0].row_count else None


@st.fragment(run_every=dt.timedelta(seconds=2))
def job_monitor() -> None:
    st.subheader("Job monitor", divider="gray")
    active: list[Execution] = []
    with ui.friendly_errors():
        active = store.executions(status="running", limit=50) + store.executions(
            status="pending", limit=50
        )
    if not active:
        st.caption(":material/check: No runs queued or in progress.")
    if active and not ui.worker_running():
        st.caption(
            ":orange[:material/warning: No background worker runs in this app; queued runs "
            "wait for a worker started with `python -m kpi_store worker`.]"
        )
    for job in active:
        kpi = by_id.get(job.kpi_id)
        with st.container(border=True):
            c = st.columns([3, 1, 3, 1, 1.2], vertical_alignment="center")
            c[0].markdown(f"**{kpi.name if kpi else f'KPI #{job.kpi_id}'}** · #{job.id}")
            c[0].caption(
                f"by {job.requested_by}"
                + (f" · {ui.format_params(job.params)}" if job.params else "")
            )
            with c[1]:
                ui.status_badge(job.status)
            with c[2]:
                if job.status == "pending":
                    st.progress(0, text=f"Queued {ui.time_ago(job.created_at)}")
                else:
                    elapsed = (ui.run_duration_ms(job) or 0) / 1_000
                    expected = expected_rows(job.kpi_id)
                    if expected:
                        st.progress(
                            min(job.rows_read / expected, 0.99),
                            text=f"{job.rows_read:,} of ~{expected:,} rows · {elapsed:.0f} s",
                        )
                    else:
                        st.progress(
                            min(elapsed / max(job.timeout_s, 1), 0.99),
                            text=f"{job.rows_read:,} rows · {elapsed:.0f} s of "
                            f"{job.timeout_s:.0f} s limit",
                        )
            c[3].caption(f"Attempt {max(job.attempts, 1)} of {job.max_retries + 1}")
            if job.cancel_requested:
                c[4].caption("Cancelling…")
            elif c[4].button("Cancel", key=f"rn_cancel_{job.id}", icon=":material/stop_circle:"):
                actor = ui.require_actor("cancel a run")
                if actor:
                    with ui.friendly_errors():
                        store.cancel(job.id, actor)
                        st.rerun()

    recent: list[Execution] = []
    with ui.friendly_errors():
        recent = [r for r in store.executions(limit=15) if r.finished][:10]
    if recent:
        st.markdown("**Recently finished**")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Run": r.id,
                        "KPI": by_id[r.kpi_id].name if r.kpi_id in by_id else f"#{r.kpi_id}",
                        "Status": ui.status_label(r.status),
                        "Value": ui.format_value(
                            r.value, by_id[r.kpi_id].unit if r.kpi_id in by_id else ""
                        ),
                        "Duration": ui.format_duration(r.execution_time_ms),
                        "Attempts": r.attempts,
                        "By": r.requested_by,
                        "Finished": ui.time_ago(r.finished_at),
                        "Open": f"drilldown?execution={r.id}",
                    }
                    for r in recent
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={"Open": st.column_config.LinkColumn("Drill-down", display_text="Open")},
        )


job_monitor()
