"""Run: pick KPIs, fill their parameters, run now or in the background; live job monitor."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

st.title("Run KPIs")
st.caption(
    'Run one KPI or several with the same parameters. "Run now" waits for the result; '
    '"Run in background" queues the work and you can keep using the app.'
)
ui.show_flash()

kpis: list[ui.KPI] = []
with ui.friendly_errors():
    kpis = store.list_kpis(actor=me.actor)
by_id = {k.id: k for k in kpis}

if not kpis:
    st.info("There are no active KPIs to run yet.", icon=":material/lightbulb:")
    ui.link(ui.Page.KPIS, "Create a KPI", ":material/add_circle:")
    st.stop()


def kpi_name(kpi_id: int) -> str:
    return by_id[kpi_id].name if kpi_id in by_id else f"KPI #{kpi_id}"


def kpi_unit(kpi_id: int) -> str:
    return by_id[kpi_id].unit if kpi_id in by_id else ""


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


def shared_parameters(ids: list[int]) -> list[ui.ParameterSpec]:
    """Each parameter name once, as the first chosen KPI that declares it defines it."""
    seen: dict[str, ui.ParameterSpec] = {}
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
may_run = me.may(ui.Role.RUNNER)
run_now = buttons.button(
    "Run now",
    type="primary",
    icon=":material/play_arrow:",
    disabled=not chosen or not may_run,
    key="rn_now",
    help=me.refusal(ui.Role.RUNNER, "run KPIs"),
)
run_bg = buttons.button(
    "Run in background",
    icon=":material/schedule_send:",
    disabled=not chosen or not may_run,
    key="rn_bg",
    help=me.refusal(ui.Role.RUNNER, "run KPIs"),
)


def remember_batch(batch: ui.BatchResult, now: bool) -> None:
    started = {x.kpi_id for x in batch.executions}
    refused = [e for e in batch.errors if not now or e.kpi_id not in started]
    st.session_state["rn_last"] = {
        "batch": batch.batch_id,
        "refused": [e.model_dump() for e in refused],
    }


def request_runs(actor: str) -> str:
    """Run or queue the chosen KPIs; returns the message to flash (or "")."""
    if run_now and len(chosen) == 1:
        execution = store.execute(chosen[0], params, actor=actor)
        st.session_state["rn_last"] = {"runs": [execution.id]}
        return ""
    if run_now:
        remember_batch(store.execute_batch(chosen, params, actor=actor), now=True)
        return ""
    if len(chosen) == 1:
        execution = store.submit(chosen[0], params, actor=actor)
        st.session_state["rn_last"] = {"runs": [execution.id]}
        return f"Queued run #{execution.id} of {ui.md(kpi_name(chosen[0]))}."
    batch = store.submit_batch(chosen, params, actor=actor)
    remember_batch(batch, now=False)
    return f"Queued {batch.successful} of {batch.total} KPIs."


def refused(error: ui.KPIStoreError) -> None:
    """Keep the message and field errors, and show them under the form's widgets."""
    ui.remember_error("rn", error)
    st.rerun()


if run_now or run_bg:
    ui.forget_error("rn")
    one = len(chosen) == 1
    waiting = f"Running {ui.md(kpi_name(chosen[0]))}…" if one else f"Running {len(chosen)} KPIs…"
    ui.act(
        "run KPIs",
        request_runs,
        done=lambda message: message,
        kind="info",
        spinner=waiting if run_now else None,
        on_error=refused,
    )

ui.show_remembered_error("rn")

# -- outcome of the last request ----------------------------------------------------------


def run_summary(execution: ui.Execution) -> None:
    kpi = by_id.get(execution.kpi_id)
    unit = kpi_unit(execution.kpi_id)
    with st.container(border=True):
        head, badge = st.columns([4, 1], vertical_alignment="center")
        head.markdown(
            f"**{ui.md(kpi_name(execution.kpi_id))}** · run #{execution.id} · "
            f"{ui.md(ui.format_params(execution.params))}"
        )
        with badge:
            ui.status_badge(execution.status)
        if execution.status == ui.RunStatus.SUCCESS:
            m = st.columns(4)
            m[0].metric("Value", ui.md(ui.format_value(execution.value, unit)))
            m[1].metric("Rows", ui.format_number(execution.row_count))
            m[2].metric("Duration", ui.format_duration(execution.execution_time_ms))
            m[3].metric("Attempts", execution.attempts)
            if kpi is not None:
                target = ui.format_value(kpi.target, unit) if kpi.target is not None else "none"
                st.text(f"Target {target} · {ui.rag_label(kpi.rag_status(execution.value))}")
            ui.run_link(execution.id)
        elif execution.finished:
            st.error(ui.md(execution.error or f"The run ended as {execution.status}."))
        else:
            st.caption("Waiting for the background worker… see the monitor below.")


