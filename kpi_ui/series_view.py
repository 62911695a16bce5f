"""A KPI's series on its History page: one line per parameter set (the official one
first, others picked), x by period for a period KPI or by run time otherwise, the target
as a dashed rule, unusual values ringed with the band they were judged against; the
official series' points with their comparisons; and backfill of a period KPI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd
import streamlit as st

from kpi_store import KPI, Grain, Series
from kpi_store.formats import format_value

from .charts import time_format

PERIOD_FORMATS = {  # d3 time formats for a period KPI's x axis (the period's start)
    Grain.DAY: "%b %d, %Y",
    Grain.WEEK: "%b %d, %Y",
    Grain.MONTH: "%b %Y",
    Grain.QUARTER: "%b %Y",
    Grain.YEAR: "%Y",
}
PERIOD_TICKS = {
    Grain.DAY: ("day", 1),
    Grain.WEEK: ("week", 1),
    Grain.MONTH: ("month", 1),
    Grain.QUARTER: ("month", 3),
    Grain.YEAR: ("year", 1),
}
SERIES_COLUMNS = ["series", "x", "value", "run", "label", "target", "status", "unusual"]


def series_frame(chosen: Sequence[Series], unusual: Mapping[int, bool]) -> pd.DataFrame:
    """One row per point of each chosen series (the chart's data)."""
    rows = []
    for line in chosen:
        for point in line.points:
            x = point.period_start or point.finished_at
            rows.append(
                {
                    "series": line.label,
                    "x": pd.Timestamp(x) if x else None,
                    "value": point.value,
                    "run": point.run_id,
                    "label": point.period_label or "",
                    "target": point.target,
                    "status": str(point.rag or "no target"),
                    "unusual": bool(unusual.get(point.run_id)),
                }
            )
    return pd.DataFrame(rows, columns=SERIES_COLUMNS)


def series_summary(kpi: KPI, chosen: Sequence[Series], unusual: Mapping[int, bool]) -> str:
    """What the series chart shows, in words (its text alternative)."""
    parts = []
    for line in chosen:
        values = [p.value for p in line.points if p.value is not None]
        text = f"{line.label}: {len(line.points)} points"
        if values:
            text += (
                f", latest {format_value(values[-1], kpi.unit)}, lowest "
                f"{format_value(min(values), kpi.unit)}, highest "
                f"{format_value(max(values), kpi.unit)}"
            )
        parts.append(text)
    flagged = sum(1 for v in unusual.values() if v)
    tail = f"; {flagged} unusual values" if flagged else ""
    axis = "by period" if kpi.period else "by run time"
    return f"Value of {kpi.name} {axis}. " + "; ".join(parts) + tail + "."


def series_chart(
    kpi: KPI,
    chosen: Sequence[Series],
    unusual: Mapping[int, bool] | None = None,
    band: tuple[float, float] | None = None,
) -> None:
    """One line per chosen series; unusual points ringed in red; the official series'
    unusual-value band (median ± 3 scaled MADs) shaded when given."""
    unusual = unusual or {}
    frame = series_frame(chosen, unusual)
    if frame.dropna(subset=["x"]).empty:
        st.info("No successful runs in these series yet.", icon=":material/show_chart:")
        return
    period = kpi.period is not None
    x_title = f"Period ({kpi.period.grain})" if kpi.period else "Run time (UTC)"
    if kpi.period:  # one tick per period at most, labelled as the period
        interval, step = PERIOD_TICKS[kpi.period.grain]
        axis = alt.Axis(
            format=PERIOD_FORMATS[kpi.period.grain],
            tickCount={"interval": interval, "step": step},
        )
    else:
        axis = alt.Axis(format=time_format(frame["x"]))
    x = alt.X("x:T", title=x_title, axis=axis)
    y = alt.Y(
        "value:Q",
        title=f"Value ({kpi.unit})" if kpi.unit else "Value",
        scale=alt.Scale(zero=False),
        axis=alt.Axis(format=",.4~s"),
    )
    order = [s.label for s in chosen]
    colour = alt.Color(
        "series:N", sort=order, legend=alt.Legend(title="Parameters", orient="bottom")
    )
    tooltip = ["series", "label", "value", "target", "status", "run", "x:T"]
    if not period:
        tooltip.remove("label")
    base = alt.Chart(frame.dropna(subset=["value"]))
    layers = [
        base.mark_line(strokeWidth=2).encode(x=x, y=y, color=colour),
        base.mark_point(filled=True, size=70).encode(x=x, y=y, color=colour, tooltip=tooltip),
    ]
    flagged = frame[frame["unusual"]]
    if not flagged.empty:
        layers.append(
            alt.Chart(flagged)
            .mark_point(shape="circle", size=320, strokeWidth=2.5, color="#dc2626")
            .encode(x=x, y=y, tooltip=tooltip)
        )
    if band is not None:
        low, high = band
        layers.insert(
            0,
            alt.Chart(pd.DataFrame({"low": [low], "high": [high]}))
            .mark_rect(color="#94a3b8", opacity=0.18)
            .encode(y="low:Q", y2="high:Q"),
        )
    official_target = chosen[0].points[-1].target if chosen and chosen[0].points else kpi.target
    if official_target is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"target": [official_target]}))
            .mark_rule(color="#f59e0b", strokeDash=[6, 4], strokeWidth=2)
            .encode(y="target:Q", tooltip=[alt.Tooltip("target:Q", title="Target")])
        )
    st.altair_chart(
        alt.layer(*layers).properties(height=320),
        width="stretch",
        alt=series_summary(kpi, chosen, unusual),
    )


def default_backfill_range(kpi: KPI, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """Twelve periods back from today (a year of months, twelve weeks, …)."""
    today = today or dt.date.today()
    span = {"day": 12, "week": 84, "month": 365, "quarter": 3 * 365, "year": 12 * 365}
    grain = str(kpi.period.grain) if kpi.period else "month"
    return today - dt.timedelta(days=span[grain]), today
