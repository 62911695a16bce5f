"""Charts: a KPI's runs over time against its target, audit events over time, and the
sparkline of a KPI card. Each has a text alternative (``alt``) that says what it shows."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd
import streamlit as st

from kpi_store import Execution, RunStatus
from kpi_store.formats import format_duration, format_params, format_value

from .look import PRIMARY, STATUS_COLOURS

RUN_COLUMNS = ["run", "when", "value", "status", "version", "params", "rows", "duration", "by"]


def runs_frame(runs: Sequence[Execution]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": r.id,
                "when": r.finished_at or r.created_at,
                "value": r.value,
                "status": str(r.status),
                "version": r.kpi_version,
                "params": format_params(r.params),
                "rows": r.row_count,
                "duration": format_duration(r.execution_time_ms),
                "by": r.requested_by,
            }
            for r in runs
        ],
        columns=RUN_COLUMNS,
    )


def time_format(moments: pd.Series) -> str:
    """A d3 time format that tells ticks apart over the span of ``moments``."""
    moments = pd.to_datetime(moments.dropna())
    span = (moments.max() - moments.min()) if len(moments) else pd.Timedelta(0)
    if span < pd.Timedelta(minutes=10):
        return "%H:%M:%S"
    if span < pd.Timedelta(days=2):
        return "%b %d %H:%M"
    return "%b %d, %Y"


def runs_chart(runs: Sequence[Execution], target: float | None, unit: str = "") -> None:
    """Value over time; points coloured by status; the target as a dashed line."""
    frame = runs_frame(runs)
    if frame.empty:
        st.info("No runs yet.")
        return
    statuses = [str(s) for s in STATUS_COLOURS]
    colour = alt.Color(
        "status:N",
        scale=alt.Scale(domain=statuses, range=list(STATUS_COLOURS.values())),
        legend=alt.Legend(title="Status", orient="right"),
    )
    title = f"Value ({unit})" if unit else "Value"
    valued = frame.dropna(subset=["value"])
    x = alt.X("when:T", title="Run time (UTC)", axis=alt.Axis(format=time_format(frame["when"])))
    y = alt.Y("value:Q", title=title, scale=alt.Scale(zero=False), axis=alt.Axis(format=",.4~s"))
    layers = []
    if not valued.empty:
        line_data = valued[valued["status"] == RunStatus.SUCCESS]
        layers.append(
            alt.Chart(line_data).mark_line(color="#94a3b8", strokeWidth=1.5).encode(x=x, y=y)
        )
    floor = valued["value"].min() if not valued.empty else 0
    points = frame.assign(value=frame["value"].fillna(floor))
    tooltip = ["run", "status", "value", "params", "version", "rows", "by", "when:T"]
    layers.append(
        alt.Chart(points)
        .mark_point(filled=True, size=90)
        .encode(x=x, y=y, color=colour, tooltip=tooltip)
    )
    if target is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"target": [target]}))
            .mark_rule(color="#f59e0b", strokeDash=[6, 4], strokeWidth=2)
            .encode(y="target:Q", tooltip=[alt.Tooltip("target:Q", title="Target")])
        )
    st.altair_chart(
        alt.layer(*layers).properties(height=320),
        width="stretch",
        alt=runs_summary(runs, target, unit),
    )


def runs_summary(runs: Sequence[Execution], target: float | None, unit: str = "") -> str:
    """What the runs chart shows, in words (its text alternative)."""
    ok = [r for r in runs if r.status == RunStatus.SUCCESS and r.value is not None]
    words = f"Value of {len(runs)} runs over time ({len(ok)} succeeded)"
    if ok:
        newest = max(ok, key=lambda r: (r.finished_at or r.created_at, r.id))
        values = [r.value for r in ok if r.value is not None]
        words += (
            f"; latest {format_value(newest.value, unit)}, lowest "
            f"{format_value(min(values), unit)}, highest {format_value(max(values), unit)}"
        )
    if target is not None:
        words += f"; target {format_value(target, unit)}"
    return words + "."


def events_chart(frame: pd.DataFrame) -> None:
    """Audit events over time: one row per actor, coloured by action."""
    if frame.empty:
        return
    chart = (
        alt.Chart(frame)
        .mark_circle(size=110, opacity=0.85)
        .encode(
            x=alt.X("when:T", title="Time (UTC)", axis=alt.Axis(format=time_format(frame["when"]))),
            y=alt.Y("actor:N", title=None, sort="ascending"),
            color=alt.Color("action:N", legend=alt.Legend(title="Action", orient="right")),
            tooltip=["id", "when:T", "actor", "action", "kpi", "entity"],
        )
        .properties(height=max(200, 40 * frame["actor"].nunique() + 90))
    )
    people = frame["actor"].nunique()
    words = (
        f"{len(frame)} audit events over time by {people} {'person' if people == 1 else 'people'}"
    )
    st.altair_chart(chart, width="stretch", alt=f"{words}, coloured by action.")


def sparkline(values: Sequence[float], name: str, unit: str = "") -> None:
    """A KPI's recent values (oldest first) as a small line, with its trend in words.

    Drawn here rather than by ``st.metric(chart_data=...)``, whose chart can be given no
    text alternative (it is named "Vega visualization" and holds an unnamed graphics
    symbol, which axe-core reports under ``svg-img-alt``)."""
    shown = [format_value(v, unit) for v in values]
    frame = pd.DataFrame(
        {
            "run": range(1, len(values) + 1),
            "value": list(values),
            "shown": shown,
            "label": [f"Value {i} of {len(shown)}: {text}" for i, text in enumerate(shown, 1)],
        }
    )
    words = (
        f"{name}, last {len(values)} values: from {shown[0]} to {shown[-1]} "
        f"(lowest {format_value(min(values), unit)}, highest {format_value(max(values), unit)})."
    )
    chart = (
        alt.Chart(frame)
        .mark_line(color=PRIMARY, strokeWidth=2, point=alt.OverlayMarkDef(color=PRIMARY, size=20))
        .encode(
            x=alt.X("run:Q", axis=None, scale=alt.Scale(nice=False, padding=4)),
            y=alt.Y("value:Q", axis=None, scale=alt.Scale(zero=False, padding=4)),
            tooltip=[alt.Tooltip("shown:N", title=name)],
            description="label:N",
        )
        .properties(height=56)
        .configure_view(strokeWidth=0)
    )
    st.altair_chart(chart, width="stretch", alt=words)