def outcome_rows(progress: Any, refused: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [
        {
            "KPI": kpi_name(r.kpi_id),
            "Status": ui.status_label(r.status),
            "Value": ui.format_value(r.value, kpi_unit(r.kpi_id)),
            "Rows": r.row_count,
            "Duration": ui.format_duration(r.execution_time_ms),
            "Run": ui.run_url(r.id),
            "Message": r.error or "",
        }
        for r in progress.runs
    ]
    return rows + [
        {
            "KPI": kpi_name(e["kpi_id"]),
            "Status": "Refused",
            "Value": ui.MISSING,
            "Rows": None,
            "Duration": ui.MISSING,
            "Run": None,
            "Message": e["message"],
        }
        for e in refused
    ]


def batch_outcome(batch_id: str, refused: list[dict[str, Any]], key: str) -> None:
    """Each KPI's outcome in a batch; "re-run the failed ones" once everything finished."""
    progress = store.batch_progress(batch_id, actor=me.actor)
    failed = progress.failed
    st.markdown(f"**Batch `{batch_id[:8]}`** · {progress.total + len(refused)} KPI(s)")
    st.progress(
        progress.share_done,
        text=f"{len(progress.finished)} of {progress.total} finished · "
        f"{progress.succeeded} succeeded · {len(failed) + len(refused)} failed",
    )
    st.dataframe(
        pd.DataFrame(outcome_rows(progress, refused)),
        hide_index=True,
        width="stretch",
        column_config={"Run": st.column_config.LinkColumn("Drill-down", display_text="Open")},
    )
    label = f"Re-run the {len(failed)} failed one(s)"
    if not (failed and progress.done and may_run):
        return
    if st.button(label, icon=":material/replay:", key=f"{key}_rerun"):
        rerun = store.failed_rerun(batch_id, actor=me.actor)

        def queued_again(batch: ui.BatchResult) -> str:
            remember_batch(batch, now=False)
            return f"Queued {batch.successful} failed KPI(s) again."

        ui.act(
            "run KPIs",
            lambda actor: store.submit_batch(rerun.kpi_ids, dict(rerun.params), actor=actor),
            done=queued_again,
            kind="info",
        )


last = st.session_state.get("rn_last")


@st.fragment(run_every=dt.timedelta(seconds=2))
def last_request() -> None:
    ui.recheck(store)
    if not last:
        return
    st.header("Result", divider="gray")
    with ui.friendly_errors():
        if "runs" in last:
            for execution in store.runs(last["runs"], actor=me.actor):
                run_summary(execution)
        else:
            batch_outcome(last["batch"], last.get("refused", []), "rn_batch")


last_request()

# -- live job monitor -----------------------------------------------------------------------


def job_progress(job: ui.Execution, expected: int | None) -> None:
    if job.status == ui.RunStatus.PENDING:
        st.progress(0, text=f"Queued {ui.time_ago(job.created_at)}")
        return
    elapsed = (ui.run_duration_ms(job) or 0) / 1_000
    if expected:
        st.progress(
            min(job.rows_read / expected, 0.99),
            text=f"{job.rows_read:,} of ~{expected:,} rows · {elapsed:.0f} s",
        )
    else:
        st.progress(
            min(elapsed / max(job.timeout_s, 1), 0.99),
            text=f"{job.rows_read:,} rows · {elapsed:.0f} s of {job.timeout_s:.0f} s limit",
        )


def job_row(job: ui.Execution, expected: int | None) -> None:
    with st.container(border=True):
        c = st.columns([3, 1, 3, 1, 1.2], vertical_alignment="center")
        c[0].markdown(f"**{ui.md(kpi_name(job.kpi_id))}** · #{job.id}")
        params = f" · {ui.format_params(job.params)}" if job.params else ""
        c[0].text(f"by {job.requested_by}{params}")
        with c[1]:
            ui.status_badge(job.status)
        with c[2]:
            job_progress(job, expected)
        c[3].caption(f"Attempt {max(job.attempts, 1)} of {job.max_retries + 1}")
        if job.cancel_requested:
            c[4].caption("Cancelling…")
        elif me.may_cancel(job) and c[4].button(
            "Cancel", key=f"rn_cancel_{job.id}", icon=":material/stop_circle:"
        ):
            ui.act("cancel a run", lambda actor: store.cancel(job.id, actor))


def runs_table(runs: Sequence[ui.Execution], **more: Callable[[ui.Execution], Any]) -> None:
    """Runs as a table: run, KPI, status, value, the ``more`` columns, and a drill-down link."""
    rows = [
        {
            "Run": r.id,
            "KPI": kpi_name(r.kpi_id),
            "Status": ui.status_label(r.status),
            "Value": ui.format_value(r.value, kpi_unit(r.kpi_id)),
            **{label: cell(r) for label, cell in more.items()},
            "Open": ui.run_url(r.id),
        }
        for r in runs
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"Open": st.column_config.LinkColumn("Drill-down", display_text="Open")},
    )


def recent_table(recent: tuple[ui.Execution, ...]) -> None:
    st.markdown("**Recently finished**")
    runs_table(
        recent,
        Duration=lambda r: ui.format_duration(r.execution_time_ms),
        Attempts=lambda r: r.attempts,
        By=lambda r: r.requested_by,
        Finished=lambda r: ui.time_ago(r.finished_at),
    )


@st.fragment(run_every=dt.timedelta(seconds=2))
def job_monitor() -> None:
    ui.recheck(store)
    st.header("Job monitor", divider="gray")
    board = None
    with ui.friendly_errors():
        board = store.job_board(actor=me.actor)  # one read, however many jobs run
    if board is None:
        return
    if not board.active:
        st.caption(":material/check: No runs queued or in progress.")
    elif not ui.worker_running():
        st.caption(
            ":orange[:material/warning: No background worker runs in this app; queued runs "
            "wait for a worker started with `python -m kpi_store worker`.]"
        )
    for job in board.active:
        job_row(job, board.expected(job))
    if board.recent:
        recent_table(board.recent)


job_monitor()

# -- my runs ----------------------------------------------------------------------------------


@st.fragment(run_every=dt.timedelta(seconds=5))
def my_runs() -> None:
    ui.recheck(store)
    if not me.actor:
        return
    st.header("My runs", divider="gray")
    mine: list[ui.Execution] = []
    with ui.friendly_errors():
        mine = store.executions(requested_by=me.actor, limit=20, actor=me.actor)
    if not mine:
        st.caption("You have not run anything yet.")
        return
    runs_table(
        mine,
        Parameters=lambda r: ui.format_params(r.params),
        Asked=lambda r: ui.time_ago(r.created_at),
    )


my_runs()
