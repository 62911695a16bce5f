"""Charts: audit events over time and the sparkline of a KPI card (a KPI's series are
drawn by ``series_view``). Each has a text alternative (``alt``) that says what it shows."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd
import streamlit as st

from kpi_store import Execution
from kpi_store.formats import format_duration, format_params, format_value

from .look import PRIMARY

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
