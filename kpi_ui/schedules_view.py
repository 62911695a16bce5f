"""The Schedules tab of the Schedules & alerts page: every schedule with its next fire
time; the chosen one's pause and resume, delete (confirmed), edit form and tick log; a new
schedule (the forms are in ``schedule_form.py``)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kpi_store import KPI, KPIStore, Role
from kpi_store.formats import format_params, format_time
from kpi_store.schedules import Schedule, Tick

from .actions import act, ask_to_confirm, confirmed
from .alert_look import in_zone, local_time
from .identity import Viewer
from .links import run_link, run_url
from .messages import friendly_errors, md
from .schedule_form import edit_schedule_form, new_schedule_form, next_run_text
from .widgets import kpi_label

DELETE_KEY = "sc_delete"


def schedules_tab(store: KPIStore, me: Viewer, kpis: dict[int, KPI], focus: int | None) -> None:
    """The whole tab: list, the chosen schedule, a new one."""
    found: list[Schedule] = []
    with friendly_errors():
        found = store.schedules(focus, actor=me.actor)
    if found:
        schedule_table(found, kpis)
        chosen = pick_schedule(found, kpis)
        if chosen is not None:
            schedule_panel(store, me, chosen, kpis)
    else:
        st.caption("No schedules yet: every run waits for someone to start it.")
    with st.expander("New schedule", icon=":material/add_alarm:", expanded=not found):
        new_schedule_form(store, me, kpis, focus)


def schedule_table(found: list[Schedule], kpis: dict[int, KPI]) -> None:
    rows = [
        {
            "ID": s.id,
            "KPI": kpi_label(kpis[s.kpi_id]) if s.kpi_id in kpis else f"#{s.kpi_id}",
            "When": s.words,
            "Cron": s.cron,
            "Time zone": s.timezone,
            "Parameters": format_params(s.params, "the KPI's defaults"),
            "Runs as": s.run_as,
            "Next run": next_run_text(s),
            "Last run": run_url(s.last_run_id) if s.last_run_id else None,
            "Active": s.active,
        }
        for s in found
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "Last run": st.column_config.LinkColumn("Last run", display_text=r"execution=(\d+)"),
        },
        key="sc_table",
    )


def pick_schedule(found: list[Schedule], kpis: dict[int, KPI]) -> Schedule | None:
    by_id = {s.id: s for s in found}

    def label(schedule_id: int) -> str:
        s = by_id[schedule_id]
        name = kpis[s.kpi_id].name if s.kpi_id in kpis else f"KPI #{s.kpi_id}"
        return f"#{s.id} · {name} · {s.words}"

    chosen = st.selectbox("Schedule", list(by_id), format_func=label, key="sc_pick")
    return by_id.get(chosen) if chosen is not None else None


# -- one schedule ---------------------------------------------------------------------------


def schedule_panel(store: KPIStore, me: Viewer, schedule: Schedule, kpis: dict[int, KPI]) -> None:
    """What the chosen schedule does, its buttons, its edit form and its tick log."""
    kpi = kpis.get(schedule.kpi_id)
    name = kpi.name if kpi else f"KPI #{schedule.kpi_id}"
    st.markdown(f"**{md(name)}** · {md(schedule.description)}")
    when = f"Next run: {next_run_text(schedule)}" if schedule.active else "Paused"
    st.text(
        f"{when} · runs as {schedule.run_as} · "
        f"parameters: {format_params(schedule.params, 'the KPI defaults')}"
    )
    if schedule.last_run_id:
        run_link(schedule.last_run_id, f"Last run #{schedule.last_run_id}")
    refusal = me.refusal(Role.EDITOR, "change schedules")
    left, right, _ = st.columns([1, 1, 3])
    if schedule.active:
        if left.button(
            "Pause", icon=":material/pause:", key="sc_pause", disabled=bool(refusal), help=refusal
        ):
            act(
                "pause a schedule",
                lambda actor: store.pause_schedule(schedule.id, actor),
                done=f"Schedule #{schedule.id} paused: it does not fire until resumed.",
            )
    elif left.button(
        "Resume",
        icon=":material/play_arrow:",
        key="sc_resume",
        disabled=bool(refusal),
        help=refusal,
    ):
        act(
            "resume a schedule",
            lambda actor: store.resume_schedule(schedule.id, actor),
            done=lambda s: f"Schedule #{s.id} resumed: next run {md(next_run_text(s))}.",
        )
    if right.button(
        "Delete",
        icon=":material/delete:",
        key="sc_ask_delete",
        disabled=bool(refusal),
        help=refusal,
    ):
        ask_to_confirm(DELETE_KEY, schedule.id)
    question = (
        f"Delete schedule #{schedule.id} of {md(name)}? Its tick log goes with it; its runs stay."
    )
    if confirmed(DELETE_KEY, schedule.id, question, "Delete the schedule"):
        act(
            "delete a schedule",
            lambda actor: store.delete_schedule(schedule.id, actor),
            done=f"Schedule #{schedule.id} deleted.",
        )
    if kpi is not None:
        with st.expander("Change this schedule", icon=":material/edit_calendar:"):
            edit_schedule_form(store, me, schedule, kpi)
    tick_log(store, me, schedule)


def tick_log(store: KPIStore, me: Viewer, schedule: Schedule) -> None:
    st.markdown("**Tick log** · what each due time did, newest first")
    ticks: list[Tick] = []
    with friendly_errors():
        ticks = store.schedule_ticks(schedule.id, limit=50, actor=me.actor)
    if not ticks:
        st.caption("No tick yet: it has not been due since it was made.")
        return
    rows = [
        {
            "Due": local_time(in_zone(t.due_at, schedule.timezone)),
            "Decided": format_time(t.decided_at, seconds=True),
            "Outcome": str(t.outcome),
            "Reason": t.reason or "",
            "Missed": t.missed,
            "Run": run_url(t.run_id) if t.run_id else None,
        }
        for t in ticks
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"Run": st.column_config.LinkColumn("Run", display_text=r"execution=(\d+)")},
        key=f"sc_ticks_{schedule.id}",
    )
