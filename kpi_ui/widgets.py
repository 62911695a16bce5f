"""Widgets: status and RAG badges, the KPI card, the typed parameter form, definition
fields as people read them, labelled facts, and the paged result grid."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from kpi_store import (
    KPI,
    Aggregation,
    Direction,
    Execution,
    Headline,
    KPIStatus,
    ParameterSpec,
    ParamType,
    RunStatus,
    SeriesPoint,
)
from kpi_store.alert_records import KPIAlerts
from kpi_store.formats import (
    MISSING,
    as_text,
    format_change,
    format_number,
    format_value,
    time_ago,
)
from kpi_store.story_records import UnusualCheck
from kpi_store.values import coerce_value

from .alert_look import card_alert_badge
from .charts import sparkline
from .links import Page, kpi_link, run_link
from .look import RAG_STYLE, STATUS_STYLE, status_label
from .messages import field_error, md, md_delta

# -- badges -----------------------------------------------------------------------------------


def status_badge(status: str) -> None:
    style = STATUS_STYLE.get(RunStatus(status)) if status in set(RunStatus) else None
    label, colour, icon = style or (str(status).title(), "gray", None)
    st.badge(label, color=colour, icon=icon)  # type: ignore[arg-type]


def rag_badge(rag: str | None, has_target: bool = True) -> None:
    if rag is None:
        label = "Not run yet" if has_target else "No target"
        st.badge(label, color="gray", icon=":material/remove:")
        return
    label, colour, icon = RAG_STYLE[rag]  # type: ignore[index]
    st.badge(label, color=colour, icon=icon)  # type: ignore[arg-type]


def kpi_label(kpi: KPI) -> str:
    suffix = " (archived)" if kpi.status == KPIStatus.ARCHIVED else ""
    return f"{kpi.name}{suffix}"


# -- KPI card ---------------------------------------------------------------------------------


def kpi_card(
    kpi: KPI,
    headline: Headline | None,
    alerts: KPIAlerts | None = None,
    unusual: UnusualCheck | None = None,
) -> None:
    """The official number of one KPI: value, change, target and status, the official
    sparkline, and the newest run of any kind (an exploration is said to be one); with
    ``alerts``, the worst state of its alert rules as a badge; with ``unusual``, whether
    the value lies outside its usual range."""
    latest = headline.latest if headline else None
    value = latest.value if latest else None
    with st.container(border=True, key=f"kpi_card_{kpi.id}"):
        head, badge = st.columns([3, 2], vertical_alignment="center")
        head.markdown(f"**{md(kpi.name)}**")
        with badge:
            rag_badge(headline.rag if latest and headline else None, kpi.target is not None)
            if alerts is not None and alerts.rules:
                card_alert_badge(alerts)
        change = headline.change if headline else None
        delta = format_change(change, kpi.unit) if change is not None else None
        if delta and headline and headline.change_pct is not None:
            delta += f" ({headline.change_pct:+.1f} %)"
        st.metric(
            md(kpi.description or kpi.name),
            md(format_value(value, kpi.unit)) if latest else MISSING,
            delta=md_delta(delta) if delta else None,
            delta_color="normal" if kpi.direction == Direction.HIGHER_IS_BETTER else "inverse",
            label_visibility="collapsed",
            delta_description=headline.change_label if delta and headline else None,
        )
        trend = headline.trend if headline else []
        if len(trend) > 1:  # drawn with a text alternative (st.metric's chart has none)
            sparkline(trend, kpi.name, kpi.unit)
        if unusual is not None and unusual.unusual and latest and unusual.run_id == latest.run_id:
            _unusual_caption(kpi, unusual)
        target = latest.target if latest else kpi.target_for(None)
        shown = format_value(target, kpi.unit) if target is not None else "none"
        period = f" · {latest.period_label}" if latest and latest.period_label else ""
        st.text(f"Target {shown} · {kpi.owner or 'no owner'}{period}")
        _last_run_caption(headline.last_run if headline else None, latest)
        links = st.columns(2)
        with links[0]:
            kpi_link(kpi.id, "History", Page.HISTORY, ":material/timeline:")
        with links[1]:
            if latest is not None:
                run_link(latest.run_id, "Rows")
            else:
                kpi_link(kpi.id, "Run", Page.RUN, ":material/play_arrow:")


def _unusual_caption(kpi: KPI, check: UnusualCheck) -> None:
    low, high = format_value(check.low, kpi.unit), format_value(check.high, kpi.unit)
    st.caption(
        f":red[:material/priority_high: Unusual:] {check.side} its usual range {md(low)} – "
        f"{md(high)} ({len(check.comparable_run_ids)} comparable runs)"
    )


def _last_run_caption(last_run: Execution | None, official: SeriesPoint | None) -> None:
    if last_run is None:
        st.caption(":material/history: Never run yet")
        return
    label = status_label(last_run.status)
    kind = "" if official is None or official.run_id == last_run.id else " · an exploration"
    if official is None and last_run.status == RunStatus.SUCCESS:
        kind = " · an exploration (no official run yet)"
    st.caption(f":material/history: Last run {time_ago(last_run.created_at)} · {label}{kind}")


# -- parameter form ---------------------------------------------------------------------------


def parameter_form(
    parameters: Sequence[ParameterSpec],
    key_prefix: str,
    errors: dict[str, str] | None = None,
    columns: int = 3,
) -> dict[str, Any]:
    """One widget per parameter, of its type; returns ``{name: value}``.

    Dates get a date picker, yes/no a toggle, parameters with choices a select box, text
    and numbers a text input. Numbers are typed as text on purpose: a number widget
    cannot hold a value outside its range and would quietly keep its default instead,
    so the run would use a value nobody chose. A number that does not read as its type
    (or is out of range) is shown as an error at its field right away, and is passed on
    as typed, so the store refuses it and nothing runs. Empty values are left out so the
    store fills in the defaults (or says which value is missing).
    """
    errors = dict(errors or {})
    values: dict[str, Any] = {}
    if not parameters:
        st.caption("This KPI has no parameters.")
        return values
    grid = st.columns(min(columns, len(parameters)))
    for index, param in enumerate(parameters):
        with grid[index % len(grid)]:
            key = f"{key_prefix}_{param.name}_{param.type}"
            values[param.name], problem = _parameter_widget(param, key)
            if problem:
                errors[param.name] = problem  # the store would say the same, once
            field_error(errors, param.name)
    return {k: v for k, v in values.items() if v is not None and v != ""}


# What a date picker offers (the store takes any date): wide enough for any KPI, and kept
# small enough for the picker's list of years. A default outside it widens it.
DATE_RANGE = (dt.date(1900, 1, 1), dt.date(2199, 12, 31))


def _parameter_widget(param: ParameterSpec, key: str) -> tuple[Any, str | None]:
    """The widget of one parameter: (its value, why that value cannot be used or None)."""
    label = md(param.label or param.name.replace("_", " ").capitalize())
    help_text = f"`:{param.name}` · {param.type}"
    default = param.default
    if param.choices:
        options = list(param.choices)
        index = options.index(default) if default in options else 0
        return st.selectbox(label, options, index=index, key=key, help=help_text), None
    if param.type == ParamType.DATE:
        low, high = DATE_RANGE
        if isinstance(default, dt.date):
            low, high = min(low, default), max(high, default)
        picked = st.date_input(
            label,
            value=default,
            min_value=low,
            max_value=high,
            key=key,
            help=help_text,
            format="YYYY-MM-DD",
        )
        return picked, None
    if param.type in (ParamType.INT, ParamType.FLOAT):
        text = st.text_input(
            label,
            value=number_text(default),
            key=key,
            help=help_text,
            placeholder="a whole number" if param.type == ParamType.INT else "a number",
        ).strip()
        if not text:
            return None, None
        try:
            return coerce_value(param.type, text, f"parameter '{param.name}'"), None
        except ValueError as error:
            return text, str(error)
    if param.type == ParamType.BOOL:
        return st.toggle(label, value=bool(default), key=key, help=help_text), None
    text = "" if default is None else str(default)
    return st.text_input(label, value=text, key=key, help=help_text), None


def number_text(value: Any) -> str:
    """A number as a person types it: ``5``, ``100``, ``0.25`` (exact, no thousands mark)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


