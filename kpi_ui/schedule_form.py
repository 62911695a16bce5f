"""The form of a schedule, new or changed: the KPI, the cron expression with its words and
next five fire times shown as it is typed (before anything is saved), the time zone, the
parameter set (empty fields: the KPI's defaults; dates may be relative) and whom it runs
as. The store checks it all again on save."""

from __future__ import annotations

import zoneinfo
from typing import Any

import streamlit as st

from kpi_store import KPI, KPIStore, KPIStoreError, Role
from kpi_store.schedules import Schedule

from .actions import act
from .alert_look import local_time
from .identity import Viewer
from .messages import md
from .param_sets import parameter_set_inputs
from .widgets import kpi_label

ZONES = sorted(zoneinfo.available_timezones())
CRON_HELP = (
    "Five fields: minute hour day-of-month month weekday (0 9 * * 1-5 is 09:00 on weekdays), "
    "or six, the sixth being seconds (* * * * * */10 is every 10 seconds). Each field takes "
    "*, lists 1,15, ranges 1-5 and steps */15; also @hourly, @daily, @weekly, @monthly."
)


def next_run_text(schedule: Schedule) -> str:
    """The next fire time in the schedule's zone, or that it is paused."""
    return "paused" if schedule.next_run_local is None else local_time(schedule.next_run_local)


def cron_preview(store: KPIStore, cron: str, zone: str) -> bool:
    """The cron expression in words and its next five fire times in ``zone``, before
    saving; the reason instead when it cannot fire. True when it can be saved."""
    try:
        found = store.preview_schedule(cron, zone, 5)
    except KPIStoreError as error:
        st.markdown(f":red[:material/error: {md(error)}]")
        return False
    st.markdown(f":material/schedule: **{md(found.words)}** ({md(found.timezone)})")
    st.caption("The next five fire times:")
    st.text("\n".join(local_time(moment) for moment in found.fire_times))
    return True


def _zone_index(zone: str | None) -> int:
    return ZONES.index(zone) if zone in ZONES else ZONES.index("UTC")


def _browser_zone() -> str | None:
    try:
        return st.context.timezone
    except Exception:  # no browser behind this run
        return None


def _when_inputs(
    store: KPIStore, prefix: str, cron: str, zone: str | None, disabled: bool
) -> tuple[str, str, bool]:
    """The cron and zone inputs with their preview: (cron, zone, whether it fires)."""
    left, right = st.columns([2, 1])
    typed = left.text_input(
        "When (cron)", value=cron, key=f"{prefix}_cron", help=CRON_HELP, disabled=disabled
    )
    chosen = right.selectbox(
        "Time zone",
        ZONES,
        index=_zone_index(zone),
        key=f"{prefix}_zone",
        disabled=disabled,
        help="Fire times follow this zone's clock, daylight saving included.",
    )
    return typed, chosen, cron_preview(store, typed, chosen)


def _run_as_input(store: KPIStore, me: Viewer, prefix: str, current: str, disabled: bool) -> str:
    admin_only = store.settings.auth_on and not me.may(Role.ADMIN)
    return st.text_input(
        "Runs as",
        value=current,
        key=f"{prefix}_run_as",
        placeholder="you",
        disabled=disabled or admin_only,
        help="Whose run it is: their access is checked at every run. "
        + ("Only an admin may name someone else." if admin_only else "Empty: you."),
    ).strip()


def new_schedule_form(store: KPIStore, me: Viewer, kpis: dict[int, KPI], focus: int | None) -> None:
    refusal = me.refusal(Role.EDITOR, "create schedules")
    active = [k.id for k in kpis.values() if k.status != "archived"]
    if not active:
        st.caption("There is no active KPI to schedule.")
        return
    kpi_id = st.selectbox(
        "KPI",
        active,
        index=active.index(focus) if focus in active else 0,
        format_func=lambda i: kpi_label(kpis[i]),
        key="sc_new_kpi",
        disabled=bool(refusal),
    )
    kpi = kpis[kpi_id]
    cron, zone, fires = _when_inputs(store, "sc_new", "0 7 * * 1-5", _browser_zone(), bool(refusal))
    st.caption("Parameters (empty: the KPI's default, i.e. its official number)")
    params = parameter_set_inputs(kpi, "sc_new", disabled=bool(refusal))
    run_as = _run_as_input(store, me, "sc_new", "", bool(refusal))
    start = st.toggle("Active from now", value=True, key="sc_new_active", disabled=bool(refusal))
    if st.button(
        "Create schedule",
        type="primary",
        icon=":material/add_alarm:",
        key="sc_create",
        disabled=bool(refusal) or not fires,
        help=refusal,
    ):
        act(
            "create a schedule",
            lambda actor: store.create_schedule(
                kpi.id,
                cron,
                actor,
                timezone=zone,
                params=params,
                run_as=run_as or None,
                active=start,
            ),
            done=lambda s: (
                f"Schedule #{s.id} created for {md(kpi.name)}: {md(s.description)}; "
                f"next run {md(next_run_text(s))}."
            ),
        )


def edit_schedule_form(store: KPIStore, me: Viewer, schedule: Schedule, kpi: KPI) -> None:
    refusal = me.refusal(Role.EDITOR, "change schedules")
    prefix = f"sc_edit_{schedule.id}"
    cron, zone, fires = _when_inputs(store, prefix, schedule.cron, schedule.timezone, bool(refusal))
    st.caption("Parameters (empty: the KPI's default)")
    params = parameter_set_inputs(kpi, prefix, schedule.params, disabled=bool(refusal))
    run_as = _run_as_input(store, me, prefix, schedule.run_as, bool(refusal))
    changes: dict[str, Any] = {"cron": cron, "timezone": zone, "params": params}
    if run_as and run_as != schedule.run_as:
        changes["run_as"] = run_as
    if st.button(
        "Save changes",
        type="primary",
        icon=":material/save:",
        key=f"{prefix}_save",
        disabled=bool(refusal) or not fires,
        help=refusal,
    ):
        act(
            "change a schedule",
            lambda actor: store.update_schedule(schedule.id, actor, **changes),
            done=lambda s: (
                f"Schedule #{s.id} saved: {md(s.description)}; next run {md(next_run_text(s))}."
            ),
        )