# -- definition fields, as people read them ---------------------------------------------------

PARAM_TYPE_LABELS = {
    ParamType.STR: "Text",
    ParamType.INT: "Whole number",
    ParamType.FLOAT: "Number",
    ParamType.DATE: "Date",
    ParamType.BOOL: "Yes / no",
}
AGGREGATION_LABELS = {
    Aggregation.SUM: "Sum of the value column",
    Aggregation.AVG: "Average of the value column",
    Aggregation.COUNT: "Number of rows",
    Aggregation.MIN: "Smallest value",
    Aggregation.MAX: "Largest value",
    Aggregation.FIRST: "Value of the first row",
}
DIRECTION_LABELS = {
    Direction.HIGHER_IS_BETTER: "Higher is better",
    Direction.LOWER_IS_BETTER: "Lower is better",
}


def field_text(field: str, value: Any, unit: str = "") -> str:
    """A definition field's value as people read it: the target with the KPI's unit
    (``$250``), the tolerance as ``10%``, labels for aggregation and direction, tags as a
    list, each parameter in words. Plain text (pass it through :func:`md` for Markdown)."""
    if value is None or value == "" or value == []:
        return MISSING
    try:
        if field == "target":
            return format_value(float(value), unit)
        if field == "tolerance_pct":
            return f"{format_number(float(value))}%"
        if field == "timeout_s":
            return f"{format_number(float(value))} s"
        if field == "aggregation":
            return AGGREGATION_LABELS.get(Aggregation(value), str(value))
        if field == "direction":
            return DIRECTION_LABELS.get(Direction(value), str(value))
    except (TypeError, ValueError):
        return as_text(value)
    if field == "tags" and isinstance(value, (list, tuple)):
        return ", ".join(str(t) for t in value)
    if field == "parameters" and isinstance(value, (list, tuple)):
        return "; ".join(parameter_text(p) for p in value)
    return as_text(value)


def parameter_text(param: ParameterSpec | dict[str, Any]) -> str:
    """``start_date (Date, default 2025-01-01, label "From")``."""
    data = param.model_dump(mode="json") if isinstance(param, ParameterSpec) else dict(param)
    kind = data.get("type") or ParamType.STR
    try:
        words = [PARAM_TYPE_LABELS[ParamType(kind)]]
    except ValueError:
        words = [str(kind)]
    if data.get("default") not in (None, ""):
        words.append(f"default {data['default']}")
    if data.get("choices"):
        words.append("choices " + ", ".join(str(c) for c in data["choices"]))
    if data.get("label"):
        words.append(f'label "{data["label"]}"')
    return f"{data.get('name') or '?'} ({', '.join(words)})"


# -- facts ------------------------------------------------------------------------------------


def facts_grid(rows: dict[str, Any], columns: int = 4) -> None:
    """Labelled facts in a grid: a small grey label above each value (shown as typed)."""
    items = list(rows.items())
    for start in range(0, len(items), columns):
        cells = st.columns(columns)
        for cell, (label, value) in zip(cells, items[start : start + columns], strict=False):
            cell.caption(label)
            cell.markdown(md(as_text(value) or "—"))


# -- result grid ------------------------------------------------------------------------------


def grid_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy the grid renders well: plain Python values, ``None`` for missing, ISO times."""
    shown = frame.copy()
    for column in shown.columns:
        series = shown[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            text = series.dt.strftime("%Y-%m-%d %H:%M:%S").str.replace(" 00:00:00", "")
            shown[column] = text.astype(object).where(series.notna(), None)
        elif isinstance(series.dtype, pd.api.extensions.ExtensionDtype) or series.dtype == object:
            shown[column] = series.astype(object).where(series.notna(), None)
    return shown
